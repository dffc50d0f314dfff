//! The NG control endpoint as a state machine: datagram in, reply datagram out.
//!
//! [`NgController::handle_datagram`] takes one request as received (cookie, space, bencode
//! dictionary), its source and the time, and returns the reply to send back. Retransmissions
//! (same source and cookie within the cache TTL) get the cached reply without being run
//! again, as rtpengine's `control_ng.c` does ([`ReplyCache`], bounded in entries *and* bytes).
//! Validation of keys and flags lives here: anything the recorder does not implement is
//! refused with an `error-reason` naming it, never ignored silently. The caller drives timers
//! with [`NgController::handle_timeout`] and moves endpoint changes to the workers with
//! [`NgController::poll_flow_change`].
//!
//! Hostile input: the handler is total (any datagram gives a reply or `None`, never a panic)
//! and every resource a request can make it hold is bounded: the body is decoded within
//! [`message::REQUEST_LIMITS`], an `error-reason` names input only through
//! [`linecord_ng::echo`] (escaped, short), the log lines about refused requests go through a
//! [`RateLimiter`], and the per-call limits of [`TableSettings`] are checked before a single
//! port is taken.
//!
//! For tests and fuzz targets, [`NgController::in_memory`] builds a controller over an
//! in-memory table (port numbers only, no sockets) and [`NgController::handle_offline`]
//! feeds it one datagram.

use std::net::{IpAddr, SocketAddr};

use linecord_ng::bencode::Value;
use linecord_ng::echo;
use linecord_ng::request::{Command, Request};
use linecord_ng::{message, reply};

use super::cache::{CacheLimits, ReplyCache};
use super::session::{FlowChange, Negotiation, NgError, Now, SessionTable, TableSettings};
use crate::media::{CoreCounters, Latching};
use crate::ports::{PortPool, PortRange};
use linecord_ratelimit::RateLimiter;
use std::time::Duration;

/// How long a reply stays cached for retransmissions (rtpengine keeps them 30 s; SIP's
/// transaction timeout is 32 s).
pub const COOKIE_TTL_NS: u64 = 32_000_000_000;
/// Most cached replies; beyond this the oldest go first.
pub const MAX_CACHED_REPLIES: usize = 65_536;
/// Default byte budget of the reply cache (`--ng-reply-cache`, MiB). A call's offer, answer
/// and delete replies take ~2.7 KB with their keys (one audio line; see
/// `reply_sizes_of_a_call`), so at sipctl's target of 1 000 calls/s 32 MiB holds the last
/// ~12 s: more than twice the retry window of Kamailio's rtpengine module (5 tries, 1 s
/// apart). Entries then leave by TTL or the entry bound, not by bytes.
pub const DEFAULT_REPLY_CACHE_BYTES: usize = 32 << 20;
/// Default number of call-ids `list` returns (rtpengine's default).
pub const DEFAULT_LIST_LIMIT: usize = 32;
/// Most log lines a second about refused requests (then one "suppressed" line): a flood of
/// bad requests costs at most ~3 KB of log a second.
pub const REFUSAL_LOGS_PER_SEC: u32 = 10;

/// Settings of the NG endpoint (the call table has its own, [`TableSettings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NgSettings {
    /// Bounds of the reply cache.
    pub cache: CacheLimits,
    /// Most log lines a second about refused requests.
    pub refusal_logs_per_sec: u32,
}

impl Default for NgSettings {
    fn default() -> Self {
        NgSettings {
            cache: CacheLimits {
                max_bytes: DEFAULT_REPLY_CACHE_BYTES,
                max_entries: MAX_CACHED_REPLIES,
                ttl_ns: COOKIE_TTL_NS,
            },
            refusal_logs_per_sec: REFUSAL_LOGS_PER_SEC,
        }
    }
}

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

/// The NG request handler and its reply cache.
pub struct NgController<P> {
    table: SessionTable<P>,
    cache: ReplyCache,
    /// Log lines about requests refused with an `error-reason`.
    refusal_log: RateLimiter<u64>,
    /// Log lines about datagrams dropped without a reply (no cookie).
    drop_log: RateLimiter<u64>,
    started: Now,
    /// Requests answered with `result: error`, and datagrams dropped without a cookie.
    pub errors: u64,
    /// Requests answered from the cookie cache.
    pub retransmissions: u64,
}

impl NgController<PortRange> {
    /// A controller for tests and fuzz targets: an in-memory call table with
    /// [`TableSettings::default`] (advertises 127.0.0.1, default limits), a number-only port
    /// pool over 30000-39999 (no sockets are bound) and [`NgSettings::default`], started at
    /// `now`. Feed it with [`NgController::handle_offline`].
    pub fn in_memory(now: Now) -> Self {
        let table = SessionTable::new(TableSettings::default(), PortRange::new(30_000, 39_999));
        NgController::new(table, NgSettings::default(), now)
    }
}

impl<P: PortPool> NgController<P> {
    /// A controller over `table`, started at `now`.
    pub fn new(table: SessionTable<P>, settings: NgSettings, now: Now) -> Self {
        NgController {
            table,
            cache: ReplyCache::new(settings.cache),
            refusal_log: RateLimiter::new(settings.refusal_logs_per_sec, Duration::from_secs(1)),
            drop_log: RateLimiter::new(settings.refusal_logs_per_sec, Duration::from_secs(1)),
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

    /// The reply cache.
    pub fn cache(&self) -> &ReplyCache {
        &self.cache
    }

    /// Next endpoint change for the workers.
    pub fn poll_flow_change(&mut self) -> Option<FlowChange> {
        self.table.poll_flow_change()
    }

    /// Expires cached replies and idle calls, and reports suppressed log lines. Call about
    /// once a second.
    pub fn handle_timeout(&mut self, now: Now) -> usize {
        self.cache.expire(now.mono_ns);
        if let Some(k) = self.refusal_log.flush(now.mono_ns) {
            tracing::info!(
                suppressed = k,
                "suppressed {k} log lines about refused NG requests"
            );
        }
        if let Some(k) = self.drop_log.flush(now.mono_ns) {
            tracing::debug!(
                suppressed = k,
                "suppressed {k} log lines about dropped NG datagrams"
            );
        }
        self.table.handle_timeout(now)
    }

    /// Handles one datagram exactly as [`NgController::handle_datagram`] does with all
    /// packet counters zero, then discards the endpoint changes the daemon would hand to its
    /// workers. Sans-IO and total: the entry point for tests and fuzz targets.
    pub fn handle_offline(
        &mut self,
        source: SocketAddr,
        datagram: &[u8],
        now: Now,
    ) -> Option<Vec<u8>> {
        let reply = self.handle_datagram(datagram, source, now, &());
        while self.table.poll_flow_change().is_some() {}
        reply
    }

    /// Handles one request datagram from `source`; returns the reply datagram, or `None` when
    /// there is no cookie to answer with. Never panics, whatever `datagram` holds.
    pub fn handle_datagram(
        &mut self,
        datagram: &[u8],
        source: SocketAddr,
        now: Now,
        counters: &dyn CounterSource,
    ) -> Option<Vec<u8>> {
        let cookie = match message::split_cookie(datagram) {
            Ok((cookie, _)) => cookie,
            Err(e) => {
                self.errors += 1;
                if let Some(k) = self.drop_log.check(now.mono_ns) {
                    if k > 0 {
                        tracing::debug!(
                            suppressed = k,
                            "suppressed {k} log lines about dropped NG datagrams"
                        );
                    }
                    tracing::debug!(
                        %source,
                        error = %e,
                        len = datagram.len(),
                        "NG datagram without a usable cookie dropped"
                    );
                }
                return None;
            }
        };
        if let Some(reply) = self.cache.get(source, cookie, now.mono_ns) {
            self.retransmissions += 1;
            return Some(reply.to_vec());
        }
        let body = match message::parse_with(datagram, message::REQUEST_LIMITS) {
            Ok((_, value)) => match Request::from_value(value) {
                Ok(req) => self.handle_request(&req, now, counters),
                Err(e) => Err(NgError::InvalidRequest(e)),
            },
            Err(e) => Err(NgError::InvalidMessage(e)),
        };
        // The edge: a typed refusal becomes the reply's `error-reason`.
        let body = body.unwrap_or_else(|e| self.refuse(source, now, &e.to_string()));
        let mut out = message::frame(cookie, &body);
        if out.len() > message::MAX_REPLY {
            let reason = format!(
                "reply too large: {} bytes > {} (one UDP datagram)",
                out.len(),
                message::MAX_REPLY
            );
            let body = self.refuse(source, now, &reason);
            out = message::frame(cookie, &body);
        }
        self.cache.insert(source, cookie, &out, now.mono_ns);
        Some(out)
    }

    /// Counts a refusal, logs it (rate-limited, bounded) and returns its error reply.
    fn refuse(&mut self, source: SocketAddr, now: Now, reason: &str) -> Value {
        self.errors += 1;
        let reason = echo::reason(reason);
        if let Some(k) = self.refusal_log.check(now.mono_ns) {
            if k > 0 {
                tracing::info!(
                    suppressed = k,
                    "suppressed {k} log lines about refused NG requests"
                );
            }
            tracing::info!(%source, %reason, "NG request refused");
        }
        reply::error(&reason)
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
                let sdp = req.sdp.as_deref().ok_or(NgError::MissingKey("sdp"))?;
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
                    Some(l) => return Err(NgError::InvalidLimit(l)),
                };
                // As many as fit in one reply datagram.
                let mut room = message::MAX_REPLY - message::MAX_COOKIE - 64;
                let calls: Vec<Value> = self
                    .table
                    .list(limit)
                    .into_iter()
                    .take_while(|id| {
                        let cost = id.len() + 8;
                        room = room.saturating_sub(cost);
                        room > 0
                    })
                    .map(Value::from)
                    .collect();
                let mut r = reply::ok();
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
                    return Err(NgError::NotRecording);
                }
                Ok(reply::ok())
            }
            other => Err(NgError::UnsupportedCommand(other.as_str().to_owned())),
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
        current.insert("replycacheentries", self.cache.len() as u64);
        current.insert("replycachebytes", self.cache.bytes() as u64);
        let mut total = Value::dict();
        total.insert(
            "uptime",
            now.mono_ns.saturating_sub(self.started.mono_ns) / 1_000_000_000,
        );
        total.insert("managedsessions", t.managed_sessions);
        total.insert("deletedsessions", t.deleted_sessions);
        total.insert("timeoutsessions", t.timeout_sessions);
        total.insert("rejectedsessions", t.port_exhaustion);
        total.insert("limitrejections", t.limit_rejections);
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

fn required<'a>(v: &'a Option<String>, key: &'static str) -> Result<&'a str, NgError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(NgError::MissingKey(key))
}

/// Refuses keys and flags the recorder does not implement.
fn check_keys(req: &Request) -> Result<(), NgError> {
    if let Some(k) = req
        .unknown_keys
        .iter()
        .find(|k| !KNOWN_KEYS.contains(&k.as_str()) && !IGNORED_KEYS.contains(&k.as_str()))
    {
        return Err(NgError::UnsupportedKey(k.clone()));
    }
    if let Some(f) = req
        .flags
        .iter()
        .find(|f| !KNOWN_FLAGS.contains(&f.as_str()))
    {
        return Err(NgError::UnsupportedFlag(f.clone()));
    }
    if let Some(r) = req
        .replace
        .iter()
        .find(|r| !matches!(r.as_str(), "origin" | "session-connection"))
    {
        return Err(NgError::UnsupportedReplace(r.clone()));
    }
    if let Some(ice) = req.ice.as_deref().filter(|i| *i != "remove") {
        return Err(NgError::UnsupportedIce(ice.to_owned()));
    }
    if let [a, b] = req.direction.as_slice() {
        if a != b {
            return Err(NgError::UnsupportedDirection(a.clone(), b.clone()));
        }
    } else if req.direction.len() > 2 {
        return Err(NgError::TooManyDirections);
    }
    Ok(())
}

fn parse_ip(key: &'static str, s: &str) -> Result<IpAddr, NgError> {
    s.trim().parse().map_err(|_| NgError::InvalidAddress {
        key,
        value: s.to_owned(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortError;
    use linecord_ng::echo::{ELLIPSIS, MAX_ECHO, MAX_REASON};
    use linecord_ng::message::{MAX_COOKIE, MAX_REPLY};
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn at(s: u64) -> Now {
        Now {
            mono_ns: s * S,
            unix_ms: 1_700_000_000_000 + s * 1000,
        }
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5060))
    }

    /// A port pool that counts what was taken, to show that a refusal takes nothing.
    struct Counting {
        range: PortRange,
        allocated: usize,
    }

    impl PortPool for Counting {
        fn allocate(&mut self) -> Result<u16, PortError> {
            self.allocated += 1;
            self.range.allocate()
        }
        fn release(&mut self, rtp_port: u16) {
            self.range.release(rtp_port);
        }
        fn free_pairs(&self) -> usize {
            self.range.free_pairs()
        }
    }

    fn counting(settings: NgSettings) -> NgController<Counting> {
        let pool = Counting {
            range: PortRange::new(30_000, 39_999),
            allocated: 0,
        };
        NgController::new(
            SessionTable::new(TableSettings::default(), pool),
            settings,
            at(0),
        )
    }

    /// Sends `body` with `cookie`; returns the reply dictionary.
    fn call<P: PortPool>(ng: &mut NgController<P>, cookie: &str, body: &Value, now: Now) -> Value {
        let dg = message::frame(cookie.as_bytes(), body);
        let out = ng.handle_datagram(&dg, peer(), now, &()).expect("a reply");
        while ng.poll_flow_change().is_some() {}
        let (c, v) = message::parse(&out).expect("the reply parses");
        assert_eq!(c, cookie.as_bytes());
        v
    }

    fn reason(v: &Value) -> &str {
        assert_eq!(
            v.get("result").and_then(Value::as_str),
            Some("error"),
            "{v:?}"
        );
        v.get("error-reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn sdp_with_lines(lines: usize) -> Vec<u8> {
        let mut s = String::from(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n",
        );
        for i in 0..lines {
            s.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 4000 + 2 * (i % 1000)));
        }
        s.into_bytes()
    }

    fn offer(call_id: &str, from: &str, sdp: &[u8]) -> Value {
        let mut r = Request::new(Command::Offer);
        r.call_id = Some(call_id.into());
        r.from_tag = Some(from.into());
        r.sdp = Some(sdp.to_vec());
        r.to_value()
    }

    #[test]
    fn cookie_length_is_bounded_and_over_long_cookies_are_dropped() {
        let mut ng = NgController::in_memory(at(0));
        let long = [vec![b'c'; MAX_COOKIE + 1], b" d7:command4:pinge".to_vec()].concat();
        assert_eq!(ng.handle_offline(peer(), &long, at(1)), None);
        // A cookie with no space within MAX_COOKIE + 1 bytes: no cookie at all.
        assert_eq!(ng.handle_offline(peer(), &vec![b'c'; 60_000], at(1)), None);
        assert_eq!(ng.errors, 2);
        assert!(
            ng.cache().is_empty(),
            "nothing is cached for a dropped datagram"
        );
        let max = [vec![b'c'; MAX_COOKIE], b" d7:command4:pinge".to_vec()].concat();
        let out = ng.handle_offline(peer(), &max, at(1)).unwrap();
        assert!(out.starts_with(&max[..MAX_COOKIE + 1]));
        assert_eq!(ng.cache().len(), 1);
        assert!(ng.cache().bytes() <= super::super::cache::entry_cost(&max[..MAX_COOKIE], &out));
    }

    #[test]
    fn an_unknown_60kb_key_is_named_by_a_short_escaped_prefix() {
        let mut ng = NgController::in_memory(at(0));
        let mut body = Request::new(Command::Ping).to_value();
        body.insert(&"k".repeat(60_000), 1);
        let v = call(&mut ng, "c1", &body, at(1));
        assert_eq!(
            reason(&v),
            format!("unsupported key '{}{ELLIPSIS}'", "k".repeat(MAX_ECHO))
        );
        assert!(v.to_bytes().len() < 200, "{} bytes", v.to_bytes().len());
        // Control characters and bytes that are not UTF-8 never reach the reply raw.
        let mut body = Request::new(Command::Ping).to_value();
        if let Value::Dict(d) = &mut body {
            d.insert(b"evil\x1b[2J\r\n\xff".to_vec(), Value::int(1));
        }
        let v = call(&mut ng, "c2", &body, at(1));
        let r = reason(&v);
        assert!(
            r.starts_with("unsupported key 'evil\\u{1b}[2j\\r\\n"),
            "{r}"
        );
        assert!(!r.chars().any(char::is_control), "{r:?}");
        // Long flags, commands and values likewise.
        let mut flagged = Request::new(Command::Ping);
        flagged.flags = vec!["f".repeat(10_000)];
        let r = call(&mut ng, "c3", &flagged.to_value(), at(1));
        assert!(reason(&r).len() < 100);
        let cmd = Request::new(Command::Other("x".repeat(30_000))).to_value();
        let r = call(&mut ng, "c4", &cmd, at(1));
        assert!(reason(&r).starts_with("unsupported command 'xxx") && reason(&r).len() < 100);
        let mut lim = Request::new(Command::List).to_value();
        lim.insert("limit", "9".repeat(30_000));
        let r = call(&mut ng, "c5", &lim, at(1));
        assert!(
            reason(&r).contains("limit") && reason(&r).len() < 150,
            "{}",
            reason(&r)
        );
    }

    #[test]
    fn the_reply_cache_is_bounded_in_bytes_through_the_handler() {
        let max_bytes = 256 << 10;
        let mut ng = NgController::in_memory(at(0));
        ng.cache = ReplyCache::new(CacheLimits {
            max_bytes,
            max_entries: MAX_CACHED_REPLIES,
            ttl_ns: COOKIE_TTL_NS,
        });
        // Big successful replies: `query` of a call with 16 media lines (~11 KB each).
        call(
            &mut ng,
            "setup",
            &offer("big", "A", &sdp_with_lines(16)),
            at(1),
        );
        let mut q = Request::new(Command::Query);
        q.call_id = Some("big".into());
        let q = q.to_value();
        let mut biggest = 0;
        for i in 0..200 {
            let v = call(&mut ng, &format!("q{i}"), &q, at(1));
            assert_eq!(v.get("result").and_then(Value::as_str), Some("ok"));
            biggest = biggest.max(v.to_bytes().len());
            assert!(
                ng.cache().bytes() <= max_bytes,
                "{} bytes",
                ng.cache().bytes()
            );
        }
        assert!(biggest > 8_000, "the replies are big: {biggest}");
        assert!(ng.cache().len() < 200, "old replies were evicted");
        // The newest is still answered from the cache; an evicted one is run again.
        let before = ng.retransmissions;
        call(&mut ng, "q199", &q, at(2));
        assert_eq!(ng.retransmissions, before + 1);
        call(&mut ng, "q0", &q, at(2));
        assert_eq!(ng.retransmissions, before + 1);
        // And the statistics say so.
        let s = call(
            &mut ng,
            "stats",
            &Request::new(Command::Statistics).to_value(),
            at(2),
        );
        let cur = s
            .get("statistics")
            .and_then(|s| s.get("currentstatistics"))
            .unwrap();
        let bytes = cur.get("replycachebytes").and_then(Value::as_int).unwrap();
        assert!(bytes > 0 && bytes as usize <= max_bytes);
    }

    #[test]
    fn retransmissions_are_answered_from_the_cache_until_the_ttl() {
        let mut ng = NgController::in_memory(at(0));
        let body = offer("c1", "A", &sdp_with_lines(1));
        let first = call(&mut ng, "k1", &body, at(1));
        let free = ng.table().free_pairs();
        assert_eq!(call(&mut ng, "k1", &body, at(2)), first);
        assert_eq!((ng.retransmissions, ng.table().free_pairs()), (1, free));
        ng.handle_timeout(at(1 + COOKIE_TTL_NS / S));
        assert!(ng.cache().is_empty());
    }

    #[test]
    fn too_many_media_lines_is_refused_by_name_and_takes_no_ports() {
        let mut ng = counting(NgSettings::default());
        let free = ng.table().free_pairs();
        let v = call(
            &mut ng,
            "k1",
            &offer("c1", "A", &sdp_with_lines(2_400)),
            at(1),
        );
        assert_eq!(
            reason(&v),
            "too many media lines: 2400 > max-media-per-call 16"
        );
        assert_eq!(
            ng.table_mut().pool_mut().allocated,
            0,
            "no port was allocated"
        );
        assert_eq!(ng.table().free_pairs(), free);
        assert!(ng.table().is_empty());
        assert_eq!(ng.table().totals().limit_rejections, 1);
        assert_eq!(ng.table().totals().managed_sessions, 0);
        // One over the limit is refused; at the limit it works (two pairs a line).
        let v = call(&mut ng, "k2", &offer("c1", "A", &sdp_with_lines(17)), at(1));
        assert_eq!(
            reason(&v),
            "too many media lines: 17 > max-media-per-call 16"
        );
        assert_eq!(ng.table_mut().pool_mut().allocated, 0);
        let v = call(&mut ng, "k3", &offer("c1", "A", &sdp_with_lines(16)), at(1));
        assert_eq!(v.get("result").and_then(Value::as_str), Some("ok"));
        assert_eq!(ng.table().free_pairs(), free - 32);
        // A re-offer adding lines past the limit is refused and keeps the call as it was.
        let v = call(&mut ng, "k4", &offer("c1", "A", &sdp_with_lines(20)), at(2));
        assert!(reason(&v).starts_with("too many media lines: 20 >"));
        assert_eq!(ng.table().free_pairs(), free - 32);
        assert_eq!(ng.table().len(), 1);
        // An answer is held to the same limit.
        let mut answer = Request::new(Command::Answer);
        answer.call_id = Some("c1".into());
        answer.from_tag = Some("A".into());
        answer.to_tag = Some("B".into());
        answer.sdp = Some(sdp_with_lines(40));
        let v = call(&mut ng, "k5", &answer.to_value(), at(2));
        assert!(reason(&v).starts_with("too many media lines: 40 >"));
        assert_eq!(ng.table().free_pairs(), free - 32);
    }

    #[test]
    fn the_sdp_size_is_bounded() {
        let mut ng = counting(NgSettings::default());
        let mut big = sdp_with_lines(1);
        while big.len() <= TableSettings::default().max_sdp_size {
            big.extend_from_slice(b"a=x-pad:0123456789012345678901234567890123456789\r\n");
        }
        let v = call(&mut ng, "k1", &offer("c1", "A", &big), at(1));
        assert_eq!(
            reason(&v),
            format!("SDP too large: {} bytes > max-sdp-size 16384", big.len())
        );
        assert_eq!(ng.table_mut().pool_mut().allocated, 0);
        assert_eq!(ng.table().totals().limit_rejections, 1);
    }

    #[test]
    fn decoder_bounds_apply_to_requests() {
        let mut ng = NgController::in_memory(at(0));
        let deep = [
            b"c1 d7:command4:ping1:x".to_vec(),
            vec![b'l'; 100],
            vec![b'e'; 101],
        ]
        .concat();
        let out = ng.handle_offline(peer(), &deep, at(1)).unwrap();
        let (_, v) = message::parse(&out).unwrap();
        assert!(
            reason(&v).contains("nesting deeper than 16"),
            "{}",
            reason(&v)
        );
        let mut many = b"c2 d7:command4:ping5:flagsl".to_vec();
        many.extend(b"i1e".repeat(10_000));
        many.extend(b"ee");
        let out = ng.handle_offline(peer(), &many, at(1)).unwrap();
        let (_, v) = message::parse(&out).unwrap();
        assert!(
            reason(&v).contains("more than 4096 items"),
            "{}",
            reason(&v)
        );
    }

    #[test]
    fn a_reply_too_large_for_a_datagram_becomes_an_error() {
        let mut ng = NgController::in_memory(at(0));
        // Tags of 20 KB each: `query` names each tag three times (> 64 KB).
        let mut o = Request::new(Command::Offer);
        o.call_id = Some("c1".into());
        o.from_tag = Some("a".repeat(20_000));
        o.to_tag = Some("b".repeat(20_000));
        o.sdp = Some(sdp_with_lines(1));
        let v = call(&mut ng, "k1", &o.to_value(), at(1));
        assert_eq!(v.get("result").and_then(Value::as_str), Some("ok"), "{v:?}");
        let mut q = Request::new(Command::Query);
        q.call_id = Some("c1".into());
        let dg = message::frame(b"k2", &q.to_value());
        let out = ng.handle_offline(peer(), &dg, at(1)).unwrap();
        assert!(out.len() <= MAX_REPLY);
        let (_, v) = message::parse(&out).unwrap();
        assert!(
            reason(&v).starts_with("reply too large: "),
            "{}",
            reason(&v)
        );
    }

    #[test]
    fn refusal_logs_are_rate_limited() {
        let mut ng = NgController::in_memory(at(0));
        let bad = Request::new(Command::Other("nope".into())).to_value();
        for i in 0..100 {
            call(&mut ng, &format!("c{i}"), &bad, at(1));
        }
        assert_eq!(ng.errors, 100);
        assert_eq!(
            ng.refusal_log.suppressed(),
            100 - u64::from(REFUSAL_LOGS_PER_SEC)
        );
        ng.handle_timeout(at(2));
        assert_eq!(ng.refusal_log.suppressed(), 0, "reported by the timer");
    }

    #[test]
    fn reply_sizes_of_a_call() {
        // Backs DEFAULT_REPLY_CACHE_BYTES: what one simple call costs the cache.
        let mut ng = NgController::in_memory(at(0));
        // The SDP of recorder/tests/support's `party_sdp`.
        let sdp = b"v=0\r\no=- 1545997027 1 IN IP4 192.0.2.10\r\ns=tester\r\n\
            c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\n\
            a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
            a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";
        let id = "a84b4c76e66710@pc33.atlanta.example.com";
        call(&mut ng, "5323_1", &offer(id, "1928301774", sdp), at(1));
        let mut a = Request::new(Command::Answer);
        a.call_id = Some(id.into());
        a.from_tag = Some("1928301774".into());
        a.to_tag = Some("a6c85cf".into());
        a.sdp = Some(sdp.to_vec());
        call(&mut ng, "5323_2", &a.to_value(), at(1));
        let mut d = Request::new(Command::Delete);
        d.call_id = Some(id.into());
        call(&mut ng, "5323_3", &d.to_value(), at(1));
        let per_call = ng.cache().bytes();
        eprintln!("one call's replies cost the cache {per_call} bytes");
        assert!(
            (1_000..=3_000).contains(&per_call),
            "{per_call} bytes per call"
        );
        // 1 000 calls/s for 10 s fit in the default budget.
        assert!(per_call * 1_000 * 10 <= DEFAULT_REPLY_CACHE_BYTES);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
            Just(Value::str("offer")),
            Just(Value::str("127.0.0.1")),
            Just(Value::str("IP4")),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..6),
                    inner,
                    0..6
                )
                .prop_map(Value::Dict),
            ]
        })
    }

    fn arb_sdp() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            Just(b"v=0".to_vec()),
            Just(b"o=- 1 1 IN IP4 192.0.2.1".to_vec()),
            Just(b"s=-".to_vec()),
            Just(b"t=0 0".to_vec()),
            Just(b"c=IN IP4 192.0.2.1".to_vec()),
            Just(b"c=IN IP6 ::".to_vec()),
            Just(b"m=audio 4000 RTP/AVP 0 8".to_vec()),
            Just(b"m=audio 0 RTP/AVP 0".to_vec()),
            Just(b"m=video 65535 RTP/AVP 96".to_vec()),
            Just(b"m=audio 4000 TCP/RTP/AVP 0".to_vec()),
            Just(b"a=rtcp:65535 IN IP4 192.0.2.9".to_vec()),
            Just(b"a=rtcp-mux".to_vec()),
            Just(b"a=rtpmap:101 telephone-event/8000".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..20),
        ];
        proptest::collection::vec(line, 0..24).prop_map(|lines| {
            lines
                .into_iter()
                .flat_map(|l| l.into_iter().chain(*b"\r\n"))
                .collect()
        })
    }

    fn valid_sdp() -> impl Strategy<Value = Vec<u8>> {
        (1..4usize, any::<bool>()).prop_map(|(lines, mux)| {
            let mut s = sdp_with_lines(lines);
            if mux {
                s.extend_from_slice(b"a=rtcp-mux\r\n");
            }
            s
        })
    }

    /// A plausible value for `key`, or (one time in four) anything at all.
    fn arb_entry() -> impl Strategy<Value = (&'static str, Value)> {
        let strs = |items: &'static [&'static str]| {
            proptest::sample::subsequence(items, 0..=items.len())
                .prop_map(|v| Value::List(v.into_iter().map(Value::str).collect()))
        };
        let typed = prop_oneof![
            prop_oneof![Just("c1"), Just("c2")].prop_map(|v| ("call-id", Value::str(v))),
            prop_oneof![Just("A"), Just("B")].prop_map(|v| ("from-tag", Value::str(v))),
            prop_oneof![Just("A"), Just("B")].prop_map(|v| ("to-tag", Value::str(v))),
            valid_sdp().prop_map(|v| ("sdp", Value::Bytes(v))),
            arb_sdp().prop_map(|v| ("sdp", Value::Bytes(v))),
            strs(&[
                "trust-address",
                "symmetric",
                "strict-source",
                "media-handover"
            ])
            .prop_map(|v| ("flags", v)),
            strs(&["origin", "session-connection"]).prop_map(|v| ("replace", v)),
            Just(("ICE", Value::str("remove"))),
            Just((
                "received from",
                Value::List(vec![Value::str("IP4"), Value::str("192.0.2.1")])
            )),
            Just(("media address", Value::str("192.0.2.7"))),
            prop_oneof![Just("yes"), Just("no")].prop_map(|v| ("record call", Value::str(v))),
            (1..50i64).prop_map(|v| ("limit", Value::Int(v))),
            Just(("label", Value::str("caller"))),
            Just(("metadata", Value::str("agent=1"))),
        ];
        let key = prop_oneof![
            Just("call-id"),
            Just("from-tag"),
            Just("to-tag"),
            Just("sdp"),
            Just("flags"),
            Just("direction"),
            Just("received from"),
            Just("record call"),
            Just("limit"),
            Just("metadata"),
        ];
        prop_oneof![3 => typed, 1 => (key, arb_value())]
    }

    /// A request-shaped dictionary: a command, the usual call keys, and entries of
    /// [`arb_entry`] on top.
    fn arb_request() -> impl Strategy<Value = Value> {
        let command = prop_oneof![
            Just("ping"),
            Just("offer"),
            Just("answer"),
            Just("delete"),
            Just("query"),
            Just("list"),
            Just("statistics"),
            Just("start recording"),
            Just("pause recording"),
            Just("stop recording"),
        ];
        (
            command,
            valid_sdp(),
            proptest::collection::vec(arb_entry(), 0..5),
        )
            .prop_map(|(cmd, sdp, entries)| {
                let mut d = Value::dict();
                d.insert("command", cmd);
                d.insert("call-id", "c1");
                d.insert("from-tag", "A");
                if cmd == "answer" {
                    d.insert("to-tag", "B");
                }
                d.insert("sdp", sdp);
                for (k, v) in entries {
                    d.insert(k, v);
                }
                d
            })
    }

    fn check_reply(out: Option<Vec<u8>>) -> Result<(), TestCaseError> {
        if let Some(out) = out {
            prop_assert!(out.len() <= MAX_REPLY);
            let (_, v) = message::parse(&out).expect("every reply parses");
            let result = v.get("result").and_then(Value::as_str);
            prop_assert!(result.is_some());
            if let Some(r) = v.get("error-reason").and_then(Value::as_str) {
                prop_assert!(r.len() <= MAX_REASON);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_bytes_get_a_valid_reply_or_none(
            input in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let mut ng = NgController::in_memory(at(0));
            check_reply(ng.handle_offline(peer(), &input, at(1)))?;
            let mut framed = b"c ".to_vec();
            framed.extend(&input);
            check_reply(ng.handle_offline(peer(), &framed, at(1)))?;
        }

        #[test]
        fn any_request_sequence_is_handled_totally(
            reqs in proptest::collection::vec(arb_request(), 1..8)
        ) {
            let mut ng = counting(NgSettings::default());
            // Most sequences then act on an existing call.
            call(&mut ng, "setup", &offer("c1", "A", &sdp_with_lines(2)), at(0));
            for (i, r) in reqs.iter().enumerate() {
                let dg = message::frame(format!("c{i}").as_bytes(), r);
                let out = ng.handle_datagram(&dg, peer(), at(i as u64), &());
                while ng.poll_flow_change().is_some() {}
                check_reply(out)?;
            }
            // Once every call has timed out, every port taken has come back.
            ng.handle_timeout(at(1_000));
            prop_assert!(ng.table().is_empty());
            prop_assert_eq!(ng.table().free_pairs(), 5_000);
        }
    }
}
