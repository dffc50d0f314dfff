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
