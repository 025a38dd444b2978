use std::sync::Arc;

use secrecy::SecretString;

/// The key of [`Credentials::opaque_id`]: kept secret (a Secret of the operator's), so that
/// an id cannot be traced back to a short access token by hashing guesses. `Debug` never
/// shows it.
#[derive(Clone)]
pub struct IdentityKey(Arc<[u8]>);

impl IdentityKey {
    /// Bytes this key is made of; at least 16 make a key that guessing cannot find.
    pub fn new(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    /// A key of 32 random bytes (a process's own, until it is given one to keep).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source");
        Self::new(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

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

    /// An opaque name for the account Bitbucket counts these credentials' requests against,
    /// fit for metric labels and status: it holds no e-mail, username or token, and differs
    /// between access tokens (each is its own bot account). Keyed (HMAC-SHA256 with `key`,
    /// first 8 bytes in hex): stable while the key is, and without the key no guess of a
    /// short token can be checked against it.
    pub fn opaque_id(&self, key: &IdentityKey) -> String {
        use secrecy::ExposeSecret;
        let principal = match self {
            Self::OAuthConsumer { key, .. } => format!("oauth\0{key}"),
            Self::ApiToken { email, .. } => format!("api-token\0{email}"),
            Self::AppPassword { username, .. } => format!("app-password\0{username}"),
            Self::AccessToken(token) => format!("access-token\0{}", token.expose_secret()),
        };
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, principal.as_bytes());
        tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
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
        let key = IdentityKey::new(b"0123456789abcdef0123456789abcdef");
        let api = Credentials::ApiToken {
            email: "dev@example.com".into(),
            token: SecretString::from("t1"),
        };
        let id = api.opaque_id(&key);
        assert_eq!(id.len(), 16);
        assert!(!id.contains("example"));
        // The same account with another token is the same identity to Bitbucket.
        let same_account = Credentials::ApiToken {
            email: "dev@example.com".into(),
            token: SecretString::from("t2"),
        };
        assert_eq!(id, same_account.opaque_id(&key));
        let a = Credentials::AccessToken(SecretString::from("token-a"));
        let b = Credentials::AccessToken(SecretString::from("token-b"));
        assert_ne!(a.opaque_id(&key), b.opaque_id(&key));
        assert_eq!(a.identity(), b.identity());
    }

    #[test]
    fn an_id_cannot_be_recomputed_from_a_guessed_token_without_the_key() {
        let token = Credentials::AccessToken(SecretString::from("abc"));
        let key = IdentityKey::new(b"the cluster's own key, 32 bytes!");
        let id = token.opaque_id(&key);
        // Stable under the same key; another key (a guesser's) gives another id.
        assert_eq!(
            id,
            token.opaque_id(&IdentityKey::new(b"the cluster's own key, 32 bytes!"))
        );
        assert_ne!(
            id,
            token.opaque_id(&IdentityKey::new(b"a guess of the key, 32 bytes ..."))
        );
        assert_ne!(id, token.opaque_id(&IdentityKey::random()));
        // The unkeyed FNV-1a of the principal, as ids were before, is not it.
        let fnv = "access-token\0abc"
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        assert_ne!(id, format!("{fnv:016x}"));
        assert_eq!(format!("{key:?}"), "IdentityKey(..)");
    }
}
