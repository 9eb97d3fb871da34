//! The telemetry lake and SQL over it.
//!
//! The lake writer (a Kafka consumer group of its own, run by every
//! analyzer replica) commits every topic of the catalog into Apache
//! Iceberg tables (`lake.format = "iceberg"`, the default: the embedded
//! sqlite catalog or a REST catalog; data on local disk or S3), exactly
//! once per Kafka offset. The query service (`glasshouse-query`, its own
//! process) serves SQL over them with DataFusion through the PostgreSQL
//! wire protocol and Arrow Flight SQL: read-only, authenticated, with a
//! query timeout and a memory limit. A query sees what is committed, at
//! most `flush_secs` old. The older Parquet layout of our own (`lake`,
//! `format = "parquet"`) is still written if asked, deprecated.
//!
//! ```text
//!  Kafka glasshouse.* ──▶ writer (per analyzer) ──commit (offsets, fenced)──▶ Iceberg catalog + data files
//!                                                                                │
//!                          Engine (DataFusion, own runtime, read-only, timeout, ◀─┘ current snapshot
//!                          memory pool) in glasshouse-query
//!                             │                   │
//!              pg (PostgreSQL wire)     flight (Flight SQL) ◀── glasshouse sql
//! ```
//!
//! # Layout
//! - [`catalog`]: the tables, the topic each reads, their columns; the `containers` view.
//! - [`decode`]: Kafka message values (Arrow IPC, JSON) to rows of a table.
//! - [`lake`]: the deprecated Parquet layout: files, tails, flush, compaction, retention.
//! - [`writer`]: the consumer group filling the lake.
//! - [`engine`]: DataFusion sessions, the read-only check, timeout and memory limit.
//! - [`connection`]: the front doors' connection cap, handshake, idle and write timeouts.
//! - [`pg`]: the PostgreSQL wire protocol front door.
//! - [`flight`]: the Flight SQL front door and a client for the CLI.
//! - [`output`]: result tables as text, CSV and JSON with hostile strings escaped.
//! - [`config`]: `[lake]` (and `[lake.s3]`, the object store) and `[sql]`.
//! - [`service`]: starts what the config asks for.
//! - [`iceberg_lake`]: the lake as Iceberg tables (`lake.format = "iceberg"`):
//!   its writer (exactly once per Kafka offset) and its DataFusion tables.
//! - [`query`]: the query service (`glasshouse-query`), SQL over the
//!   Iceberg lake in its own process.
//! - [`fixture`]: deterministic synthetic events (golden tests, the benchmark).
//!
//! The workspace has one arrow (59, DataFusion 55's): the contract's decoded
//! batches are DataFusion's batches.

pub mod catalog;
pub mod config;
pub mod connection;
pub mod decode;
pub mod engine;
pub mod fixture;
pub mod flight;
pub mod iceberg_lake;
pub mod lake;
pub mod output;
pub mod pg;
pub mod query;
pub mod service;
pub mod writer;

pub use datafusion;
