//! Analyzer configuration (TOML). Every field has a default.

use glasshouse_proto::service::Validate;
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
    /// Partitions of topics created when missing. Default: 6.
    #[serde(default = "default_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of topics created when missing. Default: 1.
    #[serde(default = "default_replication")]
    pub topic_replication: i32,
    /// Print the live view (containers and what they execute) on stdout.
    /// Default: true.
    #[serde(default = "default_view")]
    pub view: bool,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}
fn default_group() -> String {
    "glasshouse-analyzer".to_owned()
}
fn default_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    1
}
fn default_view() -> bool {
    true
}

impl Validate for Config {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.brokers.trim().is_empty() {
            return Err(("brokers", "must name at least one broker".into()));
        }
        if self.group.trim().is_empty() {
            return Err(("group", "must not be empty".into()));
        }
        if self.topic_partitions < 1 {
            return Err(("topic_partitions", format!("must be at least 1, got {}", self.topic_partitions)));
        }
        if self.topic_replication < 1 {
            return Err(("topic_replication", format!("must be at least 1, got {}", self.topic_replication)));
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
        let c: Config = parse_config("deploy/local/analyzer.toml", include_str!("../../deploy/local/analyzer.toml")).unwrap();
        assert!(c.view);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = parse_config::<Config>("a.toml", "brokers = \"x:1\"\ngroupp = \"g\"").unwrap_err().to_string();
        assert!(e.contains("groupp") && e.contains("a.toml:2:"), "{e}");
    }
}
