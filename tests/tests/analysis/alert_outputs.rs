//! Alerts reach a SIEM by syslog and by webhook, escaped for each: a real
//! rsyslogd on loopback receives the analyzer's RFC 5424 records over UDP and
//! over TCP (octet counting), and an HTTP server takes its Splunk-HEC posts.
//! The alert comes from a real analyzer consuming a real broker: a write to
//! `/etc/passwd` by a process whose name and container name hold newlines,
//! a forged syslog header, ANSI escapes and quotes. Each output must carry
//! exactly the alert published on `glasshouse.alerts`, on one line, with the
//! hostile strings escaped; the records' structured data must parse in
//! rsyslog as ours.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::record::Attribution;
use glasshouse_proto::record::{RecordType, TOPIC_ALERTS};
use glasshouse_proto::{file, ipc};
use glasshouse_tests::siem::{Rsyslog, webhook_receiver};
use glasshouse_tests::{Broker, free_port, init_logging};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

const HOSTILE: &str = "web\n<13>1 2026-01-01T00:00:00Z forged app - - - injected\u{1b}[2J\"]\\|CEF:0|";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_reach_rsyslog_over_udp_and_tcp_and_a_webhook_escaped() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let (udp, tcp) = (free_port()?, free_port()?);
    let rsyslog = Rsyslog::start(udp, tcp)?;
    let (hook_port, posts) = webhook_receiver()?;
    let token = tempfile::NamedTempFile::new()?;
    std::fs::write(token.path(), "6f1c-token\n")?;

    let cancel = CancellationToken::new();
    let config: glasshouse_analyzer::Config = glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "brokers = \"{brokers}\"\ngroup = \"outputs\"\nview = false\n[topics]\npartitions = 3\n[analysis]\ncheckpoint_ms = 500\n\
             [[outputs.syslog]]\naddress = \"127.0.0.1:{udp}\"\n\
             [[outputs.syslog]]\naddress = \"127.0.0.1:{tcp}\"\nprotocol = \"tcp\"\nfacility = 4\n\
             [outputs.webhook]\nurl = \"http://127.0.0.1:{hook_port}/services/collector/event\"\ntoken_file = \"{}\"\nindex = \"security\"",
            token.path().display()
        ),
    )?;
    let analyzer = tokio::spawn(glasshouse_analyzer::run(config, std::io::sink(), cancel.clone()));

    // A write to /etc/passwd, as the aggregator would have written it.
    let row = file::Row {
        attribution: Attribution {
            boot_id: 7,
            batch_seq: 1,
            container_id: Some("c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00".into()),
            container_name: Some(HOSTILE.into()),
            image: Some("localhost/web:1".into()),
            image_id: Some("sha256:0123".into()),
            workload_id: "localhost/web".into(),
            ..Attribution::host("agent-1".into(), "node-1".into())
        },
        time_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as i64,
        kind: file::Kind::Write,
        pid: 42,
        path: "/etc/passwd".into(),
        exe: Some(format!("/tmp/{HOSTILE}").into()),
        flags: 1,
        count: 1,
        ..Default::default()
    };
    let mut b = file::Builder::default();
    b.append(&row);
    let value = ipc::encode(&b.finish())?;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
    // The analyzer creates the topics; retried until it has.
    glasshouse_tests::produce_record(&producer, RecordType::File, "localhost/web", &value).await?;

    // The alert as published on Kafka.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "outputs-read")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[TOPIC_ALERTS])?;
    let kafka: serde_json::Value = loop {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("no alert on Kafka within 30 s")??;
        let doc: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
        if doc["unmapped"]["glasshouse"]["rule"] == "rule.account_files" {
            break doc;
        }
    };
    consumer.unsubscribe();
    ensure!(kafka["evidences"][0]["container"]["name"] == HOSTILE, "{kafka}");

    // rsyslog: one line per transport, fields as sent, message = the alert.
    let deadline = Instant::now() + Duration::from_secs(15);
    let lines = loop {
        let lines = rsyslog.lines();
        if lines.iter().any(|l| l.starts_with("udp\t")) && lines.iter().any(|l| l.starts_with("tcp\t")) {
            break lines;
        }
        ensure!(Instant::now() < deadline, "rsyslog received {lines:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(lines.len() == 2, "one record per transport, one line each: {lines:#?}");
    for line in &lines {
        // Tab-separated: neither the structured data nor the ASCII-only JSON
        // message can hold a raw tab.
        let fields: Vec<&str> = line.splitn(8, '\t').collect();
        ensure!(fields.len() == 8, "{line}");
        let (input, facility, severity, _host, app, msgid, sd, msg) = (
            fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6], fields[7],
        );
        ensure!(
            facility == if input == "udp" { "10" } else { "4" } && severity == "3",
            "facility/severity: {line}"
        );
        ensure!(app == "glasshouse" && msgid == "rule.account_files", "{line}");
        ensure!(
            sd.starts_with("[glasshouse@32473 uid=\"") && sd.contains(r#"container_name="web\u000a<13>1"#),
            "structured data: {sd}"
        );
        ensure!(sd.contains(r#"\u001b[2J\"\]\\|CEF:0|"#), "SD escapes: {sd}");
        ensure!(line.is_ascii() && !line.contains('\u{1b}'), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(msg).with_context(|| format!("message: {msg}"))?;
        ensure!(
            parsed == kafka,
            "syslog message differs from the Kafka alert:\n{msg}\n{kafka}"
        );
    }

    // The webhook: one HEC event with the token, the alert as its event.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (head, body) = loop {
        if let Some(p) = posts.lock().expect("lock").first().cloned() {
            break p;
        }
        ensure!(Instant::now() < deadline, "no webhook post");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(head.starts_with("POST /services/collector/event HTTP/1.1"), "{head}");
    ensure!(head.contains("Authorization: Splunk 6f1c-token"), "{head}");
    ensure!(body.is_ascii(), "{body}");
    let hec: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(hec["event"] == kafka && hec["index"] == "security", "{body}");
    ensure!(hec["sourcetype"] == "ocsf:detection_finding", "{body}");

    glasshouse_tests::validate_ocsf(&[kafka.to_string()])?;
    // Kafka clients go before the broker (or their close waits it out).
    drop(consumer);
    drop(producer);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), analyzer).await???;
    drop(broker);
    Ok(())
}
