//! Which pools read which Secrets (their credentials, their imported registrations), so that
//! a change to one of those Secrets wakes the pools that read it at once, and only those.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// A Secret or a pool, by namespace and name.
type Key = (String, String);

#[derive(Default)]
pub struct SecretReferences {
    /// Secret -> the pools (names, in the Secret's namespace) that read it.
    readers: Mutex<BTreeMap<Key, BTreeSet<String>>>,
}

impl SecretReferences {
    /// Pool `pool` of `namespace` now reads exactly `secrets` (of its namespace).
    pub fn set(&self, namespace: &str, pool: &str, secrets: &[&str]) {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        readers.retain(|(ns, secret), pools| {
            if ns == namespace && !secrets.contains(&secret.as_str()) {
                pools.remove(pool);
            }
            !pools.is_empty()
        });
        for secret in secrets {
            readers
                .entry((namespace.to_owned(), (*secret).to_owned()))
                .or_default()
                .insert(pool.to_owned());
        }
    }

    /// The pools that read Secret `secret` of `namespace`.
    pub fn readers(&self, namespace: &str, secret: &str) -> Vec<String> {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.to_owned(), secret.to_owned()))
            .map(|pools| pools.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_wakes_the_pools_that_read_it_and_no_others() {
        let refs = SecretReferences::default();
        refs.set("ci", "builds", &["creds"]);
        refs.set("ci", "deploys", &["creds", "ui-runner"]);
        refs.set("team-b", "builds", &["creds"]);
        assert_eq!(refs.readers("ci", "creds"), ["builds", "deploys"]);
        assert_eq!(refs.readers("team-b", "creds"), ["builds"]);
        assert!(refs.readers("ci", "other").is_empty());
        // A pool that moves to other credentials no longer wakes on the old ones.
        refs.set("ci", "builds", &["new-creds"]);
        assert_eq!(refs.readers("ci", "creds"), ["deploys"]);
        assert_eq!(refs.readers("ci", "new-creds"), ["builds"]);
        // A deleted pool wakes on nothing.
        refs.set("ci", "deploys", &[]);
        assert!(refs.readers("ci", "creds").is_empty());
        assert!(refs.readers("ci", "ui-runner").is_empty());
    }
}
