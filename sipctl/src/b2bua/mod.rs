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
    AgentSide, CallContext, EventJob, EventKind, EventParties, EventRecording, Party,
    RecordingInitiator,
};
use linecord_ng::client::{Client as NgClient, ClientConfig, ClientEvent, RequestId};
use linecord_ng::Value;

use crate::config::IpNet;
use crate::directory::Directory;
use crate::media::{self, MediaCall, Origin};
use crate::routing::{sample_from_call_id, Agent, CallFacts, Decision, Router, Target};
use crate::sip::locate::{fails_over, Destination, Failover, Located, TargetTable};
use crate::sip::session_timer::Refresher;
use crate::sip::{
    bad_request_response, generate_call_id, generate_tag, new_via, reason_phrase, Dialog,
    DialogKey, DialogTable, HeaderAccess, Incoming, Message, Method, NameAddr, ParseError, Peer,
    Request, Response, SessionExpires, SessionTimer, SessionTimerConfig, TimerConfig,
    TransactionLayer, Transmit, Transport, TxEvent, TxId, UasTimer, Uri, Via,
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
    /// Session timers (`sip.session-expires`, `sip.min-se`); `None`: off.
    pub session_timer: Option<SessionTimerConfig>,
    /// Version string for events.
    pub version: String,
    /// Seed of the core's RNG (tags, Call-IDs, branches, UUIDs, CSeq starts): the daemon takes
    /// it from the OS, tests and fuzz targets fix it so a run replays exactly.
    pub seed: u64,
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

mod call;
mod ending;
mod events;
mod inspect;
mod invite;
mod mid_call;
mod recording;
mod session;
mod timers;
mod transfer;

use call::{Call, Leg, LegOf, Me, Media, NgPurpose, Op, Phase, Side, TxPurpose};
use ending::ByeTo;
use timers::{CallTimer, TimerTable};

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
    /// Every leg's dialog (RFC 3261 §12), with the call and side it belongs to.
    dialogs: DialogTable<LegOf>,
    /// The calls' own timers (no-answer, session timers).
    timers: TimerTable,
    /// The located targets of destinations given by name (RFC 3263), kept by the daemon's
    /// DNS task through [`B2bua::handle_located`].
    targets: TargetTable,
    /// B legs given up while their INVITE is pending (no-answer): CANCEL on their first
    /// provisional response, ACK and BYE on a late 2xx.
    abandoned: HashMap<TxId, Leg>,
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
    /// The one source of randomness of the core, seeded from [`CoreConfig::seed`].
    rng: fastrand::Rng,
}

impl B2bua {
    /// A core with its routing rules and DN directory.
    pub fn new(config: CoreConfig, router: Router, directory: Directory) -> B2bua {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        // The NG cookie prefix differs per run (the recorder's reply cache outlives us).
        let ng_prefix = format!("sipctl{:08x}", rng.u32(..));
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
            ng: NgClient::new(&ng_prefix, config.ng),
            config,
            router,
            directory,
            calls: HashMap::new(),
            next_call: 1,
            dialogs: DialogTable::new(),
            timers: TimerTable::default(),
            abandoned: HashMap::new(),
            targets: TargetTable::new(),
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
            rng,
        }
    }

    /// New targets of a destination the daemon keeps located (RFC 3263): calls routed there
    /// from now on use them, in their failover order.
    pub fn handle_located(&mut self, dest: Destination, located: Located) {
        self.targets.apply(dest, located);
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
        [
            self.txl.poll_timeout(),
            self.ng.poll_timeout(),
            self.next_call_timer(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs SIP and NG timers.
    pub fn handle_timeout(&mut self, now: Now) {
        self.txl.handle_timeout(now.mono);
        self.ng.handle_timeout(now.mono);
        self.run_call_timers(now);
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
            None if status > 100 && req.to_tag().is_none() => {
                resp.set_to_tag(&generate_tag(&mut self.rng))
            }
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
        let via = self.via(leg.peer.transport);
        let Some(dialog) = self.dialogs.get(&leg.key) else {
            return;
        };
        let ack = dialog.ack(seq, via).to_bytes();
        self.txl.send_stateless(leg.peer, ack.clone());
        self.acks.insert(tx, (leg.peer, ack));
    }

    /// A top Via for a request sipctl sends over `transport`, with a fresh branch.
    fn via(&mut self, transport: Transport) -> Via {
        let port = self.me.port_for(transport);
        new_via(transport, &self.me.host, Some(port), &mut self.rng)
    }

    /// A new request in `leg`'s dialog (RFC 3261 §12.2.1.1).
    fn leg_request(&mut self, leg: &Leg, method: Method) -> Option<Request> {
        let via = self.via(leg.peer.transport);
        Some(self.dialogs.get_mut(&leg.key)?.new_request(method, via))
    }

    /// A new request in the dialog of leg `side` of call `id`, and where it goes.
    fn side_request(&mut self, id: u64, side: Side, method: Method) -> Option<(Request, Peer)> {
        let leg = self.calls.get(&id)?.leg_ref(side)?.clone();
        let req = self.leg_request(&leg, method)?;
        Some((req, leg.peer))
    }

    /// A new leg towards `target` at `peer`: the dialog (not yet created by a response) goes
    /// into the table as `owner`'s; `local` is who sipctl speaks for on it (From).
    fn new_uac_leg(
        &mut self,
        owner: LegOf,
        local: &NameAddr,
        remote: NameAddr,
        target: Uri,
        peer: Peer,
    ) -> Option<Leg> {
        let mut local = strip_tag(local);
        local.set_tag(&generate_tag(&mut self.rng));
        let dialog = Dialog::uac_initial(
            generate_call_id(&mut self.rng, &self.me.host),
            local,
            remote,
            target,
            self.me.contact_addr(peer.transport),
            self.rng.u32(1..1 << 20),
        )
        .ok()?;
        let key = self.dialogs.insert(dialog, owner);
        Some(Leg::new(key, peer))
    }

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
        // The dialog layer takes what the response says about the dialog (its tag, route set,
        // remote target: RFC 3261 §12.1.2, §12.2.1.2) before the call sees it.
        let _ = self.dialogs.route_response(&resp);
        match purpose {
            TxPurpose::BInvite => self.on_b_invite_response(now, id, tx, resp),
            TxPurpose::Reinvite(side) => {
                if resp.is_provisional() {
                    return;
                }
                if resp.is_success() {
                    // ACK a 2xx to a re-INVITE ourselves (RFC 3261 §13.2.2.4); a 2xx to
                    // UPDATE needs none.
                    let cseq = resp.cseq();
                    let leg = self.calls.get(&id).and_then(|c| c.leg_ref(side)).cloned();
                    if let (Some(leg), Some(cseq)) = (leg, cseq) {
                        if cseq.method == Method::Invite {
                            self.ack(tx, &leg, cseq.seq);
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
            TxPurpose::Refresh(side) => self.on_refresh_response(now, id, side, tx, resp),
            TxPurpose::Abandoned => self.on_abandoned_response(now, tx, resp),
            TxPurpose::Bye => {}
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

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transfer_tests;
