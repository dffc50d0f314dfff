//! The call-event job (`linecord.event.v1`): what `sipctl` spools as a call progresses.

use serde::{Deserialize, Serialize};

use crate::{const_tag, rfc3339};

/// Schema name and version of call events.
pub const EVENT_SCHEMA: &str = "linecord.event.v1";

const_tag!(
    /// The `schema` field of a call event: always `linecord.event.v1`.
    EventSchema = "linecord.event.v1"
);
const_tag!(
    /// The `type` field of a call event: always `event`.
    EventType = "event"
);

/// One thing that happened to a call on one switch. The processor groups events by
/// `global_call_id` (which crosses switches in the `X-Linecord-Call-Id` header), orders them
/// by `(switch, switch_call_id, seq)` within a switch and by `time_unix_ms` across switches,
/// and drops duplicates by `event_id`. See `docs/processor-queue.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventJob {
    /// Always `linecord.event.v1`.
    pub schema: EventSchema,
    /// Always `event`.
    #[serde(rename = "type")]
    pub job_type: EventType,
    /// Unique id of this event (UUIDv7); the spool file name and the processor's dedup key.
    pub event_id: String,
    /// The call across switches (UUIDv7): taken from a trusted peer's `X-Linecord-Call-Id`
    /// header, or created by the first switch.
    pub global_call_id: String,
    /// Name of the sipctl instance (`[sip] switch-name`).
    pub switch: String,
    /// sipctl's own id of the call (`GET /v1/calls`), unique within the switch.
    pub switch_call_id: String,
    /// SIP Call-ID of the incoming (A) leg.
    pub a_leg_call_id: String,
    /// SIP Call-ID of the outgoing (B) leg, once it exists.
    #[serde(default)]
    pub b_leg_call_id: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// When, RFC 3339 UTC with ms.
    pub time: String,
    /// When, ms since the Unix epoch.
    pub time_unix_ms: u64,
    /// Position of this event among the events of the same `(switch, switch_call_id)`,
    /// from 0, without gaps.
    pub seq: u64,
    /// Who is talking.
    pub parties: EventParties,
    /// The recording concerned (required for the `recording_*` kinds, else optional: the
    /// current recording of the call, if any).
    #[serde(default)]
    pub recording: Option<EventRecording>,
    /// For `transferred`: where the call went.
    #[serde(default)]
    pub transfer_target: Option<Party>,
    /// SIP status code that goes with the event (e.g. the final response that released or
    /// rejected the call), if any.
    #[serde(default)]
    pub status_code: Option<u16>,
    /// Free text: why (release cause, why recording failed, …).
    #[serde(default)]
    pub reason: Option<String>,
    /// The switch software.
    pub sipctl: SwitchInfo,
}

impl EventJob {
    /// Top-level fields a call event must carry (the others may be absent or `null`).
    pub const REQUIRED_FIELDS: &'static [&'static str] = &[
        "schema",
        "type",
        "event_id",
        "global_call_id",
        "switch",
        "switch_call_id",
        "a_leg_call_id",
        "kind",
        "time",
        "time_unix_ms",
        "seq",
        "parties",
        "sipctl",
    ];

    /// Checks what serde cannot: ids are UUIDs and `recording_*` events name their
    /// recording. Returns the first problem as text.
    pub fn validate(&self) -> Result<(), String> {
        if !crate::is_uuid(&self.event_id) {
            return Err(format!("event_id {:?} is not a UUID", self.event_id));
        }
        if !crate::is_uuid(&self.global_call_id) {
            return Err(format!(
                "global_call_id {:?} is not a UUID",
                self.global_call_id
            ));
        }
        if self.kind.is_recording() && self.recording.is_none() {
            return Err(format!("a {} event needs a recording", self.kind.as_str()));
        }
        Ok(())
    }
}

/// What happened to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The INVITE arrived and was accepted for routing.
    Created,
    /// The called side is ringing (180/183).
    Ringing,
    /// The called side sent early media (SDP in a provisional response): from here until
    /// `answered` the media is early (announcements, ringback); in a recorded call it goes
    /// through the recorder and is recorded.
    EarlyMedia,
    /// The called side answered (200 OK to the INVITE).
    Answered,
    /// The recorder started recording.
    RecordingStarted,
    /// Recording paused (media flows, nothing is written).
    RecordingPaused,
    /// Recording resumed after a pause.
    RecordingResumed,
    /// Recording stopped (agent request or the call ended).
    RecordingStopped,
    /// Recording could not start or broke; `reason` says why.
    RecordingFailed,
    /// The call was transferred (REFER); `transfer_target` says where.
    Transferred,
    /// The call ended (BYE, CANCEL, rejection, failure); the last event of the call on
    /// this switch.
    Released,
}

impl EventKind {
    /// The JSON text of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Ringing => "ringing",
            EventKind::EarlyMedia => "early_media",
            EventKind::Answered => "answered",
            EventKind::RecordingStarted => "recording_started",
            EventKind::RecordingPaused => "recording_paused",
            EventKind::RecordingResumed => "recording_resumed",
            EventKind::RecordingStopped => "recording_stopped",
            EventKind::RecordingFailed => "recording_failed",
            EventKind::Transferred => "transferred",
            EventKind::Released => "released",
        }
    }

    /// Whether this is one of the `recording_*` kinds (which need `recording`).
    pub fn is_recording(self) -> bool {
        matches!(
            self,
            EventKind::RecordingStarted
                | EventKind::RecordingPaused
                | EventKind::RecordingResumed
                | EventKind::RecordingStopped
                | EventKind::RecordingFailed
        )
    }
}

/// The parties of the call as this switch sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventParties {
    /// From the `From` header of the incoming INVITE.
    pub caller: Party,
    /// From the request-URI (and `To`) of the incoming INVITE.
    pub callee: Party,
    /// The DN of the agent on this switch, if the call terminates at (or comes from) one.
    #[serde(default)]
    pub agent_dn: Option<String>,
    /// Which party is the agent of `agent_dn`: the callee (the call terminates at the DN) or
    /// the caller (an outbound call from the DN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_side: Option<AgentSide>,
}

/// Which party of a call is the agent (GIR's agent-side recording records the agent's DN in
/// both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentSide {
    /// The agent placed the call.
    Caller,
    /// The call terminates at the agent.
    Callee,
}

/// One party: its number (URI user part) and URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// User part of the URI (`+4930123456`, `1001`), `None` if there is none (anonymous).
    #[serde(default)]
    pub number: Option<String>,
    /// The URI (`sip:1001@pbx.example.com`, `tel:+4930123456`).
    pub uri: String,
    /// Display name, if the header carried one.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// The recording an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecording {
    /// The NG `call-id` sipctl used towards the recorder: equals `call_id` of the recording
    /// job(s), the join key between events and recordings.
    pub ng_call_id: String,
    /// The recorder's recording id (`recording_id` of the recording job), when sipctl knows
    /// it.
    #[serde(default)]
    pub recording_id: Option<String>,
    /// The recorder's NG address (`host:port`), which tells recorders apart.
    #[serde(default)]
    pub recorder: Option<String>,
    /// Who asked for the recording.
    #[serde(default)]
    pub initiator: Option<RecordingInitiator>,
}

/// Who asked for a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingInitiator {
    /// A routing rule (`record = true` / `record-percent`).
    Routing,
    /// The DN's `record = true` (full-time agent-side recording).
    Dn,
    /// The agent desktop over the HTTP API.
    Agent,
}

/// The switch software that produced an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchInfo {
    /// Its version (`CARGO_PKG_VERSION`).
    pub version: String,
}

/// What a switch knows about one call and keeps while it lasts: builds the call's events
/// with consecutive `seq` numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// See [`EventJob::global_call_id`].
    pub global_call_id: String,
    /// See [`EventJob::switch`].
    pub switch: String,
    /// See [`EventJob::switch_call_id`].
    pub switch_call_id: String,
    /// See [`EventJob::a_leg_call_id`].
    pub a_leg_call_id: String,
    /// See [`EventJob::b_leg_call_id`].
    pub b_leg_call_id: Option<String>,
    /// See [`EventJob::parties`].
    pub parties: EventParties,
    /// The current recording, copied into every event.
    pub recording: Option<EventRecording>,
    /// See [`SwitchInfo::version`].
    pub version: String,
    /// `seq` of the next event.
    pub next_seq: u64,
}

impl CallContext {
    /// The next event of the call (consumes one `seq`). `event_id` should be
    /// [`crate::uuid_v7`] of `time_unix_ms`; `status_code`, `reason` and `transfer_target`
    /// are left empty for the caller to fill.
    pub fn event(&mut self, kind: EventKind, event_id: String, time_unix_ms: u64) -> EventJob {
        let seq = self.next_seq;
        self.next_seq += 1;
        EventJob {
            schema: EventSchema,
            job_type: EventType,
            event_id,
            global_call_id: self.global_call_id.clone(),
            switch: self.switch.clone(),
            switch_call_id: self.switch_call_id.clone(),
            a_leg_call_id: self.a_leg_call_id.clone(),
            b_leg_call_id: self.b_leg_call_id.clone(),
            kind,
            time: rfc3339(time_unix_ms),
            time_unix_ms,
            seq,
            parties: self.parties.clone(),
            recording: self.recording.clone(),
            transfer_target: None,
            status_code: None,
            reason: None,
            sipctl: SwitchInfo {
                version: self.version.clone(),
            },
        }
    }
}
