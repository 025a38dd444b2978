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

    /// The non-secret identity Bitbucket rate-limits by.
    pub fn identity(&self) -> String {
        match self {
            Self::OAuthConsumer { key, .. } => format!("OAuth consumer {key}"),
            Self::ApiToken { email, .. } => format!("API token of {email}"),
            Self::AppPassword { username, .. } => format!("app password of {username}"),
            Self::AccessToken(_) => "access token".to_owned(),
        }
    }
}
