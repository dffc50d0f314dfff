//! Next-hop MAC addresses for frames the AF_XDP path transmits: the interface's routes
//! (on-link, or through a gateway: longest prefix wins) and its neighbour table, IPv4 and
//! IPv6, read from the kernel over rtnetlink ([`super::netlink`]) by the control thread and
//! handed to the workers as an immutable snapshot (a lookup is a short prefix scan and a
//! hash probe, no lock).
//!
//! A destination whose next hop has no usable entry yet is sent through the kernel instead,
//! which resolves it; the next refresh picks the entry up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

pub use super::netlink::Route;

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
        let hop = self
            .routes
            .iter()
            .find(|r| r.covers(dst))
            .and_then(|r| r.gateway)
            .unwrap_or(dst);
        self.macs.get(&hop).copied()
    }
}

/// An immutable snapshot shared with the workers.
pub type Neighbours = Arc<NextHops>;

/// Reads the routes and neighbours of interface `ifindex` now. On a netlink error the
/// previous snapshot should be kept (the caller logs it).
pub fn read(ifindex: u32) -> std::io::Result<NextHops> {
    let (macs, routes) = super::netlink::read(ifindex)?;
    Ok(NextHops { routes, macs })
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

/// The MAC address of `interface` (from sysfs).
pub fn interface_mac(interface: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).ok()?;
    parse_mac(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, prefix: u8, gw: Option<&str>) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            prefix,
            gateway: gw.map(|g| g.parse().unwrap()),
        }
    }

    #[test]
    fn next_hop_is_the_gateway_of_the_longest_prefix() {
        let mut hops = NextHops {
            routes: vec![
                route("198.18.0.0", 24, None),
                route("203.0.113.0", 24, Some("198.18.0.20")),
                route("2001:db8::", 64, None),
                route("0.0.0.0", 0, Some("198.18.0.254")),
                route("::", 0, Some("2001:db8::1")),
            ],
            macs: HashMap::new(),
        };
        for (ip, mac) in [
            ("198.18.0.10", 1u8),
            ("198.18.0.20", 2),
            ("198.18.0.254", 3),
            ("2001:db8::1", 4),
            ("2001:db8::7", 5),
        ] {
            hops.macs.insert(ip.parse().unwrap(), [mac; 6]);
        }
        let mac = |d: &str| hops.mac_for(d.parse().unwrap()).map(|m| m[0]);
        assert_eq!(mac("198.18.0.10"), Some(1), "on-link");
        assert_eq!(mac("203.0.113.5"), Some(2), "via 198.18.0.20");
        assert_eq!(mac("192.0.2.1"), Some(3), "default route");
        assert_eq!(mac("198.18.0.99"), None, "on-link but unresolved");
        assert_eq!(mac("2001:db8::7"), Some(5), "IPv6 on-link");
        assert_eq!(mac("2001:db8:9::1"), Some(4), "IPv6 default route");
        assert_eq!(parse_mac("02:00:00:00:00:0g"), None);
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:01:02"), None);
    }
}
