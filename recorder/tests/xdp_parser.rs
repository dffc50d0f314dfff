//! The XDP program and the user-space frame parser agree: for a table of frames (IPv4/IPv6,
//! VLAN tags, fragments, options, short frames, wrong ports and addresses, bad lengths), the
//! loaded program, run in the kernel with `BPF_PROG_TEST_RUN`, redirects exactly the frames
//! that `media::frame::parse` accepts for an active media port on the recorder's address
//! (anything else it redirected would be dropped by the worker instead of reaching the
//! kernel). Also: the generated ABI constants match the loaded program's maps. Needs root
//! and BPF, as CI runs; fails (never skips) when the program cannot load.

use std::net::IpAddr;

use recorder::backend::xdp_prog::{abi, expected_maps, LoadedProgram, XdpCounters};
use recorder::media::frame;

const XDP_PASS: u32 = 2;
const ACTIVE: u16 = 30_000;
const LOCAL4: &str = "198.18.0.1";
const LOCAL6: &str = "2001:2::1";

fn load(local: &str) -> LoadedProgram {
    let local: IpAddr = local.parse().unwrap();
    let mut prog = LoadedProgram::load(Some(local)).unwrap_or_else(|e| {
        panic!("the XDP program must load (root, BPF and the JIT are needed; CI has them): {e}")
    });
    prog.set_media_port(ACTIVE, true).unwrap();
    prog.set_media_port(ACTIVE + 1, true).unwrap();
    prog
}

/// An Ethernet frame: `tags` 802.1Q/802.1ad TPIDs, then `ethertype` and `l3`.
fn eth(tags: &[u16], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for tpid in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0, 42]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(8 + payload as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend(std::iter::repeat_n(0xab, payload));
    u
}

/// An IPv4 packet from 198.18.0.10 to `dst` carrying `l4` (no checksum: neither parser
/// checks it), with `options` words of IP options.
fn ipv4(dst: [u8; 4], proto: u8, frag: u16, options: usize, l4: &[u8]) -> Vec<u8> {
    let hlen = 20 + 4 * options;
    let mut h = vec![0x40 | (hlen / 4) as u8, 0];
    h.extend_from_slice(&((hlen + l4.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0, 198, 18, 0, 10]);
    h.extend_from_slice(&dst);
    h.extend(std::iter::repeat_n(1, 4 * options)); // NOP options
    h.extend_from_slice(l4);
    h
}

fn ipv6(dst: &str, next: u8, l4: &[u8]) -> Vec<u8> {
    let dst: std::net::Ipv6Addr = dst.parse().unwrap();
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&"2001:2::10".parse::<std::net::Ipv6Addr>().unwrap().octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    h
}

const V4: u16 = 0x0800;
const V6: u16 = 0x86dd;
const Q: u16 = 0x8100;
const AD: u16 = 0x88a8;
const ME: [u8; 4] = [198, 18, 0, 1];

/// The frames of the table, by name.
fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let media = udp(4000, ACTIVE, 172);
    let mut t = vec![
        ("v4 media", eth(&[], V4, &ipv4(ME, 17, 0, 0, &media))),
        (
            "v4 rtcp port",
            eth(&[], V4, &ipv4(ME, 17, 0, 0, &udp(4001, ACTIVE + 1, 40))),
        ),
        (
            "v4 inactive port",
            eth(&[], V4, &ipv4(ME, 17, 0, 0, &udp(4000, ACTIVE + 2, 20))),
        ),
        (
            "v4 sip port",
            eth(&[], V4, &ipv4(ME, 17, 0, 0, &udp(5060, 5060, 300))),
        ),
        (
            "v4 other address",
            eth(&[], V4, &ipv4([198, 18, 0, 2], 17, 0, 0, &media)),
        ),
        ("v4 one vlan", eth(&[Q], V4, &ipv4(ME, 17, 0, 0, &media))),
        ("v4 q-in-q", eth(&[AD, Q], V4, &ipv4(ME, 17, 0, 0, &media))),
        (
            "v4 three tags",
            eth(&[AD, Q, Q], V4, &ipv4(ME, 17, 0, 0, &media)),
        ),
        ("v4 options", eth(&[], V4, &ipv4(ME, 17, 0, 2, &media))),
        ("v4 max options", eth(&[], V4, &ipv4(ME, 17, 0, 10, &media))),
        (
            "v4 more fragments",
            eth(&[], V4, &ipv4(ME, 17, 0x2000, 0, &media)),
        ),
        (
            "v4 fragment offset",
            eth(&[], V4, &ipv4(ME, 17, 0x0010, 0, &media)),
        ),
        (
            "v4 don't fragment",
            eth(&[], V4, &ipv4(ME, 17, 0x4000, 0, &media)),
        ),
        ("v4 tcp", eth(&[], V4, &ipv4(ME, 6, 0, 0, &media))),
        (
            "v4 zero payload",
            eth(&[], V4, &ipv4(ME, 17, 0, 0, &udp(4000, ACTIVE, 0))),
        ),
        ("v6 media", eth(&[], V6, &ipv6(LOCAL6, 17, &media))),
        ("v6 vlan", eth(&[Q], V6, &ipv6(LOCAL6, 17, &media))),
        ("v6 q-in-q", eth(&[AD, Q], V6, &ipv6(LOCAL6, 17, &media))),
        (
            "v6 rtcp port",
            eth(&[], V6, &ipv6(LOCAL6, 17, &udp(4001, ACTIVE + 1, 40))),
        ),
        (
            "v6 other address",
            eth(&[], V6, &ipv6("2001:2::2", 17, &media)),
        ),
        (
            "v6 hop-by-hop header",
            eth(&[], V6, &ipv6(LOCAL6, 0, &media)),
        ),
        (
            "v6 inactive port",
            eth(&[], V6, &ipv6(LOCAL6, 17, &udp(1, 40_000, 10))),
        ),
        ("arp", eth(&[], 0x0806, &[0; 28])),
        ("ethernet header only", eth(&[], V4, &[])),
        ("vlan tag cut", eth(&[], Q, &[0])),
    ];
    let base = eth(&[], V4, &ipv4(ME, 17, 0, 0, &media));
    let (ip, l4) = (14, 34);
    let patch = |name, f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = base.clone();
        f(&mut v);
        (name, v)
    };
    t.extend([
        patch("v4 header cut", &|v| v.truncate(ip + 19)),
        patch("udp header cut", &|v| v.truncate(l4 + 7)),
        patch("udp header only", &|v| {
            v.truncate(l4 + 8);
            v[l4 + 4..l4 + 6].copy_from_slice(&8u16.to_be_bytes());
        }),
        patch("v4 version 6", &|v| v[ip] = 0x65),
        patch("v4 ihl 4", &|v| v[ip] = 0x44),
        patch("v4 ihl past the frame", &|v| {
            v[ip] = 0x4f;
            v.truncate(ip + 40);
        }),
        patch("udp length past the frame", &|v| {
            v[l4 + 4..l4 + 6].copy_from_slice(&400u16.to_be_bytes())
        }),
        patch("udp length below 8", &|v| {
            v[l4 + 4..l4 + 6].copy_from_slice(&7u16.to_be_bytes())
        }),
        patch("udp length short (padding)", &|v| {
            v[l4 + 4..l4 + 6].copy_from_slice(&20u16.to_be_bytes())
        }),
        patch("ethernet padding after udp", &|v| {
            v.extend_from_slice(&[0; 30])
        }),
    ]);
    let v6 = eth(&[], V6, &ipv6(LOCAL6, 17, &media));
    let mut cut = v6.clone();
    cut.truncate(14 + 39);
    t.push(("v6 header cut", cut));
    let mut bad_len = v6;
    bad_len[14 + 40 + 4..14 + 40 + 6].copy_from_slice(&1000u16.to_be_bytes());
    t.push(("v6 udp length past the frame", bad_len));
    t
}

/// What the worker accepts: the user-space parser's verdict plus the port and address
/// checks the program makes.
fn user_space_takes(f: &[u8], local: IpAddr) -> bool {
    frame::parse(f).is_ok_and(|u| {
        u.destination.ip() == local
            && (u.destination.port() == ACTIVE || u.destination.port() == ACTIVE + 1)
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Redirect,
    Pass,
}

/// Runs the program on `f` and reads which counter moved.
fn kernel_verdict(prog: &mut LoadedProgram, f: &[u8]) -> Verdict {
    let before = prog.counters();
    let action = prog.test_run(f).unwrap_or_else(|e| panic!("test run: {e}"));
    // No AF_XDP socket is in `xsks`, so a redirect falls back to XDP_PASS too.
    assert_eq!(
        action, XDP_PASS,
        "the program only ever passes or redirects"
    );
    let after = prog.counters();
    let delta = |a: u64, b: u64| a - b;
    let d = XdpCounters {
        redirected: delta(after.redirected, before.redirected),
        passed: delta(after.passed, before.passed),
        parse_errors: delta(after.parse_errors, before.parse_errors),
    };
    assert_eq!(
        d.redirected + d.passed + d.parse_errors,
        1,
        "exactly one counter per frame: {d:?}"
    );
    if d.redirected == 1 {
        Verdict::Redirect
    } else {
        Verdict::Pass
    }
}

fn agree(local: &str) {
    let mut prog = load(local);
    let local: IpAddr = local.parse().unwrap();
    let mut disagree = Vec::new();
    let mut redirected = 0;
    for (name, f) in frames() {
        let want = if user_space_takes(&f, local) {
            Verdict::Redirect
        } else {
            Verdict::Pass
        };
        let got = kernel_verdict(&mut prog, &f);
        if got == Verdict::Redirect {
            redirected += 1;
        }
        if got != want {
            disagree.push(format!(
                "{name}: program {got:?}, frame::parse says {want:?} ({:?})",
                frame::parse(&f)
            ));
        }
    }
    assert!(
        disagree.is_empty(),
        "the XDP program and media::frame::parse disagree:\n{}",
        disagree.join("\n")
    );
    assert!(redirected >= 4, "the table has media frames for {local}");
}

#[test]
fn program_and_frame_parser_agree_for_an_ipv4_media_address() {
    agree(LOCAL4);
}

#[test]
fn program_and_frame_parser_agree_for_an_ipv6_media_address() {
    agree(LOCAL6);
}

#[test]
fn generated_abi_matches_the_loaded_programs_maps() {
    // `load` compares every map's kernel info with `expected_maps` and fails otherwise.
    let prog = load(LOCAL4);
    let maps = expected_maps();
    let names: Vec<&str> = maps.iter().map(|m| m.name).collect();
    assert_eq!(names, ["media_ports", "xsks", "counters"]);
    assert_eq!(maps[0].max_entries, 65_536, "one entry per UDP port");
    assert_eq!(maps[2].max_entries, abi::LC_COUNTERS);
    assert_eq!(
        [abi::LC_REDIRECTED, abi::LC_PASSED, abi::LC_PARSE_ERRORS],
        [0, 1, 2]
    );
    // The counters are read at the generated indices: one frame moves exactly the right one.
    let mut prog = prog;
    let media = eth(&[], V4, &ipv4(ME, 17, 0, 0, &udp(4000, ACTIVE, 20)));
    let before = prog.counters();
    prog.test_run(&media).unwrap();
    let after = prog.counters();
    assert_eq!(after.redirected, before.redirected + 1);
    assert_eq!(after.passed, before.passed);
}
