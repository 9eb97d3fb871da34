//! The lake's scale-out end to end (`glasshouse_tests::scaleout`): three
//! analyzer replicas and two query services on one Iceberg REST catalog
//! with its S3 storage and one broker, every part a real process; 20,000
//! events go in while one analyzer is SIGKILLed and restarted, snapshot
//! expiry runs over and over, and pyiceberg compacts the table and applies
//! retention as the writers commit. Afterwards each query service through
//! `psql`, and pyiceberg with no Glasshouse code, count exactly the current
//! events as rows and as distinct events, and none of the old ones. The
//! benchmark `--bench scaleout` runs the same with a million events.

use std::time::Duration;

use glasshouse_tests::init_logging;
use glasshouse_tests::scaleout::{self, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_analyzers_and_two_query_services_on_one_catalog_count_every_event_once_through_a_sigkill_expiry_compaction_and_retention()
-> anyhow::Result<()> {
    init_logging();
    // 20,000 events in 200 messages over about ten seconds.
    let r = scaleout::run(&Scenario {
        messages: 200,
        per_message: 100,
        pace: Duration::from_millis(50),
    })
    .await?;
    println!(
        "3 analyzers, 2 query services, 1 REST catalog: {} events, counted once in each query service and by \
         pyiceberg ({}: rows, distinct, data files, snapshots left); pyiceberg compaction (attempt, files before, \
         after, rows) {}, retention attempt {}; {} snapshots expired meanwhile; the writers' group formed in {:?}; \
         all counted {:?} after the SIGKILL, {:?} after the last event; {:?} in all",
        r.events,
        r.pyiceberg,
        r.compaction,
        r.retention,
        r.expired,
        r.formed,
        r.kill_to_counted,
        r.last_to_counted,
        r.total
    );
    Ok(())
}
