//! Known audio for sipp: RTP/PCMU pcap files that sipp's `play_pcap_audio` replays, as the
//! parties' voices of the demo and the end-to-end tests (`sipctl demo-audio`).

use std::io;
use std::path::Path;

/// 8 kHz samples of a sine tone.
pub fn tone(hz: f64, seconds: f64) -> Vec<i16> {
    let n = (seconds * 8000.0) as usize;
    (0..n)
        .map(|i| ((2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin() * 8000.0) as i16)
        .collect()
}

/// 8 kHz samples of a speech-like voice around `f0` Hz: a buzz with harmonics, syllables
/// four times a second and a pause every 2.5 s, so it sounds like talking.
pub fn voice(f0: f64, seconds: f64) -> Vec<i16> {
    let n = (seconds * 8000.0) as usize;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let f = f0 * (1.0 + 0.15 * (2.0 * std::f64::consts::PI * 0.7 * t).sin());
            phase += 2.0 * std::f64::consts::PI * f / 8000.0;
            let buzz: f64 = (1..8).map(|h| (phase * h as f64).sin() / h as f64).sum();
            let syllable = (2.0 * std::f64::consts::PI * 4.0 * t).sin().abs();
            let pause = if (t % 2.5) > 2.1 { 0.05 } else { 1.0 };
            (buzz * syllable * pause * 6000.0) as i16
        })
        .collect()
}

/// 8 kHz samples of one side of a conversation: [`voice`] at `f0` in turns of `turn` seconds,
/// talking in the first turn when `first`, silent in the other party's turns.
pub fn conversation(f0: f64, seconds: f64, turn: f64, first: bool) -> Vec<i16> {
    let mut v = voice(f0, seconds);
    for (i, s) in v.iter_mut().enumerate() {
        let t = i as f64 / 8000.0;
        let mine = ((t / turn) as u64).is_multiple_of(2) == first;
        if !mine {
            *s = 0;
        }
    }
    v
}

/// Writes `samples` as 20 ms PCMU RTP packets in a classic pcap (Ethernet/IPv4/UDP, the
/// addresses are placeholders: sipp sends the RTP payloads to the negotiated address).
pub fn write_pcap(path: &Path, samples: &[i16]) -> io::Result<()> {
    let mut f = Vec::with_capacity(samples.len() + samples.len() / 160 * 60 + 24);
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (i, chunk) in samples.chunks_exact(160).enumerate() {
        let mut rtp = vec![0x80u8, 0];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&((i * 160) as u32).to_be_bytes());
        rtp.extend_from_slice(&0x5151_0000u32.to_be_bytes());
        rtp.extend(
            chunk
                .iter()
                .map(|s| linecord_recfile::g711::linear_to_ulaw(*s)),
        );
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        frame.extend_from_slice(&[198, 18, 0, 10, 198, 18, 0, 20]);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let us = i as u64 * 20_000;
        f.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&frame);
    }
    std::fs::write(path, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_holds_one_frame_per_20_ms() {
        let dir = std::env::temp_dir().join(format!("sipctl-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.pcap");
        write_pcap(&p, &tone(440.0, 1.0)).unwrap();
        let b = std::fs::read(&p).unwrap();
        // 24-byte header + 50 × (16 + 14 + 20 + 8 + 172).
        assert_eq!(b.len(), 24 + 50 * (16 + 14 + 20 + 8 + 172));
        assert_eq!(&b[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(voice(120.0, 0.5).len(), 4000);
        // Turns: A talks in [0, 1) s and [2, 3) s, B in [1, 2) s.
        let (a, b) = (
            conversation(120.0, 3.0, 1.0, true),
            conversation(200.0, 3.0, 1.0, false),
        );
        let loud = |x: &[i16]| x.iter().any(|s| s.abs() > 100);
        assert!(loud(&a[..8000]) && !loud(&a[8000..16000]) && loud(&a[16000..]));
        assert!(!loud(&b[..8000]) && loud(&b[8000..16000]) && !loud(&b[16000..]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
