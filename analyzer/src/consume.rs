//! The consumer-group loop: this instance owns some partitions of the event
//! topics, and so the workloads keyed to them. A message's offset is stored
//! only after its rows were handled and, for a handler with state (the
//! analyzer's baselines), only after a [`RowHandler::checkpoint`] made the
//! state that depends on it durable; stored offsets are committed
//! periodically and at shutdown: at-least-once. When partitions move, the
//! handler hears of it ([`RowHandler::assigned`], [`RowHandler::revoked`])
//! before it sees a message of a newly assigned partition: it drops the
//! state of revoked partitions (their new owner resumes from the last
//! checkpoint and its offsets) and loads that of assigned ones.
//!
//! Which messages are read: the topic decides the record type (a
//! `glasshouse-record-type` header, when present, must agree), and the
//! message's Arrow schema must be exactly the one this build knows for that
//! type (`read_rows` checks every column's name, type and nullability). The
//! `glasshouse-schema-version` header does not decide alone: a message of
//! another [`SCHEMA_VERSION`] whose schema for its record type did not change
//! is read (a process message written before version 2 with `exec_in` and
//! `drift` is; one without them is not), so an upgrade loses nothing it could
//! read. A message that cannot be read is skipped and counted as
//! undecodable, and the warning names the version it was written with next
//! to the one this build reads, so an operator sees old data or a newer
//! producer at once. A version header that is not a decimal number is
//! malformed: the message is skipped.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glasshouse_proto::record::{HEADER_RECORD_TYPE, HEADER_SCHEMA_VERSION, RecordType, TOPIC_CONTROL};
use glasshouse_proto::{SCHEMA_VERSION, file, gaps, ipc, network, process, resources, syscalls};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::error::{CheckpointError, CommandError, Skipped, StoreError};

/// Why consuming failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("kafka consumer for {brokers}: {source}")]
    Client {
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("analyzer state: {0}")]
    State(String),
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
pub const CONSUMED: [RecordType; 6] = [
    RecordType::Process,
    RecordType::Network,
    RecordType::File,
    RecordType::Syscalls,
    RecordType::Resources,
    RecordType::Gaps,
];

/// Handles the rows of one message; a message that cannot be decoded is
/// logged and skipped before it gets here.
pub trait RowHandler {
    fn handle_process(&mut self, rows: &[process::Row]);
    fn handle_network(&mut self, rows: &[network::Row]);
    fn handle_file(&mut self, rows: &[file::Row]);
    fn handle_resources(&mut self, rows: &[resources::Row]);
    /// Events the agent did not report: the window of the container (of the
    /// host when `container_id` is null) is not complete.
    fn handle_gaps(&mut self, rows: &[gaps::Row]);
    /// Syscall profiles; ignored unless overridden.
    fn handle_syscalls(&mut self, rows: &[syscalls::Row]) {
        let _ = rows;
    }
    /// Whether to consume operator commands (`glasshouse.control`).
    fn wants_control(&self) -> bool {
        false
    }
    /// One operator command (see [`crate::control`]) with its message key
    /// and signature header; an error says why it was not applied.
    fn handle_control(&mut self, key: &[u8], payload: &[u8], signature: Option<&[u8]>) -> Result<(), CommandError> {
        let _ = (key, payload, signature);
        Err(CommandError::NotConsumed)
    }
    /// The partition the rows of the next message come from.
    fn partition(&mut self, partition: i32) {
        let _ = partition;
    }
    /// Called about once a second.
    fn tick(&mut self) {}
    /// How often to [`checkpoint`](RowHandler::checkpoint); `None`: the
    /// handler keeps no state, offsets are stored as soon as a message is
    /// handled.
    fn checkpoint_interval(&self) -> Option<Duration> {
        None
    }
    /// Makes durable the state built from every message handled so far;
    /// their offsets are stored only when this succeeds.
    fn checkpoint(&mut self) -> impl Future<Output = Result<(), CheckpointError>> + Send {
        std::future::ready(Ok(()))
    }
    /// Partitions (numbers, the same for every consumed topic) now owned.
    fn assigned(&mut self, partitions: &[i32]) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = partitions;
        std::future::ready(Ok(()))
    }
    /// Partitions no longer owned.
    fn revoked(&mut self, partitions: &[i32]) {
        let _ = partitions;
    }
}

/// A partition assignment change, as the rebalance callback saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Moved {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Records assignment changes for the consume loop.
struct Context {
    moved: Arc<Mutex<Vec<Moved>>>,
}

impl ClientContext for Context {
    /// librdkafka's own log lines, into ours.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            tracing::warn!(fac, "kafka consumer: {log_message}");
        } else {
            tracing::debug!(fac, "kafka consumer: {log_message}");
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    let mut v: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let moved = match rebalance {
            Rebalance::Assign(tpl) => Moved::Assigned(partitions_of(tpl)),
            Rebalance::Revoke(tpl) => Moved::Revoked(partitions_of(tpl)),
            Rebalance::Error(error) => {
                tracing::warn!(%error, "consumer group rebalance failed");
                return;
            }
        };
        tracing::info!(?moved, "partitions moved");
        self.moved.lock().expect("not poisoned").push(moved);
    }
}

/// Consumes the topics of [`CONSUMED`] as a member of `group` until `cancel`.
pub async fn consume<H: RowHandler + Send>(
    settings: &ConsumerSettings,
    handler: &mut H,
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
        // Topics created a moment before (by the aggregator) may not show all
        // their partitions in the first metadata; refresh soon, not after the
        // librdkafka default of five minutes.
        .set("topic.metadata.refresh.interval.ms", "5000")
        // Alerts are as late as the slowest fetch: the broker may hold a
        // fetch this long when there is little to read (librdkafka: 500).
        .set("fetch.wait.max.ms", "100")
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
    let moved = Arc::new(Mutex::new(Vec::new()));
    let consumer: StreamConsumer<Context> = glasshouse_runtime::kafka::for_consumer(&mut client)
        .create_with_context(Context { moved: moved.clone() })
        .map_err(client_error)?;
    let mut topics = CONSUMED.map(RecordType::topic).to_vec();
    if handler.wants_control() {
        topics.push(TOPIC_CONTROL);
    }
    consumer.subscribe(&topics).map_err(client_error)?;
    tracing::info!(brokers, group, ?topics, "consuming");
    let mut stats = ConsumeStats::default();
    let mut error_logged_at: Option<Instant> = None;
    let interval = handler.checkpoint_interval();
    // Offsets (next to read) handled since the last checkpoint.
    let mut pending: HashMap<(String, i32), i64> = HashMap::new();
    let mut last_checkpoint = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            m = consumer.recv() => Some(m),
            _ = ticker.tick() => None,
            () = cancel.cancelled() => break,
        };
        // Partition moves first: no message of a partition before its state.
        let changes = std::mem::take(&mut *moved.lock().expect("not poisoned"));
        for change in changes {
            match change {
                Moved::Revoked(parts) => {
                    pending.retain(|(_, p), _| !parts.contains(p));
                    handler.revoked(&parts);
                }
                Moved::Assigned(parts) => {
                    if let Err(error) = handler.assigned(&parts).await {
                        // Without its state a partition would be learned from
                        // scratch and its offsets committed over the state:
                        // give up rather than corrupt it.
                        return Err(ConsumeError::State(format!(
                            "loading partitions {parts:?}: {}",
                            glasshouse_runtime::service::error_chain(&error)
                        )));
                    }
                }
            }
        }
        let Some(message) = message else {
            handler.tick();
            if let Some(every) = interval
                && last_checkpoint.elapsed() >= every
            {
                last_checkpoint = Instant::now();
                checkpoint(handler, &consumer, &mut pending).await;
            }
            continue;
        };
        match message {
            Ok(m) => {
                error_logged_at = None;
                handler.partition(m.partition());
                handle_message(&m, handler, &mut stats);
                if interval.is_some() {
                    pending.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
                } else if let Err(error) = consumer.store_offset_from_message(&m) {
                    tracing::warn!(%error, "cannot store offset");
                }
            }
            Err(error) => {
                // Broker down or topic missing: librdkafka retries by itself; say
                // so once per interval instead of once per poll.
                if error_logged_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(brokers, %error, "kafka consumer error, retrying");
                    error_logged_at = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Make the state durable and commit what it covers before leaving.
    if interval.is_some() {
        checkpoint(handler, &consumer, &mut pending).await;
    }
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(%error, "final offset commit skipped");
    }
    consumer.unsubscribe();
    Ok(stats)
}

/// Checkpoints the handler's state, then stores the offsets it covers.
async fn checkpoint<H: RowHandler + Send>(
    handler: &mut H,
    consumer: &StreamConsumer<Context>,
    pending: &mut HashMap<(String, i32), i64>,
) {
    let covered = std::mem::take(pending);
    match handler.checkpoint().await {
        Ok(()) => {
            for ((topic, partition), offset) in covered {
                let mut tpl = TopicPartitionList::new();
                let stored = tpl
                    .add_partition_offset(&topic, partition, Offset::Offset(offset))
                    .and_then(|()| consumer.store_offsets(&tpl));
                if let Err(error) = stored {
                    // A partition revoked meanwhile: its new owner replays.
                    tracing::debug!(%error, topic, partition, "offset not stored");
                }
            }
        }
        Err(error) => {
            tracing::warn!(
                error = %glasshouse_runtime::service::error_chain(&error),
                kind = ?error.kind(),
                "checkpoint failed; offsets not committed, retrying"
            );
            for (k, v) in covered {
                pending.entry(k).or_insert(v);
            }
        }
    }
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

/// Bytes of a malformed schema version header named in the log.
const MAX_HEADER_SHOWN: usize = 32;

/// The schema version a message says it was written with: `Ok(None)` without
/// the header, an error when the header is not a decimal number.
fn schema_version_of(header: Option<&[u8]>) -> Result<Option<u32>, Skipped> {
    let Some(value) = header else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            // A producer's header of any length: the log shows its start.
            let shown = &value[..value.len().min(MAX_HEADER_SHOWN)];
            Skipped::VersionHeader(String::from_utf8_lossy(shown).into_owned())
        })
}

/// The value of header `key` of `m`, if any.
fn header<'m>(m: &'m BorrowedMessage<'_>, key: &str) -> Option<&'m [u8]> {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == key))
        .and_then(|h| h.value)
}

fn handle_message<H: RowHandler + Send>(m: &BorrowedMessage<'_>, handler: &mut H, stats: &mut ConsumeStats) {
    stats.messages += 1;
    if m.topic() == TOPIC_CONTROL {
        let signature = header(m, crate::sign::HEADER);
        if let Err(error) =
            handler.handle_control(m.key().unwrap_or_default(), m.payload().unwrap_or_default(), signature)
        {
            stats.undecodable += 1;
            tracing::warn!(partition = m.partition(), offset = m.offset(), %error, "operator command not applied");
        }
        return;
    }
    let record_type_header = header(m, HEADER_RECORD_TYPE).map(|v| String::from_utf8_lossy(v).into_owned());
    let handled = decode_message(
        m.topic(),
        record_type_header.as_deref(),
        header(m, HEADER_SCHEMA_VERSION),
        m.payload(),
        handler,
    );
    match handled {
        Ok(rows) => stats.rows += rows as u64,
        Err(error) => {
            stats.undecodable += 1;
            tracing::warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                record_type = record_type_header,
                %error,
                "undecodable message, skipped"
            );
        }
    }
}

/// Decodes one message and hands its rows to `handler`; returns the number of
/// rows, or why the message is skipped (see the module documentation).
fn decode_message<H: RowHandler + Send>(
    topic: &str,
    record_type_header: Option<&str>,
    schema_version_header: Option<&[u8]>,
    payload: Option<&[u8]>,
    handler: &mut H,
) -> Result<usize, Skipped> {
    let record_type = record_type_of(topic, record_type_header).ok_or(Skipped::UnexpectedType)?;
    let version = schema_version_of(schema_version_header)?;
    let batch = ipc::decode(payload.ok_or(Skipped::Empty)?)?;
    let read = match record_type {
        RecordType::Process => process::read_rows(&batch).map(|rows| {
            handler.handle_process(&rows);
            rows.len()
        }),
        RecordType::Network => network::read_rows(&batch).map(|rows| {
            handler.handle_network(&rows);
            rows.len()
        }),
        RecordType::File => file::read_rows(&batch).map(|rows| {
            handler.handle_file(&rows);
            rows.len()
        }),
        RecordType::Resources => resources::read_rows(&batch).map(|rows| {
            handler.handle_resources(&rows);
            rows.len()
        }),
        RecordType::Syscalls => syscalls::read_rows(&batch).map(|rows| {
            handler.handle_syscalls(&rows);
            rows.len()
        }),
        RecordType::Gaps => gaps::read_rows(&batch).map(|rows| {
            handler.handle_gaps(&rows);
            rows.len()
        }),
        other => return Err(Skipped::NotConsumed(other)),
    };
    read.map_err(|source| match version {
        Some(version) if version != SCHEMA_VERSION => Skipped::OtherVersion {
            version,
            current: SCHEMA_VERSION,
            source,
        },
        _ => Skipped::Rows(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use glasshouse_proto::record::Attribution;

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
        assert_eq!(
            record_type_of("glasshouse.resources", Some("resources")),
            Some(RecordType::Resources)
        );
        assert_eq!(record_type_of("glasshouse.gaps", Some("gaps")), Some(RecordType::Gaps));
        assert_eq!(record_type_of("glasshouse.gaps", Some("resources")), None);
        assert_eq!(
            record_type_of("glasshouse.syscalls", Some("syscalls")),
            Some(RecordType::Syscalls)
        );
        assert_eq!(record_type_of("glasshouse.containers", None), None);
    }

    /// [`super::decode_message`] with the reason of a skip as its text.
    fn decode_message<H: RowHandler + Send>(
        topic: &str,
        record_type_header: Option<&str>,
        schema_version_header: Option<&[u8]>,
        payload: Option<&[u8]>,
        handler: &mut H,
    ) -> Result<usize, String> {
        super::decode_message(topic, record_type_header, schema_version_header, payload, handler)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn schema_version_headers_are_decimal_numbers() {
        assert_eq!(schema_version_of(None).ok(), Some(None));
        assert_eq!(schema_version_of(Some(b"2")).ok(), Some(Some(2)));
        assert_eq!(schema_version_of(Some(b"17")).ok(), Some(Some(17)));
        for bad in [&b""[..], b"v2", b"-1", b"2.0", b"\xff"] {
            let err = schema_version_of(Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("malformed schema version header"), "{err}");
        }
        // A long header is named by its first MAX_HEADER_SHOWN bytes only.
        let at = vec![b'7'; MAX_HEADER_SHOWN];
        let over = [&at[..], b"x"].concat();
        let err = schema_version_of(Some(&over)).unwrap_err().to_string();
        assert!(err.contains(&format!("{:?}", String::from_utf8_lossy(&at))), "{err}");
        assert!(!err.contains('x'), "{err}");
    }

    /// Counts the rows handed over, per record type.
    #[derive(Default)]
    struct Counted {
        process: usize,
        network: usize,
        file: usize,
        resources: usize,
        gaps: usize,
    }

    impl RowHandler for Counted {
        fn handle_process(&mut self, rows: &[process::Row]) {
            self.process += rows.len();
        }
        fn handle_network(&mut self, rows: &[network::Row]) {
            self.network += rows.len();
        }
        fn handle_file(&mut self, rows: &[file::Row]) {
            self.file += rows.len();
        }
        fn handle_resources(&mut self, rows: &[resources::Row]) {
            self.resources += rows.len();
        }
        fn handle_gaps(&mut self, rows: &[gaps::Row]) {
            self.gaps += rows.len();
        }
    }

    fn process_row(exec_in: bool) -> process::Row {
        process::Row {
            attribution: Attribution {
                agent_id: "a".into(),
                boot_id: 1,
                batch_seq: 1,
                host: "h".into(),
                container_id: Some("c0ffee".into()),
                workload_id: "localhost/app".into(),
                ..Default::default()
            },
            event_index: 0,
            time_unix_ns: 1_700_000_000_000_000_000,
            kind: process::Kind::Exec,
            pid: 7,
            ppid: 1,
            uid: 0,
            gid: 0,
            path: Some("/bin/true".into()),
            argv: vec!["true".into()],
            cwd: None,
            parent_exe: None,
            exit_code: None,
            count: 1,
            exec_in,
            drift: false,
            stdio_socket: false,
        }
    }

    /// A process message with the current schema, and one as the first
    /// version-1 aggregators wrote it: without `exec_in` and `drift`.
    fn process_messages() -> (Vec<u8>, Vec<u8>) {
        let mut b = process::Builder::default();
        b.append(&process_row(true));
        let batch = b.finish();
        let without: Vec<usize> = (0..batch.num_columns())
            .filter(|i| !["exec_in", "drift"].contains(&batch.schema().field(*i).name().as_str()))
            .collect();
        let old = batch.project(&without).unwrap();
        assert_eq!(old.num_columns() + 2, batch.num_columns());
        (ipc::encode(&batch).unwrap(), ipc::encode(&old).unwrap())
    }

    #[test]
    fn the_schema_decides_and_the_version_explains_a_skip() {
        let (current, old) = process_messages();
        let this = SCHEMA_VERSION.to_string();
        let mut h = Counted::default();
        let mut decode = |version: Option<&[u8]>, payload: &[u8]| {
            decode_message("glasshouse.process", Some("process"), version, Some(payload), &mut h)
        };
        // The current schema: read whatever the header says, or without one.
        assert_eq!(decode(Some(this.as_bytes()), &current), Ok(1));
        assert_eq!(decode(None, &current), Ok(1));
        assert_eq!(
            decode(Some(b"1"), &current),
            Ok(1),
            "a version-1 message with today's columns"
        );
        // A schema this build does not know: skipped, the version named.
        let err = decode(Some(b"1"), &old).unwrap_err();
        assert!(
            err.contains("not a glasshouse.process batch")
                && err.ends_with(&format!(
                    "(written with schema version 1, this analyzer reads {SCHEMA_VERSION})"
                )),
            "{err}"
        );
        let err = decode(None, &old).unwrap_err();
        assert!(!err.contains("schema version"), "{err}");
        // A malformed version header: skipped even if the schema would do.
        let err = decode(Some(b"two"), &current).unwrap_err();
        assert!(err.contains("malformed schema version header \"two\""), "{err}");
        assert_eq!(h.process, 3);

        // A newer producer whose resources schema did not change is read.
        let mut b = resources::Builder::default();
        b.append(&resources::Row {
            attribution: Attribution {
                agent_id: "a".into(),
                boot_id: 1,
                batch_seq: 1,
                host: "h".into(),
                container_id: Some("c0ffee".into()),
                workload_id: "localhost/app".into(),
                ..Default::default()
            },
            time_unix_ns: 1_700_000_000_000_000_000,
            counters: resources::Counters::default(),
        });
        let value = ipc::encode(&b.finish()).unwrap();
        let newer = (SCHEMA_VERSION + 1).to_string();
        assert_eq!(
            decode_message(
                "glasshouse.resources",
                Some("resources"),
                Some(newer.as_bytes()),
                Some(&value),
                &mut h
            ),
            Ok(1)
        );
        // A resources value on the process topic is not a process batch.
        assert!(decode_message("glasshouse.process", None, None, Some(&value), &mut h).is_err());
        assert_eq!((h.process, h.network, h.file, h.resources), (3, 0, 0, 1));
    }

    #[test]
    fn gap_messages_are_read_from_their_topic_only() {
        let gap = gaps::Row {
            attribution: Attribution {
                agent_id: "a".into(),
                boot_id: 1,
                batch_seq: 1,
                host: "h".into(),
                workload_id: "host:h".into(),
                ..Default::default()
            },
            start_unix_ns: 1_700_000_000_000_000_000,
            end_unix_ns: 1_700_000_001_000_000_000,
            reason: gaps::Reason::QueueFull,
            dropped: 5,
        };
        let mut b = gaps::Builder::default();
        b.append(&gap);
        b.append(&gap);
        let value = ipc::encode(&b.finish()).unwrap();
        let version = SCHEMA_VERSION.to_string();
        let mut h = Counted::default();
        assert_eq!(
            decode_message(
                "glasshouse.gaps",
                Some("gaps"),
                Some(version.as_bytes()),
                Some(&value),
                &mut h
            ),
            Ok(2)
        );
        // A gaps value elsewhere, or another value on the gaps topic, is not read.
        assert!(decode_message("glasshouse.resources", None, None, Some(&value), &mut h).is_err());
        let (process, _) = process_messages();
        let err = decode_message("glasshouse.gaps", None, None, Some(&process), &mut h).unwrap_err();
        assert!(err.contains("not a glasshouse.gaps batch"), "{err}");
        assert_eq!((h.process, h.resources, h.gaps), (0, 0, 2));
    }
}
