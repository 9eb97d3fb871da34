//! The analyzer's own telemetry, with the metric types the agent and the
//! aggregator use (`glasshouse_runtime::metrics`): every metric is a field of
//! [`Metrics`] (fields, not statics: tests run several analyzers in one
//! process), and each notable event is one method that logs (where worth
//! it) and counts. The snapshot refusals are the store's
//! ([`crate::store::SNAPSHOTS_REFUSED`]); the SQL front doors' counters are
//! the query service's (`glasshouse-query`'s `/metrics`).

use glasshouse_runtime::metrics::{Counter, Gauge, LabeledCounter, LabeledGauge, Metric};

use crate::escape;

/// The label values of the alert outputs' counters.
pub const OUTPUTS: [&str; 3] = ["syslog_udp", "syslog_tcp", "webhook"];

/// Baseline states, the label values of `glasshouse_analyzer_baselines`, in
/// the order of `baseline::State`.
pub const BASELINE_STATES: [&str; 3] = ["learning", "stable", "locked"];

#[derive(Debug)]
pub struct Metrics {
    pub events: Counter,
    pub findings: Counter,
    pub alerts: Counter,
    pub suppressed: Counter,
    pub gap_events: Counter,
    pub checkpoint_failures: Counter,
    pub alerts_shortened: Counter,
    pub alert_publish_failures: Counter,
    pub alerts_dropped: Counter,
    pub control_refused: Counter,
    pub output_sent: LabeledCounter<3>,
    pub output_failures: LabeledCounter<3>,
    pub output_dropped: LabeledCounter<3>,
    pub baselines: LabeledGauge<3>,
    pub alerts_pending: Gauge,
    pub baseline_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            events: Counter::new("glasshouse_analyzer_events_total", "Container events scored."),
            findings: Counter::new("glasshouse_analyzer_findings_total", "Findings, before deduplication."),
            alerts: Counter::new(
                "glasshouse_analyzer_alerts_total",
                "Alerts published (creates and updates).",
            ),
            suppressed: Counter::new(
                "glasshouse_analyzer_alerts_suppressed_total",
                "Findings counted in an open alert instead of alerting again.",
            ),
            gap_events: Counter::new(
                "glasshouse_analyzer_gap_events_total",
                "Events inside a reported gap: scored, not learned from.",
            ),
            checkpoint_failures: Counter::new(
                "glasshouse_analyzer_checkpoint_failures_total",
                "Checkpoints that failed (offsets not committed, retried).",
            ),
            alerts_shortened: Counter::new(
                "glasshouse_analyzer_alerts_shortened_total",
                "Alerts over max_alert_bytes whose long strings were cut to fit.",
            ),
            alert_publish_failures: Counter::new(
                "glasshouse_analyzer_alert_publish_failures_total",
                "Failed attempts to publish an alert to glasshouse.alerts.",
            ),
            alerts_dropped: Counter::new(
                "glasshouse_analyzer_alerts_dropped_total",
                "Alerts dropped after every attempt to publish them failed.",
            ),
            control_refused: Counter::new(
                "glasshouse_analyzer_control_refused_total",
                "Operator commands refused: unsigned, forged, stale, or no control key.",
            ),
            output_sent: LabeledCounter::new(
                "glasshouse_analyzer_output_sent_total",
                "Alerts sent, by output.",
                "output",
                OUTPUTS,
            ),
            output_failures: LabeledCounter::new(
                "glasshouse_analyzer_output_failures_total",
                "Failed send attempts, by output.",
                "output",
                OUTPUTS,
            ),
            output_dropped: LabeledCounter::new(
                "glasshouse_analyzer_output_dropped_total",
                "Alerts an output dropped (queue full or retries exhausted).",
                "output",
                OUTPUTS,
            ),
            baselines: LabeledGauge::new(
                "glasshouse_analyzer_baselines",
                "Baselines held, by state.",
                "state",
                BASELINE_STATES,
            ),
            alerts_pending: Gauge::new(
                "glasshouse_analyzer_alerts_pending_retry",
                "Alerts Kafka refused that wait for another attempt.",
            ),
            baseline_bytes: Gauge::new(
                "glasshouse_analyzer_baseline_bytes",
                "Approximate memory of the baselines held.",
            ),
        }
    }
}

impl Metrics {
    /// The `/metrics` page: this analyzer's metrics, the store's snapshot
    /// refusals and the SQL front doors'.
    pub fn render(&self) -> String {
        let own: [&dyn Metric; 17] = [
            &self.events,
            &self.findings,
            &self.alerts,
            &self.suppressed,
            &self.gap_events,
            &self.checkpoint_failures,
            &self.alerts_shortened,
            &self.alert_publish_failures,
            &self.alerts_dropped,
            &self.control_refused,
            &crate::store::SNAPSHOTS_REFUSED,
            &self.output_sent,
            &self.output_failures,
            &self.output_dropped,
            &self.baselines,
            &self.alerts_pending,
            &self.baseline_bytes,
        ];
        glasshouse_runtime::metrics::render(&own)
    }

    /// An alert over its size limit had its long strings cut.
    pub fn alert_shortened(&self, uid: &str, workload: &str, bytes: usize, shortened: usize) {
        self.alerts_shortened.add(1);
        tracing::warn!(
            uid,
            workload = %escape::terminal(workload),
            bytes,
            shortened,
            "alert over its size limit, long strings cut"
        );
    }

    /// Attempt `attempt` to publish an alert failed; `last`: it is dropped.
    pub fn alert_publish_failed(&self, uid: &str, attempt: u32, last: bool, error: &rdkafka::error::KafkaError) {
        self.alert_publish_failures.add(1);
        if last {
            self.alerts_dropped.add(1);
            tracing::error!(%error, uid, attempts = attempt, "alert not published, dropped");
        } else {
            tracing::warn!(%error, uid, attempt, "alert not published, retrying at the next checkpoint");
        }
    }

    /// An output sent an alert.
    pub fn output_sent(&self, output: &'static str) {
        self.output_sent.add(output, 1);
    }

    /// An output's attempt to send an alert failed; `last`: it is dropped.
    pub fn output_failed(&self, output: &'static str, uid: &str, last: bool, error: &dyn std::fmt::Display) {
        self.output_failures.add(output, 1);
        if last {
            self.output_dropped.add(output, 1);
            tracing::warn!(%error, output, uid, "alert output failed, alert dropped");
        }
    }

    /// An output's queue was full: the alert is not sent there.
    pub fn output_queue_full(&self, output: &'static str, uid: &str) {
        self.output_dropped.add(output, 1);
        tracing::warn!(output, uid, "alert output queue full, alert dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_on_the_page_once() {
        let m = Metrics::default();
        m.output_sent("webhook");
        m.output_failed("syslog_tcp", "u", true, &"refused");
        m.baselines.set("stable", 2);
        let page = m.render();
        for (line, want) in [
            ("glasshouse_analyzer_output_sent_total{output=\"webhook\"} ", "1"),
            ("glasshouse_analyzer_output_failures_total{output=\"syslog_tcp\"} ", "1"),
            ("glasshouse_analyzer_output_dropped_total{output=\"syslog_tcp\"} ", "1"),
            ("glasshouse_analyzer_baselines{state=\"stable\"} ", "2"),
            ("glasshouse_analyzer_events_total ", "0"),
        ] {
            let found: Vec<&str> = page.lines().filter(|l| l.starts_with(line)).collect();
            assert_eq!(found, [format!("{line}{want}").as_str()], "{page}");
        }
        let mut names: Vec<&str> = page
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a metric family rendered twice: {page}");
        assert!(
            !names.contains(&"glasshouse_sql_connections"),
            "the query service's: {page}"
        );
        assert!(names.contains(&"glasshouse_analyzer_snapshots_refused_total"), "{page}");
    }
}
