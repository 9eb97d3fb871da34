//! A noisy container cannot starve the others, and what the agent drops is
//! said downstream: with a per-container limit of 100 events/s, a container
//! running 2000 execs (6000 process events in about a second) is cut down,
//! the drops arrive in `glasshouse.gaps` as `rate_limited` gaps of that
//! container, and a quiet container running at the same time still has its
//! exec reported.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{gaps, ipc, process};
use glasshouse_tests::{
    Broker, PodmanService, TEST_IMAGE, build_storm, free_port, init_logging, podman, require_test_image,
};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_container_becomes_a_gap_and_others_are_still_seen() -> anyhow::Result<()> {
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
    let agent_config: glasshouse_agent::Config = glasshouse_proto::service::parse_config(
        "test",
        &format!(
            "agent_id = \"gap-agent\"\nspool = false\nsensor = \"bpf\"\ncontainer_rate_limit = 100\naggregators = [\"http://{ingest}\"]\nruntime_sockets = [\"{}\"]\nbatch_max_age_ms = 50",
            podman_api.socket.display()
        ),
    )?;
    let agent = tokio::spawn(glasshouse_agent::run(agent_config, cancel.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(!agent.is_finished(), "agent exited early: {:?}", agent.await);

    let tag = free_port()?;
    let (noisy, quiet) = (format!("gh-noisy-{tag}"), format!("gh-quiet-{tag}"));
    let volume = format!("{}:/gh:ro", storm.display());
    let (noisy_id, quiet_id) = tokio::task::spawn_blocking({
        let (noisy, quiet) = (noisy.clone(), quiet.clone());
        move || {
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
                "2000",
            ])?;
            let quiet_id = podman(&["run", "--name", &quiet, TEST_IMAGE, "cat", "/etc/hostname"])
                .and_then(|_| podman(&["inspect", "-f", "{{.Id}}", &quiet]))?;
            podman(&["wait", &noisy])?;
            anyhow::Ok((noisy_id, quiet_id))
        }
    })
    .await??;
    let _ = podman(&["rm", "-f", "-t", "0", &noisy, &quiet]);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("gaps-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Gaps.topic(), RecordType::Process.topic()])?;
    let (mut gap_rows, mut procs): (Vec<gaps::Row>, Vec<process::Row>) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    let dropped = |rows: &[gaps::Row]| {
        rows.iter()
            .filter(|g| g.attribution.container_id.as_deref() == Some(noisy_id.as_str()))
            .map(|g| g.dropped)
            .sum::<u64>()
    };
    let quiet_seen = |procs: &[process::Row]| {
        procs.iter().any(|r| {
            r.attribution.container_id.as_deref() == Some(quiet_id.as_str())
                && r.kind == process::Kind::Exec
                && r.argv.first().map(|a| &**a) == Some("cat")
        })
    };
    while dropped(&gap_rows) < 3000 || !quiet_seen(&procs) {
        ensure!(
            Instant::now() < deadline,
            "after 30 s: {} dropped in gaps {gap_rows:#?}; quiet exec seen: {}",
            dropped(&gap_rows),
            quiet_seen(&procs)
        );
        let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
            continue;
        };
        let msg = msg?;
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        if msg.topic() == RecordType::Gaps.topic() {
            gap_rows.extend(gaps::read_rows(&batch)?);
        } else {
            procs.extend(process::read_rows(&batch)?);
        }
    }
    // The rest (gaps are reported once a second): read until the topics are
    // quiet for two seconds.
    let settle = Instant::now() + Duration::from_secs(15);
    while Instant::now() < settle {
        let Ok(msg) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await else {
            break;
        };
        let msg = msg?;
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        if msg.topic() == RecordType::Gaps.topic() {
            gap_rows.extend(gaps::read_rows(&batch)?);
        } else {
            procs.extend(process::read_rows(&batch)?);
        }
    }
    consumer.unsubscribe();
    drop(consumer);

    for g in gap_rows
        .iter()
        .filter(|g| g.attribution.container_id.as_deref() == Some(noisy_id.as_str()))
    {
        assert_eq!(g.reason, gaps::Reason::RateLimited, "{g:?}");
        ensure!(g.start_unix_ns <= g.end_unix_ns && g.dropped > 0, "{g:?}");
    }
    ensure!(
        !gap_rows
            .iter()
            .any(|g| g.attribution.container_id.as_deref() == Some(quiet_id.as_str())),
        "the quiet container lost nothing: {gap_rows:#?}"
    );
    // What was reported of the noisy container plus what was dropped is
    // every event it caused (execs, forks and exits; collapsed rows count N).
    let reported: u64 = procs
        .iter()
        .filter(|r| r.attribution.container_id.as_deref() == Some(noisy_id.as_str()))
        .map(|r| u64::from(r.count))
        .sum();
    println!(
        "noisy container: {reported} events reported, {} dropped as gaps",
        dropped(&gap_rows)
    );
    ensure!(reported < 1000, "the limit held: {reported} reported");
    // Nothing vanished unsaid: 2000 forks, execs and exits at least.
    ensure!(
        reported + dropped(&gap_rows) >= 6000,
        "reported {reported} + dropped {} < 6000",
        dropped(&gap_rows)
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), agent).await???;
    tokio::time::timeout(Duration::from_secs(20), aggregator).await???;
    let _ = std::fs::remove_dir_all(&storm);
    drop(podman_api);
    drop(broker);
    Ok(())
}
