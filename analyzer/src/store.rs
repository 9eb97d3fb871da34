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
//!
//! With a control key ([`crate::sign`]) every snapshot and alert is signed,
//! and a snapshot (or tombstone) that is unsigned, forged or does not decode
//! is refused on restore: the last good snapshot before it is restored
//! instead, and written again at the next checkpoint so that compaction
//! keeps a good one. Without a key nothing is signed or checked, but a
//! snapshot that does not decode still never replaces a good one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use glasshouse_proto::record::{TOPIC_ALERTS, TOPIC_BASELINES};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::baseline::Baseline;
use crate::error::StoreError;
use crate::sign::{self, Key};

/// Kafka side of the analyzer's state and output.
pub struct Store {
    brokers: String,
    extra: BTreeMap<String, String>,
    producer: FutureProducer,
    baseline_partitions: i32,
    key: Option<Key>,
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

pub(crate) use glasshouse_runtime::kafka::client;

impl Store {
    /// Connects a producer and learns the baselines topic's partition count.
    pub async fn connect(
        brokers: &str,
        extra: &BTreeMap<String, String>,
        key: Option<Key>,
    ) -> Result<Store, StoreError> {
        let own = [
            ("enable.idempotence", "true"),
            ("compression.type", "zstd"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "60000"),
        ];
        let producer: FutureProducer =
            client(brokers, &own, extra)
                .create()
                .map_err(|source| StoreError::Producer {
                    brokers: brokers.to_owned(),
                    source,
                })?;
        let probe = producer.clone();
        let partitions = tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(Some(TOPIC_BASELINES), TIMEOUT)
                .map_err(|source| StoreError::Metadata {
                    topic: TOPIC_BASELINES,
                    source,
                })
                .map(|m| m.topics().first().map_or(0, |t| t.partitions().len() as i32))
        })
        .await
        .map_err(StoreError::Task)??;
        if partitions < 1 {
            return Err(StoreError::NoPartitions(TOPIC_BASELINES));
        }
        Ok(Store {
            brokers: brokers.to_owned(),
            extra: extra.clone(),
            producer,
            baseline_partitions: partitions,
            key,
        })
    }

    /// Enqueues an alert; the future resolves when Kafka has it.
    pub fn publish_alert(&self, workload: &str, json: &str) -> Result<DeliveryFuture, KafkaError> {
        let record = FutureRecord::to(TOPIC_ALERTS).key(workload).payload(json);
        let record = match self.signature(TOPIC_ALERTS, workload, json.as_bytes()) {
            Some(h) => record.headers(h),
            None => record,
        };
        self.producer.send_result(record).map_err(|(e, _)| e)
    }

    /// The signature header of a message, with a key.
    fn signature(&self, topic: &str, key: &str, value: &[u8]) -> Option<OwnedHeaders> {
        let signature = self.key.as_ref()?.sign(topic, key.as_bytes(), value);
        Some(OwnedHeaders::new().insert(Header {
            key: sign::HEADER,
            value: Some(&signature),
        }))
    }

    /// Writes baseline snapshots and waits until Kafka has all of them.
    pub async fn save(&self, snapshots: &[(i32, String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut futures = Vec::with_capacity(snapshots.len());
        for (partition, workload, json) in snapshots {
            let record = FutureRecord::to(TOPIC_BASELINES)
                .key(workload)
                .payload(json)
                .partition(partition.rem_euclid(self.baseline_partitions));
            let record = match self.signature(TOPIC_BASELINES, workload, json) {
                Some(h) => record.headers(h),
                None => record,
            };
            futures.push(
                self.producer
                    .send_result(record)
                    .map_err(|(source, _)| StoreError::Enqueue {
                        workload: workload.clone(),
                        source,
                    })?,
            );
        }
        for f in futures {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(StoreError::Write(e)),
                Err(_) => return Err(StoreError::ProducerGone),
            }
        }
        Ok(())
    }

    /// Reads the latest good snapshot of every workload of event
    /// `partitions`, and whether a refused record came after it.
    pub async fn load(&self, partitions: &[i32]) -> Result<Vec<(Baseline, bool)>, StoreError> {
        let brokers = self.brokers.clone();
        let extra = self.extra.clone();
        let n = self.baseline_partitions;
        let wanted = partitions.to_vec();
        let key = self.key.clone();
        tokio::task::spawn_blocking(move || load_blocking(&brokers, &extra, key.as_ref(), n, &wanted))
            .await
            .map_err(StoreError::Task)?
    }

    /// Waits until every enqueued message is delivered (or `timeout`).
    pub fn flush(&self, timeout: Duration) -> Result<(), StoreError> {
        self.producer.flush(timeout).map_err(StoreError::Flush)
    }
}

fn load_blocking(
    brokers: &str,
    extra: &BTreeMap<String, String>,
    key: Option<&Key>,
    baseline_partitions: i32,
    wanted: &[i32],
) -> Result<Vec<(Baseline, bool)>, StoreError> {
    let mut read: Vec<i32> = wanted.iter().map(|p| p.rem_euclid(baseline_partitions)).collect();
    read.sort_unstable();
    read.dedup();
    let latest = read_snapshots(brokers, extra, key, Some(&read), Duration::from_secs(60))?;
    Ok(latest
        .into_values()
        .filter_map(|(b, refused_after)| Some((b?, refused_after)))
        .filter(|(b, _)| wanted.contains(&b.partition))
        .collect())
}

/// Snapshot records refused on restore, since the start (`/metrics`).
pub static SNAPSHOTS_REFUSED: glasshouse_runtime::metrics::Counter = glasshouse_runtime::metrics::Counter::new(
    "glasshouse_analyzer_snapshots_refused_total",
    "Baseline snapshots refused on restore (unsigned, forged or undecodable); the one before stays.",
);

/// The latest snapshot of every workload on `glasshouse.baselines` (of the
/// given partitions of it, or all), read to the end as it is now; a
/// tombstone forgets a workload, an unreadable (or, with `key`, unsigned
/// or forged) record is skipped (logged, counted) and the good snapshot
/// before it kept.
pub fn read_latest(
    brokers: &str,
    extra: &BTreeMap<String, String>,
    key: Option<&Key>,
    partitions: Option<&[i32]>,
    timeout: Duration,
) -> Result<BTreeMap<String, Baseline>, StoreError> {
    Ok(read_snapshots(brokers, extra, key, partitions, timeout)?
        .into_iter()
        .filter_map(|(k, (b, _))| Some((k, b?)))
        .collect())
}

/// [`read_latest`], with tombstones as `None` and, per workload, whether a
/// refused record came after the one returned.
fn read_snapshots(
    brokers: &str,
    extra: &BTreeMap<String, String>,
    key: Option<&Key>,
    partitions: Option<&[i32]>,
    timeout: Duration,
) -> Result<BTreeMap<String, (Option<Baseline>, bool)>, StoreError> {
    let mut config = client(brokers, &[], extra);
    config
        .set("group.id", "glasshouse-baseline-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = glasshouse_runtime::kafka::for_consumer(&mut config)
        .create()
        .map_err(|source| StoreError::Consumer {
            brokers: brokers.to_owned(),
            source,
        })?;
    let partitions: Vec<i32> = match partitions {
        Some(p) => p.to_vec(),
        None => {
            let metadata = consumer
                .fetch_metadata(Some(TOPIC_BASELINES), TIMEOUT)
                .map_err(|source| StoreError::Metadata {
                    topic: TOPIC_BASELINES,
                    source,
                })?;
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
            .map_err(|source| StoreError::Watermarks {
                topic: TOPIC_BASELINES,
                partition: p,
                source,
            })?;
        if high > low {
            tpl.add_partition_offset(TOPIC_BASELINES, p, Offset::Offset(low))
                .map_err(|source| StoreError::Assign {
                    topic: TOPIC_BASELINES,
                    source,
                })?;
            ends.insert(p, high);
        }
    }
    let mut latest: BTreeMap<String, (Option<Baseline>, bool)> = BTreeMap::new();
    if !ends.is_empty() {
        consumer.assign(&tpl).map_err(|source| StoreError::Assign {
            topic: TOPIC_BASELINES,
            source,
        })?;
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
            return Err(StoreError::NotAtEnd {
                topic: TOPIC_BASELINES,
                timeout,
            });
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            drained = ends.is_empty();
            continue;
        };
        let m = m.map_err(|source| StoreError::Read {
            topic: TOPIC_BASELINES,
            source,
        })?;
        if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&m.partition());
        }
        let Some(raw_key) = m.key() else {
            continue;
        };
        let workload = String::from_utf8_lossy(raw_key).into_owned();
        let payload = m.payload().unwrap_or_default();
        let checked = match key {
            None => Ok(()),
            Some(k) => {
                let signature = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == sign::HEADER))
                    .and_then(|h| h.value);
                k.verify(TOPIC_BASELINES, raw_key, payload, signature)
                    .map_err(|e| e.to_string())
            }
        };
        let decoded = checked.and_then(|()| match payload {
            [] => Ok(None),
            json => serde_json::from_slice::<Baseline>(json)
                .map(Some)
                .map_err(|e| format!("does not decode: {e}")),
        });
        match decoded {
            Ok(b) => {
                latest.insert(workload, (b, false));
            }
            Err(error) => {
                SNAPSHOTS_REFUSED.add(1);
                tracing::warn!(
                    workload = %crate::escape::terminal(&workload),
                    %error,
                    partition = m.partition(),
                    offset = m.offset(),
                    "baseline snapshot refused, the one before it stays"
                );
                latest.entry(workload).or_insert((None, false)).1 = true;
            }
        }
    }
    Ok(latest)
}
