//! A stalled broker (SIGSTOP, connections open, no answers): agents are slowed
//! through the stream (their unacknowledged window fills and they stop
//! sending), the aggregator's memory stays bounded, and when the broker
//! returns every event arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_agent::client;
use glasshouse_tests::{AggregatorProcess, Broker, init_logging, simulated};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_broker_slows_agents_and_loses_nothing() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    let aggregator = AggregatorProcess::start(&broker.bootstrap(), "flush_max_age_ms = 20")?;
    let cancel = CancellationToken::new();
    let sent = Arc::new(AtomicU64::new(0));

    let mut agents = Vec::new();
    for agent in 0..AGENTS {
        let container = simulated::container(agent + 1000, &format!("localhost/worker-{agent}"));
        let (tx, rx) = mpsc::channel(1);
        let sent = sent.clone();
        tokio::spawn(async move {
            for seq in 1..=BATCHES {
                if tx.send(simulated::batch(&container, seq, EVENTS)).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let config = simulated::agent(
            &format!("stall-{agent}"),
            agent,
            vec![aggregator.endpoint()],
            MAX_UNACKED,
        );
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

    let expected = usize::try_from(AGENTS * BATCHES)? * EVENTS;
    let seen = simulated::collect_ids(&broker.bootstrap(), expected, Duration::from_secs(60)).await?;
    ensure!(
        seen.len() == expected,
        "{} event ids in kafka, expected {expected}",
        seen.len()
    );
    println!(
        "broker stall: {expected} events, lost 0; batches sent during the stall {during_stall}; \
         drained {drained:?} after resume; aggregator peak RSS {} MiB",
        peak / (1024 * 1024)
    );
    ensure!(peak < MAX_PEAK_RSS, "aggregator peak RSS {peak} bytes");
    Ok(())
}
