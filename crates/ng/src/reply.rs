//! Reply dictionaries: builders for servers, [`inspect`] for clients.

use crate::bencode::Value;
use crate::echo;
use crate::request::RequestError;

fn result(result: &str) -> Value {
    let mut v = Value::dict();
    v.insert("result", result);
    v
}

/// `{"result": "ok"}`.
pub fn ok() -> Value {
    result("ok")
}

/// `{"result": "ok", "sdp": sdp}`, the answer to `offer`/`answer`.
pub fn ok_with_sdp(sdp: &[u8]) -> Value {
    let mut v = ok();
    v.insert("sdp", sdp);
    v
}

/// `{"result": "pong"}`, the answer to `ping`.
pub fn pong() -> Value {
    result("pong")
}

/// `{"result": "error", "error-reason": reason}`. The reason goes through [`echo::reason`]:
/// at most [`echo::MAX_REASON`] bytes, non-printable characters escaped, so an error reply
/// stays small whatever input it names (quote the input with [`echo::quote`]).
pub fn error(reason: &str) -> Value {
    let mut v = result("error");
    v.insert("error-reason", echo::reason(reason));
    v
}

/// Adds `warning` to a reply dictionary, appending with `"; "` to an
/// existing warning. Non-dictionaries are returned unchanged.
pub fn with_warning(mut v: Value, warning: &str) -> Value {
    let text = match v.get("warning").and_then(Value::as_bytes) {
        Some(old) => [old, b"; ", warning.as_bytes()].concat(),
        None => warning.as_bytes().to_vec(),
    };
    v.insert("warning", text);
    v
}

/// The interesting fields of a reply, borrowed from its dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// `result`: `ok`, `pong`, `error`, ...
    pub result: &'a str,
    /// `error-reason`, when `result` is `error`.
    pub error_reason: Option<&'a str>,
    /// `warning`.
    pub warning: Option<&'a str>,
    /// `sdp`, for `offer`/`answer`.
    pub sdp: Option<&'a [u8]>,
}

fn text<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>, RequestError> {
    v.get(key)
        .map(|x| {
            x.as_str().ok_or_else(|| RequestError::WrongType {
                key: key.to_owned(),
                expected: "UTF-8 string",
            })
        })
        .transpose()
}

/// Reads a reply dictionary (exact key spellings, as rtpengine sends them).
pub fn inspect(v: &Value) -> Result<Reply<'_>, RequestError> {
    if v.as_dict().is_none() {
        return Err(RequestError::NotADictionary);
    }
    let sdp = v
        .get("sdp")
        .map(|x| {
            x.as_bytes().ok_or_else(|| RequestError::WrongType {
                key: "sdp".to_owned(),
                expected: "string",
            })
        })
        .transpose()?;
    Ok(Reply {
        result: text(v, "result")?.ok_or(RequestError::MissingResult)?,
        error_reason: text(v, "error-reason")?,
        warning: text(v, "warning")?,
        sdp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        assert_eq!(ok().to_bytes(), b"d6:result2:oke");
        assert_eq!(pong().to_bytes(), b"d6:result4:ponge");
        assert_eq!(
            error("Unknown call-id").to_bytes(),
            b"d12:error-reason15:Unknown call-id6:result5:errore"
        );
        assert_eq!(
            ok_with_sdp(b"v=0\r\n").get("sdp"),
            Some(&Value::str("v=0\r\n"))
        );
    }

    #[test]
    fn error_reasons_are_bounded_and_escaped() {
        let long = format!("unsupported key '{}'", "k".repeat(60_000));
        let v = error(&long);
        let reason = v.get("error-reason").and_then(Value::as_str).unwrap();
        assert!(reason.len() <= echo::MAX_REASON, "{}", reason.len());
        assert!(reason.starts_with("unsupported key 'kkk") && reason.ends_with('…'));
        assert!(v.to_bytes().len() < echo::MAX_REASON + 64);
        let v = error("bad\r\nline\x1b");
        assert_eq!(
            v.get("error-reason").and_then(Value::as_str),
            Some("bad\\r\\nline\\u{1b}")
        );
        let v = error("bad\r\n");
        assert_eq!(
            v.get("error-reason").and_then(Value::as_str),
            Some("bad\\r\\n")
        );
    }

    #[test]
    fn warnings() {
        let v = with_warning(with_warning(ok(), "first"), "second");
        assert_eq!(
            v.get("warning").and_then(Value::as_str),
            Some("first; second")
        );
        assert_eq!(with_warning(Value::int(1), "w"), Value::int(1));
    }

    #[test]
    fn inspect_replies() {
        let v = with_warning(error("no such call"), "w");
        let r = inspect(&v).unwrap();
        assert_eq!(
            r,
            Reply {
                result: "error",
                error_reason: Some("no such call"),
                warning: Some("w"),
                sdp: None
            }
        );
        assert_eq!(
            inspect(&ok_with_sdp(b"v=0")).unwrap().sdp,
            Some(&b"v=0"[..])
        );
        assert_eq!(inspect(&Value::list()), Err(RequestError::NotADictionary));
        assert_eq!(inspect(&Value::dict()), Err(RequestError::MissingResult));
        let mut bad = ok();
        bad.insert("sdp", 1);
        assert!(matches!(inspect(&bad), Err(RequestError::WrongType { key, .. }) if key == "sdp"));
        let mut bad = Value::dict();
        bad.insert("result", 1);
        assert!(
            matches!(inspect(&bad), Err(RequestError::WrongType { key, .. }) if key == "result")
        );
    }
}
