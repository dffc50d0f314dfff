//! The RFC 3261 §17 transaction layer (with the RFC 6026 "Accepted" states), sans-IO.
//!
//! [`TransactionLayer`] owns every client and server transaction. It never touches a socket or
//! a clock: the caller passes `now` in and pulls work out.
//!
//! # Driving it
//! * A datagram or framed stream message arrives: parse it with
//!   [`Message::parse`](super::Message::parse), then call [`TransactionLayer::handle_incoming`]
//!   with the source [`Peer`]. The returned [`Incoming`] says what it was: a retransmission the
//!   layer absorbed, a new request for the TU (with its server [`TxId`]), a response for one of
//!   our client transactions, an ACK for a 2xx, or a stray response.
//! * To send a request: [`TransactionLayer::send_request`] (the request must carry its top Via
//!   with a fresh branch, see [`generate_branch`](super::generate_branch)). To answer a server
//!   transaction: [`TransactionLayer::send_response`]. ACKs for 2xx and stateless replies go
//!   through [`TransactionLayer::send_stateless`].
//! * After every call, drain [`TransactionLayer::poll_transmit`] (bytes to put on the wire) and
//!   [`TransactionLayer::poll_event`] (timeouts, transport errors, terminations), then arm a
//!   timer for [`TransactionLayer::poll_timeout`] and call [`TransactionLayer::handle_timeout`]
//!   when it fires.
//! * If sending a [`Transmit`] fails, report it with [`TransactionLayer::handle_transport_error`]
//!   (RFC 3261 §17.1.4 / §17.2.4).
//!
//! # Choices
//! * INVITE server transactions send `100 Trying` by themselves when the TU has not sent any
//!   response within [`TimerConfig::trying_delay`] (200 ms by default, RFC 3261 §17.2.1: "unless
//!   it knows the TU will generate a provisional or final response within 200 ms"). Set it to
//!   zero to send 100 at once.
//! * Responses from a server transaction go to the address the request came from (RFC 3581
//!   symmetric response routing; on TCP the caller maps the address to the connection). The
//!   layer writes `received`/`rport` into the top Via of incoming requests (RFC 3261 §18.2.1,
//!   RFC 3581 §4) before the TU sees them.
//! * RFC 6026: a 2xx moves INVITE transactions to "Accepted" (Timer L/M = 64*T1) instead of
//!   terminating them. The INVITE server transaction also retransmits the 2xx (T1, doubling, cap
//!   T2, RFC 3261 §13.3.1.4 — strictly a UAS-core duty, done here so the TU does not need its
//!   own timers) until the ACK arrives; if Timer L fires without an ACK it reports
//!   [`TxEvent::Timeout`] so the TU can send BYE (§13.3.1.4).
//! * Timer B only runs in "Calling" (§17.1.1.2); once a provisional arrived the TU must run its
//!   own no-answer timer and CANCEL.
//! * Timers are kept in a lazily-pruned binary heap, so `poll_timeout` is O(log n).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{
    CSeq, HeaderAccess, Message, Method, Request, Response, Uri, Via, BRANCH_MAGIC_COOKIE,
};

/// The transport of a [`Peer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: unreliable, the transaction layer retransmits.
    Udp,
    /// TCP: reliable, no retransmissions and zero wait timers.
    Tcp,
    /// TLS over TCP (RFC 3261 §26.2): reliable like TCP; the daemon frames it the same way.
    Tls,
}

impl Transport {
    /// True for transports that deliver reliably (RFC 3261 §17.1.1.2 / §17.1.2.2).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    /// The Via transport token (RFC 3261 §20.42: `UDP`, `TCP`, `TLS`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The port a URI without one means (RFC 3261 §19.1.2: 5060, and 5061 for TLS).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
        }
    }

    /// The Contact sipctl puts in messages it sends over this transport, `<sip:user@host:port>`
    /// with `;transport=tcp` or `;transport=tls` for the stream transports, so that the peer
    /// sends in-dialog requests back over the same kind of transport. (RFC 5630 §3.1.3
    /// deprecates `transport=tls` in favour of `sips:`, and RFC 3261 §8.1.1.8 wants a SIPS
    /// Contact when the Request-URI is SIPS; `transport=tls` is kept because phones take
    /// it, while baresip 1.0 (libre 1.1) ends a call whose remote target is `sips:` with
    /// ENOSYS, as `sipctl/tests/baresip.rs` found.)
    pub fn contact(self, user: &str, host: &str, port: u16) -> String {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        match self {
            Transport::Udp => format!("<sip:{user}@{host}:{port}>"),
            Transport::Tcp => format!("<sip:{user}@{host}:{port};transport=tcp>"),
            Transport::Tls => format!("<sip:{user}@{host}:{port};transport=tls>"),
        }
    }
}

/// A remote address plus the transport to reach it (opaque to this layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Remote socket address.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

impl Peer {
    /// A UDP peer.
    pub fn udp(addr: SocketAddr) -> Self {
        Peer {
            addr,
            transport: Transport::Udp,
        }
    }

    /// A TCP peer.
    pub fn tcp(addr: SocketAddr) -> Self {
        Peer {
            addr,
            transport: Transport::Tcp,
        }
    }

    /// A TLS peer.
    pub fn tls(addr: SocketAddr) -> Self {
        Peer {
            addr,
            transport: Transport::Tls,
        }
    }

    /// Where to send a request for `uri` when its host is an IP address (no DNS here):
    /// RFC 3263 §4 for a numeric host, see
    /// [`Destination::numeric_target`](super::locate::Destination::numeric_target).
    pub fn for_uri(uri: &Uri) -> Option<Peer> {
        let dest = super::locate::Destination::from_uri(uri).ok()?;
        dest.numeric_target().map(|t| t.peer())
    }
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send them.
    pub dest: Peer,
    /// One complete SIP message.
    pub bytes: Vec<u8>,
    /// The transaction that produced them (pass it to `handle_transport_error` on failure);
    /// `None` for stateless sends.
    pub tx: Option<TxId>,
}

/// Identifies a transaction inside one [`TransactionLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

/// Which of the four RFC 3261 §17 state machines a transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    /// §17.1.1.
    InviteClient,
    /// §17.1.2.
    NonInviteClient,
    /// §17.2.1.
    InviteServer,
    /// §17.2.2.
    NonInviteServer,
}

/// Transaction states (RFC 3261 Figures 5–8, RFC 6026 Figures 5 and 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// INVITE client, request sent, nothing received.
    Calling,
    /// Non-INVITE client or server before any provisional.
    Trying,
    /// A provisional response was received or sent.
    Proceeding,
    /// A final non-2xx (or a non-INVITE final) was received or sent.
    Completed,
    /// INVITE server: ACK received for a non-2xx.
    Confirmed,
    /// INVITE transaction after a 2xx (RFC 6026).
    Accepted,
    /// Done; the transaction is removed right after.
    Terminated,
}

/// Timer values (RFC 3261 §17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, default 5 s.
    pub t4: Duration,
    /// Delay before an INVITE server transaction sends 100 Trying on its own, default 200 ms.
    pub trying_delay: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            trying_delay: Duration::from_millis(200),
        }
    }
}

/// Errors of the calls the TU makes (never caused by network input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The request has no parsable top Via.
    #[error("request has no parsable top Via")]
    MissingVia,
    /// The top Via has no RFC 3261 branch (`z9hG4bK…`).
    #[error("top Via has no z9hG4bK branch")]
    MissingBranch,
    /// The request has no parsable CSeq, or its method differs from the request's.
    #[error("request has no valid CSeq")]
    BadCSeq,
    /// ACK is not sent in a client transaction (RFC 3261 §17.1.1.3); use `send_stateless`.
    #[error("ACK is sent statelessly, not in a transaction")]
    AckNotAllowed,
    /// A client transaction with this branch and method already exists.
    #[error("a transaction with this branch already exists")]
    DuplicateBranch,
    /// No such transaction (it may have terminated).
    #[error("no such transaction")]
    UnknownTransaction,
    /// The transaction is not a server transaction, or cannot send this response in its state.
    #[error("response not allowed in this transaction state")]
    InvalidState,
}

/// What [`TransactionLayer::handle_incoming`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A retransmission or an ACK for a non-2xx, handled by the layer; nothing for the TU.
    Absorbed,
    /// A new request; a server transaction was created. Answer it with `send_response`.
    Request {
        /// The new server transaction.
        tx: TxId,
        /// The request (top Via has `received`/`rport` filled in).
        request: Request,
    },
    /// A new CANCEL (RFC 3261 §9.2). A server transaction was created for the CANCEL itself;
    /// `invite` is the INVITE server transaction it matches, if any. The TU answers the CANCEL
    /// (200, or 481 if `invite` is `None`) and, if the INVITE has no final response yet, sends
    /// 487 on it.
    Cancel {
        /// Server transaction of the CANCEL.
        tx: TxId,
        /// The CANCEL request.
        request: Request,
        /// The INVITE server transaction it cancels.
        invite: Option<TxId>,
    },
    /// A response for one of our client transactions, to pass to the TU (provisional, final,
    /// or — in RFC 6026 "Accepted" — a further or retransmitted 2xx, for which the TU re-sends
    /// its ACK, RFC 3261 §13.2.2.4).
    Response {
        /// The client transaction.
        tx: TxId,
        /// The response.
        response: Response,
    },
    /// An ACK that did not match a non-2xx server transaction: the ACK for a 2xx, which
    /// belongs to the dialog (RFC 3261 §17.2.3, §13.3.1.4). `invite` is the accepted INVITE
    /// server transaction it acknowledges (2xx retransmissions stop), if it is still around.
    Ack {
        /// The ACK.
        request: Request,
        /// The INVITE server transaction whose 2xx this acknowledges.
        invite: Option<TxId>,
    },
    /// A response that matches no client transaction (RFC 3261 §18.1.2: pass to the core; e.g.
    /// a 2xx retransmission after Timer M — re-send the ACK — or junk to drop).
    StrayResponse(Response),
    /// The message was dropped (explanation for logs).
    Discarded(&'static str),
}

/// Something that happened to a transaction outside `handle_incoming`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A client transaction got no final response in time (Timer B or F, RFC 3261 §17.1.1.2,
    /// §17.1.2.2) — treat as 408; or an INVITE server transaction got no ACK (Timer H, or
    /// Timer L after a 2xx).
    Timeout {
        /// The transaction.
        tx: TxId,
    },
    /// The caller reported a transport failure (RFC 3261 §17.1.4, §17.2.4) — treat as 503.
    TransportError {
        /// The transaction.
        tx: TxId,
    },
    /// The transaction is gone; its id will not be seen again.
    Terminated {
        /// The transaction.
        tx: TxId,
    },
}

/// The transaction key of RFC 3261 §17.1.3 / §17.2.3.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TxKey {
    server: bool,
    /// Branch, or for RFC 2543 peers a digest of the identifying headers.
    branch: String,
    /// Top Via sent-by; only part of server keys (§17.2.3).
    sent_by: String,
    /// CSeq method, with ACK mapped to INVITE.
    method: Method,
}

/// Key of an accepted INVITE server transaction in dialog terms, to find it from the ACK
/// for its 2xx (which carries a new branch, RFC 3261 §17.1.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AckKey {
    call_id: String,
    from_tag: String,
    seq: u32,
}

#[derive(Debug)]
struct Transaction {
    kind: TxKind,
    state: TxState,
    key: TxKey,
    /// Client: destination. Server: where the request came from.
    peer: Peer,
    request: Request,
    request_bytes: Vec<u8>,
    last_response: Option<Vec<u8>>,
    /// INVITE client: ACK for the non-2xx final (RFC 3261 §17.1.1.3).
    ack_bytes: Option<Vec<u8>>,
    /// Timer A / E / G (and 2xx retransmission in Accepted).
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timer B / F / H.
    timeout_at: Option<Instant>,
    /// Timer D / K / I / J / L / M.
    terminate_at: Option<Instant>,
    /// INVITE server: send 100 Trying at this time (RFC 3261 §17.2.1).
    trying_at: Option<Instant>,
    ack_key: Option<AckKey>,
    ack_received: bool,
}

impl Transaction {
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_at,
            self.timeout_at,
            self.terminate_at,
            self.trying_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn reliable(&self) -> bool {
        self.peer.transport.is_reliable()
    }
}

/// Default bound of the transaction table ([`TransactionLayer::set_max_transactions`]).
pub const DEFAULT_MAX_TRANSACTIONS: usize = 65_536;

/// Owns all transactions of one SIP endpoint. See the module docs for how to drive it.
#[derive(Debug)]
pub struct TransactionLayer {
    config: TimerConfig,
    /// Most transactions alive at once (see [`TransactionLayer::set_max_transactions`]).
    max_transactions: usize,
    next_id: u64,
    txs: HashMap<TxId, Transaction>,
    keys: HashMap<TxKey, TxId>,
    accepted: HashMap<AckKey, TxId>,
    timers: BinaryHeap<Reverse<(Instant, TxId)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
}

impl Default for TransactionLayer {
    fn default() -> Self {
        Self::new(TimerConfig::default())
    }
}

/// RFC 3261 §17.2.3: ACK matches the INVITE transaction.
fn key_method(m: &Method) -> Method {
    if *m == Method::Ack {
        Method::Invite
    } else {
        m.clone()
    }
}

/// Server-side key of a request (RFC 3261 §17.2.3), or `None` if it lacks Via/CSeq.
fn server_key(req: &Request, method: Method) -> Option<TxKey> {
    let via = req.top_via()?;
    let cseq = req.cseq()?;
    let branch = match via.branch() {
        // A cookie with nothing after it identifies no transaction (RFC 4475 §3.2.1): that
        // request falls back to the RFC 2543 rules below, as the RFC allows.
        Some(b) if b.len() > BRANCH_MAGIC_COOKIE.len() && b.starts_with(BRANCH_MAGIC_COOKIE) => {
            b.to_string()
        }
        // RFC 3261 §17.2.3, RFC 2543 peers: match on Request-URI, tags, Call-ID, CSeq number
        // and top Via. The To tag is left out so the ACK (which carries it) matches too.
        _ => format!(
            "2543|{}|{}|{}|{}|{}",
            req.uri,
            req.from_tag().unwrap_or_default(),
            req.call_id().unwrap_or_default(),
            cseq.seq,
            via
        ),
    };
    Some(TxKey {
        server: true,
        branch,
        sent_by: via.sent_by(),
        method,
    })
}

impl TransactionLayer {
    /// An empty layer with the given timers.
    pub fn new(config: TimerConfig) -> Self {
        TransactionLayer {
            config,
            max_transactions: DEFAULT_MAX_TRANSACTIONS,
            next_id: 1,
            txs: HashMap::new(),
            keys: HashMap::new(),
            accepted: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Bounds the transaction table: while `max` transactions are alive, a new request is
    /// answered with a stateless 503 (Retry-After: 5, RFC 3261 §21.5.4) and creates none, so a
    /// flood of requests from the network costs bounded memory.
    pub fn set_max_transactions(&mut self, max: usize) {
        self.max_transactions = max;
    }

    /// The timer configuration.
    pub fn config(&self) -> &TimerConfig {
        &self.config
    }

    /// Number of live transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// True if there are no live transactions.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Kind of a live transaction.
    pub fn kind(&self, tx: TxId) -> Option<TxKind> {
        self.txs.get(&tx).map(|t| t.kind)
    }

    /// State of a live transaction.
    pub fn state(&self, tx: TxId) -> Option<TxState> {
        self.txs.get(&tx).map(|t| t.state)
    }

    /// The request that created a live transaction.
    pub fn request(&self, tx: TxId) -> Option<&Request> {
        self.txs.get(&tx).map(|t| &t.request)
    }

    /// The peer of a live transaction (client: destination; server: request source).
    pub fn peer(&self, tx: TxId) -> Option<Peer> {
        self.txs.get(&tx).map(|t| t.peer)
    }

    fn alloc_id(&mut self) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        id
    }

    fn schedule(&mut self, id: TxId) {
        if let Some(at) = self.txs.get(&id).and_then(Transaction::next_deadline) {
            self.timers.push(Reverse((at, id)));
        }
    }

    fn transmit(&mut self, dest: Peer, bytes: Vec<u8>, tx: Option<TxId>) {
        self.transmits.push_back(Transmit { dest, bytes, tx });
    }

    fn terminate(&mut self, id: TxId) {
        if let Some(t) = self.txs.remove(&id) {
            self.keys.remove(&t.key);
            if let Some(k) = t.ack_key {
                if self.accepted.get(&k) == Some(&id) {
                    self.accepted.remove(&k);
                }
            }
            self.events.push_back(TxEvent::Terminated { tx: id });
        }
    }

    /// Starts a client transaction for `req` and queues its first transmission to `dest`.
    ///
    /// The request must have a top Via whose branch starts with `z9hG4bK` (RFC 3261
    /// §8.1.1.7) and a CSeq whose method equals the request method. ACK is refused: the ACK for
    /// a 2xx is sent with [`TransactionLayer::send_stateless`], the ACK for a non-2xx by the
    /// transaction itself.
    pub fn send_request(
        &mut self,
        now: Instant,
        req: Request,
        dest: Peer,
    ) -> Result<TxId, TxError> {
        if req.method == Method::Ack {
            return Err(TxError::AckNotAllowed);
        }
        let via = req.top_via().ok_or(TxError::MissingVia)?;
        if !via.has_rfc3261_branch() {
            return Err(TxError::MissingBranch);
        }
        let cseq = req.cseq().ok_or(TxError::BadCSeq)?;
        if cseq.method != req.method {
            return Err(TxError::BadCSeq);
        }
        // RFC 3261 §17.1.3: client transactions match on branch + CSeq method.
        let key = TxKey {
            server: false,
            branch: via.branch().unwrap_or_default().to_string(),
            sent_by: String::new(),
            method: req.method.clone(),
        };
        if self.keys.contains_key(&key) {
            return Err(TxError::DuplicateBranch);
        }
        let id = self.alloc_id();
        let invite = req.method == Method::Invite;
        let reliable = dest.transport.is_reliable();
        let t1 = self.config.t1;
        let bytes = req.to_bytes();
        let tx = Transaction {
            kind: if invite {
                TxKind::InviteClient
            } else {
                TxKind::NonInviteClient
            },
            state: if invite {
                TxState::Calling
            } else {
                TxState::Trying
            },
            key: key.clone(),
            peer: dest,
            request: req,
            request_bytes: bytes.clone(),
            last_response: None,
            ack_bytes: None,
            // RFC 3261 §17.1.1.2 Timer A / §17.1.2.2 Timer E: T1 on unreliable transports only.
            retransmit_at: (!reliable).then(|| now + t1),
            retransmit_interval: t1,
            // Timer B / Timer F: 64*T1.
            timeout_at: Some(now + 64 * t1),
            terminate_at: None,
            trying_at: None,
            ack_key: None,
            ack_received: false,
        };
        self.txs.insert(id, tx);
        self.keys.insert(key, id);
        self.transmit(dest, bytes, Some(id));
        self.schedule(id);
        Ok(id)
    }

    /// Sends a CANCEL for the INVITE client transaction `invite` (RFC 3261 §9.1) as a new
    /// non-INVITE client transaction to the same destination. Per §9.1 the TU should only
    /// call this after a provisional response was received.
    pub fn send_cancel(&mut self, now: Instant, invite: TxId) -> Result<TxId, TxError> {
        let t = self.txs.get(&invite).ok_or(TxError::UnknownTransaction)?;
        if t.kind != TxKind::InviteClient
            || !matches!(t.state, TxState::Calling | TxState::Proceeding)
        {
            return Err(TxError::InvalidState);
        }
        let cancel = t.request.cancel();
        let dest = t.peer;
        self.send_request(now, cancel, dest)
    }

    /// Sends `resp` on the server transaction `tx` (RFC 3261 §17.2.1, §17.2.2).
    ///
    /// Provisional responses keep the transaction open; a final response moves it to
    /// Completed (or Accepted for an INVITE 2xx). The response goes to the request's source.
    pub fn send_response(&mut self, now: Instant, tx: TxId, resp: Response) -> Result<(), TxError> {
        let cfg = self.config;
        let t = self.txs.get_mut(&tx).ok_or(TxError::UnknownTransaction)?;
        let reliable = t.reliable();
        let bytes = resp.to_bytes();
        match (t.kind, t.state) {
            (TxKind::InviteServer, TxState::Proceeding) => {
                t.trying_at = None;
                if resp.is_provisional() {
                    // RFC 3261 §17.2.1: provisional responses are passed on in Proceeding.
                } else if resp.is_success() {
                    // RFC 6026 §7.1: 2xx moves to Accepted, Timer L = 64*T1. The 2xx is
                    // retransmitted per RFC 3261 §13.3.1.4 (T1 doubling up to T2) until ACK.
                    t.state = TxState::Accepted;
                    t.terminate_at = Some(now + 64 * cfg.t1);
                    t.retransmit_interval = cfg.t1;
                    t.retransmit_at = Some(now + cfg.t1);
                    let key = AckKey {
                        call_id: t.request.call_id().unwrap_or_default().to_string(),
                        from_tag: t.request.from_tag().unwrap_or_default(),
                        seq: t.request.cseq().map(|c| c.seq).unwrap_or_default(),
                    };
                    t.ack_key = Some(key.clone());
                    self.accepted.insert(key, tx);
                } else {
                    // RFC 3261 §17.2.1: 300-699 → Completed; Timer G = T1 (unreliable only),
                    // Timer H = 64*T1.
                    t.state = TxState::Completed;
                    t.retransmit_interval = cfg.t1;
                    t.retransmit_at = (!reliable).then(|| now + cfg.t1);
                    t.timeout_at = Some(now + 64 * cfg.t1);
                }
            }
            (TxKind::InviteServer, TxState::Accepted) if resp.is_success() => {
                // RFC 6026 §7.1: further 2xx from the TU are passed to the transport.
            }
            (TxKind::NonInviteServer, TxState::Trying | TxState::Proceeding) => {
                if resp.is_provisional() {
                    t.state = TxState::Proceeding;
                } else {
                    // RFC 3261 §17.2.2: final → Completed; Timer J = 64*T1 unreliable, 0 reliable.
                    t.state = TxState::Completed;
                    t.terminate_at = Some(if reliable { now } else { now + 64 * cfg.t1 });
                }
            }
            _ => return Err(TxError::InvalidState),
        }
        t.last_response = Some(bytes.clone());
        let peer = t.peer;
        self.transmit(peer, bytes, Some(tx));
        self.schedule(tx);
        Ok(())
    }

    /// Queues a message outside any transaction: the ACK for a 2xx (RFC 3261 §13.2.2.4), a
    /// stateless 400 from [`bad_request_response`](super::bad_request_response), a CRLF pong.
    pub fn send_stateless(&mut self, dest: Peer, bytes: Vec<u8>) {
        self.transmit(dest, bytes, None);
    }

    /// Feeds a parsed message received from `source`; see [`Incoming`] for the outcomes.
    /// Call `poll_transmit`/`poll_event` afterwards: retransmissions may have been queued.
    pub fn handle_incoming(&mut self, now: Instant, msg: Message, source: Peer) -> Incoming {
        match msg {
            Message::Request(r) => self.handle_request(now, r, source),
            Message::Response(r) => self.handle_response(now, r),
        }
    }

    fn handle_request(&mut self, now: Instant, mut req: Request, source: Peer) -> Incoming {
        let Some(mut via) = req.top_via() else {
            return Incoming::Discarded("request without a parsable top Via");
        };
        let Some(cseq) = req.cseq() else {
            return Incoming::Discarded("request without a parsable CSeq");
        };
        // RFC 3261 §18.2.1: add `received` when the sent-by host differs from the source
        // address; RFC 3581 §4: fill in `rport` (and then always `received`) when asked.
        let src_ip = source.addr.ip().to_string();
        let src_host = match source.addr.ip() {
            std::net::IpAddr::V6(_) => format!("[{src_ip}]"),
            std::net::IpAddr::V4(_) => src_ip.clone(),
        };
        let wants_rport = via.rport().is_some();
        if via.host != src_host || wants_rport {
            via.set_param("received", Some(src_ip));
        }
        if wants_rport {
            via.set_param("rport", Some(source.addr.port().to_string()));
        }
        req.headers.replace_first_value("Via", &via);

        let Some(key) = server_key(&req, key_method(&req.method)) else {
            return Incoming::Discarded("request without Via or CSeq");
        };
        if req.method == Method::Ack {
            return self.handle_ack(now, req, &key, &cseq);
        }
        if let Some(&id) = self.keys.get(&key) {
            // RFC 3261 §17.2.1 / §17.2.2: a retransmitted request is absorbed and the last
            // response (if any) re-sent.
            if let Some(t) = self.txs.get(&id) {
                if let Some(bytes) = t.last_response.clone() {
                    let peer = t.peer;
                    self.transmit(peer, bytes, Some(id));
                }
            }
            return Incoming::Absorbed;
        }
        if self.txs.len() >= self.max_transactions {
            let mut busy = Response::for_request(&req, 503, "Service Unavailable");
            busy.headers.set("Retry-After", "5");
            if req.to_tag().is_none() {
                let tag = crate::sip::message::stateless_tag(&req);
                busy.set_to_tag(&tag);
            }
            self.transmit(source, busy.to_bytes(), None);
            return Incoming::Discarded("transaction table full: answered 503");
        }
        let id = self.alloc_id();
        let invite = req.method == Method::Invite;
        let cfg = self.config;
        let tx = Transaction {
            kind: if invite {
                TxKind::InviteServer
            } else {
                TxKind::NonInviteServer
            },
            state: if invite {
                TxState::Proceeding
            } else {
                TxState::Trying
            },
            key: key.clone(),
            peer: source,
            request: req.clone(),
            request_bytes: Vec::new(),
            last_response: None,
            ack_bytes: None,
            retransmit_at: None,
            retransmit_interval: cfg.t1,
            timeout_at: None,
            terminate_at: None,
            trying_at: invite.then(|| now + cfg.trying_delay),
            ack_key: None,
            ack_received: false,
        };
        self.txs.insert(id, tx);
        self.keys.insert(key.clone(), id);
        if invite {
            if cfg.trying_delay.is_zero() {
                self.send_trying(id);
            }
            self.schedule(id);
        }
        if req.method == Method::Cancel {
            // RFC 3261 §9.2: the CANCEL matches the INVITE server transaction by the §17.2.3
            // rules, except for the method.
            let invite_key = TxKey {
                method: Method::Invite,
                ..key
            };
            let target = self
                .keys
                .get(&invite_key)
                .copied()
                .filter(|t| self.kind(*t) == Some(TxKind::InviteServer));
            return Incoming::Cancel {
                tx: id,
                request: req,
                invite: target,
            };
        }
        Incoming::Request {
            tx: id,
            request: req,
        }
    }

    fn handle_ack(&mut self, now: Instant, req: Request, key: &TxKey, cseq: &CSeq) -> Incoming {
        let t4 = self.config.t4;
        if let Some(&id) = self.keys.get(key) {
            if let Some(t) = self.txs.get_mut(&id) {
                match t.state {
                    TxState::Completed => {
                        // RFC 3261 §17.2.1: ACK in Completed → Confirmed; Timer G stops;
                        // Timer I = T4 (unreliable) or 0 (reliable).
                        t.state = TxState::Confirmed;
                        t.retransmit_at = None;
                        t.timeout_at = None;
                        t.terminate_at = Some(if t.reliable() { now } else { now + t4 });
                        self.schedule(id);
                        return Incoming::Absorbed;
                    }
                    TxState::Accepted => {
                        // An ACK for our 2xx that reused the INVITE branch (RFC 2543 peers).
                        t.ack_received = true;
                        t.retransmit_at = None;
                        return Incoming::Ack {
                            request: req,
                            invite: Some(id),
                        };
                    }
                    _ => return Incoming::Absorbed,
                }
            }
        }
        // RFC 3261 §17.2.3 / §13.3.1.4: the ACK for a 2xx has its own branch and goes to the
        // TU; stop retransmitting the 2xx it acknowledges.
        let ack_key = AckKey {
            call_id: req.call_id().unwrap_or_default().to_string(),
            from_tag: req.from_tag().unwrap_or_default(),
            seq: cseq.seq,
        };
        let invite = self.accepted.get(&ack_key).copied();
        if let Some(t) = invite.and_then(|id| self.txs.get_mut(&id)) {
            t.ack_received = true;
            t.retransmit_at = None;
        }
        Incoming::Ack {
            request: req,
            invite,
        }
    }

    fn handle_response(&mut self, now: Instant, resp: Response) -> Incoming {
        // RFC 3261 §17.1.3: match on the top Via branch and the CSeq method.
        let (Some(via), Some(cseq)) = (resp.top_via(), resp.cseq()) else {
            return Incoming::Discarded("response without a parsable top Via or CSeq");
        };
        let Some(branch) = via.branch() else {
            return Incoming::StrayResponse(resp);
        };
        let key = TxKey {
            server: false,
            branch: branch.to_string(),
            sent_by: String::new(),
            method: cseq.method.clone(),
        };
        let Some(&id) = self.keys.get(&key) else {
            return Incoming::StrayResponse(resp);
        };
        let cfg = self.config;
        let Some(t) = self.txs.get_mut(&id) else {
            return Incoming::StrayResponse(resp);
        };
        let reliable = t.reliable();
        let deliver = Incoming::Response {
            tx: id,
            response: resp.clone(),
        };
        match t.kind {
            TxKind::InviteClient => match t.state {
                TxState::Calling | TxState::Proceeding => {
                    if resp.is_provisional() {
                        // RFC 3261 §17.1.1.2: 1xx → Proceeding; retransmissions (Timer A) stop;
                        // Timer B only applies in Calling.
                        t.state = TxState::Proceeding;
                        t.retransmit_at = None;
                        t.timeout_at = None;
                    } else if resp.is_success() {
                        // RFC 6026 §8.4: 2xx → Accepted, Timer M = 64*T1.
                        t.state = TxState::Accepted;
                        t.retransmit_at = None;
                        t.timeout_at = None;
                        t.terminate_at = Some(now + 64 * cfg.t1);
                    } else {
                        // RFC 3261 §17.1.1.2: 300-699 → Completed, ACK sent, Timer D = 32 s
                        // (unreliable) or 0 (reliable).
                        let ack = build_ack_for_non2xx(&t.request, &resp).to_bytes();
                        t.ack_bytes = Some(ack.clone());
                        t.state = TxState::Completed;
                        t.retransmit_at = None;
                        t.timeout_at = None;
                        t.terminate_at = Some(if reliable {
                            now
                        } else {
                            now + Duration::from_secs(32).max(64 * cfg.t1)
                        });
                        let peer = t.peer;
                        self.transmit(peer, ack, Some(id));
                    }
                    self.schedule(id);
                    deliver
                }
                TxState::Completed => {
                    // RFC 3261 §17.1.1.2: retransmitted final → re-send ACK, not passed up.
                    if resp.is_final() {
                        if let Some(ack) = t.ack_bytes.clone() {
                            let peer = t.peer;
                            self.transmit(peer, ack, Some(id));
                        }
                    }
                    Incoming::Absorbed
                }
                // RFC 6026 §8.4: in Accepted, 2xx go to the TU; anything else is dropped.
                TxState::Accepted if resp.is_success() => deliver,
                _ => Incoming::Absorbed,
            },
            TxKind::NonInviteClient => match t.state {
                TxState::Trying | TxState::Proceeding => {
                    if resp.is_provisional() {
                        t.state = TxState::Proceeding;
                    } else {
                        // RFC 3261 §17.1.2.2: final → Completed, Timer K = T4 / 0.
                        t.state = TxState::Completed;
                        t.retransmit_at = None;
                        t.timeout_at = None;
                        t.terminate_at = Some(if reliable { now } else { now + cfg.t4 });
                        self.schedule(id);
                    }
                    deliver
                }
                _ => Incoming::Absorbed,
            },
            _ => Incoming::StrayResponse(resp),
        }
    }

    fn send_trying(&mut self, id: TxId) {
        let Some(t) = self.txs.get_mut(&id) else {
            return;
        };
        t.trying_at = None;
        if t.last_response.is_some() || t.state != TxState::Proceeding {
            return;
        }
        let trying = Response::for_request(&t.request, 100, "Trying").to_bytes();
        t.last_response = Some(trying.clone());
        let peer = t.peer;
        self.transmit(peer, trying, Some(id));
    }

    /// Reports that sending a [`Transmit`] of transaction `tx` failed (RFC 3261 §17.1.4,
    /// §17.2.4): the transaction is terminated with [`TxEvent::TransportError`].
    pub fn handle_transport_error(&mut self, tx: TxId) {
        if self.txs.contains_key(&tx) {
            self.events.push_back(TxEvent::TransportError { tx });
            self.terminate(tx);
        }
    }

    /// The next message to send, if any. Call until `None` after every other call.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any. Call until `None` after every other call.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// When [`TransactionLayer::handle_timeout`] must be called next, or `None` if no timer
    /// runs. Call after every other call.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            match self.txs.get(&id).and_then(Transaction::next_deadline) {
                Some(d) if d == at => return Some(at),
                // Stale entry: the transaction is gone or its deadline moved (a timer was
                // stopped); re-queue the real deadline, if any.
                Some(d) => {
                    self.timers.pop();
                    self.timers.push(Reverse((d, id)));
                }
                None => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// Runs every timer that expired at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !due.contains(&id) {
                due.push(id);
            }
        }
        for id in due {
            self.fire_timers(now, id);
            self.schedule(id);
        }
    }

    fn fire_timers(&mut self, now: Instant, id: TxId) {
        let cfg = self.config;
        if self
            .txs
            .get(&id)
            .and_then(|t| t.trying_at)
            .is_some_and(|at| at <= now)
        {
            self.send_trying(id);
        }
        let Some(t) = self.txs.get_mut(&id) else {
            return;
        };
        if t.timeout_at.is_some_and(|at| at <= now) {
            // Timer B (§17.1.1.2), F (§17.1.2.2), H (§17.2.1).
            t.timeout_at = None;
            self.events.push_back(TxEvent::Timeout { tx: id });
            self.terminate(id);
            return;
        }
        if t.terminate_at.is_some_and(|at| at <= now) {
            // Timer D, K, I, J; RFC 6026 Timer L and M.
            if t.kind == TxKind::InviteServer && t.state == TxState::Accepted && !t.ack_received {
                // RFC 3261 §13.3.1.4: no ACK for the 2xx within 64*T1.
                self.events.push_back(TxEvent::Timeout { tx: id });
            }
            self.terminate(id);
            return;
        }
        if t.retransmit_at.is_some_and(|at| at <= now) {
            let bytes = match t.kind {
                TxKind::InviteClient | TxKind::NonInviteClient => Some(t.request_bytes.clone()),
                TxKind::InviteServer => t.last_response.clone(),
                TxKind::NonInviteServer => None,
            };
            t.retransmit_interval = match (t.kind, t.state) {
                // Timer A doubles without a cap (§17.1.1.2).
                (TxKind::InviteClient, _) => t.retransmit_interval.saturating_mul(2),
                // Timer E in Proceeding is T2 (§17.1.2.2).
                (TxKind::NonInviteClient, TxState::Proceeding) => cfg.t2,
                // Timer E in Trying, Timer G (§17.2.1), 2xx retransmission (§13.3.1.4):
                // double up to T2.
                _ => (t.retransmit_interval.saturating_mul(2)).min(cfg.t2),
            };
            t.retransmit_at = Some(now + t.retransmit_interval);
            if let Some(b) = bytes {
                let peer = t.peer;
                self.transmit(peer, b, Some(id));
            }
        }
    }
}

/// The ACK for a non-2xx final response, built by the INVITE client transaction
/// (RFC 3261 §17.1.1.3): Request-URI, Call-ID, From and top Via of the INVITE; To of the
/// response (with its tag); CSeq number of the INVITE with method ACK; Route headers of the
/// INVITE.
fn build_ack_for_non2xx(invite: &Request, resp: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(v) = invite.headers.values("Via").first() {
        ack.headers.push("Via", v);
    }
    ack.headers.push("Max-Forwards", 70);
    if let Some(v) = invite.headers.get("From") {
        ack.headers.push("From", v);
    }
    if let Some(v) = resp.headers.get("To").or(invite.headers.get("To")) {
        ack.headers.push("To", v);
    }
    if let Some(v) = invite.headers.get("Call-ID") {
        ack.headers.push("Call-ID", v);
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or_default();
    ack.headers.push(
        "CSeq",
        CSeq {
            seq,
            method: Method::Ack,
        },
    );
    for r in invite.headers.get_all("Route") {
        ack.headers.push("Route", r);
    }
    ack
}

/// A Via for requests sent over `transport` from `host:port` with a fresh branch from `rng`.
pub fn new_via(
    transport: Transport,
    host: &str,
    port: Option<u16>,
    rng: &mut fastrand::Rng,
) -> Via {
    let mut v = Via::new(transport.via_token(), host, port);
    v.set_param("branch", Some(super::message::generate_branch(rng)));
    v.set_param("rport", None);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{generate_branch, NameAddr, Uri};

    fn test_branch() -> String {
        generate_branch(&mut fastrand::Rng::new())
    }

    fn alice() -> Peer {
        Peer::udp("192.0.2.1:5060".parse().expect("addr"))
    }

    fn bob() -> Peer {
        Peer::udp("198.51.100.2:5060".parse().expect("addr"))
    }

    fn mk(method: Method, branch: &str) -> Request {
        let mut r = Request::new(method.clone(), Uri::sip(Some("bob"), "198.51.100.2", None));
        r.headers
            .push("Via", format!("SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"));
        r.headers.push("Max-Forwards", 70);
        r.headers.push("From", "<sip:alice@192.0.2.1>;tag=a1");
        r.headers.push("To", "<sip:bob@198.51.100.2>");
        r.headers.push("Call-ID", "call-1@192.0.2.1");
        r.headers.push("CSeq", CSeq { seq: 1, method });
        r
    }

    fn reparse(bytes: &[u8]) -> Message {
        Message::parse(bytes).expect("layer produced an unparsable message")
    }

    fn transmits(l: &mut TransactionLayer) -> Vec<Transmit> {
        std::iter::from_fn(|| l.poll_transmit()).collect()
    }

    fn events(l: &mut TransactionLayer) -> Vec<TxEvent> {
        std::iter::from_fn(|| l.poll_event()).collect()
    }

    type Timed<T> = Vec<(Duration, T)>;

    /// Runs timers up to `end`; returns (offset from `start`, transmit) pairs and events.
    fn run(
        l: &mut TransactionLayer,
        start: Instant,
        end: Duration,
    ) -> (Timed<Transmit>, Timed<TxEvent>) {
        let mut tx = Vec::new();
        let mut ev = Vec::new();
        while let Some(at) = l.poll_timeout() {
            if at > start + end {
                break;
            }
            l.handle_timeout(at);
            for t in transmits(l) {
                tx.push((at - start, t));
            }
            for e in events(l) {
                ev.push((at - start, e));
            }
        }
        (tx, ev)
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    fn response_to(req: &Request, status: u16) -> Response {
        let mut r = Response::for_request(req, status, "x");
        r.set_to_tag("b1");
        r
    }

    #[test]
    fn uris_choose_transport_and_default_port() {
        let peer = |u: &str| Peer::for_uri(&Uri::parse(u).expect("uri"));
        let at = |a: &str| a.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            peer("sip:1001@198.18.0.20"),
            Some(Peer::udp(at("198.18.0.20:5060")))
        );
        assert_eq!(
            peer("sip:198.18.0.20:5070;transport=TCP"),
            Some(Peer::tcp(at("198.18.0.20:5070")))
        );
        // RFC 3261 §19.1.2: TLS defaults to 5061, for sips: and for transport=tls.
        assert_eq!(
            peer("sip:198.18.0.20;transport=tls"),
            Some(Peer::tls(at("198.18.0.20:5061")))
        );
        assert_eq!(
            peer("sips:1001@198.18.0.20"),
            Some(Peer::tls(at("198.18.0.20:5061")))
        );
        assert_eq!(
            peer("sips:[2001:db8::1]:5071;transport=tls"),
            Some(Peer::tls(at("[2001:db8::1]:5071")))
        );
        // SIPS over UDP is not SIPS (RFC 5630 §3.1.2); over TCP it is TLS (RFC 3263 §4.1).
        assert_eq!(peer("sips:198.18.0.20;transport=udp"), None);
        assert_eq!(
            peer("sips:198.18.0.20;transport=tcp"),
            Some(Peer::tls(at("198.18.0.20:5061")))
        );
        // No DNS here.
        assert_eq!(peer("sip:pbx.example.com;transport=tls"), None);
        assert!(Transport::Tls.is_reliable() && Transport::Tcp.is_reliable());
        assert!(!Transport::Udp.is_reliable());
        assert_eq!(
            new_via(Transport::Tls, "h", Some(5061), &mut fastrand::Rng::new()).transport,
            "TLS"
        );
    }

    #[test]
    fn contacts_name_the_transport() {
        assert_eq!(
            Transport::Udp.contact("s", "198.18.0.1", 5060),
            "<sip:s@198.18.0.1:5060>"
        );
        assert_eq!(
            Transport::Tcp.contact("s", "198.18.0.1", 5060),
            "<sip:s@198.18.0.1:5060;transport=tcp>"
        );
        assert_eq!(
            Transport::Tls.contact("s", "2001:db8::1", 5061),
            "<sip:s@[2001:db8::1]:5061;transport=tls>"
        );
        // What sipctl writes, it reads back as the same peer.
        let c = Transport::Tls.contact("s", "198.18.0.1", 5071);
        let uri = Uri::parse(c.trim_matches(|ch| ch == '<' || ch == '>')).expect("uri");
        assert_eq!(
            Peer::for_uri(&uri),
            Some(Peer::tls("198.18.0.1:5071".parse().expect("addr")))
        );
    }

    #[test]
    fn a_bare_magic_cookie_branch_falls_back_to_rfc2543_matching() {
        // RFC 4475 §3.2.1: `branch=z9hG4bK` identifies no transaction. Two different requests
        // with it are two transactions (RFC 2543 matching includes the Call-ID), and a true
        // retransmission of one is still absorbed.
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let one = mk(Method::Options, BRANCH_MAGIC_COOKIE);
        let mut two = one.clone();
        two.headers.set("Call-ID", "call-2@192.0.2.1");
        let Incoming::Request { tx: a, .. } =
            l.handle_incoming(t0, Message::Request(one.clone()), alice())
        else {
            panic!("first request")
        };
        let Incoming::Request { tx: b, .. } = l.handle_incoming(t0, Message::Request(two), alice())
        else {
            panic!("a different request with the same bare branch is a new transaction")
        };
        assert_ne!(a, b);
        assert_eq!(
            l.handle_incoming(t0, Message::Request(one), alice()),
            Incoming::Absorbed
        );
    }

    #[test]
    fn invite_client_retransmits_until_timer_b() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let id = l
            .send_request(t0, mk(Method::Invite, &test_branch()), bob())
            .expect("send");
        assert_eq!(transmits(&mut l).len(), 1);
        assert_eq!(l.state(id), Some(TxState::Calling));
        let (tx, ev) = run(&mut l, t0, Duration::from_secs(60));
        // Timer A: 500 ms doubling, no cap (RFC 3261 §17.1.1.2).
        let times: Vec<Duration> = tx.iter().map(|(d, _)| *d).collect();
        assert_eq!(times, ms(&[500, 1500, 3500, 7500, 15500, 31500]));
        assert!(tx.iter().all(|(_, t)| t.dest == bob() && t.tx == Some(id)));
        // Timer B = 64*T1 = 32 s.
        assert_eq!(
            ev,
            vec![
                (Duration::from_secs(32), TxEvent::Timeout { tx: id }),
                (Duration::from_secs(32), TxEvent::Terminated { tx: id })
            ]
        );
        assert!(l.is_empty());
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn non_invite_client_retransmits_capped_at_t2() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let id = l
            .send_request(t0, mk(Method::Options, &test_branch()), bob())
            .expect("send");
        transmits(&mut l);
        let (tx, ev) = run(&mut l, t0, Duration::from_secs(60));
        let times: Vec<Duration> = tx.iter().map(|(d, _)| *d).collect();
        // Timer E: 0.5, 1, 2, 4, 4, … (RFC 3261 §17.1.2.2) until Timer F at 32 s.
        assert_eq!(
            times,
            ms(&[500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500])
        );
        assert_eq!(
            ev[0],
            (Duration::from_secs(32), TxEvent::Timeout { tx: id })
        );
    }

    #[test]
    fn non_invite_client_proceeding_uses_t2_and_final_runs_timer_k() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let req = mk(Method::Bye, &test_branch());
        let id = l.send_request(t0, req.clone(), bob()).expect("send");
        transmits(&mut l);
        let got = l.handle_incoming(t0, Message::Response(response_to(&req, 100)), bob());
        assert!(matches!(got, Incoming::Response { tx, .. } if tx == id));
        assert_eq!(l.state(id), Some(TxState::Proceeding));
        let (tx, _) = run(&mut l, t0, Duration::from_millis(9000));
        let times: Vec<Duration> = tx.iter().map(|(d, _)| *d).collect();
        // Timer E was armed at T1 in Trying; in Proceeding it is reset to T2.
        assert_eq!(times, ms(&[500, 4500, 8500]));
        let now = t0 + Duration::from_secs(9);
        let got = l.handle_incoming(now, Message::Response(response_to(&req, 200)), bob());
        assert!(matches!(got, Incoming::Response { ref response, .. } if response.status == 200));
        // retransmitted final absorbed
        let got = l.handle_incoming(now, Message::Response(response_to(&req, 200)), bob());
        assert_eq!(got, Incoming::Absorbed);
        // Timer K = T4
        let (tx, ev) = run(&mut l, t0, Duration::from_secs(60));
        assert!(tx.is_empty());
        assert_eq!(
            ev,
            vec![(Duration::from_secs(14), TxEvent::Terminated { tx: id })]
        );
    }

    #[test]
    fn tcp_has_no_retransmissions_and_zero_wait_timers() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let dest = Peer::tcp("198.51.100.2:5060".parse().expect("addr"));
        let inv = mk(Method::Invite, &test_branch());
        let id = l.send_request(t0, inv.clone(), dest).expect("send");
        assert_eq!(transmits(&mut l).len(), 1);
        let (tx, _) = run(&mut l, t0, Duration::from_secs(10));
        assert!(tx.is_empty());
        // 486 → ACK, Timer D = 0 on reliable transports.
        let now = t0 + Duration::from_secs(10);
        l.handle_incoming(now, Message::Response(response_to(&inv, 486)), dest);
        assert_eq!(transmits(&mut l).len(), 1);
        l.handle_timeout(now);
        assert_eq!(events(&mut l), vec![TxEvent::Terminated { tx: id }]);

        // non-INVITE over TCP: one send, then Timer F.
        let id = l
            .send_request(now, mk(Method::Options, &test_branch()), dest)
            .expect("send");
        transmits(&mut l);
        let (tx, ev) = run(&mut l, now, Duration::from_secs(60));
        assert!(tx.is_empty());
        assert_eq!(
            ev[0],
            (Duration::from_secs(32), TxEvent::Timeout { tx: id })
        );
    }

    #[test]
    fn invite_client_non2xx_generates_ack() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let mut inv = mk(Method::Invite, &test_branch());
        inv.headers.push("Route", "<sip:proxy.example.com;lr>");
        let id = l.send_request(t0, inv.clone(), bob()).expect("send");
        transmits(&mut l);
        let ringing = response_to(&inv, 180);
        let got = l.handle_incoming(t0, Message::Response(ringing), bob());
        assert!(matches!(got, Incoming::Response { tx, .. } if tx == id));
        // 1xx stops Timer A and Timer B
        let (tx, ev) = run(&mut l, t0, Duration::from_secs(100));
        assert!(tx.is_empty() && ev.is_empty());
        let now = t0 + Duration::from_secs(100);
        let busy = response_to(&inv, 486);
        let got = l.handle_incoming(now, Message::Response(busy.clone()), bob());
        assert!(matches!(got, Incoming::Response { ref response, .. } if response.status == 486));
        let out = transmits(&mut l);
        assert_eq!(out.len(), 1);
        let Message::Request(ack) = reparse(&out[0].bytes) else {
            panic!("ACK expected")
        };
        // RFC 3261 §17.1.1.3
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.uri, inv.uri);
        assert_eq!(ack.top_via(), inv.top_via());
        assert_eq!(ack.to_tag().as_deref(), Some("b1"));
        assert_eq!(
            ack.cseq().map(|c| (c.seq, c.method)),
            Some((1, Method::Ack))
        );
        assert_eq!(ack.routes().len(), 1);
        // retransmitted 486 → ACK again, absorbed
        let got = l.handle_incoming(now, Message::Response(busy), bob());
        assert_eq!(got, Incoming::Absorbed);
        assert_eq!(transmits(&mut l).len(), 1);
        // Timer D = 32 s
        let (_, ev) = run(&mut l, now, Duration::from_secs(60));
        assert_eq!(
            ev,
            vec![(Duration::from_secs(32), TxEvent::Terminated { tx: id })]
        );
    }

    #[test]
    fn invite_client_2xx_accepted_and_stray_after_timer_m() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let inv = mk(Method::Invite, &test_branch());
        let id = l.send_request(t0, inv.clone(), bob()).expect("send");
        transmits(&mut l);
        let ok = response_to(&inv, 200);
        let got = l.handle_incoming(t0, Message::Response(ok.clone()), bob());
        assert!(matches!(got, Incoming::Response { tx, .. } if tx == id));
        assert_eq!(l.state(id), Some(TxState::Accepted));
        // no ACK from the transaction for a 2xx (RFC 3261 §13.2.2.4: the TU's job)
        assert!(transmits(&mut l).is_empty());
        // retransmitted 2xx goes to the TU (RFC 6026 §8.4)
        let got = l.handle_incoming(t0, Message::Response(ok.clone()), bob());
        assert!(matches!(got, Incoming::Response { tx, .. } if tx == id));
        let (_, ev) = run(&mut l, t0, Duration::from_secs(60));
        assert_eq!(
            ev,
            vec![(Duration::from_secs(32), TxEvent::Terminated { tx: id })]
        );
        let got = l.handle_incoming(t0, Message::Response(ok), bob());
        assert!(matches!(got, Incoming::StrayResponse(_)));
    }

    #[test]
    fn server_invite_trying_retransmission_timer_g_and_ack() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let inv = mk(Method::Invite, &test_branch());
        let got = l.handle_incoming(t0, Message::Request(inv.clone()), alice());
        let Incoming::Request { tx: id, request } = got else {
            panic!("new request expected")
        };
        assert_eq!(l.kind(id), Some(TxKind::InviteServer));
        // received is not added when sent-by equals the source (RFC 3261 §18.2.1)
        assert_eq!(
            request
                .top_via()
                .and_then(|v| v.received().map(str::to_string)),
            None
        );
        assert!(transmits(&mut l).is_empty());
        // 100 Trying after 200 ms
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_millis(200)));
        l.handle_timeout(t0 + Duration::from_millis(200));
        let out = transmits(&mut l);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dest, alice());
        let Message::Response(trying) = reparse(&out[0].bytes) else {
            panic!("response expected")
        };
        assert_eq!(trying.status, 100);
        // retransmitted INVITE: absorbed, 100 re-sent
        let got = l.handle_incoming(t0, Message::Request(inv.clone()), alice());
        assert_eq!(got, Incoming::Absorbed);
        assert_eq!(transmits(&mut l).len(), 1);
        // TU answers 486
        let t1 = t0 + Duration::from_secs(1);
        l.send_response(t1, id, response_to(&request, 486))
            .expect("respond");
        assert_eq!(transmits(&mut l).len(), 1);
        assert_eq!(l.state(id), Some(TxState::Completed));
        let (tx, _) = run(&mut l, t1, Duration::from_millis(12000));
        let times: Vec<Duration> = tx.iter().map(|(d, _)| *d).collect();
        // Timer G: T1 doubling, capped at T2 (RFC 3261 §17.2.1)
        assert_eq!(times, ms(&[500, 1500, 3500, 7500, 11500]));
        // ACK for the non-2xx (same branch) is absorbed → Confirmed, Timer I = T4
        let mut ack = mk(Method::Ack, "x");
        ack.headers = inv.headers.clone();
        ack.headers.set("CSeq", "1 ACK");
        let t2 = t1 + Duration::from_secs(12);
        assert_eq!(
            l.handle_incoming(t2, Message::Request(ack.clone()), alice()),
            Incoming::Absorbed
        );
        assert_eq!(l.state(id), Some(TxState::Confirmed));
        assert_eq!(
            l.handle_incoming(t2, Message::Request(ack), alice()),
            Incoming::Absorbed
        );
        let (tx, ev) = run(&mut l, t2, Duration::from_secs(60));
        assert!(tx.is_empty());
        assert_eq!(
            ev,
            vec![(Duration::from_secs(5), TxEvent::Terminated { tx: id })]
        );
    }

    #[test]
    fn server_invite_timer_h_without_ack() {
        let mut l = TransactionLayer::new(TimerConfig {
            trying_delay: Duration::ZERO,
            ..TimerConfig::default()
        });
        let t0 = Instant::now();
        let inv = mk(Method::Invite, &test_branch());
        let Incoming::Request { tx: id, request } =
            l.handle_incoming(t0, Message::Request(inv), alice())
        else {
            panic!("request")
        };
        // trying_delay zero: 100 immediately
        assert_eq!(transmits(&mut l).len(), 1);
        l.send_response(t0, id, response_to(&request, 404))
            .expect("respond");
        transmits(&mut l);
        let (_, ev) = run(&mut l, t0, Duration::from_secs(60));
        assert_eq!(
            ev,
            vec![
                (Duration::from_secs(32), TxEvent::Timeout { tx: id }),
                (Duration::from_secs(32), TxEvent::Terminated { tx: id })
            ]
        );
    }

    #[test]
    fn server_invite_2xx_retransmitted_until_ack_with_new_branch() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let inv = mk(Method::Invite, &test_branch());
        let Incoming::Request { tx: id, request } =
            l.handle_incoming(t0, Message::Request(inv.clone()), alice())
        else {
            panic!("request")
        };
        // TU answers within 200 ms: no automatic 100
        l.send_response(
            t0 + Duration::from_millis(100),
            id,
            response_to(&request, 180),
        )
        .expect("180");
        let ok = response_to(&request, 200);
        let t1 = t0 + Duration::from_millis(150);
        l.send_response(t1, id, ok).expect("200");
        let sent: Vec<u16> = transmits(&mut l)
            .iter()
            .filter_map(|t| reparse(&t.bytes).as_response().map(|r| r.status))
            .collect();
        assert_eq!(sent, [180, 200]);
        assert_eq!(l.state(id), Some(TxState::Accepted));
        let (tx, _) = run(&mut l, t1, Duration::from_millis(4000));
        let times: Vec<Duration> = tx.iter().map(|(d, _)| *d).collect();
        assert_eq!(times, ms(&[500, 1500, 3500]));
        // retransmitted INVITE in Accepted: absorbed (RFC 6026 §7.1)
        assert_eq!(
            l.handle_incoming(t1, Message::Request(inv.clone()), alice()),
            Incoming::Absorbed
        );
        transmits(&mut l);
        // ACK for 2xx: new branch, To tag → goes to the TU with the INVITE tx
        let mut ack = mk(Method::Ack, &test_branch());
        ack.headers.set("To", "<sip:bob@198.51.100.2>;tag=b1");
        let got = l.handle_incoming(t1, Message::Request(ack), alice());
        assert!(matches!(got, Incoming::Ack { invite: Some(tx), .. } if tx == id));
        let (tx, ev) = run(&mut l, t1, Duration::from_secs(60));
        assert!(tx.is_empty(), "2xx retransmissions stop after ACK");
        assert_eq!(
            ev,
            vec![(Duration::from_secs(32), TxEvent::Terminated { tx: id })]
        );
        // ACK after the transaction is gone: still delivered to the TU
        let ack = mk(Method::Ack, &test_branch());
        assert!(matches!(
            l.handle_incoming(t1, Message::Request(ack), alice()),
            Incoming::Ack { invite: None, .. }
        ));
    }

    #[test]
    fn server_invite_2xx_without_ack_times_out() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let Incoming::Request { tx: id, request } = l.handle_incoming(
            t0,
            Message::Request(mk(Method::Invite, &test_branch())),
            alice(),
        ) else {
            panic!("request")
        };
        l.send_response(t0, id, response_to(&request, 200))
            .expect("200");
        assert_eq!(transmits(&mut l).len(), 1);
        let (tx, ev) = run(&mut l, t0, Duration::from_secs(60));
        // 0.5 1.5 3.5 7.5 11.5 … 31.5 → 10 retransmissions before Timer L at 32 s
        assert_eq!(tx.len(), 10);
        assert_eq!(
            ev,
            vec![
                (Duration::from_secs(32), TxEvent::Timeout { tx: id }),
                (Duration::from_secs(32), TxEvent::Terminated { tx: id })
            ]
        );
    }

    #[test]
    fn a_full_transaction_table_answers_503_and_creates_nothing() {
        let mut l = TransactionLayer::default();
        l.set_max_transactions(2);
        let t0 = Instant::now();
        let mut kept = Vec::new();
        for _ in 0..2 {
            let r = l.handle_incoming(
                t0,
                Message::Request(mk(Method::Options, &test_branch())),
                alice(),
            );
            let Incoming::Request { tx, request } = r else {
                panic!("{r:?}")
            };
            kept.push((tx, request));
        }
        // A flood beyond the bound: each request is answered 503 statelessly, none is kept.
        for _ in 0..1_000 {
            let r = l.handle_incoming(
                t0,
                Message::Request(mk(Method::Invite, &test_branch())),
                alice(),
            );
            assert_eq!(
                r,
                Incoming::Discarded("transaction table full: answered 503")
            );
        }
        assert_eq!(l.len(), 2);
        let sent = transmits(&mut l);
        assert_eq!(sent.len(), 1_000);
        let busy = Message::parse(&sent[0].bytes).expect("a response");
        let Message::Response(busy) = busy else {
            panic!("not a response")
        };
        assert_eq!(busy.status, 503);
        assert_eq!(busy.headers.get("Retry-After"), Some("5"));
        assert!(sent.iter().all(|t| t.tx.is_none()), "stateless");
        // Once the kept transactions are answered and end (timer J), new requests are taken
        // again.
        for (tx, request) in &kept {
            l.send_response(t0, *tx, response_to(request, 200))
                .expect("200");
        }
        let _ = run(&mut l, t0, Duration::from_secs(60));
        assert_eq!(l.len(), 0);
        let r = l.handle_incoming(
            t0 + Duration::from_secs(61),
            Message::Request(mk(Method::Options, &test_branch())),
            alice(),
        );
        assert!(matches!(r, Incoming::Request { .. }), "{r:?}");
    }

    #[test]
    fn non_invite_server_absorbs_and_resends_final() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let bye = mk(Method::Bye, &test_branch());
        let Incoming::Request { tx: id, request } =
            l.handle_incoming(t0, Message::Request(bye.clone()), alice())
        else {
            panic!("request")
        };
        assert_eq!(l.kind(id), Some(TxKind::NonInviteServer));
        // retransmission before any response: absorbed, nothing sent
        assert_eq!(
            l.handle_incoming(t0, Message::Request(bye.clone()), alice()),
            Incoming::Absorbed
        );
        assert!(transmits(&mut l).is_empty());
        assert_eq!(l.poll_timeout(), None);
        l.send_response(t0, id, response_to(&request, 200))
            .expect("200");
        assert_eq!(transmits(&mut l).len(), 1);
        assert_eq!(
            l.handle_incoming(t0, Message::Request(bye), alice()),
            Incoming::Absorbed
        );
        assert_eq!(transmits(&mut l).len(), 1);
        assert_eq!(
            l.send_response(t0, id, response_to(&request, 500)),
            Err(TxError::InvalidState)
        );
        // Timer J = 64*T1
        let (_, ev) = run(&mut l, t0, Duration::from_secs(60));
        assert_eq!(
            ev,
            vec![(Duration::from_secs(32), TxEvent::Terminated { tx: id })]
        );
    }

    #[test]
    fn cancel_is_its_own_transaction_and_finds_the_invite() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let inv = mk(Method::Invite, &test_branch());
        let Incoming::Request { tx: inv_tx, .. } =
            l.handle_incoming(t0, Message::Request(inv.clone()), alice())
        else {
            panic!("request")
        };
        let cancel = inv.cancel();
        let got = l.handle_incoming(t0, Message::Request(cancel.clone()), alice());
        let Incoming::Cancel {
            tx,
            request,
            invite,
        } = got
        else {
            panic!("cancel expected, got {got:?}")
        };
        assert_ne!(tx, inv_tx);
        assert_eq!(invite, Some(inv_tx));
        assert_eq!(l.kind(tx), Some(TxKind::NonInviteServer));
        l.send_response(t0, tx, response_to(&request, 200))
            .expect("200 CANCEL");
        l.send_response(t0, inv_tx, response_to(&inv, 487))
            .expect("487");
        // retransmitted CANCEL matches the CANCEL transaction, not the INVITE
        assert_eq!(
            l.handle_incoming(t0, Message::Request(cancel), alice()),
            Incoming::Absorbed
        );
        let resent = transmits(&mut l);
        let last = resent.last().map(|t| reparse(&t.bytes));
        assert_eq!(
            last.as_ref()
                .and_then(|m| m.as_response())
                .and_then(|r| r.cseq())
                .map(|c| c.method),
            Some(Method::Cancel)
        );
        // a CANCEL for an unknown branch
        let stray = mk(Method::Invite, &test_branch()).cancel();
        assert!(matches!(
            l.handle_incoming(t0, Message::Request(stray), alice()),
            Incoming::Cancel { invite: None, .. }
        ));
        // the same branch from another sent-by is a different transaction (RFC 3261 §17.2.3)
        let mut other = inv.clone();
        other.headers.set(
            "Via",
            format!(
                "SIP/2.0/UDP 203.0.113.7:5060;branch={}",
                inv.top_via()
                    .and_then(|v| v.branch().map(str::to_string))
                    .unwrap_or_default()
            ),
        );
        assert!(matches!(
            l.handle_incoming(t0, Message::Request(other), alice()),
            Incoming::Request { .. }
        ));
    }

    #[test]
    fn client_cancel_and_matching() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let inv = mk(Method::Invite, &test_branch());
        let inv_tx = l.send_request(t0, inv.clone(), bob()).expect("send");
        l.handle_incoming(t0, Message::Response(response_to(&inv, 180)), bob());
        let c_tx = l.send_cancel(t0, inv_tx).expect("cancel");
        let out = transmits(&mut l);
        let Message::Request(c) = reparse(&out[out.len() - 1].bytes) else {
            panic!("cancel")
        };
        assert_eq!(c.method, Method::Cancel);
        assert_eq!(c.top_via(), inv.top_via());
        // 200 for CANCEL goes to the CANCEL tx, 487 to the INVITE tx (same branch)
        let got = l.handle_incoming(t0, Message::Response(response_to(&c, 200)), bob());
        assert!(matches!(got, Incoming::Response { tx, .. } if tx == c_tx));
        let got = l.handle_incoming(t0, Message::Response(response_to(&inv, 487)), bob());
        assert!(matches!(got, Incoming::Response { tx, .. } if tx == inv_tx));
    }

    #[test]
    fn received_rport_and_errors() {
        let mut l = TransactionLayer::default();
        let t0 = Instant::now();
        let mut req = mk(Method::Options, &test_branch());
        req.headers
            .set("Via", "SIP/2.0/UDP client.invalid;branch=z9hG4bKr;rport");
        let src = Peer::udp("203.0.113.5:40000".parse().expect("addr"));
        let Incoming::Request { tx, request } = l.handle_incoming(t0, Message::Request(req), src)
        else {
            panic!("request")
        };
        let via = request.top_via().expect("via");
        assert_eq!(via.received(), Some("203.0.113.5"));
        assert_eq!(via.rport(), Some(Some(40000)));
        assert_eq!(l.peer(tx), Some(src));
        l.send_response(t0, tx, Response::for_request(&request, 200, "OK"))
            .expect("200");
        let out = transmits(&mut l);
        assert_eq!(out[0].dest, src);
        let Message::Response(r) = reparse(&out[0].bytes) else {
            panic!("response")
        };
        assert_eq!(r.top_via().and_then(|v| v.rport()), Some(Some(40000)));

        // TU errors
        let mut no_branch = mk(Method::Options, "old");
        assert_eq!(
            l.send_request(t0, no_branch.clone(), bob()),
            Err(TxError::MissingBranch)
        );
        no_branch.headers.remove("Via");
        assert_eq!(
            l.send_request(t0, no_branch, bob()),
            Err(TxError::MissingVia)
        );
        assert_eq!(
            l.send_request(t0, mk(Method::Ack, &test_branch()), bob()),
            Err(TxError::AckNotAllowed)
        );
        let r = mk(Method::Options, "z9hG4bKdup");
        assert!(l.send_request(t0, r.clone(), bob()).is_ok());
        assert_eq!(l.send_request(t0, r, bob()), Err(TxError::DuplicateBranch));
        assert_eq!(
            l.send_response(t0, TxId(999), Response::new(200, "OK")),
            Err(TxError::UnknownTransaction)
        );
        // transport error terminates
        let id = l
            .send_request(t0, mk(Method::Info, &test_branch()), bob())
            .expect("send");
        events(&mut l);
        l.handle_transport_error(id);
        assert_eq!(
            events(&mut l),
            vec![
                TxEvent::TransportError { tx: id },
                TxEvent::Terminated { tx: id }
            ]
        );
        // responses for unknown branches are stray
        let mut resp = Response::new(200, "OK");
        resp.headers
            .push("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKnone");
        resp.headers.push("CSeq", "1 OPTIONS");
        assert!(matches!(
            l.handle_incoming(t0, Message::Response(resp), bob()),
            Incoming::StrayResponse(_)
        ));
        let _ = NameAddr::parse("<sip:x@y>");
    }
}
