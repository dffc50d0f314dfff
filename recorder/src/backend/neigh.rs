//! Next-hop MAC addresses for frames the AF_XDP path transmits, from the kernel's IPv4
//! neighbour table (`/proc/net/arp`), refreshed by the control thread and handed to the
//! workers as an immutable snapshot (a lookup is a hash probe, no lock).
//!
//! Destinations without an entry (not resolved yet, IPv6, or beyond a router) are sent
//! through the kernel instead, which resolves them; the next refresh picks the entry up.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// An immutable snapshot of the neighbour table of one interface.
pub type Neighbours = Arc<HashMap<IpAddr, [u8; 6]>>;

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

/// Reads the table of `interface` now.
pub fn read(interface: &str) -> HashMap<IpAddr, [u8; 6]> {
    std::fs::read_to_string("/proc/net/arp")
        .map(|t| parse_proc_arp(&t, interface))
        .unwrap_or_default()
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
}
