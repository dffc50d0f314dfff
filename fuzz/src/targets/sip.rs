//! sipctl's SIP layer: what a UDP datagram or a TCP stream from anyone on the SIP port can be.

use sipctl::sip::{bad_request_response, Frame, HeaderAccess, Message, StreamFramer};

/// Largest TCP message the framer of the daemon accepts (as configured there).
const FRAMER_LIMIT: usize = sipctl::sip::MAX_MESSAGE_SIZE;

/// Parses a datagram as the UDP listener does, reads every header view the B2BUA uses, and
/// builds the stateless 400 for a message that does not parse. A message that parses must
/// parse again from its own serialisation.
pub fn message(data: &[u8]) {
    match Message::parse(data) {
        Ok(msg) => {
            views(&msg);
            let again = msg.to_bytes();
            if let Err(e) = Message::parse(&again) {
                panic!("a parsed message does not parse from its own bytes: {e}");
            }
        }
        Err(e) => {
            if let Some(r) = bad_request_response(data, &e) {
                let _ = r.to_bytes();
            }
        }
    }
}

fn views(msg: &Message) {
    let h: &dyn HeaderAccess = match msg {
        Message::Request(r) => r,
        Message::Response(r) => r,
    };
    let _ = h.vias();
    let _ = h.top_via();
    let _ = h.from_addr();
    let _ = h.to_addr();
    let _ = h.from_tag();
    let _ = h.to_tag();
    let _ = h.call_id();
    let _ = h.cseq();
    let _ = h.contacts();
    let _ = h.contact();
}

/// Feeds a TCP stream to the framer in pieces whose sizes come from the input itself (the
/// first byte picks the piece size, 1 to 256 bytes, so byte-by-byte arrival is covered), and
/// parses every message it cuts.
pub fn framer(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first) + 1;
    let mut framer = StreamFramer::new(FRAMER_LIMIT);
    for chunk in stream.chunks(piece) {
        framer.push(chunk);
        loop {
            match framer.poll_frame() {
                Ok(Some(Frame::Message(bytes))) => {
                    assert!(
                        bytes.len() <= FRAMER_LIMIT,
                        "framer returned {} bytes over its {FRAMER_LIMIT}-byte limit",
                        bytes.len()
                    );
                    if let Ok(msg) = Message::parse(&bytes) {
                        views(&msg);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                // The daemon closes the connection on a framing error.
                Err(_) => return,
            }
        }
        assert!(
            framer.buffered() <= FRAMER_LIMIT + piece,
            "framer buffers {} bytes, over its limit",
            framer.buffered()
        );
    }
}
