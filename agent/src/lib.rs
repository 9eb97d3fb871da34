//! The Glasshouse host agent: watches every container from the outside, with
//! nothing installed inside them, and streams compact, attributed records to an
//! aggregator over gRPC.
//!
//! ```text
//!  kernel ──eBPF ring buffer──▶ sensor thread ──bounded queue (drop+count)──▶ pipeline
//!    (fork/exec/exit)  or proc connector + /proc              attribute: cgroup → container
//!                                                               runtime API → image, workload
//!                                                               collapse, batch (size/age)
//!                                                                      │ bounded (blocks)
//!                                                                      ▼
//!                                       aggregator ◀──gRPC Batch/Ack── client: intern, re-send
//!                                                                      unacked after reconnect; spill
//!                                                                      to the disk spool when behind
//!                                                                      or unreachable, and at exit
//! ```
//!
//! # Layout
//! - [`config`]: the TOML config.
//! - [`sensor`]: kernel event sources ([`sensor::bpf`], fallback [`sensor::proc_connector`]
//!   with TCP polled by [`sensor::proc_net`]); [`sensor::layout`]: the eBPF
//!   records as `#[repr(C)]` types checked against the program's BTF.
//! - [`procfs`]: reading processes from `/proc`.
//! - [`attribute`]: cgroup path → container, for every major runtime.
//! - [`rootfs`]: reading a container's files from the host without following
//!   a link out of its root (`openat2` `RESOLVE_IN_ROOT`).
//! - [`inventory`]: installed packages read from each container's package
//!   databases (dpkg, apk, rpm sqlite, Python dist-info, npm lockfiles);
//!   [`sqlite`]: the minimal SQLite table reader it uses for rpm.
//! - [`runtime`]: container metadata from the Docker-compatible API and the CRI API.
//! - [`workload`]: workload identity.
//! - [`sensitive`]: the path prefixes whose writes are reported.
//! - [`record`]: the attributed records the pipeline builds and batches.
//! - [`pipeline`]: attribution and rate limits.
//! - [`batch`]: collapsing and batching.
//! - [`encode`]: per-stream interning and delta timestamps.
//! - [`client`]: the gRPC stream with acks, reconnect and failover.
//! - [`spool`]: the bounded on-disk queue of unacknowledged batches.

pub mod attribute;
pub mod batch;
pub mod budget;
pub mod client;
pub mod config;
pub mod encode;
pub mod inventory;
pub mod pipeline;
pub mod procfs;
pub mod record;
pub mod resources;
pub mod rootfs;
pub mod runtime;
pub mod sensitive;
pub mod sensor;
pub mod spool;
pub mod sqlite;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::Config;

use crate::client::{ClientConfig, ClientReport};
use crate::pipeline::{Attributor, Batcher};
use crate::sensor::proc_connector::{ConnectorError, ProcConnector};
use crate::sensor::{ListenerSeed, RawEvent, SensorStats};

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Sensor(#[from] ConnectorError),
    #[error(transparent)]
    Bpf(#[from] sensor::bpf::BpfError),
    #[error("credentials file {path}: {source}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Metrics(#[source] std::io::Error),
    #[error("cannot start the sensor thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// How often sensor counters are logged.
const STATS_INTERVAL: Duration = Duration::from_secs(30);

/// Runs the agent until `cancel`, then drains: the sensor stops, the last batch
/// is sent, acknowledgements are awaited up to `drain_timeout_ms`.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<ClientReport, AgentError> {
    let token = match &config.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map(|t| t.trim().to_owned())
                .map_err(|source| AgentError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let stats = Arc::new(SensorStats::default());
    let (raw_tx, raw_rx) = mpsc::channel(config.event_queue);
    let Sensor {
        thread: sensor,
        seeds,
        mode,
    } = start_sensor(&config, raw_tx, stats.clone(), cancel.clone())?;
    tracing::info!(agent = %config.agent_id, mode, "sensor started");
    glasshouse_runtime::listener::log_descriptor_limit();

    let spool = config
        .spool
        .then(|| spool::SpoolConfig::new(&config.spool_dir, config.spool_max_bytes));
    let spool_metrics = spool.as_ref().map_or_else(Arc::default, |s| s.metrics.clone());
    let budget = budget::Budget::new(config.cpu_budget_percent, config.memory_budget_mib);
    let budget_task = tokio::spawn(
        budget
            .clone()
            .run(Duration::from_secs(1), cancel.clone())
            .instrument(tracing::info_span!("budget")),
    );
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let listener = glasshouse_runtime::endpoint::bind(addr)
                .await
                .map_err(AgentError::Metrics)?;
            let access = glasshouse_runtime::endpoint::Access::from_file(config.metrics_token_file.as_deref())
                .map_err(AgentError::Metrics)?;
            let stats = stats.clone();
            let spool_metrics = spool_metrics.clone();
            let budget = budget.clone();
            let render: glasshouse_runtime::endpoint::Renderer = Arc::new(move || {
                let mut out = stats.render(mode);
                spool_metrics.render(&mut out);
                budget.render(&mut out);
                out
            });
            Some(tokio::spawn(glasshouse_runtime::endpoint::serve(
                listener,
                render,
                access,
                cancel.clone(),
            )))
        }
        None => None,
    };
    let (batch_tx, batch_rx) = mpsc::channel(4);
    let mut attributor = Attributor::new(
        runtime::RuntimeClient::new(config.runtime_sockets.clone()).with_cri_sockets(config.cri_sockets.clone()),
        PathBuf::from("/proc"),
        config.host_processes,
    );
    if let Some(seeds) = seeds {
        attributor = attributor.with_listener_seeds(seeds);
    }
    if mode == sensor::MODE_NETLINK {
        // No socket events without eBPF: the socket tables are polled.
        attributor = attributor.with_socket_polling();
    }
    attributor = attributor
        .with_sensitive_paths(sensitive::SensitivePaths::new(&config.sensitive_paths))
        .with_sample_interval(Duration::from_millis(config.sample_interval_ms))
        .with_rate_limit(config.container_rate_limit)
        .with_container_filter(config.containers.clone())
        .with_budget(budget.clone())
        .with_stats(stats.clone());
    if config.inventory.enabled {
        attributor = attributor.with_inventory(inventory::Settings {
            interval: Duration::from_secs(config.inventory.interval_secs),
            resend: Duration::from_secs(config.inventory.resend_secs),
            npm_lockfiles: config.inventory.npm_lockfiles.clone(),
            proc_root: PathBuf::from("/proc"),
        });
    }
    let batcher = Batcher::new(config.batch_max_events, config.batch_max_age());
    // Tasks are named by their tracing span (tokio's task names are unstable).
    let pipeline =
        tokio::spawn(pipeline::run(attributor, batcher, raw_rx, batch_tx).instrument(tracing::info_span!("pipeline")));

    let stats_task = {
        let stats = stats.clone();
        let cancel = cancel.clone();
        tokio::spawn(
            async move {
                let mut tick = tokio::time::interval(STATS_INTERVAL);
                tick.tick().await;
                while glasshouse_runtime::service::or_cancelled(&cancel, tick.tick())
                    .await
                    .is_some()
                {
                    log_stats(&stats);
                }
            }
            .instrument(tracing::info_span!("stats")),
        )
    };

    let hello = glasshouse_proto::v1::Hello {
        agent_id: config.agent_id.clone(),
        boot_id: boot_id(),
        hostname: procfs::hostname(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        sensor_mode: mode.to_owned(),
        cluster: config.cluster.clone(),
    };
    let client_config = ClientConfig {
        endpoints: config.aggregators.clone(),
        hello,
        token,
        tls: client_tls(config.tls.as_ref())?,
        max_unacked: config.max_unacked_batches,
        max_strings: config.max_strings,
        drain_timeout: config.drain_timeout(),
        spool,
    };
    let report = client::run(client_config, batch_rx, cancel.clone()).await;
    // The client returns after cancel (drained or timed out); make sure the
    // sensor and pipeline stop even if it ended for another reason.
    cancel.cancel();
    // Ignored results: a panicked pipeline or stats task has already logged.
    let _ = pipeline.await;
    let _ = stats_task.await;
    let _ = budget_task.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    let _ = tokio::task::spawn_blocking(move || sensor.join()).await;
    log_stats(&stats);
    tracing::info!(
        acked = report.batches_acked,
        unacked = report.batches_unacked,
        spooled = report.spool_batches,
        spool_dropped = report.spool_dropped_batches,
        "agent stopped"
    );
    Ok(report)
}

/// A started sensor.
struct Sensor {
    thread: std::thread::JoinHandle<()>,
    /// Where pre-existing listening sockets go (eBPF only).
    seeds: Option<std::sync::mpsc::Sender<ListenerSeed>>,
    mode: &'static str,
}

/// Starts the sensor the config asks for; `auto` falls back from eBPF to the
/// proc connector and says why.
fn start_sensor(
    config: &Config,
    tx: mpsc::Sender<RawEvent>,
    stats: Arc<SensorStats>,
    cancel: CancellationToken,
) -> Result<Sensor, AgentError> {
    use config::SensorChoice;
    if config.sensor != SensorChoice::Netlink {
        let options = sensor::bpf::BpfOptions {
            host_processes: config.host_processes,
            sensitive_paths: config.sensitive_paths.clone(),
            syscall_interval: Duration::from_millis(config.sample_interval_ms),
        };
        match sensor::bpf::start(&options, tx.clone(), stats.clone(), cancel.clone()) {
            Ok(s) => {
                return Ok(Sensor {
                    thread: s.thread,
                    seeds: Some(s.seeds),
                    mode: sensor::MODE_BPF,
                });
            }
            Err(e) if config.sensor == SensorChoice::Auto => {
                tracing::warn!(error = %glasshouse_runtime::service::error_chain(&e), "eBPF sensor unavailable, falling back to the netlink proc connector");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let connector = ProcConnector::open()?;
    let thread = std::thread::Builder::new()
        .name("proc-connector".into())
        .spawn(move || connector.run(PathBuf::from("/proc"), tx, stats, cancel))
        .map_err(AgentError::Thread)?;
    Ok(Sensor {
        thread,
        seeds: None,
        mode: sensor::MODE_NETLINK,
    })
}

fn log_stats(stats: &SensorStats) {
    let [events, overflows, drops, unreadable, limited] = stats.snapshot();
    tracing::info!(
        events = events.1,
        kernel_overflows = overflows.1,
        queue_drops = drops.1,
        exec_unreadable = unreadable.1,
        rate_limited = limited.1,
        "sensor counters"
    );
}

fn client_tls(tls: Option<&config::TlsConfig>) -> Result<Option<tonic::transport::ClientTlsConfig>, AgentError> {
    let Some(tls) = tls else { return Ok(None) };
    glasshouse_runtime::tls::install_provider();
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| AgentError::Credentials {
            path: p.display().to_string(),
            source,
        })
    };
    let mut c = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&tls.ca_file)?));
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        c = c.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(name) = &tls.server_name {
        c = c.domain_name(name.clone());
    }
    Ok(Some(c))
}

/// A random id for this agent process start.
fn boot_id() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is writable for 8 bytes; getrandom(2) writes at most that.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(buf)
    } else {
        // Fallback: time and pid, unique enough across restarts of one host.
        (procfs::now_unix_ns() as u64) ^ (u64::from(std::process::id()) << 48)
    }
}
