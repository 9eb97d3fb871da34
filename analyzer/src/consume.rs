//! The consumer-group loop: this instance owns some partitions of the event
//! topics, and so the workloads keyed to them. A message's offset is stored only
//! after its rows were handled, and committed (periodically and at shutdown)
//! from the stored offsets: at-least-once.

use std::collections::BTreeMap;
use std::time::Duration;

use glasshouse_proto::record::{HEADER_RECORD_TYPE, RecordType};
use glasshouse_proto::{file, ipc, network, process};
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

/// The record types consumed, one topic each.
pub const CONSUMED: [RecordType; 3] = [RecordType::Process, RecordType::Network, RecordType::File];

/// Handles the rows of one message; a message that cannot be decoded is
/// logged and skipped before it gets here.
pub trait RowHandler {
    fn handle_process(&mut self, rows: &[process::Row]);
    fn handle_network(&mut self, rows: &[network::Row]);
    fn handle_file(&mut self, rows: &[file::Row]);
}

/// Consumes the topics of [`CONSUMED`] as a member of `group` until `cancel`.
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
    let topics = CONSUMED.map(RecordType::topic);
    consumer.subscribe(&topics).map_err(client_error)?;
    tracing::info!(brokers, group, ?topics, "consuming");
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

/// The record type a message's topic carries, if the header (when present) agrees.
fn record_type_of(topic: &str, header: Option<&str>) -> Option<RecordType> {
    let record_type = CONSUMED.into_iter().find(|t| t.topic() == topic)?;
    header.is_none_or(|h| h == record_type.name()).then_some(record_type)
}

fn handle_message(m: &BorrowedMessage<'_>, handler: &mut (dyn RowHandler + Send), stats: &mut ConsumeStats) {
    stats.messages += 1;
    let header = m.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == HEADER_RECORD_TYPE)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    });
    let Some(record_type) = record_type_of(m.topic(), header.as_deref()) else {
        stats.undecodable += 1;
        tracing::warn!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            record_type = header,
            "unexpected record type, skipped"
        );
        return;
    };
    let batch = m
        .payload()
        .ok_or_else(|| "empty message".to_owned())
        .and_then(|p| ipc::decode(p).map_err(|e| e.to_string()));
    let handled = batch.and_then(|batch| match record_type {
        RecordType::Network => network::read_rows(&batch)
            .map(|rows| {
                handler.handle_network(&rows);
                rows.len()
            })
            .map_err(|e| e.to_string()),
        RecordType::File => file::read_rows(&batch)
            .map(|rows| {
                handler.handle_file(&rows);
                rows.len()
            })
            .map_err(|e| e.to_string()),
        RecordType::Process => process::read_rows(&batch)
            .map(|rows| {
                handler.handle_process(&rows);
                rows.len()
            })
            .map_err(|e| e.to_string()),
        other => Err(format!("record type {other} is not consumed")),
    });
    match handled {
        Ok(rows) => stats.rows += rows as u64,
        Err(error) => {
            stats.undecodable += 1;
            tracing::warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                %error,
                "undecodable message, skipped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_decides_the_record_type_and_a_header_must_agree() {
        assert_eq!(
            record_type_of("glasshouse.network", Some("network")),
            Some(RecordType::Network)
        );
        assert_eq!(record_type_of("glasshouse.process", None), Some(RecordType::Process));
        assert_eq!(record_type_of("glasshouse.file", Some("file")), Some(RecordType::File));
        assert_eq!(record_type_of("glasshouse.process", Some("network")), None);
        assert_eq!(record_type_of("glasshouse.file", Some("process")), None);
        assert_eq!(record_type_of("glasshouse.syscalls", Some("syscalls")), None);
    }
}
