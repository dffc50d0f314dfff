//! Session timers (RFC 4028), sans-IO: the `Session-Expires` and `Min-SE` headers and the
//! negotiation of one dialog's timer, from either side.
//!
//! A B2BUA runs one session timer per leg, hop by hop: towards the caller sipctl is the UAS
//! ([`negotiate_uas`] on the INVITE and on every refresh), towards the callee the UAC
//! ([`uac_request_headers`] on its INVITE, [`negotiate_uac`] on the 2xx). The resulting
//! [`SessionTimer`] says who refreshes and when sipctl must act ([`SessionTimer::due_in`]):
//! send a refresh (UPDATE) when it is the refresher, end the call when the peer was and did
//! not refresh in time.

use std::time::Duration;

use super::message::{HeaderAccess, Request, Response};

/// What sipctl asks for and accepts (`sip.session-expires`, `sip.min-se`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// Session interval asked for, seconds (RFC 4028 recommends 1800).
    pub expires: u32,
    /// Shortest interval accepted, seconds (at least 90, RFC 4028 §4).
    pub min_se: u32,
}

/// Who refreshes the session (RFC 4028 §4 `refresher` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The UAC of the dialog-creating INVITE (or of the refresh).
    Uac,
    /// The UAS.
    Uas,
}

/// A `Session-Expires` value: `delta-seconds[;refresher=uac|uas]` (RFC 4028 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// The session interval, seconds.
    pub delta: u32,
    /// Who refreshes, when named.
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Parses a header value (total: `None` for anything that is not one); unknown
    /// parameters are ignored, as RFC 4028's grammar allows extensions.
    pub fn parse(value: &str) -> Option<SessionExpires> {
        let mut parts = value.split(';');
        let delta = parts.next()?.trim();
        if delta.is_empty() || delta.len() > 10 || !delta.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let delta: u32 = delta.parse().ok()?;
        let mut refresher = None;
        for p in parts {
            if let Some((n, v)) = p.split_once('=') {
                if n.trim().eq_ignore_ascii_case("refresher") {
                    refresher = match v.trim() {
                        v if v.eq_ignore_ascii_case("uac") => Some(Refresher::Uac),
                        v if v.eq_ignore_ascii_case("uas") => Some(Refresher::Uas),
                        _ => None,
                    };
                }
            }
        }
        Some(SessionExpires { delta, refresher })
    }

    /// The header value.
    pub fn to_value(self) -> String {
        match self.refresher {
            None => self.delta.to_string(),
            Some(Refresher::Uac) => format!("{};refresher=uac", self.delta),
            Some(Refresher::Uas) => format!("{};refresher=uas", self.delta),
        }
    }

    /// The `Session-Expires` of a message (long or compact form `x`), if valid.
    pub fn of(msg: &impl HeaderAccess) -> Option<SessionExpires> {
        msg.headers()
            .get("Session-Expires")
            .or_else(|| msg.headers().get("x"))
            .and_then(SessionExpires::parse)
    }
}

/// The `Min-SE` of a message, if valid.
pub fn min_se_of(msg: &impl HeaderAccess) -> Option<u32> {
    let v = msg.headers().get("Min-SE")?;
    let v = v.split(';').next()?.trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Whether a message lists option tag `tag` in Supported (or compact `k`) or Require.
pub fn has_option(msg: &impl HeaderAccess, tag: &str) -> bool {
    ["Supported", "k", "Require"].iter().any(|h| {
        msg.headers()
            .values(h)
            .iter()
            .any(|v| v.trim().eq_ignore_ascii_case(tag))
    })
}

/// One leg's negotiated session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    /// The session interval, seconds.
    pub interval: u32,
    /// sipctl refreshes (else the peer must, before the interval runs out).
    pub we_refresh: bool,
}

impl SessionTimer {
    /// How long after the last refresh sipctl must act: as refresher, half the interval
    /// (RFC 4028 §10); otherwise the interval less min(32 s, a third of it), when the session
    /// has expired and sipctl sends BYE (§10).
    pub fn due_in(self) -> Duration {
        let i = u64::from(self.interval);
        Duration::from_secs(if self.we_refresh {
            (i / 2).max(1)
        } else {
            i - (i / 3).min(32)
        })
    }
}

/// What a UAS answers on a request (INVITE or a refresh) as far as session timers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasTimer {
    /// No session timer on this dialog (the peer asked for none and does not support them).
    None,
    /// The interval asked for is below `Min-SE`: answer 422 with this `Min-SE` (RFC 4028 §9).
    TooSmall(u32),
    /// A timer: put `Session-Expires: response` (and `Require: timer` when `require`) in the
    /// 2xx, and run `timer`.
    Timer {
        /// The 2xx's `Session-Expires`.
        response: SessionExpires,
        /// Whether the 2xx says `Require: timer` (the peer supports timers).
        require: bool,
        /// The timer to run.
        timer: SessionTimer,
    },
}

/// RFC 4028 §9: the UAS side of a request that may carry `Session-Expires`. A request without
/// it from a peer that supports timers gets sipctl's interval with the peer as refresher; a
/// peer that does not support them gets no timer (sipctl could refresh itself, but a peer
/// that knows nothing of timers needs none to stay up).
pub fn negotiate_uas(req: &Request, cfg: SessionTimerConfig) -> UasTimer {
    let supports = has_option(req, "timer");
    let asked = SessionExpires::of(req);
    let (delta, refresher) = match asked {
        Some(se) if se.delta < cfg.min_se => return UasTimer::TooSmall(cfg.min_se),
        // The UAS may shorten the interval, never below the request's Min-SE (§9).
        Some(se) => {
            let floor = min_se_of(req).unwrap_or(90).max(cfg.min_se);
            (se.delta.min(cfg.expires.max(floor)), se.refresher)
        }
        None if supports => (cfg.expires, None),
        None => return UasTimer::None,
    };
    // §9: a refresher the request names stays; else the UAC when it supports timers.
    let refresher = refresher.unwrap_or(if supports {
        Refresher::Uac
    } else {
        Refresher::Uas
    });
    UasTimer::Timer {
        response: SessionExpires {
            delta,
            refresher: Some(refresher),
        },
        require: supports,
        timer: SessionTimer {
            interval: delta,
            we_refresh: refresher == Refresher::Uas,
        },
    }
}

/// The session-timer headers of an INVITE (or refresh) sipctl sends as UAC (RFC 4028 §7.1):
/// `(name, value)` pairs for Session-Expires and Min-SE (Supported is the caller's job).
pub fn uac_request_headers(cfg: SessionTimerConfig) -> [(&'static str, String); 2] {
    [
        ("Session-Expires", cfg.expires.to_string()),
        ("Min-SE", cfg.min_se.to_string()),
    ]
}

/// RFC 4028 §7.2: the UAC side of a 2xx to sipctl's INVITE or refresh. No `Session-Expires`:
/// no timer; a `refresher` the 2xx does not name is the UAC (sipctl).
pub fn negotiate_uac(resp: &Response) -> Option<SessionTimer> {
    let se = SessionExpires::of(resp)?;
    if se.delta == 0 {
        return None;
    }
    Some(SessionTimer {
        interval: se.delta,
        we_refresh: se.refresher.unwrap_or(Refresher::Uac) == Refresher::Uac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    const CFG: SessionTimerConfig = SessionTimerConfig {
        expires: 1800,
        min_se: 90,
    };

    fn req(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:b@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bK-1\r\n\
             From: <sip:a@198.18.0.10>;tag=1\r\nTo: <sip:b@198.18.0.1>\r\nCall-ID: st\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match Message::parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_values() {
        assert_eq!(
            SessionExpires::parse("1800;refresher=UAS"),
            Some(SessionExpires {
                delta: 1800,
                refresher: Some(Refresher::Uas)
            })
        );
        assert_eq!(
            SessionExpires::parse(" 90 ; x=1"),
            Some(SessionExpires {
                delta: 90,
                refresher: None
            })
        );
        for bad in ["", "-1", "abc", "99999999999", ";refresher=uac", "1 2"] {
            assert_eq!(SessionExpires::parse(bad), None, "{bad:?}");
        }
        let se = SessionExpires {
            delta: 600,
            refresher: Some(Refresher::Uac),
        };
        assert_eq!(SessionExpires::parse(&se.to_value()), Some(se));
    }

    #[test]
    fn uas_negotiation_follows_rfc4028_section_9() {
        assert_eq!(negotiate_uas(&req(""), CFG), UasTimer::None);
        // A peer that supports timers but asks for none gets ours, and refreshes.
        assert_eq!(
            negotiate_uas(&req("Supported: timer\r\n"), CFG),
            UasTimer::Timer {
                response: SessionExpires {
                    delta: 1800,
                    refresher: Some(Refresher::Uac)
                },
                require: true,
                timer: SessionTimer {
                    interval: 1800,
                    we_refresh: false
                }
            }
        );
        // Too small: 422 with our Min-SE.
        assert_eq!(
            negotiate_uas(&req("Session-Expires: 60\r\n"), CFG),
            UasTimer::TooSmall(90)
        );
        // A peer without timer support: sipctl refreshes, no Require.
        match negotiate_uas(&req("Session-Expires: 300\r\n"), CFG) {
            UasTimer::Timer {
                response,
                require,
                timer,
            } => {
                assert_eq!(response.refresher, Some(Refresher::Uas));
                assert!(!require);
                assert!(timer.we_refresh);
                assert_eq!(timer.due_in(), Duration::from_secs(150));
            }
            other => panic!("{other:?}"),
        }
        // A named refresher stays; a long interval is cut to ours.
        match negotiate_uas(
            &req("Supported: timer\r\nSession-Expires: 7200;refresher=uas\r\n"),
            CFG,
        ) {
            UasTimer::Timer { response, .. } => assert_eq!(
                response,
                SessionExpires {
                    delta: 1800,
                    refresher: Some(Refresher::Uas)
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expiry_leaves_a_margin_for_the_bye() {
        let t = SessionTimer {
            interval: 90,
            we_refresh: false,
        };
        assert_eq!(t.due_in(), Duration::from_secs(60));
        let t = SessionTimer {
            interval: 1800,
            we_refresh: false,
        };
        assert_eq!(t.due_in(), Duration::from_secs(1768));
    }

    proptest::proptest! {
        #[test]
        fn parsing_is_total(s in "\\PC{0,40}") {
            let _ = SessionExpires::parse(&s);
        }
    }
}
