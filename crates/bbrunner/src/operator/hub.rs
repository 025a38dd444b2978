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

fn fingerprint(credentials: &Credentials) -> u64 {
    let mut h = DefaultHasher::new();
    credentials.opaque_id().hash(&mut h);
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
        }
    }

    /// The client for these credentials, created on first use.
    pub fn client(&self, credentials: Credentials) -> Result<Client, Error> {
        let key = fingerprint(&credentials);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = Client::new(self.base.clone(), credentials)?;
        clients.insert(key, client.clone());
        Ok(client)
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
