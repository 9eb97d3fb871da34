//! Analyzer configuration (TOML). Every field has a default.

use glasshouse_proto::service::Validate;
use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka bootstrap servers, comma separated. Default: the local broker.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Consumer group; analyzer instances in one group share the partitions,
    /// and so the workloads. Default: `glasshouse-analyzer`.
    #[serde(default = "default_group")]
    pub group: String,
    /// How topics are created when missing (`[topics]`: `partitions`, `replication`).
    #[serde(default)]
    pub topics: glasshouse_proto::kafka::TopicLayout,
    /// Print the live view (containers, what they execute, their TCP connections,
    /// the sensitive files they write) on stdout.
    /// Default: true.
    #[serde(default = "default_view")]
    pub view: bool,
    /// Static group membership id (KIP-345): a restarted analyzer with the same
    /// id takes its partitions back once its previous incarnation's session
    /// expires (tansu 0.6 held a dead dynamic member's partitions for minutes).
    /// Must differ between analyzers of one group. Default: `analyzer-<host name>`.
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// Consumer group session timeout, ms: how soon the partitions of a dead
    /// analyzer move to the others. Default: 10000.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u32,
    /// Extra librdkafka consumer properties (e.g. `security.protocol`,
    /// `sasl.mechanism`), applied last. Default: none.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}
fn default_group() -> String {
    "glasshouse-analyzer".to_owned()
}
fn default_view() -> bool {
    true
}
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("analyzer-{}", host.trim())
}
fn default_session_timeout_ms() -> u32 {
    10_000
}

impl Validate for Config {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        self.topics.validate()?;
        if self.brokers.trim().is_empty() {
            return Err(("brokers", "must name at least one broker".into()));
        }
        if self.instance_id.trim().is_empty() {
            return Err(("instance_id", "must not be empty".into()));
        }
        if self.group.trim().is_empty() {
            return Err(("group", "must not be empty".into()));
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            return Err((
                "session_timeout_ms",
                format!("must be between 1000 and 300000, got {}", self.session_timeout_ms),
            ));
        }
        if let Some(k) = self
            .kafka
            .keys()
            .find(|k| matches!(k.as_str(), "group.id" | "group.instance.id" | "bootstrap.servers"))
        {
            return Err((
                "kafka",
                format!("`{k}` is set by `group`, `instance_id` or `brokers`, not here"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glasshouse_proto::service::parse_config;

    #[test]
    fn shipped_local_config_parses() {
        let c: Config = parse_config(
            "deploy/local/analyzer.toml",
            include_str!("../../deploy/local/analyzer.toml"),
        )
        .unwrap();
        assert!(c.view);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = parse_config::<Config>("a.toml", "brokers = \"x:1\"\ngroupp = \"g\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("groupp") && e.contains("a.toml:2:"), "{e}");
    }
}
