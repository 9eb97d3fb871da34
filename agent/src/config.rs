//! Agent configuration (TOML). Every field has a default; `glasshouse-agent
//! --config FILE` overrides what it names.

use std::path::PathBuf;
use std::time::Duration;

use glasshouse_runtime::service::Validate;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Stable identity of this agent. Default: the host name.
    #[serde(default = "default_agent_id")]
    pub agent_id: String,
    /// The cluster this host belongs to, sent in the hello. The aggregator
    /// refuses a stream whose agent id, host name or cluster differ from
    /// what the agent's credential binds (tokens file entry, or the
    /// certificate's common name, DNS names and first OU). Default: "" (none).
    #[serde(default)]
    pub cluster: String,
    /// Aggregator endpoints (`http://host:port`); the agent uses the first that
    /// answers and fails over to the next. Default: the local stack's aggregator.
    #[serde(default = "default_aggregators")]
    pub aggregators: Vec<String>,
    /// File holding this agent's bearer token for the aggregator (the
    /// aggregator's tokens file maps `agent_id` to it). Default: none.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// TLS to the aggregators (`https://` endpoints); with `cert_file` and
    /// `key_file` the agent authenticates with its certificate (mTLS), whose
    /// common name must be `agent_id`. Default: none.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Docker-compatible API sockets to ask for container metadata, tried in
    /// order. Default: Podman's (`podman system service`) then Docker's.
    #[serde(default = "default_runtime_sockets")]
    pub runtime_sockets: Vec<PathBuf>,
    /// Kubernetes CRI API sockets (containerd, CRI-O) to ask for container
    /// metadata after `runtime_sockets`, tried in order; missing ones are
    /// skipped. Default: containerd's then CRI-O's.
    #[serde(default = "default_cri_sockets")]
    pub cri_sockets: Vec<PathBuf>,
    /// Address of the Prometheus `/metrics` endpoint. Default: none (off).
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token `/metrics` requires
    /// (`Authorization: Bearer TOKEN`); others get 401. Required when
    /// `metrics_listen` is not a loopback address (the process refuses to
    /// start without it). Default: none (open, on loopback only).
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
    /// How processes are observed: `auto` (eBPF, or the netlink proc connector
    /// when eBPF cannot load: the reason is logged and `/metrics` shows the
    /// mode), `bpf` (fail when eBPF cannot load) or `netlink`. Default: auto.
    #[serde(default)]
    pub sensor: SensorChoice,
    /// Path prefixes under which a container process's writes are reported
    /// (whole components; `*` matches one component; a leading `~` means every
    /// home directory). Default: /etc, /bin, /sbin, /usr, /lib, /lib32, /lib64,
    /// /boot, /root, ~/.ssh, /var/spool/cron.
    #[serde(default = "crate::sensitive::defaults")]
    pub sensitive_paths: Vec<String>,
    /// How often per-container syscall counts and cgroup resource counters
    /// are sampled, in milliseconds. Default: 10000.
    #[serde(default = "default_sample_interval_ms")]
    pub sample_interval_ms: u64,
    /// Events per second one container may produce (process, network and file
    /// events, counted before identical repeats are collapsed; bursts of two
    /// seconds' worth); beyond it they are dropped, counted, and reported
    /// downstream as gap records, so one noisy container cannot starve the
    /// others. 0: no limit. Default: 50000.
    #[serde(default = "default_container_rate_limit")]
    pub container_rate_limit: u32,
    /// The agent's CPU budget, percent of one core (user + system time of
    /// the agent process). Over it, the agent throttles the noisiest
    /// containers (see `budget`), reports what it drops as gaps, and says so
    /// in its log and `/metrics`. 0: no CPU budget. Default: 50.
    #[serde(default = "default_cpu_budget_percent")]
    pub cpu_budget_percent: f64,
    /// The agent's resident memory budget, MiB; over it, the same
    /// throttling. 0: none. Default: 512.
    #[serde(default = "default_memory_budget_mib")]
    pub memory_budget_mib: u64,
    /// Also report processes that are not in any container. Default: false.
    #[serde(default)]
    pub host_processes: bool,
    /// Report only the containers whose name matches one of these patterns
    /// (`*` matches any run of characters: `["shop-*", "billing"]`); a
    /// container the runtime has not named yet is not reported until it
    /// has. Default: empty, every container.
    #[serde(default)]
    pub containers: Vec<String>,
    /// A batch is sent when it holds this many events. Default: 512.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// ... or when its oldest event is this old, in milliseconds. Default: 200.
    #[serde(default = "default_batch_max_age_ms")]
    pub batch_max_age_ms: u64,
    /// Batches kept in memory until the aggregator acknowledges them; when
    /// full, further batches go to the spool, or without one the agent stops
    /// reading kernel events (which are then dropped and counted).
    /// Default: 1024.
    #[serde(default = "default_max_unacked_batches")]
    pub max_unacked_batches: usize,
    /// Kernel events buffered between the sensor thread and the pipeline; on
    /// overflow events are dropped and counted, never block the kernel side.
    /// Default: 65536.
    #[serde(default = "default_event_queue")]
    pub event_queue: usize,
    /// Keep unacknowledged batches in an on-disk spool when memory is not
    /// enough (window full, aggregator unreachable, agent stopping); the next
    /// start re-sends them first. `false`: memory only, lost at exit.
    /// Default: true.
    #[serde(default = "default_spool")]
    pub spool: bool,
    /// Directory of the spool (one agent per directory: it is locked).
    /// Default: /var/lib/glasshouse/spool.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// Bound of the spool's files in bytes; when full, the oldest batches are
    /// dropped, counted and logged. Default: 268435456 (256 MiB).
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Distinct strings interned per stream before the dictionary is reset.
    /// Default: 100000.
    #[serde(default = "default_max_strings")]
    pub max_strings: usize,
    /// How long shutdown waits for outstanding acknowledgements, in
    /// milliseconds. Default: 5000.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Package inventories of running containers (`[inventory]`).
    #[serde(default)]
    pub inventory: InventoryConfig,
}

/// The `[inventory]` table: installed packages read from each container's
/// package databases through its root filesystem, for vulnerability matching.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Read inventories. Default: true.
    pub enabled: bool,
    /// How often each container's package databases are checked for a
    /// change (by device, inode, size and mtime), in seconds; a change, or a
    /// write to a database seen by the file sensor, rescans. Default: 60.
    pub interval_secs: u64,
    /// An unchanged inventory is sent again this often, in seconds, so an
    /// analyzer that restarted learns it back. Default: 3600.
    pub resend_secs: u64,
    /// npm lockfiles read when present in a container. Default:
    /// /app, /usr/src/app, /srv/app, /opt/app, /home/node/app `package-lock.json`.
    pub npm_lockfiles: Vec<PathBuf>,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            enabled: true,
            interval_secs: 60,
            resend_secs: 3600,
            npm_lockfiles: ["/app", "/usr/src/app", "/srv/app", "/opt/app", "/home/node/app"]
                .iter()
                .map(|d| PathBuf::from(d).join("package-lock.json"))
                .collect(),
        }
    }
}

/// The `sensor` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorChoice {
    #[default]
    Auto,
    Bpf,
    Netlink,
}

/// The `[tls]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM CA that signs the aggregators' certificates.
    pub ca_file: PathBuf,
    /// PEM client certificate of this agent. Default: none.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`. Default: none.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name to verify the aggregator certificate against. Default: the
    /// endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_agent_id() -> String {
    crate::procfs::hostname()
}
fn default_aggregators() -> Vec<String> {
    vec!["http://127.0.0.1:50051".to_owned()]
}
fn default_runtime_sockets() -> Vec<PathBuf> {
    vec![
        PathBuf::from("/run/podman/podman.sock"),
        PathBuf::from("/var/run/docker.sock"),
    ]
}
/// Where containerd and CRI-O put their sockets by default (the paths
/// `crictl` tries too).
fn default_cri_sockets() -> Vec<PathBuf> {
    vec![
        PathBuf::from("/run/containerd/containerd.sock"),
        PathBuf::from("/run/crio/crio.sock"),
    ]
}
fn default_cpu_budget_percent() -> f64 {
    50.0
}
fn default_memory_budget_mib() -> u64 {
    512
}
fn default_container_rate_limit() -> u32 {
    50_000
}
fn default_sample_interval_ms() -> u64 {
    10_000
}
fn default_batch_max_events() -> usize {
    512
}
fn default_batch_max_age_ms() -> u64 {
    200
}
fn default_max_unacked_batches() -> usize {
    1024
}
fn default_spool() -> bool {
    true
}
/// The FHS place for a program's persistent state.
fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/lib/glasshouse/spool")
}
/// Minutes of a busy host's batches, small next to any disk.
fn default_spool_max_bytes() -> u64 {
    256 << 20
}
fn default_event_queue() -> usize {
    65_536
}
fn default_max_strings() -> usize {
    100_000
}
fn default_drain_timeout_ms() -> u64 {
    5_000
}

impl Config {
    pub fn batch_max_age(&self) -> Duration {
        Duration::from_millis(self.batch_max_age_ms)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// Smallest spool bound: room for a few full-size batches.
const MIN_SPOOL_BYTES: u64 = 1 << 20;

impl Validate for Config {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        glasshouse_runtime::endpoint::require_token_off_loopback(
            self.metrics_listen,
            self.metrics_token_file.as_deref(),
        )?;
        if !(0.0..=6400.0).contains(&self.cpu_budget_percent) {
            return Err((
                "cpu_budget_percent",
                format!("must be between 0 (none) and 6400, got {}", self.cpu_budget_percent),
            ));
        }
        if self.containers.iter().any(|p| p.is_empty()) {
            return Err(("containers", "a pattern must not be empty".into()));
        }
        if self.agent_id.trim().is_empty() {
            return Err(("agent_id", "must not be empty".into()));
        }
        if self.aggregators.is_empty() {
            return Err(("aggregators", "needs at least one endpoint".into()));
        }
        for a in &self.aggregators {
            if !(a.starts_with("http://") || a.starts_with("https://")) {
                return Err(("aggregators", format!("{a:?} must start with http:// or https://")));
            }
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err(("tls.key_file", "cert_file and key_file go together".into()));
        }
        if self.inventory.interval_secs == 0 || self.inventory.resend_secs < self.inventory.interval_secs {
            return Err((
                "inventory.resend_secs",
                format!(
                    "interval_secs must be at least 1 and resend_secs at least interval_secs, got {} and {}",
                    self.inventory.interval_secs, self.inventory.resend_secs
                ),
            ));
        }
        for (field, value) in [
            ("batch_max_events", self.batch_max_events),
            ("max_unacked_batches", self.max_unacked_batches),
            ("event_queue", self.event_queue),
        ] {
            if value == 0 {
                return Err((field, "must be at least 1".into()));
            }
        }
        if self.max_strings < 1024 {
            return Err((
                "max_strings",
                format!("must be at least 1024, got {}", self.max_strings),
            ));
        }
        if self.spool && self.spool_max_bytes < MIN_SPOOL_BYTES {
            return Err((
                "spool_max_bytes",
                format!("must be at least {MIN_SPOOL_BYTES}, got {}", self.spool_max_bytes),
            ));
        }
        if self.batch_max_age_ms == 0 {
            return Err(("batch_max_age_ms", "must be at least 1".into()));
        }
        if self.sample_interval_ms < 100 {
            return Err((
                "sample_interval_ms",
                format!("must be at least 100, got {}", self.sample_interval_ms),
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
    fn defaults_are_valid() {
        let c: Config = parse_config("t", "").unwrap();
        assert_eq!(c.aggregators, default_aggregators());
        assert!(!c.host_processes);
        assert_eq!(c.cri_sockets, default_cri_sockets());
    }

    #[test]
    fn shipped_local_config_parses() {
        let text = include_str!("../../deploy/local/agent.toml");
        let c: Config = parse_config("deploy/local/agent.toml", text).unwrap();
        assert!(!c.aggregators.is_empty());
        assert!(c.inventory.enabled && c.inventory.interval_secs == 60);
    }

    #[test]
    fn inventory_intervals_are_checked() {
        let base = "aggregators = [\"http://127.0.0.1:1\"]\n[inventory]\n";
        let e = parse_config::<Config>("a.toml", &format!("{base}interval_secs = 0"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("inventory.resend_secs") && e.contains("interval_secs must be at least 1"),
            "{e}"
        );
        assert!(parse_config::<Config>("a.toml", &format!("{base}interval_secs = 600\nresend_secs = 60")).is_err());
        let c: Config = parse_config("a.toml", &format!("{base}npm_lockfiles = [\"/srv/package-lock.json\"]")).unwrap();
        assert_eq!(c.inventory.npm_lockfiles, [PathBuf::from("/srv/package-lock.json")]);
    }

    #[test]
    fn bad_endpoint_names_the_field() {
        let e = parse_config::<Config>("a.toml", "aggregators = [\"127.0.0.1:1\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `aggregators`"), "{e}");
    }
}
