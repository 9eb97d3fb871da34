//! No event lost when the aggregator dies under the real agent: a container
//! runs a storm of 10,000 execs (about 4 s) (a static binary re-executing itself) while the
//! agent (eBPF) streams to an aggregator process, which is SIGKILLed mid-storm
//! and replaced on the same address. The agent re-sends what was not
//! acknowledged; after de-duplication by event id, the execs' counts in Kafka
//! add up to exactly 10,000 plus the first (identical execs are collapsed into one row with a
//! count).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{ipc, process};
use glasshouse_tests::{
    AggregatorProcess, Broker, PodmanService, TEST_IMAGE, build_storm, free_port, init_logging, podman,
    require_test_image,
};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

const EXECS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn execs_survive_an_aggregator_killed_mid_stream() -> anyhow::Result<()> {
    init_logging();
    require_test_image()?;
    let storm = build_storm()?;
    let broker = Broker::start()?;
    let podman_api = PodmanService::start()?;
    let port = free_port()?;
    // The agent's own spool (unacknowledged batches go there while the
    // aggregator is down), not the host's default one.
    let spool = std::env::temp_dir().join(format!("glasshouse-spool-{port}"));
    let mut aggregator = AggregatorProcess::start_on(port, &broker.bootstrap(), "flush_max_age_ms = 20")?;
    let cancel = CancellationToken::new();
    let agent_config: glasshouse_agent::Config = glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "agent_id = \"restart-agent\"\nspool_dir = \"{}\"\nsensor = \"bpf\"\naggregators = [\"{}\"]\nruntime_sockets = [\"{}\"]\nbatch_max_age_ms = 20\nbatch_max_events = 64",
            spool.display(),
            aggregator.endpoint(),
            podman_api.socket.display()
        ),
    )?;
    let agent = tokio::spawn(glasshouse_agent::run(agent_config, cancel.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(!agent.is_finished(), "agent exited early: {:?}", agent.await);

    let name = format!("gh-restart-{port}");
    let volume = format!("{}:/gh:ro", storm.display());
    let run = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            podman(&[
                "run",
                "--name",
                &name,
                "-v",
                &volume,
                TEST_IMAGE,
                "/gh/storm",
                "exec",
                &EXECS.to_string(),
            ])?;
            podman(&["inspect", "-f", "{{.Id}}", &name])
        }
    });
    // Kill the aggregator while the storm streams (it starts within a second
    // and runs about 4 s), start another in its place.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(!run.is_finished(), "the storm ended before the aggregator was killed");
    aggregator.kill()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _replacement = AggregatorProcess::start_on(port, &broker.bootstrap(), "flush_max_age_ms = 20")?;
    let id = run.await??;
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    ensure!(!aggregator_was_idle(&id), "no container id");

    // Every exec of /gh/storm in the container, de-duplicated by event id.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("restart-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Process.topic()])?;
    let mut execs: HashMap<(u64, u64, u32), u32> = HashMap::new();
    let mut duplicates = 0u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = |execs: &HashMap<(u64, u64, u32), u32>| execs.values().map(|c| u64::from(*c)).sum::<u64>();
    // The storm's own first exec (by podman) counts too: EXECS + 1 in all.
    while total(&execs) < EXECS + 1 {
        ensure!(
            Instant::now() < deadline,
            "only {} of {} execs in kafka after 60 s",
            total(&execs),
            EXECS + 1
        );
        let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
            continue;
        };
        let msg = msg?;
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        for r in process::read_rows(&batch)? {
            if r.attribution.container_id.as_deref() == Some(id.as_str())
                && r.kind == process::Kind::Exec
                && r.path.as_deref() == Some("/gh/storm")
                && execs
                    .insert((r.attribution.boot_id, r.attribution.batch_seq, r.event_index), r.count)
                    .is_some()
            {
                duplicates += 1;
            }
        }
    }
    // A little longer: nothing more may arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(300), consumer.recv()).await {
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        for r in process::read_rows(&batch)? {
            if r.attribution.container_id.as_deref() == Some(id.as_str()) && r.path.as_deref() == Some("/gh/storm") {
                execs.insert((r.attribution.boot_id, r.attribution.batch_seq, r.event_index), r.count);
            }
        }
    }
    consumer.unsubscribe();
    drop(consumer);
    assert_eq!(total(&execs), EXECS + 1, "execs after de-duplication by event id");
    println!(
        "execs {} in {} rows; duplicate deliveries (re-sent after the kill): {duplicates}",
        total(&execs),
        execs.len()
    );

    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(20), agent).await???;
    assert_eq!(report.batches_unacked, 0);
    let _ = std::fs::remove_dir_all(&storm);
    let _ = std::fs::remove_dir_all(&spool);
    drop(podman_api);
    drop(broker);
    Ok(())
}

fn aggregator_was_idle(id: &str) -> bool {
    id.len() != 64
}
