//! `glasshouse-query [--config FILE]`: argument parsing only; see
//! `glasshouse_lake::query`.

use std::path::PathBuf;

use clap::Parser;
use glasshouse_runtime::service;

/// Glasshouse query service: SQL (PostgreSQL wire, Arrow Flight SQL) over
/// the Iceberg lake, stateless, any number of replicas.
#[derive(Debug, Parser)]
#[command(name = "glasshouse-query", version)]
struct Args {
    /// TOML config file with `[lake]` and `[sql]`.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    service::init_logging();
    let args = Args::parse();
    let config: glasshouse_lake::query::QueryConfig = service::load_config_or_exit(args.config.as_deref());
    let cancel = service::shutdown_on_signals();
    service::exit_on_error(glasshouse_lake::query::run(config, cancel).await);
}
