//! Locating SIP servers (RFC 3263 §4), sans-IO: which DNS records to ask for, and the ordered
//! list of targets (address, port, transport) they give.
//!
//! The [`Locator`] is a small DNS record cache plus the RFC 3263 algorithm running over it.
//! It parses no DNS wire format (the resolver in the daemon does that) and opens no socket:
//!
//! ```text
//! let dest = Destination::from_uri(&uri)?;
//! match locator.locate(now, &dest, &mut rng) {
//!     Located::Targets { targets, .. } => try targets[0], then the next (Failover)
//!     Located::Pending => come back after answers arrive
//!     Located::Failed(e) => 502/503
//! }
//! while let Some(q) = locator.poll_query(now) { resolve q; locator.handle_answer(now, &q, a) }
//! wake up at locator.poll_timeout() and call locate() again (records expire; a refresh is
//! asked for, the last good answer is used meanwhile)
//! ```
//!
//! Each `locate` goes as far as the cached answers allow (NAPTR, then SRV, then A/AAAA) and
//! asks for what is missing or expired; a name is looked up at most once at a time. An
//! expired or failed lookup keeps serving its last good records until a new answer comes
//! (RFC 2308 negative answers are cached like positive ones). Work is bounded: at most
//! [`MAX_RECORDS`] records per answer, [`MAX_ENTRIES`] names in the cache (least recently
//! used dropped first), and the NAPTR → SRV → A/AAAA chain is at most three deep.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::message::Uri;
use super::transaction::Peer;

/// Records kept per answer; the rest are dropped (a SIP domain has a handful).
pub const MAX_RECORDS: usize = 32;
/// Names × record types kept in the cache.
pub const MAX_ENTRIES: usize = 1024;
/// Shortest time an answer is kept, whatever its TTL (a TTL of 0 would ask on every call).
pub const MIN_TTL: Duration = Duration::from_secs(5);
/// Longest time an answer is kept, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Wait before asking again after a lookup failed (timeout, SERVFAIL, no server).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// Targets kept in one located list.
pub const MAX_TARGETS: usize = 16;

pub use super::transaction::Transport;

/// What RFC 3263 calls each transport in DNS (the transaction layer's transport is the one
/// transport model; its default ports are RFC 3261 §19.1.2's).
impl Transport {
    /// The transport of a `transport=` URI parameter (case-insensitive).
    pub fn from_param(p: &str) -> Option<Transport> {
        match p.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }

    /// RFC 3263 §4.1: the SRV name prefix for this transport.
    pub fn srv_prefix(self) -> &'static str {
        match self {
            Transport::Udp => "_sip._udp.",
            Transport::Tcp => "_sip._tcp.",
            Transport::Tls => "_sips._tcp.",
        }
    }

    /// RFC 3263 §4.1: the NAPTR service field for this transport.
    pub fn naptr_service(self) -> &'static str {
        match self {
            Transport::Udp => "SIP+D2U",
            Transport::Tcp => "SIP+D2T",
            Transport::Tls => "SIPS+D2T",
        }
    }

    fn from_naptr_service(s: &str) -> Option<Transport> {
        [Transport::Udp, Transport::Tcp, Transport::Tls]
            .into_iter()
            .find(|t| t.naptr_service().eq_ignore_ascii_case(s))
    }
}

/// One place to send a request to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// Address and port.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

impl Target {
    /// The transaction layer's peer for this target.
    pub fn peer(&self) -> Peer {
        Peer {
            addr: self.addr,
            transport: self.transport,
        }
    }
}

/// The host part of a destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A numeric address: no DNS.
    Ip(IpAddr),
    /// A domain name, lower case, without a trailing dot.
    Name(String),
}

/// What RFC 3263 needs from a URI: host (or `maddr`), port, transport, `sips`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Host, or the `maddr` parameter when present (RFC 3263 §4).
    pub host: Host,
    /// Explicit port.
    pub port: Option<u16>,
    /// Explicit `transport=` parameter.
    pub transport: Option<Transport>,
    /// A `sips:` URI: TLS only (RFC 3263 §4.1).
    pub secure: bool,
}

/// Why a destination cannot be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    /// Not a `sip:` or `sips:` URI.
    #[error("{0:?} is not a sip: or sips: URI")]
    Scheme(String),
    /// The host is neither an IP address nor a valid domain name.
    #[error("{0:?} is not a host name or IP address")]
    Host(String),
    /// `transport=` names a transport SIP over DNS does not know (e.g. sctp, ws).
    #[error("transport {0:?} is not supported")]
    Transport(String),
    /// DNS gave no usable address for the name (all answers empty or failed).
    #[error("no address found for {0}")]
    NoTargets(String),
}

/// Longest domain name (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 253;

fn normalize_name(h: &str) -> Option<String> {
    let h = h.strip_suffix('.').unwrap_or(h);
    let ok = !h.is_empty()
        && h.len() <= MAX_NAME_LEN
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then(|| h.to_ascii_lowercase())
}

impl Destination {
    /// The destination of a SIP URI (RFC 3263 §4: `maddr` replaces the host).
    pub fn from_uri(uri: &Uri) -> Result<Destination, LocateError> {
        let secure = match uri.scheme.as_str() {
            "sip" => false,
            "sips" => true,
            s => return Err(LocateError::Scheme(s.to_owned())),
        };
        let host = uri
            .param("maddr")
            .and_then(|p| p.value.as_deref())
            .unwrap_or(&uri.host);
        let transport = match uri.param("transport").and_then(|p| p.value.as_deref()) {
            None => None,
            Some(t) => match Transport::from_param(t) {
                // RFC 3263 §4.1: for a sips URI, transport=tcp means TLS over TCP.
                Some(Transport::Tcp) if secure => Some(Transport::Tls),
                // RFC 5630 §3.1.2: SIPS is never UDP.
                Some(Transport::Udp) if secure => return Err(LocateError::Transport(t.to_owned())),
                Some(t) => Some(t),
                None => return Err(LocateError::Transport(t.to_owned())),
            },
        };
        Ok(Destination {
            host: Self::host(host)?,
            port: uri.port,
            transport,
            secure,
        })
    }

    /// Parses a host: an IPv4 address, an IPv6 reference (with or without brackets) or a
    /// domain name.
    pub fn host(h: &str) -> Result<Host, LocateError> {
        let bare = h.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        normalize_name(h)
            .map(Host::Name)
            .ok_or_else(|| LocateError::Host(h.to_owned()))
    }

    /// The one target of a numeric host (RFC 3263 §4.1: UDP for sip, TLS for sips unless the
    /// URI says otherwise; §4.2: the URI's port or the transport's default); `None` for a name.
    pub fn numeric_target(&self) -> Option<Target> {
        let Host::Ip(ip) = self.host else {
            return None;
        };
        let transport = self.transport.unwrap_or_else(|| self.default_transport());
        let port = self.port.unwrap_or_else(|| transport.default_port());
        Some(Target {
            addr: SocketAddr::new(ip, port),
            transport,
        })
    }

    fn default_transport(&self) -> Transport {
        if self.secure {
            Transport::Tls
        } else {
            Transport::Udp
        }
    }
}

/// A DNS record type the locator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    /// NAPTR (RFC 3403).
    Naptr,
    /// SRV (RFC 2782).
    Srv,
    /// A (IPv4).
    A,
    /// AAAA (IPv6).
    Aaaa,
}

/// One lookup to perform: a name (lower case, no trailing dot) and a type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Query {
    /// The name.
    pub name: String,
    /// The record type.
    pub rtype: RecordType,
}

impl Query {
    fn new(name: &str, rtype: RecordType) -> Query {
        Query {
            name: name.to_owned(),
            rtype,
        }
    }
}

/// A NAPTR record (RFC 3403 §4.1), the fields RFC 3263 uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    /// ORDER: lower first.
    pub order: u16,
    /// PREFERENCE: lower first among equal orders.
    pub preference: u16,
    /// FLAGS, e.g. `S` (the replacement is an SRV name).
    pub flags: String,
    /// SERVICES, e.g. `SIP+D2U`.
    pub services: String,
    /// REPLACEMENT: the next name to look up.
    pub replacement: String,
}

/// An SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Priority: lower first.
    pub priority: u16,
    /// Weight: share among equal priorities.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target host name; `.` (empty) means the service is not offered.
    pub target: String,
}

/// The data of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// NAPTR.
    Naptr(Naptr),
    /// SRV.
    Srv(Srv),
    /// A or AAAA.
    Addr(IpAddr),
}

/// One record of an answer with its TTL in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// TTL, seconds.
    pub ttl: u32,
    /// The data.
    pub data: RecordData,
}

/// The outcome of one [`Query`], as the resolver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Records (of the type asked; others are ignored).
    Records(Vec<Record>),
    /// The name does not exist or has no records of this type, known for `ttl` seconds
    /// (RFC 2308: the SOA minimum; the resolver passes what it has).
    Empty {
        /// Negative TTL, seconds.
        ttl: u32,
    },
    /// The lookup failed (timeout, SERVFAIL, refused): the last good answer stays in use.
    Failed,
}

/// The result of [`Locator::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// Targets in the order to try them (RFC 3263 §4.3: the next one after a failure).
    Targets {
        /// At least one target, at most [`MAX_TARGETS`].
        targets: Vec<Target>,
        /// When the shortest TTL of the records used runs out (`None`: numeric host, no DNS).
        expires: Option<Instant>,
    },
    /// Lookups are outstanding: drive [`Locator::poll_query`] and ask again.
    Pending,
    /// No target can be had.
    Failed(LocateError),
}

#[derive(Debug)]
struct Entry {
    /// The last good answer (possibly empty) and when it expires.
    records: Option<(Vec<RecordData>, Instant)>,
    /// After a failure: not asked again before this.
    retry_at: Option<Instant>,
    /// A locate needs this answer (missing or expired) and it is not yet asked for.
    wanted: bool,
    /// Asked for through poll_query, no answer yet.
    in_flight: bool,
    last_used: Instant,
}

/// The RFC 3263 locator: a record cache and the algorithm over it (see the module docs).
#[derive(Debug, Default)]
pub struct Locator {
    cache: HashMap<Query, Entry>,
}

/// RFC 2782: orders SRV records of one answer: by priority, and within a priority by
/// weighted random selection with `rng` (the "running sum" algorithm; zero-weight records
/// first in the list so they keep a small chance, as the RFC asks).
pub fn order_srv(records: &[Srv], rng: &mut impl FnMut() -> u32) -> Vec<Srv> {
    let mut rest: Vec<Srv> = records
        .iter()
        .filter(|r| !r.target.is_empty() && r.target != ".")
        .cloned()
        .collect();
    // Stable: zero-weight records first within each priority.
    rest.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(rest.len());
    while let Some(first) = rest.first() {
        let prio = first.priority;
        let group_len = rest.iter().take_while(|r| r.priority == prio).count();
        let mut group: Vec<Srv> = rest.drain(..group_len).collect();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            // RFC 2782: "select a uniform random number between 0 and the sum (inclusive)",
            // then the first record whose running sum is >= it.
            let pick = u64::from(rng()) % (total + 1);
            let mut running = 0u64;
            let idx = group
                .iter()
                .position(|r| {
                    running += u64::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(idx));
        }
    }
    out
}

impl Locator {
    /// An empty locator.
    pub fn new() -> Locator {
        Locator::default()
    }

    /// The ordered targets of `dest`, as far as cached answers tell; asks (through
    /// [`poll_query`](Self::poll_query)) for records that are missing or expired. Expired
    /// records are still used until their refresh arrives. `rng` breaks ties among SRV
    /// records of equal priority (RFC 2782).
    pub fn locate(
        &mut self,
        now: Instant,
        dest: &Destination,
        rng: &mut impl FnMut() -> u32,
    ) -> Located {
        if let Some(target) = dest.numeric_target() {
            return Located::Targets {
                targets: vec![target],
                expires: None,
            };
        }
        let Host::Name(name) = &dest.host else {
            return Located::Failed(LocateError::Host(String::new()));
        };
        let name = name.clone();
        let mut run = Run {
            loc: self,
            now,
            pending: false,
            expires: None,
            targets: Vec::new(),
        };
        run.name(&name, dest, rng);
        let Run {
            pending,
            expires,
            mut targets,
            ..
        } = run;
        dedup(&mut targets);
        if !targets.is_empty() {
            // Some targets are known: use them even while other lookups are outstanding.
            targets.truncate(MAX_TARGETS);
            return Located::Targets { targets, expires };
        }
        if pending {
            Located::Pending
        } else {
            Located::Failed(LocateError::NoTargets(name))
        }
    }

    /// The next lookup to perform, if any; it counts as in flight until
    /// [`handle_answer`](Self::handle_answer) gets its answer. Call after every `locate`
    /// until it returns `None`.
    pub fn poll_query(&mut self, now: Instant) -> Option<Query> {
        let q = self
            .cache
            .iter()
            .filter(|(_, e)| e.wanted && !e.in_flight && e.retry_at.is_none_or(|r| r <= now))
            .map(|(q, _)| q)
            .min()?
            .clone();
        if let Some(e) = self.cache.get_mut(&q) {
            e.wanted = false;
            e.in_flight = true;
        }
        Some(q)
    }

    /// Takes the answer to a query returned by [`poll_query`](Self::poll_query) (an answer
    /// to anything else is stored too, as a record the next `locate` may use).
    pub fn handle_answer(&mut self, now: Instant, query: &Query, answer: Answer) {
        let e = self.entry(query.clone(), now);
        e.in_flight = false;
        match answer {
            Answer::Records(records) => {
                let keep: Vec<Record> = records
                    .into_iter()
                    .filter(|r| matches_type(&r.data, query.rtype))
                    .take(MAX_RECORDS)
                    .collect();
                let ttl = keep.iter().map(|r| r.ttl).min().unwrap_or(0);
                let data = keep.into_iter().map(|r| r.data).collect();
                e.records = Some((data, now + clamp_ttl(ttl)));
                e.retry_at = None;
            }
            Answer::Empty { ttl } => {
                e.records = Some((Vec::new(), now + clamp_ttl(ttl)));
                e.retry_at = None;
            }
            Answer::Failed => {
                // Keep the last good records; the next locate after this asks again.
                e.retry_at = Some(now + RETRY_AFTER_FAILURE);
            }
        }
    }

    /// When to call `locate` again for the destinations in use: the earliest expiry of a
    /// cached answer, or retry of a failed lookup, that no `locate` has seen pass yet.
    /// `None`: nothing to wait for.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.cache
            .values()
            .filter(|e| !e.in_flight)
            .filter_map(|e| {
                match (e.retry_at, &e.records) {
                    (Some(r), _) => Some(r),
                    (None, Some((_, exp))) => Some(*exp),
                    (None, None) => None,
                }
                // Once a locate ran after that moment it has asked for the refresh; an entry no
                // destination uses any more does not keep waking the caller.
                .filter(|t| *t > e.last_used)
            })
            .min()
    }

    /// Lookups asked for and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.cache.values().filter(|e| e.in_flight).count()
    }

    fn entry(&mut self, q: Query, now: Instant) -> &mut Entry {
        if !self.cache.contains_key(&q) && self.cache.len() >= MAX_ENTRIES {
            if let Some(oldest) = self
                .cache
                .iter()
                .filter(|(_, e)| !e.in_flight)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(q, _)| q.clone())
            {
                self.cache.remove(&oldest);
            }
        }
        self.cache.entry(q).or_insert_with(|| Entry {
            records: None,
            retry_at: None,
            wanted: false,
            in_flight: false,
            last_used: now,
        })
    }
}

fn matches_type(d: &RecordData, t: RecordType) -> bool {
    match (d, t) {
        (RecordData::Naptr(_), RecordType::Naptr) | (RecordData::Srv(_), RecordType::Srv) => true,
        (RecordData::Addr(ip), RecordType::A) => ip.is_ipv4(),
        (RecordData::Addr(ip), RecordType::Aaaa) => ip.is_ipv6(),
        _ => false,
    }
}

fn clamp_ttl(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, MAX_TTL)
}

fn dedup(targets: &mut Vec<Target>) {
    let mut seen = Vec::with_capacity(targets.len());
    targets.retain(|t| {
        let new = !seen.contains(t);
        if new {
            seen.push(*t);
        }
        new
    });
}

/// One `locate` pass over the cache.
struct Run<'a> {
    loc: &'a mut Locator,
    now: Instant,
    /// A lookup this pass needs has no answer yet.
    pending: bool,
    expires: Option<Instant>,
    targets: Vec<Target>,
}

impl Run<'_> {
    /// The cached records of `q` (cloned: a handful), marking it wanted when missing or
    /// expired and taking its expiry into the result's. `None` while the first answer is
    /// outstanding; a first lookup that failed counts as empty until its retry.
    fn get(&mut self, q: Query) -> Option<Vec<RecordData>> {
        let now = self.now;
        let e = self.loc.entry(q, now);
        e.last_used = now;
        let retry_due = e.retry_at.is_none_or(|r| r <= now);
        let stale = e.records.as_ref().is_none_or(|(_, exp)| *exp <= now);
        if stale && retry_due && !e.in_flight {
            e.wanted = true;
        }
        match &e.records {
            Some((data, exp)) => {
                let (data, exp) = (data.clone(), *exp);
                self.expires = Some(self.expires.map_or(exp, |x| x.min(exp)));
                Some(data)
            }
            None if e.retry_at.is_some() => Some(Vec::new()),
            None => {
                self.pending = true;
                None
            }
        }
    }

    /// RFC 3263 §4.1 and §4.2 for a domain name.
    fn name(&mut self, name: &str, dest: &Destination, rng: &mut impl FnMut() -> u32) {
        // RFC 3263 §4.1: a sips URI is reached over TLS only; sip over UDP or TCP (the
        // order is this client's preference).
        let supported: &[Transport] = if dest.secure {
            &[Transport::Tls]
        } else {
            &[Transport::Udp, Transport::Tcp]
        };
        // RFC 3263 §4.2: "If the TARGET was not a numeric IP address, but a port is present
        // in the URI, the client performs an A or AAAA record lookup of the domain name."
        if let Some(port) = dest.port {
            let t = dest.transport.unwrap_or_else(|| dest.default_transport());
            self.addresses(name, port, t);
            return;
        }
        // RFC 3263 §4.2: a transport given but no port: "the client performs an SRV query
        // for the transport", and without SRV records an A/AAAA lookup on the default port.
        if let Some(t) = dest.transport {
            let found = self.srv(&format!("{}{name}", t.srv_prefix()), t, rng);
            if found == Some(false) {
                self.addresses(name, t.default_port(), t);
            }
            return;
        }
        // RFC 3263 §4.1: neither: NAPTR first.
        let Some(records) = self.get(Query::new(name, RecordType::Naptr)) else {
            return;
        };
        let mut naptrs: Vec<(Naptr, Transport)> = records
            .into_iter()
            .filter_map(|d| match d {
                RecordData::Naptr(n) => Some(n),
                _ => None,
            })
            // "S" flag: the replacement is an SRV name (RFC 3263 §4.1, RFC 3404 §4); others
            // (e.g. "A", "U", regexp rewriting) are not for SIP server location.
            .filter(|n| n.flags.eq_ignore_ascii_case("s"))
            .filter_map(|n| {
                let t = Transport::from_naptr_service(&n.services)?;
                // "the client MUST discard any service fields that identify a resolution
                // service whose value is not ... supported" (and sips: SIPS+D2T only).
                supported.contains(&t).then_some((n, t))
            })
            .collect();
        // RFC 3263 §4.1 / RFC 3403: lowest order first, then lowest preference.
        naptrs.sort_by_key(|(n, _)| (n.order, n.preference));
        if !naptrs.is_empty() {
            for (n, t) in naptrs {
                if let Some(srv_name) = normalize_name(&n.replacement) {
                    // A replacement without SRV records is skipped: "the client SHOULD try
                    // the next NAPTR" (via the next entries of the list).
                    self.srv(&srv_name, t, rng);
                }
            }
            return;
        }
        // RFC 3263 §4.1: "If no NAPTR records are found, the client constructs SRV queries
        // for those transport protocols it supports"; without any, §4.2: A/AAAA on the
        // default port and transport.
        let mut any_srv = false;
        for &t in supported {
            any_srv |= self.srv(&format!("{}{name}", t.srv_prefix()), t, rng) == Some(true);
        }
        if !self.pending && !any_srv {
            let t = dest.default_transport();
            self.addresses(name, t.default_port(), t);
        }
    }

    /// RFC 2782 targets of the SRV set `srv_name`, each looked up by A/AAAA. `Some(true)`
    /// when SRV records exist (even "service not offered"), `Some(false)` when none, `None`
    /// while pending.
    fn srv(&mut self, srv_name: &str, t: Transport, rng: &mut impl FnMut() -> u32) -> Option<bool> {
        let records = self.get(Query::new(srv_name, RecordType::Srv))?;
        let srvs: Vec<Srv> = records
            .into_iter()
            .filter_map(|d| match d {
                RecordData::Srv(s) => Some(s),
                _ => None,
            })
            .collect();
        for s in order_srv(&srvs, rng) {
            if let Some(host) = normalize_name(&s.target) {
                self.addresses(&host, s.port, t);
            }
        }
        Some(!srvs.is_empty())
    }

    /// Targets from the A and AAAA records of `name` (IPv4 first).
    fn addresses(&mut self, name: &str, port: u16, transport: Transport) {
        for rtype in [RecordType::A, RecordType::Aaaa] {
            for d in self.get(Query::new(name, rtype)).unwrap_or_default() {
                if let RecordData::Addr(ip) = d {
                    self.targets.push(Target {
                        addr: SocketAddr::new(ip, port),
                        transport,
                    });
                }
            }
        }
    }
}

/// RFC 3263 §4.3 failover along a located target list: the first target, then the next one
/// each time a request to the current one fails in a way [`fails_over`] accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    targets: Vec<Target>,
    next: usize,
}

impl Failover {
    /// Failover over `targets` (as [`Locator::locate`] ordered them).
    pub fn new(targets: Vec<Target>) -> Failover {
        Failover { targets, next: 0 }
    }

    /// The next target to try, `None` when all were tried.
    pub fn next_target(&mut self) -> Option<Target> {
        let t = self.targets.get(self.next).copied();
        self.next += usize::from(t.is_some());
        t
    }

    /// Targets not tried yet.
    pub fn remaining(&self) -> usize {
        self.targets.len().saturating_sub(self.next)
    }
}

/// The located targets of the destinations kept resolved in the background (trunks given by
/// name), for a core that must not wait on DNS: [`TargetTable::resolve`] answers a URI from
/// the table, or directly for a numeric host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetTable {
    by_dest: HashMap<Destination, Vec<Target>>,
}

impl TargetTable {
    /// An empty table.
    pub fn new() -> TargetTable {
        TargetTable::default()
    }

    /// Records the current targets of `dest` (an empty list removes it).
    pub fn set(&mut self, dest: Destination, targets: Vec<Target>) {
        if targets.is_empty() {
            self.by_dest.remove(&dest);
        } else {
            self.by_dest.insert(dest, targets);
        }
    }

    /// The targets known for `dest`.
    pub fn get(&self, dest: &Destination) -> Option<&[Target]> {
        self.by_dest.get(dest).map(Vec::as_slice)
    }

    /// The parsed URI (angle brackets allowed) and its targets in failover order: for a
    /// numeric host the one RFC 3263 §4 gives, for a name the table's. `None`: not a sip(s)
    /// URI, or a name not (yet) located.
    pub fn resolve(&self, uri: &str) -> Option<(Uri, Failover)> {
        let parsed = Uri::parse(uri.trim().trim_start_matches('<').trim_end_matches('>')).ok()?;
        let dest = Destination::from_uri(&parsed).ok()?;
        let targets = match dest.numeric_target() {
            Some(t) => vec![t],
            None => self.by_dest.get(&dest)?.clone(),
        };
        Some((parsed, Failover::new(targets)))
    }

    /// Applies one update of the background locator: new targets replace the old; a
    /// destination that cannot be located has none.
    pub fn apply(&mut self, dest: Destination, located: Located) {
        match located {
            Located::Targets { targets, .. } => self.set(dest, targets),
            Located::Failed(_) => self.set(dest, Vec::new()),
            Located::Pending => {}
        }
    }
}

/// RFC 3263 §4.3: whether a failed attempt moves on to the next target: a transport error
/// or a transaction timeout (`status = None`), or a 503 (RFC 3261 §21.5.4).
pub fn fails_over(status: Option<u16>) -> bool {
    matches!(status, None | Some(503))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A zone: the answer to each query; anything else is "no such name".
    #[derive(Default)]
    struct Zone(BTreeMap<Query, Answer>);

    impl Zone {
        fn add(&mut self, name: &str, rtype: RecordType, ttl: u32, data: Vec<RecordData>) {
            let recs = data.into_iter().map(|data| Record { ttl, data }).collect();
            self.0
                .insert(Query::new(name, rtype), Answer::Records(recs));
        }
        fn a(&mut self, name: &str, ip: &str) {
            let ip = ip.parse().expect("ip");
            self.add(name, RecordType::A, 300, vec![RecordData::Addr(ip)]);
        }
        fn srv(&mut self, name: &str, ttl: u32, recs: &[(u16, u16, u16, &str)]) {
            let data = recs
                .iter()
                .map(|&(priority, weight, port, target)| {
                    RecordData::Srv(Srv {
                        priority,
                        weight,
                        port,
                        target: target.to_owned(),
                    })
                })
                .collect();
            self.add(name, RecordType::Srv, ttl, data);
        }
        fn naptr(&mut self, name: &str, recs: &[(u16, u16, &str, &str, &str)]) {
            let data = recs
                .iter()
                .map(|&(order, preference, flags, services, replacement)| {
                    RecordData::Naptr(Naptr {
                        order,
                        preference,
                        flags: flags.to_owned(),
                        services: services.to_owned(),
                        replacement: replacement.to_owned(),
                    })
                })
                .collect();
            self.add(name, RecordType::Naptr, 300, data);
        }
        fn answer(&self, q: &Query) -> Answer {
            self.0.get(q).cloned().unwrap_or(Answer::Empty { ttl: 600 })
        }
    }

    fn dest(uri: &str) -> Destination {
        Destination::from_uri(&Uri::parse(uri).expect("uri")).expect("destination")
    }

    fn rng0() -> impl FnMut() -> u32 {
        || 0
    }

    /// Locates `uri` answering every query from `zone` (bounded rounds); returns the
    /// result and the queries asked, in order.
    fn run(loc: &mut Locator, now: Instant, uri: &str, zone: &Zone) -> (Located, Vec<Query>) {
        let d = dest(uri);
        let mut asked = Vec::new();
        for _ in 0..8 {
            let r = loc.locate(now, &d, &mut rng0());
            let mut any = false;
            while let Some(q) = loc.poll_query(now) {
                assert!(!asked.contains(&q), "asked twice: {q:?}");
                loc.handle_answer(now, &q, zone.answer(&q));
                asked.push(q);
                any = true;
            }
            if !any {
                return (r, asked);
            }
        }
        panic!("no result after 8 rounds");
    }

    fn targets(l: &Located) -> Vec<String> {
        match l {
            Located::Targets { targets, .. } => targets
                .iter()
                .map(|t| format!("{:?} {}", t.transport, t.addr))
                .collect(),
            other => panic!("no targets: {other:?}"),
        }
    }

    fn q(name: &str, rtype: RecordType) -> Query {
        Query::new(name, rtype)
    }

    #[test]
    fn numeric_hosts_need_no_dns() {
        let mut loc = Locator::new();
        let now = Instant::now();
        let zone = Zone::default();
        // RFC 3263 §4.1: a numeric IP: UDP for sip, TLS for sips; §4.2: default ports.
        let (r, asked) = run(&mut loc, now, "sip:198.18.0.9", &zone);
        assert_eq!(targets(&r), ["Udp 198.18.0.9:5060"]);
        assert!(asked.is_empty());
        let (r, _) = run(&mut loc, now, "sips:198.18.0.9", &zone);
        assert_eq!(targets(&r), ["Tls 198.18.0.9:5061"]);
        let (r, _) = run(&mut loc, now, "sip:[2001:db8::1]:5070;transport=TCP", &zone);
        assert_eq!(targets(&r), ["Tcp [2001:db8::1]:5070"]);
        assert!(matches!(r, Located::Targets { expires: None, .. }));
        assert_eq!(loc.poll_timeout(), None);
    }

    #[test]
    fn a_port_means_address_records_only() {
        let mut zone = Zone::default();
        zone.a("pbx.example.test", "198.18.1.1");
        zone.naptr(
            "pbx.example.test",
            &[(1, 1, "s", "SIP+D2T", "_sip._tcp.x.test")],
        );
        let mut loc = Locator::new();
        let (r, asked) = run(
            &mut loc,
            Instant::now(),
            "sip:pbx.Example.TEST.:5080",
            &zone,
        );
        assert_eq!(targets(&r), ["Udp 198.18.1.1:5080"]);
        assert_eq!(
            asked,
            [
                q("pbx.example.test", RecordType::A),
                q("pbx.example.test", RecordType::Aaaa)
            ]
        );
    }

    #[test]
    fn a_transport_means_srv_of_that_transport() {
        let mut zone = Zone::default();
        zone.srv(
            "_sip._tcp.example.test",
            300,
            &[(10, 0, 5070, "sip1.example.test")],
        );
        zone.srv(
            "_sip._udp.example.test",
            300,
            &[(10, 0, 5090, "sip2.example.test")],
        );
        zone.a("sip1.example.test", "198.18.1.1");
        zone.a("sip2.example.test", "198.18.1.2");
        zone.a("example.test", "198.18.1.3");
        let mut loc = Locator::new();
        let now = Instant::now();
        let (r, asked) = run(&mut loc, now, "sip:example.test;transport=tcp", &zone);
        assert_eq!(targets(&r), ["Tcp 198.18.1.1:5070"]);
        assert_eq!(asked[0], q("_sip._tcp.example.test", RecordType::Srv));
        // No SRV for that transport: A/AAAA on the default port (RFC 3263 §4.2).
        let (r, _) = run(&mut loc, now, "sip:example.test;transport=tls", &zone);
        assert_eq!(targets(&r), ["Tls 198.18.1.3:5061"]);
    }

    /// RFC 3263 §4.1's example: NAPTR for example.com offering TLS, TCP and UDP.
    #[test]
    fn naptr_order_then_srv_then_addresses() {
        let mut zone = Zone::default();
        zone.naptr(
            "example.com",
            &[
                (90, 50, "s", "SIP+D2T", "_sip._tcp.example.com"),
                (100, 50, "s", "SIP+D2U", "_sip._udp.example.com"),
                (50, 50, "s", "SIPS+D2T", "_sips._tcp.example.com"),
                // Not for SIP location: other flags or services are discarded.
                (10, 10, "u", "E2U+sip", "!^.*$!sip:x@example.com!"),
                (20, 10, "s", "SIP+D2S", "_sip._sctp.example.com"),
            ],
        );
        zone.srv(
            "_sip._tcp.example.com",
            300,
            &[(0, 0, 5060, "tcp.example.com")],
        );
        zone.srv(
            "_sip._udp.example.com",
            300,
            &[(0, 0, 5060, "udp.example.com")],
        );
        zone.srv(
            "_sips._tcp.example.com",
            300,
            &[(0, 0, 5061, "tls.example.com")],
        );
        zone.a("tcp.example.com", "198.18.2.1");
        zone.a("udp.example.com", "198.18.2.2");
        zone.a("tls.example.com", "198.18.2.3");
        let mut loc = Locator::new();
        let now = Instant::now();
        let (r, asked) = run(&mut loc, now, "sip:alice@example.com", &zone);
        // sip: TLS is not one of this client's transports for sip URIs.
        assert_eq!(targets(&r), ["Tcp 198.18.2.1:5060", "Udp 198.18.2.2:5060"]);
        assert_eq!(asked[0], q("example.com", RecordType::Naptr));
        assert!(!asked.contains(&q("_sips._tcp.example.com", RecordType::Srv)));
        assert!(!asked.contains(&q("_sip._sctp.example.com", RecordType::Srv)));
        // sips: only SIPS+D2T.
        let (r, _) = run(&mut loc, now, "sips:alice@example.com", &zone);
        assert_eq!(targets(&r), ["Tls 198.18.2.3:5061"]);
    }

    #[test]
    fn a_naptr_without_srv_records_is_skipped() {
        let mut zone = Zone::default();
        zone.naptr(
            "example.test",
            &[
                (10, 10, "S", "SIP+D2U", "_sip._udp.gone.test"),
                (20, 10, "S", "SIP+D2T", "_sip._tcp.example.test"),
            ],
        );
        zone.srv(
            "_sip._tcp.example.test",
            300,
            &[(0, 0, 5062, "b.example.test")],
        );
        zone.a("b.example.test", "198.18.3.2");
        let mut loc = Locator::new();
        let (r, _) = run(&mut loc, Instant::now(), "sip:example.test", &zone);
        assert_eq!(targets(&r), ["Tcp 198.18.3.2:5062"]);
    }

    #[test]
    fn without_naptr_srv_per_transport_then_plain_address() {
        let mut zone = Zone::default();
        zone.srv("_sip._tcp.a.test", 300, &[(0, 0, 5070, "t.a.test")]);
        zone.srv("_sip._udp.a.test", 300, &[(0, 0, 5080, "u.a.test")]);
        zone.a("t.a.test", "198.18.4.1");
        zone.a("u.a.test", "198.18.4.2");
        zone.a("b.test", "198.18.4.3");
        zone.add(
            "b.test",
            RecordType::Aaaa,
            300,
            vec![RecordData::Addr("2001:db8::3".parse().expect("ip"))],
        );
        let mut loc = Locator::new();
        let now = Instant::now();
        let (r, asked) = run(&mut loc, now, "sip:a.test", &zone);
        assert_eq!(targets(&r), ["Udp 198.18.4.2:5080", "Tcp 198.18.4.1:5070"]);
        assert_eq!(
            asked[..3],
            [
                q("a.test", RecordType::Naptr),
                q("_sip._tcp.a.test", RecordType::Srv),
                q("_sip._udp.a.test", RecordType::Srv)
            ]
        );
        // Neither NAPTR nor SRV: A then AAAA, UDP, 5060 (RFC 3263 §4.2).
        let (r, _) = run(&mut loc, now, "sip:b.test", &zone);
        assert_eq!(
            targets(&r),
            ["Udp 198.18.4.3:5060", "Udp [2001:db8::3]:5060"]
        );
        // No address at all: a clear failure, not a pending forever.
        let (r, _) = run(&mut loc, now, "sip:nothing.test", &zone);
        assert_eq!(
            r,
            Located::Failed(LocateError::NoTargets("nothing.test".into()))
        );
    }

    #[test]
    fn srv_priority_order_and_decided_absence() {
        let mut zone = Zone::default();
        zone.srv(
            "_sip._udp.p.test",
            300,
            &[
                (20, 0, 5060, "c.p.test"),
                (10, 5, 5060, "a.p.test"),
                (30, 0, 5060, "."),
                (10, 5, 5060, "b.p.test"),
            ],
        );
        for (h, ip) in [
            ("a", "198.18.5.1"),
            ("b", "198.18.5.2"),
            ("c", "198.18.5.3"),
        ] {
            zone.a(&format!("{h}.p.test"), ip);
        }
        let mut loc = Locator::new();
        let (r, _) = run(&mut loc, Instant::now(), "sip:p.test;transport=udp", &zone);
        let t = targets(&r);
        assert_eq!(t.len(), 3, "{t:?}");
        assert_eq!(t[2], "Udp 198.18.5.3:5060", "priority 20 after both 10s");
        // RFC 2782: a Target of "." alone: the service is decidedly not available, and no
        // fallback to the name's own address.
        let mut zone = Zone::default();
        zone.srv("_sip._udp.q.test", 300, &[(0, 0, 0, ".")]);
        zone.a("q.test", "198.18.5.9");
        let (r, _) = run(&mut loc, Instant::now(), "sip:q.test;transport=udp", &zone);
        assert!(matches!(r, Located::Failed(_)), "{r:?}");
    }

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    #[test]
    fn rfc2782_weighted_selection() {
        let set = [srv(1, 0, "zero"), srv(1, 10, "ten"), srv(1, 30, "thirty")];
        let names = |v: Vec<Srv>| v.into_iter().map(|s| s.target).collect::<Vec<_>>();
        // Running sums in list order: zero 0, ten 10, thirty 40 (zero-weight first).
        assert_eq!(names(order_srv(&set, &mut || 0)), ["zero", "ten", "thirty"]);
        // 1 % 41 = 1: ten; then (zero 0, thirty 30) with 1 % 31 = 1: thirty.
        assert_eq!(names(order_srv(&set, &mut || 1)), ["ten", "thirty", "zero"]);
        assert_eq!(
            names(order_srv(&set, &mut || 11)),
            ["thirty", "zero", "ten"]
        );
        // 40 % 41 = 40: thirty, then of (zero 0, ten 10) with 40 % 11 = 7: ten.
        assert_eq!(
            names(order_srv(&set, &mut || 40)),
            ["thirty", "ten", "zero"]
        );
        // Shares: over many draws "thirty" comes first about 30/41 of the time.
        let mut r = fastrand::Rng::with_seed(7);
        let n = 10_000;
        let first_thirty = (0..n)
            .filter(|_| order_srv(&set, &mut || r.u32(..))[0].target == "thirty")
            .count();
        let expect = n * 30 / 41;
        assert!(
            first_thirty.abs_diff(expect) < n / 50,
            "{first_thirty} vs {expect}"
        );
        // The injected RNG makes the order reproducible.
        let mut r1 = fastrand::Rng::with_seed(42);
        let mut r2 = fastrand::Rng::with_seed(42);
        assert_eq!(
            order_srv(&set, &mut || r1.u32(..)),
            order_srv(&set, &mut || r2.u32(..))
        );
    }

    #[test]
    fn expiry_refresh_and_last_good_answer() {
        let mut zone = Zone::default();
        zone.srv("_sip._udp.t.test", 120, &[(0, 0, 5060, "h.t.test")]);
        zone.a("h.t.test", "198.18.6.1");
        let mut loc = Locator::new();
        let t0 = Instant::now();
        let (r, _) = run(&mut loc, t0, "sip:t.test;transport=udp", &zone);
        // Expiry is the smallest TTL used (SRV 120 s < A 300 s; NAPTR not asked here).
        assert_eq!(
            r,
            Located::Targets {
                targets: vec![Target {
                    addr: "198.18.6.1:5060".parse().expect("addr"),
                    transport: Transport::Udp
                }],
                expires: Some(t0 + Duration::from_secs(120)),
            }
        );
        assert_eq!(loc.poll_timeout(), Some(t0 + Duration::from_secs(120)));
        let d = dest("sip:t.test;transport=udp");
        // Before expiry: nothing to ask.
        let t1 = t0 + Duration::from_secs(100);
        assert!(matches!(
            loc.locate(t1, &d, &mut rng0()),
            Located::Targets { .. }
        ));
        assert_eq!(loc.poll_query(t1), None);
        // After: the old targets still serve while the refresh is asked for, once.
        let t2 = t0 + Duration::from_secs(121);
        assert_eq!(
            targets(&loc.locate(t2, &d, &mut rng0())),
            ["Udp 198.18.6.1:5060"]
        );
        let refresh = loc.poll_query(t2).expect("refresh");
        assert_eq!(refresh, q("_sip._udp.t.test", RecordType::Srv));
        assert_eq!(loc.poll_query(t2), None);
        let _ = loc.locate(t2, &d, &mut rng0());
        assert_eq!(loc.poll_query(t2), None, "in flight: not asked twice");
        assert_eq!(loc.in_flight(), 1);
        // The refresh fails: the last good answer stays, retried after a pause.
        loc.handle_answer(t2, &refresh, Answer::Failed);
        assert_eq!(
            targets(&loc.locate(t2, &d, &mut rng0())),
            ["Udp 198.18.6.1:5060"]
        );
        assert_eq!(loc.poll_query(t2), None);
        let t3 = t2 + RETRY_AFTER_FAILURE;
        assert_eq!(loc.poll_timeout(), Some(t3));
        let _ = loc.locate(t3, &d, &mut rng0());
        let again = loc.poll_query(t3).expect("retry");
        // Now a new answer moves the trunk.
        zone.srv("_sip._udp.t.test", 30, &[(0, 0, 5999, "h.t.test")]);
        loc.handle_answer(t3, &again, zone.answer(&again));
        match loc.locate(t3, &d, &mut rng0()) {
            Located::Targets { targets, expires } => {
                assert_eq!(targets[0].addr.port(), 5999);
                assert_eq!(expires, Some(t3 + Duration::from_secs(30)));
            }
            other => panic!("{other:?}"),
        }
        // After a locate saw the expiry pass, the stale entry no longer wakes the caller.
        let t4 = t3 + Duration::from_secs(31);
        let _ = loc.locate(t4, &d, &mut rng0());
        assert!(loc.poll_timeout().is_none_or(|t| t > t4));
    }

    #[test]
    fn pending_until_answered_and_ttls_clamped() {
        let mut loc = Locator::new();
        let now = Instant::now();
        let d = dest("sip:slow.test:5060");
        assert_eq!(loc.locate(now, &d, &mut rng0()), Located::Pending);
        let a = loc.poll_query(now).expect("A");
        let aaaa = loc.poll_query(now).expect("AAAA");
        assert_eq!(loc.poll_query(now), None);
        assert_eq!(loc.locate(now, &d, &mut rng0()), Located::Pending);
        let rec = |ttl| Record {
            ttl,
            data: RecordData::Addr("198.18.7.1".parse().expect("ip")),
        };
        // A record of the wrong type in an answer is ignored; TTL 0 is kept MIN_TTL.
        let wrong = Record {
            ttl: 0,
            data: RecordData::Addr("2001:db8::1".parse().expect("ip")),
        };
        loc.handle_answer(now, &a, Answer::Records(vec![rec(0), wrong]));
        // One of two answers in: the known target is usable already.
        assert_eq!(
            targets(&loc.locate(now, &d, &mut rng0())),
            ["Udp 198.18.7.1:5060"]
        );
        loc.handle_answer(now, &aaaa, Answer::Empty { ttl: u32::MAX });
        match loc.locate(now, &d, &mut rng0()) {
            Located::Targets { expires, .. } => assert_eq!(expires, Some(now + MIN_TTL)),
            other => panic!("{other:?}"),
        }
        // A first lookup that failed: no target for now (not pending forever).
        let d = dest("sip:down.test:5060");
        let _ = loc.locate(now, &d, &mut rng0());
        while let Some(q) = loc.poll_query(now) {
            loc.handle_answer(now, &q, Answer::Failed);
        }
        assert!(matches!(
            loc.locate(now, &d, &mut rng0()),
            Located::Failed(_)
        ));
    }

    #[test]
    fn bounded_answers_and_cache() {
        let mut loc = Locator::new();
        let now = Instant::now();
        let many: Vec<Record> = (0..200u32)
            .map(|i| Record {
                ttl: 60,
                data: RecordData::Addr(IpAddr::from([198, 18, (i / 250) as u8, i as u8])),
            })
            .collect();
        let d = dest("sip:many.test:5060");
        let _ = loc.locate(now, &d, &mut rng0());
        while let Some(q) = loc.poll_query(now) {
            loc.handle_answer(now, &q, Answer::Records(many.clone()));
        }
        match loc.locate(now, &d, &mut rng0()) {
            Located::Targets { targets, .. } => assert_eq!(targets.len(), MAX_TARGETS),
            other => panic!("{other:?}"),
        }
        for i in 0..MAX_ENTRIES + 10 {
            let q = Query::new(&format!("h{i}.test"), RecordType::A);
            loc.handle_answer(
                now + Duration::from_millis(i as u64),
                &q,
                Answer::Empty { ttl: 1 },
            );
        }
        assert!(loc.cache.len() <= MAX_ENTRIES);
    }

    #[test]
    fn destinations_from_uris() {
        let d = dest("sip:bob@198.18.0.1;maddr=proxy.example.test;transport=tcp");
        assert_eq!(d.host, Host::Name("proxy.example.test".into()));
        assert_eq!(d.transport, Some(Transport::Tcp));
        assert!(!d.secure);
        let parse = |u: &str| Destination::from_uri(&Uri::parse(u).expect("uri"));
        assert_eq!(
            dest("sips:h.test;transport=tcp").transport,
            Some(Transport::Tls)
        );
        assert!(matches!(parse("tel:+4930123"), Err(LocateError::Scheme(_))));
        assert!(matches!(
            parse("sip:h.test;transport=sctp"),
            Err(LocateError::Transport(_))
        ));
        assert!(matches!(parse("sip:bad..name"), Err(LocateError::Host(_))));
        assert!(Destination::host(&"a".repeat(254)).is_err());
        assert!(Destination::host(&format!("{}.test", "a".repeat(64))).is_err());
    }

    proptest::proptest! {
        /// Whatever the answers (any names, types, TTLs, SRV loops, failures), locate stays
        /// total and bounded: no panic, at most MAX_TARGETS targets, lookups end.
        #[test]
        fn arbitrary_answers_stay_bounded(
            answers in proptest::collection::vec(
                (0u8..6, 0u16..4, 0u16..4, 0u32..100_000, 0u8..4, proptest::num::u32::ANY),
                0..40,
            ),
            uri in proptest::sample::select(vec![
                "sip:a.test", "sips:a.test", "sip:a.test;transport=tcp", "sip:a.test:5062",
            ]),
        ) {
            let names = ["a.test", "_sip._udp.a.test", "_sip._tcp.a.test", "_sips._tcp.a.test"];
            let mut loc = Locator::new();
            let mut now = Instant::now();
            let d = dest(uri);
            let mut seed = 1u32;
            let mut rng = move || { seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345); seed };
            let mut it = answers.into_iter().cycle();
            for _ in 0..12 {
                if let Located::Targets { targets, .. } = loc.locate(now, &d, &mut rng) {
                    proptest::prop_assert!(!targets.is_empty() && targets.len() <= MAX_TARGETS);
                }
                let mut asked = 0;
                while let Some(q) = loc.poll_query(now) {
                    asked += 1;
                    proptest::prop_assert!(asked <= 64, "unbounded queries");
                    let Some((kind, a, b, ttl, n, x)) = it.next() else {
                        loc.handle_answer(now, &q, Answer::Failed);
                        continue;
                    };
                    let pick = |i: u16| names[usize::from(i) % names.len()].to_owned();
                    let data = match kind {
                        0 => RecordData::Naptr(Naptr {
                            order: a,
                            preference: b,
                            flags: ["s", "S", "u", ""][usize::from(n)].into(),
                            services: ["SIP+D2U", "SIP+D2T", "SIPS+D2T", "x"][usize::from(n)].into(),
                            replacement: pick(a),
                        }),
                        1 => RecordData::Srv(Srv { priority: a, weight: b, port: a, target: pick(b) }),
                        2 => RecordData::Addr(IpAddr::from(x.to_be_bytes())),
                        3 => RecordData::Addr(IpAddr::from(u128::from(x).to_be_bytes())),
                        _ => RecordData::Srv(Srv { priority: 0, weight: 0, port: 0, target: ".".into() }),
                    };
                    let answer = match n {
                        0 => Answer::Failed,
                        1 => Answer::Empty { ttl },
                        _ => Answer::Records(vec![Record { ttl, data }; usize::from(n) * 20]),
                    };
                    loc.handle_answer(now, &q, answer);
                }
                now += Duration::from_secs(u64::from(time_step(asked)));
            }
        }
    }

    fn time_step(asked: usize) -> u32 {
        (asked as u32 % 3) * 7 + 1
    }

    #[test]
    fn target_table_for_the_core() {
        let mut table = TargetTable::new();
        let t = Target {
            addr: "198.18.8.1:5070".parse().expect("addr"),
            transport: Transport::Tcp,
        };
        assert!(
            table.resolve("sip:+4930@trunk.test").is_none(),
            "not located yet"
        );
        table.set(dest("sip:trunk.test"), vec![t]);
        // Any user part, same host/port/transport: the trunk's targets.
        let (uri, mut f) = table.resolve("<sip:+4930@Trunk.Test>").expect("located");
        assert_eq!(uri.user.as_deref(), Some("+4930"));
        assert_eq!(f.next_target(), Some(t));
        assert!(
            table.resolve("sip:trunk.test;transport=tcp").is_none(),
            "another destination"
        );
        let (_, mut f) = table
            .resolve("sip:198.18.8.2;transport=tcp")
            .expect("numeric");
        assert_eq!(
            f.next_target().map(|t| t.peer()),
            Some(Peer::tcp("198.18.8.2:5060".parse().expect("addr")))
        );
        assert!(table.resolve("tel:+4930").is_none());
        table.set(dest("sip:trunk.test"), Vec::new());
        assert!(table.get(&dest("sip:trunk.test")).is_none());
    }

    #[test]
    fn failover_walks_the_list() {
        let t = |p| Target {
            addr: SocketAddr::from(([198, 18, 0, 1], p)),
            transport: Transport::Udp,
        };
        let mut f = Failover::new(vec![t(1), t(2)]);
        assert_eq!(f.remaining(), 2);
        assert_eq!(f.next_target(), Some(t(1)));
        assert_eq!(f.next_target(), Some(t(2)));
        assert_eq!(f.next_target(), None);
        assert_eq!(f.remaining(), 0);
        // RFC 3263 §4.3: timeouts, transport errors and 503 fail over; other answers are
        // the server's answer.
        assert!(fails_over(None) && fails_over(Some(503)));
        assert!(!fails_over(Some(486)) && !fails_over(Some(500)) && !fails_over(Some(200)));
        assert_eq!(t(1).peer(), Peer::udp(t(1).addr));
        let tls = Target {
            transport: Transport::Tls,
            ..t(1)
        };
        assert_eq!(tls.peer(), Peer::tls(t(1).addr));
    }
}
