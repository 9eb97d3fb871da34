//! The tables of the lake: which topic fills each, how its messages decode,
//! and its columns. Data-driven: a new topic is one more [`TableDef`] in
//! [`TABLES`] (and, for a JSON topic, its column list).
//!
//! | table | topic | format |
//! |---|---|---|
//! | `process_events` | `glasshouse.process` | Arrow IPC, columns of `glasshouse_proto::process` |
//! | `network_events` | `glasshouse.network` | Arrow IPC, columns of `glasshouse_proto::network` |
//! | `file_events` | `glasshouse.file` | Arrow IPC, columns of `glasshouse_proto::file` |
//! | `syscall_profiles` | `glasshouse.syscalls` | Arrow IPC, columns of `glasshouse_proto::syscalls` |
//! | `resource_samples` | `glasshouse.resources` | Arrow IPC, columns of `glasshouse_proto::resources` |
//! | `gaps` | `glasshouse.gaps` | Arrow IPC, columns of `glasshouse_proto::gaps` |
//! | `alerts` | `glasshouse.alerts` | OCSF JSON, flattened: [`ALERT_COLUMNS`] + `raw` |
//! | `baselines` | `glasshouse.baselines` | snapshot JSON, flattened: [`BASELINE_COLUMNS`] + `raw` |
//! | `vulnerabilities` | `glasshouse.vulnerabilities` | JSON: [`VULNERABILITY_COLUMNS`] + `raw` (an absent topic is an empty table) |
//! | `containers` | — | a view over the attribution columns of the event tables and the latest resource sample ([`CONTAINERS_VIEW`]) |
//!
//! Every JSON table also has `kafka_key` (the message key: the workload id),
//! `kafka_time` (the message timestamp) and `raw` (the message as received).
//!
//! Strings are `Utf8View` (top-level columns; list items stay `Utf8`),
//! the type DataFusion reads Parquet strings as by default: the lake's
//! schemas, its in-memory tail and its Parquet files agree with any
//! DataFusion session over the same files, and string group-bys and
//! filters take DataFusion's faster view paths. Clients see ordinary
//! strings (`text` over the PostgreSQL wire).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// How a topic's message values decode into rows.
#[derive(Debug, Clone, Copy)]
pub enum Format {
    /// One Arrow IPC stream per message; the schema is the contract crate's
    /// for the record type.
    Arrow(fn() -> SchemaRef),
    /// One JSON document per message, flattened into these columns.
    Json(&'static [JsonColumn]),
}

/// One flattened column of a JSON table.
#[derive(Debug, Clone, Copy)]
pub struct JsonColumn {
    pub name: &'static str,
    /// JSON pointer (RFC 6901) into the document.
    pub pointer: &'static str,
    pub kind: JsonKind,
    pub doc: &'static str,
}

/// Column types a JSON value is read as. A value of another JSON type is
/// null, not an error: the raw document is kept in `raw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Text,
    Int,
    Float,
    Bool,
    /// Milliseconds since the epoch (OCSF times).
    TimeMs,
    /// Nanoseconds since the epoch.
    TimeNs,
    /// Any JSON value, kept as its JSON text (arrays, objects).
    Json,
}

/// A table filled from one topic.
#[derive(Debug, Clone, Copy)]
pub struct TableDef {
    pub name: &'static str,
    pub topic: &'static str,
    pub format: Format,
    /// Column whose hour partitions the Parquet files (a timestamp column).
    pub time_column: &'static str,
    pub doc: &'static str,
}

/// Columns of `alerts`, from the OCSF 1.8 Detection Finding
/// (`analyzer/src/ocsf.rs`).
pub const ALERT_COLUMNS: &[JsonColumn] = &[
    col(
        "time",
        "/time",
        JsonKind::TimeMs,
        "last time the finding was seen (OCSF `time`)",
    ),
    col(
        "alert_id",
        "/finding_info/uid",
        JsonKind::Text,
        "alert id, stable across replays",
    ),
    col(
        "activity",
        "/activity_name",
        JsonKind::Text,
        "`Create` (first) or `Update` (recurrence with the final count)",
    ),
    col("severity", "/severity", JsonKind::Text, "OCSF severity name"),
    col("severity_id", "/severity_id", JsonKind::Int, "OCSF severity id"),
    col(
        "title",
        "/finding_info/title",
        JsonKind::Text,
        "what was seen, one line",
    ),
    col(
        "rule",
        "/unmapped/glasshouse/rule",
        JsonKind::Text,
        "detection rule or feature kind (`rule.drift`, `process.exec`, …)",
    ),
    col(
        "technique",
        "/finding_info/attacks/0/technique/uid",
        JsonKind::Text,
        "ATT&CK technique id",
    ),
    col(
        "workload_id",
        "/unmapped/glasshouse/workload",
        JsonKind::Text,
        "workload the alert is about",
    ),
    col(
        "container_id",
        "/evidences/0/container/uid",
        JsonKind::Text,
        "container id",
    ),
    col(
        "container_name",
        "/evidences/0/container/name",
        JsonKind::Text,
        "container name",
    ),
    col(
        "image",
        "/evidences/0/container/image/name",
        JsonKind::Text,
        "image reference",
    ),
    col(
        "pid",
        "/evidences/0/process/pid",
        JsonKind::Int,
        "process id (host pid namespace), when the finding is about a process",
    ),
    col(
        "process_path",
        "/evidences/0/process/path",
        JsonKind::Text,
        "executable, when the finding is about a process",
    ),
    col(
        "cmd_line",
        "/evidences/0/process/cmd_line",
        JsonKind::Text,
        "command line, when the finding is about a process",
    ),
    col(
        "parent_pid",
        "/evidences/0/process/parent_process/pid",
        JsonKind::Int,
        "parent process id",
    ),
    col(
        "file_path",
        "/evidences/0/file/path",
        JsonKind::Text,
        "file, when the finding is about a file",
    ),
    col(
        "remote_addr",
        "/evidences/0/dst_endpoint/ip",
        JsonKind::Text,
        "peer address, when the finding is about a connection",
    ),
    col(
        "remote_port",
        "/evidences/0/dst_endpoint/port",
        JsonKind::Int,
        "peer port",
    ),
    col("count", "/count", JsonKind::Int, "occurrences in the alert's window"),
    col("score", "/unmapped/glasshouse/score", JsonKind::Float, "score 0–1"),
    col(
        "baseline_version",
        "/unmapped/glasshouse/baseline_version",
        JsonKind::Int,
        "baseline version it was scored against",
    ),
    col(
        "baseline_state",
        "/unmapped/glasshouse/baseline_state",
        JsonKind::Text,
        "`learning`, `stable` or `locked`",
    ),
    col(
        "event_id",
        "/unmapped/glasshouse/event_id",
        JsonKind::Text,
        "id of the first event (`agent/boot/batch/index`)",
    ),
    col(
        "first_seen",
        "/finding_info/first_seen_time",
        JsonKind::TimeMs,
        "first time the finding was seen",
    ),
];

/// Columns of `baselines`, from the snapshot JSON (`analyzer/src/baseline.rs`).
pub const BASELINE_COLUMNS: &[JsonColumn] = &[
    col("workload_id", "/workload", JsonKind::Text, "workload"),
    col("version", "/version", JsonKind::Int, "baseline version"),
    col("state", "/state", JsonKind::Text, "`learning`, `stable` or `locked`"),
    col(
        "state_since",
        "/state_since_ns",
        JsonKind::TimeNs,
        "when it entered that state",
    ),
    col(
        "created",
        "/created_ns",
        JsonKind::TimeNs,
        "when the baseline was created",
    ),
    col("events", "/events", JsonKind::Int, "events learned from"),
    col(
        "novelty",
        "/novelty",
        JsonKind::Float,
        "new features per event over the last completed window",
    ),
    col("images", "/images", JsonKind::Json, "image ids seen (JSON array)"),
    col("hosts", "/hosts", JsonKind::Json, "host names (JSON array)"),
];

/// Columns of `vulnerabilities` (`glasshouse.vulnerabilities`, JSON: the
/// analyzer's vulnerability findings, one row per container × package ×
/// advisory each time it opens, changes or resolves — the latest row of a
/// `key` is its state; the advisory's aliases and CVEs are in `raw`).
pub const VULNERABILITY_COLUMNS: &[JsonColumn] = &[
    col(
        "time",
        "/last_seen_ms",
        JsonKind::TimeMs,
        "when the finding was last confirmed (else the message time)",
    ),
    col(
        "key",
        "/key",
        JsonKind::Text,
        "the finding: [container, ecosystem, package, advisory] as JSON",
    ),
    col("state", "/state", JsonKind::Text, "`open` or `resolved`"),
    col(
        "container_id",
        "/container_id",
        JsonKind::Text,
        "full runtime container id",
    ),
    col("container_name", "/container_name", JsonKind::Text, "runtime name"),
    col("workload_id", "/workload_id", JsonKind::Text, "workload"),
    col("host", "/host", JsonKind::Text, "host name of the agent"),
    col("image", "/image", JsonKind::Text, "image reference"),
    col(
        "image_digest",
        "/image_digest",
        JsonKind::Text,
        "digest of the image the container runs",
    ),
    col(
        "ecosystem",
        "/ecosystem",
        JsonKind::Text,
        "OSV ecosystem (e.g. `Debian:12`, `Alpine:v3.19`, `PyPI`, `npm`)",
    ),
    col("package", "/package", JsonKind::Text, "installed package"),
    col(
        "source_package",
        "/source_package",
        JsonKind::Text,
        "its source package, when matched by it",
    ),
    col(
        "installed_version",
        "/installed_version",
        JsonKind::Text,
        "installed version",
    ),
    col(
        "location",
        "/location",
        JsonKind::Text,
        "package database it was read from, inside the container",
    ),
    col("advisory_id", "/advisory_id", JsonKind::Text, "OSV advisory id"),
    col("severity", "/severity", JsonKind::Text, "severity"),
    col(
        "cvss_score",
        "/cvss_score",
        JsonKind::Float,
        "CVSS v3 base score, when known",
    ),
    col(
        "fixed_version",
        "/fixed_version",
        JsonKind::Text,
        "first version that fixes it, when known",
    ),
    col(
        "first_seen",
        "/first_seen_ms",
        JsonKind::TimeMs,
        "when it was first found",
    ),
    col(
        "resolved_at",
        "/resolved_at",
        JsonKind::Text,
        "when it was resolved (RFC 3339), if it was",
    ),
];

const fn col(name: &'static str, pointer: &'static str, kind: JsonKind, doc: &'static str) -> JsonColumn {
    JsonColumn {
        name,
        pointer,
        kind,
        doc,
    }
}

/// Every table filled from a topic.
pub const TABLES: &[TableDef] = &[
    TableDef {
        name: "process_events",
        topic: "glasshouse.process",
        format: Format::Arrow(glasshouse_proto::process::schema),
        time_column: "time",
        doc: "process exec, fork, exit and running-at-start events",
    },
    TableDef {
        name: "network_events",
        topic: "glasshouse.network",
        format: Format::Arrow(glasshouse_proto::network::schema),
        time_column: "time",
        doc: "TCP listen, connect, accept, close and failed connects with byte counts",
    },
    TableDef {
        name: "file_events",
        topic: "glasshouse.file",
        format: Format::Arrow(glasshouse_proto::file::schema),
        time_column: "time",
        doc: "writes and creates of files under sensitive paths",
    },
    TableDef {
        name: "syscall_profiles",
        topic: "glasshouse.syscalls",
        format: Format::Arrow(glasshouse_proto::syscalls::schema),
        time_column: "start",
        doc: "per container and interval, one row per syscall with its count",
    },
    TableDef {
        name: "resource_samples",
        topic: "glasshouse.resources",
        format: Format::Arrow(glasshouse_proto::resources::schema),
        time_column: "time",
        doc: "per-container CPU, memory, I/O, pids and network counters",
    },
    TableDef {
        name: "gaps",
        topic: "glasshouse.gaps",
        format: Format::Arrow(glasshouse_proto::gaps::schema),
        time_column: "start",
        doc: "events an agent knows it did not report, per container and window",
    },
    TableDef {
        name: "alerts",
        topic: glasshouse_proto::record::TOPIC_ALERTS,
        format: Format::Json(ALERT_COLUMNS),
        time_column: "time",
        doc: "OCSF 1.8 Detection Findings, flattened",
    },
    TableDef {
        name: "baselines",
        topic: glasshouse_proto::record::TOPIC_BASELINES,
        format: Format::Json(BASELINE_COLUMNS),
        time_column: "kafka_time",
        doc: "every baseline snapshot written (one row per version)",
    },
    TableDef {
        name: "vulnerabilities",
        topic: "glasshouse.vulnerabilities",
        format: Format::Json(VULNERABILITY_COLUMNS),
        time_column: "kafka_time",
        doc: "vulnerability findings",
    },
];

/// The table filled from `topic`.
pub fn by_topic(topic: &str) -> Option<&'static TableDef> {
    TABLES.iter().find(|t| t.topic == topic)
}

/// The view `containers`: one row per container seen in any event table,
/// with its attribution, first and last time seen, and its latest resource
/// sample.
pub const CONTAINERS_VIEW: &str = "
WITH seen AS (
    SELECT container_id, container_name, image, image_id, workload_id, host, time FROM process_events WHERE container_id IS NOT NULL
    UNION ALL SELECT container_id, container_name, image, image_id, workload_id, host, time FROM network_events WHERE container_id IS NOT NULL
    UNION ALL SELECT container_id, container_name, image, image_id, workload_id, host, time FROM file_events WHERE container_id IS NOT NULL
    UNION ALL SELECT container_id, container_name, image, image_id, workload_id, host, time FROM resource_samples
),
attribution AS (
    SELECT container_id,
           last_value(container_name ORDER BY time) AS container_name,
           last_value(image ORDER BY time) AS image,
           last_value(image_id ORDER BY time) AS image_id,
           last_value(workload_id ORDER BY time) AS workload_id,
           last_value(host ORDER BY time) AS host,
           min(time) AS first_seen,
           max(time) AS last_seen
    FROM seen GROUP BY container_id
),
latest AS (
    SELECT container_id, time, memory_bytes, memory_limit_bytes, pids, cpu_usage_ns,
           row_number() OVER (PARTITION BY container_id ORDER BY time DESC) AS rn
    FROM resource_samples
)
SELECT a.container_id, a.container_name, a.image, a.image_id, a.workload_id, a.host,
       a.first_seen, a.last_seen,
       l.time AS sampled_at, l.memory_bytes, l.memory_limit_bytes, l.pids, l.cpu_usage_ns
FROM attribution a LEFT JOIN latest l ON l.container_id = a.container_id AND l.rn = 1
";

/// The DataFusion schema of a table.
pub fn schema(def: &TableDef) -> SchemaRef {
    match def.format {
        Format::Arrow(contract_schema) => string_views(&contract_schema()),
        Format::Json(columns) => json_schema(columns),
    }
}

/// `schema` with its top-level `Utf8` and `LargeUtf8` columns as
/// `Utf8View`: what DataFusion's Parquet reading makes of them by default
/// (`schema_force_view_types`), nested types left as they are.
pub fn string_views(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn json_schema(columns: &[JsonColumn]) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::with_capacity(columns.len() + 3);
    for c in columns {
        let t = match c.kind {
            JsonKind::Text | JsonKind::Json => DataType::Utf8View,
            JsonKind::Int => DataType::Int64,
            JsonKind::Float => DataType::Float64,
            JsonKind::Bool => DataType::Boolean,
            JsonKind::TimeMs | JsonKind::TimeNs => timestamp(),
        };
        fields.push(Field::new(c.name, t, true));
    }
    fields.push(Field::new("kafka_key", DataType::Utf8View, true));
    fields.push(Field::new("kafka_time", timestamp(), false));
    fields.push(Field::new("raw", DataType::Utf8View, false));
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_its_time_column_as_a_timestamp() {
        for def in TABLES {
            let s = schema(def);
            let f = s
                .field_with_name(def.time_column)
                .unwrap_or_else(|_| panic!("{} has no {}", def.name, def.time_column));
            assert!(matches!(f.data_type(), DataType::Timestamp(..)), "{}", def.name);
        }
    }

    #[test]
    fn top_level_strings_are_views() {
        for def in TABLES {
            for f in schema(def).fields() {
                assert!(
                    !matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8),
                    "{}.{} is {}",
                    def.name,
                    f.name(),
                    f.data_type()
                );
            }
        }
        let p = schema(TABLES.iter().find(|t| t.name == "process_events").unwrap());
        assert_eq!(p.field_with_name("path").unwrap().data_type(), &DataType::Utf8View);
        assert!(matches!(
            p.field_with_name("argv").unwrap().data_type(),
            DataType::List(_)
        ));
    }

    #[test]
    fn names_and_topics_are_unique() {
        for (i, a) in TABLES.iter().enumerate() {
            for b in &TABLES[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.topic, b.topic);
            }
        }
        assert_eq!(by_topic("glasshouse.alerts").map(|t| t.name), Some("alerts"));
        assert!(by_topic("glasshouse.nope").is_none());
    }
}
