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
//! connection (RFC 3261 §18.3 gives no way to resynchronise). When the header section of the
//! offending message was complete, [`StreamFramer::rejected_head`] keeps it, so the caller can
//! send the error response (e.g. 400 for a negative Content-Length, RFC 4475 §3.1.2.3) first.
//!
//! # Cost
//! Work is linear in the bytes pushed, however they are split: the search for the end of the
//! header section resumes where the previous call stopped ([`StreamFramer::scanned`] counts
//! the bytes examined), consumed messages are not copied down one by one, and after
//! [`StreamFramer::poll_frame`] returns `Ok(None)` at most `limit` bytes stay buffered.

use super::message::{header_name_eq, ParseError, MAX_MESSAGE_SIZE};

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
    #[error("message of at least {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Size of the message as far as it is known: the header section so far, or the
        /// header section plus the declared body.
        len: usize,
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

impl From<&FramingError> for ParseError {
    /// The parse error to answer a framing error with (see
    /// [`bad_request_response`](super::bad_request_response) and
    /// [`StreamFramer::rejected_head`]).
    fn from(e: &FramingError) -> ParseError {
        match *e {
            FramingError::TooLarge { len, limit } => ParseError::TooLarge { len, limit },
            FramingError::BadContentLength => ParseError::BadContentLength,
            FramingError::NotUtf8 => ParseError::NotUtf8,
        }
    }
}

/// Reassembles whole SIP messages from a byte stream (RFC 3261 §18.3).
#[derive(Debug)]
pub struct StreamFramer {
    /// Bytes received; `buf[start..]` is not returned yet.
    buf: Vec<u8>,
    start: usize,
    /// Bytes after `start` already searched for the end of the header section without
    /// finding it (the search resumes here).
    searched: usize,
    /// Size (headers plus declared body) of the message at `start` once its header section
    /// has been seen and checked.
    pending_total: Option<usize>,
    limit: usize,
    failed: Option<FramingError>,
    /// The header section of the message that caused `failed`, if its end had been seen.
    rejected_head: Option<Vec<u8>>,
    /// The last CR/LF bytes skipped between messages (ping detection).
    window: [u8; 4],
    /// Bytes examined in total (header-end search and CRLF skipping).
    scanned: u64,
}

impl Default for StreamFramer {
    fn default() -> Self {
        Self::new(MAX_MESSAGE_SIZE)
    }
}

/// Compact the buffer once this many consumed bytes sit in front of the unread ones (and
/// they are at least half of it), so memmoves stay amortised linear.
const COMPACT_AT: usize = 4096;

impl StreamFramer {
    /// A framer that rejects messages larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            start: 0,
            searched: 0,
            pending_total: None,
            limit,
            failed: None,
            rejected_head: None,
            window: [0; 4],
            scanned: 0,
        }
    }

    /// Appends bytes read from the connection. Call [`StreamFramer::poll_frame`] until it
    /// returns `Ok(None)` afterwards. Ignored after a framing error.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes examined so far while framing (a work counter: it grows linearly with the bytes
    /// pushed, however they were split).
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// After a framing error: the header section (up to and including the empty line) of
    /// the message that caused it, when its end had been seen — enough to build the error
    /// response with [`bad_request_response`](super::bad_request_response) before closing.
    pub fn rejected_head(&self) -> Option<&[u8]> {
        self.rejected_head.as_deref()
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
            self.start = 0;
            self.searched = 0;
            self.pending_total = None;
        }
        self.compact();
        r
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= COMPACT_AT && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if self.pending_total.is_none() && self.searched == 0 {
            // RFC 3261 §7.5 / RFC 5626 §3.5.1: skip CRLFs before a message; a CRLFCRLF is a
            // ping. The last skipped bytes are remembered so a ping split across reads is
            // still seen.
            let pending = self.buf.get(self.start..).unwrap_or_default();
            let skip = pending
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            self.scanned += skip as u64;
            if skip > 0 {
                let mut ping = false;
                for &b in pending.get(..skip).unwrap_or_default() {
                    self.window = [self.window[1], self.window[2], self.window[3], b];
                    if &self.window == b"\r\n\r\n" {
                        ping = true;
                        self.window = [0; 4];
                    }
                }
                self.start += skip;
                if ping {
                    return Ok(Some(Frame::Ping));
                }
            }
        }
        let total = match self.pending_total {
            Some(t) => t,
            None => match self.check_header()? {
                Some(t) => t,
                None => return Ok(None),
            },
        };
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let Some(msg) = pending.get(..total) else {
            // Headers known, body still arriving.
            self.pending_total = Some(total);
            return Ok(None);
        };
        let msg = msg.to_vec();
        self.start += total;
        self.searched = 0;
        self.pending_total = None;
        self.window = [0; 4];
        Ok(Some(Frame::Message(msg)))
    }

    /// Resumes the search for the end of the header section of the message at `start` and,
    /// once found, checks its Content-Length: `Some(total size)`, or `None` for more bytes.
    fn check_header(&mut self) -> Result<Option<usize>, FramingError> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let (hend, bstart) = match scan_header_end(pending, self.searched) {
            Scan::Found {
                hend,
                bstart,
                examined,
            } => {
                self.scanned += examined as u64;
                (hend, bstart)
            }
            Scan::NotYet { resume, examined } => {
                self.scanned += examined as u64;
                self.searched = resume;
                if pending.len() > self.limit {
                    return Err(FramingError::TooLarge {
                        len: pending.len(),
                        limit: self.limit,
                    });
                }
                return Ok(None);
            }
        };
        let head = pending.get(..bstart).unwrap_or_default();
        let reject = |e: FramingError, head: &[u8]| (e, Some(head.to_vec()));
        let checked = if bstart > self.limit {
            Err(reject(
                FramingError::TooLarge {
                    len: bstart,
                    limit: self.limit,
                },
                head,
            ))
        } else {
            match content_length(pending.get(..hend).unwrap_or_default()) {
                Err(e) => Err(reject(e, head)),
                // RFC 3261 §18.3: on streams Content-Length MUST be present; a missing one is
                // taken as an empty body (what deployed stacks do) rather than killing the
                // connection.
                Ok(clen) => {
                    let total = bstart.saturating_add(clen.unwrap_or(0));
                    if total > self.limit {
                        Err(reject(
                            FramingError::TooLarge {
                                len: total,
                                limit: self.limit,
                            },
                            head,
                        ))
                    } else {
                        Ok(total)
                    }
                }
            }
        };
        match checked {
            Ok(total) => Ok(Some(total)),
            Err((e, head)) => {
                self.rejected_head = head;
                Err(e)
            }
        }
    }
}

/// Outcome of [`scan_header_end`].
enum Scan {
    /// Header section ends at `hend`; the body starts at `bstart`.
    Found {
        hend: usize,
        bstart: usize,
        examined: usize,
    },
    /// Not found in the bytes so far; search again from `resume` when more arrive.
    NotYet { resume: usize, examined: usize },
}

/// Looks for the empty line ending a header section (CRLFCRLF, or leniently LFLF / LFCRLF)
/// in `data`, starting at `from` (every earlier position is known not to start one).
fn scan_header_end(data: &[u8], from: usize) -> Scan {
    let mut i = from;
    while let Some(&b) = data.get(i) {
        if b == b'\n' {
            match (data.get(i + 1), data.get(i + 2)) {
                (Some(b'\n'), _) => {
                    return Scan::Found {
                        hend: i,
                        bstart: i + 2,
                        examined: i + 2 - from,
                    }
                }
                (Some(b'\r'), Some(b'\n')) => {
                    return Scan::Found {
                        hend: i,
                        bstart: i + 3,
                        examined: i + 3 - from,
                    }
                }
                // Too few bytes yet to tell: look at this LF again next time.
                (None, _) | (Some(b'\r'), None) => {
                    return Scan::NotYet {
                        resume: i,
                        examined: data.len().saturating_sub(from),
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    Scan::NotYet {
        resume: data.len().max(from),
        examined: data.len().saturating_sub(from),
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
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !header_name_eq(name.trim(), "Content-Length") {
            continue;
        }
        let v = value.trim();
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
        assert_eq!(
            f.poll_frame(),
            Err(FramingError::TooLarge {
                len: 101,
                limit: 100
            })
        );
        assert!(f.poll_frame().is_err());
        // no header end was seen: nothing to answer
        assert_eq!(f.rejected_head(), None);
        f.push(INVITE.as_bytes());
        assert_eq!(f.buffered(), 0, "nothing is buffered after an error");

        let mut f = StreamFramer::new(1000);
        f.push(
            INVITE
                .replace("Content-Length: 4", "Content-Length: 5000")
                .as_bytes(),
        );
        let err = f.poll_frame();
        assert!(
            matches!(err, Err(FramingError::TooLarge { len, limit: 1000 }) if len > 5000),
            "{err:?}"
        );
        // the header section is kept so the caller can answer before closing
        let head = f.rejected_head().expect("head");
        assert!(head.starts_with(b"INVITE ") && head.ends_with(b"\r\n\r\n"));

        let mut f = StreamFramer::default();
        f.push(
            INVITE
                .replace("Content-Length: 4", "Content-Length: x4")
                .as_bytes(),
        );
        assert_eq!(f.poll_frame(), Err(FramingError::BadContentLength));
        assert!(f
            .rejected_head()
            .is_some_and(|h| h.ends_with(b"Content-Length: x4\r\n\r\n")));

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

    /// A message of about `size` bytes whose header section is almost all of it (the case
    /// where a framer that rescans from the start on every read is quadratic).
    fn big_message(size: usize) -> Vec<u8> {
        let head = INVITE.split("Content-Length").next().unwrap_or_default();
        let pad = size.saturating_sub(head.len() + 40);
        format!(
            "{head}X-Pad: {}\r\nContent-Length: 4\r\n\r\nv=0\n",
            "p".repeat(pad)
        )
        .into_bytes()
    }

    #[test]
    fn byte_by_byte_is_linear() {
        // 63 KB, one byte per push: the header-end search resumes where it stopped, so the
        // bytes examined stay a small multiple of the input (a rescan from the start on every
        // byte would examine ~2 GB here).
        let msg = big_message(63 * 1024);
        assert!(msg.len() > 63 * 1000 && msg.len() < MAX_MESSAGE_SIZE);
        let mut f = StreamFramer::default();
        let mut got = Vec::new();
        for b in &msg {
            f.push(std::slice::from_ref(b));
            got.extend(frames(&mut f));
            assert!(f.buffered() <= MAX_MESSAGE_SIZE);
        }
        assert_eq!(got, vec![Frame::Message(msg.clone())]);
        assert!(
            f.scanned() <= 4 * msg.len() as u64,
            "{} bytes examined for {} bytes of input",
            f.scanned(),
            msg.len()
        );
        // the same in 7-byte pieces, and with the body split from its headers
        let mut f = StreamFramer::default();
        let mut got = Vec::new();
        for c in msg.chunks(7) {
            f.push(c);
            got.extend(frames(&mut f));
        }
        assert_eq!(got, vec![Frame::Message(msg.clone())]);
        assert!(f.scanned() <= 4 * msg.len() as u64);
    }

    #[test]
    fn many_pipelined_messages_are_linear() {
        // 2000 messages in one push: each is cut out once, nothing is rescanned.
        let one = INVITE.as_bytes();
        let all: Vec<u8> = one.repeat(2000);
        let mut f = StreamFramer::default();
        f.push(&all);
        let got = frames(&mut f);
        assert_eq!(got.len(), 2000);
        assert!(got.iter().all(|fr| fr == &Frame::Message(one.to_vec())));
        assert_eq!(f.buffered(), 0);
        assert!(f.scanned() <= 2 * all.len() as u64, "{}", f.scanned());
    }

    #[test]
    fn body_with_empty_lines_is_not_searched_for_a_header_end() {
        // the body arrives after the headers and itself contains CRLFCRLF
        let m = INVITE.replace(
            "Content-Length: 4\r\n\r\nv=0\n",
            "Content-Length: 8\r\n\r\na\r\n\r\nb\r\n",
        );
        let (head, body) = m.split_at(m.find("\r\n\r\n").expect("end") + 4);
        let mut f = StreamFramer::default();
        f.push(head.as_bytes());
        assert_eq!(frames(&mut f), vec![]);
        for b in body.as_bytes() {
            f.push(std::slice::from_ref(b));
        }
        assert_eq!(frames(&mut f), vec![Frame::Message(m.as_bytes().to_vec())]);
    }

    #[test]
    fn framing_errors_map_to_parse_errors() {
        assert_eq!(
            ParseError::from(&FramingError::BadContentLength),
            ParseError::BadContentLength
        );
        assert_eq!(
            ParseError::from(&FramingError::TooLarge { len: 7, limit: 5 }),
            ParseError::TooLarge { len: 7, limit: 5 }
        );
        assert_eq!(
            ParseError::from(&FramingError::NotUtf8),
            ParseError::NotUtf8
        );
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
