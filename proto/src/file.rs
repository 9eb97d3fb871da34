//! Arrow schema of `glasshouse.file` records: one row per file under a
//! sensitive path opened for writing (or created) by a process, already
//! resolved and attributed like [`crate::process`] rows, whose identity and
//! attribution columns it shares.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `agent_id` | utf8 | agent that observed the event |
//! | `boot_id` | uint64 | agent process start the event belongs to |
//! | `batch_seq` | uint64 | sequence of the agent batch that carried it |
//! | `event_index` | uint32 | position in that batch (after its process and network events); the four columns above are the stable event id |
//! | `time` | timestamp(ns, UTC) | when the kernel reported the event |
//! | `host` | utf8 | host name of the agent |
//! | `container_id` | utf8, null for host processes | full runtime container id |
//! | `container_name` | utf8, nullable | runtime name |
//! | `image` | utf8, nullable | image reference the container was started from |
//! | `image_id` | utf8, nullable | image id / digest |
//! | `workload_id` | utf8 | key baselines are learned under; also the Kafka message key |
//! | `kind` | utf8 | `write` (an existing file opened for writing or truncation) or `create` (the open created it) |
//! | `pid` | uint32 | writing process (thread group id), host pid namespace |
//! | `path` | utf8 | the file's absolute path as the container sees it, resolved by the kernel (no symlinks, no relative parts) |
//! | `exe` | utf8, nullable | executable of the writing process |
//! | `flags` | uint32 | the `open(2)` flags (`O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`, `O_APPEND`, …) |
//! | `count` | uint32 | identical events collapsed into this row |
//!
//! Paths that are not valid UTF-8 are converted lossily (U+FFFD).

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{StringBuilder, TimestampNanosecondBuilder, UInt32Builder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampNanosecondType, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

pub use crate::process::Str;

/// What the process did to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An existing file was opened for writing (or truncation).
    Write,
    /// The open created the file.
    Create,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Write => "write",
            Kind::Create => "create",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "write" => Some(Kind::Write),
            "create" => Some(Kind::Create),
            _ => None,
        }
    }
}

/// One write-open of a sensitive file, resolved and attributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub agent_id: Str,
    pub boot_id: u64,
    pub batch_seq: u64,
    pub event_index: u32,
    pub time_unix_ns: i64,
    pub host: Str,
    pub container_id: Option<Str>,
    pub container_name: Option<Str>,
    pub image: Option<Str>,
    pub image_id: Option<Str>,
    pub workload_id: Str,
    pub kind: Kind,
    pub pid: u32,
    /// Absolute path of the file, as the container sees it.
    pub path: Str,
    /// Executable of the writing process, when known.
    pub exe: Option<Str>,
    /// The `open(2)` flags.
    pub flags: u32,
    pub count: u32,
}

impl Row {
    /// Approximate bytes this row takes in Arrow builders (for flush-by-size).
    pub fn approx_bytes(&self) -> usize {
        let opt = |s: &Option<Str>| s.as_ref().map_or(0, |s| s.len() + 4);
        80 + self.agent_id.len()
            + self.host.len()
            + self.workload_id.len()
            + opt(&self.container_id)
            + opt(&self.container_name)
            + opt(&self.image)
            + opt(&self.image_id)
            + self.path.len()
            + 4
            + opt(&self.exe)
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let u32f = |name: &str| Field::new(name, DataType::UInt32, false);
    let u64f = |name: &str| Field::new(name, DataType::UInt64, false);
    Arc::new(Schema::new(vec![
        utf8("agent_id", false),
        u64f("boot_id"),
        u64f("batch_seq"),
        u32f("event_index"),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        utf8("host", false),
        utf8("container_id", true),
        utf8("container_name", true),
        utf8("image", true),
        utf8("image_id", true),
        utf8("workload_id", false),
        utf8("kind", false),
        u32f("pid"),
        utf8("path", false),
        utf8("exe", true),
        u32f("flags"),
        u32f("count"),
    ]))
});

/// The schema of `glasshouse.file` batches.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Appends [`Row`]s column by column.
#[derive(Debug)]
pub struct Builder {
    agent_id: StringBuilder,
    boot_id: UInt64Builder,
    batch_seq: UInt64Builder,
    event_index: UInt32Builder,
    time: TimestampNanosecondBuilder,
    host: StringBuilder,
    container_id: StringBuilder,
    container_name: StringBuilder,
    image: StringBuilder,
    image_id: StringBuilder,
    workload_id: StringBuilder,
    kind: StringBuilder,
    pid: UInt32Builder,
    path: StringBuilder,
    exe: StringBuilder,
    flags: UInt32Builder,
    count: UInt32Builder,
    rows: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            agent_id: StringBuilder::new(),
            boot_id: UInt64Builder::new(),
            batch_seq: UInt64Builder::new(),
            event_index: UInt32Builder::new(),
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            host: StringBuilder::new(),
            container_id: StringBuilder::new(),
            container_name: StringBuilder::new(),
            image: StringBuilder::new(),
            image_id: StringBuilder::new(),
            workload_id: StringBuilder::new(),
            kind: StringBuilder::new(),
            pid: UInt32Builder::new(),
            path: StringBuilder::new(),
            exe: StringBuilder::new(),
            flags: UInt32Builder::new(),
            count: UInt32Builder::new(),
            rows: 0,
        }
    }
}

impl Builder {
    /// Rows appended since the last [`Builder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn append(&mut self, row: &Row) {
        self.agent_id.append_value(&row.agent_id);
        self.boot_id.append_value(row.boot_id);
        self.batch_seq.append_value(row.batch_seq);
        self.event_index.append_value(row.event_index);
        self.time.append_value(row.time_unix_ns);
        self.host.append_value(&row.host);
        self.container_id.append_option(row.container_id.as_deref());
        self.container_name.append_option(row.container_name.as_deref());
        self.image.append_option(row.image.as_deref());
        self.image_id.append_option(row.image_id.as_deref());
        self.workload_id.append_value(&row.workload_id);
        self.kind.append_value(row.kind.as_str());
        self.pid.append_value(row.pid);
        self.path.append_value(&row.path);
        self.exe.append_option(row.exe.as_deref());
        self.flags.append_value(row.flags);
        self.count.append_value(row.count);
        self.rows += 1;
    }

    /// Builds the batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.agent_id.finish()),
            Arc::new(self.boot_id.finish()),
            Arc::new(self.batch_seq.finish()),
            Arc::new(self.event_index.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.container_id.finish()),
            Arc::new(self.container_name.finish()),
            Arc::new(self.image.finish()),
            Arc::new(self.image_id.finish()),
            Arc::new(self.workload_id.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.exe.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.count.finish()),
        ];
        self.rows = 0;
        // Cannot fail: every column is built above from the matching field type,
        // non-nullable columns only receive values, and all have `rows` entries.
        RecordBatch::try_new(schema(), columns).expect("file builder matches its schema")
    }
}

/// Reads rows back from a batch with the file [`schema`] (checked first).
pub fn read_rows(batch: &RecordBatch) -> Result<Vec<Row>, ArrowError> {
    if batch.schema().fields() != schema().fields() {
        return Err(ArrowError::SchemaError(format!(
            "not a glasshouse.file batch: schema {:?}",
            batch.schema()
        )));
    }
    let str_col = |i: usize| batch.column(i).as_string::<i32>();
    let u32_col = |i: usize| batch.column(i).as_primitive::<UInt32Type>();
    let u64_col = |i: usize| batch.column(i).as_primitive::<UInt64Type>();
    let opt = |i: usize, row: usize| {
        let c = str_col(i);
        c.is_valid(row).then(|| Str::from(c.value(row)))
    };
    let time = batch.column(4).as_primitive::<TimestampNanosecondType>();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let kind_str = str_col(11).value(r);
        let kind = Kind::parse(kind_str)
            .ok_or_else(|| ArrowError::InvalidArgumentError(format!("unknown kind {kind_str:?}")))?;
        rows.push(Row {
            agent_id: str_col(0).value(r).into(),
            boot_id: u64_col(1).value(r),
            batch_seq: u64_col(2).value(r),
            event_index: u32_col(3).value(r),
            time_unix_ns: time.value(r),
            host: str_col(5).value(r).into(),
            container_id: opt(6, r),
            container_name: opt(7, r),
            image: opt(8, r),
            image_id: opt(9, r),
            workload_id: str_col(10).value(r).into(),
            kind,
            pid: u32_col(12).value(r),
            path: str_col(13).value(r).into(),
            exe: opt(14, r),
            flags: u32_col(15).value(r),
            count: u32_col(16).value(r),
        });
    }
    Ok(rows)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ipc;

    pub(crate) fn sample_row() -> Row {
        Row {
            agent_id: "host-a".into(),
            boot_id: 7,
            batch_seq: 3,
            event_index: 4,
            time_unix_ns: 1_700_000_000_000_000_000,
            host: "host-a".into(),
            container_id: Some("41ee3b278ccc".into()),
            container_name: Some("web-1".into()),
            image: Some("localhost/glasshouse-test:latest".into()),
            image_id: Some("sha256:3c44".into()),
            workload_id: "localhost/glasshouse-test".into(),
            kind: Kind::Write,
            pid: 10,
            path: "/etc/passwd".into(),
            exe: Some("/bin/busybox".into()),
            // O_WRONLY | O_TRUNC
            flags: 0o1001,
            count: 1,
        }
    }

    /// A host process creating a file, executable unknown, collapsed.
    fn create_row() -> Row {
        Row {
            container_id: None,
            container_name: None,
            image: None,
            image_id: None,
            workload_id: "host:host-a".into(),
            kind: Kind::Create,
            path: "/root/.ssh/authorized_keys".into(),
            exe: None,
            // O_WRONLY | O_CREAT | O_EXCL
            flags: 0o301,
            count: 3,
            event_index: 5,
            ..sample_row()
        }
    }

    #[test]
    fn kinds_round_trip_as_text() {
        for k in [Kind::Write, Kind::Create] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("read"), None);
    }

    #[test]
    fn rows_round_trip_through_a_batch_and_ipc() {
        let mut b = Builder::default();
        let rows = vec![sample_row(), create_row()];
        for r in &rows {
            b.append(r);
        }
        assert_eq!(b.len(), 2);
        let batch = b.finish();
        assert!(b.is_empty());
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(read_rows(&batch).unwrap(), rows);

        let back = ipc::decode(&ipc::encode(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
        assert_eq!(read_rows(&back).unwrap(), rows);
        let exe = back.column_by_name("exe").unwrap();
        assert_eq!(exe.null_count(), 1, "the host row's executable is unknown");
        assert_eq!(back.column_by_name("path").unwrap().null_count(), 0);
    }

    #[test]
    fn approx_bytes_grows_with_the_strings() {
        let short = sample_row();
        let long = Row {
            path: "/etc/".repeat(100).into(),
            ..sample_row()
        };
        assert_eq!(long.approx_bytes() - short.approx_bytes(), 500 - "/etc/passwd".len());
    }

    #[test]
    fn foreign_schemas_are_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        assert!(read_rows(&other).is_err());
        let mut network = crate::network::Builder::default();
        network.append(&crate::network::tests::sample_row());
        assert!(read_rows(&network.finish()).is_err());
        let mut process = crate::process::Builder::default();
        process.append(&crate::process::tests::sample_row());
        assert!(read_rows(&process.finish()).is_err());
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let mut b = Builder::default();
        b.append(&sample_row());
        let batch = b.finish();
        let mut columns = batch.columns().to_vec();
        columns[11] = Arc::new(arrow_array::StringArray::from(vec!["read"]));
        let forged = RecordBatch::try_new(schema(), columns).unwrap();
        let err = read_rows(&forged).unwrap_err().to_string();
        assert!(err.contains("unknown kind \"read\""), "{err}");
    }
}
