//! Setting a call up: the caller's INVITE (routing, the A leg, the B leg), the recorder's
//! offer when the call is recorded from the start, the callee's responses (provisional and
//! final), CANCEL and the caller's ACK.

use super::*;

impl B2bua {
    /// An initial INVITE: what a B2BUA refuses before a call exists, then the call (routed,
    /// with its A leg), then its B leg, through the recorder when it is recorded.
    pub(super) fn on_invite(&mut self, now: Now, tx: TxId, req: Request, source: Peer) {
        if let Some(refusal) = Self::initial_invite_refusal(&req) {
            return self.send_response(now, tx, refusal);
        }
        // RFC 4028 §9: the caller's session timer, answered in the 2xx; too short an
        // interval gets 422 with sipctl's Min-SE.
        let a_session = self
            .config
            .session_timer
            .map(|cfg| crate::sip::session_timer::negotiate_uas(&req, cfg))
            .unwrap_or(UasTimer::None);
        if let UasTimer::TooSmall(min_se) = a_session {
            let mut resp = Response::for_request(&req, 422, "Session Interval Too Small");
            resp.headers.push("Min-SE", min_se);
            return self.send_response(now, tx, resp);
        }
        let decision = self.route(now, &req);
        let Some(id) = self.new_call(now, tx, &req, source, &decision) else {
            return self.respond(now, tx, &req, 400, None);
        };
        if let Some(c) = self.calls.get_mut(&id) {
            c.a_session = a_session;
        }
        self.event(
            now,
            id,
            EventKind::Created,
            decision.rule_name.clone(),
            None,
        );
        self.place_b_leg(now, id, &req, &decision);
    }

    /// What an initial INVITE gets instead of a call (RFC 3261 §8.2 checks are done before):
    /// 400 without the headers a dialog needs, 483 when Max-Forwards is spent, the body and
    /// Accept checks, and 488 for an offerless INVITE.
    fn initial_invite_refusal(req: &Request) -> Option<Response> {
        if req.from_addr().is_none()
            || req.to_addr().is_none()
            || req.call_id().is_none()
            || req.cseq().is_none()
        {
            return Some(Response::for_request(req, 400, reason_phrase(400)));
        }
        if req.max_forwards() == Some(0) {
            return Some(Response::for_request(req, 483, reason_phrase(483)));
        }
        if let Some(resp) = Self::invite_body_refusal(req) {
            return Some(resp);
        }
        if req.body.is_empty() {
            // Offerless INVITE: the offer would come in our 200 and the answer in A's ACK,
            // which the media control below does not do.
            let mut resp = Response::for_request(req, 488, "Not Acceptable Here");
            resp.headers.push(
                "Warning",
                "399 sipctl \"INVITE without SDP offer is not supported\"",
            );
            return Some(resp);
        }
        None
    }

    /// The routing decision for an initial INVITE.
    fn route(&self, now: Now, req: &Request) -> Decision {
        let caller = req.from_addr().and_then(|f| f.uri.user);
        let callee = req
            .uri
            .user
            .clone()
            .or_else(|| req.to_addr().and_then(|t| t.uri.user));
        let headers: Vec<(&str, &str)> = req
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        let ruri = req.uri.to_string();
        let facts = CallFacts {
            caller: caller.as_deref().unwrap_or(""),
            callee: callee.as_deref().unwrap_or(""),
            ruri: &ruri,
            headers: &headers,
            unix_time: now.unix_ms / 1000,
            sample: sample_from_call_id(req.call_id().unwrap_or_default()),
        };
        self.router.decide(&facts, &self.directory)
    }

    /// The global call id: the peer's `X-Linecord-Call-Id` when the peer is trusted, else new.
    fn global_call_id(&mut self, now: Now, req: &Request, source: Peer) -> String {
        let trusted = self.trusted(source.addr.ip());
        req.headers
            .get(GLOBAL_CALL_ID_HEADER)
            .map(str::trim)
            .filter(|g| trusted && linecord_jobs::is_uuid(g))
            .map(str::to_owned)
            .unwrap_or_else(|| self.new_uuid(now))
    }

    /// A new call from an initial INVITE: its A leg (the dialog sipctl is the UAS of) and its
    /// context for events. `None` if the INVITE cannot make a dialog.
    fn new_call(
        &mut self,
        now: Now,
        tx: TxId,
        req: &Request,
        source: Peer,
        decision: &Decision,
    ) -> Option<u64> {
        let from = req.from_addr()?;
        let to = req.to_addr()?;
        let call_id = req.call_id()?.to_owned();
        let id = self.next_call;
        let local_tag = generate_tag(&mut self.rng);
        let first_seq = self.rng.u32(1..1 << 20);
        let dialog = Dialog::uas_initial(
            req,
            &local_tag,
            self.me.contact_addr(source.transport),
            first_seq,
        )
        .ok()?;
        self.next_call += 1;
        self.counters.calls += 1;
        let key = self.dialogs.insert(dialog, LegOf::new(id, Side::A));
        let global = self.global_call_id(now, req, source);
        let caller = from.uri.user.clone();
        let callee = req.uri.user.clone().or_else(|| to.uri.user.clone());
        let party = |n: &NameAddr| Party {
            number: n.uri.user.clone(),
            uri: n.uri.to_string(),
            display_name: n.display.clone(),
        };
        let (dn, agent_side) = match (&decision.target, &decision.agent) {
            (_, Some(Agent::Caller(dn))) => (Some(dn.clone()), Some(AgentSide::Caller)),
            (Target::Dn { dn, .. }, _) => (Some(dn.clone()), Some(AgentSide::Callee)),
            _ => (None, None),
        };
        let metadata = format!(
            "caller={};callee={};dn={};switch={}{}",
            caller.as_deref().unwrap_or(""),
            callee.as_deref().unwrap_or(""),
            dn.as_deref().unwrap_or(""),
            self.config.switch,
            decision
                .rule_name
                .as_ref()
                .map(|r| format!(";rule={r}"))
                .unwrap_or_default()
        );
        let call = Call {
            id,
            deadlines: [None; CallTimer::COUNT],
            a_session: UasTimer::None,
            b_rseq: None,
            no_answer_redirected: false,
            moved: None,
            b_failover: None,
            b_offer: Vec::new(),
            ctx: CallContext {
                global_call_id: global.clone(),
                switch: self.config.switch.clone(),
                switch_call_id: id.to_string(),
                a_leg_call_id: call_id,
                b_leg_call_id: None,
                parties: EventParties {
                    caller: party(&from),
                    callee: Party {
                        number: callee.clone(),
                        uri: req.uri.to_string(),
                        display_name: to.display.clone(),
                    },
                    agent_dn: dn.clone(),
                    agent_side,
                },
                recording: None,
                version: self.config.version.clone(),
                next_seq: 0,
            },
            media_call: MediaCall {
                ng_call_id: global,
                metadata,
            },
            a: Leg {
                allows_update: call::allows_update(req),
                ..Leg::new(key, source)
            },
            b: None,
            a_invite: Some((tx, req.clone())),
            b_invite: None,
            phase: Phase::Routing,
            media: Media::Direct,
            at_recorder: false,
            sdp_a: req.body.clone(),
            sdp_b: Vec::new(),
            record_critical: decision.record && decision.record_critical,
            initiator: decision.record_by.map(|r| match r {
                crate::routing::RecordBy::Rule => RecordingInitiator::Routing,
                crate::routing::RecordBy::Dn => RecordingInitiator::Dn,
            }),
            op: None,
            caller,
            callee,
            dn,
            cancel_pending: false,
            b_provisional: false,
            b_min_se: None,
            rang: false,
            recording_announced: false,
            early_media: false,
            early_response: None,
        };
        self.calls.insert(id, call);
        self.invites.insert(tx, id);
        Some(id)
    }

    /// Routes call `id` on: refuses it, or makes its B leg and sends the INVITE (after the
    /// recorder's offer when the call is recorded from the start).
    fn place_b_leg(&mut self, now: Now, id: u64, req: &Request, decision: &Decision) {
        let target_uri = match &decision.target {
            Target::Reject { status, reason } => {
                return self.fail_call(now, id, *status, reason);
            }
            Target::Dn { contact, .. } => contact.clone(),
            Target::Trunk { uri, .. } => uri.clone(),
        };
        let Some((uri, failover, dest)) = self.locate(&target_uri) else {
            return self.fail_call(now, id, 502, &format!("cannot reach {target_uri}"));
        };
        let Some(from) = req.from_addr() else {
            return self.fail_call(now, id, 400, "no From");
        };
        let b_to = NameAddr::new(Uri {
            params: Vec::new(),
            ..req.uri.clone()
        });
        let Some(b) = self.new_uac_leg(LegOf::new(id, Side::B), &from, b_to, uri, dest) else {
            return self.fail_call(now, id, 500, "cannot make the callee's leg");
        };
        let Some(call) = self.calls.get_mut(&id) else {
            self.dialogs.remove(&b.key);
            return;
        };
        call.ctx.b_leg_call_id = Some(b.key.call_id.clone());
        call.b = Some(b);
        call.b_failover = Some(failover);
        if decision.record {
            let body = call.media_call.offer(&call.sdp_a, true, true);
            call.at_recorder = true;
            self.ng_request(now, id, NgPurpose::InitialOffer, &body);
        } else {
            let sdp = call.sdp_a.clone();
            self.invite_b(now, id, sdp);
        }
    }

    /// Sends the first INVITE to B with `sdp`.
    pub(super) fn invite_b(&mut self, now: Now, id: u64, sdp: Vec<u8>) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (Some((_, a_req)), Some(b)) = (&call.a_invite, &call.b) else {
            return;
        };
        let (a_req, b) = (a_req.clone(), b.clone());
        let Some(mut req) = self.leg_request(&b, Method::Invite) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(b) = call.b.as_mut() else { return };
        call.b_offer.clone_from(&sdp);
        let sdp = b.stamp(&sdp);
        let mf = a_req.max_forwards().unwrap_or(70).saturating_sub(1);
        req.headers.set("Max-Forwards", mf);
        req.headers
            .push(GLOBAL_CALL_ID_HEADER, &call.ctx.global_call_id);
        // Supported is sipctl's own (the callee's extensions are negotiated with sipctl, not
        // with the caller: RFC 3261 §8.1.1.10 hop by hop for a B2BUA).
        for name in ["Allow", "User-Agent", "Subject", "Priority"] {
            if let Some(v) = a_req.headers.get(name) {
                req.headers.push(name, v);
            }
        }
        req.set_body("application/sdp", sdp);
        let dest = b.peer;
        call.phase = Phase::Calling;
        let floor = call.b_min_se;
        self.offer_session_timer(&mut req, floor);
        if let Some(tx) = self.send_request(now, id, TxPurpose::BInvite, req.clone(), dest) {
            if let Some(c) = self.calls.get_mut(&id) {
                c.b_invite = Some((tx, req));
            }
            if let Some(na) = &self.router.no_answer {
                let at = now.mono + Duration::from_secs(u64::from(na.after_secs));
                self.arm(id, CallTimer::NoAnswer, at);
            }
        } else {
            self.fail_call(now, id, 500, "cannot send the INVITE to the callee");
        }
    }

    pub(super) fn on_cancel(&mut self, now: Now, tx: TxId, req: Request, invite: Option<TxId>) {
        let call = invite.and_then(|i| self.invites.get(&i).copied());
        let Some(id) = call else {
            return self.respond(now, tx, &req, 481, None);
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return self.respond(now, tx, &req, 481, None);
        };
        // RFC 3261 §9.2: the 200 to CANCEL carries the To tag the INVITE's responses carry.
        let tag = c.a.key.local_tag.clone();
        self.respond(now, tx, &req, 200, Some(&tag));
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some((itx, ireq)) = c.a_invite.take() {
            self.respond(now, itx, &ireq, 487, Some(&tag));
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some((btx, _)) = c.b_invite {
            if c.b_provisional {
                let _ = self.txl.send_cancel(now.mono, btx);
            } else {
                c.cancel_pending = true;
            }
        }
        self.end_call(
            now,
            id,
            "cancelled by the caller",
            Some(487),
            ByeTo::Neither,
        );
    }

    /// An ACK (for a 2xx: the layer absorbs the others) in one of the calls' dialogs: the
    /// caller's confirms the call.
    pub(super) fn on_ack(&mut self, _now: Now, req: &Request) {
        let Ok((_, owner)) = self.dialogs.route_request(req) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&owner.call) else {
            return;
        };
        if owner.side == Side::A && c.phase == Phase::Answered {
            c.phase = Phase::Confirmed;
        }
    }

    /// A response of the callee to the first INVITE (its dialog state is already applied).
    pub(super) fn on_b_invite_response(&mut self, now: Now, id: u64, tx: TxId, resp: Response) {
        if resp.status == 100 {
            return;
        }
        if resp.is_provisional() {
            self.on_b_provisional(now, id, tx, resp)
        } else if resp.is_success() {
            self.on_b_answer(now, id, tx, resp)
        } else {
            self.on_b_refusal(now, id, resp)
        }
    }

    /// A 101–199 from the callee: relayed to the caller. Early media (SDP in it) is relayed
    /// too; in a recorded call it goes through the recorder first (NG `answer`), so the
    /// caller's early media flows through the recorder like the rest of the call.
    fn on_b_provisional(&mut self, now: Now, id: u64, tx: TxId, resp: Response) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.b_provisional = true;
        if c.cancel_pending {
            c.cancel_pending = false;
            let _ = self.txl.send_cancel(now.mono, tx);
            return;
        }
        // RFC 3262: a reliable provisional response gets a PRACK in the early dialog; a
        // retransmission of one already PRACKed (RSeq not above the last) is not relayed again.
        if let Some(rseq) = reliable_rseq(&resp) {
            if c.b_rseq.is_some_and(|last| rseq <= last) {
                return;
            }
            c.b_rseq = Some(rseq);
            let invite_seq = resp.cseq().map(|c| c.seq).unwrap_or(0);
            if let Some((mut prack, dest)) = self.side_request(id, Side::B, Method::Prack) {
                prack
                    .headers
                    .push("RAck", format!("{rseq} {invite_seq} INVITE"));
                self.send_request(now, id, TxPurpose::Bye, prack, dest);
            }
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.phase == Phase::Calling {
            c.phase = Phase::Early;
        }
        let first_ring = !c.rang;
        c.rang = true;
        if first_ring {
            self.event(now, id, EventKind::Ringing, None, Some(resp.status));
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if resp.body.is_empty() {
            return self.relay_provisional(now, id, resp.status, &resp.reason, None);
        }
        c.sdp_b = resp.body.clone();
        if !c.early_media {
            c.early_media = true;
            self.event(now, id, EventKind::EarlyMedia, None, Some(resp.status));
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.at_recorder {
            let body = c.media_call.answer(&resp.body, true);
            c.early_response = Some((resp.status, resp.reason.clone()));
            self.ng_request(now, id, NgPurpose::EarlyAnswer, &body);
        } else {
            self.relay_provisional(now, id, resp.status, &resp.reason, Some(resp.body));
        }
    }

    /// Sends the caller a provisional response (with `sdp`, B's or the recorder's, as early
    /// media) while its INVITE is pending.
    pub(super) fn relay_provisional(
        &mut self,
        now: Now,
        id: u64,
        status: u16,
        reason: &str,
        sdp: Option<Vec<u8>>,
    ) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some((atx, areq)) = &c.a_invite else {
            return;
        };
        let atx = *atx;
        let mut out = Response::for_request(areq, status, reason);
        out.set_to_tag(&c.a.key.local_tag);
        out.headers
            .push("Contact", self.me.contact(c.a.peer.transport));
        if let Some(sdp) = sdp {
            let sdp = c.a.stamp(&sdp);
            out.set_body("application/sdp", sdp);
        }
        self.send_response(now, atx, out);
    }

    /// The callee answered: ACK, then the caller gets the answer (through the recorder when
    /// the call is recorded).
    fn on_b_answer(&mut self, now: Now, id: u64, tx: TxId, resp: Response) {
        let Some(c) = self.calls.get_mut(&id) else {
            // The call is gone (cancelled): a late 2xx still needs ACK and BYE.
            return;
        };
        c.b_invite = None;
        if let Some(b) = c.b.as_mut() {
            b.allows_update = call::allows_update(&resp);
        }
        let Some(b) = c.b.clone() else { return };
        let seq = resp.cseq().map(|c| c.seq).unwrap_or(0);
        self.ack(tx, &b, seq);
        self.disarm(id, CallTimer::NoAnswer);
        self.accept_session_timer(now, id, Side::B, &resp);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.phase == Phase::Ending || c.a_invite.is_none() {
            // Cancelled meanwhile: hang up the callee at once.
            if let Some(bye) = self.leg_request(&b, Method::Bye) {
                self.send_request(now, id, TxPurpose::Bye, bye, b.peer);
            }
            return;
        }
        c.sdp_b = resp.body.clone();
        c.phase = Phase::Answering;
        if c.at_recorder {
            let body = c.media_call.answer(&resp.body, true);
            self.ng_request(now, id, NgPurpose::InitialAnswer, &body);
        } else {
            let sdp = resp.body;
            self.answer_a(now, id, sdp);
        }
    }

    /// A final failure from the callee goes back to the caller as it is.
    fn on_b_refusal(&mut self, now: Now, id: u64, resp: Response) {
        if fails_over(Some(resp.status)) && self.try_next_b_target(now, id) {
            return;
        }
        if resp.status == 422 && self.retry_with_min_se(now, id, &resp) {
            return;
        }
        self.disarm(id, CallTimer::NoAnswer);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.b_invite = None;
        let reason = format!(
            "callee answered {} {}",
            resp.status,
            peer_text(&resp.reason)
        );
        if let Some((atx, areq)) = c.a_invite.take() {
            let mut out = Response::for_request(&areq, resp.status, &resp.reason);
            out.set_to_tag(&c.a.key.local_tag);
            self.send_response(now, atx, out);
        }
        self.end_call(now, id, &reason, Some(resp.status), ByeTo::Neither);
    }

    /// RFC 4028 §7.4: the callee refused sipctl's session interval as too small: try once
    /// more with its `Min-SE` (a new INVITE in the same leg). False when that is not possible
    /// (no timers, no usable `Min-SE`, tried already).
    fn retry_with_min_se(&mut self, now: Now, id: u64, resp: &Response) -> bool {
        let Some(cfg) = self.config.session_timer else {
            return false;
        };
        let Some(min) = crate::sip::session_timer::min_se_of(resp) else {
            return false;
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return false;
        };
        // Once: a callee asking for more than an hour, or again, is refused as it answered.
        if c.b_min_se.is_some() || c.phase != Phase::Calling || min <= cfg.expires || min > 3600 {
            return false;
        }
        tracing::info!(
            call = id,
            min_se = min,
            "the callee asked for a longer session interval (422): retrying"
        );
        c.b_min_se = Some(min);
        c.b_invite = None;
        let offer = c.b_offer.clone();
        self.invite_b(now, id, offer);
        true
    }

    /// Answers A's INVITE with `sdp` (B's, or the recorder's).
    pub(super) fn answer_a(&mut self, now: Now, id: u64, sdp: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some((atx, areq)) = c.a_invite.take() else {
            return;
        };
        let sdp = c.a.stamp(&sdp);
        let mut out = Response::for_request(&areq, 200, "OK");
        out.set_to_tag(&c.a.key.local_tag);
        out.headers
            .push("Contact", self.me.contact(c.a.peer.transport));
        out.set_body("application/sdp", sdp);
        c.phase = Phase::Answered;
        if let Some(d) = self.dialogs.get_mut(&c.a.key) {
            d.confirm();
        }
        let recorded = matches!(c.media, Media::Recorded { .. });
        if let UasTimer::Timer {
            response,
            require,
            timer,
        } = c.a_session
        {
            session::add_session_headers(&mut out, response, require);
            self.start_session_timer(now, id, Side::A, Some(timer));
        }
        self.invites.remove(&atx);
        self.send_response(now, atx, out);
        self.event(now, id, EventKind::Answered, None, Some(200));
        if recorded {
            self.event(now, id, EventKind::RecordingStarted, None, None);
        }
    }

    /// The callee rang for `routing.no-answer-secs`: the call goes to the no-answer target
    /// (once; a target that does not answer either ends the call with 480), and the ringing
    /// leg is given up (CANCEL, or ACK and BYE should it still answer).
    pub(super) fn on_no_answer(&mut self, now: Now, id: u64) {
        let Some(secs) = self.router.no_answer.as_ref().map(|n| n.after_secs) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if !matches!(c.phase, Phase::Calling | Phase::Early) {
            return;
        }
        let why = format!("no answer within {secs} s");
        let target = if c.no_answer_redirected {
            None
        } else {
            self.router
                .decide_no_answer(&self.directory, now.unix_ms / 1000)
        };
        let (uri, dn) = match target {
            Some(Target::Dn { dn, contact }) => (contact, Some(dn)),
            Some(Target::Trunk { uri, .. }) => (uri, None),
            Some(Target::Reject { status, .. }) => return self.fail_call(now, id, status, &why),
            None => return self.fail_call(now, id, 480, &why),
        };
        let Some((target_uri, failover, dest)) = self.locate(&uri) else {
            return self.fail_call(now, id, 502, &format!("{why}; cannot reach {uri}"));
        };
        // What the old callee was offered (the recorder's SDP when recorded).
        let offer = match self.calls.get(&id) {
            Some(c) => match (&c.b, c.at_recorder) {
                (Some(b), true) => b.last_sdp.clone(),
                _ => c.sdp_a.clone(),
            },
            None => return,
        };
        self.abandon_b_leg(now, id);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.no_answer_redirected = true;
        c.phase = Phase::Calling;
        c.rang = false;
        c.b_provisional = false;
        c.b_rseq = None;
        let Some((_, a_req)) = &c.a_invite else {
            return;
        };
        let Some(from) = a_req.from_addr() else {
            return;
        };
        let remote = NameAddr::new(Uri {
            params: Vec::new(),
            ..target_uri.clone()
        });
        tracing::info!(call = id, %why, target = %target_uri, "no answer: the call moves on");
        let Some(b) = self.new_uac_leg(LegOf::new(id, Side::B), &from, remote, target_uri, dest)
        else {
            return self.fail_call(now, id, 500, "cannot make the no-answer target's leg");
        };
        let Some(c) = self.calls.get_mut(&id) else {
            self.dialogs.remove(&b.key);
            return;
        };
        c.ctx.b_leg_call_id = Some(b.key.call_id.clone());
        c.b_failover = Some(failover);
        if let Some(dn) = &dn {
            c.dn = Some(dn.clone());
            c.callee = Some(dn.clone());
        }
        c.b = Some(b);
        self.invite_b(now, id, offer);
    }

    /// Gives up call `id`'s B leg while its INVITE is pending: CANCEL now if it rang, else on
    /// its first provisional response; a 2xx that crosses the CANCEL gets ACK and BYE.
    fn abandon_b_leg(&mut self, now: Now, id: u64) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let (Some((btx, _)), Some(b)) = (c.b_invite.take(), c.b.take()) else {
            return;
        };
        if c.b_provisional {
            let _ = self.txl.send_cancel(now.mono, btx);
        }
        self.client_txs.insert(btx, (id, TxPurpose::Abandoned));
        // Requests from it now find no call.
        self.dialogs.set_owner(
            &b.key,
            LegOf {
                call: id,
                side: Side::B,
                pending: true,
            },
        );
        self.abandoned.insert(btx, b);
    }

    /// A response on a given-up B leg's INVITE.
    pub(super) fn on_abandoned_response(&mut self, now: Now, tx: TxId, resp: Response) {
        let Some(leg) = self.abandoned.get(&tx).cloned() else {
            return;
        };
        if resp.is_provisional() {
            if resp.status > 100 {
                // Not CANCELled yet if it had not rung (RFC 3261 §9.1); a repeat is harmless.
                let _ = self.txl.send_cancel(now.mono, tx);
            }
            return;
        }
        if resp.is_success() {
            let seq = resp.cseq().map(|c| c.seq).unwrap_or(0);
            self.ack(tx, &leg, seq);
            let call = self.dialogs.owner(&leg.key).map_or(0, |o| o.call);
            if let Some(bye) = self.leg_request(&leg, Method::Bye) {
                self.send_request(now, call, TxPurpose::Bye, bye, leg.peer);
            }
        }
        self.drop_abandoned(tx);
    }

    /// Where a request to `uri` goes: the parsed URI, its targets in failover order (RFC 3263:
    /// a numeric host directly, a name from the located table) and the first of them.
    pub(super) fn locate(&self, uri: &str) -> Option<(Uri, Failover, Peer)> {
        let (uri, mut failover) = self.targets.resolve(uri)?;
        let peer = failover.next_target()?.peer();
        Some((uri, failover, peer))
    }

    /// RFC 3263 §4.3: the callee's INVITE failed at its target before any response of it
    /// (timeout, transport error) or with 503: the same offer goes to the next located target
    /// on a fresh leg. False when no target is left (the failure then stands).
    pub(super) fn try_next_b_target(&mut self, now: Now, id: u64) -> bool {
        let Some(c) = self.calls.get_mut(&id) else {
            return false;
        };
        if c.b_provisional || !matches!(c.phase, Phase::Calling) {
            return false;
        }
        let Some(next) = c.b_failover.as_mut().and_then(Failover::next_target) else {
            return false;
        };
        let Some(from) = c.a_invite.as_ref().and_then(|(_, r)| r.from_addr()) else {
            return false;
        };
        let Some(old) = c.b.take() else {
            return false;
        };
        c.b_invite = None;
        let offer = c.b_offer.clone();
        let Some((remote, target)) = self
            .dialogs
            .remove(&old.key)
            .map(|d| (strip_tag(&d.remote_uri), d.remote_target))
        else {
            return false;
        };
        tracing::info!(call = id, target = %next.addr, "the callee's target failed: trying the next (RFC 3263)");
        let Some(b) = self.new_uac_leg(LegOf::new(id, Side::B), &from, remote, target, next.peer())
        else {
            return false;
        };
        let Some(c) = self.calls.get_mut(&id) else {
            self.dialogs.remove(&b.key);
            return false;
        };
        c.ctx.b_leg_call_id = Some(b.key.call_id.clone());
        c.b = Some(b);
        self.invite_b(now, id, offer);
        true
    }

    /// Forgets a given-up B leg.
    pub(super) fn drop_abandoned(&mut self, tx: TxId) {
        if let Some(leg) = self.abandoned.remove(&tx) {
            self.dialogs.remove(&leg.key);
        }
    }
}

/// The RSeq of a reliable provisional response (RFC 3262 §7.1: `Require: 100rel` and a
/// valid RSeq), if it is one.
fn reliable_rseq(resp: &Response) -> Option<u32> {
    let reliable = resp
        .headers
        .values("Require")
        .iter()
        .any(|t| t.trim().eq_ignore_ascii_case("100rel"));
    if !reliable || resp.status == 100 {
        return None;
    }
    let v = resp.headers.get("RSeq")?.trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|n| *n > 0)
}
