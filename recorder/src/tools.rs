//! The offline subcommands: `recorder inspect FILE` and `recorder export FILE --wav|--pcap OUT`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use std::ops::ControlFlow;

use linecord_recfile::export::{write_recording_pcap, write_recording_wav, WavOptions};
use linecord_recfile::reader::Recording;
use linecord_recfile::{Completeness, Component, Event, Record};

use crate::recording::store::rfc3339;

/// Prints a recording's header, streams, events, statistics and integrity. Returns whether
/// the file is intact.
pub fn inspect(path: &Path, out: &mut impl Write) -> anyhow::Result<bool> {
    let rec = Recording::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let h = &rec.header;
    writeln!(out, "recording  {}", h.recording_id)?;
    writeln!(out, "call-id    {}", h.call_id)?;
    writeln!(out, "start      {}", rfc3339(h.start_unix_ms))?;
    if let Some(m) = &h.metadata {
        writeln!(out, "metadata   {m}")?;
    }
    for (i, p) in h.parties.iter().enumerate() {
        let label = p
            .label
            .as_deref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        writeln!(out, "party {i}    tag {}{label}", p.tag)?;
    }
    // Everything below streams over the blocks: memory stays bounded whatever the file holds.
    let computed = rec.computed_stats();
    writeln!(out, "streams")?;
    for s in rec.streams() {
        let codecs: Vec<String> = s
            .codecs
            .iter()
            .map(|c| format!("{}/{}({})", c.name, c.clock_rate, c.payload_type))
            .collect();
        let st = rec
            .footer
            .as_ref()
            .and_then(|f| f.streams.iter().find(|x| x.stream == s.id))
            .or_else(|| computed.iter().find(|x| x.stream == s.id))
            .copied()
            .unwrap_or_default();
        writeln!(
            out,
            "  #{:<3} party {} media {} {:<4} {} -> {}  packets {} bytes {} lost {} jitter {}  [{}]",
            s.id,
            s.party,
            s.media_index,
            if s.component == Component::Rtp { "RTP" } else { "RTCP" },
            if s.source.is_empty() { "?" } else { &s.source },
            s.destination,
            st.packets,
            st.payload_bytes,
            st.lost,
            st.jitter,
            codecs.join(" ")
        )?;
    }
    writeln!(out, "events")?;
    let mut packets = 0u64;
    let mut written = Ok(());
    // A Break only comes from a failed write, reported just below.
    let _ = rec
        .visit_records(|r| {
            match r {
                Record::Packet(_) => packets += 1,
                Record::Event(e) => {
                    let what = match &e.event {
                        Event::StreamAdded(s) => format!("stream #{} added", s.id),
                        Event::StreamChanged(s) => format!("stream #{} changed", s.id),
                        other => format!("{other:?}"),
                    };
                    written = writeln!(out, "  {:>10.3} s  {what}", e.at_us as f64 / 1e6);
                    if written.is_err() {
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        })
        .context("decoding blocks")?;
    written?;
    writeln!(out, "packets    {packets} in {} blocks", rec.blocks.len())?;
    match &rec.footer {
        Some(f) => writeln!(
            out,
            "footer     {:?}, ended {}, {} packets not recorded",
            f.completeness,
            rfc3339(f.end_unix_ms),
            f.packets_lost
        )?,
        None => writeln!(
            out,
            "footer     missing (recording in progress or interrupted)"
        )?,
    }
    let intact = rec.is_intact();
    if intact {
        writeln!(out, "integrity  ok")?;
    } else {
        writeln!(
            out,
            "integrity  PROBLEMS: {} bad blocks{}, {} trailing bytes",
            rec.bad_blocks.len(),
            rec.bad_blocks
                .iter()
                .map(|(off, e)| format!(" [offset {off}: {e}]"))
                .collect::<String>(),
            rec.tail_bytes
        )?;
    }
    if rec.completeness() == Some(Completeness::Incomplete) {
        writeln!(
            out,
            "note       some packets were not recorded (see the DataLost events)"
        )?;
    }
    Ok(intact)
}

/// Export format.
#[derive(Debug, Clone)]
pub enum ExportTo {
    /// Stereo 16-bit WAV, one channel per party.
    Wav(PathBuf),
    /// Classic pcap of the RTP/RTCP streams.
    Pcap(PathBuf),
}

/// Writes a WAV or pcap of a recording; returns a one-line summary.
pub fn export(path: &Path, to: &ExportTo) -> anyhow::Result<String> {
    let rec = Recording::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let out_path = match to {
        ExportTo::Wav(p) | ExportTo::Pcap(p) => p,
    };
    let tmp = out_path.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = BufWriter::new(file);
    let line = match to {
        ExportTo::Wav(_) => {
            let s = write_recording_wav(&rec, &WavOptions::default(), &mut w)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut line = format!(
                "{}: {} Hz stereo, {:.1} s, {} packets used, {} skipped",
                out_path.display(),
                s.sample_rate,
                s.samples_per_channel as f64 / f64::from(s.sample_rate.max(1)),
                s.packets_used,
                s.packets_skipped
            );
            if s.packets_outside_span + s.packets_late > 0 {
                line.push_str(&format!(
                    " ({} after the recording's end, {} too late to place)",
                    s.packets_outside_span, s.packets_late
                ));
            }
            if s.truncated {
                line.push_str(" (truncated at the maximum WAV length)");
            }
            line
        }
        ExportTo::Pcap(_) => {
            let s = write_recording_pcap(&rec, &mut w).map_err(|e| anyhow::anyhow!("{e}"))?;
            format!("{}: {} packets", out_path.display(), s.packets)
        }
    };
    w.flush().context("writing the export")?;
    drop(w);
    std::fs::rename(&tmp, out_path)
        .with_context(|| format!("cannot create {}", out_path.display()))?;
    if !rec.is_intact() {
        bail!(
            "{line}\nwarning: the recording is damaged or incomplete; exported what could be read"
        );
    }
    Ok(line)
}
