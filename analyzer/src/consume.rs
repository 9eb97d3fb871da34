//! The consumer-group loop: this instance owns some partitions of the event
//! topics, and so the workloads keyed to them. A message's offset is stored only
//! after its rows were handled, and committed (periodically and at shutdown)
//! from the stored offsets: at-least-once.

use std::collections::BTreeMap;
use std::time::Duration;

use glasshouse_proto::ipc;
use glasshouse_proto::process::{self, Row};
use glasshouse_proto::record::{HEADER_RECORD_TYPE, RecordType};
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio_util::sync::CancellationToken;

/// Why consuming failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("kafka consumer for {brokers}: {source}")]
    Client {
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// Where consumption starts for a group without committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

/// How to join the consumer group.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group: String,
    /// Static membership id; `None` for a dynamic member.
    pub instance_id: Option<String>,
    pub start: StartAt,
    /// A member silent this long is dropped from the group.
    pub session_timeout_ms: u32,
    /// Extra librdkafka properties, applied last.
    pub extra: BTreeMap<String, String>,
}

/// Handles the rows of one message; an error is logged and the message skipped.
pub trait RowHandler {
    fn handle(&mut self, rows: &[Row]);
}

/// Consumes `glasshouse.process` as a member of `group` until `cancel`.
pub async fn consume(
    settings: &ConsumerSettings,
    handler: &mut (dyn RowHandler + Send),
    cancel: &CancellationToken,
) -> Result<ConsumeStats, ConsumeError> {
    let ConsumerSettings {
        brokers,
        group,
        instance_id,
        start,
        session_timeout_ms,
        extra,
    } = settings;
    let brokers = brokers.as_str();
    let group = group.as_str();
    let client_error = |source| ConsumeError::Client {
        brokers: brokers.to_owned(),
        source,
    };
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (session_timeout_ms / 3).max(100).to_string())
        // A rebalance waits this long for members to rejoin; our handlers are
        // fast, so a dead member must not hold its partitions for the
        // librdkafka default of five minutes.
        .set("max.poll.interval.ms", (session_timeout_ms * 3).to_string())
        .set(
            "auto.offset.reset",
            match start {
                StartAt::Earliest => "earliest",
                StartAt::Latest => "latest",
            },
        );
    if let Some(id) = instance_id {
        client.set("group.instance.id", id);
    }
    for (k, v) in extra {
        client.set(k, v);
    }
    let consumer: StreamConsumer = client.create().map_err(client_error)?;
    consumer
        .subscribe(&[RecordType::Process.topic()])
        .map_err(client_error)?;
    tracing::info!(brokers, group, topic = RecordType::Process.topic(), "consuming");
    let mut stats = ConsumeStats::default();
    let mut error_logged_at: Option<std::time::Instant> = None;
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m,
            () = cancel.cancelled() => break,
        };
        match message {
            Ok(m) => {
                error_logged_at = None;
                handle_message(&m, handler, &mut stats);
                if let Err(error) = consumer.store_offset_from_message(&m) {
                    tracing::warn!(%error, "cannot store offset");
                }
            }
            Err(error) => {
                // Broker down or topic missing: librdkafka retries by itself; say
                // so once per interval instead of once per poll.
                if error_logged_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(brokers, %error, "kafka consumer error, retrying");
                    error_logged_at = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Commit what was handled before leaving the group.
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "final offset commit skipped");
    }
    consumer.unsubscribe();
    Ok(stats)
}

/// Counters of one consume run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeStats {
    pub messages: u64,
    pub rows: u64,
    pub undecodable: u64,
}

fn handle_message(m: &BorrowedMessage<'_>, handler: &mut (dyn RowHandler + Send), stats: &mut ConsumeStats) {
    stats.messages += 1;
    let record_type = m.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == HEADER_RECORD_TYPE)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    });
    if record_type.as_deref().is_some_and(|t| t != RecordType::Process.name()) {
        stats.undecodable += 1;
        tracing::warn!(
            partition = m.partition(),
            offset = m.offset(),
            record_type,
            "unexpected record type, skipped"
        );
        return;
    }
    let decoded = m
        .payload()
        .ok_or_else(|| "empty message".to_owned())
        .and_then(|p| ipc::decode(p).map_err(|e| e.to_string()))
        .and_then(|batch| process::read_rows(&batch).map_err(|e| e.to_string()));
    match decoded {
        Ok(rows) => {
            stats.rows += rows.len() as u64;
            handler.handle(&rows);
        }
        Err(error) => {
            stats.undecodable += 1;
            tracing::warn!(partition = m.partition(), offset = m.offset(), %error, "undecodable message, skipped");
        }
    }
}
