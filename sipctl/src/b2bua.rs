//! The B2BUA: every call is an A leg (sipctl is the UAS towards the caller) and a B leg
//! (sipctl is the UAC towards the callee), plus the media control of the call through the
//! recorder over NG. Sans-IO, like the layers under it.
//!
//! How the shell drives it:
//!
//! * SIP datagrams/stream messages in: [`B2bua::handle_sip`]; SIP bytes out:
//!   [`B2bua::poll_transmit`];
//! * NG datagrams from the recorder in: [`B2bua::handle_ng`]; NG datagrams out:
//!   [`B2bua::poll_ng_transmit`];
//! * agent-desktop commands in: [`B2bua::api_command`] (returns a [`Ticket`]); their outcome:
//!   [`B2bua::poll_api_result`] (start and stop finish after two re-INVITEs);
//! * call events for the processor queue: [`B2bua::poll_event`];
//! * timers: [`B2bua::poll_timeout`] / [`B2bua::handle_timeout`].
//!
//! Media modes of a call: *direct* (each party's SDP is passed to the other: media flows
//! between them) or *recorded* (each party gets the recorder's SDP from NG `offer`/`answer`,
//! so the media flows through the recorder, which records it). A recording starts from the
//! first INVITE (routing rule or DN `record = true`) or mid-call (agent request: re-INVITE B
//! then A with SDP from NG); it stops with NG `stop recording`, re-INVITEs back to direct
//! media and NG `delete` (RFC 3725-style third-party call control, flow I).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use linecord_jobs::{
    CallContext, EventJob, EventKind, EventParties, EventRecording, Party, RecordingInitiator,
};
use linecord_ng::client::{Client as NgClient, ClientConfig, ClientEvent, RequestId};
use linecord_ng::Value;

use crate::config::IpNet;
use crate::directory::Directory;
use crate::media::{self, MediaCall, Origin};
use crate::routing::{sample_from_call_id, CallFacts, Router, Target};
use crate::sip::{
    bad_request_response, generate_call_id, generate_tag, new_via, reason_phrase, CSeq,
    HeaderAccess, Incoming, Message, Method, NameAddr, ParseError, Peer, Request, Response,
    TimerConfig, TransactionLayer, Transmit, Transport, TxEvent, TxId, Uri,
};
use linecord_ratelimit::{excerpt, RateLimiter};

/// Header carrying the global call id between switches.
pub const GLOBAL_CALL_ID_HEADER: &str = "X-Linecord-Call-Id";

/// Methods sipctl handles, for `Allow` in OPTIONS, 405 and 501 answers (RFC 3261 §8.2.1).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE";

/// Request-URI schemes sipctl serves; others get 416 (RFC 3261 §8.2.2.1).
const SCHEMES: [&str; 3] = ["sip", "sips", "tel"];

/// Log lines about refused input of one [`Refusal`] kind let through per
/// [`REFUSED_LOG_WINDOW`]; the rest are counted and reported on the next line.
pub const REFUSED_LOG_BURST: u32 = 5;

/// The window of [`REFUSED_LOG_BURST`].
pub const REFUSED_LOG_WINDOW: Duration = Duration::from_secs(1);

/// At most this many bytes of peer input appear (escaped) in a log line.
pub const REFUSED_LOG_EXCERPT: usize = 200;

/// Kinds of refused input, each rate-limited on its own in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A datagram or a framed stream message that is not a valid SIP message.
    Message,
    /// A TCP byte stream that cannot be framed (the connection is closed).
    Stream,
    /// A datagram over the size limit.
    Oversized,
}

impl Refusal {
    fn index(self) -> usize {
        match self {
            Refusal::Message => 0,
            Refusal::Stream => 1,
            Refusal::Oversized => 2,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Refusal::Message => "message",
            Refusal::Stream => "stream",
            Refusal::Oversized => "oversized",
        }
    }
}

/// The clock, passed in: monotonic for timers, wall-clock milliseconds for events, routing
/// time windows and registrations.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Unix time, milliseconds.
    pub unix_ms: u64,
}

/// What the B2BUA needs to know about its own deployment.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Host (address) sipctl puts in Via and Contact.
    pub host: String,
    /// Port sipctl puts in Via and Contact.
    pub port: u16,
    /// This switch's name in events.
    pub switch: String,
    /// Peers whose `X-Linecord-Call-Id` is trusted.
    pub trusted_peers: Vec<IpNet>,
    /// NG retransmission policy towards the recorder (its timeout decides when recording
    /// has failed).
    pub ng: ClientConfig,
    /// SIP timers.
    pub timers: TimerConfig,
    /// Most SIP transactions alive at once (`sip.max-transactions`).
    pub max_transactions: usize,
    /// Version string for events.
    pub version: String,
}

/// A pending agent-desktop command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

/// What the agent desktop asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingAction {
    /// Start recording (re-INVITEs put the recorder into the media path).
    Start,
    /// Stop recording (re-INVITEs give the parties direct media back).
    Stop,
    /// Pause (nothing is written; media keeps flowing).
    Pause,
    /// Resume after a pause.
    Resume,
}

impl RecordingAction {
    /// Parses `start|stop|pause|resume`.
    pub fn parse(s: &str) -> Option<RecordingAction> {
        match s {
            "start" => Some(RecordingAction::Start),
            "stop" => Some(RecordingAction::Stop),
            "pause" => Some(RecordingAction::Pause),
            "resume" => Some(RecordingAction::Resume),
            _ => None,
        }
    }
}

/// Why an agent command was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No call with that id.
    #[error("no call {0}")]
    UnknownCall(String),
    /// The call is not in a state that allows the action.
    #[error("{0}")]
    Conflict(String),
    /// The recorder or a party refused; the call goes on.
    #[error("{0}")]
    Failed(String),
}

/// Recording state of a call, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Not recorded (media flows directly between the parties).
    Off,
    /// Being set up (NG and re-INVITEs in progress).
    Starting,
    /// Recording.
    On,
    /// Paused.
    Paused,
    /// Being stopped.
    Stopping,
}

/// One active call, as `GET /v1/calls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallInfo {
    /// sipctl's id of the call (use it in `POST /v1/calls/{id}/recording`).
    pub id: String,
    /// The global call id (`X-Linecord-Call-Id`).
    pub global_call_id: String,
    /// Caller number (From user).
    pub caller: Option<String>,
    /// Callee number (request-URI user).
    pub callee: Option<String>,
    /// The agent DN the call terminates at, if any.
    pub dn: Option<String>,
    /// `routing`, `calling`, `ringing`, `answered`, `confirmed`, `ending`.
    pub state: &'static str,
    /// Recording state.
    pub recording: RecordingState,
    /// Call-ID of the caller's leg.
    pub a_call_id: String,
    /// Call-ID of the callee's leg.
    pub b_call_id: Option<String>,
}

/// Counters for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Calls created.
    pub calls: u64,
    /// Calls answered.
    pub answered: u64,
    /// Recordings started (from the start or mid-call).
    pub recordings_started: u64,
    /// Recordings that could not start or broke.
    pub recordings_failed: u64,
    /// Calls refused with 500 because recording was critical and failed.
    pub refused_record_critical: u64,
    /// Malformed messages (answered 400/505/501 or dropped) and TCP streams closed because
    /// they could not be framed.
    pub bad_messages: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// One side of a call, as a dialog sipctl is a party of (RFC 3261 §12).
#[derive(Debug, Clone)]
struct Leg {
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    /// Our address-of-record on this leg (From as UAC, To as UAS), without tag.
    local: NameAddr,
    /// The party's, without tag.
    remote: NameAddr,
    local_cseq: u32,
    /// Contact of the party (RFC 3261 §12.1.1, §12.1.2).
    remote_target: Uri,
    /// Route set, in the order to put in Route headers.
    route_set: Vec<String>,
    /// Where in-dialog requests go.
    peer: Peer,
    /// The `o=` line of SDP sent on this leg.
    origin: Origin,
}

impl Leg {
    /// A request inside this dialog (RFC 3261 §12.2.1.1); loose routing only.
    fn request(&mut self, method: Method, me: &Me) -> Request {
        self.local_cseq += 1;
        let seq = self.local_cseq;
        self.request_with_cseq(method, seq, me)
    }

    fn request_with_cseq(&self, method: Method, seq: u32, me: &Me) -> Request {
        let mut r = Request::new(method.clone(), self.remote_target.clone());
        r.headers.push(
            "Via",
            new_via(
                self.peer.transport,
                &me.host,
                Some(me.port_for(self.peer.transport)),
            ),
        );
        r.headers.push("Max-Forwards", 70);
        for route in &self.route_set {
            r.headers.push("Route", route);
        }
        let mut from = self.local.clone();
        from.set_tag(&self.local_tag);
        r.headers.push("From", from);
        let mut to = self.remote.clone();
        if let Some(t) = &self.remote_tag {
            to.set_tag(t);
        }
        r.headers.push("To", to);
        r.headers.push("Call-ID", &self.call_id);
        r.headers.push("CSeq", CSeq { seq, method });
        r.headers.push("Contact", me.contact(self.peer.transport));
        r
    }
}

/// Where sipctl is, for Via and Contact.
#[derive(Debug, Clone)]
struct Me {
    host: String,
    port: u16,
    /// The TLS listening port (RFC 3261 §26.2), when sipctl has one.
    tls_port: Option<u16>,
}

impl Me {
    fn port_for(&self, transport: Transport) -> u16 {
        match transport {
            Transport::Tls => self.tls_port.unwrap_or(self.port),
            _ => self.port,
        }
    }

    fn contact(&self, transport: Transport) -> String {
        transport.contact("sipctl", &self.host, self.port_for(transport))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the recorder's offer reply before the INVITE goes to B.
    Routing,
    /// INVITE sent to B.
    Calling,
    /// B sent a provisional response.
    Early,
    /// B answered; waiting for the recorder's answer reply before answering A.
    Answering,
    /// 200 sent to A, waiting for A's ACK.
    Answered,
    /// Both dialogs confirmed.
    Confirmed,
    /// Being torn down.
    Ending,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Routing => "routing",
            Phase::Calling => "calling",
            Phase::Early => "ringing",
            Phase::Answering | Phase::Answered => "answered",
            Phase::Confirmed => "confirmed",
            Phase::Ending => "ending",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    Direct,
    Recorded { paused: bool },
}

/// A mid-call operation in progress (one at a time per call).
#[derive(Debug, Clone)]
enum Op {
    /// Agent start: NG offer, re-INVITE B, NG answer, re-INVITE A.
    Start { ticket: Option<Ticket> },
    /// Agent stop (or recovery to direct media): NG stop, re-INVITE B, re-INVITE A, NG delete.
    Stop {
        ticket: Option<Ticket>,
        reason: Option<String>,
    },
    /// Pause or resume: one NG request.
    PauseResume { ticket: Option<Ticket>, pause: bool },
    /// A party's re-INVITE relayed to the other party (through NG when recorded).
    Relay {
        from: Side,
        server_tx: TxId,
        /// The SDP the party offered.
        offer: Vec<u8>,
    },
    /// Another in-dialog request relayed as is (INFO, UPDATE, OPTIONS, MESSAGE...).
    Passthrough { server_tx: TxId },
    /// Blind transfer (REFER from `from`): a new leg to the target replaces `from`.
    Transfer {
        /// The transferor's side.
        from: Side,
        /// The new leg, until it answers.
        leg: Box<Leg>,
        /// Who the target is (for the event and the API).
        target: String,
        /// The target's DN, when it is one.
        dn: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NgPurpose {
    InitialOffer,
    InitialAnswer,
    StartOffer,
    StartAnswer,
    Stop,
    PauseResume,
    RelayOffer,
    RelayAnswer,
    TransferOffer,
    TransferAnswer,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxPurpose {
    /// The first INVITE to B.
    BInvite,
    /// A re-INVITE sent to `side` for the call's current op.
    Reinvite(Side),
    /// BYE (responses are not awaited).
    Bye,
    /// The relayed request of a passthrough op.
    Passthrough,
    /// The INVITE to a transfer target.
    TransferInvite,
}

struct Call {
    id: u64,
    ctx: CallContext,
    media_call: MediaCall,
    a: Leg,
    b: Option<Leg>,
    /// The caller's INVITE and its server transaction, until it has a final response.
    a_invite: Option<(TxId, Request)>,
    /// The INVITE to B and its client transaction, until it has a final response.
    b_invite: Option<(TxId, Request)>,
    phase: Phase,
    media: Media,
    /// The recorder holds a session for this call (it needs `delete` at the end).
    at_recorder: bool,
    /// Latest SDP each party sent.
    sdp_a: Vec<u8>,
    sdp_b: Vec<u8>,
    record_critical: bool,
    initiator: Option<RecordingInitiator>,
    op: Option<Op>,
    caller: Option<String>,
    callee: Option<String>,
    dn: Option<String>,
    /// CANCEL from A arrived before B sent a provisional response.
    cancel_pending: bool,
    b_provisional: bool,
    rang: bool,
    /// `recording_started` was sent (so `recording_stopped` is due at the end).
    recording_announced: bool,
}

impl Call {
    fn leg(&mut self, side: Side) -> Option<&mut Leg> {
        match side {
            Side::A => Some(&mut self.a),
            Side::B => self.b.as_mut(),
        }
    }

    fn recording_state(&self) -> RecordingState {
        match (&self.op, self.media) {
            (Some(Op::Start { .. }), _) => RecordingState::Starting,
            (Some(Op::Stop { .. }), _) => RecordingState::Stopping,
            (_, Media::Direct) => RecordingState::Off,
            (_, Media::Recorded { paused: true }) => RecordingState::Paused,
            (_, Media::Recorded { paused: false }) => RecordingState::On,
        }
    }

    fn info(&self) -> CallInfo {
        CallInfo {
            id: self.id.to_string(),
            global_call_id: self.ctx.global_call_id.clone(),
            caller: self.caller.clone(),
            callee: self.callee.clone(),
            dn: self.dn.clone(),
            state: self.phase.name(),
            recording: self.recording_state(),
            a_call_id: self.a.call_id.clone(),
            b_call_id: self.b.as_ref().map(|b| b.call_id.clone()),
        }
    }
}

/// The SIP server's core: transactions, calls, routing and media control.
pub struct B2bua {
    me: Me,
    config: CoreConfig,
    router: Router,
    directory: Directory,
    txl: TransactionLayer,
    ng: NgClient,
    calls: HashMap<u64, Call>,
    next_call: u64,
    /// (Call-ID, our tag) → call and side, for in-dialog requests.
    dialogs: HashMap<(String, String), (u64, Side)>,
    /// Server transactions of initial INVITEs → call (CANCEL matching).
    invites: HashMap<TxId, u64>,
    client_txs: HashMap<TxId, (u64, TxPurpose)>,
    /// ACKs sent for 2xx responses, by INVITE client transaction, for retransmitted 2xx.
    acks: HashMap<TxId, (Peer, Vec<u8>)>,
    ng_pending: HashMap<RequestId, (u64, NgPurpose)>,
    events: VecDeque<EventJob>,
    api_results: VecDeque<(Ticket, Result<CallInfo, ApiError>)>,
    next_ticket: u64,
    counters: Counters,
    /// Log rate limits for refused input, by [`Refusal::index`].
    refusal_logs: [RateLimiter<Instant>; 3],
    /// Random bytes for UUIDs, refreshed per use.
    rng: fastrand::Rng,
}

impl B2bua {
    /// A core with its routing rules and DN directory.
    pub fn new(config: CoreConfig, router: Router, directory: Directory) -> B2bua {
        B2bua {
            me: Me {
                host: config.host.clone(),
                port: config.port,
                tls_port: None,
            },
            txl: {
                let mut txl = TransactionLayer::new(config.timers);
                txl.set_max_transactions(config.max_transactions);
                txl
            },
            ng: NgClient::new(&format!("sipctl{}", std::process::id()), config.ng),
            config,
            router,
            directory,
            calls: HashMap::new(),
            next_call: 1,
            dialogs: HashMap::new(),
            invites: HashMap::new(),
            client_txs: HashMap::new(),
            acks: HashMap::new(),
            ng_pending: HashMap::new(),
            events: VecDeque::new(),
            api_results: VecDeque::new(),
            next_ticket: 1,
            counters: Counters::default(),
            refusal_logs: std::array::from_fn(|_| {
                RateLimiter::new(REFUSED_LOG_BURST, REFUSED_LOG_WINDOW)
            }),
            rng: fastrand::Rng::new(),
        }
    }

    /// Sets the port put in Via and Contact of messages sent over TLS (sipctl's TLS
    /// listener; without one, the port of [`CoreConfig::port`]).
    pub fn set_tls_port(&mut self, port: u16) {
        self.me.tls_port = Some(port);
    }

    /// Operator counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The active calls.
    pub fn calls(&self) -> Vec<CallInfo> {
        let mut v: Vec<CallInfo> = self.calls.values().map(Call::info).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The DN directory (registrations included).
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    // ----------------------------------------------------------------------------------
    // Shell interface

    /// Next SIP message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.txl.poll_transmit()
    }

    /// Next NG datagram to send to the recorder.
    pub fn poll_ng_transmit(&mut self) -> Option<Vec<u8>> {
        self.ng.poll_transmit()
    }

    /// Next call event for the processor queue.
    pub fn poll_event(&mut self) -> Option<EventJob> {
        self.events.pop_front()
    }

    /// Next finished agent command.
    pub fn poll_api_result(&mut self) -> Option<(Ticket, Result<CallInfo, ApiError>)> {
        self.api_results.pop_front()
    }

    /// When [`B2bua::handle_timeout`] must next run.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.txl.poll_timeout(), self.ng.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs SIP and NG timers.
    pub fn handle_timeout(&mut self, now: Now) {
        self.txl.handle_timeout(now.mono);
        self.ng.handle_timeout(now.mono);
        self.drain(now);
    }

    /// A SIP message received from `source`: one datagram (of any size; over
    /// [`MAX_MESSAGE_SIZE`](crate::sip::MAX_MESSAGE_SIZE) it is refused) or one message cut by
    /// the stream framer. Malformed input is answered statelessly where RFC 3261 allows
    /// (400, 505, 501, see [`bad_request_response`]), counted in `bad_messages` and logged
    /// rate-limited; nothing here can fail or panic on any input.
    pub fn handle_sip(&mut self, now: Now, bytes: &[u8], source: Peer) {
        match Message::parse(bytes) {
            Ok(msg) => {
                let incoming = self.txl.handle_incoming(now.mono, msg, source);
                self.on_incoming(now, incoming, source);
            }
            Err(e) => {
                self.counters.bad_messages += 1;
                let kind = if matches!(e, ParseError::TooLarge { .. }) {
                    Refusal::Oversized
                } else {
                    Refusal::Message
                };
                let mut answered = None;
                if let Some(mut resp) = bad_request_response(bytes, &e) {
                    if resp.status == 501 {
                        resp.headers.push("Allow", ALLOW);
                    }
                    answered = Some(resp.status);
                    self.txl.send_stateless(source, resp.to_bytes());
                }
                self.log_refused(now.mono, kind, source, &e, answered, bytes);
            }
        }
        self.drain(now);
    }

    /// A TCP connection from `source` had to be closed because its byte stream could not be
    /// framed (`why`); `input` is what of it is known (the offending header section or the
    /// last bytes read). Counted in `bad_messages` and logged rate-limited. The shell sends
    /// the error response itself (it must be the last thing written before the close).
    pub fn handle_stream_refused(
        &mut self,
        now: Now,
        source: Peer,
        why: &dyn fmt::Display,
        answered: Option<u16>,
        input: &[u8],
    ) {
        self.counters.bad_messages += 1;
        self.log_refused(now.mono, Refusal::Stream, source, why, answered, input);
    }

    /// One log line about refused input, if the rate limit of its kind allows: the peer,
    /// why, the status answered (if any), and an escaped excerpt of the input.
    fn log_refused(
        &mut self,
        now: Instant,
        kind: Refusal,
        source: Peer,
        why: &dyn fmt::Display,
        answered: Option<u16>,
        input: &[u8],
    ) {
        let Some(suppressed) = self.refusal_logs[kind.index()].check(now) else {
            return;
        };
        let input = excerpt(input, REFUSED_LOG_EXCERPT);
        tracing::info!(
            kind = kind.as_str(),
            peer = %source.addr,
            transport = source.transport.via_token(),
            error = %why,
            answered = ?answered,
            suppressed,
            %input,
            "refused SIP input"
        );
    }

    /// A transport failure sending a message of transaction `tx`.
    pub fn handle_transport_error(&mut self, now: Now, tx: TxId) {
        self.txl.handle_transport_error(tx);
        self.drain(now);
    }

    /// A datagram from the recorder's NG address.
    pub fn handle_ng(&mut self, now: Now, bytes: &[u8]) {
        self.ng.handle_datagram(bytes);
        self.drain(now);
    }

    /// An agent-desktop command on call `id`. Errors that are known at once come back
    /// here; otherwise the outcome arrives through [`B2bua::poll_api_result`].
    pub fn api_command(
        &mut self,
        now: Now,
        id: &str,
        action: RecordingAction,
    ) -> Result<Ticket, ApiError> {
        let key = id
            .parse::<u64>()
            .ok()
            .filter(|k| self.calls.contains_key(k))
            .ok_or_else(|| ApiError::UnknownCall(id.to_owned()))?;
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(ApiError::UnknownCall(id.to_owned()));
        };
        if call.phase != Phase::Confirmed {
            return Err(ApiError::Conflict(format!(
                "call {id} is {}, not established",
                call.phase.name()
            )));
        }
        if call.op.is_some() {
            return Err(ApiError::Conflict(format!(
                "call {id} has another change in progress"
            )));
        }
        let ng_call = call.media_call.clone();
        match (action, call.media) {
            (RecordingAction::Start, Media::Direct) => {
                call.op = Some(Op::Start {
                    ticket: Some(ticket),
                });
                call.initiator = Some(RecordingInitiator::Agent);
                let sdp = call.sdp_a.clone();
                self.ng_request(
                    now,
                    key,
                    NgPurpose::StartOffer,
                    &ng_call.offer(&sdp, true, true),
                );
            }
            (RecordingAction::Stop, Media::Recorded { .. }) => {
                call.op = Some(Op::Stop {
                    ticket: Some(ticket),
                    reason: None,
                });
                self.ng_request(now, key, NgPurpose::Stop, &ng_call.stop_recording());
            }
            (RecordingAction::Pause, Media::Recorded { paused: false }) => {
                call.op = Some(Op::PauseResume {
                    ticket: Some(ticket),
                    pause: true,
                });
                self.ng_request(now, key, NgPurpose::PauseResume, &ng_call.pause_recording());
            }
            (RecordingAction::Resume, Media::Recorded { paused: true }) => {
                call.op = Some(Op::PauseResume {
                    ticket: Some(ticket),
                    pause: false,
                });
                self.ng_request(now, key, NgPurpose::PauseResume, &ng_call.start_recording());
            }
            (action, _) => {
                return Err(ApiError::Conflict(format!(
                    "cannot {} the recording of call {id}: it is {}",
                    match action {
                        RecordingAction::Start => "start",
                        RecordingAction::Stop => "stop",
                        RecordingAction::Pause => "pause",
                        RecordingAction::Resume => "resume",
                    },
                    match call.recording_state() {
                        RecordingState::Off => "off",
                        RecordingState::On => "on",
                        RecordingState::Paused => "paused",
                        RecordingState::Starting => "starting",
                        RecordingState::Stopping => "stopping",
                    }
                )))
            }
        }
        self.drain(now);
        Ok(ticket)
    }

    // ----------------------------------------------------------------------------------
    // Plumbing

    fn ng_request(&mut self, now: Now, call: u64, purpose: NgPurpose, body: &Value) {
        let id = self.ng.request(now.mono, body);
        self.ng_pending.insert(id, (call, purpose));
    }

    /// Handles everything the layers below produced.
    fn drain(&mut self, now: Now) {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.txl.poll_event() {
                progressed = true;
                self.on_tx_event(now, ev);
            }
            while let Some(ev) = self.ng.poll_event() {
                progressed = true;
                let (id, reply) = match ev {
                    ClientEvent::Reply { id, body } => (id, Ok(body)),
                    ClientEvent::TimedOut { id } => {
                        (id, Err("the recorder did not answer".to_owned()))
                    }
                };
                if let Some((call, purpose)) = self.ng_pending.remove(&id) {
                    self.on_ng_reply(now, call, purpose, reply);
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn event(
        &mut self,
        now: Now,
        call: u64,
        kind: EventKind,
        reason: Option<String>,
        status: Option<u16>,
    ) {
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if kind.is_recording() {
            c.ctx.recording = Some(EventRecording {
                ng_call_id: c.media_call.ng_call_id.clone(),
                recording_id: None,
                recorder: None,
                initiator: c.initiator,
            });
        }
        let mut ev = c.ctx.event(
            kind,
            linecord_jobs::uuid_v7(now.unix_ms, random),
            now.unix_ms,
        );
        ev.reason = reason;
        ev.status_code = status;
        if !kind.is_recording() {
            ev.recording = None;
        }
        match kind {
            EventKind::RecordingStarted => {
                c.recording_announced = true;
                self.counters.recordings_started += 1
            }
            EventKind::RecordingStopped => c.recording_announced = false,
            EventKind::RecordingFailed => self.counters.recordings_failed += 1,
            EventKind::Answered => self.counters.answered += 1,
            _ => {}
        }
        self.events.push_back(ev);
    }

    fn send_response(&mut self, now: Now, tx: TxId, resp: Response) {
        if let Err(e) = self.txl.send_response(now.mono, tx, resp) {
            tracing::debug!(error = %e, "response not sent");
        }
    }

    fn respond(&mut self, now: Now, tx: TxId, req: &Request, status: u16, to_tag: Option<&str>) {
        let mut resp = Response::for_request(req, status, reason_phrase(status));
        match to_tag {
            Some(t) => resp.set_to_tag(t),
            // RFC 3261 §8.2.6.2: a UAS adds a To tag to every response but 100 when the
            // request had none (retransmissions get this same response from the layer).
            None if status > 100 && req.to_tag().is_none() => resp.set_to_tag(&generate_tag()),
            None => {}
        }
        self.send_response(now, tx, resp);
    }

    fn send_request(
        &mut self,
        now: Now,
        call: u64,
        purpose: TxPurpose,
        req: Request,
        dest: Peer,
    ) -> Option<TxId> {
        match self.txl.send_request(now.mono, req, dest) {
            Ok(tx) => {
                self.client_txs.insert(tx, (call, purpose));
                Some(tx)
            }
            Err(e) => {
                tracing::warn!(error = %e, "request not sent");
                None
            }
        }
    }

    /// Sends the ACK for a 2xx of client transaction `tx` and keeps it: the 2xx may be
    /// retransmitted while the transaction is in Accepted (RFC 6026), and each copy needs
    /// the same ACK again (RFC 3261 §13.2.2.4).
    fn ack(&mut self, tx: TxId, leg: &Leg, seq: u32) {
        let ack = leg.request_with_cseq(Method::Ack, seq, &self.me).to_bytes();
        self.txl.send_stateless(leg.peer, ack.clone());
        self.acks.insert(tx, (leg.peer, ack));
    }

    // ----------------------------------------------------------------------------------
    // SIP in

    fn on_incoming(&mut self, now: Now, incoming: Incoming, source: Peer) {
        match incoming {
            // RFC 3261 §18.1.2 / RFC 4475 §3.3.10: a response matching no transaction is
            // dropped (also one whose lower Via would send it on to a broadcast address).
            Incoming::Absorbed | Incoming::StrayResponse(_) => {}
            Incoming::Discarded(why) => {
                self.log_refused(now.mono, Refusal::Message, source, &why, None, &[]);
            }
            Incoming::Request { tx, request } => self.on_request(now, tx, request, source),
            Incoming::Cancel {
                tx,
                request,
                invite,
            } => self.on_cancel(now, tx, request, invite),
            Incoming::Response { tx, response } => self.on_response(now, tx, response),
            Incoming::Ack { request, .. } => self.on_ack(now, &request),
        }
    }

    /// RFC 3261 §8.2: method inspection (out of dialog), then the Request-URI scheme, then
    /// Require, then the dialog or the method's handler (which inspect the body).
    fn on_request(&mut self, now: Now, tx: TxId, req: Request, source: Peer) {
        let to_tag = req.to_tag();
        if to_tag.is_none() {
            // §8.2.1: a method sipctl does not know gets 501, one it knows but does not take
            // outside a dialog 405; both list what it takes (RFC 4475 §3.1.1.2, §3.1.1.5).
            let status = match &req.method {
                Method::Invite | Method::Register | Method::Options | Method::Bye => None,
                Method::Other(_) => Some(501),
                _ => Some(405),
            };
            if let Some(status) = status {
                let mut resp = Response::for_request(&req, status, reason_phrase(status));
                resp.headers.push("Allow", ALLOW);
                return self.send_response(now, tx, resp);
            }
        }
        // §8.2.2.1: a Request-URI scheme sipctl does not serve (RFC 4475 §3.3.2, §3.3.3).
        if !SCHEMES.contains(&req.uri.scheme.as_str()) {
            return self.respond(now, tx, &req, 416, None);
        }
        // §8.2.2.3: sipctl supports no extension a request could require (no 100rel, no
        // session timers); Proxy-Require is for proxies and ignored (RFC 4475 §3.3.5).
        let required: Vec<String> = req
            .headers
            .values("Require")
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !required.is_empty() {
            let mut resp = Response::for_request(&req, 420, reason_phrase(420));
            resp.headers.push("Unsupported", required.join(", "));
            return self.send_response(now, tx, resp);
        }
        if let Some(tag) = to_tag {
            let key = (req.call_id().unwrap_or_default().to_owned(), tag);
            match self.dialogs.get(&key).copied() {
                Some((call, side)) => self.on_in_dialog(now, call, side, tx, req),
                None => self.respond(now, tx, &req, 481, None),
            }
            return;
        }
        match req.method {
            Method::Invite => self.on_invite(now, tx, req, source),
            Method::Register => self.on_register(now, tx, &req),
            Method::Options => {
                // §11.2: Allow and Accept; RFC 4475 §3.3.11: Max-Forwards 0 only stops
                // forwarding, the endpoint answers.
                let mut resp = Response::for_request(&req, 200, "OK");
                resp.set_to_tag(&generate_tag());
                resp.headers.push("Allow", ALLOW);
                resp.headers.push("Accept", "application/sdp");
                self.send_response(now, tx, resp);
            }
            _ => self.respond(now, tx, &req, 481, None),
        }
    }

    /// What an INVITE's body and Accept header rule out before anything else is done with
    /// it (RFC 3261 §8.2.3): a body that is not SDP, or in an encoding other than identity,
    /// gets 415 with Accept / Accept-Encoding (RFC 4475 §3.3.6); an Accept that leaves no
    /// room for an SDP answer gets 406 (RFC 4475 §3.3.15). An empty body passes (it is handled
    /// by the caller: 488 for an initial INVITE, a session refresh in a dialog).
    fn invite_body_refusal(req: &Request) -> Option<Response> {
        if !req.body.is_empty() {
            let encoding = req.headers.values("Content-Encoding");
            if encoding.iter().any(|e| !e.eq_ignore_ascii_case("identity")) {
                let mut resp = Response::for_request(req, 415, reason_phrase(415));
                resp.headers.push("Accept-Encoding", "identity");
                return Some(resp);
            }
            if !req.content_type().is_some_and(is_sdp_type) {
                let mut resp = Response::for_request(req, 415, reason_phrase(415));
                resp.headers.push("Accept", "application/sdp");
                return Some(resp);
            }
        }
        let accept = req.headers.values("Accept");
        if req.headers.contains("Accept") && !accept.iter().any(|a| accepts_sdp(a)) {
            let mut resp = Response::for_request(req, 406, reason_phrase(406));
            resp.headers.push(
                "Warning",
                "399 sipctl \"the answer is application/sdp, which Accept does not list\"",
            );
            return Some(resp);
        }
        None
    }

    fn on_register(&mut self, now: Now, tx: TxId, req: &Request) {
        let Some(to) = req.to_addr() else {
            return self.respond(now, tx, req, 400, None);
        };
        // RFC 3261 §10.2 / RFC 4475 §3.3.4: the address-of-record is a SIP or SIPS URI.
        if !matches!(to.uri.scheme.as_str(), "sip" | "sips") {
            return self.respond(now, tx, req, 400, None);
        }
        let Some(number) = to.uri.user.clone() else {
            return self.respond(now, tx, req, 404, None);
        };
        let expires_header = req
            .headers
            .get("Expires")
            .and_then(|e| e.trim().parse::<u32>().ok());
        let contact = req.contact();
        let expires = contact
            .as_ref()
            .and_then(|c| {
                c.param("expires")
                    .and_then(|p| p.value.as_deref())
                    .and_then(|v| v.parse().ok())
            })
            .or(expires_header)
            .unwrap_or(3600);
        let Some(contact) = contact else {
            // A query: answer with the current binding.
            let mut resp = Response::for_request(req, 200, "OK");
            resp.set_to_tag(&generate_tag());
            if let Some(r) = self.directory.registration(&number, now.unix_ms / 1000) {
                resp.headers.push("Contact", format!("<{}>", r.contact));
            }
            return self.send_response(now, tx, resp);
        };
        match self.directory.register(
            &number,
            &contact.uri.to_string(),
            expires,
            now.unix_ms / 1000,
        ) {
            Ok(granted) => {
                let mut resp = Response::for_request(req, 200, "OK");
                resp.set_to_tag(&generate_tag());
                if granted > 0 {
                    resp.headers
                        .push("Contact", format!("<{}>;expires={granted}", contact.uri));
                }
                self.send_response(now, tx, resp);
            }
            Err(crate::directory::DirectoryError::UnknownDn(_)) => {
                self.respond(now, tx, req, 404, None)
            }
            Err(_) => self.respond(now, tx, req, 400, None),
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.config.trusted_peers.iter().any(|n| n.contains(ip))
    }

    fn on_invite(&mut self, now: Now, tx: TxId, req: Request, source: Peer) {
        // RFC 3261 §8.2.2.1-3 checks done by the parser; what a B2BUA needs on top:
        let (Some(from), Some(to), Some(call_id), Some(cseq)) = (
            req.from_addr(),
            req.to_addr(),
            req.call_id().map(str::to_owned),
            req.cseq(),
        ) else {
            return self.respond(now, tx, &req, 400, None);
        };
        if req.max_forwards() == Some(0) {
            return self.respond(now, tx, &req, 483, None);
        }
        // RFC 3261 §12.1.1 / RFC 4475 §3.4.1: an RFC 2543 caller sends no From tag; the
        // dialog then has an empty remote tag.
        let remote_tag = from.tag().map(str::to_owned);
        if let Some(resp) = Self::invite_body_refusal(&req) {
            return self.send_response(now, tx, resp);
        }
        if req.body.is_empty() {
            // Offerless INVITE: the offer would come in our 200 and the answer in A's ACK,
            // which the media control below does not do.
            let mut resp = Response::for_request(&req, 488, "Not Acceptable Here");
            resp.headers.push(
                "Warning",
                "399 sipctl \"INVITE without SDP offer is not supported\"",
            );
            return self.send_response(now, tx, resp);
        }
        let local_tag = generate_tag();
        let id = self.next_call;
        self.next_call += 1;
        self.counters.calls += 1;

        let global = req
            .headers
            .get(GLOBAL_CALL_ID_HEADER)
            .map(str::trim)
            .filter(|g| linecord_jobs::is_uuid(g) && self.trusted(source.addr.ip()))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let mut random = [0u8; 10];
                self.rng.fill(&mut random);
                linecord_jobs::uuid_v7(now.unix_ms, random)
            });
        let caller = from.uri.user.clone();
        let callee = req.uri.user.clone().or_else(|| to.uri.user.clone());
        let headers: Vec<(&str, &str)> = req
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        let ruri = req.uri.to_string();
        let facts = CallFacts {
            caller: caller.as_deref().unwrap_or(""),
            callee: callee.as_deref().unwrap_or(""),
            ruri: &ruri,
            headers: &headers,
            unix_time: now.unix_ms / 1000,
            sample: sample_from_call_id(&call_id),
        };
        let decision = self.router.decide(&facts, &self.directory);
        drop(headers);

        let remote_target = req
            .contact()
            .map(|c| c.uri)
            .unwrap_or_else(|| from.uri.clone());
        let mut a = Leg {
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            remote_tag,
            local: strip_tag(&to),
            remote: strip_tag(&from),
            local_cseq: 0,
            remote_target,
            // RFC 3261 §12.1.1: the UAS's route set is the Record-Route list in order.
            route_set: req
                .headers
                .get_all("Record-Route")
                .map(str::to_owned)
                .collect(),
            peer: source,
            origin: Origin::new(),
        };
        a.local_cseq = self.rng.u32(1..1 << 20);
        let _ = cseq;
        let party = |n: &NameAddr| Party {
            number: n.uri.user.clone(),
            uri: n.uri.to_string(),
            display_name: n.display.clone(),
        };
        let dn = match &decision.target {
            Target::Dn { dn, .. } => Some(dn.clone()),
            _ => None,
        };
        let metadata = format!(
            "caller={};callee={};dn={};switch={}{}",
            caller.as_deref().unwrap_or(""),
            callee.as_deref().unwrap_or(""),
            dn.as_deref().unwrap_or(""),
            self.config.switch,
            decision
                .rule_name
                .as_ref()
                .map(|r| format!(";rule={r}"))
                .unwrap_or_default()
        );
        let call = Call {
            id,
            ctx: CallContext {
                global_call_id: global.clone(),
                switch: self.config.switch.clone(),
                switch_call_id: id.to_string(),
                a_leg_call_id: call_id.clone(),
                b_leg_call_id: None,
                parties: EventParties {
                    caller: party(&from),
                    callee: Party {
                        number: callee.clone(),
                        uri: ruri.clone(),
                        display_name: to.display.clone(),
                    },
                    agent_dn: dn.clone(),
                },
                recording: None,
                version: self.config.version.clone(),
                next_seq: 0,
            },
            media_call: MediaCall {
                ng_call_id: global,
                metadata,
            },
            a,
            b: None,
            a_invite: Some((tx, req.clone())),
            b_invite: None,
            phase: Phase::Routing,
            media: Media::Direct,
            at_recorder: false,
            sdp_a: req.body.clone(),
            sdp_b: Vec::new(),
            record_critical: decision.record && decision.record_critical,
            initiator: decision.record_by.map(|r| match r {
                crate::routing::RecordBy::Rule => RecordingInitiator::Routing,
                crate::routing::RecordBy::Dn => RecordingInitiator::Dn,
            }),
            op: None,
            caller,
            callee,
            dn,
            cancel_pending: false,
            b_provisional: false,
            rang: false,
            recording_announced: false,
        };
        self.calls.insert(id, call);
        self.dialogs
            .insert((call_id, local_tag.clone()), (id, Side::A));
        self.invites.insert(tx, id);
        self.event(
            now,
            id,
            EventKind::Created,
            decision.rule_name.clone(),
            None,
        );

        let (target_uri, transport_hint) = match &decision.target {
            Target::Reject { status, reason } => {
                let (status, reason) = (*status, reason.clone());
                return self.fail_call(now, id, status, &reason);
            }
            Target::Dn { contact, .. } => (contact.clone(), None),
            Target::Trunk { uri, .. } => (uri.clone(), None::<Transport>),
        };
        let _ = transport_hint;
        let Some((uri, dest)) = resolve(&target_uri) else {
            return self.fail_call(now, id, 502, &format!("cannot reach {target_uri}"));
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let b_to = NameAddr::new(Uri {
            params: Vec::new(),
            ..req.uri.clone()
        });
        call.b = Some(Leg {
            call_id: generate_call_id(&self.me.host),
            local_tag: generate_tag(),
            remote_tag: None,
            local: strip_tag(&from),
            remote: b_to,
            local_cseq: self.rng.u32(1..1 << 20),
            remote_target: uri,
            route_set: Vec::new(),
            peer: dest,
            origin: Origin::new(),
        });
        if let Some(b) = &call.b {
            call.ctx.b_leg_call_id = Some(b.call_id.clone());
            self.dialogs
                .insert((b.call_id.clone(), b.local_tag.clone()), (id, Side::B));
        }
        if decision.record {
            let body = call.media_call.offer(&call.sdp_a, true, true);
            call.at_recorder = true;
            self.ng_request(now, id, NgPurpose::InitialOffer, &body);
        } else {
            let sdp = call.sdp_a.clone();
            self.invite_b(now, id, sdp);
        }
    }

    /// Sends the first INVITE to B with `sdp`.
    fn invite_b(&mut self, now: Now, id: u64, sdp: Vec<u8>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some((_, a_req)) = &call.a_invite else {
            return;
        };
        let a_req = a_req.clone();
        let Some(b) = call.b.as_mut() else { return };
        let sdp = b.origin.stamp(&sdp);
        let mut req = b.request(Method::Invite, &self.me);
        let mf = a_req.max_forwards().unwrap_or(70).saturating_sub(1);
        req.headers.set("Max-Forwards", mf);
        req.headers
            .push(GLOBAL_CALL_ID_HEADER, &call.ctx.global_call_id);
        for name in ["Allow", "Supported", "User-Agent", "Subject", "Priority"] {
            if let Some(v) = a_req.headers.get(name) {
                req.headers.push(name, v);
            }
        }
        req.set_body("application/sdp", sdp);
        let dest = b.peer;
        call.phase = Phase::Calling;
        if let Some(tx) = self.send_request(now, id, TxPurpose::BInvite, req.clone(), dest) {
            if let Some(c) = self.calls.get_mut(&id) {
                c.b_invite = Some((tx, req));
            }
        } else {
            self.fail_call(now, id, 500, "cannot send the INVITE to the callee");
        }
    }

    fn on_cancel(&mut self, now: Now, tx: TxId, req: Request, invite: Option<TxId>) {
        let call = invite.and_then(|i| self.invites.get(&i).copied());
        let Some(id) = call else {
            return self.respond(now, tx, &req, 481, None);
        };
        self.respond(now, tx, &req, 200, None);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some((itx, ireq)) = c.a_invite.take() {
            let tag = c.a.local_tag.clone();
            self.respond(now, itx, &ireq, 487, Some(&tag));
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some((btx, _)) = c.b_invite {
            if c.b_provisional {
                let _ = self.txl.send_cancel(now.mono, btx);
            } else {
                c.cancel_pending = true;
            }
        }
        self.end_call(now, id, "cancelled by the caller", Some(487), false);
    }

    fn on_ack(&mut self, now: Now, req: &Request) {
        let key = (
            req.call_id().unwrap_or_default().to_owned(),
            req.to_tag().unwrap_or_default(),
        );
        let Some((id, Side::A)) = self.dialogs.get(&key).copied() else {
            return;
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.phase == Phase::Answered {
            c.phase = Phase::Confirmed;
        }
        let _ = now;
    }

    fn on_in_dialog(&mut self, now: Now, id: u64, side: Side, tx: TxId, req: Request) {
        let Some(c) = self.calls.get_mut(&id) else {
            return self.respond(now, tx, &req, 481, None);
        };
        match req.method {
            Method::Bye => {
                self.respond(now, tx, &req, 200, None);
                let who = if side == Side::A { "caller" } else { "callee" };
                self.end_call(now, id, &format!("{who} hung up"), None, true);
            }
            Method::Invite => {
                if c.op.is_some() || c.phase != Phase::Confirmed {
                    // RFC 3261 §14.2: a re-INVITE while one of ours is pending.
                    let mut resp = Response::for_request(&req, 491, "Request Pending");
                    resp.headers.push("Retry-After", 2);
                    return self.send_response(now, tx, resp);
                }
                if let Some(resp) = Self::invite_body_refusal(&req) {
                    return self.send_response(now, tx, resp);
                }
                if let Some(contact) = req.contact() {
                    if let Some(leg) = c.leg(side) {
                        leg.remote_target = contact.uri;
                    }
                }
                if req.body.is_empty() {
                    // Offerless re-INVITE (session refresh): answer with what this party
                    // last got.
                    return self.answer_refresh(now, id, side, tx, &req);
                }
                c.op = Some(Op::Relay {
                    from: side,
                    server_tx: tx,
                    offer: req.body.clone(),
                });
                match c.media {
                    Media::Recorded { .. } => {
                        let body = c.media_call.offer(&req.body, side == Side::A, false);
                        self.ng_request(now, id, NgPurpose::RelayOffer, &body);
                    }
                    Media::Direct => {
                        let sdp = req.body.clone();
                        self.reinvite(now, id, side.other(), sdp);
                    }
                }
            }
            Method::Ack => {}
            Method::Refer => self.on_refer(now, id, side, tx, req),
            _ => {
                // INFO, UPDATE, OPTIONS, MESSAGE, NOTIFY...: relayed as they are.
                if c.op.is_some() || c.b.is_none() {
                    let mut resp = Response::for_request(&req, 491, "Request Pending");
                    resp.headers.push("Retry-After", 1);
                    return self.send_response(now, tx, resp);
                }
                let Some(other) = c.leg(side.other()) else {
                    return;
                };
                let mut out = other.request(req.method.clone(), &self.me);
                if let Some(ct) = req.content_type() {
                    out.set_body(ct, req.body.clone());
                }
                let dest = other.peer;
                c.op = Some(Op::Passthrough { server_tx: tx });
                if self
                    .send_request(now, id, TxPurpose::Passthrough, out, dest)
                    .is_none()
                {
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.op = None;
                    }
                    self.respond(now, tx, &req, 500, None);
                }
            }
        }
    }

    fn answer_refresh(&mut self, now: Now, id: u64, side: Side, tx: TxId, req: &Request) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let last = match side {
            Side::A => c.sdp_b.clone(),
            Side::B => c.sdp_a.clone(),
        };
        let Some(leg) = c.leg(side) else { return };
        let sdp = leg.origin.stamp(&last);
        let mut resp = Response::for_request(req, 200, "OK");
        resp.headers
            .push("Contact", self.me.contact(leg.peer.transport));
        resp.set_body("application/sdp", sdp);
        self.send_response(now, tx, resp);
    }

    /// Sends a re-INVITE with `sdp` to `side` for the call's current op.
    fn reinvite(&mut self, now: Now, id: u64, side: Side, sdp: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(leg) = c.leg(side) else { return };
        let sdp = leg.origin.stamp(&sdp);
        let mut req = leg.request(Method::Invite, &self.me);
        req.set_body("application/sdp", sdp);
        let dest = leg.peer;
        if self
            .send_request(now, id, TxPurpose::Reinvite(side), req, dest)
            .is_none()
        {
            self.op_failed(
                now,
                id,
                format!("cannot send a re-INVITE to the {}", party_name(side)),
                None,
            );
        }
    }

    fn on_response(&mut self, now: Now, tx: TxId, resp: Response) {
        if resp.is_success() {
            if let Some((peer, ack)) = self.acks.get(&tx) {
                // A retransmitted 2xx: our ACK was lost.
                self.txl.send_stateless(*peer, ack.clone());
                return;
            }
        }
        let Some((id, purpose)) = self.client_txs.get(&tx).copied() else {
            return;
        };
        if resp.is_final() {
            self.client_txs.remove(&tx);
        }
        match purpose {
            TxPurpose::BInvite => self.on_b_invite_response(now, id, tx, resp),
            TxPurpose::Reinvite(side) => {
                if resp.is_provisional() {
                    return;
                }
                if resp.is_success() {
                    // ACK the 2xx ourselves (RFC 3261 §13.2.2.4).
                    let seq = resp.cseq().map(|c| c.seq).unwrap_or(0);
                    if let Some(c) = self.calls.get_mut(&id) {
                        if let Some(leg) = c.leg(side) {
                            if let Some(contact) = resp.contact() {
                                leg.remote_target = contact.uri;
                            }
                            let leg = leg.clone();
                            self.ack(tx, &leg, seq);
                        }
                    }
                    self.on_reinvite_answered(now, id, side, resp.body);
                } else {
                    let why = format!(
                        "the {} answered the re-INVITE with {} {}",
                        party_name(side),
                        resp.status,
                        peer_text(&resp.reason)
                    );
                    self.on_reinvite_failed(now, id, side, resp.status, why);
                }
            }
            TxPurpose::Passthrough => {
                if resp.is_provisional() {
                    return;
                }
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if let Some(Op::Passthrough { server_tx }) = c.op.take() {
                    if let Some(req) = self.txl.request(server_tx).cloned() {
                        let mut out = Response::for_request(&req, resp.status, &resp.reason);
                        if let Some(ct) = resp.content_type() {
                            out.set_body(ct, resp.body.clone());
                        }
                        self.send_response(now, server_tx, out);
                    }
                }
            }
            TxPurpose::TransferInvite => self.on_transfer_response(now, id, tx, resp),
            TxPurpose::Bye => {}
        }
    }

    fn on_b_invite_response(&mut self, now: Now, id: u64, tx: TxId, resp: Response) {
        let Some(c) = self.calls.get_mut(&id) else {
            // The call is gone (cancelled): a late 2xx still needs ACK and BYE.
            return;
        };
        if resp.status == 100 {
            return;
        }
        if resp.is_provisional() {
            c.b_provisional = true;
            if c.cancel_pending {
                c.cancel_pending = false;
                let _ = self.txl.send_cancel(now.mono, tx);
                return;
            }
            if let (Some(b), Some(tag)) = (c.b.as_mut(), resp.to_tag()) {
                b.remote_tag = Some(tag);
            }
            if c.phase == Phase::Calling {
                c.phase = Phase::Early;
            }
            if let Some((atx, areq)) = c.a_invite.clone() {
                let mut out = Response::for_request(&areq, resp.status, &resp.reason);
                out.set_to_tag(&c.a.local_tag);
                out.headers
                    .push("Contact", self.me.contact(c.a.peer.transport));
                // Early media is relayed only when the media is direct: with the recorder in
                // the path the callee's early SDP would need its own NG answer.
                if c.media == Media::Direct && !resp.body.is_empty() {
                    let sdp = c.a.origin.stamp(&resp.body);
                    out.set_body("application/sdp", sdp);
                }
                let first_ring = !c.rang;
                c.rang = true;
                self.send_response(now, atx, out);
                if first_ring {
                    self.event(now, id, EventKind::Ringing, None, Some(resp.status));
                }
            }
            return;
        }
        c.b_invite = None;
        if resp.is_success() {
            let Some(b) = c.b.as_mut() else { return };
            b.remote_tag = resp.to_tag();
            if let Some(contact) = resp.contact() {
                b.remote_target = contact.uri;
            }
            // RFC 3261 §12.1.2: the UAC's route set is the Record-Route list reversed.
            b.route_set = resp
                .headers
                .get_all("Record-Route")
                .map(str::to_owned)
                .collect();
            b.route_set.reverse();
            let seq = resp.cseq().map(|c| c.seq).unwrap_or(b.local_cseq);
            let leg = b.clone();
            self.ack(tx, &leg, seq);
            let Some(c) = self.calls.get_mut(&id) else {
                return;
            };
            if c.phase == Phase::Ending || c.a_invite.is_none() {
                // Cancelled meanwhile: hang up the callee at once.
                let mut b = leg;
                let bye = b.request(Method::Bye, &self.me);
                self.send_request(now, id, TxPurpose::Bye, bye, b.peer);
                return;
            }
            c.sdp_b = resp.body.clone();
            c.phase = Phase::Answering;
            if c.at_recorder {
                let body = c.media_call.answer(&resp.body, true);
                self.ng_request(now, id, NgPurpose::InitialAnswer, &body);
            } else {
                let sdp = resp.body;
                self.answer_a(now, id, sdp);
            }
            return;
        }
        // A final failure from the callee goes back to the caller as it is.
        let reason = format!(
            "callee answered {} {}",
            resp.status,
            peer_text(&resp.reason)
        );
        if let Some((atx, areq)) = c.a_invite.take() {
            let mut out = Response::for_request(&areq, resp.status, &resp.reason);
            out.set_to_tag(&c.a.local_tag);
            self.send_response(now, atx, out);
        }
        self.end_call(now, id, &reason, Some(resp.status), false);
    }

    /// Answers A's INVITE with `sdp` (B's, or the recorder's).
    fn answer_a(&mut self, now: Now, id: u64, sdp: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some((atx, areq)) = c.a_invite.take() else {
            return;
        };
        let sdp = c.a.origin.stamp(&sdp);
        let mut out = Response::for_request(&areq, 200, "OK");
        out.set_to_tag(&c.a.local_tag);
        out.headers
            .push("Contact", self.me.contact(c.a.peer.transport));
        out.set_body("application/sdp", sdp);
        c.phase = Phase::Answered;
        let recorded = matches!(c.media, Media::Recorded { .. });
        self.invites.remove(&atx);
        self.send_response(now, atx, out);
        self.event(now, id, EventKind::Answered, None, Some(200));
        if recorded {
            self.event(now, id, EventKind::RecordingStarted, None, None);
        }
    }

    // ----------------------------------------------------------------------------------
    // NG replies

    fn on_ng_reply(&mut self, now: Now, id: u64, purpose: NgPurpose, reply: Result<Value, String>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let sdp = reply
            .as_ref()
            .map_err(Clone::clone)
            .and_then(media::reply_sdp);
        let ok = reply
            .as_ref()
            .map_err(Clone::clone)
            .and_then(media::reply_ok);
        match purpose {
            NgPurpose::InitialOffer => match sdp {
                Ok(sdp) => {
                    c.media = Media::Recorded { paused: false };
                    self.invite_b(now, id, sdp);
                }
                Err(why) => {
                    c.at_recorder = false;
                    let critical = c.record_critical;
                    let why = format!("recorder: {why}");
                    self.event(now, id, EventKind::RecordingFailed, Some(why.clone()), None);
                    if critical {
                        self.counters.refused_record_critical += 1;
                        self.fail_call(
                            now,
                            id,
                            500,
                            &format!("recording is critical and failed ({why})"),
                        );
                    } else {
                        let sdp = self
                            .calls
                            .get(&id)
                            .map(|c| c.sdp_a.clone())
                            .unwrap_or_default();
                        self.invite_b(now, id, sdp);
                    }
                }
            },
            NgPurpose::InitialAnswer => match sdp {
                Ok(sdp) => self.answer_a(now, id, sdp),
                Err(why) => {
                    // B already sends its media to the recorder: answer A with B's own SDP and
                    // give B direct media back with a re-INVITE.
                    let why = format!("recorder: {why}");
                    c.media = Media::Direct;
                    c.at_recorder = false;
                    let critical = c.record_critical;
                    let sdp_b = c.sdp_b.clone();
                    self.event(now, id, EventKind::RecordingFailed, Some(why.clone()), None);
                    if critical {
                        self.counters.refused_record_critical += 1;
                        self.fail_call(now, id, 500, &why);
                        return;
                    }
                    self.answer_a(now, id, sdp_b);
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.op = Some(Op::Stop {
                            ticket: None,
                            reason: Some(why),
                        });
                        let sdp_a = c.sdp_a.clone();
                        self.reinvite(now, id, Side::B, sdp_a);
                    }
                }
            },
            NgPurpose::StartOffer => match sdp {
                Ok(sdp) => {
                    c.at_recorder = true;
                    self.reinvite(now, id, Side::B, sdp);
                }
                Err(why) => self.op_failed(now, id, format!("recorder: {why}"), None),
            },
            NgPurpose::StartAnswer => match sdp {
                Ok(sdp) => self.reinvite(now, id, Side::A, sdp),
                Err(why) => {
                    // B already sends to the recorder: move it back.
                    let why = format!("recorder: {why}");
                    c.op = Some(Op::Stop {
                        ticket: take_ticket(&mut c.op),
                        reason: Some(why),
                    });
                    let sdp_a = c.sdp_a.clone();
                    self.reinvite(now, id, Side::B, sdp_a);
                }
            },
            NgPurpose::Stop => {
                if let Err(why) = ok {
                    tracing::warn!(call = id, %why, "stop recording refused; moving media back anyway");
                }
                let sdp_a = c.sdp_a.clone();
                self.reinvite(now, id, Side::B, sdp_a);
            }
            NgPurpose::PauseResume => {
                let Some(Op::PauseResume { ticket, pause }) = c.op.take() else {
                    return;
                };
                match ok {
                    Ok(()) => {
                        c.media = Media::Recorded { paused: pause };
                        let info = c.info();
                        let kind = if pause {
                            EventKind::RecordingPaused
                        } else {
                            EventKind::RecordingResumed
                        };
                        self.event(now, id, kind, None, None);
                        if let Some(t) = ticket {
                            self.api_results.push_back((t, Ok(info)));
                        }
                    }
                    Err(why) => {
                        if let Some(t) = ticket {
                            self.api_results
                                .push_back((t, Err(ApiError::Failed(format!("recorder: {why}")))));
                        }
                    }
                }
            }
            NgPurpose::RelayOffer => match sdp {
                Ok(sdp) => {
                    let Some(Op::Relay { from, .. }) = c.op else {
                        return;
                    };
                    self.reinvite(now, id, from.other(), sdp);
                }
                Err(why) => self.relay_failed(now, id, 500, &format!("recorder: {why}")),
            },
            NgPurpose::RelayAnswer => match sdp {
                Ok(sdp) => self.relay_done(now, id, sdp),
                Err(why) => self.relay_failed(now, id, 500, &format!("recorder: {why}")),
            },
            NgPurpose::TransferOffer => match sdp {
                Ok(sdp) => self.invite_transfer_target(now, id, sdp),
                Err(why) => self.transfer_failed(now, id, 500, &format!("recorder: {why}")),
            },
            NgPurpose::TransferAnswer => match sdp {
                // The recorder now relays between the party that stayed and the new one; the
                // party that stayed keeps sending to the same recorder port.
                Ok(_) => self.transfer_done(now, id),
                Err(why) => self.transfer_failed(now, id, 500, &format!("recorder: {why}")),
            },
            NgPurpose::Delete => {}
        }
    }

    // ----------------------------------------------------------------------------------
    // Mid-call operations

    fn on_reinvite_answered(&mut self, now: Now, id: u64, side: Side, sdp: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        match c.op.clone() {
            Some(Op::Start { .. }) => match side {
                Side::B => {
                    c.sdp_b = sdp.clone();
                    let body = c.media_call.answer(&sdp, true);
                    self.ng_request(now, id, NgPurpose::StartAnswer, &body);
                }
                Side::A => {
                    if !sdp.is_empty() {
                        c.sdp_a = sdp;
                    }
                    c.media = Media::Recorded { paused: false };
                    let ticket = take_ticket(&mut c.op);
                    c.op = None;
                    let info = c.info();
                    self.event(now, id, EventKind::RecordingStarted, None, None);
                    if let Some(t) = ticket {
                        self.api_results.push_back((t, Ok(info)));
                    }
                }
            },
            Some(Op::Stop { reason, .. }) => match side {
                Side::B => {
                    if !sdp.is_empty() {
                        c.sdp_b = sdp.clone();
                    }
                    let sdp_b = c.sdp_b.clone();
                    self.reinvite(now, id, Side::A, sdp_b);
                }
                Side::A => {
                    if !sdp.is_empty() {
                        c.sdp_a = sdp;
                    }
                    let was_recorded =
                        matches!(c.media, Media::Recorded { .. }) || reason.is_none();
                    c.media = Media::Direct;
                    let ticket = take_ticket(&mut c.op);
                    c.op = None;
                    let info = c.info();
                    if c.at_recorder {
                        c.at_recorder = false;
                        let body = c.media_call.delete();
                        self.ng_request(now, id, NgPurpose::Delete, &body);
                    }
                    match reason {
                        // A start that failed half-way: the media is direct again.
                        Some(why) => {
                            self.event(
                                now,
                                id,
                                EventKind::RecordingFailed,
                                Some(why.clone()),
                                None,
                            );
                            if let Some(t) = ticket {
                                self.api_results.push_back((t, Err(ApiError::Failed(why))));
                            }
                        }
                        None => {
                            if was_recorded {
                                self.event(
                                    now,
                                    id,
                                    EventKind::RecordingStopped,
                                    Some("agent request".into()),
                                    None,
                                );
                            }
                            if let Some(t) = ticket {
                                self.api_results.push_back((t, Ok(info)));
                            }
                        }
                    }
                }
            },
            Some(Op::Relay { .. }) => {
                // The other party answered the relayed offer.
                let answerer = side;
                match answerer {
                    Side::A => c.sdp_a = sdp.clone(),
                    Side::B => c.sdp_b = sdp.clone(),
                }
                if matches!(c.media, Media::Recorded { .. }) {
                    let Some(Op::Relay { from, .. }) = c.op else {
                        return;
                    };
                    let body = c.media_call.answer(&sdp, from == Side::A);
                    self.ng_request(now, id, NgPurpose::RelayAnswer, &body);
                } else {
                    self.relay_done(now, id, sdp);
                }
            }
            _ => {}
        }
    }

    fn on_reinvite_failed(&mut self, now: Now, id: u64, side: Side, status: u16, why: String) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let why = if status == 491 {
            format!("{why} (glare)")
        } else {
            why
        };
        match c.op.clone() {
            Some(Op::Start { .. }) => match side {
                // B refused: nothing moved; the recorder session goes.
                Side::B => self.op_failed(now, id, why, None),
                // A refused: B already sends to the recorder; move B back.
                Side::A => {
                    c.op = Some(Op::Stop {
                        ticket: take_ticket(&mut c.op),
                        reason: Some(why),
                    });
                    let sdp_a = c.sdp_a.clone();
                    self.reinvite(now, id, Side::B, sdp_a);
                }
            },
            Some(Op::Stop { ticket, reason }) => {
                // The media stays where it is (through the recorder, which keeps relaying but
                // has stopped recording); the call goes on.
                c.op = None;
                let why = match reason {
                    Some(r) => format!("{r}; then {why}"),
                    None => why,
                };
                self.event(now, id, EventKind::RecordingFailed, Some(why.clone()), None);
                if let Some(t) = ticket {
                    self.api_results.push_back((t, Err(ApiError::Failed(why))));
                }
            }
            Some(Op::Relay { .. }) => self.relay_failed(now, id, status, &why),
            _ => {}
        }
    }

    /// A mid-call op failed before any party's media moved.
    fn op_failed(&mut self, now: Now, id: u64, why: String, status: Option<u16>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let ticket = take_ticket(&mut c.op);
        let was_start = matches!(c.op, Some(Op::Start { .. }));
        c.op = None;
        if was_start && c.at_recorder {
            c.at_recorder = false;
            let body = c.media_call.delete();
            self.ng_request(now, id, NgPurpose::Delete, &body);
        }
        self.event(
            now,
            id,
            EventKind::RecordingFailed,
            Some(why.clone()),
            status,
        );
        if let Some(t) = ticket {
            self.api_results.push_back((t, Err(ApiError::Failed(why))));
        }
    }

    fn relay_done(&mut self, now: Now, id: u64, sdp: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Relay {
            from,
            server_tx,
            offer,
        }) = c.op.take()
        else {
            return;
        };
        // (An empty offer: sipctl's own re-INVITE after a transfer; nothing to remember.)
        if !offer.is_empty() {
            match from {
                Side::A => c.sdp_a = offer,
                Side::B => c.sdp_b = offer,
            }
        }
        let Some(leg) = c.leg(from) else { return };
        let sdp = leg.origin.stamp(&sdp);
        let transport = leg.peer.transport;
        if let Some(req) = self.txl.request(server_tx).cloned() {
            let mut resp = Response::for_request(&req, 200, "OK");
            resp.headers.push("Contact", self.me.contact(transport));
            resp.set_body("application/sdp", sdp);
            self.send_response(now, server_tx, resp);
        }
    }

    fn relay_failed(&mut self, now: Now, id: u64, status: u16, why: &str) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Relay { server_tx, .. }) = c.op.take() else {
            return;
        };
        tracing::info!(call = id, why, "re-INVITE relay failed");
        let status = if (400..700).contains(&status) {
            status
        } else {
            500
        };
        if let Some(req) = self.txl.request(server_tx).cloned() {
            self.respond(now, server_tx, &req, status, None);
        }
    }

    // ----------------------------------------------------------------------------------
    // Blind transfer (RFC 3515 REFER, RFC 5589 flow): the transferor's leg is replaced by a
    // new leg to the Refer-To target; the other party stays. With the recorder in the path
    // the new party is put in the transferor's place in the same NG call (the recording goes
    // on); with direct media the other party is re-INVITEd towards the new one.

    fn on_refer(&mut self, now: Now, id: u64, side: Side, tx: TxId, req: Request) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.op.is_some() || c.phase != Phase::Confirmed {
            let mut resp = Response::for_request(&req, 491, "Request Pending");
            resp.headers.push("Retry-After", 1);
            return self.send_response(now, tx, resp);
        }
        let Some(refer_to) = req
            .headers
            .get("Refer-To")
            .and_then(|v| NameAddr::parse(v.trim()).ok())
        else {
            return self.respond(now, tx, &req, 400, None);
        };
        let target_user = refer_to.uri.user.clone().unwrap_or_default();
        let ruri = refer_to.uri.to_string();
        let headers: Vec<(&str, &str)> = Vec::new();
        let facts = CallFacts {
            caller: c.caller.as_deref().unwrap_or(""),
            callee: &target_user,
            ruri: &ruri,
            headers: &headers,
            unix_time: now.unix_ms / 1000,
            sample: sample_from_call_id(&c.a.call_id),
        };
        let decision = self.router.decide(&facts, &self.directory);
        let (contact, dn) = match &decision.target {
            Target::Dn { dn, contact } => (contact.clone(), Some(dn.clone())),
            Target::Trunk { uri, .. } => (uri.clone(), None),
            Target::Reject { status, .. } => {
                let status = *status;
                return self.respond(now, tx, &req, status, None);
            }
        };
        let Some((uri, dest)) = resolve(&contact) else {
            return self.respond(now, tx, &req, 502, None);
        };
        // 202: the transfer is under way; its outcome comes in NOTIFYs (RFC 3515 §2.4.4).
        self.respond(now, tx, &req, 202, None);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let stays = side.other();
        let Some(stayer) = c.leg(stays).cloned() else {
            return;
        };
        let leg = Leg {
            call_id: generate_call_id(&self.me.host),
            local_tag: generate_tag(),
            remote_tag: None,
            // The new party sees the party that stays as the caller.
            local: stayer.remote.clone(),
            remote: NameAddr::new(Uri {
                params: Vec::new(),
                ..uri.clone()
            }),
            local_cseq: self.rng.u32(1..1 << 20),
            remote_target: uri,
            route_set: Vec::new(),
            peer: dest,
            origin: Origin::new(),
        };
        c.op = Some(Op::Transfer {
            from: side,
            leg: Box::new(leg),
            target: target_user,
            dn,
        });
        self.notify_transferor(now, id, side, "SIP/2.0 100 Trying", false);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let stayer_sdp = match stays {
            Side::A => c.sdp_a.clone(),
            Side::B => c.sdp_b.clone(),
        };
        if c.at_recorder && matches!(c.media, Media::Recorded { .. }) {
            let body = c.media_call.offer(&stayer_sdp, stays == Side::A, false);
            self.ng_request(now, id, NgPurpose::TransferOffer, &body);
        } else {
            self.invite_transfer_target(now, id, stayer_sdp);
        }
    }

    /// NOTIFY of the transfer's progress to the transferor (`message/sipfrag`).
    fn notify_transferor(&mut self, now: Now, id: u64, side: Side, frag: &str, last: bool) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(leg) = c.leg(side) else { return };
        let mut n = leg.request(Method::Notify, &self.me);
        n.headers.push("Event", "refer");
        n.headers.push(
            "Subscription-State",
            if last {
                "terminated;reason=noresource"
            } else {
                "active;expires=60"
            },
        );
        n.set_body("message/sipfrag", format!("{frag}\r\n").into_bytes());
        let dest = leg.peer;
        self.send_request(now, id, TxPurpose::Bye, n, dest);
    }

    fn invite_transfer_target(&mut self, now: Now, id: u64, sdp: Vec<u8>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let global = c.ctx.global_call_id.clone();
        let Some(Op::Transfer { leg, .. }) = c.op.as_mut() else {
            return;
        };
        let sdp = leg.origin.stamp(&sdp);
        let mut req = leg.request(Method::Invite, &self.me);
        req.headers.push(GLOBAL_CALL_ID_HEADER, &global);
        req.set_body("application/sdp", sdp);
        let dest = leg.peer;
        if self
            .send_request(now, id, TxPurpose::TransferInvite, req, dest)
            .is_none()
        {
            self.transfer_failed(
                now,
                id,
                500,
                "cannot send the INVITE to the transfer target",
            );
        }
    }

    fn on_transfer_response(&mut self, now: Now, id: u64, tx: TxId, resp: Response) {
        if resp.is_provisional() {
            return;
        }
        if !resp.is_success() {
            let why = format!(
                "the transfer target answered {} {}",
                resp.status,
                peer_text(&resp.reason)
            );
            return self.transfer_failed(now, id, resp.status, &why);
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Transfer { leg, from, .. }) = c.op.as_mut() else {
            return;
        };
        leg.remote_tag = resp.to_tag();
        if let Some(contact) = resp.contact() {
            leg.remote_target = contact.uri;
        }
        leg.route_set = resp
            .headers
            .get_all("Record-Route")
            .map(str::to_owned)
            .collect();
        leg.route_set.reverse();
        let seq = resp.cseq().map(|c| c.seq).unwrap_or(leg.local_cseq);
        let from = *from;
        let new_leg = (**leg).clone();
        self.ack(tx, &new_leg, seq);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        // The new party takes the transferor's place.
        match from {
            Side::A => c.sdp_a = resp.body.clone(),
            Side::B => c.sdp_b = resp.body.clone(),
        }
        if c.at_recorder && matches!(c.media, Media::Recorded { .. }) {
            let body = c.media_call.answer(&resp.body, from.other() == Side::A);
            self.ng_request(now, id, NgPurpose::TransferAnswer, &body);
        } else {
            self.transfer_done(now, id);
            // Direct media: the party that stays is sent towards the new one.
            let sdp = resp.body;
            if let Some(c) = self.calls.get_mut(&id) {
                c.op = Some(Op::Relay {
                    from,
                    server_tx: TxId(u64::MAX),
                    offer: Vec::new(),
                });
            }
            self.reinvite(now, id, from.other(), sdp);
        }
    }

    /// Swaps the new leg in, hangs up the transferor, writes the event.
    fn transfer_done(&mut self, now: Now, id: u64) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Transfer {
            from,
            leg,
            target,
            dn,
        }) = c.op.take()
        else {
            return;
        };
        self.notify_transferor(now, id, from, "SIP/2.0 200 OK", true);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let old = match from {
            Side::A => std::mem::replace(&mut c.a, *leg),
            Side::B => match c.b.replace(*leg) {
                Some(old) => old,
                None => return,
            },
        };
        let new_key = match from {
            Side::A => (c.a.call_id.clone(), c.a.local_tag.clone()),
            Side::B => match &c.b {
                Some(b) => (b.call_id.clone(), b.local_tag.clone()),
                None => return,
            },
        };
        if from == Side::B {
            c.callee = Some(target.clone());
            c.dn = dn.clone();
            c.ctx.b_leg_call_id = Some(new_key.0.clone());
        } else {
            c.caller = Some(target.clone());
        }
        let party = Party {
            number: Some(target.clone()),
            uri: c
                .leg(from)
                .map(|l| l.remote_target.to_string())
                .unwrap_or_default(),
            display_name: None,
        };
        self.dialogs
            .remove(&(old.call_id.clone(), old.local_tag.clone()));
        self.dialogs.insert(new_key, (id, from));
        let mut old = old;
        let bye = old.request(Method::Bye, &self.me);
        self.send_request(now, id, TxPurpose::Bye, bye, old.peer);
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let mut ev = c.ctx.event(
            EventKind::Transferred,
            linecord_jobs::uuid_v7(now.unix_ms, random),
            now.unix_ms,
        );
        ev.transfer_target = Some(party);
        ev.reason = Some(format!(
            "blind transfer by the {} to {target}",
            party_name(from)
        ));
        ev.recording = None;
        if let Some(d) = dn {
            ev.parties.agent_dn = Some(d);
        }
        self.events.push_back(ev);
    }

    fn transfer_failed(&mut self, now: Now, id: u64, status: u16, why: &str) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Op::Transfer { from, .. }) = c.op.take() else {
            return;
        };
        tracing::info!(call = id, why, "transfer failed; the call goes on");
        let frag = format!("SIP/2.0 {status} {}", reason_phrase(status));
        self.notify_transferor(now, id, from, &frag, true);
    }

    // ----------------------------------------------------------------------------------
    // Endings

    /// Refuses the caller's INVITE with `status` and ends the call.
    fn fail_call(&mut self, now: Now, id: u64, status: u16, why: &str) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let a_invite = c.a_invite.take();
        let b_invite = c.b_invite.take();
        let tag = c.a.local_tag.clone();
        if let Some((tx, req)) = a_invite {
            let mut resp = Response::for_request(&req, status, reason_phrase(status));
            resp.set_to_tag(&tag);
            resp.headers.push(
                "Warning",
                format!("399 sipctl \"{}\"", why.replace('"', "'")),
            );
            self.send_response(now, tx, resp);
        }
        // A B leg still being called is cancelled.
        if let Some((btx, _)) = b_invite {
            let _ = self.txl.send_cancel(now.mono, btx);
        }
        self.end_call(now, id, why, Some(status), false);
    }

    /// Ends a call: BYE to whichever confirmed leg did not hang up (when `bye_other`),
    /// NG delete, `recording_stopped` and `released` events, and forgets the call.
    fn end_call(&mut self, now: Now, id: u64, why: &str, status: Option<u16>, hangup: bool) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.phase == Phase::Ending {
            return;
        }
        let was_confirmed = matches!(
            c.phase,
            Phase::Confirmed | Phase::Answered | Phase::Answering
        );
        c.phase = Phase::Ending;
        // Pending agent commands fail.
        if let Some(t) = take_ticket(&mut c.op) {
            self.api_results
                .push_back((t, Err(ApiError::Failed(format!("the call ended: {why}")))));
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.op = None;
        if hangup && was_confirmed {
            // BYE the leg that did not hang up. A BYE from A: BYE B; from B: BYE A. Both
            // legs get one if we are the ones ending it (timeouts).
            let a_hung_up = why.starts_with("caller");
            let b_hung_up = why.starts_with("callee");
            let mut byes = Vec::new();
            if !a_hung_up {
                let mut a = c.a.clone();
                byes.push((a.request(Method::Bye, &self.me), a.peer));
            }
            if !b_hung_up {
                if let Some(b) = c.b.as_mut() {
                    let bye = b.request(Method::Bye, &self.me);
                    byes.push((bye, b.peer));
                }
            }
            for (bye, peer) in byes {
                self.send_request(now, id, TxPurpose::Bye, bye, peer);
            }
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let recorded = c.recording_announced;
        if c.at_recorder {
            c.at_recorder = false;
            let body = c.media_call.delete();
            self.ng_request(now, id, NgPurpose::Delete, &body);
        }
        if recorded {
            self.event(
                now,
                id,
                EventKind::RecordingStopped,
                Some(why.to_owned()),
                None,
            );
        }
        self.event(now, id, EventKind::Released, Some(why.to_owned()), status);
        self.forget(id);
    }

    fn forget(&mut self, id: u64) {
        if let Some(c) = self.calls.remove(&id) {
            self.dialogs
                .remove(&(c.a.call_id.clone(), c.a.local_tag.clone()));
            if let Some(b) = &c.b {
                self.dialogs
                    .remove(&(b.call_id.clone(), b.local_tag.clone()));
            }
            self.invites.retain(|_, v| *v != id);
            // Client transactions keep running (BYE, CANCEL); their responses find no call.
            self.client_txs
                .retain(|_, (v, p)| *v != id || *p == TxPurpose::BInvite);
        }
    }

    fn on_tx_event(&mut self, now: Now, ev: TxEvent) {
        let (tx, why) = match ev {
            TxEvent::Timeout { tx } => (tx, "timeout"),
            TxEvent::TransportError { tx } => (tx, "transport error"),
            TxEvent::Terminated { tx } => {
                self.client_txs.remove(&tx);
                self.acks.remove(&tx);
                return;
            }
        };
        if let Some(id) = self.invites.get(&tx).copied() {
            // The caller never ACKed our 2xx (RFC 3261 §13.3.1.4): end the call.
            return self.end_call(
                now,
                id,
                &format!("no ACK from the caller ({why})"),
                Some(408),
                true,
            );
        }
        let Some((id, purpose)) = self.client_txs.remove(&tx) else {
            return;
        };
        match purpose {
            TxPurpose::BInvite => {
                let status = if why == "timeout" { 408 } else { 503 };
                self.fail_call(
                    now,
                    id,
                    status,
                    &format!("the callee did not answer ({why})"),
                );
            }
            TxPurpose::Reinvite(side) => {
                let status = if why == "timeout" { 408 } else { 503 };
                self.on_reinvite_failed(
                    now,
                    id,
                    side,
                    status,
                    format!("re-INVITE to the {}: {why}", party_name(side)),
                );
            }
            TxPurpose::TransferInvite => {
                self.transfer_failed(
                    now,
                    id,
                    408,
                    &format!("the transfer target did not answer ({why})"),
                );
            }
            TxPurpose::Passthrough | TxPurpose::Bye => {}
        }
    }
}

fn take_ticket(op: &mut Option<Op>) -> Option<Ticket> {
    match op {
        Some(Op::Start { ticket })
        | Some(Op::Stop { ticket, .. })
        | Some(Op::PauseResume { ticket, .. }) => ticket.take(),
        _ => None,
    }
}

fn party_name(side: Side) -> &'static str {
    match side {
        Side::A => "caller",
        Side::B => "callee",
    }
}

/// A reason phrase (peer input) made fit for a log line or an event: at most
/// [`REFUSED_LOG_EXCERPT`] bytes, cut at a char boundary, control characters escaped.
fn peer_text(s: &str) -> String {
    let mut end = s.len().min(REFUSED_LOG_EXCERPT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let shown: String = s
        .get(..end)
        .unwrap_or_default()
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if end < s.len() {
        format!("{shown}…")
    } else {
        shown
    }
}

/// `application/sdp`, parameters and case aside.
fn is_sdp_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/sdp")
}

/// Whether one element of an Accept header admits an SDP body (`*/*`, `application/*`,
/// `application/sdp`, with any parameters other than `q=0`).
fn accepts_sdp(element: &str) -> bool {
    let mut parts = element.split(';');
    let media = parts.next().unwrap_or_default().trim();
    let refused = parts.any(|p| {
        p.split_once('=').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
        })
    });
    !refused
        && ["*/*", "application/*", "application/sdp"]
            .iter()
            .any(|m| media.eq_ignore_ascii_case(m))
}

fn strip_tag(n: &NameAddr) -> NameAddr {
    let mut n = n.clone();
    n.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
    n
}

/// The URI to put in the request line and where to send it, for a contact or trunk URI
/// whose host is an IP address (sipctl does not resolve names: DNS/NAPTR is a proxy's job).
pub fn resolve(uri: &str) -> Option<(Uri, Peer)> {
    let parsed = Uri::parse(uri.trim().trim_start_matches('<').trim_end_matches('>')).ok()?;
    let peer = Peer::for_uri(&parsed)?;
    Some((parsed, peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use linecord_ng::message;
    use std::time::Duration;

    const A: &str = "198.18.0.10:5060";
    const B: &str = "198.18.0.20:5060";
    const SDP_A: &str = "v=0\r\no=a 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
    const SDP_B: &str = "v=0\r\no=b 7 7 IN IP4 198.18.0.20\r\ns=-\r\nc=IN IP4 198.18.0.20\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\n";
    const REC_TO_B: &str = "v=0\r\no=a 1 1 IN IP4 198.18.0.1\r\ns=-\r\nc=IN IP4 198.18.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
    const REC_TO_A: &str = "v=0\r\no=b 7 7 IN IP4 198.18.0.1\r\ns=-\r\nc=IN IP4 198.18.0.1\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\n";

    struct Harness {
        core: B2bua,
        t0: Instant,
        ms: u64,
        /// The INVITE sipctl sent to B.
        b_invite: Option<Message>,
    }

    impl Harness {
        fn new(dns: &str) -> Harness {
            let cfg = Config::from_toml(&format!(
                "[sip]\nlisten = [\"udp:198.18.0.1:5060\"]\nadvertise = \"198.18.0.1\"\n{dns}"
            ))
            .unwrap();
            let core = B2bua::new(
                CoreConfig {
                    host: "198.18.0.1".into(),
                    port: 5060,
                    switch: "unit".into(),
                    trusted_peers: cfg.sip.trusted_peers.clone(),
                    ng: ClientConfig::default(),
                    timers: TimerConfig::default(),
                    max_transactions: crate::sip::DEFAULT_MAX_TRANSACTIONS,
                    version: "test".into(),
                },
                cfg.router.clone(),
                cfg.directory.clone(),
            );
            Harness {
                core,
                t0: Instant::now(),
                ms: 0,
                b_invite: None,
            }
        }

        fn now(&self) -> Now {
            Now {
                mono: self.t0 + Duration::from_millis(self.ms),
                unix_ms: 1_795_000_000_000 + self.ms,
            }
        }

        fn advance(&mut self, ms: u64) {
            self.ms += ms;
            let now = self.now();
            self.core.handle_timeout(now);
        }

        fn sip_in(&mut self, from: &str, bytes: &[u8]) {
            let now = self.now();
            self.core
                .handle_sip(now, bytes, Peer::udp(from.parse().unwrap()));
        }

        /// Messages sipctl sent, with their destinations (100 Trying skipped).
        fn sip_out(&mut self) -> Vec<(String, Message)> {
            let mut v = Vec::new();
            while let Some(t) = self.core.poll_transmit() {
                let m = Message::parse(&t.bytes).unwrap();
                if matches!(&m, Message::Response(r) if r.status == 100) {
                    continue;
                }
                v.push((t.dest.addr.to_string(), m));
            }
            v
        }

        /// NG requests sipctl sent: (cookie, request).
        fn ng_out(&mut self) -> Vec<(Vec<u8>, linecord_ng::Request)> {
            let mut v = Vec::new();
            while let Some(d) = self.core.poll_ng_transmit() {
                let (cookie, body) = message::parse(&d).unwrap();
                v.push((
                    cookie.to_vec(),
                    linecord_ng::Request::from_value(body).unwrap(),
                ));
            }
            v
        }

        fn ng_reply(&mut self, cookie: &[u8], body: &Value) {
            let now = self.now();
            self.core.handle_ng(now, &message::frame(cookie, body));
        }

        fn events(&mut self) -> Vec<&'static str> {
            let mut v = Vec::new();
            while let Some(e) = self.core.poll_event() {
                v.push(e.kind.as_str());
            }
            v
        }
    }

    fn invite(extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:1001@198.18.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-inv1\r\n\
             From: \"Caller\" <sip:100@198.18.0.10>;tag=atag\r\nTo: <sip:1001@198.18.0.1>\r\n\
             Call-ID: call-a@198.18.0.10\r\nCSeq: 1 INVITE\r\nContact: <sip:100@198.18.0.10:5060>\r\n\
             Max-Forwards: 70\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP_A}",
            SDP_A.len()
        )
        .into_bytes()
    }

    fn in_dialog(method: &str, to_tag: &str, cseq: u32, body: &str) -> Vec<u8> {
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:sipctl@198.18.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-{method}{cseq}\r\n\
             From: \"Caller\" <sip:100@198.18.0.10>;tag=atag\r\nTo: <sip:1001@198.18.0.1>;tag={to_tag}\r\n\
             Call-ID: call-a@198.18.0.10\r\nCSeq: {cseq} {method}\r\nContact: <sip:100@198.18.0.10:5060>\r\n\
             {ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// The callee's response to a request sipctl sent it.
    fn answer(req: &Message, status: u16, body: &str) -> Vec<u8> {
        let req = req.as_request().unwrap();
        let mut r = Response::for_request(req, status, reason_phrase(status));
        r.set_to_tag("btag");
        r.headers.push("Contact", "<sip:1001@198.18.0.20:5060>");
        if !body.is_empty() {
            r.set_body("application/sdp", body.as_bytes().to_vec());
        }
        r.to_bytes()
    }

    fn request(m: &Message) -> &Request {
        m.as_request().unwrap()
    }

    fn response(m: &Message) -> &Response {
        m.as_response().unwrap()
    }

    const RECORDED_DN: &str =
        "[[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\nrecord = true\n";

    /// A recorded call through sipctl, up to A's ACK; returns A's To tag.
    fn recorded_call(h: &mut Harness) -> String {
        h.sip_in(A, &invite(""));
        assert!(
            h.sip_out().is_empty(),
            "nothing goes to B before the recorder answered"
        );
        let ng = h.ng_out();
        assert_eq!(ng.len(), 1);
        let (cookie, offer) = &ng[0];
        assert_eq!(offer.command, linecord_ng::Command::Offer);
        assert_eq!(offer.record_call, Some(true));
        assert_eq!(offer.from_tag.as_deref(), Some("a"));
        assert_eq!(offer.sdp.as_deref(), Some(SDP_A.as_bytes()));
        let global = offer.call_id.clone().unwrap();
        assert!(linecord_jobs::is_uuid_v7(&global));
        h.ng_reply(
            cookie,
            &linecord_ng::reply::ok_with_sdp(REC_TO_B.as_bytes()),
        );

        let out = h.sip_out();
        assert_eq!(out.len(), 1);
        let (dest, b_invite) = &out[0];
        assert_eq!(dest, B);
        h.b_invite = Some(b_invite.clone());
        let inv = request(b_invite);
        assert_eq!(inv.method, Method::Invite);
        assert_eq!(inv.body, REC_TO_B.as_bytes(), "B gets the recorder's SDP");
        assert_eq!(
            inv.headers.get(GLOBAL_CALL_ID_HEADER),
            Some(global.as_str())
        );
        assert_ne!(
            inv.call_id(),
            Some("call-a@198.18.0.10"),
            "the B leg has its own Call-ID"
        );
        assert_eq!(inv.max_forwards(), Some(69));
        assert_eq!(
            inv.from_addr().unwrap().uri.user.as_deref(),
            Some("100"),
            "caller id kept"
        );

        h.sip_in(B, &answer(b_invite, 180, ""));
        let out = h.sip_out();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, A);
        let ringing = response(&out[0].1);
        assert_eq!(ringing.status, 180);
        let a_tag = ringing.to_tag().unwrap();
        assert_eq!(ringing.call_id(), Some("call-a@198.18.0.10"));

        h.sip_in(B, &answer(b_invite, 200, SDP_B));
        let out = h.sip_out();
        assert_eq!(
            out.len(),
            1,
            "only the ACK to B until the recorder answered"
        );
        assert_eq!(request(&out[0].1).method, Method::Ack);
        assert_eq!(out[0].0, B);
        let ng = h.ng_out();
        let (cookie, answer_req) = &ng[0];
        assert_eq!(answer_req.command, linecord_ng::Command::Answer);
        assert_eq!(answer_req.to_tag.as_deref(), Some("b"));
        assert_eq!(answer_req.sdp.as_deref(), Some(SDP_B.as_bytes()));
        h.ng_reply(
            cookie,
            &linecord_ng::reply::ok_with_sdp(REC_TO_A.as_bytes()),
        );
        let out = h.sip_out();
        let ok = response(&out[0].1);
        assert_eq!((out[0].0.as_str(), ok.status), (A, 200));
        assert_eq!(ok.body, REC_TO_A.as_bytes(), "A gets the recorder's SDP");
        assert_eq!(ok.to_tag().as_deref(), Some(a_tag.as_str()));
        h.sip_in(A, &in_dialog("ACK", &a_tag, 1, ""));
        assert_eq!(h.core.calls()[0].state, "confirmed");
        assert_eq!(h.core.calls()[0].recording, RecordingState::On);
        a_tag
    }

    #[test]
    fn recorded_call_maps_both_legs_and_the_recorder() {
        let mut h = Harness::new(RECORDED_DN);
        let a_tag = recorded_call(&mut h);
        assert_eq!(
            h.events(),
            ["created", "ringing", "answered", "recording_started"]
        );
        // B did not get our ACK and retransmits its 200: the same ACK goes again.
        let b_invite = h.b_invite.clone().unwrap();
        h.sip_in(B, &answer(&b_invite, 200, SDP_B));
        let out = h.sip_out();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].0.as_str(), &request(&out[0].1).method),
            (B, &Method::Ack)
        );
        assert!(h.ng_out().is_empty(), "no second NG answer");
        // The caller hangs up: 200 to A, BYE to B, NG delete.
        h.sip_in(A, &in_dialog("BYE", &a_tag, 2, ""));
        let out = h.sip_out();
        let kinds: Vec<(String, String)> = out
            .iter()
            .map(|(d, m)| {
                let k = match m {
                    Message::Request(r) => r.method.to_string(),
                    Message::Response(r) => r.status.to_string(),
                };
                (d.clone(), k)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (A.to_owned(), "200".to_owned()),
                (B.to_owned(), "BYE".to_owned())
            ]
        );
        let bye = request(&out[1].1);
        assert_eq!(bye.to_tag().as_deref(), Some("btag"));
        assert_eq!(
            bye.uri.to_string(),
            "sip:1001@198.18.0.20:5060",
            "B's Contact"
        );
        let ng = h.ng_out();
        assert_eq!(ng[0].1.command, linecord_ng::Command::Delete);
        assert_eq!(h.events(), ["recording_stopped", "released"]);
        assert!(h.core.calls().is_empty());
        // A retransmitted BYE is answered by the transaction layer, not by a new call.
        h.sip_in(A, &in_dialog("BYE", &a_tag, 2, ""));
        assert!(h.events().is_empty());
    }

    #[test]
    fn global_call_id_is_taken_only_from_trusted_peers() {
        let given = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let mut h = Harness::new(RECORDED_DN);
        h.sip_in(A, &invite(&format!("X-Linecord-Call-Id: {given}\r\n")));
        assert_eq!(h.ng_out()[0].1.call_id.as_deref(), Some(given));

        let mut h = Harness::new(RECORDED_DN);
        h.core.config.trusted_peers = vec![IpNet::parse("192.0.2.0/24").unwrap()];
        h.sip_in(A, &invite(&format!("X-Linecord-Call-Id: {given}\r\n")));
        let id = h.ng_out()[0].1.call_id.clone().unwrap();
        assert_ne!(id, given, "an untrusted peer cannot choose the global id");
        assert!(linecord_jobs::is_uuid_v7(&id));
    }

    #[test]
    fn agent_start_then_a_party_reinvite_meets_491() {
        let mut h = Harness::new("[[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\n");
        h.sip_in(A, &invite(""));
        assert!(h.ng_out().is_empty(), "not recorded: no NG");
        let out = h.sip_out();
        let b_invite = out[0].1.clone();
        assert_eq!(request(&b_invite).body, SDP_A.as_bytes(), "direct media");
        h.sip_in(B, &answer(&b_invite, 200, SDP_B));
        let out = h.sip_out();
        let ok = out.iter().find(|(d, _)| d == A).unwrap();
        let a_tag = response(&ok.1).to_tag().unwrap();
        assert_eq!(response(&ok.1).body, SDP_B.as_bytes());
        h.sip_in(A, &in_dialog("ACK", &a_tag, 1, ""));
        let id = h.core.calls()[0].id.clone();
        assert_eq!(
            h.core.api_command(h.now(), "42", RecordingAction::Start),
            Err(ApiError::UnknownCall("42".into()))
        );
        assert!(matches!(
            h.core.api_command(h.now(), &id, RecordingAction::Pause),
            Err(ApiError::Conflict(_))
        ));
        let _ticket = h
            .core
            .api_command(h.now(), &id, RecordingAction::Start)
            .unwrap();
        let ng = h.ng_out();
        assert_eq!(ng[0].1.command, linecord_ng::Command::Offer);
        assert_eq!(ng[0].1.sdp.as_deref(), Some(SDP_A.as_bytes()));
        // Glare: A re-INVITEs while the start is in progress.
        h.sip_in(A, &in_dialog("INVITE", &a_tag, 2, SDP_A));
        let out = h.sip_out();
        assert_eq!(response(&out[0].1).status, 491);
        // The start goes on: re-INVITE to B with the recorder's SDP, o= line kept in step.
        h.ng_reply(
            &ng[0].0,
            &linecord_ng::reply::ok_with_sdp(REC_TO_B.as_bytes()),
        );
        let out = h.sip_out();
        assert_eq!(out[0].0, B);
        let reinvite = request(&out[0].1);
        assert_eq!(reinvite.method, Method::Invite);
        assert_eq!(reinvite.to_tag().as_deref(), Some("btag"));
        let body = String::from_utf8(reinvite.body.clone()).unwrap();
        assert!(body.contains("o=a 1 2 IN IP4 198.18.0.1"), "{body}");
        assert_eq!(h.core.calls()[0].recording, RecordingState::Starting);
        // B refuses: the call goes on with direct media, the event says why.
        h.sip_in(B, &answer(&out[0].1, 488, ""));
        let out = h.sip_out();
        assert!(out
            .iter()
            .all(|(_, m)| !matches!(m, Message::Request(r) if r.method == Method::Bye)));
        assert_eq!(h.ng_out()[0].1.command, linecord_ng::Command::Delete);
        let (_, result) = h.core.poll_api_result().unwrap();
        assert!(
            matches!(result, Err(ApiError::Failed(ref why)) if why.contains("488")),
            "{result:?}"
        );
        assert_eq!(h.core.calls()[0].recording, RecordingState::Off);
        assert_eq!(h.events(), ["created", "answered", "recording_failed"]);
    }

    #[test]
    fn critical_recording_refuses_the_call_when_the_recorder_is_silent() {
        let mut h = Harness::new(
            "[[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\nrecord = true\nrecord-critical = true\n",
        );
        h.sip_in(A, &invite(""));
        assert_eq!(h.ng_out().len(), 1);
        // 500 ms, 1 s, 2 s of retransmissions, then the recorder is given up.
        for _ in 0..8 {
            h.advance(500);
        }
        let out = h.sip_out();
        let refused = out
            .iter()
            .find(|(d, m)| d == A && matches!(m, Message::Response(_)))
            .unwrap();
        let r = response(&refused.1);
        assert_eq!(r.status, 500);
        assert!(r
            .headers
            .get("Warning")
            .unwrap()
            .contains("recording is critical"));
        assert!(
            out.iter().all(|(d, _)| d != B),
            "the callee is never called"
        );
        assert_eq!(h.events(), ["created", "recording_failed", "released"]);
        assert_eq!(h.core.counters().refused_record_critical, 1);
    }

    /// Replaces the first `from` in a message with `to`.
    fn edit(msg: &[u8], from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(msg.to_vec())
            .unwrap()
            .replacen(from, to, 1)
            .into_bytes()
    }

    #[test]
    fn requests_are_inspected_in_rfc3261_order() {
        let mut h = Harness::new(RECORDED_DN);
        let status = |h: &mut Harness, msg: &[u8]| {
            h.sip_in(A, msg);
            let out = h.sip_out();
            let r = out.iter().find_map(|(_, m)| m.as_response()).cloned();
            r.map(|r| (r.status, r))
        };
        let options = |uri: &str, branch: &str| {
            format!(
                "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-{branch}\r\n\
                 From: <sip:100@198.18.0.10>;tag=o\r\nTo: <sip:1001@198.18.0.1>\r\nCall-ID: opt-{branch}\r\n\
                 CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes()
        };
        // §8.2.1: unknown method 501, known but not taken outside a dialog 405, both with Allow
        let foo = String::from_utf8(options("sip:1001@198.18.0.1", "m1"))
            .unwrap()
            .replace("OPTIONS", "FOO");
        let (st, r) = status(&mut h, foo.as_bytes()).unwrap();
        assert_eq!(st, 501);
        assert_eq!(r.headers.get("Allow"), Some(ALLOW));
        let sub = String::from_utf8(options("sip:1001@198.18.0.1", "m2"))
            .unwrap()
            .replace("OPTIONS", "SUBSCRIBE");
        let (st, r) = status(&mut h, sub.as_bytes()).unwrap();
        assert_eq!(st, 405);
        assert_eq!(r.headers.get("Allow"), Some(ALLOW));
        // the method check comes before the scheme check (a FOO to urn: is 501)
        let foo_urn = foo.replacen("sip:1001@198.18.0.1", "urn:service:sos", 1);
        let foo_urn = foo_urn.replace("z9hG4bK-m1", "z9hG4bK-m3");
        assert_eq!(status(&mut h, foo_urn.as_bytes()).map(|s| s.0), Some(501));
        // §8.2.2.1: schemes
        assert_eq!(
            status(&mut h, &options("urn:service:sos", "s1")).map(|s| s.0),
            Some(416)
        );
        let (st, r) = status(&mut h, &options("tel:+4930123", "s2")).unwrap();
        assert_eq!(st, 200);
        assert_eq!(r.headers.get("Accept"), Some("application/sdp"));
        // §8.2.2.3: Require, listed back in Unsupported; Proxy-Require alone is ignored
        let req = edit(
            &options("sip:1001@198.18.0.1", "r1"),
            "Content-Length",
            "Require: 100rel, timer\r\nContent-Length",
        );
        let (st, r) = status(&mut h, &req).unwrap();
        assert_eq!(st, 420);
        assert_eq!(r.headers.get("Unsupported"), Some("100rel, timer"));
        let req = edit(
            &options("sip:1001@198.18.0.1", "r2"),
            "Content-Length",
            "Proxy-Require: x\r\nContent-Length",
        );
        assert_eq!(status(&mut h, &req).map(|s| s.0), Some(200));
        // §8.2.3 / RFC 4475 §3.3.6, §3.3.15: INVITE bodies and Accept
        let inv = edit(
            &invite(""),
            "Content-Type: application/sdp",
            "Content-Type: text/plain",
        );
        let (st, r) = status(&mut h, &inv).unwrap();
        assert_eq!(st, 415);
        assert_eq!(r.headers.get("Accept"), Some("application/sdp"));
        let inv = edit(
            &invite("Content-Encoding: gzip\r\n"),
            "z9hG4bK-inv1",
            "z9hG4bK-inv2",
        );
        let (st, r) = status(&mut h, &inv).unwrap();
        assert_eq!(st, 415);
        assert_eq!(r.headers.get("Accept-Encoding"), Some("identity"));
        for (i, accept) in ["text/plain", "application/sdp;q=0", ""].iter().enumerate() {
            let inv = edit(
                &invite(&format!("Accept: {accept}\r\n")),
                "z9hG4bK-inv1",
                &format!("z9hG4bK-acc{i}"),
            );
            assert_eq!(status(&mut h, &inv).map(|s| s.0), Some(406), "{accept:?}");
        }
        assert!(h.ng_out().is_empty(), "nothing reached the recorder");
        // RFC 4475 §3.4.1: an RFC 2543 INVITE without From tag is taken (the DN records: NG offer)
        let inv = edit(
            &edit(&invite("Accept: application/*\r\n"), ";tag=atag", ""),
            "z9hG4bK-inv1",
            "z9hG4bK-2543",
        );
        h.sip_in(A, &inv);
        assert!(h.sip_out().is_empty());
        assert_eq!(h.ng_out().len(), 1, "the call goes on to the recorder");
    }

    #[test]
    fn in_dialog_requests_are_inspected_too() {
        let mut h = Harness::new(RECORDED_DN);
        let a_tag = recorded_call(&mut h);
        let _ = h.sip_out();
        let _ = h.ng_out();
        // a re-INVITE requiring session timers: 420, the call is untouched
        let re = edit(
            &in_dialog("INVITE", &a_tag, 2, SDP_A),
            "Contact:",
            "Require: timer\r\nContact:",
        );
        h.sip_in(A, &re);
        let out = h.sip_out();
        assert_eq!(out.len(), 1);
        assert_eq!(response(&out[0].1).status, 420);
        // a re-INVITE with a body that is not SDP: 415
        let re = edit(
            &in_dialog("INVITE", &a_tag, 3, SDP_A),
            "application/sdp",
            "application/x-unknown",
        );
        h.sip_in(A, &re);
        let out = h.sip_out();
        assert_eq!(response(&out[0].1).status, 415);
        assert!(
            h.ng_out().is_empty(),
            "no NG request for refused re-INVITEs"
        );
        assert_eq!(h.core.calls()[0].state, "confirmed");
    }

    #[test]
    fn registrar_refuses_non_sip_addresses_of_record() {
        let mut h = Harness::new("[[dn]]\nnumber = \"1002\"\n");
        let reg = "REGISTER sip:198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.20:5060;branch=z9hG4bK-reg\r\n\
                   From: <sip:1002@198.18.0.1>;tag=r\r\nTo: <tel:1002>\r\nCall-ID: reg@b\r\n\
                   CSeq: 1 REGISTER\r\nContact: <sip:1002@198.18.0.20:5062>\r\nContent-Length: 0\r\n\r\n";
        h.sip_in(B, reg.as_bytes());
        let out = h.sip_out();
        assert_eq!(response(&out[0].1).status, 400);
        assert!(h.core.directory().registration("1002", 0).is_none());
    }

    #[test]
    fn malformed_input_is_counted_and_answered_with_the_right_code() {
        let mut h = Harness::new(RECORDED_DN);
        // 505 for another SIP version, 501 (with Allow) for an unknown method whose CSeq
        // differs, nothing for garbage; all counted
        let v7 = edit(&invite(""), "SIP/2.0\r\n", "SIP/7.0\r\n");
        h.sip_in(A, &v7);
        let newm = edit(
            &edit(&invite(""), "INVITE sip:", "NEWMETHOD sip:"),
            "z9hG4bK-inv1",
            "z9hG4bK-nm",
        );
        h.sip_in(A, &newm);
        h.sip_in(A, b"abc\xc3\xa9 sip:x SIP/2.0\r\n\r\n");
        let mut statuses = Vec::new();
        while let Some(t) = h.core.poll_transmit() {
            let text = String::from_utf8_lossy(&t.bytes).into_owned();
            statuses.push(text.lines().next().unwrap_or("").to_owned());
            if text.starts_with("SIP/2.0 501") {
                assert!(text.contains(&format!("Allow: {ALLOW}\r\n")), "{text}");
            }
        }
        assert_eq!(
            statuses,
            [
                "SIP/2.0 505 Version Not Supported",
                "SIP/2.0 501 Not Implemented"
            ]
        );
        assert_eq!(h.core.counters().bad_messages, 3);
    }

    #[test]
    fn peer_text_is_short_and_escaped() {
        assert_eq!(peer_text("Busy Here"), "Busy Here");
        assert_eq!(peer_text("a\u{0}b\u{1b}[2J"), "a\\u{0}b\\u{1b}[2J");
        let long = "é".repeat(300);
        let t = peer_text(&long);
        assert!(t.ends_with('…') && t.len() <= REFUSED_LOG_EXCERPT + '…'.len_utf8());
        assert!(t.starts_with("éé"));
    }

    #[test]
    fn accept_and_content_type_matching() {
        for yes in [
            "application/sdp",
            "Application/SDP;charset=x",
            "*/*",
            "application/*;q=0.5",
        ] {
            assert!(accepts_sdp(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/sdp;q=0",
            "application/sdp; q=0.000",
            "",
            "multipart/mixed",
        ] {
            assert!(!accepts_sdp(no), "{no}");
        }
        assert!(is_sdp_type("application/SDP ; x=y"));
        assert!(!is_sdp_type("application/sdpx"));
    }

    #[test]
    fn unknown_dn_gets_404_and_in_dialog_requests_without_a_dialog_481() {
        let mut h = Harness::new(RECORDED_DN);
        let inv = String::from_utf8(invite(""))
            .unwrap()
            .replace("sip:1001@", "sip:7777@");
        h.sip_in(A, inv.as_bytes());
        let out = h.sip_out();
        let not_found = response(&out[0].1);
        assert_eq!(not_found.status, 404);
        // RFC 3261 §8.2.6.2: every response but 100 to a request without a To tag gets one.
        assert!(not_found.to_tag().is_some(), "404 without a To tag");
        h.sip_in(A, &in_dialog("BYE", "nope", 5, ""));
        let out = h.sip_out();
        let no_dialog = response(&out[0].1);
        assert_eq!(no_dialog.status, 481);
        // An in-dialog request already names our tag: the answer keeps it.
        assert_eq!(no_dialog.to_tag().as_deref(), Some("nope"));
    }

    #[test]
    fn register_binds_a_dn_and_calls_reach_it() {
        let mut h = Harness::new("[[dn]]\nnumber = \"1002\"\n");
        let reg = "REGISTER sip:198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.20:5060;branch=z9hG4bK-reg\r\n\
                   From: <sip:1002@198.18.0.1>;tag=r\r\nTo: <sip:1002@198.18.0.1>\r\nCall-ID: reg@b\r\n\
                   CSeq: 1 REGISTER\r\nContact: <sip:1002@198.18.0.20:5062>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n";
        h.sip_in(B, reg.as_bytes());
        let out = h.sip_out();
        let ok = response(&out[0].1);
        assert_eq!(ok.status, 200);
        assert!(ok.headers.get("Contact").unwrap().contains("expires=60"));
        let inv = String::from_utf8(invite(""))
            .unwrap()
            .replace("sip:1001@", "sip:1002@");
        h.sip_in(A, inv.as_bytes());
        let out = h.sip_out();
        assert_eq!(out[0].0, "198.18.0.20:5062");
        assert_eq!(
            request(&out[0].1).uri.to_string(),
            "sip:1002@198.18.0.20:5062"
        );
    }
}

#[cfg(test)]
mod transfer_tests {
    //! Blind transfer with direct media, leg by leg (the recorded case runs end to end in
    //! `tests/e2e.rs`).

    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    const SDP_A: &str = "v=0\r\no=a 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
    const SDP_B: &str = "v=0\r\no=b 7 7 IN IP4 198.18.0.20\r\ns=-\r\nc=IN IP4 198.18.0.20\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\n";
    const SDP_C: &str = "v=0\r\no=c 9 9 IN IP4 198.18.0.30\r\ns=-\r\nc=IN IP4 198.18.0.30\r\nt=0 0\r\nm=audio 6004 RTP/AVP 0\r\n";

    fn core() -> B2bua {
        let cfg = Config::from_toml(
            "[sip]\nlisten = [\"udp:198.18.0.1:5060\"]\n\
             [[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\n\
             [[dn]]\nnumber = \"1003\"\ncontact = \"198.18.0.30:5060\"\n",
        )
        .unwrap();
        B2bua::new(
            CoreConfig {
                host: "198.18.0.1".into(),
                port: 5060,
                switch: "unit".into(),
                trusted_peers: Vec::new(),
                ng: ClientConfig::default(),
                timers: TimerConfig::default(),
                max_transactions: crate::sip::DEFAULT_MAX_TRANSACTIONS,
                version: "test".into(),
            },
            cfg.router,
            cfg.directory,
        )
    }

    fn out(core: &mut B2bua) -> Vec<(String, Message)> {
        std::iter::from_fn(|| core.poll_transmit())
            .map(|t| (t.dest.addr.to_string(), Message::parse(&t.bytes).unwrap()))
            .filter(|(_, m)| !matches!(m, Message::Response(r) if r.status == 100))
            .collect()
    }

    fn reply(req: &Message, status: u16, tag: &str, sdp: &str) -> Vec<u8> {
        let mut r = Response::for_request(req.as_request().unwrap(), status, reason_phrase(status));
        r.set_to_tag(tag);
        if !sdp.is_empty() {
            r.set_body("application/sdp", sdp.as_bytes().to_vec());
        }
        r.to_bytes()
    }

    fn method(m: &Message) -> String {
        match m {
            Message::Request(r) => r.method.to_string(),
            Message::Response(r) => r.status.to_string(),
        }
    }

    #[test]
    fn blind_transfer_with_direct_media() {
        let mut core = core();
        let t0 = Instant::now();
        let now = |ms: u64| Now {
            mono: t0 + Duration::from_millis(ms),
            unix_ms: 1_795_000_000_000 + ms,
        };
        let a: Peer = Peer::udp("198.18.0.10:5060".parse().unwrap());
        let b: Peer = Peer::udp("198.18.0.20:5060".parse().unwrap());
        let c: Peer = Peer::udp("198.18.0.30:5060".parse().unwrap());
        let invite = format!(
            "INVITE sip:1001@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-t1\r\n\
             From: <sip:100@198.18.0.10>;tag=atag\r\nTo: <sip:1001@198.18.0.1>\r\nCall-ID: t@a\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:100@198.18.0.10:5060>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{SDP_A}",
            SDP_A.len()
        );
        core.handle_sip(now(0), invite.as_bytes(), a);
        let b_inv = out(&mut core).remove(0).1;
        core.handle_sip(now(10), &reply(&b_inv, 200, "btag", SDP_B), b);
        let sent = out(&mut core);
        let a_tag = sent
            .iter()
            .find_map(|(_, m)| m.as_response().and_then(|r| r.to_tag()))
            .unwrap();
        let ack = format!(
            "ACK sip:sipctl@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-t2\r\n\
             From: <sip:100@198.18.0.10>;tag=atag\r\nTo: <sip:1001@198.18.0.1>;tag={a_tag}\r\nCall-ID: t@a\r\n\
             CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        core.handle_sip(now(20), ack.as_bytes(), a);
        // B refers A to DN 1003.
        let b_inv_req = b_inv.as_request().unwrap();
        let refer = format!(
            "REFER sip:sipctl@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.20:5060;branch=z9hG4bK-r1\r\n\
             From: <sip:1001@198.18.0.1>;tag=btag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 REFER\r\n\
             Refer-To: <sip:1003@198.18.0.1>\r\nContact: <sip:1001@198.18.0.20:5060>\r\nContent-Length: 0\r\n\r\n",
            b_inv_req.headers.get("From").unwrap(),
            b_inv_req.call_id().unwrap()
        );
        core.handle_sip(now(30), refer.as_bytes(), b);
        let sent = out(&mut core);
        let kinds: Vec<(String, String)> =
            sent.iter().map(|(d, m)| (d.clone(), method(m))).collect();
        assert_eq!(
            kinds,
            [
                ("198.18.0.20:5060".into(), "202".into()),
                ("198.18.0.20:5060".into(), "NOTIFY".into()),
                ("198.18.0.30:5060".into(), "INVITE".into())
            ]
        );
        let c_inv = sent[2].1.clone();
        assert_eq!(
            c_inv.as_request().unwrap().body,
            SDP_A.as_bytes(),
            "C gets A's SDP"
        );
        assert_eq!(core.calls()[0].recording, RecordingState::Off);
        // C answers: ACK to C, final NOTIFY and BYE to B, re-INVITE of A towards C.
        core.handle_sip(now(40), &reply(&c_inv, 200, "ctag", SDP_C), c);
        let sent = out(&mut core);
        let kinds: Vec<(String, String)> =
            sent.iter().map(|(d, m)| (d.clone(), method(m))).collect();
        assert_eq!(
            kinds,
            [
                ("198.18.0.30:5060".into(), "ACK".into()),
                ("198.18.0.20:5060".into(), "NOTIFY".into()),
                ("198.18.0.20:5060".into(), "BYE".into()),
                ("198.18.0.10:5060".into(), "INVITE".into())
            ]
        );
        let notify = sent[1].1.as_request().unwrap();
        assert!(notify
            .headers
            .get("Subscription-State")
            .unwrap()
            .starts_with("terminated"));
        assert_eq!(notify.body, b"SIP/2.0 200 OK\r\n");
        let reinvite = sent[3].1.clone();
        let body = String::from_utf8(reinvite.as_request().unwrap().body.clone()).unwrap();
        assert!(
            body.contains("c=IN IP4 198.18.0.30"),
            "A is sent towards C: {body}"
        );
        core.handle_sip(now(50), &reply(&reinvite, 200, "atag", SDP_A), a);
        let sent = out(&mut core);
        assert_eq!(method(&sent[0].1), "ACK");
        let info = &core.calls()[0];
        assert_eq!(
            (info.dn.as_deref(), info.callee.as_deref()),
            (Some("1003"), Some("1003"))
        );
        let kinds: Vec<&str> = std::iter::from_fn(|| core.poll_event())
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(kinds, ["created", "answered", "transferred"]);
    }
}
