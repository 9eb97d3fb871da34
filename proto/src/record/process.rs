//! Arrow schema of `glasshouse.process` records: one row per process event
//! (exec, fork, exit, running at agent start), already resolved (no string
//! references) and attributed.
//!
//! The [`Attribution`] columns, then:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `event_index` | uint32 | position in the agent batch; with `agent_id`, `boot_id` and `batch_seq`, the stable event id |
//! | `time` | timestamp(ns, UTC) | when the kernel reported the event |
//! | `kind` | utf8 | `exec`, `fork`, `exit`, or `running` (already running when the agent started) |
//! | `pid`, `ppid`, `uid`, `gid` | uint32 | as seen from the host pid namespace |
//! | `path` | utf8, nullable | executable (exec) |
//! | `argv` | list<utf8> | arguments (exec); empty otherwise |
//! | `cwd` | utf8, nullable | working directory (exec) |
//! | `parent_exe` | utf8, nullable | executable of the parent process |
//! | `exit_code` | int32, nullable | exit status (exit) |
//! | `count` | uint32 | identical events collapsed into this row |
//! | `exec_in` | bool | entered from outside the container (`podman exec`, `kubectl exec`, probes) or a descendant of such a process |
//! | `drift` | bool | exec of a file created or modified after its container started (found in the container's writable layer, not the image) |
//! | `stdio_socket` | bool | exec: the new program's standard input or output is a socket (with a shell, a reverse shell's shape); schema version 3, read as false from older batches |
//!
//! Strings that are not valid UTF-8 are converted lossily (U+FFFD).

pub use super::Attribution;
pub use super::column::Str;
use super::column::Time;

crate::text_enum! {
    /// What happened to the process.
    pub enum Kind {
        Exec = "exec",
        Fork = "fork",
        Exit = "exit",
        Running = "running",
    }
}

crate::wire_enum!(Kind <=> ProcessEventKind { Exec, Fork, Exit, Running });

crate::columns! {
    builder: RowBuilder, reader: RowReader;

    /// One process event, resolved and attributed.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Row {
        pub attribution: Attribution,
        pub event_index: u32,
        pub time_unix_ns: i64 => "time" as Time,
        pub kind: Kind,
        pub pid: u32,
        pub ppid: u32,
        pub uid: u32,
        pub gid: u32,
        pub path: Option<Str>,
        pub argv: Vec<Str>,
        pub cwd: Option<Str>,
        pub parent_exe: Option<Str>,
        pub exit_code: Option<i32>,
        pub count: u32,
        pub exec_in: bool,
        /// Exec of a file created or modified after its container started.
        pub drift: bool,
        /// Exec: stdin or stdout of the new program is a socket.
        pub stdio_socket: bool = false,
    }
}

crate::record!(crate::record::RecordType::Process);

impl Row {
    /// An exec of `/bin/cat /etc/hostname` in [`Attribution::sample`]'s
    /// container, for tests and benchmarks.
    pub fn sample() -> Row {
        Row {
            attribution: Attribution::sample(),
            event_index: 0,
            time_unix_ns: 1_700_000_000_000_000_000,
            kind: Kind::Exec,
            pid: 10,
            ppid: 1,
            path: Some("/bin/cat".into()),
            argv: vec!["cat".into(), "/etc/hostname".into()],
            cwd: Some("/".into()),
            count: 1,
            exec_in: true,
            ..Row::default()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use arrow_array::cast::AsArray;
    use arrow_array::{Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    pub(crate) fn sample_row() -> Row {
        Row::sample()
    }

    #[test]
    fn rows_round_trip_through_a_batch() {
        let mut b = Builder::default();
        let a = sample_row();
        let mut host = sample_row();
        host.attribution = Attribution::host("host-a".into(), "host-a".into());
        host.kind = Kind::Exit;
        host.argv.clear();
        host.exit_code = Some(-9);
        host.event_index = 1;
        host.exec_in = false;
        let drift = Row {
            event_index: 2,
            path: Some("/tmp/dropped".into()),
            argv: vec!["./dropped".into()],
            exec_in: false,
            drift: true,
            stdio_socket: false,
            ..sample_row()
        };
        b.append(&a);
        b.append(&host);
        b.append(&drift);
        assert_eq!(b.len(), 3);
        let batch = b.finish();
        assert!(b.is_empty());
        assert_eq!(batch.num_rows(), 3);
        let flags = |name: &str| {
            let c = batch.column_by_name(name).unwrap().as_boolean();
            (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
        };
        assert_eq!(flags("exec_in"), vec![true, false, false]);
        assert_eq!(flags("drift"), vec![false, false, true]);
        assert_eq!(read_rows(&batch).unwrap(), vec![a, host, drift.clone()]);
        let back = crate::ipc::decode(&crate::ipc::encode(&batch).unwrap()).unwrap();
        assert_eq!(read_rows(&back).unwrap()[2], drift);
    }

    #[test]
    fn version_2_batches_are_read_without_stdio_socket() {
        let mut b = Builder::default();
        let mut r = sample_row();
        r.stdio_socket = true;
        b.append(&r);
        let batch = b.finish();
        assert_eq!(read_rows(&batch).unwrap()[0], r);
        let old = batch
            .project(&(0..batch.num_columns() - 1).collect::<Vec<_>>())
            .unwrap();
        r.stdio_socket = false;
        assert_eq!(read_rows(&old).unwrap()[0], r);
        // Two columns short is neither schema.
        let older = batch
            .project(&(0..batch.num_columns() - 2).collect::<Vec<_>>())
            .unwrap();
        assert!(read_rows(&older).is_err());
    }

    #[test]
    fn columns_are_found_by_name_in_version_3_order() {
        let mut b = Builder::default();
        b.append(&sample_row());
        let batch = b.finish();
        // Version 3 put event_index and time between batch_seq and host,
        // and had no cluster (read as "").
        let at = |name: &str| batch.schema().index_of(name).unwrap();
        let mut v3: Vec<usize> = vec![0, 1, 2, at("event_index"), at("time"), 3, 4, 5, 6, 7, 8];
        v3.extend(at("kind")..batch.num_columns());
        let old = batch.project(&v3).unwrap();
        assert_eq!(old.schema().field(3).name(), "event_index");
        assert!(old.schema().index_of("cluster").is_err());
        let mut want = sample_row();
        want.attribution.cluster = "".into();
        assert_eq!(read_rows(&old).unwrap(), vec![want]);
    }

    #[test]
    fn foreign_schema_is_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        let err = read_rows(&other).unwrap_err().to_string();
        assert!(err.contains("unknown column x"), "{err}");

        let mut b = Builder::default();
        b.append(&sample_row());
        let batch = b.finish();
        let retyped = |name: &str, column: arrow_array::ArrayRef, nullable: bool| {
            let i = batch.schema().index_of(name).unwrap();
            let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
            fields[i] = Field::new(name, column.data_type().clone(), nullable);
            let mut columns = batch.columns().to_vec();
            columns[i] = column;
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
        };
        let err = read_rows(&retyped(
            "pid",
            Arc::new(arrow_array::Int64Array::from(vec![10])),
            false,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("column pid is Int64, not UInt32"), "{err}");
        let null_host = retyped(
            "host",
            Arc::new(arrow_array::StringArray::from(vec![None::<&str>])),
            true,
        );
        let err = read_rows(&null_host).unwrap_err().to_string();
        assert!(err.contains("column host holds nulls"), "{err}");
        let without_kind = batch
            .project(&(0..batch.schema().index_of("kind").unwrap()).collect::<Vec<_>>())
            .unwrap();
        let err = read_rows(&without_kind).unwrap_err().to_string();
        assert!(err.contains("no column kind"), "{err}");
    }
}
