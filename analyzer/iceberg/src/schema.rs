//! Lake schemas as Iceberg schemas, and batches cast to a table's schema.
//!
//! Iceberg (format version 2) has no unsigned integers, no nanosecond
//! timestamps and one string type, so a lake column becomes:
//!
//! | lake (arrow) | Iceberg | read back as |
//! |---|---|---|
//! | `uint8`, `uint16`, `int32` | `int` | int32 |
//! | `uint32`, `int64` | `long` | int64 |
//! | `uint64` (ids such as `boot_id`) | `decimal(20, 0)` | decimal128(20, 0): every value exact |
//! | `timestamp(ns, UTC)` | `timestamptz` | timestamp(µs, UTC): nanoseconds truncated |
//! | `utf8`, `utf8view`, `largeutf8` | `string` | utf8 |
//! | lists, structs | `list`, `struct` | the same, recursively |
//!
//! Field ids are assigned when a table is created; columns are matched by
//! name afterwards, so a newer writer's extra columns are added to the
//! table ([`crate::table`]) and an older writer's missing nullable columns
//! are written as nulls.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema as ArrowSchema, SchemaRef, TimeUnit};

use crate::{Error, Result};

/// The time zone Iceberg's arrow schemas give `timestamptz`.
const UTC: &str = "+00:00";

/// The schema of an Arrow IPC stream (its first message).
pub fn schema_from_ipc(ipc: &[u8]) -> Result<SchemaRef> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
    Ok(reader.schema())
}

/// The batches of an Arrow IPC stream.
pub fn batches_from_ipc(ipc: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// `ty` as the arrow type Iceberg stores it as (the table above).
fn storable(ty: &DataType) -> DataType {
    match ty {
        DataType::UInt8 | DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| UTC.into())),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::List(item) | DataType::LargeList(item) => DataType::List(storable_field(item)),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(storable_field).collect::<Fields>()),
        other => other.clone(),
    }
}

fn storable_field(f: &FieldRef) -> FieldRef {
    Arc::new(Field::new(f.name(), storable(f.data_type()), f.is_nullable()))
}

/// The Iceberg schema of a lake table whose rows have `arrow`'s columns.
pub fn iceberg_schema(arrow: &ArrowSchema) -> Result<iceberg::spec::Schema> {
    let fields: Fields = arrow.fields().iter().map(storable_field).collect();
    Ok(iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(
        &ArrowSchema::new(fields),
    )?)
}

/// The arrow schema batches of `schema` are written with (field ids in
/// the fields' metadata).
pub fn arrow_schema(schema: &iceberg::spec::Schema) -> Result<SchemaRef> {
    Ok(Arc::new(iceberg::arrow::schema_to_arrow_schema(schema)?))
}

/// `batch` with `target`'s columns: matched by name and cast; a column
/// `batch` lacks is null (an error if `target` requires it). `table`
/// names the table in errors.
pub fn conform(batch: &RecordBatch, target: &SchemaRef, table: &str) -> Result<RecordBatch> {
    let columns = target
        .fields()
        .iter()
        .map(|field| -> Result<ArrayRef> {
            let error = |message: String| Error::Column {
                table: table.to_owned(),
                column: field.name().clone(),
                message,
            };
            match batch.column_by_name(field.name()) {
                Some(column) => arrow_cast::cast(column, field.data_type()).map_err(|e| {
                    error(format!(
                        "{} cannot be stored as {}: {e}",
                        column.data_type(),
                        field.data_type()
                    ))
                }),
                None if field.is_nullable() => Ok(new_null_array(field.data_type(), batch.num_rows())),
                None => Err(error("required by the table, missing in the batch".into())),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{Array, Decimal128Array, StringViewArray, TimestampNanosecondArray, UInt32Array, UInt64Array};

    fn lake_batch() -> RecordBatch {
        let mut argv = ListBuilder::new(StringBuilder::new());
        argv.values().append_value("sh");
        argv.values().append_value("-c");
        argv.append(true);
        argv.append(true);
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("boot_id", DataType::UInt64, false),
            Field::new("pid", DataType::UInt32, false),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("path", DataType::Utf8View, true),
            Field::new(
                "argv",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from(vec![u64::MAX, 7])),
                Arc::new(UInt32Array::from(vec![u32::MAX, 1])),
                Arc::new(TimestampNanosecondArray::from(vec![1_700_000_000_123_456_789, 0]).with_timezone("UTC")),
                Arc::new(StringViewArray::from(vec![Some("/bin/sh"), None])),
                Arc::new(argv.finish()),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn lake_columns_become_storable_iceberg_columns_with_every_value_kept() {
        let batch = lake_batch();
        let schema = iceberg_schema(&batch.schema()).expect("schema");
        let target = arrow_schema(&schema).expect("arrow");
        let stored = conform(&batch, &target, "t").expect("conform");
        let boot = stored
            .column(0)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .expect("decimal");
        assert_eq!(boot.value(0), i128::from(u64::MAX), "u64 ids are exact");
        assert_eq!(stored.column(1).data_type(), &DataType::Int64);
        assert_eq!(
            stored.column(2).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
        );
        let time = stored
            .column(2)
            .as_any()
            .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
            .expect("µs");
        assert_eq!(time.value(0), 1_700_000_000_123_456);
        assert_eq!(stored.column(3).data_type(), &DataType::Utf8);
        assert!(stored.column(3).is_null(1));
        assert!(matches!(stored.column(4).data_type(), DataType::List(_)));
    }

    #[test]
    fn a_missing_nullable_column_is_null_and_a_missing_required_one_is_named() {
        let batch = lake_batch();
        let mut fields: Vec<FieldRef> = batch.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("newer", DataType::Utf8, true)));
        let schema = iceberg_schema(&ArrowSchema::new(fields.clone())).expect("schema");
        let stored = conform(&batch, &arrow_schema(&schema).expect("arrow"), "t").expect("conform");
        assert_eq!(stored.column(5).null_count(), 2);

        fields.pop();
        fields.push(Arc::new(Field::new("required", DataType::Utf8, false)));
        let schema = iceberg_schema(&ArrowSchema::new(fields)).expect("schema");
        let err = conform(&batch, &arrow_schema(&schema).expect("arrow"), "t").expect_err("missing");
        assert!(err.to_string().contains("column required"), "{err}");
    }
}
