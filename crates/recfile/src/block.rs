//! Blocks: the unit of writing, checksumming and recovery.
//!
//! A packet worker appends records to a [`BlockBuilder`] (plain bytes, delta-encoded per
//! stream, no allocation within its capacity); a writer thread [`seal`]s it (lz4, CRC32C,
//! framing) and writes it. Every block decodes on its own: the delta state starts fresh in
//! each, so a reader can recover any complete block of a damaged file.
//!
//! Framed block: `BLOCK_MAGIC`, codec (u8: 0 stored, 1 lz4), stored length (u32 LE), raw
//! length (u32), records (u32), first time (u64 µs), last time (u64 µs), CRC32C (u32) of the
//! 29 header bytes after the magic followed by the stored bytes, then the stored bytes.
//!
//! Record encoding (raw bytes): a tag byte `kk p l 0 sss`: `kk` kind (0 RTP, 1 RTCP,
//! 2 event), `p` RTP fields as predicted, `l` payload length as the stream's previous,
//! `sss` stream id 0-6 (7 = a varint id follows). Then, for packets: arrival as zigzag of
//! (delta to the stream's previous arrival − the stream's previous delta) in µs (a stream's
//! first packet in the block counts from the block's previous record); unless predicted, an
//! RTP field byte (marker, and which of PT, sequence, timestamp, SSRC differ from the
//! prediction) followed by those fields; payload length (varint) unless `l`; payload.
//! Predicted means: no marker, same PT and SSRC, seq + 1, and timestamp advanced by the
//! stream's previous timestamp step. For events: zigzag of (time − the block's previous
//! record time), then the event body ([`crate::format::encode_event`]). A steady G.711
//! stream thus costs 2–3 bytes per 160-byte packet. `docs/recording-format.md` has the
//! exact rules.

use crate::format::{decode_event, encode_event, put_varint, put_zigzag, Cursor, FormatError};
use crate::{EventRecord, PacketRecord, Record, RtpFields, StreamId};

/// First bytes of every block.
pub const BLOCK_MAGIC: [u8; 4] = *b"LCRB";
/// Framed header length: magic + codec + 3 × u32 + 2 × u64 + CRC.
pub const BLOCK_HEADER_LEN: usize = 4 + 1 + 12 + 16 + 4;
/// Largest raw block a reader accepts (bounds decompression on hostile input).
pub const MAX_RAW_BLOCK: usize = 16 << 20;

const KIND_RTP: u8 = 0;
const KIND_RTCP: u8 = 1;
const KIND_EVENT: u8 = 2;
const F_PREDICTED: u8 = 0x20;
const F_SAME_LEN: u8 = 0x10;
/// Tag bit that must be zero.
const F_RESERVED: u8 = 0x08;
const STREAM_ESCAPE: u8 = 7;
/// RTP field byte: marker bit.
const R_MARKER: u8 = 0x80;
/// RTP field byte: payload type follows (u8).
const R_PT: u8 = 0x01;
/// RTP field byte: sequence number follows (u16 LE).
const R_SEQ: u8 = 0x02;
/// RTP field byte: timestamp follows (zigzag of its difference from the prediction, as i32).
const R_TS: u8 = 0x04;
/// RTP field byte: SSRC follows (u32 LE).
const R_SSRC: u8 = 0x08;
/// RTP field byte: bits that must be zero.
const R_RESERVED: u8 = 0x70;
/// The baseline of explicit RTP fields for a stream without RTP history in the block.
const ZERO_RTP: RtpFields = RtpFields {
    marker: false,
    payload_type: 0,
    sequence: 0,
    timestamp: 0,
    ssrc: 0,
};
/// Streams whose delta state is kept in a fixed array (larger ids work, just without
/// prediction).
const TRACKED_STREAMS: usize = 64;

/// Why a block could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The data ends inside the block (an interrupted write).
    #[error("block is truncated")]
    Truncated,
    /// The CRC does not match (corruption).
    #[error("block checksum mismatch")]
    Checksum,
    /// The block is malformed in another way.
    #[error("corrupt block: {0}")]
    Corrupt(String),
}

impl From<FormatError> for BlockError {
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::Truncated => BlockError::Corrupt("record runs past the block".into()),
            other => BlockError::Corrupt(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct StreamState {
    seen: bool,
    last_arrival: u64,
    last_delta: i64,
    last_len: usize,
    rtp: Option<RtpFields>,
    ts_step: u32,
}

impl StreamState {
    fn arrival_residual(&mut self, arrival: u64) -> i64 {
        let delta = arrival.wrapping_sub(self.last_arrival) as i64;
        let residual = delta.wrapping_sub(self.last_delta);
        self.last_arrival = arrival;
        self.last_delta = delta;
        residual
    }

    fn arrival_from(&mut self, residual: i64) -> u64 {
        let delta = self.last_delta.wrapping_add(residual);
        let arrival = self.last_arrival.wrapping_add(delta as u64);
        self.last_arrival = arrival;
        self.last_delta = delta;
        arrival
    }

    fn predicted(&self) -> Option<RtpFields> {
        self.rtp.map(|p| RtpFields {
            marker: false,
            payload_type: p.payload_type,
            sequence: p.sequence.wrapping_add(1),
            timestamp: p.timestamp.wrapping_add(self.ts_step),
            ssrc: p.ssrc,
        })
    }

    fn update_rtp(&mut self, f: RtpFields) {
        if let Some(p) = self.rtp {
            if f.ssrc == p.ssrc {
                self.ts_step = f.timestamp.wrapping_sub(p.timestamp);
            }
        }
        self.rtp = Some(f);
    }
}

/// Stream ids whose delta state is kept inline in [`DeltaState`] (a call's RTP and RTCP of
/// each party); tracked ids above them live in a vector grown on first use.
const INLINE_STREAMS: usize = 4;

/// Delta state of one block (encoder and decoder share it).
///
/// Streams `0..INLINE_STREAMS` are kept in a fixed array (a call's usual streams: one
/// small allocation per builder, prefetchable through [`BlockBuilder::hot_memory`]);
/// tracked ids above them are in `more` (index
/// `id - INLINE_STREAMS`), grown to the highest id the block uses (at most
/// [`TRACKED_STREAMS`] in all) and keeping its capacity across [`BlockBuilder::clear`], so
/// a builder allocates only the first time one of its blocks uses a higher id. Clearing
/// resets a few hundred bytes, not the whole tracked range.
#[derive(Debug, Clone, Default)]
struct DeltaState {
    inline: [StreamState; INLINE_STREAMS],
    more: Vec<StreamState>,
    untracked: StreamState,
    last_time: u64,
}

impl DeltaState {
    /// Back to the start of a block (capacity kept).
    fn reset(&mut self) {
        self.inline = Default::default();
        self.more.clear();
        self.untracked = StreamState::default();
        self.last_time = 0;
    }

    /// The state of stream `id`; a stream not seen yet in the block (and every untracked
    /// one) starts from the time of the block's previous record.
    #[inline]
    fn stream(&mut self, id: StreamId) -> &mut StreamState {
        let last_time = self.last_time;
        let i = usize::from(id);
        let s = if i < INLINE_STREAMS {
            &mut self.inline[i]
        } else if i < TRACKED_STREAMS {
            let j = i - INLINE_STREAMS;
            if j >= self.more.len() {
                self.more.resize(j + 1, StreamState::default());
            }
            &mut self.more[j]
        } else {
            // Untracked ids: no prediction, deltas from the previous record.
            self.untracked = StreamState::default();
            &mut self.untracked
        };
        if !s.seen {
            s.last_arrival = last_time;
        }
        s
    }
}

/// Appends the explicit RTP field byte and the fields that differ from `base`.
fn put_rtp_fields(out: &mut Vec<u8>, f: &RtpFields, base: &RtpFields) {
    let mut flags = if f.marker { R_MARKER } else { 0 };
    if f.payload_type != base.payload_type {
        flags |= R_PT;
    }
    if f.sequence != base.sequence {
        flags |= R_SEQ;
    }
    if f.timestamp != base.timestamp {
        flags |= R_TS;
    }
    if f.ssrc != base.ssrc {
        flags |= R_SSRC;
    }
    out.push(flags);
    if flags & R_PT != 0 {
        out.push(f.payload_type);
    }
    if flags & R_SEQ != 0 {
        out.extend_from_slice(&f.sequence.to_le_bytes());
    }
    if flags & R_TS != 0 {
        put_zigzag(
            out,
            i64::from(f.timestamp.wrapping_sub(base.timestamp) as i32),
        );
    }
    if flags & R_SSRC != 0 {
        out.extend_from_slice(&f.ssrc.to_le_bytes());
    }
}

/// Reads what [`put_rtp_fields`] wrote.
fn get_rtp_fields(c: &mut Cursor<'_>, base: &RtpFields) -> Result<RtpFields, BlockError> {
    let flags = c.u8()?;
    if flags & R_RESERVED != 0 {
        return Err(BlockError::Corrupt("reserved RTP field bits set".into()));
    }
    Ok(RtpFields {
        marker: flags & R_MARKER != 0,
        payload_type: if flags & R_PT != 0 {
            c.u8()?
        } else {
            base.payload_type
        },
        sequence: if flags & R_SEQ != 0 {
            c.u16()?
        } else {
            base.sequence
        },
        timestamp: if flags & R_TS != 0 {
            base.timestamp.wrapping_add(c.zigzag()? as u32)
        } else {
            base.timestamp
        },
        ssrc: if flags & R_SSRC != 0 {
            c.u32()?
        } else {
            base.ssrc
        },
    })
}

/// A reusable buffer of encoded records for one block.
#[derive(Debug, Clone)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    state: Box<DeltaState>,
    records: u32,
    first_us: Option<u64>,
    last_us: Option<u64>,
}

fn tag(kind: u8, flags: u8, stream: StreamId) -> (u8, bool) {
    let escape = stream >= u16::from(STREAM_ESCAPE);
    let s = if escape { STREAM_ESCAPE } else { stream as u8 };
    ((kind << 6) | flags | s, escape)
}

impl BlockBuilder {
    /// A builder holding up to `bytes` of records without reallocating.
    pub fn with_capacity(bytes: usize) -> Self {
        BlockBuilder {
            buf: Vec::with_capacity(bytes),
            state: Box::default(),
            records: 0,
            first_us: None,
            last_us: None,
        }
    }

    fn note_time(&mut self, t: u64) {
        self.first_us.get_or_insert(t);
        self.last_us = Some(t);
        self.records = self.records.saturating_add(1);
    }

    /// Appends a packet. `rtp` is `None` for RTCP (then `payload` is the whole packet). Does
    /// not allocate while `len() + payload.len() + 32 <= capacity()`.
    pub fn push_packet(
        &mut self,
        stream: StreamId,
        arrival_us: u64,
        rtp: Option<&RtpFields>,
        payload: &[u8],
    ) {
        let st = self.state.stream(stream);
        let residual = st.arrival_residual(arrival_us);
        let same_len = st.seen && st.last_len == payload.len();
        st.seen = true;
        st.last_len = payload.len();
        let (kind, predicted, base) = match rtp {
            Some(f) => {
                let base = st.predicted();
                st.update_rtp(*f);
                (KIND_RTP, base == Some(*f), base.unwrap_or(ZERO_RTP))
            }
            None => (KIND_RTCP, false, ZERO_RTP),
        };
        let flags = if predicted { F_PREDICTED } else { 0 } | if same_len { F_SAME_LEN } else { 0 };
        let (t, escape) = tag(kind, flags, stream);
        self.buf.push(t);
        if escape {
            put_varint(&mut self.buf, u64::from(stream));
        }
        put_zigzag(&mut self.buf, residual);
        if let (Some(f), false) = (rtp, predicted) {
            put_rtp_fields(&mut self.buf, f, &base);
        }
        if !same_len {
            put_varint(&mut self.buf, payload.len() as u64);
        }
        self.buf.extend_from_slice(payload);
        self.state.last_time = arrival_us;
        self.note_time(arrival_us);
    }

    /// Appends an event.
    pub fn push_event(&mut self, e: &EventRecord) {
        let (t, _) = tag(KIND_EVENT, 0, 0);
        self.buf.push(t);
        put_zigzag(
            &mut self.buf,
            e.at_us.wrapping_sub(self.state.last_time) as i64,
        );
        encode_event(&e.event, &mut self.buf);
        self.state.last_time = e.at_us;
        self.note_time(e.at_us);
    }

    /// What an append touches first, as `(address, bytes)`: the delta state and the end of
    /// the records. For callers that prefetch the builders of a batch of packets before
    /// appending to them; nothing else should use the addresses.
    pub fn hot_memory(&self) -> [(*const u8, usize); 2] {
        [
            (
                (&*self.state as *const DeltaState).cast(),
                std::mem::size_of::<DeltaState>(),
            ),
            (self.buf.as_ptr_range().end, 192),
        ]
    }

    /// Encoded bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the buffer holds without reallocating.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Records appended.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Time of the first record.
    pub fn first_us(&self) -> Option<u64> {
        self.first_us
    }

    /// Time of the last record.
    pub fn last_us(&self) -> Option<u64> {
        self.last_us
    }

    /// The encoded records.
    pub fn raw(&self) -> &[u8] {
        &self.buf
    }

    /// Empties the builder for reuse (capacity kept, delta state reset).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.state.reset();
        self.records = 0;
        self.first_us = None;
        self.last_us = None;
    }
}

/// Compresses and frames `b`, appending the block to `out`.
pub fn seal(b: &BlockBuilder, out: &mut Vec<u8>) {
    let raw = b.raw();
    let start = out.len();
    out.extend_from_slice(&BLOCK_MAGIC);
    let header_at = out.len();
    out.extend_from_slice(&[0u8; BLOCK_HEADER_LEN - 4]);
    let data_at = out.len();
    out.resize(
        data_at + lz4_flex::block::get_maximum_output_size(raw.len()),
        0,
    );
    let (codec, stored) = match lz4_flex::block::compress_into(raw, &mut out[data_at..]) {
        Ok(n) if n < raw.len() => (1u8, n),
        _ => {
            out.truncate(data_at);
            out.extend_from_slice(raw);
            (0u8, raw.len())
        }
    };
    out.truncate(data_at + stored);
    let mut h = [0u8; BLOCK_HEADER_LEN - 8];
    h[0] = codec;
    h[1..5].copy_from_slice(&(stored as u32).to_le_bytes());
    h[5..9].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    h[9..13].copy_from_slice(&b.records().to_le_bytes());
    h[13..21].copy_from_slice(&b.first_us().unwrap_or(0).to_le_bytes());
    h[21..29].copy_from_slice(&b.last_us().unwrap_or(0).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h), &out[data_at..]);
    out[header_at..header_at + h.len()].copy_from_slice(&h);
    out[header_at + h.len()..data_at].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(&out[start..start + 4], &BLOCK_MAGIC);
}

/// Where a block is and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Offset in the file (0 when opened from a slice).
    pub offset: u64,
    /// Time of its first record.
    pub first_us: u64,
    /// Time of its last record.
    pub last_us: u64,
    /// Records in it.
    pub records: u32,
    /// Framed length in bytes.
    pub len: usize,
}

/// The fixed 37-byte framing of a block, as read (not yet checked against its data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockHeader {
    /// 0 stored, 1 lz4.
    pub(crate) codec: u8,
    /// Bytes after the header (S).
    pub(crate) stored: u32,
    /// Bytes of records once decompressed (R).
    pub(crate) raw_len: u32,
    /// Records claimed.
    pub(crate) records: u32,
    /// Time of the first record.
    pub(crate) first_us: u64,
    /// Time of the last record.
    pub(crate) last_us: u64,
    /// The stored CRC (over header bytes 4..33 and the S stored bytes).
    pub(crate) crc: u32,
    /// CRC32C of header bytes 4..33 alone.
    pub(crate) header_crc: u32,
}

/// Most raw bytes one stored byte of an lz4 block can expand to (a match-length extension
/// byte adds 255 bytes of output; every other input byte adds less).
const LZ4_MAX_RATIO: u64 = 255;

impl BlockHeader {
    /// Framed length: header plus stored bytes.
    pub(crate) fn framed_len(&self) -> u64 {
        BLOCK_HEADER_LEN as u64 + u64::from(self.stored)
    }

    /// Reads the header at the start of `bytes` and checks what can be checked without the
    /// data: magic, completeness of the header, the 16 MiB bounds, the codec, and that the
    /// raw length is one the stored length can produce (stored = raw for codec 0; at most
    /// 255 × stored + 16 for lz4). Does not look at the stored bytes.
    pub(crate) fn parse(bytes: &[u8]) -> Result<BlockHeader, BlockError> {
        let magic = bytes.get(..4).ok_or(BlockError::Truncated)?;
        if magic != BLOCK_MAGIC {
            return Err(BlockError::Corrupt("bad block magic".into()));
        }
        let h = bytes
            .get(4..BLOCK_HEADER_LEN)
            .ok_or(BlockError::Truncated)?;
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let header = BlockHeader {
            codec: h[0],
            stored: u32_at(1),
            raw_len: u32_at(5),
            records: u32_at(9),
            first_us: u64_at(13),
            last_us: u64_at(21),
            crc: u32_at(29),
            header_crc: crc32c::crc32c(&h[..BLOCK_HEADER_LEN - 8]),
        };
        let (stored, raw) = (u64::from(header.stored), u64::from(header.raw_len));
        if raw > MAX_RAW_BLOCK as u64 || stored > MAX_RAW_BLOCK as u64 {
            // No writer produces such a block: its header is damaged.
            return Err(BlockError::Checksum);
        }
        match header.codec {
            0 if stored == raw => {}
            0 => {
                return Err(BlockError::Corrupt(
                    "stored length differs from raw length".into(),
                ))
            }
            1 if raw <= stored * LZ4_MAX_RATIO + 16 => {}
            1 => {
                return Err(BlockError::Corrupt(
                    "raw length beyond what lz4 can expand to".into(),
                ))
            }
            c => return Err(BlockError::Corrupt(format!("unknown block codec {c}"))),
        }
        Ok(header)
    }

    /// The info of a block with this header at offset 0.
    pub(crate) fn info(&self) -> BlockInfo {
        BlockInfo {
            offset: 0,
            first_us: self.first_us,
            last_us: self.last_us,
            records: self.records,
            len: BLOCK_HEADER_LEN + self.stored as usize,
        }
    }

    /// Whether `data` (the S stored bytes) matches the CRC.
    pub(crate) fn crc_matches(&self, data: &[u8]) -> bool {
        crc32c::crc32c_append(self.header_crc, data) == self.crc
    }

    /// The raw records of a block whose CRC matched: `data` itself (stored) or `data`
    /// decompressed into `scratch` (exactly R bytes, never more).
    pub(crate) fn raw<'a>(
        &self,
        data: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], BlockError> {
        if self.codec == 0 {
            return Ok(data);
        }
        let raw_len = self.raw_len as usize;
        scratch.clear();
        scratch.resize(raw_len, 0);
        match lz4_flex::block::decompress_into(data, scratch) {
            Ok(n) if n == raw_len => Ok(&scratch[..]),
            Ok(_) => Err(BlockError::Corrupt("raw length mismatch".into())),
            Err(e) => Err(BlockError::Corrupt(format!("lz4: {e}"))),
        }
    }
}

/// Checks that `raw` holds exactly `records` well-formed records, without keeping them
/// (stops at the first error, or as soon as there are more records than claimed).
pub(crate) fn validate_records(raw: &[u8], records: u32) -> Result<(), BlockError> {
    let mut c = Cursor::new(raw);
    let mut st = DeltaState::default();
    let mut n = 0u32;
    while !c.is_empty() {
        decode_next(&mut c, &mut st)?;
        n = n
            .checked_add(1)
            .filter(|&n| n <= records)
            .ok_or_else(|| BlockError::Corrupt("record count mismatch".into()))?;
    }
    if n != records {
        return Err(BlockError::Corrupt("record count mismatch".into()));
    }
    Ok(())
}

/// Checks the framing and CRC of the block at the start of `bytes` without decoding its
/// records; returns its info and the raw (decompressed) records.
pub fn verify_block(bytes: &[u8]) -> Result<(BlockInfo, Vec<u8>), BlockError> {
    let h = BlockHeader::parse(bytes)?;
    let data = bytes
        .get(BLOCK_HEADER_LEN..BLOCK_HEADER_LEN + h.stored as usize)
        .ok_or(BlockError::Truncated)?;
    if !h.crc_matches(data) {
        return Err(BlockError::Checksum);
    }
    let mut scratch = Vec::new();
    let raw = h.raw(data, &mut scratch)?.to_vec();
    Ok((h.info(), raw))
}

/// Opens the block at the start of `bytes`: framing, CRC, decompression, records.
///
/// The records are checked first without being kept, so a block claiming more records
/// than it holds costs no allocation for them.
pub fn open_block(bytes: &[u8]) -> Result<(BlockInfo, Vec<Record>), BlockError> {
    let (info, raw) = verify_block(bytes)?;
    validate_records(&raw, info.records)?;
    let records = decode_records(&raw)?;
    Ok((info, records))
}

/// Decodes the raw (decompressed) records of one block.
pub fn decode_records(raw: &[u8]) -> Result<Vec<Record>, BlockError> {
    let mut c = Cursor::new(raw);
    let mut st = DeltaState::default();
    let mut out = Vec::new();
    while !c.is_empty() {
        out.push(decode_next(&mut c, &mut st)?.to_record());
    }
    Ok(out)
}

/// A decoded record whose payload still points into the block's raw bytes.
#[derive(Debug)]
pub(crate) enum RecordRef<'a> {
    /// A packet (payload borrowed).
    Packet {
        /// Stream.
        stream: StreamId,
        /// Arrival time.
        arrival_us: u64,
        /// RTP fields, `None` for RTCP.
        rtp: Option<RtpFields>,
        /// Payload.
        payload: &'a [u8],
    },
    /// An event.
    Event(EventRecord),
}

impl RecordRef<'_> {
    /// The owned record.
    pub(crate) fn to_record(&self) -> Record {
        match self {
            RecordRef::Packet {
                stream,
                arrival_us,
                rtp,
                payload,
            } => Record::Packet(PacketRecord {
                stream: *stream,
                arrival_us: *arrival_us,
                rtp: *rtp,
                payload: payload.to_vec(),
            }),
            RecordRef::Event(e) => Record::Event(e.clone()),
        }
    }
}

/// The decoder state of one block's records, kept between calls of [`decode_next`] so a
/// block can be decoded one record at a time.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordState(DeltaState);

impl RecordState {
    /// Decodes the record at `c` (which must not be empty).
    pub(crate) fn next<'a>(&mut self, c: &mut Cursor<'a>) -> Result<RecordRef<'a>, BlockError> {
        decode_next(c, &mut self.0)
    }
}

/// Decodes one record at the cursor (which must not be empty).
fn decode_next<'a>(c: &mut Cursor<'a>, st: &mut DeltaState) -> Result<RecordRef<'a>, BlockError> {
    let t = c.u8()?;
    let kind = t >> 6;
    if t & F_RESERVED != 0
        || (kind == KIND_RTCP && t & F_PREDICTED != 0)
        || (kind == KIND_EVENT && t & 0x3f != 0)
    {
        return Err(BlockError::Corrupt(format!("invalid record tag {t:#04x}")));
    }
    let mut stream = StreamId::from(t & 0x07);
    if kind != KIND_EVENT && stream == StreamId::from(STREAM_ESCAPE) {
        stream =
            StreamId::try_from(c.varint()?).map_err(|_| BlockError::Corrupt("stream id".into()))?;
    }
    match kind {
        KIND_RTP | KIND_RTCP => {
            let s = st.stream(stream);
            let arrival_us = s.arrival_from(c.zigzag()?);
            let rtp = if kind == KIND_RTP {
                let base = s.predicted();
                let f = if t & F_PREDICTED != 0 {
                    base.ok_or_else(|| BlockError::Corrupt("prediction without history".into()))?
                } else {
                    get_rtp_fields(c, &base.unwrap_or(ZERO_RTP))?
                };
                s.update_rtp(f);
                Some(f)
            } else {
                None
            };
            let len = if t & F_SAME_LEN != 0 {
                if !s.seen {
                    return Err(BlockError::Corrupt("length reuse without history".into()));
                }
                s.last_len
            } else {
                usize::try_from(c.varint()?).map_err(|_| BlockError::Corrupt("length".into()))?
            };
            s.seen = true;
            s.last_len = len;
            let payload = c.take(len)?;
            st.last_time = arrival_us;
            Ok(RecordRef::Packet {
                stream,
                arrival_us,
                rtp,
                payload,
            })
        }
        KIND_EVENT => {
            let at_us = st.last_time.wrapping_add(c.zigzag()? as u64);
            let event = decode_event(c)?;
            st.last_time = at_us;
            Ok(RecordRef::Event(EventRecord { at_us, event }))
        }
        _ => Err(BlockError::Corrupt(format!("unknown record kind {kind}"))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::tests::all_events;
    use crate::Event;

    /// xorshift bytes: incompressible like real G.711 noise.
    pub(crate) fn noise(seed: &mut u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect()
    }

    /// `secs` of a G.711 call: 2 RTP streams at 50 pps (marker on the first packet, sequence
    /// numbers and timestamps wrapping, an SSRC change on stream 0 after 6 s), RTCP every 5 s,
    /// a DTMF event, a pause and a resume.
    pub(crate) fn call_records(secs: u64, seed: u64) -> Vec<Record> {
        let mut seed = seed | 1;
        let mut out = vec![Record::Event(EventRecord {
            at_us: 0,
            event: Event::Started,
        })];
        for i in 0..secs * 50 {
            if i == 300 {
                out.push(Record::Event(EventRecord {
                    at_us: i * 20_000,
                    event: Event::SsrcChanged {
                        stream: 0,
                        old: 1000,
                        new: 77,
                    },
                }));
            }
            for s in [0u16, 2] {
                let ssrc = if s == 0 && i >= 300 {
                    77
                } else {
                    1000 + u32::from(s)
                };
                out.push(Record::Packet(PacketRecord {
                    stream: s,
                    arrival_us: i * 20_000 + u64::from(s) * 311 + (i * 7919 % 900),
                    rtp: Some(RtpFields {
                        marker: i == 0,
                        payload_type: 0,
                        sequence: (65_500 + i as u32) as u16,
                        timestamp: (u32::MAX - 1000).wrapping_add(i as u32 * 160),
                        ssrc,
                    }),
                    payload: noise(&mut seed, 160),
                }));
            }
            if i % 250 == 100 {
                out.push(Record::Packet(PacketRecord {
                    stream: 1,
                    arrival_us: i * 20_000 + 5,
                    rtp: None,
                    payload: vec![0x80, 201, 0, 1, 1, 2, 3, 4],
                }));
            }
            if i == 120 {
                out.push(Record::Event(EventRecord {
                    at_us: i * 20_000 + 6,
                    event: Event::Dtmf {
                        stream: 0,
                        event: 5,
                        duration: 800,
                        volume: 10,
                    },
                }));
            }
            if i == 200 {
                out.push(Record::Event(EventRecord {
                    at_us: i * 20_000 + 7,
                    event: Event::Paused,
                }));
                out.push(Record::Event(EventRecord {
                    at_us: i * 20_000 + 9,
                    event: Event::Resumed,
                }));
            }
        }
        out
    }

    pub(crate) fn push(b: &mut BlockBuilder, r: &Record) {
        match r {
            Record::Packet(p) => b.push_packet(p.stream, p.arrival_us, p.rtp.as_ref(), &p.payload),
            Record::Event(e) => b.push_event(e),
        }
    }

    fn round_trip(records: &[Record]) {
        let mut b = BlockBuilder::with_capacity(1 << 20);
        for r in records {
            push(&mut b, r);
        }
        let mut framed = Vec::new();
        seal(&b, &mut framed);
        let (info, back) = open_block(&framed).unwrap();
        assert_eq!(back, records);
        assert_eq!(info.len, framed.len());
        assert_eq!(info.records as usize, records.len());
    }

    #[test]
    fn every_record_kind_round_trips() {
        round_trip(&call_records(8, 42));
        let events: Vec<Record> = all_events()
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                Record::Event(EventRecord {
                    at_us: 1000 * i as u64,
                    event,
                })
            })
            .collect();
        round_trip(&events);
        // Large stream ids, empty payloads, time going backwards.
        round_trip(&[
            Record::Packet(PacketRecord {
                stream: 900,
                arrival_us: 50,
                rtp: None,
                payload: vec![],
            }),
            Record::Packet(PacketRecord {
                stream: 900,
                arrival_us: 10,
                rtp: None,
                payload: vec![1],
            }),
            Record::Event(EventRecord {
                at_us: 0,
                event: Event::Paused,
            }),
        ]);
    }

    #[test]
    fn stream_ids_across_inline_grown_and_untracked_state() {
        // Interleaved RTP streams on both sides of the inline/grown boundary and beyond the
        // tracked range; the same records again after `clear` give the same bytes.
        let ids = [0u16, 3, 4, 10, 63, 64, 300];
        let mut recs = Vec::new();
        for i in 0..20u16 {
            for &id in &ids {
                recs.push(Record::Packet(PacketRecord {
                    stream: id,
                    arrival_us: u64::from(i) * 20_000 + u64::from(id),
                    rtp: Some(RtpFields {
                        marker: false,
                        payload_type: 8,
                        sequence: i,
                        timestamp: u32::from(i) * 160,
                        ssrc: u32::from(id),
                    }),
                    payload: vec![id as u8; 160],
                }));
            }
        }
        round_trip(&recs);
        let mut b = BlockBuilder::with_capacity(1 << 16);
        let next = |id: u16| {
            Record::Packet(PacketRecord {
                stream: id,
                arrival_us: 20 * 20_000 + u64::from(id),
                rtp: Some(RtpFields {
                    marker: false,
                    payload_type: 8,
                    sequence: 20,
                    timestamp: 20 * 160,
                    ssrc: u32::from(id),
                }),
                payload: vec![id as u8; 160],
            })
        };
        for r in &recs {
            push(&mut b, r);
        }
        let first = b.raw().to_vec();
        let mut size = |id: u16| {
            let before = b.len();
            push(&mut b, &next(id));
            b.len() - before
        };
        // Tracked ids (inline or grown) are predicted: tag, residual, payload (ids from 7 on
        // add their escaped id); an untracked id carries its RTP fields and length as well.
        let (s3, s4, s10, s63, s64) = (size(3), size(4), size(10), size(63), size(64));
        assert_eq!(s3, 1 + 1 + 160);
        assert_eq!(s4, s3);
        assert_eq!(s10, s3 + 1);
        assert_eq!(s63, s10);
        assert!(s64 > s63 + 4, "{s64} vs {s63}");
        b.clear();
        for r in &recs {
            push(&mut b, r);
        }
        assert_eq!(b.raw(), &first[..]);
    }

    #[test]
    fn steady_stream_costs_few_bytes_per_packet() {
        let recs = call_records(10, 7);
        let mut b = BlockBuilder::with_capacity(1 << 20);
        let mut payload = 0;
        for r in &recs {
            push(&mut b, r);
            if let Record::Packet(p) = r {
                payload += p.payload.len();
            }
        }
        let per_packet = (b.len() - payload) as f64 / (recs.len() as f64);
        assert!(
            per_packet < 3.5,
            "{per_packet} bytes of overhead per record"
        );
    }

    #[test]
    fn push_within_capacity_does_not_reallocate() {
        let mut b = BlockBuilder::with_capacity(12 * 1024);
        let ptr = b.raw().as_ptr();
        let cap = b.capacity();
        for r in call_records(1, 3) {
            if let Record::Packet(p) = &r {
                if b.len() + p.payload.len() + 32 > b.capacity() {
                    break;
                }
            }
            push(&mut b, &r);
        }
        assert!(b.len() > 8000);
        assert_eq!((b.raw().as_ptr(), b.capacity()), (ptr, cap));
        b.clear();
        assert!(b.is_empty() && b.capacity() == cap && b.first_us().is_none());
    }

    #[test]
    fn bit_flips_are_detected() {
        let mut b = BlockBuilder::with_capacity(1 << 16);
        for r in call_records(1, 9) {
            push(&mut b, &r);
        }
        let mut framed = Vec::new();
        seal(&b, &mut framed);
        for pos in (4..framed.len()).step_by(7) {
            for bit in [0, 3, 7] {
                let mut f = framed.clone();
                f[pos] ^= 1 << bit;
                assert!(open_block(&f).is_err(), "flip at {pos}.{bit} undetected");
            }
        }
    }

    #[test]
    fn truncation_is_reported_as_such() {
        let mut b = BlockBuilder::with_capacity(4096);
        for r in call_records(1, 5).iter().take(10) {
            push(&mut b, r);
        }
        let mut framed = Vec::new();
        seal(&b, &mut framed);
        for cut in 0..framed.len() {
            assert_eq!(
                open_block(&framed[..cut]).unwrap_err(),
                BlockError::Truncated,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn incompressible_blocks_are_stored() {
        let mut seed = 11;
        let mut b = BlockBuilder::with_capacity(4096);
        b.push_packet(0, 0, None, &noise(&mut seed, 3000));
        let mut framed = Vec::new();
        seal(&b, &mut framed);
        assert_eq!(framed[4], 0, "stored, not lz4");
        assert!(framed.len() <= b.len() + BLOCK_HEADER_LEN);
        assert_eq!(open_block(&framed).unwrap().1.len(), 1);
    }

    /// Any record; small value ranges make predicted RTP fields and repeated lengths
    /// frequent, wide ones cover untracked stream ids and wrapping times.
    fn arb_record() -> impl proptest::strategy::Strategy<Value = Record> {
        use proptest::prelude::*;
        let rtp = prop_oneof![
            (any::<bool>(), 0u8..3, 0u16..4, 0u32..4, 0u32..3).prop_map(
                |(marker, payload_type, sequence, timestamp, ssrc)| (
                    marker,
                    payload_type,
                    sequence,
                    timestamp * 160,
                    ssrc
                )
            ),
            any::<(bool, u8, u16, u32, u32)>(),
        ];
        prop_oneof![
            4 => (
                prop_oneof![0u16..10, any::<u16>()],
                prop_oneof![0u64..200_000, any::<u64>()],
                proptest::option::of(rtp),
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..300),
                    Just(vec![0xd5; 160])
                ],
            )
                .prop_map(|(stream, arrival_us, rtp, payload)| Record::Packet(
                    PacketRecord {
                        stream,
                        arrival_us,
                        rtp: rtp.map(|(marker, payload_type, sequence, timestamp, ssrc)| {
                            RtpFields {
                                marker,
                                payload_type,
                                sequence,
                                timestamp,
                                ssrc,
                            }
                        }),
                        payload,
                    }
                )),
            1 => (any::<u64>(), 0..all_events().len()).prop_map(|(at_us, i)| {
                Record::Event(EventRecord {
                    at_us,
                    event: all_events()[i].clone(),
                })
            }),
        ]
    }

    /// A packet stream in which every RTP field follows the prediction after the first two
    /// packets: the steady state is the tag byte and the arrival residual only.
    #[test]
    fn predicted_packets_cost_the_tag_and_the_residual() {
        let mut b = BlockBuilder::with_capacity(1 << 16);
        let mut sizes = Vec::new();
        for i in 0..100u16 {
            let before = b.len();
            b.push_packet(
                1,
                u64::from(i) * 20_000 + u64::from(i % 3) * 40,
                Some(&RtpFields {
                    marker: i == 0,
                    payload_type: 8,
                    sequence: i.wrapping_add(65_530),
                    timestamp: u32::from(i) * 160,
                    ssrc: 9,
                }),
                &[0xd5; 160],
            );
            sizes.push(b.len() - before - 160);
        }
        assert!(sizes[2..].iter().all(|&n| n <= 3), "{sizes:?}");
        let mut framed = Vec::new();
        seal(&b, &mut framed);
        assert_eq!(open_block(&framed).unwrap().1.len(), 100);
    }

    /// The worst-case record header (escaped stream id, wild times, every RTP field
    /// explicit) still fits the 32 bytes `push_packet` promises not to allocate for.
    #[test]
    fn worst_case_headers_do_not_reallocate() {
        let mut b = BlockBuilder::with_capacity(8192);
        let (ptr, cap) = (b.raw().as_ptr(), b.capacity());
        let mut seed = 77u64;
        let mut pushed = Vec::new();
        loop {
            let r = noise(&mut seed, 16);
            let word = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap());
            let len = (word(0) % 200) as usize;
            if b.len() + len + 32 > b.capacity() {
                break;
            }
            let rtp = RtpFields {
                marker: true,
                payload_type: r[3],
                sequence: u16::from_le_bytes([r[4], r[5]]),
                timestamp: word(8) as u32,
                ssrc: (word(8) >> 32) as u32,
            };
            let stream = u16::MAX - u16::from(r[2] % 4);
            let arrival = word(8).rotate_left(u32::from(r[1]));
            let payload = vec![r[0]; len];
            b.push_packet(stream, arrival, Some(&rtp), &payload);
            pushed.push(Record::Packet(PacketRecord {
                stream,
                arrival_us: arrival,
                rtp: Some(rtp),
                payload,
            }));
        }
        assert!(pushed.len() > 20);
        assert_eq!((b.raw().as_ptr(), b.capacity()), (ptr, cap));
        assert_eq!(decode_records(b.raw()).unwrap(), pushed);
    }

    /// Reserved tag and RTP-field bits, and state-dependent flags without state, are
    /// rejected rather than misread.
    #[test]
    fn invalid_tags_are_corrupt() {
        for raw in [
            &[0x08u8, 0, 0][..],     // reserved tag bit
            &[0x3f << 6][..],        // kind 3
            &[0x60, 0, 0][..],       // predicted RTCP
            &[0x81, 0, 0][..],       // event with stream bits
            &[0x20, 0, 0][..],       // predicted without history
            &[0x50, 0][..],          // same length without history
            &[0x00, 0, 0x10, 0][..], // reserved RTP field bits
        ] {
            assert!(
                matches!(decode_records(raw), Err(BlockError::Corrupt(_))),
                "{raw:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_records_round_trip(records in proptest::collection::vec(arb_record(), 0..60)) {
            round_trip(&records);
        }

        #[test]
        fn decoding_never_panics(data: Vec<u8>) {
            let _ = decode_records(&data);
            let _ = open_block(&data);
            let mut framed = BLOCK_MAGIC.to_vec();
            framed.extend_from_slice(&data);
            let _ = open_block(&framed);
        }

        /// Arbitrary data behind a valid header and CRC (so decompression and record
        /// decoding see it) is an error or a block, never a panic.
        #[test]
        fn garbage_with_a_valid_crc_never_panics(
            data: Vec<u8>, codec in 0u8..3, raw_len in 0u32..100_000, records: u32,
        ) {
            let mut h = vec![codec];
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&raw_len.to_le_bytes());
            h.extend_from_slice(&records.to_le_bytes());
            h.extend_from_slice(&[0; 16]);
            let crc = crc32c::crc32c_append(crc32c::crc32c(&h), &data);
            let mut framed = BLOCK_MAGIC.to_vec();
            framed.extend_from_slice(&h);
            framed.extend_from_slice(&crc.to_le_bytes());
            framed.extend_from_slice(&data);
            let _ = open_block(&framed);
        }
    }
}
