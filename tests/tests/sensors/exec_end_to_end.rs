//! The vertical slice through real parts: a Podman container started after the
//! agent runs `cat`; the agent (once with its eBPF sensor, once with the netlink
//! proc connector + /proc fallback) attributes the exec to the container and streams it over gRPC; the aggregator writes it as
//! Arrow IPC to `glasshouse.process` on a real broker, keyed by workload id; an
//! independent Kafka consumer reads it back, and the analyzer (a consumer
//! group member) shows it.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::process::{self, Kind, Row};
use glasshouse_proto::record::{HEADER_RECORD_TYPE, HEADER_SCHEMA_VERSION, RecordType};
use glasshouse_proto::{SCHEMA_VERSION, ipc};
use glasshouse_tests::{Stack, TEST_IMAGE, free_port, podman};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use tokio_util::sync::CancellationToken;

/// A writer the test can read back (the analyzer's live view).
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("view buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("view buffer lock")).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_in_a_new_container_reaches_kafka_attributed_bpf() -> anyhow::Result<()> {
    exec_reaches_kafka("bpf").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_in_a_new_container_reaches_kafka_attributed_netlink() -> anyhow::Result<()> {
    exec_reaches_kafka("netlink").await
}

/// `sensor` is forced (not `auto`): a BPF failure fails the test.
async fn exec_reaches_kafka(sensor: &str) -> anyhow::Result<()> {
    let mut stack = Stack::builder().aggregator("[topics]\npartitions = 3").start().await?;
    let brokers = stack.broker.bootstrap();

    // Analyzer, showing into a buffer.
    let view = Shared::default();
    let cancel = CancellationToken::new();
    let analyzer_config: glasshouse_analyzer::Config = glasshouse_runtime::service::parse_config(
        "test",
        &format!("brokers = \"{brokers}\"\ngroup = \"e2e-analyzer-{sensor}\"\n[topics]\npartitions = 3"),
    )?;
    let analyzer = tokio::spawn(glasshouse_analyzer::run(analyzer_config, view.clone(), cancel.clone()));

    // The agent, watching before the container starts.
    let agent_metrics = free_port()?;
    stack
        .start_agent(
            "e2e-agent",
            &format!("sensor = \"{sensor}\"\nmetrics_listen = \"127.0.0.1:{agent_metrics}\""),
        )
        .await?;

    let name = format!("gh-e2e-{sensor}-{}", free_port()?);
    let container_id = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            let id = podman(&[
                "create",
                "--name",
                &name,
                "--workdir",
                "/tmp",
                "--user",
                "1234:5678",
                TEST_IMAGE,
                "/bin/sh",
                "-c",
                "sleep 1; cat /etc/hostname",
            ])?;
            podman(&["start", "--attach", &name])?;
            anyhow::Ok(id)
        }
    })
    .await??;
    // Ignored result: cleanup only.
    let _ = podman(&["rm", "-f", &name]);
    ensure!(container_id.len() == 64, "unexpected container id {container_id:?}");

    let (found, rows) = exec_of_cat(&brokers, &container_id).await?;

    assert_eq!(found.attribution.image.as_deref(), Some(TEST_IMAGE));
    assert_eq!(
        found.argv.iter().map(|a| &**a).collect::<Vec<_>>(),
        ["cat", "/etc/hostname"]
    );
    assert_eq!(found.path.as_deref(), Some("/bin/busybox"), "cat is busybox's applet");
    assert_eq!(found.attribution.container_name.as_deref(), Some(name.as_str()));
    assert_eq!(found.cwd.as_deref(), Some("/tmp"));
    assert_eq!((found.uid, found.gid), (1234, 5678));
    assert_eq!(&*found.attribution.workload_id, "localhost/glasshouse-test");
    assert_eq!(&*found.attribution.agent_id, "e2e-agent");
    assert!(found.attribution.image_id.as_deref().is_some_and(|i| !i.is_empty()));
    // The container's shell ran first: its exec is attributed to the same container.
    assert!(
        rows.iter().any(|r| r.kind == Kind::Exec
            && r.attribution.container_id.as_deref() == Some(container_id.as_str())
            && r.argv.first().map(|a| &**a) == Some("/bin/sh")),
        "exec of /bin/sh missing: {rows:#?}"
    );

    // The analyzer, as a consumer group member, showed the exec.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !view.text().contains("cat /etc/hostname") {
        ensure!(
            Instant::now() < deadline,
            "analyzer view never showed the exec:\n{}",
            view.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        view.text()
            .contains(&format!("container {} {name}", &container_id[..12])),
        "{}",
        view.text()
    );

    // The agent's own metrics say what it read and how.
    let metrics = glasshouse_tests::http_get(&format!("127.0.0.1:{agent_metrics}"), "/metrics").await?;
    ensure!(
        metrics.contains(&format!("glasshouse_agent_sensor_mode{{mode=\"{sensor}\"}} 1")),
        "{metrics}"
    );
    let events =
        glasshouse_tests::metric_value(&metrics, "glasshouse_agent_events_total").context("no events metric")?;
    ensure!(events > 0, "agent read no kernel events: {metrics}");

    // Clean shutdown of every part: agent, aggregator, analyzer.
    let report = stack.stop_agent().await?;
    assert_eq!(report.batches_unacked, 0, "agent left batches unacknowledged");
    stack.stop().await?;
    cancel.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(20), analyzer).await???;
    assert!(stats.rows >= 2);
    assert_eq!(stats.undecodable, 0);
    // Whatever the analyzer alerted on is valid OCSF.
    glasshouse_tests::topics::validate_all_alerts(&brokers).map(drop)
}

/// The exec of `cat` in container `container_id`, read from
/// `glasshouse.process` from the beginning by an independent consumer, with
/// every row read until then. Checks each message's headers and key.
async fn exec_of_cat(brokers: &str, container_id: &str) -> anyhow::Result<(Row, Vec<Row>)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("e2e-independent-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Process.topic()])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rows: Vec<Row> = Vec::new();
    let found = loop {
        // The agent sees every container on the host (other tests' too): look
        // for the exec in ours, by the id podman gave it.
        let ours = |r: &&Row| r.attribution.container_id.as_deref() == Some(container_id);
        if let Some(r) = rows
            .iter()
            .filter(ours)
            .find(|r| r.kind == Kind::Exec && r.argv.first().map(|a| &**a) == Some("cat"))
        {
            break r.clone();
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            !remaining.is_zero(),
            "no exec of cat in container {container_id} on {} within 30 s; rows seen: {rows:#?}",
            RecordType::Process.topic()
        );
        let Ok(msg) = tokio::time::timeout(remaining, consumer.recv()).await else {
            continue;
        };
        let msg = msg?;
        let headers = msg.headers().context("message without headers")?;
        let header = |k: &str| {
            headers
                .iter()
                .find(|h| h.key == k)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header(HEADER_RECORD_TYPE).as_deref(), Some("process"));
        assert_eq!(header(HEADER_SCHEMA_VERSION), Some(SCHEMA_VERSION.to_string()));
        let batch = ipc::decode(msg.payload().context("empty payload")?)?;
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        for row in process::read_rows(&batch)? {
            assert_eq!(
                key.as_deref(),
                Some(&*row.attribution.workload_id),
                "message key is the workload id"
            );
            rows.push(row);
        }
    };

    // Leave the group before closing: a plain drop waits out the session timeout.
    consumer.unsubscribe();
    Ok((found, rows))
}
