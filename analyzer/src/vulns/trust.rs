//! Image trust: a policy of trusted registries, repositories and image
//! digests (`[vulns.image_trust]`). A running container whose image matches
//! none of them raises a finding (OCSF Compliance Finding, control
//! `image-trust`). The digest is the one the agent read from the runtime
//! for the image the container actually runs, not the tag it was started
//! with: a trusted digest pins content, a trusted repository or registry
//! trusts whatever they serve.

use serde::Deserialize;

/// The `[vulns.image_trust]` table. With all three lists empty there is no
/// policy and no finding.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Registries whose every image is trusted (`docker.io`, `quay.io`,
    /// `registry.example.com:5000`, `localhost`). Default: none.
    pub trusted_registries: Vec<String>,
    /// Repositories trusted whatever the tag (`docker.io/library/nginx`,
    /// `localhost/glasshouse-test`; Docker Hub short names are normalised:
    /// `nginx` is `docker.io/library/nginx`). Default: none.
    pub trusted_repositories: Vec<String>,
    /// Image manifest digests trusted wherever they come from
    /// (`sha256:…`). Default: none.
    pub trusted_digests: Vec<String>,
}

/// Why an image is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untrusted {
    pub reason: String,
}

/// `nginx:1.25` → (`docker.io`, `docker.io/library/nginx`);
/// `localhost/app:1` → (`localhost`, `localhost/app`);
/// `reg:5000/a/b@sha256:…` → (`reg:5000`, `reg:5000/a/b`).
pub fn registry_and_repository(image: &str) -> (String, String) {
    let without_digest = image.split_once('@').map_or(image, |(r, _)| r);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let repo = match without_digest[last_slash..].rfind(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    };
    match repo.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (first.to_owned(), repo.to_owned())
        }
        Some(_) => ("docker.io".to_owned(), format!("docker.io/{repo}")),
        None => ("docker.io".to_owned(), format!("docker.io/library/{repo}")),
    }
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.trusted_registries.is_empty() && self.trusted_repositories.is_empty() && self.trusted_digests.is_empty()
    }

    /// Checks the policy's entries (at startup).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for d in &self.trusted_digests {
            let hex = d.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err((
                    "vulns.image_trust.trusted_digests",
                    format!("{d:?} is not sha256: and 64 hex digits"),
                ));
            }
        }
        for r in self.trusted_registries.iter().chain(&self.trusted_repositories) {
            if r.is_empty() || r.contains(char::is_whitespace) || r.contains('@') {
                return Err(("vulns.image_trust", format!("{r:?} is not a registry or repository")));
            }
        }
        Ok(())
    }

    /// `None`: trusted (or no policy); else why not.
    pub fn check(&self, image: Option<&str>, digest: Option<&str>) -> Option<Untrusted> {
        if self.is_empty() {
            return None;
        }
        if let Some(d) = digest
            && self.trusted_digests.iter().any(|t| t == d)
        {
            return None;
        }
        let Some(image) = image else {
            return Some(Untrusted {
                reason: "the runtime names no image for the container".into(),
            });
        };
        let (registry, repository) = registry_and_repository(image);
        if self.trusted_registries.contains(&registry) {
            return None;
        }
        let trusted_repo = self
            .trusted_repositories
            .iter()
            .any(|r| registry_and_repository(r).1 == repository);
        if trusted_repo {
            return None;
        }
        Some(Untrusted {
            reason: format!(
                "registry {registry} and repository {repository} are not trusted, and digest {} is not a trusted digest",
                digest.unwrap_or("(unknown)")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_normalise() {
        for (image, reg, repo) in [
            ("nginx", "docker.io", "docker.io/library/nginx"),
            ("nginx:1.25", "docker.io", "docker.io/library/nginx"),
            ("team/app:2", "docker.io", "docker.io/team/app"),
            (
                "localhost/glasshouse-test:latest",
                "localhost",
                "localhost/glasshouse-test",
            ),
            (
                "reg.example.com:5000/a/b@sha256:00",
                "reg.example.com:5000",
                "reg.example.com:5000/a/b",
            ),
            ("quay.io/x/y", "quay.io", "quay.io/x/y"),
        ] {
            assert_eq!(
                registry_and_repository(image),
                (reg.to_owned(), repo.to_owned()),
                "{image}"
            );
        }
    }

    #[test]
    fn policy_decides_by_digest_repository_or_registry() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let p = Policy {
            trusted_registries: vec!["quay.io".into()],
            trusted_repositories: vec!["nginx".into(), "localhost/glasshouse-test".into()],
            trusted_digests: vec![digest.clone()],
        };
        p.validate().unwrap();
        assert_eq!(p.check(Some("docker.io/library/nginx:1.25"), None), None);
        assert_eq!(p.check(Some("nginx@sha256:00"), None), None);
        assert_eq!(p.check(Some("quay.io/any/thing:1"), None), None);
        assert_eq!(p.check(Some("localhost/glasshouse-test:latest"), None), None);
        assert_eq!(p.check(Some("evil.example/x:1"), Some(&digest)), None);
        let u = p
            .check(Some("localhost/glasshouse-untrusted:1"), Some("sha256:bb"))
            .unwrap();
        assert_eq!(
            u.reason,
            "registry localhost and repository localhost/glasshouse-untrusted are not trusted, and digest sha256:bb is not a trusted digest"
        );
        assert!(p.check(None, None).unwrap().reason.contains("names no image"));
        // No policy, no finding.
        assert_eq!(Policy::default().check(Some("evil.example/x"), None), None);
    }

    #[test]
    fn bad_policy_entries_are_refused() {
        let p = Policy {
            trusted_digests: vec!["sha256:xyz".into()],
            ..Policy::default()
        };
        assert!(p.validate().unwrap_err().1.contains("64 hex digits"));
        let p = Policy {
            trusted_repositories: vec!["a b".into()],
            ..Policy::default()
        };
        assert!(p.validate().is_err());
    }
}
