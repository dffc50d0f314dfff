//! File header, footer and event encodings, and the varint primitives everything uses.
//!
//! Layout of a file: `FILE_MAGIC`, version (u16 LE), header length (u32 LE), header body,
//! CRC32C of the body (u32 LE); then blocks ([`crate::block`]); then, when the file was
//! finished, `FOOTER_MAGIC`, footer body, and a 16-byte trailer: body length (u32 LE), CRC32C
//! of the body (u32 LE), `END_MAGIC`. A reader checks the trailer first, so a file cut short
//! simply has no footer. Integers inside bodies are LEB128 varints (signed ones zigzag);
//! strings and byte strings are varint-length-prefixed. See `docs/recording-format.md`.

use crate::{
    BlockIndexEntry, CodecInfo, Completeness, Component, Event, FileHeader, Footer, PartyInfo,
    StopReason, StreamInfo, StreamStats,
};

/// First bytes of every recording file (the `\r\n\x1a` catches text-mode mangling).
pub const FILE_MAGIC: [u8; 8] = *b"LCREC\r\n\x1a";
/// Format version this crate writes and reads.
pub const VERSION: u16 = 1;
/// Start of the footer.
pub const FOOTER_MAGIC: [u8; 4] = *b"LCRF";
/// Last bytes of a finished file.
pub const END_MAGIC: [u8; 8] = *b"LCREND\r\n";
/// Bytes after the footer body: length, CRC, end magic.
pub const TRAILER_LEN: usize = 16;
/// Largest header or footer body accepted (bounds allocation on hostile input).
pub const MAX_META_LEN: usize = 16 << 20;
/// Items reserved up front for a decoded list (parties, streams, codecs, index entries);
/// longer lists grow as they are decoded, so a count that claims more items than follow
/// costs no allocation.
const PREALLOC_ITEMS: usize = 16;

/// Why a header, footer or event could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The input ended inside a structure.
    #[error("unexpected end of data")]
    Truncated,
    /// The file does not start with the recording magic.
    #[error("not a linecord recording (bad magic)")]
    BadMagic,
    /// The file was written by a newer format version.
    #[error("unsupported recording format version {0}")]
    UnsupportedVersion(u16),
    /// A checksum did not match.
    #[error("checksum mismatch in {0}")]
    Checksum(&'static str),
    /// A field holds an impossible value.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

// ---- primitives -------------------------------------------------------------------------

/// Appends `v` as an LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a signed value zigzag-encoded.
pub(crate) fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_bytes(out, s.as_bytes());
        }
        None => out.push(0),
    }
}

/// A bounds-checked reader over a byte slice.
pub(crate) struct Cursor<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        let b = *self.buf.get(self.pos).ok_or(FormatError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n).ok_or(FormatError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(FormatError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn varint(&mut self) -> Result<u64, FormatError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return Err(FormatError::Invalid("varint"));
                }
                return Ok(v);
            }
        }
        Err(FormatError::Invalid("varint"))
    }

    pub(crate) fn zigzag(&mut self) -> Result<i64, FormatError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn small<T: TryFrom<u64>>(&mut self, what: &'static str) -> Result<T, FormatError> {
        T::try_from(self.varint()?).map_err(|_| FormatError::Invalid(what))
    }

    fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| FormatError::Truncated)?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, FormatError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| FormatError::Invalid("UTF-8 text"))
    }

    fn opt_string(&mut self) -> Result<Option<String>, FormatError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(FormatError::Invalid("optional marker")),
        }
    }

    /// A count of items that each take at least one byte (bounds preallocation).
    fn count(&mut self) -> Result<usize, FormatError> {
        let n = self.varint()?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(FormatError::Truncated);
        }
        Ok(n as usize)
    }
}

// ---- streams and events -----------------------------------------------------------------

fn put_stream(out: &mut Vec<u8>, s: &StreamInfo) {
    put_varint(out, u64::from(s.id));
    out.push(s.party);
    put_varint(out, u64::from(s.media_index));
    out.push(match s.component {
        Component::Rtp => 0,
        Component::Rtcp => 1,
    });
    put_bytes(out, s.source.as_bytes());
    put_bytes(out, s.destination.as_bytes());
    put_varint(out, s.codecs.len() as u64);
    for c in &s.codecs {
        out.push(c.payload_type);
        put_bytes(out, c.name.as_bytes());
        put_varint(out, u64::from(c.clock_rate));
        out.push(c.channels);
    }
}

fn get_stream(c: &mut Cursor<'_>) -> Result<StreamInfo, FormatError> {
    let id = c.small("stream id")?;
    let party = c.u8()?;
    let media_index = c.small("media index")?;
    let component = match c.u8()? {
        0 => Component::Rtp,
        1 => Component::Rtcp,
        _ => return Err(FormatError::Invalid("component")),
    };
    let source = c.string()?;
    let destination = c.string()?;
    let n = c.count()?;
    let mut codecs = Vec::with_capacity(n.min(PREALLOC_ITEMS));
    for _ in 0..n {
        codecs.push(CodecInfo {
            payload_type: c.u8()?,
            name: c.string()?,
            clock_rate: c.small("clock rate")?,
            channels: c.u8()?,
        });
    }
    Ok(StreamInfo {
        id,
        party,
        media_index,
        component,
        source,
        destination,
        codecs,
    })
}

/// Appends an event body (type byte and fields).
pub fn encode_event(e: &Event, out: &mut Vec<u8>) {
    match e {
        Event::Started => out.push(0),
        Event::Paused => out.push(1),
        Event::Resumed => out.push(2),
        Event::Stopped(r) => {
            out.push(3);
            out.push(match r {
                StopReason::Stopped => 0,
                StopReason::Deleted => 1,
                StopReason::Timeout => 2,
                StopReason::Shutdown => 3,
            });
        }
        Event::StreamAdded(s) => {
            out.push(4);
            put_stream(out, s);
        }
        Event::StreamChanged(s) => {
            out.push(5);
            put_stream(out, s);
        }
        Event::SsrcChanged { stream, old, new } => {
            out.push(6);
            put_varint(out, u64::from(*stream));
            out.extend_from_slice(&old.to_le_bytes());
            out.extend_from_slice(&new.to_le_bytes());
        }
        Event::Dtmf {
            stream,
            event,
            duration,
            volume,
        } => {
            out.push(7);
            put_varint(out, u64::from(*stream));
            out.push(*event);
            out.extend_from_slice(&duration.to_le_bytes());
            out.push(*volume);
        }
        Event::DataLost { packets } => {
            out.push(8);
            put_varint(out, *packets);
        }
    }
}

/// Decodes an event body written by [`encode_event`].
pub(crate) fn decode_event(c: &mut Cursor<'_>) -> Result<Event, FormatError> {
    Ok(match c.u8()? {
        0 => Event::Started,
        1 => Event::Paused,
        2 => Event::Resumed,
        3 => Event::Stopped(match c.u8()? {
            0 => StopReason::Stopped,
            1 => StopReason::Deleted,
            2 => StopReason::Timeout,
            3 => StopReason::Shutdown,
            _ => return Err(FormatError::Invalid("stop reason")),
        }),
        4 => Event::StreamAdded(get_stream(c)?),
        5 => Event::StreamChanged(get_stream(c)?),
        6 => Event::SsrcChanged {
            stream: c.small("stream id")?,
            old: c.u32()?,
            new: c.u32()?,
        },
        7 => Event::Dtmf {
            stream: c.small("stream id")?,
            event: c.u8()?,
            duration: c.u16()?,
            volume: c.u8()?,
        },
        8 => Event::DataLost {
            packets: c.varint()?,
        },
        _ => return Err(FormatError::Invalid("event type")),
    })
}

// ---- header -----------------------------------------------------------------------------

/// Appends the file header (magic, version, length, body, CRC).
pub fn encode_header(h: &FileHeader, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(256);
    put_bytes(&mut body, h.recording_id.as_bytes());
    put_bytes(&mut body, h.call_id.as_bytes());
    put_varint(&mut body, h.start_unix_ms);
    put_opt_str(&mut body, h.metadata.as_deref());
    put_varint(&mut body, h.parties.len() as u64);
    for p in &h.parties {
        put_bytes(&mut body, p.tag.as_bytes());
        put_opt_str(&mut body, p.label.as_deref());
        put_bytes(&mut body, &p.sdp);
    }
    put_varint(&mut body, h.streams.len() as u64);
    for s in &h.streams {
        put_stream(&mut body, s);
    }
    out.extend_from_slice(&FILE_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
}

/// Decodes the file header at the start of `bytes`; returns it and its length.
pub fn decode_header(bytes: &[u8]) -> Result<(FileHeader, usize), FormatError> {
    let mut c = Cursor::new(bytes);
    if c.take(8).map_err(|_| FormatError::BadMagic)? != FILE_MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = c.u16()?;
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let len = c.u32()? as usize;
    if len > MAX_META_LEN {
        return Err(FormatError::Invalid("header length"));
    }
    let body = c.take(len)?;
    let crc = c.u32()?;
    if crc32c::crc32c(body) != crc {
        return Err(FormatError::Checksum("file header"));
    }
    let mut b = Cursor::new(body);
    let recording_id = b.string()?;
    let call_id = b.string()?;
    let start_unix_ms = b.varint()?;
    let metadata = b.opt_string()?;
    let n = b.count()?;
    let mut parties = Vec::with_capacity(n.min(PREALLOC_ITEMS));
    for _ in 0..n {
        parties.push(PartyInfo {
            tag: b.string()?,
            label: b.opt_string()?,
            sdp: b.bytes()?.to_vec(),
        });
    }
    let n = b.count()?;
    let mut streams = Vec::with_capacity(n.min(PREALLOC_ITEMS));
    for _ in 0..n {
        streams.push(get_stream(&mut b)?);
    }
    Ok((
        FileHeader {
            recording_id,
            call_id,
            start_unix_ms,
            metadata,
            parties,
            streams,
        },
        c.pos,
    ))
}

// ---- footer -----------------------------------------------------------------------------

/// Appends the footer (magic, body, trailer).
pub fn encode_footer(f: &Footer, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(64 + f.index.len() * 12 + f.streams.len() * 24);
    body.push(match f.completeness {
        Completeness::Complete => 0,
        Completeness::Incomplete => 1,
        Completeness::Recovered => 2,
    });
    put_varint(&mut body, f.end_unix_ms);
    put_varint(&mut body, f.packets_lost);
    put_varint(&mut body, f.index.len() as u64);
    for e in &f.index {
        put_varint(&mut body, e.offset);
        put_varint(&mut body, e.first_us);
        put_varint(&mut body, e.last_us);
        put_varint(&mut body, u64::from(e.records));
    }
    put_varint(&mut body, f.streams.len() as u64);
    for s in &f.streams {
        put_varint(&mut body, u64::from(s.stream));
        put_varint(&mut body, s.packets);
        put_varint(&mut body, s.payload_bytes);
        put_zigzag(&mut body, s.lost);
        put_varint(&mut body, u64::from(s.jitter));
        put_varint(&mut body, s.first_us);
        put_varint(&mut body, s.last_us);
    }
    out.extend_from_slice(&FOOTER_MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&END_MAGIC);
}

fn decode_footer_body(body: &[u8]) -> Result<Footer, FormatError> {
    let mut c = Cursor::new(body);
    let completeness = match c.u8()? {
        0 => Completeness::Complete,
        1 => Completeness::Incomplete,
        2 => Completeness::Recovered,
        _ => return Err(FormatError::Invalid("completeness")),
    };
    let end_unix_ms = c.varint()?;
    let packets_lost = c.varint()?;
    let n = c.count()?;
    let mut index = Vec::with_capacity(n.min(PREALLOC_ITEMS));
    for _ in 0..n {
        index.push(BlockIndexEntry {
            offset: c.varint()?,
            first_us: c.varint()?,
            last_us: c.varint()?,
            records: c.small("record count")?,
        });
    }
    let n = c.count()?;
    let mut streams = Vec::with_capacity(n.min(PREALLOC_ITEMS));
    for _ in 0..n {
        streams.push(StreamStats {
            stream: c.small("stream id")?,
            packets: c.varint()?,
            payload_bytes: c.varint()?,
            lost: c.zigzag()?,
            jitter: c.small("jitter")?,
            first_us: c.varint()?,
            last_us: c.varint()?,
        });
    }
    Ok(Footer {
        completeness,
        end_unix_ms,
        packets_lost,
        index,
        streams,
    })
}

/// Finds and decodes the footer at the end of `file`; returns the footer and the offset
/// where it starts (= the end of the block area).
///
/// `Ok(None)` when the file has no valid footer: no end magic, a length that does not fit,
/// no footer magic where the length points, or a CRC mismatch (still being written, cut
/// short, or damaged). An error only when the footer passes its CRC but its body does not
/// decode (a writer bug or a newer, incompatible writer).
pub fn decode_footer_at_end(file: &[u8]) -> Result<Option<(Footer, usize)>, FormatError> {
    let Some(trailer_at) = file.len().checked_sub(TRAILER_LEN) else {
        return Ok(None);
    };
    let mut t = Cursor::new(&file[trailer_at..]);
    let len = t.u32()? as usize;
    let crc = t.u32()?;
    if t.take(8)? != END_MAGIC {
        return Ok(None);
    }
    let Some(body_at) = trailer_at.checked_sub(len) else {
        return Ok(None);
    };
    let Some(start) = body_at.checked_sub(FOOTER_MAGIC.len()) else {
        return Ok(None);
    };
    if file[start..body_at] != FOOTER_MAGIC {
        return Ok(None);
    }
    let body = &file[body_at..trailer_at];
    if crc32c::crc32c(body) != crc {
        return Ok(None);
    }
    decode_footer_body(body).map(|f| Some((f, start)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_stream(id: u16) -> StreamInfo {
        StreamInfo {
            id,
            party: (id / 2 % 2) as u8,
            media_index: id / 4,
            component: if id.is_multiple_of(2) {
                Component::Rtp
            } else {
                Component::Rtcp
            },
            source: "[2001:db8::7]:4000".into(),
            destination: "198.18.0.1:30000".into(),
            codecs: vec![
                CodecInfo {
                    payload_type: 0,
                    name: "PCMU".into(),
                    clock_rate: 8000,
                    channels: 1,
                },
                CodecInfo {
                    payload_type: 101,
                    name: "telephone-event".into(),
                    clock_rate: 8000,
                    channels: 1,
                },
            ],
        }
    }

    pub(crate) fn sample_header() -> FileHeader {
        FileHeader {
            recording_id: "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6071".into(),
            call_id: "a84b4c76e66710@pc33.example.com".into(),
            start_unix_ms: 1_795_564_800_123,
            metadata: Some("agent=Zoë;queue=売上".into()),
            parties: vec![
                PartyInfo {
                    tag: "1928301774".into(),
                    label: Some("caller".into()),
                    sdp: b"v=0\r\n".to_vec(),
                },
                PartyInfo::default(),
            ],
            streams: (0..4).map(sample_stream).collect(),
        }
    }

    pub(crate) fn all_events() -> Vec<Event> {
        vec![
            Event::Started,
            Event::Paused,
            Event::Resumed,
            Event::Stopped(StopReason::Stopped),
            Event::Stopped(StopReason::Deleted),
            Event::Stopped(StopReason::Timeout),
            Event::Stopped(StopReason::Shutdown),
            Event::StreamAdded(sample_stream(5)),
            Event::StreamChanged(sample_stream(6)),
            Event::SsrcChanged {
                stream: 2,
                old: 1,
                new: u32::MAX,
            },
            Event::Dtmf {
                stream: 0,
                event: 11,
                duration: 1600,
                volume: 10,
            },
            Event::DataLost { packets: 1 << 40 },
        ]
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(Cursor::new(&b).varint(), Ok(v));
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -20_000] {
            let mut b = Vec::new();
            put_zigzag(&mut b, v);
            assert_eq!(Cursor::new(&b).zigzag(), Ok(v));
        }
        assert!(Cursor::new(&[0xff; 11]).varint().is_err());
        assert_eq!(Cursor::new(&[0x80]).varint(), Err(FormatError::Truncated));
    }

    #[test]
    fn header_round_trip_and_errors() {
        let h = sample_header();
        let mut b = Vec::new();
        encode_header(&h, &mut b);
        let (back, used) = decode_header(&b).unwrap();
        assert_eq!((back, used), (h.clone(), b.len()));
        let empty = FileHeader {
            recording_id: String::new(),
            call_id: String::new(),
            start_unix_ms: 0,
            metadata: None,
            parties: vec![],
            streams: vec![],
        };
        let mut e = Vec::new();
        encode_header(&empty, &mut e);
        assert_eq!(decode_header(&e).unwrap().0, empty);
        for cut in 0..b.len() {
            assert!(decode_header(&b[..cut]).is_err());
        }
        let mut v2 = b.clone();
        v2[8] = 2;
        assert_eq!(decode_header(&v2), Err(FormatError::UnsupportedVersion(2)));
        let mut flip = b.clone();
        flip[20] ^= 1;
        assert_eq!(
            decode_header(&flip),
            Err(FormatError::Checksum("file header"))
        );
        assert_eq!(decode_header(b"RIFF...."), Err(FormatError::BadMagic));
    }

    #[test]
    fn events_round_trip() {
        for e in all_events() {
            let mut b = Vec::new();
            encode_event(&e, &mut b);
            let mut c = Cursor::new(&b);
            assert_eq!(decode_event(&mut c).unwrap(), e);
            assert!(c.is_empty());
        }
        assert!(decode_event(&mut Cursor::new(&[99])).is_err());
    }

    #[test]
    fn footer_round_trip_and_detection() {
        let f = Footer {
            completeness: Completeness::Recovered,
            end_unix_ms: 1_795_564_900_000,
            packets_lost: 3,
            index: vec![BlockIndexEntry {
                offset: 123,
                first_us: 5,
                last_us: 500_000,
                records: 51,
            }],
            streams: vec![StreamStats {
                stream: 2,
                packets: 50,
                payload_bytes: 8000,
                lost: -1,
                jitter: 7,
                first_us: 5,
                last_us: 500_000,
            }],
        };
        let mut file = b"some blocks before".to_vec();
        let start = file.len();
        encode_footer(&f, &mut file);
        assert_eq!(decode_footer_at_end(&file).unwrap(), Some((f, start)));
        for cut in 0..file.len() {
            assert!(!matches!(decode_footer_at_end(&file[..cut]), Ok(Some(_))));
        }
        // Every bit flip in the footer (magic, body or trailer) makes it absent.
        for pos in start..file.len() {
            for bit in 0..8 {
                let mut flip = file.clone();
                flip[pos] ^= 1 << bit;
                assert_eq!(decode_footer_at_end(&flip), Ok(None), "flip at {pos}.{bit}");
            }
        }
        assert_eq!(decode_footer_at_end(b"short"), Ok(None));
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(data: Vec<u8>) {
            let _ = decode_header(&data);
            let _ = decode_footer_at_end(&data);
            let _ = decode_event(&mut Cursor::new(&data));
        }
    }
}
