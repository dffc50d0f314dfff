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
        self.end_call(now, id, why, Some(status), ByeTo::Neither);
    }

    /// Ends a call: BYE to the confirmed legs `bye` names, NG delete, `recording_stopped`
    /// and `released` events, and forgets the call.
    pub(super) fn end_call(
        &mut self,
        now: Now,
        id: u64,
        why: &str,
        status: Option<u16>,
        bye: ByeTo,
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
        if was_confirmed {
            for side in [Side::A, Side::B].into_iter().filter(|s| bye.includes(*s)) {
                if let Some((req, peer)) = self.side_request(id, side, Method::Bye) {
                    self.send_request(now, id, TxPurpose::Bye, req, peer);
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
                ByeTo::Both,
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
                self.end_call(now, id, &why, Some(408), ByeTo::Both);
            }
            TxPurpose::Abandoned => self.drop_abandoned(tx),
            TxPurpose::Passthrough | TxPurpose::Bye => {}
        }
    }
}

/// Which confirmed legs get a BYE when a call ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ByeTo {
    /// None: the call ends before it was confirmed, or its legs are gone already.
    Neither,
    /// Both: sipctl ends the call itself (a timeout, a failed refresh).
    Both,
    /// The other side than this one, which hung up.
    OtherThan(Side),
}

impl ByeTo {
    fn includes(self, side: Side) -> bool {
        match self {
            ByeTo::Neither => false,
            ByeTo::Both => true,
            ByeTo::OtherThan(hung_up) => side != hung_up,
        }
    }
}
