//! What identifies one runner to Bitbucket: its scope, its UUIDs and its OAuth client.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountUuid, RepositoryUuid, RunnerUuid};

/// Where a runner is registered: for a whole workspace or for one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Workspace,
    Repository,
}

/// One runner's registration, as the runner container needs it. `Debug` never shows the secret.
#[derive(Debug, Clone)]
pub struct RunnerRegistration {
    pub account_uuid: AccountUuid,
    /// Present exactly for repository runners.
    pub repository_uuid: Option<RepositoryUuid>,
    pub runner_uuid: RunnerUuid,
    pub oauth_client_id: String,
    pub oauth_client_secret: SecretString,
}

impl RunnerRegistration {
    pub fn scope(&self) -> Scope {
        match self.repository_uuid {
            Some(_) => Scope::Repository,
            None => Scope::Workspace,
        }
    }
}

// Compares the secret too (in constant shape, not constant time: this is for tests and
// idempotence checks, never for authentication).
impl PartialEq for RunnerRegistration {
    fn eq(&self, other: &Self) -> bool {
        self.account_uuid == other.account_uuid
            && self.repository_uuid == other.repository_uuid
            && self.runner_uuid == other.runner_uuid
            && self.oauth_client_id == other.oauth_client_id
            && self.oauth_client_secret.expose_secret() == other.oauth_client_secret.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret_and_scope_follows_repository() {
        let reg = RunnerRegistration {
            account_uuid: AccountUuid::parse("0b4a1c2e-8f3d-4e5a-9b6c-7d8e9f0a1b2c").unwrap(),
            repository_uuid: None,
            runner_uuid: RunnerUuid::parse("5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f").unwrap(),
            oauth_client_id: "client".into(),
            oauth_client_secret: SecretString::from("ATOA-very-secret"),
        };
        assert!(!format!("{reg:?}").contains("very-secret"));
        assert!(!format!("{reg:#?}").contains("very-secret"));
        assert_eq!(reg.scope(), Scope::Workspace);
        let repo = RunnerRegistration {
            repository_uuid: Some(
                RepositoryUuid::parse("{11111111-2222-3333-4444-555555555555}").unwrap(),
            ),
            ..reg
        };
        assert_eq!(repo.scope(), Scope::Repository);
    }
}
