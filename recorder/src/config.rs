//! Configuration in two phases: raw options from the command line and an optional TOML file
//! (same keys; flags win), then validation into a resolved [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::control::ng::DEFAULT_REPLY_CACHE_BYTES;
use crate::control::session::{DEFAULT_MAX_MEDIA_PER_CALL, DEFAULT_MAX_SDP_SIZE};
use crate::recording::writer::FsyncPolicy;

/// Highest `--max-media-per-call`: 1 024 lines are 2 048 port pairs for one call.
pub const MAX_MEDIA_PER_CALL_LIMIT: usize = 1024;
/// Smallest `--max-sdp-size` (a minimal audio SDP is ~100 bytes).
pub const MIN_SDP_SIZE_LIMIT: usize = 256;
/// Highest `--ng-reply-cache`, MiB.
pub const MAX_REPLY_CACHE_MIB: u64 = 4096;

/// Packet I/O backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Kernel UDP sockets with recvmmsg/sendmmsg (portable, unprivileged).
    Udp,
    /// AF_XDP kernel bypass: an XDP program steers media ports to one AF_XDP socket per
    /// RX queue (needs root or CAP_NET_ADMIN/CAP_BPF, and `--interface-name`).
    Xdp,
    /// xdp when the interface, privileges and kernel allow it, otherwise udp (logged).
    Auto,
}

/// Daemon options. Every option can also be set in the `--config` TOML file under the same
/// name (e.g. `port-min = 30000`); command-line flags override the file.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawOptions {
    /// TOML file with any of these options.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Media interface, rtpengine style: `[NAME/]ADDRESS[!ADVERTISED]`. The address is bound
    /// for media; the advertised one (default: the same) goes into SDP. [default: 127.0.0.1]
    #[arg(long, value_name = "[NAME/]ADDR[!ADV]")]
    pub interface: Option<String>,
    /// Address and port of the NG control protocol (UDP). [default: 127.0.0.1:2223]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen_ng: Option<SocketAddr>,
    /// Lowest media port. [default: 30000]
    #[arg(long)]
    pub port_min: Option<u16>,
    /// Highest media port. [default: 39999]
    #[arg(long)]
    pub port_max: Option<u16>,
    /// Packet backend. [default: udp]
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Network interface for the xdp backend (the one that holds the --interface address).
    /// [default: found from the --interface address]
    #[arg(long, value_name = "IF")]
    pub interface_name: Option<String>,
    /// RX queues the xdp backend serves, one pinned worker each, e.g. `0-3`. [default: all
    /// RX queues of the interface]
    #[arg(long, value_name = "LIST")]
    pub queues: Option<String>,
    /// Packet worker threads. [default: number of CPUs]
    #[arg(long)]
    pub workers: Option<usize>,
    /// CPUs to pin workers to, one per worker in order, e.g. `2,3` or `2-5`. [default: the
    /// first N CPUs]
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// Seconds without packets or signalling after which a call is deleted. [default: 60]
    #[arg(long, value_name = "SECS")]
    pub media_timeout: Option<u64>,
    /// Log filter: error, warn, info, debug, trace (or a tracing directive). [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Where finished recordings go (`YYYY/MM/DD/<id>.lcr` + `.json`); files being written
    /// are under `.inprogress/`. [default: /var/lib/linecord/recordings]
    #[arg(long, value_name = "DIR")]
    pub recording_dir: Option<PathBuf>,
    /// Spool directory of the processor queue: one job per finished recording in `new/`.
    /// [default: /var/spool/linecord]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// A recording block is written at the latest this long after its first packet: the most
    /// a crash can lose. [default: 500]
    #[arg(long, value_name = "MS")]
    pub flush_interval: Option<u64>,
    /// When recording files are fsynced: none, block (after every block), close. [default:
    /// close]
    #[arg(long, value_enum)]
    pub fsync: Option<FsyncPolicy>,
    /// Memory for recording buffers; past it, packets are not recorded (counted, recording
    /// marked incomplete) while media keeps flowing. [default: 256]
    #[arg(long, value_name = "MIB")]
    pub recording_memory: Option<u64>,
    // --- recording disk reserve (full-disk hardening) ---
    /// Free space the recording filesystem must have for a new recording to be opened; below
    /// it the call is relayed but not recorded (NG `query` says why, a `failed` job is
    /// spooled). Recordings already running may use the reserve. 0 turns the check off.
    /// [default: 64]
    #[arg(long, value_name = "MIB")]
    pub min_free_disk: Option<u64>,
    // --- end recording disk reserve ---
    // --- NG limits (control-plane hardening) ---
    /// Most media (m=) lines one offer or answer may carry (each takes a port pair per
    /// party); more is refused with an error-reason naming this limit, before any port is
    /// taken. 1 to 1024. [default: 16]
    #[arg(long, value_name = "N")]
    pub max_media_per_call: Option<usize>,
    /// Largest SDP body one offer or answer may carry, in bytes; larger is refused. 256 to
    /// 65536. [default: 16384]
    #[arg(long, value_name = "BYTES")]
    pub max_sdp_size: Option<usize>,
    /// Memory for the NG reply cache, which answers retransmitted requests (same source and
    /// cookie, within 32 s) without running them again: cookies and replies, oldest evicted
    /// first. 1 to 4096. [default: 32]
    #[arg(long, value_name = "MIB")]
    pub ng_reply_cache: Option<u64>,
    // --- end NG limits ---
}

/// Validated settings the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Interface name (for logs and `direction`).
    pub interface_name: String,
    /// Address media sockets bind to.
    pub bind_address: IpAddr,
    /// Address put into SDP.
    pub advertised_address: IpAddr,
    /// NG control socket.
    pub listen_ng: SocketAddr,
    /// Media port range.
    pub port_min: u16,
    /// Media port range.
    pub port_max: u16,
    /// Backend.
    pub backend: Backend,
    /// Interface for the xdp backend, if given.
    pub interface_device: Option<String>,
    /// RX queues for the xdp backend, if given.
    pub queues: Option<Vec<u32>>,
    /// Number of packet workers.
    pub workers: usize,
    /// CPU per worker (empty = do not pin).
    pub cpus: Vec<usize>,
    /// Media timeout.
    pub media_timeout: Duration,
    /// Log filter.
    pub log_level: String,
    /// Recording directory.
    pub recording_dir: PathBuf,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Flush interval.
    pub flush_interval: Duration,
    /// fsync policy.
    pub fsync: FsyncPolicy,
    /// Recording buffer budget in bytes.
    pub recording_memory: u64,
    // --- recording disk reserve (full-disk hardening) ---
    /// Free bytes the recording filesystem needs for a new recording (0: no check).
    pub min_free_disk: u64,
    // --- end recording disk reserve ---
    // --- NG limits (control-plane hardening) ---
    /// Most media lines per offer/answer.
    pub max_media_per_call: usize,
    /// Largest SDP body, bytes.
    pub max_sdp_size: usize,
    /// Byte budget of the NG reply cache.
    pub ng_reply_cache_bytes: usize,
    // --- end NG limits ---
}

/// Size of one recording block buffer: a call's 500 ms of G.711 both ways (~8.3 KB of
/// records) fits, so a call holds one buffer at a time (see docs/benchmarks.md).
pub const BLOCK_CAPACITY: usize = 12 * 1024;

impl RawOptions {
    /// Fills unset options from the TOML file named by `--config`, if any.
    pub fn merge_file(self) -> anyhow::Result<RawOptions> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = load_toml(&path)?;
        Ok(RawOptions {
            config: self.config,
            interface: self.interface.or(file.interface),
            listen_ng: self.listen_ng.or(file.listen_ng),
            port_min: self.port_min.or(file.port_min),
            port_max: self.port_max.or(file.port_max),
            backend: self.backend.or(file.backend),
            interface_name: self.interface_name.or(file.interface_name),
            queues: self.queues.or(file.queues),
            workers: self.workers.or(file.workers),
            cpus: self.cpus.or(file.cpus),
            media_timeout: self.media_timeout.or(file.media_timeout),
            log_level: self.log_level.or(file.log_level),
            recording_dir: self.recording_dir.or(file.recording_dir),
            spool_dir: self.spool_dir.or(file.spool_dir),
            flush_interval: self.flush_interval.or(file.flush_interval),
            fsync: self.fsync.or(file.fsync),
            recording_memory: self.recording_memory.or(file.recording_memory),
            // recording disk reserve
            min_free_disk: self.min_free_disk.or(file.min_free_disk),
            // NG limits
            max_media_per_call: self.max_media_per_call.or(file.max_media_per_call),
            max_sdp_size: self.max_sdp_size.or(file.max_sdp_size),
            ng_reply_cache: self.ng_reply_cache.or(file.ng_reply_cache),
        })
    }

    /// Applies defaults and checks every value.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let (interface_name, bind_address, advertised_address) =
            parse_interface(self.interface.as_deref().unwrap_or("127.0.0.1"))?;
        let port_min = self.port_min.unwrap_or(30_000);
        let port_max = self.port_max.unwrap_or(39_999);
        if port_min == 0 || port_max <= port_min {
            bail!("--port-min ({port_min}) must be above 0 and below --port-max ({port_max})");
        }
        let backend = self.backend.unwrap_or(Backend::Udp);
        if backend != Backend::Udp && bind_address.is_unspecified() {
            bail!("--backend xdp/auto needs a concrete --interface address to send from");
        }
        let queues = match self.queues.as_deref() {
            Some(list) => Some(
                parse_cpu_list(list)
                    .map_err(|e| {
                        anyhow::anyhow!("{}", e.to_string().replace("--cpus", "--queues"))
                    })?
                    .into_iter()
                    .map(|q| q as u32)
                    .collect(),
            ),
            None => None,
        };
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpus = match self.cpus.as_deref() {
            Some(list) => parse_cpu_list(list)?,
            None => Vec::new(),
        };
        let workers = self
            .workers
            .unwrap_or(if cpus.is_empty() { ncpu } else { cpus.len() });
        if workers == 0 || workers > 1024 {
            bail!("--workers must be between 1 and 1024, not {workers}");
        }
        if !cpus.is_empty() && cpus.len() != workers {
            bail!(
                "--cpus lists {} CPUs but there are {workers} workers: give one CPU per worker",
                cpus.len()
            );
        }
        let cpus = if cpus.is_empty() {
            (0..workers).map(|i| i % ncpu).collect()
        } else {
            cpus
        };
        let media_timeout = self.media_timeout.unwrap_or(60);
        if media_timeout == 0 {
            bail!("--media-timeout must be at least 1 second");
        }
        let flush = self.flush_interval.unwrap_or(500);
        if !(10..=60_000).contains(&flush) {
            bail!("--flush-interval must be between 10 and 60000 ms, not {flush}");
        }
        let memory = self.recording_memory.unwrap_or(256);
        if memory == 0 {
            bail!("--recording-memory must be at least 1 MiB");
        }
        // NG limits
        let max_media = self
            .max_media_per_call
            .unwrap_or(DEFAULT_MAX_MEDIA_PER_CALL);
        if !(1..=MAX_MEDIA_PER_CALL_LIMIT).contains(&max_media) {
            bail!(
                "--max-media-per-call must be between 1 and {MAX_MEDIA_PER_CALL_LIMIT}, \
                 not {max_media}"
            );
        }
        let max_sdp = self.max_sdp_size.unwrap_or(DEFAULT_MAX_SDP_SIZE);
        if !(MIN_SDP_SIZE_LIMIT..=linecord_sdp::MAX_SDP_SIZE).contains(&max_sdp) {
            bail!(
                "--max-sdp-size must be between {MIN_SDP_SIZE_LIMIT} and {} bytes, not {max_sdp}",
                linecord_sdp::MAX_SDP_SIZE
            );
        }
        let cache_mib = self
            .ng_reply_cache
            .unwrap_or((DEFAULT_REPLY_CACHE_BYTES >> 20) as u64);
        if !(1..=MAX_REPLY_CACHE_MIB).contains(&cache_mib) {
            bail!(
                "--ng-reply-cache must be between 1 and {MAX_REPLY_CACHE_MIB} MiB, not {cache_mib}"
            );
        }
        Ok(Config {
            recording_dir: self
                .recording_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/linecord/recordings")),
            spool_dir: self
                .spool_dir
                .unwrap_or_else(|| PathBuf::from("/var/spool/linecord")),
            flush_interval: Duration::from_millis(flush),
            fsync: self.fsync.unwrap_or(FsyncPolicy::Close),
            recording_memory: memory.saturating_mul(1 << 20),
            // NG limits
            max_media_per_call: max_media,
            max_sdp_size: max_sdp,
            ng_reply_cache_bytes: (cache_mib as usize) << 20,
            // recording disk reserve
            min_free_disk: self
                .min_free_disk
                .unwrap_or(crate::recording::store::DEFAULT_MIN_FREE_DISK_MIB)
                .saturating_mul(1 << 20),
            interface_name,
            bind_address,
            advertised_address,
            listen_ng: self
                .listen_ng
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 2223))),
            port_min,
            port_max,
            backend,
            interface_device: self.interface_name,
            queues,
            workers,
            cpus,
            media_timeout: Duration::from_secs(media_timeout),
            log_level: self.log_level.unwrap_or_else(|| "info".into()),
        })
    }
}

fn load_toml(path: &Path) -> anyhow::Result<RawOptions> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Parses `[NAME/]ADDRESS[!ADVERTISED]`.
pub fn parse_interface(s: &str) -> anyhow::Result<(String, IpAddr, IpAddr)> {
    let (name, rest) = match s.split_once('/') {
        Some((n, r)) if !n.contains(':') && !n.contains('.') => (n.to_owned(), r),
        _ => ("default".to_owned(), s),
    };
    let (bind, adv) = match rest.split_once('!') {
        Some((b, a)) => (b, Some(a)),
        None => (rest, None),
    };
    let bind: IpAddr = bind
        .parse()
        .with_context(|| format!("--interface: '{bind}' is not an IP address"))?;
    let adv: IpAddr = match adv {
        Some(a) => a
            .parse()
            .with_context(|| format!("--interface: '{a}' is not an IP address"))?,
        None => bind,
    };
    if adv.is_unspecified() {
        bail!("--interface: the advertised address cannot be {adv}; use ADDR!ADVERTISED");
    }
    if bind.is_ipv4() != adv.is_ipv4() {
        bail!("--interface: bound and advertised addresses must be the same family");
    }
    Ok((name, bind, adv))
}

/// Parses a CPU list like `0,2-4`.
pub fn parse_cpu_list(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--cpus: '{part}' is not a CPU number or range");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().with_context(bad)?;
                let b: usize = b.trim().parse().with_context(bad)?;
                if b < a || b - a > 4096 {
                    bail!(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().with_context(bad)?),
        }
    }
    if out.is_empty() {
        bail!("--cpus: empty list");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_forms() {
        let (n, b, a) = parse_interface("198.18.0.1").unwrap();
        assert_eq!(
            (n.as_str(), b.to_string(), a.to_string()),
            ("default", "198.18.0.1".into(), "198.18.0.1".into())
        );
        let (n, b, a) = parse_interface("pub/0.0.0.0!198.18.0.1").unwrap();
        assert_eq!(
            (n.as_str(), b.to_string(), a.to_string()),
            ("pub", "0.0.0.0".into(), "198.18.0.1".into())
        );
        assert!(parse_interface("2001:db8::1").is_ok());
        assert!(parse_interface("0.0.0.0").is_err());
        assert!(parse_interface("nonsense").is_err());
        assert!(parse_interface("10.0.0.1!2001:db8::1").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpu_list("4-2").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn defaults_and_validation() {
        let c = RawOptions::default().resolve().unwrap();
        assert_eq!(c.listen_ng, "127.0.0.1:2223".parse().unwrap());
        assert_eq!((c.port_min, c.port_max), (30_000, 39_999));
        assert_eq!(c.media_timeout, Duration::from_secs(60));
        assert_eq!(c.cpus.len(), c.workers);
        let bad = RawOptions {
            port_min: Some(40_000),
            ..Default::default()
        };
        assert!(bad.resolve().is_err());
        let bad = RawOptions {
            workers: Some(3),
            cpus: Some("0,1".into()),
            ..Default::default()
        };
        assert!(bad.resolve().is_err());
        let bad = RawOptions {
            backend: Some(Backend::Xdp),
            interface: Some("0.0.0.0!198.18.0.1".into()),
            ..Default::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("concrete"));
        let q = RawOptions {
            backend: Some(Backend::Xdp),
            queues: Some("0-1".into()),
            ..Default::default()
        };
        assert_eq!(q.resolve().unwrap().queues, Some(vec![0, 1]));
    }

    #[test]
    fn ng_limits_defaults_and_bounds() {
        let c = RawOptions::default().resolve().unwrap();
        assert_eq!(c.max_media_per_call, DEFAULT_MAX_MEDIA_PER_CALL);
        assert_eq!(c.max_sdp_size, DEFAULT_MAX_SDP_SIZE);
        assert_eq!(c.ng_reply_cache_bytes, DEFAULT_REPLY_CACHE_BYTES);
        let set = RawOptions {
            max_media_per_call: Some(4),
            max_sdp_size: Some(2048),
            ng_reply_cache: Some(64),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            (
                set.max_media_per_call,
                set.max_sdp_size,
                set.ng_reply_cache_bytes
            ),
            (4, 2048, 64 << 20)
        );
        for (bad, key) in [
            (
                RawOptions {
                    max_media_per_call: Some(0),
                    ..Default::default()
                },
                "--max-media-per-call",
            ),
            (
                RawOptions {
                    max_media_per_call: Some(5000),
                    ..Default::default()
                },
                "--max-media-per-call",
            ),
            (
                RawOptions {
                    max_sdp_size: Some(100),
                    ..Default::default()
                },
                "--max-sdp-size",
            ),
            (
                RawOptions {
                    max_sdp_size: Some(70_000),
                    ..Default::default()
                },
                "--max-sdp-size",
            ),
            (
                RawOptions {
                    ng_reply_cache: Some(0),
                    ..Default::default()
                },
                "--ng-reply-cache",
            ),
        ] {
            let e = bad.resolve().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn help_shows_the_ng_limits_with_their_real_defaults() {
        use clap::Args as _;
        let help = RawOptions::augment_args(clap::Command::new("recorder"))
            .render_long_help()
            .to_string();
        let section = |flag: &str| -> String {
            let start = help
                .find(flag)
                .unwrap_or_else(|| panic!("{flag} not in --help"));
            let rest = &help[start + flag.len()..];
            // Up to the next option ("      --next" or "  -h, --help").
            let end = ["\n      --", "\n  -"]
                .iter()
                .filter_map(|m| rest.find(m))
                .min()
                .unwrap_or(rest.len());
            rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
        };
        assert!(!section("--max-media-per-call").contains("--max-sdp-size"));
        assert!(section("--max-media-per-call")
            .contains(&format!("[default: {DEFAULT_MAX_MEDIA_PER_CALL}]")));
        assert!(section("--max-sdp-size").contains(&format!("[default: {DEFAULT_MAX_SDP_SIZE}]")));
        assert!(section("--ng-reply-cache")
            .contains(&format!("[default: {}]", DEFAULT_REPLY_CACHE_BYTES >> 20)));
    }

    #[test]
    fn file_values_fill_in_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("lc-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.toml");
        std::fs::write(
            &path,
            "port-min = 31000\nport-max = 31999\nlisten-ng = \"127.0.0.1:5000\"\n\
             max-media-per-call = 8\nng-reply-cache = 8\n",
        )
        .unwrap();
        let raw = RawOptions {
            config: Some(path.clone()),
            port_max: Some(32_999),
            ..Default::default()
        };
        let c = raw.merge_file().unwrap().resolve().unwrap();
        assert_eq!((c.port_min, c.port_max), (31_000, 32_999));
        assert_eq!(c.listen_ng.port(), 5000);
        assert_eq!((c.max_media_per_call, c.ng_reply_cache_bytes), (8, 8 << 20));
        std::fs::write(&path, "port-minn = 1\n").unwrap();
        let raw = RawOptions {
            config: Some(path),
            ..Default::default()
        };
        assert!(format!("{:#}", raw.merge_file().unwrap_err()).contains("port-minn"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    // --- recording disk reserve (full-disk hardening) ---
    #[test]
    fn min_free_disk_defaults_to_64_mib_and_is_read_from_the_file() {
        let c = RawOptions::default().resolve().unwrap();
        assert_eq!(c.min_free_disk, 64 << 20);
        let off = RawOptions {
            min_free_disk: Some(0),
            ..Default::default()
        };
        assert_eq!(off.resolve().unwrap().min_free_disk, 0);
        let dir = std::env::temp_dir().join(format!("lc-cfg-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.toml");
        std::fs::write(&path, "min-free-disk = 5\n").unwrap();
        let raw = RawOptions {
            config: Some(path),
            ..Default::default()
        };
        assert_eq!(
            raw.merge_file().unwrap().resolve().unwrap().min_free_disk,
            5 << 20
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
    // --- end recording disk reserve ---
}
