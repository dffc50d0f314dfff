//! Reading recordings, whole or damaged, and what recovery needs.
//!
//! [`Recording::from_bytes`] checks the header, looks for the footer at the end, then walks
//! the blocks: every block whose framing and CRC check out is kept; a damaged block is listed
//! in `bad_blocks` and the walk resynchronises at the next block magic; bytes at the end that
//! are neither a complete block nor a footer (an interrupted write) are counted in
//! `tail_bytes`. [`recovery_footer`] builds the footer a crashed file gets.

use std::collections::HashMap;
use std::path::Path;

use crate::block::{open_block, BlockError, BlockInfo, BLOCK_MAGIC};
use crate::format::{decode_footer_at_end, decode_header, FormatError};
use crate::{
    BlockIndexEntry, CodecInfo, Completeness, Event, FileHeader, Footer, Record, StreamId,
    StreamInfo, StreamStats,
};

/// Why a recording could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file header is invalid (not a recording, another version, truncated, bad CRC).
    #[error("{0}")]
    Format(#[from] FormatError),
    /// A block listed as valid did not open again (cannot happen for a [`Recording`] made
    /// by [`Recording::from_bytes`], which decodes every block it keeps).
    #[error("{0}")]
    Block(#[from] BlockError),
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
    bytes: Vec<u8>,
}

/// Offset of the next [`BLOCK_MAGIC`] at or after `from`.
fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(BLOCK_MAGIC.len())
        .position(|w| w == BLOCK_MAGIC)
        .map(|p| p + from)
}

/// Checks the block at the start of `bytes` completely (framing, CRC, decompression,
/// records) and returns its info.
fn check_block(bytes: &[u8]) -> Result<BlockInfo, BlockError> {
    open_block(bytes).map(|(info, _)| info)
}

/// Offset of the next valid block at or after `from` (a magic that merely occurs inside
/// other data does not count).
fn find_valid_block(bytes: &[u8], mut from: usize) -> Option<usize> {
    while let Some(at) = find_magic(bytes, from) {
        if check_block(bytes.get(at..).unwrap_or_default()).is_ok() {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

impl Recording {
    /// Reads and opens the file at `path`.
    pub fn open(path: &Path) -> Result<Recording, ReadError> {
        Self::from_bytes(std::fs::read(path)?)
    }

    /// Opens a recording held in memory.
    ///
    /// The header must be valid. A footer that is absent or fails its checks is treated as
    /// absent (the blocks are still there). The block area (from the header to the footer, or
    /// to the end of the file) is then walked: valid blocks go to `blocks`; bytes that are not
    /// a valid block but are followed by one (damage in the middle) go to `bad_blocks` and the
    /// walk resumes at the next valid block; bytes after the last valid block are counted in
    /// `tail_bytes` (and, when the file has a footer, listed in `bad_blocks` too, since a
    /// finished file should have none).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Recording, ReadError> {
        let (header, header_len) = decode_header(&bytes)?;
        let footer = decode_footer_at_end(&bytes)
            .ok()
            .flatten()
            .filter(|(_, start)| *start >= header_len);
        let scan_end = footer.as_ref().map_or(bytes.len(), |(_, start)| *start);
        let area = bytes.get(..scan_end).unwrap_or_default();
        let mut blocks = Vec::new();
        let mut bad_blocks = Vec::new();
        let mut tail_bytes = 0u64;
        let mut data_end = header_len as u64;
        let mut pos = header_len;
        while pos < scan_end {
            match check_block(area.get(pos..).unwrap_or_default()) {
                Ok(mut info) => {
                    info.offset = pos as u64;
                    pos += info.len;
                    data_end = pos as u64;
                    blocks.push(info);
                }
                Err(e) => match find_valid_block(area, pos + 1) {
                    Some(next) => {
                        bad_blocks.push((pos as u64, e));
                        pos = next;
                    }
                    None => {
                        if footer.is_some() {
                            bad_blocks.push((pos as u64, e));
                        }
                        tail_bytes = (scan_end - pos) as u64;
                        break;
                    }
                },
            }
        }
        Ok(Recording {
            header,
            footer: footer.map(|(f, _)| f),
            blocks,
            bad_blocks,
            tail_bytes,
            data_end,
            bytes,
        })
    }

    /// All records of the valid blocks, in order.
    pub fn records(&self) -> Result<Vec<Record>, ReadError> {
        let mut out = Vec::new();
        for b in &self.blocks {
            let start = usize::try_from(b.offset).unwrap_or(usize::MAX);
            let slice = self.bytes.get(start..).unwrap_or_default();
            out.extend(open_block(slice)?.1);
        }
        Ok(out)
    }

    /// The header's streams, updated by `StreamAdded`/`StreamChanged` events (latest wins).
    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut streams = self.header.streams.clone();
        for r in self.records().unwrap_or_default() {
            if let Record::Event(e) = r {
                if let Event::StreamAdded(s) | Event::StreamChanged(s) = e.event {
                    match streams.iter_mut().find(|x| x.id == s.id) {
                        Some(x) => *x = s,
                        None => streams.push(s),
                    }
                }
            }
        }
        streams
    }

    /// How the recording ended; `None` when it has no footer (in progress or interrupted).
    pub fn completeness(&self) -> Option<Completeness> {
        self.footer.as_ref().map(|f| f.completeness)
    }

    /// Footer present, no damaged block, nothing dangling.
    pub fn is_intact(&self) -> bool {
        self.footer.is_some() && self.bad_blocks.is_empty() && self.tail_bytes == 0
    }
}

/// Per-stream statistics computed from records, in order of each stream's first packet:
/// packets, payload bytes, first/last arrival, RTP loss (RFC 3550 A.3: expected − received
/// per SSRC run, 16-bit sequence wrap handled) and interarrival jitter (RFC 3550 A.8) in the
/// clock rate of each packet's payload type, as announced by `StreamAdded`/`StreamChanged`
/// events before it (else the static RTP payload type table, else 8000 Hz).
pub fn stats_from_records(records: &[Record]) -> Vec<StreamStats> {
    stats_with_streams(records, &[])
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

/// [`stats_from_records`] with the streams known before the first record (the header's).
fn stats_with_streams(records: &[Record], known: &[StreamInfo]) -> Vec<StreamStats> {
    /// Running state of one stream.
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
    let mut codecs: HashMap<StreamId, Vec<CodecInfo>> =
        known.iter().map(|s| (s.id, s.codecs.clone())).collect();
    let mut accs: Vec<Acc> = Vec::new();
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    for r in records {
        let p = match r {
            Record::Event(e) => {
                if let Event::StreamAdded(s) | Event::StreamChanged(s) = &e.event {
                    codecs.insert(s.id, s.codecs.clone());
                }
                continue;
            }
            Record::Packet(p) => p,
        };
        let i = *index.entry(p.stream).or_insert_with(|| {
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
        let Some(a) = accs.get_mut(i) else { continue };
        a.stats.packets += 1;
        a.stats.payload_bytes += p.payload.len() as u64;
        a.stats.first_us = a.stats.first_us.min(p.arrival_us);
        a.stats.last_us = a.stats.last_us.max(p.arrival_us);
        let Some(f) = p.rtp else { continue };
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
        let rate = codecs
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
    accs.into_iter().map(|a| a.stats).collect()
}

/// The footer for a file left unfinished: `Recovered`, the valid blocks, computed stats,
/// and the packets the file itself says were not recorded (`DataLost` events).
pub fn recovery_footer(rec: &Recording, end_unix_ms: u64) -> Footer {
    let records = rec.records().unwrap_or_default();
    let packets_lost = records
        .iter()
        .map(|r| match r {
            Record::Event(e) => match e.event {
                Event::DataLost { packets } => packets,
                _ => 0,
            },
            Record::Packet(_) => 0,
        })
        .sum();
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
        streams: stats_with_streams(&records, &rec.header.streams),
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

    proptest::proptest! {
        #[test]
        fn opening_garbage_never_panics(data: Vec<u8>) {
            let mut f = Vec::new();
            encode_header(&sample_header(), &mut f);
            f.extend_from_slice(&data);
            if let Ok(r) = Recording::from_bytes(f) {
                let _ = r.records();
                let _ = r.streams();
            }
            let _ = Recording::from_bytes(data);
        }
    }
}
