//! The web services API (`/v1/…`, JSON, bearer tokens) and the UI's static files.
//! The contract is documented in `docs/openapi.yaml`; this module implements it.
//!
//! Handlers authenticate ([`authenticate`]), check the role ([`crate::access`]) and run
//! index and storage calls on blocking threads. Audio and original files are streamed in
//! chunks with single-range `Range` support ([`crate::range`]). Every playback, download,
//! delete and legal-hold change is written to the audit trail before the response; if the
//! audit cannot be written the request fails (500) and nothing is served.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::access::Access;
use crate::audio::{self, AudioError};
use crate::config::Token;
use crate::consolidate::segment_parties;
use crate::ingest::Counters;
use crate::model::{
    AuditEntry, EventRow, InteractionRow, RecordingRow, SearchQuery, Sort, DEFAULT_LIMIT, MAX_LIMIT,
};
use crate::queue::QueueStats;
use crate::range::{resolve, RangeReply};
use crate::repo::Repository;
use crate::retention::remove_recording;
use crate::storage::Storage;
use crate::time::{format_ms, parse_rfc3339};

/// Bytes read from storage per chunk of a streamed body.
pub const STREAM_CHUNK: u64 = 256 * 1024;

/// WAV requests that generate audio at the same time; more wait (each holds about 1 MiB:
/// a reader and the exporter's window, plus the `.lcr` itself for object storage).
pub const WAV_GENERATORS: usize = 8;

/// How long a WAV request waits for a generator before it is answered 503.
pub const WAV_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Bytes of generated WAV per chunk of the body.
const WAV_CHUNK: usize = 64 * 1024;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE_CSS: &str = include_str!("../ui/style.css");

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The index.
    pub repo: Arc<dyn Repository>,
    /// The recordings.
    pub storage: Arc<dyn Storage>,
    /// Accepted tokens.
    pub tokens: Arc<Vec<Token>>,
    /// The consumer's counters.
    pub counters: Arc<Counters>,
    /// The queue's sizes, if it can tell.
    pub queue_stats: Arc<dyn Fn() -> Option<QueueStats> + Send + Sync>,
    /// The clock (Unix ms), a parameter so tests can fix it.
    pub now_ms: fn() -> u64,
    /// Longest audio served as WAV, samples per channel (`max-audio-duration-secs`).
    pub max_audio_samples: u64,
    /// Permits to generate WAV audio ([`WAV_GENERATORS`]).
    pub wav_slots: Arc<tokio::sync::Semaphore>,
}

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    headers: Vec<(header::HeaderName, String)>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }

    fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }

    fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "this needs the admin role")
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    fn with_header(mut self, name: header::HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.message }))).into_response();
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

/// Runs blocking work (index, storage) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// Compares two byte strings in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller, from `Authorization: Bearer TOKEN` or (for media elements, which cannot send
/// headers) the `access_token` query parameter (RFC 6750 §2.3). 401 without a valid token.
pub fn authenticate(
    tokens: &[Token],
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Access, ApiError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        });
    let unauthorized = |m: &str| {
        ApiError::new(StatusCode::UNAUTHORIZED, m)
            .with_header(header::WWW_AUTHENTICATE, "Bearer".into())
    };
    let Some(given) = from_header.or_else(|| query_token.map(str::to_owned)) else {
        return Err(unauthorized("missing bearer token"));
    };
    tokens
        .iter()
        .find(|t| same_secret(t.secret.as_bytes(), given.as_bytes()))
        .map(|t| t.access.clone())
        .ok_or_else(|| unauthorized("invalid token"))
}

type QueryMap = Result<Query<HashMap<String, String>>, QueryRejection>;

fn query_map(q: QueryMap) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
}

fn auth(
    st: &AppState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Access, ApiError> {
    authenticate(
        &st.tokens,
        headers,
        q.get("access_token").map(String::as_str),
    )
}

/// A query parameter, absent when missing or empty.
fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn parse_param<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    param(q, name)
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("{name}: invalid value {v:?}")))
        })
        .transpose()
}

fn parse_time(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    param(q, name)
        .map(|v| {
            parse_rfc3339(v).ok_or_else(|| {
                ApiError::bad_request(format!("{name}: {v:?} is not an RFC 3339 date-time"))
            })
        })
        .transpose()
}

fn parse_mos(q: &HashMap<String, String>, name: &str) -> Result<Option<f64>, ApiError> {
    match parse_param::<f64>(q, name)? {
        Some(v) if !v.is_finite() => Err(ApiError::bad_request(format!("{name}: not a number"))),
        other => Ok(other),
    }
}

fn page(q: &HashMap<String, String>) -> Result<(u32, u64), ApiError> {
    let limit = parse_param::<u32>(q, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 {
        return Err(ApiError::bad_request("limit: must be at least 1"));
    }
    Ok((
        limit.min(MAX_LIMIT),
        parse_param::<u64>(q, "offset")?.unwrap_or(0),
    ))
}

/// The search of `GET /v1/interactions` from its query parameters.
pub fn search_query(q: &HashMap<String, String>) -> Result<SearchQuery, ApiError> {
    let sort = match param(q, "sort") {
        None => Sort::default(),
        Some(s) => Sort::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "sort: {s:?} is not one of start, -start, duration, -duration, mos, -mos"
            ))
        })?,
    };
    let (limit, offset) = page(q)?;
    let text = |n: &str| param(q, n).map(str::to_owned);
    Ok(SearchQuery {
        from_ms: parse_time(q, "from")?,
        to_ms: parse_time(q, "to")?,
        dn: text("dn"),
        caller: text("caller"),
        callee: text("callee"),
        min_duration_ms: parse_param(q, "min_duration_ms")?,
        max_duration_ms: parse_param(q, "max_duration_ms")?,
        min_mos: parse_mos(q, "min_mos")?,
        max_mos: parse_mos(q, "max_mos")?,
        q: text("q"),
        sort,
        limit,
        offset,
    })
}

/// One interaction in a list (`items[]`) and in the detail view (`interaction`).
#[derive(Debug, Serialize)]
pub struct InteractionJson {
    id: String,
    start: String,
    end: Option<String>,
    duration_ms: u64,
    caller: Option<String>,
    callee: Option<String>,
    dns: Vec<String>,
    segments: u32,
    recorded_ms: u64,
    mos: Option<f64>,
    packet_loss: Option<f64>,
    legal_hold: bool,
}

impl From<&InteractionRow> for InteractionJson {
    fn from(i: &InteractionRow) -> Self {
        InteractionJson {
            id: i.id.clone(),
            start: format_ms(i.start_ms),
            end: i.end_ms.map(format_ms),
            duration_ms: i.duration_ms,
            caller: i.caller.clone(),
            callee: i.callee.clone(),
            dns: i.dns.clone(),
            segments: i.segments,
            recorded_ms: i.recorded_ms,
            mos: i.mos,
            packet_loss: i.packet_loss,
            legal_hold: i.legal_hold,
        }
    }
}

fn segment_json(r: &RecordingRow, events: &[EventRow]) -> serde_json::Value {
    let p = segment_parties(r, events);
    let a = &r.analysis;
    let rid = &r.recording_id;
    json!({
        "recording_id": rid,
        "start": format_ms(r.start_ms),
        "end": format_ms(r.end_ms),
        "duration_ms": r.duration_ms,
        "status": r.status,
        "status_note": r.status_note,
        "switch": p.switch,
        "parties": { "caller": p.caller, "callee": p.callee, "dn": p.dn },
        "analysis": {
            "talk_ms": a.talk_ms,
            "silence_ms": a.silence_ms,
            "overtalk_ms": a.overtalk_ms,
            "packet_loss": a.packet_loss,
            "jitter_ms": a.jitter_ms,
            "mos": a.mos,
        },
        "legal_hold": r.legal_hold,
        "metadata": r.metadata,
        "size_bytes": r.size_bytes,
        "audio_url": format!("/v1/recordings/{rid}/audio.wav"),
        "download_url": format!("/v1/recordings/{rid}/original.lcr"),
    })
}

fn event_json(e: &EventRow) -> serde_json::Value {
    json!({
        "time": format_ms(e.time_ms),
        "kind": e.kind,
        "switch": e.switch,
        "switch_call_id": e.switch_call_id,
        "seq": e.seq,
        "reason": e.reason,
        "status_code": e.status_code,
        "recording_id": e.recording_id,
    })
}

async fn list_interactions(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query_map(q)?;
    let who = auth(&st, &headers, &q)?;
    let search = search_query(&q)?;
    let repo = st.repo.clone();
    let page = blocking(move || {
        repo.search(&search, who.dn_limit())
            .map_err(ApiError::internal)
    })
    .await?;
    let items: Vec<InteractionJson> = page.items.iter().map(InteractionJson::from).collect();
    Ok(Json(json!({ "total": page.total, "items": items })))
}

async fn get_interaction(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query_map(q)?;
    let who = auth(&st, &headers, &q)?;
    let repo = st.repo.clone();
    let detail = blocking(move || repo.interaction(&id).map_err(ApiError::internal)).await?;
    let Some(d) = detail.filter(|d| who.can_see(&d.interaction.dns)) else {
        return Err(ApiError::not_found("no such interaction"));
    };
    let segments: Vec<_> = d
        .recordings
        .iter()
        .map(|r| segment_json(r, &d.events))
        .collect();
    let events: Vec<_> = d.events.iter().map(event_json).collect();
    Ok(Json(json!({
        "interaction": InteractionJson::from(&d.interaction),
        "segments": segments,
        "events": events,
    })))
}

/// The recording if `who` may see it, else 404.
async fn visible_recording(
    st: &AppState,
    who: &Access,
    rid: String,
) -> Result<RecordingRow, ApiError> {
    let repo = st.repo.clone();
    let found = blocking(move || repo.recording(&rid).map_err(ApiError::internal)).await?;
    match found {
        Some((rec, dns)) if who.can_see(&dns) => Ok(rec),
        _ => Err(ApiError::not_found("no such recording")),
    }
}

async fn audit(
    st: &AppState,
    who: &Access,
    rec: &RecordingRow,
    action: &str,
) -> Result<(), ApiError> {
    let entry = AuditEntry {
        time_ms: (st.now_ms)(),
        token_name: who.name.clone(),
        role: who.role.as_str().to_owned(),
        action: action.to_owned(),
        recording_id: rec.recording_id.clone(),
        interaction_id: Some(rec.interaction_id.clone()),
    };
    let repo = st.repo.clone();
    blocking(move || repo.append_audit(&entry).map_err(ApiError::internal)).await
}

/// The WAV answer of a plan, or the error for why there is none.
fn audio_error(e: AudioError) -> ApiError {
    match e {
        AudioError::Missing | AudioError::NoAudio(_) => ApiError::not_found(e.to_string()),
        AudioError::TooLong(t) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, t.to_string()),
        other => ApiError::internal(other),
    }
}

/// Writes into the response body's channel, `WAV_CHUNK` bytes at a time.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    /// The body was dropped (client gone, or a HEAD request).
    gone: bool,
    /// How long a chunk may wait for room ([`WAV_STALL`]).
    stall: std::time::Duration,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(WAV_CHUNK),
        ));
        // A client that keeps the connection open but stops reading must not hold its WAV
        // generation slot for ever: after `WAV_STALL` without room in the channel, it counts
        // as gone (the browser asks again with a Range when it wants more).
        let deadline = std::time::Instant::now() + self.stall;
        let mut item = Ok(chunk);
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(()),
                Err(tokio::sync::mpsc::error::TrySendError::Full(back))
                    if std::time::Instant::now() < deadline =>
                {
                    item = back;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(_) => {
                    self.gone = true;
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "client gone or not reading",
                    ));
                }
            }
        }
    }
}

/// How long a WAV body may wait for a client that stopped reading before its generation
/// ends and frees its slot.
const WAV_STALL: std::time::Duration = std::time::Duration::from_secs(30);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(WAV_CHUNK - self.buf.len().min(WAV_CHUNK));
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= WAV_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A body generated by `plan` for bytes `start..start + len`, on a blocking thread that
/// holds `permit` until it is done (or the client goes away).
fn wav_body(
    plan: audio::Plan,
    start: u64,
    len: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut w = ChannelWriter {
            tx,
            buf: Vec::with_capacity(WAV_CHUNK),
            gone: false,
            stall: WAV_STALL,
        };
        let end = start.saturating_add(len);
        let done = audio::generate(&plan, start, end, &mut w).map_err(|e| e.to_string());
        let done = done.and_then(|()| std::io::Write::flush(&mut w).map_err(|e| e.to_string()));
        match done {
            Ok(()) => {}
            Err(_) if w.gone => tracing::debug!("WAV body dropped before its end"),
            Err(e) => {
                tracing::warn!(error = %e, "WAV generation stopped");
                let _ = w.tx.blocking_send(Err(std::io::Error::other(e)));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

/// A streamed body of `len` bytes of `key` from `start`.
fn stream_body(storage: Arc<dyn Storage>, key: String, start: u64, len: u64) -> Body {
    let stream = futures_util::stream::unfold((start, len), move |(pos, left)| {
        let storage = storage.clone();
        let key = key.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = usize::try_from(left.min(STREAM_CHUNK)).unwrap_or(64 * 1024);
            let read = tokio::task::spawn_blocking(move || storage.read_range(&key, pos, n)).await;
            let item: Result<Bytes, std::io::Error> = match read {
                Ok(Ok(buf)) if !buf.is_empty() => {
                    let got = buf.len() as u64;
                    return Some((Ok(Bytes::from(buf)), (pos + got, left.saturating_sub(got))));
                }
                Ok(Ok(_)) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the stored file got shorter",
                )),
                Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            Some((item, (pos, 0)))
        }
    });
    Body::from_stream(stream)
}

/// Answers with the object `key` of `size` bytes, honouring `Range`.
fn ranged_response(
    st: &AppState,
    headers: &HeaderMap,
    key: String,
    size: u64,
    content_type: &'static str,
    disposition: Option<String>,
) -> Result<Response, ApiError> {
    let (builder, start, len) = ranged_head(headers, size, content_type, disposition)?;
    builder
        .body(stream_body(st.storage.clone(), key, start, len))
        .map_err(ApiError::internal)
}

async fn get_audio(
    State(st): State<AppState>,
    Path(rid): Path<String>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let q = query_map(q)?;
    let who = auth(&st, &headers, &q)?;
    let rec = visible_recording(&st, &who, rid).await?;
    let Some(key) = rec.storage_key.clone() else {
        return Err(ApiError::not_found("the recording has no file"));
    };
    let permit = tokio::time::timeout(WAV_WAIT, st.wav_slots.clone().acquire_owned())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many audio requests at once; try again",
            )
        })?
        .map_err(ApiError::internal)?;
    let (storage, max) = (st.storage.clone(), st.max_audio_samples);
    let plan = blocking(move || audio::plan(&*storage, &key, max).map_err(audio_error)).await?;
    let size = plan.size();
    audit_unless_unsatisfiable(&st, &headers, &who, &rec, size, "playback").await?;
    let (builder, start, len) = ranged_head(&headers, size, "audio/wav", None)?;
    builder
        .body(wav_body(plan, start, len, permit))
        .map_err(ApiError::internal)
}

/// The head of an answer with a body of `size` bytes, honouring `Range`: the response
/// builder (200 or 206 with `Content-Range`), the first byte and the length to send; 416 when
/// the range cannot be satisfied.
fn ranged_head(
    headers: &HeaderMap,
    size: u64,
    content_type: &'static str,
    disposition: Option<String>,
) -> Result<(axum::http::response::Builder, u64, u64), ApiError> {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match resolve(range, size) {
        RangeReply::Full => (StatusCode::OK, 0, size.checked_sub(1)),
        RangeReply::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, Some(end)),
        RangeReply::Unsatisfiable => return Err(unsatisfiable(size)),
    };
    let len = end.map_or(0, |e| e - start + 1);
    let mut builder = response_head(status, content_type, len, disposition);
    if let (StatusCode::PARTIAL_CONTENT, Some(e)) = (status, end) {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{e}/{size}"));
    }
    Ok((builder, start, len))
}

/// 416 for a body of `size` bytes.
fn unsatisfiable(size: u64) -> ApiError {
    ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        format!("range not satisfiable (the body has {size} bytes)"),
    )
    .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
}

/// The headers every audio and file answer has.
fn response_head(
    status: StatusCode,
    content_type: &'static str,
    len: u64,
    disposition: Option<String>,
) -> axum::http::response::Builder {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, len.to_string())
        .header(header::CACHE_CONTROL, "private, no-store");
    if let Some(d) = disposition {
        builder = builder.header(header::CONTENT_DISPOSITION, d);
    }
    builder
}

/// Audits a playback or download, except when the requested range cannot be served
/// (nothing is played or downloaded then; the caller answers 416).
async fn audit_unless_unsatisfiable(
    st: &AppState,
    headers: &HeaderMap,
    who: &Access,
    rec: &RecordingRow,
    size: u64,
    action: &str,
) -> Result<(), ApiError> {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    if resolve(range, size) == RangeReply::Unsatisfiable {
        return Ok(());
    }
    audit(st, who, rec, action).await
}

async fn get_original(
    State(st): State<AppState>,
    Path(rid): Path<String>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let q = query_map(q)?;
    let who = auth(&st, &headers, &q)?;
    let rec = visible_recording(&st, &who, rid).await?;
    let Some(key) = rec.storage_key.clone() else {
        return Err(ApiError::not_found("the recording has no file"));
    };
    let storage = st.storage.clone();
    let k = key.clone();
    let size = blocking(move || storage.size(&k).map_err(ApiError::internal))
        .await?
        .ok_or_else(|| ApiError::not_found("the recording's file is missing"))?;
    audit_unless_unsatisfiable(&st, &headers, &who, &rec, size, "download").await?;
    let disposition = format!("attachment; filename=\"{}.lcr\"", rec.recording_id);
    ranged_response(
        &st,
        &headers,
        key,
        size,
        "application/octet-stream",
        Some(disposition),
    )
}

async fn delete_recording(
    State(st): State<AppState>,
    Path(rid): Path<String>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<StatusCode, ApiError> {
    let q = query_map(q)?;
    let who = auth(&st, &headers, &q)?;
    if !who.is_admin() {
        return Err(ApiError::forbidden());
    }
    let rec = visible_recording(&st, &who, rid).await?;
    if rec.legal_hold {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the recording is under legal hold",
        ));
    }
    let (repo, storage, now) = (st.repo.clone(), st.storage.clone(), (st.now_ms)());
    blocking(move || {
        remove_recording(&*repo, &*storage, &rec, &who, "delete", now).map_err(ApiError::internal)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/recordings/{rid}/legal-hold`.
#[derive(Debug, Deserialize)]
pub struct HoldBody {
    /// Set (`true`) or clear (`false`) the hold.
    pub hold: bool,
}

async fn legal_hold(
    State(st): State<AppState>,
    Path(rid): Path<String>,
    headers: HeaderMap,
    q: QueryMap,
    body: Result<Json<HoldBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query_map(q)?;
    let who = auth(&st, &headers, &q)?;
    if !who.is_admin() {
        return Err(ApiError::forbidden());
    }
    let Json(body) = body.map_err(|e| ApiError::bad_request(format!("bad body: {e}")))?;
    let repo = st.repo.clone();
    let updated = blocking(move || {
        repo.set_legal_hold(&rid, body.hold)
            .map_err(ApiError::internal)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no such recording"))?;
    audit(&st, &who, &updated, "legal_hold").await?;
    Ok(Json(json!({
        "recording_id": updated.recording_id,
        "interaction_id": updated.interaction_id,
        "legal_hold": updated.legal_hold,
    })))
}

async fn get_audit(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query_map(q)?;
    let who = auth(&st, &headers, &q)?;
    if !who.is_admin() {
        return Err(ApiError::forbidden());
    }
    let (limit, offset) = page(&q)?;
    let repo = st.repo.clone();
    let (total, items) =
        blocking(move || repo.audit(limit, offset).map_err(ApiError::internal)).await?;
    let items: Vec<_> = items
        .iter()
        .map(|e| {
            json!({
                "time": format_ms(e.time_ms),
                "token_name": e.token_name,
                "role": e.role,
                "action": e.action,
                "recording_id": e.recording_id,
                "interaction_id": e.interaction_id,
            })
        })
        .collect();
    Ok(Json(json!({ "total": total, "items": items })))
}

async fn get_status(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query_map(q)?;
    let who = auth(&st, &headers, &q)?;
    if !who.can_read_status() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this needs the supervisor or admin role",
        ));
    }
    let repo = st.repo.clone();
    let counts = blocking(move || repo.counts().map_err(ApiError::internal)).await?;
    let queue = (st.queue_stats)();
    let c = &st.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "jobs_processed": load(&c.jobs_processed),
        "jobs_failed": load(&c.jobs_failed),
        "recording_jobs": load(&c.recordings),
        "event_jobs": load(&c.events),
        "damaged_recordings": load(&c.damaged),
        "retention_deleted": load(&c.retention_deleted),
        "recordings": counts.recordings,
        "interactions": counts.interactions,
        "events": counts.events,
        "audit_entries": counts.audit_entries,
        "queue": queue,
    })))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { static_file("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { static_file("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { static_file("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/v1/interactions", get(list_interactions))
        .route("/v1/interactions/{id}", get(get_interaction))
        .route("/v1/recordings/{rid}/audio.wav", get(get_audio))
        .route("/v1/recordings/{rid}/original.lcr", get(get_original))
        .route(
            "/v1/recordings/{rid}",
            axum::routing::delete(delete_recording),
        )
        .route("/v1/recordings/{rid}/legal-hold", post(legal_hold))
        .route("/v1/audit", get(get_audit))
        .route("/v1/status", get(get_status))
        .fallback(not_found)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;

    #[test]
    fn a_client_that_stops_reading_frees_its_wav_slot() {
        // A body channel nobody reads: the first chunks fill it, then the writer gives up
        // after its stall time instead of waiting for ever.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let mut w = ChannelWriter {
            tx,
            buf: Vec::new(),
            gone: false,
            stall: std::time::Duration::from_millis(50),
        };
        let started = std::time::Instant::now();
        let chunk = vec![0u8; WAV_CHUNK];
        let mut sent = 0;
        let err = loop {
            match std::io::Write::write_all(&mut w, &chunk) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 10, "the writer never gave up");
        };
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(w.gone);
        assert!(started.elapsed() >= std::time::Duration::from_millis(50));
        drop(rx);
    }

    fn token(secret: &str, role: Role) -> Token {
        Token {
            secret: secret.into(),
            access: Access {
                name: secret.into(),
                role,
                dns: vec!["1001".into()],
            },
        }
    }

    #[test]
    fn bearer_tokens() {
        let tokens = [token("a", Role::Agent), token("s", Role::Supervisor)];
        let mut h = HeaderMap::new();
        assert_eq!(
            authenticate(&tokens, &h, None).map_err(|e| e.status).err(),
            Some(StatusCode::UNAUTHORIZED)
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s"));
        assert_eq!(
            authenticate(&tokens, &h, None).map(|a| a.role).ok(),
            Some(Role::Supervisor)
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  x"));
        assert!(authenticate(&tokens, &h, None).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic s"));
        assert!(authenticate(&tokens, &h, None).is_err());
        assert_eq!(
            authenticate(&tokens, &HeaderMap::new(), Some("a"))
                .map(|a| a.role)
                .ok(),
            Some(Role::Agent)
        );
    }

    #[test]
    fn search_parameters() {
        let m = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let q = search_query(&m(&[
            ("from", "2026-11-25T00:00:00Z"),
            ("dn", ""),
            ("limit", "9999"),
            ("sort", "-mos"),
            ("min_mos", "3.5"),
        ]))
        .expect("valid");
        assert_eq!(q.from_ms, Some(1_795_564_800_000));
        assert_eq!(q.dn, None, "empty means absent");
        assert_eq!(q.limit, MAX_LIMIT);
        assert_eq!(q.sort, Sort::MosDesc);
        assert_eq!(q.min_mos, Some(3.5));
        assert_eq!(search_query(&m(&[])).expect("valid").limit, DEFAULT_LIMIT);
        for bad in [
            ("from", "yesterday"),
            ("sort", "name"),
            ("limit", "0"),
            ("limit", "-1"),
            ("min_mos", "NaN"),
            ("min_duration_ms", "x"),
        ] {
            assert!(search_query(&m(&[bad])).is_err(), "{bad:?}");
        }
    }
}
