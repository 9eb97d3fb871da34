//! Arrow schema of `glasshouse.inventory` records: one row per inventory,
//! the installed packages of one container as the agent read them from the
//! container's root filesystem. A row replaces every earlier inventory of
//! its container. Attributed like [`crate::process`] rows (keyed by workload
//! id); `agent_id`, `boot_id`, `batch_seq` and `container_id` identify a row.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `agent_id` | utf8 | agent that read the inventory |
//! | `boot_id` | uint64 | agent process start |
//! | `batch_seq` | uint64 | sequence of the agent batch that carried it |
//! | `host` | utf8 | host name of the agent |
//! | `container_id` | utf8 | full runtime container id |
//! | `container_name` | utf8, nullable | runtime name |
//! | `image` | utf8, nullable | image reference the container was started from |
//! | `image_id` | utf8, nullable | image id |
//! | `image_digest` | utf8, nullable | manifest digest of the image the container runs (`sha256:…`), from the runtime |
//! | `workload_id` | utf8 | the container's workload id; also the Kafka message key |
//! | `time` | timestamp(ns, UTC) | when the databases were read |
//! | `distro` | utf8, nullable | distribution of the root filesystem (`Debian:12`, `Alpine:v3.19`) |
//! | `packages` | list<struct<ecosystem, name, version, source_name (nullable), location>> | installed packages: OSV ecosystem, name, version, source package, database file inside the container |
//! | `errors` | list<utf8> | databases that could not be read (e.g. a symbolic link refused): the inventory is incomplete |
//!
//! Every string but the agent's own comes from inside a container: it is
//! attacker-controlled and must be escaped by whatever shows it.

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{StringBuilder, TimestampNanosecondBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampNanosecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub use crate::process::Str;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// OSV ecosystem: `Debian:12`, `Alpine:v3.19`, `PyPI`, `npm`.
    pub ecosystem: Str,
    pub name: Str,
    pub version: Str,
    /// Source package (dpkg `Source:`, apk origin), when not the name.
    pub source_name: Option<Str>,
    /// Database file inside the container.
    pub location: Str,
}

/// One container's inventory, attributed.
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
    pub image_digest: Option<Str>,
    pub workload_id: Str,
    pub time_unix_ns: i64,
    pub distro: Option<Str>,
    pub packages: Vec<Package>,
    pub errors: Vec<Str>,
}

impl Row {
    /// Approximate bytes this row takes in Arrow builders (for flush-by-size).
    pub fn approx_bytes(&self) -> usize {
        let opt = |s: &Option<Str>| s.as_ref().map_or(0, |s| s.len() + 4);
        64 + self.agent_id.len()
            + self.host.len()
            + self.container_id.len()
            + opt(&self.container_name)
            + opt(&self.image)
            + opt(&self.image_id)
            + opt(&self.image_digest)
            + self.workload_id.len()
            + opt(&self.distro)
            + self
                .packages
                .iter()
                .map(|p| {
                    24 + p.ecosystem.len() + p.name.len() + p.version.len() + opt(&p.source_name) + p.location.len()
                })
                .sum::<usize>()
            + self.errors.iter().map(|e| e.len() + 4).sum::<usize>()
    }
}

fn package_fields() -> Fields {
    Fields::from(vec![
        Field::new("ecosystem", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("version", DataType::Utf8, false),
        Field::new("source_name", DataType::Utf8, true),
        Field::new("location", DataType::Utf8, false),
    ])
}

fn package_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(package_fields()), false))
}

fn error_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Utf8, false))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let u64f = |name: &str| Field::new(name, DataType::UInt64, false);
    Arc::new(Schema::new(vec![
        utf8("agent_id", false),
        u64f("boot_id"),
        u64f("batch_seq"),
        utf8("host", false),
        utf8("container_id", false),
        utf8("container_name", true),
        utf8("image", true),
        utf8("image_id", true),
        utf8("image_digest", true),
        utf8("workload_id", false),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        utf8("distro", true),
        Field::new("packages", DataType::List(package_item()), false),
        Field::new("errors", DataType::List(error_item()), false),
    ]))
});

/// The schema of `glasshouse.inventory` batches.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Appends [`Row`]s; the list columns are built at [`Builder::finish`].
#[derive(Debug, Default)]
pub struct Builder {
    rows: Vec<Row>,
}

impl Builder {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn append(&mut self, row: &Row) {
        self.rows.push(row.clone());
    }

    /// Builds the batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let rows = std::mem::take(&mut self.rows);
        let mut agent_id = StringBuilder::new();
        let mut boot_id = UInt64Builder::new();
        let mut batch_seq = UInt64Builder::new();
        let mut host = StringBuilder::new();
        let mut container_id = StringBuilder::new();
        let mut container_name = StringBuilder::new();
        let mut image = StringBuilder::new();
        let mut image_id = StringBuilder::new();
        let mut image_digest = StringBuilder::new();
        let mut workload_id = StringBuilder::new();
        let mut time = TimestampNanosecondBuilder::new().with_timezone("UTC");
        let mut distro = StringBuilder::new();
        let (mut eco, mut name, mut version, mut source, mut location) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let mut errors = StringBuilder::new();
        let mut package_offsets = vec![0i32];
        let mut error_offsets = vec![0i32];
        for r in &rows {
            agent_id.append_value(&r.agent_id);
            boot_id.append_value(r.boot_id);
            batch_seq.append_value(r.batch_seq);
            host.append_value(&r.host);
            container_id.append_value(&r.container_id);
            container_name.append_option(r.container_name.as_deref());
            image.append_option(r.image.as_deref());
            image_id.append_option(r.image_id.as_deref());
            image_digest.append_option(r.image_digest.as_deref());
            workload_id.append_value(&r.workload_id);
            time.append_value(r.time_unix_ns);
            distro.append_option(r.distro.as_deref());
            for p in &r.packages {
                eco.append_value(&p.ecosystem);
                name.append_value(&p.name);
                version.append_value(&p.version);
                source.append_option(p.source_name.as_deref());
                location.append_value(&p.location);
            }
            for e in &r.errors {
                errors.append_value(e);
            }
            // Cannot overflow in practice: a batch is bounded far below 2^31 packages.
            package_offsets.push(package_offsets.last().copied().unwrap_or(0) + r.packages.len() as i32);
            error_offsets.push(error_offsets.last().copied().unwrap_or(0) + r.errors.len() as i32);
        }
        let packages = StructArray::new(
            package_fields(),
            vec![
                Arc::new(eco.finish()) as ArrayRef,
                Arc::new(name.finish()),
                Arc::new(version.finish()),
                Arc::new(source.finish()),
                Arc::new(location.finish()),
            ],
            None,
        );
        let packages = ListArray::new(
            package_item(),
            arrow_buffer::OffsetBuffer::new(package_offsets.into()),
            Arc::new(packages),
            None,
        );
        let errors = ListArray::new(
            error_item(),
            arrow_buffer::OffsetBuffer::new(error_offsets.into()),
            Arc::new(errors.finish()),
            None,
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(agent_id.finish()),
            Arc::new(boot_id.finish()),
            Arc::new(batch_seq.finish()),
            Arc::new(host.finish()),
            Arc::new(container_id.finish()),
            Arc::new(container_name.finish()),
            Arc::new(image.finish()),
            Arc::new(image_id.finish()),
            Arc::new(image_digest.finish()),
            Arc::new(workload_id.finish()),
            Arc::new(time.finish()),
            Arc::new(distro.finish()),
            Arc::new(packages),
            Arc::new(errors),
        ];
        // Cannot fail: every column is built above from the matching field
        // type, non-nullable columns only receive values, all have one entry per row.
        RecordBatch::try_new(schema(), columns).expect("inventory builder matches its schema")
    }
}

/// Reads rows back from a batch with the inventory [`schema`] (checked first).
pub fn read_rows(batch: &RecordBatch) -> Result<Vec<Row>, ArrowError> {
    if batch.schema().fields() != schema().fields() {
        return Err(ArrowError::SchemaError(format!(
            "not a glasshouse.inventory batch: schema {:?}",
            batch.schema()
        )));
    }
    let str_col = |i: usize| batch.column(i).as_string::<i32>();
    let u64_col = |i: usize| batch.column(i).as_primitive::<UInt64Type>();
    let opt = |i: usize, row: usize| {
        let c = str_col(i);
        c.is_valid(row).then(|| Str::from(c.value(row)))
    };
    let packages = batch.column(12).as_list::<i32>();
    let errors = batch.column(13).as_list::<i32>();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let p = packages.value(r);
        let p = p.as_struct();
        let s = |i: usize| -> &StringArray { p.column(i).as_string::<i32>() };
        let list = (0..p.len())
            .map(|j| Package {
                ecosystem: s(0).value(j).into(),
                name: s(1).value(j).into(),
                version: s(2).value(j).into(),
                source_name: s(3).is_valid(j).then(|| Str::from(s(3).value(j))),
                location: s(4).value(j).into(),
            })
            .collect();
        let e = errors.value(r);
        let e = e.as_string::<i32>();
        rows.push(Row {
            agent_id: str_col(0).value(r).into(),
            boot_id: u64_col(1).value(r),
            batch_seq: u64_col(2).value(r),
            host: str_col(3).value(r).into(),
            container_id: str_col(4).value(r).into(),
            container_name: opt(5, r),
            image: opt(6, r),
            image_id: opt(7, r),
            image_digest: opt(8, r),
            workload_id: str_col(9).value(r).into(),
            time_unix_ns: batch.column(10).as_primitive::<TimestampNanosecondType>().value(r),
            distro: opt(11, r),
            packages: list,
            errors: (0..e.len()).map(|j| Str::from(e.value(j))).collect(),
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
            host: "host-a".into(),
            container_id: "41ee3b278ccc".into(),
            container_name: Some("web-1".into()),
            image: Some("localhost/app:1".into()),
            image_id: Some("sha256:3c44".into()),
            image_digest: Some("sha256:9f86".into()),
            workload_id: "localhost/app".into(),
            time_unix_ns: 1_700_000_000_000_000_000,
            distro: Some("Debian:12".into()),
            packages: vec![
                Package {
                    ecosystem: "Debian:12".into(),
                    name: "libssl3".into(),
                    version: "3.0.11-1~deb12u1".into(),
                    source_name: Some("openssl".into()),
                    location: "/var/lib/dpkg/status".into(),
                },
                Package {
                    ecosystem: "PyPI".into(),
                    name: "requests\n\u{1b}[31m".into(),
                    version: "2.28.1".into(),
                    source_name: None,
                    location: "/usr/lib/python3/dist-packages/requests-2.28.1.dist-info/METADATA".into(),
                },
            ],
            errors: vec![],
        }
    }

    #[test]
    fn rows_round_trip_through_a_batch_and_ipc() {
        let refused = Row {
            container_id: "99".into(),
            image_digest: None,
            distro: None,
            packages: vec![],
            errors: vec!["/var/lib/dpkg/status: a symbolic link (to \"/etc/shadow\"), refused".into()],
            ..sample_row()
        };
        let rows = vec![sample_row(), refused, sample_row()];
        let mut b = Builder::default();
        for r in &rows {
            b.append(r);
        }
        assert_eq!(b.len(), 3);
        let batch = b.finish();
        assert!(b.is_empty());
        assert_eq!(read_rows(&batch).unwrap(), rows);
        let back = ipc::decode(&ipc::encode(&batch).unwrap()).unwrap();
        assert_eq!(read_rows(&back).unwrap(), rows);
        // An empty batch too.
        assert!(read_rows(&Builder::default().finish()).unwrap().is_empty());
    }

    #[test]
    fn foreign_schemas_are_refused() {
        let mut gaps = crate::gaps::Builder::default();
        gaps.append(&crate::gaps::tests::sample_row());
        assert!(read_rows(&gaps.finish()).is_err());
        let mut b = Builder::default();
        b.append(&sample_row());
        assert!(crate::gaps::read_rows(&b.finish()).is_err());
    }
}
