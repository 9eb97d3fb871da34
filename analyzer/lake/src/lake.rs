//! The lake: per table, Parquet files partitioned by hour plus an in-memory
//! tail of rows not yet written, read together by queries.
//!
//! ```text
//!  append(rows) ──▶ tail (memory) ──flush──▶ TABLE/date=YYYY-MM-DD/hour=HH/INSTANCE-MS-SEQ.parquet
//!                        │                            │   compact: small files of an hour → one
//!                        └──────── scan ◀─────────────┘   retention: files received more than N hours ago deleted
//! ```
//!
//! Retention keys on when a file's rows were received (the time in its
//! name: when the flush wrote it; a compacted file takes the newest of its
//! inputs), not on the rows' own times, which an agent chooses: evidence
//! dated in the past stays for the whole retention period, and rows dated
//! in the future do not outlive it.
//!
//! A query plans against a snapshot of one table: its file list and its tail,
//! taken together under the table's lock, so a row is in exactly one of
//! them. A flush adds its files and drops the rows it wrote from the tail in
//! one step. Files replaced by compaction or expired by retention leave the
//! file list at once but are deleted from storage only after a grace period
//! longer than the query timeout, so a query planned before still reads them.
//!
//! The file list is kept by the lake itself (listed from storage at start),
//! not re-listed per query: a query costs no directory listing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tracing::{info, warn};

use crate::catalog::{self, TABLES, TableDef};
use crate::config::LakeConfig;

const NS_PER_HOUR: i64 = 3_600_000_000_000;
const MS_PER_HOUR: i64 = 3_600_000;

/// Why the lake could not do something.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake location {location:?}")]
    Location {
        location: String,
        #[source]
        source: object_store::Error,
    },
    /// The start-up listing of an object store location failed: no such
    /// bucket, credentials refused, or no answer. The message names the
    /// location and endpoint, never a secret.
    #[error(
        "lake location {location:?} (endpoint {endpoint}) cannot be listed: the bucket must exist, be reachable and accept the credentials"
    )]
    Unreachable {
        location: String,
        endpoint: String,
        #[source]
        source: object_store::Error,
    },
    #[error("lake location {location:?}: {message}")]
    Config { location: String, message: String },
    #[error("lake storage: {path}")]
    Storage {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("parquet {path}")]
    Parquet {
        path: String,
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },
    #[error("arrow")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("unknown table {0:?}")]
    UnknownTable(String),
}

/// A Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: Path,
    pub size: u64,
    /// Hours since the epoch of its rows' time column.
    pub hour: i64,
    /// When its rows were received (written by a flush), ms since the epoch.
    pub received_ms: i64,
}

#[derive(Debug, Default)]
struct TableState {
    files: Vec<FileEntry>,
    tail: Vec<RecordBatch>,
    tail_rows: usize,
    /// Memory of the tail's batches (Arrow's own account).
    tail_bytes: usize,
    /// When the oldest tail row arrived.
    oldest: Option<Instant>,
}

/// One table of the lake.
#[derive(Debug)]
pub struct Table {
    pub def: &'static TableDef,
    pub schema: SchemaRef,
    state: RwLock<TableState>,
}

/// What a flush, compaction or retention pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub files_written: usize,
    pub rows_written: usize,
    pub files_removed: usize,
}

/// The lake: tables, storage and the bookkeeping of files.
#[derive(Debug)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    /// URL of the store's root as DataFusion knows it (`file:///`, `s3://bucket/`).
    store_url: String,
    /// Where the tables' folders are inside the store.
    root: Path,
    instance: String,
    seq: AtomicU64,
    tables: BTreeMap<&'static str, Arc<Table>>,
    /// Files to delete once their deadline passed.
    doomed: Mutex<Vec<(Instant, Path)>>,
    grace: Duration,
    config: LakeConfig,
}

impl Lake {
    /// Opens the lake at `config.location` and lists the files it holds.
    /// `instance` names the files this process writes (unique per writer);
    /// `grace` is how long replaced files stay readable (longer than the
    /// query timeout).
    pub async fn open(config: &LakeConfig, instance: &str, grace: Duration) -> Result<Lake, LakeError> {
        let (store, store_url, root) = open_store(config).await?;
        let mut tables = BTreeMap::new();
        for def in TABLES {
            tables.insert(
                def.name,
                Arc::new(Table {
                    def,
                    schema: catalog::schema(def),
                    state: RwLock::new(TableState::default()),
                }),
            );
        }
        let lake = Lake {
            store,
            store_url,
            root,
            instance: sanitize(instance),
            seq: AtomicU64::new(0),
            tables,
            doomed: Mutex::new(Vec::new()),
            grace,
            config: config.clone(),
        };
        lake.list_files().await?;
        Ok(lake)
    }

    /// Writes one object. On a local directory, the file is made 0600 and
    /// the folders up to the lake's root 0700: telemetry is for the
    /// analyzer's user only (object_store creates them with the umask's
    /// 0644/0755; the root itself is 0700 from the start, so nobody else can
    /// reach them in between).
    async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<(), LakeError> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(storage_error(path))?;
        if self.store_url.starts_with("file:") {
            let file = std::path::PathBuf::from(format!("/{path}"));
            let root = std::path::PathBuf::from(format!("/{}", self.root));
            private(&file, &root).map_err(|e| LakeError::Location {
                location: file.display().to_string(),
                source: object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                },
            })?;
        }
        Ok(())
    }

    /// Reads one object whole.
    async fn get(&self, path: &Path) -> Result<bytes::Bytes, LakeError> {
        let object = self.store.get(path).await.map_err(storage_error(path))?;
        object.bytes().await.map_err(storage_error(path))
    }

    async fn list_files(&self) -> Result<(), LakeError> {
        for table in self.tables.values() {
            let prefix = self.root.clone().join(table.def.name);
            let metas: Vec<_> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(storage_error(&prefix))?;
            let mut files: Vec<FileEntry> = metas
                .into_iter()
                .filter(|m| m.location.extension() == Some("parquet"))
                .filter_map(|m| {
                    let hour = hour_of_path(&m.location)?;
                    // Files without a time in their name: the end of their hour.
                    let received_ms = received_of_path(&m.location).unwrap_or((hour + 1) * MS_PER_HOUR);
                    Some(FileEntry {
                        path: m.location,
                        size: m.size,
                        hour,
                        received_ms,
                    })
                })
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            let mut s = table.state.write().unwrap_or_else(|p| p.into_inner());
            s.files = files;
        }
        Ok(())
    }

    /// The lake's tables, by name.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<Table>> {
        self.tables.values()
    }

    pub fn table(&self, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(name)
    }

    /// The store and its URL, for DataFusion's object store registry.
    pub fn store(&self) -> (&str, Arc<dyn ObjectStore>) {
        (&self.store_url, self.store.clone())
    }

    /// Adds rows (of the table's schema) to the table's tail: visible to the
    /// next query.
    pub fn append(&self, table: &str, batches: Vec<RecordBatch>) -> Result<(), LakeError> {
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| LakeError::UnknownTable(table.into()))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows == 0 {
            return Ok(());
        }
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        let mut s = t.state.write().unwrap_or_else(|p| p.into_inner());
        s.tail.extend(batches);
        s.tail_rows += rows;
        s.tail_bytes += bytes;
        s.oldest.get_or_insert_with(Instant::now);
        // Many small batches (one per Kafka message) make scans slow: merge
        // them now and then. Concatenating rows of the same schema cannot fail.
        if s.tail.len() >= 256 {
            let merged = concat_batches(&t.schema, &s.tail)?;
            s.tail_bytes = merged.get_array_memory_size();
            s.tail = vec![merged];
        }
        Ok(())
    }

    /// Rows in the tail of `table`.
    pub fn tail_rows(&self, table: &str) -> usize {
        self.tables
            .get(table)
            .map(|t| t.state.read().unwrap_or_else(|p| p.into_inner()).tail_rows)
            .unwrap_or(0)
    }

    /// Whether `table`'s tail is due for a flush (by rows, bytes or age).
    pub fn flush_due(&self, table: &str) -> bool {
        let Some(t) = self.tables.get(table) else { return false };
        let s = t.state.read().unwrap_or_else(|p| p.into_inner());
        s.tail_rows >= self.config.flush_rows
            || s.tail_bytes >= self.config.flush_bytes
            || s.oldest
                .is_some_and(|o| o.elapsed() >= Duration::from_secs(self.config.flush_secs))
    }

    /// Writes the tail of `table` to Parquet (one file per hour of its rows)
    /// and, once written, moves those rows from the tail to the file list.
    pub async fn flush(&self, table: &str) -> Result<Work, LakeError> {
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| LakeError::UnknownTable(table.into()))?
            .clone();
        let (batches, count) = {
            let s = t.state.read().unwrap_or_else(|p| p.into_inner());
            (s.tail.clone(), s.tail.len())
        };
        if batches.is_empty() {
            return Ok(Work::default());
        }
        let schema = t.schema.clone();
        let time_column = t.def.time_column;
        // Encoding Parquet is CPU work: off the I/O runtime.
        let encoded = tokio::task::spawn_blocking(move || -> Result<Vec<(i64, usize, Vec<u8>)>, LakeError> {
            let all = concat_batches(&schema, &batches)?;
            split_by_hour(&all, time_column)?
                .into_iter()
                .map(|(hour, b)| Ok((hour, b.num_rows(), encode_parquet(&b)?)))
                .collect()
        })
        .await
        .map_err(task_error)??;
        let mut work = Work::default();
        let mut entries = Vec::with_capacity(encoded.len());
        let received_ms = chrono::Utc::now().timestamp_millis();
        for (hour, rows, bytes) in encoded {
            let path = self.new_path(t.def.name, hour, received_ms);
            let size = bytes.len() as u64;
            self.put(&path, bytes).await?;
            work.files_written += 1;
            work.rows_written += rows;
            entries.push(FileEntry {
                path,
                size,
                hour,
                received_ms,
            });
        }
        let mut s = t.state.write().unwrap_or_else(|p| p.into_inner());
        s.files.extend(entries);
        // Only this task appends and flushes a table's tail in the writer, so
        // the first `count` batches are the ones written; any appended since
        // stay (and a merge in `append` cannot have run meanwhile: same task).
        let upto = count.min(s.tail.len());
        let (written, freed) = s.tail.drain(..upto).fold((0, 0), |(rows, bytes), b| {
            (rows + b.num_rows(), bytes + b.get_array_memory_size())
        });
        s.tail_rows -= written;
        s.tail_bytes = s.tail_bytes.saturating_sub(freed);
        if s.tail.is_empty() {
            s.oldest = None;
        }
        Ok(work)
    }

    /// `TABLE/date=…/hour=…/INSTANCE-RECEIVED_MS-SEQ.parquet`.
    fn new_path(&self, table: &str, hour: i64, received_ms: i64) -> Path {
        let date = chrono::DateTime::from_timestamp(hour * 3600, 0).unwrap_or_default();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let ms = received_ms;
        self.root
            .clone()
            .join(table)
            .join(format!("date={}", date.format("%Y-%m-%d")))
            .join(format!("hour={}", date.format("%H")))
            .join(format!("{}-{ms}-{seq}.parquet", self.instance))
    }

    /// Merges, per table and hour, files smaller than the target once there
    /// are at least `compact_min_files` of them.
    pub async fn compact(&self) -> Result<Work, LakeError> {
        let target = self.config.compact_target_mib * 1024 * 1024;
        let mut work = Work::default();
        for t in self.tables.values() {
            let groups: BTreeMap<i64, Vec<FileEntry>> = {
                let s = t.state.read().unwrap_or_else(|p| p.into_inner());
                let mut g: BTreeMap<i64, Vec<FileEntry>> = BTreeMap::new();
                for f in s.files.iter().filter(|f| f.size < target) {
                    g.entry(f.hour).or_default().push(f.clone());
                }
                g
            };
            for (hour, files) in groups {
                if files.len() < self.config.compact_min_files {
                    continue;
                }
                let mut batches = Vec::new();
                for f in &files {
                    let bytes = self.get(&f.path).await?;
                    let path = f.path.to_string();
                    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                        .and_then(|b| b.build())
                        .map_err(|source| LakeError::Parquet {
                            path: path.clone(),
                            source,
                        })?;
                    for b in reader {
                        batches.push(crate::decode::conform(&b?, &t.schema).map_err(|e| {
                            LakeError::Arrow(datafusion::arrow::error::ArrowError::ExternalError(Box::new(e)))
                        })?);
                    }
                }
                let schema = t.schema.clone();
                let (rows, bytes) = tokio::task::spawn_blocking(move || -> Result<(usize, Vec<u8>), LakeError> {
                    let all = concat_batches(&schema, &batches)?;
                    Ok((all.num_rows(), encode_parquet(&all)?))
                })
                .await
                .map_err(task_error)??;
                // Its rows are kept as long as the newest of them.
                let received_ms = files.iter().map(|f| f.received_ms).max().unwrap_or_default();
                let path = self.new_path(t.def.name, hour, received_ms);
                let size = bytes.len() as u64;
                self.put(&path, bytes).await?;
                {
                    let mut s = t.state.write().unwrap_or_else(|p| p.into_inner());
                    s.files.retain(|f| !files.contains(f));
                    s.files.push(FileEntry {
                        path,
                        size,
                        hour,
                        received_ms,
                    });
                }
                self.doom(files.iter().map(|f| f.path.clone()));
                info!(
                    table = t.def.name,
                    hour,
                    merged = files.len(),
                    rows,
                    "lake files compacted"
                );
                work.files_written += 1;
                work.rows_written += rows;
                work.files_removed += files.len();
            }
        }
        Ok(work)
    }

    /// Drops files received more than `retention_hours` before `now_ns`.
    pub fn expire(&self, now_ns: i64) -> Work {
        let mut work = Work::default();
        if self.config.retention_hours == 0 {
            return work;
        }
        let hours = i64::try_from(self.config.retention_hours).unwrap_or(i64::MAX);
        let cutoff_ms = now_ns
            .div_euclid(1_000_000)
            .saturating_sub(hours.saturating_mul(MS_PER_HOUR));
        for t in self.tables.values() {
            let expired: Vec<Path> = {
                let mut s = t.state.write().unwrap_or_else(|p| p.into_inner());
                let (old, keep): (Vec<_>, Vec<_>) = s.files.drain(..).partition(|f| f.received_ms < cutoff_ms);
                s.files = keep;
                old.into_iter().map(|f| f.path).collect()
            };
            if !expired.is_empty() {
                info!(table = t.def.name, files = expired.len(), "lake files past retention");
                work.files_removed += expired.len();
                self.doom(expired);
            }
        }
        work
    }

    fn doom(&self, paths: impl IntoIterator<Item = Path>) {
        let at = Instant::now() + self.grace;
        self.doomed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(paths.into_iter().map(|p| (at, p)));
    }

    /// Deletes replaced and expired files whose grace period is over
    /// (`all`: every one, at shutdown or in tests).
    pub async fn delete_doomed(&self, all: bool) -> usize {
        let now = Instant::now();
        let due: Vec<Path> = {
            let mut d = self.doomed.lock().unwrap_or_else(|p| p.into_inner());
            let (due, later): (Vec<_>, Vec<_>) = d.drain(..).partition(|(at, _)| all || *at <= now);
            *d = later;
            due.into_iter().map(|(_, p)| p).collect()
        };
        let mut deleted = 0;
        for p in due {
            match self.store.delete(&p).await {
                Ok(()) => deleted += 1,
                Err(e) => warn!(path = %p, error = %e, "lake file not deleted"),
            }
        }
        deleted
    }

    /// The files of `table` (for tests and the benchmark).
    pub fn files(&self, table: &str) -> Vec<FileEntry> {
        self.tables
            .get(table)
            .map(|t| t.state.read().unwrap_or_else(|p| p.into_inner()).files.clone())
            .unwrap_or_default()
    }

    /// A DataFusion table over `table`'s files and tail.
    pub fn provider(self: &Arc<Self>, table: &str) -> Option<Arc<LakeTable>> {
        let t = self.tables.get(table)?.clone();
        Some(Arc::new(LakeTable {
            lake: self.clone(),
            table: t,
            listing: Mutex::new(None),
        }))
    }

    fn url_of(&self, path: &Path) -> String {
        format!("{}{}", self.store_url, path)
    }
}

/// DataFusion's view of one lake table: a union of its Parquet files and its
/// in-memory tail, as of the moment the query is planned.
#[derive(Debug)]
pub struct LakeTable {
    lake: Arc<Lake>,
    table: Arc<Table>,
    /// The Parquet side of the last scan, reused while the file list is the
    /// same (until a flush, compaction or expiry): it keeps the files'
    /// statistics, so a query does not read every footer again.
    listing: Mutex<Option<(Vec<FileEntry>, Arc<ListingTable>)>>,
}

impl LakeTable {
    fn listing(&self, files: &[FileEntry]) -> DfResult<Arc<ListingTable>> {
        let mut cached = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((f, t)) = cached.as_ref()
            && f.as_slice() == files
        {
            return Ok(t.clone());
        }
        let table = parquet_files(
            files.iter().map(|f| self.lake.url_of(&f.path)),
            self.table.schema.clone(),
        )?;
        *cached = Some((files.to_vec(), table.clone()));
        Ok(table)
    }
}

/// DataFusion's table over the Parquet files at `urls`, read as `schema`
/// (the Parquet lake's files, or an Iceberg snapshot's data files).
pub(crate) fn parquet_files<S: AsRef<str>>(
    urls: impl IntoIterator<Item = S>,
    schema: SchemaRef,
) -> DfResult<Arc<ListingTable>> {
    let urls = urls
        .into_iter()
        .map(ListingTableUrl::parse)
        .collect::<DfResult<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema.clone()
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
        let (files, tail) = {
            let s = self.table.state.read().unwrap_or_else(|p| p.into_inner());
            (s.files.clone(), s.tail.clone())
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::with_capacity(2);
        if !files.is_empty() {
            let listing = self.listing(&files)?;
            inputs.push(listing.scan(state, projection, filters, limit).await?);
        }
        if !tail.is_empty() || inputs.is_empty() {
            let mem = MemTable::try_new(self.table.schema.clone(), vec![tail])?;
            inputs.push(mem.scan(state, projection, filters, limit).await?);
        }
        UnionExec::try_new(inputs)
    }
}

/// Opens the object store of `config.location`: its URL for DataFusion and
/// the lake's root path inside it.
/// An object store error about `path`.
fn storage_error(path: &Path) -> impl FnOnce(object_store::Error) -> LakeError + '_ {
    move |source| LakeError::Storage {
        path: path.to_string(),
        source,
    }
}

/// A blocking encode task that did not finish (it panicked).
fn task_error(e: tokio::task::JoinError) -> LakeError {
    LakeError::Arrow(datafusion::arrow::error::ArrowError::ExternalError(Box::new(e)))
}

/// Makes `file` 0600 and its folders up to `root` (excluded) 0700.
fn private(file: &std::path::Path, root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    let mut dir = file.parent();
    while let Some(d) = dir
        && d.starts_with(root)
        && d != root
    {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
        dir = d.parent();
    }
    Ok(())
}

pub(crate) async fn open_store(config: &LakeConfig) -> Result<(Arc<dyn ObjectStore>, String, Path), LakeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let location = config.location.as_str();
    if let Some(rest) = location.strip_prefix("s3://") {
        return open_s3(config, rest).await;
    }
    // The root is private before anything is written under it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(location)
        .and_then(|()| std::fs::set_permissions(location, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| LakeError::Location {
            location: location.into(),
            source: object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            },
        })?;
    let abs = std::fs::canonicalize(location).map_err(|e| LakeError::Location {
        location: location.into(),
        source: object_store::Error::Generic {
            store: "local",
            source: Box::new(e),
        },
    })?;
    let root = Path::from_absolute_path(&abs).map_err(|e| LakeError::Location {
        location: location.into(),
        source: e.into(),
    })?;
    Ok((
        Arc::new(object_store::local::LocalFileSystem::new()),
        "file:///".into(),
        root,
    ))
}

/// S3 or an S3-compatible store: `[lake.s3]` over the `AWS_*` environment
/// variables. The location is listed once before anything else, with few
/// retries and short timeouts, so a missing bucket, refused credentials or
/// an unreachable endpoint stop the start with a clear error instead of
/// minutes of retries; the store itself keeps object_store's retries for
/// the transient failures of a running lake.
async fn open_s3(config: &LakeConfig, rest: &str) -> Result<(Arc<dyn ObjectStore>, String, Path), LakeError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};
    // An https endpoint: rustls needs its provider chosen (tls module docs).
    glasshouse_runtime::tls::install_provider();

    let location = config.location.as_str();
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let s3 = &config.s3;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if s3.allow_http {
        builder = builder.with_allow_http(true);
    }
    if let Some(id) = &s3.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    let secret = s3.read_secret().map_err(|message| LakeError::Config {
        location: location.into(),
        message,
    })?;
    if let Some(secret) = secret {
        builder = builder.with_secret_access_key(secret);
    }
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .unwrap_or_else(|| "AWS S3".into());
    let build = |b: AmazonS3Builder| {
        b.build().map_err(|source| LakeError::Location {
            location: location.into(),
            source,
        })
    };
    let probe = build(
        builder
            .clone()
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(15),
            })
            // Set key by key: client options as a whole would drop the
            // others already set (allow_http).
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "5s")
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "15s"),
    )?;
    let store = build(builder)?;
    let root = Path::from(prefix);
    probe
        .list_with_delimiter(Some(&root))
        .await
        .map_err(|source| LakeError::Unreachable {
            location: location.into(),
            endpoint,
            source,
        })?;
    Ok((Arc::new(store), format!("s3://{bucket}/"), root))
}

/// Rows of `batch` grouped by the hour of `time_column` (hours since the epoch).
fn split_by_hour(batch: &RecordBatch, time_column: &str) -> Result<Vec<(i64, RecordBatch)>, LakeError> {
    let time = batch
        .column_by_name(time_column)
        .ok_or_else(|| LakeError::UnknownTable(format!("no column {time_column}")))?
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| LakeError::UnknownTable(format!("{time_column} is not a timestamp(ns)")))?;
    let hours: Vec<i64> = time.iter().map(|t| t.unwrap_or(0).div_euclid(NS_PER_HOUR)).collect();
    let mut distinct: Vec<i64> = hours.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() <= 1 {
        return Ok(distinct.into_iter().map(|h| (h, batch.clone())).collect());
    }
    distinct
        .into_iter()
        .map(|h| {
            let mask = BooleanArray::from(hours.iter().map(|x| *x == h).collect::<Vec<_>>());
            Ok((h, filter_record_batch(batch, &mask)?))
        })
        .collect()
}

fn encode_parquet(batch: &RecordBatch) -> Result<Vec<u8>, LakeError> {
    let props = WriterProperties::builder()
        // Level 3 is zstd's default: a good ratio at a fraction of the cost
        // of higher levels. Level 3 is always valid.
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("zstd level 3 is valid")))
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut out = Vec::new();
    let to_err = |source| LakeError::Parquet {
        path: "(encoding)".into(),
        source,
    };
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).map_err(to_err)?;
    w.write(batch).map_err(to_err)?;
    w.close().map_err(to_err)?;
    Ok(out)
}

/// The hour of a file from its `date=YYYY-MM-DD/hour=HH` folders.
fn hour_of_path(path: &Path) -> Option<i64> {
    let mut date = None;
    let mut hour = None;
    for part in path.parts() {
        let p = part.as_ref();
        if let Some(d) = p.strip_prefix("date=") {
            date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        } else if let Some(h) = p.strip_prefix("hour=") {
            hour = h.parse::<u32>().ok().filter(|h| *h < 24);
        }
    }
    let t = date?.and_hms_opt(hour?, 0, 0)?.and_utc().timestamp();
    Some(t / 3600)
}

/// The receive time in a file name `INSTANCE-RECEIVED_MS-SEQ.parquet`.
fn received_of_path(path: &Path) -> Option<i64> {
    let name = path.filename()?.strip_suffix(".parquet")?;
    let mut parts = name.rsplit('-');
    let _seq: u64 = parts.next()?.parse().ok()?;
    parts.next()?.parse().ok()
}

/// A file-name-safe form of the instance id.
fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() { "lake".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_round_trip_through_paths() {
        let lake_root = Path::from("x");
        let date = chrono::DateTime::from_timestamp(490_000 * 3600, 0).unwrap();
        let p = lake_root
            .join("t")
            .join(format!("date={}", date.format("%Y-%m-%d")))
            .join(format!("hour={}", date.format("%H")))
            .join("a.parquet");
        assert_eq!(hour_of_path(&p), Some(490_000));
        assert_eq!(hour_of_path(&Path::from("t/date=2026-01-01/hour=24/a.parquet")), None);
        assert_eq!(hour_of_path(&Path::from("t/a.parquet")), None);
    }

    #[test]
    fn instance_ids_are_file_name_safe() {
        assert_eq!(sanitize("analyzer-host/1 ../x"), "analyzer-host_1____x");
        assert_eq!(sanitize(""), "lake");
    }
}
