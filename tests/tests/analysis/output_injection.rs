//! Output injection from a real container: it copies a binary to a file
//! whose name holds a newline, a forged syslog header, an ANSI escape,
//! `"`, `\`, `]`, `|`, `=`, a carriage return, a control byte and invalid
//! UTF-8 (an overlong NUL among them), and runs it with an argument of the
//! same kind. The real agent, aggregator and analyzer turn that into a drift
//! alert; the test asserts on the bytes each output delivers:
//!
//! - `glasshouse.alerts` (OCSF JSON): no raw control byte, and the path
//!   parses back to what the container wrote (invalid UTF-8 as U+FFFD);
//! - syslog (a real rsyslogd, UDP and TCP): one record per transport on one
//!   line, ASCII only, structured data escaped, the message the Kafka alert;
//! - the Splunk-HEC webhook: an ASCII-only body whose event is the Kafka alert;
//! - `glasshouse alerts tail` (terminal lines): one line per alert, no
//!   control byte but its newline, the hostile characters as visible escapes.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::record::TOPIC_ALERTS;
use glasshouse_tests::siem::{Rsyslog, webhook_receiver};
use glasshouse_tests::topics::payloads_until_quiet;
use glasshouse_tests::{
    AgentProcess, AggregatorProcess, AnalyzerProcess, Broker, PodmanService, TEST_IMAGE, build_hostile, free_port,
    podman, require_test_image, workspace_binary,
};

/// The hostile part of the file name and argument, as busybox `printf`
/// escapes (`\377\300\200`: 0xff, then an overlong NUL).
const HOSTILE_PRINTF: &str =
    r#"x\n<13>1 2026-01-01T00:00:00Z forged app - - - injected\033[2J"]\\|=CEF:0|a=b\r\001\377\300\200"#;
/// The same as the analyzer receives it: invalid UTF-8 replaced (one U+FFFD
/// per invalid byte, as Rust's lossy decoding does).
const HOSTILE: &str =
    "x\n<13>1 2026-01-01T00:00:00Z forged app - - - injected\u{1b}[2J\"]\\|=CEF:0|a=b\r\u{1}\u{fffd}\u{fffd}\u{fffd}";

#[test]
fn hostile_process_names_arrive_escaped_in_every_alert_format() -> anyhow::Result<()> {
    require_test_image()?;
    let hostile = build_hostile()?;
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let podman_api = PodmanService::start()?;
    let (udp, tcp) = (free_port()?, free_port()?);
    let rsyslog = Rsyslog::start(udp, tcp)?;
    let (hook_port, posts) = webhook_receiver()?;
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("hec.token");
    std::fs::write(&token, "inj-token\n")?;
    let _analyzer = AnalyzerProcess::start(&format!(
        "brokers = \"{brokers}\"\ngroup = \"injection\"\nview = false\n[topics]\npartitions = 1\n\
         [analysis]\ncheckpoint_ms = 500\n\
         [[outputs.syslog]]\naddress = \"127.0.0.1:{udp}\"\n\
         [[outputs.syslog]]\naddress = \"127.0.0.1:{tcp}\"\nprotocol = \"tcp\"\n\
         [outputs.webhook]\nurl = \"http://127.0.0.1:{hook_port}/services/collector/event\"\ntoken_file = \"{}\"",
        token.display()
    ))?;
    let aggregator = AggregatorProcess::start(&brokers, "flush_max_age_ms = 20")?;
    let _agent = AgentProcess::start(
        &aggregator.endpoint(),
        &format!(
            "agent_id = \"injection-agent\"\nsensor = \"bpf\"\nruntime_sockets = [\"{}\"]\nbatch_max_age_ms = 50\n\
             containers = [\"gh-inject-{}\"]",
            podman_api.socket.display(),
            std::process::id()
        ),
    )?;
    let mut tail = Command::new(workspace_binary("glasshouse")?)
        .args(["--brokers", &brokers, "alerts", "tail", "--from-beginning"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut tail_out = tail.stdout.take().context("tail stdout")?;
    let tail_bytes = std::thread::spawn(move || {
        let mut all = Vec::new();
        // Until the tail is killed.
        let _ = tail_out.read_to_end(&mut all);
        all
    });

    // The container: a copy of a static binary under the hostile name, run
    // with a hostile argument (an exec of a file not in the image: drift).
    let name = format!("gh-inject-{}", std::process::id());
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    let volume = format!("{}:/gh:ro", hostile.display());
    let script = format!(
        "p=\"/tmp/$(printf '{HOSTILE_PRINTF}')\"; a=\"$(printf 'arg-{HOSTILE_PRINTF}')\"; \
         cp /gh/hostile \"$p\" && \"$p\" noop \"$a\" && echo ran"
    );
    let out = podman(&[
        "run", "--name", &name, "-v", &volume, TEST_IMAGE, "/bin/sh", "-c", &script,
    ]);
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    ensure!(out?.contains("ran"), "the container did not run its hostile binary");

    let kafka = drift_alert_on_kafka(&brokers)?;

    syslog_records_are_the_kafka_alert(&rsyslog, &kafka)?;

    // The webhook.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let found = posts
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .find(|(_, b)| b.contains("rule.drift"))
            .map(|(_, b)| b.clone());
        if let Some(b) = found {
            break b;
        }
        ensure!(Instant::now() < deadline, "no webhook post of the drift alert");
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(body.is_ascii(), "{body}");
    let hec: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(hec["event"] == kafka, "webhook event differs from the Kafka alert");
    println!("webhook: ASCII-only body, event = the Kafka alert");

    // The terminal: the CLI's lines.
    std::thread::sleep(Duration::from_secs(2));
    // Ignored: the tail runs until killed.
    let _ = tail.kill();
    let _ = tail.wait();
    let out = tail_bytes.join().map_err(|_| anyhow::anyhow!("tail reader panicked"))?;
    let drift_lines: Vec<&[u8]> = out
        .split(|b| *b == b'\n')
        .filter(|l| l.windows(10).any(|w| w == b"rule.drift"))
        .collect();
    ensure!(
        !drift_lines.is_empty(),
        "no drift alert in `alerts tail`: {}",
        String::from_utf8_lossy(&out)
    );
    for l in &drift_lines {
        ensure!(
            !l.iter().any(|b| *b < 0x20 || *b == 0x7f),
            "a control byte on the terminal: {:?}",
            String::from_utf8_lossy(l)
        );
        let text = String::from_utf8_lossy(l);
        ensure!(
            text.contains(r"x\n<13>1") && text.contains(r"\u{1b}[2J") && text.contains(r"\r\u{1}"),
            "hostile characters not visible as escapes: {text}"
        );
    }
    // Every line of the output is a whole alert: the name's newline did not
    // start a line of its own.
    ensure!(
        !out.split(|b| *b == b'\n').any(|l| l.starts_with(b"<13>1")),
        "a forged line on the terminal"
    );
    println!("alerts tail: {}", String::from_utf8_lossy(drift_lines[0]));
    let _ = std::fs::remove_dir_all(&hostile);
    Ok(())
}

/// The drift alert of the hostile binary on Kafka: no raw control byte in
/// its bytes, its path and argument parse back exactly.
fn drift_alert_on_kafka(brokers: &str) -> anyhow::Result<serde_json::Value> {
    let expected_path = format!("/tmp/{HOSTILE}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (raw, kafka) = loop {
        let found = payloads_until_quiet(brokers, TOPIC_ALERTS, Duration::from_secs(1))?
            .into_iter()
            .filter_map(|p| Some((serde_json::from_slice::<serde_json::Value>(&p).ok()?, p)))
            .find(|(doc, _)| {
                doc["unmapped"]["glasshouse"]["rule"] == "rule.drift" && doc.to_string().contains("forged app")
            });
        if let Some((doc, raw)) = found {
            break (raw, doc);
        }
        ensure!(
            Instant::now() < deadline,
            "no drift alert for the hostile binary within 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    ensure!(
        !raw.iter().any(|b| *b < 0x20),
        "a raw control byte in the Kafka alert: {}",
        String::from_utf8_lossy(&raw)
    );
    let process = &kafka["evidences"][0]["process"];
    ensure!(
        process["path"] == expected_path.as_str(),
        "process path: {}",
        process["path"]
    );
    ensure!(
        process["cmd_line"]
            .as_str()
            .is_some_and(|c| c.contains(&format!("arg-{HOSTILE}"))),
        "cmd_line: {}",
        process["cmd_line"]
    );
    println!(
        "kafka: {} bytes of JSON, no raw control byte, path and argument parse back exactly",
        raw.len()
    );

    Ok(kafka)
}

/// rsyslog got one line per transport (the drift alert's), ASCII only, each
/// message the Kafka alert.
fn syslog_records_are_the_kafka_alert(rsyslog: &Rsyslog, kafka: &serde_json::Value) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines: Vec<String> = rsyslog
            .lines()
            .into_iter()
            .filter(|l| l.contains("rule.drift"))
            .collect();
        if lines.iter().any(|l| l.starts_with("udp\t")) && lines.iter().any(|l| l.starts_with("tcp\t")) {
            break lines;
        }
        ensure!(Instant::now() < deadline, "rsyslog received {:#?}", rsyslog.lines());
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(
        rsyslog.lines().len()
            == rsyslog
                .lines()
                .iter()
                .filter(|l| l.starts_with("udp\t") || l.starts_with("tcp\t"))
                .count(),
        "a record was split into lines: {:#?}",
        rsyslog.lines()
    );
    for line in &lines {
        ensure!(
            line.is_ascii() && !line.contains('\u{1b}') && !line.contains('\r'),
            "{line}"
        );
        let fields: Vec<&str> = line.splitn(8, '\t').collect();
        ensure!(fields.len() == 8, "{line}");
        ensure!(fields[5] == "rule.drift", "MSGID: {line}");
        let parsed: serde_json::Value = serde_json::from_str(fields[7]).with_context(|| format!("message: {line}"))?;
        ensure!(parsed == *kafka, "syslog message differs from the Kafka alert:\n{line}");
    }
    println!(
        "syslog: {} records, one line each, ASCII only, message = the Kafka alert",
        lines.len()
    );

    Ok(())
}
