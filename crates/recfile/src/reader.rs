//! Reading recordings, whole or damaged, and what recovery needs.
//!
//! [`Recording::open`] (a file, read block by block as needed) and
//! [`Recording::from_bytes`] (a recording held in memory) check the header, look for the
//! footer at the end, then walk the blocks: every block whose framing, CRC and records check
//! out is kept; a damaged block is listed in `bad_blocks` and the walk resynchronises at the
//! next valid block; bytes at the end that are neither a complete block nor a footer (an
//! interrupted write) are counted in `tail_bytes`. [`Recording::iter_records`] and
//! [`Recording::visit_records`] then decode the kept blocks one at a time, so memory stays
//! at one block (≤ 16 MiB raw) whatever the length of the call. [`recovery_footer`] builds
//! the footer a crashed file gets.
//!
//! **Cost.** The walk is linear in the size of the file whatever its content (the rules are
//! in `docs/recording-format.md`, "Reading and recovery"): it passes over the block area
//! once, feeding every byte through CRC32C once and keeping a running CRC from which the CRC
//! of any span follows arithmetically (module `crc`); a block magic starts a *candidate*
//! whose CRC is checked when the pass reaches the end it claims, at a constant cost however
//! long the claimed span and however many candidates overlap. Only the first candidate that
//! the walk needs is decompressed and decoded; candidates that pass their CRC yet do not
//! decode (crafted data only: a CRC mismatch is what damage looks like) may cost at most
//! [`DECODE_FAILURE_BUDGET_FACTOR`] × the area plus one block in total, after which further
//! such candidates count as damaged without being decoded. At most [`MAX_PENDING`]
//! candidates wait for their end at any time (more can only be crafted: a real file has one
//! block in flight). [`ScanWork`] counts what the walk did.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::path::Path;

use crate::block::{
    validate_records, BlockError, BlockHeader, BlockInfo, RecordState, BLOCK_HEADER_LEN,
    BLOCK_MAGIC,
};
use crate::format::{
    decode_footer_at_end, decode_header, Cursor, FormatError, MAX_META_LEN, TRAILER_LEN,
};
use crate::{
    BlockIndexEntry, CodecInfo, Completeness, Event, FileHeader, Footer, Record, StreamId,
    StreamInfo, StreamStats,
};

/// Bytes the walk reads (and checksums) per step.
const PASS_CHUNK: u64 = 64 * 1024;

/// Most candidate blocks waiting for the pass to reach their end at one time. A file the
/// recorder wrote has one (the block being checked); more overlapping candidates can only
/// be crafted, and those beyond the limit are not examined (each costs ~150 bytes of
/// memory while it waits: the limit bounds that to ~20 MiB).
pub const MAX_PENDING: usize = 1 << 17;

/// Candidates that pass their CRC but whose records do not decode may cost at most this
/// many times the block area's length (plus one block) of decoding in total.
pub const DECODE_FAILURE_BUDGET_FACTOR: u64 = 2;

/// Why a recording could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file header is invalid (not a recording, another version, truncated, bad CRC).
    #[error("{0}")]
    Format(#[from] FormatError),
    /// A block listed as valid did not open again (the file changed since it was opened).
    #[error("{0}")]
    Block(#[from] BlockError),
}

/// What the block walk did, for operators and for tests of its cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanWork {
    /// Bytes fed through CRC32C: each byte of the block area at most once, plus the 29
    /// checked header bytes of every candidate block.
    pub checksummed: u64,
    /// Bytes decompressed and record bytes decoded while validating blocks.
    pub decoded: u64,
    /// Block magics found (each examined once).
    pub candidates: u64,
    /// Candidates not examined because [`MAX_PENDING`] were already waiting.
    pub candidates_skipped: u64,
    /// Bytes of decoding spent on candidates that passed their CRC but did not decode.
    pub decode_failures: u64,
    /// Whether the budget for those ran out (the rest counted as damaged undecoded).
    pub budget_exhausted: bool,
}

impl ScanWork {
    /// Work units per candidate besides its header bytes (queue and arithmetic).
    pub const PER_CANDIDATE: u64 = 16;

    /// Everything in one number: bytes checksummed + bytes decoded +
    /// [`Self::PER_CANDIDATE`] per candidate.
    pub fn total(&self) -> u64 {
        self.checksummed
            .saturating_add(self.decoded)
            .saturating_add(self.candidates.saturating_mul(Self::PER_CANDIDATE))
    }
}

/// Where a recording's bytes are.
enum Source {
    /// In memory.
    Memory(Vec<u8>),
    /// A file, read with positioned reads (its length as found at open).
    File { file: File, len: u64 },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
            Source::File { len, .. } => write!(f, "File({len} bytes)"),
        }
    }
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Memory(b) => b.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    /// Exactly `len` bytes at `offset` (an error past the end).
    fn read<'a>(
        &'a self,
        offset: u64,
        len: usize,
        scratch: &'a mut Vec<u8>,
    ) -> io::Result<&'a [u8]> {
        let eof = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the recording",
            )
        };
        match self {
            Source::Memory(b) => {
                let start = usize::try_from(offset).map_err(|_| eof())?;
                let end = start.checked_add(len).ok_or_else(eof)?;
                b.get(start..end).ok_or_else(eof)
            }
            Source::File { file, len: size } => {
                if offset.checked_add(len as u64).is_none_or(|end| end > *size) {
                    return Err(eof());
                }
                scratch.clear();
                scratch.resize(len, 0);
                read_exact_at(file, scratch, offset)?;
                Ok(&scratch[..])
            }
        }
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// An opened recording.
#[derive(Debug)]
pub struct Recording {
    /// The file header.
    pub header: FileHeader,
    /// The footer, when the file was finished.
    pub footer: Option<Footer>,
    /// Valid blocks in file order (`offset` = file offset).
    pub blocks: Vec<BlockInfo>,
    /// Damaged blocks: file offset and what is wrong.
    pub bad_blocks: Vec<(u64, BlockError)>,
    /// Bytes after the last valid block that are neither a block nor the footer.
    pub tail_bytes: u64,
    /// File offset just after the last valid block (where a recovery footer goes).
    pub data_end: u64,
    /// What the block walk cost.
    pub scan_work: ScanWork,
    source: Source,
}

/// The header at the start of `src` and its length.
fn read_header(src: &Source) -> Result<(FileHeader, usize), ReadError> {
    let mut scratch = Vec::new();
    let prefix_len = src.len().min(14) as usize;
    let prefix = src.read(0, prefix_len, &mut scratch)?;
    if prefix_len < 14 {
        return Err(decode_header(prefix)
            .err()
            .unwrap_or(FormatError::Truncated)
            .into());
    }
    let body = u32::from_le_bytes([prefix[10], prefix[11], prefix[12], prefix[13]]) as usize;
    if body > MAX_META_LEN {
        // Magic and version errors first, as `decode_header` orders them.
        return Err(decode_header(prefix)
            .err()
            .unwrap_or(FormatError::Truncated)
            .into());
    }
    let total = (14 + body + 4).min(usize::try_from(src.len()).unwrap_or(usize::MAX));
    let bytes = src.read(0, total, &mut scratch)?;
    Ok(decode_header(bytes)?)
}

/// The footer at the end of `src` (at or after `header_len`) and where it starts.
fn read_footer(src: &Source, header_len: usize) -> Result<Option<(Footer, u64)>, ReadError> {
    let len = src.len();
    let Some(trailer_at) = len.checked_sub(TRAILER_LEN as u64) else {
        return Ok(None);
    };
    let mut scratch = Vec::new();
    let trailer = src.read(trailer_at, TRAILER_LEN, &mut scratch)?;
    let body = u64::from(u32::from_le_bytes([
        trailer[0], trailer[1], trailer[2], trailer[3],
    ]));
    if body > MAX_META_LEN as u64 {
        return Ok(None);
    }
    let Some(start) = trailer_at.checked_sub(body + 4) else {
        return Ok(None);
    };
    if start < header_len as u64 {
        return Ok(None);
    }
    let bytes = src.read(start, (len - start) as usize, &mut scratch)?;
    // A footer whose CRC matches but whose body does not decode is treated as absent.
    Ok(decode_footer_at_end(bytes)
        .ok()
        .flatten()
        .filter(|(_, at)| *at == 0)
        .map(|(f, _)| (f, start)))
}

/// A candidate block waiting for the pass.
#[derive(Debug, Clone, Copy)]
struct Pending {
    header: BlockHeader,
    /// Offset just after its claimed data.
    end: u64,
    state: PendingState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingState {
    /// The pass has not reached the start of its data yet.
    AwaitStart,
    /// The pass has not reached its end yet; the running CRC must then equal this.
    AwaitEnd(u32),
    /// Its CRC matched; its records are not checked yet.
    CrcOk,
}

/// The one pass over the block area (see the module documentation).
struct Scanner<'s> {
    src: &'s Source,
    /// End of the block area.
    end: u64,
    /// Everything before this offset has been checksummed and searched for magics.
    pass: u64,
    /// Where the running CRC starts.
    base: u64,
    /// CRC32C of `base..pass`.
    crc: u32,
    /// Candidates found and not yet rejected, by offset.
    pending: BTreeMap<u64, Pending>,
    /// Candidates whose data start the pass has not reached, in order.
    starts: VecDeque<u64>,
    /// (claimed end, offset) of candidates waiting for their end.
    ends: BinaryHeap<Reverse<(u64, u64)>>,
    work: ScanWork,
    /// Decoding that failed candidates may still cost.
    budget: u64,
    chunk: Vec<u8>,
    data: Vec<u8>,
    raw: Vec<u8>,
}

impl<'s> Scanner<'s> {
    fn new(src: &'s Source, start: u64, end: u64) -> Self {
        Scanner {
            src,
            end,
            pass: start,
            base: start,
            crc: 0,
            pending: BTreeMap::new(),
            starts: VecDeque::new(),
            ends: BinaryHeap::new(),
            work: ScanWork::default(),
            budget: (end - start)
                .saturating_mul(DECODE_FAILURE_BUDGET_FACTOR)
                .saturating_add(1 << 20),
            chunk: Vec::new(),
            data: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// Forgets candidates before `pos` (the walk is past them).
    fn drop_before(&mut self, pos: u64) {
        // Each iteration removes one candidate.
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= pos {
                break;
            }
            entry.remove();
        }
        while self.starts.front().is_some_and(|&a| a < pos) {
            self.starts.pop_front();
        }
    }

    /// Passes over the next chunk: finds the magics that start in it, then checksums it,
    /// stopping at every candidate's data start and claimed end on the way.
    fn advance(&mut self) -> io::Result<()> {
        if self.pass >= self.end {
            return Ok(());
        }
        let chunk_end = self.pass.saturating_add(PASS_CHUNK).min(self.end);
        let look_end = chunk_end
            .saturating_add(BLOCK_HEADER_LEN as u64 - 1)
            .min(self.end);
        let mut scratch = std::mem::take(&mut self.chunk);
        let src = self.src;
        let buf = src.read(self.pass, (look_end - self.pass) as usize, &mut scratch)?;
        let in_chunk = (chunk_end - self.pass) as usize;
        let mut i = 0usize;
        // Each iteration moves `i` forward by at least one byte.
        while let Some(k) = buf
            .get(i..in_chunk)
            .and_then(|s| s.iter().position(|&b| b == BLOCK_MAGIC[0]))
        {
            let at = i + k;
            if buf.get(at..at + 4) == Some(&BLOCK_MAGIC[..]) {
                self.discover(self.pass + at as u64, &buf[at..]);
            }
            i = at + 1;
        }
        let mut fed = self.pass;
        // Each iteration handles at least one event at or before `chunk_end`, or ends.
        loop {
            let next_start = self.starts.front().map(|&a| a + BLOCK_HEADER_LEN as u64);
            let next_end = self.ends.peek().map(|Reverse((e, _))| *e);
            let event = match (next_start, next_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .filter(|&x| x <= chunk_end);
            let stop = event.unwrap_or(chunk_end);
            let from = (fed - self.pass) as usize;
            let to = (stop - self.pass) as usize;
            self.crc = crc32c::crc32c_append(self.crc, &buf[from..to]);
            self.work.checksummed += (to - from) as u64;
            fed = stop;
            let Some(x) = event else { break };
            self.events_at(x);
        }
        self.pass = chunk_end;
        self.chunk = scratch;
        Ok(())
    }

    /// A magic at `at`; `bytes` runs from it to at least its header's end or the area's.
    fn discover(&mut self, at: u64, bytes: &[u8]) {
        self.work.candidates += 1;
        let Ok(header) = BlockHeader::parse(bytes) else {
            return;
        };
        self.work.checksummed += (BLOCK_HEADER_LEN - 8) as u64;
        let end = at.saturating_add(header.framed_len());
        if end > self.end {
            return;
        }
        if self.starts.len() + self.ends.len() >= MAX_PENDING {
            self.work.candidates_skipped += 1;
            return;
        }
        self.pending.insert(
            at,
            Pending {
                header,
                end,
                state: PendingState::AwaitStart,
            },
        );
        self.starts.push_back(at);
    }

    /// Handles the candidates whose data start or claimed end is at `x` (the pass is there).
    fn events_at(&mut self, x: u64) {
        // The pass is at `x`: the running CRC is C(x).
        debug_assert!(x >= self.base);
        let crc_here = self.crc;
        while let Some(&at) = self.starts.front() {
            if at + BLOCK_HEADER_LEN as u64 != x {
                break;
            }
            self.starts.pop_front();
            if let Some(p) = self.pending.get_mut(&at) {
                let h = p.header;
                // crc(H ‖ D) = shift(crc(H), S) ⊕ C(e) ⊕ shift(C(d), S): at the end C(e) must
                // equal crc ⊕ shift(crc(H) ⊕ C(d), S).
                let expect =
                    h.crc ^ crate::crc::shift(h.header_crc ^ crc_here, u64::from(h.stored));
                p.state = PendingState::AwaitEnd(expect);
                self.ends.push(Reverse((p.end, at)));
            }
        }
        while let Some(&Reverse((e, at))) = self.ends.peek() {
            if e != x {
                break;
            }
            self.ends.pop();
            if let Some(p) = self.pending.get_mut(&at) {
                match p.state {
                    PendingState::AwaitEnd(expect) if expect == crc_here => {
                        p.state = PendingState::CrcOk;
                    }
                    PendingState::AwaitEnd(_) => {
                        self.pending.remove(&at);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Whether the pass is at the end of the area.
    fn done(&self) -> bool {
        self.pass >= self.end
    }

    /// Resolves the pending candidate at `at`: its info if it is a valid block, else why
    /// not. It is removed either way.
    fn resolve(&mut self, at: u64) -> io::Result<Result<BlockInfo, BlockError>> {
        // Each iteration advances the pass (bounded by the area) until the CRC is known.
        loop {
            match self.pending.get(&at).map(|p| p.state) {
                None => return Ok(Err(BlockError::Checksum)),
                Some(PendingState::CrcOk) => break,
                Some(_) if self.done() => {
                    // Cannot happen (every claimed end is inside the area); be total.
                    self.pending.remove(&at);
                    return Ok(Err(BlockError::Truncated));
                }
                Some(_) => self.advance()?,
            }
        }
        let Some(p) = self.pending.remove(&at) else {
            return Ok(Err(BlockError::Checksum));
        };
        let h = p.header;
        let cost = u64::from(h.raw_len) * if h.codec == 1 { 2 } else { 1 };
        if self.budget == 0 {
            self.work.budget_exhausted = true;
            return Ok(Err(BlockError::Corrupt(
                "not decoded: the budget for blocks that pass their CRC but do not decode is spent"
                    .into(),
            )));
        }
        let src = self.src;
        let data = src.read(
            at + BLOCK_HEADER_LEN as u64,
            h.stored as usize,
            &mut self.data,
        )?;
        self.work.decoded += cost;
        let checked = h
            .raw(data, &mut self.raw)
            .and_then(|raw| validate_records(raw, h.records));
        if let Err(e) = checked {
            self.work.decode_failures += cost;
            self.budget = self.budget.saturating_sub(cost);
            return Ok(Err(e));
        }
        let mut info = h.info();
        info.offset = at;
        Ok(Ok(info))
    }

    /// The block at `pos` (where the walk is), or why there is none.
    fn block_at(&mut self, pos: u64) -> io::Result<Result<BlockInfo, BlockError>> {
        // Each iteration advances the pass by a chunk (bounded by the area).
        while self.pass <= pos && !self.done() {
            self.advance()?;
        }
        self.drop_before(pos);
        if self.pending.contains_key(&pos) {
            return self.resolve(pos);
        }
        // Not a candidate: find out why from its header.
        let left = self.end.saturating_sub(pos);
        let n = left.min(BLOCK_HEADER_LEN as u64) as usize;
        let src = self.src;
        let bytes = src.read(pos, n, &mut self.data)?;
        Ok(Err(match BlockHeader::parse(bytes) {
            Err(e) => e,
            Ok(h) if pos.saturating_add(h.framed_len()) > self.end => BlockError::Truncated,
            Ok(h) if pos.saturating_add(h.framed_len()) <= self.pass => BlockError::Checksum,
            Ok(_) => {
                BlockError::Corrupt("not examined: too many overlapping candidate blocks".into())
            }
        }))
    }

    /// The first valid block at or after `from`, if any.
    fn next_valid(&mut self, from: u64) -> io::Result<Option<BlockInfo>> {
        self.drop_before(from);
        // Each iteration removes a candidate or advances the pass (both bounded).
        loop {
            match self.pending.first_key_value().map(|(&at, p)| (at, p.state)) {
                Some((at, PendingState::CrcOk)) => {
                    if let Ok(info) = self.resolve(at)? {
                        return Ok(Some(info));
                    }
                }
                Some((at, _)) if self.done() => {
                    // Cannot happen (every claimed end is inside the area); be total.
                    self.pending.remove(&at);
                }
                Some(_) => self.advance()?,
                None if self.done() => return Ok(None),
                None => self.advance()?,
            }
        }
    }
}

/// What the walk found.
struct Walk {
    blocks: Vec<BlockInfo>,
    bad_blocks: Vec<(u64, BlockError)>,
    tail_bytes: u64,
    data_end: u64,
    work: ScanWork,
}

/// Walks the block area `start..end` (see the module documentation).
fn walk(src: &Source, start: u64, end: u64, has_footer: bool) -> io::Result<Walk> {
    let mut s = Scanner::new(src, start, end);
    let mut w = Walk {
        blocks: Vec::new(),
        bad_blocks: Vec::new(),
        tail_bytes: 0,
        data_end: start,
        work: ScanWork::default(),
    };
    let mut pos = start;
    // Each iteration moves `pos` forward by at least one byte or ends the walk.
    while pos < end {
        match s.block_at(pos)? {
            Ok(info) => {
                pos = info.offset + info.len as u64;
                w.data_end = pos;
                w.blocks.push(info);
            }
            Err(e) => match s.next_valid(pos + 1)? {
                Some(info) => {
                    w.bad_blocks.push((pos, e));
                    pos = info.offset + info.len as u64;
                    w.data_end = pos;
                    w.blocks.push(info);
                }
                None => {
                    if has_footer {
                        w.bad_blocks.push((pos, e));
                    }
                    w.tail_bytes = end - pos;
                    break;
                }
            },
        }
    }
    w.work = s.work;
    Ok(w)
}

impl Recording {
    /// Opens the file at `path`. Blocks are read from the file as they are needed (the walk
    /// reads 64 KiB at a time; decoding reads one block), so memory does not grow with the
    /// file; the file should not change while the `Recording` is in use.
    pub fn open(path: &Path) -> Result<Recording, ReadError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Self::from_source(Source::File { file, len })
    }

    /// Opens a recording held in memory (the fuzzing entry point: total on every input, no
    /// allocation beyond what the input's own bytes justify).
    ///
    /// The header must be valid. A footer that is absent or fails its checks is treated as
    /// absent (the blocks are still there). The block area (from the header to the footer, or
    /// to the end of the file) is then walked: valid blocks go to `blocks`; bytes that are not
    /// a valid block but are followed by one (damage in the middle) go to `bad_blocks` and the
    /// walk resumes at the next valid block; bytes after the last valid block are counted in
    /// `tail_bytes` (and, when the file has a footer, listed in `bad_blocks` too, since a
    /// finished file should have none).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Recording, ReadError> {
        Self::from_source(Source::Memory(bytes))
    }

    fn from_source(source: Source) -> Result<Recording, ReadError> {
        let (header, header_len) = read_header(&source)?;
        let footer = read_footer(&source, header_len)?;
        let scan_end = footer.as_ref().map_or(source.len(), |(_, start)| *start);
        let w = walk(&source, header_len as u64, scan_end, footer.is_some())?;
        Ok(Recording {
            header,
            footer: footer.map(|(f, _)| f),
            blocks: w.blocks,
            bad_blocks: w.bad_blocks,
            tail_bytes: w.tail_bytes,
            data_end: w.data_end,
            scan_work: w.work,
            source,
        })
    }

    /// All records of the valid blocks, in order, in one vector (memory grows with the
    /// recording: prefer [`Self::iter_records`] or [`Self::visit_records`]).
    pub fn records(&self) -> Result<Vec<Record>, ReadError> {
        self.iter_records().collect()
    }

    /// The records of the valid blocks, in order, decoded one block at a time.
    pub fn iter_records(&self) -> RecordIter<'_> {
        RecordIter {
            rec: self,
            next_block: 0,
            raw: Vec::new(),
            data: Vec::new(),
            pos: 0,
            state: RecordState::default(),
            failed: false,
        }
    }

    /// Calls `f` with every record of the valid blocks, in order, until it returns
    /// `ControlFlow::Break`; returns whether it did. Decodes one block at a time.
    pub fn visit_records(
        &self,
        mut f: impl FnMut(&Record) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, ReadError> {
        let mut data = Vec::new();
        let mut raw = Vec::new();
        for b in &self.blocks {
            let raw = self.block_raw(b, &mut data, &mut raw)?;
            let mut c = Cursor::new(raw);
            let mut st = RecordState::default();
            // Each iteration consumes at least one byte of the block.
            while !c.is_empty() {
                let r = st.next(&mut c)?.to_record();
                if f(&r).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The raw records of a valid block (re-checked: the file may have changed).
    fn block_raw<'a>(
        &'a self,
        b: &BlockInfo,
        data: &'a mut Vec<u8>,
        raw: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], ReadError> {
        let bytes = self.source.read(b.offset, b.len, data)?;
        let h = BlockHeader::parse(bytes)?;
        let stored = bytes.get(BLOCK_HEADER_LEN..).unwrap_or_default();
        if stored.len() != h.stored as usize || !h.crc_matches(stored) {
            return Err(BlockError::Checksum.into());
        }
        Ok(h.raw(stored, raw)?)
    }

    /// The header's streams, updated by `StreamAdded`/`StreamChanged` events (latest wins).
    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut streams = self.header.streams.clone();
        let _ = self.visit_records(|r| {
            if let Record::Event(e) = r {
                if let Event::StreamAdded(s) | Event::StreamChanged(s) = &e.event {
                    match streams.iter_mut().find(|x| x.id == s.id) {
                        Some(x) => *x = s.clone(),
                        None => streams.push(s.clone()),
                    }
                }
            }
            ControlFlow::Continue(())
        });
        streams
    }

    /// Per-stream statistics computed from the records (see [`stats_from_records`]), with
    /// the header's streams known from the start. Records that cannot be read are left out.
    pub fn computed_stats(&self) -> Vec<StreamStats> {
        let mut acc = StatsAcc::new(&self.header.streams);
        let _ = self.visit_records(|r| {
            acc.push(r);
            ControlFlow::Continue(())
        });
        acc.finish()
    }

    /// How the recording ended; `None` when it has no footer (in progress or interrupted).
    pub fn completeness(&self) -> Option<Completeness> {
        self.footer.as_ref().map(|f| f.completeness)
    }

    /// Footer present, no damaged block, nothing dangling.
    pub fn is_intact(&self) -> bool {
        self.footer.is_some() && self.bad_blocks.is_empty() && self.tail_bytes == 0
    }

    /// The length of the recording's timeline in µs from its start, as its metadata says:
    /// the footer's end time minus the header's start time when there is a footer (and the
    /// end is not before the start), else the latest record time a valid block's framing
    /// names; `None` for a file without either. Exports place nothing beyond it.
    pub fn span_us(&self) -> Option<u64> {
        if let Some(f) = &self.footer {
            if let Some(ms) = f.end_unix_ms.checked_sub(self.header.start_unix_ms) {
                return Some(ms.saturating_mul(1000));
            }
        }
        self.blocks.iter().map(|b| b.first_us.max(b.last_us)).max()
    }
}

/// The records of a [`Recording`], one block decoded at a time
/// ([`Recording::iter_records`]). After an error it ends.
#[derive(Debug)]
pub struct RecordIter<'r> {
    rec: &'r Recording,
    next_block: usize,
    raw: Vec<u8>,
    data: Vec<u8>,
    pos: usize,
    state: RecordState,
    failed: bool,
}

impl Iterator for RecordIter<'_> {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Each iteration yields a record or loads the next block (bounded by the blocks).
        loop {
            if self.failed {
                return None;
            }
            if self.pos < self.raw.len() {
                let mut c = Cursor::new(&self.raw);
                c.pos = self.pos;
                let r = self.state.next(&mut c).map(|r| r.to_record());
                self.pos = c.pos;
                if r.is_err() {
                    self.failed = true;
                }
                return Some(r.map_err(ReadError::from));
            }
            let b = *self.rec.blocks.get(self.next_block)?;
            self.next_block += 1;
            let mut raw = std::mem::take(&mut self.raw);
            let loaded = self
                .rec
                .block_raw(&b, &mut self.data, &mut raw)
                .map(<[u8]>::to_vec);
            match loaded {
                Ok(bytes) => {
                    self.raw = bytes;
                    self.pos = 0;
                    self.state = RecordState::default();
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Per-stream statistics computed from records, in order of each stream's first packet:
/// packets, payload bytes, first/last arrival, RTP loss (RFC 3550 A.3: expected − received
/// per SSRC run, 16-bit sequence wrap handled) and interarrival jitter (RFC 3550 A.8) in the
/// clock rate of each packet's payload type, as announced by `StreamAdded`/`StreamChanged`
/// events before it (else the static RTP payload type table, else 8000 Hz).
pub fn stats_from_records(records: &[Record]) -> Vec<StreamStats> {
    let mut acc = StatsAcc::new(&[]);
    for r in records {
        acc.push(r);
    }
    acc.finish()
}

/// RTP clock rate of the static payload types (RFC 3551), 8000 for the others.
fn static_clock_rate(pt: u8) -> u32 {
    match pt {
        10 | 11 => 44_100,
        14 | 25 | 26 | 28 | 31..=34 => 90_000,
        16 => 11_025,
        17 => 22_050,
        _ => 8_000,
    }
}

/// Running state of one stream's statistics.
#[derive(Default)]
struct Acc {
    stats: StreamStats,
    ssrc: Option<u32>,
    first_ext: i64,
    max_ext: i64,
    last_seq: u16,
    received_run: i64,
    lost_before: i64,
    /// Arrival (RTP clock units), timestamp and payload type of the previous packet.
    prev: Option<(i64, u32, u8)>,
    jitter_q4: i64,
}

/// Statistics accumulated record by record (memory: one entry per stream).
struct StatsAcc {
    codecs: HashMap<StreamId, Vec<CodecInfo>>,
    accs: Vec<Acc>,
    index: HashMap<StreamId, usize>,
}

impl StatsAcc {
    /// With the streams known before the first record (the header's).
    fn new(known: &[StreamInfo]) -> Self {
        StatsAcc {
            codecs: known.iter().map(|s| (s.id, s.codecs.clone())).collect(),
            accs: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn push(&mut self, r: &Record) {
        let p = match r {
            Record::Event(e) => {
                if let Event::StreamAdded(s) | Event::StreamChanged(s) = &e.event {
                    self.codecs.insert(s.id, s.codecs.clone());
                }
                return;
            }
            Record::Packet(p) => p,
        };
        let accs = &mut self.accs;
        let i = *self.index.entry(p.stream).or_insert_with(|| {
            accs.push(Acc {
                stats: StreamStats {
                    stream: p.stream,
                    first_us: p.arrival_us,
                    last_us: p.arrival_us,
                    ..Default::default()
                },
                ..Default::default()
            });
            accs.len() - 1
        });
        let Some(a) = self.accs.get_mut(i) else {
            return;
        };
        a.stats.packets += 1;
        a.stats.payload_bytes += p.payload.len() as u64;
        a.stats.first_us = a.stats.first_us.min(p.arrival_us);
        a.stats.last_us = a.stats.last_us.max(p.arrival_us);
        let Some(f) = p.rtp else { return };
        if a.ssrc != Some(f.ssrc) {
            if a.ssrc.is_some() {
                a.lost_before += a.max_ext - a.first_ext + 1 - a.received_run;
            }
            a.ssrc = Some(f.ssrc);
            a.first_ext = i64::from(f.sequence);
            a.max_ext = a.first_ext;
            a.last_seq = f.sequence;
            a.received_run = 0;
            a.prev = None;
        } else {
            let delta = i64::from(f.sequence.wrapping_sub(a.last_seq) as i16);
            if delta > 0 {
                a.last_seq = f.sequence;
                a.max_ext += delta;
            }
        }
        a.received_run += 1;
        a.stats.lost = a.lost_before + a.max_ext - a.first_ext + 1 - a.received_run;
        // Jitter: D = (arrival difference − timestamp difference) in the RTP clock.
        let rate = self
            .codecs
            .get(&p.stream)
            .and_then(|c| c.iter().find(|c| c.payload_type == f.payload_type))
            .map(|c| c.clock_rate)
            .filter(|&r| r > 0)
            .unwrap_or_else(|| static_clock_rate(f.payload_type));
        let arrival = (u128::from(p.arrival_us) * u128::from(rate) / 1_000_000) as i64;
        if let Some((prev_arrival, prev_ts, prev_pt)) = a.prev {
            if prev_pt == f.payload_type {
                let ts_diff = i64::from(f.timestamp.wrapping_sub(prev_ts) as i32);
                let d = arrival.wrapping_sub(prev_arrival).wrapping_sub(ts_diff);
                let d = i64::try_from(d.unsigned_abs()).unwrap_or(i64::MAX);
                if d < 1 << 24 {
                    a.jitter_q4 += d - ((a.jitter_q4 + 8) >> 4);
                }
            }
        }
        a.prev = Some((arrival, f.timestamp, f.payload_type));
        a.stats.jitter = (a.jitter_q4 >> 4).clamp(0, i64::from(u32::MAX)) as u32;
    }

    fn finish(self) -> Vec<StreamStats> {
        self.accs.into_iter().map(|a| a.stats).collect()
    }
}

/// The footer for a file left unfinished: `Recovered`, the valid blocks, computed stats,
/// and the packets the file itself says were not recorded (`DataLost` events). Records that
/// cannot be read again (the file changed) are left out.
pub fn recovery_footer(rec: &Recording, end_unix_ms: u64) -> Footer {
    let mut acc = StatsAcc::new(&rec.header.streams);
    let mut packets_lost = 0u64;
    let _ = rec.visit_records(|r| {
        if let Record::Event(e) = r {
            if let Event::DataLost { packets } = e.event {
                packets_lost = packets_lost.saturating_add(packets);
            }
        }
        acc.push(r);
        ControlFlow::Continue(())
    });
    Footer {
        completeness: Completeness::Recovered,
        end_unix_ms,
        packets_lost,
        index: rec
            .blocks
            .iter()
            .map(|b| BlockIndexEntry {
                offset: b.offset,
                first_us: b.first_us,
                last_us: b.last_us,
                records: b.records,
            })
            .collect(),
        streams: acc.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::tests::{call_records, push};
    use crate::block::{seal, BlockBuilder};
    use crate::format::tests::sample_header;
    use crate::format::{encode_footer, encode_header};
    use crate::EventRecord;

    /// A file of `secs` seconds in ~8 KiB blocks; returns bytes, records, block end offsets.
    fn build(secs: u64, finish: bool) -> (Vec<u8>, Vec<Record>, Vec<usize>) {
        let records = call_records(secs, 99);
        let mut file = Vec::new();
        encode_header(&sample_header(), &mut file);
        let mut b = BlockBuilder::with_capacity(12 * 1024);
        let mut ends = Vec::new();
        for r in &records {
            push(&mut b, r);
            if b.len() > 8 * 1024 {
                seal(&b, &mut file);
                ends.push(file.len());
                b.clear();
            }
        }
        if !b.is_empty() {
            seal(&b, &mut file);
            ends.push(file.len());
        }
        if finish {
            let rec = Recording::from_bytes(file.clone()).unwrap();
            let mut f = recovery_footer(&rec, 1);
            f.completeness = Completeness::Complete;
            encode_footer(&f, &mut file);
        }
        (file, records, ends)
    }

    fn records_in_blocks(
        records: &[Record],
        blocks: usize,
        ends: &[usize],
        file: &[u8],
    ) -> Vec<Record> {
        // The records of the first `blocks` blocks, decoded independently for comparison.
        let _ = (records, ends);
        let rec = Recording::from_bytes(file[..ends[blocks - 1]].to_vec()).unwrap();
        rec.records().unwrap()
    }

    #[test]
    fn whole_file_yields_everything() {
        let (file, records, _) = build(20, true);
        let rec = Recording::from_bytes(file).unwrap();
        assert!(rec.is_intact());
        assert_eq!(rec.header, sample_header());
        assert_eq!(rec.records().unwrap(), records);
        assert_eq!(rec.completeness(), Some(Completeness::Complete));
        assert_eq!(rec.footer.as_ref().unwrap().index.len(), rec.blocks.len());
    }

    #[test]
    fn truncated_at_every_offset_of_the_last_block_and_footer_keeps_complete_blocks() {
        let (file, records, ends) = build(6, true);
        let n = ends.len();
        assert!(n >= 3);
        let before_last = records_in_blocks(&records, n - 1, &ends, &file);
        let all = Recording::from_bytes(file.clone())
            .unwrap()
            .records()
            .unwrap();
        for cut in ends[n - 2]..file.len() {
            let rec = Recording::from_bytes(file[..cut].to_vec()).unwrap();
            let got = rec.records().unwrap();
            if cut < ends[n - 1] {
                assert_eq!(got, before_last, "cut at {cut}");
                assert_eq!(rec.blocks.len(), n - 1);
                assert_eq!(rec.data_end as usize, ends[n - 2]);
                assert_eq!(rec.tail_bytes as usize, cut - ends[n - 2]);
            } else {
                assert_eq!(got, all, "cut at {cut}");
                assert_eq!(rec.data_end as usize, ends[n - 1]);
                assert_eq!(rec.tail_bytes as usize, cut - ends[n - 1]);
            }
            assert!(
                rec.bad_blocks.is_empty(),
                "cut at {cut}: {:?}",
                rec.bad_blocks
            );
            assert!(rec.footer.is_none());
            assert!(!rec.is_intact());
        }
    }

    #[test]
    fn a_flipped_bit_is_detected_and_other_blocks_survive() {
        let (file, _, ends) = build(6, true);
        let clean = Recording::from_bytes(file.clone()).unwrap();
        let total = clean.records().unwrap().len();
        let (start, end) = (ends[0], ends[1]);
        // Every byte of the block header, then payload positions across the block.
        let positions =
            (start..start + crate::block::BLOCK_HEADER_LEN).chain((start..end).step_by(97));
        for pos in positions {
            let mut f = file.clone();
            f[pos] ^= 0x04;
            let rec = Recording::from_bytes(f).unwrap();
            assert!(
                !rec.bad_blocks.is_empty() || rec.blocks.len() < clean.blocks.len(),
                "flip at {pos} undetected"
            );
            assert!(!rec.is_intact());
            let got = rec.records().unwrap().len();
            assert!(got < total && got > 0, "flip at {pos}: {got} of {total}");
        }
    }

    #[test]
    fn a_magic_inside_an_interrupted_block_is_not_a_block() {
        let (mut file, records, ends) = build(3, false);
        let n = ends.len();
        // The last block is cut short, and its remaining bytes happen to hold a block magic.
        file.truncate(ends[n - 1] - 100);
        let at = ends[n - 2] + 200;
        file[at..at + 4].copy_from_slice(&BLOCK_MAGIC);
        let rec = Recording::from_bytes(file.clone()).unwrap();
        assert!(rec.bad_blocks.is_empty(), "{:?}", rec.bad_blocks);
        assert_eq!(rec.blocks.len(), n - 1);
        assert_eq!(rec.data_end as usize, ends[n - 2]);
        assert_eq!(rec.tail_bytes as usize, file.len() - ends[n - 2]);
        let got = rec.records().unwrap();
        assert_eq!(got[..], records[..got.len()]);
    }

    #[test]
    fn a_hole_between_blocks_is_skipped() {
        // Out-of-order writes interrupted by a crash can leave zeros where a block should be.
        let (mut file, _, ends) = build(4, false);
        let all = Recording::from_bytes(file.clone()).unwrap();
        for b in &mut file[ends[1]..ends[2]] {
            *b = 0;
        }
        let rec = Recording::from_bytes(file).unwrap();
        assert_eq!(rec.bad_blocks.len(), 1);
        assert_eq!(rec.bad_blocks[0].0 as usize, ends[1]);
        assert_eq!(rec.blocks.len(), all.blocks.len() - 1);
        assert_eq!(rec.tail_bytes, 0);
        assert_eq!(rec.data_end, all.data_end);
        assert!(!rec.is_intact());
        let skipped = all.blocks[2].records as usize;
        assert_eq!(
            rec.records().unwrap().len(),
            all.records().unwrap().len() - skipped
        );
    }

    #[test]
    fn damage_before_a_footer_is_reported() {
        let (mut file, _, ends) = build(3, true);
        let n = ends.len();
        file[ends[n - 1] - 5] ^= 0x80;
        let rec = Recording::from_bytes(file).unwrap();
        assert!(rec.footer.is_some());
        assert_eq!(rec.bad_blocks.len(), 1);
        assert_eq!(rec.blocks.len(), n - 1);
        assert!(!rec.is_intact());
    }

    #[test]
    fn header_errors_make_the_file_unreadable() {
        let (file, _, _) = build(1, true);
        let mut v9 = file.clone();
        v9[8] = 9;
        assert!(matches!(
            Recording::from_bytes(v9),
            Err(ReadError::Format(FormatError::UnsupportedVersion(9)))
        ));
        assert!(matches!(
            Recording::from_bytes(b"RIFF\0\0\0\0WAVE".to_vec()),
            Err(ReadError::Format(FormatError::BadMagic))
        ));
        assert!(Recording::from_bytes(file[..20].to_vec()).is_err());
        let dir = std::env::temp_dir().join(format!("lcr-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.lcr");
        std::fs::write(&path, &file).unwrap();
        assert!(Recording::open(&path).unwrap().is_intact());
        assert!(matches!(
            Recording::open(&dir.join("missing.lcr")),
            Err(ReadError::Io(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn streams_follow_stream_events() {
        let mut b = BlockBuilder::with_capacity(4096);
        let mut changed = sample_header().streams[1].clone();
        changed.source = "[2001:db8::99]:6000".into();
        let mut added = sample_header().streams[0].clone();
        added.id = 9;
        for event in [
            Event::StreamChanged(changed.clone()),
            Event::StreamAdded(added.clone()),
        ] {
            b.push_event(&EventRecord { at_us: 5, event });
        }
        let mut file = Vec::new();
        encode_header(&sample_header(), &mut file);
        seal(&b, &mut file);
        let rec = Recording::from_bytes(file).unwrap();
        let s = rec.streams();
        assert_eq!(s.len(), 5);
        assert_eq!(s[1], changed);
        assert_eq!(s[4], added);
        assert_eq!(rec.completeness(), None);
        assert!(!rec.is_intact());
    }

    #[test]
    fn jitter_uses_the_stream_clock_rate() {
        // A 16 kHz stream (dynamic PT 96, announced by an event) whose packets arrive
        // alternately on time and 2 ms late: |D| = 2 ms = 32 clock units every packet.
        let mut stream = sample_header().streams[0].clone();
        stream.codecs = vec![crate::CodecInfo {
            payload_type: 96,
            name: "L16".into(),
            clock_rate: 16_000,
            channels: 1,
        }];
        let mut recs = vec![Record::Event(EventRecord {
            at_us: 0,
            event: Event::StreamChanged(stream),
        })];
        for i in 0..2000u64 {
            recs.push(Record::Packet(crate::PacketRecord {
                stream: 0,
                arrival_us: i * 20_000 + if i % 2 == 0 { 0 } else { 2_000 },
                rtp: Some(crate::RtpFields {
                    marker: false,
                    payload_type: 96,
                    sequence: i as u16,
                    timestamp: (i * 320) as u32,
                    ssrc: 5,
                }),
                payload: vec![0; 640],
            }));
        }
        let s = stats_from_records(&recs);
        assert_eq!(s.len(), 1);
        assert!((31..=32).contains(&s[0].jitter), "{}", s[0].jitter);
        assert_eq!(s[0].lost, 0);
        assert_eq!(s[0].packets, 2000);
        assert_eq!(s[0].payload_bytes, 2000 * 640);
        assert_eq!((s[0].first_us, s[0].last_us), (0, 1999 * 20_000 + 2_000));
        // Without the event the 8 kHz default applies, and 320 timestamp units per 20 ms
        // look like a 160-unit transit change every packet.
        let s = stats_from_records(&recs[1..]);
        assert!((150..=160).contains(&s[0].jitter), "{}", s[0].jitter);
    }

    #[test]
    fn recovery_makes_an_intact_recovered_file() {
        let (file, _, ends) = build(6, false);
        let cut = ends[ends.len() - 1] - 10;
        let rec = Recording::from_bytes(file[..cut].to_vec()).unwrap();
        let footer = recovery_footer(&rec, 1_795_564_999_000);
        let mut fixed = file[..rec.data_end as usize].to_vec();
        encode_footer(&footer, &mut fixed);
        let again = Recording::from_bytes(fixed).unwrap();
        assert!(again.is_intact());
        assert_eq!(again.completeness(), Some(Completeness::Recovered));
        assert_eq!(again.records().unwrap(), rec.records().unwrap());
        let s = &again.footer.unwrap().streams;
        assert!(s
            .iter()
            .any(|x| x.stream == 0 && x.packets > 0 && x.lost == 0));
    }

    #[test]
    fn disk_overhead_of_g711_is_within_three_percent() {
        let (file, records, _) = build(60, true);
        let payload: usize = records
            .iter()
            .map(|r| match r {
                Record::Packet(p) => p.payload.len(),
                Record::Event(_) => 0,
            })
            .sum();
        let ratio = file.len() as f64 / payload as f64;
        println!(
            "60 s of 2 x 50 pps G.711: {} bytes on disk for {payload} payload bytes = {ratio:.4}x",
            file.len()
        );
        assert!(ratio <= 1.03, "{ratio}");
    }

    #[test]
    fn stats_count_loss_across_wrap_and_ssrc_change() {
        let mut recs = call_records(10, 1);
        // Drop two packets of stream 2 after the sequence wrap.
        let mut dropped = 0;
        recs.retain(|r| match r {
            Record::Packet(p)
                if p.stream == 2 && p.rtp.is_some_and(|f| f.sequence == 3 || f.sequence == 4) =>
            {
                dropped += 1;
                false
            }
            _ => true,
        });
        assert_eq!(dropped, 2);
        let s = stats_from_records(&recs);
        let s2 = s.iter().find(|x| x.stream == 2).unwrap();
        assert_eq!((s2.packets, s2.lost), (498, 2));
        let s0 = s.iter().find(|x| x.stream == 0).unwrap();
        assert_eq!((s0.packets, s0.lost), (500, 0));
    }

    /// Everything a caller (or a fuzz target) may do with an opened recording.
    fn use_everything(r: &Recording) {
        let _ = r.records();
        let _ = r.streams();
        let _ = r.computed_stats();
        let _ = r.span_us();
        let _ = recovery_footer(r, 1);
        let opts = crate::export::WavOptions {
            max_samples: 8000 * 60,
            span_us: None,
        };
        let _ = crate::export::write_recording_wav(r, &opts, &mut std::io::sink());
        let _ = crate::export::write_recording_pcap(r, &mut std::io::sink());
    }

    proptest::proptest! {
        #[test]
        fn opening_garbage_never_panics(data: Vec<u8>) {
            let mut f = Vec::new();
            encode_header(&sample_header(), &mut f);
            f.extend_from_slice(&data);
            if let Ok(r) = Recording::from_bytes(f) {
                use_everything(&r);
            }
            if let Ok(r) = Recording::from_bytes(data) {
                use_everything(&r);
            }
        }

        /// A real file with bytes overwritten, block magics and fake headers planted, and
        /// the end cut: never a panic, and the walk's work stays linear in the size.
        #[test]
        fn mutated_files_are_total_and_linear(
            edits in proptest::collection::vec(
                (0usize..40_000, 0u8..3, proptest::prelude::any::<u32>()),
                0..24,
            ),
            cut in 0usize..40_000,
        ) {
            let (mut f, _, _) = build(2, true);
            for (at, kind, v) in edits {
                let at = at % f.len();
                match kind {
                    0 => f[at] ^= v as u8 | 1,
                    1 => {
                        let end = (at + 4).min(f.len());
                        f[at..end].copy_from_slice(&BLOCK_MAGIC[..end - at]);
                    }
                    _ => {
                        let h = fake_header((v & 1) as u8, v >> 8);
                        let end = (at + h.len()).min(f.len());
                        f[at..end].copy_from_slice(&h[..end - at]);
                    }
                }
            }
            f.truncate(f.len() - cut.min(f.len() / 2));
            let n = f.len() as u64;
            if let Ok(r) = Recording::from_bytes(f) {
                proptest::prop_assert!(r.scan_work.checksummed <= 4 * n, "{:?}", r.scan_work);
                proptest::prop_assert!(r.scan_work.total() <= 8 * n, "{:?}", r.scan_work);
                use_everything(&r);
            }
        }
    }

    /// A fake block header at `at` of a file `total` bytes long whose claimed data runs to
    /// the end of the file (and whose CRC is wrong).
    fn fake_header(codec: u8, stored: u32) -> [u8; BLOCK_HEADER_LEN] {
        let mut h = [0u8; BLOCK_HEADER_LEN];
        h[..4].copy_from_slice(&BLOCK_MAGIC);
        h[4] = codec;
        h[5..9].copy_from_slice(&stored.to_le_bytes());
        h[9..13].copy_from_slice(&stored.to_le_bytes());
        h[13..17].copy_from_slice(&7u32.to_le_bytes());
        h[33..37].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
        h
    }

    /// A header, then `junk` bytes of back-to-back fake headers each claiming the rest of
    /// the file, then `tail` (e.g. valid blocks).
    fn adversarial(junk: usize, tail: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        encode_header(&sample_header(), &mut f);
        let total = f.len() + junk / BLOCK_HEADER_LEN * BLOCK_HEADER_LEN + tail.len();
        while f.len() + BLOCK_HEADER_LEN <= total - tail.len() {
            let stored = (total - f.len() - BLOCK_HEADER_LEN) as u32;
            f.extend_from_slice(&fake_header(0, stored));
        }
        f.extend_from_slice(tail);
        f
    }

    #[test]
    fn files_open_like_bytes() {
        let (good, _, ends) = build(6, true);
        let mut torn = good[..ends[ends.len() - 1] - 30].to_vec();
        torn[ends[1] + 50] ^= 0x10;
        let dir = std::env::temp_dir().join(format!("lcr-reader-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, bytes) in [good, torn, adversarial(4000, &[])].into_iter().enumerate() {
            let path = dir.join(format!("{i}.lcr"));
            std::fs::write(&path, &bytes).unwrap();
            let a = Recording::from_bytes(bytes).unwrap();
            let b = Recording::open(&path).unwrap();
            assert_eq!(a.header, b.header);
            assert_eq!(a.footer, b.footer);
            assert_eq!(a.blocks, b.blocks);
            assert_eq!(a.bad_blocks, b.bad_blocks);
            assert_eq!((a.tail_bytes, a.data_end), (b.tail_bytes, b.data_end));
            assert_eq!(a.scan_work, b.scan_work);
            assert_eq!(a.records().unwrap(), b.records().unwrap());
            assert_eq!(a.streams(), b.streams());
        }
        // A file that shrinks after it was opened: reading its records fails, no panic.
        let path = dir.join("0.lcr");
        let rec = Recording::open(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        assert!(rec.records().is_err());
        assert!(rec.iter_records().any(|r| r.is_err()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn iterating_equals_collecting_and_visiting_stops_early() {
        let (file, records, _) = build(5, true);
        let rec = Recording::from_bytes(file).unwrap();
        let iterated: Vec<Record> = rec.iter_records().map(Result::unwrap).collect();
        assert_eq!(iterated, records);
        let mut seen = 0;
        let flow = rec
            .visit_records(|_| {
                seen += 1;
                if seen == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!((flow, seen), (ControlFlow::Break(()), 3));
        assert_eq!(
            rec.computed_stats(),
            stats_with_known(&records, &rec.header.streams)
        );
    }

    fn stats_with_known(records: &[Record], known: &[StreamInfo]) -> Vec<StreamStats> {
        let mut acc = StatsAcc::new(known);
        for r in records {
            acc.push(r);
        }
        acc.finish()
    }

    #[test]
    fn resync_over_fake_headers_is_linear_and_finds_the_next_block() {
        let (good, _, _) = build(2, false);
        let (_, header_len) = decode_header(&good).unwrap();
        let blocks = &good[header_len..];
        let clean = Recording::from_bytes(good.clone()).unwrap();
        let file = adversarial(200_000, blocks);
        let n = file.len() as u64;
        let rec = Recording::from_bytes(file).unwrap();
        assert_eq!(
            rec.blocks.len(),
            clean.blocks.len(),
            "every real block found"
        );
        assert_eq!(rec.bad_blocks.len(), 1);
        assert_eq!(rec.records().unwrap(), clean.records().unwrap());
        let w = rec.scan_work;
        assert!(w.candidates >= 200_000 / BLOCK_HEADER_LEN as u64);
        assert!(w.checksummed <= 2 * n, "{w:?} for {n} bytes");
        assert!(w.total() <= 4 * n, "{w:?} for {n} bytes");
        assert_eq!(w.decode_failures, 0);
    }

    #[test]
    fn claims_past_the_end_cost_nothing() {
        let mut f = Vec::new();
        encode_header(&sample_header(), &mut f);
        for i in 0..3000u32 {
            f.extend_from_slice(&fake_header((i % 2) as u8, 16 << 20));
        }
        let n = f.len() as u64;
        let rec = Recording::from_bytes(f).unwrap();
        assert!(rec.blocks.is_empty());
        assert_eq!(rec.tail_bytes + rec.data_end, n);
        assert!(rec.scan_work.total() <= 3 * n, "{:?}", rec.scan_work);
    }

    /// A block with a valid CRC (the data is ours to choose) but records that do not decode.
    fn crc_valid_block(codec: u8, stored: &[u8], raw_len: u32, records: u32) -> Vec<u8> {
        let mut h = vec![codec];
        h.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        h.extend_from_slice(&raw_len.to_le_bytes());
        h.extend_from_slice(&records.to_le_bytes());
        h.extend_from_slice(&[0; 16]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h), stored);
        let mut b = BLOCK_MAGIC.to_vec();
        b.extend_from_slice(&h);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(stored);
        b
    }

    #[test]
    fn crc_valid_blocks_that_do_not_decode_spend_a_bounded_budget() {
        // lz4 bombs: ~64 KiB that decompress to 16 MiB of zeros, i.e. 4 M valid four-byte
        // records, but the record count says one more. Each costs 32 MiB to refute.
        let raw = vec![0u8; 16 << 20];
        let bomb = lz4_flex::block::compress(&raw);
        let block = crc_valid_block(1, &bomb, raw.len() as u32, (raw.len() / 4 + 1) as u32);
        let mut f = Vec::new();
        encode_header(&sample_header(), &mut f);
        for _ in 0..12 {
            f.extend_from_slice(&block);
        }
        let n = f.len() as u64;
        let rec = Recording::from_bytes(f).unwrap();
        let w = rec.scan_work;
        assert!(rec.blocks.is_empty());
        assert!(w.budget_exhausted, "{w:?}");
        let bound = DECODE_FAILURE_BUDGET_FACTOR * n
            + (1 << 20)
            + 2 * 2 * crate::block::MAX_RAW_BLOCK as u64;
        assert!(w.decode_failures <= bound, "{w:?}, bound {bound}");
        assert!(w.decoded < 3 * (32 << 20), "{w:?}: not 12 bombs of 32 MiB");
        // A real block after a refuted one is still found while budget remains.
        let (good, _, _) = build(1, false);
        let (_, header_len) = decode_header(&good).unwrap();
        let mut f = Vec::new();
        encode_header(&sample_header(), &mut f);
        f.extend_from_slice(&crc_valid_block(0, &[0x08, 0, 0], 3, 1));
        f.extend_from_slice(&good[header_len..]);
        let rec = Recording::from_bytes(f).unwrap();
        assert_eq!(rec.bad_blocks.len(), 1);
        assert!(matches!(rec.bad_blocks[0].1, BlockError::Corrupt(_)));
        assert_eq!(
            rec.records().unwrap().len(),
            Recording::from_bytes(good)
                .unwrap()
                .records()
                .unwrap()
                .len()
        );
    }

    #[test]
    fn hostile_counts_and_lengths_are_refused_before_allocation() {
        // A block claiming 2^32 − 1 records with a valid CRC: bad, and nothing allocated for
        // records that are not there.
        let mut f = Vec::new();
        encode_header(&sample_header(), &mut f);
        f.extend_from_slice(&crc_valid_block(0, &[0x40, 0, 1, 9], 4, u32::MAX));
        let rec = Recording::from_bytes(f).unwrap();
        assert!(rec.blocks.is_empty() && rec.tail_bytes > 0);
        // A raw length lz4 cannot produce from the stored bytes is refused before
        // decompression.
        let too_big = crc_valid_block(1, &[0; 100], 100 * 255 + 17, 1);
        assert!(matches!(
            BlockHeader::parse(&too_big),
            Err(BlockError::Corrupt(_))
        ));
        assert!(BlockHeader::parse(&crc_valid_block(1, &[0; 100], 100 * 255 + 16, 1)).is_ok());
        // A header whose length field claims 4 GiB, and one whose SDP claims 4 GB.
        let mut h = Vec::new();
        encode_header(&sample_header(), &mut h);
        let mut huge = h.clone();
        huge[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Recording::from_bytes(huge),
            Err(ReadError::Format(FormatError::Invalid("header length")))
        ));
        let mut body = Vec::new();
        crate::format::put_varint(&mut body, 1); // recording id "x"
        body.push(b'x');
        body.extend_from_slice(&[0, 0, 0]); // call id "", start 0, no metadata
        crate::format::put_varint(&mut body, 1); // one party
        body.extend_from_slice(&[0, 0]); // tag "", no label
        crate::format::put_varint(&mut body, 4_000_000_000); // SDP: 4 GB
        let mut sdp = crate::format::FILE_MAGIC.to_vec();
        sdp.extend_from_slice(&crate::format::VERSION.to_le_bytes());
        sdp.extend_from_slice(&(body.len() as u32).to_le_bytes());
        sdp.extend_from_slice(&body);
        sdp.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        assert!(matches!(
            Recording::from_bytes(sdp),
            Err(ReadError::Format(FormatError::Truncated))
        ));
    }

    #[test]
    fn span_comes_from_the_footer_else_the_blocks() {
        let (mut file, _, ends) = build(3, false);
        let start = sample_header().start_unix_ms;
        let rec = Recording::from_bytes(file.clone()).unwrap();
        let footer = recovery_footer(&rec, start + 3_500);
        encode_footer(&footer, &mut file);
        assert_eq!(
            Recording::from_bytes(file.clone()).unwrap().span_us(),
            Some(3_500_000)
        );
        // A footer that ends before the start (a clock step): the blocks say.
        let (stepped, _, _) = build(3, true);
        let stepped = Recording::from_bytes(stepped).unwrap();
        assert!(stepped.footer.as_ref().unwrap().end_unix_ms < start);
        assert_eq!(
            stepped.span_us(),
            stepped.blocks.iter().map(|b| b.last_us).max()
        );
        let cut = Recording::from_bytes(file[..ends[ends.len() - 1]].to_vec()).unwrap();
        let last = cut.blocks.iter().map(|b| b.last_us).max();
        assert_eq!(cut.span_us(), last);
        assert!(last.unwrap() > 2_900_000);
        let mut h = Vec::new();
        encode_header(&sample_header(), &mut h);
        assert_eq!(Recording::from_bytes(h).unwrap().span_us(), None);
    }
}
