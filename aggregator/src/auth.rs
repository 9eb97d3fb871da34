//! Agent authentication: by client certificate (mTLS; the agent id is the
//! certificate's common name, else its first DNS name) or by per-agent bearer
//! token. With a token, the agent sends
//! `glasshouse-agent-id: ID` and `authorization: Bearer SECRET` on its stream;
//! the secret is compared in constant time with the one configured for ID.
//! An agent removed from the tokens file is refused from the next restart of
//! the aggregator on.
//!
//! A credential binds an [`Identity`]: the agent id, the host names the agent
//! may claim (the `host` of every row it sends) and its cluster. The hello
//! that follows must claim exactly those, or the stream is refused
//! (`PermissionDenied`, `refusals_total{reason="impersonation"}`): one
//! stolen credential speaks for one host, never for the fleet.
//!
//! Tokens file (TOML, kept readable by the aggregator only):
//! ```toml
//! [agents]
//! # Short form: the host name must equal the agent id (the agent's default),
//! # the cluster must be empty.
//! "host-1" = "a-long-random-secret"
//! # Long form: host name and cluster named.
//! "agent-2" = { secret = "another-long-secret", hostname = "node-2.example", cluster = "prod" }
//! ```
//!
//! With a certificate, the host name must be its common name or one of its
//! DNS names, and the cluster its first organizational unit (`OU`), empty
//! when it has none.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Metadata key naming the agent that presents the token.
pub const AGENT_ID_HEADER: &str = glasshouse_proto::metadata::AGENT_ID;
/// Shortest secret accepted in a tokens file.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("tokens file {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    agents: HashMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Secret(String),
    Bound(BoundEntry),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoundEntry {
    secret: String,
    hostname: Option<String>,
    #[serde(default)]
    cluster: String,
}

/// Who a credential speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub agent: String,
    /// Host names the agent may claim in its hello.
    pub hostnames: Vec<String>,
    /// The cluster the agent must claim ("" when none is bound).
    pub cluster: String,
}

impl Identity {
    /// Why `hello` may not be sent with this credential, if it may not.
    pub fn mismatch(&self, hello: &glasshouse_proto::v1::Hello) -> Option<String> {
        if hello.agent_id != self.agent {
            return Some(format!(
                "credential of agent {:?} used by a hello claiming agent {:?}",
                self.agent, hello.agent_id
            ));
        }
        if !self.hostnames.contains(&hello.hostname) {
            return Some(format!(
                "credential of agent {:?} binds host name {:?}, the hello claims {:?}",
                self.agent,
                self.hostnames.join(" or "),
                hello.hostname
            ));
        }
        if hello.cluster != self.cluster {
            return Some(format!(
                "credential of agent {:?} binds cluster {:?}, the hello claims {:?}",
                self.agent, self.cluster, hello.cluster
            ));
        }
        None
    }
}

struct Known {
    secret: Vec<u8>,
    hostname: String,
    cluster: String,
}

/// The agents allowed to stream, their secrets and what each may claim.
#[derive(Clone)]
pub struct Tokens {
    by_agent: HashMap<String, std::sync::Arc<Known>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Tokens").field("agents", &self.by_agent.len()).finish()
    }
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let shown = path.display().to_string();
        let invalid = |message: String| TokensError::Invalid {
            path: shown.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read: {e}")))?;
        Tokens::parse(&text).map_err(invalid)
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.message().replace('\n', " "))?;
        let mut by_agent = HashMap::new();
        for (agent, entry) in file.agents {
            if agent.is_empty() {
                return Err("an agent id is empty".into());
            }
            let (secret, hostname, cluster) = match entry {
                Entry::Secret(secret) => (secret, agent.clone(), String::new()),
                Entry::Bound(b) => (b.secret, b.hostname.unwrap_or_else(|| agent.clone()), b.cluster),
            };
            if secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "secret of agent {agent:?} is shorter than {MIN_SECRET_LEN} characters"
                ));
            }
            if hostname.is_empty() {
                return Err(format!("host name of agent {agent:?} is empty"));
            }
            let known = Known {
                secret: secret.into_bytes(),
                hostname,
                cluster,
            };
            by_agent.insert(agent, std::sync::Arc::new(known));
        }
        Ok(Tokens { by_agent })
    }

    pub fn len(&self) -> usize {
        self.by_agent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_agent.is_empty()
    }

    /// The authenticated identity, or `Unauthenticated` saying what is missing.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Identity, Status> {
        let agent = metadata
            .get(AGENT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated(format!("missing {AGENT_ID_HEADER} header")))?;
        let secret = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let known = self.by_agent.get(agent);
        // Compare even for unknown agents so timing does not tell which exist.
        let expected: &[u8] = known.map_or(&[0u8; MIN_SECRET_LEN][..], |k| k.secret.as_slice());
        if constant_time_eq(expected, secret.as_bytes())
            && let Some(k) = known
        {
            Ok(Identity {
                agent: agent.to_owned(),
                hostnames: vec![k.hostname.clone()],
                cluster: k.cluster.clone(),
            })
        } else {
            Err(Status::unauthenticated(format!(
                "unknown agent or wrong token for agent {agent:?}"
            )))
        }
    }
}

/// The identity a client certificate names: the agent id is the subject CN,
/// else the first DNS SAN; the host names are the CN and every DNS SAN; the
/// cluster is the first OU.
pub fn identity_of_certificate(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let dns: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let agent = cn.clone().or_else(|| dns.first().cloned())?;
    let cluster = cert
        .subject()
        .iter_organizational_unit()
        .next()
        .and_then(|ou| ou.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut hostnames: Vec<String> = cn.into_iter().collect();
    for d in dns {
        if !hostnames.contains(&d) {
            hostnames.push(d);
        }
    }
    Some(Identity {
        agent,
        hostnames,
        cluster,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn meta(agent: Option<&str>, auth: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(a) = agent {
            m.insert(AGENT_ID_HEADER, MetadataValue::try_from(a).unwrap());
        }
        if let Some(a) = auth {
            m.insert("authorization", MetadataValue::try_from(a).unwrap());
        }
        m
    }

    #[test]
    fn only_the_right_secret_for_the_right_agent_passes() {
        let t = Tokens::parse("[agents]\nhost-1 = \"0123456789abcdef-1\"\nhost-2 = \"0123456789abcdef-2\"\n").unwrap();
        assert_eq!(
            t.authenticate(&meta(Some("host-1"), Some("Bearer 0123456789abcdef-1")))
                .unwrap()
                .agent,
            "host-1"
        );
        let refused = [
            meta(Some("host-1"), Some("Bearer 0123456789abcdef-2")),
            meta(Some("host-3"), Some("Bearer 0123456789abcdef-1")),
            meta(Some("host-1"), Some("0123456789abcdef-1")),
            meta(Some("host-1"), Some("Bearer 0123456789abcdef-10")),
            meta(Some("host-1"), None),
            meta(None, Some("Bearer 0123456789abcdef-1")),
        ];
        for m in refused {
            assert_eq!(t.authenticate(&m).unwrap_err().code(), tonic::Code::Unauthenticated);
        }
    }

    #[test]
    fn weak_or_malformed_files_are_refused() {
        assert!(
            Tokens::parse("[agents]\nh = \"short\"")
                .unwrap_err()
                .contains("shorter than 16")
        );
        assert!(Tokens::parse("[agent]\nh = \"0123456789abcdef\"").is_err());
        assert!(format!("{:?}", Tokens::parse("[agents]\nh = \"0123456789abcdef\"").unwrap()).contains("agents: 1"));
        assert!(Tokens::parse("[agents]\nh = { secret = \"0123456789abcdef\", host = \"x\" }").is_err());
        assert!(
            Tokens::parse("[agents]\nh = { secret = \"0123456789abcdef\", hostname = \"\" }")
                .unwrap_err()
                .contains("host name of agent \"h\" is empty")
        );
    }

    fn hello(agent: &str, host: &str, cluster: &str) -> glasshouse_proto::v1::Hello {
        glasshouse_proto::v1::Hello {
            agent_id: agent.into(),
            hostname: host.into(),
            cluster: cluster.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_credential_binds_agent_host_and_cluster() {
        let t = Tokens::parse(
            "[agents]\nhost-1 = \"0123456789abcdef-1\"\n\
             a2 = { secret = \"0123456789abcdef-2\", hostname = \"node-2\", cluster = \"prod\" }\n",
        )
        .unwrap();
        let one = t
            .authenticate(&meta(Some("host-1"), Some("Bearer 0123456789abcdef-1")))
            .unwrap();
        assert_eq!(one.mismatch(&hello("host-1", "host-1", "")), None);
        assert!(
            one.mismatch(&hello("host-1", "host-9", ""))
                .unwrap()
                .contains("binds host name \"host-1\"")
        );
        assert!(
            one.mismatch(&hello("host-1", "host-1", "prod"))
                .unwrap()
                .contains("binds cluster \"\"")
        );
        assert!(
            one.mismatch(&hello("a2", "host-1", ""))
                .unwrap()
                .contains("claiming agent \"a2\"")
        );
        let two = t
            .authenticate(&meta(Some("a2"), Some("Bearer 0123456789abcdef-2")))
            .unwrap();
        assert_eq!(two.mismatch(&hello("a2", "node-2", "prod")), None);
        assert!(two.mismatch(&hello("a2", "a2", "prod")).is_some());
        assert!(two.mismatch(&hello("a2", "node-2", "")).is_some());
    }
}
