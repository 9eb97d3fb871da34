//! The lake on S3-compatible object storage, end to end against a real S3
//! server: s3s-fs (`deploy/local/setup.sh` installs it) serving a temporary
//! directory on loopback with an access key and a secret key checked on
//! every request (SigV4).
//!
//! This file covers the deprecated `parquet` layout (`lake.format =
//! "parquet"`), still written for readers of existing files; the Iceberg
//! lake on S3 is in `sql_iceberg.rs`.
//!
//! - The analyzer (in-process, the same `run` as its binary) with
//!   `lake.location = "s3://BUCKET/PREFIX"` and `[lake.s3]` from its TOML
//!   config: process events produced to a real broker (tansu) land as
//!   Parquet objects in their `date=/hour=` partitions in the server's
//!   directory, and are counted from there through real `psql`.
//! - The same S3 lake reopened: its file list is the bucket's; small files of
//!   an hour are compacted into one object and the replaced objects deleted
//!   from the server; an hour past retention is dropped and its object
//!   deleted; psql over the result gives the rows left.
//! - A refused secret, a missing bucket and an endpoint nobody listens on
//!   stop the start with an error naming the location, never the secret.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_lake::config::{LakeConfig, S3Config};
use glasshouse_lake::engine::{Engine, Limits};
use glasshouse_lake::lake::Lake;
use glasshouse_lake::writer::Ingest;
use glasshouse_lake::{fixture, pg};
use glasshouse_tests::{Broker, S3Server, free_port, init_logging, psql};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "glasshouse-lake";
const PREFIX: &str = "telemetry/lake";
const PASSWORD: &str = "s3-sql-password";
const NS_PER_HOUR: i64 = 3_600_000_000_000;

fn psql_one(port: u16, sql: &str) -> anyhow::Result<String> {
    let (ok, out, err) = psql(([127, 0, 0, 1], port).into(), PASSWORD, &[sql])?;
    ensure!(ok, "psql: {err}");
    Ok(out.trim().to_owned())
}

/// Parquet objects of `table` in the server's directory.
fn parquet_objects(s3: &S3Server, table: &str) -> Vec<String> {
    s3.objects(BUCKET, &format!("{PREFIX}/{table}"))
        .into_iter()
        .filter(|o| o.ends_with(".parquet"))
        .collect()
}

fn secret_file(secret: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut f = tempfile::NamedTempFile::new()?;
    writeln!(f, "{secret}")?;
    Ok(f)
}

fn analyzer_config(
    brokers: &str,
    location: &str,
    s3: &S3Server,
    secret: &std::path::Path,
) -> anyhow::Result<glasshouse_analyzer::Config> {
    let tag = free_port()?;
    Ok(glasshouse_runtime::service::parse_config(
        "test",
        &format!(
            "brokers = \"{brokers}\"\ngroup = \"sql-s3-{tag}\"\nview = false\n\
             [lake]\nenabled = true\nformat = \"parquet\"\nlocation = \"{location}\"\nflush_secs = 2\n\
             group_id = \"lake-s3-{tag}\"\n\
             [lake.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n\
             access_key_id = \"{}\"\nsecret_access_key_file = \"{}\"",
            s3.endpoint(),
            s3.access_key,
            secret.display(),
        ),
    )?)
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(30),
        memory_bytes: 256 << 20,
        threads: 2,
        max_depth: 256,
    }
}

async fn count(engine: &Engine) -> anyhow::Result<String> {
    let (_, b) = engine.query("SELECT count(*) AS n FROM process_events").await?;
    Ok(
        glasshouse_lake::output::render(&b[0].schema(), &b, glasshouse_lake::output::Style::Csv, |s| {
            s.to_owned()
        })?
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lake_on_s3_writes_compacts_expires_and_answers_psql() -> anyhow::Result<()> {
    init_logging();
    let started = Instant::now();
    let s3 = S3Server::start(&[BUCKET])?;
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let cancel = CancellationToken::new();
    glasshouse_runtime::kafka::ensure_topics(&brokers, &Default::default(), Default::default(), &cancel).await?;
    let secret = secret_file(&s3.secret_key)?;
    let location = format!("s3://{BUCKET}/{PREFIX}");
    let config = analyzer_config(&brokers, &location, &s3, secret.path())?;
    let analyzer = tokio::spawn(glasshouse_analyzer::run(config, std::io::sink(), cancel.clone()));

    // 800 events in the current hour and 100 three hours ago, produced to
    // the broker as the aggregator would.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    let hour = now.div_euclid(NS_PER_HOUR) * NS_PER_HOUR;
    let current = hour + 1_000_000_000;
    let old = hour - 3 * NS_PER_HOUR + 1_000_000_000;
    let cs = fixture::containers(6);
    let produced = Instant::now();
    produce_fixture(&brokers, &cs, current, old).await?;

    // Flushed within flush_secs: objects in both hours' partitions.
    let objects = objects_of_both_hours(&s3).await?;
    println!(
        "Parquet objects in the bucket {:?} after producing: {objects:?}",
        produced.elapsed()
    );
    // Every row flushed (the writer flushes a table at once).
    tokio::time::sleep(Duration::from_secs(3)).await;
    cancel.cancel();
    analyzer.await??;

    // The same lake reopened by another instance: the files are the bucket's.
    let lake_config = LakeConfig {
        enabled: true,
        location: location.clone(),
        s3: S3Config {
            endpoint: Some(s3.endpoint()),
            region: Some("us-east-1".into()),
            allow_http: true,
            access_key_id: Some(s3.access_key.clone()),
            secret_access_key_file: Some(secret.path().to_owned()),
        },
        retention_hours: 2,
        compact_min_files: 2,
        ..Default::default()
    };
    let lake = Arc::new(Lake::open(&lake_config, "s3-compactor", Duration::ZERO).await?);
    let mut listed: Vec<String> = lake
        .files("process_events")
        .iter()
        .map(|f| f.path.to_string())
        .collect();
    listed.sort();
    let objects = parquet_objects(&s3, "process_events");
    ensure!(listed == objects, "lake {listed:?} vs bucket {objects:?}");
    let engine = Engine::new(&lake, limits()).await?;
    let (pg_port, done) = serve_psql(&engine).await?;
    let again = tokio::task::spawn_blocking(move || {
        psql_one(
            pg_port,
            "SELECT count(*), count(DISTINCT container_id), min(workload_id) FROM process_events",
        )
    })
    .await??;
    ensure!(again == "900|6|billing/api", "from the Parquet objects: {again}");
    done.cancel();
    // Three more files in the current hour, then compaction: one object
    // per hour left, the replaced ones deleted from the server.
    let mut ingest = Ingest::new(lake.clone());
    for m in 0..3 {
        ingest.message(
            "glasshouse.process",
            &fixture::process_message(&cs, 10_000 + m * 100, 100, current),
            None,
            0,
        )?;
        lake.flush("process_events").await?;
    }
    let before = parquet_objects(&s3, "process_events");
    ensure!(before.len() >= 5, "{before:?}");
    ensure!(count(&engine).await? == "1200");
    let work = lake.compact().await?;
    ensure!(
        work.files_written == 1 && work.files_removed == before.len() - 1,
        "{work:?} of {before:?}"
    );
    ensure!(count(&engine).await? == "1200", "compaction changed the rows");
    ensure!(lake.delete_doomed(true).await == work.files_removed);
    let after = parquet_objects(&s3, "process_events");
    ensure!(after.len() == 2, "one object per hour after compaction: {after:?}");
    ensure!(count(&engine).await? == "1200");

    // Retention (two hours) keys on when rows were received, not on their
    // times: the hour dated three hours ago, received seconds ago, stays.
    let work = lake.expire(now);
    ensure!(work.files_removed == 0, "old-dated evidence expired early: {work:?}");
    ensure!(parquet_objects(&s3, "process_events").len() == 2);

    // psql over both hours.
    let (total, rows, done) = psql_over_both_hours(&engine).await?;
    ensure!(total == 1200, "{rows}");

    // Two hours after they were received, both go, from the lake and the bucket.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64
        + 2 * NS_PER_HOUR
        + 1_000_000_000;
    let work = lake.expire(later);
    // (every table: the analyzer wrote the other tables' rows too)
    ensure!(
        work.files_removed >= 2 && lake.files("process_events").is_empty(),
        "{work:?}"
    );
    ensure!(lake.delete_doomed(true).await == work.files_removed);
    let left = parquet_objects(&s3, "process_events");
    ensure!(left.is_empty(), "{left:?}");
    ensure!(count(&engine).await? == "0");
    done.cancel();
    println!(
        "lake on S3: write, psql, compaction, retention in {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_a_missing_bucket_or_no_server_stop_the_start() -> anyhow::Result<()> {
    init_logging();
    let s3 = S3Server::start(&[BUCKET])?;
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let wrong_secret = "not-the-secret-4f1c9a";
    let wrong = secret_file(wrong_secret)?;
    let right = secret_file(&s3.secret_key)?;
    let location = format!("s3://{BUCKET}/{PREFIX}");

    // The analyzer with a refused secret stops with the lake's error.
    let cancel = CancellationToken::new();
    let config = analyzer_config(&brokers, &location, &s3, wrong.path())?;
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        glasshouse_analyzer::run(config, std::io::sink(), cancel.clone()),
    )
    .await
    .context("the analyzer did not stop within 60 s on refused S3 credentials")?;
    let error = match result {
        Ok(_) => anyhow::bail!("the analyzer ran with a refused S3 secret"),
        Err(e) => glasshouse_runtime::service::error_chain(&e),
    };
    println!("refused secret, after {:?}: {error}", started.elapsed());
    ensure!(
        error.contains(&location) && error.contains(&s3.endpoint()) && error.contains("credentials"),
        "{error}"
    );
    ensure!(
        error.contains("403"),
        "the server's refusal is not in the message: {error}"
    );
    ensure!(
        !error.contains(wrong_secret) && !error.contains(&s3.secret_key),
        "a secret in the message: {error}"
    );

    // A missing bucket, and a port nobody listens on, straight from the lake.
    let lake_config = |location: String, endpoint: String| LakeConfig {
        enabled: true,
        location,
        s3: S3Config {
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
            allow_http: true,
            access_key_id: Some(s3.access_key.clone()),
            secret_access_key_file: Some(right.path().to_owned()),
        },
        ..Default::default()
    };
    let missing = "s3://no-such-bucket/lake".to_owned();
    let e = Lake::open(&lake_config(missing.clone(), s3.endpoint()), "x", Duration::ZERO)
        .await
        .err()
        .context("a missing bucket opened")?;
    let e = glasshouse_runtime::service::error_chain(&e);
    ensure!(e.contains(&missing) && e.contains("bucket must exist"), "{e}");
    ensure!(!e.contains(&s3.secret_key), "{e}");

    let closed = format!("http://127.0.0.1:{}", free_port()?);
    let started = Instant::now();
    let e = Lake::open(&lake_config(location.clone(), closed.clone()), "x", Duration::ZERO)
        .await
        .err()
        .context("an endpoint nobody listens on opened")?;
    let e = glasshouse_runtime::service::error_chain(&e);
    println!("no server, after {:?}: {e}", started.elapsed());
    ensure!(e.contains(&location) && e.contains(&closed), "{e}");
    ensure!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );

    // The right secret opens it.
    Lake::open(&lake_config(location, s3.endpoint()), "x", Duration::ZERO).await?;
    Ok(())
}

/// Flushed within flush_secs: Parquet objects of both hours' partitions in
/// the bucket, all under the lake's prefix.
async fn objects_of_both_hours(s3: &S3Server) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let objects = loop {
        let objects = parquet_objects(s3, "process_events");
        let hours: std::collections::BTreeSet<_> = objects
            .iter()
            .filter_map(|o| o.split("/hour=").nth(1).map(|h| h[..2].to_owned()))
            .collect();
        if hours.len() == 2 {
            break objects;
        }
        ensure!(
            Instant::now() < deadline,
            "no Parquet objects of both hours in the bucket within 60 s: {objects:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    ensure!(
        objects
            .iter()
            .all(|o| o.starts_with(&format!("{PREFIX}/process_events/date="))),
        "{objects:?}"
    );
    Ok(objects)
}

/// 800 events at `current` and 100 at `old`, produced to the broker as the
/// aggregator would.
async fn produce_fixture(brokers: &str, cs: &[fixture::Container], current: i64, old: i64) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()?;
    let mut messages: Vec<Vec<u8>> = (0..8)
        .map(|m| fixture::process_message(cs, m * 100, 100, current))
        .collect();
    messages.push(fixture::process_message(cs, 5000, 100, old));
    for msg in &messages {
        producer
            .send(
                FutureRecord::<str, [u8]>::to("glasshouse.process")
                    .key("shop/web")
                    .payload(msg),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// A PostgreSQL front door on `engine`: its port, and what stops it.
async fn serve_psql(engine: &Engine) -> anyhow::Result<(u16, CancellationToken)> {
    let listener = pg::bind("127.0.0.1:0".parse()?).await?;
    let port = listener.local_addr()?.port();
    let done = CancellationToken::new();
    tokio::spawn(pg::serve(
        listener,
        engine.clone(),
        pg::Credentials {
            user: "glasshouse".into(),
            password: PASSWORD.into(),
        },
        Default::default(),
        done.clone(),
    ));
    Ok((port, done))
}

/// psql over both hours through a PostgreSQL front door on `engine`: the
/// total of the per-workload counts, the rows, and what stops the server.
async fn psql_over_both_hours(engine: &Engine) -> anyhow::Result<(u64, String, CancellationToken)> {
    let (port, done) = serve_psql(engine).await?;
    let rows = tokio::task::spawn_blocking(move || {
        psql_one(
            port,
            "SELECT workload_id, count(*) FROM process_events GROUP BY workload_id ORDER BY workload_id",
        )
    })
    .await??;
    let total: u64 = rows
        .lines()
        .filter_map(|l| l.rsplit('|').next()?.parse::<u64>().ok())
        .sum();

    Ok((total, rows, done))
}
