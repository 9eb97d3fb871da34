//! The query engine behind every front door: DataFusion over the lake's
//! tables, read-only, with a query timeout and a memory limit, on a runtime
//! of its own so queries never stall the analyzer's I/O.
//!
//! No statement can abort the process: one nested deeper than
//! `Limits::max_depth` is refused on its tokens before it is parsed
//! ([`nesting_depth`]), and parsing, planning and execution run on the query
//! runtime's threads, whose stack is sized for that depth with a wide margin
//! ([`stack_size`]). Results are streamed ([`Engine::stream`]) through a
//! channel of two batches: a client that reads slowly slows the query
//! down instead of letting its result pile up outside the memory pool.
//!
//! Every session also answers what PostgreSQL clients ask about the server
//! and its catalog ([`postgres`]).

pub mod postgres;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::catalog::CONTAINERS_VIEW;
use crate::lake::Lake;

/// Who `current_user` names until a front door says otherwise: the
/// default of `[sql] user`.
const DEFAULT_USER: &str = "glasshouse";

/// Limits every query runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// Threads of the query runtime.
    pub threads: usize,
    /// Deepest nesting of a statement ([`nesting_depth`]).
    pub max_depth: usize,
}

/// Why a query gave no result. The messages go to clients as they are.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL does not parse or does not plan (unknown table or column,
    /// type error): the parser's or planner's own message.
    #[error("{0}")]
    Invalid(String),
    #[error("the SQL interface is read-only: only queries are allowed ({0})")]
    ReadOnly(String),
    #[error("query cancelled: it ran longer than the {0:?} timeout")]
    Timeout(Duration),
    #[error("query cancelled: it needs more than the {limit_mib} MiB memory limit ({detail})")]
    Memory { limit_mib: usize, detail: String },
    #[error("query failed: {0}")]
    Execution(String),
    /// Nested deeper than the limit (or than the parser's own recursion
    /// limit): refused before planning.
    #[error("statement too complex: {detail} (limit {limit}, sql.max_nesting_depth)")]
    TooComplex { detail: String, limit: usize },
}

impl QueryError {
    /// The SQLSTATE code of the PostgreSQL wire protocol.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            QueryError::Invalid(_) => "42601",
            QueryError::ReadOnly(_) => "25006",
            QueryError::Timeout(_) => "57014",
            QueryError::Memory { .. } => "53200",
            QueryError::Execution(_) => "XX000",
            QueryError::TooComplex { .. } => "54001",
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("query runtime")]
    Runtime(#[source] std::io::Error),
    #[error("datafusion")]
    DataFusion(#[from] DataFusionError),
    #[error("opening the lake's tables: {0}")]
    Open(String),
}

/// A planned query: its plan and result schema.
#[derive(Debug, Clone)]
pub struct Planned {
    pub sql: String,
    pub plan: LogicalPlan,
    pub schema: SchemaRef,
}

/// The query runtime; shut down without blocking when dropped (dropping a
/// runtime inside an async context would panic).
#[derive(Debug)]
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// DataFusion over the lake.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    runtime: Arc<QueryRuntime>,
    limits: Limits,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A session with every lake table and the `containers` view.
    pub async fn new(lake: &Arc<Lake>, limits: Limits) -> Result<Engine, EngineError> {
        let (url, store) = lake.store();
        let tables = lake
            .tables()
            .filter_map(|t| {
                let provider: Arc<dyn datafusion::catalog::TableProvider> = lake.provider(t.def.name)?;
                Some((t.def.name, provider))
            })
            .collect();
        Engine::with_tables(Some((url.to_owned(), store)), tables, limits).await
    }

    /// A session with `tables` (their files in `store`, under its URL, if
    /// not local) and the `containers` view.
    pub async fn with_tables(
        store: Option<(String, Arc<dyn object_store::ObjectStore>)>,
        tables: Vec<(&'static str, Arc<dyn datafusion::catalog::TableProvider>)>,
        limits: Limits,
    ) -> Result<Engine, EngineError> {
        // DataFusion's defaults otherwise: strings as Utf8View, as the
        // lake's schemas, tail and Parquet files have them (`catalog`).
        let config = SessionConfig::new()
            .with_target_partitions(limits.threads.max(1))
            .with_information_schema(true);
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime_env);
        if let Some((url, store)) = store {
            let url = url::Url::parse(&url).map_err(|e| DataFusionError::External(Box::new(e)))?;
            ctx.register_object_store(&url, store);
        }
        for (name, provider) in tables {
            ctx.register_table(name, provider)?;
        }
        ctx.sql(&format!("CREATE VIEW containers AS {CONTAINERS_VIEW}")).await?;
        // The PostgreSQL front door names its configured user instead
        // (`Engine::set_user`).
        postgres::register(&ctx, DEFAULT_USER).await?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.threads.max(1))
            .thread_name("glasshouse-sql")
            .thread_stack_size(stack_size(limits.max_depth))
            .enable_all()
            .build()
            .map_err(EngineError::Runtime)?;
        Ok(Engine {
            ctx,
            runtime: Arc::new(QueryRuntime(Some(rt))),
            limits,
        })
    }

    /// The session (the benchmark and tests compare with it directly).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The user `current_user`, `session_user` and `user` name (the
    /// session's, so every front door sharing the engine sees it).
    pub fn set_user(&self, user: &str) {
        postgres::register_user(&self.ctx, user);
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        // Set in `new` and taken only in `drop`.
        self.runtime
            .0
            .as_ref()
            .expect("query runtime lives as long as the engine")
            .handle()
    }

    /// Parses and plans `sql`, refusing anything but a query.
    pub async fn plan(&self, sql: &str) -> Result<Planned, QueryError> {
        let ctx = self.ctx.clone();
        let text = sql.to_owned();
        let limit = self.limits.max_depth;
        let work = async move {
            let depth = nesting_depth(&text).map_err(QueryError::Invalid)?;
            if depth > limit {
                return Err(QueryError::TooComplex {
                    detail: format!("nested {depth} deep"),
                    limit,
                });
            }
            let state = ctx.state();
            let dialect = state.config().options().sql_parser.dialect;
            let mut statement = state
                .sql_to_statement(&text, &dialect)
                .map_err(|e| invalid(&e, limit))?;
            postgres::rewrite(&mut statement);
            let plan = state
                .statement_to_plan(statement)
                .await
                .map_err(|e| invalid(&e, limit))?;
            SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false)
                .verify_plan(&plan)
                .map_err(|e| QueryError::ReadOnly(message(&e)))?;
            let schema = plan.schema().inner().clone();
            Ok(Planned {
                sql: text,
                plan,
                schema,
            })
        };
        self.run(work).await
    }

    /// Runs a planned query to its end, collecting every batch (tests and
    /// the benchmark; the front doors use [`Engine::stream`]).
    pub async fn execute(&self, planned: &Planned) -> Result<Vec<RecordBatch>, QueryError> {
        let mut batches = self.stream(planned);
        let mut out = Vec::new();
        while let Some(b) = batches.next().await {
            out.push(b?);
        }
        Ok(out)
    }

    /// Runs a planned query on the query runtime, its batches coming
    /// through a channel of two. Backpressure: when the reader stops
    /// taking batches the query stops being polled, so a result is never
    /// held beyond two batches plus what the plan itself buffers (under
    /// the memory pool). The timeout covers the whole run, the time spent
    /// waiting for the reader included; dropping [`Batches`] cancels it.
    pub fn stream(&self, planned: &Planned) -> Batches {
        let (tx, rx) = mpsc::channel(2);
        let finished = Arc::new(AtomicBool::new(false));
        let ctx = self.ctx.clone();
        let plan = planned.plan.clone();
        let timeout = self.limits.timeout;
        let limit_mib = self.limits.memory_bytes / (1024 * 1024);
        let done = finished.clone();
        self.handle().spawn(async move {
            let work = async {
                let df = ctx
                    .execute_logical_plan(plan)
                    .await
                    .map_err(|e| invalid(&e, usize::MAX))?;
                let mut batches = df.execute_stream().await.map_err(|e| failed(&e, limit_mib))?;
                while let Some(b) = batches.next().await {
                    let b = b.map_err(|e| failed(&e, limit_mib))?;
                    if b.num_rows() > 0 && tx.send(Ok(b)).await.is_err() {
                        // The reader is gone: dropping the stream cancels the query.
                        return Ok(false);
                    }
                }
                Ok(true)
            };
            // A statement of its own so the plan is dropped (cancelled)
            // before the error is sent.
            let outcome = tokio::time::timeout(timeout, work).await;
            let error = match outcome {
                Ok(Ok(true)) => {
                    done.store(true, Ordering::Release);
                    return;
                }
                Ok(Ok(false)) => return,
                Ok(Err(e)) => e,
                Err(_) => QueryError::Timeout(timeout),
            };
            // Ignored: the reader may be gone, and then nobody needs the error.
            let _ = tx.send(Err(error)).await;
        });
        Batches {
            rx,
            finished,
            ended: false,
        }
    }

    /// Plans and runs `sql`.
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let planned = self.plan(sql).await?;
        let batches = self.execute(&planned).await?;
        Ok((planned.schema, batches))
    }

    /// Runs `work` on the query runtime under the timeout; a query past it
    /// is dropped, which cancels its execution.
    async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, QueryError>> + Send + 'static,
    ) -> Result<T, QueryError> {
        let task = self.handle().spawn(work);
        let abort = task.abort_handle();
        match tokio::time::timeout(self.limits.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(QueryError::Execution(format!("query task ended: {join}"))),
            Err(_) => {
                abort.abort();
                Err(QueryError::Timeout(self.limits.timeout))
            }
        }
    }
}

/// The batches of a running query ([`Engine::stream`]).
#[derive(Debug)]
pub struct Batches {
    rx: mpsc::Receiver<Result<RecordBatch, QueryError>>,
    /// Set by the query task once it sent its last batch: a channel that
    /// closes without it is a query that ended early (its task panicked or
    /// the runtime stopped), not a complete result.
    finished: Arc<AtomicBool>,
    ended: bool,
}

impl Batches {
    /// The next batch; `None` after the last, and after an error.
    pub async fn next(&mut self) -> Option<Result<RecordBatch, QueryError>> {
        if self.ended {
            return None;
        }
        match self.rx.recv().await {
            Some(Ok(b)) => Some(Ok(b)),
            Some(Err(e)) => {
                self.ended = true;
                Some(Err(e))
            }
            None => {
                self.ended = true;
                (!self.finished.load(Ordering::Acquire))
                    .then(|| Err(QueryError::Execution("the query ended before its last batch".into())))
            }
        }
    }

    /// As a stream.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<RecordBatch, QueryError>> + Send + 'static {
        futures::stream::unfold(self, |mut b| async move { b.next().await.map(|item| (item, b)) })
    }
}

/// Stack of each query thread for statements nested up to `max_depth`:
/// 64 KiB a level on top of 16 MiB. Tokio's default 2 MiB overflowed at
/// a chain of about 1,000 `||` (issue 17), about 2 KiB a level, so this is
/// a margin of about 30 for shapes the token count under-estimates; the
/// `sql_clients` test plans chains at the default limit. Only the pages a
/// query touches are ever backed by memory.
pub fn stack_size(max_depth: usize) -> usize {
    (16 << 20) + max_depth.saturating_mul(64 << 10)
}

/// An upper bound on how deeply `sql` nests, from its tokens alone (the
/// tokenizer loops, it does not recurse, so any input is safe to measure).
/// At each token: one level per open bracket, and at each bracket level
/// the operators since the last comma or clause keyword (`a || b || c` is a
/// chain nested two deep) plus the set operations and joins (`… UNION ALL
/// SELECT …`: one level of the plan each). Over-counts rather than misses:
/// `x = 1 OR x = 2` counts 3.
pub fn nesting_depth(sql: &str) -> Result<usize, String> {
    #[derive(Default, Clone, Copy)]
    struct Level {
        operators: usize,
        sets: usize,
    }
    impl Level {
        fn depth(self) -> usize {
            1 + self.operators + self.sets
        }
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| e.to_string())?;
    let mut levels = vec![Level::default()];
    // The depth of every level below the innermost.
    let mut below = 0usize;
    let mut deepest = 0;
    for token in &tokens {
        let mut top = levels.pop().unwrap_or_default();
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                below += top.depth();
                levels.push(top);
                top = Level::default();
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                // An unbalanced bracket is the parser's to report.
                if let Some(outer) = levels.pop() {
                    below -= outer.depth();
                    top = outer;
                }
            }
            Token::Comma | Token::SemiColon => top.operators = 0,
            Token::Word(w) if w.quote_style.is_none() => match w.keyword {
                Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT | Keyword::MINUS | Keyword::JOIN => {
                    top.sets += 1;
                }
                Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::NOT
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::IS
                | Keyword::IN
                | Keyword::BETWEEN
                | Keyword::COLLATE
                | Keyword::AT => top.operators += 1,
                // Clause boundaries: what follows is a sibling, not a
                // continuation (never WHEN/THEN/ELSE/END: a CASE can sit in
                // the middle of a chain).
                Keyword::SELECT
                | Keyword::FROM
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::QUALIFY
                | Keyword::WINDOW
                | Keyword::ON
                | Keyword::USING => top.operators = 0,
                _ => {}
            },
            Token::Word(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::Placeholder(_)
            | Token::Whitespace(_)
            | Token::Period
            | Token::EOF
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_) => {}
            // Everything else is an operator (`||`, `+`, `=`, `::`, `->` …).
            _ => top.operators += 1,
        }
        deepest = deepest.max(below + top.depth());
        levels.push(top);
    }
    Ok(deepest)
}

fn failed(e: &DataFusionError, limit_mib: usize) -> QueryError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(detail) => QueryError::Memory {
            limit_mib,
            detail: detail.clone(),
        },
        other => QueryError::Execution(message(other)),
    }
}

fn invalid(e: &DataFusionError, limit: usize) -> QueryError {
    match e.find_root() {
        DataFusionError::SQL(p, _) if matches!(**p, ParserError::RecursionLimitExceeded) => QueryError::TooComplex {
            detail: "nested deeper than the SQL parser's recursion limit".into(),
            limit,
        },
        DataFusionError::ResourcesExhausted(_) | DataFusionError::Execution(_) | DataFusionError::IoError(_) => {
            QueryError::Execution(message(e))
        }
        _ => QueryError::Invalid(message(e)),
    }
}

/// DataFusion's message without the trailing backtrace hint.
fn message(e: &DataFusionError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(sql: &str) -> usize {
        nesting_depth(sql).unwrap()
    }

    #[test]
    fn nesting_counts_brackets_chains_and_set_operations() {
        assert_eq!(depth("SELECT 1"), 1);
        assert_eq!(depth("SELECT a, b, c FROM t WHERE x = 1"), 2);
        assert_eq!(depth("SELECT ((((1))))"), 5);
        let chain = format!("SELECT 'a'{}", " || 'a'".repeat(300));
        assert_eq!(depth(&chain), 301);
        let union = format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(300));
        assert_eq!(depth(&union), 301);
        // Commas and clauses separate siblings; a CASE does not break a chain.
        let wide = format!("SELECT {}", vec!["a || b"; 500].join(", "));
        assert_eq!(depth(&wide), 2);
        let cased = format!("SELECT 'a'{}", " || CASE WHEN true THEN 'b' END".repeat(100));
        assert!(depth(&cased) >= 100, "{}", depth(&cased));
        // Operators inside strings, comments and quoted names are not operators.
        assert_eq!(depth("SELECT '||||||' AS \"a+b+c\" -- + + + +\n FROM t"), 1);
    }

    #[test]
    fn the_stack_grows_with_the_limit() {
        assert!(stack_size(256) >= 32 << 20);
        assert!(stack_size(crate::config::MAX_NESTING_DEPTH) > stack_size(256));
    }
}
