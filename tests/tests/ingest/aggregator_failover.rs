//! Scale-out and failover: two aggregator processes behind one address list,
//! ten agents (the real agent stream client, fed synthetic batches) streaming
//! concurrently; one aggregator is killed with SIGKILL mid-stream. Every event
//! must arrive in Kafka, and after de-duplication by event id exactly once.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_agent::client;
use glasshouse_tests::{AggregatorProcess, Broker, init_logging, simulated};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const AGENTS: u64 = 10;
const BATCHES: u64 = 60;
const EVENTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_an_aggregator_mid_stream_loses_nothing() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    // A small size limit exercises flush-by-size alongside flush-by-age.
    let settings = "flush_max_age_ms = 20\nflush_max_bytes = 16384";
    let mut a = AggregatorProcess::start(&broker.bootstrap(), settings)?;
    let mut b = AggregatorProcess::start(&broker.bootstrap(), settings)?;
    let endpoints = vec![a.endpoint(), b.endpoint()];
    let cancel = CancellationToken::new();

    let mut agents = Vec::new();
    for agent in 0..AGENTS {
        let container = simulated::container(agent, &format!("localhost/sim-{}", agent % 3));
        let (tx, rx) = mpsc::channel(4);
        // The feeder paces batches so the kill lands mid-stream.
        tokio::spawn(async move {
            for seq in 1..=BATCHES {
                if tx.send(simulated::batch(&container, seq, EVENTS)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        let config = simulated::agent(&format!("sim-{agent}"), agent, endpoints.clone(), 64);
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

    let expected = usize::try_from(AGENTS * BATCHES)? * EVENTS;
    let seen = simulated::collect_ids(&broker.bootstrap(), expected, Duration::from_secs(60)).await?;
    for agent in 0..AGENTS {
        for seq in 1..=BATCHES {
            for i in 0..EVENTS {
                let id = (format!("sim-{agent}"), agent, seq, u32::try_from(i)?);
                ensure!(seen.contains_key(&id), "event {id:?} lost");
            }
        }
    }
    assert_eq!(seen.len(), expected, "unexpected extra event ids");
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    println!(
        "failover: {expected} events from {AGENTS} agents, lost 0, duplicates before de-duplication {duplicates}, \
         all acknowledged {recovered:?} after the kill"
    );
    ensure!(b.stop()?.success(), "surviving aggregator did not stop cleanly");
    Ok(())
}
