//! Datagram framing: `<cookie><space><bencode dictionary>`.

use thiserror::Error;

use crate::bencode::{self, DecodeError, Limits, Value};

/// Largest NG datagram; size receive buffers with this.
pub const MAX_DATAGRAM: usize = 65_535;

/// Largest reply a server can send in one UDP datagram (IPv4: 65 535 minus the IP and UDP
/// headers).
pub const MAX_REPLY: usize = 65_507;

/// Longest cookie accepted by [`split_cookie`]. Servers key their retransmission cache by
/// (source, cookie), so this also bounds what one cache key copies from the peer.
pub const MAX_COOKIE: usize = 128;

/// Bounds for decoding a request body on a server. An NG request is a flat dictionary of
/// strings and short lists (depth 2; rtpengine's deepest keys, e.g. `sdp-attr`, reach 4),
/// with a few dozen items; these leave ample room and refuse anything built to exhaust.
pub const REQUEST_LIMITS: Limits = Limits {
    max_depth: 16,
    max_items: 4_096,
};

/// Why a datagram is not a valid NG message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    /// No space separator, or an empty cookie.
    #[error("datagram has no cookie")]
    NoCookie,
    /// The cookie is longer than [`MAX_COOKIE`] bytes.
    #[error("cookie longer than {MAX_COOKIE} bytes")]
    CookieTooLong,
    /// The body is not valid bencode (offsets relative to the body start).
    #[error("invalid bencode body: {0}")]
    Bencode(#[from] DecodeError),
    /// The body is valid bencode but not a dictionary.
    #[error("body is not a dictionary")]
    NotADictionary,
}

/// Splits a datagram into its cookie and the body after the first space.
pub fn split_cookie(datagram: &[u8]) -> Result<(&[u8], &[u8]), MessageError> {
    let head = datagram.get(..=MAX_COOKIE).unwrap_or(datagram);
    match head.iter().position(|&b| b == b' ') {
        Some(0) => Err(MessageError::NoCookie),
        Some(pos) => {
            let (cookie, rest) = datagram.split_at(pos);
            Ok((cookie, rest.get(1..).unwrap_or_default()))
        }
        None if datagram.len() > MAX_COOKIE => Err(MessageError::CookieTooLong),
        None => Err(MessageError::NoCookie),
    }
}

/// Splits off the cookie and decodes the body, which must be a dictionary, within
/// [`Limits::DEFAULT`] (clients reading replies).
pub fn parse(datagram: &[u8]) -> Result<(&[u8], Value), MessageError> {
    parse_with(datagram, Limits::DEFAULT)
}

/// Splits off the cookie and decodes the body, which must be a dictionary, within `limits`
/// (servers use [`REQUEST_LIMITS`]).
pub fn parse_with(datagram: &[u8], limits: Limits) -> Result<(&[u8], Value), MessageError> {
    let (cookie, body) = split_cookie(datagram)?;
    match bencode::decode_with(body, limits)? {
        v @ Value::Dict(_) => Ok((cookie, v)),
        _ => Err(MessageError::NotADictionary),
    }
}

/// Builds a datagram `<cookie> <bencode body>`.
pub fn frame(cookie: &[u8], body: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(cookie.len() + 64);
    out.extend_from_slice(cookie);
    out.push(b' ');
    body.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split_and_parse() {
        let dg = b"5323_1 d7:command4:pinge";
        assert_eq!(
            split_cookie(dg),
            Ok((&b"5323_1"[..], &b"d7:command4:pinge"[..]))
        );
        let (cookie, body) = parse(dg).unwrap();
        assert_eq!(cookie, b"5323_1");
        assert_eq!(body.get("command").and_then(Value::as_str), Some("ping"));
    }

    #[test]
    fn frame_round_trip() {
        let mut body = Value::dict();
        body.insert("result", "pong");
        let dg = frame(b"5323_1", &body);
        assert_eq!(dg, b"5323_1 d6:result4:ponge");
        assert_eq!(parse(&dg), Ok((&b"5323_1"[..], body)));
    }

    #[test]
    fn errors() {
        assert_eq!(
            split_cookie(b"5323_1d7:command4:pinge"),
            Err(MessageError::NoCookie)
        );
        assert_eq!(
            split_cookie(b" d7:command4:pinge"),
            Err(MessageError::NoCookie)
        );
        assert_eq!(split_cookie(b""), Err(MessageError::NoCookie));
        let long = [vec![b'c'; MAX_COOKIE + 1], b" de".to_vec()].concat();
        assert_eq!(split_cookie(&long), Err(MessageError::CookieTooLong));
        let max = [vec![b'c'; MAX_COOKIE], b" de".to_vec()].concat();
        assert!(parse(&max).is_ok());
        assert_eq!(parse(b"c li1ee"), Err(MessageError::NotADictionary));
        assert_eq!(
            parse(b"c "),
            Err(MessageError::Bencode(DecodeError::UnexpectedEnd))
        );
        let e = parse(b"c dex").unwrap_err();
        assert_eq!(
            e,
            MessageError::Bencode(DecodeError::TrailingData { offset: 2 })
        );
        assert_eq!(
            e.to_string(),
            "invalid bencode body: trailing data at byte 2"
        );
    }

    #[test]
    fn request_limits() {
        let deep = [b"c d1:k".to_vec(), vec![b'l'; 16], vec![b'e'; 17]].concat();
        assert_eq!(
            parse_with(&deep, REQUEST_LIMITS),
            Err(MessageError::Bencode(DecodeError::TooDeep { limit: 16 }))
        );
        assert!(parse(&deep).is_ok());
        let mut many = b"c d5:flagsl".to_vec();
        many.extend(b"1:x".repeat(5_000));
        many.extend(b"ee");
        assert_eq!(
            parse_with(&many, REQUEST_LIMITS),
            Err(MessageError::Bencode(DecodeError::TooManyItems {
                limit: 4_096
            }))
        );
        // A real request is far inside the limits.
        let offer = b"c d7:command5:offer7:call-id3:abc5:flagsl13:trust-addresse\
            7:replacel6:origin18:session-connectione3:sdp3:v=0e";
        assert!(parse_with(offer, REQUEST_LIMITS).is_ok());
    }

    proptest! {
        #[test]
        fn parse_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&input);
        }
    }
}
