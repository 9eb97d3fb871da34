//! The aggregator's own telemetry: each notable event is one function that
//! logs (where worth it) and counts, and every metric name is a constant here.

use std::time::Duration;

use glasshouse_runtime::metrics::{Counter, Gauge, Histogram, LabeledCounter, Metric};

pub static RECORDS_IN: Counter = Counter::new(
    "glasshouse_aggregator_records_in_total",
    "Rows accepted from agents: events, one per syscall of a syscall profile, one per resource sample, one per gap.",
);
pub static BATCHES_IN: Counter = Counter::new("glasshouse_aggregator_batches_in_total", "Agent batches accepted.");
pub static MESSAGES_OUT: Counter = Counter::new(
    "glasshouse_aggregator_kafka_messages_total",
    "Arrow IPC messages acknowledged by Kafka.",
);
pub static BYTES_OUT: Counter = Counter::new(
    "glasshouse_aggregator_kafka_bytes_total",
    "Bytes of Arrow IPC message values acknowledged by Kafka.",
);
pub static PRODUCE_FAILURES: Counter = Counter::new(
    "glasshouse_aggregator_kafka_failures_total",
    "Kafka messages whose delivery failed (their batches are not acknowledged).",
);
pub static PRODUCE_LATENCY: Histogram = Histogram::new(
    "glasshouse_aggregator_produce_latency_seconds",
    "Time from handing a message to the producer to Kafka's acknowledgement.",
);
pub static BACKPRESSURE: Counter = Counter::new(
    "glasshouse_aggregator_backpressure_microseconds_total",
    "Time streams spent waiting for the Kafka sink (slow or unavailable broker).",
);
pub static STREAMS: Gauge = Gauge::new("glasshouse_aggregator_agent_streams", "Agent streams open now.");
pub static REFUSALS: LabeledCounter<10> = LabeledCounter::new(
    "glasshouse_aggregator_refusals_total",
    "Streams or batches refused, by reason.",
    "reason",
    [
        "unauthenticated",
        "impersonation",
        "too_large",
        "over_budget",
        "malformed",
        "unbuildable",
        "dangling_reference",
        "bad_timestamp",
        "protocol",
        "other",
    ],
);

/// Every metric of the aggregator, for the `/metrics` endpoint.
pub static ALL: [&dyn Metric; 9] = [
    &RECORDS_IN,
    &BATCHES_IN,
    &MESSAGES_OUT,
    &BYTES_OUT,
    &PRODUCE_FAILURES,
    &PRODUCE_LATENCY,
    &BACKPRESSURE,
    &STREAMS,
    &REFUSALS,
];

pub fn batch_accepted(rows: usize) {
    BATCHES_IN.add(1);
    RECORDS_IN.add(rows as u64);
}

pub fn message_delivered(bytes: usize, latency: Duration) {
    MESSAGES_OUT.add(1);
    BYTES_OUT.add(bytes as u64);
    PRODUCE_LATENCY.observe(latency);
}

pub fn message_failed() {
    PRODUCE_FAILURES.add(1);
}

pub fn waited_for_sink(waited: Duration) {
    BACKPRESSURE.add(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX));
}

pub fn refused(reason: &'static str) {
    REFUSALS.add(reason, 1);
}
