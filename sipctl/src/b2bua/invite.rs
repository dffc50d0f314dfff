//! Setting a call up: the caller's INVITE (routing, the A leg, the B leg), the recorder's
//! offer when the call is recorded from the start, the callee's responses (provisional and
//! final), CANCEL and the caller's ACK.

use super::*;

impl B2bua {
    pub(super) fn on_invite(&mut self, now: Now, tx: TxId, req: Request, source: Peer) {
        // RFC 3261 §8.2.2.1-3 checks done by the parser; what a B2BUA needs on top:
        let (Some(from), Some(to), Some(call_id), Some(cseq)) = (
            req.from_addr(),
            req.to_addr(),
            req.call_id().map(str::to_owned),
            req.cseq(),
        ) else {
            return self.respond(now, tx, &req, 400, None);
        };
        if req.max_forwards() == Some(0) {
            return self.respond(now, tx, &req, 483, None);
        }
        // RFC 3261 §12.1.1 / RFC 4475 §3.4.1: an RFC 2543 caller sends no From tag; the
        // dialog then has an empty remote tag.
        let remote_tag = from.tag().map(str::to_owned);
        if let Some(resp) = Self::invite_body_refusal(&req) {
            return self.send_response(now, tx, resp);
        }
        if req.body.is_empty() {
            // Offerless INVITE: the offer would come in our 200 and the answer in A's ACK,
            // which the media control below does not do.
            let mut resp = Response::for_request(&req, 488, "Not Acceptable Here");
            resp.headers.push(
                "Warning",
                "399 sipctl \"INVITE without SDP offer is not supported\"",
            );
            return self.send_response(now, tx, resp);
        }
        let local_tag = generate_tag();
        let id = self.next_call;
        self.next_call += 1;
        self.counters.calls += 1;

        let global = req
            .headers
            .get(GLOBAL_CALL_ID_HEADER)
            .map(str::trim)
            .filter(|g| linecord_jobs::is_uuid(g) && self.trusted(source.addr.ip()))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let mut random = [0u8; 10];
                self.rng.fill(&mut random);
                linecord_jobs::uuid_v7(now.unix_ms, random)
            });
        let caller = from.uri.user.clone();
        let callee = req.uri.user.clone().or_else(|| to.uri.user.clone());
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
            sample: sample_from_call_id(&call_id),
        };
        let decision = self.router.decide(&facts, &self.directory);
        drop(headers);

        let remote_target = req
            .contact()
            .map(|c| c.uri)
            .unwrap_or_else(|| from.uri.clone());
        let mut a = Leg {
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            remote_tag,
            local: strip_tag(&to),
            remote: strip_tag(&from),
            local_cseq: 0,
            remote_target,
            // RFC 3261 §12.1.1: the UAS's route set is the Record-Route list in order.
            route_set: req
                .headers
                .get_all("Record-Route")
                .map(str::to_owned)
                .collect(),
            peer: source,
            origin: Origin::new(),
        };
        a.local_cseq = self.rng.u32(1..1 << 20);
        let _ = cseq;
        let party = |n: &NameAddr| Party {
            number: n.uri.user.clone(),
            uri: n.uri.to_string(),
            display_name: n.display.clone(),
        };
        let dn = match &decision.target {
            Target::Dn { dn, .. } => Some(dn.clone()),
            _ => None,
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
            ctx: CallContext {
                global_call_id: global.clone(),
                switch: self.config.switch.clone(),
                switch_call_id: id.to_string(),
                a_leg_call_id: call_id.clone(),
                b_leg_call_id: None,
                parties: EventParties {
                    caller: party(&from),
                    callee: Party {
                        number: callee.clone(),
                        uri: ruri.clone(),
                        display_name: to.display.clone(),
                    },
                    agent_dn: dn.clone(),
                },
                recording: None,
                version: self.config.version.clone(),
                next_seq: 0,
            },
            media_call: MediaCall {
                ng_call_id: global,
                metadata,
            },
            a,
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
            rang: false,
            recording_announced: false,
        };
        self.calls.insert(id, call);
        self.dialogs
            .insert((call_id, local_tag.clone()), (id, Side::A));
        self.invites.insert(tx, id);
        self.event(
            now,
            id,
            EventKind::Created,
            decision.rule_name.clone(),
            None,
        );

        let (target_uri, transport_hint) = match &decision.target {
            Target::Reject { status, reason } => {
                let (status, reason) = (*status, reason.clone());
                return self.fail_call(now, id, status, &reason);
            }
            Target::Dn { contact, .. } => (contact.clone(), None),
            Target::Trunk { uri, .. } => (uri.clone(), None::<Transport>),
        };
        let _ = transport_hint;
        let Some((uri, dest)) = resolve(&target_uri) else {
            return self.fail_call(now, id, 502, &format!("cannot reach {target_uri}"));
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let b_to = NameAddr::new(Uri {
            params: Vec::new(),
            ..req.uri.clone()
        });
        call.b = Some(Leg {
            call_id: generate_call_id(&self.me.host),
            local_tag: generate_tag(),
            remote_tag: None,
            local: strip_tag(&from),
            remote: b_to,
            local_cseq: self.rng.u32(1..1 << 20),
            remote_target: uri,
            route_set: Vec::new(),
            peer: dest,
            origin: Origin::new(),
        });
        if let Some(b) = &call.b {
            call.ctx.b_leg_call_id = Some(b.call_id.clone());
            self.dialogs
                .insert((b.call_id.clone(), b.local_tag.clone()), (id, Side::B));
        }
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
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some((_, a_req)) = &call.a_invite else {
            return;
        };
        let a_req = a_req.clone();
        let Some(b) = call.b.as_mut() else { return };
        let sdp = b.origin.stamp(&sdp);
        let mut req = b.request(Method::Invite, &self.me);
        let mf = a_req.max_forwards().unwrap_or(70).saturating_sub(1);
        req.headers.set("Max-Forwards", mf);
        req.headers
            .push(GLOBAL_CALL_ID_HEADER, &call.ctx.global_call_id);
        for name in ["Allow", "Supported", "User-Agent", "Subject", "Priority"] {
            if let Some(v) = a_req.headers.get(name) {
                req.headers.push(name, v);
            }
        }
        req.set_body("application/sdp", sdp);
        let dest = b.peer;
        call.phase = Phase::Calling;
        if let Some(tx) = self.send_request(now, id, TxPurpose::BInvite, req.clone(), dest) {
            if let Some(c) = self.calls.get_mut(&id) {
                c.b_invite = Some((tx, req));
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
        self.respond(now, tx, &req, 200, None);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some((itx, ireq)) = c.a_invite.take() {
            let tag = c.a.local_tag.clone();
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
        self.end_call(now, id, "cancelled by the caller", Some(487), false);
    }

    pub(super) fn on_ack(&mut self, now: Now, req: &Request) {
        let key = (
            req.call_id().unwrap_or_default().to_owned(),
            req.to_tag().unwrap_or_default(),
        );
        let Some((id, Side::A)) = self.dialogs.get(&key).copied() else {
            return;
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.phase == Phase::Answered {
            c.phase = Phase::Confirmed;
        }
        let _ = now;
    }

    pub(super) fn on_b_invite_response(&mut self, now: Now, id: u64, tx: TxId, resp: Response) {
        let Some(c) = self.calls.get_mut(&id) else {
            // The call is gone (cancelled): a late 2xx still needs ACK and BYE.
            return;
        };
        if resp.status == 100 {
            return;
        }
        if resp.is_provisional() {
            c.b_provisional = true;
            if c.cancel_pending {
                c.cancel_pending = false;
                let _ = self.txl.send_cancel(now.mono, tx);
                return;
            }
            if let (Some(b), Some(tag)) = (c.b.as_mut(), resp.to_tag()) {
                b.remote_tag = Some(tag);
            }
            if c.phase == Phase::Calling {
                c.phase = Phase::Early;
            }
            if let Some((atx, areq)) = c.a_invite.clone() {
                let mut out = Response::for_request(&areq, resp.status, &resp.reason);
                out.set_to_tag(&c.a.local_tag);
                out.headers
                    .push("Contact", self.me.contact(c.a.peer.transport));
                // Early media is relayed only when the media is direct: with the recorder in
                // the path the callee's early SDP would need its own NG answer.
                if c.media == Media::Direct && !resp.body.is_empty() {
                    let sdp = c.a.origin.stamp(&resp.body);
                    out.set_body("application/sdp", sdp);
                }
                let first_ring = !c.rang;
                c.rang = true;
                self.send_response(now, atx, out);
                if first_ring {
                    self.event(now, id, EventKind::Ringing, None, Some(resp.status));
                }
            }
            return;
        }
        c.b_invite = None;
        if resp.is_success() {
            let Some(b) = c.b.as_mut() else { return };
            b.remote_tag = resp.to_tag();
            if let Some(contact) = resp.contact() {
                b.remote_target = contact.uri;
            }
            // RFC 3261 §12.1.2: the UAC's route set is the Record-Route list reversed.
            b.route_set = resp
                .headers
                .get_all("Record-Route")
                .map(str::to_owned)
                .collect();
            b.route_set.reverse();
            let seq = resp.cseq().map(|c| c.seq).unwrap_or(b.local_cseq);
            let leg = b.clone();
            self.ack(tx, &leg, seq);
            let Some(c) = self.calls.get_mut(&id) else {
                return;
            };
            if c.phase == Phase::Ending || c.a_invite.is_none() {
                // Cancelled meanwhile: hang up the callee at once.
                let mut b = leg;
                let bye = b.request(Method::Bye, &self.me);
                self.send_request(now, id, TxPurpose::Bye, bye, b.peer);
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
            return;
        }
        // A final failure from the callee goes back to the caller as it is.
        let reason = format!(
            "callee answered {} {}",
            resp.status,
            peer_text(&resp.reason)
        );
        if let Some((atx, areq)) = c.a_invite.take() {
            let mut out = Response::for_request(&areq, resp.status, &resp.reason);
            out.set_to_tag(&c.a.local_tag);
            self.send_response(now, atx, out);
        }
        self.end_call(now, id, &reason, Some(resp.status), false);
    }

    /// Answers A's INVITE with `sdp` (B's, or the recorder's).
    pub(super) fn answer_a(&mut self, now: Now, id: u64, sdp: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some((atx, areq)) = c.a_invite.take() else {
            return;
        };
        let sdp = c.a.origin.stamp(&sdp);
        let mut out = Response::for_request(&areq, 200, "OK");
        out.set_to_tag(&c.a.local_tag);
        out.headers
            .push("Contact", self.me.contact(c.a.peer.transport));
        out.set_body("application/sdp", sdp);
        c.phase = Phase::Answered;
        let recorded = matches!(c.media, Media::Recorded { .. });
        self.invites.remove(&atx);
        self.send_response(now, atx, out);
        self.event(now, id, EventKind::Answered, None, Some(200));
        if recorded {
            self.event(now, id, EventKind::RecordingStarted, None, None);
        }
    }
}
