//! Arrow schema of `glasshouse.network` records: one row per step in the life
//! of a TCP socket (listen, connect, accept, close, failed connect), already
//! resolved and attributed like [`crate::process`] rows, whose identity and
//! attribution columns it shares.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `agent_id` | utf8 | agent that observed the event |
//! | `boot_id` | uint64 | agent process start the event belongs to |
//! | `batch_seq` | uint64 | sequence of the agent batch that carried it |
//! | `event_index` | uint32 | position in that batch (after its process events); the four columns above are the stable event id |
//! | `time` | timestamp(ns, UTC) | when the kernel reported the event |
//! | `host` | utf8 | host name of the agent |
//! | `container_id` | utf8, null for host processes | full runtime container id |
//! | `container_name` | utf8, nullable | runtime name |
//! | `image` | utf8, nullable | image reference the container was started from |
//! | `image_id` | utf8, nullable | image id / digest |
//! | `workload_id` | utf8 | key baselines are learned under; also the Kafka message key |
//! | `kind` | utf8 | `listen`, `connect`, `accept`, `close` or `connect_failed` |
//! | `pid` | uint32 | process that owns the socket, host pid namespace |
//! | `family` | utf8 | `ipv4` or `ipv6` |
//! | `local_addr` | utf8 | local IP address, as [`std::net::IpAddr`] prints it (`10.0.0.2`, `fd00::1`) |
//! | `local_port` | uint16 | local TCP port |
//! | `remote_addr` | utf8, nullable | peer IP address; null for a listening socket |
//! | `remote_port` | uint16 | peer TCP port; 0 for a listening socket |
//! | `bytes_sent` | uint64 | close of a connection: bytes sent and acknowledged by the peer; 0 otherwise |
//! | `bytes_received` | uint64 | close of a connection: bytes received; 0 otherwise |
//! | `count` | uint32 | identical events collapsed into this row |
//! | `pre_existing` | bool | found open when the agent started (from `/proc`), not seen happening: no byte counts, and its close may not be reported |

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    BooleanBuilder, StringBuilder, TimestampNanosecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampNanosecondType, UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

pub use crate::process::Str;

/// What happened to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A socket started listening.
    Listen,
    /// An outbound connection was established.
    Connect,
    /// An inbound connection was established on a listening socket.
    Accept,
    /// A connection (with its byte counts) or a listening socket was closed.
    Close,
    /// An outbound connection attempt failed.
    ConnectFailed,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Listen => "listen",
            Kind::Connect => "connect",
            Kind::Accept => "accept",
            Kind::Close => "close",
            Kind::ConnectFailed => "connect_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "listen" => Some(Kind::Listen),
            "connect" => Some(Kind::Connect),
            "accept" => Some(Kind::Accept),
            "close" => Some(Kind::Close),
            "connect_failed" => Some(Kind::ConnectFailed),
            _ => None,
        }
    }
}

/// The address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "ipv4" => Some(Family::Ipv4),
            "ipv6" => Some(Family::Ipv6),
            _ => None,
        }
    }
}

impl AsRef<str> for Family {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// One TCP socket event, resolved and attributed.
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
    pub family: Family,
    /// Text form of the local IP address.
    pub local_addr: Str,
    pub local_port: u16,
    /// Text form of the peer IP address; `None` for a listening socket.
    pub remote_addr: Option<Str>,
    pub remote_port: u16,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub count: u32,
    pub pre_existing: bool,
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
            + self.local_addr.len()
            + 4
            + opt(&self.remote_addr)
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let u16f = |name: &str| Field::new(name, DataType::UInt16, false);
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
        utf8("family", false),
        utf8("local_addr", false),
        u16f("local_port"),
        utf8("remote_addr", true),
        u16f("remote_port"),
        u64f("bytes_sent"),
        u64f("bytes_received"),
        u32f("count"),
        Field::new("pre_existing", DataType::Boolean, false),
    ]))
});

/// The schema of `glasshouse.network` batches.
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
    family: StringBuilder,
    local_addr: StringBuilder,
    local_port: UInt16Builder,
    remote_addr: StringBuilder,
    remote_port: UInt16Builder,
    bytes_sent: UInt64Builder,
    bytes_received: UInt64Builder,
    count: UInt32Builder,
    pre_existing: BooleanBuilder,
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
            family: StringBuilder::new(),
            local_addr: StringBuilder::new(),
            local_port: UInt16Builder::new(),
            remote_addr: StringBuilder::new(),
            remote_port: UInt16Builder::new(),
            bytes_sent: UInt64Builder::new(),
            bytes_received: UInt64Builder::new(),
            count: UInt32Builder::new(),
            pre_existing: BooleanBuilder::new(),
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
        self.family.append_value(row.family.as_str());
        self.local_addr.append_value(&row.local_addr);
        self.local_port.append_value(row.local_port);
        self.remote_addr.append_option(row.remote_addr.as_deref());
        self.remote_port.append_value(row.remote_port);
        self.bytes_sent.append_value(row.bytes_sent);
        self.bytes_received.append_value(row.bytes_received);
        self.count.append_value(row.count);
        self.pre_existing.append_value(row.pre_existing);
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
            Arc::new(self.family.finish()),
            Arc::new(self.local_addr.finish()),
            Arc::new(self.local_port.finish()),
            Arc::new(self.remote_addr.finish()),
            Arc::new(self.remote_port.finish()),
            Arc::new(self.bytes_sent.finish()),
            Arc::new(self.bytes_received.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.pre_existing.finish()),
        ];
        self.rows = 0;
        // Cannot fail: every column is built above from the matching field type,
        // non-nullable columns only receive values, and all have `rows` entries.
        RecordBatch::try_new(schema(), columns).expect("network builder matches its schema")
    }
}

/// Reads rows back from a batch with the network [`schema`] (checked first).
pub fn read_rows(batch: &RecordBatch) -> Result<Vec<Row>, ArrowError> {
    if batch.schema().fields() != schema().fields() {
        return Err(ArrowError::SchemaError(format!(
            "not a glasshouse.network batch: schema {:?}",
            batch.schema()
        )));
    }
    let str_col = |i: usize| batch.column(i).as_string::<i32>();
    let u16_col = |i: usize| batch.column(i).as_primitive::<UInt16Type>();
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
        let family_str = str_col(13).value(r);
        let family = Family::parse(family_str)
            .ok_or_else(|| ArrowError::InvalidArgumentError(format!("unknown family {family_str:?}")))?;
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
            family,
            local_addr: str_col(14).value(r).into(),
            local_port: u16_col(15).value(r),
            remote_addr: opt(16, r),
            remote_port: u16_col(17).value(r),
            bytes_sent: u64_col(18).value(r),
            bytes_received: u64_col(19).value(r),
            count: u32_col(20).value(r),
            pre_existing: batch.column(21).as_boolean().value(r),
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
            event_index: 2,
            time_unix_ns: 1_700_000_000_000_000_000,
            host: "host-a".into(),
            container_id: Some("41ee3b278ccc".into()),
            container_name: Some("web-1".into()),
            image: Some("localhost/glasshouse-test:latest".into()),
            image_id: Some("sha256:3c44".into()),
            workload_id: "localhost/glasshouse-test".into(),
            kind: Kind::Close,
            pid: 10,
            family: Family::Ipv4,
            local_addr: "10.0.0.2".into(),
            local_port: 43122,
            remote_addr: Some("93.184.216.34".into()),
            remote_port: 443,
            bytes_sent: 3000,
            bytes_received: 500,
            count: 1,
            pre_existing: false,
        }
    }

    /// A host process listening on every IPv6 address.
    fn listen_row() -> Row {
        Row {
            container_id: None,
            container_name: None,
            image: None,
            image_id: None,
            workload_id: "host:host-a".into(),
            kind: Kind::Listen,
            family: Family::Ipv6,
            local_addr: "::".into(),
            local_port: 8080,
            remote_addr: None,
            remote_port: 0,
            bytes_sent: 0,
            bytes_received: 0,
            event_index: 3,
            ..sample_row()
        }
    }

    #[test]
    fn kinds_and_families_round_trip_as_text() {
        for k in [
            Kind::Listen,
            Kind::Connect,
            Kind::Accept,
            Kind::Close,
            Kind::ConnectFailed,
        ] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        for f in [Family::Ipv4, Family::Ipv6] {
            assert_eq!(Family::parse(f.as_str()), Some(f));
        }
        assert_eq!(Family::of("fd00::1".parse().unwrap()), Family::Ipv6);
        assert_eq!(Kind::parse("exec"), None);
    }

    #[test]
    fn rows_round_trip_through_a_batch_and_ipc() {
        let mut b = Builder::default();
        let rows = vec![sample_row(), listen_row()];
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
        let remote = back.column_by_name("remote_addr").unwrap();
        assert_eq!(remote.null_count(), 1, "a listener has no peer");
    }

    #[test]
    fn foreign_schemas_are_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        assert!(read_rows(&other).is_err());
        let mut process = crate::process::Builder::default();
        process.append(&crate::process::tests::sample_row());
        assert!(read_rows(&process.finish()).is_err());
    }
}
