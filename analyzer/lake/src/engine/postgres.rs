//! What PostgreSQL clients ask before (and while) they query: the settings,
//! functions and `pg_catalog` tables that Grafana's PostgreSQL data source,
//! DBeaver, psql and drivers send, answered from the lake's own tables.
//!
//! Registered in every [`Engine`](super::Engine) session ([`register`]);
//! statements pass through [`rewrite`] between parsing and planning, on the
//! query runtime (the rewrite walks the parsed statement, so it runs where
//! the stack is sized for deep statements). Nothing here writes: the
//! functions are constant or pure, the tables are in-memory snapshots of
//! the catalog taken when the session is made, and every plan still goes
//! through the read-only check.
//!
//! The queries this answers, and where they come from:
//!
//! | client | source | statement |
//! |---|---|---|
//! | Grafana (version detection) | `public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts` `getVersion` | `SELECT current_setting('server_version_num')::int/100 as version` |
//! | Grafana (TimescaleDB detection) | same file, `getTimescaleDBVersion` | `SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'` |
//! | Grafana (query builder: tables) | same file, `showTables` | `quote_ident`, `information_schema.tables`, the search-path constraint below |
//! | Grafana (query builder: columns) | same file, `getSchema` | `parse_ident`, `array_length`, `information_schema.columns`, the search-path constraint |
//! | Grafana (health check, pgx) | jackc/pgx `pgconn.go` `Ping` | `-- ping` (an empty statement: `pg`) |
//! | Grafana (health check, lib/pq) | lib/pq `conn_go18.go` `Ping` | `;` (an empty statement, pgwire's own) |
//! | DBeaver (connect) | `plugins/org.jkiss.dbeaver.ext.postgresql/…/PostgreExecutionContext.java` `refreshDefaults` | `SELECT current_schema(),session_user`, `SHOW search_path` |
//! | SQLAlchemy, others | | `select pg_catalog.version()`, `SELECT version()` |
//!
//! Grafana's search-path constraint (`buildSchemaConstraint` in
//! `postgresMetaQuery.ts`) reads the search path with
//! `generate_series(array_lower(…), array_upper(…)) as i,
//! string_to_array(current_setting('search_path'),',') s` and `s[i]`: a
//! scalar function in `FROM` whose alias is also its column, which
//! DataFusion has no way to express. [`rewrite`] replaces exactly that
//! subquery by `array_has(current_schemas(false), …)`, PostgreSQL's own
//! function for the schemas of the search path, and nothing else.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int16Array, Int32Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TableType, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, ObjectNamePart, Query, SetExpr,
    Statement, TableFactor, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use pgwire::api::Type;

/// The PostgreSQL version we answer as: 16, whose protocol and catalog
/// the answers follow.
pub const SERVER_VERSION_NUM: &str = "160000";

/// The schema of the lake's tables (DataFusion's default schema).
pub const SCHEMA: &str = "public";

/// The schema of [`register`]'s catalog tables.
pub const CATALOG_SCHEMA: &str = "pg_catalog";

/// The database every connection is in (the name a client asks for is
/// not checked: there is one).
pub const DATABASE: &str = "glasshouse";

/// PostgreSQL's default search path: `public` (no schema is named after a
/// user).
pub const SEARCH_PATH: &str = "\"$user\", public";

/// `server_version`, as the startup message and `SHOW server_version` say.
pub fn server_version() -> String {
    format!("16.0 (glasshouse {})", env!("CARGO_PKG_VERSION"))
}

/// The settings `current_setting(name)`, `SHOW name` and
/// `pg_catalog.pg_settings` answer (names as PostgreSQL spells them; looked
/// up ignoring case, as PostgreSQL does). The session cannot change them:
/// `SET` is refused as a write.
pub fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("server_version", server_version()),
        ("server_version_num", SERVER_VERSION_NUM.to_owned()),
        ("search_path", SEARCH_PATH.to_owned()),
        ("server_encoding", "UTF8".to_owned()),
        ("client_encoding", "UTF8".to_owned()),
        ("standard_conforming_strings", "on".to_owned()),
        ("integer_datetimes", "on".to_owned()),
        ("DateStyle", "ISO, YMD".to_owned()),
        ("IntervalStyle", "postgres".to_owned()),
        ("TimeZone", "Etc/UTC".to_owned()),
        ("default_transaction_read_only", "on".to_owned()),
        ("transaction_read_only", "on".to_owned()),
        ("is_superuser", "off".to_owned()),
        ("max_identifier_length", "63".to_owned()),
    ]
}

fn setting(name: &str) -> Option<String> {
    settings()
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The PostgreSQL type a column of `t` is sent as over the wire, and
/// whether it is always sent as text (types encoded only in text form):
/// the `pg` front door's encoding and `pg_attribute.atttypid` agree.
pub fn wire_type(t: &DataType) -> (Type, bool) {
    match t {
        DataType::Boolean => (Type::BOOL, false),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => (Type::INT2, false),
        DataType::Int32 | DataType::UInt16 => (Type::INT4, false),
        DataType::Int64 | DataType::UInt32 => (Type::INT8, false),
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => (Type::NUMERIC, true),
        DataType::Float16 | DataType::Float32 => (Type::FLOAT4, false),
        DataType::Float64 => (Type::FLOAT8, false),
        DataType::Timestamp(_, Some(_)) => (Type::TIMESTAMPTZ, false),
        DataType::Timestamp(_, None) => (Type::TIMESTAMP, false),
        // Utf8, LargeUtf8, Utf8View, lists (as JSON text) and whatever else
        // is shown as text.
        _ => (Type::TEXT, true),
    }
}

/// Registers the functions and the `pg_catalog` schema in `ctx`, whose
/// tables and views must all be registered already (the catalog tables
/// are a snapshot of them). `user` is who `current_user` names.
pub async fn register(ctx: &SessionContext, user: &str) -> Result<()> {
    for f in [
        PgFunction::CurrentSetting,
        PgFunction::QuoteIdent,
        PgFunction::ParseIdent,
        PgFunction::Version,
        PgFunction::CurrentSchema,
        PgFunction::CurrentSchemas,
        PgFunction::CurrentDatabase,
    ] {
        ctx.register_udf(ScalarUDF::from(Pg::new(f)));
    }
    register_user(ctx, user);
    let catalog_name = ctx.state().config_options().catalog.default_catalog.clone();
    let catalog = ctx
        .catalog(&catalog_name)
        .ok_or_else(|| DataFusionError::Plan(format!("no catalog {catalog_name}")))?;
    let public = catalog
        .schema(SCHEMA)
        .ok_or_else(|| DataFusionError::Plan(format!("no schema {SCHEMA}")))?;
    let mut tables = Vec::new();
    let mut names = public.table_names();
    names.sort();
    for name in names {
        if let Some(t) = public.table(&name).await? {
            tables.push((name, t.schema(), t.table_type()));
        }
    }
    let schema = Arc::new(MemorySchemaProvider::new());
    for (name, table) in catalog_tables(&tables)? {
        schema.register_table(name.to_owned(), table)?;
    }
    catalog.register_schema(CATALOG_SCHEMA, schema)?;
    Ok(())
}

/// (Re-)registers `current_user`, `session_user` and `user` as `user`.
pub fn register_user(ctx: &SessionContext, user: &str) {
    for name in ["current_user", "session_user", "user", "current_role"] {
        ctx.register_udf(ScalarUDF::from(Pg::new(PgFunction::User {
            name,
            user: user.to_owned(),
        })));
    }
}

/// The names of the `pg_catalog` tables ([`catalog_tables`]).
const CATALOG_TABLES: &[&str] = &[
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_type",
    "pg_database",
    "pg_extension",
    "pg_settings",
];

/// OIDs as PostgreSQL numbers its own objects, and ours from its first
/// "normal" OID on.
const PG_CATALOG_OID: u32 = 11;
const PUBLIC_OID: u32 = 2200;
const INFORMATION_SCHEMA_OID: u32 = 13_000;
const DATABASE_OID: u32 = 16_384;
const FIRST_TABLE_OID: u32 = 16_385;
const OWNER_OID: u32 = 10;

/// The types a column is ever sent as ([`wire_type`]), with their length
/// and category (`pg_type.typlen`, `typcategory`).
const TYPES: &[(Type, i16, &str)] = &[
    (Type::BOOL, 1, "B"),
    (Type::INT2, 2, "N"),
    (Type::INT4, 4, "N"),
    (Type::INT8, 8, "N"),
    (Type::FLOAT4, 4, "N"),
    (Type::FLOAT8, 8, "N"),
    (Type::NUMERIC, -1, "N"),
    (Type::TEXT, -1, "S"),
    (Type::TIMESTAMP, 8, "D"),
    (Type::TIMESTAMPTZ, 8, "D"),
];

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn oid(name: &str) -> Field {
    Field::new(name, DataType::UInt32, false)
}

fn mem_table(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<Arc<dyn TableProvider>> {
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// The `pg_catalog` tables over `tables` (name, schema, table or view),
/// with the columns clients read (PostgreSQL has more).
fn catalog_tables(tables: &[(String, SchemaRef, TableType)]) -> Result<Vec<(&'static str, Arc<dyn TableProvider>)>> {
    let table_oid = |i: usize| FIRST_TABLE_OID + u32::try_from(i).unwrap_or(u32::MAX - FIRST_TABLE_OID);
    let namespace = mem_table(
        vec![oid("oid"), utf8("nspname"), oid("nspowner")],
        vec![
            Arc::new(UInt32Array::from(vec![
                PG_CATALOG_OID,
                PUBLIC_OID,
                INFORMATION_SCHEMA_OID,
            ])),
            strings([CATALOG_SCHEMA, SCHEMA, "information_schema"]),
            Arc::new(UInt32Array::from(vec![OWNER_OID; 3])),
        ],
    )?;
    let class = mem_table(
        vec![
            oid("oid"),
            utf8("relname"),
            oid("relnamespace"),
            utf8("relkind"),
            oid("relowner"),
            Field::new("relnatts", DataType::Int16, false),
            Field::new("relhasindex", DataType::Boolean, false),
            utf8("relpersistence"),
            Field::new("relispartition", DataType::Boolean, false),
        ],
        vec![
            Arc::new(UInt32Array::from_iter_values((0..tables.len()).map(table_oid))),
            strings(tables.iter().map(|(n, _, _)| n.as_str())),
            Arc::new(UInt32Array::from(vec![PUBLIC_OID; tables.len()])),
            strings(
                tables
                    .iter()
                    .map(|(_, _, t)| if *t == TableType::View { "v" } else { "r" }),
            ),
            Arc::new(UInt32Array::from(vec![OWNER_OID; tables.len()])),
            Arc::new(Int16Array::from_iter_values(
                tables
                    .iter()
                    .map(|(_, s, _)| i16::try_from(s.fields().len()).unwrap_or(i16::MAX)),
            )),
            Arc::new(BooleanArray::from(vec![false; tables.len()])),
            strings(tables.iter().map(|_| "p")),
            Arc::new(BooleanArray::from(vec![false; tables.len()])),
        ],
    )?;
    let columns: Vec<(u32, i16, &Field)> = tables
        .iter()
        .enumerate()
        .flat_map(|(i, (_, s, _))| {
            s.fields()
                .iter()
                .enumerate()
                .map(move |(n, f)| (table_oid(i), i16::try_from(n + 1).unwrap_or(i16::MAX), f.as_ref()))
        })
        .collect();
    let attribute = mem_table(
        vec![
            oid("attrelid"),
            utf8("attname"),
            oid("atttypid"),
            Field::new("attnum", DataType::Int16, false),
            Field::new("attlen", DataType::Int16, false),
            Field::new("atttypmod", DataType::Int32, false),
            Field::new("attnotnull", DataType::Boolean, false),
            Field::new("attisdropped", DataType::Boolean, false),
            Field::new("atthasdef", DataType::Boolean, false),
        ],
        vec![
            Arc::new(UInt32Array::from_iter_values(columns.iter().map(|c| c.0))),
            strings(columns.iter().map(|c| c.2.name().as_str())),
            Arc::new(UInt32Array::from_iter_values(
                columns.iter().map(|c| wire_type(c.2.data_type()).0.oid()),
            )),
            Arc::new(Int16Array::from_iter_values(columns.iter().map(|c| c.1))),
            Arc::new(Int16Array::from_iter_values(columns.iter().map(|c| {
                let t = wire_type(c.2.data_type()).0;
                TYPES.iter().find(|(ty, _, _)| *ty == t).map_or(-1, |(_, len, _)| *len)
            }))),
            Arc::new(Int32Array::from(vec![-1; columns.len()])),
            Arc::new(BooleanArray::from_iter(
                columns.iter().map(|c| Some(!c.2.is_nullable())),
            )),
            Arc::new(BooleanArray::from(vec![false; columns.len()])),
            Arc::new(BooleanArray::from(vec![false; columns.len()])),
        ],
    )?;
    let types = mem_table(
        vec![
            oid("oid"),
            utf8("typname"),
            oid("typnamespace"),
            oid("typowner"),
            Field::new("typlen", DataType::Int16, false),
            utf8("typtype"),
            utf8("typcategory"),
            oid("typelem"),
            oid("typbasetype"),
            Field::new("typtypmod", DataType::Int32, false),
            Field::new("typnotnull", DataType::Boolean, false),
        ],
        vec![
            Arc::new(UInt32Array::from_iter_values(TYPES.iter().map(|t| t.0.oid()))),
            strings(TYPES.iter().map(|t| t.0.name())),
            Arc::new(UInt32Array::from(vec![PG_CATALOG_OID; TYPES.len()])),
            Arc::new(UInt32Array::from(vec![OWNER_OID; TYPES.len()])),
            Arc::new(Int16Array::from_iter_values(TYPES.iter().map(|t| t.1))),
            strings(TYPES.iter().map(|_| "b")),
            strings(TYPES.iter().map(|t| t.2)),
            Arc::new(UInt32Array::from(vec![0; TYPES.len()])),
            Arc::new(UInt32Array::from(vec![0; TYPES.len()])),
            Arc::new(Int32Array::from(vec![-1; TYPES.len()])),
            Arc::new(BooleanArray::from(vec![false; TYPES.len()])),
        ],
    )?;
    let database = mem_table(
        vec![
            oid("oid"),
            utf8("datname"),
            oid("datdba"),
            Field::new("encoding", DataType::Int32, false),
            utf8("datcollate"),
            utf8("datctype"),
            Field::new("datistemplate", DataType::Boolean, false),
            Field::new("datallowconn", DataType::Boolean, false),
        ],
        vec![
            Arc::new(UInt32Array::from(vec![DATABASE_OID])),
            strings([DATABASE]),
            Arc::new(UInt32Array::from(vec![OWNER_OID])),
            // 6: UTF8.
            Arc::new(Int32Array::from(vec![6])),
            strings(["C.UTF-8"]),
            strings(["C.UTF-8"]),
            Arc::new(BooleanArray::from(vec![false])),
            Arc::new(BooleanArray::from(vec![true])),
        ],
    )?;
    // No extensions (Grafana asks for TimescaleDB: zero rows is "no").
    let extension = mem_table(
        vec![
            oid("oid"),
            utf8("extname"),
            oid("extowner"),
            oid("extnamespace"),
            Field::new("extrelocatable", DataType::Boolean, false),
            utf8("extversion"),
        ],
        vec![
            Arc::new(UInt32Array::from(Vec::<u32>::new())),
            strings([]),
            Arc::new(UInt32Array::from(Vec::<u32>::new())),
            Arc::new(UInt32Array::from(Vec::<u32>::new())),
            Arc::new(BooleanArray::from(Vec::<bool>::new())),
            strings([]),
        ],
    )?;
    let all = settings();
    let pg_settings = mem_table(
        vec![utf8("name"), utf8("setting")],
        vec![
            strings(all.iter().map(|(n, _)| *n)),
            strings(all.iter().map(|(_, v)| v.as_str())),
        ],
    )?;
    let out = vec![
        ("pg_namespace", namespace),
        ("pg_class", class),
        ("pg_attribute", attribute),
        ("pg_type", types),
        ("pg_database", database),
        ("pg_extension", extension),
        ("pg_settings", pg_settings),
    ];
    debug_assert!(out.iter().map(|(n, _)| *n).eq(CATALOG_TABLES.iter().copied()));
    Ok(out)
}

/// The functions [`register`] adds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PgFunction {
    /// `current_setting(name)`: [`settings`]; an unknown name is an error,
    /// as in PostgreSQL.
    CurrentSetting,
    /// `quote_ident(text)`: PostgreSQL's quoting of an identifier.
    QuoteIdent,
    /// `parse_ident(text)`: a qualified identifier split into its parts.
    ParseIdent,
    /// `version()`: PostgreSQL's form (drivers read the version from it),
    /// naming Glasshouse and DataFusion (replaces DataFusion's own).
    Version,
    /// `current_schema()`: `public`.
    CurrentSchema,
    /// `current_schemas(include_implicit)`: the search path's schemas.
    CurrentSchemas,
    /// `current_database()`.
    CurrentDatabase,
    /// `current_user`, `session_user`, `user`, `current_role`.
    User { name: &'static str, user: String },
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Pg {
    function: PgFunction,
    signature: Signature,
}

impl Pg {
    fn new(function: PgFunction) -> Pg {
        let signature = match function {
            PgFunction::CurrentSetting | PgFunction::QuoteIdent | PgFunction::ParseIdent => {
                Signature::string(1, Volatility::Immutable)
            }
            PgFunction::CurrentSchemas => Signature::exact(vec![DataType::Boolean], Volatility::Immutable),
            PgFunction::Version | PgFunction::CurrentSchema | PgFunction::CurrentDatabase | PgFunction::User { .. } => {
                Signature::nullary(Volatility::Immutable)
            }
        };
        Pg { function, signature }
    }
}

fn text_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn text_list(items: &[&str]) -> ColumnarValue {
    let values: Vec<ScalarValue> = items.iter().map(|s| ScalarValue::Utf8(Some((*s).to_owned()))).collect();
    ColumnarValue::Scalar(ScalarValue::List(ScalarValue::new_list_nullable(
        &values,
        &DataType::Utf8,
    )))
}

fn text(s: impl Into<String>) -> ColumnarValue {
    ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.into())))
}

impl ScalarUDFImpl for Pg {
    fn name(&self) -> &str {
        match &self.function {
            PgFunction::CurrentSetting => "current_setting",
            PgFunction::QuoteIdent => "quote_ident",
            PgFunction::ParseIdent => "parse_ident",
            PgFunction::Version => "version",
            PgFunction::CurrentSchema => "current_schema",
            PgFunction::CurrentSchemas => "current_schemas",
            PgFunction::CurrentDatabase => "current_database",
            PgFunction::User { name, .. } => name,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.function {
            PgFunction::ParseIdent | PgFunction::CurrentSchemas => text_list_type(),
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match &self.function {
            PgFunction::Version => Ok(text(format!(
                "PostgreSQL 16.0 (Glasshouse {}, Apache DataFusion {}) on {}-{}",
                env!("CARGO_PKG_VERSION"),
                datafusion::DATAFUSION_VERSION,
                std::env::consts::ARCH,
                std::env::consts::OS,
            ))),
            PgFunction::CurrentSchema => Ok(text(SCHEMA)),
            PgFunction::CurrentDatabase => Ok(text(DATABASE)),
            PgFunction::User { user, .. } => Ok(text(user.clone())),
            PgFunction::CurrentSchemas => match args.args.first() {
                Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true)))) => {
                    Ok(text_list(&[CATALOG_SCHEMA, SCHEMA]))
                }
                Some(ColumnarValue::Scalar(_)) => Ok(text_list(&[SCHEMA])),
                _ => exec_err!("current_schemas takes a constant boolean"),
            },
            PgFunction::CurrentSetting => map_text(&args, |name| {
                setting(name).map(Some).ok_or_else(|| {
                    DataFusionError::Execution(format!("unrecognized configuration parameter \"{name}\""))
                })
            }),
            PgFunction::QuoteIdent => map_text(&args, |s| Ok(Some(quote_ident(s)))),
            PgFunction::ParseIdent => {
                let input = args.args.first().map(|a| a.to_array(args.number_rows)).transpose()?;
                let Some(input) = input else {
                    return exec_err!("parse_ident takes one argument");
                };
                let input = cast(&input, &DataType::Utf8)?;
                let mut out = ListBuilder::new(StringBuilder::new());
                for s in input.as_string::<i32>() {
                    match s {
                        None => out.append_null(),
                        Some(s) => {
                            for part in parse_ident(s)? {
                                out.values().append_value(part);
                            }
                            out.append(true);
                        }
                    }
                }
                let array: ArrayRef = Arc::new(out.finish());
                scalar_if_scalar(&args, array)
            }
        }
    }
}

/// Applies `f` to every string of the one argument (nulls stay null).
fn map_text(args: &ScalarFunctionArgs, f: impl Fn(&str) -> Result<Option<String>>) -> Result<ColumnarValue> {
    let Some(arg) = args.args.first() else {
        return exec_err!("expected one argument");
    };
    let input = cast(&arg.to_array(args.number_rows)?, &DataType::Utf8)?;
    let out: StringArray = input
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(&f).transpose().map(Option::flatten))
        .collect::<Result<_>>()?;
    scalar_if_scalar(args, Arc::new(out))
}

/// `array` as a scalar when every argument was one (constant folding
/// keeps a constant constant).
fn scalar_if_scalar(args: &ScalarFunctionArgs, array: ArrayRef) -> Result<ColumnarValue> {
    if args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) && !array.is_empty() {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

/// PostgreSQL's keywords other than the unreserved ones: `quote_ident`
/// quotes them (`src/include/parser/kwlist.h`, categories RESERVED,
/// COL_NAME and TYPE_FUNC_NAME).
const KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "json",
    "json_array",
    "json_arrayagg",
    "json_object",
    "json_objectagg",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

/// PostgreSQL's `quote_ident`: as it is when it is a lowercase name that
/// is no keyword, else in double quotes (inner ones doubled).
pub fn quote_ident(s: &str) -> String {
    let plain = s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !KEYWORDS.contains(&s);
    if plain {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// PostgreSQL's `parse_ident`: `a.b.c` into its parts, unquoted parts
/// lowercased, quoted ones as written.
pub fn parse_ident(s: &str) -> Result<Vec<String>> {
    let invalid = || DataFusionError::Execution(format!("string is not a valid identifier: \"{s}\""));
    let mut parts = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut part = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => part.push('"'),
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(invalid()),
                }
            }
            if part.is_empty() {
                return Err(invalid());
            }
        } else {
            while let Some(c) = chars.next_if(|c| c.is_alphanumeric() || *c == '_' || *c == '$') {
                part.extend(c.to_lowercase());
            }
            if part.is_empty() {
                return Err(invalid());
            }
        }
        parts.push(part);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Ok(parts),
            Some('.') => {}
            Some(_) => return Err(invalid()),
        }
    }
}

/// Makes a parsed statement plannable where PostgreSQL clients say what
/// DataFusion cannot, without changing what it asks for:
///
/// - an unqualified `pg_namespace`, `pg_class`, … (the [`CATALOG_TABLES`])
///   is `pg_catalog.…`: PostgreSQL searches `pg_catalog` before the search
///   path (a CTE of the same name keeps its name);
/// - `pg_catalog.version()` and the like are the unqualified functions;
/// - Grafana's search-path subquery (module doc) is
///   `array_has(current_schemas(false), …)`;
/// - `SHOW name` of a PostgreSQL setting ([`settings`]) is
///   `SELECT current_setting('name') AS name`.
///
/// Every other statement is left as it is.
pub fn rewrite(statement: &mut DfStatement) {
    let DfStatement::Statement(statement) = statement else {
        return;
    };
    if let Statement::ShowVariable { variable } = statement.as_ref() {
        let name = variable.iter().map(|i| i.value.as_str()).collect::<Vec<_>>().join(".");
        if let Some((known, _)) = settings().into_iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            let sql = format!("SELECT current_setting('{known}') AS {}", quote_ident(known));
            // Our own SQL over a known setting name: it parses.
            if let Ok(Some(select)) = Parser::parse_sql(&GenericDialect {}, &sql).map(|mut s| s.pop()) {
                **statement = select;
            }
        }
        return;
    }
    let mut visitor = Rewriter::default();
    let _ = statement.visit(&mut visitor);
}

/// The rewrites of [`rewrite`] over a statement's queries, relations and
/// expressions.
#[derive(Default)]
struct Rewriter {
    /// The statement's CTE names, lowercase.
    ctes: HashSet<String>,
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.ctes
                .extend(with.cte_tables.iter().map(|c| c.alias.name.value.to_lowercase()));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &mut ObjectName) -> ControlFlow<()> {
        if let [ObjectNamePart::Identifier(table)] = name.0.as_slice() {
            let lower = table.value.to_lowercase();
            if CATALOG_TABLES.contains(&lower.as_str()) && !self.ctes.contains(&lower) {
                name.0.insert(0, ObjectNamePart::Identifier(Ident::new(CATALOG_SCHEMA)));
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(f) => {
                if let [ObjectNamePart::Identifier(schema), _] = f.name.0.as_slice()
                    && schema.value.eq_ignore_ascii_case(CATALOG_SCHEMA)
                {
                    f.name.0.remove(0);
                }
            }
            Expr::InSubquery {
                expr: needle,
                subquery,
                negated,
            } if is_search_path_subquery(subquery) => {
                let call = format!(
                    "{}array_has(current_schemas(false), NULL)",
                    if *negated { "NOT " } else { "" }
                );
                if let Ok(mut replacement) = Parser::new(&GenericDialect {})
                    .try_with_sql(&call)
                    .and_then(|mut p| p.parse_expr())
                {
                    // The NULL placeholder becomes the tested expression.
                    let _ = replacement.visit(&mut ReplaceNull(Some(std::mem::replace(
                        needle.as_mut(),
                        Expr::value(Value::Null),
                    ))));
                    *expr = replacement;
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Puts its expression in place of the first `NULL`.
struct ReplaceNull(Option<Expr>);

impl VisitorMut for ReplaceNull {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if matches!(expr, Expr::Value(v) if v.value == Value::Null)
            && let Some(e) = self.0.take()
        {
            *expr = e;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Grafana's search-path subquery: `SELECT … FROM generate_series(…) AS i,
/// string_to_array(current_setting('search_path'), ',') s` (module doc).
fn is_search_path_subquery(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let [series, path] = select.from.as_slice() else {
        return false;
    };
    if !series.joins.is_empty() || !path.joins.is_empty() {
        return false;
    }
    let function = |factor: &TableFactor, expected: &str| match factor {
        TableFactor::Table {
            name, args: Some(args), ..
        } if name.to_string().eq_ignore_ascii_case(expected) => Some(args.args.clone()),
        _ => None,
    };
    let (Some(_), Some(args)) = (
        function(&series.relation, "generate_series"),
        function(&path.relation, "string_to_array"),
    ) else {
        return false;
    };
    matches!(args.first(), Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Function(f))))
        if f.name.to_string().eq_ignore_ascii_case("current_setting")
            && matches!(&f.args, FunctionArguments::List(l) if l.args.len() == 1
                && l.args[0].to_string().eq_ignore_ascii_case("'search_path'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_ident_quotes_what_postgresql_quotes() {
        assert_eq!(quote_ident("process_events"), "process_events");
        assert_eq!(quote_ident("time"), "\"time\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("Mixed"), "\"Mixed\"");
        assert_eq!(quote_ident("a-b"), "\"a-b\"");
        assert_eq!(quote_ident("1a"), "\"1a\"");
        assert_eq!(quote_ident("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote_ident(""), "\"\"");
        assert!(KEYWORDS.windows(2).all(|w| w[0] < w[1]), "KEYWORDS sorted and unique");
    }

    #[test]
    fn parse_ident_splits_and_folds() {
        assert_eq!(parse_ident("process_events").unwrap(), ["process_events"]);
        assert_eq!(parse_ident("Public.Alerts").unwrap(), ["public", "alerts"]);
        assert_eq!(parse_ident(" \"My\"\"Schema\" . t ").unwrap(), ["My\"Schema", "t"]);
        for bad in ["", "a.", ".a", "a b", "\"unterminated", "\"\"", "a;b"] {
            assert!(parse_ident(bad).is_err(), "{bad:?}");
        }
    }

    fn rewritten(sql: &str) -> String {
        let mut s = datafusion::sql::parser::DFParser::parse_sql(sql)
            .unwrap()
            .pop_front()
            .unwrap();
        rewrite(&mut s);
        s.to_string()
    }

    #[test]
    fn rewrites_only_what_datafusion_cannot_say() {
        assert_eq!(
            rewritten("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"),
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'timescaledb'"
        );
        assert_eq!(
            rewritten("WITH pg_class AS (SELECT 1 AS x) SELECT x FROM pg_class"),
            "WITH pg_class AS (SELECT 1 AS x) SELECT x FROM pg_class"
        );
        assert_eq!(rewritten("SELECT pg_catalog.version()"), "SELECT version()");
        assert_eq!(
            rewritten("SHOW search_path"),
            "SELECT current_setting('search_path') AS search_path"
        );
        // DataFusion's own variables stay (sqlparser shows the parts apart).
        assert_eq!(
            rewritten("SHOW datafusion.execution.batch_size"),
            "SHOW datafusion execution batch_size"
        );
        let grafana = "SELECT 1 FROM t WHERE quote_ident(table_schema) IN (
            SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END
            FROM generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s)";
        assert_eq!(
            rewritten(grafana),
            "SELECT 1 FROM t WHERE array_has(current_schemas(false), quote_ident(table_schema))"
        );
        // Any other IN subquery stays.
        let other = "SELECT 1 FROM t WHERE a IN (SELECT b FROM generate_series(1, 2) AS i, u)";
        assert_eq!(rewritten(other), other);
    }
}

#[cfg(test)]
mod client_queries {
    //! The clients' queries against an engine over two small tables (the
    //! `sql_clients` test sends them through psql and psycopg).
    use std::time::Duration;

    use datafusion::arrow::util::display::array_value_to_string;

    use super::*;
    use crate::engine::{Engine, Limits};

    /// Every table of the catalog, empty.
    async fn engine() -> Engine {
        let tables = crate::catalog::TABLES
            .iter()
            .map(|def| {
                let schema = crate::catalog::schema(def);
                let table: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(schema, vec![vec![]]).unwrap());
                (def.name, table)
            })
            .collect();
        Engine::with_tables(
            None,
            tables,
            Limits {
                timeout: Duration::from_secs(30),
                memory_bytes: 64 << 20,
                threads: 1,
                max_depth: 256,
            },
        )
        .await
        .unwrap()
    }

    /// Each row's cells as text.
    async fn rows(e: &Engine, sql: &str) -> Vec<Vec<String>> {
        let (_, batches) = e.query(sql).await.unwrap_or_else(|err| panic!("{sql}\n{err}"));
        let mut out = Vec::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                out.push(
                    b.columns()
                        .iter()
                        .map(|c| array_value_to_string(c, r).unwrap())
                        .collect(),
                );
            }
        }
        out
    }

    #[tokio::test]
    async fn answers_without_the_front_door() {
        // The `sql_clients` test sends Grafana's and DBeaver's queries as
        // they are, through psql and psycopg.
        let e = engine().await;
        let version = rows(&e, "SELECT current_setting('server_version_num')::int/100 as version").await;
        assert_eq!(version, [["1600"]]);
        let none = rows(&e, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").await;
        assert!(none.is_empty(), "{none:?}");
        let session = rows(
            &e,
            "SELECT current_schema(), session_user, current_database(), current_schemas(true)",
        )
        .await;
        assert_eq!(
            session,
            [["public", "glasshouse", "glasshouse", "[pg_catalog, public]"]]
        );
        e.set_user("grafana");
        assert_eq!(rows(&e, "SELECT current_user").await, [["grafana"]]);
        assert_eq!(rows(&e, "SHOW search_path").await, [[r#""$user", public"#]]);
        let columns = rows(
            &e,
            "SELECT quote_ident(column_name) AS c FROM information_schema.columns \
             WHERE quote_ident(table_name) = (parse_ident('Public.Alerts'))[2] \
             AND array_has(current_schemas(false), quote_ident(table_schema)) AND column_name IN ('time', 'title') \
             ORDER BY 1",
        )
        .await;
        assert_eq!(columns, [[r#""time""#], ["title"]]);
        let catalog = rows(
            &e,
            "SELECT c.relkind, t.typname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid \
             JOIN pg_type t ON t.oid = a.atttypid WHERE c.relname = 'containers' AND a.attname = 'last_seen'",
        )
        .await;
        assert_eq!(catalog, [["v", "timestamptz"]]);
        let err = e.query("SELECT current_setting('nope')").await.unwrap_err().to_string();
        assert!(err.contains("unrecognized configuration parameter"), "{err}");
    }
}
