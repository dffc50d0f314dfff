//! Configuration of sipctl (TOML).
//!
//! Two phases: [`RawConfig::parse`] reads the TOML text into plain serde types (unknown
//! keys are errors), then [`RawConfig::resolve`] checks every value, applies the defaults
//! and builds the resolved [`Config`] (listen addresses, the [`Directory`], the [`Router`]
//! …). Errors name the key and the value. [`DEFAULT_CONFIG`] is the embedded configuration
//! used when sipctl starts without `--config` (the demo); keys a file leaves out take the
//! same defaults. Sans-IO: reading the file is the caller's job (also the certificate files:
//! [`crate::tls`] loads them at start-up and names the key of a file it cannot use).
//!
//! `sip.listen` entries are strings (`udp:ADDR:PORT`, `tcp:ADDR:PORT`) or tables; TOML
//! allows both in one array (`listen = ["udp:0.0.0.0:5060", { transport = "tls", … }]`) or
//! the array-of-tables form `[[sip.listen]]` shown below.
//!
//! ```toml
//! [sip]
//! listen = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
//! advertise = "198.18.0.1"          # address put in Via/Contact/SDP, host[:port]
//! switch-name = "sipctl-1"          # names this instance in call events
//! trusted-peers = ["198.18.0.0/15"] # may send X-Linecord-Call-Id
//! max-expires = 3600                # longest REGISTER granted, seconds
//! max-transactions = 65536          # SIP transactions alive at once; beyond: 503
//! max-tcp-connections = 4096        # SIP TCP + TLS connections at once; beyond: closed
//! session-expires = 1800            # RFC 4028 session interval asked for; 0 = off
//! min-se = 90                       # shortest session interval taken (422 below it)
//! tls-ca = "/etc/linecord/ca.pem"   # CA bundle for peers sipctl connects to over TLS
//!
//! [[sip.listen]]                    # the table form of a listen entry (TLS needs it)
//! transport = "tls"                 # udp | tcp | tls
//! address = "0.0.0.0:5061"
//! cert = "/etc/linecord/sip.crt"    # PEM: the certificate chain, leaf first
//! key = "/etc/linecord/sip.key"     # PEM: its private key (PKCS#8, PKCS#1 or SEC1)
//!
//! [recorder]
//! ng = "127.0.0.1:2223"
//! timeout-ms = 1000
//! retries = 2
//!
//! [api]
//! listen = "127.0.0.1:8080"
//! token = "change-me"               # required unless listen is a loopback address
//!
//! [events]
//! spool-dir = "/var/spool/linecord"
//! enabled = true
//!
//! [dns]                             # for trunks given by name (RFC 3263 NAPTR/SRV/A)
//! servers = ["198.18.0.53:53"]      # default: the system's resolv.conf
//! timeout-ms = 2000                 # per query attempt
//!
//! [routing]
//! time-zone = "Europe/Berlin"       # IANA zone (or +HH:MM) of route time windows
//! no-answer-secs = 120              # ringing this long: the call goes to no-answer-target; 0 = off
//! no-answer-target = "reject:480"   # dn:NUMBER | trunk:NAME | reject:STATUS
//!
//! [[dn]]
//! number = "1001"
//! name = "Alice"
//! contact = "198.18.0.20:5060"      # or a sip: URI; absent = must REGISTER
//! record = true
//! record-critical = false
//!
//! [[trunk]]
//! name = "pstn"
//! address = "198.18.0.9:5060"       # or a name (DNS per RFC 3263), or a sip: / sips: URI
//! transport = "udp"                 # udp | tcp | tls (tls and sips: need sip.tls-ca)
//!
//! [[route]]
//! name = "sales-sampled"
//! caller = "+49*"                   # glob, or a list of globs (any matches)
//! callee = ["2[0-9][0-9][0-9]", "3*"]
//! ruri = "sip:*@sales.example.com"
//! headers = { "X-Queue" = "sales*" }
//! days = ["mon-fri"]
//! hours = "08:00-18:00"
//! target = "dn"                     # dn | dn:NUMBER | trunk:NAME | reject | reject:STATUS
//! record = true
//! record-percent = 30
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::directory::{Directory, DirectoryError, DnConfig};
use crate::routing::{
    fixed_zone, parse_time_zone, parse_utc_offset, NoAnswer, Patterns, Router, Rule, RuleTarget,
    TimeWindow,
};

/// The embedded configuration: what sipctl runs with when no `--config` is given. It suits
/// the demo topology of `scripts/netns.sh` (party B at 198.18.0.20 is DN 1001).
pub const DEFAULT_CONFIG: &str = r#"# sipctl's embedded configuration (the demo). Keys a --config file leaves out
# take these values too, except the [[dn]] entries.
[sip]
listen = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
switch-name = "sipctl"
trusted-peers = ["127.0.0.0/8", "::1/128", "198.18.0.0/15"]
max-expires = 3600

[recorder]
ng = "127.0.0.1:2223"
timeout-ms = 1000
retries = 2

[api]
listen = "127.0.0.1:8080"

[events]
spool-dir = "/var/spool/linecord"

[routing]
time-zone = "UTC"

# Party B of scripts/netns.sh: every call to it is recorded.
[[dn]]
number = "1001"
name = "Party B"
contact = "198.18.0.20:5060"
record = true

# An agent phone that registers.
[[dn]]
number = "1002"
name = "Agent 1002"
record = true
"#;

const DEFAULT_LISTEN: [&str; 2] = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"];
const DEFAULT_SWITCH_NAME: &str = "sipctl";
const DEFAULT_TRUSTED: [&str; 3] = ["127.0.0.0/8", "::1/128", "198.18.0.0/15"];
const DEFAULT_MAX_EXPIRES: u32 = 3600;
/// Default `sip.session-expires`, seconds (RFC 4028 §4 recommends 1800).
pub const DEFAULT_SESSION_EXPIRES: u32 = 1800;
/// Default `sip.min-se`, seconds (RFC 4028's floor).
pub const DEFAULT_MIN_SE: u32 = 90;
/// Default `routing.no-answer-secs`.
pub const DEFAULT_NO_ANSWER_SECS: u32 = 120;
/// Default `routing.no-answer-target`.
pub const DEFAULT_NO_ANSWER_TARGET: &str = "reject:480";

/// Default `sip.max-transactions`: a non-INVITE transaction lives 32 s after its answer over
/// UDP (timer J), so 65 536 carry ~2 000 new requests a second; each costs ~2-4 KB.
pub const DEFAULT_MAX_TRANSACTIONS: usize = 65_536;
/// Default `sip.max-tcp-connections`; each holds at most one message (64 KiB) of buffer.
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 4_096;
const DEFAULT_NG: &str = "127.0.0.1:2223";
const DEFAULT_TIMEOUT_MS: u64 = 1000;
const DEFAULT_RETRIES: u32 = 2;
const DEFAULT_API_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_SPOOL_DIR: &str = "/var/spool/linecord";

/// Why a configuration is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML, an unknown key, or a value of the wrong type (the message names the
    /// line and the key).
    #[error("configuration syntax: {0}")]
    Syntax(String),
    /// A value that is not acceptable.
    #[error("configuration: {key} = {value}: {reason}")]
    Invalid {
        /// Where, e.g. `route[2].hours` (arrays count from 0).
        key: String,
        /// The value as written.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(
    key: impl Into<String>,
    value: impl std::fmt::Debug,
    reason: impl ToString,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: format!("{value:?}"),
        reason: reason.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Phase 1: the TOML as written

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings.
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// The configuration as written (phase 1). Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    /// `[sip]`.
    pub sip: RawSip,
    /// `[recorder]`.
    pub recorder: RawRecorder,
    /// `[api]`.
    pub api: RawApi,
    /// `[events]`.
    pub events: RawEvents,
    /// `[routing]`.
    pub routing: RawRouting,
    /// `[dns]`.
    pub dns: RawDns,
    /// `[[dn]]`.
    pub dn: Vec<RawDn>,
    /// `[[route]]`.
    pub route: Vec<RawRoute>,
    /// `[[trunk]]`.
    pub trunk: Vec<RawTrunk>,
}

/// `[sip]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSip {
    /// `listen`: `udp:ADDR:PORT` / `tcp:ADDR:PORT` (bare `ADDR:PORT` is UDP), or tables.
    pub listen: Option<Vec<RawListen>>,
    /// `tls-ca`: PEM CA bundle that certificates of TLS peers sipctl connects to must chain
    /// to.
    pub tls_ca: Option<String>,
    /// `advertise`: `host` or `host:port`.
    pub advertise: Option<String>,
    /// `switch-name`.
    pub switch_name: Option<String>,
    /// `trusted-peers`: addresses or CIDR prefixes.
    pub trusted_peers: Option<Vec<String>>,
    /// `max-expires`, seconds.
    pub max_expires: Option<u32>,
    /// `max-transactions`: most SIP transactions alive at once.
    pub max_transactions: Option<usize>,
    /// `max-tcp-connections`: most SIP TCP connections accepted at once.
    pub max_tcp_connections: Option<usize>,
    /// `session-expires`: the session interval sipctl asks for (RFC 4028), seconds; 0: off.
    pub session_expires: Option<u32>,
    /// `min-se`: the shortest session interval sipctl accepts (RFC 4028 Min-SE), seconds.
    pub min_se: Option<u32>,
}

/// One `sip.listen` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawListen {
    /// `udp:ADDR:PORT`, `tcp:ADDR:PORT` or `ADDR:PORT`.
    Short(String),
    /// `{ transport = "tls", address = "ADDR:PORT", cert = "…", key = "…" }`.
    Table(RawListenTable),
}

/// The table form of a `sip.listen` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawListenTable {
    /// `transport`: `udp`, `tcp` or `tls` (required).
    pub transport: String,
    /// `address`: `ADDR:PORT` (required).
    pub address: String,
    /// `cert`: PEM certificate chain (TLS only, required there).
    #[serde(default)]
    pub cert: Option<String>,
    /// `key`: PEM private key (TLS only, required there).
    #[serde(default)]
    pub key: Option<String>,
}

/// `[recorder]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRecorder {
    /// `ng`: the recorder's NG address.
    pub ng: Option<String>,
    /// `timeout-ms`.
    pub timeout_ms: Option<u64>,
    /// `retries`.
    pub retries: Option<u32>,
}

/// `[api]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawApi {
    /// `listen`.
    pub listen: Option<String>,
    /// `token`.
    pub token: Option<String>,
}

/// `[events]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawEvents {
    /// `spool-dir`.
    pub spool_dir: Option<String>,
    /// `enabled`.
    pub enabled: Option<bool>,
}

/// `[routing]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRouting {
    /// `time-zone`: an IANA name or a fixed offset.
    pub time_zone: Option<String>,
    /// `utc-offset`: the older fixed-offset form of `time-zone`.
    pub utc_offset: Option<String>,
    /// `no-answer-secs`: how long a call rings before it goes to `no-answer-target` (0: off).
    pub no_answer_secs: Option<u32>,
    /// `no-answer-target`: `dn:NUMBER`, `trunk:NAME` or `reject:STATUS`.
    pub no_answer_target: Option<String>,
}

/// `[dns]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDns {
    /// `servers`: `IP` or `IP:PORT` of recursive name servers.
    pub servers: Option<Vec<String>>,
    /// `timeout-ms`.
    pub timeout_ms: Option<u64>,
}

/// One `[[dn]]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDn {
    /// `number` (required).
    pub number: String,
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `contact`.
    #[serde(default)]
    pub contact: Option<String>,
    /// `record`.
    #[serde(default)]
    pub record: Option<bool>,
    /// `record-critical`.
    #[serde(default)]
    pub record_critical: Option<bool>,
}

/// One `[[trunk]]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTrunk {
    /// `name` (required).
    pub name: String,
    /// `address` (required): `host[:port]` or a `sip:`/`sips:` URI.
    pub address: String,
    /// `transport`: `udp`, `tcp` or `tls`.
    #[serde(default)]
    pub transport: Option<String>,
}

/// One `[[route]]` as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRoute {
    /// `name`.
    pub name: Option<String>,
    /// `caller` glob(s).
    pub caller: Option<OneOrMany>,
    /// `callee` glob(s).
    pub callee: Option<OneOrMany>,
    /// `ruri` glob(s).
    pub ruri: Option<OneOrMany>,
    /// `headers`: header name → value glob(s).
    pub headers: Option<BTreeMap<String, OneOrMany>>,
    /// `days`.
    pub days: Option<OneOrMany>,
    /// `hours`: `HH:MM-HH:MM`.
    pub hours: Option<String>,
    /// `target`.
    pub target: Option<String>,
    /// `record`.
    pub record: Option<bool>,
    /// `record-percent`: 0–100.
    pub record_percent: Option<f64>,
}

// ---------------------------------------------------------------------------------------
// Phase 2: resolved

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (RFC 3261 §26.2).
    Tls,
}

/// The certificate files of a TLS listener (read by [`crate::tls`] at start-up).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// The configuration key of the listener (`sip.listen[2]`), for errors.
    pub at: String,
}

/// A SIP listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Listen {
    /// Transport.
    pub transport: Transport,
    /// Address and port.
    pub addr: SocketAddr,
    /// Certificate and key; `Some` exactly for [`Transport::Tls`].
    pub tls: Option<TlsFiles>,
}

/// The address sipctl puts in Via, Contact and Record-Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port, if not the listening port.
    pub port: Option<u16>,
}

/// An IP prefix (`198.18.0.0/15`, `2001:db8::/32`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl IpNet {
    /// Parses `ADDR` or `ADDR/LEN`; refuses set host bits (a likely typo).
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (a, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("prefix length {l:?} is not 0-{max}"))?,
        };
        let net = IpNet { addr, prefix };
        if !net.contains(addr) || net.masked() != addr {
            return Err(format!(
                "host bits are set; did you mean {}/{prefix}?",
                net.masked()
            ));
        }
        Ok(net)
    }

    fn masked(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & m).into())
            }
        }
    }

    /// Whether `ip` is inside the prefix (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & m == u32::from(a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & m == u128::from(a) & m
            }
            _ => false,
        }
    }
}

/// `[sip]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipConfig {
    /// Listening sockets (at least one, no duplicates).
    pub listen: Vec<Listen>,
    /// The advertised address; `None`: the daemon uses the address a request came in on.
    pub advertise: Option<Advertise>,
    /// Name of this instance in call events (`[A-Za-z0-9._-]`, at most 64).
    pub switch_name: String,
    /// Peers whose `X-Linecord-Call-Id` is believed.
    pub trusted_peers: Vec<IpNet>,
    /// Longest REGISTER expiry granted, seconds.
    pub max_expires: u32,
    /// Most SIP transactions alive at once; a new request beyond it gets a stateless 503.
    pub max_transactions: usize,
    /// Most SIP TCP and TLS connections accepted at once; further ones are closed at once.
    pub max_tcp_connections: usize,
    /// Session timers (RFC 4028): the interval sipctl asks for and the shortest it takes
    /// (seconds); `None`: off.
    pub session_timer: Option<crate::sip::SessionTimerConfig>,
    /// CA bundle for verifying TLS peers sipctl connects to; `None`: outbound TLS fails.
    pub tls_ca: Option<PathBuf>,
}

/// `[recorder]`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderConfig {
    /// The recorder's NG address.
    pub ng: SocketAddr,
    /// Time to wait for an NG reply before retrying, ms (1–60 000).
    pub timeout_ms: u64,
    /// Retries after the first attempt (0–10).
    pub retries: u32,
}

/// `[api]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// HTTP listening address.
    pub listen: SocketAddr,
    /// Bearer token required on every request; `None` only on a loopback address.
    pub token: Option<String>,
}

/// `[events]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// The spool directory call events go to; `None` when events are disabled.
    pub spool_dir: Option<PathBuf>,
}

/// `[dns]`, resolved: how trunk names are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers to ask; empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// Time to wait for one answer before the next attempt or server (1–30 000 ms).
    pub timeout: Duration,
}

/// Default `dns.timeout-ms`.
pub const DEFAULT_DNS_TIMEOUT_MS: u64 = 2000;

/// A trunk: a SIP peer calls can be routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    /// Its name (`[A-Za-z0-9._-]`).
    pub name: String,
    /// Its URI, `sip:host:port[;transport=tcp|tls]` or `sips:host:port`.
    pub uri: String,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[sip]`.
    pub sip: SipConfig,
    /// `[recorder]`.
    pub recorder: RecorderConfig,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[events]`.
    pub events: EventsConfig,
    /// The DNs (`[[dn]]`), with no registrations yet.
    pub directory: Directory,
    /// The trunks (`[[trunk]]`).
    pub trunks: Vec<Trunk>,
    /// The routing rules (`[[route]]`) and `[routing]`.
    pub router: Router,
    /// `[dns]`.
    pub dns: DnsConfig,
}

impl Config {
    /// Parses and resolves a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        RawConfig::parse(text)?.resolve()
    }

    /// The embedded configuration ([`DEFAULT_CONFIG`]).
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::from_toml(DEFAULT_CONFIG)
    }

    /// Whether `ip` may send `X-Linecord-Call-Id`.
    pub fn is_trusted_peer(&self, ip: IpAddr) -> bool {
        self.sip.trusted_peers.iter().any(|n| n.contains(ip))
    }

    /// The trunk called `name`.
    pub fn trunk(&self, name: &str) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.name == name)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn parse_listen(key: &str, raw: &RawListen) -> Result<Listen, ConfigError> {
    let s = match raw {
        RawListen::Short(s) => s,
        RawListen::Table(t) => return parse_listen_table(key, t),
    };
    let (transport, addr) = match s.split_once(':') {
        Some((t, rest)) if t.eq_ignore_ascii_case("udp") => (Transport::Udp, rest),
        Some((t, rest)) if t.eq_ignore_ascii_case("tcp") => (Transport::Tcp, rest),
        Some((t, _)) if t.eq_ignore_ascii_case("tls") => {
            return Err(invalid(
                key,
                s,
                "a TLS listener needs a certificate: write it as a table \
                 { transport = \"tls\", address = \"ADDR:PORT\", cert = \"…\", key = \"…\" }",
            ))
        }
        _ => (Transport::Udp, s.as_str()),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| {
        invalid(
            key,
            s,
            "expected udp:ADDR:PORT or tcp:ADDR:PORT (IPv6 as [ADDR]:PORT)",
        )
    })?;
    Ok(Listen {
        transport,
        addr,
        tls: None,
    })
}

fn parse_listen_table(key: &str, t: &RawListenTable) -> Result<Listen, ConfigError> {
    let transport = match t.transport.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        _ => {
            return Err(invalid(
                format!("{key}.transport"),
                &t.transport,
                "expected udp, tcp or tls",
            ))
        }
    };
    let addr = parse_socket(&format!("{key}.address"), &t.address)?;
    let path = |field: &str, v: &Option<String>| match v.as_deref().map(str::trim) {
        Some("") => Err(invalid(format!("{key}.{field}"), "", "empty path")),
        Some(p) => Ok(Some(PathBuf::from(p))),
        None => Ok(None),
    };
    let (cert, pkey) = (path("cert", &t.cert)?, path("key", &t.key)?);
    let tls = match (transport, cert, pkey) {
        (Transport::Tls, Some(cert), Some(k)) => Some(TlsFiles {
            cert,
            key: k,
            at: key.to_owned(),
        }),
        (Transport::Tls, None, _) => {
            return Err(invalid(
                format!("{key}.cert"),
                "",
                "a TLS listener needs cert (PEM certificate chain)",
            ))
        }
        (Transport::Tls, _, None) => {
            return Err(invalid(
                format!("{key}.key"),
                "",
                "a TLS listener needs key (PEM private key)",
            ))
        }
        (_, Some(_), _) => {
            return Err(invalid(
                format!("{key}.cert"),
                t.cert.as_deref().unwrap_or_default(),
                "only a TLS listener has a certificate",
            ))
        }
        (_, _, Some(_)) => {
            return Err(invalid(
                format!("{key}.key"),
                t.key.as_deref().unwrap_or_default(),
                "only a TLS listener has a key",
            ))
        }
        _ => None,
    };
    Ok(Listen {
        transport,
        addr,
        tls,
    })
}

fn parse_socket(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(key, s, "expected IP:PORT (IPv6 as [ADDR]:PORT)"))
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

fn parse_advertise(key: &str, s: &str) -> Result<Advertise, ConfigError> {
    let t = s.trim();
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok(Advertise {
            host: sa.ip().to_string(),
            port: Some(sa.port()),
        });
    }
    if let Ok(ip) = t
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(Advertise {
            host: ip.to_string(),
            port: None,
        });
    }
    let (host, port) = match t.split_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h, Some(p)),
            _ => return Err(invalid(key, s, "the port is not 1-65535")),
        },
        None => (t, None),
    };
    if !valid_host(host) {
        return Err(invalid(key, s, "expected host, host:port, IP or IP:port"));
    }
    Ok(Advertise {
        host: host.to_owned(),
        port,
    })
}

fn trunk_uri(key: &str, address: &str, transport: Option<&str>) -> Result<String, ConfigError> {
    let t = address.trim();
    let lower = t.to_ascii_lowercase();
    let mut uri = if lower.starts_with("sip:") || lower.starts_with("sips:") {
        let scheme_len = if lower.starts_with("sip:") { 4 } else { 5 };
        let rest = &t[scheme_len..];
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        if host.is_empty() || host.starts_with([':', ';']) || t.contains(char::is_whitespace) {
            return Err(invalid(key, address, "the URI has no host"));
        }
        format!("{}{rest}", &lower[..scheme_len])
    } else {
        let host = if t.starts_with('[') {
            t.to_owned()
        } else {
            let (h, p) = t.split_once(':').unwrap_or((t, ""));
            if !valid_host(h) || (!p.is_empty() && !matches!(p.parse::<u16>(), Ok(x) if x > 0)) {
                return Err(invalid(key, address, "expected host[:port] or a sip: URI"));
            }
            t.to_owned()
        };
        format!("sip:{host}")
    };
    let sips = uri.starts_with("sips:");
    let k = key.replace(".address", ".transport");
    match transport.map(str::to_ascii_lowercase).as_deref() {
        None => {}
        // RFC 5630 §3.1.2: a SIPS URI is reached over TLS only.
        Some("udp" | "tcp") if sips => {
            return Err(invalid(
                k,
                transport.unwrap_or_default(),
                "a sips: address is reached over TLS: use transport = \"tls\" or leave it out",
            ))
        }
        Some("udp") => {}
        Some("tcp") => uri.push_str(";transport=tcp"),
        // A sips: URI already means TLS.
        Some("tls") if sips => {}
        Some("tls") => uri.push_str(";transport=tls"),
        Some(_) => {
            return Err(invalid(
                k,
                transport.unwrap_or_default(),
                "expected udp, tcp or tls",
            ));
        }
    }
    Ok(uri)
}

fn patterns(key: &str, p: &Option<OneOrMany>) -> Result<Option<Patterns>, ConfigError> {
    p.as_ref()
        .map(|p| Patterns::new(p.as_slice()).map_err(|e| invalid(key, p.as_slice(), e)))
        .transpose()
}

impl RawConfig {
    /// Phase 1: reads TOML text (unknown keys and wrong types are errors).
    pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// Phase 2: checks every value, applies defaults, builds the resolved [`Config`].
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let sip = self.resolve_sip()?;
        let recorder = self.resolve_recorder()?;
        let api = self.resolve_api()?;
        let events = EventsConfig {
            spool_dir: match self.events.enabled {
                Some(false) => None,
                _ => {
                    let d = self
                        .events
                        .spool_dir
                        .as_deref()
                        .unwrap_or(DEFAULT_SPOOL_DIR);
                    if d.trim().is_empty() {
                        return Err(invalid("events.spool-dir", d, "empty path"));
                    }
                    Some(PathBuf::from(d))
                }
            },
        };
        let directory = self.resolve_directory(sip.max_expires)?;
        let trunks = self.resolve_trunks(sip.tls_ca.is_some())?;
        let router = self.resolve_router(&directory, &trunks)?;
        let dns = self.resolve_dns()?;
        Ok(Config {
            sip,
            recorder,
            api,
            events,
            directory,
            trunks,
            router,
            dns,
        })
    }

    fn resolve_dns(&self) -> Result<DnsConfig, ConfigError> {
        let mut servers = Vec::new();
        for (i, s) in self.dns.servers.iter().flatten().enumerate() {
            let t = s.trim();
            let addr = t
                .parse::<SocketAddr>()
                .or_else(|_| {
                    t.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    invalid(
                        format!("dns.servers[{i}]"),
                        s,
                        "expected IP or IP:PORT (IPv6 as [ADDR]:PORT)",
                    )
                })?;
            if addr.port() == 0 {
                return Err(invalid(format!("dns.servers[{i}]"), s, "port 0"));
            }
            servers.push(addr);
        }
        let ms = self.dns.timeout_ms.unwrap_or(DEFAULT_DNS_TIMEOUT_MS);
        if !(1..=30_000).contains(&ms) {
            return Err(invalid("dns.timeout-ms", ms, "must be 1-30000"));
        }
        Ok(DnsConfig {
            servers,
            timeout: Duration::from_millis(ms),
        })
    }

    fn resolve_sip(&self) -> Result<SipConfig, ConfigError> {
        let raw = &self.sip;
        let listen_src: Vec<RawListen> = raw.listen.clone().unwrap_or_else(|| {
            DEFAULT_LISTEN
                .iter()
                .map(|s| RawListen::Short(s.to_string()))
                .collect()
        });
        if listen_src.is_empty() {
            return Err(invalid(
                "sip.listen",
                listen_src,
                "at least one address is needed",
            ));
        }
        let mut listen: Vec<Listen> = Vec::new();
        for (i, s) in listen_src.iter().enumerate() {
            let l = parse_listen(&format!("sip.listen[{i}]"), s)?;
            // TCP and TLS are both TCP sockets: one address cannot carry both.
            let stream = |t| matches!(t, Transport::Tcp | Transport::Tls);
            if listen.iter().any(|x| {
                x.addr == l.addr
                    && (x.transport == l.transport || stream(x.transport) && stream(l.transport))
            }) {
                let shown = match s {
                    RawListen::Short(s) => s.clone(),
                    RawListen::Table(t) => t.address.clone(),
                };
                return Err(invalid(format!("sip.listen[{i}]"), shown, "listed twice"));
            }
            listen.push(l);
        }
        let tls_ca = match raw.tls_ca.as_deref().map(str::trim) {
            Some("") => return Err(invalid("sip.tls-ca", "", "empty path")),
            Some(p) => Some(PathBuf::from(p)),
            None => None,
        };
        let advertise = raw
            .advertise
            .as_deref()
            .map(|a| parse_advertise("sip.advertise", a))
            .transpose()?;
        let switch_name = raw
            .switch_name
            .clone()
            .unwrap_or_else(|| DEFAULT_SWITCH_NAME.to_owned());
        if !valid_name(&switch_name) {
            return Err(invalid(
                "sip.switch-name",
                &switch_name,
                "use 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let trusted_src: Vec<String> = raw
            .trusted_peers
            .clone()
            .unwrap_or_else(|| DEFAULT_TRUSTED.iter().map(|s| s.to_string()).collect());
        let trusted_peers = trusted_src
            .iter()
            .enumerate()
            .map(|(i, s)| {
                IpNet::parse(s).map_err(|e| invalid(format!("sip.trusted-peers[{i}]"), s, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_expires = raw.max_expires.unwrap_or(DEFAULT_MAX_EXPIRES);
        if !(60..=86_400).contains(&max_expires) {
            return Err(invalid(
                "sip.max-expires",
                max_expires,
                "must be 60-86400 seconds",
            ));
        }
        let max_transactions = raw.max_transactions.unwrap_or(DEFAULT_MAX_TRANSACTIONS);
        if !(64..=4_194_304).contains(&max_transactions) {
            return Err(invalid(
                "sip.max-transactions",
                max_transactions,
                "must be 64-4194304",
            ));
        }
        let max_tcp_connections = raw
            .max_tcp_connections
            .unwrap_or(DEFAULT_MAX_TCP_CONNECTIONS);
        if !(1..=1_000_000).contains(&max_tcp_connections) {
            return Err(invalid(
                "sip.max-tcp-connections",
                max_tcp_connections,
                "must be 1-1000000",
            ));
        }
        let session_timer = match raw.session_expires.unwrap_or(DEFAULT_SESSION_EXPIRES) {
            0 => None,
            expires => {
                let min_se = raw.min_se.unwrap_or(DEFAULT_MIN_SE);
                // RFC 4028 §4: Min-SE is at least 90 s.
                if !(90..=86_400).contains(&min_se) {
                    return Err(invalid("sip.min-se", min_se, "must be 90-86400 seconds"));
                }
                if !(min_se..=86_400).contains(&expires) {
                    return Err(invalid(
                        "sip.session-expires",
                        expires,
                        format!("must be 0 (off) or {min_se}-86400 seconds (at least sip.min-se)"),
                    ));
                }
                Some(crate::sip::SessionTimerConfig { expires, min_se })
            }
        };
        Ok(SipConfig {
            listen,
            advertise,
            switch_name,
            trusted_peers,
            max_expires,
            max_transactions,
            max_tcp_connections,
            session_timer,
            tls_ca,
        })
    }

    fn resolve_recorder(&self) -> Result<RecorderConfig, ConfigError> {
        let raw = &self.recorder;
        let ng = parse_socket("recorder.ng", raw.ng.as_deref().unwrap_or(DEFAULT_NG))?;
        let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=60_000).contains(&timeout_ms) {
            return Err(invalid(
                "recorder.timeout-ms",
                timeout_ms,
                "must be 1-60000",
            ));
        }
        let retries = raw.retries.unwrap_or(DEFAULT_RETRIES);
        if retries > 10 {
            return Err(invalid("recorder.retries", retries, "must be 0-10"));
        }
        Ok(RecorderConfig {
            ng,
            timeout_ms,
            retries,
        })
    }

    fn resolve_api(&self) -> Result<ApiConfig, ConfigError> {
        let raw = &self.api;
        let listen = parse_socket(
            "api.listen",
            raw.listen.as_deref().unwrap_or(DEFAULT_API_LISTEN),
        )?;
        let token = raw.token.clone();
        match &token {
            Some(t) if t.trim().is_empty() || t.chars().any(char::is_whitespace) => {
                return Err(invalid(
                    "api.token",
                    "…",
                    "must be non-empty without spaces",
                ));
            }
            None if !listen.ip().is_loopback() => {
                return Err(invalid(
                    "api.listen",
                    listen.to_string(),
                    "set api.token to listen beyond loopback",
                ));
            }
            _ => {}
        }
        Ok(ApiConfig { listen, token })
    }

    fn resolve_directory(&self, max_expires: u32) -> Result<Directory, ConfigError> {
        let mut dns = Vec::new();
        for (i, d) in self.dn.iter().enumerate() {
            let record = d.record.unwrap_or(false);
            let record_critical = d.record_critical.unwrap_or(false);
            if record_critical && !record {
                return Err(invalid(
                    format!("dn[{i}].record-critical"),
                    true,
                    "needs record = true",
                ));
            }
            dns.push(DnConfig {
                number: d.number.clone(),
                name: d.name.clone(),
                contact: d.contact.clone(),
                record,
                record_critical,
            });
        }
        Directory::new(dns, max_expires).map_err(|e| {
            let at = |n: &str| self.dn.iter().position(|d| d.number == n).unwrap_or(0);
            match &e {
                DirectoryError::InvalidNumber(n) => invalid(format!("dn[{}].number", at(n)), n, &e),
                DirectoryError::Duplicate(n) => {
                    let i = self.dn.iter().rposition(|d| d.number == *n).unwrap_or(0);
                    invalid(format!("dn[{i}].number"), n, "listed twice")
                }
                DirectoryError::InvalidContact { contact, reason } => {
                    let i = self
                        .dn
                        .iter()
                        .position(|d| d.contact.as_deref() == Some(contact.as_str()))
                        .unwrap_or(0);
                    invalid(format!("dn[{i}].contact"), contact, reason)
                }
                DirectoryError::UnknownDn(n) => invalid("dn", n, &e),
            }
        })
    }

    fn resolve_trunks(&self, have_ca: bool) -> Result<Vec<Trunk>, ConfigError> {
        let mut trunks: Vec<Trunk> = Vec::new();
        for (i, t) in self.trunk.iter().enumerate() {
            if !valid_name(&t.name) {
                return Err(invalid(
                    format!("trunk[{i}].name"),
                    &t.name,
                    "use 1-64 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            if trunks.iter().any(|x| x.name == t.name) {
                return Err(invalid(format!("trunk[{i}].name"), &t.name, "listed twice"));
            }
            let uri = trunk_uri(
                &format!("trunk[{i}].address"),
                &t.address,
                t.transport.as_deref(),
            )?;
            // A TLS trunk's certificate is verified against sip.tls-ca (no system roots).
            let tls =
                uri.starts_with("sips:") || uri.to_ascii_lowercase().contains(";transport=tls");
            if tls && !have_ca {
                return Err(invalid(
                    "sip.tls-ca",
                    "",
                    format!(
                        "trunk {:?} is reached over TLS: set sip.tls-ca to the CA bundle its \
                         certificate chains to",
                        t.name
                    ),
                ));
            }
            trunks.push(Trunk {
                name: t.name.clone(),
                uri,
            });
        }
        Ok(trunks)
    }

    fn resolve_router(
        &self,
        directory: &Directory,
        trunks: &[Trunk],
    ) -> Result<Router, ConfigError> {
        let zone = match (&self.routing.time_zone, &self.routing.utc_offset) {
            (Some(_), Some(s)) => {
                return Err(invalid(
                    "routing.utc-offset",
                    s,
                    "give either time-zone or utc-offset",
                ))
            }
            (Some(s), None) => {
                parse_time_zone(s).map_err(|e| invalid("routing.time-zone", s, e))?
            }
            (None, Some(s)) => parse_utc_offset(s)
                .and_then(fixed_zone)
                .map_err(|e| invalid("routing.utc-offset", s, e))?,
            (None, None) => jiff::tz::TimeZone::UTC,
        };
        let mut rules: Vec<Rule> = Vec::new();
        for (i, r) in self.route.iter().enumerate() {
            let k = |field: &str| format!("route[{i}].{field}");
            let name = r.name.clone().unwrap_or_else(|| format!("route-{}", i + 1));
            if name.trim().is_empty() {
                return Err(invalid(k("name"), &name, "empty"));
            }
            if rules.iter().any(|x| x.name == name) {
                return Err(invalid(k("name"), &name, "two routes have this name"));
            }
            let mut rule = Rule::new(name);
            rule.caller = patterns(&k("caller"), &r.caller)?;
            rule.callee = patterns(&k("callee"), &r.callee)?;
            rule.ruri = patterns(&k("ruri"), &r.ruri)?;
            for (h, p) in r.headers.iter().flatten() {
                let hk = format!("route[{i}].headers.{h}");
                if h.is_empty() || h.bytes().any(|b| b <= b' ' || b == b':' || b >= 0x7f) {
                    return Err(invalid(hk, h, "not a header name"));
                }
                let pats =
                    Patterns::new(p.as_slice()).map_err(|e| invalid(&hk, p.as_slice(), e))?;
                rule.headers.push((h.clone(), pats));
            }
            if r.days.is_some() || r.hours.is_some() {
                let days = r.days.as_ref().map(OneOrMany::as_slice);
                let w = TimeWindow::parse(days, r.hours.as_deref()).map_err(|e| {
                    // Tell which of the two keys is wrong.
                    let bad_days = days.is_some_and(|d| TimeWindow::parse(Some(d), None).is_err());
                    if bad_days {
                        invalid(k("days"), days.unwrap_or_default(), e)
                    } else {
                        invalid(k("hours"), r.hours.as_deref().unwrap_or_default(), e)
                    }
                })?;
                rule.window = Some(w);
            }
            rule.target = match r.target.as_deref() {
                None => RuleTarget::CalledDn,
                Some(text) => parse_target(&k("target"), text, directory, trunks)?,
            };
            if let Some(p) = r.record_percent {
                if !(0.0..=100.0).contains(&p) {
                    return Err(invalid(k("record-percent"), p, "must be 0-100"));
                }
                if r.record == Some(false) {
                    return Err(invalid(
                        k("record-percent"),
                        p,
                        "conflicts with record = false",
                    ));
                }
                rule.record_share = (p * 100.0).round() as u32;
            }
            rule.record = r.record.unwrap_or(r.record_percent.is_some());
            if rule.record && matches!(rule.target, RuleTarget::Reject { .. }) {
                return Err(invalid(
                    k("record"),
                    true,
                    "a rejected call cannot be recorded",
                ));
            }
            rules.push(rule);
        }
        let no_answer = self.resolve_no_answer(directory, trunks)?;
        Ok(Router {
            rules,
            zone,
            no_answer,
        })
    }

    fn resolve_no_answer(
        &self,
        directory: &Directory,
        trunks: &[Trunk],
    ) -> Result<Option<NoAnswer>, ConfigError> {
        let secs = self
            .routing
            .no_answer_secs
            .unwrap_or(DEFAULT_NO_ANSWER_SECS);
        if secs == 0 {
            return Ok(None);
        }
        if !(5..=3600).contains(&secs) {
            return Err(invalid(
                "routing.no-answer-secs",
                secs,
                "must be 0 (off) or 5-3600 seconds",
            ));
        }
        let text = self
            .routing
            .no_answer_target
            .as_deref()
            .unwrap_or(DEFAULT_NO_ANSWER_TARGET);
        let target = parse_target("routing.no-answer-target", text, directory, trunks)?;
        if target == RuleTarget::CalledDn {
            return Err(invalid(
                "routing.no-answer-target",
                text,
                "the called DN is the one that did not answer: use dn:NUMBER, trunk:NAME or reject:STATUS",
            ));
        }
        Ok(Some(NoAnswer {
            after_secs: secs,
            target,
        }))
    }
}

/// A call target as written (`dn`, `dn:NUMBER`, `trunk:NAME`, `reject`, `reject:STATUS`), checked
/// against the DNs and trunks; `key` names it in errors.
fn parse_target(
    key: &str,
    text: &str,
    directory: &Directory,
    trunks: &[Trunk],
) -> Result<RuleTarget, ConfigError> {
    let t = text.trim();
    Ok(match t {
        "dn" => RuleTarget::CalledDn,
        "reject" => RuleTarget::Reject { status: 403 },
        t => match t.split_once(':') {
            Some(("dn", n)) => {
                if directory.get(n).is_none() {
                    return Err(invalid(key, t, format!("there is no [[dn]] {n:?}")));
                }
                RuleTarget::Dn(n.to_owned())
            }
            Some(("trunk", n)) => match trunks.iter().find(|x| x.name == n) {
                Some(x) => RuleTarget::Trunk {
                    name: x.name.clone(),
                    uri: x.uri.clone(),
                },
                None => return Err(invalid(key, t, format!("there is no [[trunk]] {n:?}"))),
            },
            Some(("reject", s)) => match s.parse::<u16>() {
                Ok(status) if (400..=699).contains(&status) => RuleTarget::Reject { status },
                _ => return Err(invalid(key, t, "the status must be 400-699")),
            },
            _ => {
                return Err(invalid(
                    key,
                    t,
                    "expected dn, dn:NUMBER, trunk:NAME, reject or reject:STATUS",
                ))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Lookup;
    use crate::routing::{CallFacts, Target};

    fn err(text: &str) -> ConfigError {
        match Config::from_toml(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e,
        }
    }

    fn key_of(e: &ConfigError) -> &str {
        match e {
            ConfigError::Invalid { key, .. } => key,
            ConfigError::Syntax(_) => "<syntax>",
        }
    }

    #[test]
    fn embedded_and_empty_configs_resolve() {
        let c = Config::embedded().expect("embedded config");
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.sip.listen[0].transport, Transport::Udp);
        assert_eq!(c.sip.listen[1].transport, Transport::Tcp);
        assert_eq!(c.sip.listen[0].addr, "0.0.0.0:5060".parse().expect("addr"));
        assert_eq!(c.recorder.ng, "127.0.0.1:2223".parse().expect("addr"));
        assert_eq!(c.api.token, None);
        assert_eq!(
            c.events.spool_dir,
            Some(PathBuf::from("/var/spool/linecord"))
        );
        assert!(matches!(
            c.directory.lookup("1001", 0),
            Lookup::Found {
                contact: "sip:1001@198.18.0.20:5060",
                ..
            }
        ));
        assert!(c.directory.get("1001").is_some_and(|d| d.record));
        assert!(c.is_trusted_peer("198.19.255.255".parse().expect("ip")));
        assert!(!c.is_trusted_peer("198.20.0.1".parse().expect("ip")));
        // An empty file gets the same settings, without DNs.
        let e = Config::from_toml("").expect("empty config");
        assert_eq!(e.sip, c.sip);
        assert_eq!(e.recorder, c.recorder);
        assert_eq!(e.api, c.api);
        assert_eq!(e.events, c.events);
        assert!(e.directory.is_empty());
    }

    const FULL: &str = r#"
        [sip]
        listen = ["udp:198.18.0.1:5060", "tcp:[2001:2::1]:5080", "198.18.0.1:5070"]
        advertise = "pbx.example.com:5060"
        switch-name = "sipctl-1"
        trusted-peers = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
        max-expires = 600

        [recorder]
        ng = "[::1]:2223"
        timeout-ms = 250
        retries = 0

        [api]
        listen = "0.0.0.0:8080"
        token = "s3cret-token"

        [events]
        spool-dir = "/tmp/spool"

        [routing]
        utc-offset = "+01:00"

        [[dn]]
        number = "1001"
        name = "Alice"
        contact = "sip:alice@198.18.0.20:5060"

        [[dn]]
        number = "1002"
        record = true
        record-critical = true

        [[trunk]]
        name = "pstn"
        address = "198.18.0.9:5060"
        transport = "tcp"

        [[route]]
        name = "blocked"
        caller = ["+1900*", "anonymous"]
        target = "reject:603"

        [[route]]
        name = "out"
        callee = "0*"
        target = "trunk:pstn"
        record = true

        [[route]]
        name = "sales"
        headers = { "X-Queue" = "sales*" }
        days = ["mon-fri"]
        hours = "08:00-18:00"
        target = "dn:1001"
        record-percent = 30

        [[route]]
        ruri = "sip:*@night.example.com"
        days = "sat"
        hours = "22:00-06:00"
    "#;

    #[test]
    fn full_config_resolves() {
        let c = Config::from_toml(FULL).expect("valid");
        assert_eq!(c.sip.listen.len(), 3);
        assert_eq!(c.sip.listen[1].transport, Transport::Tcp);
        assert_eq!(c.sip.listen[2].transport, Transport::Udp);
        assert_eq!(
            c.sip.advertise,
            Some(Advertise {
                host: "pbx.example.com".into(),
                port: Some(5060)
            })
        );
        assert_eq!(c.sip.switch_name, "sipctl-1");
        assert!(c.is_trusted_peer("10.1.2.3".parse().expect("ip")));
        assert!(c.is_trusted_peer("192.0.2.7".parse().expect("ip")));
        assert!(c.is_trusted_peer("::ffff:192.0.2.7".parse().expect("ip")));
        assert!(!c.is_trusted_peer("192.0.2.8".parse().expect("ip")));
        assert!(c.is_trusted_peer("2001:db8::5".parse().expect("ip")));
        assert_eq!(c.sip.max_expires, 600);
        assert_eq!(c.directory.max_expires(), 600);
        assert_eq!(c.recorder.timeout_ms, 250);
        assert_eq!(c.recorder.retries, 0);
        assert_eq!(c.api.token.as_deref(), Some("s3cret-token"));
        assert_eq!(c.events.spool_dir, Some(PathBuf::from("/tmp/spool")));
        assert_eq!(
            c.trunk("pstn").map(|t| t.uri.as_str()),
            Some("sip:198.18.0.9:5060;transport=tcp")
        );
        assert_eq!(c.router.zone, fixed_zone(60).expect("offset"));
        let names: Vec<&str> = c.router.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["blocked", "out", "sales", "route-4"]);
        assert_eq!(c.router.rules[0].target, RuleTarget::Reject { status: 603 });
        assert!(c.router.rules[1].record);
        assert!(c.router.rules[2].record);
        assert_eq!(c.router.rules[2].record_share, 3000);
        assert!(!c.router.rules[3].record);

        // End to end: Wednesday 2026-11-25 09:12 UTC (10:12 local), X-Queue: sales-eu.
        let headers = [("x-queue", "sales-eu")];
        let facts = CallFacts {
            caller: "+4930123456",
            callee: "2000",
            ruri: "sip:2000@pbx.example.com",
            headers: &headers,
            unix_time: 1_795_597_923,
            sample: 2999,
        };
        let d = c.router.decide(&facts, &c.directory);
        assert_eq!(d.rule_name.as_deref(), Some("sales"));
        assert_eq!(
            d.target,
            Target::Dn {
                dn: "1001".into(),
                contact: "sip:alice@198.18.0.20:5060".into()
            }
        );
        assert!(d.record);
        let d = c.router.decide(
            &CallFacts {
                sample: 3000,
                ..facts
            },
            &c.directory,
        );
        assert!(!d.record);
        let d = c.router.decide(
            &CallFacts {
                caller: "anonymous",
                ..facts
            },
            &c.directory,
        );
        assert!(matches!(d.target, Target::Reject { status: 603, .. }));
        let d = c.router.decide(
            &CallFacts {
                callee: "0301234",
                ..facts
            },
            &c.directory,
        );
        assert!(matches!(d.target, Target::Trunk { .. }) && d.record);
    }

    #[test]
    fn dns_servers_and_trunk_names() {
        let c = Config::from_toml(
            "[dns]\nservers = [\"198.18.0.53\", \"198.18.0.54:5353\", \"[2001:db8::53]\"]\n\
             timeout-ms = 500\n[[trunk]]\nname = \"carrier\"\naddress = \"trunk.example.test\"",
        )
        .expect("resolves");
        assert_eq!(
            c.dns.servers,
            [
                "198.18.0.53:53".parse::<SocketAddr>().expect("addr"),
                "198.18.0.54:5353".parse().expect("addr"),
                "[2001:db8::53]:53".parse().expect("addr"),
            ]
        );
        assert_eq!(c.dns.timeout, Duration::from_millis(500));
        assert_eq!(
            c.trunk("carrier").map(|t| t.uri.as_str()),
            Some("sip:trunk.example.test")
        );
        let d = Config::embedded().expect("embedded").dns;
        assert!(d.servers.is_empty());
        assert_eq!(d.timeout, Duration::from_millis(DEFAULT_DNS_TIMEOUT_MS));
    }

    #[test]
    fn routing_time_zone_forms() {
        let zone = |text: &str| Config::from_toml(text).expect("resolves").router.zone;
        assert_eq!(
            zone("[routing]\ntime-zone = \"Europe/Berlin\"").iana_name(),
            Some("Europe/Berlin")
        );
        assert_eq!(
            zone("[routing]\ntime-zone = \"-05:30\""),
            fixed_zone(-330).expect("offset")
        );
        assert_eq!(
            zone("[routing]\nutc-offset = \"+02:00\""),
            fixed_zone(120).expect("offset")
        );
        assert_eq!(zone(""), jiff::tz::TimeZone::UTC);
    }

    #[test]
    fn events_can_be_disabled() {
        let c = Config::from_toml("[events]\nenabled = false").expect("valid");
        assert_eq!(c.events.spool_dir, None);
    }

    #[test]
    fn syntax_errors() {
        for text in [
            "[sip",
            "[sip]\nlisten = 5060",
            "[sip]\nlisen = [\"udp:0.0.0.0:5060\"]",
            "[unknown]",
            "[[dn]]\nname = \"no number\"",
            "[[route]]\nrecord = \"yes\"",
            "[recorder]\nretries = -1",
        ] {
            assert!(matches!(err(text), ConfigError::Syntax(_)), "{text}");
        }
        let e = err("[sip]\nlisen = [\"udp:0.0.0.0:5060\"]");
        assert!(e.to_string().contains("lisen"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases: &[(&str, &str)] = &[
            ("[sip]\nlisten = []", "sip.listen"),
            ("[sip]\nlisten = [\"udp:0.0.0.0\"]", "sip.listen[0]"),
            ("[sip]\nlisten = [\"sctp:0.0.0.0:5060\"]", "sip.listen[0]"),
            ("[sip]\nlisten = [\"udp:0.0.0.0:5060\", \"0.0.0.0:5060\"]", "sip.listen[1]"),
            ("[sip]\nadvertise = \"bad host!\"", "sip.advertise"),
            ("[sip]\nadvertise = \"h:0\"", "sip.advertise"),
            ("[sip]\nswitch-name = \"a b\"", "sip.switch-name"),
            ("[sip]\ntrusted-peers = [\"10.0.0.1/8\"]", "sip.trusted-peers[0]"),
            ("[sip]\ntrusted-peers = [\"10.0.0.0/33\"]", "sip.trusted-peers[0]"),
            ("[sip]\ntrusted-peers = [\"ten\"]", "sip.trusted-peers[0]"),
            ("[sip]\nmax-expires = 5", "sip.max-expires"),
            ("[recorder]\nng = \"localhost:2223\"", "recorder.ng"),
            ("[recorder]\ntimeout-ms = 0", "recorder.timeout-ms"),
            ("[recorder]\nretries = 11", "recorder.retries"),
            ("[api]\nlisten = \"0.0.0.0:8080\"", "api.listen"),
            ("[api]\ntoken = \"\"", "api.token"),
            ("[events]\nspool-dir = \"\"", "events.spool-dir"),
            ("[routing]\nutc-offset = \"CET\"", "routing.utc-offset"),
            ("[dns]\nservers = [\"ns.example\"]", "dns.servers[0]"),
            ("[dns]\nservers = [\"198.18.0.53:0\"]", "dns.servers[0]"),
            ("[dns]\ntimeout-ms = 0", "dns.timeout-ms"),
            ("[routing]\ntime-zone = \"Mars/Olympus\"", "routing.time-zone"),
            ("[routing]\ntime-zone = \"UTC\"\nutc-offset = \"+01:00\"", "routing.utc-offset"),
            ("[[dn]]\nnumber = \"10 01\"", "dn[0].number"),
            ("[[dn]]\nnumber = \"1\"\n[[dn]]\nnumber = \"1\"", "dn[1].number"),
            ("[[dn]]\nnumber = \"1\"\ncontact = \"x y\"", "dn[0].contact"),
            ("[[dn]]\nnumber = \"1\"\nrecord-critical = true", "dn[0].record-critical"),
            ("[[trunk]]\nname = \"t\"\naddress = \"h:0\"", "trunk[0].address"),
            ("[[trunk]]\nname = \"t\"\naddress = \"h\"\ntransport = \"sctp\"", "trunk[0].transport"),
            ("[[trunk]]\nname = \"t t\"\naddress = \"h\"", "trunk[0].name"),
            ("[[trunk]]\nname = \"t\"\naddress = \"h\"\n[[trunk]]\nname = \"t\"\naddress = \"g\"", "trunk[1].name"),
            ("[[route]]\ncallee = \"[0-9\"", "route[0].callee"),
            ("[[route]]\ncaller = []", "route[0].caller"),
            ("[[route]]\nheaders = { \"X Q\" = \"a\" }", "route[0].headers.X Q"),
            ("[[route]]\nheaders = { \"X-Q\" = \"[\" }", "route[0].headers.X-Q"),
            ("[[route]]\ndays = [\"someday\"]", "route[0].days"),
            ("[[route]]\nhours = \"25:00-26:00\"", "route[0].hours"),
            ("[[route]]\ndays = \"mon\"\nhours = \"9-17\"", "route[0].hours"),
            ("[[route]]\ntarget = \"dn:1001\"", "route[0].target"),
            ("[[route]]\ntarget = \"trunk:none\"", "route[0].target"),
            ("[[route]]\ntarget = \"reject:200\"", "route[0].target"),
            ("[[route]]\ntarget = \"somewhere\"", "route[0].target"),
            ("[[route]]\nrecord-percent = 101", "route[0].record-percent"),
            ("[[route]]\nrecord-percent = -1", "route[0].record-percent"),
            ("[[route]]\nrecord = false\nrecord-percent = 10", "route[0].record-percent"),
            ("[[route]]\ntarget = \"reject\"\nrecord = true", "route[0].record"),
            ("[[route]]\nname = \"a\"\n[[route]]\nname = \"a\"", "route[1].name"),
        ];
        for (text, key) in cases {
            let e = err(text);
            assert_eq!(key_of(&e), *key, "{text}: {e}");
            // The message carries key and value.
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn record_percent_accepts_integers_and_fractions() {
        let c = Config::from_toml("[[route]]\nrecord-percent = 30").expect("valid");
        assert_eq!(c.router.rules[0].record_share, 3000);
        assert!(c.router.rules[0].record);
        let c = Config::from_toml("[[route]]\nrecord-percent = 0.5").expect("valid");
        assert_eq!(c.router.rules[0].record_share, 50);
    }

    #[test]
    fn ip_nets() {
        let n = IpNet::parse("198.18.0.0/15").expect("valid");
        assert!(n.contains("198.18.0.1".parse().expect("ip")));
        assert!(n.contains("198.19.1.1".parse().expect("ip")));
        assert!(!n.contains("198.20.0.0".parse().expect("ip")));
        assert!(!n.contains("::1".parse().expect("ip")));
        let all = IpNet::parse("0.0.0.0/0").expect("valid");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let v6 = IpNet::parse("::/0").expect("valid");
        assert!(v6.contains("2001:db8::1".parse().expect("ip")));
        assert!(IpNet::parse("198.18.0.1/15").is_err());
        assert!(IpNet::parse("::1/129").is_err());
    }

    #[test]
    fn tls_listeners_are_tables_with_certificate_and_key() {
        let mixed = Config::from_toml(
            r#"[sip]
            listen = ["udp:0.0.0.0:5060", { transport = "tls", address = "0.0.0.0:5061", cert = "/c.pem", key = "/k.pem" }]
            tls-ca = "/ca.pem""#,
        )
        .expect("valid");
        let tables = Config::from_toml(
            r#"[sip]
            tls-ca = "/ca.pem"
            [[sip.listen]]
            transport = "udp"
            address = "0.0.0.0:5060"
            [[sip.listen]]
            transport = "TLS"
            address = "0.0.0.0:5061"
            cert = "/c.pem"
            key = "/k.pem""#,
        )
        .expect("valid");
        assert_eq!(mixed.sip, tables.sip);
        let l = &tables.sip.listen;
        assert_eq!((l[0].transport, l[0].tls.as_ref()), (Transport::Udp, None));
        assert_eq!(l[1].transport, Transport::Tls);
        assert_eq!(l[1].addr, "0.0.0.0:5061".parse().expect("addr"));
        assert_eq!(
            l[1].tls,
            Some(TlsFiles {
                cert: "/c.pem".into(),
                key: "/k.pem".into(),
                at: "sip.listen[1]".into(),
            })
        );
        assert_eq!(tables.sip.tls_ca, Some(PathBuf::from("/ca.pem")));
        // Without tls-ca nothing outbound is TLS, which is fine without TLS trunks.
        let c = Config::from_toml(
            "[sip]\nlisten = [{ transport = \"tcp\", address = \"127.0.0.1:5060\" }]",
        )
        .expect("valid");
        assert_eq!(c.sip.listen[0].transport, Transport::Tcp);
        assert_eq!(c.sip.tls_ca, None);
    }

    #[test]
    fn tls_trunks_need_the_ca_bundle() {
        let ca = "[sip]\ntls-ca = \"/ca.pem\"\n";
        let uri = |trunk: &str| {
            Config::from_toml(&format!("{ca}[[trunk]]\nname = \"t\"\n{trunk}"))
                .expect("valid")
                .trunks[0]
                .uri
                .clone()
        };
        assert_eq!(
            uri("address = \"198.18.0.9:5061\"\ntransport = \"tls\""),
            "sip:198.18.0.9:5061;transport=tls"
        );
        assert_eq!(uri("address = \"sips:198.18.0.9\""), "sips:198.18.0.9");
        assert_eq!(
            uri("address = \"sips:198.18.0.9\"\ntransport = \"tls\""),
            "sips:198.18.0.9"
        );
    }

    #[test]
    fn tls_errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("[sip]\nlisten = [\"tls:0.0.0.0:5061\"]", "sip.listen[0]"),
            (
                "[sip]\nlisten = [{ transport = \"tls\", address = \"0.0.0.0:5061\", key = \"/k\" }]",
                "sip.listen[0].cert",
            ),
            (
                "[sip]\nlisten = [{ transport = \"tls\", address = \"0.0.0.0:5061\", cert = \"/c\" }]",
                "sip.listen[0].key",
            ),
            (
                "[sip]\nlisten = [{ transport = \"tls\", address = \"0.0.0.0:5061\", cert = \"\", key = \"/k\" }]",
                "sip.listen[0].cert",
            ),
            (
                "[sip]\nlisten = [{ transport = \"udp\", address = \"0.0.0.0:5060\", cert = \"/c\" }]",
                "sip.listen[0].cert",
            ),
            (
                "[sip]\nlisten = [{ transport = \"tcp\", address = \"0.0.0.0:5060\", key = \"/k\" }]",
                "sip.listen[0].key",
            ),
            (
                "[sip]\nlisten = [{ transport = \"sctp\", address = \"0.0.0.0:5060\" }]",
                "sip.listen[0].transport",
            ),
            (
                "[sip]\nlisten = [{ transport = \"udp\", address = \"0.0.0.0\" }]",
                "sip.listen[0].address",
            ),
            (
                "[sip]\nlisten = [\"tcp:0.0.0.0:5061\", { transport = \"tls\", address = \"0.0.0.0:5061\", cert = \"/c\", key = \"/k\" }]",
                "sip.listen[1]",
            ),
            ("[sip]\ntls-ca = \" \"", "sip.tls-ca"),
            (
                "[[trunk]]\nname = \"t\"\naddress = \"198.18.0.9\"\ntransport = \"tls\"",
                "sip.tls-ca",
            ),
            ("[[trunk]]\nname = \"t\"\naddress = \"sips:198.18.0.9\"", "sip.tls-ca"),
            (
                "[[trunk]]\nname = \"t\"\naddress = \"sip:198.18.0.9;transport=TLS\"",
                "sip.tls-ca",
            ),
            (
                "[sip]\ntls-ca = \"/ca\"\n[[trunk]]\nname = \"t\"\naddress = \"sips:198.18.0.9\"\ntransport = \"udp\"",
                "trunk[0].transport",
            ),
        ];
        for (text, key) in cases {
            let e = err(text);
            assert_eq!(key_of(&e), *key, "{text}: {e}");
        }
        // A syntax error in a table entry names the line.
        let e = err("[sip]\nlisten = [{ transport = \"tls\", address = \"0.0.0.0:5061\", certificate = \"/c\" }]");
        assert!(matches!(e, ConfigError::Syntax(_)), "{e}");
    }

    #[test]
    fn advertise_forms() {
        let a = |s| parse_advertise("k", s).expect("valid");
        assert_eq!(a("198.18.0.1").port, None);
        assert_eq!(a("198.18.0.1:5080").port, Some(5080));
        assert_eq!(a("[2001:2::1]:5060").host, "2001:2::1");
        assert_eq!(a("2001:2::1").host, "2001:2::1");
        assert_eq!(a("pbx.example.com").host, "pbx.example.com");
    }
}
