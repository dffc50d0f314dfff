//! Codec for sipwise rtpengine's "NG" control protocol.
//!
//! The model is deliberately small and transport-free (no sockets, threads or
//! clocks):
//!
//! * a datagram is `<cookie> <bencode dictionary>`; the reply repeats the
//!   cookie and carries its own dictionary ([`message`]);
//! * the body is a bencode [`Value`] ([`bencode`]);
//! * a server turns that dictionary into a typed [`Request`] ([`request`])
//!   and answers with a dictionary built by the helpers in [`reply`];
//! * a client does the reverse: builds a [`Request`], sends
//!   [`frame`]`(cookie, &req.to_value())` and reads the answer with
//!   [`reply::inspect`].
//!
//! [`client`] is a sans-IO client (cookies, retransmissions, timeouts) for callers that
//! drive a media server, such as a SIP server or a benchmark.
//!
//! Every decoding function returns a typed error instead of panicking, is linear in its
//! input, limits nesting depth and item count ([`bencode::Limits`];
//! [`message::REQUEST_LIMITS`] for servers) and never preallocates from lengths declared by
//! the peer, so arbitrary (hostile) datagrams are safe to feed in. Whatever of the input an
//! error names is echoed through [`echo`]: escaped and cut to a short prefix, so errors and
//! the log lines built from them stay small.
//!
//! ```
//! use linecord_ng::{message, reply, Command, Request};
//!
//! // Server side: parse a datagram, answer it.
//! let (cookie, body) = message::parse(b"5323_1 d7:command4:pinge").unwrap();
//! let req = Request::from_value(body).unwrap();
//! assert_eq!(req.command, Command::Ping);
//! let answer = message::frame(cookie, &reply::pong());
//! assert_eq!(answer, b"5323_1 d6:result4:ponge");
//!
//! // Client side: read the answer.
//! let (_, body) = message::parse(&answer).unwrap();
//! assert_eq!(reply::inspect(&body).unwrap().result, "pong");
//! ```

pub mod bencode;
pub mod client;
pub mod echo;
pub mod message;
pub mod reply;
pub mod request;

pub use bencode::{DecodeError, Value};
pub use message::{frame, MessageError};
pub use reply::Reply;
pub use request::{Command, ReceivedFrom, Request, RequestError};
