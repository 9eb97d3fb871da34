//! File events and exec drift through the real ingest path: a hand-built wire
//! batch (process events, one of them an exec marked `drift`, a network
//! event and two file events, with their string and container definitions)
//! and a second batch that defines only a non-UTF-8 path and reuses the
//! first batch's strings go to an in-process aggregator writing to a real
//! broker. An independent consumer reads `glasshouse.file`,
//! `glasshouse.process` and `glasshouse.network` back and finds every row
//! resolved (paths and executables from string references, event index after
//! the batch's process and network events, own time chain), keyed by
//! workload id, with the `drift` column set on the drifted exec only. A file
//! event without a path is refused with a status naming the batch, and
//! nothing of it reaches Kafka.

use std::time::Duration;

use glasshouse_proto::file::{Kind, Row};
use glasshouse_proto::record::Attribution;
use glasshouse_proto::{network, process, v1};
use glasshouse_tests::Stack;
use glasshouse_tests::topics::read_keyed;
use glasshouse_tests::wire::{self, frame, string};

/// `wire::hello` gives boot id 1 and host name `{agent}-host`.
const AGENT: &str = "file-sim";
const BOOT: u64 = 1;
const WORKLOAD: &str = "localhost/file-sim";
const IMAGE: &str = "localhost/file-sim:1";
const NAME: &str = "web-1";
static B1: std::sync::LazyLock<i64> = std::sync::LazyLock::new(glasshouse_tests::epoch);
static B2: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| glasshouse_tests::epoch() + 1_000_000);
/// open(2) flags (Linux, x86_64 and aarch64 alike).
const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;

fn container_id() -> String {
    "ab".repeat(32)
}

/// Batch 1: three process events (exec of busybox, exec of a dropped file
/// marked drift, a host exit), one connect, and two file events: the dropped
/// file created in the container, then a host write to authorized_keys by an
/// unknown executable, collapsed three times.
fn first_batch() -> v1::Batch {
    let container = 1;
    v1::Batch {
        sequence: 1,
        base_time_unix_ns: *B1,
        reset_strings: false,
        strings: vec![
            string(1, container_id().as_bytes()),
            string(2, IMAGE.as_bytes()),
            string(3, WORKLOAD.as_bytes()),
            string(4, b"/bin/busybox"),
            string(5, b"busybox"),
            string(6, b"/tmp/tmp.Xk3b9QzT1a"),
            string(7, b"/root/.ssh/authorized_keys"),
            string(8, NAME.as_bytes()),
        ],
        containers: vec![v1::ContainerDef {
            r#ref: container,
            runtime: v1::ContainerRuntime::Podman as i32,
            container_id: 1,
            name: 8,
            image: 2,
            workload_id: 3,
            ..Default::default()
        }],
        process_events: vec![
            v1::ProcessEvent {
                time_delta_ns: 10,
                kind: v1::ProcessEventKind::Exec as i32,
                container,
                pid: 77,
                ppid: 1,
                path: 4,
                argv: vec![5],
                count: 1,
                ..Default::default()
            },
            v1::ProcessEvent {
                time_delta_ns: 90,
                kind: v1::ProcessEventKind::Exec as i32,
                container,
                pid: 80,
                ppid: 77,
                path: 6,
                argv: vec![6],
                parent_exe: 4,
                count: 1,
                drift: true,
                stdio_socket: false,
                ..Default::default()
            },
            v1::ProcessEvent {
                time_delta_ns: 50,
                kind: v1::ProcessEventKind::Exit as i32,
                container: 0,
                pid: 5,
                exit_code: Some(0),
                ..Default::default()
            },
        ],
        network_events: vec![v1::NetworkEvent {
            time_delta_ns: 200,
            kind: v1::NetworkEventKind::Connect as i32,
            container,
            pid: 80,
            local_addr: vec![10, 0, 0, 2],
            local_port: 40_000,
            remote_addr: vec![10, 0, 0, 9],
            remote_port: 4444,
            count: 1,
            ..Default::default()
        }],
        file_events: vec![
            v1::FileEvent {
                time_delta_ns: 40,
                kind: v1::FileEventKind::Create as i32,
                container,
                pid: 77,
                path: 6,
                exe: 4,
                flags: O_WRONLY | O_CREAT | O_TRUNC,
                // 0 on the wire reads as 1.
                count: 0,
            },
            v1::FileEvent {
                time_delta_ns: 500,
                kind: v1::FileEventKind::Write as i32,
                container: 0,
                pid: 78,
                path: 7,
                exe: 0,
                flags: O_WRONLY | O_APPEND,
                count: 3,
            },
        ],
        ..Default::default()
    }
}

/// Batch 2: file events only; defines one path that is not UTF-8 and reuses
/// the executable and container defined by batch 1.
fn second_batch() -> v1::Batch {
    v1::Batch {
        sequence: 2,
        base_time_unix_ns: *B2,
        strings: vec![string(9, b"/etc/cron.d/\xffjob")],
        file_events: vec![v1::FileEvent {
            time_delta_ns: 7,
            kind: v1::FileEventKind::Write as i32,
            container: 1,
            pid: 79,
            path: 9,
            exe: 4,
            flags: O_WRONLY | O_TRUNC,
            count: 1,
        }],
        ..Default::default()
    }
}

/// The file rows both batches must give: event indexes after the 3
/// process and 1 network events of batch 1; own time chain per batch.
fn expected_file_rows() -> Vec<Row> {
    let host_workload = format!("host:{AGENT}-host");
    let in_container = |batch_seq: u64, event_index: u32, time_unix_ns: i64, kind: Kind| Row {
        attribution: Attribution {
            agent_id: AGENT.into(),
            boot_id: BOOT,
            batch_seq,
            host: format!("{AGENT}-host").into(),
            container_id: Some(container_id().into()),
            container_name: Some(NAME.into()),
            image: Some(IMAGE.into()),
            workload_id: WORKLOAD.into(),
            ..Default::default()
        },
        event_index,
        time_unix_ns,
        kind,
        pid: 77,
        // A dropper made by mktemp: a generated name.
        path: "/tmp/tmp.Xk3b9QzT1a".into(),
        exe: Some("/bin/busybox".into()),
        flags: O_WRONLY | O_CREAT | O_TRUNC,
        count: 1,
        generated_name: true,
    };
    vec![
        in_container(1, 4, *B1 + 40, Kind::Create),
        Row {
            attribution: Attribution {
                container_id: None,
                container_name: None,
                image: None,
                workload_id: host_workload.as_str().into(),
                ..in_container(1, 5, *B1 + 540, Kind::Write).attribution
            },
            pid: 78,
            path: "/root/.ssh/authorized_keys".into(),
            exe: None,
            flags: O_WRONLY | O_APPEND,
            count: 3,
            generated_name: false,
            ..in_container(1, 5, *B1 + 540, Kind::Write)
        },
        Row {
            pid: 79,
            path: "/etc/cron.d/\u{fffd}job".into(),
            flags: O_WRONLY | O_TRUNC,
            generated_name: false,
            ..in_container(2, 0, *B2 + 7, Kind::Write)
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_events_and_drift_reach_their_topics_resolved_and_keyed() -> anyhow::Result<()> {
    let mut stack = Stack::builder().no_containers().start().await?;
    let broker = &stack.broker;
    let channel = stack.channel().await?;

    let frames = vec![wire::hello(AGENT), frame(first_batch()), frame(second_batch())];
    let acks = tokio::time::timeout(
        Duration::from_secs(60),
        wire::exchange(channel.clone(), None, frames, 2),
    )
    .await??;
    assert_eq!(acks, vec![1, 2], "both batches acknowledged, in order");

    pathless_file_events_are_refused(channel).await?;

    // Acknowledged means in Kafka. File rows: event indexes after the 3
    // process and 1 network events of batch 1; own time chain per batch.
    let brokers = broker.bootstrap();
    let mut rows: Vec<Row> = read_keyed(&brokers, 3).await?;
    rows.sort_by_key(|r| (r.attribution.batch_seq, r.event_index));
    assert_eq!(rows, expected_file_rows());
    let host_workload = format!("host:{AGENT}-host");

    // Process rows of batch 1: indexes 0..3, the `drift` column set on the
    // dropped file's exec only (`read_rows` checks the schema, so `drift` is
    // that column).
    let mut processes: Vec<process::Row> = read_keyed(&brokers, 3).await?;
    processes.sort_by_key(|r| r.event_index);
    let summary: Vec<_> = processes
        .iter()
        .map(|r| {
            (
                r.attribution.batch_seq,
                r.event_index,
                r.time_unix_ns,
                r.kind,
                r.pid,
                r.path.as_deref(),
                r.parent_exe.as_deref(),
                &*r.attribution.workload_id,
                r.drift,
                r.exec_in,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                1,
                0,
                *B1 + 10,
                process::Kind::Exec,
                77,
                Some("/bin/busybox"),
                None,
                WORKLOAD,
                false,
                false
            ),
            (
                1,
                1,
                *B1 + 100,
                process::Kind::Exec,
                80,
                Some("/tmp/tmp.Xk3b9QzT1a"),
                Some("/bin/busybox"),
                WORKLOAD,
                true,
                false
            ),
            (
                1,
                2,
                *B1 + 150,
                process::Kind::Exit,
                5,
                None,
                None,
                host_workload.as_str(),
                false,
                false
            ),
        ]
    );
    assert!(
        processes
            .iter()
            .all(|r| (&*r.attribution.agent_id, r.attribution.boot_id) == (AGENT, BOOT))
    );

    // The network event sits between them: index 3, its own time chain.
    let connects: Vec<_> = read_keyed::<network::Row>(&brokers, 1)
        .await?
        .into_iter()
        .map(|row| (row.attribution.batch_seq, row.event_index, row.time_unix_ns, row.kind))
        .collect();
    assert_eq!(connects, vec![(1, 3, *B1 + 200, network::Kind::Connect)]);

    stack.stop().await?;
    Ok(())
}

/// A file event must name its file: path 0 ("absent") refuses the batch,
/// named in the status metadata so the agent drops it.
async fn pathless_file_events_are_refused(channel: tonic::transport::Channel) -> anyhow::Result<()> {
    let pathless = v1::Batch {
        sequence: 1,
        base_time_unix_ns: *B1,
        strings: vec![string(1, b"/bin/busybox")],
        file_events: vec![v1::FileEvent {
            kind: v1::FileEventKind::Write as i32,
            pid: 1,
            path: 0,
            exe: 1,
            flags: O_WRONLY,
            count: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    wire::expect_invalid(
        channel,
        "file-bad",
        frame(pathless),
        "a pathless file event",
        "batch 1, event 0: file event without a path",
    )
    .await?;

    Ok(())
}
