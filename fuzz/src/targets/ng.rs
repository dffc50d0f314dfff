//! The NG protocol: what any datagram on the recorder's NG port can be.

use linecord_ng::{bencode, message, Request};

/// Decodes bencode; what decodes must encode and decode back to the same value.
pub fn bencode(data: &[u8]) {
    if let Ok(v) = bencode::decode(data) {
        let bytes = v.to_bytes();
        match bencode::decode(&bytes) {
            Ok(again) => assert_eq!(again, v, "bencode value changed in a round trip"),
            Err(e) => panic!("re-encoded bencode does not decode: {e}"),
        }
    }
    let _ = bencode::decode_prefix(data);
}

/// Splits the cookie, decodes the body and builds the typed request, then its bencode form.
pub fn request(data: &[u8]) {
    if let Ok((_cookie, value)) = message::parse(data) {
        if let Ok(req) = Request::from_value(value) {
            let v = req.to_value();
            let _ = v.to_bytes();
        }
    }
}

/// One hour in ns: more than the media timeout and the reply cache's lifetime.
const HOUR_NS: u64 = 3_600_000_000_000;

/// Feeds the recorder's NG controller (its call table over an in-memory port pool, no
/// sockets) a sequence of datagrams: each is a 2-byte big-endian length and that many bytes,
/// 1 ms apart, from one of two sources. Every reply is a cookie and a bencode dictionary with
/// a `result`; an hour after the last request every call has timed out and every port pair
/// is free again (nothing leaks, whatever the requests were).
pub fn controller(data: &[u8]) {
    use recorder::control::ng::NgController;
    use recorder::control::session::Now;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    let at = |ms: u64| Now {
        mono_ns: ms * 1_000_000,
        unix_ms: 1_796_000_000_000 + ms,
    };
    let sources = [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5_060),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 5)), 40_000),
    ];
    let mut ng = NgController::in_memory(at(0));
    let free = ng.table().free_pairs();
    let mut rest = data;
    let mut ms = 0u64;
    while let [hi, lo, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*hi, *lo]) & 0x7fff).min(tail.len());
        let (datagram, next) = tail.split_at(n);
        rest = next;
        ms += 1;
        let source = sources[usize::from(*hi >> 7)];
        if let Some(reply) = ng.handle_offline(source, datagram, at(ms)) {
            match message::parse(&reply) {
                Ok((_, v)) => assert!(
                    v.get("result").and_then(|r| r.as_str()).is_some(),
                    "a reply without a result"
                ),
                Err(e) => panic!("the controller's reply does not parse: {e}"),
            }
        }
    }
    ng.handle_timeout(at(ms + HOUR_NS / 1_000_000));
    assert!(
        ng.table().is_empty(),
        "calls left an hour after the last request"
    );
    assert_eq!(ng.table().free_pairs(), free, "port pairs leaked");
}
