//! [`Job`]: any job of the processor queue, and [`parse`], which dispatches on `schema`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{EventJob, EVENT_SCHEMA};
use crate::recording::{RecordingJob, RECORDING_SCHEMA};

/// Why bytes are not a job this library knows.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Not JSON at all.
    #[error("the job is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// JSON, but not an object.
    #[error("the job is not a JSON object")]
    NotAnObject,
    /// No `schema` string.
    #[error("the job has no \"schema\" string")]
    MissingSchema,
    /// A schema (or version) this library does not know; the consumer must refuse it.
    #[error("unknown job schema {0:?}")]
    UnknownSchema(String),
    /// A known schema, but a required top-level field is absent.
    #[error("{schema} job without the required field {field:?}")]
    MissingField {
        /// The job's schema.
        schema: &'static str,
        /// The absent field.
        field: &'static str,
    },
    /// A known schema, but a field has the wrong type or value (nested missing fields too).
    #[error("invalid {schema} job: {detail}")]
    InvalidField {
        /// The job's schema.
        schema: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Any job of the processor queue. Serializes as the job's own JSON object (no wrapper);
/// deserializes by dispatching on `schema` (see [`parse_value`]).
// Jobs are few and short-lived: the size difference does not matter, plain variants keep
// matching simple.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Job {
    /// `linecord.recording.v1`.
    Recording(RecordingJob),
    /// `linecord.event.v1`.
    Event(EventJob),
}

impl Job {
    /// The job's schema string.
    pub fn schema(&self) -> &'static str {
        match self {
            Job::Recording(_) => RECORDING_SCHEMA,
            Job::Event(_) => EVENT_SCHEMA,
        }
    }

    /// The job's unique id (`recording_id` or `event_id`), used in its spool file name.
    pub fn id(&self) -> &str {
        match self {
            Job::Recording(r) => &r.recording_id,
            Job::Event(e) => &e.event_id,
        }
    }

    /// The job as pretty-printed JSON (what goes into the spool).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }
}

impl From<RecordingJob> for Job {
    fn from(j: RecordingJob) -> Self {
        Job::Recording(j)
    }
}

impl From<EventJob> for Job {
    fn from(j: EventJob) -> Self {
        Job::Event(j)
    }
}

impl<'de> Deserialize<'de> for Job {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        parse_value(v).map_err(serde::de::Error::custom)
    }
}

/// Parses the bytes of a job file.
pub fn parse(bytes: &[u8]) -> Result<Job, JobError> {
    let v: Value = serde_json::from_slice(bytes).map_err(JobError::InvalidJson)?;
    parse_value(v)
}

/// Parses a job from JSON already decoded: dispatches on `schema`, checks the required
/// fields, then types and values. Unknown extra fields are ignored (a v1 producer may add
/// optional fields; anything incompatible gets a new schema version).
pub fn parse_value(v: Value) -> Result<Job, JobError> {
    let obj = v.as_object().ok_or(JobError::NotAnObject)?;
    let schema = obj
        .get("schema")
        .and_then(Value::as_str)
        .ok_or(JobError::MissingSchema)?;
    let (schema, required): (&'static str, &'static [&'static str]) = match schema {
        RECORDING_SCHEMA => (RECORDING_SCHEMA, RecordingJob::REQUIRED_FIELDS),
        EVENT_SCHEMA => (EVENT_SCHEMA, EventJob::REQUIRED_FIELDS),
        other => return Err(JobError::UnknownSchema(other.to_owned())),
    };
    if let Some(field) = required.iter().find(|f| !obj.contains_key(**f)) {
        return Err(JobError::MissingField { schema, field });
    }
    let invalid = |e: serde_json::Error| JobError::InvalidField {
        schema,
        detail: e.to_string(),
    };
    if schema == RECORDING_SCHEMA {
        Ok(Job::Recording(serde_json::from_value(v).map_err(invalid)?))
    } else {
        let e: EventJob = serde_json::from_value(v).map_err(invalid)?;
        e.validate()
            .map_err(|detail| JobError::InvalidField { schema, detail })?;
        Ok(Job::Event(e))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::*;
    use crate::recording::*;

    /// The example of `docs/processor-queue.md`, as `recorder` writes it.
    pub(crate) const RECORDING_EXAMPLE: &str = r#"{
      "schema": "linecord.recording.v1",
      "type": "recording",
      "recording_id": "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6071",
      "file": "/var/lib/linecord/recordings/2026/11/25/019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6071.lcr",
      "call_id": "a84b4c76e66710@pc33.example.com",
      "parties": [ {"index": 0, "tag": "1928301774", "label": "caller"},
                   {"index": 1, "tag": "a6c85cf", "label": null} ],
      "metadata": "agent=1001;queue=sales",
      "start": "2026-11-25T09:12:03.120Z",  "start_unix_ms": 1795597923120,
      "end": "2026-11-25T09:15:41.007Z",    "end_unix_ms": 1795598141007,
      "duration_ms": 217887,
      "status": "complete",
      "complete": true,
      "packets_lost": 0,
      "streams": [
        { "id": 0, "party": 0, "media_index": 0, "component": "rtp",
          "source": "192.0.2.10:4000", "destination": "198.18.0.1:30000",
          "codecs": [ {"payload_type": 0, "name": "PCMU", "clock_rate": 8000, "channels": 1} ],
          "packets": 10894, "payload_bytes": 1743040, "lost": 0, "jitter": 12,
          "first_us": 1203, "last_us": 217880113 }
      ],
      "error": null,
      "recorder": { "version": "0.1.0" }
    }"#;

    /// A failed recording as `recorder` writes it (no file, error set, no streams stats).
    const RECORDING_FAILED: &str = r#"{
      "schema": "linecord.recording.v1", "type": "recording",
      "recording_id": "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6072", "file": null,
      "call_id": "c1", "parties": [], "metadata": null,
      "start": "2026-11-25T09:12:03.120Z", "start_unix_ms": 1795597923120,
      "end": "2026-11-25T09:12:03.120Z", "end_unix_ms": 1795597923120, "duration_ms": 0,
      "status": "failed", "complete": false, "packets_lost": 3, "streams": [],
      "error": "No space left on device", "recorder": { "version": "0.1.0" }
    }"#;

    pub(crate) fn event_example(seq: u64) -> EventJob {
        let mut ctx = CallContext {
            global_call_id: crate::uuid_v7(1_795_597_923_000, [7; 10]),
            switch: "sipctl-1".into(),
            switch_call_id: "c-42".into(),
            a_leg_call_id: "a84b4c76e66710@pc33.example.com".into(),
            b_leg_call_id: Some("b-1@sipctl".into()),
            parties: EventParties {
                caller: Party {
                    number: Some("+4930123456".into()),
                    uri: "sip:+4930123456@gw.example.com".into(),
                    display_name: None,
                },
                callee: Party {
                    number: Some("1001".into()),
                    uri: "sip:1001@pbx.example.com".into(),
                    display_name: Some("Alice".into()),
                },
                agent_dn: Some("1001".into()),
                agent_side: Some(crate::AgentSide::Callee),
            },
            recording: None,
            version: "0.1.0".into(),
            next_seq: seq,
        };
        ctx.event(
            EventKind::Answered,
            crate::uuid_v7(1_795_597_923_120, [seq as u8; 10]),
            1_795_597_923_120,
        )
    }

    #[test]
    fn documented_recording_job_parses() {
        let job = parse(RECORDING_EXAMPLE.as_bytes()).expect("parses");
        let Job::Recording(r) = &job else {
            panic!("not a recording: {job:?}")
        };
        assert_eq!(job.id(), "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6071");
        assert_eq!(job.schema(), RECORDING_SCHEMA);
        assert_eq!(r.status, RecordingStatus::Complete);
        assert_eq!(r.parties[1].label, None);
        assert_eq!(r.streams[0].component, Component::Rtp);
        assert_eq!(r.streams[0].codecs[0].name, "PCMU");
        assert_eq!(r.duration_ms, 217_887);
        // Round trip: what we write parses back to the same job and the same JSON value.
        let bytes = job.to_json().expect("encodes");
        assert_eq!(parse(&bytes).expect("reparses"), job);
        let a: Value = serde_json::from_slice(&bytes).expect("json");
        let b: Value = serde_json::from_str(RECORDING_EXAMPLE).expect("json");
        assert_eq!(a, b);
    }

    #[test]
    fn failed_recording_job_parses() {
        let Job::Recording(r) = parse(RECORDING_FAILED.as_bytes()).expect("parses") else {
            panic!("not a recording")
        };
        assert_eq!(r.status, RecordingStatus::Failed);
        assert_eq!(r.file, None);
        assert_eq!(r.error.as_deref(), Some("No space left on device"));
    }

    #[test]
    fn event_round_trip_and_fields() {
        let e = event_example(3);
        assert_eq!(e.seq, 3);
        assert_eq!(e.time, "2026-11-25T09:12:03.120Z");
        let job = Job::from(e.clone());
        let bytes = job.to_json().expect("encodes");
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["schema"], "linecord.event.v1");
        assert_eq!(v["type"], "event");
        assert_eq!(v["kind"], "answered");
        assert_eq!(v["parties"]["agent_dn"], "1001");
        assert_eq!(parse(&bytes).expect("parses"), Job::Event(e));
        // Through serde's Deserialize as well.
        let j: Job = serde_json::from_slice(&bytes).expect("deserializes");
        assert_eq!(j, job);
    }

    #[test]
    fn call_context_numbers_events() {
        let mut e = event_example(0);
        let mut ctx = CallContext {
            global_call_id: e.global_call_id.clone(),
            switch: e.switch.clone(),
            switch_call_id: e.switch_call_id.clone(),
            a_leg_call_id: e.a_leg_call_id.clone(),
            b_leg_call_id: None,
            parties: e.parties.clone(),
            recording: None,
            version: "0.1.0".into(),
            next_seq: 0,
        };
        let seqs: Vec<u64> = (0..3)
            .map(|i| {
                ctx.event(EventKind::Ringing, crate::uuid_v7(i, [0; 10]), i)
                    .seq
            })
            .collect();
        assert_eq!(seqs, [0, 1, 2]);
        e.kind = EventKind::RecordingStarted;
        assert!(e.validate().is_err(), "recording_started without recording");
        e.recording = Some(EventRecording {
            ng_call_id: "a84b4c76e66710@pc33.example.com".into(),
            recording_id: None,
            recorder: Some("127.0.0.1:2223".into()),
            initiator: Some(RecordingInitiator::Dn),
        });
        assert_eq!(e.validate(), Ok(()));
    }

    #[test]
    fn unknown_schema_is_rejected() {
        let v2 = RECORDING_EXAMPLE.replace("linecord.recording.v1", "linecord.recording.v2");
        assert!(matches!(
            parse(v2.as_bytes()),
            Err(JobError::UnknownSchema(s)) if s == "linecord.recording.v2"
        ));
        assert!(matches!(
            parse(br#"{"type":"recording"}"#),
            Err(JobError::MissingSchema)
        ));
        assert!(matches!(
            parse(br#"{"schema": 1}"#),
            Err(JobError::MissingSchema)
        ));
    }

    #[test]
    fn invalid_json_is_rejected() {
        assert!(matches!(
            parse(b"{\"schema\":"),
            Err(JobError::InvalidJson(_))
        ));
        assert!(matches!(parse(b""), Err(JobError::InvalidJson(_))));
        assert!(matches!(parse(b"[1,2]"), Err(JobError::NotAnObject)));
    }

    #[test]
    fn every_required_field_is_checked_and_optional_ones_may_go() {
        let full: Value = serde_json::from_str(RECORDING_EXAMPLE).expect("json");
        for field in full.as_object().expect("object").keys() {
            let mut v = full.clone();
            v.as_object_mut().expect("object").remove(field);
            let r = parse_value(v);
            if field == "schema" {
                assert!(matches!(r, Err(JobError::MissingSchema)), "{r:?}");
            } else if RecordingJob::REQUIRED_FIELDS.contains(&field.as_str()) {
                assert!(
                    matches!(&r, Err(JobError::MissingField { field: f, .. }) if f == field),
                    "{field}: {r:?}"
                );
            } else {
                assert!(r.is_ok(), "{field} is optional: {r:?}");
            }
        }
        let full = serde_json::to_value(Job::Event(event_example(0))).expect("json");
        for field in full.as_object().expect("object").keys() {
            let mut v = full.clone();
            v.as_object_mut().expect("object").remove(field);
            let r = parse_value(v);
            if field == "schema" {
                assert!(matches!(r, Err(JobError::MissingSchema)), "{r:?}");
            } else if EventJob::REQUIRED_FIELDS.contains(&field.as_str()) {
                assert!(
                    matches!(&r, Err(JobError::MissingField { field: f, .. }) if f == field),
                    "{field}: {r:?}"
                );
            } else {
                assert!(r.is_ok(), "{field} is optional: {r:?}");
            }
        }
    }

    #[test]
    fn wrong_values_are_rejected() {
        let bad_status = RECORDING_EXAMPLE.replace("\"complete\",", "\"finished\",");
        assert!(matches!(
            parse(bad_status.as_bytes()),
            Err(JobError::InvalidField { .. })
        ));
        let bad_type = RECORDING_EXAMPLE.replace("\"recording\",", "\"event\",");
        assert!(matches!(
            parse(bad_type.as_bytes()),
            Err(JobError::InvalidField { .. })
        ));
        let mut e = serde_json::to_value(Job::Event(event_example(0))).expect("json");
        e["global_call_id"] = "not-a-uuid".into();
        assert!(matches!(parse_value(e), Err(JobError::InvalidField { .. })));
        let mut e = serde_json::to_value(Job::Event(event_example(0))).expect("json");
        e["kind"] = "exploded".into();
        assert!(matches!(parse_value(e), Err(JobError::InvalidField { .. })));
        let mut e = serde_json::to_value(Job::Event(event_example(0))).expect("json");
        e["parties"]["caller"]
            .as_object_mut()
            .expect("object")
            .remove("uri");
        assert!(matches!(parse_value(e), Err(JobError::InvalidField { .. })));
    }

    #[test]
    fn extra_fields_are_ignored() {
        let mut v: Value = serde_json::from_str(RECORDING_EXAMPLE).expect("json");
        v["something_new"] = 1.into();
        assert!(parse_value(v).is_ok());
    }
}
