//! The I/O shell of the RFC 3263 [`Locator`]: hickory-resolver (tokio) answers the queries
//! the locator asks for, and [`keep_located`] keeps the targets of the trunks given by name
//! fresh in the background.
//!
//! The locator decides what to look up (NAPTR, SRV, A/AAAA) and orders the targets; this
//! module only performs lookups ([`Resolver::answer`]) and converts hickory's answers into
//! the locator's record types ([`to_answer`]). hickory's own cache is off: the locator's
//! cache is the only one, so one TTL decides when a name is asked again. Names are queried
//! fully qualified (no search domains).

use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType as HickoryType};
use hickory_resolver::TokioResolver;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::DnsConfig;
use crate::sip::locate::{
    Answer, Destination, Located, Locator, Naptr, Query, Record, RecordData, RecordType, Srv,
};

/// Rounds of lookups one [`settle`] waits for: NAPTR, then SRV, then A/AAAA, plus one for
/// lookups that another destination's answers made necessary.
pub const MAX_ROUNDS: usize = 4;
/// [`keep_located`] looks again at least this often, whatever the TTLs say.
pub const MAX_REFRESH: Duration = Duration::from_secs(300);
/// ... and at most this often (a burst of expiries is taken in one pass).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Negative TTL used when the server's answer has no SOA to take it from (RFC 2308 §5).
pub const DEFAULT_NEGATIVE_TTL: u32 = 60;

/// Why the resolver cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// `/etc/resolv.conf` is missing or unreadable and `dns.servers` is not set.
    #[error("system DNS configuration (/etc/resolv.conf): {0}; set dns.servers")]
    SystemConfig(String),
    /// hickory refused the configuration.
    #[error("DNS resolver: {0}")]
    Build(String),
}

/// A DNS client for the locator's queries.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// A resolver asking `cfg.servers` (UDP, TCP on truncation), or the system's name
    /// servers when none are configured. Needs a tokio runtime.
    pub fn new(cfg: &DnsConfig) -> Result<Resolver, DnsError> {
        let (config, mut opts) = if cfg.servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DnsError::SystemConfig(e.to_string()))?
        } else {
            let servers = cfg
                .servers
                .iter()
                .map(|a| {
                    let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                    for c in &mut ns.connections {
                        c.port = a.port();
                    }
                    ns
                })
                .collect();
            (
                ResolverConfig::from_name_servers(servers),
                Default::default(),
            )
        };
        opts.timeout = cfg.timeout;
        opts.attempts = 2;
        // The locator caches (with its TTL bounds); a second cache would only delay changes.
        opts.cache_size = 0;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| DnsError::Build(e.to_string()))?;
        Ok(Resolver { inner })
    }

    /// Performs `q` and converts the outcome; a failure is logged (the locator keeps the
    /// last good answer).
    pub async fn answer(&self, q: &Query) -> Answer {
        let rtype = match q.rtype {
            RecordType::Naptr => HickoryType::NAPTR,
            RecordType::Srv => HickoryType::SRV,
            RecordType::A => HickoryType::A,
            RecordType::Aaaa => HickoryType::AAAA,
        };
        // Trailing dot: fully qualified, no search-list expansion.
        let result = self.inner.lookup(format!("{}.", q.name), rtype).await;
        if let Err(e) = &result {
            if !e.is_no_records_found() {
                tracing::warn!(name = %q.name, rtype = ?q.rtype, error = %e,
                    "DNS lookup failed; the last good answer (if any) stays in use");
            }
        }
        to_answer(result)
    }
}

/// Converts a hickory lookup result into the locator's [`Answer`]: the records of the
/// answer section that the locator knows (others, e.g. CNAMEs, are dropped), "no records"
/// with its negative TTL, or a failure.
pub fn to_answer(result: Result<Lookup, NetError>) -> Answer {
    match result {
        Ok(lookup) => {
            let records: Vec<Record> = lookup
                .answers()
                .iter()
                .filter_map(|r| {
                    let data = match &r.data {
                        RData::A(a) => RecordData::Addr(a.0.into()),
                        RData::AAAA(a) => RecordData::Addr(a.0.into()),
                        RData::SRV(s) => RecordData::Srv(Srv {
                            priority: s.priority,
                            weight: s.weight,
                            port: s.port,
                            target: name_text(&s.target.to_ascii()),
                        }),
                        RData::NAPTR(n) => RecordData::Naptr(Naptr {
                            order: n.order,
                            preference: n.preference,
                            flags: String::from_utf8_lossy(&n.flags).into_owned(),
                            services: String::from_utf8_lossy(&n.services).into_owned(),
                            replacement: name_text(&n.replacement.to_ascii()),
                        }),
                        _ => return None,
                    };
                    Some(Record { ttl: r.ttl, data })
                })
                .collect();
            if records.is_empty() {
                Answer::Empty {
                    ttl: DEFAULT_NEGATIVE_TTL,
                }
            } else {
                Answer::Records(records)
            }
        }
        Err(NetError::Dns(HickoryDnsError::NoRecordsFound(nr))) => Answer::Empty {
            ttl: nr.negative_ttl.unwrap_or(DEFAULT_NEGATIVE_TTL),
        },
        Err(_) => Answer::Failed,
    }
}

/// A name as the locator keeps it: lower case, no trailing dot; the root (`.`, RFC 2782
/// "service not available") becomes empty.
fn name_text(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// Locates every destination, performing the lookups the locator asks for (concurrently,
/// at most [`MAX_ROUNDS`] rounds), and returns each result in `dests` order.
pub async fn settle(
    resolver: &Resolver,
    locator: &mut Locator,
    dests: &[Destination],
    rng: &mut impl FnMut() -> u32,
) -> Vec<Located> {
    for _ in 0..MAX_ROUNDS {
        let now = Instant::now();
        for d in dests {
            let _ = locator.locate(now, d, rng);
        }
        let mut lookups = JoinSet::new();
        while let Some(q) = locator.poll_query(now) {
            let r = resolver.clone();
            lookups.spawn(async move {
                let a = r.answer(&q).await;
                (q, a)
            });
        }
        if lookups.is_empty() {
            break;
        }
        while let Some(done) = lookups.join_next().await {
            match done {
                Ok((q, a)) => locator.handle_answer(Instant::now(), &q, a),
                // A panicked lookup task: its query stays in flight and is not retried.
                Err(e) => tracing::error!(error = %e, "DNS lookup task failed"),
            }
        }
    }
    let now = Instant::now();
    dests.iter().map(|d| locator.locate(now, d, rng)).collect()
}

/// Keeps `dests` located until `updates` closes: resolves them at once, then again when
/// their records expire (between [`MIN_REFRESH`] and [`MAX_REFRESH`]). Sends a destination's
/// [`Located`] when it changes; a failed refresh changes nothing (the last good answer stays
/// in use), a destination that never resolved is sent as [`Located::Failed`] once.
pub async fn keep_located(
    resolver: Resolver,
    dests: Vec<Destination>,
    updates: mpsc::Sender<(Destination, Located)>,
) {
    let mut locator = Locator::new();
    let mut rng = fastrand::Rng::new();
    let mut last: Vec<Option<Located>> = vec![None; dests.len()];
    loop {
        let results = settle(&resolver, &mut locator, &dests, &mut || rng.u32(..)).await;
        for ((d, r), prev) in dests.iter().zip(results).zip(last.iter_mut()) {
            let changed = match (&r, prev.as_ref()) {
                (Located::Targets { targets, .. }, Some(Located::Targets { targets: p, .. })) => {
                    targets != p
                }
                (Located::Pending, _) => false,
                (r, p) => p != Some(r),
            };
            if !changed {
                continue;
            }
            match &r {
                Located::Targets { targets, .. } => {
                    tracing::info!(?d, ?targets, "located")
                }
                Located::Failed(e) => tracing::warn!(?d, error = %e, "cannot locate"),
                Located::Pending => {}
            }
            *prev = Some(r.clone());
            if updates.send((d.clone(), r)).await.is_err() {
                return;
            }
        }
        let now = Instant::now();
        let wait = locator
            .poll_timeout()
            .map_or(MAX_REFRESH, |t| t.saturating_duration_since(now))
            .clamp(MIN_REFRESH, MAX_REFRESH);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = updates.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::Query as HQuery;
    use hickory_resolver::proto::rr::rdata::{A, NAPTR, SRV};
    use hickory_resolver::proto::rr::{Name, Record as HRecord};
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).expect("name")
    }

    #[test]
    fn answers_convert_to_locator_records() {
        let q = HQuery::query(name("_sip._udp.t.test."), HickoryType::SRV);
        let lookup = Lookup::new_with_max_ttl(
            q,
            [
                HRecord::from_rdata(
                    name("_sip._udp.t.test."),
                    90,
                    RData::SRV(SRV::new(10, 60, 5062, name("B.t.test."))),
                ),
                HRecord::from_rdata(name("b.t.test."), 30, RData::A(A::new(198, 18, 53, 11))),
                HRecord::from_rdata(
                    name("t.test."),
                    300,
                    RData::NAPTR(NAPTR::new(
                        10,
                        20,
                        b"S".to_vec().into(),
                        b"SIP+D2U".to_vec().into(),
                        Vec::new().into(),
                        name("_sip._udp.t.test."),
                    )),
                ),
                HRecord::from_rdata(
                    name("_sip._udp.t.test."),
                    90,
                    RData::SRV(SRV::new(0, 0, 0, Name::root())),
                ),
            ],
        );
        let Answer::Records(r) = to_answer(Ok(lookup)) else {
            panic!("records expected");
        };
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[0],
            Record {
                ttl: 90,
                data: RecordData::Srv(Srv {
                    priority: 10,
                    weight: 60,
                    port: 5062,
                    target: "b.t.test".into()
                })
            }
        );
        assert_eq!(r[1].data, RecordData::Addr([198, 18, 53, 11].into()));
        assert_eq!(r[1].ttl, 30);
        assert_eq!(
            r[2].data,
            RecordData::Naptr(Naptr {
                order: 10,
                preference: 20,
                flags: "S".into(),
                services: "SIP+D2U".into(),
                replacement: "_sip._udp.t.test".into()
            })
        );
        // The root target ("service not available") is the empty name.
        assert!(matches!(&r[3].data, RecordData::Srv(s) if s.target.is_empty()));
        // Errors: a timeout-like failure is Failed.
        assert_eq!(
            to_answer(Err(NetError::Message("timed out"))),
            Answer::Failed
        );
    }
}
