//! Which Bitbucket runners belong to which pool of which cluster, read from the runner's name
//! alone: a restarted operator, or one of several clusters sharing a workspace, knows its
//! runners with no local state.
//!
//! Runners are named `bbrunner.CLUSTER.NAMESPACE.POOL.SUFFIX`. Before cluster identities, they
//! were named `bbrunner.NAMESPACE.POOL.SUFFIX` ("legacy"); such a runner is adopted only by the
//! cluster that holds its registration Secret or pod, since any cluster may have made it.

use thiserror::Error;

/// The longest runner name we create. Bitbucket's own limit is not documented and could not be
/// checked; 100 characters is our assumption, checked when a pool is validated.
pub const MAX_RUNNER_NAME: usize = 100;

const PREFIX: &str = "bbrunner";
const SUFFIX_LEN: usize = 6;
const MAX_CLUSTER_ID: usize = 20;

/// A cluster's identity in runner names: 1 to 20 of `a-z`, `0-9` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterId(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClusterIdError {
    #[error(
        "cluster id {0:?}: use 1 to {MAX_CLUSTER_ID} lowercase letters, digits or '-' (it becomes part of every runner's name)"
    )]
    Invalid(String),
}

impl ClusterId {
    pub fn new(raw: &str) -> Result<Self, ClusterIdError> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_CLUSTER_ID
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ClusterIdError::Invalid(raw.to_owned()))
        }
    }

    /// The default identity: the first 8 hex digits of the `kube-system` namespace's UID, which
    /// is stable for the life of a cluster and differs between clusters.
    pub fn from_namespace_uid(uid: &str) -> Result<Self, ClusterIdError> {
        let hex: String = uid
            .chars()
            .filter(char::is_ascii_hexdigit)
            .map(|c| c.to_ascii_lowercase())
            .take(8)
            .collect();
        if hex.len() < 8 {
            return Err(ClusterIdError::Invalid(uid.to_owned()));
        }
        Self::new(&hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One pool of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolIdentity<'a> {
    pub cluster: &'a ClusterId,
    pub namespace: &'a str,
    pub pool: &'a str,
}

/// Who a runner belongs to, as far as its name tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Named for this pool of this cluster.
    Ours,
    /// Named for this namespace and pool before cluster identities: ours only if this cluster
    /// holds its Secret or pod.
    Legacy,
    /// Anything else: another pool, another cluster, or not made by bbrunner. Never touched.
    Foreign,
}

impl PoolIdentity<'_> {
    /// `bbrunner.CLUSTER.NAMESPACE.POOL.` — every runner of this pool starts with it.
    pub fn prefix(&self) -> String {
        format!(
            "{PREFIX}.{}.{}.{}.",
            self.cluster, self.namespace, self.pool
        )
    }

    /// A new runner's name, `suffix` being 6 random characters of `a-z0-9`.
    pub fn runner_name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix())
    }

    /// The length of this pool's runner names.
    pub fn runner_name_len(&self) -> usize {
        self.prefix().len() + SUFFIX_LEN
    }

    pub fn classify(&self, runner_name: &str) -> Ownership {
        if let Some(rest) = runner_name.strip_prefix(&self.prefix())
            && is_suffix(rest)
        {
            return Ownership::Ours;
        }
        let legacy = format!("{PREFIX}.{}.{}.", self.namespace, self.pool);
        if let Some(rest) = runner_name.strip_prefix(&legacy)
            && is_suffix(rest)
        {
            return Ownership::Legacy;
        }
        Ownership::Foreign
    }

    /// Whether this pool manages the runner: named for it, or named the legacy way and held
    /// here (its registration Secret or pod is in this cluster). Everything else is left alone.
    pub fn owns(&self, runner_name: &str, held_here: bool) -> bool {
        match self.classify(runner_name) {
            Ownership::Ours => true,
            Ownership::Legacy => held_here,
            Ownership::Foreign => false,
        }
    }
}

fn is_suffix(rest: &str) -> bool {
    rest.len() == SUFFIX_LEN
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(id: &str) -> ClusterId {
        ClusterId::new(id).unwrap()
    }

    #[test]
    fn a_runner_named_for_this_pool_and_cluster_is_ours() {
        let c = cluster("a1b2c3d4");
        let me = PoolIdentity {
            cluster: &c,
            namespace: "ci",
            pool: "builds",
        };
        let name = me.runner_name("x7k2p9");
        assert_eq!(name, "bbrunner.a1b2c3d4.ci.builds.x7k2p9");
        assert_eq!(me.classify(&name), Ownership::Ours);
        assert_eq!(name.len(), me.runner_name_len());
    }

    #[test]
    fn the_same_pool_in_another_cluster_is_foreign() {
        let (a, b) = (cluster("aaaa1111"), cluster("bbbb2222"));
        let in_a = PoolIdentity {
            cluster: &a,
            namespace: "ci",
            pool: "builds",
        };
        let in_b = PoolIdentity {
            cluster: &b,
            ..in_a
        };
        assert_eq!(
            in_a.classify(&in_b.runner_name("abc123")),
            Ownership::Foreign
        );
    }

    #[test]
    fn pools_whose_names_share_a_prefix_do_not_claim_each_other() {
        let c = cluster("c1");
        let builds = PoolIdentity {
            cluster: &c,
            namespace: "ci",
            pool: "builds",
        };
        let builds_big = PoolIdentity {
            pool: "builds-big",
            ..builds
        };
        assert_eq!(
            builds.classify(&builds_big.runner_name("abc123")),
            Ownership::Foreign
        );
        // A longer tail is not a suffix of ours either.
        assert_eq!(
            builds.classify("bbrunner.c1.ci.builds.abc123.x"),
            Ownership::Foreign
        );
    }

    #[test]
    fn legacy_names_are_recognised_for_adoption_only() {
        let c = cluster("c1");
        let me = PoolIdentity {
            cluster: &c,
            namespace: "ci",
            pool: "builds",
        };
        assert_eq!(me.classify("bbrunner.ci.builds.q1w2e3"), Ownership::Legacy);
        assert_eq!(me.classify("bbrunner.ci.other.q1w2e3"), Ownership::Foreign);
        // A cluster-named runner of another cluster whose id equals our namespace does not
        // read as legacy: the suffix would have to be "builds.xxxxxx".
        let ci = cluster("ci");
        let other = PoolIdentity {
            cluster: &ci,
            namespace: "builds",
            pool: "p",
        };
        assert_eq!(
            me.classify(&other.runner_name("abc123")),
            Ownership::Foreign
        );
        assert_eq!(me.classify("runner-5c1d2e3f"), Ownership::Foreign);
    }

    #[test]
    fn a_legacy_runner_is_owned_only_where_its_secret_or_pod_is() {
        let c = cluster("c1");
        let me = PoolIdentity {
            cluster: &c,
            namespace: "ci",
            pool: "builds",
        };
        let legacy = "bbrunner.ci.builds.q1w2e3";
        assert!(me.owns(legacy, true));
        assert!(!me.owns(legacy, false));
        assert!(me.owns(&me.runner_name("abc123"), false));
        assert!(!me.owns("bbrunner.c2.ci.builds.abc123", true));
    }

    #[test]
    fn cluster_ids_are_checked_and_derived_from_a_uid() {
        assert!(ClusterId::new("prod-eu1").is_ok());
        for bad in ["", "Prod", "a.b", "with space", "aaaaaaaaaaaaaaaaaaaaa"] {
            assert!(ClusterId::new(bad).is_err(), "{bad:?} accepted");
        }
        let id = ClusterId::from_namespace_uid("6F1C2A9E-0b1d-4c3e-9f00-123456789abc").unwrap();
        assert_eq!(id.as_str(), "6f1c2a9e");
        assert!(ClusterId::from_namespace_uid("nope").is_err());
    }
}
