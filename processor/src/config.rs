//! Configuration: the TOML file and command-line overrides ([`FileConfig`]), validated into
//! the [`Config`] the processor runs with.
//!
//! ```toml
//! spool-dir = "/var/spool/linecord"
//! storage-dir = "/var/lib/linecord/store"
//! db = "/var/lib/linecord/index.sqlite"
//! listen = "127.0.0.1:8090"
//! retention-days = 365            # absent: keep forever
//! retention-interval-secs = 3600  # how often retention runs (also once at start)
//! poll-interval-ms = 200          # queue polling when idle
//! max-audio-duration-secs = 43200 # longest audio served as WAV (12 h); longer: 422
//!
//! # Scale-out backends (docs/processor.md, "Scale-out"); each replaces an embedded one.
//! # db = "postgres://linecord@db.example.com/linecord"   # PostgreSQL index
//! # storage = "s3://recordings/linecord"                 # object storage (or file:///dir)
//! # s3-endpoint = "http://minio.example.com:9000"
//! # s3-region = "us-east-1"
//! # s3-access-key-id = "…"
//! # s3-secret-access-key = "…"
//! # s3-allow-http = true
//! # nats-url = "nats://127.0.0.1:4222"                   # JetStream queue
//! # nats-stream = "LINECORD_JOBS"
//! # nats-consumer = "processor"
//! # nats-ack-wait-secs = 60
//!
//! [[token]]
//! name = "alice"                  # optional; shown in the audit trail
//! token = "secret"
//! role = "agent"                  # agent | supervisor | admin
//! dns = ["1001"]
//! ```
//!
//! Without any `[[token]]`, a processor listening on a loopback address gets one admin
//! token, [`DEFAULT_TOKEN`] (for a first look on one machine); on any other address it
//! refuses to start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::access::{Access, Role};
use crate::queue_nats::NatsOptions;
use crate::repo_pg::is_postgres_url;
use crate::storage_object::{is_object_url, S3Options};

/// Default spool directory.
pub const DEFAULT_SPOOL_DIR: &str = "/var/spool/linecord";
/// Default storage root.
pub const DEFAULT_STORAGE_DIR: &str = "/var/lib/linecord/store";
/// Default index database.
pub const DEFAULT_DB: &str = "/var/lib/linecord/index.sqlite";
/// Default HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";
/// The admin token a loopback-only processor without configured tokens accepts.
pub const DEFAULT_TOKEN: &str = "admin-token";
/// Default retention interval.
pub const DEFAULT_RETENTION_INTERVAL_SECS: u64 = 3600;
/// Default queue polling interval.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 200;
/// Default longest audio served as WAV: 12 hours (a 1.38 GB WAV at 8 kHz stereo 16-bit).
pub const DEFAULT_MAX_AUDIO_DURATION_SECS: u64 = 12 * 3600;
/// Longest audio that can be configured: what a WAV's 32-bit sizes can describe at
/// 8 kHz stereo 16-bit (about 37 hours).
pub const MAX_MAX_AUDIO_DURATION_SECS: u64 = (u32::MAX as u64 - 36) / 4 / 8000;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("parsing {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: toml::de::Error,
    },
    /// A value is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// One `[[token]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Name in the audit trail (default: `<role>-<n>`).
    #[serde(default)]
    pub name: Option<String>,
    /// The bearer token.
    pub token: String,
    /// Its role.
    pub role: Role,
    /// DNs (what an agent sees).
    #[serde(default)]
    pub dns: Vec<String>,
}

/// The configuration file as written (every key optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    /// Spool directory of the processor queue.
    pub spool_dir: Option<PathBuf>,
    /// Root of the recording storage.
    pub storage_dir: Option<PathBuf>,
    /// SQLite database file, or a PostgreSQL URL (`postgres://user@host/dbname`).
    pub db: Option<PathBuf>,
    /// Object storage URL (`s3://bucket/prefix` or `file:///dir`) instead of `storage-dir`.
    pub storage: Option<String>,
    /// S3 endpoint URL (absent: AWS, or `AWS_ENDPOINT`).
    pub s3_endpoint: Option<String>,
    /// S3 region (absent: `AWS_REGION`, else `us-east-1`).
    pub s3_region: Option<String>,
    /// S3 access key id (absent: `AWS_ACCESS_KEY_ID`).
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (absent: `AWS_SECRET_ACCESS_KEY`).
    pub s3_secret_access_key: Option<String>,
    /// Allow a plain `http://` S3 endpoint.
    pub s3_allow_http: Option<bool>,
    /// NATS server URL: consume jobs from JetStream instead of the spool directory.
    pub nats_url: Option<String>,
    /// JetStream stream of jobs.
    pub nats_stream: Option<String>,
    /// Durable consumer name.
    pub nats_consumer: Option<String>,
    /// Seconds a delivered job may stay unacknowledged before JetStream redelivers it.
    pub nats_ack_wait_secs: Option<u64>,
    /// HTTP listen address (`ip:port`; port 0 picks a free port).
    pub listen: Option<String>,
    /// Recordings older than this many days are deleted (unless on legal hold).
    pub retention_days: Option<u32>,
    /// Seconds between retention runs.
    pub retention_interval_secs: Option<u64>,
    /// Milliseconds between polls of an empty queue.
    pub poll_interval_ms: Option<u64>,
    /// Longest audio (seconds) `GET /v1/recordings/{id}/audio.wav` generates.
    pub max_audio_duration_secs: Option<u64>,
    /// API tokens.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// An API token and who it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The secret.
    pub secret: String,
    /// Who uses it.
    pub access: Access,
}

/// Which index the processor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexBackend {
    /// A SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL database URL.
    Postgres(String),
}

/// Where the processor keeps recordings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageBackend {
    /// A local directory (the embedded default).
    Local(PathBuf),
    /// An object store.
    Object {
        /// `s3://bucket/prefix` or `file:///dir`.
        url: String,
        /// Endpoint and credentials for `s3://`.
        s3: S3Options,
    },
}

/// Where the processor takes jobs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueBackend {
    /// The spool directory (the embedded default).
    Spool(PathBuf),
    /// NATS JetStream.
    Nats(NatsOptions),
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Storage root.
    pub storage_dir: PathBuf,
    /// Database file (or PostgreSQL URL) as configured.
    pub db: PathBuf,
    /// The index to use.
    pub index: IndexBackend,
    /// The storage to use.
    pub store: StorageBackend,
    /// The queue to consume.
    pub queue: QueueBackend,
    /// The NATS options when `nats-url` is set (also used by `processor forward`).
    pub nats: Option<NatsOptions>,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Retention in days, `None` to keep forever.
    pub retention_days: Option<u32>,
    /// Time between retention runs.
    pub retention_interval: Duration,
    /// Time between polls of an empty queue.
    pub poll_interval: Duration,
    /// Longest audio served as WAV, in samples per channel at 8000 Hz.
    pub max_audio_samples: u64,
    /// Accepted tokens.
    pub tokens: Vec<Token>,
    /// Whether the built-in [`DEFAULT_TOKEN`] is in use.
    pub default_token: bool,
}

impl Config {
    /// Validates `file` (with command-line values already merged into it).
    pub fn resolve(file: FileConfig) -> Result<Config, ConfigError> {
        let listen_text = file.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::Invalid(format!("listen {listen_text:?} is not an ip:port address"))
        })?;
        let mut tokens = Vec::new();
        for (i, t) in file.tokens.iter().enumerate() {
            if t.token.trim().is_empty() {
                return Err(ConfigError::Invalid(format!("token {} is empty", i + 1)));
            }
            if tokens.iter().any(|x: &Token| x.secret == t.token) {
                return Err(ConfigError::Invalid(format!(
                    "token {} is configured twice",
                    i + 1
                )));
            }
            if t.role == Role::Agent && t.dns.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "agent token {} has no dns: it would see nothing",
                    i + 1
                )));
            }
            tokens.push(Token {
                secret: t.token.clone(),
                access: Access {
                    name: t
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{}-{}", t.role.as_str(), i + 1)),
                    role: t.role,
                    dns: t.dns.clone(),
                },
            });
        }
        let default_token = tokens.is_empty();
        if default_token {
            if !listen.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "no [[token]] configured: refusing to serve on the non-loopback address \
                     {listen} with the default token"
                )));
            }
            tokens.push(Token {
                secret: DEFAULT_TOKEN.into(),
                access: Access {
                    name: "default-admin".into(),
                    role: Role::Admin,
                    dns: Vec::new(),
                },
            });
        }
        let max_audio_secs = file
            .max_audio_duration_secs
            .unwrap_or(DEFAULT_MAX_AUDIO_DURATION_SECS);
        if max_audio_secs == 0 || max_audio_secs > MAX_MAX_AUDIO_DURATION_SECS {
            return Err(ConfigError::Invalid(format!(
                "max-audio-duration-secs must be 1..={MAX_MAX_AUDIO_DURATION_SECS} (a WAV \
                 cannot describe more), not {max_audio_secs}"
            )));
        }
        if file.retention_days == Some(0) {
            return Err(ConfigError::Invalid(
                "retention-days must be at least 1 (leave it out to keep recordings)".into(),
            ));
        }
        let spool_dir = file
            .spool_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR));
        let db = file.db.unwrap_or_else(|| PathBuf::from(DEFAULT_DB));
        let index = match db.to_str() {
            Some(url) if is_postgres_url(url) => IndexBackend::Postgres(url.to_owned()),
            _ => IndexBackend::Sqlite(db.clone()),
        };
        let s3 = S3Options {
            endpoint: file.s3_endpoint,
            region: file.s3_region,
            access_key_id: file.s3_access_key_id,
            secret_access_key: file.s3_secret_access_key,
            allow_http: file.s3_allow_http.unwrap_or(false),
        };
        let store = match (file.storage, &file.storage_dir) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "storage and storage-dir exclude each other: give one".into(),
                ))
            }
            (Some(url), None) if is_object_url(&url) => StorageBackend::Object { url, s3 },
            (Some(url), None) => {
                return Err(ConfigError::Invalid(format!(
                    "storage {url:?} is not an object storage URL (s3://bucket/prefix or \
                     file:///dir); use storage-dir for a local directory"
                )))
            }
            (None, dir) => StorageBackend::Local(
                dir.clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE_DIR)),
            ),
        };
        let nats = match file.nats_url {
            Some(url) if url.trim().is_empty() => {
                return Err(ConfigError::Invalid("nats-url is empty".into()))
            }
            Some(url) => {
                let mut o = NatsOptions::new(&url);
                if let Some(v) = file.nats_stream {
                    o.stream = v;
                }
                if let Some(v) = file.nats_consumer {
                    o.consumer = v;
                }
                if let Some(v) = file.nats_ack_wait_secs {
                    o.ack_wait = Duration::from_secs(v.max(1));
                }
                Some(o)
            }
            None => None,
        };
        let queue = match &nats {
            Some(o) => QueueBackend::Nats(o.clone()),
            None => QueueBackend::Spool(spool_dir.clone()),
        };
        Ok(Config {
            spool_dir,
            storage_dir: file
                .storage_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE_DIR)),
            db,
            index,
            store,
            queue,
            nats,
            listen,
            retention_days: file.retention_days,
            retention_interval: Duration::from_secs(
                file.retention_interval_secs
                    .unwrap_or(DEFAULT_RETENTION_INTERVAL_SECS)
                    .max(1),
            ),
            poll_interval: Duration::from_millis(
                file.poll_interval_ms
                    .unwrap_or(DEFAULT_POLL_INTERVAL_MS)
                    .max(1),
            ),
            max_audio_samples: max_audio_secs * 8000,
            tokens,
            default_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_default_token_only_on_loopback() {
        let c = Config::resolve(FileConfig::default()).expect("defaults");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.spool_dir, PathBuf::from(DEFAULT_SPOOL_DIR));
        assert!(c.default_token);
        assert_eq!(c.tokens[0].secret, DEFAULT_TOKEN);
        assert_eq!(c.tokens[0].access.role, Role::Admin);
        assert_eq!(c.max_audio_samples, 12 * 3600 * 8000);
        let open = FileConfig {
            listen: Some("0.0.0.0:8090".into()),
            ..FileConfig::default()
        };
        assert!(Config::resolve(open).is_err());
    }

    #[test]
    fn tokens_from_toml() {
        let f: FileConfig = toml::from_str(
            r#"
            listen = "0.0.0.0:0"
            retention-days = 30
            [[token]]
            token = "a"
            role = "agent"
            dns = ["1001"]
            [[token]]
            name = "boss"
            token = "s"
            role = "supervisor"
            "#,
        )
        .expect("toml");
        let c = Config::resolve(f).expect("valid");
        assert!(!c.default_token);
        assert_eq!(c.retention_days, Some(30));
        assert_eq!(c.tokens[0].access.name, "agent-1");
        assert_eq!(c.tokens[0].access.dns, ["1001"]);
        assert_eq!(c.tokens[1].access.name, "boss");
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
        assert!(toml::from_str::<FileConfig>("[[token]]\ntoken=\"x\"\nrole=\"root\"").is_err());
        let dup: FileConfig = toml::from_str(
            "[[token]]\ntoken=\"x\"\nrole=\"admin\"\n[[token]]\ntoken=\"x\"\nrole=\"admin\"",
        )
        .expect("toml");
        assert!(Config::resolve(dup).is_err());
    }

    #[test]
    fn embedded_defaults_and_scale_out_backends() {
        let c = Config::resolve(FileConfig::default()).expect("defaults");
        assert_eq!(c.index, IndexBackend::Sqlite(PathBuf::from(DEFAULT_DB)));
        assert_eq!(
            c.store,
            StorageBackend::Local(PathBuf::from(DEFAULT_STORAGE_DIR))
        );
        assert_eq!(
            c.queue,
            QueueBackend::Spool(PathBuf::from(DEFAULT_SPOOL_DIR))
        );
        let f: FileConfig = toml::from_str(
            r#"
            db = "postgres://linecord@127.0.0.1:5432/linecord"
            storage = "s3://bucket/prefix"
            s3-endpoint = "http://127.0.0.1:9000"
            s3-allow-http = true
            nats-url = "nats://127.0.0.1:4222"
            nats-ack-wait-secs = 5
            "#,
        )
        .expect("toml");
        let c = Config::resolve(f).expect("valid");
        assert_eq!(
            c.index,
            IndexBackend::Postgres("postgres://linecord@127.0.0.1:5432/linecord".into())
        );
        match &c.store {
            StorageBackend::Object { url, s3 } => {
                assert_eq!(url, "s3://bucket/prefix");
                assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
                assert!(s3.allow_http);
            }
            other => panic!("{other:?}"),
        }
        match &c.queue {
            QueueBackend::Nats(o) => {
                assert_eq!(o.url, "nats://127.0.0.1:4222");
                assert_eq!(o.stream, crate::queue_nats::DEFAULT_STREAM);
                assert_eq!(o.ack_wait, Duration::from_secs(5));
            }
            other => panic!("{other:?}"),
        }
        let both: FileConfig =
            toml::from_str("storage = \"file:///x\"\nstorage-dir = \"/y\"").expect("toml");
        assert!(Config::resolve(both).is_err());
        let bad: FileConfig = toml::from_str("storage = \"/plain/dir\"").expect("toml");
        assert!(Config::resolve(bad).is_err());
    }

    #[test]
    fn audio_duration_limit() {
        let f: FileConfig = toml::from_str("max-audio-duration-secs = 60").expect("toml");
        assert_eq!(
            Config::resolve(f).expect("valid").max_audio_samples,
            480_000
        );
        for bad in [
            "max-audio-duration-secs = 0",
            "max-audio-duration-secs = 200000",
        ] {
            let f: FileConfig = toml::from_str(bad).expect("toml");
            let e = Config::resolve(f).expect_err(bad).to_string();
            assert!(e.contains("max-audio-duration-secs"), "{e}");
        }
        let f: FileConfig = toml::from_str(&format!(
            "max-audio-duration-secs = {MAX_MAX_AUDIO_DURATION_SECS}"
        ))
        .expect("toml");
        assert!(Config::resolve(f).is_ok());
    }
}
