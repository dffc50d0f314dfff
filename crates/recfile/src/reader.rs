//! Reading recordings, whole or damaged, and what recovery needs.
//!
//! [`Recording::from_bytes`] checks the header, looks for the footer at the end, then walks
//! the blocks: every block whose framing and CRC check out is kept; a damaged block is listed
//! in `bad_blocks` and the walk resynchronises at the next block magic; bytes at the end that
//! are neither a complete block nor a footer (an interrupted write) are counted in
//! `tail_bytes`. [`recovery_footer`] builds the footer a crashed file gets.

use std::path::Path;

use crate::block::{decode_records, verify_block, BlockError, BlockInfo, BLOCK_MAGIC};
use crate::format::{decode_footer_at_end, decode_header, FormatError};
use crate::{
    BlockIndexEntry, Completeness, Event, FileHeader, Footer, Record, StreamInfo, StreamStats,
};

/// Why a recording could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The header or footer is invalid.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// A block that passed its CRC did not decode (a writer bug, not corruption).
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

fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(BLOCK_MAGIC.len())
        .position(|w| w == BLOCK_MAGIC)
        .map(|p| p + from)
}

impl Recording {
    /// Reads and opens the file at `path`.
    pub fn open(path: &Path) -> Result<Recording, ReadError> {
        Self::from_bytes(std::fs::read(path)?)
    }

    /// Opens a recording held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Recording, ReadError> {
        let (header, header_len) = decode_header(&bytes)?;
        // A footer that fails its CRC is treated as absent: the blocks are still there.
        let footer = decode_footer_at_end(&bytes).ok().flatten();
        let scan_end = footer.as_ref().map_or(bytes.len(), |(_, start)| *start);
        let area = &bytes[..scan_end];
        let mut blocks = Vec::new();
        let mut bad_blocks = Vec::new();
        let mut tail_bytes = 0u64;
        let mut data_end = header_len as u64;
        let mut pos = header_len;
        while pos < scan_end {
            if !area[pos..].starts_with(&BLOCK_MAGIC) {
                match find_magic(area, pos + 1) {
                    Some(next) => {
                        bad_blocks.push((
                            pos as u64,
                            BlockError::Corrupt("garbage between blocks".into()),
                        ));
                        pos = next;
                        continue;
                    }
                    None => {
                        tail_bytes = (scan_end - pos) as u64;
                        break;
                    }
                }
            }
            match verify_block(&area[pos..]) {
                Ok((mut info, _)) => {
                    info.offset = pos as u64;
                    pos += info.len;
                    data_end = pos as u64;
                    blocks.push(info);
                }
                Err(BlockError::Truncated) if find_magic(area, pos + 1).is_none() => {
                    tail_bytes = (scan_end - pos) as u64;
                    break;
                }
                Err(e) => {
                    bad_blocks.push((pos as u64, e));
                    match find_magic(area, pos + 1) {
                        Some(next) => pos = next,
                        None => {
                            tail_bytes = (scan_end - pos) as u64;
                            break;
                        }
                    }
                }
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
            let (_, raw) = verify_block(slice)?;
            out.extend(decode_records(&raw)?);
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

/// Per-stream statistics computed from records: packets, payload bytes, first/last arrival,
/// RTP loss (expected − received per SSRC run, 16-bit wrap handled) and RFC 3550 A.8 jitter
/// assuming an 8 kHz clock.
pub fn stats_from_records(records: &[Record]) -> Vec<StreamStats> {
    #[derive(Default)]
    struct Acc {
        stats: StreamStats,
        ssrc: Option<u32>,
        first_ext: i64,
        max_ext: i64,
        last_seq: u16,
        received_run: i64,
        lost_before: i64,
        transit: Option<i64>,
        jitter_q4: i64,
    }
    let mut accs: Vec<Acc> = Vec::new();
    for r in records {
        let Record::Packet(p) = r else { continue };
        let i = match accs.iter().position(|a| a.stats.stream == p.stream) {
            Some(i) => i,
            None => {
                accs.push(Acc {
                    stats: StreamStats {
                        stream: p.stream,
                        first_us: p.arrival_us,
                        ..Default::default()
                    },
                    ..Default::default()
                });
                accs.len() - 1
            }
        };
        let a = &mut accs[i];
        a.stats.packets += 1;
        a.stats.payload_bytes += p.payload.len() as u64;
        a.stats.last_us = p.arrival_us;
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
            a.transit = None;
        } else {
            let delta = i64::from(f.sequence.wrapping_sub(a.last_seq) as i16);
            let ext = a.max_ext.max(a.max_ext + delta);
            if delta > 0 {
                a.last_seq = f.sequence;
            }
            a.max_ext = ext;
        }
        a.received_run += 1;
        let arrival_rtp = (p.arrival_us as i64).wrapping_mul(8) / 1000;
        let transit = arrival_rtp - i64::from(f.timestamp);
        if let Some(prev) = a.transit {
            let d = (transit - prev).abs();
            if d < 1 << 24 {
                a.jitter_q4 += d - ((a.jitter_q4 + 8) >> 4);
            }
        }
        a.transit = Some(transit);
        a.stats.lost = a.lost_before + a.max_ext - a.first_ext + 1 - a.received_run;
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
        streams: stats_from_records(&records),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::tests::{call_records, push};
    use crate::block::{seal, BlockBuilder};
    use crate::format::tests::sample_header;
    use crate::format::{encode_footer, encode_header};

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
        for pos in (start..end).step_by(97) {
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
