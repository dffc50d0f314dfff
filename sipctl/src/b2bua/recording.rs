//! Recording control: agent-desktop commands (start, stop, pause, resume), the recorder's NG
//! replies, and the re-INVITE steps that move media into and out of the recorder.

use super::*;

impl B2bua {
    /// An agent-desktop command on call `id`. Errors that are known at once come back
    /// here; otherwise the outcome arrives through [`B2bua::poll_api_result`].
    pub fn api_command(
        &mut self,
        now: Now,
        id: &str,
        action: RecordingAction,
    ) -> Result<Ticket, ApiError> {
        let key = id
            .parse::<u64>()
            .ok()
            .filter(|k| self.calls.contains_key(k))
            .ok_or_else(|| ApiError::UnknownCall(id.to_owned()))?;
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(ApiError::UnknownCall(id.to_owned()));
        };
        if call.phase != Phase::Confirmed {
            return Err(ApiError::Conflict(format!(
                "call {id} is {}, not established",
                call.phase.name()
            )));
        }
        if call.op.is_some() {
            return Err(ApiError::Conflict(format!(
                "call {id} has another change in progress"
            )));
        }
        let ng_call = call.media_call.clone();
        match (action, call.media) {
            (RecordingAction::Start, Media::Direct) => {
                call.op = Some(Op::Start {
                    ticket: Some(ticket),
                });
                call.initiator = Some(RecordingInitiator::Agent);
                let sdp = call.sdp_a.clone();
                self.ng_request(
                    now,
                    key,
                    NgPurpose::StartOffer,
                    &ng_call.offer(&sdp, true, true),
                );
            }
            (RecordingAction::Stop, Media::Recorded { .. }) => {
                call.op = Some(Op::Stop {
                    ticket: Some(ticket),
                    reason: None,
                });
                self.ng_request(now, key, NgPurpose::Stop, &ng_call.stop_recording());
            }
            (RecordingAction::Pause, Media::Recorded { paused: false }) => {
                call.op = Some(Op::PauseResume {
                    ticket: Some(ticket),
                    pause: true,
                });
                self.ng_request(now, key, NgPurpose::PauseResume, &ng_call.pause_recording());
            }
            (RecordingAction::Resume, Media::Recorded { paused: true }) => {
                call.op = Some(Op::PauseResume {
                    ticket: Some(ticket),
                    pause: false,
                });
                self.ng_request(now, key, NgPurpose::PauseResume, &ng_call.start_recording());
            }
            (action, _) => {
                return Err(ApiError::Conflict(format!(
                    "cannot {} the recording of call {id}: it is {}",
                    match action {
                        RecordingAction::Start => "start",
                        RecordingAction::Stop => "stop",
                        RecordingAction::Pause => "pause",
                        RecordingAction::Resume => "resume",
                    },
                    match call.recording_state() {
                        RecordingState::Off => "off",
                        RecordingState::On => "on",
                        RecordingState::Paused => "paused",
                        RecordingState::Starting => "starting",
                        RecordingState::Stopping => "stopping",
                    }
                )))
            }
        }
        self.drain(now);
        Ok(ticket)
    }

    pub(super) fn on_ng_reply(
        &mut self,
        now: Now,
        id: u64,
        purpose: NgPurpose,
        reply: Result<Value, String>,
    ) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let sdp = reply
            .as_ref()
            .map_err(Clone::clone)
            .and_then(media::reply_sdp);
        let ok = reply
            .as_ref()
            .map_err(Clone::clone)
            .and_then(media::reply_ok);
        match purpose {
            NgPurpose::InitialOffer => match sdp {
                Ok(sdp) => {
                    c.media = Media::Recorded { paused: false };
                    self.invite_b(now, id, sdp);
                }
                Err(why) => {
                    c.at_recorder = false;
                    let critical = c.record_critical;
                    let why = format!("recorder: {why}");
                    self.event(now, id, EventKind::RecordingFailed, Some(why.clone()), None);
                    if critical {
                        self.counters.refused_record_critical += 1;
                        self.fail_call(
                            now,
                            id,
                            500,
                            &format!("recording is critical and failed ({why})"),
                        );
                    } else {
                        let sdp = self
                            .calls
                            .get(&id)
                            .map(|c| c.sdp_a.clone())
                            .unwrap_or_default();
                        self.invite_b(now, id, sdp);
                    }
                }
            },
            NgPurpose::EarlyAnswer => {
                let Some((status, reason)) = c.early_response.take() else {
                    return;
                };
                match sdp {
                    Ok(sdp) => self.relay_provisional(now, id, status, &reason, Some(sdp)),
                    Err(why) => {
                        // The caller gets the ringing without early media rather than media
                        // that would go around the recorder.
                        tracing::warn!(call = id, %why, "recorder refused the early media");
                        self.relay_provisional(now, id, status, &reason, None);
                    }
                }
            }
            NgPurpose::InitialAnswer => match sdp {
                Ok(sdp) => self.answer_a(now, id, sdp),
                Err(why) => {
                    // B already sends its media to the recorder: answer A with B's own SDP and
                    // give B direct media back with a re-INVITE.
                    let why = format!("recorder: {why}");
                    c.media = Media::Direct;
                    c.at_recorder = false;
                    let critical = c.record_critical;
                    let sdp_b = c.sdp_b.clone();
                    self.event(now, id, EventKind::RecordingFailed, Some(why.clone()), None);
                    if critical {
                        self.counters.refused_record_critical += 1;
                        self.fail_call(now, id, 500, &why);
                        return;
                    }
                    self.answer_a(now, id, sdp_b);
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.op = Some(Op::Stop {
                            ticket: None,
                            reason: Some(why),
                        });
                        let sdp_a = c.sdp_a.clone();
                        self.reinvite(now, id, Side::B, sdp_a);
                    }
                }
            },
            NgPurpose::StartOffer => match sdp {
                Ok(sdp) => {
                    c.at_recorder = true;
                    self.reinvite(now, id, Side::B, sdp);
                }
                Err(why) => self.op_failed(now, id, format!("recorder: {why}"), None),
            },
            NgPurpose::StartAnswer => match sdp {
                Ok(sdp) => self.reinvite(now, id, Side::A, sdp),
                Err(why) => {
                    // B already sends to the recorder: move it back.
                    let why = format!("recorder: {why}");
                    c.op = Some(Op::Stop {
                        ticket: take_ticket(&mut c.op),
                        reason: Some(why),
                    });
                    let sdp_a = c.sdp_a.clone();
                    self.reinvite(now, id, Side::B, sdp_a);
                }
            },
            NgPurpose::Stop => {
                if let Err(why) = ok {
                    tracing::warn!(call = id, %why, "stop recording refused; moving media back anyway");
                }
                let sdp_a = c.sdp_a.clone();
                self.reinvite(now, id, Side::B, sdp_a);
            }
            NgPurpose::PauseResume => {
                let Some(Op::PauseResume { ticket, pause }) = c.op.take() else {
                    return;
                };
                match ok {
                    Ok(()) => {
                        c.media = Media::Recorded { paused: pause };
                        let info = c.info();
                        let kind = if pause {
                            EventKind::RecordingPaused
                        } else {
                            EventKind::RecordingResumed
                        };
                        self.event(now, id, kind, None, None);
                        if let Some(t) = ticket {
                            self.api_results.push_back((t, Ok(info)));
                        }
                    }
                    Err(why) => {
                        if let Some(t) = ticket {
                            self.api_results
                                .push_back((t, Err(ApiError::Failed(format!("recorder: {why}")))));
                        }
                    }
                }
            }
            NgPurpose::RelayOffer => match sdp {
                Ok(sdp) => {
                    let Some(Op::Relay { from, method, .. }) = &c.op else {
                        return;
                    };
                    let (to, method) = (from.other(), method.clone());
                    self.send_offer(now, id, to, sdp, method);
                }
                Err(why) => self.relay_failed(now, id, 500, &format!("recorder: {why}")),
            },
            NgPurpose::RelayAnswer => match sdp {
                Ok(sdp) => self.relay_done(now, id, sdp),
                Err(why) => self.relay_failed(now, id, 500, &format!("recorder: {why}")),
            },
            NgPurpose::TransferOffer => match sdp {
                Ok(sdp) => self.invite_transfer_target(now, id, sdp),
                Err(why) => self.transfer_failed(now, id, 500, &format!("recorder: {why}")),
            },
            NgPurpose::TransferAnswer => match sdp {
                // The recorder now relays between the party that stayed and the new one; the
                // party that stayed keeps sending to the same recorder port.
                Ok(_) => self.transfer_done(now, id),
                Err(why) => self.transfer_failed(now, id, 500, &format!("recorder: {why}")),
            },
            NgPurpose::Delete => {}
        }
    }

    pub(super) fn on_reinvite_answered(&mut self, now: Now, id: u64, side: Side, sdp: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        match c.op.clone() {
            Some(Op::Start { .. }) => match side {
                Side::B => {
                    c.sdp_b = sdp.clone();
                    let body = c.media_call.answer(&sdp, true);
                    self.ng_request(now, id, NgPurpose::StartAnswer, &body);
                }
                Side::A => {
                    if !sdp.is_empty() {
                        c.sdp_a = sdp;
                    }
                    c.media = Media::Recorded { paused: false };
                    let ticket = take_ticket(&mut c.op);
                    c.op = None;
                    let info = c.info();
                    self.event(now, id, EventKind::RecordingStarted, None, None);
                    if let Some(t) = ticket {
                        self.api_results.push_back((t, Ok(info)));
                    }
                }
            },
            Some(Op::Stop { reason, .. }) => match side {
                Side::B => {
                    if !sdp.is_empty() {
                        c.sdp_b = sdp.clone();
                    }
                    let sdp_b = c.sdp_b.clone();
                    self.reinvite(now, id, Side::A, sdp_b);
                }
                Side::A => {
                    if !sdp.is_empty() {
                        c.sdp_a = sdp;
                    }
                    let was_recorded =
                        matches!(c.media, Media::Recorded { .. }) || reason.is_none();
                    c.media = Media::Direct;
                    let ticket = take_ticket(&mut c.op);
                    c.op = None;
                    let info = c.info();
                    if c.at_recorder {
                        c.at_recorder = false;
                        let body = c.media_call.delete();
                        self.ng_request(now, id, NgPurpose::Delete, &body);
                    }
                    match reason {
                        // A start that failed half-way: the media is direct again.
                        Some(why) => {
                            self.event(
                                now,
                                id,
                                EventKind::RecordingFailed,
                                Some(why.clone()),
                                None,
                            );
                            if let Some(t) = ticket {
                                self.api_results.push_back((t, Err(ApiError::Failed(why))));
                            }
                        }
                        None => {
                            if was_recorded {
                                self.event(
                                    now,
                                    id,
                                    EventKind::RecordingStopped,
                                    Some("agent request".into()),
                                    None,
                                );
                            }
                            if let Some(t) = ticket {
                                self.api_results.push_back((t, Ok(info)));
                            }
                        }
                    }
                }
            },
            Some(Op::Relay { .. }) => {
                // The other party answered the relayed offer.
                let answerer = side;
                match answerer {
                    Side::A => c.sdp_a = sdp.clone(),
                    Side::B => c.sdp_b = sdp.clone(),
                }
                if matches!(c.media, Media::Recorded { .. }) {
                    let Some(Op::Relay { from, .. }) = c.op else {
                        return;
                    };
                    let body = c.media_call.answer(&sdp, from == Side::A);
                    self.ng_request(now, id, NgPurpose::RelayAnswer, &body);
                } else {
                    self.relay_done(now, id, sdp);
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_reinvite_failed(
        &mut self,
        now: Now,
        id: u64,
        side: Side,
        status: u16,
        why: String,
    ) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let why = if status == 491 {
            format!("{why} (glare)")
        } else {
            why
        };
        match c.op.clone() {
            Some(Op::Start { .. }) => match side {
                // B refused: nothing moved; the recorder session goes.
                Side::B => self.op_failed(now, id, why, None),
                // A refused: B already sends to the recorder; move B back.
                Side::A => {
                    c.op = Some(Op::Stop {
                        ticket: take_ticket(&mut c.op),
                        reason: Some(why),
                    });
                    let sdp_a = c.sdp_a.clone();
                    self.reinvite(now, id, Side::B, sdp_a);
                }
            },
            Some(Op::Stop { ticket, reason }) => {
                // The media stays where it is (through the recorder, which keeps relaying but
                // has stopped recording); the call goes on.
                c.op = None;
                let why = match reason {
                    Some(r) => format!("{r}; then {why}"),
                    None => why,
                };
                self.event(now, id, EventKind::RecordingFailed, Some(why.clone()), None);
                if let Some(t) = ticket {
                    self.api_results.push_back((t, Err(ApiError::Failed(why))));
                }
            }
            Some(Op::Relay { .. }) => self.relay_failed(now, id, status, &why),
            _ => {}
        }
    }

    /// A mid-call op failed before any party's media moved.
    pub(super) fn op_failed(&mut self, now: Now, id: u64, why: String, status: Option<u16>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let ticket = take_ticket(&mut c.op);
        let was_start = matches!(c.op, Some(Op::Start { .. }));
        c.op = None;
        if was_start && c.at_recorder {
            c.at_recorder = false;
            let body = c.media_call.delete();
            self.ng_request(now, id, NgPurpose::Delete, &body);
        }
        self.event(
            now,
            id,
            EventKind::RecordingFailed,
            Some(why.clone()),
            status,
        );
        if let Some(t) = ticket {
            self.api_results.push_back((t, Err(ApiError::Failed(why))));
        }
    }
}
