//! The telemetry lake as Apache Iceberg tables, through iceberg-rust.
//!
//! Every lake table is one Iceberg table (format version 2) in one
//! namespace of a catalog: the embedded SQL catalog on sqlite (no server:
//! the local stack) or an Iceberg REST catalog (fleets); data and metadata
//! on the local filesystem or S3. Tables are partitioned by the hour of
//! their time column. Any engine that reads Iceberg (Trino, Spark, Athena,
//! DuckDB, pyiceberg) reads them; `docs/lake.md` has their configuration.
//!
//! # Exactly once per Kafka offset range
//! A writer appends the rows of a range of Kafka offsets per partition in
//! one commit, and the same commit records the range:
//! - in the snapshot summary (`glasshouse.kafka.offsets`, the ranges as
//!   JSON: an audit trail, gone once the snapshot expires), and
//! - as table properties `glasshouse.kafka.offset.<partition>` = the next
//!   offset (the high-water mark, kept across snapshot expiry).
//!
//! A writer resumes each partition from the table's high-water mark
//! ([`LakeTable::committed_offsets`]), not from consumer-group state, and
//! a range starts where the one before it ended: the table holds every
//! offset of a partition from 0 to its mark, each once. A commit whose
//! range does not start at the high-water mark is refused by a fence
//! inside the catalog's commit ([`fence`]): below it (a replay after a
//! crash, or a writer that lost its partition and does not know it yet)
//! with [`Error::AlreadyCommitted`], above it (offsets in between would
//! never be written: a writer that skipped messages, or a catalog that
//! lost a commit) with [`Error::Gap`]. The check
//! and the catalog's compare-and-swap of the table's metadata see the same
//! snapshot, so concurrent writers cannot both pass it. Commits that lose
//! a race with another writer's commit are retried on the new metadata.
//!
//! # Arrow versions
//! iceberg-rust 0.10.1 is built on arrow 58, the rest of the workspace on
//! arrow 59. Batches and schemas enter this crate as Arrow IPC bytes (a
//! format stable across arrow versions) and no arrow type is in its API.
//!
//! # Layout
//! - [`catalog`]: settings and opening a catalog ([`Warehouse`]).
//! - [`schema`]: lake schemas as Iceberg schemas, batches cast to them.
//! - [`table`]: appends with offsets, the high-water marks, expiry.
//! - [`fence`]: the catalog wrapper that refuses a range off the mark.

pub mod catalog;
pub mod fence;
pub mod schema;
pub mod table;

#[cfg(test)]
mod tests;

pub use catalog::{CatalogKind, Settings, Warehouse};
pub use table::{Appended, DataFiles, LakeTable, OffsetRange};

/// What went wrong in the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("lake settings: {0}")]
    Settings(String),
    #[error("table {table}: column {column}: {message}")]
    Column {
        table: String,
        column: String,
        message: String,
    },
    /// The range (or part of it) is in the table already: committed by
    /// this writer before a crash, or by another writer of the partition.
    #[error(
        "table {table}: offsets from {first} of partition {partition} are committed already (high-water mark {committed})"
    )]
    AlreadyCommitted {
        table: String,
        partition: i32,
        first: i64,
        committed: i64,
    },
    /// The range starts above the table's high-water mark: committed, the
    /// offsets in between would never be in the table. The writer reads
    /// the partition again from the mark.
    #[error(
        "table {table}: offsets from {first} of partition {partition} do not follow the table's high-water mark {committed}"
    )]
    Gap {
        table: String,
        partition: i32,
        first: i64,
        committed: i64,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
