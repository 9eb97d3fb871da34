//! The lake's scale-out, end to end, with every part a real process: three
//! analyzer replicas (`glasshouse-analyzer`, each writing the partitions
//! its lake consumer group gives it) and two query services
//! (`glasshouse-query`) on one Iceberg REST catalog with its S3 storage
//! (SeaweedFS, `IcebergRestCatalog`) and one broker (tansu). A known number
//! of events goes in while one analyzer is SIGKILLed and restarted,
//! snapshot expiry runs over and over (as the writers' own hourly expiry
//! does, here from outside), and pyiceberg compacts the table (reads it
//! whole and overwrites it with the same rows in one file per partition,
//! a rewrite iceberg-rust cannot commit yet) and applies retention (deletes
//! the rows older than two hours: 100 events dated three hours ago) while
//! the writers commit. Afterwards each query service through `psql`, and
//! pyiceberg with no Glasshouse code, count exactly the current events as
//! rows and as distinct events, and none of the old ones.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_lake::fixture;
use glasshouse_lake::iceberg_lake::IcebergLake;
use glasshouse_lake::query::QueryConfig;
use glasshouse_tests::{Broker, IcebergRestCatalog, ServiceProcess, free_port, init_logging, psql, wait_for_port};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const MESSAGES: u64 = 200;
const PER_MESSAGE: u64 = 100;
const PASSWORD: &str = "replicas-sql";

/// The `[lake]` table every replica and query service shares.
fn lake_toml(catalog: &IcebergRestCatalog, dir: &std::path::Path) -> anyhow::Result<String> {
    let secret = dir.join("s3-secret");
    std::fs::write(&secret, format!("{}\n", catalog.secret_key))?;
    let token = dir.join("catalog-token");
    std::fs::write(&token, format!("{}\n", catalog.token()?))?;
    Ok(format!(
        "[lake]\nenabled = true\nlocation = \"{warehouse}/glasshouse\"\nflush_secs = 1\n\
         [lake.s3]\nendpoint = \"{s3}\"\nregion = \"us-east-1\"\nallow_http = true\n\
         access_key_id = \"{key}\"\nsecret_access_key_file = \"{secret}\"\n\
         [lake.catalog]\nkind = \"rest\"\nuri = \"{uri}\"\nwarehouse = \"{warehouse}\"\ntoken_file = \"{token}\"\n",
        warehouse = catalog.warehouse(),
        s3 = catalog.s3_endpoint(),
        key = catalog.access_key,
        secret = secret.display(),
        uri = catalog.uri(),
        token = token.display(),
    ))
}

fn analyzer(brokers: &str, replica: usize, lake: &str) -> anyhow::Result<ServiceProcess> {
    ServiceProcess::start(&format!(
        "brokers = \"{brokers}\"\ngroup = \"replicas\"\ninstance_id = \"replica-{replica}\"\nview = false\n\
         session_timeout_ms = 10000\n[analysis]\nenabled = false\n{lake}"
    ))
}

/// `count(*)` and `count(DISTINCT pid)` (one pid per fixture event) of
/// `process_events` through psql on `port`.
fn counts(port: u16) -> anyhow::Result<String> {
    let (ok, out, err) = psql(
        ([127, 0, 0, 1], port).into(),
        PASSWORD,
        &["SELECT count(*), count(DISTINCT pid) FROM process_events"],
    )?;
    ensure!(ok, "psql on {port}: {err}");
    Ok(out.trim().to_owned())
}

/// pyiceberg (no Glasshouse code) on the same catalog and bucket: `script`
/// runs after `t = c.load_table('glasshouse.process_events')`.
fn pyiceberg(catalog: &IcebergRestCatalog, script: &str) -> anyhow::Result<String> {
    let full = format!(
        "from pyiceberg.catalog import load_catalog\n\
         c = load_catalog('glasshouse', **{{'type': 'rest', 'uri': '{uri}', 'warehouse': '{warehouse}', 'token': '{token}',\n\
             's3.endpoint': '{s3}', 's3.region': 'us-east-1', 's3.access-key-id': '{key}', 's3.secret-access-key': '{secret}'}})\n\
         t = c.load_table('glasshouse.process_events')\n{script}",
        uri = catalog.uri(),
        warehouse = catalog.warehouse(),
        token = catalog.token()?,
        s3 = catalog.s3_endpoint(),
        key = catalog.access_key,
        secret = catalog.secret_key,
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &full])
        .output()
        .context("python3 (deploy/local/setup.sh installs pyiceberg)")?;
    ensure!(
        out.status.success(),
        "pyiceberg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Compaction by another engine: the table read whole and overwritten with
/// the same rows, committed only if no writer committed in between (the
/// catalog refuses a commit on a stale snapshot; then it tries again).
const COMPACT: &str = "from pyiceberg.exceptions import CommitFailedException\n\
    import time\n\
    for attempt in range(30):\n\
    \x20   t = c.load_table('glasshouse.process_events')\n\
    \x20   before = len(t.inspect.files())\n\
    \x20   rows = t.scan().to_arrow()\n\
    \x20   try:\n\
    \x20       t.overwrite(rows)\n\
    \x20       t = c.load_table('glasshouse.process_events')\n\
    \x20       print(attempt, before, len(t.inspect.files()), rows.num_rows)\n\
    \x20       break\n\
    \x20   except Exception as e:\n\
    \x20       if not (isinstance(e, CommitFailedException) or '409' in str(e)):\n\
    \x20           raise\n\
    \x20       time.sleep(0.2)\n\
    else:\n\
    \x20   print('no commit in 30 attempts')\n";

/// Retention by another engine: rows older than two hours deleted (whole
/// files here: they are alone in their hour partition), retried like the
/// compaction when a writer commits in between.
const RETENTION: &str = "from pyiceberg.exceptions import CommitFailedException\n\
    from pyiceberg.expressions import LessThan\n\
    import datetime, time\n\
    cutoff = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)).isoformat()\n\
    for attempt in range(30):\n\
    \x20   t = c.load_table('glasshouse.process_events')\n\
    \x20   try:\n\
    \x20       t.delete(delete_filter=LessThan('time', cutoff))\n\
    \x20       print(attempt)\n\
    \x20       break\n\
    \x20   except Exception as e:\n\
    \x20       if not (isinstance(e, CommitFailedException) or '409' in str(e)):\n\
    \x20           raise\n\
    \x20       time.sleep(0.2)\n\
    else:\n\
    \x20   print('no commit in 30 attempts')\n";

const OLD: &str = "SELECT count(*) FROM process_events WHERE time < now() - INTERVAL '2 hours'";

/// Polls `sql` on the query service at `port` until it answers `want`.
async fn poll(port: u16, sql: &'static str, want: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let got = tokio::task::spawn_blocking(move || {
            let (ok, out, err) = psql(([127, 0, 0, 1], port).into(), PASSWORD, &[sql])?;
            ensure!(ok, "psql on {port}: {err}");
            anyhow::Ok(out.trim().to_owned())
        })
        .await?;
        if got.as_ref().is_ok_and(|g| g == want) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{sql} on {port}: {got:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_analyzers_and_two_query_services_on_one_catalog_count_every_event_once_through_a_sigkill_expiry_compaction_and_retention()
-> anyhow::Result<()> {
    init_logging();
    let started = Instant::now();
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let cancel = CancellationToken::new();
    glasshouse_runtime::kafka::ensure_topics(&brokers, &Default::default(), Default::default(), &cancel).await?;
    let catalog = IcebergRestCatalog::start("lake")?;
    let dir = tempfile::tempdir()?;
    let lake = lake_toml(&catalog, dir.path())?;
    let password = dir.path().join("sql-password");
    std::fs::write(&password, format!("{PASSWORD}\n"))?;

    let mut analyzers = (0..3)
        .map(|i| analyzer(&brokers, i, &lake))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ports = [free_port()?, free_port()?];
    let _queries = ports
        .iter()
        .map(|port| {
            ServiceProcess::query(&format!(
                "{lake}[sql]\npg_listen = \"127.0.0.1:{port}\"\npassword_file = \"{}\"\n",
                password.display()
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for port in ports {
        wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(60))?;
    }

    // Snapshot expiry from outside, over and over while the writers commit.
    let config: QueryConfig = glasshouse_runtime::service::parse_config(
        "maintenance",
        &format!(
            "{lake}[sql]\npg_listen = \"127.0.0.1:1\"\npassword_file = \"{}\"\n",
            password.display()
        ),
    )?;
    let maintainer = IcebergLake::open(&config.lake).await?;
    let expiry = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut expired = 0;
            while !cancel.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(700)).await;
                let table = maintainer.table("process_events").context("table")?;
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis() as i64;
                // Refused now and then by a concurrent commit: tried again.
                expired += table.expire_snapshots(now_ms, 1).await.unwrap_or(0);
            }
            anyhow::Ok(expired)
        })
    };

    // 20,000 events in 200 messages over about ten seconds, keyed by
    // workload over the six partitions.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "false")
        .create()?;
    let cs = fixture::containers(12);
    let base = glasshouse_tests::epoch();
    // First, 100 events dated three hours ago, for retention to delete.
    let old = fixture::process_message(&cs, 1_000_000, 100, base - 3 * 3_600_000_000_000);
    producer
        .send(
            FutureRecord::to("glasshouse.process").key("workload-old").payload(&old),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let mut killed_at = None;
    for m in 0..MESSAGES {
        let value = fixture::process_message(&cs, m * PER_MESSAGE, PER_MESSAGE as usize, base);
        let key = format!("workload-{}", m % 12);
        producer
            .send(
                FutureRecord::to("glasshouse.process").key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        if m == MESSAGES / 4 {
            analyzers[1].kill()?;
            killed_at = Some(Instant::now());
        }
        if m == MESSAGES / 2 {
            analyzers[1] = analyzer(&brokers, 1, &lake)?;
        }
        if m == 3 * MESSAGES / 4 {
            let compacted = tokio::task::block_in_place(|| pyiceberg(&catalog, COMPACT))?;
            println!("pyiceberg compaction while the writers commit (attempt, files before, after, rows): {compacted}");
            ensure!(!compacted.starts_with("no commit"), "{compacted}");
            poll(ports[0], OLD, "100", Duration::from_secs(30)).await?;
            let deleted = tokio::task::block_in_place(|| pyiceberg(&catalog, RETENTION))?;
            println!("pyiceberg retention (older than 2 h) while the writers commit, attempt {deleted}");
            ensure!(!deleted.starts_with("no commit"), "{deleted}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let produced = Instant::now();
    let total = MESSAGES * PER_MESSAGE;
    let want = format!("{total}|{total}");

    // Every query service counts every event once.
    let deadline = Instant::now() + Duration::from_secs(90);
    for port in ports {
        loop {
            let got = tokio::task::spawn_blocking(move || counts(port)).await?;
            if got.as_ref().is_ok_and(|g| *g == want) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "query service on {port}: {got:?}, want {want} (rows, distinct events)"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let settled = (killed_at.map(|k| k.elapsed()), produced.elapsed());
    // Nothing more arrives later (a late replay would show here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for port in ports {
        let got = tokio::task::spawn_blocking(move || counts(port)).await??;
        ensure!(got == want, "query service on {port} later: {got}, want {want}");
        poll(port, OLD, "0", Duration::from_secs(1)).await?;
    }
    cancel.cancel();
    let expired = expiry.await??;

    // Another engine, no Glasshouse code.
    let read = tokio::task::block_in_place(|| {
        pyiceberg(
            &catalog,
            "a = t.scan(selected_fields=('pid',)).to_arrow()\n\
             print(a.num_rows, len(set(a.column('pid').to_pylist())), len(t.inspect.files()), len(t.snapshots()))\n",
        )
    })?;
    let fields: Vec<&str> = read.split_whitespace().collect();
    ensure!(
        fields.get(..2) == Some(&[total.to_string().as_str(), total.to_string().as_str()][..]),
        "pyiceberg read {read:?} (rows, distinct events, files, snapshots), want {total} {total}"
    );
    println!(
        "3 analyzers, 2 query services, 1 REST catalog: {total} events, {total} rows and distinct events in each \
         query service and pyiceberg ({read}: rows, distinct, data files, snapshots left); {expired} snapshots \
         expired meanwhile; all counted (SIGKILL, last event produced) {settled:?} before; {:?} in all",
        started.elapsed()
    );
    Ok(())
}
