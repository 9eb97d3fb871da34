//! Agent authentication: by client certificate (mTLS; the agent id is the
//! certificate's common name, else its first DNS name) or by per-agent bearer
//! token. With a token, the agent sends
//! `glasshouse-agent-id: ID` and `authorization: Bearer SECRET` on its stream;
//! the secret is compared in constant time with the one configured for ID, and
//! the hello that follows must name the same agent. An agent removed from the
//! tokens file is refused from the next restart of the aggregator on.
//!
//! Tokens file (TOML, kept readable by the aggregator only):
//! ```toml
//! [agents]
//! "host-1" = "a-long-random-secret"
//! ```

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
    agents: HashMap<String, String>,
}

/// The agents allowed to stream, and their secrets.
#[derive(Clone)]
pub struct Tokens {
    by_agent: HashMap<String, Vec<u8>>,
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
        for (agent, secret) in file.agents {
            if agent.is_empty() {
                return Err("an agent id is empty".into());
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "secret of agent {agent:?} is shorter than {MIN_SECRET_LEN} characters"
                ));
            }
            by_agent.insert(agent, secret.into_bytes());
        }
        Ok(Tokens { by_agent })
    }

    pub fn len(&self) -> usize {
        self.by_agent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_agent.is_empty()
    }

    /// The authenticated agent id, or `Unauthenticated` saying what is missing.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<String, Status> {
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
        let expected: &[u8] = known.map_or(&[0u8; MIN_SECRET_LEN][..], Vec::as_slice);
        if constant_time_eq(expected, secret.as_bytes()) && known.is_some() {
            Ok(agent.to_owned())
        } else {
            Err(Status::unauthenticated(format!(
                "unknown agent or wrong token for agent {agent:?}"
            )))
        }
    }
}

/// The agent id a client certificate names: subject CN, else first DNS SAN.
pub fn agent_of_certificate(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Some(cn) = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
        _ => None,
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
                .unwrap(),
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
    }
}
