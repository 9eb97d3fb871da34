//! Continuous vulnerability assessment and image trust, end to end, with
//! real Podman containers, the real agent reading their package databases
//! from the host, the aggregator, the broker, the analyzer and the
//! `glasshouse` CLI:
//!
//! - a Debian-format container (dpkg `status` with libssl3/openssl
//!   3.0.11-1~deb12u1, `os-release` of Debian 12) and an Alpine-format one
//!   (apk `installed` with libcrypto3/libssl3 3.1.4-r0, Alpine 3.18);
//! - advisories imported with `glasshouse vulns import`: DSA-5532-1 matches
//!   the Debian container (fixed in 3.0.11-1~deb12u2), DSA-5417-1 does not
//!   (fixed in 3.0.9-1, older than what is installed); the Alpine container
//!   has no finding until ALPINE-CVE-2023-5678 is imported, and then is
//!   re-evaluated without any new inventory;
//! - the Debian container's database is upgraded in place: its findings
//!   are resolved;
//! - a container whose `var/lib/dpkg/status` is a link to `/etc/shadow` and
//!   whose Python site directory is a link to a host directory holding a
//!   canary package: the link is refused and named, and nothing of the host
//!   is reported;
//! - a container of an image outside the trust policy raises a Compliance
//!   Finding, the trusted ones do not; the digest reported is the one Podman
//!   has for the image;
//! - every alert validates against the official OCSF 1.8 schema, and the CLI
//!   shows the findings per container and per image with the fixed version;
//! - the analyzer's lake serves the same findings as the SQL table
//!   `vulnerabilities` (the latest row of each finding, through real `psql`);
//! - a restarted analyzer replays the inventories and takes over the
//!   published findings without alerting them again.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_analyzer::vulns::matcher::{State, Vulnerability};
use glasshouse_proto::record::{RecordType, TOPIC_ALERTS, TOPIC_VULNERABILITIES};
use glasshouse_proto::{inventory, ipc};
use glasshouse_tests::{Stack, TEST_IMAGE, cli, free_port, manifest_dir, podman, workspace_binary};
use tokio_util::sync::CancellationToken;

fn write(root: &Path, rel: &str, content: &str) -> anyhow::Result<()> {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().context("no parent")?)?;
    std::fs::write(p, content)?;
    Ok(())
}

/// Creates a container of `image` running `sleep`, copies `tree` into its
/// root, starts it; returns its id.
fn container(name: &str, image: &str, tree: Option<&Path>) -> anyhow::Result<String> {
    let id = podman(&["create", "--name", name, image, "sleep", "600"])?;
    if let Some(tree) = tree {
        podman(&["cp", &format!("{}/.", tree.display()), &format!("{name}:/")])?;
    }
    podman(&["start", name])?;
    Ok(id)
}

/// Polls `glasshouse.vulnerabilities` until `done` holds (60 s).
async fn wait_rows(
    brokers: &str,
    what: &str,
    done: impl Fn(&[Vulnerability]) -> bool,
) -> anyhow::Result<Vec<Vulnerability>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let b = brokers.to_owned();
        let rows = tokio::task::spawn_blocking(move || {
            glasshouse_analyzer::vulns::cli::read(&glasshouse_runtime::kafka::Kafka::new(b, Default::default()))
        })
        .await?
        .map_err(anyhow::Error::msg)?;
        if done(&rows) {
            return Ok(rows);
        }
        if Instant::now() > deadline {
            let all = glasshouse_tests::topics::read_all(brokers, TOPIC_VULNERABILITIES)?;
            anyhow::bail!(
                "{what}: not after 90 s; {} messages on the topic: {all:#?}; latest rows: {rows:#?}",
                all.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn of<'a>(rows: &'a [Vulnerability], container: &str) -> Vec<&'a Vulnerability> {
    let mut v: Vec<_> = rows.iter().filter(|r| r.container_id == container).collect();
    v.sort_by(|a, b| (&a.package, &a.advisory_id).cmp(&(&b.package, &b.advisory_id)));
    v
}

/// Every inventory row on the topic now.
fn inventories(brokers: &str) -> anyhow::Result<Vec<inventory::Row>> {
    let mut rows = Vec::new();
    for value in glasshouse_tests::topics::read_all_bytes(brokers, RecordType::Inventory.topic())? {
        rows.extend(inventory::read_rows(&ipc::decode(&value)?)?);
    }
    Ok(rows)
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut args = vec!["rm", "-f", "-t", "0"];
        args.extend(self.0.iter().map(String::as_str));
        // Ignored: best-effort cleanup.
        let _ = podman(&args);
        let _ = podman(&["rmi", "-f", "localhost/glasshouse-untrusted:vulns"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_are_matched_continuously_and_untrusted_images_found() -> anyhow::Result<()> {
    let mut stack = Stack::builder().aggregator("[topics]\npartitions = 3").start().await?;
    let brokers = stack.broker.bootstrap();
    let cancel = CancellationToken::new();

    // The lake, and the query service's PostgreSQL front door over it: the
    // findings are queried as the `vulnerabilities` table.
    let lake_dir = tempfile::tempdir()?;
    let mut password_file = tempfile::NamedTempFile::new()?;
    writeln!(password_file, "vulns-sql-secret")?;
    let pg_port = free_port()?;
    let lake = format!(
        "[lake]\nenabled = true\nlocation = \"{}\"\nflush_secs = 2\n",
        lake_dir.path().display()
    );
    let analyzer_config = || -> anyhow::Result<glasshouse_analyzer::Config> {
        Ok(glasshouse_runtime::service::parse_config(
            "test",
            &format!(
                "brokers = \"{brokers}\"\ngroup = \"vulns-e2e\"\nview = false\n[topics]\npartitions = 3\n\
                 [analysis]\nenabled = false\n\
                 [vulns.image_trust]\ntrusted_repositories = [\"localhost/glasshouse-test\"]\n{lake}"
            ),
        )?)
    };
    let query_config: glasshouse_lake::query::QueryConfig = glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "{lake}[sql]\npg_listen = \"127.0.0.1:{pg_port}\"\npassword_file = \"{}\"\n",
            password_file.path().display()
        ),
    )?;
    // Stops with the test's runtime, or with `cancel`.
    let _query = tokio::spawn(glasshouse_lake::query::run(query_config, cancel.clone()));
    let first_cancel = cancel.child_token();
    let analyzer = tokio::spawn(glasshouse_analyzer::run(
        analyzer_config()?,
        std::io::sink(),
        first_cancel.clone(),
    ));

    import_debian_advisories(&brokers).await?;

    stack
        .start_agent(
            "vulns-agent",
            // Its own containers only: tests run beside it.
            "containers = [\"gh-vulns-*\"]\n[inventory]\ninterval_secs = 2\nresend_secs = 3600\n",
        )
        .await?;

    // The containers' files, and a host directory a link will point at.
    let scratch = tempfile::tempdir()?;
    let (deb, apk, evil) = container_trees(scratch.path())?;

    let tag = free_port()?;
    let names: Vec<String> = ["deb", "apk", "evil", "untrusted"]
        .iter()
        .map(|n| format!("gh-vulns-{n}-{tag}"))
        .collect();
    let _cleanup = Cleanup(names.clone());
    podman(&["tag", TEST_IMAGE, "localhost/glasshouse-untrusted:vulns"])?;
    let (deb_id, apk_id, evil_id, untrusted_id) = tokio::task::spawn_blocking({
        let names = names.clone();
        let (deb, apk, evil) = (deb.clone(), apk.clone(), evil.clone());
        move || {
            anyhow::Ok((
                container(&names[0], TEST_IMAGE, Some(&deb))?,
                container(&names[1], TEST_IMAGE, Some(&apk))?,
                container(&names[2], TEST_IMAGE, Some(&evil))?,
                container(&names[3], "localhost/glasshouse-untrusted:vulns", None)?,
            ))
        }
    })
    .await??;
    let started = Instant::now();

    let first_findings = debian_findings(&brokers, &deb_id, &apk_id, started).await?;

    inventories_as_sent(&brokers, &deb_id, &evil_id).await?;

    // A new advisory: the Alpine container is re-evaluated without a new inventory.
    let reevaluated = alpine_reevaluated(&brokers, &apk_id).await?;

    // The CLI, per container and per image, with the fixed version.
    cli_lists(&brokers, &names[1])?;

    // The Debian container upgrades its packages: resolved.
    podman(&[
        "exec",
        &names[0],
        "sed",
        "-i",
        "s/^Version: 3.0.11-1~deb12u1$/Version: 3.0.11-1~deb12u2/",
        "/var/lib/dpkg/status",
    ])?;
    let rows = wait_rows(&brokers, "debian findings resolved", |rows| {
        let d = of(rows, &deb_id);
        d.len() == 2 && d.iter().all(|v| v.state == State::Resolved)
    })
    .await?;
    ensure!(of(&rows, &deb_id).iter().all(|v| v.resolved_at.is_some()));

    let opened = alert_lifecycles(&brokers, &untrusted_id).await?;
    findings_in_topic_and_sql(&brokers, pg_port).await?;

    // A restarted analyzer replays the inventories and takes over the
    // published findings: after a change of the Alpine container's database
    // (a package added) its findings stay open with their first-seen time,
    // and no finding is alerted a second time.
    let before: Vec<Vulnerability> = of(&rows, &apk_id).into_iter().cloned().collect();
    first_cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), analyzer).await???;
    let restarted_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let second = tokio::spawn(glasshouse_analyzer::run(
        analyzer_config()?,
        std::io::sink(),
        cancel.child_token(),
    ));
    podman(&[
        "exec",
        &names[1],
        "sh",
        "-c",
        "printf '\\nP:zlib\\nV:1.3-r2\\no:zlib\\n' >> /lib/apk/db/installed",
    ])?;
    let rows = wait_rows(&brokers, "alpine findings replayed after the restart", |rows| {
        let a = of(rows, &apk_id);
        a.len() == 2 && a.iter().all(|v| v.last_seen_ms >= restarted_ms)
    })
    .await?;
    for (after, before) in of(&rows, &apk_id).iter().zip(&before) {
        ensure!(
            after.state == State::Open && after.first_seen_ms == before.first_seen_ms,
            "{after:#?} was {before:#?}"
        );
    }
    let creates = glasshouse_tests::topics::read_all(&brokers, TOPIC_ALERTS)?
        .iter()
        .filter(|d| d.contains("\"class_uid\":2002") && d.contains("\"activity_id\":1,"))
        .count();
    ensure!(
        creates == opened,
        "{creates} Create alerts after the restart, {opened} before"
    );

    println!(
        "first findings {:.1} s after the containers started; re-evaluation {:.1} s after an import (CLI included)",
        first_findings.as_secs_f64(),
        reevaluated.as_secs_f64()
    );
    stack.stop().await?;
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), second).await;
    Ok(())
}

/// Imports the two Debian advisories with the CLI (the analyzer creates the
/// topics: retried until it has); a file that is no advisory is refused.
async fn import_debian_advisories(brokers: &str) -> anyhow::Result<()> {
    let osv = manifest_dir().join("fixtures/osv");
    let debian = osv.join("debian");
    let deadline = Instant::now() + Duration::from_secs(60);
    let imported = loop {
        match cli(brokers, &["vulns", "import", debian.to_str().context("path")?]) {
            Ok(out) => break out,
            Err(e) => ensure!(Instant::now() < deadline, "import: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(imported.starts_with("imported 2 advisories"), "{imported}");
    let bad = Command::new(workspace_binary("glasshouse")?)
        .args(["--brokers", brokers, "vulns", "import", "/etc/hostname"])
        .output()?;
    ensure!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("/etc/hostname: not an OSV advisory"),
        "{bad:?}"
    );

    Ok(())
}

/// The roots of the Debian, Alpine and hostile containers under `scratch`
/// (the hostile one links its package databases to `/etc/shadow` and to a
/// host directory holding a canary package).
fn container_trees(scratch: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let fixtures = manifest_dir().join("fixtures");
    let deb = scratch.join("deb");
    write(
        &deb,
        "etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    )?;
    write(
        &deb,
        "var/lib/dpkg/status",
        &std::fs::read_to_string(fixtures.join("dpkg/status"))?,
    )?;
    let apk = scratch.join("apk");
    write(&apk, "etc/os-release", "ID=alpine\nVERSION_ID=3.18.4\n")?;
    write(
        &apk,
        "lib/apk/db/installed",
        &std::fs::read_to_string(fixtures.join("apk/installed"))?,
    )?;
    let host_canary = scratch.join("host-site-packages");
    write(
        &host_canary,
        "hostcanary-6.6.6.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: hostcanary\nVersion: 6.6.6\n",
    )?;
    write(
        &host_canary,
        "../host-status",
        &std::fs::read_to_string(fixtures.join("dpkg/status"))?,
    )?;
    let evil = scratch.join("evil");
    std::fs::create_dir_all(evil.join("var/lib/dpkg"))?;
    std::fs::create_dir_all(evil.join("usr/lib/python3"))?;
    std::os::unix::fs::symlink("/etc/shadow", evil.join("var/lib/dpkg/status"))?;
    std::os::unix::fs::symlink(&host_canary, evil.join("usr/lib/python3/dist-packages"))?;
    write(&evil, "etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")?;

    Ok((deb, apk, evil))
}

/// The Debian container: DSA-5532-1 on libssl3 (through its source package
/// openssl) and on openssl; DSA-5417-1 is fixed in an older version; the
/// Alpine container has nothing before its advisory. Returns how long after
/// `started` the findings came.
async fn debian_findings(brokers: &str, deb_id: &str, apk_id: &str, started: Instant) -> anyhow::Result<Duration> {
    let rows = wait_rows(brokers, "debian findings", |rows| of(rows, deb_id).len() == 2).await?;
    let first_findings = started.elapsed();
    let deb_rows = of(&rows, deb_id);
    let got: Vec<_> = deb_rows
        .iter()
        .map(|v| {
            (
                v.package.as_str(),
                v.installed_version.as_str(),
                v.advisory_id.as_str(),
                v.fixed_version.as_deref(),
                v.state,
            )
        })
        .collect();
    ensure!(
        got == [
            (
                "libssl3",
                "3.0.11-1~deb12u1",
                "DSA-5532-1",
                Some("3.0.11-1~deb12u2"),
                State::Open
            ),
            (
                "openssl",
                "3.0.11-1~deb12u1",
                "DSA-5532-1",
                Some("3.0.11-1~deb12u2"),
                State::Open
            ),
        ],
        "{got:#?}"
    );
    ensure!(deb_rows[0].ecosystem == "Debian:12" && deb_rows[0].cves == ["CVE-2023-5363", "CVE-2023-5678"]);
    ensure!(
        !rows.iter().any(|r| r.advisory_id == "DSA-5417-1"),
        "the non-matching advisory matched"
    );
    ensure!(
        of(&rows, apk_id).is_empty(),
        "alpine findings before its advisory: {rows:#?}"
    );

    Ok(first_findings)
}

/// Inventories as the agent sent them: the digest Podman has, and the
/// refused link; nothing of the host.
async fn inventories_as_sent(brokers: &str, deb_id: &str, evil_id: &str) -> anyhow::Result<()> {
    let podman_digest = podman(&["image", "inspect", "--format", "{{.Digest}}", TEST_IMAGE])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (deb_inv, evil_inv) = loop {
        let all = tokio::task::spawn_blocking({
            let b = brokers.to_owned();
            move || inventories(&b)
        })
        .await??;
        let find = |id: &str| all.iter().rev().find(|r| r.attribution.container() == id).cloned();
        if let (Some(d), Some(e)) = (find(deb_id), find(evil_id)) {
            break (d, e);
        }
        ensure!(
            Instant::now() < deadline,
            "inventories of the containers not seen: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(
        deb_inv.image_digest.as_deref() == Some(podman_digest.as_str()),
        "digest {:?}, podman says {podman_digest}",
        deb_inv.image_digest
    );
    ensure!(
        deb_inv.distro.as_deref() == Some("Debian:12") && deb_inv.packages.len() == 4,
        "{deb_inv:#?}"
    );
    ensure!(
        evil_inv
            .errors
            .iter()
            .any(|e| &**e == "/var/lib/dpkg/status: a symbolic link (to \"/etc/shadow\"), refused"),
        "the link was not refused: {evil_inv:#?}"
    );
    ensure!(
        evil_inv.packages.is_empty(),
        "something was read through the links: {evil_inv:#?}"
    );
    ensure!(
        !inventories(brokers)?
            .iter()
            .any(|r| r.packages.iter().any(|p| &*p.name == "hostcanary")),
        "the host's canary package was reported"
    );

    Ok(())
}

/// Imports the Alpine advisory: the Alpine container is re-evaluated
/// without a new inventory. Returns how long that took (CLI included).
async fn alpine_reevaluated(brokers: &str, apk_id: &str) -> anyhow::Result<Duration> {
    let osv = manifest_dir().join("fixtures/osv");
    let imported_at = Instant::now();
    let out = cli(
        brokers,
        &[
            "vulns",
            "import",
            osv.join("alpine/ALPINE-CVE-2023-5678.json").to_str().context("path")?,
        ],
    )?;
    ensure!(out.starts_with("imported 1 advisories"), "{out}");
    let rows = wait_rows(brokers, "alpine findings", |rows| of(rows, apk_id).len() == 2).await?;
    let reevaluated = imported_at.elapsed();
    for v in of(&rows, apk_id) {
        ensure!(
            v.advisory_id == "ALPINE-CVE-2023-5678"
                && v.ecosystem == "Alpine:v3.18"
                && v.source_package.as_deref() == Some("openssl")
                && v.fixed_version.as_deref() == Some("3.1.4-r1")
                && v.state == State::Open,
            "{v:#?}"
        );
    }

    Ok(reevaluated)
}

/// `vulns list` of the Alpine container and `vulns images` show the fixed
/// versions.
fn cli_lists(brokers: &str, alpine: &str) -> anyhow::Result<()> {
    let list = cli(brokers, &["vulns", "list", "--container", alpine])?;
    ensure!(
        list.contains("libcrypto3") && list.contains("upgrade to 3.1.4-r1") && !list.contains("DSA-5532-1"),
        "{list}"
    );
    let images = cli(brokers, &["vulns", "images"])?;
    ensure!(
        images.contains("localhost/glasshouse-test:latest") && images.contains("libssl3 3.0.11-1~deb12u2"),
        "{images}"
    );

    Ok(())
}

/// Alerts: the untrusted image only; every finding's lifecycle (4 opened, 2
/// resolved); all valid OCSF. Returns how many findings were opened.
async fn alert_lifecycles(brokers: &str, untrusted_id: &str) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let docs = loop {
        let docs: Vec<serde_json::Value> = glasshouse_tests::topics::read_all(brokers, TOPIC_ALERTS)?
            .iter()
            .map(|d| serde_json::from_str(d))
            .collect::<Result<_, _>>()?;
        let closes = docs
            .iter()
            .filter(|d| d["class_uid"] == 2002 && d["activity_id"] == 3)
            .count();
        if closes >= 2 {
            break docs;
        }
        ensure!(Instant::now() < deadline, "no resolution alerts: {docs:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let trust: Vec<_> = docs.iter().filter(|d| d["class_uid"] == 2003).collect();
    ensure!(trust.len() == 1, "image trust findings: {trust:#?}");
    ensure!(trust[0]["resources"][0]["uid"] == untrusted_id, "{:#}", trust[0]);
    ensure!(
        trust[0]["finding_info"]["desc"]
            .as_str()
            .is_some_and(|d| d.contains("localhost/glasshouse-untrusted"))
    );
    let opened = docs
        .iter()
        .filter(|d| d["class_uid"] == 2002 && d["activity_id"] == 1)
        .count();
    let closed = docs
        .iter()
        .filter(|d| d["class_uid"] == 2002 && d["activity_id"] == 3)
        .count();
    ensure!(
        opened == 4 && closed == 2,
        "opened {opened}, closed {closed}: {docs:#?}"
    );
    let n = glasshouse_tests::topics::validate_all_alerts(brokers)?;
    ensure!(n == docs.len());
    Ok(opened)
}

/// The vulnerabilities topic is JSON rows a SQL engine can read as they
/// are, and the lake's `vulnerabilities` table holds each finding's latest
/// state.
async fn findings_in_topic_and_sql(brokers: &str, pg_port: u16) -> anyhow::Result<()> {
    // The vulnerabilities topic is JSON rows a SQL engine can read as they
    // are (read to end-of-partition: tansu's watermarks count batches).
    let vuln_rows = glasshouse_tests::topics::read_all(brokers, TOPIC_VULNERABILITIES)?;
    ensure!(vuln_rows.len() >= 6, "{vuln_rows:#?}");
    for r in &vuln_rows {
        let v: serde_json::Value = serde_json::from_str(r)?;
        ensure!(
            v["key"].is_string() && v["state"].is_string() && v["advisory_id"].is_string(),
            "{r}"
        );
    }

    // The same findings through SQL: the latest row of each finding in the
    // `vulnerabilities` table, through real psql, is the topic's latest
    // state of it.
    let mut latest = std::collections::BTreeMap::new();
    for r in &vuln_rows {
        let v: serde_json::Value = serde_json::from_str(r)?;
        latest.insert(
            v["key"].as_str().unwrap_or_default().to_owned(),
            format!(
                "{}|{}|{}|{}",
                v["state"].as_str().unwrap_or_default(),
                v["package"].as_str().unwrap_or_default(),
                v["advisory_id"].as_str().unwrap_or_default(),
                v["fixed_version"].as_str().unwrap_or_default()
            ),
        );
    }
    let expected: Vec<String> = latest.iter().map(|(k, v)| format!("{k}|{v}")).collect();
    let query = "SELECT key, state, package, advisory_id, coalesce(fixed_version, '') FROM \
                 (SELECT *, row_number() OVER (PARTITION BY key ORDER BY kafka_time DESC, time DESC) AS n \
                 FROM vulnerabilities) WHERE n = 1 ORDER BY key";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            glasshouse_tests::psql(([127, 0, 0, 1], pg_port).into(), "vulns-sql-secret", &[query])
        })
        .await??;
        let got: Vec<String> = out.lines().map(str::to_owned).collect();
        if ok && got == expected {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "SQL vulnerabilities (ok {ok}, {err}):\n{out}\nexpected:\n{}",
            expected.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    Ok(())
}
