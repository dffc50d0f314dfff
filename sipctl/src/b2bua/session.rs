//! Session timers (RFC 4028), one per leg, hop by hop: towards the caller sipctl is the UAS
//! of the dialog, towards the callee the UAC, and each leg negotiates its own interval and
//! refresher. When sipctl refreshes a leg it sends UPDATE (or a re-INVITE repeating its last
//! SDP when the party does not take UPDATE); when the party refreshes and does not in time,
//! the call ends with BYE to both parties (§10).

use super::*;
use crate::sip::session_timer::{negotiate_uac, negotiate_uas, uac_request_headers};

impl B2bua {
    /// Starts, restarts (after a refresh) or stops leg `side`'s session timer.
    pub(super) fn start_session_timer(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        timer: Option<SessionTimer>,
    ) {
        let Some(leg) = self.calls.get_mut(&id).and_then(|c| c.leg(side)) else {
            return;
        };
        leg.session = timer;
        match timer {
            Some(t) => self.arm(id, CallTimer::Session(side), now.mono + t.due_in()),
            None => self.disarm(id, CallTimer::Session(side)),
        }
    }

    /// The session-timer answer to a request from `side` that sipctl answers 2xx (an INVITE
    /// or a refresh: re-INVITE, UPDATE): negotiates (RFC 4028 §9), adds Session-Expires (and
    /// Require: timer) to `resp` and restarts the leg's timer. A request that asks for no
    /// timer leaves the running one as it is.
    pub(super) fn answer_session_refresh(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        req: &Request,
        resp: &mut Response,
    ) {
        let Some(cfg) = self.config.session_timer else {
            return;
        };
        if let UasTimer::Timer {
            response,
            require,
            timer,
        } = negotiate_uas(req, cfg)
        {
            add_session_headers(resp, response, require);
            self.start_session_timer(now, id, side, Some(timer));
        }
    }

    /// The session-timer headers of an INVITE sipctl sends as UAC (RFC 4028 §7.1); `floor`
    /// is the `Min-SE` a 422 to an earlier try asked for (§7.4).
    pub(super) fn offer_session_timer(&self, req: &mut Request, floor: Option<u32>) {
        let mut supported = vec!["100rel"];
        if let Some(mut cfg) = self.config.session_timer {
            if let Some(floor) = floor {
                cfg.min_se = cfg.min_se.max(floor);
                cfg.expires = cfg.expires.max(floor);
            }
            supported.push("timer");
            for (name, value) in uac_request_headers(cfg) {
                req.headers.push(name, value);
            }
        }
        req.headers.push("Supported", supported.join(", "));
    }

    /// A 2xx of a party to an INVITE sipctl sent it: the leg's timer as the 2xx says (§7.2).
    pub(super) fn accept_session_timer(&mut self, now: Now, id: u64, side: Side, resp: &Response) {
        if self.config.session_timer.is_some() {
            self.start_session_timer(now, id, side, negotiate_uac(resp));
        }
    }

    /// Leg `side`'s session timer fired: refresh it, or end the call when the party was the
    /// refresher and let it expire.
    pub(super) fn on_session_timer(&mut self, now: Now, id: u64, side: Side) {
        let Some(leg) = self.calls.get(&id).and_then(|c| c.leg_ref(side)) else {
            return;
        };
        let Some(timer) = leg.session else {
            return;
        };
        if !timer.we_refresh {
            let why = format!(
                "session timer expired: the {} sent no refresh within {} s (RFC 4028)",
                party_name(side),
                timer.interval
            );
            return self.end_call(now, id, &why, Some(408), ByeTo::Both);
        }
        let method = if leg.allows_update {
            Method::Update
        } else {
            Method::Invite
        };
        let Some((mut req, dest)) = self.side_request(id, side, method.clone()) else {
            return;
        };
        // §7.4: sipctl stays the refresher: in its own refresh request that is the UAC.
        req.headers.push(
            "Session-Expires",
            SessionExpires {
                delta: timer.interval,
                refresher: Some(Refresher::Uac),
            }
            .to_value(),
        );
        req.headers.push("Supported", "timer");
        if method == Method::Invite {
            let Some(leg) = self.calls.get_mut(&id).and_then(|c| c.leg(side)) else {
                return;
            };
            let last = leg.last_sdp.clone();
            let sdp = leg.stamp(&last);
            req.set_body("application/sdp", sdp);
        }
        self.send_request(now, id, TxPurpose::Refresh(side), req, dest);
        // If no answer re-arms it, try again after the same time.
        self.arm(id, CallTimer::Session(side), now.mono + timer.due_in());
    }

    /// A response to a session refresh sipctl sent on leg `side`.
    pub(super) fn on_refresh_response(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        tx: TxId,
        resp: Response,
    ) {
        if resp.is_provisional() {
            return;
        }
        if resp.is_success() {
            let Some(leg) = self.calls.get(&id).and_then(|c| c.leg_ref(side)).cloned() else {
                return;
            };
            if let Some(cseq) = resp.cseq().filter(|c| c.method == Method::Invite) {
                self.ack(tx, &leg, cseq.seq);
            }
            self.accept_session_timer(now, id, side, &resp);
        } else if matches!(resp.status, 408 | 481) {
            // RFC 3261 §12.2.1.2: the dialog is gone.
            let why = format!(
                "the {} answered a session refresh with {}",
                party_name(side),
                resp.status
            );
            self.end_call(now, id, &why, Some(resp.status), ByeTo::Both);
        }
        // Other failures (491 glare, 500): the timer armed at sending tries again.
    }
}

/// Adds the 2xx's Session-Expires (and Require: timer) of a negotiated timer (RFC 4028 §9).
pub(super) fn add_session_headers(resp: &mut Response, se: SessionExpires, require: bool) {
    resp.headers.push("Session-Expires", se.to_value());
    if require {
        resp.headers.push("Require", "timer");
    }
}
