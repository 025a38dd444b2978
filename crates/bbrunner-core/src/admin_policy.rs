//! What a cluster admin lets RunnerPools ask for. A RunnerPool is a privileged pod: whoever
//! may create one runs a privileged dind with an image of their choice, and can read the
//! namespace's Secrets into the runner (`runner.env[].valueFrom`) or run it under any of the
//! namespace's service accounts and runtime classes. The policy narrows that; the operator
//! enforces it (the pool turns Degraded naming the field) and `install` ships the same rules
//! as a ValidatingAdmissionPolicy, so that the API server refuses such a pool at once.

/// An image pattern: `*` stands for any run of characters, everything else for itself, e.g.
/// `docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePattern(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("an image pattern is empty; give one such as docker:*-dind")]
    Empty,
    #[error("image pattern {0:?} holds whitespace; give one image reference with * wildcards")]
    Whitespace(String),
}

impl ImagePattern {
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        if raw.is_empty() {
            return Err(PatternError::Empty);
        }
        if raw.chars().any(char::is_whitespace) {
            return Err(PatternError::Whitespace(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `image` is one this pattern allows (the whole reference must match).
    pub fn matches(&self, image: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or("");
        let Some(mut rest) = image.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            // No `*`: the pattern is the image.
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }

    /// The same pattern as an anchored RE2 expression (CEL's `matches`). Literal parts are
    /// escaped as Go's `regexp.QuoteMeta` does, so that the Helm chart (Sprig's
    /// `regexQuoteMeta`) writes the same expression.
    pub fn regex(&self) -> String {
        let escaped: Vec<String> = self
            .0
            .split('*')
            .map(|part| {
                part.chars()
                    .map(|c| {
                        if "\\.+*?()|[]{}^$".contains(c) {
                            format!("\\{c}")
                        } else {
                            c.to_string()
                        }
                    })
                    .collect()
            })
            .collect();
        // `(?s)`: a `*` spans any character, line breaks included, as the glob's does.
        format!("(?s)^{}$", escaped.join(".*"))
    }
}

/// The admin's rules for every RunnerPool the operator runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminPolicy {
    /// Runner and dind images must match one of these; empty: any image.
    pub allowed_images: Vec<ImagePattern>,
    /// Refuse `podTemplate.serviceAccountName`, `podTemplate.runtimeClassName` and runner
    /// variables read from Secrets: the ways a pool reaches beyond its own registration.
    pub restrict_pod_fields: bool,
    /// The largest `spec.cache.size` a pool may ask for: each runner slot gets a claim of it.
    pub max_cache_size: Option<CacheSizeCap>,
}

/// A bound on each cache claim's size, as given (`100Gi`) and in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSizeCap {
    text: String,
    bytes: u64,
}

impl CacheSizeCap {
    pub fn parse(raw: &str) -> Result<Self, crate::units::SizeError> {
        let bytes = crate::units::parse_bytes("--max-cache-size", raw)?;
        Ok(Self {
            text: raw.to_owned(),
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// What a pool asks for, as the policy judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRequest<'a> {
    /// The images the pool's pods would run, with the field each comes from (defaults
    /// included: an admin who allows only a mirror must see the default refused).
    pub images: Vec<(&'static str, &'a str)>,
    pub service_account_name: Option<&'a str>,
    pub runtime_class_name: Option<&'a str>,
    /// Indexes of `runner.env` entries that read a Secret.
    pub secret_env: Vec<usize>,
    /// `spec.cache.size` as written and in bytes, where the pool has a cache.
    pub cache_size: Option<(&'a str, u64)>,
}

/// A field the policy refuses, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Violation {
    pub field: String,
    pub message: String,
}

impl AdminPolicy {
    pub fn is_empty(&self) -> bool {
        self.allowed_images.is_empty() && !self.restrict_pod_fields && self.max_cache_size.is_none()
    }

    fn allows_image(&self, image: &str) -> bool {
        self.allowed_images.is_empty() || self.allowed_images.iter().any(|p| p.matches(image))
    }

    fn allowed_list(&self) -> String {
        self.allowed_images
            .iter()
            .map(ImagePattern::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The first field of `request` this policy refuses, if any.
    pub fn check(&self, request: &PoolRequest<'_>) -> Result<(), Violation> {
        for (field, image) in &request.images {
            if !self.allows_image(image) {
                return Err(Violation {
                    field: (*field).to_owned(),
                    message: format!(
                        "image {image:?} is not allowed by the cluster's policy; use one matching {}",
                        self.allowed_list()
                    ),
                });
            }
        }
        if let (Some(cap), Some((size, bytes))) = (&self.max_cache_size, request.cache_size)
            && bytes > cap.bytes
        {
            return Err(Violation {
                field: "spec.cache.size".into(),
                message: format!(
                    "{size} is more than the cluster's policy allows for each cache claim; ask for at most {}",
                    cap.text
                ),
            });
        }
        if !self.restrict_pod_fields {
            return Ok(());
        }
        let refused = |field: String, what: &str| Violation {
            field,
            message: format!("{what} is not allowed by the cluster's policy; remove it"),
        };
        if request.service_account_name.is_some() {
            return Err(refused(
                "spec.podTemplate.serviceAccountName".into(),
                "a service account of the pool's choice",
            ));
        }
        if request.runtime_class_name.is_some() {
            return Err(refused(
                "spec.podTemplate.runtimeClassName".into(),
                "a runtime class of the pool's choice",
            ));
        }
        if let Some(index) = request.secret_env.first() {
            return Err(refused(
                format!("spec.runner.env[{index}].valueFrom.secretKeyRef"),
                "a runner variable read from a Secret",
            ));
        }
        Ok(())
    }

    /// The same rules as CEL validations over a RunnerPool (`object`), with their messages,
    /// for a ValidatingAdmissionPolicy. Unset images are judged as their defaults.
    pub fn cel_validations(
        &self,
        default_runner: &str,
        default_dind: &str,
    ) -> Vec<(String, String)> {
        let mut rules = Vec::new();
        if !self.allowed_images.is_empty() {
            let patterns: Vec<String> = self
                .allowed_images
                .iter()
                .map(|p| format!("'{}'", cel_string(&p.regex())))
                .collect();
            let patterns = patterns.join(", ");
            for (field, section, default) in [
                ("spec.runner.image", "runner", default_runner),
                ("spec.dind.image", "dind", default_dind),
            ] {
                rules.push((
                    format!(
                        "[{patterns}].exists(p, (has(object.spec.{section}) && has(object.spec.{section}.image) ? object.spec.{section}.image : '{}').matches(p))",
                        cel_string(default)
                    ),
                    format!(
                        "{field} is not allowed by the cluster's policy; use an image matching {}",
                        self.allowed_list()
                    ),
                ));
            }
        }
        if let Some(cap) = &self.max_cache_size {
            rules.push((
                format!(
                    "!has(object.spec.cache) || quantity(object.spec.cache.size).compareTo(quantity('{}')) <= 0",
                    cel_string(&cap.text)
                ),
                format!(
                    "spec.cache.size is more than the cluster's policy allows for each cache claim; ask for at most {}",
                    cap.text
                ),
            ));
        }
        if self.restrict_pod_fields {
            rules.push((
                "!has(object.spec.podTemplate) || !has(object.spec.podTemplate.serviceAccountName)".into(),
                "spec.podTemplate.serviceAccountName is not allowed by the cluster's policy; remove it".into(),
            ));
            rules.push((
                "!has(object.spec.podTemplate) || !has(object.spec.podTemplate.runtimeClassName)".into(),
                "spec.podTemplate.runtimeClassName is not allowed by the cluster's policy; remove it".into(),
            ));
            rules.push((
                "!has(object.spec.runner) || !has(object.spec.runner.env) || object.spec.runner.env.all(e, !has(e.valueFrom) || !has(e.valueFrom.secretKeyRef))".into(),
                "spec.runner.env[].valueFrom.secretKeyRef is not allowed by the cluster's policy; remove it".into(),
            ));
        }
        rules
    }
}

/// `s` inside a single-quoted CEL string.
fn cel_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pattern(p: &str) -> ImagePattern {
        ImagePattern::parse(p).unwrap()
    }

    #[test]
    fn patterns_match_whole_references_with_star_wildcards() {
        let runner = pattern(
            "docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:*",
        );
        assert!(runner.matches(
            "docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1"
        ));
        assert!(!runner.matches("evil.example.com/bitbucket-pipelines-runner:1"));
        let dind = pattern("docker:*-dind");
        assert!(dind.matches("docker:28.5-dind"));
        assert!(!dind.matches("docker:28.5-dind-rootless"));
        assert!(!dind.matches("mirror/docker:28.5-dind"));
        assert!(pattern("registry.internal/*").matches("registry.internal/a/b:c"));
        assert!(pattern("exact:1").matches("exact:1"));
        assert!(!pattern("exact:1").matches("exact:10"));
        assert!(pattern("a*a").matches("aa"));
        assert!(!pattern("ab*ba").matches("aba"));
        assert_eq!(ImagePattern::parse(""), Err(PatternError::Empty));
        assert!(ImagePattern::parse("a b").is_err());
    }

    proptest! {
        /// The glob and its regex (what the admission policy runs) agree on every image.
        #[test]
        fn the_regex_agrees_with_the_glob(p in "[a-z.:/*-]{0,12}", image in "[a-z.:/-]{0,16}") {
            prop_assume!(!p.is_empty());
            let pattern = pattern(&p);
            let regex = regex_lite_match(&pattern.regex(), &image);
            prop_assert_eq!(pattern.matches(&image), regex, "{} vs {}", p, pattern.regex());
        }
    }

    /// A tiny matcher for the regexes `regex()` makes (literals, `\`-escapes, `.*`), so that
    /// the test needs no regex crate.
    fn regex_lite_match(regex: &str, text: &str) -> bool {
        let body = regex
            .strip_prefix("(?s)^")
            .unwrap()
            .strip_suffix('$')
            .unwrap();
        let mut glob = String::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => glob.push(chars.next().unwrap()),
                '.' if chars.peek() == Some(&'*') => {
                    chars.next();
                    glob.push('*');
                }
                other => glob.push(other),
            }
        }
        // Literal stars never occur in images, so the glob reading is exact.
        ImagePattern(glob).matches(text)
    }

    fn request<'a>() -> PoolRequest<'a> {
        PoolRequest {
            images: vec![
                ("spec.runner.image", "runner:1"),
                ("spec.dind.image", "docker:28.5-dind"),
            ],
            service_account_name: None,
            runtime_class_name: None,
            secret_env: vec![],
            cache_size: None,
        }
    }

    #[test]
    fn each_refusal_names_the_field() {
        let policy = AdminPolicy {
            allowed_images: vec![pattern("runner:*"), pattern("docker:*-dind")],
            restrict_pod_fields: true,
            max_cache_size: Some(CacheSizeCap::parse("100Gi").unwrap()),
        };
        assert_eq!(policy.check(&request()), Ok(()));
        let mut r = request();
        r.cache_size = Some(("100Gi", 100 << 30));
        assert_eq!(policy.check(&r), Ok(()));
        r.cache_size = Some(("200G", 200_000_000_000));
        let refused = policy.check(&r).unwrap_err();
        assert_eq!(refused.field, "spec.cache.size");
        assert!(refused.message.contains("at most 100Gi"), "{refused}");
        let mut r = request();
        r.images[1].1 = "evil/dind:latest";
        assert_eq!(policy.check(&r).unwrap_err().field, "spec.dind.image");
        let mut r = request();
        r.service_account_name = Some("admin");
        assert_eq!(
            policy.check(&r).unwrap_err().field,
            "spec.podTemplate.serviceAccountName"
        );
        let mut r = request();
        r.runtime_class_name = Some("unconfined");
        assert_eq!(
            policy.check(&r).unwrap_err().field,
            "spec.podTemplate.runtimeClassName"
        );
        let mut r = request();
        r.secret_env = vec![2];
        assert_eq!(
            policy.check(&r).unwrap_err().field,
            "spec.runner.env[2].valueFrom.secretKeyRef"
        );
        // No policy: anything goes.
        let mut r = request();
        r.service_account_name = Some("admin");
        r.images[0].1 = "anything";
        assert_eq!(AdminPolicy::default().check(&r), Ok(()));
    }

    #[test]
    fn the_cache_bound_is_a_quantity_comparison_in_cel() {
        let policy = AdminPolicy {
            max_cache_size: Some(CacheSizeCap::parse("100Gi").unwrap()),
            ..AdminPolicy::default()
        };
        assert!(!policy.is_empty());
        let rules = policy.cel_validations("runner:1", "docker:28.5-dind");
        assert_eq!(
            rules,
            [(
                "!has(object.spec.cache) || quantity(object.spec.cache.size).compareTo(quantity('100Gi')) <= 0".to_owned(),
                "spec.cache.size is more than the cluster's policy allows for each cache claim; ask for at most 100Gi".to_owned()
            )]
        );
        assert!(CacheSizeCap::parse("lots").is_err());
    }
}
