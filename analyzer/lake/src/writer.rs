//! The lake writer: a Kafka consumer group of its own over every topic of
//! the catalog, appending each message's rows to its table's tail, flushing
//! tails to Parquet by rows or age, and storing a topic's offsets only once
//! the rows before them are in Parquet (at-least-once: after a crash between
//! a flush and the offset commit, rows are written twice; event tables carry
//! their event id for de-duplication).
//!
//! Backpressure: none is needed towards Kafka (the writer pulls); the tail is
//! bounded by `flush_rows` per table, flushed on the next tick when reached.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use datafusion::arrow::record_batch::RecordBatch;

use crate::catalog::{Format, TABLES, TableDef};
use crate::decode::{self, JsonRows};
use crate::lake::Lake;

/// Why the writer stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("kafka client for {brokers}")]
    Client {
        brokers: String,
        #[source]
        source: KafkaError,
    },
}

/// Where the writer reads from.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub brokers: String,
    pub group_id: String,
    /// Static group membership (`group.instance.id`): a writer restarted
    /// after a crash takes its partitions back at once instead of waiting
    /// for the group to expire the dead member. `None`: dynamic membership.
    pub instance_id: Option<String>,
    /// How soon the partitions of a writer that died are given to another.
    pub session_timeout_ms: u32,
    /// Extra librdkafka properties, applied last.
    pub extra: BTreeMap<String, String>,
    pub compact_interval: Option<Duration>,
}

/// Counts of what the writer did (logged at shutdown).
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub messages: u64,
    pub rows: u64,
    pub skipped: u64,
    pub files: u64,
    /// Commits that failed (rows kept for the next try).
    pub failed_commits: u64,
}

/// The consumer settings of a lake writer (either format): offsets stored
/// by the writer once rows are durable, committed to the group every
/// second.
pub(crate) fn client_config(settings: &WriterSettings) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Topics created later (e.g. glasshouse.vulnerabilities) are picked
        // up at the next metadata refresh.
        .set("topic.metadata.refresh.interval.ms", "5000")
        .set("fetch.wait.max.ms", "100")
        .set("session.timeout.ms", settings.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (settings.session_timeout_ms / 3).max(100).to_string(),
        )
        .set(
            "max.poll.interval.ms",
            (settings.session_timeout_ms.saturating_mul(3)).to_string(),
        );
    if let Some(id) = &settings.instance_id {
        client.set("group.instance.id", id);
    }
    for (k, v) in &settings.extra {
        client.set(k, v);
    }
    glasshouse_runtime::kafka::for_consumer(&mut client);
    client
}

/// Runs the writer until `cancel`; flushes every tail before it returns.
pub async fn run(
    lake: Arc<Lake>,
    settings: WriterSettings,
    cancel: CancellationToken,
) -> Result<WriterStats, WriterError> {
    let client_error = |source| WriterError::Client {
        brokers: settings.brokers.clone(),
        source,
    };
    let consumer: StreamConsumer = client_config(&settings).create().map_err(client_error)?;
    let topics: Vec<&str> = TABLES.iter().map(|t| t.topic).collect();
    consumer.subscribe(&topics).map_err(client_error)?;
    info!(brokers = %settings.brokers, group = %settings.group_id, "lake writer consuming");

    let mut ingest = Ingest::new(lake.clone());
    // Next offsets to store per table, for rows now in its tail.
    let mut pending: HashMap<&'static str, HashMap<i32, i64>> = HashMap::new();
    let mut stats = WriterStats::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut compact_at = settings.compact_interval.map(|d| tokio::time::Instant::now() + d);
    loop {
        tokio::select! {
            m = consumer.recv() => match m {
                Ok(m) => {
                    let Some(def) = crate::catalog::by_topic(m.topic()) else { continue };
                    // A tombstone (compacted topics: the key was deleted): the
                    // rows before it stay in the lake's history.
                    if m.payload().is_none() {
                        continue;
                    }
                    stats.messages += 1;
                    let time_ns = m.timestamp().to_millis().unwrap_or(0).saturating_mul(1_000_000);
                    match ingest.message(m.topic(), m.payload().unwrap_or_default(), m.key(), time_ns) {
                        Ok(n) => stats.rows += n as u64,
                        Err(e) => {
                            stats.skipped += 1;
                            let version = m.headers().and_then(|h| {
                                use rdkafka::message::Headers;
                                h.iter().find(|h| h.key == glasshouse_proto::record::HEADER_SCHEMA_VERSION)
                                    .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                            });
                            warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(),
                                schema_version = ?version, ours = glasshouse_proto::SCHEMA_VERSION,
                                error = %e, "lake skipped a message it cannot read");
                        }
                    }
                    pending.entry(def.name).or_default().insert(m.partition(), m.offset() + 1);
                }
                Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)) => {
                    // A topic of the catalog that does not exist (yet): its table is empty.
                    debug!("lake: a subscribed topic does not exist yet");
                }
                Err(e) => {
                    warn!(error = %e, "lake consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = ticker.tick() => {
                for def in TABLES {
                    if lake.flush_due(def.name) {
                        flush(&lake, def, &consumer, &mut pending, &mut stats).await;
                    }
                }
                lake.delete_doomed(false).await;
                if compact_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    compact_at = settings.compact_interval.map(|d| tokio::time::Instant::now() + d);
                    lake.expire(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX));
                    if let Err(e) = lake.compact().await {
                        warn!(error = %e, "lake compaction failed; will retry");
                    }
                }
            }
            () = cancel.cancelled() => break,
        }
    }
    for def in TABLES {
        flush(&lake, def, &consumer, &mut pending, &mut stats).await;
    }
    stats.stopped(&consumer, "parquet");
    Ok(stats)
}

impl WriterStats {
    /// At shutdown: commits the group offsets stored so far and logs what
    /// the writer (of lake `format`) did.
    pub(crate) fn stopped<C: rdkafka::consumer::ConsumerContext>(&self, consumer: &StreamConsumer<C>, format: &str) {
        if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            warn!(error = %e, format, "lake offsets not committed to the group at shutdown");
        }
        info!(
            format,
            messages = self.messages,
            rows = self.rows,
            skipped = self.skipped,
            files = self.files,
            "lake writer stopped"
        );
    }
}

/// Turns message values into rows of the lake's tables (for any lake
/// format: it needs only the catalog).
#[derive(Debug)]
pub struct Decoder {
    json: HashMap<&'static str, JsonRows>,
}

impl Default for Decoder {
    fn default() -> Decoder {
        let json = TABLES
            .iter()
            .filter_map(|def| match def.format {
                Format::Json(cols) => Some((def.name, JsonRows::new(cols, crate::catalog::schema(def)))),
                Format::Arrow(_) => None,
            })
            .collect();
        Decoder { json }
    }
}

impl Decoder {
    /// The table one message of `topic` fills and its rows (`time_ns`: the
    /// message timestamp); none for a tombstone.
    pub fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        key: Option<&[u8]>,
        time_ns: i64,
    ) -> Result<(&'static TableDef, Vec<RecordBatch>), IngestError> {
        let def = crate::catalog::by_topic(topic).ok_or_else(|| IngestError::UnknownTopic(topic.into()))?;
        if payload.is_empty() {
            // A tombstone of a compacted topic.
            return Ok((def, Vec::new()));
        }
        let batches = match (def.format, self.json.get_mut(def.name)) {
            (Format::Json(_), Some(rows)) => {
                rows.append(payload, key, time_ns)?;
                vec![rows.finish()]
            }
            _ => decode::arrow_message(payload, &crate::catalog::schema(def))?,
        };
        Ok((def, batches))
    }
}

/// Turns message values into rows of the Parquet lake's tables.
#[derive(Debug)]
pub struct Ingest {
    lake: Arc<Lake>,
    decoder: Decoder,
}

/// Why a message gave no rows.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no table reads topic {0:?}")]
    UnknownTopic(String),
    #[error(transparent)]
    Decode(#[from] decode::DecodeError),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
}

impl Ingest {
    pub fn new(lake: Arc<Lake>) -> Ingest {
        Ingest {
            lake,
            decoder: Decoder::default(),
        }
    }

    /// Appends the rows of one message of `topic` to its table's tail
    /// (`time_ns`: the message timestamp); returns how many.
    pub fn message(
        &mut self,
        topic: &str,
        payload: &[u8],
        key: Option<&[u8]>,
        time_ns: i64,
    ) -> Result<usize, IngestError> {
        let (def, batches) = self.decoder.decode(topic, payload, key, time_ns)?;
        if batches.is_empty() {
            return Ok(0);
        }
        let n = batches.iter().map(|b| b.num_rows()).sum();
        self.lake.append(def.name, batches)?;
        Ok(n)
    }
}

async fn flush(
    lake: &Lake,
    def: &'static TableDef,
    consumer: &StreamConsumer,
    pending: &mut HashMap<&'static str, HashMap<i32, i64>>,
    stats: &mut WriterStats,
) {
    if lake.tail_rows(def.name) > 0 {
        match lake.flush(def.name).await {
            Ok(work) => {
                stats.files += work.files_written as u64;
                debug!(
                    table = def.name,
                    files = work.files_written,
                    rows = work.rows_written,
                    "lake flushed"
                );
            }
            Err(e) => {
                // The rows stay in the tail and their offsets unstored: the
                // next tick tries again.
                warn!(table = def.name, error = %e, "lake flush failed; will retry");
                return;
            }
        }
    }
    let Some(offsets) = pending.remove(def.name) else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    for (partition, next) in offsets {
        if let Err(e) = tpl.add_partition_offset(def.topic, partition, Offset::Offset(next)) {
            warn!(topic = def.topic, error = %e, "lake offset not stored");
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // A revoked partition: its new owner reads from the last commit.
        debug!(topic = def.topic, error = %e, "lake offsets not stored");
    }
}
