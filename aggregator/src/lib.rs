//! The Glasshouse aggregator: the fleet's stateless front door. Agents stream
//! batches over gRPC; rows become Arrow batches on Kafka (`glasshouse.process`,
//! `glasshouse.network`, `glasshouse.file`, `glasshouse.syscalls`,
//! `glasshouse.resources`, `glasshouse.gaps`), keyed by workload id; each batch is acknowledged
//! to its agent only after Kafka acknowledged all its rows, of every type.
//!
//! ```text
//!  agents ──gRPC Batch──▶ service (one task per stream: hello, resolve, submit)
//!         ◀──────Ack────┘        │ bounded                      ▲ completion
//!                                ▼                              │
//!                         sink: Arrow builders per record ──▶ Kafka (idempotent,
//!                               type and workload, flush by     compressed producer)
//!                               rows/bytes/age, IPC
//! ```
//!
//! # Layout
//! - [`auth`]: per-agent bearer tokens.
//! - [`config`]: the TOML config.
//! - [`internal_events`]: our own metrics, one function per notable event.
//! - [`decode`]: wire batch → rows (events, syscall counts, resource samples,
//!   gaps, inventories), with the per-stream string/container tables; a
//!   cursor does the time chains, budget and attribution once, one function
//!   per event family the rest.
//! - [`sink`]: Arrow batching and the Kafka producer.
//! - [`service`]: the `Ingest` gRPC service and error classification.

pub mod auth;
pub mod config;
pub mod decode;
pub mod internal_events;
pub mod service;
pub mod sink;

use std::net::SocketAddr;

use glasshouse_proto::v1::ingest_server::IngestServer;
use glasshouse_runtime::kafka::{TopicError, ensure_topics_unless_cancelled};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::decode::Limits;
use crate::service::IngestService;
use crate::sink::SinkConfig;

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error("kafka producer for {brokers}: {source}")]
    Producer {
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Tokens(#[from] auth::TokensError),
    #[error("{0}")]
    Metrics(#[source] std::io::Error),
    #[error("tls file {path}: {source}")]
    TlsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("grpc server: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// The Kafka sink every stream shares ended while serving: nothing can
    /// be acknowledged any more, so the process exits for its supervisor.
    #[error("kafka sink stopped while serving ({0}); exiting so that the supervisor restarts the aggregator")]
    SinkDied(String),
}

/// Binds `config.listen` and runs until `cancel`.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), AggregatorError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| AggregatorError::Bind {
            addr: config.listen,
            source,
        })?;
    serve(config, listener, cancel).await
}

/// Runs on an already bound listener (tests bind `127.0.0.1:0`) until `cancel`.
/// Shutdown order: stop accepting, let streams acknowledge what is in flight,
/// flush the sink, flush the producer.
pub async fn serve(config: Config, listener: TcpListener, cancel: CancellationToken) -> Result<(), AggregatorError> {
    let tokens = match &config.tokens_file {
        Some(path) => {
            let tokens = auth::Tokens::load(path)?;
            tracing::info!(agents = tokens.len(), "agent authentication by token");
            Some(tokens)
        }
        None => None,
    };
    let mtls = config.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
    if tokens.is_none() && !mtls {
        tracing::warn!("agent authentication disabled: no tokens_file or tls.client_ca_file, any client may stream");
    }
    if !ensure_topics_unless_cancelled(&config.brokers, &config.kafka, config.topics, &cancel).await? {
        return Ok(());
    }
    let producer: FutureProducer = producer_config(&config)
        .create()
        .map_err(|source| AggregatorError::Producer {
            brokers: config.brokers.clone(),
            source,
        })?;
    let (sink, sink_task) = sink::spawn(
        SinkConfig {
            producer_id: config.producer_id.clone(),
            flush_max_rows: config.flush_max_rows,
            flush_max_bytes: config.flush_max_bytes,
            flush_max_age: config.flush_max_age(),
            max_message_bytes: config.max_message_bytes,
        },
        producer.clone(),
    );
    let service = IngestService {
        aggregator_id: config.producer_id.clone(),
        limits: limits_of(&config),
        sink,
        shutdown: cancel.clone(),
        tokens,
        require_authentication: mtls,
        revoked: config.revoked_agents.clone(),
    };
    let metrics = spawn_metrics(&config, &cancel).await?;
    // gRPC health (grpc.health.v1): SERVING until shutdown starts.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IngestServer<IngestService>>().await;
    let health_reporter = health.clone();
    let health_on_shutdown = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            health.set_not_serving::<IngestServer<IngestService>>().await;
        })
    };
    let addr = listener.local_addr().ok();
    tracing::info!(listen = ?addr, brokers = %config.brokers, "aggregator serving");
    glasshouse_runtime::listener::log_descriptor_limit();
    let limits = glasshouse_runtime::listener::Limits {
        max_connections: config.max_connections,
        idle: config.idle_timeout(),
    };
    // Pings every third of the idle deadline keep quiet, healthy streams
    // alive (their acknowledgements are reads) and find dead peers.
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.idle / 3))
        .http2_keepalive_timeout(Some(limits.idle / 3));
    if let Some(tls) = &config.tls {
        server = server.tls_config(server_tls(tls)?).map_err(AggregatorError::Serve)?;
    }
    let server_stop = CancellationToken::new();
    let sink_died = watch_sink(sink_task, cancel.clone(), server_stop.clone(), health_reporter.clone());
    let serving = server
        .add_service(health_service)
        .add_service(IngestServer::new(service).max_decoding_message_size(config.max_message_bytes))
        .serve_with_incoming_shutdown(
            glasshouse_runtime::listener::accept(listener, limits, "ingest"),
            async {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = server_stop.cancelled() => {}
                }
            },
        );
    let (served, (died, draining)) = tokio::join!(serving, sink_died);
    // The server (and with it every SinkHandle) is gone: the sink drains.
    if let Some(sink_task) = draining
        && tokio::time::timeout(config.shutdown_flush(), sink_task).await.is_err()
    {
        tracing::error!("kafka sink did not drain in time; unacknowledged batches will be re-sent by agents");
    }
    let flushed = tokio::task::spawn_blocking(move || producer.flush(config.shutdown_flush())).await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::warn!("kafka producer flush incomplete at shutdown");
    }
    health_on_shutdown.abort();
    if let Some(m) = metrics {
        // The endpoint stops with `cancel`; a dead sink is no shutdown
        // signal, so then it is stopped here (or the process would never
        // exit: found by `ingest_refusals::an_unbuildable_batch_…`).
        if died.is_some() {
            m.abort();
        }
        // Ignored result: stopped or aborted.
        let _ = m.await;
    }
    tracing::info!("aggregator stopped");
    if let Some(why) = died {
        return Err(AggregatorError::SinkDied(why));
    }
    served.map_err(AggregatorError::Serve)
}

/// The ingest limits of `config`.
fn limits_of(config: &Config) -> Limits {
    Limits {
        max_batch_events: config.max_batch_events,
        max_strings: config.max_strings,
        max_batch_bytes: config.max_batch_bytes,
        max_string_bytes: config.max_string_bytes,
        time_window: Some(config.time_window()),
    }
}

/// The `/metrics` endpoint, when `metrics_listen` is set: it runs until `cancel`.
async fn spawn_metrics(
    config: &Config,
    cancel: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, AggregatorError> {
    let Some(addr) = config.metrics_listen else {
        return Ok(None);
    };
    let listener = glasshouse_runtime::endpoint::bind(addr)
        .await
        .map_err(AggregatorError::Metrics)?;
    let access = glasshouse_runtime::endpoint::Access::from_file(config.metrics_token_file.as_deref())
        .map_err(AggregatorError::Metrics)?;
    Ok(Some(tokio::spawn(glasshouse_runtime::endpoint::serve(
        listener,
        glasshouse_runtime::endpoint::renderer(&internal_events::ALL),
        access,
        cancel.clone(),
    ))))
}

/// Watches the sink while serving: if it ends before shutdown (it should
/// not: a failure building one batch refuses that batch), health says
/// NOT_SERVING at once and `server_stop` stops the server, so `serve`
/// returns an error and the process exits non-zero. Resolves to why it died
/// (`None`: it did not) and, once shutdown started, the sink task still to
/// drain.
async fn watch_sink(
    mut sink_task: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
    server_stop: CancellationToken,
    health: tonic_health::server::HealthReporter,
) -> (Option<String>, Option<tokio::task::JoinHandle<()>>) {
    // Shutdown first: once it has started, the sink ending is the orderly
    // drain, not a death.
    let ended = tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        ended = &mut sink_task => Some(ended),
    };
    let sink_ended = ended.is_some();
    let died = match ended {
        Some(_) if cancel.is_cancelled() => None,
        Some(Ok(())) => Some("it returned".to_owned()),
        Some(Err(e)) => Some(e.to_string()),
        None => None,
    };
    if let Some(why) = &died {
        tracing::error!(error = %why, "kafka sink stopped while serving");
        health.set_not_serving::<IngestServer<IngestService>>().await;
        server_stop.cancel();
    }
    (died, (!sink_ended).then_some(sink_task))
}

fn server_tls(tls: &config::TlsConfig) -> Result<tonic::transport::ServerTlsConfig, AggregatorError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| AggregatorError::TlsFile {
            path: p.display().to_string(),
            source,
        })
    };
    glasshouse_runtime::tls::install_provider();
    let identity = tonic::transport::Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
    let mut server = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_file {
        server = server
            .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?))
            .client_auth_optional(!tls.require_client_cert);
    }
    Ok(server)
}

pub(crate) fn producer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &config.compression)
        .set("linger.ms", "5")
        .set("message.max.bytes", config.max_message_bytes.to_string())
        // Bounded producer queue: when Kafka is slow, the sink waits.
        .set("queue.buffering.max.kbytes", "65536")
        .set("queue.buffering.max.messages", "100000");
    for (k, v) in &config.kafka {
        c.set(k, v);
    }
    c
}
