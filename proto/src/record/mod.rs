//! Telemetry records: each declared once, as a struct of columns from which
//! its Arrow schema, builder and reader are generated; the record types,
//! the Kafka topic each is written to, and the headers every Kafka message
//! carries.
//!
//! # Declaring a record
//! A record module declares its row with [`columns!`](crate::columns): the
//! [`Attribution`] columns first, then its own, one line per column. A
//! column's Rust type picks how it is stored ([`column::Native`]) unless it
//! names a codec (`as Time`); its name is the field's unless it names one
//! (`=> "time"`). [`record!`](crate::record) then gives the module its
//! `schema()`, `Builder` and `read_rows`.
//!
//! # Compatibility, in one place
//! A reader finds every column by name, so column order does not matter.
//! It refuses a batch with a column it does not know, a column of another
//! type, or nulls in a column that has none. A column added after the
//! first schema version declares what older batches, which lack it, read
//! as (`pub stdio_socket: bool = false`); any other missing column refuses
//! the batch. [`crate::SCHEMA_VERSION`] names what changed when.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, Field, Schema, SchemaRef};

use column::Columns;

/// Declares a struct of columns: the struct, its column builders
/// (`builder:`), its checked column readers (`reader:`) and its
/// [`column::Columns`] and [`column::Native`] implementations. See the
/// module documentation.
#[macro_export]
macro_rules! columns {
    (
        builder: $builder:ident, reader: $reader:ident;
        $(#[$sm:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fm:meta])*
                $fvis:vis $field:ident : $ty:ty $(=> $col:literal)? $(as $codec:ty)? $(= $default:expr)?
            ),* $(,)?
        }
    ) => {
        $(#[$sm])*
        $vis struct $name {
            $( $(#[$fm])* $fvis $field: $ty, )*
        }

        #[doc = concat!("Column builders of [`", stringify!($name), "`].")]
        #[derive(Debug)]
        $vis struct $builder {
            $( $field: <$crate::__codec!($ty $(, $codec)?) as $crate::record::column::Codec>::Builder, )*
        }

        #[doc = concat!("The checked columns of [`", stringify!($name), "`] in one batch (`None`: an older batch without it).")]
        #[derive(Debug)]
        $vis struct $reader {
            $( $field: Option<<$crate::__codec!($ty $(, $codec)?) as $crate::record::column::Codec>::Reader>, )*
        }

        impl $crate::record::column::Columns for $name {
            type Builder = $builder;
            type Reader = $reader;

            fn fields(out: &mut Vec<arrow_schema::Field>) {
                $( <$crate::__codec!($ty $(, $codec)?) as $crate::record::column::Codec>::fields(
                    $crate::__column!($field $(, $col)?), out); )*
            }

            fn builder() -> $builder {
                $builder {
                    $( $field: <$crate::__codec!($ty $(, $codec)?) as $crate::record::column::Codec>::builder(), )*
                }
            }

            fn append(b: &mut $builder, v: &Self) {
                $( <$crate::__codec!($ty $(, $codec)?) as $crate::record::column::Codec>::append(&mut b.$field, &v.$field); )*
            }

            fn finish(b: &mut $builder, out: &mut Vec<arrow_array::ArrayRef>) {
                $( <$crate::__codec!($ty $(, $codec)?) as $crate::record::column::Codec>::finish(&mut b.$field, out); )*
            }

            fn reader(batch: &arrow_array::RecordBatch) -> Result<$reader, arrow_schema::ArrowError> {
                Ok($reader {
                    $( $field: {
                        let name = $crate::__column!($field $(, $col)?);
                        let r = <$crate::__codec!($ty $(, $codec)?) as $crate::record::column::Codec>::reader(batch, name)?;
                        $crate::__required!(r, name $(, $default)?);
                        r
                    }, )*
                })
            }

            fn read(r: &$reader, row: usize) -> Result<Self, arrow_schema::ArrowError> {
                Ok($name {
                    $( $field: match &r.$field {
                        Some(c) => <$crate::__codec!($ty $(, $codec)?) as $crate::record::column::Codec>::read(c, row)?,
                        None => $crate::__default!($crate::__column!($field $(, $col)?) $(, $default)?),
                    }, )*
                })
            }

            fn size(&self) -> usize {
                0 $( + <$crate::__codec!($ty $(, $codec)?) as $crate::record::column::Codec>::size(&self.$field) )*
            }
        }

        impl $crate::record::column::Native for $name {
            type Codec = $crate::record::column::Flat<$name>;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __codec {
    ($ty:ty) => {
        <$ty as $crate::record::column::Native>::Codec
    };
    ($ty:ty, $codec:ty) => {
        $codec
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __column {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $col:literal) => {
        $col
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __required {
    ($r:ident, $name:expr) => {
        if $r.is_none() {
            return Err($crate::record::column::missing($name));
        }
    };
    ($r:ident, $name:expr, $default:expr) => {};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __default {
    ($name:expr) => {
        return Err($crate::record::column::missing($name))
    };
    ($name:expr, $default:expr) => {
        $default
    };
}

/// Declares an enum stored as text: each variant with its fixed text, the
/// first the default. Gives `as_str`, `parse`, `ALL`, `Display` and the
/// [`column::TextEnum`] and [`column::Native`] implementations.
#[macro_export]
macro_rules! text_enum {
    (
        $(#[$em:meta])*
        $vis:vis enum $name:ident {
            $(#[$fm:meta])* $first:ident = $ftext:literal
            $(, $(#[$vm:meta])* $variant:ident = $text:literal)* $(,)?
        }
    ) => {
        $(#[$em])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        $vis enum $name {
            $(#[$fm])* #[default] $first,
            $( $(#[$vm])* $variant, )*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$name::$first $(, $name::$variant)*];

            /// The text the variant is stored as.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $name::$first => $ftext,
                    $( $name::$variant => $text, )*
                }
            }

            /// The variant stored as `s`, if any.
            pub fn parse(s: &str) -> Option<$name> {
                <$name as $crate::record::column::TextEnum>::parse(s)
            }
        }

        impl $crate::record::column::TextEnum for $name {
            const ALL: &'static [$name] = $name::ALL;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl $crate::record::column::Native for $name {
            type Codec = $crate::record::column::Text<$name>;
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
    };
}

/// Converts a record enum to and from its wire enum (of [`crate::v1`]),
/// whose variants have the same names; the wire's `UNSPECIFIED` (0) and
/// unknown values are refused with the value.
#[macro_export]
macro_rules! wire_enum {
    ($name:ident <=> $wire:ident { $($variant:ident),* $(,)? }) => {
        impl From<$name> for $crate::v1::$wire {
            fn from(v: $name) -> $crate::v1::$wire {
                match v {
                    $( $name::$variant => $crate::v1::$wire::$variant, )*
                }
            }
        }

        impl TryFrom<i32> for $name {
            /// The value that names no variant.
            type Error = i32;
            fn try_from(v: i32) -> Result<$name, i32> {
                match $crate::v1::$wire::try_from(v) {
                    $( Ok($crate::v1::$wire::$variant) => Ok($name::$variant), )*
                    _ => Err(v),
                }
            }
        }
    };
}

/// Gives a record module (whose row is `Row`, declared with
/// [`columns!`](crate::columns)) its `schema()`, `Builder` and `read_rows`.
#[macro_export]
macro_rules! record {
    ($record_type:expr) => {
        static SCHEMA: std::sync::LazyLock<arrow_schema::SchemaRef> =
            std::sync::LazyLock::new($crate::record::schema_of::<Row>);

        impl $crate::record::Record for Row {
            const TYPE: $crate::record::RecordType = $record_type;
            fn schema() -> arrow_schema::SchemaRef {
                SCHEMA.clone()
            }
            fn attribution(&self) -> &$crate::record::Attribution {
                &self.attribution
            }
        }

        /// The schema of this record's batches.
        pub fn schema() -> arrow_schema::SchemaRef {
            SCHEMA.clone()
        }

        /// Appends [`Row`]s column by column.
        pub type Builder = $crate::record::Builder<Row>;

        /// Reads rows back from a batch of this record (see the
        /// [compatibility rule](crate::record#compatibility-in-one-place)).
        pub fn read_rows(batch: &arrow_array::RecordBatch) -> Result<Vec<Row>, arrow_schema::ArrowError> {
            $crate::record::read_rows(batch)
        }

        impl Row {
            /// About what this row takes once built, in bytes: what the
            /// byte budgets and flush-by-size charge for it.
            pub fn approx_bytes(&self) -> usize {
                $crate::record::column::Columns::size(self)
            }
        }
    };
}

mod attribution;
pub mod column;
pub mod file;
pub mod gaps;
pub mod inventory;
pub mod network;
pub mod process;
pub mod resources;
pub mod syscalls;

pub use attribution::Attribution;
pub use column::Str;

/// A record row: a struct of columns with its record type.
pub trait Record: Columns {
    const TYPE: RecordType;
    /// The record's Arrow schema (built once).
    fn schema() -> SchemaRef;
    /// Who observed the row and what it belongs to.
    fn attribution(&self) -> &Attribution;
}

/// The schema of a struct of columns.
pub fn schema_of<R: Columns>() -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    R::fields(&mut fields);
    std::sync::Arc::new(Schema::new(fields))
}

/// Appends rows of a record column by column.
#[derive(Debug)]
pub struct Builder<R: Record> {
    columns: R::Builder,
    rows: usize,
    _row: PhantomData<R>,
}

impl<R: Record> Default for Builder<R> {
    fn default() -> Self {
        Builder {
            columns: R::builder(),
            rows: 0,
            _row: PhantomData,
        }
    }
}

impl<R: Record> Builder<R> {
    /// Rows appended since the last [`Builder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn append(&mut self, row: &R) {
        R::append(&mut self.columns, row);
        self.rows += 1;
    }

    /// Builds the batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = Vec::new();
        R::finish(&mut self.columns, &mut columns);
        self.rows = 0;
        // Cannot fail: every column is built by the codec whose field the
        // schema holds, non-nullable columns only receive values, and every
        // column received one value per appended row.
        RecordBatch::try_new(R::schema(), columns).expect("a record builder matches its schema")
    }
}

/// Helpers of the record modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Builder, Record, read_rows};
    use arrow_array::RecordBatch;

    /// Builds `rows` into one batch, checks the builder's count and that
    /// the rows read back as they were, directly and through Arrow IPC;
    /// returns the batch as IPC gave it back.
    pub(crate) fn round_trip<R: Record + PartialEq + std::fmt::Debug>(rows: &[R]) -> RecordBatch {
        let mut b = Builder::<R>::default();
        for r in rows {
            b.append(r);
        }
        assert_eq!(b.len(), rows.len());
        let batch = b.finish();
        assert!(b.is_empty());
        assert_eq!(batch.num_rows(), rows.len());
        assert_eq!(read_rows::<R>(&batch).unwrap(), rows);
        let back = crate::ipc::decode(&crate::ipc::encode(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
        assert_eq!(read_rows::<R>(&back).unwrap(), rows);
        back
    }

    /// A batch of `row` whose last column, `name`, was added by a later
    /// schema version: read whole, it gives `row`; without that column (as
    /// an older writer made it), it gives `older` (the column's default).
    pub(crate) fn reads_without_last_column<R: Record + PartialEq + std::fmt::Debug>(row: &R, name: &str, older: &R) {
        let mut b = Builder::<R>::default();
        b.append(row);
        let batch = b.finish();
        assert_eq!(&read_rows::<R>(&batch).unwrap()[0], row);
        assert_eq!(batch.schema().fields().last().unwrap().name(), name);
        let old = batch
            .project(&(0..batch.num_columns() - 1).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(&read_rows::<R>(&old).unwrap()[0], older);
    }

    /// The columns of record `R` after the attribution columns, which its
    /// schema must start with.
    pub(crate) fn own_columns<R: Record>() -> Vec<String> {
        let names = |schema: arrow_schema::SchemaRef| -> Vec<String> {
            schema.fields().iter().map(|f| f.name().clone()).collect()
        };
        let all = names(R::schema());
        let attribution = names(super::schema_of::<super::Attribution>());
        assert_eq!(all[..attribution.len()], attribution[..], "attribution first");
        all[attribution.len()..].to_vec()
    }

    /// A batch holding `row`.
    pub(crate) fn batch_of<R: Record>(row: &R) -> RecordBatch {
        let mut b = Builder::<R>::default();
        b.append(row);
        b.finish()
    }
}

/// Reads the rows of a batch of record `R`, by column name (see the
/// [compatibility rule](self#compatibility-in-one-place)).
pub fn read_rows<R: Record>(batch: &RecordBatch) -> Result<Vec<R>, ArrowError> {
    let ours = R::schema();
    if let Some(extra) = batch
        .schema()
        .fields()
        .iter()
        .find(|f| ours.field_with_name(f.name()).is_err())
    {
        return Err(ArrowError::SchemaError(format!(
            "not a {} batch: unknown column {}",
            R::TYPE.topic(),
            extra.name()
        )));
    }
    let reader = R::reader(batch).map_err(|e| {
        // The column's own message, without a second "Schema error:" prefix.
        let why = match e {
            ArrowError::SchemaError(why) => why,
            other => other.to_string(),
        };
        ArrowError::SchemaError(format!("not a {} batch: {why}", R::TYPE.topic()))
    })?;
    (0..batch.num_rows()).map(|row| R::read(&reader, row)).collect()
}

/// Header naming the [`RecordType`] of a message.
pub const HEADER_RECORD_TYPE: &str = "glasshouse-record-type";
/// Header with the decimal [`crate::SCHEMA_VERSION`] the value was written with.
pub const HEADER_SCHEMA_VERSION: &str = "glasshouse-schema-version";
/// Header naming the process that produced the message (e.g. `aggregator/host-1`).
pub const HEADER_PRODUCER_ID: &str = "glasshouse-producer-id";

/// Topic of alerts (OCSF JSON), keyed by workload id.
pub const TOPIC_ALERTS: &str = "glasshouse.alerts";
/// Compacted topic of baseline snapshots, keyed by workload id.
pub const TOPIC_BASELINES: &str = "glasshouse.baselines";
/// Operator commands to the analyzers (lock, unlock, reset, import a
/// baseline), JSON keyed by workload id: the analyzer that owns the
/// workload's partition applies them.
pub const TOPIC_CONTROL: &str = "glasshouse.control";
/// Compacted topic of OSV advisories (JSON), keyed by advisory id: what
/// `glasshouse vulns import` publishes and every analyzer instance reads in
/// full, so all of them match against the same advisories.
pub const TOPIC_ADVISORIES: &str = "glasshouse.advisories";
/// Compacted topic of the current vulnerability findings (JSON, one per
/// container × package × advisory, keyed so), `open` or `resolved`.
pub const TOPIC_VULNERABILITIES: &str = "glasshouse.vulnerabilities";

/// The kinds of telemetry record, one Kafka topic each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    Process,
    Network,
    File,
    Syscalls,
    Resources,
    Gaps,
    Containers,
    Inventory,
}

impl RecordType {
    pub const ALL: [RecordType; 8] = [
        RecordType::Process,
        RecordType::Network,
        RecordType::File,
        RecordType::Syscalls,
        RecordType::Resources,
        RecordType::Gaps,
        RecordType::Containers,
        RecordType::Inventory,
    ];

    /// Name used in headers and logs.
    pub const fn name(self) -> &'static str {
        match self {
            RecordType::Process => "process",
            RecordType::Network => "network",
            RecordType::File => "file",
            RecordType::Syscalls => "syscalls",
            RecordType::Resources => "resources",
            RecordType::Gaps => "gaps",
            RecordType::Containers => "containers",
            RecordType::Inventory => "inventory",
        }
    }

    /// The Kafka topic records of this type are written to.
    pub const fn topic(self) -> &'static str {
        match self {
            RecordType::Process => "glasshouse.process",
            RecordType::Network => "glasshouse.network",
            RecordType::File => "glasshouse.file",
            RecordType::Syscalls => "glasshouse.syscalls",
            RecordType::Resources => "glasshouse.resources",
            RecordType::Gaps => "glasshouse.gaps",
            RecordType::Containers => "glasshouse.containers",
            RecordType::Inventory => "glasshouse.inventory",
        }
    }

    /// Whether the topic is log-compacted (latest value per key kept).
    pub const fn compacted(self) -> bool {
        matches!(self, RecordType::Containers)
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A record type name that is not one of [`RecordType::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown record type {name:?}")]
pub struct UnknownRecordType {
    pub name: String,
}

impl FromStr for RecordType {
    type Err = UnknownRecordType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownRecordType { name: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_topics_are_distinct() {
        let mut topics = std::collections::HashSet::new();
        for t in RecordType::ALL {
            assert_eq!(t.name().parse::<RecordType>().unwrap(), t);
            assert!(topics.insert(t.topic()), "duplicate topic {}", t.topic());
            assert_eq!(t.topic(), format!("glasshouse.{}", t.name()));
        }
        assert!("bogus".parse::<RecordType>().is_err());
        assert_eq!("gaps".parse::<RecordType>().unwrap().topic(), "glasshouse.gaps");
        assert!(!RecordType::Gaps.compacted());
    }
}
