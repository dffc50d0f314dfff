//! SIP message framing on stream transports (RFC 3261 §18.3).
//!
//! A TCP (or TLS) connection carries messages back to back; the end of the header section is
//! the first empty line and the body length is `Content-Length`, which is mandatory on streams.
//! [`StreamFramer`] is fed whatever the socket read returned ([`StreamFramer::push`]) and hands
//! out whole messages ([`StreamFramer::poll_frame`]) for [`Message::parse`](super::Message::parse).
//!
//! CRLFs between messages are skipped (RFC 3261 §7.5). A double CRLF between messages is the
//! RFC 5626 §3.5.1 keep-alive "ping"; it is reported as [`Frame::Ping`] so the caller can answer
//! with a single CRLF "pong" (RFC 5626 §4.4.1) if it wants to.
//!
//! A framing error means the byte stream can no longer be delimited: the caller must close the
//! connection (RFC 3261 §18.3 gives no way to resynchronise).

use super::message::{find_header_end, header_name_eq, MAX_MESSAGE_SIZE};

/// What [`StreamFramer::poll_frame`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The bytes of exactly one message (headers and `Content-Length` bytes of body).
    Message(Vec<u8>),
    /// A CRLFCRLF keep-alive ping (RFC 5626 §3.5.1) was seen between messages.
    Ping,
}

/// Why the stream cannot be framed any further; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The header section, or headers plus declared body, exceed the limit.
    #[error("message exceeds the {limit}-byte limit")]
    TooLarge {
        /// The framer's limit.
        limit: usize,
    },
    /// Content-Length is not a number, or two Content-Length headers disagree.
    #[error("malformed Content-Length on a stream transport")]
    BadContentLength,
    /// The header section is not UTF-8 where header names are scanned.
    #[error("header section is not UTF-8")]
    NotUtf8,
}

/// Reassembles whole SIP messages from a byte stream (RFC 3261 §18.3).
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    limit: usize,
    failed: Option<FramingError>,
    /// The last CR/LF bytes skipped between messages (ping detection).
    window: [u8; 4],
}

impl Default for StreamFramer {
    fn default() -> Self {
        Self::new(MAX_MESSAGE_SIZE)
    }
}

impl StreamFramer {
    /// A framer that rejects messages larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            limit,
            failed: None,
            window: [0; 4],
        }
    }

    /// Appends bytes read from the connection. Call [`StreamFramer::poll_frame`] until it
    /// returns `Ok(None)` afterwards.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or an error after which
    /// the connection must be closed (the error is returned again on every later call).
    pub fn poll_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.next_frame();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        r
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // RFC 3261 §7.5 / RFC 5626 §3.5.1: skip CRLFs before a message; a CRLFCRLF is a ping.
        // The last skipped bytes are remembered so a ping split across reads is still seen.
        let skip = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        if skip > 0 {
            let mut ping = false;
            for &b in &self.buf[..skip] {
                self.window = [self.window[1], self.window[2], self.window[3], b];
                if &self.window == b"\r\n\r\n" {
                    ping = true;
                    self.window = [0; 4];
                }
            }
            self.buf.drain(..skip);
            if ping {
                return Ok(Some(Frame::Ping));
            }
        }
        let Some((hend, bstart)) = find_header_end(&self.buf) else {
            if self.buf.len() > self.limit {
                return Err(FramingError::TooLarge { limit: self.limit });
            }
            return Ok(None);
        };
        if bstart > self.limit {
            return Err(FramingError::TooLarge { limit: self.limit });
        }
        let clen = content_length(&self.buf[..hend])?;
        // RFC 3261 §18.3: on streams Content-Length MUST be present; a missing one is taken as
        // an empty body (what deployed stacks do) rather than killing the connection.
        let total = bstart
            .checked_add(clen.unwrap_or(0))
            .ok_or(FramingError::TooLarge { limit: self.limit })?;
        if total > self.limit {
            return Err(FramingError::TooLarge { limit: self.limit });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        self.window = [0; 4];
        let rest = self.buf.split_off(total);
        let msg = std::mem::replace(&mut self.buf, rest);
        Ok(Some(Frame::Message(msg)))
    }
}

/// Scans a header section for Content-Length (long or compact `l`, folded lines ignored).
fn content_length(section: &[u8]) -> Result<Option<usize>, FramingError> {
    let text = std::str::from_utf8(section).map_err(|_| FramingError::NotUtf8)?;
    let mut found: Option<usize> = None;
    for line in text.split('\n').skip(1) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some(colon) = line.find(':') else {
            continue;
        };
        if !header_name_eq(line[..colon].trim(), "Content-Length") {
            continue;
        }
        let v = line[colon + 1..].trim();
        if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FramingError::BadContentLength);
        }
        let n: usize = v.parse().map_err(|_| FramingError::BadContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(FramingError::BadContentLength);
        }
        found = Some(n);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{HeaderAccess, Message};

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
        From: <sip:alice@example.com>;tag=a\r\n\
        To: <sip:bob@example.com>\r\n\
        Call-ID: c1\r\n\
        CSeq: 1 INVITE\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    fn frames(f: &mut StreamFramer) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(fr) = f.poll_frame().expect("frame") {
            out.push(fr);
        }
        out
    }

    #[test]
    fn two_messages_in_one_read() {
        let mut f = StreamFramer::default();
        let both = format!("{INVITE}{INVITE}");
        f.push(both.as_bytes());
        let got = frames(&mut f);
        assert_eq!(got.len(), 2);
        for fr in got {
            let Frame::Message(m) = fr else {
                panic!("expected message")
            };
            let msg = Message::parse(&m).expect("parse");
            assert_eq!(
                msg.as_request().map(|r| r.body.as_slice()),
                Some(&b"v=0\n"[..])
            );
        }
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn byte_by_byte() {
        let mut f = StreamFramer::default();
        let mut got = Vec::new();
        for b in INVITE.as_bytes() {
            f.push(&[*b]);
            got.extend(frames(&mut f));
        }
        assert_eq!(got, vec![Frame::Message(INVITE.as_bytes().to_vec())]);
    }

    #[test]
    fn keepalives_skipped_and_ping_reported() {
        let mut f = StreamFramer::default();
        f.push(b"\r\n");
        assert_eq!(frames(&mut f), vec![]);
        f.push(b"\r\n\r");
        assert_eq!(frames(&mut f), vec![Frame::Ping]);
        f.push(b"\n");
        assert_eq!(frames(&mut f), vec![]);
        f.push(INVITE.as_bytes());
        assert_eq!(
            frames(&mut f),
            vec![Frame::Message(INVITE.as_bytes().to_vec())]
        );
        // a single CRLF between messages is skipped silently
        f.push(b"\r\n");
        f.push(INVITE.as_bytes());
        assert_eq!(
            frames(&mut f),
            vec![Frame::Message(INVITE.as_bytes().to_vec())]
        );
    }

    #[test]
    fn compact_content_length() {
        let m = INVITE.replace("Content-Length: 4", "l: 4");
        let mut f = StreamFramer::default();
        f.push(m.as_bytes());
        f.push(b"OPTIONS");
        assert_eq!(frames(&mut f), vec![Frame::Message(m.as_bytes().to_vec())]);
        assert_eq!(f.buffered(), 7);
    }

    #[test]
    fn missing_content_length_means_empty_body() {
        let m = "OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n\
                 From: <sip:a@h>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let mut f = StreamFramer::default();
        f.push(m.as_bytes());
        let got = frames(&mut f);
        assert_eq!(got.len(), 1);
        let Frame::Message(b) = &got[0] else {
            panic!("expected message")
        };
        assert_eq!(Message::parse(b).map(|m| m.content_length()), Ok(None));
    }

    #[test]
    fn limits_and_errors_are_sticky() {
        let mut f = StreamFramer::new(100);
        f.push(&[b'A'; 101]);
        assert_eq!(f.poll_frame(), Err(FramingError::TooLarge { limit: 100 }));
        assert!(f.poll_frame().is_err());

        let mut f = StreamFramer::new(1000);
        f.push(
            INVITE
                .replace("Content-Length: 4", "Content-Length: 5000")
                .as_bytes(),
        );
        assert_eq!(f.poll_frame(), Err(FramingError::TooLarge { limit: 1000 }));

        let mut f = StreamFramer::default();
        f.push(
            INVITE
                .replace("Content-Length: 4", "Content-Length: x4")
                .as_bytes(),
        );
        assert_eq!(f.poll_frame(), Err(FramingError::BadContentLength));

        let mut f = StreamFramer::default();
        f.push(
            INVITE
                .replace(
                    "Content-Length: 4",
                    "Content-Length: 99999999999999999999999",
                )
                .as_bytes(),
        );
        assert_eq!(f.poll_frame(), Err(FramingError::BadContentLength));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_chunks_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
                                        cut in 0usize..2048) {
            let mut f = StreamFramer::new(1024);
            let cut = cut.min(data.len());
            f.push(&data[..cut]);
            let _ = f.poll_frame();
            f.push(&data[cut..]);
            for _ in 0..8 {
                let _ = f.poll_frame();
            }
        }

        #[test]
        fn any_split_gives_same_message(cut in 0usize..INVITE.len()) {
            let mut f = StreamFramer::default();
            f.push(&INVITE.as_bytes()[..cut]);
            let mut got = frames(&mut f);
            f.push(&INVITE.as_bytes()[cut..]);
            got.extend(frames(&mut f));
            proptest::prop_assert_eq!(got, vec![Frame::Message(INVITE.as_bytes().to_vec())]);
        }
    }
}
