//! How calls end: the caller refused (`fail_call`), a hang-up or a timeout (`end_call`: BYE
//! to the party that did not hang up, NG `delete`, the closing events), and what the
//! transaction layer reports about requests sipctl sent (timeouts, transport errors).

use super::*;

impl B2bua {
    /// Refuses the caller's INVITE with `status` and ends the call.
    pub(super) fn fail_call(&mut self, now: Now, id: u64, status: u16, why: &str) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let a_invite = c.a_invite.take();
        let b_invite = c.b_invite.take();
        let tag = c.a.key.local_tag.clone();
        if let Some((tx, req)) = a_invite {
            let mut resp = Response::for_request(&req, status, reason_phrase(status));
            resp.set_to_tag(&tag);
            resp.headers.push(
                "Warning",
                format!("399 sipctl \"{}\"", why.replace('"', "'")),
            );
            self.send_response(now, tx, resp);
        }
        // A B leg still being called is cancelled.
        if let Some((btx, _)) = b_invite {
            let _ = self.txl.send_cancel(now.mono, btx);
        }
        self.end_call(now, id, why, Some(status), false);
    }

    /// Ends a call: BYE to whichever confirmed leg did not hang up (when `bye_other`),
    /// NG delete, `recording_stopped` and `released` events, and forgets the call.
    pub(super) fn end_call(
        &mut self,
        now: Now,
        id: u64,
        why: &str,
        status: Option<u16>,
        hangup: bool,
    ) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.phase == Phase::Ending {
            return;
        }
        let was_confirmed = matches!(
            c.phase,
            Phase::Confirmed | Phase::Answered | Phase::Answering
        );
        c.phase = Phase::Ending;
        // Pending agent commands fail.
        if let Some(t) = take_ticket(&mut c.op) {
            self.api_results
                .push_back((t, Err(ApiError::Failed(format!("the call ended: {why}")))));
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        match c.op.take() {
            Some(Op::Transfer { leg, .. }) => self.drop_transfer_leg(id, &leg),
            // The consultation call of an attended transfer ended before the join: the far
            // leg stays this call's (and goes with it), the transfer fails.
            Some(Op::Joining { into }) => {
                c.moved = None;
                self.transfer_failed(now, into, 487, "the consultation call ended");
            }
            _ => {}
        }
        if hangup && was_confirmed {
            // BYE the leg that did not hang up. A BYE from A: BYE B; from B: BYE A. Both
            // legs get one if we are the ones ending it (timeouts).
            let a_hung_up = why.starts_with("caller");
            let b_hung_up = why.starts_with("callee");
            for (side, hung_up) in [(Side::A, a_hung_up), (Side::B, b_hung_up)] {
                if hung_up {
                    continue;
                }
                if let Some((bye, peer)) = self.side_request(id, side, Method::Bye) {
                    self.send_request(now, id, TxPurpose::Bye, bye, peer);
                }
            }
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let recorded = c.recording_announced;
        if c.at_recorder {
            c.at_recorder = false;
            let body = c.media_call.delete();
            self.ng_request(now, id, NgPurpose::Delete, &body);
        }
        if recorded {
            self.event(
                now,
                id,
                EventKind::RecordingStopped,
                Some(why.to_owned()),
                None,
            );
        }
        self.event(now, id, EventKind::Released, Some(why.to_owned()), status);
        self.forget(id);
    }

    /// Drops the call and its dialogs (a transfer target's too).
    pub(super) fn forget(&mut self, id: u64) {
        if let Some(c) = self.calls.remove(&id) {
            if c.moved != Some(Side::A) {
                self.dialogs.remove(&c.a.key);
            }
            if let Some(b) = c.b.as_ref().filter(|_| c.moved != Some(Side::B)) {
                self.dialogs.remove(&b.key);
            }
            if let Some(Op::Transfer { leg, .. }) = &c.op {
                self.drop_transfer_leg(id, leg);
            }
            self.invites.retain(|_, v| *v != id);
            // Client transactions keep running (BYE, CANCEL); their responses find no call.
            self.client_txs
                .retain(|_, (v, p)| *v != id || *p == TxPurpose::BInvite);
        }
    }

    pub(super) fn on_tx_event(&mut self, now: Now, ev: TxEvent) {
        let (tx, why) = match ev {
            TxEvent::Timeout { tx } => (tx, "timeout"),
            TxEvent::TransportError { tx } => (tx, "transport error"),
            TxEvent::Terminated { tx } => {
                self.client_txs.remove(&tx);
                self.acks.remove(&tx);
                self.drop_abandoned(tx);
                return;
            }
        };
        if let Some(id) = self.invites.get(&tx).copied() {
            // The caller never ACKed our 2xx (RFC 3261 §13.3.1.4): end the call.
            return self.end_call(
                now,
                id,
                &format!("no ACK from the caller ({why})"),
                Some(408),
                true,
            );
        }
        let Some((id, purpose)) = self.client_txs.remove(&tx) else {
            return;
        };
        match purpose {
            TxPurpose::BInvite => {
                if self.try_next_b_target(now, id) {
                    return;
                }
                let status = if why == "timeout" { 408 } else { 503 };
                self.fail_call(
                    now,
                    id,
                    status,
                    &format!("the callee did not answer ({why})"),
                );
            }
            TxPurpose::Reinvite(side) => {
                let status = if why == "timeout" { 408 } else { 503 };
                self.on_reinvite_failed(
                    now,
                    id,
                    side,
                    status,
                    format!("re-INVITE to the {}: {why}", party_name(side)),
                );
            }
            TxPurpose::TransferInvite => {
                self.transfer_failed(
                    now,
                    id,
                    408,
                    &format!("the transfer target did not answer ({why})"),
                );
            }
            TxPurpose::Refresh(side) => {
                let why = format!("session refresh to the {}: {why}", party_name(side));
                self.end_call(now, id, &why, Some(408), true);
            }
            TxPurpose::Abandoned => self.drop_abandoned(tx),
            TxPurpose::Passthrough | TxPurpose::Bye => {}
        }
    }
}
