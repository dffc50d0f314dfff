//! Analysis of one recording: talk time, silence and overtalk from the decoded audio, and
//! packet loss, jitter and an E-model MOS estimate from the per-stream statistics.
//!
//! The arithmetic ([`activity`], [`r_factor`], [`mos_from_r`], [`direction_quality`]) is
//! pure and unit-tested; [`analyse`] applies it to an opened [`Recording`], reading its
//! blocks one at a time.
//!
//! **Voice activity.** The stereo audio of the WAV export (caller left, callee right,
//! 8000 Hz) is cut into 20 ms frames; a frame of a channel is *talk* when its RMS level is
//! at least [`VOICE_RMS_THRESHOLD`] (about −40 dBFS, above G.711 idle noise, below quiet
//! speech). Talk per channel, overtalk (both talk) and silence (neither talks) are counted
//! in frames. The audio is not assembled: [`ActivitySink`] takes it as it leaves the
//! exporter's reorder window, and the silence between packets arrives as a run length that
//! is counted arithmetically, so an hour of silence costs what a packet costs.
//!
//! **MOS.** ITU-T G.107 E-model, simplified for G.711 (Ie = 0) with the default values of
//! everything that is not measured: `R = 93.2 − Id − Ie_eff`, with
//! `Ie_eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)` (Ppl: packet loss in %,
//! [`BPL_G711`] = 4.3 for G.711 without packet loss concealment (G.113 Appendix I),
//! [`BURST_R`] = 1: random loss), and the delay impairment
//! `Id = 0.024 · Ta + 0.11 · (Ta − 177.3) · H(Ta − 177.3)` on the one-way delay estimate
//! `Ta = ` [`BASE_DELAY_MS`] ` + 2 · jitter` (a jitter buffer twice the measured jitter).
//! MOS = 1 for R < 0, 4.5 for R > 100, else `1 + 0.035 R + R (R − 60) (100 − R) · 7·10⁻⁶`.
//! The recording's MOS is the worse of its two directions.

use std::collections::HashMap;

use linecord_recfile::export::{render_recording, StereoSink, WavOptions};
use linecord_recfile::reader::Recording;
use linecord_recfile::{Component, StreamInfo, StreamStats};

use crate::model::Analysis;

/// Samples per analysis frame (20 ms at 8000 Hz).
pub const FRAME_SAMPLES: usize = 160;
/// Length of an analysis frame, ms.
pub const FRAME_MS: u64 = 20;
/// RMS level (16-bit linear) from which a frame counts as talk: about −40 dBFS.
pub const VOICE_RMS_THRESHOLD: f64 = 328.0;
/// G.107 default basic signal-to-noise ratio minus simultaneous impairments (R0 − Is).
pub const R_DEFAULT: f64 = 93.2;
/// Packet-loss robustness factor of G.711 without PLC (G.113 Appendix I).
pub const BPL_G711: f64 = 4.3;
/// Burst ratio: 1 = random loss (the recorder does not measure burstiness).
pub const BURST_R: f64 = 1.0;
/// One-way delay assumed besides the jitter buffer: 20 ms packetisation, 10 ms codec and
/// device, 20 ms network.
pub const BASE_DELAY_MS: f64 = 50.0;

/// Talk, silence and overtalk of a stereo recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    /// Talk per channel, ms.
    pub talk_ms: [u64; 2],
    /// Neither channel talks, ms.
    pub silence_ms: u64,
    /// Both channels talk, ms.
    pub overtalk_ms: u64,
    /// Length analysed, ms (whole frames; a last partial frame counts as a frame).
    pub total_ms: u64,
}

/// Whether a frame's RMS reaches [`VOICE_RMS_THRESHOLD`].
fn is_talk(frame: &[i16]) -> bool {
    if frame.is_empty() {
        return false;
    }
    let energy: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (energy / frame.len() as f64).sqrt() >= VOICE_RMS_THRESHOLD
}

/// Voice activity of two channels (see the module documentation). The shorter channel is
/// taken as silent where it has no samples.
pub fn activity(left: &[i16], right: &[i16]) -> Activity {
    let n = left.len().max(right.len());
    let frames = n.div_ceil(FRAME_SAMPLES);
    let mut a = Activity::default();
    for f in 0..frames {
        let range = |ch: &[i16]| {
            let lo = (f * FRAME_SAMPLES).min(ch.len());
            let hi = ((f + 1) * FRAME_SAMPLES).min(ch.len());
            is_talk(&ch[lo..hi])
        };
        let (l, r) = (range(left), range(right));
        a.talk_ms[0] += u64::from(l) * FRAME_MS;
        a.talk_ms[1] += u64::from(r) * FRAME_MS;
        match (l, r) {
            (true, true) => a.overtalk_ms += FRAME_MS,
            (false, false) => a.silence_ms += FRAME_MS,
            _ => {}
        }
    }
    a.total_ms = frames as u64 * FRAME_MS;
    a
}

/// Voice activity of audio delivered frame by frame and silence by run length (see the
/// module documentation); the same result as [`activity`] on the whole channels.
#[derive(Debug, Clone, Default)]
pub struct ActivitySink {
    /// Samples in the current frame so far.
    filled: usize,
    /// Sum of squares of the current frame's samples, per channel.
    energy: [f64; 2],
    /// Frames closed so far.
    frames: u64,
    activity: Activity,
}

impl ActivitySink {
    fn close_frame(&mut self) {
        let n = self.filled as f64;
        let talk = self.energy.map(|e| (e / n).sqrt() >= VOICE_RMS_THRESHOLD);
        self.activity.talk_ms[0] += u64::from(talk[0]) * FRAME_MS;
        self.activity.talk_ms[1] += u64::from(talk[1]) * FRAME_MS;
        match talk {
            [true, true] => self.activity.overtalk_ms += FRAME_MS,
            [false, false] => self.activity.silence_ms += FRAME_MS,
            _ => {}
        }
        self.frames += 1;
        self.filled = 0;
        self.energy = [0.0; 2];
    }

    /// The activity of everything delivered (a last partial frame counts as a frame).
    pub fn finish(mut self) -> Activity {
        if self.filled > 0 {
            self.close_frame();
        }
        self.activity.total_ms = self.frames * FRAME_MS;
        self.activity
    }
}

impl StereoSink for ActivitySink {
    fn audio(&mut self, left: &[i16], right: &[i16]) -> std::io::Result<()> {
        for (&l, &r) in left.iter().zip(right) {
            self.energy[0] += f64::from(l) * f64::from(l);
            self.energy[1] += f64::from(r) * f64::from(r);
            self.filled += 1;
            if self.filled == FRAME_SAMPLES {
                self.close_frame();
            }
        }
        Ok(())
    }

    fn silence(&mut self, frames: u64) -> std::io::Result<()> {
        let mut left = frames;
        if self.filled > 0 {
            let k = left.min((FRAME_SAMPLES - self.filled) as u64);
            self.filled += k as usize;
            left -= k;
            if self.filled == FRAME_SAMPLES {
                self.close_frame();
            } else {
                return Ok(());
            }
        }
        // Whole silent frames, counted; the rest starts a frame of zeros.
        let whole = left / FRAME_SAMPLES as u64;
        self.activity.silence_ms = self
            .activity
            .silence_ms
            .saturating_add(whole.saturating_mul(FRAME_MS));
        self.frames = self.frames.saturating_add(whole);
        self.filled = (left % FRAME_SAMPLES as u64) as usize;
        Ok(())
    }
}

/// Splits a 16-bit stereo PCM WAV with the 44-byte header of
/// [`linecord_recfile::export::wav_header`] into its two channels. `None` if it is not one.
pub fn stereo_from_wav(wav: &[u8]) -> Option<(Vec<i16>, Vec<i16>)> {
    let head = wav.get(..44)?;
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" || &head[36..40] != b"data" {
        return None;
    }
    let channels = u16::from_le_bytes([head[22], head[23]]);
    let bits = u16::from_le_bytes([head[34], head[35]]);
    if channels != 2 || bits != 16 {
        return None;
    }
    let data = wav.get(44..)?;
    let frames = data.len() / 4;
    let mut l = Vec::with_capacity(frames);
    let mut r = Vec::with_capacity(frames);
    for fr in data.chunks_exact(4) {
        l.push(i16::from_le_bytes([fr[0], fr[1]]));
        r.push(i16::from_le_bytes([fr[2], fr[3]]));
    }
    Some((l, r))
}

/// The E-model transmission rating for G.711 with `loss` (fraction 0..1) of the packets
/// lost at random and `jitter_ms` of interarrival jitter (see the module documentation).
pub fn r_factor(loss: f64, jitter_ms: f64) -> f64 {
    let ppl = (loss.clamp(0.0, 1.0)) * 100.0;
    let ie = 0.0;
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl / BURST_R + BPL_G711);
    let ta = BASE_DELAY_MS + 2.0 * jitter_ms.max(0.0);
    let id = 0.024 * ta + if ta > 177.3 { 0.11 * (ta - 177.3) } else { 0.0 };
    R_DEFAULT - id - ie_eff
}

/// MOS (1..4.5) from an R factor (ITU-T G.107 Annex B). The polynomial dips slightly
/// below 1 for 0 < R < 6.5; the result is clamped to 1 there so it never rises with loss.
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6).max(1.0)
    }
}

/// Quality of one direction (the RTP a party sent).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Direction {
    /// Packets received (recorded).
    pub packets: u64,
    /// Packets lost in transit (negative counts from duplicates are taken as 0).
    pub lost: u64,
    /// Interarrival jitter, ms (the largest of the party's streams).
    pub jitter_ms: f64,
}

impl Direction {
    /// `lost / (packets + lost)`, `None` without packets.
    pub fn loss(&self) -> Option<f64> {
        let expected = self.packets + self.lost;
        (expected > 0).then(|| self.lost as f64 / expected as f64)
    }
}

/// MOS of a direction, `None` without packets.
pub fn direction_quality(d: &Direction) -> Option<f64> {
    d.loss().map(|loss| mos_from_r(r_factor(loss, d.jitter_ms)))
}

/// Clock rate of a stream: its first codec that is not `telephone-event`/`CN`, else 8000.
fn clock_rate(s: Option<&StreamInfo>) -> u32 {
    s.and_then(|s| {
        s.codecs
            .iter()
            .find(|c| {
                !c.name.eq_ignore_ascii_case("telephone-event")
                    && !c.name.eq_ignore_ascii_case("CN")
            })
            .map(|c| c.clock_rate)
    })
    .filter(|&r| r > 0)
    .unwrap_or(8000)
}

/// Per-party quality from stream statistics and the streams' descriptions (RTP streams
/// only; streams of parties other than 0 and 1 are ignored).
pub fn directions(stats: &[StreamStats], streams: &[StreamInfo]) -> [Direction; 2] {
    let by_id: HashMap<u16, &StreamInfo> = streams.iter().map(|s| (s.id, s)).collect();
    let mut out = [Direction::default(); 2];
    for st in stats {
        let info = by_id.get(&st.stream).copied();
        // Streams without a description follow the recorder's numbering.
        let party = info.map_or(((st.stream >> 1) & 1) as u8, |s| s.party);
        let rtp = info.map_or(st.stream & 1 == 0, |s| s.component == Component::Rtp);
        if !rtp || party > 1 {
            continue;
        }
        let d = &mut out[usize::from(party)];
        d.packets += st.packets;
        d.lost += u64::try_from(st.lost).unwrap_or(0);
        let jitter_ms = f64::from(st.jitter) * 1000.0 / f64::from(clock_rate(info));
        d.jitter_ms = d.jitter_ms.max(jitter_ms);
    }
    out
}

/// What [`analyse`] found besides the numbers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnalysisNotes {
    /// Why there is no audio analysis (no G.711 audio, unsupported codec), if so.
    pub audio: Option<String>,
}

/// Analyses an opened recording: audio activity from its WAV export's audio (streamed, see
/// the module documentation; nothing is placed outside the recording's span), quality from
/// the footer's stream statistics (or, for a file without a footer, statistics computed
/// from the records that could be read). Never fails: what cannot be analysed is left
/// empty and explained in the notes. Memory stays bounded whatever the call's length (one
/// block and the exporter's window).
pub fn analyse(rec: &Recording) -> (Analysis, AnalysisNotes) {
    let streams = rec.streams();
    let mut notes = AnalysisNotes::default();
    let mut a = Analysis::default();

    let mut sink = ActivitySink::default();
    // No duration cap: silence costs nothing here, and the span bounds the timeline.
    let opts = WavOptions {
        max_samples: u64::MAX,
        span_us: None,
    };
    match render_recording(rec, &opts, &mut sink) {
        Ok(_) => {
            let act = sink.finish();
            a.talk_ms = act.talk_ms;
            a.silence_ms = act.silence_ms;
            a.overtalk_ms = act.overtalk_ms;
            a.audio_ms = act.total_ms;
        }
        Err(e) => notes.audio = Some(e.to_string()),
    }

    let stats = match &rec.footer {
        Some(f) => f.streams.clone(),
        None => rec.computed_stats(),
    };
    let dirs = directions(&stats, &streams);
    for (i, d) in dirs.iter().enumerate() {
        a.packet_loss[i] = d.loss();
        a.jitter_ms[i] = d.loss().map(|_| (d.jitter_ms * 100.0).round() / 100.0);
    }
    a.packets_expected = dirs.iter().map(|d| d.packets + d.lost).sum();
    a.packets_lost = dirs.iter().map(|d| d.lost).sum();
    a.mos = dirs
        .iter()
        .filter_map(direction_quality)
        .min_by(|x, y| x.total_cmp(y))
        .map(|m| (m * 100.0).round() / 100.0);
    (a, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amp * (i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin()) as i16)
            .collect()
    }

    #[test]
    fn talk_silence_and_overtalk_on_synthetic_pcm() {
        // 3 s: left talks 0–2 s, right talks 1–3 s, a quiet hiss everywhere else.
        let sec = 8000;
        let hiss = |n| tone(n, 50.0);
        let mut left = tone(2 * sec, 8000.0);
        left.extend(hiss(sec));
        let mut right = hiss(sec);
        right.extend(tone(2 * sec, 8000.0));
        let a = activity(&left, &right);
        assert_eq!(a.talk_ms, [2000, 2000]);
        assert_eq!(a.overtalk_ms, 1000);
        assert_eq!(a.silence_ms, 0);
        assert_eq!(a.total_ms, 3000);

        // A second of silence at the end of one channel only (the other is shorter).
        let a = activity(&tone(sec, 8000.0), &[]);
        assert_eq!(a.talk_ms, [1000, 0]);
        let a = activity(&tone(sec, 8000.0), &vec![0; 2 * sec]);
        assert_eq!(a.talk_ms, [1000, 0]);
        assert_eq!(a.silence_ms, 1000);
        assert_eq!(a.overtalk_ms, 0);
        // A partial last frame counts as one frame.
        assert_eq!(activity(&tone(170, 8000.0), &[]).total_ms, 40);
        assert_eq!(activity(&[], &[]), Activity::default());
    }

    #[test]
    fn wav_bytes_split_into_channels() {
        let mut wav = linecord_recfile::export::wav_header(8000, 2, 2).to_vec();
        for s in [1i16, -2, 3, -4] {
            wav.extend_from_slice(&s.to_le_bytes());
        }
        assert_eq!(stereo_from_wav(&wav), Some((vec![1, 3], vec![-2, -4])));
        assert_eq!(stereo_from_wav(&wav[..40]), None);
        let mono = linecord_recfile::export::wav_header(8000, 1, 2);
        assert_eq!(stereo_from_wav(&mono), None);
    }

    #[test]
    fn mos_falls_with_loss_and_jitter() {
        let perfect = mos_from_r(r_factor(0.0, 0.0));
        // R = 93.2 − 0.024·50 = 92.0 → MOS ≈ 4.38.
        assert!((r_factor(0.0, 0.0) - 92.0).abs() < 1e-9);
        assert!((perfect - 4.385).abs() < 0.005, "{perfect}");
        // 1 % random loss, G.711 without PLC: Ie_eff = 95·1/(1+4.3) ≈ 17.92 → R ≈ 74.08.
        let r1 = r_factor(0.01, 0.0);
        assert!((r1 - (92.0 - 95.0 / 5.3)).abs() < 1e-9, "{r1}");
        let m1 = mos_from_r(r1);
        assert!((3.7..3.85).contains(&m1), "{m1}");
        // 5 % loss is poor, 50 % is unusable.
        let m5 = mos_from_r(r_factor(0.05, 0.0));
        assert!(m5 < 2.8 && m5 > 1.5, "{m5}");
        assert!(mos_from_r(r_factor(0.5, 0.0)) < 1.5);
        // Jitter adds delay: a large jitter lowers the MOS, beyond 177.3 ms steeply.
        assert!(mos_from_r(r_factor(0.0, 100.0)) < perfect - 0.1);
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        // Monotonic in loss.
        let mut last = 5.0;
        for p in 0..=100 {
            let m = mos_from_r(r_factor(f64::from(p) / 100.0, 5.0));
            assert!(m <= last + 1e-12, "{p}");
            last = m;
        }
    }

    #[test]
    fn directions_from_stream_stats() {
        let stats = [
            StreamStats {
                stream: 0,
                packets: 98,
                lost: 2,
                jitter: 80,
                ..StreamStats::default()
            },
            StreamStats {
                stream: 1,
                packets: 5,
                ..StreamStats::default()
            },
            StreamStats {
                stream: 2,
                packets: 100,
                lost: -3,
                jitter: 16,
                ..StreamStats::default()
            },
        ];
        let d = directions(&stats, &[]);
        assert_eq!(d[0].packets, 98, "RTCP stream 1 is not counted");
        assert_eq!(d[0].loss(), Some(0.02));
        assert!((d[0].jitter_ms - 10.0).abs() < 1e-9);
        assert_eq!(d[1].loss(), Some(0.0), "duplicates are not negative loss");
        assert!((d[1].jitter_ms - 2.0).abs() < 1e-9);
        assert_eq!(Direction::default().loss(), None);
        assert_eq!(direction_quality(&Direction::default()), None);
        let q0 = direction_quality(&d[0]).expect("mos");
        let q1 = direction_quality(&d[1]).expect("mos");
        assert!(q0 < q1);
    }

    #[test]
    fn the_streaming_sink_counts_like_the_whole_channels() {
        // Talk, hiss and digital silence in odd-sized pieces, some as silence runs.
        let pieces: Vec<(usize, f64, bool)> = vec![
            (1000, 8000.0, false),
            (37, 0.0, true),
            (3333, 50.0, false),
            (16_000, 0.0, true),
            (161, 9000.0, false),
            (159, 0.0, true),
            (800, 400.0, false),
            (1, 0.0, true),
        ];
        let (mut left, mut right) = (Vec::new(), Vec::new());
        let mut sink = ActivitySink::default();
        for (i, &(n, amp, silent)) in pieces.iter().enumerate() {
            if silent {
                left.extend(std::iter::repeat_n(0, n));
                right.extend(std::iter::repeat_n(0, n));
                sink.silence(n as u64).expect("sink");
            } else {
                let l = tone(n, amp);
                let r = if i % 2 == 0 {
                    tone(n, amp / 2.0)
                } else {
                    vec![0; n]
                };
                left.extend_from_slice(&l);
                right.extend_from_slice(&r);
                sink.audio(&l, &r).expect("sink");
            }
        }
        assert_eq!(sink.finish(), activity(&left, &right));
        // Hours of silence are counted, not iterated.
        let mut sink = ActivitySink::default();
        sink.audio(&tone(100, 8000.0), &[0; 100]).expect("sink");
        sink.silence(8 * 3600 * 8000).expect("sink");
        let a = sink.finish();
        assert_eq!(a.total_ms, 8 * 3600 * 1000 + 20);
        assert_eq!(a.talk_ms, [20, 0]);
        assert_eq!(a.silence_ms, 8 * 3600 * 1000);
    }
}
