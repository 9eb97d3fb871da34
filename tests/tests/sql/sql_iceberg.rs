//! The lake as Iceberg tables (`lake.format = "iceberg"`), end to end:
//! process events produced to a real broker (tansu) are committed by the
//! lake writer into Iceberg tables of the embedded SQL catalog (sqlite) and
//! a local warehouse, with the writer crashing (its task aborted: no final
//! commit, nothing flushed) in the middle and a new writer, in a new
//! consumer group (no offsets of its own), taking over from the table's
//! high-water marks.
//! Afterwards the table holds every event exactly once — counted through
//! the engine over the Iceberg provider, through psql by two query
//! services (`glasshouse-query`, own processes) on the same catalog and,
//! with no Glasshouse code, by pyiceberg reading the same catalog and
//! files.
//! The same lake on a real Iceberg REST catalog (SeaweedFS's, data in its
//! table bucket): commits with their offsets read alike by the engine, a
//! query service and pyiceberg; two writers committing at once; a refused
//! token or a missing catalog named at open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_iceberg::{Error as LakeError, OffsetRange};
use glasshouse_lake::config::{CatalogConfig, LakeConfig, LakeFormat, S3Config};
use glasshouse_lake::engine::Limits;
use glasshouse_lake::fixture;
use glasshouse_lake::iceberg_lake::{self, Flush, IcebergLake};
use glasshouse_lake::writer::WriterSettings;
use glasshouse_tests::{
    Broker, IcebergRestCatalog, S3Server, free_port, init_logging, psql, wait_for_port, workspace_binary,
};

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // Ignored: cleanup only.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const EVENTS_PER_MESSAGE: u64 = 100;

/// Messages `from..to` of fixture process events (100 each, ids
/// `m * 100 ..`), produced with their workload as the key (spread over
/// the topic's partitions).
async fn produce(brokers: &str, cs: &[fixture::Container], from: u64, to: u64) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "false")
        .create()?;
    let base = glasshouse_tests::epoch();
    for m in from..to {
        let value = fixture::process_message(cs, m * EVENTS_PER_MESSAGE, EVENTS_PER_MESSAGE as usize, base);
        let key = format!("workload-{}", m % 5);
        producer
            .send(
                FutureRecord::to("glasshouse.process").key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// A consumer group whose offsets ran ahead of the table (committed by
/// an older writer of another layout, or wrong): the writer does not trust
/// them; the first message it gets of a partition shows it the group's
/// position, and it reads the partition again from the table's high-water
/// mark, so no offset is left out of the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_offset_ahead_of_the_table_is_not_trusted_and_every_event_lands() -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    init_logging();
    let (_broker, brokers) = Broker::with_topics().await?;
    let cs = fixture::containers(6);
    produce(&brokers, &cs, 0, 20).await?;

    // The group's offsets: the end of every partition, as if consumed.
    let group = "iceberg-lake-ahead";
    let ahead: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", group)
        .create()?;
    let metadata = ahead.fetch_metadata(Some("glasshouse.process"), Duration::from_secs(10))?;
    let partitions = metadata.topics().first().context("topic")?.partitions().len() as i32;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut produced_offsets = 0;
    for p in 0..partitions {
        let (_, high) = ahead.fetch_watermarks("glasshouse.process", p, Duration::from_secs(10))?;
        produced_offsets += high;
        tpl.add_partition_offset("glasshouse.process", p, rdkafka::Offset::Offset(high))?;
    }
    ensure!(
        produced_offsets == 20,
        "{produced_offsets} offsets in the topic, produced 20"
    );
    ahead.commit(&tpl, CommitMode::Sync)?;
    let committed = ahead.committed_offsets(tpl.clone(), Duration::from_secs(10))?;
    ensure!(
        committed.to_topic_map() == tpl.to_topic_map(),
        "group offsets {committed:?}, committed {tpl:?}"
    );
    drop(ahead);

    let dir = tempfile::tempdir()?;
    let config = LakeConfig {
        enabled: true,
        location: dir.path().display().to_string(),
        flush_secs: 1,
        format: LakeFormat::Iceberg,
        ..Default::default()
    };
    let lake = Arc::new(IcebergLake::open(&config).await?);
    let stop = CancellationToken::new();
    let writer = tokio::spawn(iceberg_lake::run(
        lake.clone(),
        writer_settings(&brokers, group),
        Flush::of(&config),
        stop.clone(),
    ));
    // The next messages show the writer where the group stands.
    produce(&brokers, &cs, 20, 30).await?;
    all_land(&lake, 30 * EVENTS_PER_MESSAGE, writer, stop).await?;
    let marks: i64 = lake
        .table("process_events")
        .context("table")?
        .committed_offsets()
        .await?
        .values()
        .sum();
    ensure!(marks == 30, "high-water marks add up to {marks}, produced 30 messages");
    Ok(())
}

/// The result of `sql` as CSV, through the engine over `lake`'s tables.
async fn engine_csv(lake: &IcebergLake, config: &LakeConfig, sql: &str) -> anyhow::Result<String> {
    let limits = Limits {
        timeout: Duration::from_secs(30),
        memory_bytes: 256 << 20,
        threads: 2,
        max_depth: 256,
    };
    let engine = iceberg_lake::engine(lake, config, limits).await?;
    let (_, batches) = engine.query(sql).await?;
    Ok(glasshouse_lake::output::render(
        &batches[0].schema(),
        &batches,
        glasshouse_lake::output::Style::Csv,
        |s| s.to_owned(),
    )?)
}

async fn rows(lake: &IcebergLake) -> anyhow::Result<u64> {
    Ok(lake.table("process_events").context("table")?.rows().await?)
}

async fn wait_rows(lake: &IcebergLake, at_least: u64, within: Duration) -> anyhow::Result<u64> {
    let started = Instant::now();
    loop {
        let n = rows(lake).await?;
        if n >= at_least {
            return Ok(n);
        }
        ensure!(
            started.elapsed() < within,
            "{n} rows, not {at_least}, within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the table holds `total` rows, then 2 s more, and stops the
/// writer: fails unless it holds exactly `total` (nothing late, nothing
/// twice) and the writer ended well.
async fn all_land(
    lake: &IcebergLake,
    total: u64,
    writer: tokio::task::JoinHandle<Result<glasshouse_lake::writer::WriterStats, glasshouse_lake::writer::WriterError>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    wait_rows(lake, total, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    writer.await??;
    let n = rows(lake).await?;
    ensure!(n == total, "{n} rows, produced {total}");
    Ok(())
}

/// The lake writer's settings for a test: consumer group `group`, no static
/// membership, a 6 s session.
fn writer_settings(brokers: &str, group: &str) -> WriterSettings {
    WriterSettings {
        brokers: brokers.to_owned(),
        group_id: group.into(),
        instance_id: None,
        session_timeout_ms: 6000,
        extra: Default::default(),
        compact_interval: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_in_the_iceberg_table_once_through_a_writer_crash_as_two_query_services_and_pyiceberg_count()
-> anyhow::Result<()> {
    init_logging();
    let (_broker, brokers) = Broker::with_topics().await?;
    let dir = tempfile::tempdir()?;
    let config = LakeConfig {
        enabled: true,
        location: dir.path().display().to_string(),
        flush_secs: 1,
        flush_rows: 250,
        format: LakeFormat::Iceberg,
        ..Default::default()
    };
    let writer = writer_settings(&brokers, "iceberg-lake-test");
    let cs = fixture::containers(6);
    produce(&brokers, &cs, 0, 20).await?;

    // Writer A commits some of it, then crashes.
    let lake_a = Arc::new(IcebergLake::open(&config).await?);
    let a = tokio::spawn(iceberg_lake::run(
        lake_a.clone(),
        writer.clone(),
        Flush::of(&config),
        CancellationToken::new(),
    ));
    wait_rows(&lake_a, 500, Duration::from_secs(60)).await?;
    a.abort();
    ensure!(a.await.is_err_and(|e| e.is_cancelled()), "writer A was not aborted");
    let before_crash = rows(&lake_a).await?;
    produce(&brokers, &cs, 20, 30).await?;

    // Writer B resumes from the table's high-water marks, not from group
    // state: its group is new (as if the group's offsets were lost), so it
    // reads every partition from the start and must skip what A committed.
    let lake_b = Arc::new(IcebergLake::open(&config).await?);
    let stop = CancellationToken::new();
    let fresh_group = WriterSettings {
        group_id: "iceberg-lake-test-after-the-crash".into(),
        ..writer
    };
    let b = tokio::spawn(iceberg_lake::run(
        lake_b.clone(),
        fresh_group,
        Flush::of(&config),
        stop.clone(),
    ));
    let total = 30 * EVENTS_PER_MESSAGE;
    wait_rows(&lake_b, total, Duration::from_secs(60)).await?;
    // Nothing more arrives late (a replay would add rows now).
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        rows(&lake_b).await? == total,
        "{} rows, produced {total}",
        rows(&lake_b).await?
    );

    let csv = engine_csv(
        &lake_b,
        &config,
        "SELECT count(*) AS n, count(DISTINCT concat(agent_id, '/', boot_id, '/', batch_seq, '/', event_index)) AS ids \
         FROM process_events",
    )
    .await?;
    ensure!(
        csv.lines().nth(1) == Some(format!("{total},{total}").as_str()),
        "count and distinct event ids through the engine: {csv}"
    );

    // Another engine, no Glasshouse code: pyiceberg on the same catalog.
    let script = format!(
        "from pyiceberg.catalog.sql import SqlCatalog\n\
         c = SqlCatalog('glasshouse', uri='sqlite:///{root}/catalog.db', warehouse='file://{root}/warehouse')\n\
         t = c.load_table('glasshouse.process_events')\n\
         a = t.scan(selected_fields=('agent_id', 'boot_id', 'batch_seq', 'event_index')).to_arrow()\n\
         ids = set(zip(*(a.column(n).to_pylist() for n in a.column_names)))\n\
         print(a.num_rows, len(ids))\n",
        root = std::fs::canonicalize(dir.path())?.display()
    );
    let printed = glasshouse_tests::python_pyiceberg(&script)?;
    ensure!(
        printed == format!("{total} {total}"),
        "pyiceberg counted {printed:?} (rows, distinct ids), produced {total}"
    );
    // Two query services (`glasshouse-query`, own processes) on the same
    // catalog answer psql alike.
    let password = dir.path().join("sql-password");
    std::fs::write(&password, "iceberg-sql\n")?;
    let mut services = Vec::new();
    for i in 0..2 {
        let port = free_port()?;
        let config = dir.path().join(format!("query-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[lake]\nformat = \"iceberg\"\nlocation = \"{}\"\n[sql]\npg_listen = \"127.0.0.1:{port}\"\npassword_file = \"{}\"\n",
                dir.path().display(),
                password.display()
            ),
        )?;
        let child = std::process::Command::new(workspace_binary("glasshouse-query")?)
            .args(["--config".as_ref(), config.as_os_str()])
            .spawn()?;
        services.push(Killed(child));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_port(addr, Duration::from_secs(30))?;
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            psql(
                addr,
                "iceberg-sql",
                &["SELECT count(*), count(DISTINCT pid) FROM process_events"],
            )
        })
        .await??;
        ensure!(ok, "psql to query service {i}: {err}");
        ensure!(
            out.trim() == format!("{total}|{total}"),
            "query service {i} answered {out:?}"
        );
    }
    drop(services);
    println!(
        "{before_crash} rows committed before the crash; {total} after, once each (engine, two query services, pyiceberg)"
    );

    stop.cancel();
    let stats = b.await??;
    // B read from the start of every partition, saw it was below the
    // marks, sought to them, and took exactly the messages A had not
    // committed.
    ensure!(
        stats.skipped >= 1 && stats.messages * EVENTS_PER_MESSAGE == total - before_crash,
        "writer B took {} messages and skipped {}; A had committed {before_crash} of {total} rows",
        stats.messages,
        stats.skipped
    );
    Ok(())
}

/// The Iceberg lake on S3: the warehouse in a bucket of a real
/// S3-compatible server (s3s-fs, SigV4), the catalog in sqlite: the writer
/// commits data files as objects of the bucket and the engine counts them
/// through its S3 store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_iceberg_lake_on_s3_commits_objects_the_engine_reads() -> anyhow::Result<()> {
    init_logging();
    let (_broker, brokers) = Broker::with_topics().await?;
    let s3 = S3Server::start(&["lake"])?;
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("s3-secret");
    std::fs::write(&secret, format!("{}\n", s3.secret_key))?;
    let config = LakeConfig {
        enabled: true,
        location: "s3://lake/glasshouse".into(),
        flush_secs: 1,
        format: LakeFormat::Iceberg,
        s3: S3Config {
            endpoint: Some(s3.endpoint()),
            region: Some("us-east-1".into()),
            allow_http: true,
            access_key_id: Some(s3.access_key.clone()),
            secret_access_key_file: Some(secret),
        },
        catalog: CatalogConfig {
            uri: Some(format!("sqlite://{}/catalog.db?mode=rwc", dir.path().display())),
            ..Default::default()
        },
        ..Default::default()
    };
    let cs = fixture::containers(4);
    produce(&brokers, &cs, 0, 10).await?;
    let lake = Arc::new(IcebergLake::open(&config).await?);
    let stop = CancellationToken::new();
    let writer = tokio::spawn(iceberg_lake::run(
        lake.clone(),
        writer_settings(&brokers, "iceberg-s3-test"),
        Flush::of(&config),
        stop.clone(),
    ));
    let total = 10 * EVENTS_PER_MESSAGE;
    wait_rows(&lake, total, Duration::from_secs(60)).await?;
    stop.cancel();
    writer.await??;

    let objects = s3.objects("lake", "glasshouse");
    ensure!(
        objects
            .iter()
            .any(|o| o.contains("process_events/data/") && o.ends_with(".parquet")),
        "no data file of process_events in the bucket: {objects:?}"
    );
    let csv = engine_csv(&lake, &config, "SELECT count(*) AS n FROM process_events").await?;
    ensure!(
        csv.lines().nth(1) == Some(total.to_string().as_str()),
        "the engine over S3 counted {csv}"
    );
    Ok(())
}

/// The lake's settings on the real Iceberg REST catalog `catalog`
/// (SeaweedFS): `[lake.catalog] kind = "rest"` with the catalog's URL, its
/// table bucket as the warehouse and a bearer token it issued in
/// `token_file`; the data files in the bucket through its S3 gateway.
fn rest_config(catalog: &IcebergRestCatalog, dir: &std::path::Path) -> anyhow::Result<LakeConfig> {
    let analyzer: glasshouse_analyzer::Config = glasshouse_runtime::service::parse_config(
        "rest",
        &format!("brokers = \"127.0.0.1:9\"\n{}", catalog.lake_toml(dir)?),
    )?;
    Ok(analyzer.lake)
}

/// The Iceberg lake on a real REST catalog (SeaweedFS's, with the data in
/// its table bucket): the writer's commits carry their Kafka offsets (in
/// each snapshot's summary and as the table's high-water marks), and the
/// engine, a query service configured by `[lake.catalog] kind = "rest"`
/// and pyiceberg through the same catalog all count every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_iceberg_lake_on_a_rest_catalog_commits_offsets_and_every_reader_counts_each_event_once()
-> anyhow::Result<()> {
    init_logging();
    let (_broker, brokers) = Broker::with_topics().await?;
    let catalog = IcebergRestCatalog::start("lake")?;
    let dir = tempfile::tempdir()?;
    let config = rest_config(&catalog, dir.path())?;
    let messages = 12;
    let cs = fixture::containers(4);
    produce(&brokers, &cs, 0, messages / 2).await?;
    let lake = Arc::new(IcebergLake::open(&config).await?);
    let stop = CancellationToken::new();
    let writer = tokio::spawn(iceberg_lake::run(
        lake.clone(),
        writer_settings(&brokers, "iceberg-rest-test"),
        Flush::of(&config),
        stop.clone(),
    ));
    // Two rounds: at least two commits.
    let total = messages * EVENTS_PER_MESSAGE;
    wait_rows(&lake, total / 2, Duration::from_secs(60)).await?;
    produce(&brokers, &cs, messages / 2, messages).await?;
    wait_rows(&lake, total, Duration::from_secs(60)).await?;
    stop.cancel();
    let stats = writer.await??;
    ensure!(stats.files >= 2, "the writer committed fewer than two files: {stats:?}");
    let table = lake.table("process_events").context("table")?;
    let marks = table.committed_offsets().await?;
    ensure!(
        marks.values().sum::<i64>() == i64::try_from(messages)?,
        "high-water marks {marks:?} do not cover the {messages} messages produced"
    );

    let csv = engine_csv(
        &lake,
        &config,
        "SELECT count(*) AS n, count(DISTINCT concat(agent_id, '/', boot_id, '/', batch_seq, '/', event_index)) AS ids \
         FROM process_events",
    )
    .await?;
    ensure!(
        csv.lines().nth(1) == Some(format!("{total},{total}").as_str()),
        "count and distinct event ids through the engine: {csv}"
    );

    // pyiceberg through the same catalog (a token of its own) and bucket:
    // rows, distinct ids, the offsets in the snapshot summaries and the
    // high-water marks; and the catalog's compare-and-swap that the fence
    // relies on: a commit requiring `main` at an older snapshot is refused.
    let printed = catalog.pyiceberg(
        "import json\n\
         t = c.load_table('glasshouse.process_events')\n\
         a = t.scan(selected_fields=('agent_id', 'boot_id', 'batch_seq', 'event_index')).to_arrow()\n\
         ids = set(zip(*(a.column(n).to_pylist() for n in a.column_names)))\n\
         ranges = [r for s in t.snapshots() for r in json.loads(s.summary.get('glasshouse.kafka.offsets') or '{}').values()]\n\
         marks = sum(int(v) for k, v in t.properties.items() if k.startswith('glasshouse.kafka.offset.'))\n\
         from pyiceberg.exceptions import CommitFailedException\n\
         from pyiceberg.table.update import AssertRefSnapshotId, SetPropertiesUpdate\n\
         try:\n\
         \x20   c.commit_table(t, (AssertRefSnapshotId(ref='main', snapshot_id=t.snapshots()[0].snapshot_id),),\n\
         \x20                  (SetPropertiesUpdate(updates={'stale': 'yes'}),))\n\
         \x20   stale = 'accepted'\n\
         except CommitFailedException:\n\
         \x20   stale = 'refused'\n\
         print(a.num_rows, len(ids), sum(n - f for f, n in ranges), marks, stale)\n",
    )?;
    ensure!(
        printed.trim() == format!("{total} {total} {messages} {messages} refused"),
        "pyiceberg read {printed:?} (rows, distinct ids, offsets in snapshot summaries, high-water marks, \
         a commit on a stale snapshot); produced {total} rows in {messages} messages"
    );

    // A query service configured as docs/lake.md says.
    let password = dir.path().join("sql-password");
    std::fs::write(&password, "iceberg-rest-sql\n")?;
    let port = free_port()?;
    let _service = glasshouse_tests::ServiceProcess::query(&format!(
        "{}[sql]\npg_listen = \"127.0.0.1:{port}\"\npassword_file = \"{}\"\n",
        catalog.lake_toml(dir.path())?,
        password.display()
    ))?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, Duration::from_secs(30))?;
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        psql(
            addr,
            "iceberg-rest-sql",
            &["SELECT count(*), count(DISTINCT pid) FROM process_events"],
        )
    })
    .await??;
    ensure!(ok, "psql to the query service: {err}");
    ensure!(
        out.trim() == format!("{total}|{total}"),
        "the query service answered {out:?}"
    );
    Ok(())
}

/// The rows of fixture messages `offsets` of `glasshouse.process` as one
/// Arrow IPC stream per message, as the lake writer decodes them.
fn process_rows(cs: &[fixture::Container], offsets: std::ops::Range<i64>) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut decoder = glasshouse_lake::writer::Decoder::default();
    let mut out = Vec::new();
    for m in offsets {
        let first = u64::try_from(m)? * EVENTS_PER_MESSAGE;
        let message = fixture::process_message(cs, first, EVENTS_PER_MESSAGE as usize, glasshouse_tests::epoch());
        let (_, batches) = decoder.decode(
            "glasshouse.process",
            &message,
            Some(b"workload"),
            glasshouse_tests::epoch(),
        )?;
        let schema = batches.first().context("no rows decoded")?.schema();
        let mut ipc = Vec::new();
        let mut writer = glasshouse_lake::datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &schema)?;
        for b in &batches {
            writer.write(b)?;
        }
        writer.finish()?;
        drop(writer);
        out.push(ipc);
    }
    Ok(out)
}

/// Two writers, each its own client of one REST catalog (as two analyzer
/// processes are): commits of distinct partitions made at the same time
/// all land, and of two commits racing with the same offset range exactly
/// one does: the catalog's compare-and-swap of the table's metadata and
/// the fence together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_rest_catalog_commit_concurrently_and_a_raced_range_lands_once() -> anyhow::Result<()> {
    init_logging();
    let catalog = IcebergRestCatalog::start("lake")?;
    let dir = tempfile::tempdir()?;
    let config = rest_config(&catalog, dir.path())?;
    let writers = [
        Arc::new(IcebergLake::open(&config).await?),
        Arc::new(IcebergLake::open(&config).await?),
    ];
    let cs = Arc::new(fixture::containers(4));
    let commits = 6i64;

    // Partition 0 by one writer, partition 1 by the other, commit by commit
    // at the same time.
    let mut tasks = Vec::new();
    for (partition, lake) in (0i32..).zip(&writers) {
        let (lake, cs) = (lake.clone(), cs.clone());
        tasks.push(tokio::spawn(async move {
            let table = lake.table("process_events").context("table")?;
            for offset in 0..commits {
                let base = i64::from(partition) * 1000 + offset;
                table
                    .append(
                        &process_rows(&cs, base..base + 1)?,
                        &[OffsetRange {
                            partition,
                            first: offset,
                            next: offset + 1,
                        }],
                    )
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let table = writers[0].table("process_events").context("table")?;
    let per_writer = u64::try_from(commits)? * EVENTS_PER_MESSAGE;
    ensure!(
        table.rows().await? == 2 * per_writer,
        "{} rows after both writers committed {per_writer} each",
        table.rows().await?
    );
    ensure!(
        table.committed_offsets().await? == std::collections::HashMap::from([(0, commits), (1, commits)]),
        "high-water marks {:?}",
        table.committed_offsets().await?
    );

    // Both writers with the same range of partition 2, released together.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for lake in &writers {
        let (lake, cs, barrier) = (lake.clone(), cs.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let rows = process_rows(&cs, 2000..2003).expect("rows");
            let table = lake.table("process_events").expect("table");
            barrier.wait().await;
            table
                .append(
                    &rows,
                    &[OffsetRange {
                        partition: 2,
                        first: 0,
                        next: 3,
                    }],
                )
                .await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await?);
    }
    ensure!(
        outcomes.iter().filter(|o| o.is_ok()).count() == 1
            && outcomes
                .iter()
                .any(|o| matches!(o, Err(LakeError::AlreadyCommitted { partition: 2, .. }))),
        "two writers racing with one range: {outcomes:?}"
    );
    ensure!(
        table.rows().await? == 2 * per_writer + 3 * EVENTS_PER_MESSAGE,
        "{} rows after the race",
        table.rows().await?
    );
    Ok(())
}

/// A REST catalog that refuses the token, or that is not there, fails the
/// lake's open with an error naming the catalog and what went wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_catalog_refusing_the_token_or_not_listening_fails_the_open_clearly() -> anyhow::Result<()> {
    init_logging();
    let catalog = IcebergRestCatalog::start("lake")?;
    let dir = tempfile::tempdir()?;
    let mut config = rest_config(&catalog, dir.path())?;
    std::fs::write(dir.path().join("catalog-token"), "not-a-token-of-this-catalog\n")?;
    let err = IcebergLake::open(&config)
        .await
        .err()
        .context("opened with a wrong token")?;
    println!("wrong token: {err}");
    ensure!(
        err.to_string().contains(&format!(
            "rest catalog {} refused the token or credential (401 Unauthorized)",
            catalog.uri()
        )),
        "wrong token: {err}"
    );

    let nobody = format!("http://127.0.0.1:{}", free_port()?);
    config.catalog.uri = Some(nobody.clone());
    let started = Instant::now();
    let err = IcebergLake::open(&config)
        .await
        .err()
        .context("opened without a catalog")?;
    println!("no catalog: {err}");
    ensure!(
        err.to_string().contains(&format!("catalog: {nobody}"))
            && err.to_string().to_lowercase().contains("connection refused"),
        "no catalog: {err}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// With `credential_file` (OAuth2 client credentials) the lake fetches its
/// own tokens from the REST catalog and renews them every
/// `token_refresh_secs` (1 s here), committing across the renewals; a
/// refused credential fails the open, naming the catalog, never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_catalog_credential_gets_tokens_renewed_and_the_lake_commits_across_them() -> anyhow::Result<()> {
    init_logging();
    let catalog = IcebergRestCatalog::start("lake")?;
    let dir = tempfile::tempdir()?;
    let mut config = rest_config(&catalog, dir.path())?;
    let credential = dir.path().join("catalog-credential");
    std::fs::write(&credential, format!("{}:{}\n", catalog.access_key, catalog.secret_key))?;
    config.catalog.token_file = None;
    config.catalog.credential_file = Some(credential.clone());
    config.catalog.token_refresh_secs = 1;
    let lake = IcebergLake::open(&config).await?;
    let cs = fixture::containers(3);
    let mut decoder = glasshouse_lake::writer::Decoder::default();
    let mut commit = |m: i64| {
        let message = fixture::process_message(
            &cs,
            m as u64 * EVENTS_PER_MESSAGE,
            EVENTS_PER_MESSAGE as usize,
            glasshouse_tests::epoch(),
        );
        decoder.decode("glasshouse.process", &message, None, 0).map(|(_, b)| b)
    };
    let range = |m: i64| OffsetRange {
        partition: 0,
        first: m,
        next: m + 1,
    };
    lake.append("process_events", &commit(0)?, &[range(0)]).await?;
    let renewals = &lake.warehouse.token_renewals;
    let deadline = Instant::now() + Duration::from_secs(20);
    while renewals.load(std::sync::atomic::Ordering::Relaxed) < 3 {
        ensure!(Instant::now() < deadline, "tokens renewed {renewals:?} times in 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lake.append("process_events", &commit(1)?, &[range(1)]).await?;
    let rows = lake.table("process_events").context("table")?.rows().await?;
    ensure!(
        rows == 2 * EVENTS_PER_MESSAGE,
        "{rows} rows after commits across token renewals"
    );

    let wrong = "not-the-secret-7d1e";
    std::fs::write(&credential, format!("{}:{wrong}\n", catalog.access_key))?;
    let err = IcebergLake::open(&config)
        .await
        .err()
        .context("opened with a wrong credential")?;
    let text = glasshouse_runtime::service::error_chain(&err);
    println!("wrong credential: {text}");
    ensure!(text.contains(&catalog.uri()) && !text.contains(wrong), "{text}");
    std::fs::write(&credential, "no colon here\n")?;
    let err = IcebergLake::open(&config)
        .await
        .err()
        .context("opened with a malformed credential")?;
    ensure!(err.to_string().contains("CLIENT_ID:CLIENT_SECRET"), "{err}");
    Ok(())
}

/// The writer's memory budget while it cannot commit: it stops reading
/// once more than twice `flush_bytes` of rows wait (counted as the writer
/// counts them, the Arrow memory of the decoded batches), and loses
/// nothing. The table's data directory is made a file, so every commit
/// fails while the marks stay readable; identical messages of B bytes are
/// waiting. With `flush_bytes` = 2B (twice that is four messages exactly)
/// the writer takes a fifth message (4B is not over the budget) and stops;
/// with one byte less it stops after four (4B is one byte over twice it).
/// Then the directory comes back and a writer commits every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_that_cannot_commit_stops_reading_one_byte_over_twice_flush_bytes_and_loses_nothing()
-> anyhow::Result<()> {
    init_logging();
    let (_broker, brokers) = Broker::with_topics().await?;
    let cs = fixture::containers(6);
    let per_message = 5_000;
    let message = fixture::process_message(&cs, 0, per_message, glasshouse_tests::epoch());
    let (_, batches) = glasshouse_lake::writer::Decoder::default().decode(
        "glasshouse.process",
        &message,
        Some(b"workload"),
        glasshouse_tests::epoch(),
    )?;
    let b: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    ensure!(
        2 * b >= 1 << 20,
        "a message holds {b} bytes: flush_bytes would be under its 1 MiB minimum"
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "false")
        .create()?;
    let messages = 10;
    for _ in 0..messages {
        producer
            .send(
                FutureRecord::to("glasshouse.process").key("workload").payload(&message),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let dir = tempfile::tempdir()?;
    let config = LakeConfig {
        enabled: true,
        location: dir.path().display().to_string(),
        flush_secs: 1,
        flush_bytes: 2 * b,
        format: LakeFormat::Iceberg,
        ..Default::default()
    };
    let lake = Arc::new(IcebergLake::open(&config).await?);
    let table = lake.table("process_events").context("table")?;
    let location = table.load().await?.metadata().location().to_owned();
    let data = std::path::PathBuf::from(location.trim_start_matches("file://")).join("data");
    std::fs::write(&data, "not a directory: every data file write fails")?;

    for (flush_bytes, taken) in [(2 * b, 5), (2 * b - 1, 4)] {
        let stop = CancellationToken::new();
        let writer = tokio::spawn(iceberg_lake::run(
            lake.clone(),
            writer_settings(&brokers, &format!("budget-{flush_bytes}")),
            Flush {
                bytes: flush_bytes,
                ..Flush::of(&config)
            },
            stop.clone(),
        ));
        // Reading ten messages takes well under a second; commits fail
        // every quarter second meanwhile.
        tokio::time::sleep(Duration::from_secs(6)).await;
        stop.cancel();
        let stats = writer.await??;
        ensure!(
            stats.messages == taken && stats.failed_commits > 0,
            "flush_bytes {flush_bytes} (messages of {b} bytes): the writer took {} messages, {} commits failed; \
             want {taken} and some",
            stats.messages,
            stats.failed_commits
        );
        ensure!(rows(&lake).await? == 0, "rows committed with the data directory a file");
    }

    // The directory is back: every event lands once.
    std::fs::remove_file(&data)?;
    let stop = CancellationToken::new();
    let writer = tokio::spawn(iceberg_lake::run(
        lake.clone(),
        writer_settings(&brokers, "budget-after"),
        Flush::of(&config),
        stop.clone(),
    ));
    all_land(&lake, messages * per_message as u64, writer, stop).await
}
