use secrecy::SecretString;

/// How bbrunner authenticates to Bitbucket. `Debug` never shows a secret.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// An OAuth consumer: client credentials exchanged for short-lived access tokens.
    OAuthConsumer { key: String, secret: SecretString },
    /// An Atlassian API token, sent as basic auth with the account's e-mail.
    ApiToken { email: String, token: SecretString },
    /// A (deprecated) app password, sent as basic auth with the username.
    AppPassword {
        username: String,
        password: SecretString,
    },
    /// A bearer access token (repository, project or workspace access token).
    AccessToken(SecretString),
}

impl Credentials {
    /// What kind of credential this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OAuthConsumer { .. } => "OAuth consumer",
            Self::ApiToken { .. } => "API token",
            Self::AppPassword { .. } => "app password",
            Self::AccessToken(_) => "access token",
        }
    }

    /// An opaque, stable name for the account Bitbucket counts these credentials' requests
    /// against, fit for metric labels and status: it holds no e-mail, username or token, and
    /// differs between access tokens (each is its own bot account).
    pub fn opaque_id(&self) -> String {
        use secrecy::ExposeSecret;
        let principal = match self {
            Self::OAuthConsumer { key, .. } => format!("oauth\0{key}"),
            Self::ApiToken { email, .. } => format!("api-token\0{email}"),
            Self::AppPassword { username, .. } => format!("app-password\0{username}"),
            Self::AccessToken(token) => format!("access-token\0{}", token.expose_secret()),
        };
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = principal.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    /// The non-secret identity Bitbucket rate-limits by, for error messages.
    pub fn identity(&self) -> String {
        match self {
            Self::OAuthConsumer { key, .. } => format!("OAuth consumer {key}"),
            Self::ApiToken { email, .. } => format!("API token of {email}"),
            Self::AppPassword { username, .. } => format!("app password of {username}"),
            Self::AccessToken(_) => "access token".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_ids_hide_the_principal_and_tell_access_tokens_apart() {
        let api = Credentials::ApiToken {
            email: "dev@example.com".into(),
            token: SecretString::from("t1"),
        };
        let id = api.opaque_id();
        assert_eq!(id.len(), 16);
        assert!(!id.contains("example"));
        // The same account with another token is the same identity to Bitbucket.
        let same_account = Credentials::ApiToken {
            email: "dev@example.com".into(),
            token: SecretString::from("t2"),
        };
        assert_eq!(id, same_account.opaque_id());
        let a = Credentials::AccessToken(SecretString::from("token-a"));
        let b = Credentials::AccessToken(SecretString::from("token-b"));
        assert_ne!(a.opaque_id(), b.opaque_id());
        assert_eq!(a.identity(), b.identity());
    }
}
