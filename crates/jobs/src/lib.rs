//! The processor-queue schema: recording jobs and call events, and the spool directory.
//!
//! Producers (`recorder`, `sipctl`) build a [`Job`] ([`RecordingJob`] or [`EventJob`]) and
//! put it into a [`Spool`]; the `processor` takes jobs out of the spool, [`parse`]s them
//! (unknown schema versions are refused) and marks each one done or failed. The formats and
//! the on-disk layout are documented in `docs/processor-queue.md`.
//!
//! Nothing here reads the clock: times and random bytes are parameters.

mod event;
mod job;
mod recording;
mod spool;
mod time;

pub use event::{
    AgentSide, CallContext, EventJob, EventKind, EventParties, EventRecording, EventSchema,
    EventType, Party, RecordingInitiator, SwitchInfo, EVENT_SCHEMA,
};
pub use job::{parse, parse_value, Job, JobError};
pub use recording::{
    Codec, Component, RecorderInfo, RecordingJob, RecordingParty, RecordingSchema, RecordingStatus,
    RecordingStream, RecordingType, RECORDING_SCHEMA,
};
pub use spool::{job_file_name, Claimed, Spool, SpoolError};
pub use time::{civil_from_days, rfc3339};

/// A UUIDv7 text (`xxxxxxxx-xxxx-7xxx-…`) for `unix_ms` and 10 random bytes (the caller
/// draws them, so this function is deterministic and testable). Used for event ids and
/// global call ids.
pub fn uuid_v7(unix_ms: u64, random: [u8; 10]) -> String {
    uuid::Builder::from_unix_timestamp_millis(unix_ms, &random)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Whether `s` is a UUID in its textual form (any version; hyphenated or not).
pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok()
}

/// Whether `s` is a hyphenated version-7 UUID, as linecord generates them.
pub fn is_uuid_v7(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok_and(|u| u.get_version_num() == 7)
}

/// Defines a unit struct that (de)serializes as one fixed string: the `schema` and `type`
/// fields of a job, so a value of the Rust type always carries the right text and parsing
/// refuses any other.
macro_rules! const_tag {
    ($(#[$meta:meta])* $name:ident = $value:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name;

        impl $name {
            /// The text this tag stands for.
            pub const VALUE: &'static str = $value;
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($value)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                if s == $value {
                    Ok($name)
                } else {
                    Err(<D::Error as serde::de::Error>::invalid_value(
                        serde::de::Unexpected::Str(&s),
                        &$value,
                    ))
                }
            }
        }
    };
}
pub(crate) use const_tag;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_is_deterministic_and_valid() {
        let a = uuid_v7(1_795_597_923_120, [1; 10]);
        assert_eq!(a, uuid_v7(1_795_597_923_120, [1; 10]));
        assert!(is_uuid_v7(&a), "{a}");
        assert!(a.starts_with("01a211f9-f330-7"), "{a}");
        assert!(!is_uuid_v7("not-a-uuid"));
        assert!(is_uuid("a84b4c76-e667-4710-8a1b-2c3d4e5f6071"));
        assert!(!is_uuid_v7("a84b4c76-e667-4710-8a1b-2c3d4e5f6071"));
    }
}
