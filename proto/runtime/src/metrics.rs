//! Prometheus metrics of our own: counters, gauges, labelled counters and
//! histograms (atomics, no allocation on the hot path), rendered in the text
//! exposition format; [`crate::endpoint`] serves them (`GET /metrics`).
//!
//! Every process counts its internal events with these types: the
//! aggregator's are statics (`internal_events.rs`), the agent's are fields
//! of its sensor, spool and budget and the analyzer's fields of its
//! `internal_events::Metrics` (several of each run in one test process),
//! the SQL front doors' statics of `glasshouse_lake::connection`.
//! Label values are fixed sets chosen in code (never a container or agent
//! id), so cardinality stays low.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Something that renders itself in the Prometheus text format.
pub trait Metric: Sync {
    fn render(&self, out: &mut String);
}

/// A monotonically increasing counter.
#[derive(Debug)]
pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
    value: AtomicU64,
}

impl Counter {
    pub const fn new(name: &'static str, help: &'static str) -> Counter {
        Counter {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// One unlabelled sample with its HELP and TYPE lines.
pub fn render_scalar(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {name} {help}
# TYPE {name} {kind}
{name} {value}"
    );
}

impl Metric for Counter {
    fn render(&self, out: &mut String) {
        render_scalar(out, self.name, self.help, "counter", self.get());
    }
}

/// A value that goes up and down.
#[derive(Debug)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    value: AtomicU64,
}

impl Gauge {
    pub const fn new(name: &'static str, help: &'static str) -> Gauge {
        Gauge {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }
    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.value.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn set(&self, value: u64) {
        self.value.store(value, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl Metric for Gauge {
    fn render(&self, out: &mut String) {
        render_scalar(out, self.name, self.help, "gauge", self.get());
    }
}

/// Counters sharing a name, one per value of a fixed label set.
#[derive(Debug)]
pub struct LabeledCounter<const N: usize> {
    pub name: &'static str,
    pub help: &'static str,
    pub label: &'static str,
    pub values: [&'static str; N],
    counts: [AtomicU64; N],
}

impl<const N: usize> LabeledCounter<N> {
    pub const fn new(name: &'static str, help: &'static str, label: &'static str, values: [&'static str; N]) -> Self {
        LabeledCounter {
            name,
            help,
            label,
            values,
            counts: [const { AtomicU64::new(0) }; N],
        }
    }
    /// Adds to the counter of `value`; an unknown value counts as the last one.
    pub fn add(&self, value: &str, n: u64) {
        let i = self.values.iter().position(|v| *v == value).unwrap_or(N - 1);
        self.counts[i].fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self, value: &str) -> u64 {
        self.values
            .iter()
            .position(|v| *v == value)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }
}

impl<const N: usize> Metric for LabeledCounter<N> {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} counter", self.name, self.help, self.name);
        for (v, c) in self.values.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{}{{{}=\"{}\"}} {}",
                self.name,
                self.label,
                v,
                c.load(Ordering::Relaxed)
            );
        }
    }
}

/// Gauges sharing a name, one per value of a fixed label set.
#[derive(Debug)]
pub struct LabeledGauge<const N: usize> {
    pub name: &'static str,
    pub help: &'static str,
    pub label: &'static str,
    pub values: [&'static str; N],
    gauges: [AtomicU64; N],
}

impl<const N: usize> LabeledGauge<N> {
    pub const fn new(name: &'static str, help: &'static str, label: &'static str, values: [&'static str; N]) -> Self {
        LabeledGauge {
            name,
            help,
            label,
            values,
            gauges: [const { AtomicU64::new(0) }; N],
        }
    }
    fn index(&self, value: &str) -> Option<usize> {
        self.values.iter().position(|v| *v == value)
    }
    /// Sets the gauge of `value`; an unknown value is ignored.
    pub fn set(&self, value: &str, n: u64) {
        if let Some(i) = self.index(value) {
            self.gauges[i].store(n, Ordering::Relaxed);
        }
    }
    pub fn inc(&self, value: &str) {
        if let Some(i) = self.index(value) {
            self.gauges[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn dec(&self, value: &str) {
        if let Some(i) = self.index(value) {
            self.gauges[i].fetch_sub(1, Ordering::Relaxed);
        }
    }
    pub fn get(&self, value: &str) -> u64 {
        self.index(value).map_or(0, |i| self.gauges[i].load(Ordering::Relaxed))
    }
}

impl<const N: usize> Metric for LabeledGauge<N> {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", self.name, self.help, self.name);
        for (v, g) in self.values.iter().zip(&self.gauges) {
            let _ = writeln!(
                out,
                "{}{{{}=\"{}\"}} {}",
                self.name,
                self.label,
                v,
                g.load(Ordering::Relaxed)
            );
        }
    }
}

/// Bucket upper bounds, in seconds, for latencies from 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`].
#[derive(Debug)]
pub struct Histogram {
    pub name: &'static str,
    pub help: &'static str,
    buckets: [AtomicU64; 12],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str) -> Histogram {
        Histogram {
            name,
            help,
            buckets: [const { AtomicU64::new(0) }; 12],
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Metric for Histogram {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} histogram",
            self.name, self.help, self.name
        );
        let mut cumulative = 0;
        for (bound, c) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{}_bucket{{le=\"{bound}\"}} {cumulative}", self.name);
        }
        let count = self.count();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{}_bucket{{le=\"+Inf\"}} {count}\n{}_sum {sum}\n{}_count {count}",
            self.name, self.name, self.name
        );
    }
}

/// Renders `metrics` in the text exposition format.
pub fn render(metrics: &[&dyn Metric]) -> String {
    let mut out = String::new();
    for m in metrics {
        m.render(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_gauges_render_every_value_and_ignore_unknown_ones() {
        let g = LabeledGauge::new("t_baselines", "Baselines.", "state", ["learning", "stable"]);
        g.set("learning", 3);
        g.inc("stable");
        g.inc("stable");
        g.dec("stable");
        g.set("gone", 9);
        assert_eq!((g.get("learning"), g.get("stable"), g.get("gone")), (3, 1, 0));
        assert_eq!(
            render(&[&g]),
            "# HELP t_baselines Baselines.\n# TYPE t_baselines gauge\n\
             t_baselines{state=\"learning\"} 3\nt_baselines{state=\"stable\"} 1\n"
        );
    }
}
