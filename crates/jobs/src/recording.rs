//! The recording job (`linecord.recording.v1`): what `recorder` writes when a recording ends.

use serde::{Deserialize, Serialize};

use crate::const_tag;

/// Schema name and version of recording jobs.
pub const RECORDING_SCHEMA: &str = "linecord.recording.v1";

const_tag!(
    /// The `schema` field of a recording job: always `linecord.recording.v1`.
    RecordingSchema = "linecord.recording.v1"
);
const_tag!(
    /// The `type` field of a recording job: always `recording`.
    RecordingType = "recording"
);

/// A finished (or failed) recording, as `recorder` spools it and writes it beside the
/// recording as `<id>.json`. Field names and meanings: `docs/processor-queue.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingJob {
    /// Always `linecord.recording.v1`.
    pub schema: RecordingSchema,
    /// Always `recording`.
    #[serde(rename = "type")]
    pub job_type: RecordingType,
    /// Unique id of the recording (a UUIDv7; also the file name stem).
    pub recording_id: String,
    /// Absolute path of the `.lcr` file; `None` only when `status` is `failed` (nothing of the
    /// recording reached the disk). A `partial` recording always names its file.
    #[serde(default)]
    pub file: Option<String>,
    /// The NG `call-id` (the SIP Call-ID of the call as `sipctl` gave it to the recorder).
    pub call_id: String,
    /// The parties: index 0 is the caller (the tag of the first offer), 1 the callee.
    pub parties: Vec<RecordingParty>,
    /// NG `metadata` of the call (free text).
    #[serde(default)]
    pub metadata: Option<String>,
    /// Start, RFC 3339 UTC with ms.
    pub start: String,
    /// Start, ms since the Unix epoch.
    pub start_unix_ms: u64,
    /// End, RFC 3339 UTC with ms.
    pub end: String,
    /// End, ms since the Unix epoch.
    pub end_unix_ms: u64,
    /// `end_unix_ms - start_unix_ms`.
    pub duration_ms: u64,
    /// How the recording ended.
    pub status: RecordingStatus,
    /// `status == complete`.
    pub complete: bool,
    /// Packets that reached the recorder but were not recorded.
    pub packets_lost: u64,
    /// Per stream: addresses, codecs, counts and quality as the recorder measured them.
    pub streams: Vec<RecordingStream>,
    /// Why the recording failed, else `None`.
    #[serde(default)]
    pub error: Option<String>,
    /// The recorder that wrote it.
    pub recorder: RecorderInfo,
}

impl RecordingJob {
    /// Top-level fields a recording job must carry (the others may be absent or `null`).
    pub const REQUIRED_FIELDS: &'static [&'static str] = &[
        "schema",
        "type",
        "recording_id",
        "call_id",
        "parties",
        "start",
        "start_unix_ms",
        "end",
        "end_unix_ms",
        "duration_ms",
        "status",
        "complete",
        "packets_lost",
        "streams",
        "recorder",
    ];
}

/// One party of a recorded call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingParty {
    /// 0 = caller, 1 = callee.
    pub index: u8,
    /// The party's SIP tag (NG `from-tag`/`to-tag`).
    pub tag: String,
    /// NG `label`, if given.
    #[serde(default)]
    pub label: Option<String>,
}

/// How a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// Everything was recorded.
    Complete,
    /// Some packets were not recorded (count in `packets_lost`).
    Incomplete,
    /// The recorder died; the file holds every complete block.
    Recovered,
    /// Writing failed part-way (e.g. the disk filled): the file holds the audio written before
    /// the failure, `error` says why, `packets_lost` counts what was dropped after it.
    Partial,
    /// Nothing could be written (see `error`); `file` is `None`.
    Failed,
}

/// RTP or RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// RTP (media).
    Rtp,
    /// RTCP (reports).
    Rtcp,
}

/// One recorded stream: what one party sent on one media line's RTP or RTCP port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingStream {
    /// `media_index * 4 + party * 2 + (rtcp ? 1 : 0)`.
    pub id: u16,
    /// Sending party (0 caller, 1 callee).
    pub party: u8,
    /// Media line index in the SDP.
    pub media_index: u16,
    /// RTP or RTCP.
    pub component: Component,
    /// The party's address (`ip:port`, empty if unknown).
    pub source: String,
    /// The recorder's address the party sent to (`ip:port`).
    pub destination: String,
    /// Codecs as negotiated, SDP order.
    pub codecs: Vec<Codec>,
    /// Packets written.
    pub packets: u64,
    /// Payload bytes written.
    pub payload_bytes: u64,
    /// RTP packets lost in transit (RFC 3550 A.3; may be negative with duplicates).
    pub lost: i64,
    /// Interarrival jitter at the end, RTP clock units.
    pub jitter: u32,
    /// First packet's arrival, µs after `start`.
    pub first_us: u64,
    /// Last packet's arrival, µs after `start`.
    pub last_us: u64,
}

/// A codec of a media line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Codec {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name (`PCMU`, `telephone-event`, …).
    pub name: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channels.
    pub channels: u8,
}

/// The recorder that produced a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecorderInfo {
    /// Its version (`CARGO_PKG_VERSION`).
    pub version: String,
}
