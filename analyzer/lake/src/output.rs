//! Query results as text for a terminal or a file: an aligned table, CSV or
//! JSON Lines. Values come from containers (paths, arguments, names) and so
//! from attackers: table and CSV cells go through the caller's escape
//! function (control characters, bidi overrides), JSON is ASCII-only with
//! every other character as `\uXXXX`, so no output can carry a terminal
//! escape sequence or forge a line.

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Table,
    Csv,
    Json,
}

const NULL: &str = "NULL";

/// Every cell as text (`None`: null), row by row.
fn cells(batches: &[RecordBatch]) -> Result<Vec<Vec<Option<String>>>, ArrowError> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for b in batches {
        let f = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .zip(&f)
                    .map(|(c, f)| (!c.is_null(r)).then(|| f.value(r).to_string()))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// Renders the results in `style`; `escape` makes a cell safe for a terminal.
pub fn render(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    style: Style,
    escape: fn(&str) -> String,
) -> Result<String, ArrowError> {
    match style {
        Style::Table => table(schema, batches, escape),
        Style::Csv => csv(schema, batches, escape),
        Style::Json => json(schema, batches),
    }
}

fn table(schema: &SchemaRef, batches: &[RecordBatch], escape: fn(&str) -> String) -> Result<String, ArrowError> {
    let header: Vec<String> = schema.fields().iter().map(|f| escape(f.name())).collect();
    let rows: Vec<Vec<String>> = cells(batches)?
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| c.map_or_else(|| NULL.to_owned(), |c| escape(&c)))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = schema.fields().iter().map(|f| f.data_type().is_numeric()).collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String], right: &[bool]| {
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str(" | ");
            }
            let pad = w - c.chars().count();
            if right.get(i).copied().unwrap_or(false) {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                if i + 1 < cells.len() {
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push('\n');
    };
    line(&mut out, &header, &[]);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("-+-"));
    out.push('\n');
    for r in &rows {
        line(&mut out, r, &numeric);
    }
    let n = rows.len();
    let _ = writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" });
    Ok(out)
}

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn csv(schema: &SchemaRef, batches: &[RecordBatch], escape: fn(&str) -> String) -> Result<String, ArrowError> {
    let mut out = String::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(&mut out, &escape(f.name()));
    }
    out.push_str("\r\n");
    for r in cells(batches)? {
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Null is an empty field; an empty string is `""`.
            match c {
                None => {}
                Some(c) if c.is_empty() => out.push_str("\"\""),
                Some(c) => csv_field(&mut out, &escape(c)),
            }
        }
        out.push_str("\r\n");
    }
    Ok(out)
}

fn json_value(a: &dyn Array, row: usize, text: &ArrayFormatter<'_>) -> Value {
    if a.is_null(row) {
        return Value::Null;
    }
    let s = || Value::String(text.value(row).to_string());
    match a.data_type() {
        DataType::Boolean => Value::Bool(a.as_boolean().value(row)),
        t if t.is_integer() => {
            let t = text.value(row).to_string();
            t.parse::<i64>()
                .map(Value::from)
                .or_else(|_| t.parse::<u64>().map(Value::from))
                .unwrap_or(Value::String(t))
        }
        t if t.is_floating() => text
            .value(row)
            .to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(s, Value::Number),
        DataType::List(_) => {
            let l = a.as_list::<i32>().value(row);
            let opts = FormatOptions::default();
            match ArrayFormatter::try_new(l.as_ref(), &opts) {
                Ok(f) => Value::Array((0..l.len()).map(|i| json_value(l.as_ref(), i, &f)).collect()),
                Err(_) => s(),
            }
        }
        _ => s(),
    }
}

/// `s` with every non-ASCII character as a `\uXXXX` escape (UTF-16, as JSON
/// wants): still the same JSON, safe on any terminal.
pub fn ascii_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{u:04x}");
            }
        }
    }
    out
}

fn json(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, ArrowError> {
    let options = FormatOptions::default();
    let mut out = String::new();
    for b in batches {
        let f = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..b.num_rows() {
            let mut obj = serde_json::Map::new();
            for (i, field) in schema.fields().iter().enumerate() {
                obj.insert(field.name().clone(), json_value(b.column(i).as_ref(), r, &f[i]));
            }
            out.push_str(&ascii_json(&Value::Object(obj).to_string()));
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, ListBuilder, StringBuilder, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn escape(s: &str) -> String {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    format!("\\u{{{:x}}}", u32::from(c))
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    fn batch() -> (SchemaRef, RecordBatch) {
        let mut argv = ListBuilder::new(StringBuilder::new());
        argv.values().append_value("sh");
        argv.values().append_value("-c");
        argv.append(true);
        argv.append(true);
        let schema = Arc::new(Schema::new(vec![
            // The lake's strings are views (`catalog`); list items plain.
            Field::new("path", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
            Field::new("argv", argv.finish().data_type().clone(), true),
        ]));
        let mut argv = ListBuilder::new(StringBuilder::new());
        argv.values().append_value("sh");
        argv.values().append_value("-c");
        argv.append(true);
        argv.append(true);
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringViewArray::from(vec![Some("/bin/x\u{1b}[2J\nFAKE,\"q\""), None])),
                Arc::new(Int64Array::from(vec![Some(12), None])),
                Arc::new(argv.finish()),
            ],
        )
        .unwrap();
        (schema, b)
    }

    #[test]
    fn table_escapes_and_aligns() {
        let (s, b) = batch();
        let t = render(&s, &[b], Style::Table, escape).unwrap();
        assert!(!t.contains('\u{1b}'), "{t}");
        assert_eq!(t.lines().count(), 5, "header, rule, two rows, count:\n{t}");
        assert!(t.contains("\\u{1b}[2J\\u{a}FAKE"), "{t}");
        assert!(t.ends_with("(2 rows)\n"));
        assert!(t.lines().nth(3).unwrap().contains("NULL"));
    }

    #[test]
    fn csv_quotes_and_escapes() {
        let (s, b) = batch();
        let c = render(&s, &[b], Style::Csv, escape).unwrap();
        assert_eq!(c.split("\r\n").count(), 4, "{c:?}");
        assert!(c.starts_with("path,n,argv\r\n"));
        assert!(c.contains("\"/bin/x\\u{1b}[2J\\u{a}FAKE,\"\"q\"\"\",12,"), "{c:?}");
        assert!(c.contains("\r\n,,"), "nulls are empty fields: {c:?}");
    }

    #[test]
    fn json_is_typed_and_ascii() {
        let (s, b) = batch();
        let j = render(&s, &[b], Style::Json, escape).unwrap();
        let rows: Vec<Value> = j.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows[0]["path"], "/bin/x\u{1b}[2J\nFAKE,\"q\"");
        assert_eq!(rows[0]["n"], 12);
        assert_eq!(rows[0]["argv"], serde_json::json!(["sh", "-c"]));
        assert_eq!(rows[1]["n"], Value::Null);
        assert!(j.is_ascii());
        assert_eq!(ascii_json("é\u{1F600}"), "\\u00e9\\ud83d\\ude00");
    }
}
