//! Property tests: parsing never panics, and rewriting does what the plan
//! says while keeping everything else.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

/// Exercises everything a caller may do with a successfully parsed SDP.
fn use_parsed(sdp: &Sdp) {
    for m in sdp.medias() {
        let _ = (m.clock_rate(), m.rtp_peer(), m.rtcp_peer());
    }
    let _ = sdp.session_address();
    let plan = RewritePlan {
        address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        medias: sdp
            .medias()
            .iter()
            .map(|m| (m.index % 2 == 0).then_some(MediaPorts { rtp: 1, rtcp: 2 }))
            .collect(),
        replace_origin: true,
        remove_ice: true,
    };
    let out = sdp.rewrite(&plan).expect("valid plan");
    // The relay's own output must always be acceptable again.
    Sdp::parse(&out).expect("rewritten SDP parses");
}

/// Lines that look like SDP, to get past the first checks of the parser.
fn sdp_like_line() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("v=0".to_owned()),
        4 => Just("m=audio 4000 RTP/AVP 0".to_owned()),
        2 => Just("c=IN IP4 192.0.2.1".to_owned()),
        3 => "[vosctmabikx]=[ -~]{0,30}",
        4 => "m=(audio|video) [0-9/]{1,7} [A-Za-z/]{1,10} [0-9a-z *]{0,10}",
        3 => "c=(IN|in|ATM) (IP4|IP6|X) [0-9a-f.:/]{1,20}",
        6 => "a=(rtcp|rtpmap|rtcp-mux|candidate|sendonly|ice-ufrag)(:[ -~]{0,25})?",
        1 => "o=[ -~]{0,40}",
        1 => "[ -~]{0,10}",
        1 => "\\PC{0,10}",
    ]
}

fn sdp_like() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(sdp_like_line(), 0..10),
        prop_oneof![4 => Just("\r\n"), 2 => Just("\n"), 1 => Just("\r")],
    )
        .prop_map(|(lines, eol)| {
            let mut s = String::from("v=0");
            s.push_str(eol);
            for line in lines {
                s.push_str(&line);
                s.push_str(eol);
            }
            s
        })
}

fn doc_ipv4() -> impl Strategy<Value = IpAddr> {
    (
        prop::sample::select(vec![[192, 0, 2], [198, 51, 100], [203, 0, 113]]),
        0u8..=255,
    )
        .prop_map(|([a, b, c], d)| IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
}

fn doc_ipv6() -> impl Strategy<Value = IpAddr> {
    any::<u16>().prop_map(|x| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x)))
}

fn doc_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![doc_ipv4(), doc_ipv6()]
}

fn relay_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..=1, any::<u8>(), any::<u8>()).prop_map(|(b, c, d)| IpAddr::V4(Ipv4Addr::new(
            198,
            18 + b,
            c,
            d
        ))),
        any::<u16>().prop_map(|x| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, x))),
    ]
}

fn addrtype_of(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    }
}

/// One generated media description.
#[derive(Debug, Clone)]
struct GenMedia {
    kind: &'static str,
    port: u16,
    proto: &'static str,
    formats: Vec<u8>,
    connection: Option<IpAddr>,
    rtcp: Option<(u16, Option<IpAddr>)>,
    mux: bool,
    direction: Option<Direction>,
    ice: bool,
    extra: Vec<String>,
}

fn gen_media() -> impl Strategy<Value = GenMedia> {
    (
        prop::sample::select(vec!["audio", "video", "image", "text"]),
        prop_oneof![Just(0u16), 1024u16..=65534],
        prop::sample::select(vec![
            "RTP/AVP",
            "RTP/SAVP",
            "UDP/TLS/RTP/SAVPF",
            "TCP/RTP/AVP",
        ]),
        prop::collection::vec(prop_oneof![0u8..=34, 96u8..=127], 1..5),
        prop::option::of(doc_ip()),
        prop::option::of((1u16..=65535, prop::option::of(doc_ip()))),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ])),
        any::<bool>(),
        prop::collection::vec("a=X-[a-z]{1,8}(:[ -~]{0,20})?|b=AS:[0-9]{1,5}", 0..3),
    )
        .prop_map(
            |(kind, port, proto, formats, connection, rtcp, mux, direction, ice, extra)| GenMedia {
                kind,
                port,
                proto,
                formats,
                connection,
                rtcp,
                mux,
                direction,
                ice,
                extra,
            },
        )
}

/// A generated valid SDP and a plan for it.
#[derive(Debug, Clone)]
struct Case {
    text: String,
    plan: RewritePlan,
}

fn render(session_c: Option<IpAddr>, session_ice: bool, medias: &[GenMedia]) -> String {
    let mut s = String::from("v=0\r\no=- 42 7 IN IP4 192.0.2.99\r\ns=-\r\n");
    if let Some(ip) = session_c {
        s += &format!("c=IN {} {ip}\r\n", addrtype_of(ip));
    }
    s += "t=0 0\r\n";
    if session_ice {
        s += "a=ice-lite\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n";
    }
    for m in medias {
        let fmts: Vec<String> = m.formats.iter().map(u8::to_string).collect();
        s += &format!("m={} {} {} {}\r\n", m.kind, m.port, m.proto, fmts.join(" "));
        if let Some(ip) = m.connection {
            s += &format!("c=IN {} {ip}\r\n", addrtype_of(ip));
        }
        for line in &m.extra {
            s += line;
            s += "\r\n";
        }
        for pt in &m.formats {
            if *pt >= 96 {
                s += &format!("a=rtpmap:{pt} X{pt}/16000\r\n");
            }
        }
        if let Some(d) = m.direction {
            s += &format!("a={}\r\n", d.as_str());
        }
        match m.rtcp {
            Some((port, Some(ip))) => {
                s += &format!("a=rtcp:{port} IN {} {ip}\r\n", addrtype_of(ip))
            }
            Some((port, None)) => s += &format!("a=rtcp:{port}\r\n"),
            None => {}
        }
        if m.mux {
            s += "a=rtcp-mux\r\n";
        }
        if m.ice {
            s += "a=ice-ufrag:efgh\r\na=candidate:1 1 UDP 2130706431 192.0.2.1 4000 typ host\r\na=end-of-candidates\r\n";
        }
    }
    s
}

fn gen_case() -> impl Strategy<Value = Case> {
    (
        prop::option::of(doc_ip()),
        any::<bool>(),
        prop::collection::vec(gen_media(), 1..5),
        relay_ip(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(
            |(session_c, session_ice, mut medias, address, replace_origin, remove_ice)| {
                medias[0].kind = "audio";
                let n = medias.len();
                let plan_medias = prop::collection::vec(
                    prop::option::of((1u16..=65535, 1u16..=65535))
                        .prop_map(|p| p.map(|(rtp, rtcp)| MediaPorts { rtp, rtcp })),
                    0..=n,
                );
                plan_medias.prop_map(move |plan_medias| Case {
                    text: render(session_c, session_ice, &medias),
                    plan: RewritePlan {
                        address,
                        medias: plan_medias,
                        replace_origin,
                        remove_ice,
                    },
                })
            },
        )
}

/// Whether a line is one that `rewrite` may change, add or drop.
fn is_rewritable(line: &str) -> bool {
    [
        "o=",
        "c=",
        "m=",
        "a=rtcp:",
        "a=ice-",
        "a=candidate",
        "a=end-of-candidates",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(sdp) = Sdp::parse(&bytes) {
            use_parsed(&sdp);
        }
    }

    #[test]
    fn parse_never_panics_on_strings(s in "\\PC{0,512}") {
        if let Ok(sdp) = Sdp::parse(s.as_bytes()) {
            use_parsed(&sdp);
        }
    }

    #[test]
    fn parse_never_panics_on_sdp_like_text(s in sdp_like()) {
        if let Ok(sdp) = Sdp::parse(s.as_bytes()) {
            use_parsed(&sdp);
        }
    }

    #[test]
    fn rewrite_follows_the_plan(case in gen_case()) {
        let sdp = Sdp::parse(case.text.as_bytes()).expect("generated SDP parses");
        let before = sdp.medias();
        let out = sdp.rewrite(&case.plan).expect("plan fits");
        let out_text = String::from_utf8(out.clone()).expect("UTF-8 output");
        prop_assert!(out_text.ends_with("\r\n"));
        prop_assert_eq!(out_text.matches('\n').count(), out_text.matches("\r\n").count());

        let rewritten = Sdp::parse(&out).expect("rewritten SDP parses");
        let after = rewritten.medias();
        prop_assert_eq!(after.len(), before.len());
        let address = case.plan.address;
        prop_assert_eq!(
            rewritten.session_address(),
            sdp.session_address().map(|_| address)
        );

        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            match case.plan.medias.get(i).copied().flatten() {
                Some(ports) => {
                    prop_assert_eq!(a.port, ports.rtp);
                    prop_assert_eq!(a.address, Some(address));
                    prop_assert_eq!(a.rtp_peer(), Some(SocketAddr::new(address, ports.rtp)));
                    prop_assert_eq!(a.rtcp_port, b.rtcp_port.map(|_| ports.rtcp));
                    prop_assert_eq!(a.rtcp_address, b.rtcp_address.map(|_| address));
                    if !a.rtcp_mux {
                        let rtcp = if b.rtcp_port.is_some() {
                            Some(SocketAddr::new(address, ports.rtcp))
                        } else {
                            ports.rtp.checked_add(1).map(|p| SocketAddr::new(address, p))
                        };
                        prop_assert_eq!(a.rtcp_peer(), rtcp);
                    }
                }
                None => {
                    prop_assert_eq!(a.port, b.port);
                    prop_assert_eq!(a.rtcp_port, b.rtcp_port);
                    prop_assert_eq!(a.rtcp_address, b.rtcp_address);
                    if b.port != 0 {
                        prop_assert_eq!(a.address, b.address);
                        prop_assert_eq!(a.rtp_peer(), b.rtp_peer());
                    }
                }
            }
            prop_assert_eq!(&a.kind, &b.kind);
            prop_assert_eq!(&a.proto, &b.proto);
            prop_assert_eq!(&a.formats, &b.formats);
            prop_assert_eq!(&a.codecs, &b.codecs);
            prop_assert_eq!(a.rtcp_mux, b.rtcp_mux);
            prop_assert_eq!(a.direction, b.direction);
            prop_assert_eq!(a.is_udp, b.is_udp);
        }

        // Everything rewrite may not touch is kept, in order.
        let kept = |s: &str| {
            s.lines()
                .filter(|l| !is_rewritable(l))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(kept(&case.text), kept(&out_text));

        // ICE attributes are gone iff requested; o= follows the flag.
        let has_ice = |s: &str| {
            s.lines().any(|l| {
                l.starts_with("a=ice-") || l.starts_with("a=candidate")
                    || l.starts_with("a=end-of-candidates")
            })
        };
        if case.plan.remove_ice {
            prop_assert!(!has_ice(&out_text));
        } else {
            prop_assert_eq!(has_ice(&case.text), has_ice(&out_text));
        }
        let origin = out_text.lines().nth(1).unwrap_or_default();
        if case.plan.replace_origin {
            prop_assert_eq!(
                origin.to_owned(),
                format!("o=- 42 7 IN {} {address}", if address.is_ipv4() { "IP4" } else { "IP6" })
            );
        } else {
            prop_assert_eq!(origin, "o=- 42 7 IN IP4 192.0.2.99");
        }

        // Rewriting the output again with the same plan changes nothing.
        let again = rewritten.rewrite(&case.plan).expect("plan fits");
        prop_assert_eq!(String::from_utf8(again).unwrap(), out_text);
    }

    #[test]
    fn empty_plan_without_session_c_is_identity(case in gen_case()) {
        // No session-level c= and nothing relayed: the output is the input.
        let sdp = Sdp::parse(case.text.as_bytes()).expect("parses");
        if sdp.session_address().is_none() {
            let plan = RewritePlan {
                medias: vec![],
                replace_origin: false,
                remove_ice: false,
                ..case.plan
            };
            let out = sdp.rewrite(&plan).expect("plan fits");
            prop_assert_eq!(String::from_utf8(out).unwrap(), case.text);
        }
    }
}
