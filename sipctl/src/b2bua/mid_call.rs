//! Requests inside an established call: BYE, re-INVITEs from either party (relayed to the
//! other party, through the recorder when the call is recorded), session refreshes, and other
//! in-dialog requests.

use super::*;

impl B2bua {
    pub(super) fn on_in_dialog(&mut self, now: Now, id: u64, side: Side, tx: TxId, req: Request) {
        let Some(c) = self.calls.get_mut(&id) else {
            return self.respond(now, tx, &req, 481, None);
        };
        match req.method {
            Method::Bye => {
                self.respond(now, tx, &req, 200, None);
                let who = if side == Side::A { "caller" } else { "callee" };
                self.end_call(
                    now,
                    id,
                    &format!("{who} hung up"),
                    None,
                    ByeTo::OtherThan(side),
                );
            }
            Method::Invite => {
                if c.op.is_some() || c.phase != Phase::Confirmed {
                    // RFC 3261 §14.2: a re-INVITE while one of ours is pending.
                    let mut resp = Response::for_request(&req, 491, "Request Pending");
                    resp.headers.push("Retry-After", 2);
                    return self.send_response(now, tx, resp);
                }
                if let Some(resp) = Self::invite_body_refusal(&req) {
                    return self.send_response(now, tx, resp);
                }
                if req.body.is_empty() {
                    // Offerless re-INVITE (session refresh): answer with what this party
                    // last got.
                    return self.answer_refresh(now, id, side, tx, &req);
                }
                self.relay_offer(now, id, side, tx, &req);
            }
            // RFC 3311: an UPDATE with SDP is an offer that changes the media like a re-INVITE
            // does, so it takes the same way (through the recorder when recorded); an UPDATE
            // without SDP is relayed as it is.
            Method::Update if !req.body.is_empty() => {
                if c.op.is_some() || c.phase != Phase::Confirmed {
                    // §5.2: an offer while another is pending; before the call is
                    // established sipctl takes no offer in UPDATE (the 2xx is near).
                    let mut resp = Response::for_request(&req, 491, "Request Pending");
                    resp.headers.push("Retry-After", 1);
                    return self.send_response(now, tx, resp);
                }
                if !req.content_type().is_some_and(is_sdp_type) {
                    let mut resp = Response::for_request(&req, 415, reason_phrase(415));
                    resp.headers.push("Accept", "application/sdp");
                    return self.send_response(now, tx, resp);
                }
                self.relay_offer(now, id, side, tx, &req);
            }
            // RFC 3311 without SDP: nothing changes but the session timer.
            Method::Update => {
                if c.phase != Phase::Confirmed {
                    return self.respond(now, tx, &req, 200, None);
                }
                self.answer_refresh(now, id, side, tx, &req)
            }
            // sipctl sends the caller no reliable provisional response (RFC 3262 §3).
            Method::Prack => self.respond(now, tx, &req, 481, None),
            Method::Ack => {}
            Method::Refer => self.on_refer(now, id, side, tx, req),
            _ => {
                // INFO, UPDATE, OPTIONS, MESSAGE, NOTIFY...: relayed as they are.
                if c.op.is_some() || c.b.is_none() {
                    let mut resp = Response::for_request(&req, 491, "Request Pending");
                    resp.headers.push("Retry-After", 1);
                    return self.send_response(now, tx, resp);
                }
                c.op = Some(Op::Passthrough { server_tx: tx });
                let Some((mut out, dest)) = self.side_request(id, side.other(), req.method.clone())
                else {
                    return;
                };
                if let Some(ct) = req.content_type() {
                    out.set_body(ct, req.body.clone());
                }
                if self
                    .send_request(now, id, TxPurpose::Passthrough, out, dest)
                    .is_none()
                {
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.op = None;
                    }
                    self.respond(now, tx, &req, 500, None);
                }
            }
        }
    }

    /// Answers a session refresh from `side` itself: an offerless re-INVITE gets the SDP
    /// sipctl last sent this leg (the recorder's when recorded: never the other party's own),
    /// an UPDATE without SDP a bare 200; both restart the leg's session timer (RFC 4028).
    pub(super) fn answer_refresh(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        tx: TxId,
        req: &Request,
    ) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(leg) = c.leg(side) else { return };
        let mut resp = Response::for_request(req, 200, "OK");
        resp.headers
            .push("Contact", self.me.contact(leg.peer.transport));
        if req.method == Method::Invite {
            let last = leg.last_sdp.clone();
            let sdp = leg.stamp(&last);
            resp.set_body("application/sdp", sdp);
        }
        self.answer_session_refresh(now, id, side, req, &mut resp);
        self.send_response(now, tx, resp);
    }

    /// A party's offer (re-INVITE or UPDATE with SDP) in an established call: relayed to the
    /// other party, with the recorder's SDP when the call is recorded.
    fn relay_offer(&mut self, now: Now, id: u64, side: Side, tx: TxId, req: &Request) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.op = Some(Op::Relay {
            from: side,
            server_tx: tx,
            offer: req.body.clone(),
            method: req.method.clone(),
        });
        match c.media {
            Media::Recorded { .. } => {
                let body = c.media_call.offer(&req.body, side == Side::A, false);
                self.ng_request(now, id, NgPurpose::RelayOffer, &body);
            }
            Media::Direct => {
                let sdp = req.body.clone();
                self.send_offer(now, id, side.other(), sdp, req.method.clone());
            }
        }
    }

    /// Sends a re-INVITE with `sdp` to `side` for the call's current op.
    pub(super) fn reinvite(&mut self, now: Now, id: u64, side: Side, sdp: Vec<u8>) {
        self.send_offer(now, id, side, sdp, Method::Invite)
    }

    /// Sends an offer with `sdp` to `side` for the call's current op: a re-INVITE, or an
    /// UPDATE when the party being relayed used one (RFC 3311).
    pub(super) fn send_offer(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        sdp: Vec<u8>,
        method: Method,
    ) {
        let Some((mut req, dest)) = self.side_request(id, side, method) else {
            return;
        };
        let Some(leg) = self.calls.get_mut(&id).and_then(|c| c.leg(side)) else {
            return;
        };
        let sdp = leg.stamp(&sdp);
        req.set_body("application/sdp", sdp);
        if self
            .send_request(now, id, TxPurpose::Reinvite(side), req, dest)
            .is_none()
        {
            self.op_failed(
                now,
                id,
                format!("cannot send a re-INVITE to the {}", party_name(side)),
                None,
            );
        }
    }

    pub(super) fn relay_done(&mut self, now: Now, id: u64, sdp: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Relay {
            from,
            server_tx,
            offer,
            ..
        }) = c.op.take()
        else {
            return;
        };
        // (An empty offer: sipctl's own re-INVITE after a transfer; nothing to remember.)
        if !offer.is_empty() {
            match from {
                Side::A => c.sdp_a = offer,
                Side::B => c.sdp_b = offer,
            }
        }
        let Some(leg) = c.leg(from) else { return };
        let sdp = leg.stamp(&sdp);
        let transport = leg.peer.transport;
        if let Some(req) = self.txl.request(server_tx).cloned() {
            let mut resp = Response::for_request(&req, 200, "OK");
            resp.headers.push("Contact", self.me.contact(transport));
            resp.set_body("application/sdp", sdp);
            self.answer_session_refresh(now, id, from, &req, &mut resp);
            self.send_response(now, server_tx, resp);
        }
    }

    pub(super) fn relay_failed(&mut self, now: Now, id: u64, status: u16, why: &str) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Relay { server_tx, .. }) = c.op.take() else {
            return;
        };
        tracing::info!(call = id, why, "re-INVITE relay failed");
        let status = if (400..700).contains(&status) {
            status
        } else {
            500
        };
        if let Some(req) = self.txl.request(server_tx).cloned() {
            self.respond(now, server_tx, &req, status, None);
        }
    }
}
