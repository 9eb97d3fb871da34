//! Arrow schema of `glasshouse.gaps` records: one row per gap, events the
//! agent knows it did not report (dropped in the kernel, rate-limited, or
//! lost to a full queue) for one container, or for the whole host, during
//! one window. Attributed like every record, without an event index: `agent_id`,
//! `boot_id`, `container_id`, `reason` and `start` identify a row, and a
//! re-sent batch repeats them (with its `batch_seq`).
//!
//! What a consumer must do with a gap: not treat `[start, end)` of that
//! container (of every container of the host when `container_id` is null)
//! as complete. Baselines neither learn from that window nor score it as
//! normal; an absence of events in it proves nothing.
//!
//! The [`Attribution`] columns (`container_id` null: the whole host, whose
//! workload id is `host:<host>`), then:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `start` | timestamp(ns, UTC) | start of the window (inclusive) |
//! | `end` | timestamp(ns, UTC) | end of the window (exclusive); never before `start` |
//! | `reason` | utf8 | `kernel_buffer_full` (the kernel's ring buffer was full), `rate_limited` (the container exceeded the agent's per-container rate limit), `queue_full` (the agent's queue between sensor and pipeline was full) |
//! | `dropped` | uint64 | events not reported in the window; never 0 |

pub use super::Attribution;
pub use super::column::Str;
use super::column::Time;

crate::text_enum! {
    /// Why the agent did not report the events of a gap.
    pub enum Reason {
        /// The kernel's ring buffer was full: lost before the agent read them.
        KernelBufferFull = "kernel_buffer_full",
        /// The container exceeded the agent's per-container event rate limit.
        RateLimited = "rate_limited",
        /// The agent's queue between its sensor and its pipeline was full.
        QueueFull = "queue_full",
    }
}

crate::wire_enum!(Reason <=> GapReason { KernelBufferFull, RateLimited, QueueFull });

crate::columns! {
    builder: RowBuilder, reader: RowReader;

    /// One gap of one container (or of the host), attributed.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Row {
        /// `container_id` `None`: the whole host.
        pub attribution: Attribution,
        /// The window: [start, end) in Unix nanoseconds.
        pub start_unix_ns: i64 => "start" as Time,
        pub end_unix_ns: i64 => "end" as Time,
        pub reason: Reason,
        pub dropped: u64,
    }
}

crate::record!(crate::record::RecordType::Gaps);

impl Row {
    /// One rate-limited second of [`Attribution::sample`]'s container, for
    /// tests and benchmarks.
    pub fn sample() -> Row {
        Row {
            attribution: Attribution::sample(),
            start_unix_ns: 1_700_000_000_000_000_000,
            end_unix_ns: 1_700_000_001_000_000_000,
            reason: Reason::RateLimited,
            dropped: 1234,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::{Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    use super::*;

    pub(crate) fn sample_row() -> Row {
        Row::sample()
    }

    /// A gap of the whole host: no container, the host workload id.
    fn host_row() -> Row {
        Row {
            attribution: Attribution::host("host-a".into(), "host-a".into()),
            reason: Reason::QueueFull,
            dropped: u64::MAX,
            ..sample_row()
        }
    }

    #[test]
    fn reasons_round_trip_by_name() {
        let names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["kernel_buffer_full", "rate_limited", "queue_full"]);
        for &r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("unspecified"), None);
        assert_eq!(Reason::parse("RATE_LIMITED"), None);
    }

    #[test]
    fn schema_columns_in_order() {
        assert_eq!(
            crate::record::testing::own_columns::<Row>(),
            ["start", "end", "reason", "dropped"]
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
        let kernel = Row {
            reason: Reason::KernelBufferFull,
            dropped: 1,
            ..sample_row()
        };
        let rows = vec![sample_row(), host_row(), kernel];
        let back = crate::record::testing::round_trip(&rows);
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
        columns[batch.schema().index_of("reason").unwrap()] = Arc::new(StringArray::from(vec!["cosmic_ray"]));
        let forged = RecordBatch::try_new(schema(), columns).unwrap();
        let err = read_rows(&forged).unwrap_err().to_string();
        assert!(err.contains("unknown reason \"cosmic_ray\""), "{err}");
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
        assert!(host_row().approx_bytes() < short.approx_bytes());
    }

    #[test]
    fn foreign_schemas_are_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        assert!(read_rows(&other).is_err());
        assert!(read_rows(&crate::record::testing::batch_of(&crate::syscalls::Row::sample())).is_err());
        assert!(read_rows(&crate::record::testing::batch_of(&crate::resources::Row::sample())).is_err());
        // And a gaps batch is nobody else's.
        let mut gaps = Builder::default();
        gaps.append(&sample_row());
        let gaps = gaps.finish();
        assert!(crate::resources::read_rows(&gaps).is_err());
        assert!(crate::syscalls::read_rows(&gaps).is_err());
    }
}
