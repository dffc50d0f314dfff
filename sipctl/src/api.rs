//! The agent-desktop HTTP API (JSON): `GET /v1/calls`, `POST /v1/calls/{id}/recording`
//! with `{"action": "start"|"stop"|"pause"|"resume"}`, and `GET /v1/status`. Every request
//! needs `Authorization: Bearer TOKEN` when a token is configured. Errors are JSON
//! `{"error": "..."}` with a 4xx/5xx status.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::b2bua::{ApiError, CallInfo, Counters, RecordingAction};

/// How long a start or stop may take (two re-INVITEs, each up to 32 s on UDP in theory;
/// in practice a party answers within seconds or the operation fails).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(40);

/// A request from the API to the core task.
pub enum ApiMsg {
    /// List the active calls.
    List(oneshot::Sender<Vec<CallInfo>>),
    /// The operator counters.
    Status(oneshot::Sender<Counters>),
    /// Change the recording of a call.
    Record {
        /// sipctl's call id.
        id: String,
        /// What to do.
        action: RecordingAction,
        /// The outcome, when the change is done.
        reply: oneshot::Sender<Result<CallInfo, ApiError>>,
    },
}

#[derive(Clone)]
struct AppState {
    token: Option<String>,
    core: mpsc::Sender<ApiMsg>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// `None` when the request may go on, else the 401 to answer.
fn refused(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.token else {
        return None;
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    (given != Some(token.as_str())).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token (Authorization: Bearer TOKEN)",
        )
    })
}

async fn ask<T>(
    state: &AppState,
    msg: impl FnOnce(oneshot::Sender<T>) -> ApiMsg,
) -> Result<T, Box<Response>> {
    let (tx, rx) = oneshot::channel();
    state
        .core
        .send(msg(tx))
        .await
        .map_err(|_| Box::new(error(StatusCode::SERVICE_UNAVAILABLE, "sipctl is stopping")))?;
    match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "sipctl is stopping",
        ))),
        Err(_) => Err(Box::new(error(
            StatusCode::GATEWAY_TIMEOUT,
            "the change did not finish in time",
        ))),
    }
}

async fn list_calls(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    match ask(&state, ApiMsg::List).await {
        Ok(calls) => Json(json!({ "calls": calls })).into_response(),
        Err(r) => *r,
    }
}

async fn status(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    match ask(&state, ApiMsg::Status).await {
        Ok(c) => Json(json!({ "counters": c })).into_response(),
        Err(r) => *r,
    }
}

async fn record(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = refused(&state, &headers) {
        return r;
    }
    let parsed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            )
        }
    };
    let Some(action) = parsed.get("action").and_then(|a| a.as_str()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body needs \"action\": \"start\", \"stop\", \"pause\" or \"resume\"",
        );
    };
    let Some(action) = RecordingAction::parse(action) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown action {action:?}: use start, stop, pause or resume"),
        );
    };
    match ask(&state, |reply| ApiMsg::Record { id, action, reply }).await {
        Ok(Ok(call)) => Json(json!({ "call": call })).into_response(),
        Ok(Err(e @ ApiError::UnknownCall(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e @ ApiError::Conflict(_))) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(e @ ApiError::Failed(_))) => error(StatusCode::BAD_GATEWAY, e.to_string()),
        Err(r) => *r,
    }
}

/// The API's routes.
pub fn router(token: Option<String>, core: mpsc::Sender<ApiMsg>) -> Router {
    Router::new()
        .route("/v1/calls", get(list_calls))
        .route("/v1/calls/{id}/recording", post(record))
        .route("/v1/status", get(status))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint (see /v1/calls)") })
        .with_state(AppState { token, core })
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: Option<String>,
    core: mpsc::Sender<ApiMsg>,
) {
    if let Err(e) = axum::serve(listener, router(token, core)).await {
        tracing::error!(error = %e, "API server stopped");
    }
}
