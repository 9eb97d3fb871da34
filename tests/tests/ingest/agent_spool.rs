//! The agent's disk spool across a restart. A client (the real agent stream
//! client, fed synthetic batches) that never reaches an aggregator spools its
//! batches and stops. A new client (the restarted agent: a new boot id, the
//! same spool directory) with a real aggregator sends them first, on a stream
//! carrying the first run's boot id, then its own batches. Every event of both
//! runs reaches Kafka with its original (agent, boot, sequence, index), and
//! after de-duplication by event id exactly once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use glasshouse_agent::client::{self, ClientReport};
use glasshouse_agent::pipeline::PendingBatch;
use glasshouse_agent::spool::SpoolConfig;
use glasshouse_tests::{AggregatorProcess, Broker, free_port, init_logging, simulated};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const AGENT: &str = "spool-agent";
const FIRST_BOOT: u64 = 0x1111;
const SECOND_BOOT: u64 = 0x2222;
/// Batches of the first run (all spooled) and of the second (sent live).
const FIRST_BATCHES: u64 = 60;
const SECOND_BATCHES: u64 = 20;
const EVENTS: usize = 25;

/// The spool directory of this test, removed when the test ends.
struct SpoolDir(PathBuf);

impl Drop for SpoolDir {
    fn drop(&mut self) {
        // Ignored error: nothing to clean up.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn segments(dir: &Path) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .count())
}

/// Runs one client over `batches` until they are all taken and it has
/// stopped (cancelled after its input closed, as the agent does on SIGTERM).
async fn run_client(config: client::ClientConfig, batches: Vec<PendingBatch>) -> anyhow::Result<ClientReport> {
    let (tx, rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let client = tokio::spawn(client::run(config, rx, cancel.clone()));
    for batch in batches {
        tx.send(batch).await.context("client stopped taking batches")?;
    }
    drop(tx);
    cancel.cancel();
    Ok(tokio::time::timeout(Duration::from_secs(120), client)
        .await
        .context("client did not stop")??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spooled_batches_are_sent_after_a_restart_with_their_original_identity() -> anyhow::Result<()> {
    init_logging();
    let dir = SpoolDir(std::env::temp_dir().join(format!("glasshouse-agent-spool-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let container = simulated::container(1, "localhost/spooled");
    let batches = |n: u64| {
        (1..=n)
            .map(|seq| simulated::batch(&container, seq, EVENTS))
            .collect::<Vec<_>>()
    };

    // Run 1: nothing listens at the aggregator address. Small segments make
    // the spool rotate.
    let nowhere = format!("http://127.0.0.1:{}", free_port()?);
    let mut config = simulated::agent(AGENT, FIRST_BOOT, vec![nowhere], 8);
    config.drain_timeout = Duration::from_millis(500);
    config.spool = Some(SpoolConfig {
        segment_bytes: 32 * 1024,
        ..SpoolConfig::new(&dir.0, 64 << 20)
    });
    let first = run_client(config, batches(FIRST_BATCHES)).await?;
    println!("first run: {first:?}");
    ensure!(first.batches_acked == 0, "nothing could be acknowledged: {first:?}");
    ensure!(first.batches_unacked == 0, "nothing may be lost: {first:?}");
    ensure!(first.spool_batches == FIRST_BATCHES, "every batch spooled: {first:?}");
    ensure!(first.spool_dropped_batches == 0, "{first:?}");
    let spooled_segments = segments(&dir.0)?;
    ensure!(
        spooled_segments > 1,
        "the spool did not rotate ({spooled_segments} segment)"
    );

    // Run 2: the restarted agent (new boot id, same spool) and a real aggregator.
    let broker = Broker::start()?;
    let mut aggregator = AggregatorProcess::start(&broker.bootstrap(), "flush_max_age_ms = 20")?;
    let mut config = simulated::agent(AGENT, SECOND_BOOT, vec![aggregator.endpoint()], 8);
    config.spool = Some(SpoolConfig::new(&dir.0, 64 << 20));
    let second = run_client(config, batches(SECOND_BATCHES)).await?;
    println!("second run: {second:?}");
    ensure!(
        second.batches_acked == FIRST_BATCHES + SECOND_BATCHES,
        "both runs' batches acknowledged: {second:?}"
    );
    ensure!(second.batches_unacked == 0 && second.spool_batches == 0, "{second:?}");
    ensure!(segments(&dir.0)? == 0, "an empty spool leaves no segments");

    let expected = usize::try_from(FIRST_BATCHES + SECOND_BATCHES)? * EVENTS;
    let seen = simulated::collect_ids(&broker.bootstrap(), expected, Duration::from_secs(60)).await?;
    for (boot, batches) in [(FIRST_BOOT, FIRST_BATCHES), (SECOND_BOOT, SECOND_BATCHES)] {
        for seq in 1..=batches {
            for i in 0..EVENTS {
                let id = (AGENT.to_owned(), boot, seq, u32::try_from(i)?);
                ensure!(seen.contains_key(&id), "event {id:?} lost");
            }
        }
    }
    // No event arrived under another identity (say, the new boot id).
    assert_eq!(seen.len(), expected, "unexpected extra event ids");
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    println!(
        "spool: {FIRST_BATCHES} batches spooled in {spooled_segments} segments with no aggregator, \
         re-sent after a restart under boot {FIRST_BOOT:#x}; {expected} events, lost 0, \
         duplicates before de-duplication {duplicates}"
    );
    ensure!(aggregator.stop()?.success(), "aggregator did not stop cleanly");
    Ok(())
}

/// The aggregator is killed mid-stream and comes back: the client spills its
/// in-flight window and every new batch to the spool, re-sends the window and
/// the spool in order on reconnect (self-contained batches between batches
/// interned on the live stream), then goes back to the live stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aggregator_outage_goes_through_the_spool_and_loses_nothing() -> anyhow::Result<()> {
    const BATCHES: u64 = 150;
    const BOOT: u64 = 0x3333;
    init_logging();
    let dir = SpoolDir(std::env::temp_dir().join(format!("glasshouse-agent-spool-outage-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let broker = Broker::start()?;
    let settings = "flush_max_age_ms = 20";
    let mut aggregator = AggregatorProcess::start(&broker.bootstrap(), settings)?;
    let port = aggregator.addr.port();
    let mut config = simulated::agent(AGENT, BOOT, vec![aggregator.endpoint()], 4);
    config.spool = Some(SpoolConfig {
        segment_bytes: 16 * 1024,
        ..SpoolConfig::new(&dir.0, 64 << 20)
    });
    let container = simulated::container(2, "localhost/outage");
    let (tx, rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let client = tokio::spawn(client::run(config, rx, cancel.clone()));
    let feeder = tokio::spawn(async move {
        for seq in 1..=BATCHES {
            if tx.send(simulated::batch(&container, seq, EVENTS)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    tokio::time::sleep(Duration::from_millis(400)).await;
    aggregator.kill()?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut aggregator = AggregatorProcess::start_on(port, &broker.bootstrap(), settings)?;
    feeder.await?;
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(120), client)
        .await
        .context("client did not stop")??;
    println!("outage: {report:?}");
    ensure!(report.batches_acked == BATCHES, "{report:?}");
    ensure!(report.batches_unacked == 0 && report.spool_batches == 0, "{report:?}");
    ensure!(
        report.batches_refused == 0,
        "the aggregator refused batches: {report:?}"
    );
    ensure!(segments(&dir.0)? == 0, "an empty spool leaves no segments");

    let expected = usize::try_from(BATCHES)? * EVENTS;
    let seen = simulated::collect_ids(&broker.bootstrap(), expected, Duration::from_secs(60)).await?;
    for seq in 1..=BATCHES {
        for i in 0..EVENTS {
            let id = (AGENT.to_owned(), BOOT, seq, u32::try_from(i)?);
            ensure!(seen.contains_key(&id), "event {id:?} lost");
        }
    }
    assert_eq!(seen.len(), expected, "unexpected extra event ids");
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    println!("outage: {expected} events, lost 0, duplicates before de-duplication {duplicates}");
    ensure!(aggregator.stop()?.success(), "aggregator did not stop cleanly");
    Ok(())
}
