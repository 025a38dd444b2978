//! Bitbucket access shared by every pool: one client per identity (so one request budget per
//! identity, as Bitbucket counts them) and one runner list per scope and poll, serving every
//! pool of that scope.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitbucket::{Client, Config, Credentials, Error, RequestObserver, Runner, RunnerScope};
use secrecy::ExposeSecret;

use super::metrics::{EndpointLabels, IdentityLabels, Metrics, RequestLabels};

/// A scope's runner list and when it was fetched.
#[derive(Clone)]
pub struct ScopeRunners {
    pub runners: Arc<Vec<Runner>>,
    pub fetched: Instant,
    /// Wall-clock seconds of the fetch, for the planner.
    pub fetched_at: f64,
}

pub struct Hub {
    base: Config,
    metrics: Arc<Metrics>,
    clients: Mutex<HashMap<u64, Client>>,
    scopes: Mutex<HashMap<ScopeKey, ScopeRunners>>,
    /// Serialises list calls per scope so concurrent pools of a scope share one, while other
    /// scopes go on.
    fetching: KeyedLocks<ScopeKey>,
    /// What each pool uses, so that what no pool uses any more is let go.
    users: Mutex<HashMap<PoolKey, Usage>>,
}

/// A pool: its namespace and name.
pub type PoolKey = (String, String);

/// The client (by credentials' fingerprint) and scope a pool works with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Usage {
    client: u64,
    scope: ScopeKey,
}

/// How much the hub holds, for tests that it does not grow.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub clients: usize,
    pub scopes: usize,
    pub locks: usize,
    pub pools: usize,
}

/// An identity ([`Client::opaque_id`]) and one of its scopes.
type ScopeKey = (String, RunnerScope);

/// One async lock per key.
pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K: Eq + std::hash::Hash + Clone> KeyedLocks<K> {
    pub fn new() -> Self {
        Self {
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn remove(&self, key: &K) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub async fn lock(&self, key: &K) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

fn fingerprint(credentials: &Credentials, key: &bitbucket::IdentityKey) -> u64 {
    let mut h = DefaultHasher::new();
    credentials.opaque_id(key).hash(&mut h);
    match credentials {
        Credentials::OAuthConsumer { secret, .. } => secret.expose_secret().hash(&mut h),
        Credentials::ApiToken { token, .. } => token.expose_secret().hash(&mut h),
        Credentials::AppPassword { password, .. } => password.expose_secret().hash(&mut h),
        Credentials::AccessToken(token) => token.expose_secret().hash(&mut h),
    }
    h.finish()
}

pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Hub {
    pub fn new(mut base: Config, metrics: Arc<Metrics>) -> Self {
        let observed = metrics.clone();
        base.observer = Some(RequestObserver(Arc::new(
            move |endpoint, status, latency| {
                observed
                    .bitbucket_requests
                    .get_or_create(&RequestLabels {
                        endpoint: endpoint.to_owned(),
                        status: status.to_string(),
                    })
                    .inc();
                observed
                    .bitbucket_request_duration
                    .get_or_create(&EndpointLabels {
                        endpoint: endpoint.to_owned(),
                    })
                    .observe(latency.as_secs_f64());
            },
        )));
        Self {
            base,
            metrics,
            clients: Mutex::new(HashMap::new()),
            scopes: Mutex::new(HashMap::new()),
            fetching: KeyedLocks::new(),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// The client `pool` uses for `scope` with these credentials, created on first use
    /// (clients are shared by every pool of one identity: its request budget is one).
    pub fn client(
        &self,
        pool: &PoolKey,
        credentials: Credentials,
        scope: &RunnerScope,
    ) -> Result<Client, Error> {
        let key = fingerprint(&credentials, &self.base.identity_key);
        let client = {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            match clients.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let client = Client::new(self.base.clone(), credentials)?;
                    clients.insert(key, client.clone());
                    client
                }
            }
        };
        let usage = Usage {
            client: key,
            scope: (client.opaque_id(), scope.clone()),
        };
        let previous = self
            .users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pool.clone(), usage.clone());
        // Rotated credentials or a changed scope: what only the old ones served goes.
        if let Some(previous) = previous.filter(|p| *p != usage) {
            self.evict_unused(&previous);
        }
        Ok(client)
    }

    /// The pool is gone: let go of its client, cached scope and lock if no other pool uses
    /// them, so that the hub does not grow with pools created and deleted.
    pub fn forget_pool(&self, pool: &PoolKey) {
        let usage = self
            .users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pool);
        if let Some(usage) = usage {
            self.evict_unused(&usage);
        }
    }

    fn evict_unused(&self, usage: &Usage) {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if !users.values().any(|u| u.client == usage.client) {
            let gone = self
                .clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&usage.client);
            let identity = usage.scope.0.clone();
            let identity_used = self
                .clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .any(|c| c.opaque_id() == identity);
            if gone.is_some() && !identity_used {
                self.metrics
                    .budget_remaining
                    .remove(&IdentityLabels { identity });
            }
        }
        if !users.values().any(|u| u.scope == usage.scope) {
            self.scopes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&usage.scope);
            self.fetching.remove(&usage.scope);
        }
    }

    /// What the hub holds now.
    #[cfg(test)]
    pub fn held(&self) -> Held {
        Held {
            clients: self.clients.lock().unwrap_or_else(|e| e.into_inner()).len(),
            scopes: self.scopes.lock().unwrap_or_else(|e| e.into_inner()).len(),
            locks: self.fetching.len(),
            pools: self.users.lock().unwrap_or_else(|e| e.into_inner()).len(),
        }
    }

    /// How many scopes the pools of an identity use: they share its budget's lists.
    pub fn scopes_of(&self, identity: &str) -> usize {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .values()
            .filter(|u| u.scope.0 == identity)
            .map(|u| &u.scope.1)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// The runners of a scope, fetched at most once per `max_age`.
    pub async fn runners(
        &self,
        client: &Client,
        scope: &RunnerScope,
        max_age: Duration,
    ) -> Result<ScopeRunners, Error> {
        let key = (client.opaque_id(), scope.clone());
        let cached = |hub: &Self| {
            hub.scopes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .filter(|s| s.fetched.elapsed() < max_age)
                .cloned()
        };
        if let Some(hit) = cached(self) {
            return Ok(hit);
        }
        let _one_at_a_time = self.fetching.lock(&key).await;
        if let Some(hit) = cached(self) {
            return Ok(hit);
        }
        let fetched_at = now_seconds();
        let runners = client.list_runners(scope).await;
        self.metrics
            .budget_remaining
            .get_or_create(&IdentityLabels {
                identity: client.opaque_id(),
            })
            .set(i64::from(client.remaining_budget()));
        let entry = ScopeRunners {
            runners: Arc::new(runners?),
            fetched: Instant::now(),
            fetched_at,
        };
        self.scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, entry.clone());
        Ok(entry)
    }

    /// Forget a scope's list after changing it, so the next reconcile sees the change.
    pub fn invalidate(&self, client: &Client, scope: &RunnerScope) {
        self.scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(client.opaque_id(), scope.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[tokio::test]
    async fn pools_created_and_deleted_leave_the_hub_as_it_was() {
        let hub = Hub::new(Config::default(), Metrics::new());
        let token = |t: &str| Credentials::AccessToken(SecretString::from(t.to_owned()));
        let scope = |w: &str| RunnerScope::Workspace(w.into());
        let shared = ("ci".to_owned(), "shared".to_owned());
        hub.client(&shared, token("kept"), &scope("acme")).unwrap();
        let baseline = hub.held();
        for round in 0..50 {
            let pool = ("ci".to_owned(), format!("p{round}"));
            let client = hub
                .client(
                    &pool,
                    token(&format!("t{round}")),
                    &scope(&format!("w{round}")),
                )
                .unwrap();
            // Its list cached and its lock taken, as a reconcile does.
            drop(
                hub.fetching
                    .lock(&(client.opaque_id(), scope(&format!("w{round}"))))
                    .await,
            );
            // Rotated once.
            hub.client(
                &pool,
                token(&format!("rotated{round}")),
                &scope(&format!("w{round}")),
            )
            .unwrap();
            hub.forget_pool(&pool);
        }
        assert_eq!(hub.held(), baseline, "the hub grew over 50 pools");
        // A client still used by another pool stays.
        let other = ("ci".to_owned(), "other".to_owned());
        hub.client(&other, token("kept"), &scope("acme")).unwrap();
        hub.forget_pool(&other);
        assert_eq!(hub.held().clients, 1);
    }

    #[tokio::test]
    async fn a_held_scope_lock_does_not_stall_another_scope() {
        let locks = KeyedLocks::new();
        let _slow = locks.lock(&"workspace-a").await;
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock(&"workspace-b")).await;
        assert!(other.is_ok(), "scope b waited for scope a");
        let same =
            tokio::time::timeout(Duration::from_millis(50), locks.lock(&"workspace-a")).await;
        assert!(same.is_err(), "scope a's lock was taken twice");
    }
}
