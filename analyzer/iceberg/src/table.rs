//! One lake table: created on first use, appended to with the Kafka
//! offsets the rows came from, its snapshots expired.
//!
//! An append writes Parquet data files (zstd, rolled at iceberg's default
//! target size, one set per hour partition) under the table's location,
//! then commits them in one fast-append snapshot together with the offset
//! ranges (see the crate docs). A commit that loses a race with another
//! writer is rebuilt on the new metadata by iceberg-rust (up to
//! `commit.retry.num-retries`, set on the tables this crate creates) and
//! then by this crate's own loop; a refused range (not starting at the
//! table's mark) deletes the files it wrote and returns
//! [`Error::AlreadyCommitted`] or [`Error::Gap`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::spec::{DataFile, DataFileFormat, Transform, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::{Catalog, ErrorKind, TableCreation, TableIdent};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tracing::{debug, warn};

use crate::catalog::Warehouse;
use crate::fence::{FENCED, high_water_marks, off_mark, offset_property};
use crate::schema::{arrow_schema, batches_from_ipc, conform, iceberg_schema, schema_from_ipc};
use crate::{Error, Result};

/// Snapshot summary property: the ranges of the commit as JSON
/// (`{"<partition>": [first, next], …}`) and the topic.
pub const SUMMARY_OFFSETS: &str = "glasshouse.kafka.offsets";
pub const SUMMARY_TOPIC: &str = "glasshouse.kafka.topic";

/// Attempts of this crate's commit loop (each with iceberg-rust's own
/// retries inside).
const COMMIT_ATTEMPTS: u32 = 10;

/// Offsets `first..next` of one partition of the table's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    pub partition: i32,
    pub first: i64,
    pub next: i64,
}

/// What an append committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

/// What [`LakeTable::data_files`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataFiles {
    /// No snapshot yet.
    Empty,
    /// The current snapshot is the one the caller knows.
    Unchanged,
    Snapshot {
        id: i64,
        paths: Vec<String>,
    },
}

/// A lake table of a warehouse.
#[derive(Debug, Clone)]
pub struct LakeTable {
    warehouse: Warehouse,
    ident: TableIdent,
    topic: String,
}

/// Properties of the tables this crate creates: zstd Parquet, and commit
/// retries sized for several writers committing every few seconds (the
/// defaults, 4 retries, lost 6 of 100 commits of 4 racing writers in the
/// spike; these lost none).
fn table_properties() -> HashMap<String, String> {
    [
        ("write.parquet.compression-codec", "zstd"),
        ("commit.retry.num-retries", "20"),
        ("commit.retry.min-wait-ms", "20"),
        ("commit.retry.max-wait-ms", "2000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A suffix no other writer's file names share.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Warehouse {
    /// The table `name` filled from `topic`, created if missing with the
    /// columns of the Arrow IPC stream `schema_ipc` (a schema message is
    /// enough), partitioned by the hour of `time_column`. Columns of
    /// `schema_ipc` the table lacks are added (as optional columns).
    pub async fn table(&self, name: &str, topic: &str, schema_ipc: &[u8], time_column: &str) -> Result<LakeTable> {
        let ident = TableIdent::new(self.namespace.clone(), name.to_owned());
        let arrow = schema_from_ipc(schema_ipc)?;
        let wanted = iceberg_schema(&arrow)?;
        if !self.catalog.table_exists(&ident).await? {
            let time = wanted
                .field_by_name(time_column)
                .ok_or_else(|| Error::Column {
                    table: name.to_owned(),
                    column: time_column.to_owned(),
                    message: "the partition column is not in the schema".into(),
                })?
                .id;
            let spec = UnboundPartitionSpec::builder()
                .add_partition_field(time, format!("{time_column}_hour"), Transform::Hour)?
                .build();
            let creation = TableCreation::builder()
                .name(name.to_owned())
                .schema(wanted.clone())
                .partition_spec(spec)
                .properties(table_properties())
                .build();
            if let Err(e) = self.catalog.create_table(&self.namespace, creation).await {
                // Another writer created it first.
                if !self.catalog.table_exists(&ident).await? {
                    return Err(e.into());
                }
            }
        }
        let table = LakeTable {
            warehouse: self.clone(),
            ident,
            topic: topic.to_owned(),
        };
        table.add_missing_columns(&wanted).await?;
        Ok(table)
    }
}

impl LakeTable {
    pub fn name(&self) -> &str {
        self.ident.name()
    }

    pub fn ident(&self) -> &TableIdent {
        &self.ident
    }

    /// The table as the catalog has it now.
    pub async fn load(&self) -> Result<Table> {
        Ok(self.warehouse.catalog.load_table(&self.ident).await?)
    }

    /// The next offset of each partition whose rows are in the table (the
    /// high-water marks): where a writer resumes.
    pub async fn committed_offsets(&self) -> Result<HashMap<i32, i64>> {
        Ok(high_water_marks(&self.load().await?))
    }

    /// Rows in the table's current snapshot (its summary's total).
    pub async fn rows(&self) -> Result<u64> {
        let table = self.load().await?;
        Ok(table
            .metadata()
            .current_snapshot()
            .and_then(|s| s.summary().additional_properties.get("total-records"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The current snapshot's id and, unless it is `known`, the paths
    /// (URLs) of its data files (no snapshot: a table never written to).
    /// The manifests are read only for a snapshot not seen before.
    pub async fn data_files(&self, known: Option<i64>) -> Result<DataFiles> {
        let table = self.load().await?;
        let Some(id) = table.metadata().current_snapshot_id() else {
            return Ok(DataFiles::Empty);
        };
        if known == Some(id) {
            return Ok(DataFiles::Unchanged);
        }
        let tasks: Vec<iceberg::scan::FileScanTask> = table
            .scan()
            .snapshot_id(id)
            .build()?
            .plan_files()
            .await?
            .try_collect()
            .await?;
        Ok(DataFiles::Snapshot {
            id,
            paths: tasks.into_iter().map(|t| t.data_file_path).collect(),
        })
    }

    /// The columns the table's data files are written with, as an Arrow
    /// IPC stream (a schema message).
    pub async fn schema_ipc(&self) -> Result<Vec<u8>> {
        let table = self.load().await?;
        let schema = arrow_schema(table.metadata().current_schema())?;
        let mut out = Vec::new();
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
        writer.finish()?;
        drop(writer);
        Ok(out)
    }

    /// Adds the top-level columns of `wanted` the table lacks.
    async fn add_missing_columns(&self, wanted: &iceberg::spec::Schema) -> Result<()> {
        let table = self.load().await?;
        let current = table.metadata().current_schema();
        let missing: Vec<_> = wanted
            .as_struct()
            .fields()
            .iter()
            .filter(|f| current.field_by_name(&f.name).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|f| f.name.as_str()).collect();
        let tx = Transaction::new(&table);
        let mut update = tx.update_schema();
        for field in &missing {
            update = update.add_column(iceberg::transaction::AddColumn::optional(
                &field.name,
                (*field.field_type).clone(),
            ));
        }
        update.apply(tx)?.commit(self.warehouse.catalog.as_ref()).await?;
        debug!(table = self.name(), columns = ?names, "lake table columns added");
        Ok(())
    }

    /// Writes the rows of the Arrow IPC streams `ipc` and commits them
    /// with `ranges` (the offsets they came from; a range with no rows
    /// still moves the high-water mark). Refused unless each range starts
    /// at the table's high-water mark of its partition (0 for a partition
    /// not in the table yet): with [`Error::AlreadyCommitted`] below it,
    /// [`Error::Gap`] above it.
    pub async fn append<B: AsRef<[u8]>>(&self, ipc: &[B], ranges: &[OffsetRange]) -> Result<Appended> {
        let table = self.load().await?;
        // Fail early (before writing files) on a range off the mark.
        self.check_ranges(&table, ranges)?;
        let files = self.write(&table, ipc).await?;
        let appended = Appended {
            files: files.len(),
            rows: files.iter().map(DataFile::record_count).sum(),
            bytes: files.iter().map(DataFile::file_size_in_bytes).sum(),
        };
        if files.is_empty() && ranges.is_empty() {
            return Ok(appended);
        }
        let io = table.file_io().clone();
        match self.commit(table, files.clone(), ranges).await {
            Ok(()) => Ok(appended),
            Err(e) => {
                // Nothing references the files: remove them.
                for file in &files {
                    if let Err(d) = io.delete(file.file_path()).await {
                        warn!(path = file.file_path(), error = %d, "lake file of a failed commit not deleted");
                    }
                }
                Err(e)
            }
        }
    }

    fn check_ranges(&self, table: &Table, ranges: &[OffsetRange]) -> Result<()> {
        match off_mark(&high_water_marks(table), ranges.iter().map(|r| (r.partition, r.first))) {
            Some((partition, first, committed)) if committed > first => Err(Error::AlreadyCommitted {
                table: self.name().to_owned(),
                partition,
                first,
                committed,
            }),
            Some((partition, first, committed)) => Err(Error::Gap {
                table: self.name().to_owned(),
                partition,
                first,
                committed,
            }),
            None => Ok(()),
        }
    }

    /// Parquet data files of the rows of `ipc`, one set per partition.
    async fn write<B: AsRef<[u8]>>(&self, table: &Table, ipc: &[B]) -> Result<Vec<DataFile>> {
        let metadata = table.metadata();
        let schema = metadata.current_schema().clone();
        let target = arrow_schema(&schema)?;
        let mut batches = Vec::new();
        for message in ipc {
            for batch in batches_from_ipc(message.as_ref())? {
                if batch.num_rows() > 0 {
                    batches.push(conform(&batch, &target, self.name())?);
                }
            }
        }
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let rolling = RollingFileWriterBuilder::new_with_default_file_size(
            ParquetWriterBuilder::new(properties, schema.clone()),
            table.file_io().clone(),
            DefaultLocationGenerator::new(metadata)?,
            DefaultFileNameGenerator::new("gh".to_owned(), Some(unique_suffix()), DataFileFormat::Parquet),
        );
        let mut writer = FanoutWriter::new(DataFileWriterBuilder::new(rolling));
        let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
            schema,
            metadata.default_partition_spec().clone(),
        )?;
        for batch in &batches {
            for (key, part) in splitter.split(batch)? {
                writer.write(key, part).await?;
            }
        }
        Ok(writer.close().await?)
    }

    /// Commits `files` with `ranges` on `table` (as loaded for writing
    /// them; reloaded for each further attempt).
    async fn commit(&self, table: Table, files: Vec<DataFile>, ranges: &[OffsetRange]) -> Result<()> {
        let catalog = &self.warehouse.catalog;
        let offsets: serde_json::Map<String, serde_json::Value> = ranges
            .iter()
            .map(|r| (r.partition.to_string(), serde_json::json!([r.first, r.next])))
            .collect();
        let summary = HashMap::from([
            (
                SUMMARY_OFFSETS.to_owned(),
                serde_json::Value::Object(offsets).to_string(),
            ),
            (SUMMARY_TOPIC.to_owned(), self.topic.clone()),
        ]);
        catalog.expect(&self.ident, ranges.iter().map(|r| (r.partition, r.first)).collect());
        let mut attempt = 0;
        let mut loaded = Some(table);
        let result = loop {
            attempt += 1;
            let table = match loaded.take() {
                Some(table) => table,
                None => match catalog.load_table(&self.ident).await {
                    Ok(table) => table,
                    Err(e) => break Err(e.into()),
                },
            };
            if let Err(e) = self.check_ranges(&table, ranges) {
                break Err(e);
            }
            let tx = Transaction::new(&table);
            let tx = tx
                .fast_append()
                .add_data_files(files.clone())
                .set_snapshot_properties(summary.clone())
                .apply(tx);
            let mut tx = match tx {
                Ok(tx) => tx,
                Err(e) => break Err(e.into()),
            };
            if !ranges.is_empty() {
                let mut properties = tx.update_table_properties();
                for r in ranges {
                    properties = properties.set(offset_property(r.partition), r.next.to_string());
                }
                tx = match properties.apply(tx) {
                    Ok(tx) => tx,
                    Err(e) => break Err(e.into()),
                };
            }
            match tx.commit(catalog.as_ref()).await {
                Ok(_) => break Ok(()),
                Err(e) if e.message().starts_with(FENCED) => {
                    // A writer committed the partition between the check
                    // above and the commit.
                    let table = catalog.load_table(&self.ident).await?;
                    break Err(self
                        .check_ranges(&table, ranges)
                        .err()
                        .unwrap_or_else(|| Error::Iceberg(e)));
                }
                Err(e)
                    if (e.retryable() || e.kind() == ErrorKind::CatalogCommitConflicts)
                        && attempt < COMMIT_ATTEMPTS =>
                {
                    debug!(table = self.name(), attempt, error = %e, "lake commit conflicted; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                Err(e) => break Err(e.into()),
            }
        };
        catalog.clear(&self.ident);
        result
    }

    /// Expires snapshots older than `older_than_ms` (milliseconds since
    /// the epoch), keeping at least the last `retain_last`; returns how many
    /// were expired. Only metadata changes: iceberg-rust 0.10.1 deletes no
    /// files (an append-only table's data files stay referenced anyway).
    pub async fn expire_snapshots(&self, older_than_ms: i64, retain_last: usize) -> Result<usize> {
        let table = self.load().await?;
        let before = table.metadata().snapshots().len();
        let tx = Transaction::new(&table);
        let tx = tx
            .expire_snapshots()
            .expire_older_than_ms(older_than_ms)
            .retain_last(retain_last)
            .apply(tx)?;
        let table = tx.commit(self.warehouse.catalog.as_ref()).await?;
        Ok(before.saturating_sub(table.metadata().snapshots().len()))
    }
}
