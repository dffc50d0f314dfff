//! The NG control endpoint as a state machine: datagram in, reply datagram out.
//!
//! [`NgController::handle_datagram`] takes one request as received (cookie, space, bencode
//! dictionary), its source and the time, and returns the reply to send back. Retransmissions
//! (same source and cookie within [`COOKIE_TTL_NS`]) get the cached reply without being run
//! again, as rtpengine's `control_ng.c` does. Validation of keys and flags lives here: anything
//! the recorder does not implement is refused with an `error-reason` naming it, never ignored
//! silently. The caller drives timers with [`NgController::handle_timeout`] and moves endpoint
//! changes to the workers with [`NgController::poll_flow_change`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use linecord_ng::bencode::Value;
use linecord_ng::request::{Command, Request};
use linecord_ng::{message, reply};

use super::session::{FlowChange, Negotiation, NgError, Now, SessionTable};
use crate::media::{CoreCounters, Latching};
use crate::ports::PortPool;

/// How long a reply stays cached for retransmissions (rtpengine keeps them 30 s; SIP's
/// transaction timeout is 32 s).
pub const COOKIE_TTL_NS: u64 = 32_000_000_000;
/// Most cached replies; beyond this the oldest go first.
pub const MAX_CACHED_REPLIES: usize = 65_536;
/// Default number of call-ids `list` returns (rtpengine's default).
pub const DEFAULT_LIST_LIMIT: usize = 32;

/// Keys the recorder acts on (normalised spelling).
const KNOWN_KEYS: &[&str] = &[
    "command",
    "call-id",
    "from-tag",
    "to-tag",
    "via-branch",
    "sdp",
    "flags",
    "replace",
    "direction",
    "ice",
    "received-from",
    "media-address",
    "label",
    "metadata",
    "record-call",
    "limit",
];
/// Keys accepted and ignored because they change nothing for a single-interface relay (see
/// docs/ng-protocol.md).
const IGNORED_KEYS: &[&str] = &["tos", "delete-delay", "xmlrpc-callback", "supports"];
/// Flags that are accepted (normalised spelling).
const KNOWN_FLAGS: &[&str] = &[
    "trust-address",
    "sip-source-address",
    "symmetric",
    "asymmetric",
    "strict-source",
    "media-handover",
    "port-latching",
    "loop-protect",
    "all",
];

/// Recording counters the writer publishes, for `statistics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordingCounters {
    /// Recording files finished and spooled.
    pub finished: u64,
    /// Recordings whose file failed.
    pub failed: u64,
    /// Blocks written.
    pub blocks: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Times a recording buffer was needed and the memory budget was used up.
    pub buffer_exhausted: u64,
}

/// Counters of the `xdp` backend, for `statistics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Media packets the XDP program redirected to AF_XDP sockets.
    pub redirected: u64,
    /// Packets the XDP program left to the kernel.
    pub passed: u64,
    /// Frames with malformed headers (left to the kernel).
    pub parse_errors: u64,
    /// Forwarded packets sent through the kernel because the next hop was unresolved.
    pub kernel_path: u64,
}

/// Process-wide counters the backend publishes, for `statistics`.
pub trait CounterSource {
    /// Sum of all workers' counters.
    fn counters(&self) -> CoreCounters;
    /// The recording writer's counters.
    fn recording(&self) -> RecordingCounters {
        RecordingCounters::default()
    }
    /// The xdp backend's counters, when it runs.
    fn xdp(&self) -> Option<XdpStats> {
        None
    }
    /// Each packet worker's counters (one per CPU for udp, one per RX queue for xdp).
    fn per_worker(&self) -> Vec<CoreCounters> {
        Vec::new()
    }
}

impl CounterSource for () {
    fn counters(&self) -> CoreCounters {
        CoreCounters::default()
    }
}

struct Cached {
    reply: Vec<u8>,
    at_ns: u64,
}

/// The NG request handler and its reply cache.
pub struct NgController<P> {
    table: SessionTable<P>,
    cache: HashMap<(SocketAddr, Vec<u8>), Cached>,
    cache_order: VecDeque<(SocketAddr, Vec<u8>)>,
    started: Now,
    /// Requests answered with `result: error`.
    pub errors: u64,
    /// Requests answered from the cookie cache.
    pub retransmissions: u64,
}

impl<P: PortPool> NgController<P> {
    /// A controller over `table`, started at `now`.
    pub fn new(table: SessionTable<P>, now: Now) -> Self {
        NgController {
            table,
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            started: now,
            errors: 0,
            retransmissions: 0,
        }
    }

    /// The call table.
    pub fn table(&self) -> &SessionTable<P> {
        &self.table
    }

    /// The call table, mutably (latch events, the port pool).
    pub fn table_mut(&mut self) -> &mut SessionTable<P> {
        &mut self.table
    }

    /// Next endpoint change for the workers.
    pub fn poll_flow_change(&mut self) -> Option<FlowChange> {
        self.table.poll_flow_change()
    }

    /// Expires cached replies and idle calls. Call about once a second.
    pub fn handle_timeout(&mut self, now: Now) -> usize {
        while let Some((key, at)) = self
            .cache_order
            .front()
            .map(|k| (k.clone(), self.cache.get(k).map_or(0, |c| c.at_ns)))
        {
            if now.mono_ns.saturating_sub(at) < COOKIE_TTL_NS {
                break;
            }
            self.cache_order.pop_front();
            self.cache.remove(&key);
        }
        self.table.handle_timeout(now)
    }

    /// Handles one request datagram from `source`; returns the reply datagram, or `None` when
    /// there is no cookie to answer with.
    pub fn handle_datagram(
        &mut self,
        datagram: &[u8],
        source: SocketAddr,
        now: Now,
        counters: &dyn CounterSource,
    ) -> Option<Vec<u8>> {
        let cookie = match message::split_cookie(datagram) {
            Ok((cookie, _)) => cookie.to_vec(),
            Err(e) => {
                tracing::debug!(%source, error = %e, "NG datagram without a cookie dropped");
                self.errors += 1;
                return None;
            }
        };
        let key = (source, cookie);
        if let Some(c) = self.cache.get(&key) {
            self.retransmissions += 1;
            return Some(c.reply.clone());
        }
        let body = match message::parse(datagram) {
            Ok((_, value)) => match Request::from_value(value) {
                Ok(req) => self.handle_request(&req, now, counters),
                Err(e) => Err(NgError(format!("invalid request: {e}"))),
            },
            Err(e) => Err(NgError(format!("invalid message: {e}"))),
        };
        let body = body.unwrap_or_else(|e| {
            self.errors += 1;
            tracing::info!(%source, reason = %e.0, "NG request refused");
            reply::error(&e.0)
        });
        let out = message::frame(&key.1, &body);
        if self.cache.len() >= MAX_CACHED_REPLIES {
            if let Some(old) = self.cache_order.pop_front() {
                self.cache.remove(&old);
            }
        }
        self.cache_order.push_back(key.clone());
        self.cache.insert(
            key,
            Cached {
                reply: out.clone(),
                at_ns: now.mono_ns,
            },
        );
        Some(out)
    }

    fn handle_request(
        &mut self,
        req: &Request,
        now: Now,
        counters: &dyn CounterSource,
    ) -> Result<Value, NgError> {
        check_keys(req)?;
        match &req.command {
            Command::Ping => Ok(reply::pong()),
            Command::Offer | Command::Answer => {
                let is_answer = req.command == Command::Answer;
                let call_id = required(&req.call_id, "call-id")?;
                let from_tag = required(&req.from_tag, "from-tag")?;
                let sdp = req
                    .sdp
                    .as_deref()
                    .ok_or_else(|| NgError("missing key 'sdp'".into()))?;
                let (owner_tag, other_tag) = if is_answer {
                    (required(&req.to_tag, "to-tag")?, Some(from_tag))
                } else {
                    (from_tag, req.to_tag.as_deref())
                };
                let n = negotiation(req, call_id, owner_tag, other_tag, is_answer, sdp)?;
                let sdp_out = self.table.negotiate(&n, now)?;
                if req.record_call == Some(true) {
                    self.table.start_recording(call_id, None, now)?;
                }
                let mut r = reply::ok();
                r.insert("sdp", Value::Bytes(sdp_out));
                Ok(r)
            }
            Command::Delete => {
                let call_id = required(&req.call_id, "call-id")?;
                self.table.delete(call_id, now)
            }
            Command::Query => {
                let call_id = required(&req.call_id, "call-id")?;
                self.table.query(call_id, now)
            }
            Command::List => {
                let limit = match req.limit {
                    None => DEFAULT_LIST_LIMIT,
                    Some(l) if l > 0 => usize::try_from(l).unwrap_or(usize::MAX),
                    Some(l) => return Err(NgError(format!("invalid 'limit' {l}"))),
                };
                let mut r = reply::ok();
                let calls: Vec<Value> = self
                    .table
                    .list(limit)
                    .into_iter()
                    .map(Value::from)
                    .collect();
                r.insert("calls", calls);
                Ok(r)
            }
            Command::Statistics => Ok(self.statistics(now, counters)),
            Command::StartRecording => {
                let call_id = required(&req.call_id, "call-id")?;
                self.table
                    .start_recording(call_id, req.metadata.as_deref(), now)?;
                Ok(reply::ok())
            }
            Command::PauseRecording => {
                let call_id = required(&req.call_id, "call-id")?;
                self.table.pause_recording(call_id)?;
                Ok(reply::ok())
            }
            Command::StopRecording => {
                let call_id = required(&req.call_id, "call-id")?;
                if !self
                    .table
                    .stop_recording(call_id, linecord_recfile::StopReason::Stopped)?
                {
                    return Err(NgError("call is not being recorded".into()));
                }
                Ok(reply::ok())
            }
            other => Err(NgError(format!("unsupported command '{}'", other.as_str()))),
        }
    }

    fn statistics(&self, now: Now, counters: &dyn CounterSource) -> Value {
        let t = self.table.totals();
        let c = counters.counters();
        let mut current = Value::dict();
        current.insert("sessionsown", self.table.len() as u64);
        current.insert("sessionsforeign", 0u64);
        current.insert("sessionstotal", self.table.len() as u64);
        current.insert("transcodedmedia", 0u64);
        current.insert("freeportpairs", self.table.free_pairs() as u64);
        let mut total = Value::dict();
        total.insert(
            "uptime",
            now.mono_ns.saturating_sub(self.started.mono_ns) / 1_000_000_000,
        );
        total.insert("managedsessions", t.managed_sessions);
        total.insert("deletedsessions", t.deleted_sessions);
        total.insert("timeoutsessions", t.timeout_sessions);
        total.insert("rejectedsessions", t.port_exhaustion);
        total.insert("recordings", t.recordings);
        let r = counters.recording();
        total.insert("recordingsfinished", r.finished);
        total.insert("recordingsfailed", r.failed);
        total.insert("recordingblocks", r.blocks);
        total.insert("recordingbytes", r.bytes);
        total.insert("recordingbuffersexhausted", r.buffer_exhausted);
        total.insert("controlerrors", self.errors);
        total.insert("controlretransmissions", self.retransmissions);
        let mut packets = Value::dict();
        packets.insert("received", c.received);
        packets.insert("forwarded", c.forwarded);
        packets.insert("unknownport", c.unknown_port);
        packets.insert("malformed", c.malformed);
        packets.insert("sourcemismatch", c.source_mismatch);
        packets.insert("nodestination", c.no_destination);
        total.insert("packets", packets);
        let workers: Vec<Value> = counters
            .per_worker()
            .iter()
            .map(|c| {
                let mut d = Value::dict();
                d.insert("received", c.received);
                d.insert("forwarded", c.forwarded);
                d
            })
            .collect();
        total.insert("workers", workers);
        if let Some(x) = counters.xdp() {
            let mut d = Value::dict();
            d.insert("redirected", x.redirected);
            d.insert("passed", x.passed);
            d.insert("parseerrors", x.parse_errors);
            d.insert("kernelpath", x.kernel_path);
            total.insert("xdp", d);
        }
        let mut stats = Value::dict();
        stats.insert("currentstatistics", current);
        stats.insert("totalstatistics", total);
        let mut r = reply::ok();
        r.insert("statistics", stats);
        r
    }
}

fn required<'a>(v: &'a Option<String>, key: &str) -> Result<&'a str, NgError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| NgError(format!("missing key '{key}'")))
}

/// Refuses keys and flags the recorder does not implement.
fn check_keys(req: &Request) -> Result<(), NgError> {
    if let Some(k) = req
        .unknown_keys
        .iter()
        .find(|k| !KNOWN_KEYS.contains(&k.as_str()) && !IGNORED_KEYS.contains(&k.as_str()))
    {
        return Err(NgError(format!("unsupported key '{k}'")));
    }
    if let Some(f) = req
        .flags
        .iter()
        .find(|f| !KNOWN_FLAGS.contains(&f.as_str()))
    {
        return Err(NgError(format!("unsupported flag '{f}'")));
    }
    if let Some(r) = req
        .replace
        .iter()
        .find(|r| !matches!(r.as_str(), "origin" | "session-connection"))
    {
        return Err(NgError(format!("unsupported 'replace' value '{r}'")));
    }
    if let Some(ice) = req.ice.as_deref().filter(|i| *i != "remove") {
        return Err(NgError(format!(
            "unsupported 'ICE' value '{ice}' (only 'remove': the relay does not do ICE)"
        )));
    }
    if let [a, b] = req.direction.as_slice() {
        if a != b {
            return Err(NgError(format!(
                "unsupported 'direction' {a} -> {b}: the recorder has one media interface"
            )));
        }
    } else if req.direction.len() > 2 {
        return Err(NgError("invalid 'direction': more than two entries".into()));
    }
    Ok(())
}

fn parse_ip(key: &str, s: &str) -> Result<IpAddr, NgError> {
    s.trim()
        .parse()
        .map_err(|_| NgError(format!("invalid address '{s}' in '{key}'")))
}

fn negotiation<'a>(
    req: &'a Request,
    call_id: &'a str,
    owner_tag: &'a str,
    other_tag: Option<&'a str>,
    is_answer: bool,
    sdp: &'a [u8],
) -> Result<Negotiation<'a>, NgError> {
    let has = |f: &str| req.flags.iter().any(|x| x == f);
    let latching = if has("strict-source") {
        Latching::Strict
    } else if has("media-handover") {
        Latching::Handover
    } else if has("asymmetric") {
        Latching::Off
    } else {
        Latching::Symmetric
    };
    let received_from = req
        .received_from
        .as_ref()
        .map(|r| parse_ip("received from", &r.address))
        .transpose()?;
    let media_address = req
        .media_address
        .as_deref()
        .map(|a| parse_ip("media address", a))
        .transpose()?;
    Ok(Negotiation {
        call_id,
        owner_tag,
        other_tag,
        is_answer,
        sdp,
        latching,
        trust_address: has("trust-address"),
        received_from,
        media_address,
        replace_origin: req.replace.iter().any(|r| r == "origin"),
        label: req.label.as_deref(),
        metadata: req.metadata.as_deref(),
    })
}
