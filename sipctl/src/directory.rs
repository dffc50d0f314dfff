//! The DN directory: agent extensions and their contacts.
//!
//! Each DN (directory number, e.g. `1001`) has a static contact from the configuration
//! and/or a contact registered with REGISTER, which expires. A live registration wins over
//! the static contact. Per DN: `record` (full-time, agent-side recording of every call that
//! terminates there or that it places) and `record-critical` (refuse the call with 500 if recording fails).
//! Sans-IO: `now` (seconds since the Unix epoch) is a parameter.

use std::collections::BTreeMap;

/// Why a directory operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The DN is not in the directory (REGISTER gets 404).
    #[error("unknown DN {0:?}")]
    UnknownDn(String),
    /// A DN number that is empty or has characters other than `[0-9A-Za-z+*#._-]`.
    #[error("invalid DN number {0:?}")]
    InvalidNumber(String),
    /// The same DN twice.
    #[error("DN {0:?} is listed twice")]
    Duplicate(String),
    /// A contact that is neither a `sip:`/`sips:` URI nor `host[:port]`.
    #[error("invalid contact {contact:?}: {reason}")]
    InvalidContact {
        /// The contact as given.
        contact: String,
        /// What is wrong.
        reason: String,
    },
}

/// A DN as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnConfig {
    /// The number (`1001`).
    pub number: String,
    /// Display name of the agent, if any.
    pub name: Option<String>,
    /// Static contact: a `sip:`/`sips:` URI or `host[:port]` (made `sip:<number>@host:port`);
    /// `None` if the DN must REGISTER.
    pub contact: Option<String>,
    /// Record every call terminating at this DN.
    pub record: bool,
    /// Refuse calls with 500 if recording fails.
    pub record_critical: bool,
}

/// A live REGISTER binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The registered contact URI.
    pub contact: String,
    /// When it expires, Unix seconds (valid while `now < expires_at`).
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    config: DnConfig,
    registration: Option<Registration>,
}

/// The result of [`Directory::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// No such DN (404).
    Unknown,
    /// The DN exists but has no static contact and no live registration (480).
    Unavailable {
        /// The DN.
        dn: &'a DnConfig,
    },
    /// Where to send the call.
    Found {
        /// The DN.
        dn: &'a DnConfig,
        /// Its contact URI.
        contact: &'a str,
        /// Whether the contact comes from a registration (else it is the static one).
        registered: bool,
    },
}

/// The DN directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    entries: BTreeMap<String, Entry>,
    max_expires: u32,
}

/// Whether `n` can be a DN number.
pub fn valid_number(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+*#._-".contains(&b))
}

/// Normalizes a contact of DN `number`: a `sip:`/`sips:` URI is kept as it is (scheme in
/// lower case), `host`, `host:port` or `[v6]:port` becomes `sip:<number>@host:port`.
pub fn normalize_contact(number: &str, contact: &str) -> Result<String, DirectoryError> {
    let bad = |reason: &str| DirectoryError::InvalidContact {
        contact: contact.to_owned(),
        reason: reason.to_owned(),
    };
    let c = contact.trim();
    if c.is_empty() {
        return Err(bad("empty"));
    }
    if c.bytes().any(|b| {
        b.is_ascii_whitespace() || b.is_ascii_control() || b == b'<' || b == b'>' || b == b'"'
    }) {
        return Err(bad("contains spaces, quotes or angle brackets"));
    }
    let lower = c.to_ascii_lowercase();
    for scheme in ["sips:", "sip:"] {
        if let Some(rest) = lower.strip_prefix(scheme) {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let host = host.split([';', '?']).next().unwrap_or_default();
            if host.is_empty() || host.starts_with(':') {
                return Err(bad("the URI has no host"));
            }
            return Ok(format!("{scheme}{}", &c[scheme.len()..]));
        }
    }
    if c.contains(':') && !c.starts_with('[') && c.matches(':').count() == 1 {
        let (host, port) = c.split_once(':').unwrap_or((c, ""));
        if host.is_empty() || !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Err(bad("expected host:port with a port 1-65535"));
        }
    } else if c.contains(':') && !c.starts_with('[') {
        return Err(bad("not a sip: URI; write IPv6 addresses as [addr]:port"));
    }
    if c.contains(['@', '/', ';']) {
        return Err(bad("not a sip: URI nor host[:port]"));
    }
    Ok(format!("sip:{number}@{c}"))
}

impl Directory {
    /// A directory of these DNs; registrations are granted at most `max_expires` seconds.
    pub fn new(dns: Vec<DnConfig>, max_expires: u32) -> Result<Directory, DirectoryError> {
        let mut entries = BTreeMap::new();
        for mut config in dns {
            if !valid_number(&config.number) {
                return Err(DirectoryError::InvalidNumber(config.number));
            }
            if let Some(c) = &config.contact {
                config.contact = Some(normalize_contact(&config.number, c)?);
            }
            if entries.contains_key(&config.number) {
                return Err(DirectoryError::Duplicate(config.number));
            }
            entries.insert(
                config.number.clone(),
                Entry {
                    config,
                    registration: None,
                },
            );
        }
        Ok(Directory {
            entries,
            max_expires,
        })
    }

    /// The configuration of DN `number`.
    pub fn get(&self, number: &str) -> Option<&DnConfig> {
        self.entries.get(number).map(|e| &e.config)
    }

    /// Every DN, by number.
    pub fn dns(&self) -> impl Iterator<Item = &DnConfig> {
        self.entries.values().map(|e| &e.config)
    }

    /// How many DNs there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no DNs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The longest registration granted, seconds.
    pub fn max_expires(&self) -> u32 {
        self.max_expires
    }

    /// Handles a REGISTER of `contact` for DN `number` asking for `expires` seconds at
    /// `now`: `expires == 0` removes the binding. Returns the expiry granted (at most
    /// `max_expires`; 0 when removed). One binding per DN: a new one replaces the old.
    pub fn register(
        &mut self,
        number: &str,
        contact: &str,
        expires: u32,
        now: u64,
    ) -> Result<u32, DirectoryError> {
        let entry = self
            .entries
            .get_mut(number)
            .ok_or_else(|| DirectoryError::UnknownDn(number.to_owned()))?;
        if expires == 0 {
            entry.registration = None;
            return Ok(0);
        }
        let contact = normalize_contact(number, contact)?;
        let granted = expires.min(self.max_expires);
        entry.registration = Some(Registration {
            contact,
            expires_at: now.saturating_add(u64::from(granted)),
        });
        Ok(granted)
    }

    /// The live registration of DN `number` at `now`, if any.
    pub fn registration(&self, number: &str, now: u64) -> Option<&Registration> {
        self.entries
            .get(number)?
            .registration
            .as_ref()
            .filter(|r| now < r.expires_at)
    }

    /// Where a call to DN `number` goes at `now`: a live registration, else the static
    /// contact.
    pub fn lookup(&self, number: &str, now: u64) -> Lookup<'_> {
        let Some(e) = self.entries.get(number) else {
            return Lookup::Unknown;
        };
        if let Some(r) = e.registration.as_ref().filter(|r| now < r.expires_at) {
            return Lookup::Found {
                dn: &e.config,
                contact: &r.contact,
                registered: true,
            };
        }
        match &e.config.contact {
            Some(c) => Lookup::Found {
                dn: &e.config,
                contact: c,
                registered: false,
            },
            None => Lookup::Unavailable { dn: &e.config },
        }
    }

    /// Drops registrations expired at `now` and returns their DNs (housekeeping; lookups
    /// ignore expired registrations anyway).
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        for (n, e) in &mut self.entries {
            if e.registration.as_ref().is_some_and(|r| now >= r.expires_at) {
                e.registration = None;
                out.push(n.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(number: &str, contact: Option<&str>) -> DnConfig {
        DnConfig {
            number: number.into(),
            name: None,
            contact: contact.map(Into::into),
            record: false,
            record_critical: false,
        }
    }

    #[test]
    fn contacts_are_normalized() {
        let ok = |c: &str| normalize_contact("1001", c).expect(c);
        assert_eq!(ok("198.18.0.20"), "sip:1001@198.18.0.20");
        assert_eq!(ok("198.18.0.20:5070"), "sip:1001@198.18.0.20:5070");
        assert_eq!(ok("[2001:2::20]:5060"), "sip:1001@[2001:2::20]:5060");
        assert_eq!(ok("phone.example.com"), "sip:1001@phone.example.com");
        assert_eq!(ok("SIP:alice@h;transport=tcp"), "sip:alice@h;transport=tcp");
        assert_eq!(ok("sips:alice@h:5061"), "sips:alice@h:5061");
        for bad in [
            "",
            "sip:",
            "sip:alice@",
            "h:0",
            "h:99999",
            "a b",
            "x@y",
            "2001:2::20",
            "<sip:a@b>",
            ":5060",
        ] {
            assert!(normalize_contact("1001", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_validates() {
        assert!(matches!(
            Directory::new(vec![dn("1001", None), dn("1001", None)], 60),
            Err(DirectoryError::Duplicate(_))
        ));
        assert!(matches!(
            Directory::new(vec![dn("10 01", None)], 60),
            Err(DirectoryError::InvalidNumber(_))
        ));
        assert!(matches!(
            Directory::new(vec![dn("1001", Some("a b"))], 60),
            Err(DirectoryError::InvalidContact { .. })
        ));
        let d = Directory::new(vec![dn("1001", None), dn("+4930", Some("h"))], 60).expect("ok");
        assert_eq!(d.len(), 2);
        assert_eq!(
            d.get("+4930").and_then(|c| c.contact.as_deref()),
            Some("sip:+4930@h")
        );
    }

    #[test]
    fn static_and_registered_contacts() {
        let mut d = Directory::new(
            vec![dn("1001", Some("198.18.0.20:5060")), dn("1002", None)],
            3600,
        )
        .expect("ok");
        assert_eq!(d.lookup("9999", 0), Lookup::Unknown);
        assert!(matches!(d.lookup("1002", 100), Lookup::Unavailable { .. }));
        assert!(matches!(
            d.lookup("1001", 100),
            Lookup::Found {
                contact: "sip:1001@198.18.0.20:5060",
                registered: false,
                ..
            }
        ));
        // Register 1002 for 60 s at t=100: found until 159, gone at 160.
        assert_eq!(
            d.register("1002", "sip:1002@198.18.0.30:5062", 60, 100),
            Ok(60)
        );
        assert!(matches!(
            d.lookup("1002", 159),
            Lookup::Found {
                contact: "sip:1002@198.18.0.30:5062",
                registered: true,
                ..
            }
        ));
        assert!(matches!(d.lookup("1002", 160), Lookup::Unavailable { .. }));
        assert!(d.registration("1002", 160).is_none());
        // A registration overrides the static contact while it lives.
        assert_eq!(d.register("1001", "198.18.0.40", 30, 0), Ok(30));
        assert!(matches!(
            d.lookup("1001", 10),
            Lookup::Found {
                contact: "sip:1001@198.18.0.40",
                registered: true,
                ..
            }
        ));
        assert!(matches!(
            d.lookup("1001", 30),
            Lookup::Found {
                registered: false,
                ..
            }
        ));
        // Expires are capped; 0 unregisters.
        assert_eq!(d.register("1002", "h", 100_000, 0), Ok(3600));
        assert!(d.registration("1002", 3599).is_some());
        assert_eq!(d.register("1002", "h", 0, 1), Ok(0));
        assert!(matches!(d.lookup("1002", 2), Lookup::Unavailable { .. }));
        // Errors.
        assert_eq!(
            d.register("9999", "h", 60, 0),
            Err(DirectoryError::UnknownDn("9999".into()))
        );
        assert!(matches!(
            d.register("1002", "not a uri", 60, 0),
            Err(DirectoryError::InvalidContact { .. })
        ));
    }

    #[test]
    fn expire_drops_old_registrations() {
        let mut d = Directory::new(vec![dn("1001", None), dn("1002", None)], 3600).expect("ok");
        d.register("1001", "a", 10, 0).expect("ok");
        d.register("1002", "b", 100, 0).expect("ok");
        assert_eq!(d.expire(50), ["1001"]);
        assert!(d.expire(50).is_empty());
        assert_eq!(d.expire(100), ["1002"]);
    }
}
