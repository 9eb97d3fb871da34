//! Syscall profiles and resource samples through the real ingest path: a
//! hand-built wire batch holding only samples (one syscall profile of three
//! syscalls and two resource samples of one defined container) goes to an
//! in-process aggregator writing to a real broker. The broker is stopped
//! (SIGSTOP) while the batch is sent: a batch of samples has rows, so it is
//! not acknowledged until the broker is back and has them. An independent
//! consumer then reads `glasshouse.syscalls` and `glasshouse.resources` and
//! finds every row, field by field: one row per syscall with its x86_64 name
//! (`read`, `openat`, `execve`), the profile's interval and container, one row
//! per sample with every counter, each message keyed by workload id with the
//! record type and schema version headers. A batch with a sample of
//! container 0 is refused with a status naming the batch and sample, and
//! nothing of it (not even its valid profile) reaches Kafka.

use std::time::Duration;

use anyhow::Context;
use glasshouse_proto::record::Attribution;
use glasshouse_proto::resources::{self, Counters};
use glasshouse_proto::{syscalls, v1};
use glasshouse_tests::Stack;
use glasshouse_tests::topics::read_keyed;
use glasshouse_tests::wire::{self, frame, string};

/// `wire::hello` gives boot id 1 and host name `{agent}-host`.
const AGENT: &str = "sample-sim";
const BOOT: u64 = 1;
const WORKLOAD: &str = "localhost/sample-sim";
const IMAGE: &str = "localhost/sample-sim:1";
const IMAGE_ID: &str = "sha256:5a3e";
const NAME: &str = "db-1";
/// Start of the profiled interval; the agent samples every 10 s.
static T0: std::sync::LazyLock<i64> = std::sync::LazyLock::new(glasshouse_tests::epoch);
const INTERVAL: i64 = 10_000_000_000;
/// How long the broker stays stopped with the batch in flight.
const STALL: Duration = Duration::from_secs(3);

fn container_id() -> String {
    "cd".repeat(32)
}

/// Strings and container 1, as the first batch of a stream defines them.
fn definitions() -> (Vec<v1::StringDef>, Vec<v1::ContainerDef>) {
    (
        vec![
            string(1, container_id()),
            string(2, IMAGE),
            string(3, WORKLOAD),
            string(4, NAME),
            string(5, IMAGE_ID),
        ],
        vec![v1::ContainerDef {
            r#ref: 1,
            runtime: v1::ContainerRuntime::Podman as i32,
            container_id: 1,
            name: 4,
            image: 2,
            image_id: 5,
            workload_id: 3,
            ..Default::default()
        }],
    )
}

/// Two samples of container 1, ten seconds apart; every counter distinct,
/// several past 32 bits.
fn counters() -> [Counters; 2] {
    let first = Counters {
        cpu_usage_ns: 7_500_000_000,
        memory_bytes: 41_943_040,
        memory_limit_bytes: 536_870_912,
        io_read_bytes: 10_485_760,
        io_write_bytes: 8192,
        pids: 3,
        pids_limit: 100,
        net_rx_bytes: 5_000_000_000,
        net_tx_bytes: 1_500,
        net_rx_packets: 4_000_000,
        net_tx_packets: 20,
    };
    let second = Counters {
        cpu_usage_ns: 8_750_000_000,
        memory_bytes: 42_991_616,
        io_read_bytes: 11_534_336,
        io_write_bytes: 12_288,
        pids: 4,
        net_rx_bytes: 5_000_010_240,
        net_tx_bytes: 3_548,
        net_rx_packets: 4_000_010,
        net_tx_packets: 25,
        ..first
    };
    [first, second]
}

fn sample(time_unix_ns: i64, c: Counters) -> v1::ResourceSample {
    v1::ResourceSample {
        container: 1,
        time_unix_ns,
        cpu_usage_ns: c.cpu_usage_ns,
        memory_bytes: c.memory_bytes,
        memory_limit_bytes: c.memory_limit_bytes,
        io_read_bytes: c.io_read_bytes,
        io_write_bytes: c.io_write_bytes,
        pids: c.pids,
        pids_limit: c.pids_limit,
        net_rx_bytes: c.net_rx_bytes,
        net_tx_bytes: c.net_tx_bytes,
        net_rx_packets: c.net_rx_packets,
        net_tx_packets: c.net_tx_packets,
    }
}

/// One syscall profile (read 120 times, openat 7, execve 1 during
/// [T0, T0 + 10 s)) and two resource samples: samples only, no events.
fn sample_batch() -> v1::Batch {
    let (strings, containers) = definitions();
    let [first, second] = counters();
    v1::Batch {
        sequence: 1,
        base_time_unix_ns: *T0,
        strings,
        containers,
        syscall_profiles: vec![v1::SyscallProfile {
            container: 1,
            start_unix_ns: *T0,
            end_unix_ns: *T0 + INTERVAL,
            nr: vec![0, 257, 59],
            count: vec![120, 7, 1],
            arch: "x86_64".into(),
        }],
        resource_samples: vec![sample(*T0 + INTERVAL, first), sample(*T0 + 2 * INTERVAL, second)],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn samples_reach_their_topics_resolved_and_keyed_after_kafka_has_them() -> anyhow::Result<()> {
    let mut stack = Stack::builder().no_containers().start().await?;
    let broker = &stack.broker;
    let channel = stack.channel().await?;

    // The aggregator serves (its topics exist): an empty batch has no rows
    // and is acknowledged at once.
    let empty = v1::Batch {
        sequence: 1,
        base_time_unix_ns: *T0,
        ..Default::default()
    };
    let acks = tokio::time::timeout(
        Duration::from_secs(60),
        wire::exchange(
            channel.clone(),
            None,
            vec![wire::hello("sample-warmup"), frame(empty)],
            1,
        ),
    )
    .await??;
    assert_eq!(acks, vec![1]);

    // With the broker stopped, the batch of samples is not acknowledged:
    // its rows are not in Kafka.
    broker.pause();
    let exchange = tokio::spawn(wire::exchange(
        channel.clone(),
        None,
        vec![wire::hello(AGENT), frame(sample_batch())],
        1,
    ));
    tokio::time::sleep(STALL).await;
    let early = exchange.is_finished();
    broker.resume();
    if early {
        let answer = exchange.await?;
        anyhow::bail!("a batch of samples was answered while the broker was stopped: {answer:?}");
    }
    let acks = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .context("no ack after the broker resumed")???;
    assert_eq!(acks, vec![1], "acknowledged once the broker has its rows");

    // A sample must name a container: container 0 refuses the whole batch,
    // named in the status metadata so the agent drops it; its valid syscall
    // profile is not written either.
    let mut hostless = sample_batch();
    hostless.resource_samples.truncate(1);
    hostless.resource_samples[0].container = 0;
    wire::expect_invalid(
        channel,
        "sample-bad",
        frame(hostless),
        "a sample of container 0",
        "batch 1, resource sample 0: container 0, a sample must name a container",
    )
    .await?;

    // Acknowledged means in Kafka: one syscalls row per syscall, in the
    // profile's order, named from the x86_64 table.
    let brokers = broker.bootstrap();
    let host = format!("{AGENT}-host");
    let rows: Vec<syscalls::Row> = read_keyed(&brokers, 3).await?;
    let syscall = |nr: u32, name: &str, count: u64| syscalls::Row {
        attribution: Attribution {
            boot_id: BOOT,
            batch_seq: 1,
            container_id: Some(container_id().into()),
            container_name: Some(NAME.into()),
            image: Some(IMAGE.into()),
            image_id: Some(IMAGE_ID.into()),
            workload_id: WORKLOAD.into(),
            ..Attribution::host(AGENT.into(), host.as_str().into())
        },
        start_unix_ns: *T0,
        end_unix_ns: *T0 + INTERVAL,
        arch: "x86_64".into(),
        nr,
        name: Some(name.into()),
        count,
    };
    assert_eq!(
        rows,
        vec![
            syscall(0, "read", 120),
            syscall(257, "openat", 7),
            syscall(59, "execve", 1)
        ]
    );

    // One resources row per sample, every counter in its column.
    let samples: Vec<resources::Row> = read_keyed(&brokers, 2).await?;
    let resource = |time_unix_ns: i64, counters: Counters| resources::Row {
        attribution: Attribution {
            boot_id: BOOT,
            batch_seq: 1,
            container_id: Some(container_id().into()),
            container_name: Some(NAME.into()),
            image: Some(IMAGE.into()),
            image_id: Some(IMAGE_ID.into()),
            workload_id: WORKLOAD.into(),
            ..Attribution::host(AGENT.into(), host.as_str().into())
        },
        time_unix_ns,
        counters,
    };
    let [first, second] = counters();
    assert_eq!(
        samples,
        vec![resource(*T0 + INTERVAL, first), resource(*T0 + 2 * INTERVAL, second)]
    );

    stack.stop().await?;
    Ok(())
}
