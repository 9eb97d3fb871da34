//! The analyzer's vulnerability task, beside the behaviour consumer:
//!
//! ```text
//!  glasshouse.advisories (compacted, every partition, from the start) ──▶ AdvisoryStore ─┐ changed: re-evaluate
//!  glasshouse.inventory (consumer group <group>-vulns, key = workload) ──▶ Matcher ◀──────┘ every container
//!                                      │
//!                                      ├─▶ glasshouse.alerts (OCSF 2002 / 2003, key = workload)
//!                                      └─▶ glasshouse.vulnerabilities (compacted, key = finding)
//! ```
//!
//! **Why these topics.** Advisories are imported once for the fleet
//! (`glasshouse vulns import`) onto the compacted `glasshouse.advisories`
//! (key = advisory id, so a newer version of an advisory replaces the older
//! one and a tombstone deletes it). Every analyzer instance reads the whole
//! topic (no consumer group) and keeps reading it, so all instances match
//! against the same advisories, an instance started later gets all of them,
//! and nothing is lost while an analyzer is down. Inventories are keyed by
//! workload like all telemetry, so the instances of the consumer group
//! share containers. The inventory group commits no offsets: at start (and
//! when partitions move) it reads what the topic retains from its beginning,
//! rebuilding the containers' inventories; agents send every container's
//! inventory again every `resend_secs`, so the topic's retention only needs
//! to cover that. A finding's OCSF uid is derived from its key, so a
//! replayed finding is recognisably the same one; and at start the task
//! reads `glasshouse.vulnerabilities` back, so a container's replayed
//! inventory takes over its published findings (no second alert, first-seen
//! kept). When inventory partitions move away, their containers are
//! forgotten here without publishing anything: the new owner replays them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use glasshouse_proto::record::{RecordType, TOPIC_ADVISORIES, TOPIC_ALERTS, TOPIC_VULNERABILITIES};
use glasshouse_proto::{inventory, ipc};
use glasshouse_runtime::kafka::Kafka;
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::error::VulnsError;
use crate::vulns::matcher::{Matcher, Output, Vulnerability};
use crate::vulns::osv::Advisory;
use crate::vulns::trust::Policy;

/// The `[vulns]` table of the analyzer config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Match container inventories against advisories and check image
    /// trust. Default: true.
    pub enabled: bool,
    /// A container whose inventory has not arrived for this long is
    /// forgotten and its rows deleted from `glasshouse.vulnerabilities`;
    /// must exceed the agents' `inventory.resend_secs`. Default: 10800.
    pub container_ttl_secs: u64,
    /// The image trust policy (`[vulns.image_trust]`). Default: none.
    pub image_trust: Policy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            container_ttl_secs: 3 * 3600,
            image_trust: Policy::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.container_ttl_secs < 60 {
            return Err((
                "vulns.container_ttl_secs",
                format!("must be at least 60, got {}", self.container_ttl_secs),
            ));
        }
        self.image_trust.validate()
    }
}

/// Where the task connects.
#[derive(Debug, Clone)]
pub struct Settings {
    pub brokers: String,
    /// Consumer group of the inventory topic.
    pub group: String,
    pub instance_id: Option<String>,
    pub extra: BTreeMap<String, String>,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn client_error(brokers: &str, source: rdkafka::error::KafkaError) -> VulnsError {
    VulnsError::Client {
        brokers: brokers.to_owned(),
        source,
    }
}

fn topic_error(what: &'static str, topic: &str, source: rdkafka::error::KafkaError) -> VulnsError {
    VulnsError::Topic {
        what,
        topic: topic.to_owned(),
        source,
    }
}

/// A consumer's config (every client made here consumes).
fn client(settings: &Settings) -> ClientConfig {
    let mut config = crate::store::client(&settings.brokers, &[], &settings.extra);
    glasshouse_runtime::kafka::for_consumer(&mut config);
    config
}

/// Collects the inventory partitions taken from this instance.
struct Revocations {
    revoked: Arc<Mutex<Vec<i32>>>,
}

impl ClientContext for Revocations {}

impl ConsumerContext for Revocations {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            // Cannot be poisoned: the lock is never held across a panic.
            self.revoked.lock().expect("not poisoned").extend(parts);
        }
    }
}

/// Every partition of `topic`, from its beginning.
fn all_partitions(consumer: &BaseConsumer, topic: &str) -> Result<TopicPartitionList, VulnsError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| topic_error("metadata of", topic, source))?;
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics().first().map(|t| t.partitions()).unwrap_or_default() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .map_err(|source| topic_error("assign", topic, source))?;
    }
    Ok(tpl)
}

/// Runs until `cancel`.
pub async fn run(settings: Settings, config: Config, cancel: CancellationToken) -> Result<(), VulnsError> {
    let brokers = settings.brokers.clone();
    let own = [
        ("enable.idempotence", "true"),
        ("compression.type", "zstd"),
        ("linger.ms", "5"),
    ];
    let producer: FutureProducer = crate::store::client(&brokers, &own, &settings.extra)
        .create()
        .map_err(|source| client_error(&brokers, source))?;
    let advisories = advisories_consumer(&settings).await?;
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let inventories = inventories_consumer(&settings, revoked.clone())?;
    tracing::info!(brokers, group = settings.group, "vulnerability matching started");
    let mut task = Task {
        matcher: restored_matcher(&settings, &config).await?,
        producer,
        pending: Vec::new(),
        advisories_changed: false,
        ttl_ns: (config.container_ttl_secs as i64).saturating_mul(1_000_000_000),
        logged: Instant::now(),
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let gone = std::mem::take(&mut *revoked.lock().expect("not poisoned"));
        if !gone.is_empty() {
            tracing::info!(partitions = ?gone, "inventory partitions revoked, their containers forgotten");
            task.matcher.revoked(&gone);
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            m = advisories.recv() => match m {
                Ok(m) => task.advisory(&m),
                Err(error) => {
                    tracing::warn!(%error, "advisories consumer error, retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            m = inventories.recv() => match m {
                Ok(m) => task.inventory(&m),
                Err(rdkafka::error::KafkaError::PartitionEOF(partition)) => task.replayed(partition),
                Err(error) => {
                    tracing::warn!(%error, "inventory consumer error, retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = ticker.tick() => task.tick().await?,
        }
    }
    for f in task.pending {
        let _ = f.await;
    }
    inventories.unsubscribe();
    Ok(())
}

/// A consumer of every partition of the advisories topic, from its start.
async fn advisories_consumer(settings: &Settings) -> Result<StreamConsumer, VulnsError> {
    let brokers = &settings.brokers;
    let advisories: StreamConsumer = client(settings)
        .set("group.id", format!("{}-advisories", settings.group))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .map_err(|source| client_error(brokers, source))?;
    let probe: BaseConsumer = client(settings)
        .create()
        .map_err(|source| client_error(brokers, source))?;
    let tpl = tokio::task::spawn_blocking(move || all_partitions(&probe, TOPIC_ADVISORIES))
        .await
        .map_err(VulnsError::Task)??;
    advisories
        .assign(&tpl)
        .map_err(|source| topic_error("assign", TOPIC_ADVISORIES, source))?;
    Ok(advisories)
}

/// The inventory consumer group member; revoked partitions go to `revoked`.
fn inventories_consumer(
    settings: &Settings,
    revoked: Arc<Mutex<Vec<i32>>>,
) -> Result<StreamConsumer<Revocations>, VulnsError> {
    let mut config = client(settings);
    config
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // End-of-partition events end a partition's replay (see Matcher::replayed).
        .set("enable.partition.eof", "true")
        .set("session.timeout.ms", "10000")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .set("fetch.wait.max.ms", "100");
    if let Some(id) = &settings.instance_id {
        config.set("group.instance.id", id);
    }
    let inventories: StreamConsumer<Revocations> = config
        .create_with_context(Revocations { revoked })
        .map_err(|source| client_error(&settings.brokers, source))?;
    inventories
        .subscribe(&[RecordType::Inventory.topic()])
        .map_err(|source| topic_error("subscribing to", RecordType::Inventory.topic(), source))?;
    Ok(inventories)
}

/// A matcher holding what was published before this start: a replayed
/// inventory then neither alerts again nor loses its findings' first-seen
/// times.
async fn restored_matcher(settings: &Settings, config: &Config) -> Result<Matcher, VulnsError> {
    let mut matcher = Matcher::new(config.image_trust.clone());
    let kafka = Kafka::new(settings.brokers.clone(), settings.extra.clone());
    let restored =
        tokio::task::spawn_blocking(move || read_compacted(&kafka, TOPIC_VULNERABILITIES, Duration::from_secs(60)))
            .await
            .map_err(VulnsError::Task)??;
    let rows: Vec<Vulnerability> = restored
        .values()
        .filter_map(|v| serde_json::from_slice(v).ok())
        .collect();
    tracing::info!(findings = rows.len(), "vulnerability findings restored");
    matcher.restore(rows);
    Ok(matcher)
}

/// The task's state between messages.
struct Task {
    matcher: Matcher,
    producer: FutureProducer,
    /// Outputs handed to Kafka, awaited every tick.
    pending: Vec<DeliveryFuture>,
    advisories_changed: bool,
    ttl_ns: i64,
    logged: Instant,
}

impl Task {
    fn advisory(&mut self, m: &BorrowedMessage<'_>) {
        let id = m
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        match m.payload() {
            None | Some([]) => self.advisories_changed |= self.matcher.advisories.remove(&id),
            Some(json) => match Advisory::parse(json) {
                Ok(a) => self.advisories_changed |= self.matcher.advisories.upsert(a),
                Err(error) => tracing::warn!(offset = m.offset(), %error, "advisory skipped"),
            },
        }
    }

    fn inventory(&mut self, m: &BorrowedMessage<'_>) {
        let rows = m
            .payload()
            .ok_or_else(|| "empty message".to_owned())
            .and_then(|p| ipc::decode(p).map_err(|e| e.to_string()))
            .and_then(|b| inventory::read_rows(&b).map_err(|e| e.to_string()));
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(offset = m.offset(), %error, "undecodable inventory, skipped");
                return;
            }
        };
        for row in rows {
            let started = Instant::now();
            let (container, packages) = (row.attribution.container().to_owned(), row.packages.len());
            let out = self.matcher.inventory(row, m.partition(), now_ns());
            tracing::debug!(
                container = %container,
                packages,
                outputs = out.len(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "inventory matched"
            );
            publish(&self.producer, out, &mut self.pending);
        }
    }

    /// The end of an inventory partition's replay.
    fn replayed(&mut self, partition: i32) {
        let out = self.matcher.replayed(partition, now_ns());
        if !out.is_empty() {
            tracing::info!(partition, changes = out.len(), "inventory partition replayed");
        }
        publish(&self.producer, out, &mut self.pending);
    }

    /// Every second: re-evaluate after advisories changed, expire gone
    /// containers, wait for the outputs, log the figures every minute.
    async fn tick(&mut self) -> Result<(), VulnsError> {
        if self.advisories_changed {
            self.advisories_changed = false;
            let started = Instant::now();
            // CPU-bound (seconds for a large fleet): off the I/O runtime.
            let mut taken = std::mem::take(&mut self.matcher);
            let (back, out) = tokio::task::spawn_blocking(move || {
                let out = taken.reevaluate_all(now_ns());
                (taken, out)
            })
            .await
            .map_err(VulnsError::Task)?;
            self.matcher = back;
            tracing::info!(
                advisories = self.matcher.advisories.len(),
                containers = self.matcher.containers(),
                changes = out.len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "advisories changed: every container evaluated again"
            );
            publish(&self.producer, out, &mut self.pending);
        }
        let expired = self.matcher.expire(now_ns(), self.ttl_ns);
        publish(&self.producer, expired, &mut self.pending);
        for f in self.pending.drain(..) {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => tracing::warn!(error = %e, "vulnerability output not written"),
                Err(_) => tracing::warn!("vulnerability output: producer gone"),
            }
        }
        if self.logged.elapsed() > Duration::from_secs(60) {
            self.logged = Instant::now();
            let s = self.matcher.stats;
            tracing::info!(
                advisories = self.matcher.advisories.len(),
                containers = self.matcher.containers(),
                open = self.matcher.open().count(),
                inventories = s.inventories,
                opened = s.opened,
                resolved = s.resolved,
                untrusted = s.untrusted,
                unparsable_versions = s.unparsable_versions,
                "vulnerabilities"
            );
        }
        Ok(())
    }
}

fn publish(producer: &FutureProducer, outputs: Vec<Output>, pending: &mut Vec<DeliveryFuture>) {
    for o in outputs {
        let sent = match &o {
            Output::Alert { workload, json } => producer
                .send_result(
                    FutureRecord::to(TOPIC_ALERTS)
                        .key(workload.as_str())
                        .payload(json.as_str()),
                )
                .map_err(|(e, _)| e),
            Output::Row { key, json: Some(json) } => producer
                .send_result(
                    FutureRecord::to(TOPIC_VULNERABILITIES)
                        .key(key.as_str())
                        .payload(json.as_str()),
                )
                .map_err(|(e, _)| e),
            // A tombstone: compaction deletes the key.
            Output::Row { key, json: None } => producer
                .send_result(FutureRecord::<str, str>::to(TOPIC_VULNERABILITIES).key(key.as_str()))
                .map_err(|(e, _)| e),
        };
        match sent {
            Ok(f) => pending.push(f),
            Err(e) => tracing::warn!(error = %e, "vulnerability output not enqueued"),
        }
    }
}

/// The latest value of every key of a compacted topic, read to its end as
/// it is now (a tombstone removes the key). The end is where each partition
/// reports end-of-partition, not the high watermark: tansu 0.6 reports a
/// high watermark of the last record batch's base offset + 1, so a
/// watermark-bounded read misses the rest of the last batch.
pub fn read_compacted(kafka: &Kafka, topic: &str, timeout: Duration) -> Result<BTreeMap<String, Vec<u8>>, VulnsError> {
    let brokers = &kafka.brokers;
    let consumer: BaseConsumer = glasshouse_runtime::kafka::for_consumer(&mut kafka.client(&[
        ("group.id", "glasshouse-compacted-reader"),
        ("enable.auto.commit", "false"),
        ("enable.partition.eof", "true"),
    ]))
    .create()
    .map_err(|source| client_error(brokers, source))?;
    let tpl = all_partitions(&consumer, topic)?;
    let mut open: std::collections::HashSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    let mut latest = BTreeMap::new();
    if open.is_empty() {
        return Err(VulnsError::NoPartitions {
            topic: topic.to_owned(),
            brokers: brokers.clone(),
        });
    }
    consumer
        .assign(&tpl)
        .map_err(|source| topic_error("assign", topic, source))?;
    let deadline = Instant::now() + timeout;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(VulnsError::NotAtEnd {
                topic: topic.to_owned(),
                timeout,
            });
        }
        let m = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
                continue;
            }
            Some(m) => m.map_err(|source| topic_error("reading", topic, source))?,
        };
        let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            continue;
        };
        match m.payload() {
            None | Some([]) => {
                latest.remove(&key);
            }
            Some(v) => {
                latest.insert(key, v.to_vec());
            }
        }
    }
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_checks() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert!(c.enabled && c.image_trust.is_empty());
        assert_eq!(c.container_ttl_secs, 10800);
        c.validate().unwrap();
        let c: Config = serde_json::from_str(r#"{"container_ttl_secs": 5}"#).unwrap();
        assert!(c.validate().unwrap_err().1.contains("at least 60"));
        let c: Config = serde_json::from_str(r#"{"image_trust": {"trusted_registries": ["quay.io"]}}"#).unwrap();
        assert_eq!(c.image_trust.trusted_registries, ["quay.io"]);
        assert!(serde_json::from_str::<Config>(r#"{"bogus": 1}"#).is_err());
    }

    #[test]
    fn the_shipped_local_config_parses_with_its_policy() {
        let text = include_str!("../../../deploy/local/analyzer.toml");
        let c: crate::Config = glasshouse_runtime::service::parse_config("deploy/local/analyzer.toml", text).unwrap();
        assert!(c.vulns.enabled);
        assert_eq!(
            c.vulns.image_trust.trusted_registries,
            ["localhost", "docker.io", "quay.io"]
        );
        assert!(
            c.vulns
                .image_trust
                .check(Some("localhost/glasshouse-test:latest"), None)
                .is_none()
        );
        assert!(c.vulns.image_trust.check(Some("evil.example.com/x:1"), None).is_some());
        let bad = format!("{text}\n[vulns.image_trust.extra]\n");
        assert!(glasshouse_runtime::service::parse_config::<crate::Config>("a.toml", &bad).is_err());
    }
}
