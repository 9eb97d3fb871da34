//! The Kafka sink shared by every stream of this aggregator: rows are appended
//! to one Arrow builder per record type and workload, flushed (all together)
//! by row count, size or age into one Arrow IPC message per record type and
//! workload (topic of the record type, key = workload id, so one workload
//! stays in one partition, in order), and every submitter is told once Kafka
//! has acknowledged all of its rows, of every type: process, network and file
//! events, syscall counts, resource samples and gaps alike.
//!
//! Backpressure: submissions go through a bounded channel, and the producer's
//! own queue is bounded; when Kafka is slow the sink stops taking submissions,
//! streams stop reading, and HTTP/2 flow control slows the agents down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use futures::future::join_all;
use glasshouse_proto::ipc;
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{file, gaps, inventory, network, process, resources, syscalls};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::decode::{BatchRows, RowsByWorkload};
use crate::internal_events;

/// Submissions buffered in front of the sink.
const SUBMISSION_QUEUE: usize = 64;
/// Pause before retrying when the producer queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Why rows could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("kafka delivery failed: {0}")]
    Delivery(String),
    #[error("arrow encoding failed: {0}")]
    Encode(String),
    /// Building this submission's rows failed (a panic in Arrow, caught):
    /// the batch is refused, the rows of other submissions are re-sent.
    #[error("rows could not be built: {0}")]
    Unbuildable(String),
    #[error("sink stopped")]
    Stopped,
}

struct Submission {
    rows: BatchRows,
    done: oneshot::Sender<Result<(), SinkError>>,
}

/// Hands rows to the sink.
#[derive(Debug, Clone)]
pub struct SinkHandle {
    tx: mpsc::Sender<Submission>,
}

/// Resolves when the rows of one submission are in Kafka (or failed).
pub type Completion = oneshot::Receiver<Result<(), SinkError>>;

impl SinkHandle {
    /// Queues rows; waits while the sink is saturated (backpressure).
    pub async fn submit(&self, rows: BatchRows) -> Result<Completion, SinkError> {
        let (done, completion) = oneshot::channel();
        self.tx
            .send(Submission { rows, done })
            .await
            .map_err(|_| SinkError::Stopped)?;
        Ok(completion)
    }
}

/// Sink settings.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub producer_id: String,
    pub flush_max_rows: usize,
    pub flush_max_bytes: usize,
    pub flush_max_age: Duration,
    /// Largest Kafka message value; bigger batches are split.
    pub max_message_bytes: usize,
}

/// Starts the sink task; it ends when every [`SinkHandle`] is dropped and all
/// deliveries are settled.
pub fn spawn(config: SinkConfig, producer: FutureProducer) -> (SinkHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(SUBMISSION_QUEUE);
    let task = tokio::spawn(run(config, producer, rx).instrument(tracing::info_span!("kafka-sink")));
    (SinkHandle { tx }, task)
}

/// What the sink needs of the row builder of one record type.
trait RecordBuilder: Default {
    type Row;
    const RECORD_TYPE: RecordType;
    fn append_row(&mut self, row: &Self::Row);
    fn has_rows(&self) -> bool;
    fn finish_batch(&mut self) -> RecordBatch;
}

macro_rules! record_builder {
    ($module:ident, $record_type:expr) => {
        impl RecordBuilder for $module::Builder {
            type Row = $module::Row;
            const RECORD_TYPE: RecordType = $record_type;

            fn append_row(&mut self, row: &$module::Row) {
                self.append(row);
            }

            fn has_rows(&self) -> bool {
                !self.is_empty()
            }

            fn finish_batch(&mut self) -> RecordBatch {
                self.finish()
            }
        }
    };
}

record_builder!(process, RecordType::Process);
record_builder!(network, RecordType::Network);
record_builder!(file, RecordType::File);
record_builder!(syscalls, RecordType::Syscalls);
record_builder!(resources, RecordType::Resources);
record_builder!(gaps, RecordType::Gaps);
record_builder!(inventory, RecordType::Inventory);

/// The open builders of one record type, one per workload.
type PerWorkload<B> = HashMap<Arc<str>, B>;

/// Appends groups of rows to their workloads' builders; returns the rows
/// added.
fn append_groups<B: RecordBuilder>(builders: &mut PerWorkload<B>, groups: RowsByWorkload<B::Row>) -> usize {
    let mut count = 0;
    for (workload, group) in groups {
        let b = builders.entry(workload).or_default();
        for row in &group {
            b.append_row(row);
        }
        count += group.len();
    }
    count
}

/// Finishes every non-empty builder into `out` and forgets them all.
fn finish_all<B: RecordBuilder>(builders: &mut PerWorkload<B>, out: &mut Vec<(RecordType, Arc<str>, RecordBatch)>) {
    out.extend(
        builders
            .drain()
            .filter(|(_, b)| b.has_rows())
            .map(|(w, mut b)| (B::RECORD_TYPE, w, b.finish_batch())),
    );
}

/// The open Arrow builders, per record type and workload.
#[derive(Default)]
struct Builders {
    process: PerWorkload<process::Builder>,
    network: PerWorkload<network::Builder>,
    file: PerWorkload<file::Builder>,
    syscalls: PerWorkload<syscalls::Builder>,
    resources: PerWorkload<resources::Builder>,
    gaps: PerWorkload<gaps::Builder>,
    inventory: PerWorkload<inventory::Builder>,
}

impl Builders {
    /// Appends a submission's rows, of every type; returns (rows, approximate
    /// bytes) added: the bytes as the decoder charged them.
    fn append(&mut self, rows: BatchRows) -> (usize, usize) {
        let BatchRows {
            process,
            network,
            file,
            syscalls,
            resources,
            gaps,
            inventory,
            bytes,
        } = rows;
        let added = [
            append_groups(&mut self.process, process),
            append_groups(&mut self.network, network),
            append_groups(&mut self.file, file),
            append_groups(&mut self.syscalls, syscalls),
            append_groups(&mut self.resources, resources),
            append_groups(&mut self.gaps, gaps),
            append_groups(&mut self.inventory, inventory),
        ]
        .into_iter()
        .sum();
        (added, bytes)
    }

    /// Finishes every non-empty builder and forgets them all: builders of
    /// workloads that went quiet would accumulate; they are cheap to recreate.
    fn finish(&mut self) -> Vec<(RecordType, Arc<str>, RecordBatch)> {
        let mut out = Vec::new();
        finish_all(&mut self.process, &mut out);
        finish_all(&mut self.network, &mut out);
        finish_all(&mut self.file, &mut out);
        finish_all(&mut self.syscalls, &mut out);
        finish_all(&mut self.resources, &mut out);
        finish_all(&mut self.gaps, &mut out);
        finish_all(&mut self.inventory, &mut out);
        out
    }
}

/// Fault injection for the tests, in debug builds only (release builds do
/// not contain it): exec rows of workload [`FAULT_UNBUILDABLE`] make
/// appending panic, as Arrow's builders would on an overflow (the batch is
/// refused, the sink lives on); rows of [`FAULT_SINK_DEATH`] make the sink
/// task itself panic (health `NOT_SERVING`, the process exits non-zero).
#[cfg(debug_assertions)]
pub const FAULT_UNBUILDABLE: &str = "glasshouse-fault/unbuildable";
#[cfg(debug_assertions)]
pub const FAULT_SINK_DEATH: &str = "glasshouse-fault/sink-death";

#[cfg(debug_assertions)]
fn injected(rows: &BatchRows, workload: &str) -> bool {
    rows.process.iter().any(|(w, _)| &**w == workload)
}

async fn run(config: SinkConfig, producer: FutureProducer, mut rx: mpsc::Receiver<Submission>) {
    let mut builders = Builders::default();
    let mut waiters: Vec<oneshot::Sender<Result<(), SinkError>>> = Vec::new();
    let mut rows = 0usize;
    let mut bytes = 0usize;
    let mut opened: Option<Instant> = None;
    let mut deliveries = Vec::new();
    loop {
        let deadline = opened.map(|t| t + config.flush_max_age);
        let flush_now = tokio::select! {
            sub = rx.recv() => match sub {
                Some(sub) => {
                    // A panic while appending (Arrow's builders panic on an
                    // offset overflow) must not end the sink, which every
                    // stream shares: the builders may be half-written, so
                    // they are dropped; this submission is refused, the
                    // others buffered with it fail and their agents re-send.
                    let rows_in = sub.rows;
                    #[cfg(debug_assertions)]
                    if injected(&rows_in, FAULT_SINK_DEATH) {
                        panic!("injected fault: the sink dies");
                    }
                    let appended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        #[cfg(debug_assertions)]
                        if injected(&rows_in, FAULT_UNBUILDABLE) {
                            panic!("injected fault: rows that cannot be built");
                        }
                        builders.append(rows_in)
                    }));
                    match appended {
                        Ok((added_rows, added_bytes)) => {
                            rows += added_rows;
                            bytes += added_bytes;
                            waiters.push(sub.done);
                            opened.get_or_insert_with(Instant::now);
                            rows >= config.flush_max_rows || bytes >= config.flush_max_bytes
                        }
                        Err(panic) => {
                            let why = panic_message(panic.as_ref());
                            tracing::error!(error = %why, "building rows failed; batch refused, buffered rows re-sent");
                            builders = Builders::default();
                            // Ignored errors: those streams are gone; their agents re-send.
                            let _ = sub.done.send(Err(SinkError::Unbuildable(why.clone())));
                            for w in waiters.drain(..) {
                                let _ = w.send(Err(SinkError::Delivery(format!("batch buffered with a failed one: {why}"))));
                            }
                            (rows, bytes, opened) = (0, 0, None);
                            false
                        }
                    }
                }
                None => break,
            },
            () = sleep_until(deadline), if deadline.is_some() => true,
        };
        if flush_now {
            deliveries.push(flush(&config, &producer, &mut builders, std::mem::take(&mut waiters)).await);
            rows = 0;
            bytes = 0;
            opened = None;
            deliveries.retain(|d: &tokio::task::JoinHandle<()>| !d.is_finished());
        }
    }
    if !waiters.is_empty() {
        deliveries.push(flush(&config, &producer, &mut builders, waiters).await);
    }
    join_all(deliveries).await;
}

/// Produces every builder's batch (of every record type) and spawns the wait
/// for their deliveries, which settles all `waiters` at once: a submitter
/// hears back only when all of its rows, of every type, are in Kafka.
async fn flush(
    config: &SinkConfig,
    producer: &FutureProducer,
    builders: &mut Builders,
    waiters: Vec<oneshot::Sender<Result<(), SinkError>>>,
) -> tokio::task::JoinHandle<()> {
    let mut futures = Vec::new();
    let mut failure = None;
    // As when appending: a panic finishing the builders fails this flush
    // (its submitters' agents re-send), not the sink.
    let finished =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builders.finish())).unwrap_or_else(|panic| {
            let why = panic_message(panic.as_ref());
            tracing::error!(error = %why, "finishing arrow batches failed");
            failure = Some(SinkError::Encode(why));
            *builders = Builders::default();
            Vec::new()
        });
    for (record_type, workload, batch) in finished {
        match encode_split(&batch, config.max_message_bytes) {
            Ok(values) => {
                for value in values {
                    let bytes = value.len();
                    let started = std::time::Instant::now();
                    match produce(producer, &config.producer_id, record_type, &workload, value).await {
                        Ok(f) => futures.push(async move {
                            let outcome = f.await;
                            match &outcome {
                                Ok(Ok(_)) => internal_events::message_delivered(bytes, started.elapsed()),
                                _ => internal_events::message_failed(),
                            }
                            outcome
                        }),
                        Err(e) => {
                            internal_events::message_failed();
                            failure = Some(SinkError::Delivery(e.to_string()));
                        }
                    }
                }
            }
            Err(e) => failure = Some(SinkError::Encode(e.to_string())),
        }
    }
    tokio::spawn(async move {
        let mut result = failure.map_or(Ok(()), Err);
        for outcome in join_all(futures).await {
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => result = Err(SinkError::Delivery(e.to_string())),
                Err(_) => result = Err(SinkError::Delivery("delivery cancelled".into())),
            }
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "flush to kafka failed; submitters are told and agents will re-send");
        }
        for w in waiters {
            // Ignored error: the stream that waited is gone; its agent re-sends.
            let _ = w.send(result.clone());
        }
    })
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".to_owned())
}

/// Encodes a batch, halving it until each part fits in `max_bytes` and
/// passes the consumers' own size check ([`ipc::check_sizes`]): a message the
/// aggregator produces (and so acknowledges) is one consumers decode. A
/// single row that still does not pass is an error (the decoder's byte
/// budget keeps rows far below it).
fn encode_split(batch: &RecordBatch, max_bytes: usize) -> Result<Vec<Vec<u8>>, ArrowError> {
    let bytes = ipc::encode(batch)?;
    let decodable = ipc::check_sizes(&bytes);
    if bytes.len() <= max_bytes && decodable.is_ok() {
        return Ok(vec![bytes]);
    }
    if batch.num_rows() <= 1 {
        return match decodable {
            Ok(_) => Ok(vec![bytes]),
            Err(e) => Err(ArrowError::InvalidArgumentError(format!(
                "one row consumers would refuse: {e}"
            ))),
        };
    }
    let half = batch.num_rows() / 2;
    let mut out = encode_split(&batch.slice(0, half), max_bytes)?;
    out.extend(encode_split(&batch.slice(half, batch.num_rows() - half), max_bytes)?);
    Ok(out)
}

async fn produce(
    producer: &FutureProducer,
    producer_id: &str,
    record_type: RecordType,
    workload: &str,
    value: Vec<u8>,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    let headers = glasshouse_runtime::kafka::record_headers(record_type, producer_id);
    let mut record = FutureRecord::to(record_type.topic())
        .key(workload)
        .payload(&value)
        .headers(headers);
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                // The producer queue is full: Kafka is slow. Wait (backpressure).
                record = back;
                producer.poll(Duration::ZERO);
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

#[cfg(test)]
mod tests {
    use glasshouse_proto::v1;

    use super::*;
    use crate::decode::StreamTables;

    const LIMITS: crate::decode::Limits = crate::decode::Limits {
        max_batch_events: 100_000,
        max_strings: 100_000,
        max_batch_bytes: 1 << 30,
        max_string_bytes: 1 << 30,
        time_window: None,
    };

    /// The contract of `glasshouse_proto::limits`: what consumers decode of a
    /// message (the sizes its compressed buffers claim) stays under twice
    /// the rows' `approx_bytes`, for the shapes a hostile agent can choose.
    #[test]
    fn decoded_bytes_stay_under_twice_the_budgeted_row_bytes() {
        let hello = v1::Hello {
            agent_id: "a".into(),
            hostname: "h".into(),
            ..Default::default()
        };
        let exec = |argv: Vec<u32>| v1::ProcessEvent {
            kind: v1::ProcessEventKind::Exec as i32,
            argv,
            ..Default::default()
        };
        let string = |id: u32, len: usize| v1::StringDef {
            id,
            value: (0..len).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>().into(),
        };
        let shapes: Vec<(&str, Vec<v1::StringDef>, Vec<v1::ProcessEvent>)> = vec![
            ("bare rows", vec![], (0..20_000).map(|_| exec(vec![])).collect()),
            (
                "many one-byte arguments",
                vec![string(1, 1)],
                (0..200).map(|_| exec(vec![1; 5_000])).collect(),
            ),
            (
                "one long string referenced often",
                vec![string(1, 100_000)],
                (0..100).map(|_| exec(vec![1; 10])).collect(),
            ),
        ];
        for (shape, strings, process_events) in shapes {
            let batch = v1::Batch {
                sequence: 1,
                base_time_unix_ns: 1_700_000_000_000_000_000,
                strings,
                process_events,
                ..Default::default()
            };
            let rows = StreamTables::new(&hello, LIMITS).resolve(batch).unwrap();
            let mut builders = Builders::default();
            let (_, budgeted) = builders.append(rows);
            let finished = builders.finish();
            let decoded: u64 = finished
                .iter()
                .map(|(_, _, b)| ipc::check_sizes(&ipc::encode(b).unwrap()).unwrap())
                .sum();
            assert!(
                decoded <= 2 * budgeted as u64,
                "{shape}: {decoded} decoded bytes for {budgeted} budgeted"
            );
        }
    }

    #[test]
    fn a_batch_consumers_would_refuse_is_split_until_each_part_passes_their_check() {
        // Rows of 1 MiB that compress well: a few hundred MiB claimed in
        // one message, far under max_message_bytes once compressed.
        let hello = v1::Hello {
            agent_id: "a".into(),
            hostname: "h".into(),
            ..Default::default()
        };
        let batch = v1::Batch {
            sequence: 1,
            base_time_unix_ns: 1_700_000_000_000_000_000,
            strings: vec![v1::StringDef {
                id: 1,
                value: vec![b'x'; 1 << 20].into(),
            }],
            process_events: (0..300)
                .map(|_| v1::ProcessEvent {
                    kind: v1::ProcessEventKind::Exec as i32,
                    path: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let rows = StreamTables::new(&hello, LIMITS).resolve(batch).unwrap();
        let mut builders = Builders::default();
        builders.append(rows);
        let (_, _, batch) = builders.finish().remove(0);
        let whole = ipc::encode(&batch).unwrap();
        assert!(
            ipc::check_sizes(&whole).is_err(),
            "the whole batch is over the consumers' limit"
        );
        let parts = encode_split(&batch, 64 << 20).unwrap();
        assert!(parts.len() >= 2, "{} parts", parts.len());
        let mut rows = 0;
        for p in &parts {
            ipc::check_sizes(p).unwrap();
            rows += ipc::decode(p).unwrap().num_rows();
        }
        assert_eq!(rows, 300, "no row lost in the split");
    }

    /// One host exec, one syscall profile of two syscalls, one resource
    /// sample and one gap of container 1 (workload `localhost/app`), and one
    /// gap of the host.
    fn rows() -> BatchRows {
        let hello = v1::Hello {
            agent_id: "a1".into(),
            boot_id: 1,
            hostname: "h1".into(),
            ..Default::default()
        };
        let s = |id: u32, v: &str| v1::StringDef {
            id,
            value: v.as_bytes().to_vec().into(),
        };
        let t = 1_700_000_000_000_000_000;
        let batch = v1::Batch {
            sequence: 1,
            base_time_unix_ns: t,
            strings: vec![s(1, "c0ffee"), s(2, "localhost/app")],
            containers: vec![v1::ContainerDef {
                r#ref: 1,
                container_id: 1,
                workload_id: 2,
                ..Default::default()
            }],
            process_events: vec![v1::ProcessEvent {
                kind: v1::ProcessEventKind::Exec as i32,
                pid: 1,
                ..Default::default()
            }],
            syscall_profiles: vec![v1::SyscallProfile {
                container: 1,
                start_unix_ns: t,
                end_unix_ns: t + 10,
                nr: vec![0, 1],
                count: vec![5, 6],
                arch: "x86_64".into(),
            }],
            resource_samples: vec![v1::ResourceSample {
                container: 1,
                time_unix_ns: t + 10,
                ..Default::default()
            }],
            gaps: vec![
                v1::Gap {
                    container: 1,
                    start_unix_ns: t,
                    end_unix_ns: t + 10,
                    dropped: 3,
                    reason: v1::GapReason::RateLimited as i32,
                },
                v1::Gap {
                    container: 0,
                    start_unix_ns: t,
                    end_unix_ns: t + 10,
                    dropped: 4,
                    reason: v1::GapReason::QueueFull as i32,
                },
            ],
            ..Default::default()
        };
        StreamTables::new(&hello, LIMITS).resolve(batch).unwrap()
    }

    #[test]
    fn every_record_type_is_flushed_to_its_topic_per_workload() {
        let mut builders = Builders::default();
        let (rows, bytes) = builders.append(rows());
        assert_eq!(rows, 6);
        assert!(bytes > 6 * 80, "{bytes}");
        let (rows, _) = builders.append(self::rows());
        assert_eq!(rows, 6);

        let mut batches: Vec<_> = builders
            .finish()
            .into_iter()
            .map(|(t, w, b)| (t, w.to_string(), b.num_rows()))
            .collect();
        batches.sort();
        assert_eq!(
            batches,
            [
                (RecordType::Process, "host:h1".to_owned(), 2),
                (RecordType::Syscalls, "localhost/app".to_owned(), 4),
                (RecordType::Resources, "localhost/app".to_owned(), 2),
                (RecordType::Gaps, "host:h1".to_owned(), 2),
                (RecordType::Gaps, "localhost/app".to_owned(), 2),
            ]
        );
        assert!(builders.finish().is_empty(), "finishing forgets the builders");
    }
}
