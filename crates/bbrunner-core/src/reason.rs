//! Every reason a pool's conditions and Events give, with its wording in one place: what
//! `kubectl describe` shows, alerts match and the docs list.

use std::fmt;

/// What a reason is about: a condition's state, or something the user must fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// The pool is as it should be, or on its way there.
    Progress,
    /// The pool's spec or the admin's policy: fix the RunnerPool.
    Configuration,
    /// The Bitbucket credentials or their scopes: fix the Secret or the consumer.
    Credentials,
    /// Bitbucket's side: limits, availability, answers.
    Bitbucket,
    /// The cluster's side: room for pods, the API server.
    Cluster,
}

macro_rules! reasons {
    ($($variant:ident => $category:ident),* $(,)?) => {
        /// A condition or Event reason (CamelCase, as Kubernetes writes them).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($variant,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The reason as written in conditions and Events.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => stringify!($variant),)*
                }
            }

            pub fn category(self) -> Category {
                match self {
                    $(Reason::$variant => Category::$category,)*
                }
            }
        }
    };
}

reasons! {
    // Ready
    RunnersOnline => Progress,
    RunnersStarting => Progress,
    PodsRunning => Progress,
    PodsStarting => Progress,
    // Scaling
    Converging => Progress,
    Stable => Progress,
    // Progressing
    RollingOut => Progress,
    RolledOut => Progress,
    // StepNetworkMTU
    FollowsPodNetwork => Progress,
    DindBeforeDocker24 => Configuration,
    // Degraded
    AsExpected => Progress,
    InvalidSpec => Configuration,
    PolicyViolation => Configuration,
    CredentialsInvalid => Credentials,
    CredentialsDeleting => Credentials,
    RegistrationInUse => Configuration,
    MissingScope => Credentials,
    QuotaExceeded => Bitbucket,
    RateLimited => Bitbucket,
    NotFound => Bitbucket,
    ApiRejected => Bitbucket,
    ApiUnreachable => Bitbucket,
    Unschedulable => Cluster,
    KubernetesApi => Cluster,
    // Events
    RunnerCreated => Progress,
    RunnerDisabled => Progress,
    RunnerEnabled => Progress,
    RunnerDeleted => Progress,
    PodRecreated => Progress,
    Scaled => Progress,
    PoolDeleted => Progress,
    CleanupAbandoned => Bitbucket,
    CacheVolumeCreated => Progress,
    CacheVolumeDeleted => Progress,
    CacheVolumeUnschedulable => Cluster,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_camel_case_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert!(
                text.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{text}"
            );
            assert!(text.chars().all(|c| c.is_ascii_alphanumeric()), "{text}");
            assert!(seen.insert(text), "{text} twice");
        }
        assert_eq!(Reason::CredentialsInvalid.to_string(), "CredentialsInvalid");
        assert_eq!(Reason::RateLimited.category(), Category::Bitbucket);
    }
}
