//! The lake as Iceberg tables (`lake.format = "iceberg"`): opening them
//! from the config, and the writer that commits each table's rows with
//! the Kafka offsets they came from, exactly once per offset.
//!
//! The writer is a consumer group (several analyzer replicas share the
//! partitions). For each table it keeps the rows of each partition it
//! consumed since its last commit, and commits them all together every
//! `flush_secs` (sooner by `flush_rows` or `flush_bytes`) through
//! [`glasshouse_iceberg::LakeTable::append`], which records the offset
//! ranges in the same Iceberg commit. Where a partition resumes comes
//! from the table, not from the consumer group: the first message of a
//! partition after an assignment looks up the table's high-water mark,
//! and a range always starts where the table's ends. A message below the
//! mark is skipped; one above it (the group's offset ran ahead of the
//! table, or the consumer skipped) seeks the partition back to the mark;
//! if the first message after that seek is still above it, the offsets in
//! between are gone from Kafka (retention), which is logged as a warning.
//! The group's offsets are stored only after a commit. A commit refused
//! because another writer committed the partition first (it was
//! reassigned), or because the table's mark is behind the range (a commit
//! the catalog lost), drops that partition's rows and reads it again from
//! the table's mark; the other partitions' rows are committed. A failed
//! commit keeps the rows for the next tick, and consumption pauses while
//! more than twice `flush_bytes` wait. The writers are dynamic members of
//! their group, and each watches for partitions the group left unread
//! ([`Watch`]): it joins the group again when it sees one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
pub use glasshouse_iceberg::{Appended, DataFiles, OffsetRange};
use glasshouse_iceberg::{CatalogKind, Error as LakeError, LakeTable, Settings, Warehouse};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::catalog::{TABLES, TableDef};
use crate::config::{CatalogKindConfig, LakeConfig};
use crate::engine::{Engine, EngineError, Limits};
use crate::writer::{Decoder, WriterError, WriterSettings, WriterStats};

/// Snapshots older than this are expired (metadata only; the rows stay).
const SNAPSHOT_AGE: Duration = Duration::from_secs(3600);
/// Snapshots kept whatever their age.
const SNAPSHOTS_KEPT: usize = 10;

/// The iceberg-rust settings of `config` (a `format = "iceberg"` lake).
pub fn settings(config: &LakeConfig) -> Result<Settings, String> {
    let local = !config.location.starts_with("s3://");
    let root = || {
        std::path::absolute(&config.location)
            .map(|p| p.display().to_string())
            .map_err(|e| format!("`lake.location` {:?}: {e}", config.location))
    };
    let catalog = match config.catalog.kind {
        CatalogKindConfig::Sql => CatalogKind::Sql {
            uri: match (&config.catalog.uri, local) {
                (Some(uri), _) => uri.clone(),
                (None, true) => format!("sqlite://{}/catalog.db?mode=rwc", root()?),
                (None, false) => {
                    return Err("`lake.catalog.uri` is required for a sql catalog with an s3:// location".into());
                }
            },
        },
        CatalogKindConfig::Rest => CatalogKind::Rest {
            uri: config
                .catalog
                .uri
                .clone()
                .ok_or("`lake.catalog.uri` is required for a rest catalog")?,
        },
    };
    let warehouse = match (&config.catalog.warehouse, local) {
        (Some(w), _) => w.clone(),
        (None, true) => format!("file://{}/warehouse", root()?),
        (None, false) => config.location.clone(),
    };
    let mut properties = HashMap::new();
    let s3 = &config.s3;
    if let Some(endpoint) = &s3.endpoint {
        properties.insert("s3.endpoint".to_owned(), endpoint.clone());
        properties.insert("s3.path-style-access".to_owned(), "true".to_owned());
    }
    if let Some(region) = &s3.region {
        properties.insert("s3.region".to_owned(), region.clone());
    }
    if let Some(key) = &s3.access_key_id {
        properties.insert("s3.access-key-id".to_owned(), key.clone());
    }
    if let Some(secret) = s3.read_secret()? {
        properties.insert("s3.secret-access-key".to_owned(), secret);
    }
    if let Some(path) = &config.catalog.token_file {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("`lake.catalog.token_file` {}: {e}", path.display()))?;
        properties.insert("token".to_owned(), text.lines().next().unwrap_or("").trim().to_owned());
    }
    if let Some(path) = &config.catalog.credential_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("`lake.catalog.credential_file` {}: {e}", path.display()))?;
        let credential = text.lines().next().unwrap_or("").trim();
        if !credential.contains(':') {
            return Err(format!(
                "`lake.catalog.credential_file` {}: its first line must be CLIENT_ID:CLIENT_SECRET",
                path.display()
            ));
        }
        properties.insert("credential".to_owned(), credential.to_owned());
    }
    if config.catalog.token_refresh_secs == 0 {
        return Err("`lake.catalog.token_refresh_secs` must be at least 1".into());
    }
    Ok(Settings {
        catalog,
        warehouse,
        namespace: config.catalog.namespace.clone(),
        properties,
        token_refresh: Some(Duration::from_secs(config.catalog.token_refresh_secs)),
    })
}

/// An Arrow IPC stream of `batches` (just the schema when empty).
fn ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, datafusion::arrow::error::ArrowError> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, schema)?;
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Every table of the catalog as an Iceberg table.
#[derive(Debug, Clone)]
pub struct IcebergLake {
    pub warehouse: Warehouse,
    tables: HashMap<&'static str, LakeTable>,
}

/// Why the Iceberg lake could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("lake settings: {0}")]
    Settings(String),
    #[error("iceberg lake: {0}")]
    Lake(#[from] LakeError),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

impl IcebergLake {
    /// Opens the catalog and every table (created where missing).
    pub async fn open(config: &LakeConfig) -> Result<IcebergLake, OpenError> {
        // A REST catalog or S3 over https: rustls needs its provider chosen.
        glasshouse_runtime::tls::install_provider();
        if !config.location.starts_with("s3://") {
            // The embedded catalog's sqlite file and the warehouse go under a
            // local location, which must exist (private) before either is
            // opened: on a fresh host nothing has made it yet.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&config.location)
                .map_err(|e| OpenError::Settings(format!("`lake.location` {:?}: {e}", config.location)))?;
        }
        let warehouse = Warehouse::open(&settings(config).map_err(OpenError::Settings)?).await?;
        let mut tables = HashMap::new();
        for def in TABLES {
            let schema = crate::catalog::schema(def);
            let table = warehouse
                .table(def.name, def.topic, &ipc(&schema, &[])?, def.time_column)
                .await?;
            tables.insert(def.name, table);
        }
        Ok(IcebergLake { warehouse, tables })
    }

    pub fn table(&self, name: &str) -> Option<&LakeTable> {
        self.tables.get(name)
    }

    /// Commits `batches` (rows of table `name` in the catalog's schema, as
    /// [`crate::writer::Decoder`] gives them) with the Kafka offset `ranges`
    /// they came from, as the writer does: for tools, benchmarks and tests
    /// that fill the lake without a broker.
    pub async fn append(
        &self,
        name: &str,
        batches: &[RecordBatch],
        ranges: &[OffsetRange],
    ) -> Result<Appended, OpenError> {
        let (def, table) = TABLES
            .iter()
            .find(|d| d.name == name)
            .zip(self.tables.get(name))
            .ok_or_else(|| OpenError::Settings(format!("no table {name:?}")))?;
        let stream = ipc(&crate::catalog::schema(def), batches)?;
        Ok(table.append(&[stream], ranges).await?)
    }
}

/// When a table's rows are committed.
#[derive(Debug, Clone, Copy)]
pub struct Flush {
    pub rows: usize,
    pub bytes: usize,
    pub age: Duration,
}

impl Flush {
    pub fn of(config: &LakeConfig) -> Flush {
        Flush {
            rows: config.flush_rows,
            bytes: config.flush_bytes,
            age: Duration::from_secs(config.flush_secs),
        }
    }
}

/// Partitions taken away by a rebalance, noted for the writer's loop.
#[derive(Default)]
struct Moves {
    revoked: Mutex<Vec<(String, i32)>>,
    /// Set with `revoked`: the loop's per-message check is one load.
    any: std::sync::atomic::AtomicBool,
}

impl ClientContext for Moves {}

impl ConsumerContext for Moves {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect::<Vec<_>>();
            self.revoked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(parts);
            self.any.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Watches for partitions that no writer of the group reads: tansu 0.6,
/// when a member dies while the group forms (its leader, or a member whose
/// share was assigned), marks the group formed with those partitions
/// assigned to nobody (or to the dead), and the living members heartbeat
/// on without them: the lake stops for them. Any writer that sees it joins
/// the group again, which makes the group assign every partition anew.
/// Kafka and Redpanda reassign a dead member's partitions after its
/// session; there the watch stays quiet.
struct Watch {
    /// How far apart two looks are: long enough for a working owner to
    /// have committed (and moved the group's offset).
    period: Duration,
    looked: Option<Look>,
}

/// The group's offset of each partition (topic, partition).
type GroupOffsets = HashMap<(String, i32), i64>;

/// One look at the group's offsets.
struct Look {
    at: Instant,
    /// Of the partitions that had messages waiting.
    waiting: GroupOffsets,
    /// This writer's failed commits by then.
    failed_commits: u64,
}

impl Watch {
    fn new(period: Duration) -> Watch {
        Watch { period, looked: None }
    }

    /// Once a period: the partitions not this writer's that had messages
    /// waiting at both of the last two looks with the group's offset
    /// unmoved, if any, and only if this writer's own commits all went
    /// through meanwhile (a catalog down stops every writer alike: joining
    /// again would not help). Blocks for a few broker requests.
    fn stuck(&mut self, consumer: &Writer, failed_commits: u64) -> Option<Vec<(String, i32)>> {
        if self.looked.as_ref().is_some_and(|l| l.at.elapsed() < self.period) {
            return None;
        }
        let Some(waiting) = waiting_offsets(consumer) else {
            self.looked = None;
            return None;
        };
        let mine: HashSet<(String, i32)> = consumer
            .assignment()
            .map(|a| {
                a.elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        let stuck: Vec<(String, i32)> = match &self.looked {
            Some(before) if before.failed_commits == failed_commits => {
                let mut stuck: Vec<_> = waiting
                    .iter()
                    .filter(|(k, v)| !mine.contains(*k) && before.waiting.get(*k) == Some(*v))
                    .map(|(k, _)| k.clone())
                    .collect();
                stuck.sort();
                stuck
            }
            _ => Vec::new(),
        };
        if stuck.is_empty() {
            self.looked = Some(Look {
                at: Instant::now(),
                waiting,
                failed_commits,
            });
            None
        } else {
            self.looked = None;
            Some(stuck)
        }
    }
}

/// The group's offset of every partition of the lake's topics with
/// messages past it (-1: none committed yet); None if the broker did not
/// answer.
fn waiting_offsets(consumer: &Writer) -> Option<GroupOffsets> {
    let timeout = Duration::from_secs(2);
    let mut partitions = TopicPartitionList::new();
    // One metadata request for every topic; the lake's are kept.
    let metadata = consumer.fetch_metadata(None, timeout).ok()?;
    for topic in metadata.topics() {
        if crate::catalog::by_topic(topic.name()).is_none() {
            continue;
        }
        for p in topic.partitions() {
            partitions.add_partition(topic.name(), p.id());
        }
    }
    let committed = consumer.committed_offsets(partitions, timeout).ok()?;
    let mut waiting = HashMap::new();
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout).ok()?;
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        };
        if high > at.max(low) {
            waiting.insert((e.topic().to_owned(), e.partition()), at);
        }
    }
    Some(waiting)
}

/// Rows of one partition since the last commit.
#[derive(Debug)]
struct Part {
    batches: Vec<RecordBatch>,
    first: i64,
    next: i64,
}

/// Rows of one table since its last commit.
#[derive(Debug, Default)]
struct Pending {
    parts: BTreeMap<i32, Part>,
    rows: usize,
    bytes: usize,
    since: Option<Instant>,
}

type Writer = StreamConsumer<Moves>;

/// Runs the writer until `cancel`, committing what it holds before it
/// returns.
pub async fn run(
    lake: Arc<IcebergLake>,
    settings: WriterSettings,
    flush: Flush,
    cancel: CancellationToken,
) -> Result<WriterStats, WriterError> {
    let client_error = |source| WriterError::Client {
        brokers: settings.brokers.clone(),
        source,
    };
    let consumer: Writer = crate::writer::client_config(&settings)
        .create_with_context(Moves::default())
        .map_err(client_error)?;
    let topics: Vec<&str> = TABLES.iter().map(|t| t.topic).collect();
    consumer.subscribe(&topics).map_err(client_error)?;
    info!(brokers = %settings.brokers, group = %settings.group_id, "lake writer (iceberg) consuming");

    let mut decoder = Decoder::default();
    let mut pending: HashMap<&'static str, Pending> = HashMap::new();
    // The next offset to accept per topic and partition: the table's mark
    // when the partition was first seen, then the offset after the last
    // message accepted.
    let mut next: HashMap<(&'static str, i32), i64> = HashMap::new();
    // Partitions sought to their `next`, whose next message starts there
    // even if its offset is higher (the ones in between are gone).
    let mut sought: HashSet<(&'static str, i32)> = HashSet::new();
    let mut stats = WriterStats::default();
    // A quarter of the flush period (100 ms to 1 s): rows are committed at
    // most a quarter period after they are due (with a 1 s tick and
    // `flush_secs = 1`, rows arriving just after a tick waited 2 s).
    let tick = (flush.age / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expire_at = Instant::now() + SNAPSHOT_AGE;
    // Owners commit (and move the group's offsets) every `flush_secs`:
    // three of those, or the session timeout if longer, without a move is
    // a stranded group.
    let mut watch = Watch::new(Duration::from_millis(u64::from(settings.session_timeout_ms)).max(3 * flush.age));
    loop {
        let held: usize = pending.values().map(|p| p.bytes).sum();
        tokio::select! {
            m = consumer.recv(), if held <= 2 * flush.bytes => match m {
                Ok(m) => {
                    revoke(&consumer, &mut pending, &mut next, &mut sought);
                    let Some(def) = crate::catalog::by_topic(m.topic()) else { continue };
                    let (partition, offset) = (m.partition(), m.offset());
                    let key = (def.topic, partition);
                    let expected = match next.get(&key) {
                        Some(n) => *n,
                        None => {
                            let mark = match high_water_mark(&lake, def, partition).await {
                                Ok(mark) => mark,
                                Err(e) => {
                                    // Not accepted without knowing the mark:
                                    // read again from here.
                                    warn!(table = def.name, error = %e, "lake high-water mark unreadable; retrying");
                                    seek(&consumer, def.topic, partition, offset);
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                    continue;
                                }
                            };
                            next.insert(key, mark);
                            if offset < mark && seek(&consumer, def.topic, partition, mark) {
                                // Rather than reading what the table has.
                                sought.insert(key);
                            }
                            mark
                        }
                    };
                    if offset < expected {
                        stats.skipped += 1;
                        continue;
                    }
                    if offset > expected {
                        if sought.remove(&key) {
                            // The first message after seeking to `expected`:
                            // the offsets in between are not in Kafka.
                            gap(def, partition, expected, offset);
                        } else {
                            // Resumed (from the group's offset) or went on
                            // past the table's mark: read from the mark, so
                            // that no offset is left out of the table.
                            stats.skipped += 1;
                            if seek(&consumer, def.topic, partition, expected) {
                                sought.insert(key);
                            } else {
                                next.remove(&key);
                            }
                            continue;
                        }
                    }
                    sought.remove(&key);
                    next.insert((def.topic, partition), offset + 1);
                    stats.messages += 1;
                    let time_ns = m.timestamp().to_millis().unwrap_or(0).saturating_mul(1_000_000);
                    let batches = match m.payload() {
                        None => Vec::new(),
                        Some(payload) => match decoder.decode(m.topic(), payload, m.key(), time_ns) {
                            Ok((_, batches)) => batches,
                            Err(e) => {
                                stats.skipped += 1;
                                warn!(topic = m.topic(), partition, offset, error = %e,
                                    "lake skipped a message it cannot read");
                                Vec::new()
                            }
                        },
                    };
                    let full = {
                        let p = pending.entry(def.name).or_default();
                        p.since.get_or_insert_with(Instant::now);
                        let part = p.parts.entry(partition).or_insert(Part { batches: Vec::new(), first: expected, next: offset });
                        part.next = offset + 1;
                        for b in batches {
                            p.rows += b.num_rows();
                            p.bytes += b.get_array_memory_size();
                            stats.rows += b.num_rows() as u64;
                            part.batches.push(b);
                        }
                        p.rows >= flush.rows || p.bytes >= flush.bytes
                    };
                    if full {
                        commit(&lake, def, &consumer, &mut pending, &mut next, &mut sought, &mut stats).await;
                    }
                }
                Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)) => {
                    debug!("lake: a subscribed topic does not exist yet");
                }
                Err(e) => {
                    warn!(error = %e, "lake consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = ticker.tick() => {
                revoke(&consumer, &mut pending, &mut next, &mut sought);
                for def in TABLES {
                    let due = pending.get(def.name).and_then(|p| p.since).is_some_and(|t| t.elapsed() >= flush.age);
                    if due {
                        commit(&lake, def, &consumer, &mut pending, &mut next, &mut sought, &mut stats).await;
                    }
                }
                if Instant::now() >= expire_at {
                    expire_at = Instant::now() + SNAPSHOT_AGE;
                    expire(&lake).await;
                }
                if let Some(stuck) = watch.stuck(&consumer, stats.failed_commits) {
                    warn!(
                        group = %settings.group_id,
                        partitions = stuck.len(),
                        first = ?stuck.iter().take(4).collect::<Vec<_>>(),
                        "lake partitions have messages waiting that no writer of the group reads \
                         (a group left without assignments, as tansu 0.6 does when a member dies while \
                         the group forms); joining the group again"
                    );
                    consumer.unsubscribe();
                    consumer.subscribe(&topics).map_err(client_error)?;
                }
            }
            () = cancel.cancelled() => break,
        }
    }
    revoke(&consumer, &mut pending, &mut next, &mut sought);
    for def in TABLES {
        commit(&lake, def, &consumer, &mut pending, &mut next, &mut sought, &mut stats).await;
    }
    stats.stopped(&consumer, "iceberg");
    Ok(stats)
}

async fn high_water_mark(lake: &IcebergLake, def: &TableDef, partition: i32) -> Result<i64, LakeError> {
    let Some(table) = lake.table(def.name) else {
        return Ok(0);
    };
    Ok(table.committed_offsets().await?.get(&partition).copied().unwrap_or(0))
}

/// Seeks `partition` to `offset`; false if it is not ours any more or not
/// fetching yet (messages below the mark are skipped either way).
fn seek(consumer: &Writer, topic: &str, partition: i32, offset: i64) -> bool {
    match consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(1)) {
        Ok(()) => true,
        Err(e) => {
            debug!(topic, partition, offset, error = %e, "lake seek failed");
            false
        }
    }
}

/// Offsets `expected..offset` of a partition were not in Kafka when the
/// writer read from `expected` (deleted by retention before the lake
/// stored them, or never written): said, and the range committed next
/// starts at `expected` all the same.
fn gap(def: &TableDef, partition: i32, expected: i64, offset: i64) {
    if expected == 0 {
        info!(
            topic = def.topic,
            partition, offset, "lake table starts the partition at its earliest offset in Kafka"
        );
    } else {
        warn!(
            topic = def.topic,
            partition,
            from = expected,
            to = offset,
            "lake: offsets were no longer in Kafka when the lake read them (retention?); their rows are not in the table"
        );
    }
}

/// Forgets the rows and positions of partitions a rebalance took away:
/// their new owner reads them again from the table's mark.
fn revoke(
    consumer: &Writer,
    pending: &mut HashMap<&'static str, Pending>,
    next: &mut HashMap<(&'static str, i32), i64>,
    sought: &mut HashSet<(&'static str, i32)>,
) {
    let moves = consumer.context();
    if !moves.any.swap(false, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    let revoked = std::mem::take(&mut *moves.revoked.lock().unwrap_or_else(PoisonError::into_inner));
    for (topic, partition) in revoked {
        let Some(def) = crate::catalog::by_topic(&topic) else {
            continue;
        };
        next.remove(&(def.topic, partition));
        sought.remove(&(def.topic, partition));
        if let Some(p) = pending.get_mut(def.name) {
            drop_part(p, partition);
        }
    }
}

fn drop_part(p: &mut Pending, partition: i32) {
    if let Some(part) = p.parts.remove(&partition) {
        for b in &part.batches {
            p.rows = p.rows.saturating_sub(b.num_rows());
            p.bytes = p.bytes.saturating_sub(b.get_array_memory_size());
        }
    }
    if p.parts.is_empty() {
        *p = Pending::default();
    }
}

/// Commits a table's pending rows with their offsets; see the module docs
/// for what a refused or failed commit does.
async fn commit(
    lake: &IcebergLake,
    def: &'static TableDef,
    consumer: &Writer,
    pending: &mut HashMap<&'static str, Pending>,
    next: &mut HashMap<(&'static str, i32), i64>,
    sought: &mut HashSet<(&'static str, i32)>,
    stats: &mut WriterStats,
) {
    let (Some(table), Some(p)) = (lake.table(def.name), pending.get_mut(def.name)) else {
        return;
    };
    let schema = crate::catalog::schema(def);
    while !p.parts.is_empty() {
        let ranges: Vec<OffsetRange> = p
            .parts
            .iter()
            .map(|(partition, part)| OffsetRange {
                partition: *partition,
                first: part.first,
                next: part.next,
            })
            .collect();
        let streams = match p
            .parts
            .values()
            .filter(|part| !part.batches.is_empty())
            .map(|part| ipc(&schema, &part.batches))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(streams) => streams,
            Err(e) => {
                warn!(table = def.name, error = %e, "lake rows not encodable; kept for the next try");
                return;
            }
        };
        match table.append(&streams, &ranges).await {
            Ok(appended) => {
                stats.files += appended.files as u64;
                debug!(
                    table = def.name,
                    files = appended.files,
                    rows = appended.rows,
                    "lake committed"
                );
                let mut tpl = TopicPartitionList::new();
                for r in &ranges {
                    if let Err(e) = tpl.add_partition_offset(def.topic, r.partition, Offset::Offset(r.next)) {
                        warn!(topic = def.topic, error = %e, "lake offset not stored");
                    }
                }
                if let Err(e) = consumer.store_offsets(&tpl) {
                    // A revoked partition: its new owner starts from the table's mark.
                    debug!(topic = def.topic, error = %e, "lake offsets not stored");
                }
                *p = Pending::default();
            }
            Err(LakeError::AlreadyCommitted {
                partition, committed, ..
            }) => {
                warn!(
                    table = def.name,
                    partition, committed, "lake partition committed by another writer; its rows here are dropped"
                );
                resume(consumer, def, p, next, sought, partition, committed);
            }
            Err(LakeError::Gap {
                partition,
                first,
                committed,
                ..
            }) => {
                warn!(
                    table = def.name,
                    partition,
                    first,
                    committed,
                    "lake range does not follow the table's mark (a commit lost by the catalog?); reading the partition again from the mark"
                );
                resume(consumer, def, p, next, sought, partition, committed);
            }
            Err(e) => {
                stats.failed_commits += 1;
                warn!(table = def.name, error = %e, "lake commit failed; rows kept for the next tick");
                return;
            }
        }
    }
}

/// Drops the rows of `partition` held for `def` and reads it again from
/// the table's mark `committed`.
fn resume(
    consumer: &Writer,
    def: &TableDef,
    p: &mut Pending,
    next: &mut HashMap<(&'static str, i32), i64>,
    sought: &mut HashSet<(&'static str, i32)>,
    partition: i32,
    committed: i64,
) {
    drop_part(p, partition);
    let key = (def.topic, partition);
    if seek(consumer, def.topic, partition, committed) {
        next.insert(key, committed);
        sought.insert(key);
    } else {
        next.remove(&key);
        sought.remove(&key);
    }
}

/// Expires old snapshots of every table (metadata only).
async fn expire(lake: &IcebergLake) {
    let older_than = std::time::SystemTime::now()
        .checked_sub(SNAPSHOT_AGE)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    for def in TABLES {
        if let Some(table) = lake.table(def.name) {
            match table.expire_snapshots(older_than, SNAPSHOTS_KEPT).await {
                Ok(n) if n > 0 => debug!(table = def.name, expired = n, "lake snapshots expired"),
                Ok(_) => {}
                Err(e) => warn!(table = def.name, error = %e, "lake snapshot expiry failed"),
            }
        }
    }
}

/// A lake table for DataFusion: the data files of the table's current
/// snapshot (looked up at each scan, so a query sees every commit made
/// before it started), read by DataFusion's own Parquet reader. Nothing of
/// iceberg-rust's arrow reaches DataFusion: the file list is paths, the
/// schema crosses as Arrow IPC.
#[derive(Debug)]
pub struct Provider {
    table: LakeTable,
    schema: SchemaRef,
    /// The listing of the last snapshot scanned.
    listing: Mutex<Option<(i64, Arc<ListingTable>)>>,
}

impl Provider {
    pub async fn new(table: LakeTable) -> Result<Provider, OpenError> {
        let ipc = table.schema_ipc().await?;
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
        // Strings as views, DataFusion's default reading of Parquet; without
        // the Iceberg field ids (`PARQUET:field_id` metadata), which would
        // differ between the logical and physical plans of a query joining
        // or unioning tables (the `containers` view), failing it.
        let bare: Vec<_> = reader
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(Default::default()))
            .collect();
        let schema = crate::catalog::string_views(&Arc::new(datafusion::arrow::datatypes::Schema::new(bare)));
        Ok(Provider {
            table,
            schema,
            listing: Mutex::new(None),
        })
    }

    /// The listing of the table's current snapshot: the cached one while
    /// the snapshot is the same (its manifests are not read again), none
    /// for a table never written to.
    async fn listing(&self) -> DfResult<Option<Arc<ListingTable>>> {
        let cached = self.listing.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let found = self
            .table
            .data_files(cached.as_ref().map(|(id, _)| *id))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        match found {
            DataFiles::Empty => Ok(None),
            DataFiles::Unchanged => Ok(cached.map(|(_, t)| t)),
            DataFiles::Snapshot { paths, .. } if paths.is_empty() => Ok(None),
            DataFiles::Snapshot { id, paths } => {
                let table = crate::lake::parquet_files(&paths, self.schema.clone())?;
                *self.listing.lock().unwrap_or_else(PoisonError::into_inner) = Some((id, table.clone()));
                Ok(Some(table))
            }
        }
    }
}

#[async_trait::async_trait]
impl TableProvider for Provider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters prune Parquet row groups; DataFusion still applies them.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match self.listing().await? {
            Some(listing) => listing.scan(state, projection, filters, limit).await,
            None => {
                MemTable::try_new(self.schema.clone(), vec![Vec::new()])?
                    .scan(state, projection, filters, limit)
                    .await
            }
        }
    }
}

/// The engine's tables over an Iceberg lake: one [`Provider`] per table,
/// and the object store of its warehouse.
pub async fn engine(lake: &IcebergLake, config: &LakeConfig, limits: Limits) -> Result<Engine, EngineError> {
    let mut tables: Vec<(&'static str, Arc<dyn TableProvider>)> = Vec::new();
    for def in TABLES {
        if let Some(table) = lake.table(def.name) {
            let provider = Provider::new(table.clone())
                .await
                .map_err(|e| EngineError::Open(e.to_string()))?;
            tables.push((def.name, Arc::new(provider)));
        }
    }
    let store = if config.location.starts_with("s3://") {
        let (store, url, _) = crate::lake::open_store(config)
            .await
            .map_err(|e| EngineError::Open(e.to_string()))?;
        Some((url, store))
    } else {
        // Local files: DataFusion's default store for file:// URLs.
        None
    };
    Engine::with_tables(store, tables, limits).await
}
