//! `glasshouse`: the operator's command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use glasshouse_analyzer::baseline::Baseline;
use glasshouse_analyzer::sign::Key;
use glasshouse_analyzer::{cli, control};
use glasshouse_runtime::kafka::Kafka;
use glasshouse_runtime::service;

/// Glasshouse command line.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(long, global = true, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// A librdkafka property for every Kafka client of the command, e.g.
    /// `-X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512`:
    /// the analyzers' `[kafka]` table (repeatable).
    #[arg(short = 'X', long = "kafka-property", global = true, value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// The analyzers' control key (`control_key_file`): signs operator
    /// commands, checks baselines and alerts. Without it, the
    /// GLASSHOUSE_CONTROL_KEY_FILE environment variable.
    #[arg(long, global = true)]
    control_key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show, live, the containers, what they execute, their TCP connections and
    /// the sensitive files they write (from Kafka).
    Watch {
        /// Start with the oldest retained events instead of new ones.
        #[arg(long)]
        from_beginning: bool,
    },
    /// Alerts (OCSF Detection Findings on `glasshouse.alerts`).
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// The workloads' behaviour baselines (on `glasshouse.baselines`).
    Baselines {
        #[command(subcommand)]
        command: BaselinesCommand,
    },
    /// Live scores of the containers, from the analyzers' HTTP endpoints
    /// (`metrics_listen` in their config).
    Containers {
        /// Analyzer endpoints, `HOST:PORT`, comma separated.
        #[arg(long, default_value = "127.0.0.1:9466", value_delimiter = ',')]
        analyzer: Vec<String>,
        /// File holding the bearer token the endpoints require
        /// (`metrics_token_file` in their config).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Vulnerabilities of the running containers (`glasshouse.vulnerabilities`)
    /// and the advisories they are matched against.
    Vulns {
        #[command(subcommand)]
        command: VulnsCommand,
    },
    /// Check this host and the stack: kernel features (BPF, BTF, BPF LSM,
    /// cgroup v2, ring buffers), container runtimes, broker, aggregator,
    /// analyzer and query service, credentials, clock, disk space; prints
    /// each problem's fix and exits 1 when a check failed.
    Doctor {
        /// The aggregator's gRPC ingest address.
        #[arg(long, default_value = "127.0.0.1:50051")]
        aggregator: String,
        /// The analyzer's metrics_listen address (`/health`).
        #[arg(long, default_value = "127.0.0.1:9466")]
        analyzer: String,
        /// File holding the bearer token of the analyzer's endpoint (`metrics_token_file`).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The query service's PostgreSQL address.
        #[arg(long, default_value = "127.0.0.1:5433")]
        query: String,
        /// The agent's spool directory.
        #[arg(long, default_value = "/var/lib/glasshouse/spool")]
        spool_dir: PathBuf,
        /// The lake's local location (the local stack's by default).
        #[arg(long, default_value = "/var/lib/glasshouse/local/lake")]
        lake_dir: PathBuf,
        /// Container runtime sockets (Docker-compatible or CRI), comma separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "/run/podman/podman.sock,/var/run/docker.sock,/run/containerd/containerd.sock,/run/crio/crio.sock"
        )]
        runtime_socket: Vec<PathBuf>,
    },
    /// Run a read-only SQL query over the telemetry lake, through a
    /// query service's Flight SQL front door (glasshouse-query, `[sql] flight_listen`).
    Sql {
        /// The query, e.g. "SELECT workload_id, count(*) FROM process_events GROUP BY 1".
        query: String,
        /// Flight SQL endpoint of a query service (glasshouse-query).
        #[arg(long, default_value = "http://127.0.0.1:50052")]
        flight: String,
        /// File whose first line is the bearer token (`[sql] password_file`);
        /// without it, the file GLASSHOUSE_SQL_TOKEN_FILE names, else the
        /// GLASSHOUSE_SQL_TOKEN environment variable.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Output: an aligned table, CSV or JSON Lines.
        #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
        format: SqlFormat,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SqlFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
enum VulnsCommand {
    /// Findings per container, worst first, with the version that fixes each.
    List {
        /// Only this container (id, id prefix or name).
        #[arg(long)]
        container: Option<String>,
        /// Only containers of this image (reference or digest, or a prefix).
        #[arg(long)]
        image: Option<String>,
        /// Resolved findings too.
        #[arg(long)]
        all: bool,
        /// One JSON row per line (ASCII-only) instead of the report.
        #[arg(long)]
        json: bool,
    },
    /// Per image and digest: containers, open findings by severity, upgrades.
    Images {
        /// Only this image (reference or digest, or a prefix).
        #[arg(long)]
        image: Option<String>,
    },
    /// Import OSV advisories (a file, a directory of an extracted osv.dev
    /// dump, or an http:// URL) for every analyzer: they are written to the
    /// compacted `glasshouse.advisories`, and each analyzer re-evaluates
    /// every container it owns.
    Import { source: String },
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// Print alerts as they arrive.
    Tail {
        /// One OCSF JSON document per line (ASCII-only) instead of a summary line.
        #[arg(long)]
        json: bool,
        /// Start with the oldest retained alerts.
        #[arg(long)]
        from_beginning: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BaselinesCommand {
    /// One line per workload: state, version, size.
    List,
    /// What a workload's baseline holds and its latest changes.
    Show { workload: String },
    /// The baseline snapshot as JSON (to stdout, or a file).
    Export {
        workload: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Replace a workload's baseline with an exported snapshot.
    Import { file: PathBuf },
    /// Freeze a baseline: nothing is learned, everything new is scored.
    Lock { workload: String },
    /// Let a baseline learn again.
    Unlock { workload: String },
    /// Forget a baseline: the workload learns from nothing.
    Reset { workload: String },
}

fn fail(message: String) -> ! {
    tracing::error!("{message}");
    std::process::exit(1)
}

async fn read_baselines(kafka: &Kafka, key: Option<&Key>) -> std::collections::BTreeMap<String, Baseline> {
    let kafka = kafka.clone();
    let key = key.cloned();
    match tokio::task::spawn_blocking(move || control::read_baselines(&kafka, key.as_ref(), Duration::from_secs(15)))
        .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => fail(service::error_chain(&e)),
        Err(e) => fail(e.to_string()),
    }
}

async fn one_baseline(kafka: &Kafka, key: Option<&Key>, workload: &str) -> Baseline {
    read_baselines(kafka, key)
        .await
        .remove(workload)
        .unwrap_or_else(|| fail(format!("no baseline of workload {workload:?} on the baselines topic")))
}

async fn send_command(kafka: &Kafka, key: Option<&Key>, workload: &str, name: &str, baseline: Option<Baseline>) {
    let Some(key) = key else {
        fail("analyzers apply only signed commands: pass --control-key-file (or set GLASSHOUSE_CONTROL_KEY_FILE) with the analyzers' control_key_file".into());
    };
    match control::send(kafka, key, workload, name, baseline, Duration::from_secs(30)).await {
        Ok(b) => println!(
            "{name}: {} is now version {} ({})",
            glasshouse_analyzer::escape::terminal(workload),
            b.version,
            b.state.as_str()
        ),
        Err(e) => fail(service::error_chain(&e)),
    }
}

#[tokio::main]
async fn main() {
    service::init_logging();
    let cli = Cli::parse();
    let cancel = service::shutdown_on_signals();
    let properties = Kafka::parse_properties(&cli.kafka_properties).unwrap_or_else(|e| fail(e));
    let brokers = Kafka::new(cli.brokers, properties);
    let key_file = cli
        .control_key_file
        .or_else(|| std::env::var_os("GLASSHOUSE_CONTROL_KEY_FILE").map(PathBuf::from));
    if let Command::Doctor {
        aggregator,
        analyzer,
        token_file,
        query,
        spool_dir,
        lake_dir,
        runtime_socket,
    } = cli.command
    {
        let targets = glasshouse_analyzer::doctor::Targets {
            kafka: brokers,
            aggregator,
            analyzer,
            analyzer_token_file: token_file,
            query,
            control_key_file: key_file,
            sql_token_file: std::env::var_os("GLASSHOUSE_SQL_TOKEN_FILE").map(PathBuf::from),
            spool_dir,
            lake_dir,
            runtime_sockets: runtime_socket,
        };
        let checks = glasshouse_analyzer::doctor::run(&targets).await;
        print!("{}", glasshouse_analyzer::doctor::report(&checks));
        let failed = checks
            .iter()
            .any(|c| c.status == glasshouse_analyzer::doctor::Status::Fail);
        std::process::exit(i32::from(failed));
    }
    let key = key_file.map(|f| Key::from_file(&f).unwrap_or_else(|e| fail(e.to_string())));
    let key = key.as_ref();
    match cli.command {
        Command::Watch { from_beginning } => {
            service::exit_on_error(
                glasshouse_analyzer::watch(&brokers, from_beginning, std::io::stdout(), cancel).await,
            );
        }
        Command::Alerts {
            command: AlertsCommand::Tail { json, from_beginning },
        } => {
            let shown = cli::alerts_tail(&brokers, key, json, from_beginning, std::io::stdout(), cancel).await;
            service::exit_on_error(shown.map_err(std::io::Error::other));
        }
        Command::Baselines { command } => match command {
            BaselinesCommand::List => {
                let all = read_baselines(&brokers, key).await;
                print!("{}", cli::baselines_table(&all.values().collect::<Vec<_>>()));
            }
            BaselinesCommand::Show { workload } => {
                print!(
                    "{}",
                    cli::baseline_report(&one_baseline(&brokers, key, &workload).await)
                );
            }
            BaselinesCommand::Export { workload, output } => {
                let b = one_baseline(&brokers, key, &workload).await;
                let json = serde_json::to_string_pretty(&b).unwrap_or_else(|e| fail(e.to_string()));
                let json = cli::ascii_json(&json);
                match output {
                    Some(path) => std::fs::write(&path, json + "\n")
                        .unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display()))),
                    None => println!("{json}"),
                }
            }
            BaselinesCommand::Import { file } => {
                let text = std::fs::read(&file).unwrap_or_else(|e| fail(format!("reading {}: {e}", file.display())));
                let b: Baseline = serde_json::from_slice(&text)
                    .unwrap_or_else(|e| fail(format!("{}: not a baseline snapshot: {e}", file.display())));
                let workload = b.workload.clone();
                send_command(&brokers, key, &workload, "import", Some(b)).await;
            }
            BaselinesCommand::Lock { workload } => send_command(&brokers, key, &workload, "lock", None).await,
            BaselinesCommand::Unlock { workload } => send_command(&brokers, key, &workload, "unlock", None).await,
            BaselinesCommand::Reset { workload } => send_command(&brokers, key, &workload, "reset", None).await,
        },
        Command::Vulns { command } => {
            use glasshouse_analyzer::vulns::cli as vulns;
            let read = || {
                let brokers = brokers.clone();
                async move {
                    match tokio::task::spawn_blocking(move || vulns::read(&brokers)).await {
                        Ok(Ok(rows)) => rows,
                        Ok(Err(e)) => fail(e),
                        Err(e) => fail(e.to_string()),
                    }
                }
            };
            match command {
                VulnsCommand::List {
                    container,
                    image,
                    all,
                    json,
                } => {
                    let filter = vulns::Filter { container, image, all };
                    let rows = read().await;
                    if json {
                        for r in rows.iter().filter(|r| filter.keeps(r)) {
                            let line = serde_json::to_string(r).unwrap_or_else(|e| fail(e.to_string()));
                            println!("{}", cli::ascii_json(&line));
                        }
                    } else {
                        print!("{}", vulns::containers_report(&rows, &filter));
                    }
                }
                VulnsCommand::Images { image } => {
                    let filter = vulns::Filter {
                        image,
                        ..vulns::Filter::default()
                    };
                    print!("{}", vulns::images_report(&read().await, &filter));
                }
                VulnsCommand::Import { source } => {
                    let advisories = vulns::load(&source).await.unwrap_or_else(|e| fail(e));
                    vulns::publish(&brokers, &advisories).await.unwrap_or_else(|e| fail(e));
                    println!(
                        "imported {} advisories from {} to {}",
                        advisories.len(),
                        glasshouse_analyzer::escape::terminal(&source),
                        glasshouse_proto::record::TOPIC_ADVISORIES
                    );
                }
            }
        }
        Command::Containers { analyzer, token_file } => {
            let token = token_file
                .map(|f| cli::metrics_token(&f).unwrap_or_else(|e| fail(format!("token file {}: {e}", f.display()))));
            let mut rows = Vec::new();
            for addr in &analyzer {
                let body = cli::http_get(addr, "/containers", token.as_deref())
                    .await
                    .unwrap_or_else(|e| fail(format!("analyzer at {addr}: {}", service::error_chain(&e))));
                let mut more: Vec<cli::ContainerRow> = serde_json::from_str(&body)
                    .unwrap_or_else(|e| fail(format!("analyzer at {addr}: unexpected answer: {e}")));
                rows.append(&mut more);
            }
            rows.sort_by(|a, b| b.score.total_cmp(&a.score));
            print!("{}", cli::containers_table(&rows));
        }
        Command::Doctor { .. } => unreachable!("handled before the control key is read"),
        Command::Sql {
            query,
            flight,
            token_file,
            format,
        } => {
            let token_file = token_file.or_else(|| std::env::var_os("GLASSHOUSE_SQL_TOKEN_FILE").map(PathBuf::from));
            let token = match token_file {
                Some(path) => std::fs::read_to_string(&path)
                    .map(|t| t.lines().next().unwrap_or("").trim().to_owned())
                    .unwrap_or_else(|e| fail(format!("reading {}: {e}", path.display()))),
                None => std::env::var("GLASSHOUSE_SQL_TOKEN").unwrap_or_else(|_| {
                    fail("no token: --token-file FILE, GLASSHOUSE_SQL_TOKEN_FILE or GLASSHOUSE_SQL_TOKEN".into())
                }),
            };
            let style = match format {
                SqlFormat::Table => glasshouse_lake::output::Style::Table,
                SqlFormat::Csv => glasshouse_lake::output::Style::Csv,
                SqlFormat::Json => glasshouse_lake::output::Style::Json,
            };
            match glasshouse_analyzer::sql::query(&flight, &token, &query, style).await {
                Ok(text) => print!("{text}"),
                Err(e) => fail(service::error_chain(&e)),
            }
        }
    }
}
