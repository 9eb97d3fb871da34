//! The eBPF file sensor and drift detection end to end, with a real container:
//! it appends to `/etc/passwd`, creates `/etc/cron.d/job`, writes a file under
//! `/tmp` (not sensitive), copies busybox to `/tmp/true` and runs it. The two
//! sensitive writes must reach `glasshouse.file` (write vs create, resolved
//! path, the writer's executable) and nothing under `/tmp`; the exec of
//! `/tmp/true` must be flagged as drift in `glasshouse.process`, the image's
//! own `/bin/sh` must not.

use std::time::Duration;

use anyhow::{Context, ensure};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{file, process};
use glasshouse_tests::{Stack, TEST_IMAGE, free_port, podman};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sensitive_writes_and_drift_execs_are_reported() -> anyhow::Result<()> {
    let mut stack = Stack::builder().agent("file-agent", "sensor = \"bpf\"").start().await?;

    let name = format!("gh-file-{}", free_port()?);
    let script = "echo 'x:x:0:0::/:/bin/sh' >> /etc/passwd; mkdir -p /etc/cron.d; echo '* * * * * id' > /etc/cron.d/job; \
                  echo scratch > /tmp/scratch; cp /bin/busybox /tmp/true; /tmp/true";
    let id = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            let id = podman(&["create", "--name", &name, TEST_IMAGE, "/bin/sh", "-c", script])?;
            podman(&["start", "--attach", &name])?;
            anyhow::Ok(id)
        }
    })
    .await??;
    let _ = podman(&["rm", "-f", "-t", "0", &name]);

    let mut tail = stack.tail(&[RecordType::Process, RecordType::File])?;
    let ours = |c: &Option<process::Str>| c.as_deref() == Some(id.as_str());
    let (mut procs, mut files): (Vec<process::Row>, Vec<file::Row>) = (Vec::new(), Vec::new());
    let found = |procs: &[process::Row], files: &[file::Row]| {
        procs
            .iter()
            .any(|r| ours(&r.attribution.container_id) && r.path.as_deref() == Some("/tmp/true"))
            && files.iter().filter(|r| ours(&r.attribution.container_id)).count() >= 2
    };
    let done = tail
        .until(Duration::from_secs(30), |record, batch| {
            match record {
                RecordType::File => files.extend(file::read_rows(batch)?),
                _ => procs.extend(process::read_rows(batch)?),
            }
            Ok(found(&procs, &files))
        })
        .await?;
    ensure!(
        done,
        "incomplete after 30 s:\nprocess rows {procs:#?}\nfile rows {files:#?}"
    );
    // A little longer: a write under /tmp, were it reported, would be in by now.
    tail.settle(Duration::from_millis(500), |record, batch| {
        if record == RecordType::File {
            files.extend(file::read_rows(batch)?);
        }
        Ok(())
    })
    .await?;
    drop(tail);

    let ours_files: Vec<&file::Row> = files.iter().filter(|r| ours(&r.attribution.container_id)).collect();
    let passwd = ours_files
        .iter()
        .find(|r| &*r.path == "/etc/passwd")
        .with_context(|| format!("no write to /etc/passwd: {files:#?}"))?;
    assert_eq!(passwd.kind, file::Kind::Write);
    assert_eq!(passwd.exe.as_deref(), Some("/bin/busybox"));
    let cron = ours_files
        .iter()
        .find(|r| &*r.path == "/etc/cron.d/job")
        .with_context(|| format!("no creation of /etc/cron.d/job: {files:#?}"))?;
    assert_eq!(cron.kind, file::Kind::Create);
    ensure!(
        !ours_files.iter().any(|r| r.path.starts_with("/tmp")),
        "a write outside the sensitive paths was reported: {ours_files:#?}"
    );

    let drift: Vec<&process::Row> = procs
        .iter()
        .filter(|r| ours(&r.attribution.container_id) && r.drift)
        .collect();
    ensure!(
        drift.len() == 1 && drift[0].path.as_deref() == Some("/tmp/true") && drift[0].kind == process::Kind::Exec,
        "exactly the exec of /tmp/true is drift: {drift:#?}; execs of /tmp/true: {:#?}",
        procs
            .iter()
            .filter(|r| r.path.as_deref() == Some("/tmp/true"))
            .collect::<Vec<_>>()
    );
    ensure!(
        procs.iter().any(|r| ours(&r.attribution.container_id)
            && r.kind == process::Kind::Exec
            && r.path.as_deref() == Some("/bin/busybox")
            && !r.drift),
        "the image's own busybox runs without drift: {procs:#?}"
    );

    stack.stop().await
}
