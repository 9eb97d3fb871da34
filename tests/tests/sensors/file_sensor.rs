//! The eBPF file sensor and drift detection end to end, with a real container:
//! it appends to `/etc/passwd`, creates `/etc/cron.d/job`, writes a file under
//! `/tmp` (not sensitive), copies busybox to `/tmp/true` and runs it. The two
//! sensitive writes must reach `glasshouse.file` (write vs create, resolved
//! path, the writer's executable) and nothing under `/tmp`; the exec of
//! `/tmp/true` must be flagged as drift in `glasshouse.process`, the image's
//! own `/bin/sh` must not.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{file, ipc, process};
use glasshouse_tests::{Broker, PodmanService, TEST_IMAGE, free_port, init_logging, podman, require_test_image};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sensitive_writes_and_drift_execs_are_reported() -> anyhow::Result<()> {
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
            "agent_id = \"file-agent\"\nspool = false\nsensor = \"bpf\"\naggregators = [\"http://{ingest}\"]\nruntime_sockets = [\"{}\"]\nbatch_max_age_ms = 50",
            podman_api.socket.display()
        ),
    )?;
    let agent = tokio::spawn(glasshouse_agent::run(agent_config, cancel.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(!agent.is_finished(), "agent exited early: {:?}", agent.await);

    let name = format!("gh-file-{}", free_port()?);
    let script = "echo 'x:x:0:0::/:/bin/sh' >> /etc/passwd; mkdir -p /etc/cron.d; echo '* * * * * id' > /etc/cron.d/job; \
                  echo scratch > /tmp/scratch; cp /bin/busybox /tmp/true; /tmp/true";
    let id = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            let id = podman(&["create", "--name", &name, TEST_IMAGE, "/bin/sh", "-c", script])?;
            podman(&["start", "--attach", &name])?;
            anyhow::Ok(id)
        }
    })
    .await??;
    let _ = podman(&["rm", "-f", "-t", "0", &name]);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("file-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Process.topic(), RecordType::File.topic()])?;
    let ours = |c: &Option<process::Str>| c.as_deref() == Some(id.as_str());
    let (mut procs, mut files): (Vec<process::Row>, Vec<file::Row>) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = |procs: &[process::Row], files: &[file::Row]| {
        procs
            .iter()
            .any(|r| ours(&r.attribution.container_id) && r.path.as_deref() == Some("/tmp/true"))
            && files.iter().filter(|r| ours(&r.attribution.container_id)).count() >= 2
    };
    while !done(&procs, &files) {
        ensure!(
            Instant::now() < deadline,
            "incomplete after 30 s:\nprocess rows {procs:#?}\nfile rows {files:#?}"
        );
        let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
            continue;
        };
        let msg = msg?;
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        if msg.topic() == RecordType::File.topic() {
            files.extend(file::read_rows(&batch)?);
        } else {
            procs.extend(process::read_rows(&batch)?);
        }
    }
    // A little longer: a write under /tmp, were it reported, would be in by now.
    let settle = Instant::now() + Duration::from_millis(500);
    while let Ok(Ok(msg)) =
        tokio::time::timeout(settle.saturating_duration_since(Instant::now()), consumer.recv()).await
    {
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        if msg.topic() == RecordType::File.topic() {
            files.extend(file::read_rows(&batch)?);
        }
    }
    consumer.unsubscribe();
    drop(consumer);

    let ours_files: Vec<&file::Row> = files.iter().filter(|r| ours(&r.attribution.container_id)).collect();
    let passwd = ours_files
        .iter()
        .find(|r| &*r.path == "/etc/passwd")
        .with_context(|| format!("no write to /etc/passwd: {files:#?}"))?;
    assert_eq!(passwd.kind, file::Kind::Write);
    assert_eq!(passwd.exe.as_deref(), Some("/bin/busybox"));
    let cron = ours_files
        .iter()
        .find(|r| &*r.path == "/etc/cron.d/job")
        .with_context(|| format!("no creation of /etc/cron.d/job: {files:#?}"))?;
    assert_eq!(cron.kind, file::Kind::Create);
    ensure!(
        !ours_files.iter().any(|r| r.path.starts_with("/tmp")),
        "a write outside the sensitive paths was reported: {ours_files:#?}"
    );

    let drift: Vec<&process::Row> = procs
        .iter()
        .filter(|r| ours(&r.attribution.container_id) && r.drift)
        .collect();
    ensure!(
        drift.len() == 1 && drift[0].path.as_deref() == Some("/tmp/true") && drift[0].kind == process::Kind::Exec,
        "exactly the exec of /tmp/true is drift: {drift:#?}; execs of /tmp/true: {:#?}",
        procs
            .iter()
            .filter(|r| r.path.as_deref() == Some("/tmp/true"))
            .collect::<Vec<_>>()
    );
    ensure!(
        procs.iter().any(|r| ours(&r.attribution.container_id)
            && r.kind == process::Kind::Exec
            && r.path.as_deref() == Some("/bin/busybox")
            && !r.drift),
        "the image's own busybox runs without drift: {procs:#?}"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), agent).await???;
    tokio::time::timeout(Duration::from_secs(20), aggregator).await???;
    drop(podman_api);
    drop(broker);
    Ok(())
}
