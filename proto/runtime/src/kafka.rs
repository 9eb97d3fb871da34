//! Kafka helpers shared by the aggregator and analyzer (feature `kafka`): the
//! topic layout of the design, created through the admin API when missing, and
//! waiting for an unreachable broker with backoff and a message naming it.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use glasshouse_proto::record::{
    RecordType, TOPIC_ADVISORIES, TOPIC_ALERTS, TOPIC_BASELINES, TOPIC_CONTROL, TOPIC_VULNERABILITIES,
};

use crate::service::Backoff;

/// A client config of `brokers`: the client's `own` properties, then the
/// operator's `properties` (`[kafka]`), which win. Every Kafka client of
/// every process is made here.
pub fn client(brokers: &str, own: &[(&str, &str)], properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in own {
        c.set(*k, *v);
    }
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// librdkafka properties that only producers read. The operator's `[kafka]`
/// applies to every client, and a consumer given one of these logs "… is a
/// producer property and will be ignored by this consumer instance" at
/// start: [`for_consumer`] drops them from a consumer's config.
pub const PRODUCER_ONLY: [&str; 22] = [
    "enable.idempotence",
    "enable.gapless.guarantee",
    "transactional.id",
    "transaction.timeout.ms",
    "acks",
    "request.required.acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "linger.ms",
    "queue.buffering.max.ms",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "batch.num.messages",
    "batch.size",
    "compression.type",
    "compression.codec",
    "compression.level",
    "message.send.max.retries",
    "retries",
    "partitioner",
    "sticky.partitioning.linger.ms",
];

/// A consumer's config: `config` without the [`PRODUCER_ONLY`] properties.
pub fn for_consumer(config: &mut ClientConfig) -> &mut ClientConfig {
    for key in PRODUCER_ONLY {
        config.remove(key);
    }
    config
}

/// Where Kafka is and how to reach it: the bootstrap servers and the
/// operator's librdkafka properties (`[kafka]`: `security.protocol`,
/// `ssl.*`, `sasl.*`, …), applied to every client a process or the CLI
/// creates, after the client's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kafka {
    pub brokers: String,
    pub properties: BTreeMap<String, String>,
}

impl Kafka {
    pub fn new(brokers: impl Into<String>, properties: BTreeMap<String, String>) -> Kafka {
        Kafka {
            brokers: brokers.into(),
            properties,
        }
    }

    /// A client config: the bootstrap servers, the client's `own`
    /// properties, then the operator's (which win).
    pub fn client(&self, own: &[(&str, &str)]) -> ClientConfig {
        client(&self.brokers, own, &self.properties)
    }

    /// Parses `KEY=VALUE` properties (the CLI's `-X`), refusing the ones a
    /// client sets itself.
    pub fn parse_properties(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for p in pairs {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("kafka property {p:?} is not KEY=VALUE"))?;
            if matches!(k, "bootstrap.servers" | "group.id" | "group.instance.id") {
                return Err(format!("kafka property `{k}` is set by glasshouse, not with -X"));
            }
            out.insert(k.to_owned(), v.to_owned());
        }
        Ok(out)
    }
}

impl std::fmt::Display for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.brokers)
    }
}

/// How topics are created when missing: the `[topics]` table of the
/// aggregator and analyzer configs.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicLayout {
    /// Partitions per topic; workloads spread over them. Default: 6.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor. Default: 1 (a single broker).
    #[serde(default = "default_replication")]
    pub replication: i32,
}

fn default_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    1
}

impl Default for TopicLayout {
    fn default() -> Self {
        TopicLayout {
            partitions: default_partitions(),
            replication: default_replication(),
        }
    }
}

impl crate::service::Validate for TopicLayout {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.partitions < 1 {
            return Err((
                "topics.partitions",
                format!("must be at least 1, got {}", self.partitions),
            ));
        }
        if self.replication < 1 {
            return Err((
                "topics.replication",
                format!("must be at least 1, got {}", self.replication),
            ));
        }
        Ok(())
    }
}

/// Why topics could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("kafka admin client for {brokers}")]
    Client {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("creating topic {topic} on {brokers}: {code}")]
    Create {
        topic: String,
        brokers: String,
        code: RDKafkaErrorCode,
    },
    #[error("shut down while waiting for kafka at {brokers}")]
    Cancelled { brokers: String },
}

/// The headers of a record message (see the crate's topic table): its
/// record type, this build's schema version and who produced it.
pub fn record_headers(record_type: RecordType, producer_id: &str) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::{Header, OwnedHeaders};
    let version = glasshouse_proto::SCHEMA_VERSION.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: glasshouse_proto::record::HEADER_RECORD_TYPE,
            value: Some(record_type.name()),
        })
        .insert(Header {
            key: glasshouse_proto::record::HEADER_SCHEMA_VERSION,
            value: Some(version.as_str()),
        })
        .insert(Header {
            key: glasshouse_proto::record::HEADER_PRODUCER_ID,
            value: Some(producer_id),
        })
}

/// Every topic of the design with its cleanup policy.
pub fn all_topics() -> Vec<(&'static str, bool)> {
    let mut topics: Vec<(&'static str, bool)> = RecordType::ALL.iter().map(|t| (t.topic(), t.compacted())).collect();
    topics.push((TOPIC_ALERTS, false));
    topics.push((TOPIC_BASELINES, true));
    topics.push((TOPIC_CONTROL, false));
    topics.push((TOPIC_ADVISORIES, true));
    topics.push((TOPIC_VULNERABILITIES, true));
    topics
}

/// [`ensure_topics`], where being cancelled while waiting is not an error:
/// `Ok(false)` means "shut down before Kafka was reachable".
pub async fn ensure_topics_unless_cancelled(
    brokers: &str,
    extra: &BTreeMap<String, String>,
    layout: TopicLayout,
    cancel: &CancellationToken,
) -> Result<bool, TopicError> {
    match ensure_topics(brokers, extra, layout, cancel).await {
        Ok(()) => Ok(true),
        Err(TopicError::Cancelled { .. }) => {
            tracing::info!(brokers, "stopped before kafka was reachable");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Creates the missing topics of the design, retrying with backoff (and a
/// warning naming the address) while the broker is unreachable. `extra`:
/// the service's librdkafka properties (security settings apply here too).
pub async fn ensure_topics(
    brokers: &str,
    extra: &BTreeMap<String, String>,
    layout: TopicLayout,
    cancel: &CancellationToken,
) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> =
        client(brokers, &[], extra)
            .create()
            .map_err(|source| TopicError::Client {
                brokers: brokers.to_owned(),
                source,
            })?;
    let topics = all_topics();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, compacted)| {
            let t = NewTopic::new(name, layout.partitions, TopicReplication::Fixed(layout.replication));
            if *compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    // A short request timeout turns an unreachable broker into a retry with a
    // warning after seconds, not after librdkafka's one-minute default.
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(5)));
    tracing::info!(brokers, "connecting to kafka");
    let mut backoff = Backoff::default();
    loop {
        let attempt = crate::service::or_cancelled(cancel, admin.create_topics(&new_topics, &options)).await;
        let Some(result) = attempt else {
            return Err(TopicError::Cancelled {
                brokers: brokers.to_owned(),
            });
        };
        match result {
            Ok(results) => {
                let mut retry = false;
                for r in results {
                    match r {
                        Ok(topic) => tracing::info!(%topic, "created kafka topic"),
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((topic, code)) if is_transient(code) => {
                            tracing::warn!(%topic, %code, brokers, "topic creation failed, retrying");
                            retry = true;
                        }
                        Err((topic, code)) => {
                            return Err(TopicError::Create {
                                topic,
                                brokers: brokers.to_owned(),
                                code,
                            });
                        }
                    }
                }
                if !retry {
                    return Ok(());
                }
                let delay = backoff.next_delay();
                if crate::service::or_cancelled(cancel, tokio::time::sleep(delay))
                    .await
                    .is_none()
                {
                    return Err(TopicError::Cancelled {
                        brokers: brokers.to_owned(),
                    });
                }
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(brokers, %error, retry_in = ?delay, "kafka broker unreachable, retrying");
                if crate::service::or_cancelled(cancel, tokio::time::sleep(delay))
                    .await
                    .is_none()
                {
                    return Err(TopicError::Cancelled {
                        brokers: brokers.to_owned(),
                    });
                }
            }
        }
    }
}

fn is_transient(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::NotController
            | RDKafkaErrorCode::LeaderNotAvailable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_type_has_its_topic_created() {
        let topics = all_topics();
        for t in RecordType::ALL {
            assert!(topics.contains(&(t.topic(), t.compacted())), "{t} missing");
        }
        assert!(topics.contains(&("glasshouse.gaps", false)));
        assert!(topics.contains(&(TOPIC_ALERTS, false)) && topics.contains(&(TOPIC_BASELINES, true)));
        assert!(topics.contains(&(TOPIC_CONTROL, false)));
        assert!(topics.contains(&(TOPIC_ADVISORIES, true)) && topics.contains(&(TOPIC_VULNERABILITIES, true)));
        assert!(topics.contains(&("glasshouse.inventory", false)));
        assert_eq!(topics.len(), RecordType::ALL.len() + 5);
    }

    #[test]
    fn consumers_drop_producer_only_properties() {
        let kafka = Kafka::new(
            "b:9092",
            Kafka::parse_properties(&["enable.idempotence=false".into(), "security.protocol=SSL".into()]).unwrap(),
        );
        let mut c = kafka.client(&[("group.id", "g")]);
        assert_eq!(c.get("enable.idempotence"), Some("false"));
        for_consumer(&mut c);
        assert_eq!(c.get("enable.idempotence"), None);
        assert_eq!(c.get("security.protocol"), Some("SSL"));
        assert_eq!(c.get("group.id"), Some("g"));
    }

    #[test]
    fn operator_properties_reach_every_client_and_win() {
        let props =
            Kafka::parse_properties(&["security.protocol=SASL_PLAINTEXT".into(), "sasl.mechanism=PLAIN".into()])
                .unwrap();
        let kafka = Kafka::new("b:9092", props);
        let c = kafka.client(&[("security.protocol", "PLAINTEXT"), ("group.id", "g")]);
        assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(c.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert!(
            Kafka::parse_properties(&["x".into()])
                .unwrap_err()
                .contains("not KEY=VALUE")
        );
        assert!(
            Kafka::parse_properties(&["group.id=x".into()])
                .unwrap_err()
                .contains("set by glasshouse")
        );
    }
}
