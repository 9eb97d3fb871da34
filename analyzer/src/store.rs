//! Where the analyzer's results go in Kafka: alerts to `glasshouse.alerts`
//! (OCSF JSON, key = workload id) and baseline snapshots to the compacted
//! `glasshouse.baselines` (JSON, key = workload id).
//!
//! A snapshot goes to the baselines partition with the number of the event
//! partition its workload arrives on (modulo the baselines topic's partition
//! count), so the analyzer that is assigned event partition `p` restores
//! the workloads of `p` by reading one baselines partition to its end.
//! A snapshot records its event partition; restoring keeps only those of
//! the assigned partitions. An empty value (a tombstone) forgets a workload.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use glasshouse_proto::record::{TOPIC_ALERTS, TOPIC_BASELINES};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::baseline::Baseline;

/// Kafka side of the analyzer's state and output.
pub struct Store {
    brokers: String,
    extra: BTreeMap<String, String>,
    producer: FutureProducer,
    baseline_partitions: i32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("brokers", &self.brokers)
            .field("baseline_partitions", &self.baseline_partitions)
            .finish_non_exhaustive()
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// A client of `brokers` with our `own` properties and then the operator's
/// `extra` ones (`[kafka]`), which win.
pub(crate) fn client(brokers: &str, own: &[(&str, &str)], extra: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in own {
        c.set(*k, *v);
    }
    for (k, v) in extra {
        c.set(k, v);
    }
    c
}

impl Store {
    /// Connects a producer and learns the baselines topic's partition count.
    pub async fn connect(brokers: &str, extra: &BTreeMap<String, String>) -> Result<Store, String> {
        let own = [
            ("enable.idempotence", "true"),
            ("compression.type", "zstd"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "60000"),
        ];
        let producer: FutureProducer = client(brokers, &own, extra)
            .create()
            .map_err(|e| format!("kafka producer for {brokers}: {e}"))?;
        let probe = producer.clone();
        let partitions = tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(Some(TOPIC_BASELINES), TIMEOUT)
                .map_err(|e| format!("metadata of {TOPIC_BASELINES}: {e}"))
                .map(|m| m.topics().first().map_or(0, |t| t.partitions().len() as i32))
        })
        .await
        .map_err(|e| e.to_string())??;
        if partitions < 1 {
            return Err(format!("topic {TOPIC_BASELINES} has no partitions"));
        }
        Ok(Store {
            brokers: brokers.to_owned(),
            extra: extra.clone(),
            producer,
            baseline_partitions: partitions,
        })
    }

    /// Enqueues an alert; the future resolves when Kafka has it.
    pub fn publish_alert(&self, workload: &str, json: &str) -> Result<DeliveryFuture, String> {
        self.producer
            .send_result(FutureRecord::to(TOPIC_ALERTS).key(workload).payload(json))
            .map_err(|(e, _)| format!("enqueueing alert: {e}"))
    }

    /// Writes baseline snapshots and waits until Kafka has all of them.
    pub async fn save(&self, snapshots: &[(i32, String, Vec<u8>)]) -> Result<(), String> {
        let mut futures = Vec::with_capacity(snapshots.len());
        for (partition, workload, json) in snapshots {
            let record = FutureRecord::to(TOPIC_BASELINES)
                .key(workload)
                .payload(json)
                .partition(partition.rem_euclid(self.baseline_partitions));
            futures.push(
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| format!("enqueueing baseline of {workload}: {e}"))?,
            );
        }
        for f in futures {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(format!("writing a baseline: {e}")),
                Err(_) => return Err("writing a baseline: producer gone".into()),
            }
        }
        Ok(())
    }

    /// Reads the latest snapshot of every workload of event `partitions`.
    pub async fn load(&self, partitions: &[i32]) -> Result<Vec<Baseline>, String> {
        let brokers = self.brokers.clone();
        let extra = self.extra.clone();
        let n = self.baseline_partitions;
        let wanted = partitions.to_vec();
        tokio::task::spawn_blocking(move || load_blocking(&brokers, &extra, n, &wanted))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Waits until every enqueued message is delivered (or `timeout`).
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        self.producer.flush(timeout).map_err(|e| e.to_string())
    }
}

fn load_blocking(
    brokers: &str,
    extra: &BTreeMap<String, String>,
    baseline_partitions: i32,
    wanted: &[i32],
) -> Result<Vec<Baseline>, String> {
    let mut read: Vec<i32> = wanted.iter().map(|p| p.rem_euclid(baseline_partitions)).collect();
    read.sort_unstable();
    read.dedup();
    let latest = read_latest(brokers, extra, Some(&read), Duration::from_secs(60))?;
    Ok(latest.into_values().filter(|b| wanted.contains(&b.partition)).collect())
}

/// The latest snapshot of every workload on `glasshouse.baselines` (of the
/// given partitions of it, or all), read to the end as it is now; a
/// tombstone forgets a workload, an unreadable snapshot is skipped (logged).
pub fn read_latest(
    brokers: &str,
    extra: &BTreeMap<String, String>,
    partitions: Option<&[i32]>,
    timeout: Duration,
) -> Result<BTreeMap<String, Baseline>, String> {
    let mut config = client(brokers, &[], extra);
    config
        .set("group.id", "glasshouse-baseline-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| format!("kafka consumer for {brokers}: {e}"))?;
    let partitions: Vec<i32> = match partitions {
        Some(p) => p.to_vec(),
        None => {
            let metadata = consumer
                .fetch_metadata(Some(TOPIC_BASELINES), TIMEOUT)
                .map_err(|e| format!("kafka at {brokers}: {e}"))?;
            metadata
                .topics()
                .first()
                .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                .unwrap_or_default()
        }
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(TOPIC_BASELINES, p, TIMEOUT)
            .map_err(|e| format!("watermarks of {TOPIC_BASELINES}/{p}: {e}"))?;
        if high > low {
            tpl.add_partition_offset(TOPIC_BASELINES, p, Offset::Offset(low))
                .map_err(|e| e.to_string())?;
            ends.insert(p, high);
        }
    }
    let mut latest: BTreeMap<String, Option<Baseline>> = BTreeMap::new();
    if !ends.is_empty() {
        consumer
            .assign(&tpl)
            .map_err(|e| format!("assign {TOPIC_BASELINES}: {e}"))?;
    }
    let deadline = std::time::Instant::now() + timeout;
    // The reported high watermark is not always the offset after the last
    // record: tansu 0.6 reports the base offset of the last record batch + 1,
    // so the other records of that batch come after the "end". Past every
    // end, read on until the partitions are quiet (what the broker already
    // sent arrives at once), or the deadline.
    let mut drained = ends.is_empty();
    while !drained {
        let now = std::time::Instant::now();
        if now > deadline {
            if ends.is_empty() {
                break;
            }
            return Err(format!("reading {TOPIC_BASELINES}: not at its end after {timeout:?}"));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            drained = ends.is_empty();
            continue;
        };
        let m = m.map_err(|e| format!("reading {TOPIC_BASELINES}: {e}"))?;
        if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&m.partition());
        }
        let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            continue;
        };
        match m.payload() {
            None | Some([]) => {
                latest.insert(key, None);
            }
            Some(json) => match serde_json::from_slice::<Baseline>(json) {
                Ok(b) => {
                    latest.insert(key, Some(b));
                }
                Err(error) => {
                    tracing::warn!(workload = key, %error, offset = m.offset(), "unreadable baseline snapshot, skipped");
                }
            },
        }
    }
    Ok(latest.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
}
