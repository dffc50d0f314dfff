//! The bench's RTP packets: G.711-sized (12-byte RTP header + 160-byte payload, a 200-byte
//! IP packet), carrying what the receiver needs to measure in the payload.
//!
//! Payload layout (after the RTP header, all big-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic `LCBN` |
//! | 4..8 | trial number (packets of an earlier trial arriving late are not counted) |
//! | 8..12 | stream index (`call * 2 + direction`) |
//! | 12..20 | send time, ns of `CLOCK_MONOTONIC` (one clock for every namespace) |
//! | 20..160 | `0xFF` (PCMU silence) |

/// RTP header bytes.
pub const RTP_HEADER: usize = 12;
/// Payload bytes: 20 ms of G.711 at 8 kHz.
pub const PAYLOAD: usize = 160;
/// UDP payload bytes of a bench packet.
pub const PACKET: usize = RTP_HEADER + PAYLOAD;
/// IP packet bytes (IPv4): what line-rate arithmetic counts.
pub const IP_PACKET: u32 = (PACKET + 8 + 20) as u32;

const MAGIC: [u8; 4] = *b"LCBN";

/// What a received bench packet says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Trial the packet was sent in.
    pub trial: u32,
    /// Stream index.
    pub stream: u32,
    /// Send time, ns of `CLOCK_MONOTONIC`.
    pub sent_ns: u64,
}

/// Writes a whole packet: the fixed parts (done once per buffer slot is enough, but
/// cheap) and the per-packet fields.
pub fn write(buf: &mut [u8], ssrc: u32, seq: u16, timestamp: u32, stamp: Stamp) {
    if buf.len() < PACKET {
        return;
    }
    buf[0] = 0x80; // version 2
    buf[1] = 0; // PCMU
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let p = &mut buf[RTP_HEADER..PACKET];
    p[0..4].copy_from_slice(&MAGIC);
    p[4..8].copy_from_slice(&stamp.trial.to_be_bytes());
    p[8..12].copy_from_slice(&stamp.stream.to_be_bytes());
    p[12..20].copy_from_slice(&stamp.sent_ns.to_be_bytes());
    p[20..].fill(0xFF);
}

/// Reads the stamp of a received packet; `None` for anything that is not a bench packet.
pub fn read(packet: &[u8]) -> Option<Stamp> {
    let p = packet.get(RTP_HEADER..PACKET)?;
    if p[0..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&p[12..20]);
    Some(Stamp {
        trial: u32_at(4),
        stream: u32_at(8),
        sent_ns: u64::from_be_bytes(ns),
    })
}

/// Now, ns of `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0u8; PACKET];
        let stamp = Stamp {
            trial: 7,
            stream: 1999,
            sent_ns: 123_456_789_012,
        };
        write(&mut buf, 0xdead_beef, 65535, 160, stamp);
        assert_eq!(read(&buf), Some(stamp));
        assert_eq!(buf[0], 0x80);
        assert_eq!(&buf[2..4], &[0xff, 0xff]);
        assert_eq!(buf[PACKET - 1], 0xFF);
        assert_eq!(IP_PACKET, 200);
        assert_eq!(read(&buf[..PACKET - 1]), None, "short");
        buf[RTP_HEADER] = b'X';
        assert_eq!(read(&buf), None, "not ours");
    }
}
