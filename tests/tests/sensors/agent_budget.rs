//! The agent keeps to its CPU budget and says so: with a budget of 2 % of a
//! core and no per-container rate limit, a container running a long exec
//! storm drives the agent over budget; the agent raises its pressure level
//! (in `/metrics`), throttles that container, and reports what it did not
//! send as `rate_limited` gaps of that container; once the storm is over the
//! level falls back to 0.

use std::time::{Duration, Instant};

use anyhow::ensure;
use glasshouse_proto::gaps;
use glasshouse_proto::record::RecordType;
use glasshouse_tests::{AgentProcess, Stack, TEST_IMAGE, build_storm, free_port, http_get, metric_value, podman};

async fn level(metrics: &str) -> u64 {
    let page = http_get(metrics, "/metrics").await.unwrap_or_default();
    metric_value(&page, "glasshouse_agent_budget_level").unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_its_cpu_budget_the_agent_throttles_and_reports_gaps() -> anyhow::Result<()> {
    let storm = build_storm()?;
    let mut stack = Stack::builder().start().await?;
    // Its own process: the budget is the agent process's CPU.
    let mut agent = AgentProcess::start(
        &stack.endpoint(),
        &format!(
            "agent_id = \"budget-agent\"\nsensor = \"bpf\"\ncontainer_rate_limit = 0\ncpu_budget_percent = 2\n\
             runtime_sockets = [\"{}\"]\nbatch_max_age_ms = 50",
            stack.podman()?.socket.display()
        ),
    )?;
    let metrics = agent.metrics.to_string();
    // Starting (loading the eBPF programs, the start-up scan) may cost more
    // than 2 % for a moment: idle, the level is 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    while level(&metrics).await > 0 {
        ensure!(Instant::now() < deadline, "pressure while idle");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let noisy = format!("gh-budget-{}", free_port()?);
    let volume = format!("{}:/gh:ro", storm.display());
    let noisy_id = podman(&[
        "run",
        "-d",
        "--name",
        &noisy,
        "-v",
        &volume,
        TEST_IMAGE,
        "/gh/storm",
        "exec",
        "40000",
    ])?;
    // Under the storm the level rises.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak = 0;
    while peak < 2 {
        ensure!(
            Instant::now() < deadline,
            "pressure level stayed at {peak} during the storm"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(level(&metrics).await);
    }
    let status = podman(&["wait", &noisy])?;
    let _ = podman(&["rm", "-f", "-t", "0", &noisy]);
    ensure!(status.trim() == "0", "storm exited {status}");
    // After it, the level falls back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while level(&metrics).await > 0 {
        ensure!(
            Instant::now() < deadline,
            "pressure level still {} a minute after the storm",
            level(&metrics).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // What the throttle dropped arrived as gaps of the storm's container.
    // Until the topic was quiet for 2 s after the first gap.
    let mut tail = stack.tail(&[RecordType::Gaps])?;
    let of_storm = |batch: &arrow_array::RecordBatch| {
        let mut dropped = 0;
        for g in gaps::read_rows(batch)? {
            if g.attribution.container_id.as_deref() == Some(noisy_id.as_str()) {
                ensure!(g.reason == gaps::Reason::RateLimited, "{g:?}");
                dropped += g.dropped;
            }
        }
        anyhow::Ok(dropped)
    };
    let mut dropped = 0;
    tail.until(Duration::from_secs(20), |_, batch| {
        dropped += of_storm(batch)?;
        Ok(dropped > 0)
    })
    .await?;
    tail.settle(Duration::from_secs(2), |_, batch| {
        dropped += of_storm(batch)?;
        Ok(())
    })
    .await?;
    drop(tail);
    println!("pressure level peaked at {peak}; {dropped} events of the storm reported as rate-limited gaps");
    ensure!(dropped > 0, "no gap for the throttled container");

    let status = agent.stop()?;
    ensure!(status.success(), "agent exited {status}");
    let _ = std::fs::remove_dir_all(&storm);
    stack.stop().await
}
