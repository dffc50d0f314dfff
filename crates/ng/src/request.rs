//! Typed NG requests, for servers parsing them and clients building them.
//!
//! Keys and flags are compared after [`normalize`], like rtpengine does, so
//! `"received from"`, `"received-from"` and `"Received_From"` are one key.

use thiserror::Error;

use crate::bencode::Value;
use crate::echo;

/// Why a dictionary is not a valid request (or reply, see [`crate::reply::inspect`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The message body is not a dictionary.
    #[error("message is not a dictionary")]
    NotADictionary,
    /// The request has no `command` key.
    #[error("missing \"command\"")]
    MissingCommand,
    /// The reply has no `result` key.
    #[error("missing \"result\"")]
    MissingResult,
    /// A key holds a value of the wrong bencode type (or non-UTF-8 text).
    #[error("key \"{key}\" must be a {expected}")]
    WrongType {
        /// The key as it appeared on the wire, through [`echo::quote`] (escaped, at most
        /// [`echo::MAX_ECHO`] bytes).
        key: String,
        /// Description of the expected type.
        expected: &'static str,
    },
    /// A key holds a value of the right type that is not allowed.
    #[error("invalid value \"{value}\" for key \"{key}\"")]
    InvalidValue {
        /// The key as it appeared on the wire, through [`echo::quote`].
        key: String,
        /// The rejected value, through [`echo::quote`] (escaped, at most
        /// [`echo::MAX_ECHO`] bytes and `…`).
        value: String,
    },
}

/// Normalises a key or flag: ASCII lowercase, `' '` and `'_'` become `'-'`.
pub fn normalize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' ' | '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The `command` of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    /// `ping`: liveness check, answered with `pong`.
    Ping,
    /// `offer`: SDP offer of a call leg.
    Offer,
    /// `answer`: SDP answer of a call leg.
    Answer,
    /// `delete`: tear down a call or leg.
    Delete,
    /// `query`: statistics of one call.
    Query,
    /// `list`: list of active call-ids.
    List,
    /// `statistics`: global statistics.
    Statistics,
    /// `start recording`.
    StartRecording,
    /// `stop recording`.
    StopRecording,
    /// `pause recording`.
    PauseRecording,
    /// Any other command, as sent.
    Other(String),
}

impl Command {
    /// Parses a command name (compared after [`normalize`]).
    pub fn parse(name: &str) -> Command {
        match normalize(name).as_str() {
            "ping" => Command::Ping,
            "offer" => Command::Offer,
            "answer" => Command::Answer,
            "delete" => Command::Delete,
            "query" => Command::Query,
            "list" => Command::List,
            "statistics" => Command::Statistics,
            "start-recording" => Command::StartRecording,
            "stop-recording" => Command::StopRecording,
            "pause-recording" => Command::PauseRecording,
            _ => Command::Other(name.to_owned()),
        }
    }

    /// The command name as rtpengine spells it on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Command::Ping => "ping",
            Command::Offer => "offer",
            Command::Answer => "answer",
            Command::Delete => "delete",
            Command::Query => "query",
            Command::List => "list",
            Command::Statistics => "statistics",
            Command::StartRecording => "start recording",
            Command::StopRecording => "stop recording",
            Command::PauseRecording => "pause recording",
            Command::Other(s) => s,
        }
    }
}

/// The `received from` address: where the signalling peer saw the SDP come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFrom {
    /// Address family as given, normally `"IP4"` or `"IP6"`.
    pub family: String,
    /// The address text.
    pub address: String,
}

/// A decoded NG request. Text fields are UTF-8; `sdp` stays raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The `command`.
    pub command: Command,
    /// `call-id`.
    pub call_id: Option<String>,
    /// `from-tag`.
    pub from_tag: Option<String>,
    /// `to-tag`.
    pub to_tag: Option<String>,
    /// `via-branch`.
    pub via_branch: Option<String>,
    /// `sdp` body, raw bytes.
    pub sdp: Option<Vec<u8>>,
    /// `flags`, each normalised.
    pub flags: Vec<String>,
    /// `replace` entries, each normalised (e.g. `origin`, `session-connection`).
    pub replace: Vec<String>,
    /// `direction` entries, as given.
    pub direction: Vec<String>,
    /// `ICE`, normalised (e.g. `remove`, `force`).
    pub ice: Option<String>,
    /// `received from`.
    pub received_from: Option<ReceivedFrom>,
    /// `media address`.
    pub media_address: Option<String>,
    /// `label`.
    pub label: Option<String>,
    /// `metadata`.
    pub metadata: Option<String>,
    /// `record call` (`yes`/`on`/`true`/`1` or `no`/`off`/`false`/`0`).
    pub record_call: Option<bool>,
    /// `limit` (used by `list`).
    pub limit: Option<i64>,
    /// Every other top-level key except `command`, normalised.
    pub unknown_keys: Vec<String>,
    /// The whole decoded dictionary (an empty one for [`Request::new`]).
    pub raw: Value,
}

fn wrong(key: &str, expected: &'static str) -> RequestError {
    RequestError::WrongType {
        key: echo::quote_str(key),
        expected,
    }
}

fn invalid(key: &str, value: &str) -> RequestError {
    RequestError::InvalidValue {
        key: echo::quote_str(key),
        value: echo::quote_str(value),
    }
}

fn text(key: &str, v: &Value) -> Result<String, RequestError> {
    let bytes = v.as_bytes().ok_or_else(|| wrong(key, "string"))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| wrong(key, "UTF-8 string"))
}

fn strings(key: &str, v: &Value) -> Result<Vec<String>, RequestError> {
    let items = v.as_list().ok_or_else(|| wrong(key, "list of strings"))?;
    items
        .iter()
        .map(|item| text(key, item).map_err(|_| wrong(key, "list of strings")))
        .collect()
}

fn received_from(key: &str, v: &Value) -> Result<ReceivedFrom, RequestError> {
    match strings(key, v).as_deref() {
        Ok([family, address]) => Ok(ReceivedFrom {
            family: family.clone(),
            address: address.clone(),
        }),
        _ => Err(wrong(key, "list of [family, address]")),
    }
}

fn boolean(key: &str, v: &Value) -> Result<bool, RequestError> {
    let s = text(key, v)?;
    match s.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" | "1" => Ok(true),
        "no" | "off" | "false" | "0" => Ok(false),
        _ => Err(invalid(key, &s)),
    }
}

fn integer(key: &str, v: &Value) -> Result<i64, RequestError> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::Bytes(_) => {
            let s = text(key, v)?;
            s.trim().parse().map_err(|_| invalid(key, &s))
        }
        _ => Err(wrong(key, "integer")),
    }
}

impl Request {
    /// An empty request carrying only `command`.
    pub fn new(command: Command) -> Request {
        Request {
            command,
            call_id: None,
            from_tag: None,
            to_tag: None,
            via_branch: None,
            sdp: None,
            flags: Vec::new(),
            replace: Vec::new(),
            direction: Vec::new(),
            ice: None,
            received_from: None,
            media_address: None,
            label: None,
            metadata: None,
            record_call: None,
            limit: None,
            unknown_keys: Vec::new(),
            raw: Value::dict(),
        }
    }

    /// Interprets a decoded message body.
    pub fn from_value(v: Value) -> Result<Request, RequestError> {
        let dict = v.as_dict().ok_or(RequestError::NotADictionary)?;
        let mut req = Request::new(Command::Ping);
        let mut command = None;
        for (raw_key, val) in dict {
            let key = String::from_utf8_lossy(raw_key);
            let k = key.as_ref();
            match normalize(k).as_str() {
                "command" => command = Some(Command::parse(&text(k, val)?)),
                "call-id" => req.call_id = Some(text(k, val)?),
                "from-tag" => req.from_tag = Some(text(k, val)?),
                "to-tag" => req.to_tag = Some(text(k, val)?),
                "via-branch" => req.via_branch = Some(text(k, val)?),
                "sdp" => req.sdp = Some(val.as_bytes().ok_or_else(|| wrong(k, "string"))?.to_vec()),
                "flags" => req.flags = strings(k, val)?.iter().map(|s| normalize(s)).collect(),
                "replace" => req.replace = strings(k, val)?.iter().map(|s| normalize(s)).collect(),
                "direction" => req.direction = strings(k, val)?,
                "ice" => req.ice = Some(normalize(&text(k, val)?)),
                "received-from" => req.received_from = Some(received_from(k, val)?),
                "media-address" => req.media_address = Some(text(k, val)?),
                "label" => req.label = Some(text(k, val)?),
                "metadata" => req.metadata = Some(text(k, val)?),
                "record-call" => req.record_call = Some(boolean(k, val)?),
                "limit" => req.limit = Some(integer(k, val)?),
                other => req.unknown_keys.push(other.to_owned()),
            }
        }
        req.command = command.ok_or(RequestError::MissingCommand)?;
        req.raw = v;
        Ok(req)
    }

    /// Builds the wire dictionary with rtpengine's key spellings, omitting
    /// unset fields. `raw` and `unknown_keys` are not used; insert extra keys
    /// into the result if needed.
    pub fn to_value(&self) -> Value {
        fn strs(items: &[String]) -> Value {
            Value::List(items.iter().map(|s| Value::str(s)).collect())
        }
        let mut d = Value::dict();
        d.insert("command", self.command.as_str());
        let texts = [
            ("call-id", &self.call_id),
            ("from-tag", &self.from_tag),
            ("to-tag", &self.to_tag),
            ("via-branch", &self.via_branch),
            ("ICE", &self.ice),
            ("media address", &self.media_address),
            ("label", &self.label),
            ("metadata", &self.metadata),
        ];
        for (key, value) in texts {
            if let Some(s) = value {
                d.insert(key, s.as_str());
            }
        }
        if let Some(sdp) = &self.sdp {
            d.insert("sdp", sdp.as_slice());
        }
        for (key, items) in [
            ("flags", &self.flags),
            ("replace", &self.replace),
            ("direction", &self.direction),
        ] {
            if !items.is_empty() {
                d.insert(key, strs(items));
            }
        }
        if let Some(rf) = &self.received_from {
            d.insert(
                "received from",
                strs(&[rf.family.clone(), rf.address.clone()]),
            );
        }
        if let Some(rec) = self.record_call {
            d.insert("record call", if rec { "yes" } else { "no" });
        }
        if let Some(limit) = self.limit {
            d.insert("limit", limit);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::decode;

    fn dict(entries: Vec<(&str, Value)>) -> Value {
        let mut d = Value::dict();
        for (k, v) in entries {
            d.insert(k, v);
        }
        d
    }

    fn list(items: &[&str]) -> Value {
        Value::List(items.iter().map(|s| Value::str(s)).collect())
    }

    const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    #[test]
    fn kamailio_offer() {
        let v = dict(vec![
            ("command", "offer".into()),
            ("call-id", "a84b4c76e66710@pc33".into()),
            ("from-tag", "1928301774".into()),
            ("via-branch", "z9hG4bK776asdhds".into()),
            ("sdp", SDP.into()),
            ("flags", list(&["trust-address", "strict source"])),
            ("replace", list(&["origin", "session_connection"])),
            ("received from", list(&["IP4", "198.51.100.7"])),
            ("ICE", "remove".into()),
            ("record call", "yes".into()),
            ("label", "caller".into()),
            ("metadata", "tenant=42".into()),
            ("TOS", 184.into()),
        ]);
        // Through the wire and back, as a server would see it.
        let v = decode(&v.to_bytes()).unwrap();
        let r = Request::from_value(v.clone()).unwrap();
        assert_eq!(r.command, Command::Offer);
        assert_eq!(r.call_id.as_deref(), Some("a84b4c76e66710@pc33"));
        assert_eq!(r.from_tag.as_deref(), Some("1928301774"));
        assert_eq!(r.to_tag, None);
        assert_eq!(r.via_branch.as_deref(), Some("z9hG4bK776asdhds"));
        assert_eq!(r.sdp.as_deref(), Some(SDP));
        assert_eq!(r.flags, ["trust-address", "strict-source"]);
        assert_eq!(r.replace, ["origin", "session-connection"]);
        let rf = r.received_from.as_ref().unwrap();
        assert_eq!(
            (rf.family.as_str(), rf.address.as_str()),
            ("IP4", "198.51.100.7")
        );
        assert_eq!(r.ice.as_deref(), Some("remove"));
        assert_eq!(r.record_call, Some(true));
        assert_eq!(r.label.as_deref(), Some("caller"));
        assert_eq!(r.metadata.as_deref(), Some("tenant=42"));
        assert_eq!(r.unknown_keys, ["tos"]);
        assert_eq!(r.raw, v);
    }

    #[test]
    fn round_trip() {
        let mut r = Request::new(Command::StartRecording);
        r.call_id = Some("c1".into());
        r.from_tag = Some("f".into());
        r.to_tag = Some("t".into());
        r.via_branch = Some("v".into());
        r.sdp = Some(vec![0xff, 0x00]);
        r.flags = vec!["trust-address".into()];
        r.replace = vec!["origin".into()];
        r.direction = vec!["internal".into(), "external".into()];
        r.ice = Some("force".into());
        r.received_from = Some(ReceivedFrom {
            family: "IP6".into(),
            address: "2001:db8::1".into(),
        });
        r.media_address = Some("192.0.2.1".into());
        r.label = Some("l".into());
        r.metadata = Some("m".into());
        r.record_call = Some(false);
        r.limit = Some(10);
        let v = r.to_value();
        assert_eq!(
            v.get("command").and_then(Value::as_str),
            Some("start recording")
        );
        assert_eq!(v.get("record call").and_then(Value::as_str), Some("no"));
        assert!(v.get("ICE").is_some());
        let back = Request::from_value(v.clone()).unwrap();
        r.raw = v;
        assert_eq!(back, r);

        let ping = Request::new(Command::Ping).to_value();
        assert_eq!(ping.to_bytes(), b"d7:command4:pinge");
    }

    #[test]
    fn key_normalisation() {
        let v = dict(vec![
            ("Command", "Ping".into()),
            ("Call_ID", "x".into()),
            ("received-from", list(&["IP4", "192.0.2.9"])),
            ("record-call", "OFF".into()),
            ("limit", "7".into()),
        ]);
        let r = Request::from_value(v).unwrap();
        assert_eq!(r.command, Command::Ping);
        assert_eq!(r.call_id.as_deref(), Some("x"));
        assert!(r.received_from.is_some());
        assert_eq!(r.record_call, Some(false));
        assert_eq!(r.limit, Some(7));
        assert!(r.unknown_keys.is_empty());
    }

    #[test]
    fn commands() {
        for c in [
            Command::Ping,
            Command::Offer,
            Command::Answer,
            Command::Delete,
            Command::Query,
            Command::List,
            Command::Statistics,
            Command::StartRecording,
            Command::StopRecording,
            Command::PauseRecording,
        ] {
            assert_eq!(Command::parse(c.as_str()), c);
        }
        assert_eq!(Command::parse("start recording"), Command::StartRecording);
        assert_eq!(Command::parse("Stop_Recording"), Command::StopRecording);
        assert_eq!(Command::parse("foo"), Command::Other("foo".into()));
        assert_eq!(Command::Other("foo".into()).as_str(), "foo");
    }

    #[test]
    fn errors() {
        use RequestError::*;
        let err = |entries| Request::from_value(dict(entries)).unwrap_err();
        assert_eq!(Request::from_value(Value::list()), Err(NotADictionary));
        assert_eq!(err(vec![("call-id", "x".into())]), MissingCommand);
        let wt = |key: &str, expected| WrongType {
            key: key.into(),
            expected,
        };
        assert_eq!(err(vec![("command", 1.into())]), wt("command", "string"));
        let with_cmd = |k: &'static str, v: Value| vec![("command", "offer".into()), (k, v)];
        assert_eq!(
            err(with_cmd("flags", "trust-address".into())),
            wt("flags", "list of strings")
        );
        assert_eq!(
            err(with_cmd("replace", Value::List(vec![1.into()]))),
            wt("replace", "list of strings")
        );
        assert_eq!(
            err(with_cmd("call-id", Value::list())),
            wt("call-id", "string")
        );
        assert_eq!(
            err(with_cmd("from-tag", Value::bytes(vec![0xc3, 0x28]))),
            wt("from-tag", "UTF-8 string")
        );
        assert_eq!(err(with_cmd("sdp", 5.into())), wt("sdp", "string"));
        assert_eq!(
            err(with_cmd("received from", list(&["IP4"]))),
            wt("received from", "list of [family, address]")
        );
        assert_eq!(
            err(with_cmd("limit", Value::list())),
            wt("limit", "integer")
        );
        assert_eq!(
            err(with_cmd("record call", "maybe".into())),
            InvalidValue {
                key: "record call".into(),
                value: "maybe".into()
            }
        );
        assert_eq!(
            err(with_cmd("record call", "maybe".into())).to_string(),
            "invalid value \"maybe\" for key \"record call\""
        );
        // Values are echoed as a short escaped prefix, never in full.
        let huge = format!("{}\n", "9".repeat(60_000));
        let e = err(with_cmd("limit", huge.as_str().into()));
        assert_eq!(
            e,
            InvalidValue {
                key: "limit".into(),
                value: format!("{}…", "9".repeat(echo::MAX_ECHO)),
            }
        );
        assert!(e.to_string().len() < 100, "{e}");
        let e = err(with_cmd("record call", "x\u{1b}[2J".into()));
        assert_eq!(
            e.to_string(),
            "invalid value \"x\\u{1b}[2J\" for key \"record call\""
        );
    }

    #[test]
    fn normalize_rules() {
        assert_eq!(normalize("Received From"), "received-from");
        assert_eq!(normalize("received_from"), "received-from");
        assert_eq!(normalize("strict source"), "strict-source");
        assert_eq!(normalize("ÄB"), "Äb");
    }
}
