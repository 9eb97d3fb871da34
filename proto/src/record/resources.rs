//! Arrow schema of `glasshouse.resources` records: one row per resource
//! sample, a container's cgroup (v1 or v2) and network counters at one
//! instant. Attributed like every record, except that a sample always names a
//! container and carries no event index: `agent_id`, `boot_id`,
//! `container_id` and `time` identify a row, and a re-sent batch repeats them
//! (with its `batch_seq`).
//!
//! Cumulative counters are totals since the container started: consumers
//! take differences between consecutive samples of a container (a counter
//! that goes down means the container restarted under the same id).
//!
//! The [`Attribution`] columns, then:
//!
//! | column | type | meaning |
//! |---|---|---|
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

pub use super::Attribution;
pub use super::column::Str;
use super::column::Time;

crate::columns! {
    builder: CountersBuilder, reader: CountersReader;

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
}

impl Counters {
    /// Counters from values in column order (for tests).
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

crate::columns! {
    builder: RowBuilder, reader: RowReader;

    /// One resource sample of one container, attributed.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Row {
        /// Always names a container.
        pub attribution: Attribution,
        pub time_unix_ns: i64 => "time" as Time,
        pub counters: Counters,
    }
}

crate::record!(crate::record::RecordType::Resources);

impl Row {
    /// A sample of [`Attribution::sample`]'s container whose counters are
    /// 1 to 11 in column order, for tests and benchmarks.
    pub fn sample() -> Row {
        Row {
            attribution: Attribution::sample(),
            time_unix_ns: 1_700_000_000_000_000_000,
            counters: Counters::from_values([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt64Type;
    use arrow_array::{Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    pub(crate) fn sample_row() -> Row {
        Row::sample()
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
        // Each counter lands in the column of its name.
        let mut b = Builder::default();
        b.append(&sample_row());
        let batch = b.finish();
        let columns = [
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
        for (i, column) in columns.iter().enumerate() {
            let values = batch.column_by_name(column).unwrap().as_primitive::<UInt64Type>();
            assert_eq!(values.value(0), i as u64 + 1, "{column}");
        }
        assert_eq!(crate::record::testing::own_columns::<Row>()[1..], columns);
    }

    #[test]
    fn rows_round_trip_through_a_batch_and_ipc() {
        let unlimited = Row {
            attribution: Attribution {
                container_name: None,
                image: None,
                image_id: None,
                workload_id: "container:41ee3b278ccc".into(),
                ..Attribution::sample()
            },
            time_unix_ns: 1_700_000_010_000_000_000,
            counters: Counters {
                memory_limit_bytes: 0,
                pids_limit: 0,
                cpu_usage_ns: u64::MAX,
                ..sample_row().counters
            },
        };
        let rows = vec![sample_row(), unlimited];
        let back = crate::record::testing::round_trip(&rows);
        assert_eq!(back.column_by_name("image").unwrap().null_count(), 1);
        assert_eq!(back.column_by_name("container_id").unwrap().null_count(), 0);
    }

    #[test]
    fn approx_bytes_grows_with_the_strings() {
        let short = sample_row();
        let long = Row {
            attribution: Attribution {
                workload_id: "w".repeat(125).into(),
                ..Attribution::sample()
            },
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
        assert!(read_rows(&crate::record::testing::batch_of(&crate::syscalls::Row::sample())).is_err());
        assert!(read_rows(&crate::record::testing::batch_of(&crate::process::Row::sample())).is_err());
    }
}
