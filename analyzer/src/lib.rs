//! The Glasshouse analyzer: a member of a Kafka consumer group over the event
//! topics. It learns a behaviour baseline per workload across all its replicas,
//! scores every event against it and against the workload's other replicas,
//! runs the detections that need no baseline, publishes alerts as OCSF
//! Detection Findings, and shows the live view.
//!
//! ```text
//!  Kafka glasshouse.process ─┐                                      ┌─▶ glasshouse.alerts (OCSF JSON)
//!        glasshouse.network  │ consume: decode Arrow IPC ──▶ engine ─┤
//!        glasshouse.file     ├─(partition = workload)          │     └─▶ view (stdout, escaped)
//!        glasshouse.syscalls │                                baselines ◀─▶ glasshouse.baselines
//!        glasshouse.resources│                                  ▲            (checkpoint, restore)
//!        glasshouse.gaps     │                                  │
//!        glasshouse.control ─┘ (operator commands) ─────────────┘
//! ```
//!
//! # Layout
//! - [`config`]: the TOML config (`[analysis]`: learning, scoring, alerts).
//! - [`consume`]: the consumer-group loop (offsets stored after checkpoints,
//!   state moved with partitions).
//! - [`features`]: what an event shows a baseline, per phase.
//! - [`baseline`]: one workload's baseline, its lifecycle and versions.
//! - [`engine`]: scoring, container scores, alert windows; [`rules`]: the
//!   detections that need no baseline; [`clock`]: the wall clock the engine
//!   reads (a manual one in tests).
//! - [`finding`], [`ocsf`]: findings and their OCSF 1.8 JSON.
//! - [`store`]: alerts and baseline snapshots in Kafka; [`error`]: why a
//!   step failed, as types with a retryable/fatal [`error::Kind`].
//! - [`control`]: operator commands and reading baselines back (CLI);
//!   [`sign`]: their signatures, and those of snapshots and alerts.
//! - [`cli`]: what the `glasshouse` command line prints; [`sql`]: `glasshouse sql`;
//!   [`doctor`]: `glasshouse doctor`, the host and stack checks.
//! - The telemetry lake is the `glasshouse-lake` crate (`analyzer/lake`):
//!   [`run`] starts its writer when `[lake]` is enabled; SQL over it is
//!   served by its own binary, `glasshouse-query`.
//! - [`view`]: the live view; [`escape`]: escaping of container-supplied text.
//! - [`vulns`]: vulnerability matching of container inventories against OSV
//!   advisories, and image trust (its own task and consumer group).

pub mod baseline;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consume;
pub mod control;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod escape;
pub mod features;
pub mod finding;
pub mod internal_events;
pub mod ocsf;
pub mod outputs;
pub mod rules;
pub mod sign;
pub mod sql;
pub mod store;
pub mod view;
pub mod vulns;

use std::io::Write;

use glasshouse_runtime::kafka::{TopicError, ensure_topics_unless_cancelled};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glasshouse_proto::{file, gaps, network, process, resources, syscalls};
use rdkafka::producer::DeliveryFuture;
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::consume::{ConsumeError, ConsumeStats, ConsumerSettings, RowHandler, StartAt};
use crate::engine::{Alert, Engine};
use crate::error::{CheckpointError, CommandError, StoreError};
use crate::internal_events::Metrics;
use crate::outputs::Outputs;
use crate::store::Store;
use crate::view::View;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzerError {
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    #[error("analyzer store")]
    Store(#[from] StoreError),
    #[error("outputs: {0}")]
    Outputs(String),
    #[error(transparent)]
    Metrics(std::io::Error),
    #[error(transparent)]
    ControlKey(#[from] sign::KeyError),
    #[error("lake writer")]
    Lake(#[from] glasshouse_lake::service::ServiceError),
    #[error("vulnerability matching")]
    Vulns(#[from] error::VulnsError),
    /// A task beside the analysis panicked: the analyzer stops, non-zero,
    /// so that its supervisor restarts it.
    #[error("{task} died: {why}")]
    TaskDied { task: &'static str, why: String },
}

/// Watches a task that runs beside the analysis: if it fails or panics, the
/// analyzer stops (`cancel`) and its run ends with that error, so the
/// process exits non-zero and its supervisor restarts it.
fn beside<E>(
    name: &'static str,
    task: tokio::task::JoinHandle<Result<(), E>>,
    error: fn(E) -> AnalyzerError,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), AnalyzerError>>
where
    E: Send + 'static,
{
    tokio::spawn(async move {
        let result = match task.await {
            Ok(result) => result.map_err(error),
            Err(e) => Err(AnalyzerError::TaskDied {
                task: name,
                why: e.to_string(),
            }),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, task = name, "stopped; stopping the analyzer");
            cancel.cancel();
        }
        result
    })
}

struct Shower<W: Write> {
    view: Option<View<W>>,
}

impl<W: Write> Shower<W> {
    /// Shows with `show`; the first output error disables the view.
    fn show<R>(&mut self, row: &R, show: impl FnOnce(&mut View<W>, &R) -> std::io::Result<()>) {
        if let Some(view) = &mut self.view
            && let Err(error) = show(view, row)
        {
            tracing::warn!(%error, "live view output failed, view disabled");
            self.view = None;
        }
    }
}

impl<W: Write> RowHandler for Shower<W> {
    fn handle_process(&mut self, rows: &[process::Row]) {
        for row in rows {
            self.show(row, View::show);
        }
    }

    fn handle_network(&mut self, rows: &[network::Row]) {
        for row in rows {
            self.show(row, View::show_network);
        }
    }

    fn handle_file(&mut self, rows: &[file::Row]) {
        for row in rows {
            self.show(row, View::show_file);
        }
    }

    fn handle_resources(&mut self, rows: &[resources::Row]) {
        for row in rows {
            self.show(row, View::show_resources);
        }
    }

    fn handle_gaps(&mut self, rows: &[gaps::Row]) {
        for row in rows {
            tracing::debug!(
                workload = %row.attribution.workload_id,
                reason = row.reason.as_str(),
                dropped = row.dropped,
                "gap"
            );
            self.show(row, View::show_gap);
        }
    }
}

/// What the analyzer's HTTP endpoint serves besides its metrics, refreshed
/// every tick.
#[derive(Debug, Default)]
struct Published {
    containers: Vec<cli::ContainerRow>,
}

/// Attempts to publish an alert (one per checkpoint) before it is dropped,
/// logged with its id and counted: an alert Kafka never takes must not hold
/// back the offsets, and with them every later alert, forever.
const ALERT_ATTEMPTS: u32 = 5;

/// `/health`: `ok`, or `degraded` with why (alerts refused by Kafka and
/// waiting, alerts dropped since the start).
fn health(m: &Metrics) -> String {
    let (pending, dropped) = (m.alerts_pending.get(), m.alerts_dropped.get());
    if pending == 0 && dropped == 0 {
        "ok\n".into()
    } else {
        format!("degraded: {pending} alerts waiting for Kafka, {dropped} dropped after {ALERT_ATTEMPTS} attempts\n")
    }
}

/// The analyzer proper: the live view, and the engine with its Kafka store.
struct Analyzer<W: Write> {
    /// What the HTTP endpoint serves; `None` without `metrics_listen`.
    published: Option<Arc<Mutex<Published>>>,
    outputs: Outputs,
    shower: Shower<W>,
    engine: Engine,
    store: Store,
    checkpoint_every: Duration,
    /// Alerts enqueued and not yet known to be in Kafka, with the attempt.
    in_flight: Vec<(Arc<Alert>, u32, DeliveryFuture)>,
    /// Alerts Kafka refused, to send again at the next checkpoint, with the
    /// attempts made.
    retry: Vec<(Arc<Alert>, u32)>,
    /// See `[analysis] max_alert_bytes`.
    max_alert_bytes: usize,
    /// See `control_key_file`; `None`: commands are refused.
    control_key: Option<sign::Key>,
}

impl<W: Write> Analyzer<W> {
    /// Publishes the engine's new alerts (and shows them).
    /// An alert over `max_alert_bytes` is shortened first, so every output
    /// gets the same document and Kafka can take it.
    fn publish(&mut self) {
        for mut alert in self.engine.drain_alerts() {
            self.fit(&mut alert, self.max_alert_bytes);
            self.shower.show(&alert, View::show_alert);
            let alert = Arc::new(alert);
            self.outputs.send(&alert);
            self.send(alert, 1);
        }
    }

    /// Cuts the long strings of `alert` until its JSON is at most `max` bytes.
    fn fit(&mut self, alert: &mut Alert, max: usize) {
        if let Some(short) = alert.document.shorten(max) {
            self.engine.metrics.alert_shortened(
                &alert.uid,
                &alert.workload,
                alert.document.json().len(),
                short.json().len(),
            );
            alert.document = short;
        }
    }

    fn send(&mut self, alert: Arc<Alert>, attempt: u32) {
        match self.store.publish_alert(&alert.workload, alert.document.json()) {
            Ok(f) => self.in_flight.push((alert, attempt, f)),
            Err(error) => self.failed(alert, attempt, &error),
        }
    }

    /// Attempt `attempt` of `alert` failed: it is tried again at the next
    /// checkpoint (shorter, if Kafka found it too large), or dropped after
    /// [`ALERT_ATTEMPTS`].
    fn failed(&mut self, alert: Arc<Alert>, attempt: u32, error: &rdkafka::error::KafkaError) {
        let last = attempt >= ALERT_ATTEMPTS;
        self.engine
            .metrics
            .alert_publish_failed(&alert.uid, attempt, last, error);
        if last {
            return;
        }
        let too_large = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
        );
        let alert = if too_large {
            let mut shorter = Alert::clone(&alert);
            self.fit(&mut shorter, alert.document.json().len() / 2);
            Arc::new(shorter)
        } else {
            alert
        };
        self.retry.push((alert, attempt));
    }
}

impl<W: Write + Send> RowHandler for Analyzer<W> {
    fn handle_process(&mut self, rows: &[process::Row]) {
        self.shower.handle_process(rows);
        for row in rows {
            self.engine.handle_process(row);
        }
        self.publish();
    }

    fn handle_network(&mut self, rows: &[network::Row]) {
        self.shower.handle_network(rows);
        for row in rows {
            self.engine.handle_network(row);
        }
        self.publish();
    }

    fn handle_file(&mut self, rows: &[file::Row]) {
        self.shower.handle_file(rows);
        for row in rows {
            self.engine.handle_file(row);
        }
        self.publish();
    }

    fn handle_resources(&mut self, rows: &[resources::Row]) {
        self.shower.handle_resources(rows);
        for row in rows {
            self.engine.handle_resources(row);
        }
        self.publish();
    }

    fn handle_gaps(&mut self, rows: &[gaps::Row]) {
        self.shower.handle_gaps(rows);
        for row in rows {
            self.engine.handle_gap(row);
        }
    }

    fn handle_syscalls(&mut self, rows: &[syscalls::Row]) {
        self.engine.handle_syscalls(rows);
        self.publish();
    }

    fn partition(&mut self, partition: i32) {
        self.engine.set_partition(partition);
    }

    fn wants_control(&self) -> bool {
        true
    }

    fn handle_control(&mut self, key: &[u8], payload: &[u8], signature: Option<&[u8]>) -> Result<(), CommandError> {
        let now_ms = clock::system_ns() as u64 / 1_000_000;
        let (workload, command, by) = match control::verify(self.control_key.as_ref(), key, payload, signature, now_ms)
        {
            Ok(c) => c,
            Err(refused) => {
                self.engine.metrics.control_refused.add(1);
                return Err(CommandError::Refused {
                    refused,
                    workload: escape::terminal(&String::from_utf8_lossy(key)),
                });
            }
        };
        let what = format!("{command}");
        let version = self.engine.command(&workload, command)?;
        tracing::info!(
            workload = %escape::terminal(&workload),
            command = what,
            by = %escape::terminal(&by),
            version,
            "operator command applied"
        );
        Ok(())
    }

    fn tick(&mut self) {
        self.engine.tick();
        self.publish();
        let Some(published) = &self.published else {
            return;
        };
        let mut baselines = [0u64; 3];
        let mut bytes = 0;
        for b in self.engine.baselines() {
            baselines[b.state as usize] += 1;
            bytes += b.approx_bytes() as u64;
        }
        let m = &self.engine.metrics;
        for (state, n) in internal_events::BASELINE_STATES.iter().zip(baselines) {
            m.baselines.set(state, n);
        }
        m.baseline_bytes.set(bytes);
        m.alerts_pending.set(self.retry.len() as u64);
        let containers = self
            .engine
            .container_scores()
            .into_iter()
            .map(|c| cli::ContainerRow {
                container_id: c.container.id.to_string(),
                name: c.container.name.as_deref().map(str::to_owned),
                image: c.container.image.as_deref().map(str::to_owned),
                host: c.container.host.to_string(),
                workload: c.workload.to_string(),
                score: c.score,
                baseline_state: c.baseline_state.to_owned(),
            })
            .collect();
        *published.lock().expect("not poisoned") = Published { containers };
    }

    fn checkpoint_interval(&self) -> Option<Duration> {
        Some(self.checkpoint_every)
    }

    async fn checkpoint(&mut self) -> Result<(), CheckpointError> {
        // Alerts first: an offset is committed only once its alerts are in Kafka.
        // An alert dropped after its last attempt does not hold them back.
        for (alert, attempts) in std::mem::take(&mut self.retry) {
            self.send(alert, attempts + 1);
        }
        for (alert, attempt, delivery) in std::mem::take(&mut self.in_flight) {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => self.failed(alert, attempt, &error),
                Err(_) => self.failed(alert, attempt, &rdkafka::error::KafkaError::Canceled),
            }
        }
        let failed = self.retry.len();
        if failed > 0 {
            self.engine.metrics.checkpoint_failures.add(1);
            return Err(CheckpointError::AlertsPending(failed));
        }
        let snapshots: Vec<(i32, String, Vec<u8>)> = self
            .engine
            .dirty_baselines()
            .into_iter()
            .map(|b| {
                let json = serde_json::to_vec(b).map_err(CheckpointError::Encode)?;
                Ok((b.partition, b.workload.clone(), json))
            })
            .collect::<Result<_, CheckpointError>>()?;
        if snapshots.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.store.save(&snapshots).await {
            // Written again in full at the next checkpoint.
            for (_, workload, _) in &snapshots {
                self.engine.mark_dirty(workload);
            }
            self.engine.metrics.checkpoint_failures.add(1);
            return Err(error.into());
        }
        tracing::debug!(baselines = snapshots.len(), "baselines saved");
        Ok(())
    }

    async fn assigned(&mut self, partitions: &[i32]) -> Result<(), StoreError> {
        let restored = self.store.load(partitions).await?;
        tracing::info!(?partitions, baselines = restored.len(), "baselines restored");
        for (b, refused_after) in restored {
            let workload = b.workload.clone();
            self.engine.restore(b);
            if refused_after {
                // A refused record is the newest: write the good one again,
                // so compaction cannot leave only the refused one.
                self.engine.mark_dirty(&workload);
            }
        }
        Ok(())
    }

    fn revoked(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.engine.drop_partition(*p);
        }
    }
}

/// Runs the analyzer until `cancel`, writing the live view (and alerts) to
/// `out` when `config.view` is set.
pub async fn run<W: Write + Send>(
    config: Config,
    out: W,
    cancel: CancellationToken,
) -> Result<ConsumeStats, AnalyzerError> {
    glasshouse_runtime::listener::log_descriptor_limit();
    let control_key = match &config.control_key_file {
        Some(path) => Some(sign::Key::from_file(path)?),
        None => None,
    };
    if !ensure_topics_unless_cancelled(&config.brokers, &config.kafka, config.topics, &cancel).await? {
        return Ok(ConsumeStats::default());
    }
    let shower = Shower {
        view: config.view.then(|| View::new(out)),
    };
    // The lake writer (`[lake]`) runs beside the analysis; a fatal error of
    // it stops the analyzer too. SQL is the query service's (glasshouse-query).
    let lake = config.lake.enabled.then(|| {
        let settings = glasshouse_lake::service::Settings {
            lake: config.lake.clone(),
            brokers: config.brokers.clone(),
            kafka: config.kafka.clone(),
            instance_id: config.instance_id.clone(),
            session_timeout_ms: config.session_timeout_ms,
        };
        let task = tokio::spawn(glasshouse_lake::service::run(settings, cancel.clone()));
        beside("lake writer", task, AnalyzerError::from, cancel.clone())
    });
    let settings = ConsumerSettings {
        brokers: config.brokers.clone(),
        group: config.group.clone(),
        instance_id: Some(config.instance_id.clone()),
        start: StartAt::Earliest,
        session_timeout_ms: config.session_timeout_ms,
        extra: config.kafka.clone(),
    };
    let published = config
        .metrics_listen
        .map(|_| Arc::new(Mutex::new(Published::default())));
    let metrics = Arc::new(Metrics::default());
    let endpoint = spawn_endpoint(&config, published.clone(), metrics.clone(), &cancel).await?;
    // Vulnerability matching runs beside the behaviour consumer, on its own
    // consumer group (see `vulns::service`).
    let vulns_task = config.vulns.enabled.then(|| {
        let settings = vulns::service::Settings {
            brokers: config.brokers.clone(),
            group: format!("{}-vulns", config.group),
            instance_id: Some(format!("{}-vulns", config.instance_id)),
            extra: config.kafka.clone(),
        };
        let task = tokio::spawn(vulns::service::run(settings, config.vulns.clone(), cancel.clone()));
        beside("vulnerability matching", task, AnalyzerError::Vulns, cancel.clone())
    });
    let stats = if config.analysis.enabled {
        analyze(&config, &settings, shower, (published, metrics), control_key, &cancel).await?
    } else {
        let mut shower = shower;
        consume::consume(&settings, &mut shower, &cancel).await?
    };
    if let Some(endpoint) = endpoint {
        endpoint.abort();
    }
    // The analysis ended: the tasks beside it stop too.
    cancel.cancel();
    // A task that failed or died makes the analyzer's exit non-zero.
    let mut failed = None;
    if let Some(task) = vulns_task {
        // A bound in case Kafka hangs.
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(10), task).await {
            failed = Some(e);
        }
    }
    if let Some(lake) = lake {
        match lake.await {
            Ok(Err(e)) => failed = failed.or(Some(e)),
            Ok(Ok(())) => {}
            Err(e) => tracing::warn!(error = %e, "lake task ended abnormally"),
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    tracing::info!(
        messages = stats.messages,
        rows = stats.rows,
        undecodable = stats.undecodable,
        "analyzer stopped"
    );
    Ok(stats)
}

/// The `/metrics`, `/health` and `/containers` endpoint, when
/// `metrics_listen` is set, serving what the analysis last `published`.
async fn spawn_endpoint(
    config: &Config,
    published: Option<Arc<Mutex<Published>>>,
    metrics: Arc<Metrics>,
    cancel: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, AnalyzerError> {
    let (Some(addr), Some(published)) = (config.metrics_listen, published) else {
        return Ok(None);
    };
    let listener = glasshouse_runtime::endpoint::bind(addr)
        .await
        .map_err(AnalyzerError::Metrics)?;
    let access = glasshouse_runtime::endpoint::Access::from_file(config.metrics_token_file.as_deref())
        .map_err(AnalyzerError::Metrics)?;
    let routes: glasshouse_runtime::endpoint::Routes = Arc::new(move |path: &str| match path {
        "/metrics" => Some((glasshouse_runtime::endpoint::TEXT_FORMAT, metrics.render())),
        "/health" => Some(("text/plain; charset=utf-8", health(&metrics))),
        "/containers" => {
            let p = published.lock().expect("not poisoned");
            Some((
                "application/json",
                cli::ascii_json(&serde_json::to_string(&p.containers).unwrap_or_default()),
            ))
        }
        _ => None,
    });
    Ok(Some(tokio::spawn(glasshouse_runtime::endpoint::serve_routes(
        listener,
        routes,
        access,
        cancel.clone(),
    ))))
}

/// The behaviour analysis: consumes until `cancel`, then flushes its alerts.
async fn analyze<W: Write + Send>(
    config: &Config,
    settings: &ConsumerSettings,
    shower: Shower<W>,
    (published, metrics): (Option<Arc<Mutex<Published>>>, Arc<Metrics>),
    control_key: Option<sign::Key>,
    cancel: &CancellationToken,
) -> Result<ConsumeStats, AnalyzerError> {
    if control_key.is_none() {
        tracing::warn!("no control_key_file: operator commands are refused, snapshots and alerts are not signed");
    }
    let store = Store::connect(&config.brokers, &config.kafka, control_key.clone()).await?;
    let outputs = Outputs::start(&config.outputs, &metrics, cancel).map_err(AnalyzerError::Outputs)?;
    let mut engine = Engine::new(config.analysis.settings());
    engine.metrics = metrics;
    let mut analyzer = Analyzer {
        published,
        outputs,
        shower,
        engine,
        store,
        checkpoint_every: Duration::from_millis(config.analysis.checkpoint_ms),
        in_flight: Vec::new(),
        retry: Vec::new(),
        max_alert_bytes: config.analysis.max_alert_bytes,
        control_key,
    };
    let stats = consume::consume(settings, &mut analyzer, cancel).await?;
    let m = &analyzer.engine.metrics;
    tracing::info!(
        events = m.events.get(),
        findings = m.findings.get(),
        alerts = m.alerts.get(),
        suppressed = m.suppressed.get(),
        "analysis stopped"
    );
    if let Err(error) = analyzer.store.flush(Duration::from_secs(10)) {
        tracing::warn!(error = %glasshouse_runtime::service::error_chain(&error), "alerts not flushed at shutdown");
    }
    Ok(stats)
}

/// `glasshouse watch`: the live view from a private consumer group, starting
/// at the newest events (or the oldest with `from_beginning`).
pub async fn watch<W: Write + Send>(
    kafka: &glasshouse_runtime::kafka::Kafka,
    from_beginning: bool,
    out: W,
    cancel: CancellationToken,
) -> Result<ConsumeStats, AnalyzerError> {
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let group = format!("glasshouse-watch-{}-{started_ms}", std::process::id());
    let mut shower = Shower {
        view: Some(View::new(out)),
    };
    let start = if from_beginning {
        StartAt::Earliest
    } else {
        StartAt::Latest
    };
    let settings = ConsumerSettings {
        brokers: kafka.brokers.clone(),
        group,
        instance_id: None,
        start,
        session_timeout_ms: 10_000,
        extra: kafka.properties.clone(),
    };
    Ok(consume::consume(&settings, &mut shower, &cancel).await?)
}
