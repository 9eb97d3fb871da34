//! The lake against the real iceberg-rust stack: the embedded SQL catalog
//! on a sqlite file and a local warehouse directory, several catalogs
//! (each its own connection pool, as separate writers are) on one file.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use futures::TryStreamExt;

use crate::{CatalogKind, Error, LakeTable, OffsetRange, Settings, Warehouse};

const HOUR_NS: i64 = 3_600_000_000_000;
const BASE_NS: i64 = 1_767_225_600_000_000_000;

fn settings(dir: &std::path::Path) -> Settings {
    Settings {
        catalog: CatalogKind::Sql {
            uri: format!("sqlite://{}/catalog.db?mode=rwc", dir.display()),
        },
        warehouse: format!("file://{}/warehouse", dir.display()),
        namespace: "glasshouse".into(),
        properties: HashMap::new(),
        token_refresh: None,
    }
}

fn schema(extra: bool) -> Arc<Schema> {
    let mut fields = vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("boot_id", DataType::UInt64, false),
        Field::new("event", DataType::Int64, false),
        Field::new("path", DataType::Utf8, true),
    ];
    if extra {
        fields.push(Field::new("newer", DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

/// An IPC stream of `n` rows with events `first..first + n`, spread over
/// two hours.
fn ipc(first: i64, n: i64) -> Vec<u8> {
    let events: Vec<i64> = (first..first + n).collect();
    let batch = RecordBatch::try_new(
        schema(false),
        vec![
            Arc::new(
                TimestampNanosecondArray::from(
                    events
                        .iter()
                        .map(|e| BASE_NS + (e % 2) * HOUR_NS + e)
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(UInt64Array::from(vec![u64::MAX; events.len()])),
            Arc::new(Int64Array::from(events.clone())),
            Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| format!("/bin/{e}")),
            )),
        ],
    )
    .expect("batch");
    let mut out = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).expect("writer");
    writer.write(&batch).expect("write");
    writer.finish().expect("finish");
    drop(writer);
    out
}

fn schema_ipc(extra: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema(extra)).expect("writer");
    writer.finish().expect("finish");
    drop(writer);
    out
}

async fn open(dir: &std::path::Path) -> LakeTable {
    let warehouse = Warehouse::open(&settings(dir)).await.expect("open");
    warehouse
        .table("process_events", "glasshouse.process", &schema_ipc(false), "time")
        .await
        .expect("table")
}

/// Every event id in the table, read back through iceberg's own scan.
async fn scanned_events(table: &LakeTable) -> Vec<i64> {
    let loaded = table.load().await.expect("load");
    let batches: Vec<RecordBatch> = loaded
        .scan()
        .select(["event"])
        .build()
        .expect("scan")
        .to_arrow()
        .await
        .expect("arrow")
        .try_collect()
        .await
        .expect("batches");
    let mut events: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64")
                .values()
                .to_vec()
        })
        .collect();
    events.sort_unstable();
    events
}

fn data_files(dir: &std::path::Path) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path)
                    } else {
                        usize::from(path.extension().is_some_and(|x| x == "parquet"))
                    }
                })
                .sum()
        })
    }
    walk(&dir.join("warehouse"))
}

#[tokio::test]
async fn an_append_commits_rows_and_offsets_and_a_replayed_or_skipping_range_is_refused_without_leaving_files() {
    let dir = tempfile::tempdir().expect("dir");
    let table = open(dir.path()).await;
    let appended = table
        .append(
            &[ipc(0, 6), ipc(6, 4)],
            &[OffsetRange {
                partition: 0,
                first: 0,
                next: 2,
            }],
        )
        .await
        .expect("append");
    assert_eq!(appended.rows, 10);
    assert_eq!(appended.files, 2, "one file per hour partition: {appended:?}");
    assert_eq!(
        table.committed_offsets().await.expect("offsets"),
        HashMap::from([(0, 2)])
    );
    assert_eq!(scanned_events(&table).await, (0..10).collect::<Vec<_>>());
    let files = data_files(dir.path());

    // The same range again (a replay after a crash): refused, nothing added.
    let err = table
        .append(
            &[ipc(0, 6)],
            &[OffsetRange {
                partition: 0,
                first: 1,
                next: 2,
            }],
        )
        .await
        .expect_err("replay");
    assert!(
        matches!(
            err,
            Error::AlreadyCommitted {
                partition: 0,
                first: 1,
                committed: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(table.rows().await.expect("rows"), 10);
    assert_eq!(data_files(dir.path()), files);

    // A range of messages without rows still moves the high-water mark.
    table
        .append::<Vec<u8>>(
            &[],
            &[OffsetRange {
                partition: 0,
                first: 2,
                next: 5,
            }],
        )
        .await
        .expect("empty range");
    assert_eq!(
        table.committed_offsets().await.expect("offsets"),
        HashMap::from([(0, 5)])
    );
    assert_eq!(table.rows().await.expect("rows"), 10);

    // A range that skips offsets 5 and 6: refused, nothing added, the mark
    // stays (committed, offsets 5 and 6 would never be in the table).
    let err = table
        .append(
            &[ipc(20, 2)],
            &[OffsetRange {
                partition: 0,
                first: 7,
                next: 8,
            }],
        )
        .await
        .expect_err("gap");
    assert!(
        matches!(
            err,
            Error::Gap {
                partition: 0,
                first: 7,
                committed: 5,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(table.rows().await.expect("rows"), 10);
    assert_eq!(data_files(dir.path()), files);
    assert_eq!(
        table.committed_offsets().await.expect("offsets"),
        HashMap::from([(0, 5)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_of_distinct_partitions_commit_concurrently_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    open(dir.path()).await;
    let mut tasks = Vec::new();
    for partition in 0..4i32 {
        let path = dir.path().to_owned();
        tasks.push(tokio::spawn(async move {
            // Its own catalog and connection pool, as another process has.
            let table = open(&path).await;
            for i in 0..8i64 {
                let first = i64::from(partition) * 1000 + i * 10;
                table
                    .append(
                        &[ipc(first, 10)],
                        &[OffsetRange {
                            partition,
                            first: i,
                            next: i + 1,
                        }],
                    )
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let table = open(dir.path()).await;
    let events = scanned_events(&table).await;
    assert_eq!(events.len(), 4 * 8 * 10);
    let mut distinct = events.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), events.len(), "no event twice");
    assert_eq!(
        table.committed_offsets().await.expect("offsets"),
        (0..4).map(|p| (p, 8)).collect::<HashMap<_, _>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_racing_with_the_same_range_commit_it_once() {
    let dir = tempfile::tempdir().expect("dir");
    open(dir.path()).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let path = dir.path().to_owned();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let table = open(&path).await;
            barrier.wait().await;
            table
                .append(
                    &[ipc(0, 5)],
                    &[OffsetRange {
                        partition: 3,
                        first: 0,
                        next: 5,
                    }],
                )
                .await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("writer"));
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Err(Error::AlreadyCommitted { partition: 3, .. }))),
        "{outcomes:?}"
    );
    let table = open(dir.path()).await;
    assert_eq!(scanned_events(&table).await, (0..5).collect::<Vec<_>>());
}

#[tokio::test]
async fn expiry_keeps_rows_and_high_water_marks_and_new_columns_are_added() {
    let dir = tempfile::tempdir().expect("dir");
    let table = open(dir.path()).await;
    for i in 0..5 {
        table
            .append(
                &[ipc(i * 3, 3)],
                &[OffsetRange {
                    partition: 1,
                    first: i,
                    next: i + 1,
                }],
            )
            .await
            .expect("append");
    }
    let expired = table.expire_snapshots(i64::MAX, 1).await.expect("expire");
    assert_eq!(expired, 4);
    assert_eq!(table.load().await.expect("load").metadata().snapshots().len(), 1);
    assert_eq!(scanned_events(&table).await, (0..15).collect::<Vec<_>>());
    assert_eq!(
        table.committed_offsets().await.expect("offsets"),
        HashMap::from([(1, 5)])
    );

    // A newer writer's schema with one more column.
    let warehouse = Warehouse::open(&settings(dir.path())).await.expect("open");
    let newer = warehouse
        .table("process_events", "glasshouse.process", &schema_ipc(true), "time")
        .await
        .expect("table");
    let loaded = newer.load().await.expect("load");
    assert!(loaded.metadata().current_schema().field_by_name("newer").is_some());
    // Older batches (without the column) still append.
    newer
        .append(
            &[ipc(100, 2)],
            &[OffsetRange {
                partition: 1,
                first: 5,
                next: 6,
            }],
        )
        .await
        .expect("append after evolution");
    assert_eq!(newer.rows().await.expect("rows"), 17);
}

#[tokio::test]
async fn a_bad_warehouse_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let mut s = settings(dir.path());
    s.warehouse = "ftp://somewhere".into();
    let err = Warehouse::open(&s).await.expect_err("bad warehouse");
    assert!(err.to_string().contains("ftp://somewhere"), "{err}");
}
