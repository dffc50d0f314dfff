//! A simulated network for the B2BUA (the quinn-proto test model): a caller, sipctl, a callee
//! and a fake recorder exchange datagrams on a virtual clock, each datagram lost with a seeded
//! probability and delayed by a random amount (so messages also overtake each other). The
//! parties are small user agents built from this crate's own transaction and dialog layers;
//! the recorder answers NG like the real one would (an SDP naming its own address). Tests
//! drive a flow with [`Sim::run_until`] and check what every party saw.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;
use crate::config::Config;
use crate::sip::DialogState;
use linecord_ng::message;

/// The caller's address.
pub(super) const CALLER: &str = "198.18.0.10:5060";
/// The callee's address.
pub(super) const CALLEE: &str = "198.18.0.20:5060";
/// sipctl's address.
pub(super) const SIPCTL: &str = "198.18.0.1:5060";
/// The recorder's media address (what its SDP names).
pub(super) const RECORDER_IP: &str = "198.18.0.1";

/// Who sent or gets a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Node {
    Caller,
    Callee,
    Sipctl,
    Recorder,
}

/// How the network behaves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Conditions {
    /// Chance a SIP datagram is lost, 0–1.
    pub(super) loss: f64,
    /// Chance an NG datagram is lost (sipctl and the recorder share a LAN).
    pub(super) ng_loss: f64,
    /// Delay range per datagram, ms (a wide range reorders).
    pub(super) delay_ms: (u64, u64),
}

/// One party: a user agent on our own SIP layers.
pub(super) struct Ua {
    name: &'static str,
    addr: Peer,
    txl: TransactionLayer,
    rng: fastrand::Rng,
    /// The dialog of its call.
    pub(super) dialog: Option<Dialog>,
    /// Its INVITE (as caller) and the transaction.
    invite: Option<(TxId, Request)>,
    /// Its SDP (it names its own address).
    sdp: String,
    /// Every SDP body it received.
    pub(super) got_sdp: Vec<String>,
    /// Requests it received, by method.
    pub(super) got_requests: Vec<Method>,
    /// Final responses to its requests: (method, status).
    pub(super) got_finals: Vec<(Method, u16)>,
    /// As callee: ring this long, then answer (`None`: never answer).
    pub(super) answer_after: Option<Duration>,
    /// As callee: ring with 183 and its SDP (early media) instead of a bare 180.
    pub(super) early_media: bool,
    /// As callee: extra header lines of its 200 to the INVITE.
    pub(super) answer_headers: Vec<(&'static str, &'static str)>,
    /// Pending answer: when, and the INVITE's server transaction.
    answer_at: Option<(Instant, TxId, Request, String)>,
    /// The INVITE it rings for (time, transaction, request, its tag).
    ringing: Option<(Instant, TxId, Request, String)>,
}

impl Ua {
    fn new(name: &'static str, addr: &str, seed: u64) -> Ua {
        let ip = addr.split(':').next().unwrap_or_default().to_owned();
        Ua {
            name,
            addr: Peer::udp(addr.parse().expect("address")),
            txl: TransactionLayer::new(TimerConfig::default()),
            rng: fastrand::Rng::with_seed(seed),
            dialog: None,
            invite: None,
            sdp: format!(
                "v=0\r\no={name} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
            ),
            got_sdp: Vec::new(),
            got_requests: Vec::new(),
            got_finals: Vec::new(),
            answer_after: Some(Duration::from_millis(300)),
            early_media: false,
            answer_headers: Vec::new(),
            answer_at: None,
            ringing: None,
        }
    }

    fn via(&mut self) -> Via {
        let host = self.addr.addr.ip().to_string();
        new_via(
            Transport::Udp,
            &host,
            Some(self.addr.addr.port()),
            &mut self.rng,
        )
    }

    fn contact(&self) -> NameAddr {
        NameAddr::new(Uri::sip(
            Some(self.name),
            &self.addr.addr.ip().to_string(),
            Some(self.addr.addr.port()),
        ))
    }

    fn sipctl() -> Peer {
        Peer::udp(SIPCTL.parse().expect("address"))
    }

    /// Calls `number` at sipctl.
    pub(super) fn call(&mut self, now: Instant, number: &str) {
        let mut req = Request::new(Method::Invite, Uri::sip(Some(number), "198.18.0.1", None));
        req.headers.push("Via", self.via());
        req.headers.push("Max-Forwards", 70);
        let mut from = NameAddr::new(Uri::sip(Some("100"), "198.18.0.10", None));
        from.set_tag(&generate_tag(&mut self.rng));
        req.headers.push("From", from);
        req.headers.push(
            "To",
            NameAddr::new(Uri::sip(Some(number), "198.18.0.1", None)),
        );
        req.headers
            .push("Call-ID", generate_call_id(&mut self.rng, "198.18.0.10"));
        req.headers.push("CSeq", "1 INVITE");
        req.headers.push("Contact", self.contact());
        req.headers.push("Allow", ALLOW);
        req.set_body("application/sdp", self.sdp.clone().into_bytes());
        if let Ok(tx) = self.txl.send_request(now, req.clone(), Ua::sipctl()) {
            self.invite = Some((tx, req));
        }
    }

    /// Sends `method` in its dialog (with its SDP when `with_sdp`).
    pub(super) fn send_in_dialog(&mut self, now: Instant, method: Method, with_sdp: bool) {
        let via = self.via();
        let Some(d) = self.dialog.as_mut() else {
            return;
        };
        let mut req = d.new_request(method, via);
        if with_sdp {
            req.set_body("application/sdp", self.sdp.clone().into_bytes());
        }
        let _ = self.txl.send_request(now, req, Ua::sipctl());
    }

    fn handle(&mut self, now: Instant, bytes: &[u8], from: Peer) {
        let Ok(msg) = Message::parse(bytes) else {
            return;
        };
        match self.txl.handle_incoming(now, msg, from) {
            Incoming::Request { tx, request } => self.on_request(now, tx, request),
            Incoming::Ack { request, .. } => {
                if let Some(d) = self.dialog.as_mut() {
                    let _ = d.handle_request(&request);
                    d.confirm();
                }
            }
            Incoming::Response { tx, response } => self.on_response(now, tx, response),
            Incoming::StrayResponse(resp) if resp.is_success() => self.ack(&resp),
            Incoming::Cancel {
                tx,
                request,
                invite,
            } => {
                self.got_requests.push(Method::Cancel);
                let _ = self
                    .txl
                    .send_response(now, tx, Response::for_request(&request, 200, "OK"));
                // RFC 3261 §9.2: the INVITE gets 487 when it had no final response yet.
                if let (Some(itx), Some((_, _, ireq, tag))) = (invite, self.answer_pending()) {
                    let mut r = Response::for_request(&ireq, 487, "Request Terminated");
                    r.set_to_tag(&tag);
                    let _ = self.txl.send_response(now, itx, r);
                    self.answer_at = None;
                    if let Some(d) = self.dialog.as_mut() {
                        d.terminate();
                    }
                }
            }
            _ => {}
        }
    }

    /// The INVITE it has not answered yet, if ringing (answering later or never).
    fn answer_pending(&mut self) -> Option<(Instant, TxId, Request, String)> {
        if let Some(a) = self.answer_at.clone() {
            return Some(a);
        }
        let d = self.dialog.as_ref()?;
        (d.state == DialogState::Early).then(|| self.ringing.clone())?
    }

    fn on_request(&mut self, now: Instant, tx: TxId, req: Request) {
        self.got_requests.push(req.method.clone());
        if !req.body.is_empty() {
            self.got_sdp
                .push(String::from_utf8_lossy(&req.body).into_owned());
        }
        if req.method == Method::Invite && req.to_tag().is_none() {
            // A new call: ring, answer later.
            let tag = generate_tag(&mut self.rng);
            let Ok(d) = Dialog::uas_initial(&req, &tag, Some(self.contact()), 1) else {
                return;
            };
            self.dialog = Some(d);
            let mut ringing = if self.early_media {
                let mut r = Response::for_request(&req, 183, "Session Progress");
                r.set_body("application/sdp", self.sdp.clone().into_bytes());
                r
            } else {
                Response::for_request(&req, 180, "Ringing")
            };
            ringing.set_to_tag(&tag);
            ringing.headers.push("Contact", self.contact());
            let _ = self.txl.send_response(now, tx, ringing);
            self.ringing = Some((now, tx, req.clone(), tag.clone()));
            if let Some(after) = self.answer_after {
                self.answer_at = Some((now + after, tx, req, tag));
            }
            return;
        }
        if let Some(d) = self.dialog.as_mut() {
            if d.handle_request(&req).is_err() {
                let _ =
                    self.txl
                        .send_response(now, tx, Response::for_request(&req, 481, "No Dialog"));
                return;
            }
        }
        let mut ok = Response::for_request(&req, 200, "OK");
        if matches!(req.method, Method::Invite | Method::Update) {
            // A UA that supports session timers keeps the refresher's interval (RFC 4028 §9).
            if let Some(se) = req.headers.get("Session-Expires").map(str::to_owned) {
                ok.headers.push("Session-Expires", se);
                ok.headers.push("Require", "timer");
            }
            ok.headers.push("Contact", self.contact());
            if !req.body.is_empty() || req.method == Method::Invite {
                ok.set_body("application/sdp", self.sdp.clone().into_bytes());
            }
        }
        let _ = self.txl.send_response(now, tx, ok);
    }

    fn on_response(&mut self, now: Instant, tx: TxId, resp: Response) {
        if resp.is_final() {
            if let Some(c) = resp.cseq() {
                self.got_finals.push((c.method, resp.status));
            }
        }
        if !resp.body.is_empty() {
            self.got_sdp
                .push(String::from_utf8_lossy(&resp.body).into_owned());
        }
        if resp.is_final() && resp.cseq().is_some_and(|c| c.method == Method::Bye) {
            // RFC 3261 §15: the BYE's sender ends its side of the dialog.
            if let Some(d) = self.dialog.as_mut() {
                d.terminate();
            }
            return;
        }
        let creating = self.invite.as_ref().filter(|(t, _)| *t == tx).cloned();
        if let Some((_, inv)) = creating {
            if resp.status > 100 && resp.to_tag().is_some() {
                match self.dialog.as_mut() {
                    None => self.dialog = Dialog::uac(&inv, &resp).ok(),
                    Some(d) => {
                        let _ = d.handle_response(&resp);
                    }
                }
            }
        } else if let Some(d) = self.dialog.as_mut() {
            let _ = d.handle_response(&resp);
        }
        if resp.is_success() && resp.cseq().is_some_and(|c| c.method == Method::Invite) {
            self.ack(&resp);
        }
        let _ = now;
    }

    fn ack(&mut self, resp: &Response) {
        let via = self.via();
        let Some(d) = self.dialog.as_ref() else {
            return;
        };
        let seq = resp.cseq().map(|c| c.seq).unwrap_or(1);
        let ack = d.ack(seq, via);
        self.txl.send_stateless(Ua::sipctl(), ack.to_bytes());
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.txl.poll_timeout(),
            self.answer_at.as_ref().map(|a| a.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.txl.handle_timeout(now);
        while self.txl.poll_event().is_some() {}
        if self.answer_at.as_ref().is_some_and(|a| a.0 <= now) {
            if let Some((_, tx, req, tag)) = self.answer_at.take() {
                let mut ok = Response::for_request(&req, 200, "OK");
                ok.set_to_tag(&tag);
                ok.headers.push("Contact", self.contact());
                ok.headers.push("Allow", ALLOW);
                for (n, v) in &self.answer_headers {
                    ok.headers.push(*n, *v);
                }
                ok.set_body("application/sdp", self.sdp.clone().into_bytes());
                if let Some(d) = self.dialog.as_mut() {
                    d.confirm();
                }
                let _ = self.txl.send_response(now, tx, ok);
            }
        }
    }

    /// Whether its dialog is confirmed.
    pub(super) fn confirmed(&self) -> bool {
        self.dialog
            .as_ref()
            .is_some_and(|d| d.state == DialogState::Confirmed)
    }

    /// Whether its dialog ended.
    pub(super) fn ended(&self) -> bool {
        self.dialog
            .as_ref()
            .is_some_and(|d| d.state == DialogState::Terminated)
    }
}

/// The whole scene: the core, two parties, the recorder and the wire between them.
pub(super) struct Sim {
    pub(super) core: B2bua,
    pub(super) caller: Ua,
    pub(super) callee: Ua,
    /// NG requests the recorder got (command names).
    pub(super) ng_commands: Vec<String>,
    t0: Instant,
    pub(super) now: Instant,
    conditions: Conditions,
    rng: fastrand::Rng,
    /// Datagrams in flight: (arrival, sequence) → (from, to, bytes).
    wire: BTreeMap<(Instant, u64), (Node, Node, Vec<u8>)>,
    seq: u64,
    /// Datagrams lost so far.
    pub(super) lost: u64,
    /// NG cookies the recorder answered (its reply cache: a retransmission gets the same reply).
    ng_replies: HashMap<Vec<u8>, Vec<u8>>,
    next_port: u16,
}

impl Sim {
    /// A scene with sipctl configured by `toml` (a `[[dn]]` 1001 at the callee, typically),
    /// on a network with `conditions`, every random choice from `seed`.
    pub(super) fn new(toml: &str, conditions: Conditions, seed: u64) -> Sim {
        let cfg = Config::from_toml(&format!(
            "[sip]\nlisten = [\"udp:198.18.0.1:5060\"]\nadvertise = \"198.18.0.1\"\n{toml}"
        ))
        .expect("config");
        let core = B2bua::new(
            CoreConfig {
                host: "198.18.0.1".into(),
                port: 5060,
                switch: "sim".into(),
                trusted_peers: Vec::new(),
                ng: ClientConfig::default(),
                timers: TimerConfig::default(),
                max_transactions: crate::sip::DEFAULT_MAX_TRANSACTIONS,
                session_timer: cfg.sip.session_timer,
                version: "sim".into(),
                seed,
            },
            cfg.router.clone(),
            cfg.directory.clone(),
        );
        let t0 = Instant::now();
        Sim {
            core,
            caller: Ua::new("caller", CALLER, seed ^ 1),
            callee: Ua::new("callee", CALLEE, seed ^ 2),
            ng_commands: Vec::new(),
            t0,
            now: t0,
            conditions,
            rng: fastrand::Rng::with_seed(seed ^ 3),
            wire: BTreeMap::new(),
            seq: 0,
            lost: 0,
            ng_replies: HashMap::new(),
            next_port: 30000,
        }
    }

    fn clock(&self) -> Now {
        Now {
            mono: self.now,
            unix_ms: 1_795_000_000_000 + (self.now - self.t0).as_millis() as u64,
        }
    }

    fn node_of(addr: SocketAddr) -> Node {
        match addr.to_string().as_str() {
            CALLER => Node::Caller,
            CALLEE => Node::Callee,
            _ => Node::Sipctl,
        }
    }

    fn put(&mut self, from: Node, to: Node, bytes: Vec<u8>) {
        let ng = from == Node::Recorder || to == Node::Recorder;
        let loss = if ng {
            self.conditions.ng_loss
        } else {
            self.conditions.loss
        };
        if self.rng.f64() < loss {
            self.lost += 1;
            return;
        }
        let (lo, hi) = self.conditions.delay_ms;
        let at = self.now + Duration::from_millis(self.rng.u64(lo..=hi));
        self.seq += 1;
        self.wire.insert((at, self.seq), (from, to, bytes));
    }

    /// Moves everything every node wants to send onto the wire.
    fn collect(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            let to = Sim::node_of(t.dest.addr);
            self.put(Node::Sipctl, to, t.bytes);
        }
        while let Some(d) = self.core.poll_ng_transmit() {
            self.put(Node::Sipctl, Node::Recorder, d);
        }
        for who in [Node::Caller, Node::Callee] {
            loop {
                let ua = if who == Node::Caller {
                    &mut self.caller
                } else {
                    &mut self.callee
                };
                let Some(t) = ua.txl.poll_transmit() else {
                    break;
                };
                self.put(who, Node::Sipctl, t.bytes);
            }
        }
    }

    /// The fake recorder: answers `offer`/`answer` with an SDP naming its own address (one
    /// port per request), everything else `ok`; a retransmitted cookie gets the same reply.
    fn recorder(&mut self, bytes: &[u8]) {
        let Ok((cookie, body)) = message::parse(bytes) else {
            return;
        };
        if let Some(reply) = self.ng_replies.get(cookie).cloned() {
            return self.put(Node::Recorder, Node::Sipctl, reply);
        }
        let cookie = cookie.to_vec();
        let Ok(req) = linecord_ng::Request::from_value(body) else {
            return;
        };
        let command = req.command.as_str().to_owned();
        self.ng_commands.push(command.clone());
        let reply = match command.as_str() {
            "offer" | "answer" => {
                self.next_port += 2;
                let sdp = format!(
                    "v=0\r\no=- 1 1 IN IP4 {RECORDER_IP}\r\ns=-\r\nc=IN IP4 {RECORDER_IP}\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n",
                    self.next_port
                );
                linecord_ng::reply::ok_with_sdp(sdp.as_bytes())
            }
            _ => linecord_ng::reply::ok(),
        };
        let bytes = message::frame(&cookie, &reply);
        self.ng_replies.insert(cookie, bytes.clone());
        self.put(Node::Recorder, Node::Sipctl, bytes);
    }

    /// Runs the scene until `until` (virtual time since the start), delivering datagrams and
    /// firing every node's timers in time order.
    pub(super) fn run_until(&mut self, until: Duration) {
        let end = self.t0 + until;
        // Bounded: a runaway exchange fails the test rather than spinning.
        for _ in 0..1_000_000 {
            self.collect();
            let next_wire = self.wire.keys().next().map(|k| k.0);
            let next = [
                next_wire,
                self.core.poll_timeout(),
                self.caller.poll_timeout(),
                self.callee.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|n| *n <= end) else {
                self.now = end.max(self.now);
                return;
            };
            self.now = self.now.max(next);
            let now = self.clock();
            if next_wire == Some(next) {
                if let Some((_, (from, to, bytes))) = self.wire.pop_first() {
                    let source = match from {
                        Node::Caller => self.caller.addr,
                        Node::Callee => self.callee.addr,
                        _ => Peer::udp(SIPCTL.parse().expect("address")),
                    };
                    match to {
                        Node::Sipctl if from == Node::Recorder => self.core.handle_ng(now, &bytes),
                        Node::Sipctl => self.core.handle_sip(now, &bytes, source),
                        Node::Recorder => self.recorder(&bytes),
                        Node::Caller => self.caller.handle(self.now, &bytes, source),
                        Node::Callee => self.callee.handle(self.now, &bytes, source),
                    }
                }
                continue;
            }
            self.core.handle_timeout(now);
            self.caller.handle_timeout(self.now);
            self.callee.handle_timeout(self.now);
        }
        panic!("the simulation did not settle");
    }

    /// The time since the start.
    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// The virtual "now" as an `Instant`.
    pub(super) fn instant(&self) -> Instant {
        self.now
    }

    /// Event kinds sipctl produced so far.
    pub(super) fn events(&mut self) -> Vec<&'static str> {
        std::iter::from_fn(|| self.core.poll_event())
            .map(|e| e.kind.as_str())
            .collect()
    }
}
