//! A noisy container cannot starve the others, and what the agent drops is
//! said downstream: with a per-container limit of 100 events/s, a container
//! running 2000 execs (6000 process events in about a second) is cut down,
//! the drops arrive in `glasshouse.gaps` as `rate_limited` gaps of that
//! container, and a quiet container running at the same time still has its
//! exec reported.

use std::time::Duration;

use anyhow::ensure;
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{gaps, process};
use glasshouse_tests::{Stack, TEST_IMAGE, build_storm, free_port, podman};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_container_becomes_a_gap_and_others_are_still_seen() -> anyhow::Result<()> {
    let storm = build_storm()?;
    let mut stack = Stack::builder()
        .agent("gap-agent", "sensor = \"bpf\"\ncontainer_rate_limit = 100")
        .start()
        .await?;

    let tag = free_port()?;
    let (noisy, quiet) = (format!("gh-noisy-{tag}"), format!("gh-quiet-{tag}"));
    let volume = format!("{}:/gh:ro", storm.display());
    let (noisy_id, quiet_id) = tokio::task::spawn_blocking({
        let (noisy, quiet) = (noisy.clone(), quiet.clone());
        move || {
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
                "2000",
            ])?;
            let quiet_id = podman(&["run", "--name", &quiet, TEST_IMAGE, "cat", "/etc/hostname"])
                .and_then(|_| podman(&["inspect", "-f", "{{.Id}}", &quiet]))?;
            podman(&["wait", &noisy])?;
            anyhow::Ok((noisy_id, quiet_id))
        }
    })
    .await??;
    let _ = podman(&["rm", "-f", "-t", "0", &noisy, &quiet]);

    let mut tail = stack.tail(&[RecordType::Gaps, RecordType::Process])?;
    #[derive(Default)]
    struct Seen {
        gaps: Vec<gaps::Row>,
        procs: Vec<process::Row>,
    }
    impl Seen {
        fn take(&mut self, record: RecordType, batch: &arrow_array::RecordBatch) -> anyhow::Result<()> {
            match record {
                RecordType::Gaps => self.gaps.extend(gaps::read_rows(batch)?),
                _ => self.procs.extend(process::read_rows(batch)?),
            }
            Ok(())
        }
    }
    let dropped = |rows: &[gaps::Row]| {
        rows.iter()
            .filter(|g| g.attribution.container_id.as_deref() == Some(noisy_id.as_str()))
            .map(|g| g.dropped)
            .sum::<u64>()
    };
    let quiet_seen = |procs: &[process::Row]| {
        procs.iter().any(|r| {
            r.attribution.container_id.as_deref() == Some(quiet_id.as_str())
                && r.kind == process::Kind::Exec
                && r.argv.first().map(|a| &**a) == Some("cat")
        })
    };
    let mut seen = Seen::default();
    let done = tail
        .until(Duration::from_secs(30), |record, batch| {
            seen.take(record, batch)?;
            Ok(dropped(&seen.gaps) >= 3000 && quiet_seen(&seen.procs))
        })
        .await?;
    // The rest (gaps are reported once a second): read until the topics are
    // quiet for two seconds.
    tail.settle(Duration::from_secs(2), |record, batch| seen.take(record, batch))
        .await?;
    drop(tail);
    let Seen { gaps: gap_rows, procs } = seen;
    ensure!(
        done,
        "after 30 s: {} dropped in gaps {gap_rows:#?}; quiet exec seen: {}",
        dropped(&gap_rows),
        quiet_seen(&procs)
    );

    for g in gap_rows
        .iter()
        .filter(|g| g.attribution.container_id.as_deref() == Some(noisy_id.as_str()))
    {
        assert_eq!(g.reason, gaps::Reason::RateLimited, "{g:?}");
        ensure!(g.start_unix_ns <= g.end_unix_ns && g.dropped > 0, "{g:?}");
    }
    ensure!(
        !gap_rows
            .iter()
            .any(|g| g.attribution.container_id.as_deref() == Some(quiet_id.as_str())),
        "the quiet container lost nothing: {gap_rows:#?}"
    );
    // What was reported of the noisy container plus what was dropped is
    // every event it caused (execs, forks and exits; collapsed rows count N).
    let reported: u64 = procs
        .iter()
        .filter(|r| r.attribution.container_id.as_deref() == Some(noisy_id.as_str()))
        .map(|r| u64::from(r.count))
        .sum();
    println!(
        "noisy container: {reported} events reported, {} dropped as gaps",
        dropped(&gap_rows)
    );
    ensure!(reported < 1000, "the limit held: {reported} reported");
    // Nothing vanished unsaid: 2000 forks, execs and exits at least.
    ensure!(
        reported + dropped(&gap_rows) >= 6000,
        "reported {reported} + dropped {} < 6000",
        dropped(&gap_rows)
    );

    let _ = std::fs::remove_dir_all(&storm);
    stack.stop().await
}
