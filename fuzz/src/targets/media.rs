//! The media path: frames the XDP program hands to the AF_XDP workers, and the packet
//! sequences that reach the media core on any media port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use linecord_recfile::block::{open_block, seal};
use linecord_recfile::StopReason;
use recorder::media::core::{Component, EndpointConfig, Latching, MediaCore};
use recorder::media::frame::{self, Rewrite};
use recorder::media::record::{
    BufferPool, RecordOutput, RecordTap, RecordingShared, RecordingTable,
};

/// Parses a frame; a frame that parses is rewritten for forwarding (same address family),
/// and the rewritten frame must parse to the new addresses with the same payload.
pub fn frame(data: &[u8]) {
    let Ok(f) = frame::parse(data) else {
        return;
    };
    assert!(
        f.payload + f.payload_len <= data.len(),
        "payload {}+{} runs past the {}-byte frame",
        f.payload,
        f.payload_len,
        data.len()
    );
    let (source, destination) = match f.source.ip() {
        IpAddr::V4(_) => (
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 30_002),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 20)), 4_000),
        ),
        IpAddr::V6(_) => (
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1)),
                30_002,
            ),
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x20)),
                4_000,
            ),
        ),
    };
    let r = Rewrite {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        source,
        destination,
    };
    let mut out = data.to_vec();
    if frame::rewrite(&mut out, &f, &r).is_ok() {
        let g = frame::parse(&out).expect("a rewritten frame parses");
        assert_eq!((g.source, g.destination), (source, destination));
        assert_eq!(
            &out[g.payload..g.payload + g.payload_len],
            &data[f.payload..f.payload + f.payload_len],
            "the rewrite changed the payload"
        );
    }
}

const A: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)), 4_000);
const B: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 20)), 5_000);
const OTHER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 99)), 6_000);

fn endpoint(port: u16, component: Component, peer: SocketAddr, fwd: u16) -> EndpointConfig {
    EndpointConfig {
        port,
        component,
        peer: Some(peer),
        latching: Latching::Symmetric,
        forward_port: Some(fwd),
        clock_rate: 8_000,
        stats: Arc::default(),
        record: None,
        dtmf_payload_type: Some(101),
    }
}

/// A recorded call (A on ports 30000/30001, B on 30002/30003) receives the packets the input
/// encodes: per packet one control byte (bits 0-1: port, bits 2-3: source A/B/other/A's
/// port+1, bits 4-7: time step), a length byte and that many payload bytes. Pause, resume
/// and a timeout tick are driven by special control bytes. Every block the core seals must
/// open back into records, and the recording ends with its `Stopped` event.
pub fn core(data: &[u8]) {
    let pool = Arc::new(BufferPool::new(1 << 20, 4 * 1024));
    let mut core = MediaCore::new(30_000, 30_099)
        .with_recordings(RecordingTable::new(pool.clone(), 20_000_000));
    let shared = Arc::new(RecordingShared::new(1, "fuzz".into()));
    core.start_recording(shared, 0, 0);
    for (i, (port, comp, peer, fwd)) in [
        (30_000, Component::Rtp, A, 30_002),
        (30_001, Component::Rtcp, A, 30_003),
        (30_002, Component::Rtp, B, 30_000),
        (30_003, Component::Rtcp, B, 30_001),
    ]
    .into_iter()
    .enumerate()
    {
        let mut ep = endpoint(port, comp, peer, fwd);
        ep.record = Some(RecordTap {
            recording: 1,
            stream: i as u16,
        });
        core.upsert(ep);
    }
    let mut now: u64 = 1_000;
    let mut rest = data;
    let mut blocks = 0usize;
    while let [control, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (packet, next) = tail.split_at(n);
        rest = next;
        now += u64::from(control >> 4) * 2_500_000;
        match *control {
            0xff => core.pause_recording(1, true, now),
            0xfe => core.pause_recording(1, false, now),
            0xfd => core.handle_timeout(now),
            c => {
                let port = 30_000 + u16::from(c & 3);
                let source = match (c >> 2) & 3 {
                    0 => A,
                    1 => B,
                    2 => OTHER,
                    _ => SocketAddr::new(A.ip(), A.port() + 1),
                };
                let _ = core.handle_packet(packet, port, source, now);
            }
        }
        blocks += drain(&mut core, &pool, false);
    }
    core.stop_recording(1, StopReason::Deleted, &[], now + 1);
    blocks += drain(&mut core, &pool, true);
    let _ = blocks;
    while core.poll_event().is_some() {}
    let _ = core.counters();
}

/// Takes every output of the core; sealed blocks must open. Returns the number of blocks.
fn drain(core: &mut MediaCore, pool: &BufferPool, expect_finish: bool) -> usize {
    let mut blocks = 0;
    let mut finished = false;
    let mut framed = Vec::new();
    while let Some(out) = core.poll_record_output() {
        match out {
            RecordOutput::Block { block, .. } => {
                framed.clear();
                seal(&block, &mut framed);
                if let Err(e) = open_block(&framed) {
                    panic!("a block sealed by the media core does not open: {e}");
                }
                pool.give(block);
                blocks += 1;
            }
            RecordOutput::Finished { .. } => finished = true,
        }
    }
    if expect_finish {
        assert!(finished, "a stopped recording did not finish");
    }
    blocks
}
