//! Kafka message values to rows of a table's schema.
//!
//! Arrow topics are decoded by the contract crate (`glasshouse_proto::ipc`,
//! the same arrow as DataFusion's) and conformed to the table's schema; JSON
//! topics are flattened by JSON pointer.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringViewBuilder,
    TimestampNanosecondBuilder, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use serde_json::Value;

use crate::catalog::{JsonColumn, JsonKind};

/// Why a message was not turned into rows.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid arrow ipc stream")]
    Arrow(#[source] ArrowError),
    #[error("not a message of the contract: {0}")]
    Contract(String),
    #[error("column `{column}` is missing and has no default")]
    MissingColumn { column: String },
    #[error("column `{column}` is {found}, expected {expected}")]
    ColumnType {
        column: String,
        found: DataType,
        expected: DataType,
    },
    #[error("column `{column}` holds nulls but is not nullable")]
    Nulls { column: String },
    #[error("unknown column `{column}` (a newer schema?)")]
    ExtraColumn { column: String },
    #[error("invalid json")]
    Json(#[source] serde_json::Error),
}

/// Decodes one Arrow IPC message value and conforms its batch to `schema`.
///
/// The bytes come from Kafka, where anything with write access can put
/// anything: they are decoded by the contract crate
/// (`glasshouse_proto::ipc::decode`, which checks the framing before arrow's
/// reader sees it and is covered by the hostile-input property tests), never
/// by arrow's reader directly (it aborts the process on some mutated
/// messages: an allocation of petabytes from a forged length, found by
/// `mutated_messages_give_rows_or_an_error_never_a_panic`).
pub fn arrow_message(bytes: &[u8], schema: &SchemaRef) -> Result<Vec<RecordBatch>, DecodeError> {
    let batch = glasshouse_proto::ipc::decode(bytes).map_err(|e| DecodeError::Contract(e.to_string()))?;
    Ok(vec![conform(&batch, schema)?])
}

/// `batch` with the columns of `schema`, in its order. Plain strings
/// (`Utf8`, as the contract and older lake files have them) become the
/// table's `Utf8View` (the value buffers are shared, not copied). A column
/// missing from an older schema version is filled (`false` for a flag,
/// null where nullable); any other difference is an error.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, DecodeError> {
    let have = batch.schema();
    for f in have.fields() {
        if schema.field_with_name(f.name()).is_err() {
            return Err(DecodeError::ExtraColumn {
                column: f.name().clone(),
            });
        }
    }
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match have.index_of(field.name()) {
            Ok(i) => {
                let mut c = batch.column(i).clone();
                if field.data_type() == &DataType::Utf8View
                    && matches!(c.data_type(), DataType::Utf8 | DataType::LargeUtf8)
                {
                    c = cast(&c, &DataType::Utf8View).map_err(DecodeError::Arrow)?;
                }
                if c.data_type() != field.data_type() {
                    return Err(DecodeError::ColumnType {
                        column: field.name().clone(),
                        found: c.data_type().clone(),
                        expected: field.data_type().clone(),
                    });
                }
                if !field.is_nullable() && c.null_count() > 0 {
                    return Err(DecodeError::Nulls {
                        column: field.name().clone(),
                    });
                }
                columns.push(c);
            }
            Err(_) if field.data_type() == &DataType::Boolean && !field.is_nullable() => {
                columns.push(Arc::new(BooleanArray::from(vec![false; rows])));
            }
            Err(_) if field.is_nullable() => columns.push(new_null_array(field.data_type(), rows)),
            Err(_) => {
                return Err(DecodeError::MissingColumn {
                    column: field.name().clone(),
                });
            }
        }
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(DecodeError::Arrow)
}

/// Rows of a JSON table, appended one message at a time.
#[derive(Debug)]
pub struct JsonRows {
    columns: &'static [JsonColumn],
    schema: SchemaRef,
    builders: Vec<Builder>,
    key: StringViewBuilder,
    time: TimestampNanosecondBuilder,
    raw: StringViewBuilder,
    len: usize,
}

#[derive(Debug)]
enum Builder {
    Text(StringViewBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Time(TimestampNanosecondBuilder, i64),
}

impl JsonRows {
    pub fn new(columns: &'static [JsonColumn], schema: SchemaRef) -> JsonRows {
        let builders = columns
            .iter()
            .map(|c| match c.kind {
                JsonKind::Text | JsonKind::Json => Builder::Text(StringViewBuilder::new()),
                JsonKind::Int => Builder::Int(Int64Builder::new()),
                JsonKind::Float => Builder::Float(Float64Builder::new()),
                JsonKind::Bool => Builder::Bool(BooleanBuilder::new()),
                JsonKind::TimeMs => Builder::Time(TimestampNanosecondBuilder::new(), 1_000_000),
                JsonKind::TimeNs => Builder::Time(TimestampNanosecondBuilder::new(), 1),
            })
            .collect();
        JsonRows {
            columns,
            schema,
            builders,
            key: StringViewBuilder::new(),
            time: TimestampNanosecondBuilder::new(),
            raw: StringViewBuilder::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one message. `time_ns` is the message's timestamp; a column
    /// named `time` whose value is absent takes it too.
    pub fn append(&mut self, payload: &[u8], key: Option<&[u8]>, time_ns: i64) -> Result<(), DecodeError> {
        let doc: Value = serde_json::from_slice(payload).map_err(DecodeError::Json)?;
        for (c, b) in self.columns.iter().zip(self.builders.iter_mut()) {
            let v = doc.pointer(c.pointer);
            match b {
                Builder::Text(b) => match (v, c.kind) {
                    (Some(Value::String(s)), _) => b.append_value(s),
                    (Some(Value::Null) | None, _) => b.append_null(),
                    (Some(other), JsonKind::Json) => b.append_value(other.to_string()),
                    (Some(other @ (Value::Number(_) | Value::Bool(_))), _) => b.append_value(other.to_string()),
                    (Some(_), _) => b.append_null(),
                },
                Builder::Int(b) => b.append_option(v.and_then(Value::as_i64)),
                Builder::Float(b) => b.append_option(v.and_then(Value::as_f64)),
                Builder::Bool(b) => b.append_option(v.and_then(Value::as_bool)),
                Builder::Time(b, scale) => {
                    let t = v.and_then(Value::as_i64).and_then(|t| t.checked_mul(*scale));
                    match t {
                        Some(t) => b.append_value(t),
                        None if c.name == "time" => b.append_value(time_ns),
                        None => b.append_null(),
                    }
                }
            }
        }
        self.key.append_option(key.map(String::from_utf8_lossy));
        self.time.append_value(time_ns);
        // The payload parsed as JSON, so it is UTF-8.
        self.raw.append_value(String::from_utf8_lossy(payload));
        self.len += 1;
        Ok(())
    }

    /// The rows appended since the last call.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.builders.len() + 3);
        for b in &mut self.builders {
            columns.push(match b {
                Builder::Text(b) => Arc::new(b.finish()),
                Builder::Int(b) => Arc::new(b.finish()),
                Builder::Float(b) => Arc::new(b.finish()),
                Builder::Bool(b) => Arc::new(b.finish()),
                Builder::Time(b, _) => Arc::new(b.finish().with_timezone("UTC")),
            });
        }
        columns.push(Arc::new(self.key.finish()));
        columns.push(Arc::new(self.time.finish().with_timezone("UTC")));
        columns.push(Arc::new(self.raw.finish()));
        self.len = 0;
        // The builders follow the schema built from the same column list
        // (`catalog::json_schema`), one value per column per row.
        RecordBatch::try_new(self.schema.clone(), columns).expect("json rows match their schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{self, TABLES};
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampNanosecondType;

    fn def(name: &str) -> &'static catalog::TableDef {
        TABLES.iter().find(|t| t.name == name).unwrap()
    }

    #[test]
    fn a_contract_batch_decodes_to_the_table_schema() {
        let bytes = crate::fixture::process_message(&crate::fixture::containers(3), 0, 5, 0);
        let schema = catalog::schema(def("process_events"));
        let batches = arrow_message(&bytes, &schema).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].num_rows(), 5);
        assert_eq!(batches[0].schema(), schema);
    }

    #[test]
    fn an_older_schema_gets_its_missing_flags_as_false() {
        use datafusion::arrow::datatypes::Schema;
        let bytes = crate::fixture::process_message(&crate::fixture::containers(2), 0, 2, 0);
        let schema = catalog::schema(def("process_events"));
        let full = arrow_message(&bytes, &schema).unwrap().remove(0);
        let i = schema.index_of("stdio_socket").unwrap();
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        let mut cols = full.columns().to_vec();
        fields.remove(i);
        cols.remove(i);
        let old = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
        let back = conform(&old, &schema).unwrap();
        assert_eq!(back.column(i).as_boolean().false_count(), 2);
        // A column of another type is refused, not cast.
        let p = schema.index_of("pid").unwrap();
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        let mut cols = full.columns().to_vec();
        fields[p] = Arc::new(datafusion::arrow::datatypes::Field::new("pid", DataType::Utf8, false));
        cols[p] = Arc::new(datafusion::arrow::array::StringArray::from(vec!["1", "2"]));
        let wrong = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
        assert!(matches!(conform(&wrong, &schema), Err(DecodeError::ColumnType { .. })));
        // A missing column without a default is refused.
        let only_pid = wrong.project(&[p]).unwrap();
        assert!(matches!(
            conform(&only_pid, &schema),
            Err(DecodeError::MissingColumn { .. })
        ));
    }

    #[test]
    fn mutated_messages_give_rows_or_an_error_never_a_panic() {
        let bytes = crate::fixture::process_message(&crate::fixture::containers(2), 0, 3, 0);
        let schema = catalog::schema(def("process_events"));
        let (mut ok, mut refused) = (0, 0);
        for i in (0..bytes.len()).step_by(3) {
            for v in [0u8, 0x7f, 0xff] {
                let mut m = bytes.clone();
                m[i] = v;
                match arrow_message(&m, &schema) {
                    Ok(batches) => {
                        ok += 1;
                        for b in batches {
                            assert_eq!(b.schema(), schema, "a batch not of the table's schema");
                        }
                    }
                    Err(_) => refused += 1,
                }
            }
        }
        assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    }

    #[test]
    fn garbage_is_an_error() {
        let schema = catalog::schema(def("process_events"));
        assert!(arrow_message(b"nope", &schema).is_err());
        assert!(arrow_message(&[], &schema).is_err());
    }

    #[test]
    fn json_rows_flatten_and_keep_raw() {
        let d = def("alerts");
        let catalog::Format::Json(cols) = d.format else {
            panic!()
        };
        let mut rows = JsonRows::new(cols, catalog::schema(d));
        let doc = br#"{"time": 1700000000123, "severity": "High", "count": 3,
            "finding_info": {"uid": "a1", "title": "x\u001b[31m"},
            "unmapped": {"glasshouse": {"workload": "web", "score": 0.5}}}"#;
        rows.append(doc, Some(b"web"), 5).unwrap();
        rows.append(br#"{"severity": 7}"#, None, 9).unwrap();
        assert!(rows.append(b"{not json", None, 1).is_err());
        let batch = rows.finish();
        assert_eq!(batch.num_rows(), 2);
        let time = batch
            .column_by_name("time")
            .unwrap()
            .as_primitive::<TimestampNanosecondType>();
        assert_eq!(time.value(0), 1_700_000_000_123_000_000);
        assert_eq!(time.value(1), 9, "absent time takes the message time");
        let title = batch.column_by_name("title").unwrap().as_string_view();
        assert_eq!(title.value(0), "x\u{1b}[31m");
        let sev = batch.column_by_name("severity").unwrap().as_string_view();
        assert_eq!(sev.value(1), "7");
        let raw = batch.column_by_name("raw").unwrap().as_string_view();
        assert_eq!(raw.value(0).as_bytes(), doc);
        let key = batch.column_by_name("kafka_key").unwrap();
        assert!(key.is_null(1));
    }
}
