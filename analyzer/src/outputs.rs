//! Alert outputs besides Kafka, for SIEMs that take syslog or HTTP: RFC 5424
//! syslog over UDP or TCP (RFC 6587 octet counting) and an HTTP webhook in
//! Splunk HTTP Event Collector form. Kafka (`glasshouse.alerts`) stays the
//! durable path; these are best effort: a bounded queue per output, retries
//! with backoff, and what is dropped is counted (`/metrics`).
//!
//! Escaping, per format, of the container-controlled strings an alert holds:
//! - syslog: the header fields are ours (host name, `glasshouse`, the rule
//!   as MSGID), reduced to printable ASCII without spaces; the structured
//!   data (`[glasshouse@32473 workload="…" container="…" …]`) escapes `"`,
//!   `\` and `]` as RFC 5424 requires and writes every other non-printable
//!   or non-ASCII character as `\uXXXX`; the message is the OCSF JSON made
//!   ASCII-only ([`crate::cli::ascii_json`]): no newline, no control byte
//!   can split or forge a record.
//! - webhook: the HEC envelope is built with `serde_json` around the OCSF
//!   object, ASCII-only as well.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::ascii_json;
use crate::engine::Alert;
use crate::error::HttpError;
use crate::finding::Severity;
use crate::internal_events::Metrics;

/// Private enterprise number used for the structured data id (the IANA
/// "example" range is not for production; 32473 is RFC 5612's documentation
/// number, which RFC 5424 tooling accepts). Operators can filter on it.
pub const SD_ID: &str = "glasshouse@32473";

/// Alerts queued per output before new ones are dropped (and counted).
pub const QUEUE: usize = 10_000;

/// Transport of a syslog output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
}

/// One `[[outputs.syslog]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `HOST:PORT` of the collector.
    pub address: SocketAddr,
    /// `udp` (default) or `tcp` (octet-counted frames).
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// Syslog facility number. Default: 10 (authpriv, security messages).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// APP-NAME. Default: `glasshouse`.
    #[serde(default = "default_app")]
    pub app_name: String,
}

fn default_protocol() -> Protocol {
    Protocol::Udp
}
fn default_facility() -> u8 {
    10
}
fn default_app() -> String {
    "glasshouse".into()
}

/// The `[outputs.webhook]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://HOST:PORT/PATH`, e.g. a Splunk HEC's
    /// `http://splunk:8088/services/collector/event`. (HTTPS: put a
    /// TLS-terminating proxy in front for now.)
    pub url: String,
    /// File holding the HEC token, sent as `Authorization: Splunk TOKEN`.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// HEC `sourcetype`. Default: `ocsf:detection_finding`.
    #[serde(default = "default_sourcetype")]
    pub sourcetype: String,
    /// HEC `index`. Default: none (the token's default index).
    #[serde(default)]
    pub index: Option<String>,
}

fn default_sourcetype() -> String {
    "ocsf:detection_finding".into()
}

/// The `[outputs]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputsConfig {
    #[serde(default)]
    pub syslog: Vec<SyslogConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

impl OutputsConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for s in &self.syslog {
            if s.facility > 23 {
                return Err((
                    "outputs.syslog.facility",
                    format!("must be 0 to 23, got {}", s.facility),
                ));
            }
            if s.app_name.is_empty() || s.app_name.len() > 48 || !s.app_name.bytes().all(|b| (33..=126).contains(&b)) {
                return Err((
                    "outputs.syslog.app_name",
                    "must be 1 to 48 printable ASCII characters without spaces".into(),
                ));
            }
        }
        if let Some(w) = &self.webhook {
            parse_http_url(&w.url).map_err(|e| ("outputs.webhook.url", e))?;
        }
        Ok(())
    }
}

/// `(host:port, path)` of an `http://` URL.
fn parse_http_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            format!("{url:?}: https is not supported yet; use http:// (behind a TLS-terminating proxy)")
        } else {
            format!("{url:?} must start with http://")
        }
    })?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    if authority.is_empty() || !authority.contains(':') {
        return Err(format!("{url:?} must name HOST:PORT"));
    }
    if !path.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(format!("{url:?}: the path must be printable ASCII without spaces"));
    }
    Ok((authority.to_owned(), path))
}

/// Printable ASCII without spaces, at most `max` characters (RFC 5424
/// header fields); `-` when nothing is left.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if v.is_empty() { "-".into() } else { v }
}

/// An RFC 5424 SD-PARAM value: `"`, `\` and `]` escaped with a backslash;
/// controls and non-ASCII as `\uXXXX`.
/// Cut after [`crate::escape::MAX_FIELD`] bytes like every other output.
fn sd_value(s: &str) -> String {
    let s = crate::ocsf::cut(s, crate::escape::MAX_FIELD);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out
}

fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Informational => 6,
    }
}

/// The RFC 5424 record of an alert (without transport framing).
pub fn syslog_record(alert: &Alert, config: &SyslogConfig, host: &str) -> String {
    let f = &alert.finding;
    let pri = u16::from(config.facility) * 8 + u16::from(syslog_severity(f.severity));
    let mut sd = format!(
        "[{SD_ID} uid=\"{}\" workload=\"{}\" container=\"{}\" rule=\"{}\" severity=\"{}\" baseline=\"{}\" count=\"{}\"",
        sd_value(&alert.uid),
        sd_value(&f.workload),
        sd_value(&f.container.id),
        sd_value(f.rule),
        f.severity.as_str(),
        f.baseline_version,
        alert.count
    );
    if let Some(name) = &f.container.name {
        let _ = write!(sd, " container_name=\"{}\"", sd_value(name));
    }
    if let Some(t) = f.technique {
        let _ = write!(sd, " technique=\"{}\"", t.uid);
    }
    sd.push(']');
    format!(
        "<{pri}>1 {} {} {} - {} {sd} {}",
        crate::view::timestamp(f.time_ns),
        header_field(host, 255),
        header_field(&config.app_name, 48),
        header_field(f.rule, 32),
        ascii_json(alert.document.json())
    )
}

/// The Splunk HEC event of an alert.
pub fn hec_event(alert: &Alert, config: &WebhookConfig, host: &str) -> String {
    let mut v = serde_json::json!({
        "time": alert.finding.time_ns as f64 / 1e9,
        "host": host,
        "source": "glasshouse",
        "sourcetype": config.sourcetype,
        "event": alert.document.value(),
    });
    if let Some(index) = &config.index {
        v["index"] = serde_json::json!(index);
    }
    ascii_json(&v.to_string())
}

/// One running output's queue.
#[derive(Debug)]
struct Queue {
    name: &'static str,
    tx: mpsc::Sender<Arc<Alert>>,
    metrics: Arc<Metrics>,
}

/// The running outputs: hand alerts to [`Outputs::send`].
#[derive(Debug, Default)]
pub struct Outputs {
    queues: Vec<Queue>,
}

impl Outputs {
    /// Starts a task per configured output.
    pub fn start(
        config: &OutputsConfig,
        metrics: &Arc<Metrics>,
        cancel: &CancellationToken,
    ) -> Result<Outputs, String> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mut queues = Vec::new();
        for s in &config.syslog {
            let (tx, rx) = mpsc::channel(QUEUE);
            let name = match s.protocol {
                Protocol::Udp => "syslog_udp",
                Protocol::Tcp => "syslog_tcp",
            };
            tokio::spawn(run_syslog(
                s.clone(),
                host.clone(),
                rx,
                (name, metrics.clone()),
                cancel.clone(),
            ));
            queues.push(Queue {
                name,
                tx,
                metrics: metrics.clone(),
            });
        }
        if let Some(w) = &config.webhook {
            let token = match &w.token_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| format!("outputs.webhook.token_file {}: {e}", p.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run_webhook(
                w.clone(),
                token,
                host.clone(),
                rx,
                metrics.clone(),
                cancel.clone(),
            ));
            queues.push(Queue {
                name: "webhook",
                tx,
                metrics: metrics.clone(),
            });
        }
        Ok(Outputs { queues })
    }

    /// Queues an alert on every output; a full queue drops it (counted).
    pub fn send(&self, alert: &Arc<Alert>) {
        for q in &self.queues {
            if q.tx.try_send(alert.clone()).is_err() {
                q.metrics.output_queue_full(q.name, &alert.uid);
            }
        }
    }
}

/// Attempts per alert before it is dropped.
const ATTEMPTS: u32 = 5;

async fn run_syslog(
    config: SyslogConfig,
    host: String,
    mut rx: mpsc::Receiver<Arc<Alert>>,
    (name, metrics): (&'static str, Arc<Metrics>),
    cancel: CancellationToken,
) {
    let mut tcp: Option<tokio::net::TcpStream> = None;
    let udp = match config.protocol {
        Protocol::Udp => match tokio::net::UdpSocket::bind(if config.address.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })
        .await
        {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::error!(%error, "syslog UDP socket, output disabled");
                return;
            }
        },
        Protocol::Tcp => None,
    };
    loop {
        let alert = tokio::select! {
            a = rx.recv() => match a { Some(a) => a, None => return },
            () = cancel.cancelled() => return,
        };
        let record = syslog_record(&alert, &config, &host);
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            let sent = match &udp {
                Some(socket) => socket.send_to(record.as_bytes(), config.address).await.map(|_| ()),
                None => send_tcp(&mut tcp, config.address, &record).await,
            };
            match sent {
                Ok(()) => {
                    metrics.output_sent(name);
                    break;
                }
                Err(error) => {
                    tcp = None;
                    let error = format!("{error} (syslog at {})", config.address);
                    metrics.output_failed(name, &alert.uid, attempt == ATTEMPTS, &error);
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
    }
}

/// Sends one octet-counted frame (RFC 6587), connecting first if needed.
async fn send_tcp(conn: &mut Option<tokio::net::TcpStream>, address: SocketAddr, record: &str) -> std::io::Result<()> {
    if conn.is_none() {
        let s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(address))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        *conn = Some(s);
    }
    let s = conn.as_mut().expect("connected above");
    let frame = format!("{} {record}", record.len());
    tokio::time::timeout(Duration::from_secs(5), s.write_all(frame.as_bytes()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

async fn run_webhook(
    config: WebhookConfig,
    token: Option<String>,
    host: String,
    mut rx: mpsc::Receiver<Arc<Alert>>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let Ok((authority, path)) = parse_http_url(&config.url) else {
        return;
    };
    loop {
        let alert = tokio::select! {
            a = rx.recv() => match a { Some(a) => a, None => return },
            () = cancel.cancelled() => return,
        };
        let body = hec_event(&alert, &config, &host);
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            match post(&authority, &path, token.as_deref(), &body).await {
                Ok(()) => {
                    metrics.output_sent("webhook");
                    break;
                }
                Err(error) => {
                    let error = glasshouse_runtime::service::error_chain(&error);
                    metrics.output_failed("webhook", &alert.uid, attempt == ATTEMPTS, &error);
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
    }
}

/// One HTTP/1.1 POST; Ok on a 2xx answer.
async fn post(authority: &str, path: &str, token: Option<&str>, body: &str) -> Result<(), HttpError> {
    const DEADLINE: Duration = Duration::from_secs(10);
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| HttpError::Connect(authority.to_owned(), e))?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Splunk {t}\r\n"));
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await.map_err(HttpError::Send)?;
        let mut answer = Vec::new();
        s.take(64 * 1024)
            .read_to_end(&mut answer)
            .await
            .map_err(HttpError::Read)?;
        Ok::<_, HttpError>(answer)
    };
    let answer = tokio::time::timeout(DEADLINE, exchange)
        .await
        .map_err(|_| HttpError::Timeout(DEADLINE))??;
    let status = String::from_utf8_lossy(&answer);
    let line = status.lines().next().unwrap_or_default();
    let code = line.split_whitespace().nth(1).unwrap_or_default();
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(HttpError::Status(crate::escape::terminal(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{Anomaly, Container, Finding};

    fn alert(name: &str) -> Alert {
        let f = Finding {
            workload: "default/web\"]evil".into(),
            rule: "rule.interactive_shell",
            key: "k".into(),
            title: format!("shell in {name}"),
            desc: "d".into(),
            severity: Severity::High,
            confidence: 90,
            technique: Some(crate::finding::UNIX_SHELL),
            anomaly: Anomaly {
                parameter: "p".into(),
                observed: name.into(),
                baseline: vec![],
                fleet: None,
            },
            container: Container {
                id: "c0ffee".into(),
                name: Some(name.into()),
                image: None,
                image_id: None,
                host: "h".into(),
            },
            process: None,
            endpoint: None,
            file: None,
            baseline_version: 3,
            baseline_state: "stable",
            score: 1.0,
            time_ns: 1_764_000_000_123_000_000,
            event_id: None,
        };
        let document = crate::ocsf::detection_finding(&f, "gh-1", crate::ocsf::Activity::Create, 1, f.time_ns);
        Alert {
            workload: f.workload.clone(),
            partition: 0,
            uid: "gh-1".into(),
            document,
            finding: f,
            count: 1,
        }
    }

    #[test]
    fn syslog_records_are_rfc5424_and_cannot_be_split_or_forged() {
        let hostile = "web\n<13>1 2026-01-01T00:00:00Z forged - - - [x] hi\u{1b}[2J]\"\\\u{202e}";
        let config = SyslogConfig {
            address: "127.0.0.1:514".parse().unwrap(),
            protocol: Protocol::Udp,
            facility: 10,
            app_name: "glasshouse".into(),
        };
        let r = syslog_record(&alert(hostile), &config, "node 1");
        assert!(r.is_ascii() && !r.contains('\n') && !r.contains('\u{1b}'), "{r}");
        assert!(r.starts_with("<83>1 2025-11-24T16:00:00.123Z node1 glasshouse - rule.interactive_shell [glasshouse@32473 uid=\"gh-1\""), "{r}");
        assert!(r.contains(r#"workload="default/web\"\]evil""#), "{r}");
        assert!(r.contains(r#"container_name="web\u000a<13>1"#), "{r}");
        assert!(r.contains(r#"technique="T1059.004"]"#), "{r}");
        // The message is the alert's JSON, unchanged once parsed.
        let msg = &r[r.find("] {").unwrap() + 2..];
        let parsed: serde_json::Value = serde_json::from_str(msg).unwrap();
        assert_eq!(parsed["evidences"][0]["container"]["name"], hostile);
    }

    #[test]
    fn hec_events_wrap_the_ocsf_object() {
        let config = WebhookConfig {
            url: "http://splunk:8088/services/collector/event".into(),
            token_file: None,
            sourcetype: default_sourcetype(),
            index: Some("security".into()),
        };
        let e = hec_event(&alert("w\u{202e}"), &config, "node-1");
        assert!(e.is_ascii());
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["sourcetype"], "ocsf:detection_finding");
        assert_eq!(v["index"], "security");
        assert_eq!(v["event"]["class_uid"], 2004);
        assert_eq!(v["event"]["evidences"][0]["container"]["name"], "w\u{202e}");
        assert!((v["time"].as_f64().unwrap() - 1_764_000_000.123).abs() < 1e-3);
    }

    #[test]
    fn webhook_urls_are_checked() {
        assert_eq!(
            parse_http_url("http://h:8088/services/collector/event").unwrap(),
            ("h:8088".into(), "/services/collector/event".into())
        );
        assert_eq!(parse_http_url("http://h:80").unwrap(), ("h:80".into(), "/".into()));
        assert!(
            parse_http_url("https://h:8088/x")
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!(parse_http_url("ftp://h").is_err());
        assert!(parse_http_url("http://h/x").unwrap_err().contains("HOST:PORT"));
    }
}
