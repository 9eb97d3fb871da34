//! Scale-out and failover: two aggregator processes behind one address list,
//! ten agents (the real agent stream client, fed synthetic batches) streaming
//! concurrently; one aggregator is killed with SIGKILL mid-stream. Every event
//! must arrive in Kafka, and after de-duplication by event id exactly once.

use std::collections::HashMap;
use std::sync::Arc;
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
const BATCHES: u64 = 60;
const EVENTS: usize = 50;

fn batch(agent: u64, sequence: u64, container: &Arc<Container>) -> PendingBatch {
    let events = (0..EVENTS)
        .map(|i| Event {
            time_unix_ns: 1_800_000_000_000_000_000 + i64::try_from(sequence * 1000).unwrap_or(0),
            kind: Kind::Exec,
            container: Some(container.clone()),
            pid: u32::try_from(i).unwrap_or(0) + 100,
            ppid: 1,
            uid: 0,
            gid: 0,
            path: Some(Bytes::from_static(b"/bin/true")),
            argv: vec![Bytes::from(format!("arg-{agent}-{sequence}-{i}"))],
            cwd: Some(Bytes::from_static(b"/")),
            parent_exe: None,
            exit_code: None,
            count: 1,
        })
        .collect();
    PendingBatch { sequence, events }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_an_aggregator_mid_stream_loses_nothing() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    // A small size limit exercises flush-by-size alongside flush-by-age.
    let mut a = AggregatorProcess::start(&broker.bootstrap(), "flush_max_age_ms = 20\nflush_max_bytes = 16384")?;
    let mut b = AggregatorProcess::start(&broker.bootstrap(), "flush_max_age_ms = 20\nflush_max_bytes = 16384")?;
    let endpoints = vec![a.endpoint(), b.endpoint()];
    let cancel = CancellationToken::new();

    let mut agents = Vec::new();
    for agent in 0..AGENTS {
        let container = Arc::new(Container {
            key: ContainerKey {
                runtime: v1::ContainerRuntime::Podman,
                id: format!("{agent:064x}"),
                pod_uid: None,
            },
            meta: ContainerMeta {
                image: Some(format!("localhost/sim-{}:1", agent % 3)),
                ..Default::default()
            },
            workload_id: format!("localhost/sim-{}", agent % 3),
            complete: true,
        });
        let (tx, rx) = mpsc::channel(4);
        // The feeder paces batches so the kill lands mid-stream.
        tokio::spawn(async move {
            for seq in 1..=BATCHES {
                if tx.send(batch(agent, seq, &container)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        let config = ClientConfig {
            endpoints: endpoints.clone(),
            hello: v1::Hello {
                agent_id: format!("sim-{agent}"),
                boot_id: agent,
                hostname: format!("sim-host-{agent}"),
                agent_version: "test".into(),
                sensor_mode: "simulated".into(),
            },
            token: None,
            tls: None,
            max_unacked: 64,
            max_strings: 100_000,
            drain_timeout: Duration::from_secs(60),
        };
        agents.push(tokio::spawn(client::run(config, rx, cancel.clone())));
    }

    // Mid-stream: about a third of the batches are out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill()?;
    let killed_at = Instant::now();

    for (i, agent) in agents.into_iter().enumerate() {
        let report = tokio::time::timeout(Duration::from_secs(120), agent)
            .await
            .with_context(|| format!("agent {i} did not finish"))??;
        ensure!(report.batches_unacked == 0, "agent {i} left {report:?}");
        ensure!(report.batches_acked == BATCHES, "agent {i} acked {report:?}");
    }
    let recovered = killed_at.elapsed();

    // Count every event id in Kafka.
    let consumer: StreamConsumer = KafkaConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("failover-check-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Process.topic()])?;
    let expected = usize::try_from(AGENTS * BATCHES)? * EVENTS;
    let mut seen: HashMap<(String, u64, u64, u32), u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut idle_since = Instant::now();
    // Read until every id is there and no more messages come for a second
    // (so duplicates written late are counted too).
    while seen.len() < expected || idle_since.elapsed() < Duration::from_secs(1) {
        ensure!(
            Instant::now() < deadline,
            "only {} of {expected} events in kafka",
            seen.len()
        );
        let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
            continue;
        };
        idle_since = Instant::now();
        let msg = msg?;
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        for row in process::read_rows(&batch)? {
            ensure!(
                key.as_deref() == Some(row.workload_id.as_str()),
                "key is not the workload id"
            );
            *seen
                .entry((row.agent_id, row.boot_id, row.batch_seq, row.event_index))
                .or_default() += 1;
        }
    }
    consumer.unsubscribe();
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    for agent in 0..AGENTS {
        for seq in 1..=BATCHES {
            for i in 0..EVENTS {
                let id = (format!("sim-{agent}"), agent, seq, u32::try_from(i)?);
                ensure!(seen.contains_key(&id), "event {id:?} lost");
            }
        }
    }
    assert_eq!(seen.len(), expected, "unexpected extra event ids");
    println!(
        "failover: {expected} events from {AGENTS} agents, lost 0, duplicates before de-duplication {duplicates}, all acknowledged {recovered:?} after the kill"
    );
    ensure!(b.stop()?.success(), "surviving aggregator did not stop cleanly");
    Ok(())
}
