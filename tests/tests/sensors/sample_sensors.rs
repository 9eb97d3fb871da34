//! Periodic samples from a real container, with the agent's eBPF sensor: a
//! container limited to 64 MiB and 100 tasks reads files in a loop, sends
//! 5000 bytes to a listener of the test on the host and keeps running for a
//! few sample intervals. Its syscall profile (a kernel map, read every
//! interval) must reach `glasshouse.syscalls` with the file syscalls counted
//! and named, and its cgroup resource samples must reach
//! `glasshouse.resources` with non-zero CPU, memory and pids, the two limits,
//! and the bytes it sent.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{ipc, resources, syscalls};
use glasshouse_tests::{Broker, PodmanService, TEST_IMAGE, free_port, init_logging, podman, require_test_image};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn syscall_profiles_and_resource_samples_of_a_container() -> anyhow::Result<()> {
    samples_of_a_container("bpf").await
}

/// The netlink fallback has no syscall sensor, but resources come from the
/// cgroup files all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resource_samples_of_a_container_in_fallback_mode() -> anyhow::Result<()> {
    samples_of_a_container("netlink").await
}

async fn samples_of_a_container(sensor: &str) -> anyhow::Result<()> {
    let bpf = sensor == "bpf";
    init_logging();
    require_test_image()?;
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
            "agent_id = \"sample-agent-{sensor}\"\nspool = false\nsensor = \"{sensor}\"\nsample_interval_ms = 1000\naggregators = [\"http://{ingest}\"]\nruntime_sockets = [\"{}\"]\nbatch_max_age_ms = 50",
            podman_api.socket.display()
        ),
    )?;
    let agent = tokio::spawn(glasshouse_agent::run(agent_config, cancel.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(!agent.is_finished(), "agent exited early: {:?}", agent.await);

    // The host end takes what the container sends.
    let host = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let host_port = host.local_addr()?.port();
    let received = tokio::spawn(async move {
        let (mut s, _) = host.accept().await?;
        let mut all = Vec::new();
        s.read_to_end(&mut all).await?;
        anyhow::Ok(all.len())
    });

    let name = format!("gh-sample-{sensor}-{}", free_port()?);
    let script = format!(
        "i=0; while [ $i -lt 300 ]; do cat /etc/hostname > /dev/null; i=$((i+1)); done; \
         head -c 5000 /dev/zero | nc 10.88.0.1 {host_port}; sleep 4"
    );
    let id = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            let id = podman(&[
                "create",
                "--name",
                &name,
                "--memory",
                "64m",
                "--pids-limit",
                "100",
                TEST_IMAGE,
                "sh",
                "-c",
                &script,
            ])?;
            podman(&["start", "--attach", &name])?;
            anyhow::Ok(id)
        }
    })
    .await??;
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), received).await???, 5000);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("sample-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Syscalls.topic(), RecordType::Resources.topic()])?;
    let (mut calls, mut samples): (Vec<syscalls::Row>, Vec<resources::Row>) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    let sent = |r: &resources::Row| r.counters.net_tx_bytes >= 5000;
    loop {
        let ours_calls = calls
            .iter()
            .filter(|r| r.attribution.container() == id.as_str())
            .count();
        if (ours_calls > 0 || !bpf)
            && samples
                .iter()
                .any(|r| r.attribution.container() == id.as_str() && sent(r))
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "incomplete after 30 s:\nsyscall rows {calls:#?}\nresource rows {samples:#?}"
        );
        let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
            continue;
        };
        let msg = msg?;
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        if msg.topic() == RecordType::Syscalls.topic() {
            calls.extend(syscalls::read_rows(&batch)?);
        } else {
            samples.extend(resources::read_rows(&batch)?);
        }
    }
    consumer.unsubscribe();
    drop(consumer);

    let ours: Vec<&syscalls::Row> = calls
        .iter()
        .filter(|r| r.attribution.container() == id.as_str())
        .collect();
    let total: u64 = ours.iter().map(|r| r.count).sum();
    if !bpf {
        ensure!(ours.is_empty(), "no syscall sensor without eBPF: {ours:#?}");
    } else {
        ensure!(total > 300, "the loop's syscalls are counted: {total} in {ours:#?}");
    }
    if bpf && std::env::consts::ARCH == "x86_64" {
        let named = |n: &str| {
            ours.iter()
                .filter(|r| r.name.as_deref() == Some(n))
                .map(|r| r.count)
                .sum::<u64>()
        };
        // 300 cats each open /etc/hostname (busybox may run them as forked
        // applets without execve, but each opens the file).
        ensure!(named("openat") + named("open") >= 300, "opens: {ours:#?}");
    }
    for r in &ours {
        ensure!(r.start_unix_ns < r.end_unix_ns && r.count > 0, "{r:?}");
    }

    let mine: Vec<&resources::Row> = samples
        .iter()
        .filter(|r| r.attribution.container() == id.as_str())
        .collect();
    let last = mine.iter().max_by_key(|r| r.time_unix_ns).context("no sample")?;
    let c = &last.counters;
    ensure!(c.cpu_usage_ns > 0 && c.memory_bytes > 0 && c.pids >= 1, "{c:?}");
    assert_eq!((c.memory_limit_bytes, c.pids_limit), (64 << 20, 100), "{c:?}");
    ensure!(c.net_tx_bytes >= 5000 && c.net_tx_packets > 0, "{c:?}");
    // Cumulative counters never go down between samples of the container.
    let mut by_time = mine.clone();
    by_time.sort_by_key(|r| r.time_unix_ns);
    for w in by_time.windows(2) {
        ensure!(w[0].counters.cpu_usage_ns <= w[1].counters.cpu_usage_ns, "{w:?}");
    }

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), agent).await???;
    tokio::time::timeout(Duration::from_secs(20), aggregator).await???;
    drop(podman_api);
    drop(broker);
    Ok(())
}
