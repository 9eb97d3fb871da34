//! Arrow schema of `glasshouse.gaps` records: one row per gap, events the
//! agent knows it did not report (dropped in the kernel, rate-limited, or
//! lost to a full queue) for one container, or for the whole host, during
//! one window. Attributed like [`crate::process`] rows, whose identity and
//! attribution columns it shares, without an event index: `agent_id`,
//! `boot_id`, `container_id`, `reason` and `start` identify a row, and a
//! re-sent batch repeats them (with its `batch_seq`).
//!
//! What a consumer must do with a gap: not treat `[start, end)` of that
//! container (of every container of the host when `container_id` is null)
//! as complete. Baselines neither learn from that window nor score it as
//! normal; an absence of events in it proves nothing.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `agent_id` | utf8 | agent that reported the gap |
//! | `boot_id` | uint64 | agent process start the gap belongs to |
//! | `batch_seq` | uint64 | sequence of the agent batch that carried it |
//! | `host` | utf8 | host name of the agent |
//! | `container_id` | utf8, nullable | full runtime container id; null: the whole host (events not attributable to a container) |
//! | `container_name` | utf8, nullable | runtime name; null for a host gap |
//! | `image` | utf8, nullable | image reference the container was started from; null for a host gap |
//! | `image_id` | utf8, nullable | image id / digest; null for a host gap |
//! | `workload_id` | utf8 | the container's workload id, `host:<host>` for a host gap (as for host rows of every other topic); also the Kafka message key |
//! | `start` | timestamp(ns, UTC) | start of the window (inclusive) |
//! | `end` | timestamp(ns, UTC) | end of the window (exclusive); never before `start` |
//! | `reason` | utf8 | `kernel_buffer_full` (the kernel's ring buffer was full), `rate_limited` (the container exceeded the agent's per-container rate limit), `queue_full` (the agent's queue between sensor and pipeline was full) |
//! | `dropped` | uint64 | events not reported in the window; never 0 |

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{StringBuilder, TimestampNanosecondBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampNanosecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

pub use crate::process::Str;

/// Why the agent did not report the events of a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The kernel's ring buffer was full: lost before the agent read them.
    KernelBufferFull,
    /// The container exceeded the agent's per-container event rate limit.
    RateLimited,
    /// The agent's queue between its sensor and its pipeline was full.
    QueueFull,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::KernelBufferFull, Reason::RateLimited, Reason::QueueFull];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::KernelBufferFull => "kernel_buffer_full",
            Reason::RateLimited => "rate_limited",
            Reason::QueueFull => "queue_full",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One gap of one container (or of the host), attributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub agent_id: Str,
    pub boot_id: u64,
    pub batch_seq: u64,
    pub host: Str,
    /// `None`: the whole host.
    pub container_id: Option<Str>,
    pub container_name: Option<Str>,
    pub image: Option<Str>,
    pub image_id: Option<Str>,
    pub workload_id: Str,
    /// The window: [start, end) in Unix nanoseconds.
    pub start_unix_ns: i64,
    pub end_unix_ns: i64,
    pub reason: Reason,
    pub dropped: u64,
}

impl Row {
    /// Approximate bytes this row takes in Arrow builders (for flush-by-size).
    pub fn approx_bytes(&self) -> usize {
        let opt = |s: &Option<Str>| s.as_ref().map_or(0, |s| s.len() + 4);
        72 + self.agent_id.len()
            + self.host.len()
            + opt(&self.container_id)
            + opt(&self.container_name)
            + opt(&self.image)
            + opt(&self.image_id)
            + self.workload_id.len()
            + self.reason.as_str().len()
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let u64f = |name: &str| Field::new(name, DataType::UInt64, false);
    let ts = |name: &str| {
        Field::new(
            name,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        )
    };
    Arc::new(Schema::new(vec![
        utf8("agent_id", false),
        u64f("boot_id"),
        u64f("batch_seq"),
        utf8("host", false),
        utf8("container_id", true),
        utf8("container_name", true),
        utf8("image", true),
        utf8("image_id", true),
        utf8("workload_id", false),
        ts("start"),
        ts("end"),
        utf8("reason", false),
        u64f("dropped"),
    ]))
});

/// The schema of `glasshouse.gaps` batches.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Appends [`Row`]s column by column.
#[derive(Debug)]
pub struct Builder {
    agent_id: StringBuilder,
    boot_id: UInt64Builder,
    batch_seq: UInt64Builder,
    host: StringBuilder,
    container_id: StringBuilder,
    container_name: StringBuilder,
    image: StringBuilder,
    image_id: StringBuilder,
    workload_id: StringBuilder,
    start: TimestampNanosecondBuilder,
    end: TimestampNanosecondBuilder,
    reason: StringBuilder,
    dropped: UInt64Builder,
    rows: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            agent_id: StringBuilder::new(),
            boot_id: UInt64Builder::new(),
            batch_seq: UInt64Builder::new(),
            host: StringBuilder::new(),
            container_id: StringBuilder::new(),
            container_name: StringBuilder::new(),
            image: StringBuilder::new(),
            image_id: StringBuilder::new(),
            workload_id: StringBuilder::new(),
            start: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            end: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            reason: StringBuilder::new(),
            dropped: UInt64Builder::new(),
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
        self.host.append_value(&row.host);
        self.container_id.append_option(row.container_id.as_deref());
        self.container_name.append_option(row.container_name.as_deref());
        self.image.append_option(row.image.as_deref());
        self.image_id.append_option(row.image_id.as_deref());
        self.workload_id.append_value(&row.workload_id);
        self.start.append_value(row.start_unix_ns);
        self.end.append_value(row.end_unix_ns);
        self.reason.append_value(row.reason.as_str());
        self.dropped.append_value(row.dropped);
        self.rows += 1;
    }

    /// Builds the batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.agent_id.finish()),
            Arc::new(self.boot_id.finish()),
            Arc::new(self.batch_seq.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.container_id.finish()),
            Arc::new(self.container_name.finish()),
            Arc::new(self.image.finish()),
            Arc::new(self.image_id.finish()),
            Arc::new(self.workload_id.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.end.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.dropped.finish()),
        ];
        self.rows = 0;
        // Cannot fail: every column is built above from the matching field type,
        // non-nullable columns only receive values, and all have `rows` entries.
        RecordBatch::try_new(schema(), columns).expect("gaps builder matches its schema")
    }
}

/// Reads rows back from a batch with the gaps [`schema`] (checked first); an
/// unknown `reason` is an error.
pub fn read_rows(batch: &RecordBatch) -> Result<Vec<Row>, ArrowError> {
    if batch.schema().fields() != schema().fields() {
        return Err(ArrowError::SchemaError(format!(
            "not a glasshouse.gaps batch: schema {:?}",
            batch.schema()
        )));
    }
    let str_col = |i: usize| batch.column(i).as_string::<i32>();
    let u64_col = |i: usize| batch.column(i).as_primitive::<UInt64Type>();
    let time_col = |i: usize| batch.column(i).as_primitive::<TimestampNanosecondType>();
    let opt = |i: usize, row: usize| {
        let c = str_col(i);
        c.is_valid(row).then(|| Str::from(c.value(row)))
    };
    let mut rows = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let reason_str = str_col(11).value(r);
        let reason = Reason::parse(reason_str)
            .ok_or_else(|| ArrowError::InvalidArgumentError(format!("unknown gap reason {reason_str:?}")))?;
        rows.push(Row {
            agent_id: str_col(0).value(r).into(),
            boot_id: u64_col(1).value(r),
            batch_seq: u64_col(2).value(r),
            host: str_col(3).value(r).into(),
            container_id: opt(4, r),
            container_name: opt(5, r),
            image: opt(6, r),
            image_id: opt(7, r),
            workload_id: str_col(8).value(r).into(),
            start_unix_ns: time_col(9).value(r),
            end_unix_ns: time_col(10).value(r),
            reason,
            dropped: u64_col(12).value(r),
        });
    }
    Ok(rows)
}

#[cfg(test)]
pub(crate) mod tests {
    use arrow_array::StringArray;

    use super::*;
    use crate::ipc;

    pub(crate) fn sample_row() -> Row {
        Row {
            agent_id: "host-a".into(),
            boot_id: 7,
            batch_seq: 3,
            host: "host-a".into(),
            container_id: Some("41ee3b278ccc".into()),
            container_name: Some("web-1".into()),
            image: Some("localhost/glasshouse-test:latest".into()),
            image_id: Some("sha256:3c44".into()),
            workload_id: "localhost/glasshouse-test".into(),
            start_unix_ns: 1_700_000_000_000_000_000,
            end_unix_ns: 1_700_000_001_000_000_000,
            reason: Reason::RateLimited,
            dropped: 1234,
        }
    }

    /// A gap of the whole host: no container, the host workload id.
    fn host_row() -> Row {
        Row {
            container_id: None,
            container_name: None,
            image: None,
            image_id: None,
            workload_id: "host:host-a".into(),
            reason: Reason::QueueFull,
            dropped: u64::MAX,
            ..sample_row()
        }
    }

    #[test]
    fn reasons_round_trip_by_name() {
        let names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["kernel_buffer_full", "rate_limited", "queue_full"]);
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("unspecified"), None);
        assert_eq!(Reason::parse("RATE_LIMITED"), None);
    }

    #[test]
    fn schema_columns_in_order() {
        let names: Vec<_> = schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(
            names,
            [
                "agent_id",
                "boot_id",
                "batch_seq",
                "host",
                "container_id",
                "container_name",
                "image",
                "image_id",
                "workload_id",
                "start",
                "end",
                "reason",
                "dropped"
            ]
        );
        let nullable: Vec<_> = schema()
            .fields()
            .iter()
            .filter(|f| f.is_nullable())
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(nullable, ["container_id", "container_name", "image", "image_id"]);
    }

    #[test]
    fn rows_round_trip_through_a_batch_and_ipc() {
        let mut b = Builder::default();
        let kernel = Row {
            reason: Reason::KernelBufferFull,
            dropped: 1,
            ..sample_row()
        };
        let rows = vec![sample_row(), host_row(), kernel];
        for r in &rows {
            b.append(r);
        }
        assert_eq!(b.len(), 3);
        let batch = b.finish();
        assert!(b.is_empty());
        assert_eq!(read_rows(&batch).unwrap(), rows);

        let back = ipc::decode(&ipc::encode(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
        assert_eq!(read_rows(&back).unwrap(), rows);
        assert_eq!(back.column_by_name("container_id").unwrap().null_count(), 1);
        let reasons = back.column_by_name("reason").unwrap().as_string::<i32>();
        assert_eq!(
            reasons.iter().collect::<Vec<_>>(),
            [Some("rate_limited"), Some("queue_full"), Some("kernel_buffer_full")]
        );
    }

    #[test]
    fn an_unknown_reason_is_refused() {
        let mut b = Builder::default();
        b.append(&sample_row());
        let batch = b.finish();
        let mut columns = batch.columns().to_vec();
        columns[11] = Arc::new(StringArray::from(vec!["cosmic_ray"]));
        let forged = RecordBatch::try_new(schema(), columns).unwrap();
        let err = read_rows(&forged).unwrap_err().to_string();
        assert!(err.contains("unknown gap reason \"cosmic_ray\""), "{err}");
    }

    #[test]
    fn approx_bytes_grows_with_the_strings() {
        let short = sample_row();
        let long = Row {
            workload_id: "w".repeat(125).into(),
            ..sample_row()
        };
        assert_eq!(
            long.approx_bytes() - short.approx_bytes(),
            125 - "localhost/glasshouse-test".len()
        );
        assert!(host_row().approx_bytes() < short.approx_bytes());
    }

    #[test]
    fn foreign_schemas_are_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        assert!(read_rows(&other).is_err());
        let mut syscalls = crate::syscalls::Builder::default();
        syscalls.append(&crate::syscalls::tests::sample_row());
        assert!(read_rows(&syscalls.finish()).is_err());
        let mut resources = crate::resources::Builder::default();
        resources.append(&crate::resources::tests::sample_row());
        assert!(read_rows(&resources.finish()).is_err());
        // And a gaps batch is nobody else's.
        let mut gaps = Builder::default();
        gaps.append(&sample_row());
        let gaps = gaps.finish();
        assert!(crate::resources::read_rows(&gaps).is_err());
        assert!(crate::syscalls::read_rows(&gaps).is_err());
    }
}
