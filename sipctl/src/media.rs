//! Media control of one call through the recorder, as NG request dictionaries, and the SDP
//! housekeeping a B2BUA owes each leg.
//!
//! NG names a call by its Call-ID and the tags of its two parties. sipctl uses the call's
//! global call id as the NG call-id (it is unique across switches) and the leg names `a`
//! and `b` as tags, so every NG request of a call can be built from the call alone.

use linecord_ng::{reply, Command, Request, Value};

/// NG from-tag of the caller's side.
pub const TAG_A: &str = "a";
/// NG to-tag of the callee's side.
pub const TAG_B: &str = "b";

/// What a call asks the recorder for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaCall {
    /// NG call-id (the global call id).
    pub ng_call_id: String,
    /// Text stored with the recording (`metadata`): parties, DNs, the rule that decided.
    pub metadata: String,
}

impl MediaCall {
    fn request(&self, command: Command) -> Request {
        let mut r = Request::new(command);
        r.call_id = Some(self.ng_call_id.clone());
        r.from_tag = Some(TAG_A.into());
        r
    }

    /// `offer` with the caller's SDP (`sdp` of party `from`); `record` adds `record call`.
    /// The reply's SDP goes to the other party.
    pub fn offer(&self, sdp: &[u8], from_a: bool, record: bool) -> Value {
        let mut r = self.request(Command::Offer);
        if !from_a {
            r.from_tag = Some(TAG_B.into());
            r.to_tag = Some(TAG_A.into());
        }
        r.sdp = Some(sdp.to_vec());
        // The parties never see each other's addresses, not even in o= (rtpengine's
        // `replace origin`).
        r.replace = vec!["origin".into()];
        r.record_call = record.then_some(true);
        r.metadata = Some(self.metadata.clone());
        r.label = Some(if from_a { "caller" } else { "callee" }.into());
        r.to_value()
    }

    /// `answer` with the answering party's SDP; the reply's SDP goes to the offerer.
    pub fn answer(&self, sdp: &[u8], offer_from_a: bool) -> Value {
        let mut r = self.request(Command::Answer);
        if offer_from_a {
            r.to_tag = Some(TAG_B.into());
        } else {
            r.from_tag = Some(TAG_B.into());
            r.to_tag = Some(TAG_A.into());
        }
        r.sdp = Some(sdp.to_vec());
        r.replace = vec!["origin".into()];
        r.to_value()
    }

    /// `delete`: the recorder finishes the recording and frees the ports.
    pub fn delete(&self) -> Value {
        self.request(Command::Delete).to_value()
    }

    /// `start recording` (also resumes a paused recording).
    pub fn start_recording(&self) -> Value {
        self.request(Command::StartRecording).to_value()
    }

    /// `stop recording`.
    pub fn stop_recording(&self) -> Value {
        self.request(Command::StopRecording).to_value()
    }

    /// `pause recording`.
    pub fn pause_recording(&self) -> Value {
        self.request(Command::PauseRecording).to_value()
    }
}

/// The SDP of an `offer`/`answer` reply, or why there is none.
pub fn reply_sdp(body: &Value) -> Result<Vec<u8>, String> {
    let r = reply::inspect(body).map_err(|e| format!("bad NG reply: {e}"))?;
    if r.result != "ok" {
        return Err(r.error_reason.unwrap_or(r.result).to_owned());
    }
    r.sdp
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "the recorder's reply has no SDP".to_owned())
}

/// Whether an NG reply says `ok` (or `pong`); otherwise the reason.
pub fn reply_ok(body: &Value) -> Result<(), String> {
    let r = reply::inspect(body).map_err(|e| format!("bad NG reply: {e}"))?;
    match r.result {
        "ok" | "pong" => Ok(()),
        other => Err(r.error_reason.unwrap_or(other).to_owned()),
    }
}

/// The `o=` line a B2BUA keeps per leg: RFC 3264 §8 wants the same session id and a version
/// one higher each time a UA sends a changed session description; sipctl is the UA each
/// party talks to, so it rewrites `o=` on every SDP it sends to a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    session_id: Option<String>,
    version: u64,
}

impl Default for Origin {
    fn default() -> Self {
        Self::new()
    }
}

impl Origin {
    /// An origin that adopts the session id of the first SDP it rewrites.
    pub fn new() -> Origin {
        Origin {
            session_id: None,
            version: 0,
        }
    }

    /// Rewrites the `o=` line of `sdp` with this leg's session id and the next version.
    /// SDP without an `o=` line is returned unchanged.
    pub fn stamp(&mut self, sdp: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(sdp);
        let mut out = String::with_capacity(text.len() + 8);
        let mut done = false;
        for line in text.split_inclusive('\n') {
            if !done && line.starts_with("o=") {
                let body = line.trim_end_matches(['\r', '\n']);
                let eol = &line[body.len()..];
                let f: Vec<&str> = body[2..].split(' ').collect();
                if f.len() >= 6 {
                    let sess = self.session_id.get_or_insert_with(|| f[1].to_owned());
                    if self.version == 0 {
                        self.version = f[2].parse::<u64>().unwrap_or(0);
                    } else {
                        self.version += 1;
                    }
                    out.push_str(&format!(
                        "o={} {} {} {}{eol}",
                        f[0],
                        sess,
                        self.version,
                        f[3..].join(" ")
                    ));
                    done = true;
                    continue;
                }
            }
            out.push_str(line);
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linecord_ng::Request;

    fn call() -> MediaCall {
        MediaCall {
            ng_call_id: "0199-global".into(),
            metadata: "caller=100;callee=2001".into(),
        }
    }

    #[test]
    fn requests_name_the_call_and_the_parties() {
        let v = call().offer(b"v=0\r\n", true, true);
        let r = Request::from_value(v).unwrap();
        assert_eq!(r.command, Command::Offer);
        assert_eq!(r.call_id.as_deref(), Some("0199-global"));
        assert_eq!(r.from_tag.as_deref(), Some("a"));
        assert_eq!(r.record_call, Some(true));
        assert_eq!(r.replace, ["origin"]);
        assert_eq!(r.metadata.as_deref(), Some("caller=100;callee=2001"));
        let r = Request::from_value(call().answer(b"v=0\r\n", true)).unwrap();
        assert_eq!(
            (r.from_tag.as_deref(), r.to_tag.as_deref()),
            (Some("a"), Some("b"))
        );
        // An offer from B (a re-INVITE by the callee) swaps the tags.
        let r = Request::from_value(call().offer(b"v=0\r\n", false, false)).unwrap();
        assert_eq!(
            (r.from_tag.as_deref(), r.to_tag.as_deref()),
            (Some("b"), Some("a"))
        );
        assert_eq!(r.record_call, None);
        let r = Request::from_value(call().answer(b"v=0\r\n", false)).unwrap();
        assert_eq!(
            (r.from_tag.as_deref(), r.to_tag.as_deref()),
            (Some("b"), Some("a"))
        );
        for (v, c) in [
            (call().delete(), Command::Delete),
            (call().start_recording(), Command::StartRecording),
            (call().stop_recording(), Command::StopRecording),
            (call().pause_recording(), Command::PauseRecording),
        ] {
            assert_eq!(Request::from_value(v).unwrap().command, c);
        }
    }

    #[test]
    fn replies() {
        assert_eq!(
            reply_sdp(&reply::ok_with_sdp(b"v=0\r\n")).unwrap(),
            b"v=0\r\n"
        );
        assert_eq!(
            reply_sdp(&reply::error("no ports")).unwrap_err(),
            "no ports"
        );
        assert!(reply_sdp(&reply::ok()).is_err());
        assert!(reply_ok(&reply::ok()).is_ok());
        assert!(reply_ok(&reply::pong()).is_ok());
        assert_eq!(
            reply_ok(&reply::error("Unknown call-id")).unwrap_err(),
            "Unknown call-id"
        );
        assert!(reply_ok(&Value::int(3)).is_err());
    }

    #[test]
    fn origin_keeps_the_session_and_counts_versions() {
        let mut o = Origin::new();
        let a = b"v=0\r\no=alice 2890844526 7 IN IP4 198.18.0.10\r\ns=-\r\n";
        let b = b"v=0\r\no=- 55 1 IN IP4 198.18.0.1\r\ns=-\r\n";
        assert_eq!(o.stamp(a), a.to_vec(), "the first SDP passes as it is");
        assert_eq!(
            String::from_utf8(o.stamp(b)).unwrap(),
            "v=0\r\no=- 2890844526 8 IN IP4 198.18.0.1\r\ns=-\r\n"
        );
        assert!(String::from_utf8(o.stamp(a))
            .unwrap()
            .contains("o=alice 2890844526 9 IN IP4"));
        assert_eq!(o.stamp(b"v=0\r\ns=-\r\n"), b"v=0\r\ns=-\r\n");
    }
}
