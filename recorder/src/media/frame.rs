//! Ethernet frames of media packets, for backends that see whole frames (AF_XDP): parse the
//! headers down to the UDP payload, and rewrite addresses and ports in place for forwarding,
//! updating the IPv4 header checksum and the UDP checksum incrementally (RFC 1624) instead of
//! summing the payload again.
//!
//! The parser accepts what the XDP program (`xdp-prog/linecord_xdp.c`) redirects: Ethernet,
//! up to two 802.1Q/802.1ad tags, IPv4 without fragmentation or IPv6 without extension
//! headers, UDP. Pure functions over byte slices; no allocation.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;

/// Where the headers of a UDP frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the UDP header.
    pub l4: usize,
    /// Offset of the UDP payload.
    pub payload: usize,
    /// Length of the UDP payload (from the UDP length field).
    pub payload_len: usize,
    /// Source address and port.
    pub source: SocketAddr,
    /// Destination address and port.
    pub destination: SocketAddr,
}

/// Why a frame is not a forwardable UDP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its headers say.
    #[error("truncated frame")]
    Truncated,
    /// Not IPv4/IPv6 UDP, or a fragment, or IPv6 extension headers.
    #[error("not a plain UDP frame")]
    NotUdp,
}

fn be16(b: &[u8], at: usize) -> Result<u16, FrameError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(FrameError::Truncated)
}

/// Parses a frame down to its UDP payload.
pub fn parse(frame: &[u8]) -> Result<UdpFrame, FrameError> {
    let mut proto = be16(frame, 12)?;
    let mut l3 = ETH_HLEN;
    for _ in 0..2 {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        proto = be16(frame, l3 + 2)?;
        l3 += 4;
    }
    let (l4, source_ip, dest_ip): (usize, IpAddr, IpAddr) = match proto {
        ETH_P_IP => {
            let h = frame.get(l3..l3 + 20).ok_or(FrameError::Truncated)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if h[0] >> 4 != 4 || ihl < 20 {
                return Err(FrameError::NotUdp);
            }
            if h[9] != IPPROTO_UDP || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return Err(FrameError::NotUdp);
            }
            let src = <[u8; 4]>::try_from(&h[12..16]).map_err(|_| FrameError::Truncated)?;
            let dst = <[u8; 4]>::try_from(&h[16..20]).map_err(|_| FrameError::Truncated)?;
            (l3 + ihl, src.into(), dst.into())
        }
        ETH_P_IPV6 => {
            let h = frame.get(l3..l3 + 40).ok_or(FrameError::Truncated)?;
            if h[6] != IPPROTO_UDP {
                return Err(FrameError::NotUdp);
            }
            let src = <[u8; 16]>::try_from(&h[8..24]).map_err(|_| FrameError::Truncated)?;
            let dst = <[u8; 16]>::try_from(&h[24..40]).map_err(|_| FrameError::Truncated)?;
            (l3 + 40, src.into(), dst.into())
        }
        _ => return Err(FrameError::NotUdp),
    };
    let udp_len = usize::from(be16(frame, l4 + 4)?);
    if udp_len < 8 || l4 + udp_len > frame.len() {
        return Err(FrameError::Truncated);
    }
    Ok(UdpFrame {
        l3,
        l4,
        payload: l4 + 8,
        payload_len: udp_len - 8,
        source: SocketAddr::new(source_ip, be16(frame, l4)?),
        destination: SocketAddr::new(dest_ip, be16(frame, l4 + 2)?),
    })
}

/// RFC 1624 eqn. 3: the new checksum after 16-bit words `old` became `new`.
fn csum_update(check: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut sum = u32::from(!check);
    for w in old {
        sum += u32::from(!*w);
    }
    for w in new {
        sum += u32::from(*w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn words(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
}

/// The 16-bit words of an address (4 or 16 bytes) into `out`; returns how many.
fn addr_words(ip: IpAddr, out: &mut [u16; 8]) -> usize {
    match ip {
        IpAddr::V4(a) => {
            for (o, w) in out.iter_mut().zip(words(&a.octets())) {
                *o = w;
            }
            2
        }
        IpAddr::V6(a) => {
            for (o, w) in out.iter_mut().zip(words(&a.octets())) {
                *o = w;
            }
            8
        }
    }
}

/// New addressing of a forwarded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// Source MAC (the sending interface).
    pub src_mac: [u8; 6],
    /// Destination MAC (the next hop).
    pub dst_mac: [u8; 6],
    /// New source address and port (the recorder's port for the other party).
    pub source: SocketAddr,
    /// New destination (the other party).
    pub destination: SocketAddr,
}

/// Rewrites a parsed frame in place for forwarding: MACs, IP addresses, UDP ports, the IPv4
/// header checksum and the UDP checksum (incrementally; an IPv4 UDP checksum of 0, "none",
/// stays 0), and decrements the TTL / hop limit. The address family must not change.
pub fn rewrite(frame: &mut [u8], f: &UdpFrame, r: &Rewrite) -> Result<(), FrameError> {
    if let (SocketAddr::V4(os), SocketAddr::V4(od), SocketAddr::V4(ns), SocketAddr::V4(nd)) =
        (f.source, f.destination, r.source, r.destination)
    {
        return rewrite_v4(frame, f, r, [os, od], [ns, nd]);
    }
    if f.source.is_ipv4() != r.source.is_ipv4()
        || f.destination.is_ipv4() != r.destination.is_ipv4()
    {
        return Err(FrameError::NotUdp);
    }
    if frame.len() < f.payload {
        return Err(FrameError::Truncated);
    }
    frame[0..6].copy_from_slice(&r.dst_mac);
    frame[6..12].copy_from_slice(&r.src_mac);
    // Words that change in the UDP pseudo-header and header: both addresses, both ports.
    let (mut old, mut new) = ([0u16; 8], [0u16; 8]);
    let mut old_words = [0u16; 18];
    let mut new_words = [0u16; 18];
    let mut n = 0;
    for (o, w) in [
        (f.source.ip(), r.source.ip()),
        (f.destination.ip(), r.destination.ip()),
    ] {
        let k = addr_words(o, &mut old);
        addr_words(w, &mut new);
        old_words[n..n + k].copy_from_slice(&old[..k]);
        new_words[n..n + k].copy_from_slice(&new[..k]);
        n += k;
    }
    old_words[n] = f.source.port();
    new_words[n] = r.source.port();
    old_words[n + 1] = f.destination.port();
    new_words[n + 1] = r.destination.port();
    n += 2;

    let l3 = f.l3;
    match (r.source.ip(), r.destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // TTL is the high byte of the word at offset 8 (TTL, protocol).
            let ttl_word_old = be16(frame, l3 + 8)?;
            frame[l3 + 8] = frame[l3 + 8].saturating_sub(1);
            let ttl_word_new = be16(frame, l3 + 8)?;
            frame[l3 + 12..l3 + 16].copy_from_slice(&s.octets());
            frame[l3 + 16..l3 + 20].copy_from_slice(&d.octets());
            let check = be16(frame, l3 + 10)?;
            let mut o = [0u16; 5];
            let mut w = [0u16; 5];
            o[..4].copy_from_slice(&old_words[..4]);
            w[..4].copy_from_slice(&new_words[..4]);
            o[4] = ttl_word_old;
            w[4] = ttl_word_new;
            let c = csum_update(check, &o, &w);
            frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame[l3 + 7] = frame[l3 + 7].saturating_sub(1);
            frame[l3 + 8..l3 + 24].copy_from_slice(&s.octets());
            frame[l3 + 24..l3 + 40].copy_from_slice(&d.octets());
        }
        _ => return Err(FrameError::NotUdp),
    }
    let l4 = f.l4;
    frame[l4..l4 + 2].copy_from_slice(&r.source.port().to_be_bytes());
    frame[l4 + 2..l4 + 4].copy_from_slice(&r.destination.port().to_be_bytes());
    let check = be16(frame, l4 + 6)?;
    if check != 0 || r.source.is_ipv6() {
        // The pseudo-header holds the addresses; the ports are in the UDP header itself.
        let mut c = csum_update(check, &old_words[..n], &new_words[..n]);
        if c == 0 {
            c = 0xffff; // RFC 768: a computed 0 is sent as all ones.
        }
        frame[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

/// The two 16-bit words of an IPv4 address.
fn v4_words(a: &SocketAddrV4) -> [u16; 2] {
    let o = a.ip().octets();
    [
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    ]
}

/// [`rewrite`] for IPv4 to IPv4, the media case: the same work on fixed-size word arrays,
/// without matching address families per word.
fn rewrite_v4(
    frame: &mut [u8],
    f: &UdpFrame,
    r: &Rewrite,
    old: [SocketAddrV4; 2],
    new: [SocketAddrV4; 2],
) -> Result<(), FrameError> {
    let (l3, l4) = (f.l3, f.l4);
    if l3 < 12 || l3 + 20 > l4 || l4 + 8 > f.payload || frame.len() < f.payload {
        return Err(FrameError::Truncated);
    }
    frame[0..6].copy_from_slice(&r.dst_mac);
    frame[6..12].copy_from_slice(&r.src_mac);
    let (os, od) = (v4_words(&old[0]), v4_words(&old[1]));
    let (ns, nd) = (v4_words(&new[0]), v4_words(&new[1]));
    // TTL is the high byte of the word at offset 8 (TTL, protocol).
    let ttl_old = u16::from_be_bytes([frame[l3 + 8], frame[l3 + 9]]);
    frame[l3 + 8] = frame[l3 + 8].saturating_sub(1);
    let ttl_new = u16::from_be_bytes([frame[l3 + 8], frame[l3 + 9]]);
    frame[l3 + 12..l3 + 16].copy_from_slice(&new[0].ip().octets());
    frame[l3 + 16..l3 + 20].copy_from_slice(&new[1].ip().octets());
    let check = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
    let c = csum_update(
        check,
        &[os[0], os[1], od[0], od[1], ttl_old],
        &[ns[0], ns[1], nd[0], nd[1], ttl_new],
    );
    frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    frame[l4..l4 + 2].copy_from_slice(&new[0].port().to_be_bytes());
    frame[l4 + 2..l4 + 4].copy_from_slice(&new[1].port().to_be_bytes());
    let check = u16::from_be_bytes([frame[l4 + 6], frame[l4 + 7]]);
    // RFC 768: an IPv4 UDP checksum of 0 means none was computed; it stays 0.
    if check != 0 {
        // The pseudo-header holds the addresses; the ports are in the UDP header itself.
        let mut c = csum_update(
            check,
            &[os[0], os[1], od[0], od[1], old[0].port(), old[1].port()],
            &[ns[0], ns[1], nd[0], nd[1], new[0].port(), new[1].port()],
        );
        if c == 0 {
            c = 0xffff; // RFC 768: a computed 0 is sent as all ones.
        }
        frame[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(data: &[u8]) -> u32 {
        words(data).map(u32::from).sum()
    }

    fn fold(mut s: u32) -> u16 {
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// Builds a frame with correct checksums (computed in full).
    fn frame(src: SocketAddr, dst: SocketAddr, payload: &[u8], vlan: bool) -> Vec<u8> {
        let mut f = vec![0xaa; 6];
        f.extend_from_slice(&[0xbb; 6]);
        if vlan {
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&[0, 42]);
        }
        let l3 = f.len() + 2;
        let udp_len = (8 + payload.len()) as u16;
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let total = 20 + udp_len;
                f.extend_from_slice(&[0x45, 0]);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&[0, 1, 0x40, 0, 64, IPPROTO_UDP, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let c = !fold(sum(&f[l3..l3 + 20]));
                f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&udp_len.to_be_bytes());
                f.extend_from_slice(&[IPPROTO_UDP, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => unreachable!(),
        }
        let l4 = f.len();
        f.extend_from_slice(&src.port().to_be_bytes());
        f.extend_from_slice(&dst.port().to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        let c = udp_checksum(&f, l3, l4);
        f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// The UDP checksum computed in full (pseudo-header + header + payload).
    fn udp_checksum(f: &[u8], l3: usize, l4: usize) -> u16 {
        let udp_len = u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]);
        let v4 = f[l3] >> 4 == 4;
        let addrs = if v4 {
            &f[l3 + 12..l3 + 20]
        } else {
            &f[l3 + 8..l3 + 40]
        };
        let mut s = sum(addrs) + u32::from(IPPROTO_UDP) + u32::from(udp_len);
        let mut udp = f[l4..l4 + usize::from(udp_len)].to_vec();
        udp[6] = 0;
        udp[7] = 0;
        s += sum(&udp);
        let c = !fold(s);
        if c == 0 {
            0xffff
        } else {
            c
        }
    }

    fn check_valid(f: &[u8]) {
        let p = parse(f).unwrap();
        let c = u16::from_be_bytes([f[p.l4 + 6], f[p.l4 + 7]]);
        assert_eq!(c, udp_checksum(f, p.l3, p.l4), "UDP checksum");
        if f[p.l3] >> 4 == 4 {
            assert_eq!(
                fold(sum(&f[p.l3..p.l3 + 20])),
                0xffff,
                "IPv4 header checksum"
            );
        }
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_what_the_xdp_program_redirects() {
        let f = frame(
            a("198.18.0.10:4000"),
            a("198.18.0.1:30000"),
            &[1; 172],
            true,
        );
        let p = parse(&f).unwrap();
        assert_eq!(p.source, a("198.18.0.10:4000"));
        assert_eq!(p.destination, a("198.18.0.1:30000"));
        assert_eq!((p.l3, p.payload_len), (18, 172));
        assert_eq!(&f[p.payload..p.payload + p.payload_len], &[1; 172][..]);
        let f6 = frame(
            a("[2001:db8::10]:4000"),
            a("[2001:db8::1]:30000"),
            &[2; 20],
            false,
        );
        assert_eq!(parse(&f6).unwrap().destination, a("[2001:db8::1]:30000"));
    }

    #[test]
    fn rejects_non_udp_fragments_and_truncation() {
        let f = frame(
            a("198.18.0.10:4000"),
            a("198.18.0.1:30000"),
            &[1; 40],
            false,
        );
        for cut in 0..f.len() {
            assert!(parse(&f[..cut]).is_err(), "cut {cut}");
        }
        let mut frag = f.clone();
        frag[14 + 6] |= 0x20; // more fragments
        assert_eq!(parse(&frag), Err(FrameError::NotUdp));
        let mut tcp = f.clone();
        tcp[14 + 9] = 6;
        assert_eq!(parse(&tcp), Err(FrameError::NotUdp));
        let mut arp = f;
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse(&arp), Err(FrameError::NotUdp));
    }

    #[test]
    fn rewrite_keeps_checksums_valid_v4_and_v6() {
        let r = Rewrite {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            source: a("198.18.0.1:30002"),
            destination: a("198.18.0.20:5000"),
        };
        let mut f = frame(
            a("198.18.0.10:4000"),
            a("198.18.0.1:30000"),
            b"hello rtp",
            true,
        );
        let p = parse(&f).unwrap();
        rewrite(&mut f, &p, &r).unwrap();
        check_valid(&f);
        let q = parse(&f).unwrap();
        assert_eq!((q.source, q.destination), (r.source, r.destination));
        assert_eq!(&f[0..12], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        assert_eq!(f[18 + 8], 63, "TTL decremented");
        assert_eq!(&f[q.payload..q.payload + q.payload_len], b"hello rtp");

        let mut f6 = frame(
            a("[2001:db8::10]:4000"),
            a("[2001:db8::1]:30000"),
            &[7; 161],
            false,
        );
        let p6 = parse(&f6).unwrap();
        let r6 = Rewrite {
            source: a("[2001:db8::1]:30002"),
            destination: a("[2001:db8::20]:5000"),
            ..r
        };
        rewrite(&mut f6, &p6, &r6).unwrap();
        check_valid(&f6);
        assert_eq!(f6[14 + 7], 63, "hop limit decremented");
        assert_eq!(rewrite(&mut f6.clone(), &p6, &r), Err(FrameError::NotUdp));
    }

    #[test]
    fn ipv4_udp_without_checksum_stays_without() {
        let mut f = frame(
            a("198.18.0.10:4000"),
            a("198.18.0.1:30000"),
            &[3; 10],
            false,
        );
        let p = parse(&f).unwrap();
        f[p.l4 + 6] = 0;
        f[p.l4 + 7] = 0;
        let r = Rewrite {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            source: a("198.18.0.1:1"),
            destination: a("198.18.0.20:2"),
        };
        rewrite(&mut f, &p, &r).unwrap();
        assert_eq!(&f[p.l4 + 6..p.l4 + 8], &[0, 0]);
        assert_eq!(fold(sum(&f[p.l3..p.l3 + 20])), 0xffff);
    }

    proptest::proptest! {
        #[test]
        fn incremental_checksums_equal_full_recomputation(
            s in proptest::array::uniform4(proptest::num::u8::ANY),
            d in proptest::array::uniform4(proptest::num::u8::ANY),
            ns in proptest::array::uniform4(proptest::num::u8::ANY),
            nd in proptest::array::uniform4(proptest::num::u8::ANY),
            ports in proptest::array::uniform4(proptest::num::u16::ANY),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            v6 in proptest::bool::ANY,
        ) {
            let ip = |o: [u8; 4]| -> IpAddr {
                if v6 {
                    let mut b = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                    b[12..].copy_from_slice(&o);
                    IpAddr::from(b)
                } else {
                    IpAddr::from(o)
                }
            };
            let mut f = frame(SocketAddr::new(ip(s), ports[0]), SocketAddr::new(ip(d), ports[1]), &payload, false);
            let p = parse(&f).unwrap();
            let r = Rewrite {
                src_mac: [1; 6],
                dst_mac: [2; 6],
                source: SocketAddr::new(ip(ns), ports[2]),
                destination: SocketAddr::new(ip(nd), ports[3]),
            };
            rewrite(&mut f, &p, &r).unwrap();
            check_valid(&f);
        }

        #[test]
        fn parse_never_panics(data: Vec<u8>) {
            let _ = parse(&data);
        }
    }
}
