//! Starts what `[lake]` asks of the analyzer (the lake writer), and the
//! front doors `[sql]` asks of the query service (`crate::query`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{LakeConfig, LakeFormat, SqlConfig};
use crate::connection::Budget;
use crate::engine::Engine;
use crate::iceberg_lake::{self, Flush, IcebergLake};
use crate::lake::Lake;
use crate::{flight, pg, writer};

/// Why the lake or SQL could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("config: {0}")]
    Config(String),
    #[error("lake")]
    Lake(#[from] crate::lake::LakeError),
    #[error("iceberg lake")]
    Iceberg(#[from] iceberg_lake::OpenError),
    #[error("sql engine")]
    Engine(#[from] crate::engine::EngineError),
    #[error("sql: cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lake writer")]
    Writer(#[from] writer::WriterError),
    #[error("flight sql server")]
    Flight(#[from] tonic::transport::Error),
}

/// Everything the lake writer needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lake: LakeConfig,
    pub brokers: String,
    /// Extra librdkafka properties.
    pub kafka: BTreeMap<String, String>,
    /// Names the Parquet files this instance writes, and (with `-lake`) its
    /// static membership in the Parquet writer's consumer group.
    pub instance_id: String,
    /// The analyzer's `session_timeout_ms`, for the writer's group too.
    pub session_timeout_ms: u32,
}

/// Runs the lake writer until `cancel` (or until it fails). SQL is not
/// served here: that is the query service's (`crate::query`).
pub async fn run(settings: Settings, cancel: CancellationToken) -> Result<(), ServiceError> {
    settings.lake.validate().map_err(ServiceError::Config)?;
    if !settings.lake.enabled {
        return Ok(());
    }
    let ws = writer::WriterSettings {
        brokers: settings.brokers.clone(),
        group_id: settings.lake.group_id.clone(),
        // Static membership for the Parquet writer (its files are named by
        // instance). The Iceberg writer's state is the table's marks, so it
        // joins as a dynamic member: with tansu, a static member SIGKILLed
        // and restarted under the same id stalled the group's assignment
        // for over a minute in some runs (sql_replicas.rs).
        instance_id: (settings.lake.format == LakeFormat::Parquet).then(|| format!("{}-lake", settings.instance_id)),
        session_timeout_ms: settings.session_timeout_ms,
        extra: settings.kafka.clone(),
        compact_interval: (settings.lake.compact_interval_secs > 0)
            .then(|| Duration::from_secs(settings.lake.compact_interval_secs)),
    };
    match settings.lake.format {
        LakeFormat::Parquet => {
            let lake = Arc::new(Lake::open(&settings.lake, &settings.instance_id, Duration::from_secs(120)).await?);
            info!(location = %settings.lake.location, "lake open (parquet, deprecated: glasshouse-query serves iceberg only)");
            let result = writer::run(lake.clone(), ws, cancel).await.map(|_| ());
            lake.delete_doomed(false).await;
            Ok(result?)
        }
        LakeFormat::Iceberg => {
            let lake = Arc::new(IcebergLake::open(&settings.lake).await?);
            info!(location = %settings.lake.location, "lake open (iceberg)");
            Ok(iceberg_lake::run(lake, ws, Flush::of(&settings.lake), cancel)
                .await
                .map(|_| ())?)
        }
    }
}

/// Waits for every task; the first to fail (or to end unasked) cancels
/// the rest, and its error is returned.
pub(crate) async fn join(
    mut tasks: JoinSet<Result<(), ServiceError>>,
    cancel: &CancellationToken,
) -> Result<(), ServiceError> {
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let result = done.unwrap_or_else(|e| Err(ServiceError::Config(format!("task ended: {e}"))));
        if let Err(e) = result {
            error!(error = %e, "lake/sql stopped");
            cancel.cancel();
            first_error.get_or_insert(e);
        } else if !cancel.is_cancelled() {
            // A part ended without being asked to: stop the rest too.
            cancel.cancel();
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Starts the front doors `sql` asks for on `engine`, as tasks of `tasks`.
pub(crate) async fn serve_sql(
    engine: Engine,
    sql: &SqlConfig,
    tasks: &mut JoinSet<Result<(), ServiceError>>,
    cancel: &CancellationToken,
) -> Result<(), ServiceError> {
    let secret = sql.read_secret().map_err(ServiceError::Config)?;
    let budget = Budget::from_config(sql);
    if let Some(addr) = sql.pg_listen {
        let listener = pg::bind(addr)
            .await
            .map_err(|source| ServiceError::Bind { addr, source })?;
        let creds = pg::Credentials {
            user: sql.user.clone(),
            password: secret.clone(),
        };
        let (engine, cancel) = (engine.clone(), cancel.clone());
        tasks.spawn(async move {
            pg::serve(listener, engine, creds, budget, cancel).await;
            Ok(())
        });
    }
    if let Some(addr) = sql.flight_listen {
        let listener = flight::bind(addr)
            .await
            .map_err(|source| ServiceError::Bind { addr, source })?;
        let cancel = cancel.clone();
        tasks.spawn(async move {
            flight::serve(listener, engine, secret, budget, cancel)
                .await
                .map_err(ServiceError::from)
        });
    }
    Ok(())
}
