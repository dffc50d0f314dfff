//! Call events for the processor queue, built from the call's context.

use super::*;

impl B2bua {
    pub(super) fn event(
        &mut self,
        now: Now,
        call: u64,
        kind: EventKind,
        reason: Option<String>,
        status: Option<u16>,
    ) {
        let event_id = self.new_uuid(now);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if kind.is_recording() {
            c.ctx.recording = Some(EventRecording {
                ng_call_id: c.media_call.ng_call_id.clone(),
                recording_id: None,
                recorder: None,
                initiator: c.initiator,
            });
        }
        let mut ev = c.ctx.event(kind, event_id, now.unix_ms);
        ev.reason = reason;
        ev.status_code = status;
        if !kind.is_recording() {
            ev.recording = None;
        }
        match kind {
            EventKind::RecordingStarted => {
                c.recording_announced = true;
                self.counters.recordings_started += 1
            }
            EventKind::RecordingStopped => c.recording_announced = false,
            EventKind::RecordingFailed => self.counters.recordings_failed += 1,
            EventKind::Answered => self.counters.answered += 1,
            _ => {}
        }
        self.events.push_back(ev);
    }

    /// A new UUIDv7 (events, global call ids) from the core's RNG.
    pub(super) fn new_uuid(&mut self, now: Now) -> String {
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        linecord_jobs::uuid_v7(now.unix_ms, random)
    }
}
