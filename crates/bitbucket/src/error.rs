use std::time::Duration;

/// Every way a Bitbucket call fails, typed so the operator can report a precise condition.
/// No variant carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "Bitbucket rejected the {identity} (401 Unauthorized); check the {kind} in the credentials Secret"
    )]
    Unauthorized {
        kind: &'static str,
        identity: String,
    },
    #[error("Bitbucket refused {what} (403 Forbidden): the credentials lack the scopes {}; grant them to the {kind}", missing_scopes.join(", "))]
    Forbidden {
        what: String,
        kind: &'static str,
        missing_scopes: Vec<String>,
    },
    #[error("{what} was not found in Bitbucket (404)")]
    NotFound { what: String },
    #[error("Bitbucket rate limit reached (429); retry after {}s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    #[error("bbrunner's own request budget for this identity is spent; next request in {}s", retry_after.as_secs())]
    BudgetExhausted { retry_after: Duration },
    #[error(
        "the runner limit of {scope} is reached (Bitbucket allows 100 runners per workspace and per repository); delete unused runners"
    )]
    QuotaExceeded { scope: String },
    #[error("Bitbucket rejected {what} (400): {message}")]
    BadRequest { what: String, message: String },
    #[error("Bitbucket answered {what} with server error {status}")]
    Server { what: String, status: u16 },
    #[error("could not reach Bitbucket for {what}: {message}")]
    Transport { what: String, message: String },
    #[error("unexpected response to {what}: {message}")]
    Decode { what: String, message: String },
}

impl Error {
    /// Whether retrying the same idempotent call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Server { .. } | Self::Transport { .. }
        )
    }

    /// No usable answer came (the network, a proxy, or Bitbucket down): whatever was asked,
    /// the credentials were not judged.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Server { .. } | Self::Transport { .. })
    }
}
