//! Aggregator configuration (TOML). Every field has a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use glasshouse_proto::limits::{MAX_BUFFERED_ROW_BYTES, MIN_BATCH_BYTES, MIN_STRING_BYTES};
use glasshouse_runtime::service::Validate;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC ingest listens on. Default: `127.0.0.1:50051`
    /// (loopback: set the address agents reach, with `tls` or `tokens_file`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Kafka bootstrap servers, comma separated. Default: the local broker.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// How topics are created when missing (`[topics]`: `partitions`, `replication`).
    #[serde(default)]
    pub topics: glasshouse_runtime::kafka::TopicLayout,
    /// Kafka-level compression of the producer: `none`, `gzip`, `snappy`,
    /// `lz4` or `zstd` (Arrow IPC bodies are zstd-compressed either way; the
    /// ingest bench showed no clear CPU difference between them). Default: `zstd`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Name in the `glasshouse-producer-id` header and logs. Default: `aggregator/<host>`.
    #[serde(default = "default_producer_id")]
    pub producer_id: String,
    /// Rows buffered before a flush to Kafka. Default: 65536.
    #[serde(default = "default_flush_rows")]
    pub flush_max_rows: usize,
    /// Approximate bytes buffered before a flush. Default: 8 MiB.
    #[serde(default = "default_flush_bytes")]
    pub flush_max_bytes: usize,
    /// Oldest buffered row's age that forces a flush, ms. Default: 50.
    #[serde(default = "default_flush_age_ms")]
    pub flush_max_age_ms: u64,
    /// Largest batch accepted from an agent, in events. Default: 16384.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: u32,
    /// Largest string dictionary an agent stream may build. Default: 1048576.
    #[serde(default = "default_max_strings")]
    pub max_strings: u32,
    /// Largest gRPC message accepted, bytes. Default: 16 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Most bytes the rows of one batch may take once built: every string
    /// reference counts the string's length (a batch referencing one long
    /// string many times expands), plus each row's fixed columns. A batch
    /// over it is refused before anything is built (`RESOURCE_EXHAUSTED`,
    /// `refusals_total{reason="over_budget"}`). At least
    /// `glasshouse_proto::limits::MIN_BATCH_BYTES` (24 MiB, what a correct
    /// agent's largest batch can take), and with `flush_max_bytes` at most
    /// `MAX_BUFFERED_ROW_BYTES` (128 MiB), so every acknowledged batch is one
    /// the consumers decode. Default: 64 MiB.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Most bytes of strings one agent stream's dictionary may hold; a batch
    /// whose definitions would pass it is refused (`RESOURCE_EXHAUSTED`,
    /// `reason="over_budget"`). At least
    /// `glasshouse_proto::limits::MIN_STRING_BYTES` (64 MiB, twice where
    /// agents reset their dictionary). Default: 64 MiB.
    #[serde(default = "default_max_string_bytes")]
    pub max_string_bytes: usize,
    /// Oldest event time accepted, before the batch's receipt, ms: a batch
    /// with an event older than this is refused (`INVALID_ARGUMENT`,
    /// `refusals_total{reason="bad_timestamp"}`). Agents replay spooled
    /// batches after an outage: a host cut off for longer loses the older
    /// ones. Default: 604800000 (7 days).
    #[serde(default = "default_max_event_age_ms")]
    pub max_event_age_ms: u64,
    /// Latest event time accepted, after the batch's receipt, ms (the agent
    /// host's clock ahead of the aggregator's). Default: 600000 (10 min).
    #[serde(default = "default_max_event_ahead_ms")]
    pub max_event_ahead_ms: u64,
    /// Widest spread of event times within one batch, ms, so that one batch
    /// touches at most two hourly lake partitions; a correct agent's batch
    /// spans under a second (its syscall profiles cover one sample
    /// interval). Default: 3600000 (1 h).
    #[serde(default = "default_max_batch_span_ms")]
    pub max_batch_span_ms: u64,
    /// Agent connections open at once; one more is closed at accept and
    /// counted (`glasshouse_connections_refused_total{reason="limit"}`).
    /// Keep it under the process's descriptor limit (`LimitNOFILE`).
    /// Default: 4096.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing (no TLS or HTTP/2 handshake, no
    /// frame, no answer to the server's keep-alive pings) or does not take
    /// what is sent for this long is closed and counted
    /// (`reason="timeout"`). The server pings idle streams every third of
    /// it. Default: 60000 ms.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Address of the Prometheus `/metrics` endpoint. Default: none (off).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// File holding the bearer token `/metrics` requires
    /// (`Authorization: Bearer TOKEN`); others get 401. Required when
    /// `metrics_listen` is not a loopback address (the process refuses to
    /// start without it). Default: none (open, on loopback only).
    #[serde(default)]
    pub metrics_token_file: Option<std::path::PathBuf>,
    /// Per-agent bearer tokens (see `auth`); when unset, any agent may stream
    /// (a warning says so at start). Default: unset.
    #[serde(default)]
    pub tokens_file: Option<std::path::PathBuf>,
    /// Agent ids refused whatever credential they present (a certificate
    /// that cannot be withdrawn, a leaked token). Default: none.
    #[serde(default)]
    pub revoked_agents: Vec<String>,
    /// TLS for the ingest port; with `client_ca_file`, agents authenticate
    /// with client certificates (mTLS). Default: none (plain TCP).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How long shutdown waits for Kafka to acknowledge what is buffered, ms.
    /// Default: 10000.
    #[serde(default = "default_shutdown_flush_ms")]
    pub shutdown_flush_ms: u64,
    /// Extra librdkafka properties of the producer and the topic admin
    /// client (e.g. `security.protocol`, `sasl.mechanism`), applied last, so
    /// they override the aggregator's own (`enable.idempotence`, `acks`,
    /// `linger.ms`, …). Default: none.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
}

/// The `[tls]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of this aggregator.
    pub cert_file: std::path::PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: std::path::PathBuf,
    /// PEM CA that signs agent certificates; enables mTLS. Default: none.
    #[serde(default)]
    pub client_ca_file: Option<std::path::PathBuf>,
    /// With `client_ca_file`: refuse connections without a client
    /// certificate (else a bearer token may be used instead). Default: true.
    #[serde(default = "default_true")]
    pub require_client_cert: bool,
}

fn default_true() -> bool {
    true
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}
fn default_compression() -> String {
    "zstd".to_owned()
}
fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}
fn default_producer_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("aggregator/{}", host.trim())
}
fn default_flush_rows() -> usize {
    65_536
}
fn default_flush_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_flush_age_ms() -> u64 {
    50
}
fn default_max_batch_events() -> u32 {
    16_384
}
fn default_max_strings() -> u32 {
    1_048_576
}
fn default_max_message_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_batch_bytes() -> usize {
    64 << 20
}
fn default_max_string_bytes() -> usize {
    64 << 20
}
fn default_max_event_age_ms() -> u64 {
    7 * 24 * 3_600_000
}
fn default_max_event_ahead_ms() -> u64 {
    600_000
}
fn default_max_batch_span_ms() -> u64 {
    3_600_000
}
fn default_max_connections() -> usize {
    4096
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_shutdown_flush_ms() -> u64 {
    10_000
}

impl Config {
    pub fn flush_max_age(&self) -> Duration {
        Duration::from_millis(self.flush_max_age_ms)
    }
    pub fn shutdown_flush(&self) -> Duration {
        Duration::from_millis(self.shutdown_flush_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// The plausibility window of event times, in ns.
    pub fn time_window(&self) -> crate::decode::TimeWindow {
        let ns = |ms: u64| i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        crate::decode::TimeWindow {
            max_age_ns: ns(self.max_event_age_ms),
            max_ahead_ns: ns(self.max_event_ahead_ms),
            max_span_ns: ns(self.max_batch_span_ms),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        glasshouse_runtime::endpoint::require_token_off_loopback(
            self.metrics_listen,
            self.metrics_token_file.as_deref(),
        )?;
        self.topics.validate()?;
        if self.brokers.trim().is_empty() {
            return Err(("brokers", "must name at least one broker".into()));
        }
        if !matches!(self.compression.as_str(), "none" | "gzip" | "snappy" | "lz4" | "zstd") {
            return Err((
                "compression",
                format!("{:?} is not one of none, gzip, snappy, lz4, zstd", self.compression),
            ));
        }
        if self.flush_max_bytes < 1024 {
            return Err(("flush_max_bytes", "must be at least 1024".into()));
        }
        if self.flush_max_rows == 0 {
            return Err(("flush_max_rows", "must be at least 1".into()));
        }
        if self.max_batch_events == 0 {
            return Err(("max_batch_events", "must be at least 1".into()));
        }
        if self.max_message_bytes < 64 * 1024 {
            return Err(("max_message_bytes", "must be at least 65536".into()));
        }
        if self.max_batch_bytes < MIN_BATCH_BYTES {
            return Err((
                "max_batch_bytes",
                format!(
                    "must be at least {MIN_BATCH_BYTES} (what a correct agent's largest batch can take), got {}",
                    self.max_batch_bytes
                ),
            ));
        }
        if self.flush_max_bytes.saturating_add(self.max_batch_bytes) > MAX_BUFFERED_ROW_BYTES {
            return Err((
                "max_batch_bytes",
                format!(
                    "with flush_max_bytes ({}) must stay within {MAX_BUFFERED_ROW_BYTES} bytes, so that consumers decode every message",
                    self.flush_max_bytes
                ),
            ));
        }
        if self.max_string_bytes < MIN_STRING_BYTES {
            return Err((
                "max_string_bytes",
                format!(
                    "must be at least {MIN_STRING_BYTES} (twice where agents reset their dictionary), got {}",
                    self.max_string_bytes
                ),
            ));
        }
        if self.max_batch_span_ms < 60_000 {
            return Err(("max_batch_span_ms", "must be at least 60000".into()));
        }
        if self.max_connections == 0 {
            return Err(("max_connections", "must be at least 1".into()));
        }
        if self.idle_timeout_ms < 1000 {
            return Err(("idle_timeout_ms", "must be at least 1000".into()));
        }
        if self.kafka.contains_key("bootstrap.servers") {
            return Err(("kafka", "`bootstrap.servers` is set by `brokers`, not here".into()));
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
            "deploy/local/aggregator.toml",
            include_str!("../../deploy/local/aggregator.toml"),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 50051);
    }

    #[test]
    fn invalid_values_name_their_field() {
        let e = parse_config::<Config>("a.toml", "[topics]\npartitions = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`topics.partitions`"), "{e}");
        let e = parse_config::<Config>("a.toml", "listen = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config a.toml:1:"), "{e}");
        let e = parse_config::<Config>("a.toml", "compression = \"brotli\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`compression`") && e.contains("brotli"), "{e}");
        let e = parse_config::<Config>("a.toml", "[kafka]\n\"bootstrap.servers\" = \"elsewhere:9092\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`kafka`") && e.contains("brokers"), "{e}");
    }

    #[test]
    fn byte_budgets_must_cover_a_correct_agent_and_fit_the_consumers() {
        let c: Config = parse_config("a.toml", "").unwrap();
        assert!(c.listen.ip().is_loopback(), "built-in default binds loopback");
        let at_least = format!("max_batch_bytes = {MIN_BATCH_BYTES}");
        assert!(parse_config::<Config>("a.toml", &at_least).is_ok());
        let under = format!("max_batch_bytes = {}", MIN_BATCH_BYTES - 1);
        let e = parse_config::<Config>("a.toml", &under).unwrap_err().to_string();
        assert!(e.contains("`max_batch_bytes`"), "{e}");
        let over = format!(
            "max_batch_bytes = {}\nflush_max_bytes = 1024",
            MAX_BUFFERED_ROW_BYTES - 1023
        );
        let e = parse_config::<Config>("a.toml", &over).unwrap_err().to_string();
        assert!(e.contains("`max_batch_bytes`") && e.contains("flush_max_bytes"), "{e}");
        let under = format!("max_string_bytes = {}", MIN_STRING_BYTES - 1);
        let e = parse_config::<Config>("a.toml", &under).unwrap_err().to_string();
        assert!(e.contains("`max_string_bytes`"), "{e}");
    }

    #[test]
    fn extra_kafka_properties_override_the_producers_own() {
        let c: Config = parse_config("a.toml", "[kafka]\n\"enable.idempotence\" = \"false\"").unwrap();
        let p = crate::producer_config(&c);
        assert_eq!(p.get("enable.idempotence"), Some("false"));
        assert_eq!(p.get("acks"), Some("all"));
        let c: Config = parse_config("a.toml", "").unwrap();
        assert_eq!(crate::producer_config(&c).get("enable.idempotence"), Some("true"));
    }
}
