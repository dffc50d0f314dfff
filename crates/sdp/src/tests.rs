//! Unit tests: inspection, rewriting and validation.
//!
//! Addresses come from the documentation ranges (192.0.2.0/24,
//! 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); the relay uses
//! 198.18.0.0/15.

use std::net::{IpAddr, SocketAddr};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn relay() -> IpAddr {
    ip("198.18.0.1")
}

fn ports(rtp: u16, rtcp: u16) -> Option<MediaPorts> {
    Some(MediaPorts { rtp, rtcp })
}

fn plan(medias: Vec<Option<MediaPorts>>) -> RewritePlan {
    RewritePlan {
        address: relay(),
        medias,
        replace_origin: false,
        remove_ice: false,
    }
}

fn parse(s: &str) -> Sdp {
    Sdp::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn rewrite(s: &str, plan: &RewritePlan) -> String {
    String::from_utf8(parse(s).rewrite(plan).unwrap()).unwrap()
}

const CARRIER_OFFER: &str = "v=0\r\n\
o=carrier 1680000000 1680000001 IN IP4 203.0.113.10\r\n\
s=SIP Call\r\n\
c=IN IP4 203.0.113.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=rtcp:49171\r\n";

#[test]
fn carrier_offer_inspection() {
    let sdp = parse(CARRIER_OFFER);
    assert_eq!(sdp.session_address(), Some(ip("203.0.113.10")));
    let medias = sdp.medias();
    assert_eq!(medias.len(), 1);
    let m = &medias[0];
    assert_eq!(m.index, 0);
    assert_eq!(m.kind, "audio");
    assert_eq!(m.port, 49170);
    assert_eq!(m.proto, "RTP/AVP");
    assert_eq!(m.formats, ["0", "8", "101"]);
    assert_eq!(m.address, Some(ip("203.0.113.10")));
    assert_eq!(m.rtcp_port, Some(49171));
    assert_eq!(m.rtcp_address, None);
    assert!(!m.rtcp_mux);
    assert_eq!(m.direction, Direction::SendRecv);
    assert!(m.is_udp);
    assert_eq!(
        m.codecs,
        vec![
            Codec {
                payload_type: 0,
                name: "PCMU".into(),
                clock_rate: 8000,
                channels: 1
            },
            Codec {
                payload_type: 8,
                name: "PCMA".into(),
                clock_rate: 8000,
                channels: 1
            },
            Codec {
                payload_type: 101,
                name: "telephone-event".into(),
                clock_rate: 8000,
                channels: 1
            },
        ]
    );
    assert_eq!(m.clock_rate(), 8000);
    assert_eq!(m.rtp_peer(), Some(sock("203.0.113.10:49170")));
    assert_eq!(m.rtcp_peer(), Some(sock("203.0.113.10:49171")));
}

#[test]
fn carrier_offer_rewrite_exact() {
    let out = rewrite(CARRIER_OFFER, &plan(vec![ports(30000, 30001)]));
    let expected = "v=0\r\n\
o=carrier 1680000000 1680000001 IN IP4 203.0.113.10\r\n\
s=SIP Call\r\n\
c=IN IP4 198.18.0.1\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=rtcp:30001\r\n";
    assert_eq!(out, expected);
    let m = &parse(&out).medias()[0];
    assert_eq!(m.rtp_peer(), Some(sock("198.18.0.1:30000")));
    assert_eq!(m.rtcp_peer(), Some(sock("198.18.0.1:30001")));
}

#[test]
fn lf_input_gives_crlf_output() {
    let lf = CARRIER_OFFER.replace("\r\n", "\n");
    // Relayed through the same ports, so only c= changes.
    let out = rewrite(&lf, &plan(vec![ports(49170, 49171)]));
    assert_eq!(
        out,
        CARRIER_OFFER.replace("c=IN IP4 203.0.113.10", "c=IN IP4 198.18.0.1")
    );
    // A last line without terminator gets one; empty lines are dropped.
    let sdp = "v=0\r\n\r\nm=audio 4000 RTP/AVP 0\r\na=x";
    assert_eq!(
        rewrite(sdp, &plan(vec![])),
        "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=x\r\n"
    );
}

#[test]
fn media_level_connection_only() {
    let sdp = "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 8\r\n\
c=IN IP4 192.0.2.1\r\n\
a=rtpmap:8 PCMA/8000\r\n";
    let parsed = parse(sdp);
    assert_eq!(parsed.session_address(), None);
    let m = &parsed.medias()[0];
    assert_eq!(m.address, Some(ip("192.0.2.1")));
    assert_eq!(m.rtcp_peer(), Some(sock("192.0.2.1:4001")));
    assert_eq!(
        rewrite(sdp, &plan(vec![ports(30000, 30001)])),
        "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 8\r\n\
c=IN IP4 198.18.0.1\r\n\
a=rtpmap:8 PCMA/8000\r\n"
    );
}

#[test]
fn both_levels() {
    let sdp = "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
c=IN IP4 192.0.2.1\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n\
c=IN IP4 198.51.100.7\r\n\
c=IN IP4 198.51.100.8\r\n\
m=audio 4002 RTP/AVP 0\r\n";
    let parsed = parse(sdp);
    assert_eq!(parsed.session_address(), Some(ip("192.0.2.1")));
    let medias = parsed.medias();
    assert_eq!(medias[0].address, Some(ip("198.51.100.7")));
    assert_eq!(medias[1].address, Some(ip("192.0.2.1")));
    assert_eq!(
        rewrite(sdp, &plan(vec![ports(30000, 30001), ports(30002, 30003)])),
        "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
c=IN IP4 198.18.0.1\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0\r\n\
c=IN IP4 198.18.0.1\r\n\
m=audio 30002 RTP/AVP 0\r\n"
    );
}

#[test]
fn ipv6_in_and_out() {
    let sdp = "v=0\r\n\
o=- 1 1 IN IP6 2001:db8::1\r\n\
s=-\r\n\
c=IN IP6 2001:db8::1\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n\
a=rtcp:4001 IN IP6 2001:db8::2\r\n";
    let m = &parse(sdp).medias()[0];
    assert_eq!(m.address, Some(ip("2001:db8::1")));
    assert_eq!(m.rtp_peer(), Some(sock("[2001:db8::1]:4000")));
    assert_eq!(m.rtcp_peer(), Some(sock("[2001:db8::2]:4001")));

    // IPv6 relay address, with replace_origin.
    let mut p = plan(vec![ports(30000, 30001)]);
    p.address = ip("2001:db8:ffff::1");
    p.replace_origin = true;
    assert_eq!(
        rewrite(sdp, &p),
        "v=0\r\n\
o=- 1 1 IN IP6 2001:db8:ffff::1\r\n\
s=-\r\n\
c=IN IP6 2001:db8:ffff::1\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0\r\n\
a=rtcp:30001 IN IP6 2001:db8:ffff::1\r\n"
    );

    // IPv6 party, IPv4 relay: addrtype follows the relay address.
    assert_eq!(
        rewrite(sdp, &plan(vec![ports(30000, 30001)])),
        "v=0\r\n\
o=- 1 1 IN IP6 2001:db8::1\r\n\
s=-\r\n\
c=IN IP4 198.18.0.1\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0\r\n\
a=rtcp:30001 IN IP4 198.18.0.1\r\n"
    );
}

#[test]
fn rtcp_mux() {
    let sdp = "v=0\r\n\
c=IN IP4 192.0.2.5\r\n\
m=audio 4000 RTP/AVP 0\r\n\
a=rtcp:4000\r\n\
a=rtcp-mux\r\n";
    let m = &parse(sdp).medias()[0];
    assert!(m.rtcp_mux);
    assert_eq!(m.rtcp_port, Some(4000));
    assert_eq!(m.rtcp_peer(), Some(sock("192.0.2.5:4000")));
    assert_eq!(m.rtcp_peer(), m.rtp_peer());

    let out = rewrite(sdp, &plan(vec![ports(30000, 30000)]));
    assert_eq!(
        out,
        "v=0\r\n\
c=IN IP4 198.18.0.1\r\n\
m=audio 30000 RTP/AVP 0\r\n\
a=rtcp:30000\r\n\
a=rtcp-mux\r\n"
    );

    // rtcp-mux without a=rtcp: no a=rtcp is added.
    let sdp = "v=0\r\nc=IN IP4 192.0.2.5\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp-mux\r\n";
    assert_eq!(
        rewrite(sdp, &plan(vec![ports(30000, 30001)])),
        "v=0\r\nc=IN IP4 198.18.0.1\r\nm=audio 30000 RTP/AVP 0\r\na=rtcp-mux\r\n"
    );
}

#[test]
fn rtcp_with_address() {
    let sdp = "v=0\r\n\
c=IN IP4 192.0.2.5\r\n\
m=audio 4000 RTP/AVP 0\r\n\
a=rtcp:53020 IN IP4 198.51.100.9\r\n";
    let m = &parse(sdp).medias()[0];
    assert_eq!(m.rtcp_port, Some(53020));
    assert_eq!(m.rtcp_address, Some(ip("198.51.100.9")));
    assert_eq!(m.rtcp_peer(), Some(sock("198.51.100.9:53020")));
    assert_eq!(
        rewrite(sdp, &plan(vec![ports(30000, 30001)])),
        "v=0\r\n\
c=IN IP4 198.18.0.1\r\n\
m=audio 30000 RTP/AVP 0\r\n\
a=rtcp:30001 IN IP4 198.18.0.1\r\n"
    );
}

#[test]
fn rejected_video_stays_rejected() {
    let sdp = "v=0\r\n\
o=- 7 7 IN IP4 192.0.2.1\r\n\
s=-\r\n\
c=IN IP4 192.0.2.1\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n\
m=video 0 RTP/AVP 96\r\n\
a=rtpmap:96 H264/90000\r\n";
    let medias = parse(sdp).medias();
    assert_eq!(medias[1].kind, "video");
    assert_eq!(medias[1].port, 0);
    assert_eq!(medias[1].rtp_peer(), None);
    assert_eq!(medias[1].rtcp_peer(), None);
    assert_eq!(medias[1].clock_rate(), 90000);
    let expected = "v=0\r\n\
o=- 7 7 IN IP4 192.0.2.1\r\n\
s=-\r\n\
c=IN IP4 198.18.0.1\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0\r\n\
m=video 0 RTP/AVP 96\r\n\
a=rtpmap:96 H264/90000\r\n";
    assert_eq!(
        rewrite(sdp, &plan(vec![ports(30000, 30001), None])),
        expected
    );
    // A plan shorter than the m= lines treats the missing ones as None.
    assert_eq!(rewrite(sdp, &plan(vec![ports(30000, 30001)])), expected);
}

#[test]
fn unrelayed_active_stream_keeps_its_address() {
    let sdp = "v=0\r\n\
c=IN IP4 192.0.2.1\r\n\
m=audio 4000 RTP/AVP 0\r\n\
m=video 5000 RTP/AVP 96\r\n\
i=camera\r\n\
a=rtpmap:96 VP8/90000\r\n";
    let out = rewrite(sdp, &plan(vec![ports(30000, 30001), None]));
    assert_eq!(
        out,
        "v=0\r\n\
c=IN IP4 198.18.0.1\r\n\
m=audio 30000 RTP/AVP 0\r\n\
m=video 5000 RTP/AVP 96\r\n\
i=camera\r\n\
c=IN IP4 192.0.2.1\r\n\
a=rtpmap:96 VP8/90000\r\n"
    );
    let medias = parse(&out).medias();
    assert_eq!(medias[1].rtp_peer(), Some(sock("192.0.2.1:5000")));
}

const WITH_ICE: &str = "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
a=ice-lite\r\n\
a=ice-options:trickle\r\n\
c=IN IP4 192.0.2.1\r\n\
t=0 0\r\n\
a=ice-ufrag:F7gI\r\n\
a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n\
m=audio 4000 RTP/AVP 0\r\n\
a=ice-ufrag:8hhY\r\n\
a=ice-pwd:asd88fgpdd777uzjYhagZg\r\n\
a=candidate:1 1 UDP 2130706431 192.0.2.1 4000 typ host\r\n\
a=candidate:1 2 UDP 2130706431 192.0.2.1 4001 typ host\r\n\
a=remote-candidates:1 192.0.2.9 5000\r\n\
a=end-of-candidates\r\n\
a=ice-mismatch\r\n\
a=sendrecv\r\n";

#[test]
fn ice_removed_at_both_levels() {
    let mut p = plan(vec![ports(30000, 30001)]);
    p.remove_ice = true;
    assert_eq!(
        rewrite(WITH_ICE, &p),
        "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
c=IN IP4 198.18.0.1\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0\r\n\
a=sendrecv\r\n"
    );
}

#[test]
fn ice_kept_without_remove_ice() {
    let out = rewrite(WITH_ICE, &plan(vec![ports(30000, 30001)]));
    assert_eq!(
        out,
        WITH_ICE
            .replace("c=IN IP4 192.0.2.1", "c=IN IP4 198.18.0.1")
            .replace("m=audio 4000", "m=audio 30000")
    );
}

#[test]
fn replace_origin() {
    let mut p = plan(vec![ports(30000, 30001)]);
    p.replace_origin = true;
    let out = rewrite(CARRIER_OFFER, &p);
    assert!(out
        .starts_with("v=0\r\no=carrier 1680000000 1680000001 IN IP4 198.18.0.1\r\ns=SIP Call\r\n"));
    // Without the flag o= is untouched (checked in carrier_offer_rewrite_exact).
}

#[test]
fn direction_media_vs_session() {
    let sdp = |session: &str, media: &str| {
        format!("v=0\r\nc=IN IP4 192.0.2.1\r\n{session}m=audio 4000 RTP/AVP 0\r\n{media}")
    };
    let dir = |s: String| parse(&s).medias()[0].direction;
    assert_eq!(dir(sdp("", "")), Direction::SendRecv);
    assert_eq!(dir(sdp("", "a=sendonly\r\n")), Direction::SendOnly);
    assert_eq!(dir(sdp("", "a=recvonly\r\n")), Direction::RecvOnly);
    assert_eq!(dir(sdp("", "a=inactive\r\n")), Direction::Inactive);
    assert_eq!(dir(sdp("a=sendonly\r\n", "")), Direction::SendOnly);
    assert_eq!(dir(sdp("a=inactive\r\n", "")), Direction::Inactive);
    assert_eq!(
        dir(sdp("a=sendonly\r\n", "a=recvonly\r\n")),
        Direction::RecvOnly
    );
    assert_eq!(
        dir(sdp("a=inactive\r\n", "a=sendrecv\r\n")),
        Direction::SendRecv
    );
    assert_eq!(Direction::RecvOnly.as_str(), "recvonly");
    assert_eq!(Direction::Inactive.to_string(), "inactive");
    assert_eq!(Direction::default(), Direction::SendRecv);
}

#[test]
fn no_connection_at_all_gets_media_level_c() {
    let sdp = "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n\
i=main audio\r\n\
b=AS:64\r\n\
a=ptime:20\r\n\
m=audio 0 RTP/AVP 0\r\n";
    let parsed = parse(sdp);
    assert_eq!(parsed.medias()[0].address, None);
    assert_eq!(parsed.medias()[0].rtp_peer(), None);
    let out = rewrite(sdp, &plan(vec![ports(30000, 30001)]));
    assert_eq!(
        out,
        "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.1\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0\r\n\
i=main audio\r\n\
c=IN IP4 198.18.0.1\r\n\
b=AS:64\r\n\
a=ptime:20\r\n\
m=audio 0 RTP/AVP 0\r\n"
    );
    // A relayed section consisting of the m= line only gets c= at its end.
    let sdp = "v=0\r\nm=audio 4000 RTP/AVP 0\r\n";
    assert_eq!(
        rewrite(sdp, &plan(vec![ports(30000, 30001)])),
        "v=0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 198.18.0.1\r\n"
    );
}

#[test]
fn unknown_attributes_and_lines_preserved_in_order() {
    let sdp = "v=0\r\n\
o=- 0123 01 IN IP4 192.0.2.1\r\n\
s=  spaced  \r\n\
t=0 0\r\n\
c=IN IP4 192.0.2.1\r\n\
a=X-vendor:some thing\r\n\
x=unknown line type\r\n\
r=604800 3600 0 90000\r\n\
m=audio 4000/2 RTP/AVP 0  8\r\n\
a=zzz\r\n\
b=TIAS:64000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
c=IN IP4 192.0.2.1\r\n\
a=X-later:1\r\n\
a=maxptime:40\r\n";
    let out = rewrite(sdp, &plan(vec![ports(30000, 30001)]));
    assert_eq!(
        out,
        "v=0\r\n\
o=- 0123 01 IN IP4 192.0.2.1\r\n\
s=  spaced  \r\n\
t=0 0\r\n\
c=IN IP4 198.18.0.1\r\n\
a=X-vendor:some thing\r\n\
x=unknown line type\r\n\
r=604800 3600 0 90000\r\n\
m=audio 30000/2 RTP/AVP 0  8\r\n\
a=zzz\r\n\
b=TIAS:64000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
c=IN IP4 198.18.0.1\r\n\
a=X-later:1\r\n\
a=maxptime:40\r\n"
    );
    let m = &parse(sdp).medias()[0];
    assert_eq!(m.formats, ["0", "8"]);
}

#[test]
fn codecs_static_dynamic_and_non_rtp() {
    let sdp = "v=0\r\n\
c=IN IP4 192.0.2.1\r\n\
m=audio 4000 RTP/AVP 18 3 4 9 13 96 111\r\n\
a=rtpmap:111 opus/48000/2\r\n\
m=image 4002 udptl t38\r\n\
m=message 4004 TCP/MSRP *\r\n\
m=audio 4006 TCP/TLS/RTP/SAVP 0\r\n\
m=audio 4008 UDP/TLS/RTP/SAVPF 0\r\n";
    let medias = parse(sdp).medias();
    let names: Vec<_> = medias[0]
        .codecs
        .iter()
        .map(|c| (c.payload_type, c.name.as_str(), c.clock_rate, c.channels))
        .collect();
    assert_eq!(
        names,
        [
            (18, "G729", 8000, 1),
            (3, "GSM", 8000, 1),
            (4, "G723", 8000, 1),
            (9, "G722", 8000, 1),
            (13, "CN", 8000, 1),
            (96, "", 0, 0),
            (111, "opus", 48000, 2),
        ]
    );
    assert!(medias[0].is_udp);
    assert_eq!(medias[1].kind, "image");
    assert!(medias[1].codecs.is_empty());
    assert_eq!(medias[1].clock_rate(), 8000);
    assert!(medias[1].is_udp);
    assert!(!medias[2].is_udp);
    assert!(!medias[3].is_udp);
    assert!(medias[4].is_udp);

    // Unknown first codec -> default clock rate.
    let sdp = "v=0\r\nm=audio 4000 RTP/AVP 96 0\r\n";
    assert_eq!(parse(sdp).medias()[0].clock_rate(), 8000);
    let sdp = "v=0\r\nm=audio 4000 RTP/AVP 111 0\r\na=rtpmap:111 opus/48000/2\r\n";
    assert_eq!(parse(sdp).medias()[0].clock_rate(), 48000);
}

#[test]
fn hold_address_returned_as_is() {
    let sdp = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
    let m = &parse(sdp).medias()[0];
    assert_eq!(m.address, Some(ip("0.0.0.0")));
    assert_eq!(m.rtp_peer(), Some(sock("0.0.0.0:4000")));
    assert_eq!(m.direction, Direction::SendOnly);
}

#[test]
fn rtcp_peer_edge_cases() {
    let m = &parse("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 65535 RTP/AVP 0\r\n").medias()[0];
    assert_eq!(m.rtcp_peer(), None);
    let m = &parse("v=0\r\nm=audio 4000 RTP/AVP 0\r\n").medias()[0];
    assert_eq!(m.rtcp_peer(), None);
}

#[test]
fn error_no_media() {
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";
    assert_eq!(Sdp::parse(sdp.as_bytes()).unwrap_err(), SdpError::NoMedia);
}

#[test]
fn error_video_only() {
    let sdp = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 4000 RTP/AVP 96\r\n";
    assert_eq!(Sdp::parse(sdp.as_bytes()).unwrap_err(), SdpError::NoAudio);
}

#[test]
fn error_bad_addresses() {
    for sdp in [
        "v=0\r\nc=IN IP4 192.0.2.300\r\nm=audio 4000 RTP/AVP 0\r\n",
        "v=0\r\nc=IN IP4 host.example.com\r\nm=audio 4000 RTP/AVP 0\r\n",
        "v=0\r\nc=ATM NSAP 47.0005\r\nm=audio 4000 RTP/AVP 0\r\n",
        "v=0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::zz\r\n",
        "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4 nowhere\r\n",
    ] {
        assert!(
            matches!(Sdp::parse(sdp.as_bytes()), Err(SdpError::BadAddress(_))),
            "{sdp}"
        );
    }
    let err = Sdp::parse(b"v=0\r\nc=IN IP4 192.0.2.300\r\nm=audio 4000 RTP/AVP 0\r\n");
    assert_eq!(
        err.unwrap_err(),
        SdpError::BadAddress("c=IN IP4 192.0.2.300".into())
    );
}

#[test]
fn error_malformed_rtcp() {
    for rtcp in [
        "a=rtcp",
        "a=rtcp:",
        "a=rtcp:abc",
        "a=rtcp:70000",
        "a=rtcp:1 IN",
    ] {
        let sdp = format!("v=0\r\nm=audio 4000 RTP/AVP 0\r\n{rtcp}\r\n");
        assert!(
            matches!(Sdp::parse(sdp.as_bytes()), Err(SdpError::Parse(_))),
            "{rtcp}"
        );
    }
}

#[test]
fn error_garbage() {
    for garbage in [
        &b"\xff\xfe\x00garbage"[..],
        b"hello world",
        b"",
        b"v=1\r\nm=audio 4000 RTP/AVP 0\r\n",
        b"v=0\r\nm=audio 4000 RTP/AVP 0\r\na=\xc3\x28\r\n",
        b"v=0\r\nm=audio 99999 RTP/AVP 0\r\n",
    ] {
        assert!(
            matches!(Sdp::parse(garbage), Err(SdpError::Parse(_))),
            "{garbage:?}"
        );
    }
}

#[test]
fn error_too_large() {
    let mut sdp = String::from("v=0\r\nm=audio 4000 RTP/AVP 0\r\n");
    while sdp.len() < 70 * 1024 {
        sdp.push_str("a=X-padding:0123456789abcdef\r\n");
    }
    assert_eq!(Sdp::parse(sdp.as_bytes()).unwrap_err(), SdpError::TooLarge);
    // Exactly at the limit is still accepted.
    let mut sdp = String::from("v=0\r\nm=audio 4000 RTP/AVP 0\r\na=X-padding:");
    while sdp.len() < MAX_SDP_SIZE - 2 {
        sdp.push('x');
    }
    sdp.push_str("\r\n");
    assert_eq!(sdp.len(), MAX_SDP_SIZE);
    assert!(Sdp::parse(sdp.as_bytes()).is_ok());
}

#[test]
fn error_invalid_plan() {
    let sdp = parse(CARRIER_OFFER);
    assert!(matches!(
        sdp.rewrite(&plan(vec![None, None])),
        Err(SdpError::InvalidPlan(_))
    ));
    assert!(matches!(
        sdp.rewrite(&plan(vec![ports(0, 30001)])),
        Err(SdpError::InvalidPlan(_))
    ));
    // RTCP port 0 with an a=rtcp to write.
    assert!(matches!(
        sdp.rewrite(&plan(vec![ports(30000, 0)])),
        Err(SdpError::InvalidPlan(_))
    ));
    // ... is fine without one.
    let no_rtcp = parse("v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp-mux\r\n");
    assert!(no_rtcp.rewrite(&plan(vec![ports(30000, 0)])).is_ok());
}

#[test]
fn sdp_types_round_trips_canonical_crlf() {
    // sdp-types 0.3.1 writes a canonical CRLF SDP back byte for byte.
    let session = sdp_types::Session::parse(CARRIER_OFFER.as_bytes()).unwrap();
    let mut out = Vec::new();
    session.write(&mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), CARRIER_OFFER);
}

#[test]
fn sdp_types_does_not_round_trip_everything() {
    // ... but not a non-canonical one, which is why `rewrite` edits lines.
    let input = "v=0\r\n\
o=- 0123 01 in ip4 192.0.2.1\r\n\
t=0 0\r\n\
c=IN  IP4 192.0.2.1\r\n\
x=unknown\r\n\
m=audio 4000 RTP/AVP 0\r\n\
a=sendrecv\r\n\
c=IN IP4 192.0.2.1\r\n";
    let session = sdp_types::Session::parse(input.as_bytes()).unwrap();
    let mut out = Vec::new();
    session.write(&mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "v=0\r\n\
o=- 0123 1 IN IP4 192.0.2.1\r\n\
s=\r\n\
c=IN IP4 192.0.2.1\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n\
c=IN IP4 192.0.2.1\r\n\
a=sendrecv\r\n"
    );
    // Our rewrite with an empty plan keeps all of it (only c= is rewritten).
    assert_eq!(
        rewrite(input, &plan(vec![])),
        input.replace("c=IN  IP4 192.0.2.1", "c=IN IP4 198.18.0.1")
    );
}
