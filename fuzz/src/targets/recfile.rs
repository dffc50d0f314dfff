//! `.lcr` recordings: what the processor ingests and serves, and what the recorder's start-up
//! recovery reads after a crash (a file may be torn, damaged, or crafted).

use std::io::Write;
use std::ops::ControlFlow;

use linecord_recfile::export::{write_recording_pcap, write_recording_wav, WavOptions};
use linecord_recfile::reader::{recovery_footer, Recording};

/// A `Write` that only counts what it is given.
#[derive(Default)]
struct Counting(u64);

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Opens the bytes as a recording (recovering every complete block), reads every record,
/// the streams, the computed statistics and a recovery footer, as ingest and start-up
/// recovery do. The record iterator and the visitor must agree.
pub fn read(data: &[u8]) {
    let Ok(rec) = Recording::from_bytes(data.to_vec()) else {
        return;
    };
    let mut iterated = 0u64;
    for r in rec.iter_records() {
        if r.is_err() {
            break;
        }
        iterated += 1;
    }
    let mut visited = 0u64;
    let _ = rec.visit_records(|_| {
        visited += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(iterated, visited, "iter_records and visit_records disagree");
    let _ = rec.streams();
    let _ = rec.computed_stats();
    let _ = rec.completeness();
    let _ = rec.is_intact();
    let _ = rec.span_us();
    let _ = recovery_footer(&rec, rec.header.start_unix_ms.saturating_add(1_000));
}

/// At most one minute of WAV per input, as the processor caps durations: the export must
/// stay within it whatever the file claims.
const MAX_SAMPLES: u64 = 8_000 * 60;

/// Exports the recording as WAV (capped) and pcap into counting sinks; the WAV is never
/// longer than its cap.
pub fn export(data: &[u8]) {
    let Ok(rec) = Recording::from_bytes(data.to_vec()) else {
        return;
    };
    let opts = WavOptions {
        max_samples: MAX_SAMPLES,
        span_us: None,
    };
    let mut wav = Counting::default();
    if let Ok(s) = write_recording_wav(&rec, &opts, &mut wav) {
        assert!(
            s.samples_per_channel <= MAX_SAMPLES,
            "{} samples over the cap",
            s.samples_per_channel
        );
        assert_eq!(
            wav.0,
            44 + 4 * s.samples_per_channel,
            "the WAV's size disagrees with its summary"
        );
    }
    let mut pcap = Counting::default();
    let _ = write_recording_pcap(&rec, &mut pcap);
}
