//! Analyzer configuration (TOML). Every field has a default.

use glasshouse_runtime::service::Validate;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::baseline::Rules;
use crate::engine::Settings;
use crate::features::{Cidr, Phases};

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
    pub topics: glasshouse_runtime::kafka::TopicLayout,
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
    /// analyzer move to the others. Default: 10000. (With tansu 0.6, static
    /// members with a 3000 ms session rebalanced in a loop; 10000 is stable.)
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u32,
    /// Extra librdkafka properties (e.g. `security.protocol`,
    /// `sasl.mechanism`) of the consumer and producer, applied last.
    /// Default: none.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// Address of the HTTP endpoint with Prometheus `/metrics` and the live
    /// container scores as JSON (`/containers`, what `glasshouse containers`
    /// shows). Default: none.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token `the endpoint (`/metrics`, `/containers`)` requires
    /// (`Authorization: Bearer TOKEN`); others get 401. Default: none (open:
    /// keep `metrics_listen` on an address only trusted scrapers reach).
    #[serde(default)]
    pub metrics_token_file: Option<std::path::PathBuf>,
    /// File holding the control key (at least 32 bytes; e.g.
    /// `head -c 32 /dev/urandom | base64`), the same on every analyzer and
    /// for the operators' `glasshouse` CLI (`--control-key-file`): operator
    /// commands must be signed with it, and the analyzer signs the baseline
    /// snapshots and alerts it writes and refuses snapshots not signed with
    /// it. Default: none: operator commands are refused, and snapshots and
    /// alerts are neither signed nor checked.
    #[serde(default)]
    pub control_key_file: Option<std::path::PathBuf>,
    /// Alert outputs besides Kafka (`[[outputs.syslog]]`, `[outputs.webhook]`).
    /// Default: none.
    #[serde(default)]
    pub outputs: crate::outputs::OutputsConfig,
    /// Baselines, scoring and alerts (`[analysis]`).
    #[serde(default)]
    pub analysis: Analysis,
    /// Vulnerability matching and image trust (`[vulns]`, see
    /// `crate::vulns::service::Config`).
    #[serde(default)]
    pub vulns: crate::vulns::service::Config,
    /// The telemetry lake's writer (`[lake]`, see `glasshouse_lake::config`).
    /// Default: off.
    #[serde(default)]
    pub lake: glasshouse_lake::config::LakeConfig,
    /// Refused: SQL is served by the query service (`glasshouse-query`,
    /// whose config takes this table as it was), so that no query
    /// competes with detection. Kept as a field to say so instead of
    /// "unknown field".
    #[serde(default)]
    pub sql: Option<serde::de::IgnoredAny>,
}

/// The `[analysis]` table: how baselines learn and how events are scored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Analysis {
    /// Score events and publish alerts to `glasshouse.alerts`. Default: true.
    pub enabled: bool,
    /// How long a container is in its start-up phase, counted from the
    /// first event of it the analyzer saw. Default: 60.
    pub startup_secs: u64,
    /// A baseline learns at least this long before it can become stable.
    /// Default: 3600.
    pub min_learning_secs: u64,
    /// … and from at least this many events. Default: 1000.
    pub min_events: u64,
    /// … and only when new features per event over the last novelty window
    /// stay at or under this. Default: 0.01.
    pub max_novelty: f64,
    /// Length of a novelty window. Default: 300.
    pub novelty_window_secs: u64,
    /// Event score (0–1) at or above which an event is a finding. Default: 0.7.
    pub alert_threshold: f64,
    /// Container score (sum of event scores over `window_secs`) at or above
    /// which the container is a finding. Default: 3.0.
    pub container_threshold: f64,
    /// Alert window: one alert per workload and finding per window, with a
    /// count; also the container score window. Default: 300.
    pub window_secs: u64,
    /// A feature learned while the workload ran on several hosts becomes
    /// normal only once this many of them (or all, when fewer ran it)
    /// showed it, so one compromised host cannot teach a fleet workload
    /// an attack; until then a stable baseline reports it as
    /// `baseline.unconfirmed`. Locking a baseline approves all it holds.
    /// 1 turns the rule off. Default: 2.
    pub min_hosts: u32,
    /// Fleet scoring: a feature shown by one replica only is suspicious
    /// when the workload has at least this many active replicas. 0 or 1
    /// turns fleet scoring off. Default: 3.
    pub fleet_min_replicas: usize,
    /// … counting only peers that were running this long before the
    /// feature first appeared. Default: 300.
    pub fleet_peer_age_secs: u64,
    /// A replica with an event within this is active. Default: 600.
    pub active_secs: u64,
    /// Networks of the cluster (`ADDR/BITS`): peers in them are of class
    /// `cluster`. Default: none.
    pub cluster_cidrs: Vec<Cidr>,
    /// Outbound ports of mining pools (Stratum). Default: 3333, 3334, 4444,
    /// 5555, 7777, 9999, 14433, 14444, 45560, 45700.
    pub mining_ports: Vec<u16>,
    /// CPU (in cores) that counts as a mining sample. Default: 0.9.
    pub mining_cpu_cores: f64,
    /// Consecutive resource samples at or above `mining_cpu_cores` that make
    /// a finding. Default: 6 (a minute at the agent's default interval).
    pub mining_cpu_samples: u32,
    /// How often baselines are written to `glasshouse.baselines` and the
    /// offsets they cover committed, ms. Default: 5000.
    pub checkpoint_ms: u64,
    /// Largest alert (OCSF JSON) sent to `glasshouse.alerts` and the other
    /// outputs, bytes: a larger one has its long strings (argv, paths,
    /// names: container-controlled) cut with a visible `…[truncated N bytes]`
    /// so it still fits under the producer's `message.max.bytes` (librdkafka's
    /// default: 1000000). Default: 262144 (256 KiB).
    pub max_alert_bytes: usize,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            enabled: true,
            startup_secs: 60,
            min_learning_secs: 3600,
            min_events: 1000,
            max_novelty: 0.01,
            novelty_window_secs: 300,
            alert_threshold: 0.7,
            container_threshold: 3.0,
            window_secs: 300,
            fleet_min_replicas: 3,
            min_hosts: 2,
            fleet_peer_age_secs: 300,
            active_secs: 600,
            cluster_cidrs: Vec::new(),
            mining_ports: vec![3333, 3334, 4444, 5555, 7777, 9999, 14433, 14444, 45560, 45700],
            mining_cpu_cores: 0.9,
            mining_cpu_samples: 6,
            checkpoint_ms: 5000,
            max_alert_bytes: 256 * 1024,
        }
    }
}

impl Analysis {
    /// The engine's settings.
    pub fn settings(&self) -> Settings {
        let s = |secs: u64| (secs as i64).saturating_mul(1_000_000_000);
        Settings {
            phases: Phases {
                startup_ns: s(self.startup_secs),
            },
            rules: Rules {
                min_learning_ns: s(self.min_learning_secs),
                min_events: self.min_events,
                max_novelty: self.max_novelty,
                novelty_window_ns: s(self.novelty_window_secs),
            },
            cluster: self.cluster_cidrs.clone(),
            alert_threshold: self.alert_threshold,
            container_threshold: self.container_threshold,
            window_ns: s(self.window_secs),
            fleet_min_replicas: self.fleet_min_replicas,
            min_hosts: self.min_hosts.max(1),
            fleet_peer_age_ns: s(self.fleet_peer_age_secs),
            active_ns: s(self.active_secs),
            mining_ports: self.mining_ports.clone(),
            mining_cpu_cores: self.mining_cpu_cores,
            mining_cpu_samples: self.mining_cpu_samples,
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let unit = |name: &'static str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err((name, format!("must be between 0 and 1, got {v}")))
            }
        };
        unit("analysis.alert_threshold", self.alert_threshold)?;
        unit("analysis.max_novelty", self.max_novelty)?;
        if self.container_threshold.is_nan() || self.container_threshold <= 0.0 {
            return Err((
                "analysis.container_threshold",
                format!("must be above 0, got {}", self.container_threshold),
            ));
        }
        for (name, v) in [
            ("analysis.novelty_window_secs", self.novelty_window_secs),
            ("analysis.window_secs", self.window_secs),
            ("analysis.active_secs", self.active_secs),
            ("analysis.mining_cpu_samples", u64::from(self.mining_cpu_samples)),
        ] {
            if v == 0 {
                return Err((name, "must be at least 1".into()));
            }
        }
        if !(100..=600_000).contains(&self.checkpoint_ms) {
            return Err((
                "analysis.checkpoint_ms",
                format!("must be between 100 and 600000, got {}", self.checkpoint_ms),
            ));
        }
        if !(4096..=64 << 20).contains(&self.max_alert_bytes) {
            return Err((
                "analysis.max_alert_bytes",
                format!("must be between 4096 and 67108864, got {}", self.max_alert_bytes),
            ));
        }
        if self.mining_cpu_cores.is_nan() || self.mining_cpu_cores <= 0.0 {
            return Err((
                "analysis.mining_cpu_cores",
                format!("must be above 0, got {}", self.mining_cpu_cores),
            ));
        }
        Ok(())
    }
}

/// Room left in a Kafka message beside an alert of `max_alert_bytes`: the
/// workload key (at most a few KiB), headers, record overhead.
const ALERT_HEADROOM: usize = 16 * 1024;

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
        self.analysis.validate()?;
        self.outputs.validate()?;
        self.vulns.validate()?;
        self.lake.validate().map_err(|e| ("lake", e))?;
        if self.sql.is_some() {
            return Err((
                "sql",
                "the analyzer no longer serves SQL: move `[sql]` to the config of the query service \
                 `glasshouse-query`, with the same `[lake]` (docs/lake.md)"
                    .into(),
            ));
        }
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
        // An alert must fit in a Kafka message with its key and headers.
        let message_max: usize = self
            .kafka
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        if self.analysis.max_alert_bytes + ALERT_HEADROOM > message_max {
            return Err((
                "analysis.max_alert_bytes",
                format!(
                    "{} plus {ALERT_HEADROOM} bytes for key and headers is over the producer's message.max.bytes ({message_max})",
                    self.analysis.max_alert_bytes
                ),
            ));
        }
        // `/containers` names every container, image and host.
        glasshouse_runtime::endpoint::require_token_off_loopback(
            self.metrics_listen,
            self.metrics_token_file.as_deref(),
        )?;
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
    use glasshouse_runtime::service::parse_config;

    #[test]
    fn shipped_local_config_parses() {
        let c: Config = parse_config(
            "deploy/local/analyzer.toml",
            include_str!("../../deploy/local/analyzer.toml"),
        )
        .unwrap();
        assert!(c.view);
        assert!(c.lake.enabled && c.sql.is_none());
    }

    #[test]
    fn lake_and_sql_are_checked() {
        let c: Config = parse_config("a.toml", "").unwrap();
        assert!(!c.lake.enabled, "off by default");
        let e = parse_config::<Config>(
            "a.toml",
            "[lake]\nenabled = true\n[sql]\npg_listen = \"127.0.0.1:5433\"\npassword_file = \"p\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sql") && e.contains("glasshouse-query"), "{e}");
        let e = parse_config::<Config>("a.toml", "[lake]\nenabled = true\nlocation = \"gs://b/x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lake") && e.contains("s3://"), "{e}");
        let e = parse_config::<Config>("a.toml", "[lake]\nflush_rows = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flush_rows"), "{e}");
    }

    #[test]
    fn analysis_settings_are_checked() {
        let c: Config = parse_config(
            "a.toml",
            "[analysis]\nmin_learning_secs = 5\ncluster_cidrs = [\"10.88.0.0/16\"]",
        )
        .unwrap();
        assert_eq!(c.analysis.min_learning_secs, 5);
        assert_eq!(c.analysis.settings().cluster.len(), 1);
        let e = parse_config::<Config>("a.toml", "[analysis]\nalert_threshold = 2.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("analysis.alert_threshold"), "{e}");
        let e = parse_config::<Config>("a.toml", "[analysis]\ncluster_cidrs = [\"10.0.0.0/40\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix length"), "{e}");
    }

    #[test]
    fn outputs_are_checked() {
        let c: Config = parse_config(
            "a.toml",
            "[[outputs.syslog]]\naddress = \"127.0.0.1:514\"\n[[outputs.syslog]]\naddress = \"127.0.0.1:601\"\nprotocol = \"tcp\"\n\
             [outputs.webhook]\nurl = \"http://siem:8088/services/collector/event\"",
        )
        .unwrap();
        assert_eq!(c.outputs.syslog.len(), 2);
        let e = parse_config::<Config>(
            "a.toml",
            "[[outputs.syslog]]\naddress = \"127.0.0.1:514\"\nfacility = 99",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("outputs.syslog.facility"), "{e}");
        let e = parse_config::<Config>("a.toml", "[outputs.webhook]\nurl = \"https://siem/x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("https is not supported"), "{e}");
    }

    #[test]
    fn open_metrics_listeners_need_a_token() {
        for ok in [
            "metrics_listen = \"127.0.0.1:9466\"",
            "metrics_listen = \"[::1]:9466\"",
            "metrics_listen = \"0.0.0.0:9466\"\nmetrics_token_file = \"t\"",
        ] {
            parse_config::<Config>("a.toml", ok).unwrap();
        }
        for open in ["0.0.0.0:9466", "[::]:9466", "10.1.2.3:9466"] {
            let e = parse_config::<Config>("a.toml", &format!("metrics_listen = \"{open}\""))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("metrics_listen") && e.contains("`metrics_token_file`"),
                "{e}"
            );
        }
    }

    #[test]
    fn alerts_fit_in_a_kafka_message() {
        let c: Config = parse_config("a.toml", "").unwrap();
        assert_eq!(c.analysis.max_alert_bytes, 256 * 1024);
        let e = parse_config::<Config>("a.toml", "[analysis]\nmax_alert_bytes = 2000000")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_alert_bytes") && e.contains("message.max.bytes (1000000)"),
            "{e}"
        );
        parse_config::<Config>(
            "a.toml",
            "[analysis]\nmax_alert_bytes = 2000000\n[kafka]\n\"message.max.bytes\" = \"4000000\"",
        )
        .unwrap();
    }

    #[test]
    fn unknown_field_is_named() {
        let e = parse_config::<Config>("a.toml", "brokers = \"x:1\"\ngroupp = \"g\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("groupp") && e.contains("a.toml:2:"), "{e}");
    }
}
