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

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_lake::config::{CatalogConfig, LakeConfig, LakeFormat, S3Config};
use glasshouse_lake::engine::Limits;
use glasshouse_lake::fixture;
use glasshouse_lake::iceberg_lake::{self, Flush, IcebergLake};
use glasshouse_lake::writer::WriterSettings;
use glasshouse_tests::{Broker, S3Server, free_port, init_logging, psql, wait_for_port, workspace_binary};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_in_the_iceberg_table_once_through_a_writer_crash_as_two_query_services_and_pyiceberg_count()
-> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let cancel = CancellationToken::new();
    glasshouse_runtime::kafka::ensure_topics(&brokers, &Default::default(), Default::default(), &cancel).await?;
    let dir = tempfile::tempdir()?;
    let config = LakeConfig {
        enabled: true,
        location: dir.path().display().to_string(),
        flush_secs: 1,
        flush_rows: 250,
        format: LakeFormat::Iceberg,
        ..Default::default()
    };
    let writer = WriterSettings {
        brokers: brokers.clone(),
        group_id: "iceberg-lake-test".into(),
        instance_id: None,
        session_timeout_ms: 6000,
        extra: Default::default(),
        compact_interval: None,
    };
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
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .context("python3 (deploy/local/setup.sh installs pyiceberg)")?;
    ensure!(
        out.status.success(),
        "pyiceberg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    ensure!(
        printed.trim() == format!("{total} {total}"),
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
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let cancel = CancellationToken::new();
    glasshouse_runtime::kafka::ensure_topics(&brokers, &Default::default(), Default::default(), &cancel).await?;
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
        WriterSettings {
            brokers: brokers.clone(),
            group_id: "iceberg-s3-test".into(),
            instance_id: None,
            session_timeout_ms: 6000,
            extra: Default::default(),
            compact_interval: None,
        },
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
