//! What `glasshouse vulns` does: import advisories (files, directories of
//! an extracted osv.dev dump, or an `http://` URL) onto
//! `glasshouse.advisories`, and show the findings of
//! `glasshouse.vulnerabilities` per container or per image, with the fixed
//! version to upgrade to. Every container-derived string is escaped.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use glasshouse_proto::record::{TOPIC_ADVISORIES, TOPIC_VULNERABILITIES};
use glasshouse_runtime::kafka::Kafka;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::escape::terminal;
use crate::vulns::matcher::{State, Vulnerability};
use crate::vulns::osv::{self, Advisory};

/// Most bytes of one advisory file or URL.
const MAX_SOURCE_BYTES: u64 = 256 << 20;

/// Reads advisories from a file (one advisory, an array, or JSON lines), a
/// directory (every `*.json` below it), or an `http://` URL.
pub async fn load(source: &str) -> Result<Vec<Advisory>, String> {
    if let Some(rest) = source.strip_prefix("http://") {
        let (hostport, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let addr = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:80")
        };
        let body = crate::cli::http_get(&addr, &path, None)
            .await
            .map_err(|e| format!("{source}: {}", glasshouse_runtime::service::error_chain(&e)))?;
        return osv::parse_many(body.as_bytes()).map_err(|e| format!("{source}: {e}"));
    }
    if source.starts_with("https://") {
        return Err(format!(
            "{source}: https is not supported by this build; download it (e.g. curl -fLO) and import the file"
        ));
    }
    let path = Path::new(source);
    let mut files = Vec::new();
    collect(path, &mut files).map_err(|e| format!("{source}: {e}"))?;
    if files.is_empty() {
        return Err(format!("{source}: no .json files"));
    }
    let mut out = Vec::new();
    for f in files {
        let meta = std::fs::metadata(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        if meta.len() > MAX_SOURCE_BYTES {
            return Err(format!("{}: larger than {MAX_SOURCE_BYTES} bytes", f.display()));
        }
        let bytes = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        out.extend(osv::parse_many(&bytes).map_err(|e| format!("{}: {e}", f.display()))?);
    }
    Ok(out)
}

fn collect(path: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "json") {
                collect(&e, out)?;
            }
        }
    } else {
        out.push(path.to_owned());
    }
    Ok(())
}

/// Publishes advisories to `glasshouse.advisories` (key = id) and waits
/// until Kafka has every one.
pub async fn publish(kafka: &Kafka, advisories: &[Advisory]) -> Result<(), String> {
    let brokers = &kafka.brokers;
    let producer: FutureProducer = kafka
        .client(&[
            ("enable.idempotence", "true"),
            ("compression.type", "zstd"),
            ("message.timeout.ms", "30000"),
        ])
        .create()
        .map_err(|e| format!("kafka producer for {brokers}: {e}"))?;
    let mut futures = Vec::with_capacity(advisories.len());
    for a in advisories {
        let json = serde_json::to_string(a).map_err(|e| e.to_string())?;
        let f = producer
            .send_result(FutureRecord::to(TOPIC_ADVISORIES).key(a.id.as_str()).payload(&json))
            .map_err(|(e, _)| format!("enqueueing {}: {e}", a.id))?;
        futures.push((a.id.clone(), f));
    }
    for (id, f) in futures {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(format!("writing advisory {id} to {TOPIC_ADVISORIES} at {brokers}: {e}")),
            Err(_) => return Err("producer gone".into()),
        }
    }
    producer.flush(Duration::from_secs(10)).map_err(|e| e.to_string())?;
    Ok(())
}

/// The current rows of `glasshouse.vulnerabilities` (unreadable ones skipped).
pub fn read(kafka: &Kafka) -> Result<Vec<Vulnerability>, String> {
    let latest = crate::vulns::service::read_compacted(kafka, TOPIC_VULNERABILITIES, Duration::from_secs(30))
        .map_err(|e| glasshouse_runtime::service::error_chain(&e))?;
    Ok(latest
        .into_values()
        .filter_map(|v| serde_json::from_slice::<Vulnerability>(&v).ok())
        .collect())
}

/// Which findings to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Container id (or a prefix of it) or name.
    pub container: Option<String>,
    /// Image reference or digest (or a prefix).
    pub image: Option<String>,
    /// Resolved findings too.
    pub all: bool,
}

impl Filter {
    pub fn keeps(&self, v: &Vulnerability) -> bool {
        (self.all || v.state == State::Open)
            && self.container.as_ref().is_none_or(|c| {
                v.container_id.starts_with(c.as_str()) || v.container_name.as_deref() == Some(c.as_str())
            })
            && self.image.as_ref().is_none_or(|i| {
                v.image.as_deref().is_some_and(|x| x.starts_with(i.as_str()))
                    || v.image_digest.as_deref().is_some_and(|x| x.starts_with(i.as_str()))
            })
    }
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "Critical" => 0,
        "High" => 1,
        "Medium" => 2,
        "Low" => 3,
        _ => 4,
    }
}

/// `glasshouse vulns list`: per container, its findings (worst first) with
/// the version that fixes each.
pub fn containers_report(rows: &[Vulnerability], filter: &Filter) -> String {
    let mut by_container: BTreeMap<(String, String), Vec<&Vulnerability>> = BTreeMap::new();
    for v in rows.iter().filter(|v| filter.keeps(v)) {
        let name = v.container_name.clone().unwrap_or_default();
        by_container.entry((name, v.container_id.clone())).or_default().push(v);
    }
    let mut out = String::new();
    if by_container.is_empty() {
        out.push_str("no vulnerabilities found\n");
        return out;
    }
    for ((name, id), mut list) in by_container {
        list.sort_by(|a, b| {
            severity_rank(&a.severity)
                .cmp(&severity_rank(&b.severity))
                .then(a.package.cmp(&b.package))
                .then(a.advisory_id.cmp(&b.advisory_id))
        });
        let first = list[0];
        out.push_str(&format!(
            "container {} {}  image {}  digest {}  ({} findings)\n",
            terminal(&id[..id.len().min(12)]),
            terminal(&name),
            terminal(first.image.as_deref().unwrap_or("-")),
            terminal(first.image_digest.as_deref().unwrap_or("-")),
            list.len()
        ));
        out.push_str(&format!(
            "  {:<9} {:<24} {:<26} {:<22} {:<16} {:<9} {}\n",
            "SEVERITY", "PACKAGE", "INSTALLED", "ADVISORY", "CVE", "STATE", "FIX"
        ));
        for v in list {
            let fix = match &v.fixed_version {
                Some(f) => format!("upgrade to {}", terminal(f)),
                None => "no fix known".to_owned(),
            };
            out.push_str(&format!(
                "  {:<9} {:<24} {:<26} {:<22} {:<16} {:<9} {}\n",
                v.severity,
                terminal(&v.package),
                terminal(&v.installed_version),
                terminal(&v.advisory_id),
                terminal(v.cves.first().map_or("-", String::as_str)),
                match v.state {
                    State::Open => "open",
                    State::Resolved => "resolved",
                },
                fix
            ));
        }
    }
    out
}

/// `glasshouse vulns images`: per image (and digest), the containers that
/// run it, open findings by severity, and the packages to upgrade.
pub fn images_report(rows: &[Vulnerability], filter: &Filter) -> String {
    #[derive(Default)]
    struct Image {
        containers: std::collections::BTreeSet<String>,
        by_severity: BTreeMap<u8, (String, usize)>,
        /// (package, fixed version): containers of one image may have
        /// diverged (packages installed or upgraded in place).
        fixes: std::collections::BTreeSet<(String, String)>,
    }
    let mut images: BTreeMap<(String, String), Image> = BTreeMap::new();
    for v in rows.iter().filter(|v| filter.keeps(v) && v.state == State::Open) {
        let key = (
            v.image.clone().unwrap_or_else(|| "-".into()),
            v.image_digest.clone().unwrap_or_else(|| "-".into()),
        );
        let i = images.entry(key).or_default();
        i.containers.insert(v.container_id.clone());
        let e = i
            .by_severity
            .entry(severity_rank(&v.severity))
            .or_insert_with(|| (v.severity.clone(), 0));
        e.1 += 1;
        if let Some(f) = &v.fixed_version {
            i.fixes.insert((v.package.clone(), f.clone()));
        }
    }
    if images.is_empty() {
        return "no vulnerable images\n".into();
    }
    let mut out = format!(
        "{:<44} {:<20} {:>10}  {:<32} {}\n",
        "IMAGE", "DIGEST", "CONTAINERS", "OPEN", "UPGRADE"
    );
    for ((image, digest), i) in images {
        let open: Vec<String> = i.by_severity.values().map(|(s, n)| format!("{n} {s}")).collect();
        let fixes: Vec<String> = i
            .fixes
            .iter()
            .map(|(p, f)| format!("{} {}", terminal(p), terminal(f)))
            .collect();
        out.push_str(&format!(
            "{:<44} {:<20} {:>10}  {:<32} {}\n",
            terminal(&image),
            terminal(&digest[..digest.len().min(19)]),
            i.containers.len(),
            open.join(", "),
            if fixes.is_empty() {
                "-".to_owned()
            } else {
                fixes.join(", ")
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(container: &str, package: &str, severity: &str, fixed: Option<&str>, state: State) -> Vulnerability {
        Vulnerability {
            key: format!("{container}/{package}"),
            state,
            container_id: container.into(),
            container_name: Some(format!("name-\u{1b}[2J{container}")),
            workload_id: "w".into(),
            host: "h".into(),
            image: Some("localhost/app:1".into()),
            image_id: None,
            image_digest: Some("sha256:abcdef".into()),
            ecosystem: "Debian:12".into(),
            package: package.into(),
            source_package: None,
            installed_version: "1.0-1".into(),
            location: "/var/lib/dpkg/status".into(),
            advisory_id: "DSA-1-1".into(),
            aliases: vec![],
            cves: vec!["CVE-2024-1".into()],
            summary: None,
            severity: severity.into(),
            cvss_score: None,
            fixed_version: fixed.map(Into::into),
            first_seen: String::new(),
            last_seen: String::new(),
            resolved_at: None,
            first_seen_ms: 0,
            last_seen_ms: 0,
        }
    }

    #[test]
    fn reports_show_fixes_worst_first_and_escape() {
        let rows = vec![
            v("c1", "zlib1g", "Low", None, State::Open),
            v("c1", "libssl3", "Critical", Some("3.0.11-1~deb12u2"), State::Open),
            v("c2", "libssl3", "Critical", Some("3.0.11-1~deb12u2"), State::Resolved),
        ];
        let text = containers_report(&rows, &Filter::default());
        assert!(!text.contains('\u{1b}'), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("container c1 name-\\u{1b}[2Jc1"), "{text}");
        assert!(
            lines[2].contains("Critical") && lines[2].ends_with("upgrade to 3.0.11-1~deb12u2"),
            "{text}"
        );
        assert!(
            lines[3].contains("zlib1g") && lines[3].ends_with("no fix known"),
            "{text}"
        );
        assert_eq!(lines.len(), 4, "resolved findings hidden: {text}");
        let all = containers_report(
            &rows,
            &Filter {
                all: true,
                ..Filter::default()
            },
        );
        assert!(all.contains("resolved"), "{all}");
        let only = containers_report(
            &rows,
            &Filter {
                container: Some("c2".into()),
                ..Filter::default()
            },
        );
        assert_eq!(only, "no vulnerabilities found\n");

        let images = images_report(&rows, &Filter::default());
        let line = images.lines().nth(1).unwrap();
        assert!(line.starts_with("localhost/app:1"), "{images}");
        assert!(
            line.contains("1 Critical, 1 Low") && line.ends_with("libssl3 3.0.11-1~deb12u2"),
            "{images}"
        );
    }

    #[test]
    fn diverged_containers_of_one_image_show_every_fix() {
        let rows = vec![
            v("c1", "libssl3", "High", Some("3.0.11-1~deb12u2"), State::Open),
            v("c2", "libssl3", "High", Some("3.1.4-r1"), State::Open),
        ];
        let images = images_report(&rows, &Filter::default());
        assert!(
            images
                .lines()
                .nth(1)
                .unwrap()
                .ends_with("libssl3 3.0.11-1~deb12u2, libssl3 3.1.4-r1"),
            "{images}"
        );
    }

    #[tokio::test]
    async fn advisories_load_from_files_and_directories() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/osv");
        let all = load(dir.to_str().unwrap()).await.unwrap();
        let mut ids: Vec<_> = all.iter().map(|a| a.id.as_str()).collect();
        ids.sort();
        assert_eq!(
            ids,
            [
                "ALPINE-CVE-2023-5678",
                "ALSA-2024:2447",
                "DSA-5417-1",
                "DSA-5532-1",
                "GHSA-j8r2-6x86-q33q",
                "GHSA-xvch-5gv4-984h"
            ]
        );
        let e = load("/nonexistent/osv").await.unwrap_err();
        assert!(e.starts_with("/nonexistent/osv: "), "{e}");
        let e = load("https://osv-vulnerabilities.storage.googleapis.com/npm/all.zip")
            .await
            .unwrap_err();
        assert!(e.contains("https is not supported"), "{e}");
        let bad = tempfile_with(b"{\"id\": 5}");
        let e = load(bad.to_str().unwrap()).await.unwrap_err();
        assert!(e.contains("not an OSV advisory"), "{e}");
        let _ = std::fs::remove_file(bad);
    }

    fn tempfile_with(bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("glasshouse-osv-{}.json", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }
}
