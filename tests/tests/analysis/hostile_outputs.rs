//! Hostile input on the analyzer's side (issue 17), with a real broker and
//! the analyzer in-process:
//! - an alert far over the Kafka message limit (a 3 MiB argv) still leaves:
//!   shortened with a visible marker, valid OCSF, on `glasshouse.alerts`
//!   and the webhook, counted; a normal alert after it is delivered whole;
//! - the control plane trusts only the control key: a forged `lock` with a
//!   spoofed operator is refused and counted while the CLI's signed one
//!   applies; a garbage and an unsigned snapshot after a good one leave the
//!   good one restored; `alerts tail` with the key hides a forged alert;
//! - one host cannot teach a workload running on two hosts: what only it
//!   showed while the baseline learned alerts afterwards on either host
//!   (`baseline.unconfirmed`), naming the host it was learned from.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_analyzer::baseline::Baseline;
use glasshouse_proto::record::Attribution;
use glasshouse_proto::record::{RecordType, TOPIC_ALERTS, TOPIC_BASELINES, TOPIC_CONTROL};
use glasshouse_proto::{ipc, process};
use glasshouse_runtime::kafka::Kafka;
use glasshouse_tests::siem::webhook_receiver;
use glasshouse_tests::{Broker, free_port, http_get, init_logging, metric_value};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// An exec of a file not from the image (a `rule.drift` finding at once).
fn drift_exec(workload: &str, seq: u64, path: &str, argv: Vec<String>) -> process::Row {
    process::Row {
        attribution: Attribution {
            agent_id: "hostile-agent".into(),
            boot_id: 1,
            batch_seq: seq,
            host: "node-1".into(),
            container_id: Some(format!("{seq:064x}").into()),
            container_name: Some("web-1".into()),
            image: Some(format!("{workload}:1").into()),
            workload_id: workload.into(),
            ..Default::default()
        },
        event_index: 0,
        time_unix_ns: now_ns(),
        kind: process::Kind::Exec,
        pid: 40 + seq as u32,
        ppid: 1,
        uid: 0,
        gid: 0,
        path: Some(path.into()),
        argv: argv.into_iter().map(Into::into).collect(),
        cwd: None,
        parent_exe: None,
        exit_code: None,
        count: 1,
        exec_in: false,
        drift: true,
        stdio_socket: false,
    }
}

/// An ordinary exec (no rule fires on it) in container `container` on `host`.
fn exec_on(workload: &str, host: &str, container: &str, seq: u64, path: &str) -> process::Row {
    process::Row {
        attribution: Attribution {
            agent_id: format!("{host}-agent").into(),
            host: host.into(),
            container_id: Some(container.into()),
            image_id: Some("sha256:2222222222222222".into()),
            ..drift_exec(workload, seq, path, Vec::new()).attribution
        },
        argv: vec![path.rsplit('/').next().unwrap_or(path).into(), "--serve".into()],
        drift: false,
        ..drift_exec(workload, seq, path, Vec::new())
    }
}

fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", (32 << 20).to_string())
        .create()?)
}

/// Produces `row` as the aggregator would, retrying until the analyzer has
/// created the topics.
async fn produce(producer: &FutureProducer, row: &process::Row) -> anyhow::Result<()> {
    let mut b = process::Builder::default();
    b.append(row);
    let value = ipc::encode(&b.finish())?;
    glasshouse_tests::produce_record(producer, RecordType::Process, &row.attribution.workload_id, &value).await
}

/// The next alert of `path` on `glasshouse.alerts`, as text.
async fn next_alert(consumer: &StreamConsumer, path: &str) -> anyhow::Result<String> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .with_context(|| format!("no alert of {path} within 60 s"))??;
        let text = String::from_utf8(m.payload().unwrap_or_default().to_vec())?;
        let doc: serde_json::Value = serde_json::from_str(&text)?;
        if doc["evidences"][0]["process"]["path"] == path {
            return Ok(text);
        }
    }
}

/// Every record of `glasshouse.baselines` of `workload`: (partition,
/// value), in offset order within each partition.
async fn baseline_records(brokers: &str, workload: &str) -> anyhow::Result<Vec<(i32, Vec<u8>)>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("baselines-read-{}", now_ns()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[TOPIC_BASELINES])?;
    let mut out = Vec::new();
    while let Ok(m) = tokio::time::timeout(Duration::from_secs(4), consumer.recv()).await {
        let m = m?;
        if m.key() == Some(workload.as_bytes()) {
            out.push((m.partition(), m.payload().unwrap_or_default().to_vec()));
        }
    }
    consumer.unsubscribe();
    Ok(out)
}

/// The version of a record's snapshot, if it is one.
fn version_of(value: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Baseline>(value).ok().map(|b| b.version)
}

/// What `glasshouse alerts tail --from-beginning` prints in `secs` seconds.
async fn tail_for(kafka: &Kafka, key: Option<&glasshouse_analyzer::sign::Key>, secs: u64) -> anyhow::Result<String> {
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.cancel();
    });
    let mut out = Vec::new();
    glasshouse_analyzer::cli::alerts_tail(kafka, key, false, true, &mut out, cancel)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(String::from_utf8(out)?)
}

async fn metrics(port: u16) -> String {
    http_get(&format!("127.0.0.1:{port}"), "/metrics")
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_alerts_are_shortened_and_still_delivered() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let (hook_port, posts) = webhook_receiver()?;
    let metrics_port = free_port()?;
    let cancel = CancellationToken::new();
    let config: glasshouse_analyzer::Config = glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "brokers = \"{brokers}\"\ngroup = \"oversized\"\nview = false\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
             [topics]\npartitions = 3\n[analysis]\ncheckpoint_ms = 500\n\
             [outputs.webhook]\nurl = \"http://127.0.0.1:{hook_port}/services/collector/event\""
        ),
    )?;
    let max = config.analysis.max_alert_bytes;
    let analyzer = tokio::spawn(glasshouse_analyzer::run(config, std::io::sink(), cancel.clone()));
    let producer = producer(&brokers)?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "oversized-read")
        .set("auto.offset.reset", "earliest")
        .create()?;

    // 3 MiB of argv: its alert would be 3 MiB of JSON, three times the
    // producer's 1,000,000-byte message limit.
    let argv = vec!["/tmp/miner".to_owned(), "A".repeat(3 << 20)];
    produce(&producer, &drift_exec("localhost/huge", 1, "/tmp/miner", argv)).await?;
    consumer.subscribe(&[TOPIC_ALERTS])?;
    let big = next_alert(&consumer, "/tmp/miner").await?;
    let doc: serde_json::Value = serde_json::from_str(&big)?;
    let cmd = doc["evidences"][0]["process"]["cmd_line"]
        .as_str()
        .context("no cmd_line")?;
    ensure!(big.len() <= max, "{} bytes on Kafka, over {max}", big.len());
    ensure!(
        cmd.starts_with("/tmp/miner AAAA") && cmd.contains("…[truncated ") && cmd.ends_with(" bytes]"),
        "{}",
        &cmd[cmd.len().saturating_sub(60)..]
    );
    ensure!(
        doc["unmapped"]["glasshouse"]["truncated"] == true,
        "{}",
        doc["unmapped"]
    );
    ensure!(doc["unmapped"]["glasshouse"]["rule"] == "rule.drift");
    println!(
        "a 3 MiB argv: alert of {} bytes on {TOPIC_ALERTS} (max_alert_bytes {max}), cmd_line {} bytes",
        big.len(),
        cmd.len()
    );

    // A normal alert afterwards is delivered whole.
    produce(
        &producer,
        &drift_exec(
            "localhost/normal",
            2,
            "/tmp/tool",
            vec!["/tmp/tool".into(), "-v".into()],
        ),
    )
    .await?;
    let normal = next_alert(&consumer, "/tmp/tool").await?;
    let normal: serde_json::Value = serde_json::from_str(&normal)?;
    ensure!(
        normal["evidences"][0]["process"]["cmd_line"] == "/tmp/tool -v",
        "{normal}"
    );
    ensure!(normal["unmapped"]["glasshouse"].get("truncated").is_none(), "{normal}");

    // The same shortened alert went to the webhook, and the metric counts it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let bodies: Vec<String> = posts.lock().expect("lock").iter().map(|(_, b)| b.clone()).collect();
        let events: Vec<serde_json::Value> = bodies
            .iter()
            .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .map(|v| v["event"].clone())
            .collect();
        if events.contains(&doc) && events.contains(&normal) {
            break;
        }
        ensure!(Instant::now() < deadline, "webhook got {} posts", bodies.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = metrics(metrics_port).await;
    ensure!(
        metric_value(&page, "glasshouse_analyzer_alerts_shortened_total") == Some(1),
        "{page}"
    );
    ensure!(
        metric_value(&page, "glasshouse_analyzer_alerts_dropped_total") == Some(0),
        "{page}"
    );
    let health = http_get(&format!("127.0.0.1:{metrics_port}"), "/health").await?;
    ensure!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("\r\n\r\nok\n"),
        "{health}"
    );
    glasshouse_tests::validate_ocsf(&[big, normal.to_string()])?;

    consumer.unsubscribe();
    drop(consumer);
    drop(producer);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), analyzer).await???;
    drop(broker);
    Ok(())
}

fn keyed_config(brokers: &str, metrics: u16, key: &std::path::Path) -> anyhow::Result<glasshouse_analyzer::Config> {
    Ok(glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "brokers = \"{brokers}\"\ngroup = \"control\"\nview = false\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
             control_key_file = \"{}\"\n[topics]\npartitions = 3\n[analysis]\ncheckpoint_ms = 500",
            key.display()
        ),
    )?)
}

/// Waits until the analyzer's `/metrics` satisfies `ok`.
async fn wait_metrics(port: u16, what: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = metrics(port).await;
        if ok(&page) {
            return Ok(page);
        }
        ensure!(Instant::now() < deadline, "{what} not seen within 60 s:\n{page}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_commands_snapshots_and_alerts_are_refused() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("control.key");
    std::fs::write(&key_file, "c29tZSByYW5kb20gYnl0ZXMgZm9yIHRoZSB0ZXN0IGtleQ==\n")?;
    let key = glasshouse_analyzer::sign::Key::from_file(&key_file)?;
    let metrics_port = free_port()?;
    let cancel = CancellationToken::new();
    let first_cancel = cancel.child_token();
    let first = tokio::spawn(glasshouse_analyzer::run(
        keyed_config(&brokers, metrics_port, &key_file)?,
        std::io::sink(),
        first_cancel.clone(),
    ));
    let producer = producer(&brokers)?;
    let workload = "localhost/ctl";

    // A baseline to act on, and an alert: one drift exec of the workload.
    produce(
        &producer,
        &drift_exec(workload, 1, "/tmp/dropper", vec!["/tmp/dropper".into()]),
    )
    .await?;
    wait_metrics(metrics_port, "a learning baseline", |p| {
        p.contains("glasshouse_analyzer_baselines{state=\"learning\"} 1")
    })
    .await?;

    forged_locks_are_refused(&producer, workload, metrics_port).await?;

    // The CLI's signed lock applies.
    let locked = glasshouse_analyzer::control::send(
        &Kafka::new(brokers.clone(), Default::default()),
        &key,
        workload,
        "lock",
        None,
        Duration::from_secs(60),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    ensure!(locked.state.as_str() == "locked", "{:?}", locked.state);
    let version = locked.version;
    wait_metrics(metrics_port, "the locked baseline", |p| {
        p.contains("glasshouse_analyzer_baselines{state=\"locked\"} 1")
    })
    .await?;

    // Stop; then garbage and an unsigned (decodable) snapshot of the workload
    // on every baselines partition, after the good one.
    first_cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), first).await???;
    let partition = write_bad_snapshots(&brokers, &producer, workload, version).await?;
    let second_cancel = cancel.child_token();
    let second = tokio::spawn(glasshouse_analyzer::run(
        keyed_config(&brokers, metrics_port, &key_file)?,
        std::io::sink(),
        second_cancel.clone(),
    ));
    let page = wait_metrics(metrics_port, "the good baseline restored", |p| {
        p.contains("glasshouse_analyzer_baselines{state=\"locked\"} 1")
            && metric_value(p, "glasshouse_analyzer_snapshots_refused_total").unwrap_or(0) >= 2
    })
    .await?;
    println!(
        "refused on restore: {:?} snapshots",
        metric_value(&page, "glasshouse_analyzer_snapshots_refused_total")
    );
    // The good snapshot is written again, so the newest verified one is it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = {
            let (brokers, key) = (brokers.clone(), key.clone());
            tokio::task::spawn_blocking(move || {
                glasshouse_analyzer::control::read_baselines(
                    &Kafka::new(brokers.clone(), Default::default()),
                    Some(&key),
                    Duration::from_secs(10),
                )
            })
            .await?
            .map_err(anyhow::Error::msg)?
        };
        let b = read.get(workload).context("no verified baseline")?;
        ensure!(
            b.version == version && b.state.as_str() == "locked",
            "{} {:?}",
            b.version,
            b.state
        );
        let newest = baseline_records(&brokers, workload)
            .await?
            .into_iter()
            .rfind(|(p, _)| *p == partition);
        if newest.is_some_and(|(_, v)| version_of(&v) == Some(version)) {
            break;
        }
        ensure!(Instant::now() < deadline, "the good snapshot was not written again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // `alerts tail` with the key shows the analyzer's alert, not a forged one.
    let forged_alert = serde_json::json!({
        "class_uid": 2004, "time": now_ns() / 1_000_000, "severity": "Critical",
        "finding_info": { "title": "FORGED: all clear" },
        "evidences": [{ "container": { "uid": "0", "name": "x" } }],
        "unmapped": { "glasshouse": { "rule": "rule.forged", "workload": workload } },
    })
    .to_string();
    producer
        .send(
            FutureRecord::to(TOPIC_ALERTS).key(workload).payload(&forged_alert),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let plain = Kafka::new(brokers.clone(), Default::default());
    let checked = tail_for(&plain, Some(&key), 8).await?;
    ensure!(
        checked.contains("rule.drift") && !checked.contains("FORGED"),
        "with the key:\n{checked}"
    );
    let unchecked = tail_for(&plain, None, 8).await?;
    ensure!(
        unchecked.contains("rule.drift") && unchecked.contains("FORGED"),
        "without the key:\n{unchecked}"
    );

    drop(producer);
    second_cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), second).await???;
    drop(broker);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_host_cannot_teach_a_workload_on_two_hosts() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let cancel = CancellationToken::new();
    let config: glasshouse_analyzer::Config = glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "brokers = \"{brokers}\"\ngroup = \"poison\"\nview = false\n[topics]\npartitions = 1\n\
             [analysis]\nstartup_secs = 0\nmin_learning_secs = 4\nmin_events = 20\nmax_novelty = 0.5\n\
             novelty_window_secs = 1\ncheckpoint_ms = 300\nmin_hosts = 2"
        ),
    )?;
    let analyzer = tokio::spawn(glasshouse_analyzer::run(config, std::io::sink(), cancel.clone()));
    let producer = producer(&brokers)?;
    let workload = "localhost/poisoned";
    let (a, b) = ("0a".repeat(32), "0b".repeat(32));

    // Learning: both hosts run the server; node-1 (compromised) also runs
    // its backdoor, three times.
    let mut seq = 0;
    let learning_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < learning_until {
        seq += 1;
        produce(&producer, &exec_on(workload, "node-1", &a, seq, "/srv/server")).await?;
        produce(&producer, &exec_on(workload, "node-2", &b, seq, "/srv/server")).await?;
        if seq % 5 == 1 && seq < 15 {
            produce(&producer, &exec_on(workload, "node-1", &a, seq, "/usr/sbin/backdoor")).await?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stable, holding the backdoor: as node-1 taught it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let snapshot = loop {
        let last = baseline_records(&brokers, workload)
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Baseline>(&v).ok())
            .next_back();
        if let Some(b) = last.filter(|b| b.state == glasshouse_analyzer::baseline::State::Stable) {
            break b;
        }
        ensure!(Instant::now() < deadline, "the baseline did not become stable");
        seq += 1;
        produce(&producer, &exec_on(workload, "node-2", &b, seq, "/srv/server")).await?;
    };
    let held = snapshot
        .features
        .values()
        .flat_map(|m| m.keys())
        .any(|v| &**v == "/usr/sbin/backdoor");
    ensure!(held, "the baseline does not hold the backdoor");

    // Now the backdoor on node-2: an alert naming node-1 as its only support.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "poison-read")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[TOPIC_ALERTS])?;
    seq += 1;
    produce(&producer, &exec_on(workload, "node-2", &b, seq, "/usr/sbin/backdoor")).await?;
    let alert = next_alert(&consumer, "/usr/sbin/backdoor").await?;
    let doc: serde_json::Value = serde_json::from_str(&alert)?;
    ensure!(doc["unmapped"]["glasshouse"]["rule"] == "baseline.unconfirmed", "{doc}");
    ensure!(doc["severity"] == "High", "{doc}");
    let desc = doc["finding_info"]["desc"].as_str().unwrap_or_default();
    ensure!(desc.contains("from 1 host(s) (node-1) of the 2"), "{desc}");
    ensure!(
        alert.contains("shown on node-1") && alert.contains("1 of 2 hosts"),
        "{alert}"
    );
    glasshouse_tests::validate_ocsf(&[alert])?;
    println!("backdoor learned on node-1 only, run on node-2: {desc}");

    consumer.unsubscribe();
    drop(consumer);
    drop(producer);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), analyzer).await???;
    Ok(())
}

/// Kafka security settings reach every client: against a broker that
/// requires SASL (tansu `--authentication`, SCRAM-SHA-256), the aggregator
/// (producer, topic admin) and the analyzer (consumers, producers, topic
/// admin) with `[kafka]` SASL properties work, and so do the CLI's readers
/// (`alerts tail`, the vulnerability read) given the same properties (`-X`);
/// a client without them is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_sasl_settings_reach_every_client() -> anyhow::Result<()> {
    init_logging();
    const PASSWORD: &str = "sasl-secret-4d1e9b";
    let dir = tempfile::tempdir()?;
    let broker = Broker::start_authenticated(dir.path(), "glasshouse", PASSWORD)?;
    let brokers = broker.bootstrap();
    let properties: std::collections::BTreeMap<String, String> = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", "glasshouse"),
        ("sasl.password", PASSWORD),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let kafka = Kafka::new(brokers.clone(), properties.clone());
    let table: String = properties.iter().map(|(k, v)| format!("\"{k}\" = \"{v}\"\n")).collect();

    // Without the settings the broker answers nothing.
    let anonymous: rdkafka::consumer::BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
    ensure!(
        anonymous.fetch_metadata(None, Duration::from_secs(5)).is_err(),
        "the broker served a client without credentials"
    );

    let cancel = CancellationToken::new();
    let analyzer_config: glasshouse_analyzer::Config = glasshouse_runtime::service::parse_config(
        "test",
        &format!("brokers = \"{brokers}\"\ngroup = \"sasl\"\nview = false\n[topics]\npartitions = 1\n[kafka]\n{table}"),
    )?;
    let analyzer = tokio::spawn(glasshouse_analyzer::run(
        analyzer_config,
        std::io::sink(),
        cancel.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ingest = format!("http://{}", listener.local_addr()?);
    let aggregator_config: glasshouse_aggregator::Config = glasshouse_runtime::service::parse_config(
        "test",
        &format!("brokers = \"{brokers}\"\nflush_max_age_ms = 20\n[topics]\npartitions = 1\n[kafka]\n{table}"),
    )?;
    let aggregator = tokio::spawn(glasshouse_aggregator::serve(
        aggregator_config,
        listener,
        cancel.clone(),
    ));

    // An agent's batch is acknowledged: the aggregator's producer got in
    // (it serves once it has created the topics through SASL).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if aggregator.is_finished() {
            aggregator.await??;
            anyhow::bail!("the aggregator stopped");
        }
        let channel = tonic::transport::Endpoint::from_shared(ingest.clone())?.connect_lazy();
        let frames = vec![
            glasshouse_tests::wire::hello("sasl-agent"),
            glasshouse_tests::wire::batch(1, 3, true),
        ];
        match glasshouse_tests::wire::exchange(channel, None, frames, 1).await {
            Ok(acks) if acks == [1] => break,
            other => ensure!(
                Instant::now() < deadline,
                "no ack through the SASL aggregator: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A drift exec produced with the same settings is alerted on: the
    // analyzer's consumer and producer got in; `alerts tail` reads it.
    let mut producer_config = ClientConfig::new();
    producer_config.set("bootstrap.servers", &brokers);
    for (k, v) in &properties {
        producer_config.set(k, v);
    }
    let producer: FutureProducer = producer_config.create()?;
    produce(
        &producer,
        &drift_exec("localhost/sasl", 1, "/tmp/implant", vec!["/tmp/implant".into()]),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let out = tail_for(&kafka, None, 5).await?;
        if out.contains("/tmp/implant") {
            break out;
        }
        ensure!(
            Instant::now() < deadline,
            "no alert of /tmp/implant through SASL: {out:?}"
        );
    };
    // The vulnerability reader (a compacted-topic read) with and without.
    let k = kafka.clone();
    let rows = tokio::task::spawn_blocking(move || glasshouse_analyzer::vulns::cli::read(&k)).await?;
    ensure!(rows.is_ok(), "vulnerability read with SASL: {rows:?}");
    let bare = Kafka::new(brokers.clone(), Default::default());
    let refused = tokio::task::spawn_blocking(move || glasshouse_analyzer::vulns::cli::read(&bare)).await?;
    ensure!(refused.is_err(), "vulnerability read without SASL: {refused:?}");
    println!(
        "SASL (SCRAM-SHA-256) broker: aggregator ack, analyzer alert, alerts tail: {}",
        shown.trim()
    );

    drop(producer);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), analyzer).await???;
    tokio::time::timeout(Duration::from_secs(30), aggregator).await???;
    Ok(())
}

/// A forged lock of `workload`: unsigned, with a spoofed operator; then the
/// same with a signature made with another key. Both refused and counted,
/// the baseline not locked.
async fn forged_locks_are_refused(producer: &FutureProducer, workload: &str, metrics_port: u16) -> anyhow::Result<()> {
    let forged = format!(
        r#"{{"command":"lock","workload":"{workload}","by":"admin@spoofed","at_ms":{}}}"#,
        now_ns() / 1_000_000
    );
    let wrong_key = glasshouse_analyzer::sign::Key::new(&[9; 32]);
    let bad_signature = wrong_key.sign(TOPIC_CONTROL, workload.as_bytes(), forged.as_bytes());
    for signature in [None, Some(bad_signature.as_str())] {
        let mut record = FutureRecord::to(TOPIC_CONTROL).key(workload).payload(&forged);
        if let Some(s) = signature {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: glasshouse_analyzer::sign::HEADER,
                value: Some(s),
            }));
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
    }
    let page = wait_metrics(metrics_port, "two refused commands", |p| {
        metric_value(p, "glasshouse_analyzer_control_refused_total") == Some(2)
    })
    .await?;
    ensure!(
        page.contains("glasshouse_analyzer_baselines{state=\"locked\"} 0"),
        "a forged command applied:\n{page}"
    );

    Ok(())
}

/// Garbage and an unsigned (decodable) snapshot of `workload` written after
/// its good snapshot at `version`, on that one's partition (returned).
async fn write_bad_snapshots(
    brokers: &str,
    producer: &FutureProducer,
    workload: &str,
    version: u64,
) -> anyhow::Result<i32> {
    let (partition, good) = baseline_records(brokers, workload)
        .await?
        .into_iter()
        .rfind(|(_, v)| version_of(v) == Some(version))
        .context("no snapshot of the locked baseline")?;
    let mut unsigned: Baseline = serde_json::from_slice(&good)?;
    unsigned.version += 100;
    let unsigned = serde_json::to_string(&unsigned)?;
    {
        for payload in ["{\"garbage\": tr".as_bytes(), unsigned.as_bytes()] {
            producer
                .send(
                    FutureRecord::to(TOPIC_BASELINES)
                        .key(workload)
                        .payload(payload)
                        .partition(partition),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)?;
        }
    }
    Ok(partition)
}
