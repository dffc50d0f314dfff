//! linecord's recording file format (`.lcr`) and what reads it.
//!
//! One file holds one recorded call: a [`FileHeader`], then self-contained blocks of
//! [`Record`]s (each block: length, CRC32C, first/last time, lz4-compressed records whose
//! headers are delta-encoded per stream), then a [`Footer`] with a block index and per-stream
//! statistics. A file cut short by a crash still yields every complete block. The format is
//! specified in `docs/recording-format.md`.
//!
//! The crate is pure (no threads, no clocks); file I/O is limited to the reader, which reads
//! a file in place ([`reader::Recording::open`]) or works on bytes in memory
//! ([`reader::Recording::from_bytes`]). Writers (the recorder's packet workers and writer
//! threads) use [`block::BlockBuilder`] to append records and [`block::seal`] to compress
//! and frame a block; the header and footer are encoded with [`format`](mod@format). The reader opens
//! complete, truncated and damaged files alike, in time linear in the file whatever it
//! holds, and decodes records one block at a time. [`export`] turns a recording into a
//! stereo WAV (G.711 decoded, [`g711`]) or a pcap, streaming: memory does not depend on the
//! call's length.
//!
//! Entry points for fuzzing (total on every input, allocation bounded by the input):
//! [`reader::Recording::from_bytes`], then [`reader::Recording::iter_records`] /
//! [`reader::Recording::visit_records`] and [`reader::recovery_footer`];
//! [`export::write_recording_wav`] and [`export::write_recording_pcap`] into any
//! `std::io::Write` (e.g. `std::io::sink()`).

pub mod block;
mod crc;
pub mod export;
pub mod format;
pub mod g711;
pub mod reader;

/// Index of a stream within a recording (assigned in order of appearance).
pub type StreamId = u16;

/// RTP or RTCP half of a media line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// RTP packets.
    Rtp,
    /// RTCP packets.
    Rtcp,
}

/// A codec of a stream, as negotiated in SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecInfo {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name as in `a=rtpmap` (e.g. `PCMU`, `telephone-event`).
    pub name: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channels (1 for voice).
    pub channels: u8,
}

/// One recorded stream: what one party sent on one media line's RTP or RTCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's id in this file.
    pub id: StreamId,
    /// Which party sent it: 0 = the caller (the tag of the first offer), 1 = the callee.
    pub party: u8,
    /// Index of the media line in the SDP (0-based).
    pub media_index: u16,
    /// RTP or RTCP.
    pub component: Component,
    /// The party's address as known when the stream was added (`ip:port` text; empty if
    /// unknown).
    pub source: String,
    /// The recorder's address and port the party sent to (`ip:port` text).
    pub destination: String,
    /// Codecs offered for the media line, in SDP order.
    pub codecs: Vec<CodecInfo>,
}

/// One party of the call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartyInfo {
    /// SIP tag.
    pub tag: String,
    /// NG `label`, if given.
    pub label: Option<String>,
    /// The party's last SDP as signalled (before rewriting).
    pub sdp: Vec<u8>,
}

/// What opens every file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// Unique id of the recording (also the file name stem).
    pub recording_id: String,
    /// SIP Call-ID.
    pub call_id: String,
    /// Wall-clock start of the recording, ms since the Unix epoch. Record times are
    /// relative to it.
    pub start_unix_ms: u64,
    /// NG `metadata` (free text).
    pub metadata: Option<String>,
    /// The two parties, caller first.
    pub parties: Vec<PartyInfo>,
    /// Streams known when the recording started (more may follow as
    /// [`Event::StreamAdded`]).
    pub streams: Vec<StreamInfo>,
}

/// RTP header fields kept for each packet (the 12-byte fixed header; CSRCs and extensions
/// are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpFields {
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// SSRC.
    pub ssrc: u32,
}

/// A recorded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRecord {
    /// Stream it belongs to.
    pub stream: StreamId,
    /// Arrival time, microseconds since the recording's start.
    pub arrival_us: u64,
    /// RTP header fields, or `None` for an RTCP packet (whose bytes are all in `payload`).
    pub rtp: Option<RtpFields>,
    /// RTP payload (padding removed), or the whole RTCP packet.
    pub payload: Vec<u8>,
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// NG `stop recording`.
    Stopped,
    /// NG `delete` (the call ended).
    Deleted,
    /// No media and no signalling for the media timeout.
    Timeout,
    /// The recorder shut down.
    Shutdown,
}

/// Something that happened in the call, in time order with the packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Recording started (or restarted after `stop recording`).
    Started,
    /// Recording paused: no packets are written until [`Event::Resumed`].
    Paused,
    /// Recording resumed.
    Resumed,
    /// Recording stopped.
    Stopped(StopReason),
    /// A stream appeared (a new media line, or a party's first packet on a port).
    StreamAdded(StreamInfo),
    /// A stream's signalling changed (new address or codecs after a re-INVITE).
    StreamChanged(StreamInfo),
    /// A new SSRC appeared on a stream.
    SsrcChanged {
        /// The stream.
        stream: StreamId,
        /// Previous SSRC.
        old: u32,
        /// New SSRC.
        new: u32,
    },
    /// An RFC 4733 telephone-event (DTMF) packet that ends an event.
    Dtmf {
        /// The stream.
        stream: StreamId,
        /// Event code (0-9, 10 = `*`, 11 = `#`, 12-15 = A-D).
        event: u8,
        /// Duration in RTP clock units.
        duration: u16,
        /// Volume (dBm0, negated).
        volume: u8,
    },
    /// Packets that reached the recorder but could not be written (writers behind the memory
    /// budget, or a write error): the recording is incomplete.
    DataLost {
        /// Packets not written.
        packets: u64,
    },
}

/// An event with its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Microseconds since the recording's start.
    pub at_us: u64,
    /// The event.
    pub event: Event,
}

/// One entry of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A packet.
    Packet(PacketRecord),
    /// An event.
    Event(EventRecord),
}

impl Record {
    /// The record's time, microseconds since the recording's start.
    pub fn time_us(&self) -> u64 {
        match self {
            Record::Packet(p) => p.arrival_us,
            Record::Event(e) => e.at_us,
        }
    }
}

/// How a recording ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Every packet that reached the recorder while recording is in the file.
    Complete,
    /// Some data was dropped (see [`Event::DataLost`]); the rest is intact.
    Incomplete,
    /// The recorder died while writing; the footer was written at recovery from the complete
    /// blocks found.
    Recovered,
}

/// Per-stream statistics kept in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// The stream.
    pub stream: StreamId,
    /// Packets written.
    pub packets: u64,
    /// Payload bytes written.
    pub payload_bytes: u64,
    /// RTP packets lost in transit (RFC 3550 A.3, from sequence numbers), as seen by the
    /// recorder.
    pub lost: i64,
    /// Interarrival jitter at the end, RTP clock units (RFC 3550 A.8).
    pub jitter: u32,
    /// First packet's arrival (µs since start).
    pub first_us: u64,
    /// Last packet's arrival (µs since start).
    pub last_us: u64,
}

/// Where a block is and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockIndexEntry {
    /// Byte offset of the block in the file.
    pub offset: u64,
    /// Time of its first record (µs since start).
    pub first_us: u64,
    /// Time of its last record (µs since start).
    pub last_us: u64,
    /// Records in it.
    pub records: u32,
}

/// What closes a finished file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Complete, incomplete or recovered.
    pub completeness: Completeness,
    /// Wall-clock end, ms since the Unix epoch.
    pub end_unix_ms: u64,
    /// Packets that could not be written (0 when complete).
    pub packets_lost: u64,
    /// Every block of the file, in order.
    pub index: Vec<BlockIndexEntry>,
    /// Statistics per stream.
    pub streams: Vec<StreamStats>,
}
