//! The agent keeps to its CPU budget and says so: with a budget of 2 % of a
//! core and no per-container rate limit, a container running a long exec
//! storm drives the agent over budget; the agent raises its pressure level
//! (in `/metrics`), throttles that container, and reports what it did not
//! send as `rate_limited` gaps of that container; once the storm is over the
//! level falls back to 0.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{gaps, ipc};
use glasshouse_tests::{
    AgentProcess, Broker, PodmanService, TEST_IMAGE, build_storm, free_port, http_get, init_logging, metric_value,
    podman, require_test_image,
};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

async fn level(metrics: &str) -> u64 {
    let page = http_get(metrics, "/metrics").await.unwrap_or_default();
    metric_value(&page, "glasshouse_agent_budget_level").unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_its_cpu_budget_the_agent_throttles_and_reports_gaps() -> anyhow::Result<()> {
    init_logging();
    require_test_image()?;
    let storm = build_storm()?;
    let broker = Broker::start()?;
    let podman_api = PodmanService::start()?;
    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ingest = listener.local_addr()?;
    let aggregator_config: glasshouse_aggregator::Config = glasshouse_proto::service::parse_config(
        "test",
        &format!("brokers = \"{}\"\nflush_max_age_ms = 20", broker.bootstrap()),
    )?;
    let aggregator = tokio::spawn(glasshouse_aggregator::serve(
        aggregator_config,
        listener,
        cancel.clone(),
    ));
    // Its own process: the budget is the agent process's CPU.
    let mut agent = AgentProcess::start(
        &format!("http://{ingest}"),
        &format!(
            "agent_id = \"budget-agent\"\nsensor = \"bpf\"\ncontainer_rate_limit = 0\ncpu_budget_percent = 2\n\
             runtime_sockets = [\"{}\"]\nbatch_max_age_ms = 50",
            podman_api.socket.display()
        ),
    )?;
    let metrics = agent.metrics.to_string();
    // Starting (loading the eBPF programs, the start-up scan) may cost more
    // than 2 % for a moment: idle, the level is 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    while level(&metrics).await > 0 {
        ensure!(Instant::now() < deadline, "pressure while idle");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let noisy = format!("gh-budget-{}", free_port()?);
    let volume = format!("{}:/gh:ro", storm.display());
    let noisy_id = podman(&[
        "run",
        "-d",
        "--name",
        &noisy,
        "-v",
        &volume,
        TEST_IMAGE,
        "/gh/storm",
        "exec",
        "40000",
    ])?;
    // Under the storm the level rises.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak = 0;
    while peak < 2 {
        ensure!(
            Instant::now() < deadline,
            "pressure level stayed at {peak} during the storm"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(level(&metrics).await);
    }
    let status = podman(&["wait", &noisy])?;
    let _ = podman(&["rm", "-f", "-t", "0", &noisy]);
    ensure!(status.trim() == "0", "storm exited {status}");
    // After it, the level falls back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while level(&metrics).await > 0 {
        ensure!(
            Instant::now() < deadline,
            "pressure level still {} a minute after the storm",
            level(&metrics).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // What the throttle dropped arrived as gaps of the storm's container.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("budget-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Gaps.topic()])?;
    let mut dropped = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Ok(msg) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await else {
            if dropped > 0 {
                break;
            }
            continue;
        };
        let msg = msg?;
        for g in gaps::read_rows(&ipc::decode(msg.payload().context("empty payload")?)?)? {
            if g.attribution.container_id.as_deref() == Some(noisy_id.as_str()) {
                ensure!(g.reason == gaps::Reason::RateLimited, "{g:?}");
                dropped += g.dropped;
            }
        }
    }
    consumer.unsubscribe();
    drop(consumer);
    println!("pressure level peaked at {peak}; {dropped} events of the storm reported as rate-limited gaps");
    ensure!(dropped > 0, "no gap for the throttled container");

    let status = agent.stop()?;
    ensure!(status.success(), "agent exited {status}");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), aggregator).await???;
    let _ = std::fs::remove_dir_all(&storm);
    drop(podman_api);
    drop(broker);
    Ok(())
}
