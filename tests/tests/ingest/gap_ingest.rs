//! Gaps through the real ingest path: a hand-built wire batch holding only
//! gaps (one of a defined container, rate-limited; one of the whole host,
//! container 0, the agent's queue full) goes to an in-process aggregator
//! writing to a real broker and is acknowledged (gaps are rows: only once
//! Kafka has them). An independent consumer then reads `glasshouse.gaps` and
//! finds both rows, field by field: the container's attribution and workload
//! id for the first, no container and the host workload id (`host:<host>`,
//! as for host events) for the second, each message keyed by its workload id
//! with the record type and schema version headers. A batch with a gap of 0
//! dropped events is refused with `INVALID_ARGUMENT` naming the batch and the
//! gap, and nothing of it (not even its valid gap) reaches Kafka.

use std::time::Duration;

use anyhow::Context;
use glasshouse_proto::gaps::{self, Reason};
use glasshouse_proto::record::Attribution;
use glasshouse_proto::v1;
use glasshouse_tests::Stack;
use glasshouse_tests::topics::read_keyed;
use glasshouse_tests::wire::{self, frame, string};

/// `wire::hello` gives boot id 1 and host name `{agent}-host`.
const AGENT: &str = "gap-sim";
const BOOT: u64 = 1;
const WORKLOAD: &str = "localhost/gap-sim";
const IMAGE: &str = "localhost/gap-sim:1";
const IMAGE_ID: &str = "sha256:9a7e";
const NAME: &str = "web-1";
/// Start of the first gap's window; the agent reports gaps per second.
static T0: std::sync::LazyLock<i64> = std::sync::LazyLock::new(glasshouse_tests::epoch);
const SECOND: i64 = 1_000_000_000;

fn container_id() -> String {
    "9e".repeat(32)
}

/// A gap of container 1, rate-limited, during [T0, T0 + 1 s), and one of the
/// whole host, the agent's queue full, during [T0 + 1 s, T0 + 2 s): gaps
/// only, no events.
fn gap_batch() -> v1::Batch {
    v1::Batch {
        sequence: 1,
        base_time_unix_ns: *T0,
        strings: vec![
            string(1, container_id()),
            string(2, IMAGE),
            string(3, WORKLOAD),
            string(4, NAME),
            string(5, IMAGE_ID),
        ],
        containers: vec![v1::ContainerDef {
            r#ref: 1,
            runtime: v1::ContainerRuntime::Podman as i32,
            container_id: 1,
            name: 4,
            image: 2,
            image_id: 5,
            workload_id: 3,
            ..Default::default()
        }],
        gaps: vec![
            v1::Gap {
                container: 1,
                start_unix_ns: *T0,
                end_unix_ns: *T0 + SECOND,
                dropped: 1234,
                reason: v1::GapReason::RateLimited as i32,
            },
            v1::Gap {
                container: 0,
                start_unix_ns: *T0 + SECOND,
                end_unix_ns: *T0 + 2 * SECOND,
                // Past 32 bits.
                dropped: 5_000_000_000,
                reason: v1::GapReason::QueueFull as i32,
            },
        ],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gaps_reach_their_topic_attributed_and_keyed_and_empty_gaps_are_refused() -> anyhow::Result<()> {
    let mut stack = Stack::builder().no_containers().start().await?;
    let broker = &stack.broker;
    let channel = stack.channel().await?;

    // Acknowledged means in Kafka: the batch has rows (its gaps).
    let acks = tokio::time::timeout(
        Duration::from_secs(60),
        wire::exchange(channel.clone(), None, vec![wire::hello(AGENT), frame(gap_batch())], 1),
    )
    .await
    .context("no ack for the batch of gaps")??;
    assert_eq!(acks, vec![1]);

    // A gap of 0 events is no gap: the whole batch is refused, named in the
    // status metadata so the agent drops it; its valid gap is not written.
    let mut empty = gap_batch();
    empty.gaps[1].dropped = 0;
    wire::expect_invalid(
        channel,
        "gap-bad",
        frame(empty),
        "a gap of 0 events",
        "batch 1, gap 1: 0 events dropped",
    )
    .await?;

    // Exactly the two gaps of the accepted batch, each under its workload.
    let host = format!("{AGENT}-host");
    let host_workload = format!("host:{host}");
    let mut rows: Vec<gaps::Row> = read_keyed(&broker.bootstrap(), 2).await?;
    // The two workloads may be in different partitions: no order between them.
    rows.sort_by_key(|r| r.start_unix_ns);
    let container_gap = gaps::Row {
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
        end_unix_ns: *T0 + SECOND,
        reason: Reason::RateLimited,
        dropped: 1234,
    };
    let host_gap = gaps::Row {
        attribution: Attribution {
            agent_id: AGENT.into(),
            boot_id: BOOT,
            batch_seq: 1,
            host: host.as_str().into(),
            workload_id: host_workload.as_str().into(),
            ..Default::default()
        },
        start_unix_ns: *T0 + SECOND,
        end_unix_ns: *T0 + 2 * SECOND,
        reason: Reason::QueueFull,
        dropped: 5_000_000_000,
    };
    assert_eq!(rows, vec![container_gap, host_gap]);

    stack.stop().await?;
    Ok(())
}
