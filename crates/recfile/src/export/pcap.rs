//! Classic libpcap export (see [`write_pcap`]).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;

use super::{ExportError, RecordSource, StreamTable};
use crate::reader::Recording;
use crate::{FileHeader, Record, RtpFields, StreamInfo};

/// What [`write_pcap`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapSummary {
    /// Frames written (one per packet record of a known stream).
    pub packets: u64,
}

/// Largest captured frame.
const SNAPLEN: u32 = 65_535;
/// Ethernet link type.
const LINKTYPE_ETHERNET: u32 = 1;
/// Ethernet II header length.
const ETH_LEN: usize = 14;
/// IPv4 header length (no options).
const IPV4_LEN: usize = 20;
/// IPv6 header length.
const IPV6_LEN: usize = 40;
/// UDP header length.
const UDP_LEN: usize = 8;
/// RTP fixed header length.
const RTP_LEN: usize = 12;
/// Per-record header length.
const RECORD_HEADER_LEN: usize = 16;
/// The recorder's synthetic MAC address.
const RECORDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xFE];
/// The recorder's synthetic IPv4 address.
const RECORDER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// IP protocol number of UDP.
const PROTO_UDP: u8 = 17;

/// Writes every packet record of a known stream as a frame of a classic pcap file, then
/// flushes `out`.
///
/// The file is the original libpcap format (magic `0xa1b2c3d4` written little-endian,
/// microsecond timestamps, version 2.4, snaplen 65535, link type 1 = Ethernet). Each
/// packet record becomes one frame, in record order, stamped
/// `start_unix_ms × 1000 + arrival_us` microseconds since the Unix epoch:
///
/// * Ethernet II from `02:00:00:00:00:0X` (X = party + 1) to `02:00:00:00:00:FE` (the
///   recorder), ethertype IPv4 or IPv6;
/// * an IPv4 header (DF, TTL 64, identification = frame counter, header checksum) or an
///   IPv6 header (hop limit 64);
/// * a UDP header with its checksum computed over the pseudo-header;
/// * for RTP, a 12-byte RTP header rebuilt from [`RtpFields`] (version 2, no padding,
///   extension or CSRC) followed by the payload; for RTCP, the packet as recorded.
///
/// Addresses are the stream's `source` (the party) and `destination` (the recorder), both
/// `ip:port` text. When either is missing or unparsable, or they are of different families
/// (an IPv4-mapped IPv6 address counts as IPv4), synthetic addresses from the benchmarking
/// range 198.18.0.0/15 are used instead: party 0 is 198.18.0.10, party 1 is 198.18.0.20
/// (party N > 1: 198.18.1.N), the recorder 198.18.0.1, and both ports are
/// `40000 + 2 × stream id` (folded into 1024–65535). Packets of unknown streams are
/// skipped. A payload too large for a 65535-byte frame is truncated to fit.
///
/// # Errors
///
/// [`ExportError::Io`] if writing fails (the output is then incomplete).
pub fn write_pcap(
    header: &FileHeader,
    streams: &[StreamInfo],
    records: &[Record],
    out: &mut impl Write,
) -> Result<PcapSummary, ExportError> {
    write_pcap_from(header, streams, records, false, out)
}

/// Writes the packets of `rec` as a pcap into `out` (the fuzzing entry point for pcap
/// export): [`write_pcap`] with `rec`'s header, the streams its events announce (as
/// [`Recording::streams`] gives them) and its records decoded block by block.
///
/// # Errors
///
/// As [`write_pcap`], and [`ExportError::Read`] if the records cannot be read again.
pub fn write_recording_pcap(
    rec: &Recording,
    out: &mut impl Write,
) -> Result<PcapSummary, ExportError> {
    write_pcap_from(&rec.header, &[], rec, true, out)
}

/// [`write_pcap`] over any [`RecordSource`] (read twice: once for the stream events, then to
/// write). With `streams_from_events`, streams that only events announce count as given in
/// `streams` in their latest version (as passing [`Recording::streams`] does).
///
/// # Errors
///
/// As [`write_pcap`], and [`ExportError::Read`] if the records cannot be read again.
pub fn write_pcap_from(
    header: &FileHeader,
    streams: &[StreamInfo],
    records: &(impl RecordSource + ?Sized),
    streams_from_events: bool,
    out: &mut impl Write,
) -> Result<PcapSummary, ExportError> {
    let mut table = StreamTable::new(header, streams, records, streams_from_events, |_| {})?;
    out.write_all(&global_header())?;
    let mut buf = Vec::with_capacity(2048);
    let mut packets = 0u64;
    let mut failure: Option<std::io::Error> = None;
    records.for_each_record(&mut |record| {
        table.apply(record);
        let Record::Packet(p) = record else {
            return ControlFlow::Continue(());
        };
        let Some(info) = table.get(p.stream) else {
            return ControlFlow::Continue(());
        };
        let (src, dst) = endpoints(info);
        buf.clear();
        buf.resize(RECORD_HEADER_LEN, 0);
        let frame = Frame {
            src_mac: party_mac(info.party),
            dst_mac: RECORDER_MAC,
            src,
            dst,
            ident: packets as u16, // wraps: the low 16 bits of the frame counter
            rtp: p.rtp.as_ref(),
            payload: &p.payload,
        };
        frame.encode(&mut buf);
        let frame_len = u32::try_from(buf.len() - RECORD_HEADER_LEN).unwrap_or(SNAPLEN);
        let ts = header
            .start_unix_ms
            .saturating_mul(1000)
            .saturating_add(p.arrival_us);
        let ts_sec = u32::try_from(ts / 1_000_000).unwrap_or(u32::MAX);
        let ts_usec = (ts % 1_000_000) as u32; // < 1_000_000
        buf[0..4].copy_from_slice(&ts_sec.to_le_bytes());
        buf[4..8].copy_from_slice(&ts_usec.to_le_bytes());
        buf[8..12].copy_from_slice(&frame_len.to_le_bytes());
        buf[12..16].copy_from_slice(&frame_len.to_le_bytes());
        if let Err(e) = out.write_all(&buf) {
            failure = Some(e);
            return ControlFlow::Break(());
        }
        packets += 1;
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    out.flush()?;
    Ok(PcapSummary { packets })
}

/// The 24-byte pcap global header.
fn global_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// Synthetic MAC address of a party.
fn party_mac(party: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, party.wrapping_add(1)]
}

/// Source (party) and destination (recorder) of a stream's packets.
fn endpoints(info: &StreamInfo) -> (SocketAddr, SocketAddr) {
    let parsed = (
        info.source.trim().parse::<SocketAddr>(),
        info.destination.trim().parse::<SocketAddr>(),
    );
    if let (Ok(src), Ok(dst)) = parsed {
        if let Some(pair) = same_family(src, dst) {
            return pair;
        }
    }
    let port = synthetic_port(info.id);
    let party_ip = match info.party {
        0 => Ipv4Addr::new(198, 18, 0, 10),
        1 => Ipv4Addr::new(198, 18, 0, 20),
        n => Ipv4Addr::new(198, 18, 1, n),
    };
    (
        SocketAddr::new(IpAddr::V4(party_ip), port),
        SocketAddr::new(IpAddr::V4(RECORDER_IP), port),
    )
}

/// The pair in one address family (IPv4-mapped IPv6 addresses turned into IPv4 when the
/// other side is IPv4), or `None` if that is impossible.
fn same_family(src: SocketAddr, dst: SocketAddr) -> Option<(SocketAddr, SocketAddr)> {
    let v4 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => Some(SocketAddr::new(IpAddr::V4(ip), a.port())),
        IpAddr::V6(ip) => ip
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::new(IpAddr::V4(ip), a.port())),
    };
    match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            Some((src, dst))
        }
        _ => Some((v4(src)?, v4(dst)?)),
    }
}

/// `40000 + 2 × id`, folded into 1024–65535 when it does not fit.
fn synthetic_port(id: u16) -> u16 {
    let port = 40_000 + 2 * u32::from(id);
    let port = if port > 65_535 {
        1024 + (port - 1024) % (65_536 - 1024)
    } else {
        port
    };
    u16::try_from(port).unwrap_or(40_000)
}

/// One frame to encode.
struct Frame<'a> {
    /// Ethernet source.
    src_mac: [u8; 6],
    /// Ethernet destination.
    dst_mac: [u8; 6],
    /// IP/UDP source (same family as `dst`).
    src: SocketAddr,
    /// IP/UDP destination.
    dst: SocketAddr,
    /// IPv4 identification.
    ident: u16,
    /// RTP header fields, or `None` for RTCP.
    rtp: Option<&'a RtpFields>,
    /// RTP payload or whole RTCP packet.
    payload: &'a [u8],
}

impl Frame<'_> {
    /// Appends the frame to `buf`.
    fn encode(&self, buf: &mut Vec<u8>) {
        let ip_len = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => IPV4_LEN,
            _ => IPV6_LEN,
        };
        let head_len = if self.rtp.is_some() { RTP_LEN } else { 0 };
        let max_body = SNAPLEN as usize - ETH_LEN - ip_len - UDP_LEN - head_len;
        let body = self.payload.get(..max_body).unwrap_or(self.payload);
        let udp_len = UDP_LEN + head_len + body.len(); // ≤ 65535 - 14 - ip_len

        buf.extend_from_slice(&self.dst_mac);
        buf.extend_from_slice(&self.src_mac);
        let ip_start = buf.len() + 2;
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                buf.extend_from_slice(&0x0800u16.to_be_bytes());
                let total = (IPV4_LEN + udp_len) as u16;
                buf.extend_from_slice(&[0x45, 0]);
                buf.extend_from_slice(&total.to_be_bytes());
                buf.extend_from_slice(&self.ident.to_be_bytes());
                buf.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
                buf.extend_from_slice(&[64, PROTO_UDP, 0, 0]);
                buf.extend_from_slice(&src.octets());
                buf.extend_from_slice(&dst.octets());
                let sum = !fold(sum_words(&buf[ip_start..], 0));
                buf[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());
            }
            (src, dst) => {
                let (src, dst) = (v6_octets(src), v6_octets(dst));
                buf.extend_from_slice(&0x86DDu16.to_be_bytes());
                buf.extend_from_slice(&[0x60, 0, 0, 0]);
                buf.extend_from_slice(&(udp_len as u16).to_be_bytes());
                buf.extend_from_slice(&[PROTO_UDP, 64]);
                buf.extend_from_slice(&src);
                buf.extend_from_slice(&dst);
            }
        }

        let udp_start = buf.len();
        buf.extend_from_slice(&self.src.port().to_be_bytes());
        buf.extend_from_slice(&self.dst.port().to_be_bytes());
        buf.extend_from_slice(&(udp_len as u16).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        if let Some(rtp) = self.rtp {
            buf.push(0x80);
            buf.push(u8::from(rtp.marker) << 7 | (rtp.payload_type & 0x7F));
            buf.extend_from_slice(&rtp.sequence.to_be_bytes());
            buf.extend_from_slice(&rtp.timestamp.to_be_bytes());
            buf.extend_from_slice(&rtp.ssrc.to_be_bytes());
        }
        buf.extend_from_slice(body);

        // Pseudo-header: addresses, protocol, UDP length (IPv4 and IPv6 sum alike).
        let mut acc = 0u64;
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                acc = sum_words(&src.octets(), acc);
                acc = sum_words(&dst.octets(), acc);
            }
            (src, dst) => {
                acc = sum_words(&v6_octets(src), acc);
                acc = sum_words(&v6_octets(dst), acc);
            }
        }
        acc += u64::from(PROTO_UDP) + udp_len as u64;
        acc = sum_words(&buf[udp_start..], acc);
        let sum = match !fold(acc) {
            0 => 0xFFFF,
            s => s,
        };
        buf[udp_start + 6..udp_start + 8].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The address as IPv6 octets (IPv4 as an IPv4-mapped address).
fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    }
}

/// Adds the big-endian 16-bit words of `data` (odd length padded with a zero) to `acc`.
fn sum_words(data: &[u8], acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut acc = acc;
    for w in &mut chunks {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a one's complement sum to 16 bits.
fn fold(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CodecInfo, Component, Event, EventRecord, PacketRecord, StreamId};
    use std::net::Ipv6Addr;

    fn stream(id: StreamId, party: u8, component: Component, src: &str, dst: &str) -> StreamInfo {
        StreamInfo {
            id,
            party,
            media_index: 0,
            component,
            source: src.to_owned(),
            destination: dst.to_owned(),
            codecs: vec![CodecInfo {
                payload_type: 0,
                name: "PCMU".into(),
                clock_rate: 8000,
                channels: 1,
            }],
        }
    }

    fn header(streams: Vec<StreamInfo>) -> FileHeader {
        FileHeader {
            recording_id: "rec".into(),
            call_id: "call".into(),
            start_unix_ms: 1_700_000_000_123,
            metadata: None,
            parties: Vec::new(),
            streams,
        }
    }

    fn rtp(stream: StreamId, arrival_us: u64, fields: RtpFields, payload: Vec<u8>) -> Record {
        Record::Packet(PacketRecord {
            stream,
            arrival_us,
            rtp: Some(fields),
            payload,
        })
    }

    fn rtcp(stream: StreamId, arrival_us: u64, payload: Vec<u8>) -> Record {
        Record::Packet(PacketRecord {
            stream,
            arrival_us,
            rtp: None,
            payload,
        })
    }

    fn fields(marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) -> RtpFields {
        RtpFields {
            marker,
            payload_type: pt,
            sequence: seq,
            timestamp: ts,
            ssrc,
        }
    }

    /// A parsed frame.
    #[derive(Debug)]
    struct Parsed {
        ts_sec: u32,
        ts_usec: u32,
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        src: SocketAddr,
        dst: SocketAddr,
        ip_ident: Option<u16>,
        udp_payload: Vec<u8>,
    }

    /// Independent one's complement sum (RFC 1071), byte by byte.
    fn ones_sum(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let mut sum: u32 = 0;
        for (i, b) in bytes.iter().enumerate() {
            sum += if i % 2 == 0 {
                u32::from(*b) << 8
            } else {
                u32::from(*b)
            };
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        sum as u16
    }

    /// Parses a whole pcap file, verifying headers and checksums.
    fn parse_pcap(bytes: &[u8]) -> Vec<Parsed> {
        let u32le = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u16be = |b: &[u8], i: usize| u16::from_be_bytes(b[i..i + 2].try_into().unwrap());
        assert_eq!(&bytes[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&bytes[4..8], &[2, 0, 4, 0]);
        assert_eq!(u32le(bytes, 8), 0);
        assert_eq!(u32le(bytes, 12), 0);
        assert_eq!(u32le(bytes, 16), 65535);
        assert_eq!(u32le(bytes, 20), 1);
        let mut rest = &bytes[24..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let (ts_sec, ts_usec) = (u32le(rest, 0), u32le(rest, 4));
            let incl = u32le(rest, 8) as usize;
            assert_eq!(u32le(rest, 12) as usize, incl);
            assert!(incl <= 65535);
            assert!(ts_usec < 1_000_000);
            let f = &rest[16..16 + incl];
            rest = &rest[16 + incl..];
            let ethertype = u16be(f, 12);
            let ip = &f[14..];
            let (src_ip, dst_ip, ip_ident, udp, pseudo): (IpAddr, IpAddr, _, &[u8], Vec<u8>) =
                match ethertype {
                    0x0800 => {
                        assert_eq!(ip[0], 0x45);
                        assert_eq!(usize::from(u16be(ip, 2)), ip.len());
                        assert_eq!(u16be(ip, 6), 0x4000);
                        assert_eq!(ip[8], 64);
                        assert_eq!(ip[9], 17);
                        assert_eq!(ones_sum(&[&ip[..20]]), 0xFFFF, "IPv4 header checksum");
                        let s: [u8; 4] = ip[12..16].try_into().unwrap();
                        let d: [u8; 4] = ip[16..20].try_into().unwrap();
                        let udp = &ip[20..];
                        let mut pseudo = Vec::new();
                        pseudo.extend_from_slice(&s);
                        pseudo.extend_from_slice(&d);
                        pseudo.extend_from_slice(&[0, 17]);
                        pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
                        (s.into(), d.into(), Some(u16be(ip, 4)), udp, pseudo)
                    }
                    0x86DD => {
                        assert_eq!(ip[0] >> 4, 6);
                        assert_eq!(usize::from(u16be(ip, 4)), ip.len() - 40);
                        assert_eq!(ip[6], 17);
                        assert_eq!(ip[7], 64);
                        let s: [u8; 16] = ip[8..24].try_into().unwrap();
                        let d: [u8; 16] = ip[24..40].try_into().unwrap();
                        let udp = &ip[40..];
                        let mut pseudo = Vec::new();
                        pseudo.extend_from_slice(&s);
                        pseudo.extend_from_slice(&d);
                        pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
                        pseudo.extend_from_slice(&[0, 0, 0, 17]);
                        (s.into(), d.into(), None, udp, pseudo)
                    }
                    other => panic!("ethertype {other:#x}"),
                };
            assert_eq!(usize::from(u16be(udp, 4)), udp.len());
            assert_ne!(u16be(udp, 6), 0, "UDP checksum present");
            assert_eq!(ones_sum(&[&pseudo, udp]), 0xFFFF, "UDP checksum");
            frames.push(Parsed {
                ts_sec,
                ts_usec,
                dst_mac: f[0..6].try_into().unwrap(),
                src_mac: f[6..12].try_into().unwrap(),
                src: SocketAddr::new(src_ip, u16be(udp, 0)),
                dst: SocketAddr::new(dst_ip, u16be(udp, 2)),
                ip_ident,
                udp_payload: udp[8..].to_vec(),
            });
        }
        frames
    }

    /// Decodes a rebuilt RTP header: (marker, pt, seq, ts, ssrc) and the payload.
    fn rtp_of(payload: &[u8]) -> (RtpFields, &[u8]) {
        assert_eq!(payload[0], 0x80, "V=2, no padding/extension/CSRC");
        let f = RtpFields {
            marker: payload[1] & 0x80 != 0,
            payload_type: payload[1] & 0x7F,
            sequence: u16::from_be_bytes([payload[2], payload[3]]),
            timestamp: u32::from_be_bytes(payload[4..8].try_into().unwrap()),
            ssrc: u32::from_be_bytes(payload[8..12].try_into().unwrap()),
        };
        (f, &payload[12..])
    }

    fn export(h: &FileHeader, streams: &[StreamInfo], records: &[Record]) -> Vec<Parsed> {
        let mut out = Vec::new();
        let summary = write_pcap(h, streams, records, &mut out).unwrap();
        let frames = parse_pcap(&out);
        assert_eq!(summary.packets, frames.len() as u64);
        frames
    }

    #[test]
    fn rtp_and_rtcp_frames() {
        let h = header(vec![
            stream(0, 0, Component::Rtp, "192.0.2.10:5004", "203.0.113.5:30000"),
            stream(
                1,
                0,
                Component::Rtcp,
                "192.0.2.10:5005",
                "203.0.113.5:30001",
            ),
            stream(
                2,
                1,
                Component::Rtp,
                "198.51.100.7:6000",
                "203.0.113.5:30002",
            ),
        ]);
        let rtcp_bytes = vec![0x81, 200, 0, 6, 0, 0, 0x11, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let records = vec![
            Record::Event(EventRecord {
                at_us: 0,
                event: Event::Started,
            }),
            rtp(
                0,
                0,
                fields(true, 0, 65535, 0xFFFF_FF00, 0x1111),
                vec![0xFF; 160],
            ),
            rtp(
                2,
                1_999_999,
                fields(false, 8, 7, 1234, 0xDEAD_BEEF),
                vec![0xD5; 161],
            ),
            rtcp(1, 2_000_000, rtcp_bytes.clone()),
            rtp(0, 3_000_001, fields(false, 101, 0, 160, 0x1111), vec![]),
            rtp(9, 3_000_002, fields(false, 0, 1, 2, 3), vec![1, 2, 3]), // unknown stream
        ];
        let frames = export(&h, &[], &records);
        assert_eq!(frames.len(), 4);

        let start_us = 1_700_000_000_123u64 * 1000;
        let ts = |us: u64| {
            (
                ((start_us + us) / 1_000_000) as u32,
                ((start_us + us) % 1_000_000) as u32,
            )
        };
        for (f, us) in frames.iter().zip([0, 1_999_999, 2_000_000, 3_000_001]) {
            assert_eq!((f.ts_sec, f.ts_usec), ts(us));
            assert_eq!(f.dst_mac, RECORDER_MAC);
        }
        assert_eq!(frames[0].src_mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(frames[1].src_mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(frames[0].src, "192.0.2.10:5004".parse().unwrap());
        assert_eq!(frames[0].dst, "203.0.113.5:30000".parse().unwrap());
        assert_eq!(frames[1].src, "198.51.100.7:6000".parse().unwrap());
        assert_eq!(frames[2].src, "192.0.2.10:5005".parse().unwrap());
        assert_eq!(frames[2].dst, "203.0.113.5:30001".parse().unwrap());
        let idents: Vec<_> = frames.iter().map(|f| f.ip_ident.unwrap()).collect();
        assert_eq!(idents, [0, 1, 2, 3]);

        let (f0, p0) = rtp_of(&frames[0].udp_payload);
        assert_eq!(f0, fields(true, 0, 65535, 0xFFFF_FF00, 0x1111));
        assert_eq!(p0, &[0xFF; 160][..]);
        let (f1, p1) = rtp_of(&frames[1].udp_payload);
        assert_eq!(f1, fields(false, 8, 7, 1234, 0xDEAD_BEEF));
        assert_eq!(p1, &[0xD5; 161][..]);
        assert_eq!(frames[2].udp_payload, rtcp_bytes);
        let (f3, p3) = rtp_of(&frames[3].udp_payload);
        assert_eq!(f3, fields(false, 101, 0, 160, 0x1111));
        assert!(p3.is_empty());
    }

    #[test]
    fn ipv6_addresses() {
        let h = header(vec![
            stream(
                0,
                0,
                Component::Rtp,
                "[2001:db8::1]:5004",
                "[2001:db8::ff]:30000",
            ),
            stream(
                1,
                1,
                Component::Rtcp,
                "[2001:db8::2]:7001",
                "[2001:db8::ff]:30003",
            ),
        ]);
        let records = vec![
            rtp(0, 10, fields(false, 0, 1, 2, 3), vec![0x7F; 33]),
            rtcp(1, 20, vec![0x80, 201, 0, 1, 0, 0, 0, 9]),
        ];
        let frames = export(&h, &[], &records);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].src, "[2001:db8::1]:5004".parse().unwrap());
        assert_eq!(frames[0].dst, "[2001:db8::ff]:30000".parse().unwrap());
        assert_eq!(frames[0].ip_ident, None);
        assert_eq!(rtp_of(&frames[0].udp_payload).0, fields(false, 0, 1, 2, 3));
        assert_eq!(
            frames[1].src.ip(),
            "2001:db8::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(frames[1].udp_payload, [0x80, 201, 0, 1, 0, 0, 0, 9]);
    }

    #[test]
    fn synthetic_addresses() {
        let h = header(vec![
            stream(0, 0, Component::Rtp, "", "203.0.113.5:30000"),
            stream(3, 1, Component::Rtcp, "not an address", "203.0.113.5:30001"),
            stream(4, 1, Component::Rtp, "192.0.2.1:1", "[2001:db8::1]:2"),
            stream(
                5,
                0,
                Component::Rtp,
                "[::ffff:192.0.2.9]:9",
                "203.0.113.5:30004",
            ),
            stream(40000, 7, Component::Rtp, "", ""),
        ]);
        let records: Vec<Record> = [0u16, 3, 4, 5, 40000]
            .iter()
            .map(|&id| rtp(id, 0, fields(false, 0, 0, 0, 0), vec![0; 4]))
            .collect();
        let frames = export(&h, &[], &records);
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(frames[0].src, addr("198.18.0.10:40000"));
        assert_eq!(frames[0].dst, addr("198.18.0.1:40000"));
        assert_eq!(frames[1].src, addr("198.18.0.20:40006"));
        assert_eq!(frames[1].dst, addr("198.18.0.1:40006"));
        assert_eq!(frames[2].src, addr("198.18.0.20:40008"));
        // An IPv4-mapped source pairs with an IPv4 destination.
        assert_eq!(frames[3].src, addr("192.0.2.9:9"));
        assert_eq!(frames[3].dst, addr("203.0.113.5:30004"));
        // Party 7, a port that does not fit: folded into range.
        assert_eq!(frames[4].src.ip(), IpAddr::V4(Ipv4Addr::new(198, 18, 1, 7)));
        assert!(frames[4].src.port() >= 1024);
        assert_eq!(frames[4].src_mac, [2, 0, 0, 0, 0, 8]);
    }

    #[test]
    fn stream_events_apply_in_order() {
        let first = stream(0, 0, Component::Rtp, "192.0.2.10:5004", "203.0.113.5:30000");
        let mut moved = first.clone();
        moved.source = "192.0.2.99:6666".into();
        let records = vec![
            // Before its announcement, a stream is known from its first version.
            rtp(0, 0, fields(false, 0, 1, 0, 1), vec![1]),
            Record::Event(EventRecord {
                at_us: 1,
                event: Event::StreamAdded(first),
            }),
            rtp(0, 2, fields(false, 0, 2, 160, 1), vec![2]),
            Record::Event(EventRecord {
                at_us: 3,
                event: Event::StreamChanged(moved),
            }),
            rtp(0, 4, fields(false, 0, 3, 320, 1), vec![3]),
        ];
        let frames = export(&header(Vec::new()), &[], &records);
        let srcs: Vec<String> = frames.iter().map(|f| f.src.to_string()).collect();
        assert_eq!(
            srcs,
            ["192.0.2.10:5004", "192.0.2.10:5004", "192.0.2.99:6666"]
        );
        // The `streams` argument works as well.
        let s = stream(0, 1, Component::Rtp, "192.0.2.1:1", "192.0.2.2:2");
        let frames = export(&header(Vec::new()), &[s], &records[..1]);
        assert_eq!(frames[0].src.to_string(), "192.0.2.1:1");
    }

    #[test]
    fn oversized_payload_is_truncated_to_fit() {
        let h = header(vec![
            stream(0, 0, Component::Rtp, "192.0.2.10:5004", "203.0.113.5:30000"),
            stream(1, 0, Component::Rtcp, "[2001:db8::1]:5", "[2001:db8::2]:6"),
        ]);
        let records = vec![
            rtp(0, 0, fields(false, 0, 1, 2, 3), vec![0xAB; 70_000]),
            rtcp(1, 0, vec![0xCD; 70_001]),
        ];
        let frames = export(&h, &[], &records);
        assert_eq!(frames[0].udp_payload.len(), 65535 - 14 - 20 - 8);
        assert_eq!(frames[1].udp_payload.len(), 65535 - 14 - 40 - 8);
    }

    #[test]
    fn empty_recording_is_a_valid_pcap() {
        let mut out = Vec::new();
        let summary = write_pcap(&header(Vec::new()), &[], &[], &mut out).unwrap();
        assert_eq!(summary.packets, 0);
        assert_eq!(out.len(), 24);
        assert!(parse_pcap(&out).is_empty());
    }

    #[test]
    fn checksum_helpers() {
        // RFC 1071 example: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            fold(sum_words(
                &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7],
                0
            )),
            0xddf2
        );
        assert_eq!(fold(sum_words(&[0xFF], 0)), 0xFF00);
        assert_eq!(synthetic_port(0), 40000);
        assert_eq!(synthetic_port(12767), 65534);
        assert!(synthetic_port(u16::MAX) >= 1024);
    }
}
