//! The query engine behind every front door: DataFusion over the lake's
//! tables, read-only, with a query timeout and a memory limit, on a runtime
//! of its own so queries never stall the analyzer's I/O.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use crate::catalog::CONTAINERS_VIEW;
use crate::lake::Lake;

/// Limits every query runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// Threads of the query runtime.
    pub threads: usize,
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
        // DataFusion's defaults otherwise: strings as Utf8View, as the
        // lake's schemas, tail and Parquet files have them (`catalog`).
        let config = SessionConfig::new()
            .with_target_partitions(limits.threads.max(1))
            .with_information_schema(true);
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime_env);
        let (url, store) = lake.store();
        let url = url::Url::parse(url).map_err(|e| DataFusionError::External(Box::new(e)))?;
        ctx.register_object_store(&url, store);
        for t in lake.tables() {
            if let Some(p) = lake.provider(t.def.name) {
                ctx.register_table(t.def.name, p)?;
            }
        }
        ctx.sql(&format!("CREATE VIEW containers AS {CONTAINERS_VIEW}")).await?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.threads.max(1))
            .thread_name("glasshouse-sql")
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
        let work = async move {
            let state = ctx.state();
            let plan = state.create_logical_plan(&text).await.map_err(|e| invalid(&e))?;
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

    /// Runs a planned query to its end.
    pub async fn execute(&self, planned: &Planned) -> Result<Vec<RecordBatch>, QueryError> {
        let ctx = self.ctx.clone();
        let plan = planned.plan.clone();
        let limit_mib = self.limits.memory_bytes / (1024 * 1024);
        let work = async move {
            let df = ctx.execute_logical_plan(plan).await.map_err(|e| invalid(&e))?;
            df.collect().await.map_err(|e| match e.find_root() {
                DataFusionError::ResourcesExhausted(detail) => QueryError::Memory {
                    limit_mib,
                    detail: detail.clone(),
                },
                other => QueryError::Execution(message(other)),
            })
        };
        self.run(work).await
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

fn invalid(e: &DataFusionError) -> QueryError {
    match e.find_root() {
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
