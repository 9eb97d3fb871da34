//! The query service (`glasshouse-query`): SQL over the Iceberg lake in a
//! process of its own, so no query competes with detection. Stateless: it
//! reads the catalog at every query's scan, so any number of replicas
//! behind one address answer alike, and one started or restarted at any
//! time serves at once. It writes nothing but the lake's missing tables
//! (created empty, as the writers would).
//!
//! Its config is the analyzer's `[lake]` (the catalog and storage; `format`
//! must stay `iceberg`) and `[sql]` (front doors, password, limits), which
//! the analyzer itself no longer takes.

use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{LakeConfig, LakeFormat, SqlConfig};
use crate::engine::Limits;
use crate::iceberg_lake::{self, IcebergLake};
use crate::service::{ServiceError, join, serve_sql};

/// `glasshouse-query`'s config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// `/metrics` (the front doors' connection counters,
    /// `glasshouse_sql_*`) and `/health` over HTTP (default none: off).
    /// Off loopback it needs `metrics_token_file`.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// File whose first line is the bearer token the endpoint requires.
    #[serde(default)]
    pub metrics_token_file: Option<std::path::PathBuf>,
    /// `[lake]`: where the tables are (`format = "iceberg"`; `enabled` is
    /// not read).
    pub lake: LakeConfig,
    /// `[sql]`: the front doors, their password and limits.
    pub sql: SqlConfig,
}

impl glasshouse_runtime::service::Validate for QueryConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.lake.format != LakeFormat::Iceberg {
            return Err((
                "lake.format",
                "the query service reads Iceberg tables (`format = \"iceberg\"`, the default); the deprecated parquet layout is not served (docs/lake.md, upgrade)".into(),
            ));
        }
        self.lake.validate().map_err(|e| ("lake", e))?;
        let lake = LakeConfig {
            enabled: true,
            ..self.lake.clone()
        };
        self.sql.validate(&lake).map_err(|e| ("sql", e))?;
        if !self.sql.enabled() {
            return Err(("sql", "no front door: set `pg_listen` or `flight_listen`".into()));
        }
        glasshouse_runtime::endpoint::require_token_off_loopback(
            self.metrics_listen,
            self.metrics_token_file.as_deref(),
        )
    }
}

/// Serves SQL over the lake until `cancel`.
pub async fn run(config: QueryConfig, cancel: CancellationToken) -> Result<(), ServiceError> {
    let lake = IcebergLake::open(&config.lake).await?;
    let limits = Limits {
        timeout: std::time::Duration::from_secs(config.sql.query_timeout_secs),
        memory_bytes: (config.sql.memory_limit_mib * 1024 * 1024) as usize,
        threads: config.sql.threads,
        max_depth: config.sql.max_nesting_depth,
    };
    let engine = iceberg_lake::engine(&lake, &config.lake, limits).await?;
    info!(
        location = %config.lake.location,
        pg = ?config.sql.pg_listen,
        flight = ?config.sql.flight_listen,
        "query service serving the lake"
    );
    let cancel = cancel.child_token();
    let mut tasks = JoinSet::new();
    serve_sql(engine, &config.sql, &mut tasks, &cancel).await?;
    if let Some(addr) = config.metrics_listen {
        let listener = glasshouse_runtime::endpoint::bind(addr)
            .await
            .map_err(|source| ServiceError::Bind { addr, source })?;
        let access = glasshouse_runtime::endpoint::Access::from_file(config.metrics_token_file.as_deref())
            .map_err(|e| ServiceError::Config(format!("`metrics_token_file`: {e}")))?;
        let metrics = glasshouse_runtime::endpoint::renderer(&crate::connection::METRICS);
        let routes: glasshouse_runtime::endpoint::Routes = std::sync::Arc::new(move |path: &str| match path {
            "/metrics" => Some((glasshouse_runtime::endpoint::TEXT_FORMAT, metrics())),
            "/health" => Some(("text/plain; charset=utf-8", "ok\n".to_owned())),
            _ => None,
        });
        let cancel = cancel.clone();
        tasks.spawn(async move {
            glasshouse_runtime::endpoint::serve_routes(listener, routes, access, cancel).await;
            Ok(())
        });
    }
    join(tasks, &cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use glasshouse_runtime::service::parse_config;

    #[test]
    fn shipped_local_config_parses() {
        let c: QueryConfig = parse_config(
            "deploy/local/query.toml",
            include_str!("../../../deploy/local/query.toml"),
        )
        .expect("valid");
        assert_eq!(c.lake.location, "lake");
        assert_eq!(c.sql.pg_listen.map(|a| a.port()), Some(5433));
    }

    #[test]
    fn the_query_service_refuses_a_parquet_lake_and_a_config_without_front_door() {
        let err = parse_config::<QueryConfig>(
            "q.toml",
            "[lake]\nformat = \"parquet\"\n[sql]\npg_listen = \"127.0.0.1:5433\"\npassword_file = \"p\"\n",
        )
        .expect_err("parquet");
        assert!(err.to_string().contains("lake.format"), "{err}");
        let err = parse_config::<QueryConfig>("q.toml", "[lake]\nformat = \"iceberg\"\n[sql]\n").expect_err("no door");
        assert!(err.to_string().contains("no front door"), "{err}");
        let ok = parse_config::<QueryConfig>(
            "q.toml",
            "[lake]\nlocation = \"/l\"\n[sql]\npg_listen = \"127.0.0.1:5433\"\npassword_file = \"p\"\n",
        )
        .expect("valid");
        assert_eq!(ok.lake.catalog.namespace, "glasshouse");
    }
}
