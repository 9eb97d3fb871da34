//! Periodic samples from a real container, with the agent's eBPF sensor: a
//! container limited to 64 MiB and 100 tasks reads files in a loop, sends
//! 5000 bytes to a listener of the test on the host and keeps running for a
//! few sample intervals. Its syscall profile (a kernel map, read every
//! interval) must reach `glasshouse.syscalls` with the file syscalls counted
//! and named, and its cgroup resource samples must reach
//! `glasshouse.resources` with non-zero CPU, memory and pids, the two limits,
//! and the bytes it sent.

use std::time::Duration;

use anyhow::{Context, ensure};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{resources, syscalls};
use glasshouse_tests::{Stack, TEST_IMAGE, free_port, podman};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn syscall_profiles_and_resource_samples_of_a_container() -> anyhow::Result<()> {
    samples_of_a_container("bpf").await
}

/// The netlink fallback has no syscall sensor, but resources come from the
/// cgroup files all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resource_samples_of_a_container_in_fallback_mode() -> anyhow::Result<()> {
    samples_of_a_container("netlink").await
}

async fn samples_of_a_container(sensor: &str) -> anyhow::Result<()> {
    let bpf = sensor == "bpf";
    let mut stack = Stack::builder()
        .agent(
            &format!("sample-agent-{sensor}"),
            &format!("sensor = \"{sensor}\"\nsample_interval_ms = 1000"),
        )
        .start()
        .await?;

    // The host end takes what the container sends.
    let host = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let host_port = host.local_addr()?.port();
    let received = tokio::spawn(async move {
        let (mut s, _) = host.accept().await?;
        let mut all = Vec::new();
        s.read_to_end(&mut all).await?;
        anyhow::Ok(all.len())
    });

    let name = format!("gh-sample-{sensor}-{}", free_port()?);
    let script = format!(
        "i=0; while [ $i -lt 300 ]; do cat /etc/hostname > /dev/null; i=$((i+1)); done; \
         head -c 5000 /dev/zero | nc 10.88.0.1 {host_port}; sleep 4"
    );
    let id = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            let id = podman(&[
                "create",
                "--name",
                &name,
                "--memory",
                "64m",
                "--pids-limit",
                "100",
                TEST_IMAGE,
                "sh",
                "-c",
                &script,
            ])?;
            podman(&["start", "--attach", &name])?;
            anyhow::Ok(id)
        }
    })
    .await??;
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), received).await???, 5000);

    let mut tail = stack.tail(&[RecordType::Syscalls, RecordType::Resources])?;
    let (mut calls, mut samples): (Vec<syscalls::Row>, Vec<resources::Row>) = (Vec::new(), Vec::new());
    let sent = |r: &resources::Row| r.counters.net_tx_bytes >= 5000;
    let done = tail
        .until(Duration::from_secs(30), |record, batch| {
            match record {
                RecordType::Syscalls => calls.extend(syscalls::read_rows(batch)?),
                _ => samples.extend(resources::read_rows(batch)?),
            }
            let ours_calls = calls
                .iter()
                .filter(|r| r.attribution.container() == id.as_str())
                .count();
            Ok((ours_calls > 0 || !bpf)
                && samples
                    .iter()
                    .any(|r| r.attribution.container() == id.as_str() && sent(r)))
        })
        .await?;
    ensure!(
        done,
        "incomplete after 30 s:\nsyscall rows {calls:#?}\nresource rows {samples:#?}"
    );
    drop(tail);

    let ours: Vec<&syscalls::Row> = calls
        .iter()
        .filter(|r| r.attribution.container() == id.as_str())
        .collect();
    let total: u64 = ours.iter().map(|r| r.count).sum();
    if !bpf {
        ensure!(ours.is_empty(), "no syscall sensor without eBPF: {ours:#?}");
    } else {
        ensure!(total > 300, "the loop's syscalls are counted: {total} in {ours:#?}");
    }
    if bpf && std::env::consts::ARCH == "x86_64" {
        let named = |n: &str| {
            ours.iter()
                .filter(|r| r.name.as_deref() == Some(n))
                .map(|r| r.count)
                .sum::<u64>()
        };
        // 300 cats each open /etc/hostname (busybox may run them as forked
        // applets without execve, but each opens the file).
        ensure!(named("openat") + named("open") >= 300, "opens: {ours:#?}");
    }
    for r in &ours {
        ensure!(r.start_unix_ns < r.end_unix_ns && r.count > 0, "{r:?}");
    }

    let mine: Vec<&resources::Row> = samples
        .iter()
        .filter(|r| r.attribution.container() == id.as_str())
        .collect();
    let last = mine.iter().max_by_key(|r| r.time_unix_ns).context("no sample")?;
    let c = &last.counters;
    ensure!(c.cpu_usage_ns > 0 && c.memory_bytes > 0 && c.pids >= 1, "{c:?}");
    assert_eq!((c.memory_limit_bytes, c.pids_limit), (64 << 20, 100), "{c:?}");
    ensure!(c.net_tx_bytes >= 5000 && c.net_tx_packets > 0, "{c:?}");
    // Cumulative counters never go down between samples of the container.
    let mut by_time = mine.clone();
    by_time.sort_by_key(|r| r.time_unix_ns);
    for w in by_time.windows(2) {
        ensure!(w[0].counters.cpu_usage_ns <= w[1].counters.cpu_usage_ns, "{w:?}");
    }

    stack.stop().await
}
