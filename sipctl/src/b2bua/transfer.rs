//! Blind transfer (RFC 3515 REFER, RFC 5589 flow): the transferor's leg is replaced by a
//! new leg to the Refer-To target; the other party stays. With the recorder in the path the
//! new party is put in the transferor's place in the same NG call (the recording goes on);
//! with direct media the other party is re-INVITEd towards the new one.

use super::*;

impl B2bua {
    pub(super) fn on_refer(&mut self, now: Now, id: u64, side: Side, tx: TxId, req: Request) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.op.is_some() || c.phase != Phase::Confirmed {
            let mut resp = Response::for_request(&req, 491, "Request Pending");
            resp.headers.push("Retry-After", 1);
            return self.send_response(now, tx, resp);
        }
        let Some(refer_to) = req
            .headers
            .get("Refer-To")
            .and_then(|v| NameAddr::parse(v.trim()).ok())
        else {
            return self.respond(now, tx, &req, 400, None);
        };
        let target_user = refer_to.uri.user.clone().unwrap_or_default();
        let ruri = refer_to.uri.to_string();
        let headers: Vec<(&str, &str)> = Vec::new();
        let facts = CallFacts {
            caller: c.caller.as_deref().unwrap_or(""),
            callee: &target_user,
            ruri: &ruri,
            headers: &headers,
            unix_time: now.unix_ms / 1000,
            sample: sample_from_call_id(&c.a.call_id),
        };
        let decision = self.router.decide(&facts, &self.directory);
        let (contact, dn) = match &decision.target {
            Target::Dn { dn, contact } => (contact.clone(), Some(dn.clone())),
            Target::Trunk { uri, .. } => (uri.clone(), None),
            Target::Reject { status, .. } => {
                let status = *status;
                return self.respond(now, tx, &req, status, None);
            }
        };
        let Some((uri, dest)) = resolve(&contact) else {
            return self.respond(now, tx, &req, 502, None);
        };
        // 202: the transfer is under way; its outcome comes in NOTIFYs (RFC 3515 §2.4.4).
        self.respond(now, tx, &req, 202, None);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let stays = side.other();
        let Some(stayer) = c.leg(stays).cloned() else {
            return;
        };
        let leg = Leg {
            call_id: generate_call_id(&self.me.host),
            local_tag: generate_tag(),
            remote_tag: None,
            // The new party sees the party that stays as the caller.
            local: stayer.remote.clone(),
            remote: NameAddr::new(Uri {
                params: Vec::new(),
                ..uri.clone()
            }),
            local_cseq: self.rng.u32(1..1 << 20),
            remote_target: uri,
            route_set: Vec::new(),
            peer: dest,
            origin: Origin::new(),
        };
        c.op = Some(Op::Transfer {
            from: side,
            leg: Box::new(leg),
            target: target_user,
            dn,
        });
        self.notify_transferor(now, id, side, "SIP/2.0 100 Trying", false);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let stayer_sdp = match stays {
            Side::A => c.sdp_a.clone(),
            Side::B => c.sdp_b.clone(),
        };
        if c.at_recorder && matches!(c.media, Media::Recorded { .. }) {
            let body = c.media_call.offer(&stayer_sdp, stays == Side::A, false);
            self.ng_request(now, id, NgPurpose::TransferOffer, &body);
        } else {
            self.invite_transfer_target(now, id, stayer_sdp);
        }
    }

    /// NOTIFY of the transfer's progress to the transferor (`message/sipfrag`).
    pub(super) fn notify_transferor(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        frag: &str,
        last: bool,
    ) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(leg) = c.leg(side) else { return };
        let mut n = leg.request(Method::Notify, &self.me);
        n.headers.push("Event", "refer");
        n.headers.push(
            "Subscription-State",
            if last {
                "terminated;reason=noresource"
            } else {
                "active;expires=60"
            },
        );
        n.set_body("message/sipfrag", format!("{frag}\r\n").into_bytes());
        let dest = leg.peer;
        self.send_request(now, id, TxPurpose::Bye, n, dest);
    }

    pub(super) fn invite_transfer_target(&mut self, now: Now, id: u64, sdp: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let global = c.ctx.global_call_id.clone();
        let Some(Op::Transfer { leg, .. }) = c.op.as_mut() else {
            return;
        };
        let sdp = leg.origin.stamp(&sdp);
        let mut req = leg.request(Method::Invite, &self.me);
        req.headers.push(GLOBAL_CALL_ID_HEADER, &global);
        req.set_body("application/sdp", sdp);
        let dest = leg.peer;
        if self
            .send_request(now, id, TxPurpose::TransferInvite, req, dest)
            .is_none()
        {
            self.transfer_failed(
                now,
                id,
                500,
                "cannot send the INVITE to the transfer target",
            );
        }
    }

    pub(super) fn on_transfer_response(&mut self, now: Now, id: u64, tx: TxId, resp: Response) {
        if resp.is_provisional() {
            return;
        }
        if !resp.is_success() {
            let why = format!(
                "the transfer target answered {} {}",
                resp.status,
                peer_text(&resp.reason)
            );
            return self.transfer_failed(now, id, resp.status, &why);
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Transfer { leg, from, .. }) = c.op.as_mut() else {
            return;
        };
        leg.remote_tag = resp.to_tag();
        if let Some(contact) = resp.contact() {
            leg.remote_target = contact.uri;
        }
        leg.route_set = resp
            .headers
            .get_all("Record-Route")
            .map(str::to_owned)
            .collect();
        leg.route_set.reverse();
        let seq = resp.cseq().map(|c| c.seq).unwrap_or(leg.local_cseq);
        let from = *from;
        let new_leg = (**leg).clone();
        self.ack(tx, &new_leg, seq);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        // The new party takes the transferor's place.
        match from {
            Side::A => c.sdp_a = resp.body.clone(),
            Side::B => c.sdp_b = resp.body.clone(),
        }
        if c.at_recorder && matches!(c.media, Media::Recorded { .. }) {
            let body = c.media_call.answer(&resp.body, from.other() == Side::A);
            self.ng_request(now, id, NgPurpose::TransferAnswer, &body);
        } else {
            self.transfer_done(now, id);
            // Direct media: the party that stays is sent towards the new one.
            let sdp = resp.body;
            if let Some(c) = self.calls.get_mut(&id) {
                c.op = Some(Op::Relay {
                    from,
                    server_tx: TxId(u64::MAX),
                    offer: Vec::new(),
                });
            }
            self.reinvite(now, id, from.other(), sdp);
        }
    }

    /// Swaps the new leg in, hangs up the transferor, writes the event.
    pub(super) fn transfer_done(&mut self, now: Now, id: u64) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Transfer {
            from,
            leg,
            target,
            dn,
        }) = c.op.take()
        else {
            return;
        };
        self.notify_transferor(now, id, from, "SIP/2.0 200 OK", true);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let old = match from {
            Side::A => std::mem::replace(&mut c.a, *leg),
            Side::B => match c.b.replace(*leg) {
                Some(old) => old,
                None => return,
            },
        };
        let new_key = match from {
            Side::A => (c.a.call_id.clone(), c.a.local_tag.clone()),
            Side::B => match &c.b {
                Some(b) => (b.call_id.clone(), b.local_tag.clone()),
                None => return,
            },
        };
        if from == Side::B {
            c.callee = Some(target.clone());
            c.dn = dn.clone();
            c.ctx.b_leg_call_id = Some(new_key.0.clone());
        } else {
            c.caller = Some(target.clone());
        }
        let party = Party {
            number: Some(target.clone()),
            uri: c
                .leg(from)
                .map(|l| l.remote_target.to_string())
                .unwrap_or_default(),
            display_name: None,
        };
        self.dialogs
            .remove(&(old.call_id.clone(), old.local_tag.clone()));
        self.dialogs.insert(new_key, (id, from));
        let mut old = old;
        let bye = old.request(Method::Bye, &self.me);
        self.send_request(now, id, TxPurpose::Bye, bye, old.peer);
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let mut ev = c.ctx.event(
            EventKind::Transferred,
            linecord_jobs::uuid_v7(now.unix_ms, random),
            now.unix_ms,
        );
        ev.transfer_target = Some(party);
        ev.reason = Some(format!(
            "blind transfer by the {} to {target}",
            party_name(from)
        ));
        ev.recording = None;
        if let Some(d) = dn {
            ev.parties.agent_dn = Some(d);
        }
        self.events.push_back(ev);
    }

    pub(super) fn transfer_failed(&mut self, now: Now, id: u64, status: u16, why: &str) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Transfer { from, .. }) = c.op.take() else {
            return;
        };
        tracing::info!(call = id, why, "transfer failed; the call goes on");
        let frag = format!("SIP/2.0 {status} {}", reason_phrase(status));
        self.notify_transferor(now, id, from, &frag, true);
    }
}
