//! The kernel's neighbour and route tables over rtnetlink (`RTM_GETNEIGH`, `RTM_GETROUTE`
//! dumps), IPv4 and IPv6, for the `xdp` backend's next-hop lookup.
//!
//! Written by hand on `libc`: the two dump requests and their replies are a few fixed
//! structs and attributes, the control thread reads them synchronously every 200 ms, and the
//! netlink crates either need an async runtime (`rtnetlink`) or a larger API than this needs.
//! The parsers are pure functions over the reply bytes and are tested on their own.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTN_UNICAST: u8 = 1;
/// NUD states whose link-layer address can be used.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80; // REACHABLE STALE DELAY PROBE PERMANENT

/// Neighbour link-layer addresses by IP address.
pub type NeighbourMap = HashMap<IpAddr, [u8; 6]>;

/// A route of the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway, or `None` for on-link.
    pub gateway: Option<IpAddr>,
}

impl Route {
    /// Whether `ip` is inside this route's network.
    pub fn covers(&self, ip: IpAddr) -> bool {
        match (self.dst, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix.min(32)))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix.min(128)))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }
}

/// Iterates over the netlink messages in `buf`: (type, payload).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let h = buf.get(at..at + NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let ty = u16::from_ne_bytes([h[4], h[5]]);
        if len < NLMSG_HDRLEN {
            return None;
        }
        let payload = buf.get(at + NLMSG_HDRLEN..at + len)?;
        at += (len + 3) & !3;
        Some((ty, payload))
    })
}

/// Iterates over the route attributes in `buf`: (type, data).
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let h = buf.get(at..at + 4)?;
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let ty = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff;
        if len < 4 {
            return None;
        }
        let data = buf.get(at + 4..at + len)?;
        at += (len + 3) & !3;
        Some((ty, data))
    })
}

fn ip_of(data: &[u8]) -> Option<IpAddr> {
    match data.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            data[0], data[1], data[2], data[3],
        ))),
        16 => <[u8; 16]>::try_from(data)
            .ok()
            .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        _ => None,
    }
}

/// Usable neighbour entries of interface `ifindex` in an `RTM_GETNEIGH` dump reply.
pub fn parse_neighbours(reply: &[u8], ifindex: u32) -> NeighbourMap {
    let mut out = HashMap::new();
    for (ty, p) in messages(reply) {
        // struct ndmsg: family u8, pad u8, pad u16, ifindex i32, state u16, flags u8, type u8
        if ty != RTM_NEWNEIGH || p.len() < 12 {
            continue;
        }
        let index = u32::from_ne_bytes([p[4], p[5], p[6], p[7]]);
        let state = u16::from_ne_bytes([p[8], p[9]]);
        if index != ifindex || state & NUD_USABLE == 0 {
            continue;
        }
        let (mut dst, mut mac) = (None, None);
        for (t, d) in attrs(&p[12..]) {
            match t {
                NDA_DST => dst = ip_of(d),
                NDA_LLADDR => mac = <[u8; 6]>::try_from(d).ok(),
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (dst, mac) {
            out.insert(ip, mac);
        }
    }
    out
}

/// Unicast routes through interface `ifindex` in an `RTM_GETROUTE` dump reply, longest
/// prefix first.
pub fn parse_routes(reply: &[u8], ifindex: u32) -> Vec<Route> {
    let mut out = Vec::new();
    for (ty, p) in messages(reply) {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags u32
        if ty != RTM_NEWROUTE || p.len() < 12 || p[7] != RTN_UNICAST {
            continue;
        }
        let (family, prefix) = (p[0], p[1]);
        let (mut dst, mut oif, mut gateway) = (None, None, None);
        for (t, d) in attrs(&p[12..]) {
            match t {
                RTA_DST => dst = ip_of(d),
                RTA_OIF if d.len() == 4 => oif = Some(u32::from_ne_bytes([d[0], d[1], d[2], d[3]])),
                RTA_GATEWAY => gateway = ip_of(d),
                _ => {}
            }
        }
        if oif != Some(ifindex) {
            continue;
        }
        let dst = dst.or(match i32::from(family) {
            libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            _ => None,
        });
        if let Some(dst) = dst {
            out.push(Route {
                dst,
                prefix,
                gateway,
            });
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.prefix));
    out
}

/// Sends one dump request (`msg_type` with a 12-byte family header) and returns every reply
/// byte up to `NLMSG_DONE`.
fn dump(msg_type: u16) -> io::Result<Vec<u8>> {
    // SAFETY: plain socket syscalls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let mut req = [0u8; NLMSG_HDRLEN + 12];
        req[0..4].copy_from_slice(&((NLMSG_HDRLEN + 12) as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&msg_type.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&1u32.to_ne_bytes());
        // Family AF_UNSPEC (0): both IPv4 and IPv6.
        if libc::send(raw, req.as_ptr().cast(), req.len(), 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        // Bounded: a dump of a few thousand entries takes a handful of datagrams.
        for _ in 0..4096 {
            let n = libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let chunk = &buf[..n as usize];
            let mut done = false;
            for (ty, p) in messages(chunk) {
                if ty == NLMSG_DONE {
                    done = true;
                }
                if ty == NLMSG_ERROR && p.len() >= 4 {
                    let errno = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                }
            }
            out.extend_from_slice(chunk);
            if done {
                return Ok(out);
            }
        }
        Err(io::Error::other("netlink dump did not end"))
    }
}

/// Reads the neighbours and routes of interface `ifindex` from the kernel.
pub fn read(ifindex: u32) -> io::Result<(NeighbourMap, Vec<Route>)> {
    let neighbours = parse_neighbours(&dump(RTM_GETNEIGH)?, ifindex);
    let routes = parse_routes(&dump(RTM_GETROUTE)?, ifindex);
    Ok((neighbours, routes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut a = ((4 + data.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        while !a.len().is_multiple_of(4) {
            a.push(0);
        }
        a
    }

    fn msg(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(body);
        m
    }

    fn neigh(family: u8, ifindex: u32, state: u16, ip: &[u8], mac: &[u8]) -> Vec<u8> {
        let mut b = vec![family, 0, 0, 0];
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend_from_slice(&state.to_ne_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend(attr(NDA_DST, ip));
        b.extend(attr(NDA_LLADDR, mac));
        msg(RTM_NEWNEIGH, &b)
    }

    fn route(family: u8, prefix: u8, dst: Option<&[u8]>, gw: Option<&[u8]>, oif: u32) -> Vec<u8> {
        let mut b = vec![family, prefix, 0, 0, 254, 0, 0, RTN_UNICAST, 0, 0, 0, 0];
        if let Some(d) = dst {
            b.extend(attr(RTA_DST, d));
        }
        if let Some(g) = gw {
            b.extend(attr(RTA_GATEWAY, g));
        }
        b.extend(attr(RTA_OIF, &oif.to_ne_bytes()));
        msg(RTM_NEWROUTE, &b)
    }

    #[test]
    fn neighbours_of_the_interface_in_usable_states() {
        let v6: [u8; 16] = "2001:db8::20".parse::<Ipv6Addr>().unwrap().octets();
        let mut reply = neigh(2, 5, 0x02, &[198, 18, 0, 10], &[2, 0, 0, 0, 0, 10]);
        reply.extend(neigh(10, 5, 0x04, &v6, &[2, 0, 0, 0, 0, 20]));
        reply.extend(neigh(2, 5, 0x20, &[198, 18, 0, 99], &[2, 0, 0, 0, 0, 99])); // FAILED
        reply.extend(neigh(2, 7, 0x02, &[10, 0, 0, 1], &[2, 0, 0, 0, 0, 1])); // other if
        reply.extend(msg(NLMSG_DONE, &[0, 0, 0, 0]));
        let n = parse_neighbours(&reply, 5);
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[&"198.18.0.10".parse::<IpAddr>().unwrap()],
            [2, 0, 0, 0, 0, 10]
        );
        assert_eq!(
            n[&"2001:db8::20".parse::<IpAddr>().unwrap()],
            [2, 0, 0, 0, 0, 20]
        );
    }

    #[test]
    fn routes_longest_prefix_first_with_gateways() {
        let gw6: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let mut reply = route(2, 24, Some(&[198, 18, 0, 0]), None, 5);
        reply.extend(route(2, 0, None, Some(&[198, 18, 0, 254]), 5));
        reply.extend(route(10, 0, None, Some(&gw6), 5));
        reply.extend(route(2, 24, Some(&[10, 0, 0, 0]), None, 7));
        let r = parse_routes(&reply, 5);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].prefix, 24);
        assert!(r[0].covers("198.18.0.77".parse().unwrap()));
        assert!(!r[0].covers("198.19.0.1".parse().unwrap()));
        assert!(
            r[1].covers("203.0.113.9".parse().unwrap())
                || r[2].covers("203.0.113.9".parse().unwrap())
        );
        let v6 = r.iter().find(|x| x.dst.is_ipv6()).unwrap();
        assert!(v6.covers("2001:db8:5::9".parse().unwrap()));
        assert_eq!(v6.gateway, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn garbage_never_panics() {
        for bytes in [&[][..], &[1, 2, 3], &[255; 40], &[16, 0, 0, 0, 28, 0]] {
            let _ = parse_neighbours(bytes, 1);
            let _ = parse_routes(bytes, 1);
        }
    }

    #[test]
    fn reads_the_host_tables() {
        // Loopback always exists; the dump itself must work (even if it holds no entry).
        let lo = std::ffi::CString::new("lo").unwrap();
        // SAFETY: a valid C string.
        let index = unsafe { libc::if_nametoindex(lo.as_ptr()) };
        assert!(read(index).is_ok());
    }
}
