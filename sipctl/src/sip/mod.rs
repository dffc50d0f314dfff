//! SIP messages, transactions and dialogs, sans-IO (RFC 3261).
//!
//! Nothing in this module opens a socket, starts a thread or reads a clock. The daemon owns
//! the sockets and the timer; these types take input plus `now: Instant` and hand back bytes
//! to send, events and the next deadline (the quinn-proto model).
//!
//! # Layers
//! * [`message`]: parse one datagram / framed message with [`parse`] (= [`Message::parse`])
//!   into a [`Request`] or [`Response`]; typed header views through [`HeaderAccess`]
//!   (`top_via()`, `from_addr()`, `to_tag()`, `cseq()`, `contacts()`, `record_routes()` …)
//!   and parsers for single values ([`Uri::parse`], [`NameAddr::parse`], [`Via::parse`],
//!   [`CSeq::parse`]); builders ([`Response::for_request`], [`Request::cancel`], [`Headers`]
//!   editing) and `to_bytes()`. On a parse error, [`bad_request_response`] gives the
//!   stateless 400 (or 505 / 501 / 513) when one is allowed.
//! * [`framing`]: [`StreamFramer`] cuts a TCP byte stream into messages (RFC 3261 §18.3), in
//!   time linear in the bytes pushed.
//!
//! Every parser here is total: any input gives a value or an error, never a panic, with work
//! and allocation bounded by the input (at most [`MAX_MESSAGE_SIZE`] bytes, [`MAX_HEADERS`]
//! lines). Strings are cut only at ASCII delimiters found by `find`/`split_once` or through
//! `get`, so no index can land inside a UTF-8 character. These are the entry points of the
//! fuzz targets.
//! * [`transaction`]: [`TransactionLayer`] runs the four RFC 3261 §17 state machines
//!   (plus RFC 6026): retransmissions, timers A–M, matching, ACK for non-2xx, 100 Trying.
//! * [`locate`]: [`Locator`] finds the ordered targets of a URI (RFC 3263: NAPTR, SRV,
//!   A/AAAA) over DNS answers the daemon fetches; [`Failover`] walks them.
//! * [`dialog`]: [`Dialog`] holds RFC 3261 §12 dialog state and builds in-dialog requests;
//!   [`DialogTable`] owns a UA's dialogs: it maps in-dialog requests to them and answers 481/500.
//! * [`session_timer`]: RFC 4028 session timers (headers, negotiation of one leg).
//!
//! # Driving it (one event loop)
//! ```text
//! on datagram (bytes, from):                     on TCP bytes (conn, bytes):
//!   match Message::parse(bytes)                    framer.push(bytes)
//!     Err(e) => if let Some(r) =                   while let Some(f) = framer.poll_frame()? {
//!         bad_request_response(bytes, &e)            Frame::Message(m) => same as datagram
//!       { layer.send_stateless(from, r.to_bytes()) } Frame::Ping => write "\r\n" }
//!                                                  on Err(e): answer from
//!                                                  framer.rejected_head(), then close
//!     Ok(msg) => match layer.handle_incoming(now, msg, from) {
//!       Incoming::Request { tx, request }  => TU: dialog lookup via DialogId, answer with
//!                                             layer.send_response(now, tx, resp)
//!       Incoming::Cancel { tx, invite, .. } => 200 on tx, 487 on invite
//!       Incoming::Response { tx, response } => TU: Dialog::uac / handle_response; for a 2xx
//!                                             to INVITE send dialog.ack_for_2xx() stateless
//!       Incoming::Ack { request, .. }       => dialog.handle_request(&request)
//!       Incoming::StrayResponse(r)          => 2xx: re-send the ACK; else drop
//!       Incoming::Absorbed | Discarded(_)   => nothing
//!     }
//! after every input and timer:
//!   while let Some(t) = layer.poll_transmit() { send t.bytes to t.dest;
//!                                               on failure layer.handle_transport_error(tx) }
//!   while let Some(e) = layer.poll_event() { Timeout → 408 / BYE, TransportError → 503,
//!                                            Terminated → forget the TxId }
//!   arm the timer at layer.poll_timeout(); when it fires: layer.handle_timeout(now)
//! ```
//!
//! Requests the TU sends need a top Via with a fresh branch: [`new_via`] or
//! [`Via::new`] + [`generate_branch`]; tags and Call-IDs come from [`generate_tag`] and
//! [`generate_call_id`], all from an RNG the caller owns (seeded, so runs replay);
//! stateless answers get [`stateless_tag`].

pub mod dialog;
pub mod framing;
pub mod locate;
pub mod message;
pub mod session_timer;
pub mod transaction;

pub use dialog::{
    Dialog, DialogError, DialogId, DialogKey, DialogState, DialogTable, Role, Unrouted,
};
pub use framing::{Frame, FramingError, StreamFramer};
pub use locate::{Destination, Failover, Located, Locator, Target, TargetTable};
pub use message::{
    bad_request_response, generate_branch, generate_call_id, generate_tag, header_name_eq, parse,
    reason_phrase, split_list, stateless_tag, CSeq, Header, HeaderAccess, Headers, Message, Method,
    NameAddr, Param, ParseError, Request, Response, Uri, Via, BRANCH_MAGIC_COOKIE, MAX_HEADERS,
    MAX_MESSAGE_SIZE,
};
pub use session_timer::{Refresher, SessionExpires, SessionTimer, SessionTimerConfig, UasTimer};
pub use transaction::{
    new_via, Incoming, Peer, TimerConfig, TransactionLayer, Transmit, Transport, TxError, TxEvent,
    TxId, TxKind, TxState, DEFAULT_MAX_TRANSACTIONS,
};
