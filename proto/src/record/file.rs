//! Arrow schema of `glasshouse.file` records: one row per file under a
//! sensitive path opened for writing (or created) by a process, already
//! resolved and attributed.
//!
//! The [`Attribution`] columns, then:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `event_index` | uint32 | position in the agent batch (after its process and network events); with `agent_id`, `boot_id` and `batch_seq`, the stable event id |
//! | `time` | timestamp(ns, UTC) | when the kernel reported the event |
//! | `kind` | utf8 | `write` (an existing file opened for writing or truncation) or `create` (the open created it) |
//! | `pid` | uint32 | writing process (thread group id), host pid namespace |
//! | `path` | utf8 | the file's absolute path as the container sees it, resolved by the kernel (no symlinks, no relative parts) |
//! | `exe` | utf8, nullable | executable of the writing process |
//! | `flags` | uint32 | the `open(2)` flags (`O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`, `O_APPEND`, …) |
//! | `count` | uint32 | identical events collapsed into this row |
//!
//! Paths that are not valid UTF-8 are converted lossily (U+FFFD).

pub use super::Attribution;
pub use super::column::Str;
use super::column::Time;

crate::text_enum! {
    /// What the process did to the file.
    pub enum Kind {
        /// An existing file was opened for writing (or truncation).
        Write = "write",
        /// The open created the file.
        Create = "create",
    }
}

crate::wire_enum!(Kind <=> FileEventKind { Write, Create });

crate::columns! {
    builder: RowBuilder, reader: RowReader;

    /// One write-open of a sensitive file, resolved and attributed.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Row {
        pub attribution: Attribution,
        pub event_index: u32,
        pub time_unix_ns: i64 => "time" as Time,
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
}

crate::record!(crate::record::RecordType::File);

impl Row {
    /// `/etc/passwd` truncated by busybox in [`Attribution::sample`]'s
    /// container, for tests and benchmarks.
    pub fn sample() -> Row {
        Row {
            attribution: Attribution::sample(),
            event_index: 4,
            time_unix_ns: 1_700_000_000_000_000_000,
            kind: Kind::Write,
            pid: 10,
            path: "/etc/passwd".into(),
            exe: Some("/bin/busybox".into()),
            // O_WRONLY | O_TRUNC
            flags: 0o1001,
            count: 1,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow_array::{Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    pub(crate) fn sample_row() -> Row {
        Row::sample()
    }

    /// A host process creating a file, executable unknown, collapsed.
    fn create_row() -> Row {
        Row {
            attribution: Attribution::host("host-a".into(), "host-a".into()),
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
        let rows = vec![sample_row(), create_row()];
        let back = crate::record::testing::round_trip(&rows);
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
        assert!(short.approx_bytes() > 100, "{}", short.approx_bytes());
    }

    #[test]
    fn foreign_schemas_are_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        assert!(read_rows(&other).is_err());
        assert!(read_rows(&crate::record::testing::batch_of(&crate::network::Row::sample())).is_err());
        assert!(read_rows(&crate::record::testing::batch_of(&crate::process::Row::sample())).is_err());
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let mut b = Builder::default();
        b.append(&sample_row());
        let batch = b.finish();
        let mut columns = batch.columns().to_vec();
        columns[batch.schema().index_of("kind").unwrap()] = Arc::new(arrow_array::StringArray::from(vec!["read"]));
        let forged = RecordBatch::try_new(schema(), columns).unwrap();
        let err = read_rows(&forged).unwrap_err().to_string();
        assert!(err.contains("unknown kind \"read\""), "{err}");
    }
}
