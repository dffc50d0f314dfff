//! Who may see and do what: roles, and the access rule for interactions.
//!
//! * `agent`: only interactions involving one of its DNs; everything else does not exist
//!   for it (the API answers 404, not 403, so an agent cannot probe for recordings).
//! * `supervisor`: every interaction and the processor's counters (`/v1/status`); no
//!   delete, no legal hold, no audit, no retention.
//! * `admin`: everything.

use serde::{Deserialize, Serialize};

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees the interactions of its DNs only.
    Agent,
    /// Sees everything, changes nothing.
    Supervisor,
    /// Sees and may delete everything, sets legal holds, reads the audit trail.
    Admin,
}

impl Role {
    /// The role's name as in the config and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller of the API (or the processor itself, for retention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The token's name (audit trail).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its DNs (what an agent may see; ignored for the other roles).
    pub dns: Vec<String>,
}

impl Access {
    /// The processor acting on its own (retention), with admin rights.
    pub fn system(name: &str) -> Access {
        Access {
            name: name.to_owned(),
            role: Role::Admin,
            dns: Vec::new(),
        }
    }

    /// Whether this caller may see an interaction involving `dns`.
    pub fn can_see(&self, dns: &[String]) -> bool {
        match self.role {
            Role::Supervisor | Role::Admin => true,
            Role::Agent => dns.iter().any(|d| self.dns.contains(d)),
        }
    }

    /// The DNs a search must be limited to (`None`: no limit).
    pub fn dn_limit(&self) -> Option<&[String]> {
        match self.role {
            Role::Agent => Some(&self.dns),
            Role::Supervisor | Role::Admin => None,
        }
    }

    /// Whether this caller may read the processor's global counters (`/v1/status`): they
    /// describe every recording, so agents may not.
    pub fn can_read_status(&self) -> bool {
        matches!(self.role, Role::Supervisor | Role::Admin)
    }

    /// Whether this caller may delete recordings, set legal holds and read the audit trail.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, dns: &[&str]) -> Access {
        Access {
            name: "t".into(),
            role,
            dns: dns.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn agents_see_only_their_dns() {
        let agent = who(Role::Agent, &["1001"]);
        let call = |dns: &[&str]| dns.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(agent.can_see(&call(&["1001"])));
        assert!(agent.can_see(&call(&["2002", "1001"])));
        assert!(!agent.can_see(&call(&["2002"])));
        assert!(!agent.can_see(&call(&[])));
        assert!(!who(Role::Agent, &[]).can_see(&call(&["1001"])));
        assert_eq!(agent.dn_limit(), Some(&["1001".to_string()][..]));
        assert!(!agent.is_admin());
        assert!(!agent.can_read_status());
    }

    #[test]
    fn supervisors_and_admins_see_everything() {
        for r in [Role::Supervisor, Role::Admin] {
            let w = who(r, &["1001"]);
            assert!(w.can_see(&[]));
            assert!(w.can_see(&["2002".to_string()]));
            assert_eq!(w.dn_limit(), None);
            assert!(w.can_read_status());
        }
        assert!(!who(Role::Supervisor, &[]).is_admin());
        assert!(who(Role::Admin, &[]).is_admin());
        assert!(Access::system("retention").is_admin());
    }
}
