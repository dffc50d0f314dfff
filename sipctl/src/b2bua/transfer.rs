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
        if let Some(replaces) = replaces_of(&refer_to.uri) {
            return self.attended_transfer(now, id, side, tx, &req, replaces);
        }
        let target_user = refer_to.uri.user.clone().unwrap_or_default();
        let ruri = refer_to.uri.to_string();
        let headers: Vec<(&str, &str)> = Vec::new();
        let facts = CallFacts {
            caller: c.caller.as_deref().unwrap_or(""),
            callee: &target_user,
            ruri: &ruri,
            headers: &headers,
            unix_time: now.unix_ms / 1000,
            sample: sample_from_call_id(&c.a.key.call_id),
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
        let Some((uri, _, dest)) = self.locate(&contact) else {
            return self.respond(now, tx, &req, 502, None);
        };
        // 202: the transfer is under way; its outcome comes in NOTIFYs (RFC 3515 §2.4.4).
        self.respond(now, tx, &req, 202, None);
        let stays = side.other();
        // The new party sees the party that stays as the caller.
        let Some(stayer) = self
            .calls
            .get(&id)
            .and_then(|c| c.leg_ref(stays))
            .and_then(|l| self.dialogs.get(&l.key))
            .map(|d| d.remote_uri.clone())
        else {
            return;
        };
        let remote = NameAddr::new(Uri {
            params: Vec::new(),
            ..uri.clone()
        });
        let owner = LegOf {
            call: id,
            side,
            pending: true,
        };
        let Some(leg) = self.new_uac_leg(owner, &stayer, remote, uri, dest) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&id) else {
            self.dialogs.remove(&leg.key);
            return;
        };
        c.op = Some(Op::Transfer {
            from: side,
            leg: Box::new(leg),
            target: target_user,
            dn,
            replaces: None,
        });
        self.start_transfer(now, id, side);
    }

    /// The first steps of a transfer by `side` (its op set): NOTIFY 100 to the transferor,
    /// then the target is sent the staying party's SDP, through the recorder (NG `offer` in
    /// the call's NG session) when the call is recorded.
    fn start_transfer(&mut self, now: Now, id: u64, side: Side) {
        self.notify_transferor(now, id, side, "SIP/2.0 100 Trying", false);
        let stays = side.other();
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
        let Some((mut n, dest)) = self.side_request(id, side, Method::Notify) else {
            return;
        };
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
        self.send_request(now, id, TxPurpose::Bye, n, dest);
    }

    pub(super) fn invite_transfer_target(&mut self, now: Now, id: u64, sdp: Vec<u8>) {
        let Some(c) = self.calls.get(&id) else {
            return;
        };
        let global = c.ctx.global_call_id.clone();
        let Some(Op::Transfer { leg, .. }) = &c.op else {
            return;
        };
        let leg = (**leg).clone();
        let Some(mut req) = self.leg_request(&leg, Method::Invite) else {
            return;
        };
        let Some(Op::Transfer { leg, .. }) = self.calls.get_mut(&id).and_then(|c| c.op.as_mut())
        else {
            return;
        };
        let sdp = leg.stamp(&sdp);
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
        let Some(Op::Transfer { leg, from, .. }) = &c.op else {
            return;
        };
        let seq = resp.cseq().map(|c| c.seq).unwrap_or(0);
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
                    method: Method::Invite,
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
            replaces,
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
        let Some(new_key) = c.leg_ref(from).map(|l| l.key.clone()) else {
            return;
        };
        if from == Side::B {
            c.callee = Some(target.clone());
            c.dn = dn.clone();
            c.ctx.b_leg_call_id = Some(new_key.call_id.clone());
        } else {
            c.caller = Some(target.clone());
        }
        let party = Party {
            number: Some(target.clone()),
            uri: self
                .dialogs
                .get(&new_key)
                .map(|d| d.remote_target.to_string())
                .unwrap_or_default(),
            display_name: None,
        };
        self.dialogs.set_owner(&new_key, LegOf::new(id, from));
        if let Some(bye) = self.leg_request(&old, Method::Bye) {
            self.send_request(now, id, TxPurpose::Bye, bye, old.peer);
        }
        self.dialogs.remove(&old.key);
        let event_id = self.new_uuid(now);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let mut ev = c.ctx.event(EventKind::Transferred, event_id, now.unix_ms);
        ev.transfer_target = Some(party);
        ev.reason = Some(format!(
            "{} transfer by the {} to {target}",
            if replaces.is_some() {
                "attended"
            } else {
                "blind"
            },
            party_name(from)
        ));
        ev.recording = None;
        if let Some(d) = dn {
            ev.parties.agent_dn = Some(d);
        }
        self.events.push_back(ev);
        if let Some(other) = replaces {
            self.end_replaced(now, other, &new_key);
        }
    }

    pub(super) fn transfer_failed(&mut self, now: Now, id: u64, status: u16, why: &str) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Transfer {
            from,
            leg,
            replaces,
            ..
        }) = c.op.take()
        else {
            return;
        };
        self.drop_transfer_leg(id, &leg);
        if let Some(c2) = replaces.and_then(|o| self.calls.get_mut(&o)) {
            c2.op = None;
        }
        tracing::info!(call = id, why, "transfer failed; the call goes on");
        let frag = format!("SIP/2.0 {status} {}", reason_phrase(status));
        self.notify_transferor(now, id, from, &frag, true);
    }

    /// Attended transfer (RFC 5589 §7, RFC 3891): the REFER's Refer-To names, in `Replaces`,
    /// a dialog of another call through sipctl (the transferor's consultation call). That
    /// call's far party takes the transferor's place here: it is re-INVITEd in its own dialog
    /// (through the recorder when this call is recorded: the recording goes on), the
    /// transferor gets NOTIFYs and a BYE on both calls, and the consultation call ends.
    fn attended_transfer(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        tx: TxId,
        req: &Request,
        (call_id, to_tag, from_tag): (String, String, String),
    ) {
        // The transferor's side of the consultation call: sipctl's tag is its To tag.
        let key = DialogKey {
            call_id,
            local_tag: to_tag,
        };
        let owner = self
            .dialogs
            .get(&key)
            .filter(|d| d.id.remote_tag == from_tag)
            .and_then(|_| self.dialogs.owner(&key))
            .filter(|o| o.call != id && !o.pending);
        let joinable = owner.and_then(|o| {
            let c2 = self.calls.get(&o.call)?;
            let far = o.side.other();
            (c2.phase == Phase::Confirmed && c2.op.is_none()).then_some(())?;
            let leg = c2.leg_ref(far)?.clone();
            let (target, dn) = match far {
                Side::B => (c2.callee.clone().unwrap_or_default(), c2.dn.clone()),
                Side::A => (c2.caller.clone().unwrap_or_default(), None),
            };
            Some((o.call, far, leg, target, dn))
        });
        // 202: the transfer is under way; its outcome comes in NOTIFYs (RFC 3515 §2.4.4).
        self.respond(now, tx, req, 202, None);
        let Some((other, far, leg, target, dn)) = joinable else {
            // RFC 3891 §3: no such dialog (or not one that can be joined now).
            self.notify_transferor(
                now,
                id,
                side,
                "SIP/2.0 481 Call/Transaction Does Not Exist",
                true,
            );
            return;
        };
        if let Some(c2) = self.calls.get_mut(&other) {
            c2.op = Some(Op::Joining { into: id });
            c2.moved = Some(far);
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.op = Some(Op::Transfer {
            from: side,
            leg: Box::new(leg),
            target,
            dn,
            replaces: Some(other),
        });
        // The far party's dialog is confirmed: the "INVITE" to it is a re-INVITE.
        self.start_transfer(now, id, side);
    }

    /// Ends the consultation call whose far leg (`moved`) went into another call: BYE to the
    /// transferor's leg of it, the recorder's session of it deleted, its closing events.
    fn end_replaced(&mut self, now: Now, other: u64, moved: &DialogKey) {
        let Some(c2) = self.calls.get_mut(&other) else {
            return;
        };
        c2.op = None;
        let moved_side = if c2.a.key == *moved { Side::A } else { Side::B };
        c2.moved = Some(moved_side);
        if let Some((bye, peer)) = self.side_request(other, moved_side.other(), Method::Bye) {
            self.send_request(now, other, TxPurpose::Bye, bye, peer);
        }
        self.end_call(
            now,
            other,
            "replaced by an attended transfer",
            None,
            ByeTo::Neither,
        );
    }

    /// Forgets a transfer's target leg, unless its dialog belongs to another call (the far
    /// leg of an attended transfer's consultation call).
    pub(super) fn drop_transfer_leg(&mut self, id: u64, leg: &Leg) {
        if self.dialogs.owner(&leg.key).is_some_and(|o| o.call == id) {
            self.dialogs.remove(&leg.key);
        }
    }
}

/// The dialog a Refer-To URI's `Replaces` header names (RFC 3891 §6.1: `call-id;to-tag=…;
/// from-tag=…`, %-escaped in the URI, RFC 3261 §19.1.1): (Call-ID, to-tag, from-tag).
fn replaces_of(uri: &Uri) -> Option<(String, String, String)> {
    let headers = uri.headers.as_deref()?;
    let value = headers.split('&').find_map(|h| {
        let (name, value) = h.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("Replaces")
            .then_some(value)
    })?;
    let value = percent_decode(value)?;
    let mut parts = value.split(';');
    let call_id = parts.next()?.trim().to_owned();
    let (mut to_tag, mut from_tag) = (None, None);
    for p in parts {
        if let Some((n, v)) = p.split_once('=') {
            match n.trim().to_ascii_lowercase().as_str() {
                "to-tag" => to_tag = Some(v.trim().to_owned()),
                "from-tag" => from_tag = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    (!call_id.is_empty()).then_some((call_id, to_tag?, from_tag?))
}

/// RFC 3986 %-decoding; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
