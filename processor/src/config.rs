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
    /// SQLite database file.
    pub db: Option<PathBuf>,
    /// HTTP listen address (`ip:port`; port 0 picks a free port).
    pub listen: Option<String>,
    /// Recordings older than this many days are deleted (unless on legal hold).
    pub retention_days: Option<u32>,
    /// Seconds between retention runs.
    pub retention_interval_secs: Option<u64>,
    /// Milliseconds between polls of an empty queue.
    pub poll_interval_ms: Option<u64>,
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

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Storage root.
    pub storage_dir: PathBuf,
    /// Database file.
    pub db: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Retention in days, `None` to keep forever.
    pub retention_days: Option<u32>,
    /// Time between retention runs.
    pub retention_interval: Duration,
    /// Time between polls of an empty queue.
    pub poll_interval: Duration,
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
        if file.retention_days == Some(0) {
            return Err(ConfigError::Invalid(
                "retention-days must be at least 1 (leave it out to keep recordings)".into(),
            ));
        }
        Ok(Config {
            spool_dir: file
                .spool_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR)),
            storage_dir: file
                .storage_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE_DIR)),
            db: file.db.unwrap_or_else(|| PathBuf::from(DEFAULT_DB)),
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
}
