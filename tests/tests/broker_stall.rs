//! A stalled broker (SIGSTOP, connections open, no answers): agents are slowed
//! through the stream (their unacknowledged window fills and they stop
//! sending), the aggregator's memory stays bounded, and when the broker
//! returns every event arrives.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use glasshouse_agent::attribute::ContainerKey;
use glasshouse_agent::client::{self, ClientConfig};
use glasshouse_agent::pipeline::{Container, Event, PendingBatch};
use glasshouse_agent::runtime::ContainerMeta;
use glasshouse_proto::process::{self, Kind};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{ipc, v1};
use glasshouse_tests::{AggregatorProcess, Broker, free_port, init_logging};
use rdkafka::ClientConfig as KafkaConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const AGENTS: u64 = 10;
const BATCHES: u64 = 200;
const EVENTS: usize = 50;
const MAX_UNACKED: usize = 16;
const STALL: Duration = Duration::from_secs(10);
/// Generous bound for the aggregator's peak RSS: its queues are bounded in
/// rows and bytes, so this holds however long the broker stalls.
const MAX_PEAK_RSS: u64 = 512 * 1024 * 1024;

fn batch(agent: u64, sequence: u64, container: &Arc<Container>) -> PendingBatch {
    let events = (0..EVENTS)
        .map(|i| Event {
            time_unix_ns: 1_800_000_000_000_000_000 + i64::try_from(sequence).unwrap_or(0),
            kind: Kind::Exec,
            container: Some(container.clone()),
            pid: u32::try_from(i).unwrap_or(0) + 100,
            ppid: 1,
            uid: 0,
            gid: 0,
            path: Some(Bytes::from_static(b"/usr/bin/worker")),
            argv: vec![Bytes::from(format!("job-{agent}-{sequence}-{i}"))],
            cwd: Some(Bytes::from_static(b"/srv")),
            parent_exe: None,
            exit_code: None,
            count: 1,
        })
        .collect();
    PendingBatch { sequence, events }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_broker_slows_agents_and_loses_nothing() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    let aggregator = AggregatorProcess::start(&broker.bootstrap(), "flush_max_age_ms = 20")?;
    let cancel = CancellationToken::new();
    let sent = Arc::new(AtomicU64::new(0));

    let mut agents = Vec::new();
    for agent in 0..AGENTS {
        let container = Arc::new(Container {
            key: ContainerKey {
                runtime: v1::ContainerRuntime::Podman,
                id: format!("{:064x}", agent + 1000),
                pod_uid: None,
            },
            meta: ContainerMeta::default(),
            workload_id: format!("localhost/worker-{agent}"),
            complete: true,
        });
        let (tx, rx) = mpsc::channel(1);
        let sent = sent.clone();
        tokio::spawn(async move {
            for seq in 1..=BATCHES {
                if tx.send(batch(agent, seq, &container)).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let config = ClientConfig {
            endpoints: vec![aggregator.endpoint()],
            hello: v1::Hello {
                agent_id: format!("stall-{agent}"),
                boot_id: agent,
                hostname: "stall-host".into(),
                agent_version: "test".into(),
                sensor_mode: "simulated".into(),
            },
            token: None,
            tls: None,
            max_unacked: MAX_UNACKED,
            max_strings: 100_000,
            drain_timeout: Duration::from_secs(120),
        };
        agents.push(tokio::spawn(client::run(config, rx, cancel.clone())));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.pause();
    // Let in-flight work settle into the stall, then watch the agents stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_stall = sent.load(Ordering::Relaxed);
    tokio::time::sleep(STALL - Duration::from_secs(2)).await;
    let during_stall = sent.load(Ordering::Relaxed) - at_stall;
    broker.resume();
    let resumed = Instant::now();
    // Each agent can hold at most its unacked window plus one queued batch.
    ensure!(
        during_stall <= AGENTS,
        "agents kept sending while the broker was stalled ({during_stall} batches in {STALL:?})"
    );

    for (i, agent) in agents.into_iter().enumerate() {
        let report = tokio::time::timeout(Duration::from_secs(180), agent)
            .await
            .with_context(|| format!("agent {i} did not finish"))??;
        ensure!(
            report.batches_acked == BATCHES && report.batches_unacked == 0,
            "agent {i}: {report:?}"
        );
    }
    let drained = resumed.elapsed();
    let peak = aggregator.peak_rss()?;

    let consumer: StreamConsumer = KafkaConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("stall-check-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Process.topic()])?;
    let expected = usize::try_from(AGENTS * BATCHES)? * EVENTS;
    let mut ids = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.len() < expected {
        ensure!(
            Instant::now() < deadline,
            "only {} of {expected} events in kafka",
            ids.len()
        );
        let Ok(msg) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await else {
            continue;
        };
        let msg = msg?;
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        for row in process::read_rows(&batch)? {
            ids.insert((row.agent_id, row.batch_seq, row.event_index));
        }
    }
    consumer.unsubscribe();
    println!(
        "broker stall: {expected} events, lost 0; batches sent during the stall {during_stall}; \
         drained {drained:?} after resume; aggregator peak RSS {} MiB",
        peak / (1024 * 1024)
    );
    ensure!(peak < MAX_PEAK_RSS, "aggregator peak RSS {peak} bytes");
    Ok(())
}
