//! `glasshouse`: the operator's command line.

use clap::{Parser, Subcommand};
use glasshouse_proto::service;

/// Glasshouse command line.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show, live, the containers, what they execute, their TCP connections and
    /// the sensitive files they write (from Kafka).
    Watch {
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Start with the oldest retained events instead of new ones.
        #[arg(long)]
        from_beginning: bool,
    },
}

#[tokio::main]
async fn main() {
    service::init_logging();
    let cli = Cli::parse();
    let cancel = service::shutdown_on_signals();
    match cli.command {
        Command::Watch {
            brokers,
            from_beginning,
        } => {
            service::exit_on_error(
                glasshouse_analyzer::watch(&brokers, from_beginning, std::io::stdout(), cancel).await,
            );
        }
    }
}
