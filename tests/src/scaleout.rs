//! The lake's scale-out as one scenario, with every part a real process:
//! three analyzer replicas (`glasshouse-analyzer`, each writing the
//! partitions its lake consumer group gives it) and two query services
//! (`glasshouse-query`) on one Iceberg REST catalog with its S3 storage
//! (SeaweedFS, [`IcebergRestCatalog`]) and one broker (tansu). A known
//! number of events goes in while one analyzer is SIGKILLed (at a quarter)
//! and restarted (at half), snapshot expiry runs over and over from
//! outside, and pyiceberg compacts the table (replaces the data files it
//! read with their rows in one file per partition, a rewrite iceberg-rust
//! cannot commit yet) and applies retention (deletes the rows older than
//! two hours: 100 events dated three hours ago) while the writers commit.
//! Afterwards each query service through `psql`, and pyiceberg with no
//! Glasshouse code, must count exactly the current events as rows and as
//! distinct events, and none of the old ones.
//!
//! The test (`tests/tests/sql/sql_replicas.rs`) runs it with 20,000 events,
//! the benchmark (`tests/benches/scaleout.rs`) with a million.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_lake::fixture;
use glasshouse_lake::iceberg_lake::IcebergLake;
use glasshouse_lake::query::QueryConfig;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::{Broker, IcebergRestCatalog, ServiceProcess, free_port, psql, wait_for_port};

const PASSWORD: &str = "replicas-sql";

/// How many events, in how many messages, how fast.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Messages produced (keyed by twelve workloads over six partitions).
    pub messages: u64,
    /// Events per message.
    pub per_message: u64,
    /// Pause after each message.
    pub pace: Duration,
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Events produced (and counted).
    pub events: u64,
    /// From the analyzers' start until the writers' first commit was
    /// queryable (their group formed; the query services and the
    /// maintenance client started meanwhile).
    pub formed: Duration,
    /// Producing the events, kill and restart included.
    pub produced: Duration,
    /// From the SIGKILL, and from the last event produced, until both
    /// query services counted every event.
    pub kill_to_counted: Duration,
    pub last_to_counted: Duration,
    /// pyiceberg's compaction: attempt, files before and after, rows read.
    pub compaction: String,
    /// pyiceberg's retention delete: the attempt that committed.
    pub retention: String,
    /// pyiceberg's own count: rows, distinct events, data files, snapshots.
    pub pyiceberg: String,
    /// Snapshots the outside expiry removed meanwhile.
    pub expired: usize,
    pub total: Duration,
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
/// Commits `action(t)` on a freshly loaded table, again when a writer
/// committed in between and pyiceberg's own retries (which rebase the
/// operation on the new snapshot) gave up, or when the snapshot it started
/// from was expired meanwhile: `(attempt, result)`, or None after 30
/// attempts.
const COMMITTED: &str = "from pyiceberg.exceptions import CommitFailedException, ValidationException\n\
    import time\n\
    def committed(action):\n\
    \x20   for attempt in range(30):\n\
    \x20       t = c.load_table('glasshouse.process_events')\n\
    \x20       try:\n\
    \x20           return attempt, action(t)\n\
    \x20       except Exception as e:\n\
    \x20           if not (isinstance(e, (CommitFailedException, ValidationException)) or '409' in str(e)):\n\
    \x20               raise\n\
    \x20           time.sleep(0.2)\n\
    \x20   return None\n";

/// Compaction by another engine, as a rewrite of named files: the data
/// files of the current snapshot are read, their rows written as new files
/// and exactly those files replaced. (Not `t.overwrite(rows)`: pyiceberg
/// retries a refused commit on the new snapshot, where "delete every file"
/// also deletes what a writer appended in between: the test lost 1,100 of
/// 20,000 events that way.) Prints attempt, files before, files after,
/// rows.
const COMPACT: &str = "from pyiceberg.io.pyarrow import _dataframe_to_data_files\n\
    def compact(t):\n\
    \x20   scan = t.scan()\n\
    \x20   old = [task.file for task in scan.plan_files()]\n\
    \x20   rows = scan.to_arrow()\n\
    \x20   if old:\n\
    \x20       with t.transaction() as tx:\n\
    \x20           with tx.update_snapshot().overwrite() as rewrite:\n\
    \x20               for f in old:\n\
    \x20                   rewrite.delete_data_file(f)\n\
    \x20               for f in _dataframe_to_data_files(table_metadata=tx.table_metadata, df=rows, io=t.io):\n\
    \x20                   rewrite.append_data_file(f)\n\
    \x20   return len(old), rows.num_rows\n\
    r = committed(compact)\n\
    if r is None:\n\
    \x20   print('no commit in 30 attempts')\n\
    else:\n\
    \x20   after = len(list(c.load_table('glasshouse.process_events').scan().plan_files()))\n\
    \x20   print(r[0], r[1][0], after, r[1][1])\n";

/// Retention by another engine: rows older than two hours deleted (whole
/// files here: they are alone in their hour partition). Prints the attempt.
const RETENTION: &str = "from pyiceberg.expressions import LessThan\n\
    import datetime\n\
    cutoff = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)).isoformat()\n\
    r = committed(lambda t: t.delete(delete_filter=LessThan('time', cutoff)))\n\
    print('no commit in 30 attempts' if r is None else r[0])\n";

/// What a failed count is made of: the fixture messages missing from the
/// table (message m holds pids 1000 + m × `per_message` ..; the first 40
/// and how many), the high-water marks and every snapshot left with its
/// offsets and record counts.
fn diagnosis(s: &Scenario) -> String {
    format!(
        "t = c.load_table('glasshouse.process_events')\n\
         pids = set(t.scan(selected_fields=('pid',)).to_arrow().column('pid').to_pylist())\n\
         ms = sorted(set(range({messages})) - set((p - 1000) // {per} for p in pids))\n\
         print('missing messages', len(ms), ms[:40], 'keys', sorted(set(m % 12 for m in ms)))\n\
         print('marks', {{k: v for k, v in t.properties.items() if k.startswith('glasshouse')}})\n\
         for s in t.snapshots():\n\
         \x20   print(s.snapshot_id, s.parent_snapshot_id, s.summary.operation, s.summary.get('glasshouse.kafka.offsets'), \
         s.summary.get('added-records'), s.summary.get('deleted-records'), s.summary.get('total-records'))\n",
        messages = s.messages,
        per = s.per_message,
    )
}

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

/// Runs the scenario; fails unless every query service and pyiceberg count
/// exactly the scenario's events, once each, and none of the old ones.
pub async fn run(s: &Scenario) -> anyhow::Result<Report> {
    let started = Instant::now();
    let (_broker, brokers) = Broker::with_topics().await?;
    let cancel = CancellationToken::new();
    let catalog = IcebergRestCatalog::start("lake")?;
    let dir = tempfile::tempdir()?;
    let lake = catalog.lake_toml(dir.path())?;
    let password = dir.path().join("sql-password");
    std::fs::write(&password, format!("{PASSWORD}\n"))?;

    let writers_started = Instant::now();
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

    // The events, keyed by workload over the six partitions.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "false")
        .create()?;
    let cs = fixture::containers(12);
    let base = crate::epoch();
    let send = |key: String, value: Vec<u8>| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to("glasshouse.process").key(&key).payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
        }
    };
    // First, 100 events dated three hours ago (the fixture spaces events a
    // millisecond apart from their id: ids from a million start 17 minutes
    // later, still older than two hours), for retention to delete.
    send(
        "workload-old".into(),
        fixture::process_message(&cs, 1_000_000, 100, base - 3 * 3_600_000_000_000),
    )
    .await?;
    // The writers' group has formed and commits: the SIGKILL below hits a
    // writer at work, and compaction finds files to rewrite.
    poll(ports[0], OLD, "100", Duration::from_secs(60)).await?;
    let formed = writers_started.elapsed();
    let producing = Instant::now();
    let (mut killed_at, mut compaction, mut retention) = (None, String::new(), String::new());
    for m in 0..s.messages {
        let value = fixture::process_message(&cs, m * s.per_message, s.per_message as usize, base);
        send(format!("workload-{}", m % 12), value).await?;
        if m == s.messages / 4 {
            analyzers[1].kill()?;
            killed_at = Some(Instant::now());
        }
        if m == s.messages / 2 {
            analyzers[1] = analyzer(&brokers, 1, &lake)?;
        }
        if m == 3 * s.messages / 4 {
            compaction = tokio::task::block_in_place(|| catalog.pyiceberg(&format!("{COMMITTED}{COMPACT}")))?;
            ensure!(!compaction.starts_with("no commit"), "compaction: {compaction}");
            retention = tokio::task::block_in_place(|| catalog.pyiceberg(&format!("{COMMITTED}{RETENTION}")))?;
            ensure!(!retention.starts_with("no commit"), "retention: {retention}");
        }
        tokio::time::sleep(s.pace).await;
    }
    let produced = producing.elapsed();
    let last = Instant::now();
    let events = s.messages * s.per_message;
    let want = format!("{events}|{events}");

    // Every query service counts every event once: within 90 s, and a
    // second per 5,000 events on top for a big run.
    let deadline = Instant::now() + Duration::from_secs(90 + events / 5_000);
    for port in ports {
        loop {
            let got = tokio::task::spawn_blocking(move || counts(port)).await?;
            if got.as_ref().is_ok_and(|g| *g == want) {
                break;
            }
            if Instant::now() >= deadline {
                let table =
                    tokio::task::block_in_place(|| catalog.pyiceberg(&diagnosis(s))).unwrap_or_else(|e| e.to_string());
                println!("the table at the deadline:\n{table}");
                anyhow::bail!("query service on {port}: {got:?}, want {want} (rows, distinct events)");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let (kill_to_counted, last_to_counted) = (killed_at.context("no kill")?.elapsed(), last.elapsed());
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
    let pyiceberg = tokio::task::block_in_place(|| {
        catalog.pyiceberg(
            "t = c.load_table('glasshouse.process_events')\n\
             a = t.scan(selected_fields=('pid',)).to_arrow()\n\
             print(a.num_rows, len(set(a.column('pid').to_pylist())), len(t.inspect.files()), len(t.snapshots()))\n",
        )
    })?;
    let fields: Vec<&str> = pyiceberg.split_whitespace().collect();
    ensure!(
        fields.get(..2) == Some(&[events.to_string().as_str(), events.to_string().as_str()][..]),
        "pyiceberg read {pyiceberg:?} (rows, distinct events, files, snapshots), want {events} {events}"
    );
    Ok(Report {
        events,
        formed,
        produced,
        kill_to_counted,
        last_to_counted,
        compaction,
        retention,
        pyiceberg,
        expired,
        total: started.elapsed(),
    })
}
