//! Baselines as an operator sees them, through the real `glasshouse` CLI:
//! a workload of two Podman replicas learns until stable (`baselines list`,
//! `show`), the live container scores come from the analyzer's endpoint
//! (`containers`), an operator locks it (a command on `glasshouse.control`
//! applied by the analyzer that owns the workload), the analyzer is
//! restarted and restores the locked baseline from `glasshouse.baselines`
//! (same version, nothing relearned, no alert for benign behaviour), and
//! `export`, `reset` and `import` round-trip it. An interactive shell then
//! shows in `alerts tail --json` as an ASCII-only OCSF document.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_tests::{Stack, TEST_IMAGE, cli, free_port, http_get, metric_value, podman, workspace_binary};
use tokio_util::sync::CancellationToken;

/// The control key of the analyzers and the CLI (commands are signed).
fn control_key() -> anyhow::Result<String> {
    let path = std::env::temp_dir().join(format!("gh-baselines-control-key-{}", std::process::id()));
    std::fs::write(&path, "YmFzZWxpbmVzIHRlc3QgY29udHJvbCBrZXksIDMyIGJ5dGVzKw==\n")?;
    Ok(path.to_str().context("temp path")?.to_owned())
}

fn analyzer_config(brokers: &str, metrics: u16) -> anyhow::Result<glasshouse_analyzer::Config> {
    let key = control_key()?;
    Ok(glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "brokers = \"{brokers}\"\ngroup = \"baselines-e2e\"\nview = false\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
             control_key_file = \"{key}\"\n\
             [topics]\npartitions = 3\n\
             [analysis]\nstartup_secs = 2\nmin_learning_secs = 15\nmin_events = 20\nmax_novelty = 0.05\n\
             novelty_window_secs = 5\ncheckpoint_ms = 1000"
        ),
    )?)
}

/// The line of `workload` in `baselines list`, once it matches `state`.
async fn wait_for_state(brokers: &str, workload: &str, state: &str, within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let list = {
            let brokers = brokers.to_owned();
            tokio::task::spawn_blocking(move || cli(&brokers, &["baselines", "list"])).await??
        };
        if let Some(line) = list.lines().find(|l| l.starts_with(workload))
            && line.split_whitespace().nth(1) == Some(state)
        {
            return Ok(line.to_owned());
        }
        ensure!(
            Instant::now() < deadline,
            "{workload} not {state} within {within:?}:\n{list}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_see_lock_export_and_restore_baselines() -> anyhow::Result<()> {
    let mut stack = Stack::builder().aggregator("[topics]\npartitions = 3").start().await?;
    let brokers = stack.broker.bootstrap();
    let cancel = CancellationToken::new();
    let suffix = free_port()?;

    let metrics = free_port()?;
    let first_cancel = cancel.child_token();
    let first = tokio::spawn(glasshouse_analyzer::run(
        analyzer_config(&brokers, metrics)?,
        std::io::sink(),
        first_cancel.clone(),
    ));
    stack
        .start_agent(
            "baselines-agent",
            // Its own containers only: tests run beside it.
            &format!("sensor = \"bpf\"\nsample_interval_ms = 1000\ncontainers = [\"gh-bl*-{suffix}\"]"),
        )
        .await?;

    let image = format!("localhost/gh-baselines-{suffix}:1");
    let workload = format!("localhost/gh-baselines-{suffix}");
    podman(&["tag", TEST_IMAGE, &image])?;
    let mut names = Vec::new();
    for i in 1..=2 {
        let name = format!("gh-bl{i}-{suffix}");
        podman(&[
            "run",
            "-d",
            "--name",
            &name,
            &image,
            "/bin/sh",
            "-c",
            "while :; do date > /tmp/d; sleep 1; done",
        ])?;
        names.push(name);
    }
    let result = async {
        // Learning, then stable: visible in `baselines list` and `show`.
        let line = wait_for_state(&brokers, &workload, "stable", Duration::from_secs(90)).await?;
        println!("{line}");
        let show = cli(&brokers, &["baselines", "show", &workload])?;
        ensure!(
            show.contains("state stable") && show.contains("steady exec") && show.contains("/bin/busybox (sleep)"),
            "{show}"
        );
        // Live scores of both replicas from the analyzer's endpoint.
        let containers = cli(&brokers, &["containers", "--analyzer", &format!("127.0.0.1:{metrics}")])?;
        for n in &names {
            ensure!(containers.contains(n.as_str()), "{n} missing:\n{containers}");
        }
        let page = http_get(&format!("127.0.0.1:{metrics}"), "/metrics").await?;
        ensure!(
            page.contains("glasshouse_analyzer_baselines{state=\"stable\"} 1"),
            "{page}"
        );

        // Lock: applied by the analyzer, visible as a new version.
        let locked = cli(
            &brokers,
            &["baselines", "lock", &workload, "--control-key-file", &control_key()?],
        )?;
        ensure!(locked.contains("(locked)"), "{locked}");
        let version: u64 = locked
            .split("version ")
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no version in the lock answer")?;

        // Restart: the new analyzer restores the locked baseline.
        first_cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), first).await???;
        let alerts_before = glasshouse_tests::topics::count_messages(&brokers, glasshouse_proto::record::TOPIC_ALERTS)?;
        let second_cancel = cancel.child_token();
        let second = tokio::spawn(glasshouse_analyzer::run(
            analyzer_config(&brokers, metrics)?,
            std::io::sink(),
            second_cancel.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let page = http_get(&format!("127.0.0.1:{metrics}"), "/metrics")
                .await
                .unwrap_or_default();
            let events = metric_value(&page, "glasshouse_analyzer_events_total").unwrap_or(0);
            if page.contains("glasshouse_analyzer_baselines{state=\"locked\"} 1") && events > 20 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "restored analyzer never scored with the locked baseline:\n{page}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let show = cli(&brokers, &["baselines", "show", &workload])?;
        ensure!(show.contains("state locked"), "{show}");
        let restored_version: u64 = show
            .split(", version ")
            .nth(1)
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .context("no version in show")?;
        ensure!(
            restored_version == version,
            "restored v{restored_version}, locked v{version}:\n{show}"
        );
        let alerts_after = glasshouse_tests::topics::count_messages(&brokers, glasshouse_proto::record::TOPIC_ALERTS)?;
        ensure!(
            alerts_after == alerts_before,
            "benign behaviour alerted after the restart: {:#?}",
            glasshouse_tests::topics::read_all(&brokers, glasshouse_proto::record::TOPIC_ALERTS)?
        );

        export_reset_import(&brokers, &workload)?;
        interactive_shell_in_alerts_tail(&brokers, &names[0]).await?;

        second_cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), second).await???;
        anyhow::Ok(())
    }
    .await;

    for n in &names {
        // Ignored: cleanup only.
        let _ = podman(&["rm", "-f", "-t", "0", n]);
    }
    let _ = podman(&["rmi", &image]);
    stack.stop().await?;
    // Every alert of the run is valid OCSF.
    let alerts = glasshouse_tests::topics::validate_all_alerts(&brokers)?;
    println!("{alerts} alerts, all valid OCSF");
    result
}

/// Export, reset and import of `workload`'s baseline through the CLI; an
/// import of a file that is no snapshot is refused.
fn export_reset_import(brokers: &str, workload: &str) -> anyhow::Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    let path = file.path().to_str().context("temp path")?.to_owned();
    cli(brokers, &["baselines", "export", workload, "-o", &path])?;
    let reset = cli(
        brokers,
        &["baselines", "reset", workload, "--control-key-file", &control_key()?],
    )?;
    ensure!(reset.contains("(learning)"), "{reset}");
    let show = cli(brokers, &["baselines", "show", workload])?;
    ensure!(
        !show.contains("/bin/busybox (sleep)") || show.contains("state learning"),
        "{show}"
    );
    let imported = cli(
        brokers,
        &["baselines", "import", &path, "--control-key-file", &control_key()?],
    )?;
    ensure!(imported.contains("(locked)"), "{imported}");
    let show = cli(brokers, &["baselines", "show", workload])?;
    ensure!(
        show.contains("/bin/busybox (sleep)") && show.contains("imported by operator"),
        "{show}"
    );
    let bad = Command::new(workspace_binary("glasshouse")?)
        .args(["--brokers", brokers, "baselines", "import", "/etc/hostname"])
        .output()?;
    ensure!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not a baseline snapshot"),
        "{bad:?}"
    );

    Ok(())
}

/// An interactive shell entered into `container` from outside shows in
/// `alerts tail --json` as an ASCII-only OCSF document of a locked baseline.
async fn interactive_shell_in_alerts_tail(brokers: &str, container: &str) -> anyhow::Result<()> {
    let mut tail = Command::new(workspace_binary("glasshouse")?)
        .args(["--brokers", brokers, "alerts", "tail", "--json", "--from-beginning"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    podman(&["exec", container, "/bin/sh", "-i"])?;
    let stdout = tail.stdout.take().context("tail stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("rule.interactive_shell"))
    });
    let line = tokio::time::timeout(Duration::from_secs(20), line).await;
    // Ignored: the tail runs until killed.
    let _ = tail.kill();
    let _ = tail.wait();
    let line = line
        .context("no interactive-shell alert within 20 s")??
        .context("tail ended")?;
    ensure!(line.is_ascii(), "{line}");
    let doc: serde_json::Value = serde_json::from_str(&line)?;
    ensure!(
        doc["class_uid"] == 2004 && doc["unmapped"]["glasshouse"]["baseline_state"] == "locked",
        "{line}"
    );
    glasshouse_tests::validate_ocsf(&[line])?;

    Ok(())
}
