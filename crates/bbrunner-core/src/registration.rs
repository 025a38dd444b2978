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

/// A pool, by namespace and name.
pub type PoolKey = (String, String);

/// The pool that holds an imported runner, of those whose pods run it (`pods`: each pod's
/// pool and creation time, in seconds): the one with the oldest pod, by creation and then by
/// name, whoever asks; with none, the one `remembered`; else the one asking. One registration
/// runs in one pod: two agents on one runner take each other's steps.
pub fn holder(
    asking: &PoolKey,
    pods: &[(PoolKey, Option<f64>)],
    remembered: Option<&PoolKey>,
) -> PoolKey {
    pods.iter()
        .min_by(|(a, at), (b, bt)| {
            let when = |t: &Option<f64>| t.unwrap_or(f64::INFINITY);
            when(at).total_cmp(&when(bt)).then_with(|| a.cmp(b))
        })
        .map(|(pool, _)| pool)
        .or(remembered)
        .unwrap_or(asking)
        .clone()
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

    fn key(ns: &str, name: &str) -> PoolKey {
        (ns.to_owned(), name.to_owned())
    }

    #[test]
    fn the_oldest_pod_s_pool_holds_the_runner_whoever_asks() {
        let pods = [
            (key("b", "second"), Some(200.0)),
            (key("a", "first"), Some(100.0)),
        ];
        for asking in [key("a", "first"), key("b", "second"), key("c", "third")] {
            assert_eq!(holder(&asking, &pods, None), key("a", "first"));
        }
        // Created in the same second: by namespace and name, the same answer for everyone.
        let tied = [(key("b", "x"), Some(100.0)), (key("a", "y"), Some(100.0))];
        assert_eq!(holder(&key("b", "x"), &tied, None), key("a", "y"));
    }

    #[test]
    fn without_a_pod_the_remembered_holder_keeps_the_runner_else_the_asker_takes_it() {
        let first = key("a", "first");
        assert_eq!(holder(&key("b", "second"), &[], Some(&first)), first);
        assert_eq!(holder(&key("b", "second"), &[], None), key("b", "second"));
    }
}
