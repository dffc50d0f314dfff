//! What the index holds: recordings (segments), call events, consolidated interactions,
//! the audit trail, and the search query. Plain data, shared by every [`crate::repo`]
//! backend.

use serde::{Deserialize, Serialize};

/// Quality and activity of one recording, from [`crate::analysis`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Analysis {
    /// Time each party talked (caller, callee), ms.
    pub talk_ms: [u64; 2],
    /// Time neither party talked, ms.
    pub silence_ms: u64,
    /// Time both parties talked at once, ms.
    pub overtalk_ms: u64,
    /// Length of the decoded audio, ms.
    pub audio_ms: u64,
    /// RTP packet loss per direction (caller's packets, callee's packets), 0..1; `None`
    /// when the party sent no RTP.
    pub packet_loss: [Option<f64>; 2],
    /// Interarrival jitter per direction at the end of the recording, ms.
    pub jitter_ms: [Option<f64>; 2],
    /// E-model MOS estimate (worse direction); `None` without RTP.
    pub mos: Option<f64>,
    /// RTP packets expected (received + lost), both directions.
    pub packets_expected: u64,
    /// RTP packets lost in transit, both directions.
    pub packets_lost: u64,
}

/// One recording (a segment of an interaction) as indexed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordingRow {
    /// The recorder's recording id (primary key).
    pub recording_id: String,
    /// The interaction it belongs to. Set by the repository on ingest (see
    /// [`crate::consolidate::interaction_id_for`]); whatever the caller puts here is
    /// replaced.
    pub interaction_id: String,
    /// The NG call-id (`call_id` of the recording job).
    pub call_id: String,
    /// Start, Unix ms.
    pub start_ms: u64,
    /// End, Unix ms.
    pub end_ms: u64,
    /// `end_ms - start_ms`.
    pub duration_ms: u64,
    /// `complete`, `incomplete`, `recovered`, `failed` (as the recorder said) or `damaged`
    /// (the file was only partly readable; see `status_note`).
    pub status: String,
    /// What was wrong with the file or the job, if anything.
    pub status_note: Option<String>,
    /// The switch that handled the call (metadata `switch=`), if known.
    pub switch: Option<String>,
    /// Caller number from the metadata (`caller=`).
    pub caller: Option<String>,
    /// Callee number from the metadata (`callee=`).
    pub callee: Option<String>,
    /// Agent DN from the metadata (`dn=` or `agent=`).
    pub dn: Option<String>,
    /// The NG metadata text.
    pub metadata: Option<String>,
    /// Activity and quality.
    pub analysis: Analysis,
    /// Where the `.lcr` is in [`crate::storage::Storage`]; `None` for a failed recording.
    pub storage_key: Option<String>,
    /// Size of the stored file, bytes.
    pub size_bytes: u64,
    /// Under legal hold: retention and delete leave it alone. Kept across re-ingestion.
    pub legal_hold: bool,
}

/// One call event as indexed (from a `linecord.event.v1` job).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventRow {
    /// Dedup key.
    pub event_id: String,
    /// The interaction (call across switches).
    pub global_call_id: String,
    /// The switch that reported it.
    pub switch: String,
    /// The switch's call id.
    pub switch_call_id: String,
    /// `created`, `answered`, … (see `docs/processor-queue.md`).
    pub kind: String,
    /// When, Unix ms.
    pub time_ms: u64,
    /// Order within (`switch`, `switch_call_id`).
    pub seq: u64,
    /// `recording.ng_call_id`, if the event names a recording.
    pub ng_call_id: Option<String>,
    /// `recording.recording_id`, if known.
    pub recording_id: Option<String>,
    /// Caller number.
    pub caller: Option<String>,
    /// Callee number.
    pub callee: Option<String>,
    /// Agent DN on this switch.
    pub agent_dn: Option<String>,
    /// SIP status code.
    pub status_code: Option<u16>,
    /// Free-text reason.
    pub reason: Option<String>,
    /// Party text for free-text search (numbers, URIs, display names), lower case.
    pub party_text: String,
}

/// One interaction: everything known about one call across switches and recorders.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InteractionRow {
    /// The global call id.
    pub id: String,
    /// Earliest event or recording start, Unix ms.
    pub start_ms: u64,
    /// Latest `released` event or recording end, Unix ms; `None` while neither exists.
    pub end_ms: Option<u64>,
    /// `end_ms - start_ms` (0 without an end).
    pub duration_ms: u64,
    /// Caller number.
    pub caller: Option<String>,
    /// Callee number.
    pub callee: Option<String>,
    /// DNs involved (sorted, unique).
    pub dns: Vec<String>,
    /// Number of recordings.
    pub segments: u32,
    /// Sum of the recordings' durations, ms.
    pub recorded_ms: u64,
    /// Worst MOS of the recordings.
    pub mos: Option<f64>,
    /// RTP packet loss over all recordings, 0..1.
    pub packet_loss: Option<f64>,
    /// Any recording under legal hold.
    pub legal_hold: bool,
    /// Lower-case text searched by `q` (parties, DNs, metadata, switches).
    pub search_text: String,
}

/// An interaction with its parts, for the detail view.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InteractionDetail {
    /// The summary.
    pub interaction: InteractionRow,
    /// Its recordings, by start.
    pub recordings: Vec<RecordingRow>,
    /// Its events, by time then seq.
    pub events: Vec<EventRow>,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, Unix ms.
    pub time_ms: u64,
    /// Name of the token used (or `retention`).
    pub token_name: String,
    /// Its role.
    pub role: String,
    /// `playback`, `download`, `delete`, `legal_hold` or `retention`.
    pub action: String,
    /// The recording concerned.
    pub recording_id: String,
    /// Its interaction, if known.
    pub interaction_id: Option<String>,
}

/// Sort order of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Oldest first.
    StartAsc,
    /// Newest first (the default).
    #[default]
    StartDesc,
    /// Shortest first.
    DurationAsc,
    /// Longest first.
    DurationDesc,
    /// Worst MOS first (no MOS last).
    MosAsc,
    /// Best MOS first (no MOS last).
    MosDesc,
}

impl Sort {
    /// Parses `start`, `-start`, `duration`, `-duration`, `mos`, `-mos`.
    pub fn parse(s: &str) -> Option<Sort> {
        Some(match s {
            "start" => Sort::StartAsc,
            "-start" => Sort::StartDesc,
            "duration" => Sort::DurationAsc,
            "-duration" => Sort::DurationDesc,
            "mos" => Sort::MosAsc,
            "-mos" => Sort::MosDesc,
            _ => return None,
        })
    }
}

/// Default page size of a search.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size of a search (larger requests are clamped).
pub const MAX_LIMIT: u32 = 500;

/// A search over interactions; every filter is optional and they combine with AND.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchQuery {
    /// Start at or after, Unix ms.
    pub from_ms: Option<u64>,
    /// Start at or before, Unix ms.
    pub to_ms: Option<u64>,
    /// Involves this DN (exact).
    pub dn: Option<String>,
    /// Caller number contains this.
    pub caller: Option<String>,
    /// Callee number contains this.
    pub callee: Option<String>,
    /// Duration at least, ms.
    pub min_duration_ms: Option<u64>,
    /// Duration at most, ms.
    pub max_duration_ms: Option<u64>,
    /// MOS at least (interactions without MOS do not match).
    pub min_mos: Option<f64>,
    /// MOS at most (interactions without MOS do not match).
    pub max_mos: Option<f64>,
    /// Text contained (case-insensitively) in the parties, DNs, metadata or switches.
    pub q: Option<String>,
    /// Order.
    pub sort: Sort,
    /// Page size (1..=[`MAX_LIMIT`]).
    pub limit: u32,
    /// Items to skip.
    pub offset: u64,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchPage {
    /// Matches in total (all pages).
    pub total: u64,
    /// This page.
    pub items: Vec<InteractionRow>,
}

/// Sizes of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct IndexCounts {
    /// Recordings indexed.
    pub recordings: u64,
    /// Interactions.
    pub interactions: u64,
    /// Events indexed.
    pub events: u64,
    /// Audit entries.
    pub audit_entries: u64,
}
