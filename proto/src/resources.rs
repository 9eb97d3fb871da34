//! Arrow schema of `glasshouse.resources` records: one row per resource
//! sample, a container's cgroup (v1 or v2) and network counters at one
//! instant. Attributed like [`crate::process`] rows, whose identity and
//! attribution columns it shares, except that a sample always names a
//! container and carries no event index: `agent_id`, `boot_id`,
//! `container_id` and `time` identify a row, and a re-sent batch repeats them
//! (with its `batch_seq`).
//!
//! Cumulative counters are totals since the container started: consumers
//! take differences between consecutive samples of a container (a counter
//! that goes down means the container restarted under the same id).
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `agent_id` | utf8 | agent that took the sample |
//! | `boot_id` | uint64 | agent process start the sample belongs to |
//! | `batch_seq` | uint64 | sequence of the agent batch that carried it |
//! | `host` | utf8 | host name of the agent |
//! | `container_id` | utf8 | full runtime container id (never null) |
//! | `container_name` | utf8, nullable | runtime name |
//! | `image` | utf8, nullable | image reference the container was started from |
//! | `image_id` | utf8, nullable | image id / digest |
//! | `workload_id` | utf8 | key baselines are learned under; also the Kafka message key |
//! | `time` | timestamp(ns, UTC) | when the counters were read |
//! | `cpu_usage_ns` | uint64 | CPU time used, nanoseconds, cumulative |
//! | `memory_bytes` | uint64 | memory in use now, bytes |
//! | `memory_limit_bytes` | uint64 | memory limit, bytes; 0: no limit |
//! | `io_read_bytes` | uint64 | block I/O read, bytes, cumulative |
//! | `io_write_bytes` | uint64 | block I/O written, bytes, cumulative |
//! | `pids` | uint64 | tasks (threads) now |
//! | `pids_limit` | uint64 | task limit; 0: no limit |
//! | `net_rx_bytes` | uint64 | bytes received by the container's network namespace, cumulative |
//! | `net_tx_bytes` | uint64 | bytes sent by the container's network namespace, cumulative |
//! | `net_rx_packets` | uint64 | packets received, cumulative |
//! | `net_tx_packets` | uint64 | packets sent, cumulative |

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{StringBuilder, TimestampNanosecondBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampNanosecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

pub use crate::process::Str;

/// The counters of one sample, in the units of the module's table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub pids: u64,
    pub pids_limit: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub net_rx_packets: u64,
    pub net_tx_packets: u64,
}

impl Counters {
    /// Column names of the counters, in schema order.
    pub const COLUMNS: [&'static str; 11] = [
        "cpu_usage_ns",
        "memory_bytes",
        "memory_limit_bytes",
        "io_read_bytes",
        "io_write_bytes",
        "pids",
        "pids_limit",
        "net_rx_bytes",
        "net_tx_bytes",
        "net_rx_packets",
        "net_tx_packets",
    ];

    /// The values, in [`Counters::COLUMNS`] order.
    pub const fn values(&self) -> [u64; 11] {
        [
            self.cpu_usage_ns,
            self.memory_bytes,
            self.memory_limit_bytes,
            self.io_read_bytes,
            self.io_write_bytes,
            self.pids,
            self.pids_limit,
            self.net_rx_bytes,
            self.net_tx_bytes,
            self.net_rx_packets,
            self.net_tx_packets,
        ]
    }

    /// The inverse of [`Counters::values`].
    pub const fn from_values(v: [u64; 11]) -> Counters {
        Counters {
            cpu_usage_ns: v[0],
            memory_bytes: v[1],
            memory_limit_bytes: v[2],
            io_read_bytes: v[3],
            io_write_bytes: v[4],
            pids: v[5],
            pids_limit: v[6],
            net_rx_bytes: v[7],
            net_tx_bytes: v[8],
            net_rx_packets: v[9],
            net_tx_packets: v[10],
        }
    }
}

/// One resource sample of one container, attributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub agent_id: Str,
    pub boot_id: u64,
    pub batch_seq: u64,
    pub host: Str,
    pub container_id: Str,
    pub container_name: Option<Str>,
    pub image: Option<Str>,
    pub image_id: Option<Str>,
    pub workload_id: Str,
    pub time_unix_ns: i64,
    pub counters: Counters,
}

impl Row {
    /// Approximate bytes this row takes in Arrow builders (for flush-by-size).
    pub fn approx_bytes(&self) -> usize {
        let opt = |s: &Option<Str>| s.as_ref().map_or(0, |s| s.len() + 4);
        136 + self.agent_id.len()
            + self.host.len()
            + self.container_id.len()
            + opt(&self.container_name)
            + opt(&self.image)
            + opt(&self.image_id)
            + self.workload_id.len()
    }
}

/// Index of the first counter column.
const FIRST_COUNTER: usize = 10;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let u64f = |name: &str| Field::new(name, DataType::UInt64, false);
    let mut fields = vec![
        utf8("agent_id", false),
        u64f("boot_id"),
        u64f("batch_seq"),
        utf8("host", false),
        utf8("container_id", false),
        utf8("container_name", true),
        utf8("image", true),
        utf8("image_id", true),
        utf8("workload_id", false),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
    ];
    debug_assert_eq!(fields.len(), FIRST_COUNTER);
    fields.extend(Counters::COLUMNS.map(u64f));
    Arc::new(Schema::new(fields))
});

/// The schema of `glasshouse.resources` batches.
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
    time: TimestampNanosecondBuilder,
    /// One builder per counter, in [`Counters::COLUMNS`] order.
    counters: [UInt64Builder; 11],
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
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            counters: std::array::from_fn(|_| UInt64Builder::new()),
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
        self.container_id.append_value(&row.container_id);
        self.container_name.append_option(row.container_name.as_deref());
        self.image.append_option(row.image.as_deref());
        self.image_id.append_option(row.image_id.as_deref());
        self.workload_id.append_value(&row.workload_id);
        self.time.append_value(row.time_unix_ns);
        for (builder, value) in self.counters.iter_mut().zip(row.counters.values()) {
            builder.append_value(value);
        }
        self.rows += 1;
    }

    /// Builds the batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.agent_id.finish()),
            Arc::new(self.boot_id.finish()),
            Arc::new(self.batch_seq.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.container_id.finish()),
            Arc::new(self.container_name.finish()),
            Arc::new(self.image.finish()),
            Arc::new(self.image_id.finish()),
            Arc::new(self.workload_id.finish()),
            Arc::new(self.time.finish()),
        ];
        columns.extend(self.counters.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        self.rows = 0;
        // Cannot fail: every column is built above from the matching field type,
        // non-nullable columns only receive values, and all have `rows` entries.
        RecordBatch::try_new(schema(), columns).expect("resources builder matches its schema")
    }
}

/// Reads rows back from a batch with the resources [`schema`] (checked first).
pub fn read_rows(batch: &RecordBatch) -> Result<Vec<Row>, ArrowError> {
    if batch.schema().fields() != schema().fields() {
        return Err(ArrowError::SchemaError(format!(
            "not a glasshouse.resources batch: schema {:?}",
            batch.schema()
        )));
    }
    let str_col = |i: usize| batch.column(i).as_string::<i32>();
    let u64_col = |i: usize| batch.column(i).as_primitive::<UInt64Type>();
    let opt = |i: usize, row: usize| {
        let c = str_col(i);
        c.is_valid(row).then(|| Str::from(c.value(row)))
    };
    let time = batch.column(9).as_primitive::<TimestampNanosecondType>();
    let counters: [_; 11] = std::array::from_fn(|i| u64_col(FIRST_COUNTER + i));
    Ok((0..batch.num_rows())
        .map(|r| Row {
            agent_id: str_col(0).value(r).into(),
            boot_id: u64_col(1).value(r),
            batch_seq: u64_col(2).value(r),
            host: str_col(3).value(r).into(),
            container_id: str_col(4).value(r).into(),
            container_name: opt(5, r),
            image: opt(6, r),
            image_id: opt(7, r),
            workload_id: str_col(8).value(r).into(),
            time_unix_ns: time.value(r),
            counters: Counters::from_values(counters.map(|c| c.value(r))),
        })
        .collect())
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
            host: "host-a".into(),
            container_id: "41ee3b278ccc".into(),
            container_name: Some("web-1".into()),
            image: Some("localhost/glasshouse-test:latest".into()),
            image_id: Some("sha256:3c44".into()),
            workload_id: "localhost/glasshouse-test".into(),
            time_unix_ns: 1_700_000_000_000_000_000,
            counters: Counters::from_values([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        }
    }

    #[test]
    fn counters_map_to_their_columns_in_order() {
        let c = sample_row().counters;
        assert_eq!(
            (
                c.cpu_usage_ns,
                c.memory_bytes,
                c.memory_limit_bytes,
                c.io_read_bytes,
                c.io_write_bytes,
                c.pids,
                c.pids_limit,
                c.net_rx_bytes,
                c.net_tx_bytes,
                c.net_rx_packets,
                c.net_tx_packets
            ),
            (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
        );
        assert_eq!(Counters::from_values(c.values()), c);
        // Each counter lands in the column of its name.
        let mut b = Builder::default();
        b.append(&sample_row());
        let batch = b.finish();
        for (i, column) in Counters::COLUMNS.iter().enumerate() {
            let values = batch.column_by_name(column).unwrap().as_primitive::<UInt64Type>();
            assert_eq!(values.value(0), i as u64 + 1, "{column}");
        }
        assert_eq!(batch.schema().fields().len(), FIRST_COUNTER + Counters::COLUMNS.len());
    }

    #[test]
    fn rows_round_trip_through_a_batch_and_ipc() {
        let mut b = Builder::default();
        let unlimited = Row {
            container_name: None,
            image: None,
            image_id: None,
            workload_id: "container:41ee3b278ccc".into(),
            time_unix_ns: 1_700_000_010_000_000_000,
            counters: Counters {
                memory_limit_bytes: 0,
                pids_limit: 0,
                cpu_usage_ns: u64::MAX,
                ..sample_row().counters
            },
            ..sample_row()
        };
        let rows = vec![sample_row(), unlimited];
        for r in &rows {
            b.append(r);
        }
        assert_eq!(b.len(), 2);
        let batch = b.finish();
        assert!(b.is_empty());
        assert_eq!(read_rows(&batch).unwrap(), rows);

        let back = ipc::decode(&ipc::encode(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
        assert_eq!(read_rows(&back).unwrap(), rows);
        assert_eq!(back.column_by_name("image").unwrap().null_count(), 1);
        assert_eq!(back.column_by_name("container_id").unwrap().null_count(), 0);
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
    }

    #[test]
    fn foreign_schemas_are_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        assert!(read_rows(&other).is_err());
        let mut syscalls = crate::syscalls::Builder::default();
        syscalls.append(&crate::syscalls::tests::sample_row());
        assert!(read_rows(&syscalls.finish()).is_err());
        let mut process = crate::process::Builder::default();
        process.append(&crate::process::tests::sample_row());
        assert!(read_rows(&process.finish()).is_err());
    }
}
