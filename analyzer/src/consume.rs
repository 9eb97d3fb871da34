//! The consumer-group loop: this instance owns some partitions of the event
//! topics, and so the workloads keyed to them. A message's offset is stored only
//! after its rows were handled, and committed (periodically and at shutdown)
//! from the stored offsets: at-least-once.
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

use std::collections::BTreeMap;
use std::time::Duration;

use glasshouse_proto::record::{HEADER_RECORD_TYPE, HEADER_SCHEMA_VERSION, RecordType};
use glasshouse_proto::{SCHEMA_VERSION, file, gaps, ipc, network, process, resources};
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

/// The record types consumed, one topic each (`glasshouse.syscalls` is not,
/// yet: nothing uses syscall profiles so far).
pub const CONSUMED: [RecordType; 5] = [
    RecordType::Process,
    RecordType::Network,
    RecordType::File,
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
        // Topics created a moment before (by the aggregator) may not show all
        // their partitions in the first metadata; refresh soon, not after the
        // librdkafka default of five minutes.
        .set("topic.metadata.refresh.interval.ms", "5000")
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

/// The schema version a message says it was written with: `Ok(None)` without
/// the header, an error when the header is not a decimal number.
fn schema_version_of(header: Option<&[u8]>) -> Result<Option<u32>, String> {
    let Some(value) = header else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| format!("malformed schema version header {:?}", String::from_utf8_lossy(value)))
}

/// The value of header `key` of `m`, if any.
fn header<'m>(m: &'m BorrowedMessage<'_>, key: &str) -> Option<&'m [u8]> {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == key))
        .and_then(|h| h.value)
}

fn handle_message(m: &BorrowedMessage<'_>, handler: &mut (dyn RowHandler + Send), stats: &mut ConsumeStats) {
    stats.messages += 1;
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
fn decode_message(
    topic: &str,
    record_type_header: Option<&str>,
    schema_version_header: Option<&[u8]>,
    payload: Option<&[u8]>,
    handler: &mut (dyn RowHandler + Send),
) -> Result<usize, String> {
    let record_type = record_type_of(topic, record_type_header).ok_or("unexpected record type")?;
    let version = schema_version_of(schema_version_header)?;
    let batch = ipc::decode(payload.ok_or("empty message")?).map_err(|e| e.to_string())?;
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
        RecordType::Gaps => gaps::read_rows(&batch).map(|rows| {
            handler.handle_gaps(&rows);
            rows.len()
        }),
        other => return Err(format!("record type {other} is not consumed")),
    };
    read.map_err(|error| match version {
        Some(v) if v != SCHEMA_VERSION => {
            format!("{error} (written with schema version {v}, this analyzer reads {SCHEMA_VERSION})")
        }
        _ => error.to_string(),
    })
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
        assert_eq!(
            record_type_of("glasshouse.resources", Some("resources")),
            Some(RecordType::Resources)
        );
        assert_eq!(record_type_of("glasshouse.gaps", Some("gaps")), Some(RecordType::Gaps));
        assert_eq!(record_type_of("glasshouse.gaps", Some("resources")), None);
        assert_eq!(record_type_of("glasshouse.syscalls", Some("syscalls")), None);
    }

    #[test]
    fn schema_version_headers_are_decimal_numbers() {
        assert_eq!(schema_version_of(None), Ok(None));
        assert_eq!(schema_version_of(Some(b"2")), Ok(Some(2)));
        assert_eq!(schema_version_of(Some(b"17")), Ok(Some(17)));
        for bad in [&b""[..], b"v2", b"-1", b"2.0", b"\xff"] {
            let err = schema_version_of(Some(bad)).unwrap_err();
            assert!(err.starts_with("malformed schema version header"), "{err}");
        }
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
            agent_id: "a".into(),
            boot_id: 1,
            batch_seq: 1,
            event_index: 0,
            time_unix_ns: 1_700_000_000_000_000_000,
            host: "h".into(),
            container_id: Some("c0ffee".into()),
            container_name: None,
            image: None,
            image_id: None,
            workload_id: "localhost/app".into(),
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
            agent_id: "a".into(),
            boot_id: 1,
            batch_seq: 1,
            host: "h".into(),
            container_id: "c0ffee".into(),
            container_name: None,
            image: None,
            image_id: None,
            workload_id: "localhost/app".into(),
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
            agent_id: "a".into(),
            boot_id: 1,
            batch_seq: 1,
            host: "h".into(),
            container_id: None,
            container_name: None,
            image: None,
            image_id: None,
            workload_id: "host:h".into(),
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
