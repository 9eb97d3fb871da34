//! The Glasshouse analyzer: a member of a Kafka consumer group over the event
//! topics. Today it decodes the Arrow batches and shows, live, the containers,
//! what they execute, their TCP connections, the sensitive files they write,
//! their resource use and the gaps in what the agents reported; baselines,
//! scoring and alerts build on this loop.
//!
//! ```text
//!  Kafka glasshouse.process ──consumer group──▶ consume: decode Arrow IPC ──▶ view (stdout,
//!        glasshouse.network                       store offset after handling     escaped)
//!        glasshouse.file
//!        glasshouse.resources
//!        glasshouse.gaps
//!   (partition = workload)
//! ```
//!
//! # Layout
//! - [`config`]: the TOML config.
//! - [`consume`]: the consumer-group loop (at-least-once offsets).
//! - [`view`]: the live view of containers, execs, connections, file writes,
//!   resource samples and gaps.
//! - [`escape`]: escaping of container-supplied text for output.

pub mod config;
pub mod consume;
pub mod escape;
pub mod view;

use std::io::Write;

use glasshouse_proto::kafka::{TopicError, ensure_topics_unless_cancelled};
use glasshouse_proto::{file, gaps, network, process, resources};
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::consume::{ConsumeError, ConsumeStats, ConsumerSettings, RowHandler, StartAt};
use crate::view::View;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzerError {
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error(transparent)]
    Consume(#[from] ConsumeError),
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
            tracing::debug!(workload = %row.workload_id, kind = row.kind.as_str(), pid = row.pid, "event");
            self.show(row, View::show);
        }
    }

    fn handle_network(&mut self, rows: &[network::Row]) {
        for row in rows {
            tracing::debug!(workload = %row.workload_id, kind = row.kind.as_str(), pid = row.pid, "network event");
            self.show(row, View::show_network);
        }
    }

    fn handle_file(&mut self, rows: &[file::Row]) {
        for row in rows {
            tracing::debug!(workload = %row.workload_id, kind = row.kind.as_str(), pid = row.pid, "file event");
            self.show(row, View::show_file);
        }
    }

    fn handle_resources(&mut self, rows: &[resources::Row]) {
        for row in rows {
            tracing::debug!(workload = %row.workload_id, container = %row.container_id, "resource sample");
            self.show(row, View::show_resources);
        }
    }

    fn handle_gaps(&mut self, rows: &[gaps::Row]) {
        for row in rows {
            tracing::debug!(
                workload = %row.workload_id,
                reason = row.reason.as_str(),
                dropped = row.dropped,
                "gap"
            );
            self.show(row, View::show_gap);
        }
    }
}

/// Runs the analyzer until `cancel`, writing the live view to `out` when
/// `config.view` is set.
pub async fn run<W: Write + Send>(
    config: Config,
    out: W,
    cancel: CancellationToken,
) -> Result<ConsumeStats, AnalyzerError> {
    if !ensure_topics_unless_cancelled(&config.brokers, config.topics, &cancel).await? {
        return Ok(ConsumeStats::default());
    }
    let mut shower = Shower {
        view: config.view.then(|| View::new(out)),
    };
    let settings = ConsumerSettings {
        brokers: config.brokers.clone(),
        group: config.group.clone(),
        instance_id: Some(config.instance_id.clone()),
        start: StartAt::Earliest,
        session_timeout_ms: config.session_timeout_ms,
        extra: config.kafka.clone(),
    };
    let stats = consume::consume(&settings, &mut shower, &cancel).await?;
    tracing::info!(
        messages = stats.messages,
        rows = stats.rows,
        undecodable = stats.undecodable,
        "analyzer stopped"
    );
    Ok(stats)
}

/// `glasshouse watch`: the live view from a private consumer group, starting
/// at the newest events (or the oldest with `from_beginning`).
pub async fn watch<W: Write + Send>(
    brokers: &str,
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
        brokers: brokers.to_owned(),
        group,
        instance_id: None,
        start,
        session_timeout_ms: 10_000,
        extra: Default::default(),
    };
    Ok(consume::consume(&settings, &mut shower, &cancel).await?)
}
