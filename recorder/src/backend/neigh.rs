//! Next-hop MAC addresses for frames the AF_XDP path transmits: the kernel's IPv4 routes of
//! the interface (`/proc/net/route`: on-link, or through a gateway) and its neighbour table
//! (`/proc/net/arp`), refreshed by the control thread and handed to the workers as an
//! immutable snapshot (a lookup is a short prefix scan and a hash probe, no lock).
//!
//! Destinations whose next hop has no entry (not resolved yet, or IPv6, which this table does
//! not cover yet) are sent through the kernel instead, which resolves them; the next refresh
//! picks the entry up.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// An IPv4 route of the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination network (host order).
    pub net: u32,
    /// Netmask (host order).
    pub mask: u32,
    /// Gateway, or `None` for on-link.
    pub gateway: Option<Ipv4Addr>,
}

/// Routes and neighbours of one interface at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextHops {
    /// Routes, longest prefix first.
    pub routes: Vec<Route>,
    /// Neighbour MAC addresses.
    pub macs: HashMap<IpAddr, [u8; 6]>,
}

impl NextHops {
    /// The MAC address to send a packet for `dst` to, if known. Destinations no route covers
    /// are treated as on-link.
    pub fn mac_for(&self, dst: IpAddr) -> Option<[u8; 6]> {
        let IpAddr::V4(d) = dst else {
            return self.macs.get(&dst).copied();
        };
        let host = u32::from(d);
        let hop = self
            .routes
            .iter()
            .find(|r| host & r.mask == r.net)
            .and_then(|r| r.gateway)
            .unwrap_or(d);
        self.macs.get(&IpAddr::V4(hop)).copied()
    }
}

/// An immutable snapshot shared with the workers.
pub type Neighbours = Arc<NextHops>;

/// Parses `/proc/net/route` text, keeping the up routes of `interface`, longest prefix first.
pub fn parse_proc_route(text: &str, interface: &str) -> Vec<Route> {
    // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT. The kernel
    // prints each network-order address as a native integer in hex, so its bytes in memory
    // order are the address.
    let addr = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| u32::from(Ipv4Addr::from(v.to_ne_bytes())))
    };
    let mut routes: Vec<Route> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || f[0] != interface {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            if flags & 0x1 == 0 {
                return None; // not up
            }
            let net = addr(f[1])?;
            let gw = addr(f[2])?;
            let mask = addr(f[7])?;
            Some(Route {
                net: net & mask,
                mask,
                gateway: (flags & 0x2 != 0 && gw != 0).then(|| Ipv4Addr::from(gw)),
            })
        })
        .collect();
    routes.sort_by_key(|r| std::cmp::Reverse(r.mask.count_ones()));
    routes
}

/// Parses `/proc/net/arp` text, keeping complete entries (flag 0x2) on `interface`.
pub fn parse_proc_arp(text: &str, interface: &str) -> HashMap<IpAddr, [u8; 6]> {
    let mut out = HashMap::new();
    // IP address  HW type  Flags  HW address  Mask  Device
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [ip, _hw, flags, mac, _mask, dev] = f.as_slice() else {
            continue;
        };
        if *dev != interface {
            continue;
        }
        let complete =
            u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|f| f & 0x2 != 0);
        let (Ok(ip), Some(mac)) = (ip.parse::<Ipv4Addr>(), parse_mac(mac)) else {
            continue;
        };
        if complete && mac != [0; 6] {
            out.insert(IpAddr::V4(ip), mac);
        }
    }
    out
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Reads the routes and neighbours of `interface` now.
pub fn read(interface: &str) -> NextHops {
    NextHops {
        routes: std::fs::read_to_string("/proc/net/route")
            .map(|t| parse_proc_route(&t, interface))
            .unwrap_or_default(),
        macs: std::fs::read_to_string("/proc/net/arp")
            .map(|t| parse_proc_arp(&t, interface))
            .unwrap_or_default(),
    }
}

/// The MAC address of `interface` (from sysfs).
pub fn interface_mac(interface: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).ok()?;
    parse_mac(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_arp_entries() {
        let text =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
                    198.18.0.10      0x1         0x2         6a:ca:56:d2:1e:7b     *        rec0\n\
                    198.18.0.20      0x1         0x0         00:00:00:00:00:00     *        rec0\n\
                    198.18.0.30      0x1         0x2         02:00:00:00:00:03     *        eth9\n\
                    garbage line\n";
        let t = parse_proc_arp(text, "rec0");
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.get(&"198.18.0.10".parse().unwrap()),
            Some(&[0x6a, 0xca, 0x56, 0xd2, 0x1e, 0x7b])
        );
        assert_eq!(parse_mac("02:00:00:00:00:0g"), None);
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:01:02"), None);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn routes_pick_the_gateway_of_the_longest_prefix() {
        // 198.18.0.0/24 on-link, 203.0.113.0/24 via 198.18.0.20, default via 198.18.0.254
        // (as a little-endian host prints them).
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    rec0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    rec0\t007100CB\t140012C6\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    rec0\t00000000\tFE0012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth9\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
        let routes = parse_proc_route(text, "rec0");
        assert_eq!(routes.len(), 3);
        let mut hops = NextHops {
            routes,
            macs: HashMap::new(),
        };
        for (ip, mac) in [
            ("198.18.0.10", 1u8),
            ("198.18.0.20", 2),
            ("198.18.0.254", 3),
        ] {
            hops.macs.insert(ip.parse().unwrap(), [mac; 6]);
        }
        let mac = |d: &str| hops.mac_for(d.parse().unwrap()).map(|m| m[0]);
        assert_eq!(mac("198.18.0.10"), Some(1), "on-link");
        assert_eq!(mac("203.0.113.5"), Some(2), "via 198.18.0.20");
        assert_eq!(mac("192.0.2.1"), Some(3), "default route");
        assert_eq!(mac("198.18.0.99"), None, "on-link but unresolved");
        assert_eq!(mac("2001:db8::1"), None);
    }
}
