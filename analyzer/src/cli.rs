//! What the `glasshouse` command line shows: alerts as they arrive,
//! baselines, and the analyzers' live container scores. Every string that
//! came from a container (names, paths, workload ids derived from image
//! names) is escaped for the terminal ([`crate::escape`]); JSON output is
//! ASCII-only ([`ascii_json`]), so it cannot carry terminal controls either.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use glasshouse_proto::record::TOPIC_ALERTS;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::baseline::Baseline;
use crate::error::HttpError;
use crate::escape::terminal;
use crate::view::timestamp;

/// JSON text with every non-ASCII character written as a `\u` escape (the
/// same value, readable by any JSON parser, harmless on a terminal).
pub fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{u:04x}");
            }
        }
    }
    out
}

/// One alert as a terminal line: time, severity, container, rule, title,
/// technique, workload, baseline version, count.
pub fn alert_line(doc: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| terminal(v.as_str().unwrap_or("?"));
    let gh = &doc["unmapped"]["glasshouse"];
    let container = doc["evidences"][0]["container"]["uid"].as_str().unwrap_or("?");
    let technique = doc["finding_info"]["attacks"][0]["technique"]["uid"]
        .as_str()
        .map_or(String::new(), |t| format!(" [{}]", terminal(t)));
    let count = doc["count"].as_u64().unwrap_or(1);
    format!(
        "{}  {:<8} {} {}  {}  {}{technique}  workload={} baseline=v{} ({}){}",
        timestamp(doc["time"].as_i64().unwrap_or(0).saturating_mul(1_000_000)),
        s(&doc["severity"]),
        terminal(container.get(..12).unwrap_or(container)),
        s(&doc["evidences"][0]["container"]["name"]),
        s(&gh["rule"]),
        s(&doc["finding_info"]["title"]),
        s(&gh["workload"]),
        gh["baseline_version"].as_u64().unwrap_or(0),
        s(&gh["baseline_state"]),
        if count > 1 { format!(" x{count}") } else { String::new() },
    )
}

/// `glasshouse alerts tail`: alerts from `glasshouse.alerts` as they arrive
/// (or from the oldest kept), as lines or as JSON, until `cancel`. With the
/// control key, an alert not signed with it (not from an analyzer) is not
/// shown, only logged; without it every alert is shown, unchecked.
pub async fn alerts_tail<W: Write>(
    kafka: &glasshouse_runtime::kafka::Kafka,
    key: Option<&crate::sign::Key>,
    json: bool,
    from_beginning: bool,
    mut out: W,
    cancel: CancellationToken,
) -> Result<u64, String> {
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let group = format!("glasshouse-alerts-tail-{}-{started_ms}", std::process::id());
    let consumer: StreamConsumer = glasshouse_runtime::kafka::for_consumer(&mut kafka.client(&[
        ("group.id", &group),
        ("enable.auto.commit", "false"),
        ("topic.metadata.refresh.interval.ms", "5000"),
        ("auto.offset.reset", if from_beginning { "earliest" } else { "latest" }),
    ]))
    .create()
    .map_err(|e| format!("kafka consumer for {kafka}: {e}"))?;
    consumer
        .subscribe(&[TOPIC_ALERTS])
        .map_err(|e| format!("subscribing to {TOPIC_ALERTS}: {e}"))?;
    let mut shown = 0;
    loop {
        let m = tokio::select! {
            m = consumer.recv() => m,
            () = cancel.cancelled() => break,
        };
        let m = match m {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "kafka consumer error, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Some(key) = key {
            let signature = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == crate::sign::HEADER))
                .and_then(|h| h.value);
            let payload = m.payload().unwrap_or_default();
            if let Err(error) = key.verify(TOPIC_ALERTS, m.key().unwrap_or_default(), payload, signature) {
                tracing::warn!(%error, partition = m.partition(), offset = m.offset(), "alert not from an analyzer, not shown");
                continue;
            }
        }
        let text = String::from_utf8_lossy(m.payload().unwrap_or_default());
        let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(&text) else {
            tracing::warn!(offset = m.offset(), "alert that is not JSON, skipped");
            continue;
        };
        let line = if json {
            // Anyone who can write to the topic decides how long it is.
            crate::ocsf::cut_strings(&mut doc, crate::escape::MAX_FIELD);
            ascii_json(&doc.to_string())
        } else {
            alert_line(&doc)
        };
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
        shown += 1;
    }
    consumer.unsubscribe();
    Ok(shown)
}

fn ago(now_ns: i64, then_ns: i64) -> String {
    let s = (now_ns - then_ns).max(0) / 1_000_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `glasshouse baselines list`: one line per workload.
pub fn baselines_table(baselines: &[&Baseline]) -> String {
    let now = crate::clock::system_ns();
    let mut out = format!(
        "{:<40} {:<9} {:>8} {:>9} {:>9} {:>8} {:>6} {:>7}\n",
        "WORKLOAD", "STATE", "VERSION", "EVENTS", "FEATURES", "REPLICAS", "HOSTS", "CHANGED"
    );
    for b in baselines {
        let features: usize = b.features.values().map(|m| m.len()).sum();
        let changed = b.history.back().map_or(b.created_ns, |c| c.time_ns);
        let _ = writeln!(
            out,
            "{:<40} {:<9} {:>8} {:>9} {:>9} {:>8} {:>6} {:>7}",
            terminal(&b.workload),
            b.state.as_str(),
            b.version,
            b.events,
            features,
            b.next_replica,
            b.hosts.len(),
            ago(now, changed)
        );
    }
    out
}

/// `glasshouse baselines show`: what one baseline holds, per phase and kind,
/// most frequent first, and its recent changes.
pub fn baseline_report(b: &Baseline) -> String {
    let now = crate::clock::system_ns();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workload {}\nstate {} since {}, version {}, {} events learned, {} replicas on {} hosts",
        terminal(&b.workload),
        b.state.as_str(),
        timestamp(b.state_since_ns),
        b.version,
        b.events,
        b.next_replica,
        b.hosts.len()
    );
    if !b.images.is_empty() {
        let images: Vec<String> = b.images.iter().map(|i| terminal(i)).collect();
        let _ = writeln!(out, "images {}", images.join(", "));
    }
    let mut keys: Vec<_> = b.features.keys().copied().collect();
    keys.sort();
    for (phase, kind) in keys {
        let mut values: Vec<_> = b.features[&(phase, kind)].iter().collect();
        values.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        let _ = writeln!(out, "{} {} ({} values)", phase.as_str(), kind.as_str(), values.len());
        for (value, s) in values {
            let _ = writeln!(
                out,
                "  {:>9}  replicas {:>3}  hosts {:>3}  last {:>4} ago  {}",
                s.count,
                s.replica_count(),
                s.host_count(),
                ago(now, s.last_seen_ns),
                terminal(value)
            );
        }
    }
    for (metric, m) in &b.resources {
        if let Some((median, mad)) = m.median_mad() {
            let _ = writeln!(
                out,
                "resources {}: median {median:.3}, MAD {mad:.3}, max {:.3} over {} samples",
                metric.as_str(),
                m.max().unwrap_or(0.0),
                m.samples.len()
            );
        }
    }
    let _ = writeln!(out, "changes (latest last):");
    for c in &b.history {
        let _ = writeln!(
            out,
            "  v{:<6} {}  {}",
            c.version,
            timestamp(c.time_ns),
            terminal(&c.what)
        );
    }
    out
}

/// One container's live score, as an analyzer serves it on `/containers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRow {
    pub container_id: String,
    pub name: Option<String>,
    pub image: Option<String>,
    pub host: String,
    pub workload: String,
    pub score: f64,
    pub baseline_state: String,
}

/// `glasshouse containers`: the live scores, highest first.
pub fn containers_table(rows: &[ContainerRow]) -> String {
    let mut out = format!(
        "{:<12} {:<24} {:<36} {:<16} {:>6}  {}\n",
        "CONTAINER", "NAME", "WORKLOAD", "HOST", "SCORE", "BASELINE"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<12} {:<24} {:<36} {:<16} {:>6.2}  {}",
            terminal(r.container_id.get(..12).unwrap_or(&r.container_id)),
            terminal(r.name.as_deref().unwrap_or("?")),
            terminal(&r.workload),
            terminal(&r.host),
            r.score,
            terminal(&r.baseline_state)
        );
    }
    out
}

/// The bearer token in `path` for an endpoint's `metrics_token_file`, read
/// as the endpoint reads it (the whole file, trimmed).
pub fn metrics_token(path: &std::path::Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// `GET path` over HTTP/1.0 from `addr` (`HOST:PORT`), with a bearer token
/// when given: the body of a 200 answer, or why not (10 s deadline, 16 MiB cap).
pub async fn http_get(addr: &str, path: &str, token: Option<&str>) -> Result<String, HttpError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const DEADLINE: Duration = Duration::from_secs(10);
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| HttpError::Connect(addr.to_owned(), e))?;
        let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").as_bytes())
            .await
            .map_err(HttpError::Send)?;
        let mut raw = Vec::new();
        s.take(16 << 20).read_to_end(&mut raw).await.map_err(HttpError::Read)?;
        Ok::<_, HttpError>(raw)
    };
    let raw = tokio::time::timeout(DEADLINE, exchange)
        .await
        .map_err(|_| HttpError::Timeout(DEADLINE))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(HttpError::Malformed)?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(HttpError::Status(terminal(status)));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_is_ascii_and_means_the_same() {
        let v = serde_json::json!({ "name": "evil\u{202e}\u{1b}[2J\u{1F600}", "n": 1 });
        let a = ascii_json(&v.to_string());
        assert!(a.is_ascii() && !a.contains('\u{1b}'), "{a}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&a).unwrap(), v);
    }

    #[test]
    fn alert_lines_escape_container_strings() {
        let doc = serde_json::json!({
            "time": 1_764_000_000_000i64,
            "severity": "High",
            "count": 3,
            "finding_info": { "title": "shell\n\u{1b}[2Jforged", "attacks": [{ "technique": { "uid": "T1059.004" } }] },
            "evidences": [{ "container": { "uid": "0123456789abcdef", "name": "web\u{202e}1" } }],
            "unmapped": { "glasshouse": { "rule": "rule.interactive_shell", "workload": "w", "baseline_version": 7, "baseline_state": "stable" } },
        });
        let line = alert_line(&doc);
        assert!(
            !line.contains('\n') && !line.contains('\u{1b}') && !line.contains('\u{202e}'),
            "{line}"
        );
        assert!(line.contains("0123456789ab web\\u{202e}1"), "{line}");
        assert!(
            line.contains("[T1059.004]") && line.contains("baseline=v7 (stable) x3"),
            "{line}"
        );
    }

    #[test]
    fn baselines_render_escaped() {
        let mut b = Baseline::new("evil\u{1b}[2J", 0, 0);
        let by = b.replica("c1", "h1", 0);
        b.learn(
            &crate::features::Feature::new(crate::features::Phase::Steady, crate::features::Kind::Exec, "/bin/x\ny"),
            2,
            by,
            0,
        );
        let table = baselines_table(&[&b]);
        assert!(table.contains("evil\\u{1b}[2J") && !table.contains('\u{1b}'), "{table}");
        let report = baseline_report(&b);
        assert!(
            report.contains("steady exec (1 values)") && report.contains("/bin/x\\ny"),
            "{report}"
        );
        assert!(!report.contains('\u{1b}'));
    }
}
