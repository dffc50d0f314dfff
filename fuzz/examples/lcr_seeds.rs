//! Writes the `.lcr` seeds of the `lcr_read` and `lcr_export` targets into `fuzz/corpus/`:
//! a finished two-party call (G.711 both ways, pause/resume, DTMF, an SSRC change, RTCP), the
//! same call torn mid-block as a crash leaves it (no footer), and a call whose blocks were
//! compressed. Run it after a change of the recording format:
//! `cargo run -p linecord-fuzz --example lcr_seeds`.

use std::path::Path;

use linecord_recfile::block::{seal, BlockBuilder};
use linecord_recfile::format::{encode_footer, encode_header};
use linecord_recfile::reader::{recovery_footer, Recording};
use linecord_recfile::{
    CodecInfo, Completeness, Component, Event, EventRecord, FileHeader, PartyInfo, RtpFields,
    StopReason, StreamInfo,
};

fn stream(id: u16, party: u8, component: Component) -> StreamInfo {
    StreamInfo {
        id,
        party,
        media_index: 0,
        component,
        source: format!("198.18.0.{}:4000", 10 * (party + 1)),
        destination: format!("198.18.0.1:{}", 30_000 + id),
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

/// A call of `packets` 20 ms packets per party; `payload` makes the audio compressible or not.
fn call(packets: u16, payload: impl Fn(u16) -> Vec<u8>) -> (FileHeader, Vec<u8>) {
    let header = FileHeader {
        recording_id: "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6071".into(),
        call_id: "a84b4c76e66710@198.18.0.10".into(),
        start_unix_ms: 1_796_000_000_000,
        metadata: Some("agent=1001".into()),
        parties: vec![
            PartyInfo {
                tag: "1928301774".into(),
                label: Some("caller".into()),
                sdp: b"v=0\r\nm=audio 4000 RTP/AVP 0 101\r\n".to_vec(),
            },
            PartyInfo {
                tag: "a6c85cf".into(),
                label: None,
                sdp: Vec::new(),
            },
        ],
        streams: vec![stream(0, 0, Component::Rtp), stream(2, 1, Component::Rtp)],
    };
    let mut file = Vec::new();
    encode_header(&header, &mut file);
    let mut b = BlockBuilder::with_capacity(4096);
    let event = |b: &mut BlockBuilder, at_us: u64, event: Event| {
        b.push_event(&EventRecord { at_us, event })
    };
    event(&mut b, 0, Event::Started);
    event(&mut b, 5, Event::StreamAdded(stream(1, 0, Component::Rtcp)));
    for i in 0..packets {
        let at = u64::from(i) * 20_000;
        if i == packets / 3 {
            event(&mut b, at, Event::Paused);
        }
        if i == packets / 2 {
            event(&mut b, at, Event::Resumed);
            event(
                &mut b,
                at + 1,
                Event::Dtmf {
                    stream: 0,
                    event: 5,
                    duration: 800,
                    volume: 10,
                },
            );
        }
        if i == packets - 5 {
            event(
                &mut b,
                at,
                Event::SsrcChanged {
                    stream: 2,
                    old: 9,
                    new: 10,
                },
            );
        }
        for (sid, ssrc) in [(0u16, 7u32), (2, if i >= packets - 5 { 10 } else { 9 })] {
            let rtp = RtpFields {
                marker: i == 0,
                payload_type: 0,
                sequence: 1000 + i,
                timestamp: u32::from(i) * 160,
                ssrc,
            };
            b.push_packet(sid, at + u64::from(sid) * 3, Some(&rtp), &payload(i));
        }
        if i % 25 == 0 {
            b.push_packet(1, at + 7, None, b"\x80\xc8\x00\x06\x00\x00\x00\x07rtcp-sr.");
        }
        if b.len() > 3000 {
            seal(&b, &mut file);
            b.clear();
        }
    }
    event(
        &mut b,
        u64::from(packets) * 20_000,
        Event::Stopped(StopReason::Deleted),
    );
    seal(&b, &mut file);
    (header, file)
}

fn finish(header: &FileHeader, mut file: Vec<u8>) -> Vec<u8> {
    let rec = Recording::from_bytes(file.clone()).expect("the seed opens");
    let mut footer = recovery_footer(&rec, header.start_unix_ms + 2_000);
    footer.completeness = Completeness::Complete;
    encode_footer(&footer, &mut file);
    file
}

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    // Noise-like payloads do not compress: stored blocks. Silence compresses: lz4 blocks.
    let noise = |i: u16| {
        (0..40u16)
            .map(|k| (k.wrapping_mul(31).wrapping_add(i.wrapping_mul(17)) % 251) as u8)
            .collect()
    };
    let silence = |_| vec![0xffu8; 160];
    let (h, plain) = call(60, noise);
    let finished = finish(&h, plain.clone());
    let torn = plain[..plain.len() - 37].to_vec();
    let (h2, quiet) = call(100, silence);
    let compressed = finish(&h2, quiet);
    for target in ["lcr_read", "lcr_export"] {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("finished-call.lcr"), &finished)?;
        std::fs::write(dir.join("torn-no-footer.lcr"), &torn)?;
        std::fs::write(dir.join("compressed-call.lcr"), &compressed)?;
        println!("wrote 3 seeds into {}", dir.display());
    }
    Ok(())
}
