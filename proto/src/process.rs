//! Arrow schema of `glasshouse.process` records: one row per process event
//! (exec, fork, exit, running at agent start), already resolved (no string references) and attributed.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `agent_id` | utf8 | agent that observed the event |
//! | `boot_id` | uint64 | agent process start the event belongs to |
//! | `batch_seq` | uint64 | sequence of the agent batch that carried it |
//! | `event_index` | uint32 | position in that batch; the four columns above are the stable event id |
//! | `time` | timestamp(ns, UTC) | when the kernel reported the event |
//! | `host` | utf8 | host name of the agent |
//! | `container_id` | utf8, null for host processes | full runtime container id |
//! | `container_name` | utf8, nullable | runtime name |
//! | `image` | utf8, nullable | image reference the container was started from |
//! | `image_id` | utf8, nullable | image id / digest |
//! | `workload_id` | utf8 | key baselines are learned under; also the Kafka message key |
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
//! | `stdio_socket` | bool | exec: the new program's standard input or output is a socket (with a shell, a reverse shell's shape); schema version 3 |
//!
//! [`read_rows`] also reads batches of the version-2 schema (without
//! `stdio_socket`, read as false), so an analyzer upgraded before its
//! aggregators loses nothing.
//!
//! Strings that are not valid UTF-8 are converted lossily (U+FFFD).

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{BooleanBuilder, Int32Builder};
use arrow_array::builder::{ListBuilder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampNanosecondType, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

/// What happened to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Exec,
    Fork,
    Exit,
    Running,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Fork => "fork",
            Kind::Exit => "exit",
            Kind::Running => "running",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "exec" => Some(Kind::Exec),
            "fork" => Some(Kind::Fork),
            "exit" => Some(Kind::Exit),
            "running" => Some(Kind::Running),
            _ => None,
        }
    }
}

/// A shared string: rows of one batch share their agent, host, container and
/// interned strings instead of copying them.
pub type Str = Arc<str>;

/// One process event, resolved and attributed.
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
    pub stdio_socket: bool,
}

impl Row {
    /// Approximate bytes this row takes in Arrow builders (for flush-by-size).
    pub fn approx_bytes(&self) -> usize {
        let opt = |s: &Option<Str>| s.as_ref().map_or(0, |s| s.len() + 4);
        96 + self.agent_id.len()
            + self.host.len()
            + self.workload_id.len()
            + opt(&self.container_id)
            + opt(&self.container_name)
            + opt(&self.image)
            + opt(&self.image_id)
            + opt(&self.path)
            + opt(&self.cwd)
            + opt(&self.parent_exe)
            + self.argv.iter().map(|a| a.len() + 4).sum::<usize>()
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let u32f = |name: &str| Field::new(name, DataType::UInt32, false);
    Arc::new(Schema::new(vec![
        utf8("agent_id", false),
        Field::new("boot_id", DataType::UInt64, false),
        Field::new("batch_seq", DataType::UInt64, false),
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
        u32f("ppid"),
        u32f("uid"),
        u32f("gid"),
        utf8("path", true),
        Field::new(
            "argv",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        utf8("cwd", true),
        utf8("parent_exe", true),
        Field::new("exit_code", DataType::Int32, true),
        u32f("count"),
        Field::new("exec_in", DataType::Boolean, false),
        Field::new("drift", DataType::Boolean, false),
        Field::new("stdio_socket", DataType::Boolean, false),
    ]))
});

/// The schema of `glasshouse.process` batches.
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
    ppid: UInt32Builder,
    uid: UInt32Builder,
    gid: UInt32Builder,
    path: StringBuilder,
    argv: ListBuilder<StringBuilder>,
    cwd: StringBuilder,
    parent_exe: StringBuilder,
    exit_code: Int32Builder,
    count: UInt32Builder,
    exec_in: BooleanBuilder,
    drift: BooleanBuilder,
    stdio_socket: BooleanBuilder,
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
            ppid: UInt32Builder::new(),
            uid: UInt32Builder::new(),
            gid: UInt32Builder::new(),
            path: StringBuilder::new(),
            argv: ListBuilder::new(StringBuilder::new()),
            cwd: StringBuilder::new(),
            parent_exe: StringBuilder::new(),
            exit_code: Int32Builder::new(),
            count: UInt32Builder::new(),
            exec_in: BooleanBuilder::new(),
            drift: BooleanBuilder::new(),
            stdio_socket: BooleanBuilder::new(),
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
        self.ppid.append_value(row.ppid);
        self.uid.append_value(row.uid);
        self.gid.append_value(row.gid);
        self.path.append_option(row.path.as_deref());
        for arg in &row.argv {
            self.argv.values().append_value(arg);
        }
        self.argv.append(true);
        self.cwd.append_option(row.cwd.as_deref());
        self.parent_exe.append_option(row.parent_exe.as_deref());
        self.exit_code.append_option(row.exit_code);
        self.count.append_value(row.count);
        self.exec_in.append_value(row.exec_in);
        self.drift.append_value(row.drift);
        self.stdio_socket.append_value(row.stdio_socket);
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
            Arc::new(self.ppid.finish()),
            Arc::new(self.uid.finish()),
            Arc::new(self.gid.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.argv.finish()),
            Arc::new(self.cwd.finish()),
            Arc::new(self.parent_exe.finish()),
            Arc::new(self.exit_code.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.exec_in.finish()),
            Arc::new(self.drift.finish()),
            Arc::new(self.stdio_socket.finish()),
        ];
        self.rows = 0;
        // Cannot fail: every column is built above from the matching field type,
        // non-nullable columns only receive values, and all have `rows` entries.
        RecordBatch::try_new(schema(), columns).expect("process builder matches its schema")
    }
}

/// Reads rows back from a batch with the process [`schema`] (checked first).
pub fn read_rows(batch: &RecordBatch) -> Result<Vec<Row>, ArrowError> {
    let fields = schema().fields().clone();
    let theirs = batch.schema();
    // The current schema, or version 2's: the same without the last column.
    let current = theirs.fields() == &fields;
    let version_2 =
        theirs.fields().len() + 1 == fields.len() && theirs.fields().iter().zip(fields.iter()).all(|(a, b)| a == b);
    if !current && !version_2 {
        return Err(ArrowError::SchemaError(format!(
            "not a glasshouse.process batch: schema {:?}",
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
    let argv = batch.column(17).as_list::<i32>();
    let exit = batch.column(20).as_primitive::<Int32Type>();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let kind_str = str_col(11).value(r);
        let kind = Kind::parse(kind_str)
            .ok_or_else(|| ArrowError::InvalidArgumentError(format!("unknown kind {kind_str:?}")))?;
        let args = argv.value(r);
        let args = args.as_string::<i32>();
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
            ppid: u32_col(13).value(r),
            uid: u32_col(14).value(r),
            gid: u32_col(15).value(r),
            path: opt(16, r),
            argv: args.iter().map(|a| Str::from(a.unwrap_or_default())).collect(),
            cwd: opt(18, r),
            parent_exe: opt(19, r),
            exit_code: exit.is_valid(r).then(|| exit.value(r)),
            count: u32_col(21).value(r),
            exec_in: batch.column(22).as_boolean().value(r),
            drift: batch.column(23).as_boolean().value(r),
            stdio_socket: current && batch.column(24).as_boolean().value(r),
        });
    }
    Ok(rows)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_row() -> Row {
        Row {
            agent_id: "host-a".into(),
            boot_id: 7,
            batch_seq: 3,
            event_index: 0,
            time_unix_ns: 1_700_000_000_000_000_000,
            host: "host-a".into(),
            container_id: Some("41ee3b278ccc".into()),
            container_name: Some("web-1".into()),
            image: Some("localhost/glasshouse-test:latest".into()),
            image_id: Some("sha256:3c44".into()),
            workload_id: "localhost/glasshouse-test".into(),
            kind: Kind::Exec,
            pid: 10,
            ppid: 1,
            uid: 0,
            gid: 0,
            path: Some("/bin/cat".into()),
            argv: vec!["cat".into(), "/etc/hostname".into()],
            cwd: Some("/".into()),
            parent_exe: None,
            exit_code: None,
            count: 1,
            exec_in: true,
            drift: false,
            stdio_socket: false,
        }
    }

    #[test]
    fn rows_round_trip_through_a_batch() {
        let mut b = Builder::default();
        let a = sample_row();
        let mut host = sample_row();
        host.container_id = None;
        host.container_name = None;
        host.image = None;
        host.image_id = None;
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
    fn foreign_schema_is_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        assert!(read_rows(&other).is_err());
    }
}
