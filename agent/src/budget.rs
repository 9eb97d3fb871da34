//! The agent's own CPU and memory budget.
//!
//! Every second the agent measures itself: CPU (user + system time of all its
//! threads, from `/proc/self/stat`, as a percentage of one core over the
//! second) and resident memory (`/proc/self/statm`). Over either budget it
//! raises its **pressure level** by one (at most [`MAX_LEVEL`]); under half
//! the CPU budget and 80 % of the memory budget it lowers it by one. At level
//! `L` the per-container event rate limit is divided by `2^L` (a limit of 0,
//! "none", becomes [`UNDER_PRESSURE`] events/s first), so the noisiest
//! containers are sampled down first; what is not reported is sent
//! downstream as `rate_limited` gaps like any rate-limited event, and the
//! level, CPU and memory are in `/metrics` and the log. Every table the agent
//! keeps is bounded besides, so memory pressure comes from event volume,
//! which this throttles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use glasshouse_runtime::metrics::{Gauge, Metric};
use tokio_util::sync::CancellationToken;

/// Highest pressure level: the rate limit divided by 1024.
pub const MAX_LEVEL: u32 = 10;
/// Per-container rate under pressure when no limit is configured.
pub const UNDER_PRESSURE: u32 = 50_000;

/// The budget and the agent's standing against it.
#[derive(Debug)]
pub struct Budget {
    /// Percent of one core; 0: no CPU budget.
    cpu_percent: f64,
    /// Bytes of resident memory; 0: no memory budget.
    memory_bytes: u64,
    level: AtomicU32,
    /// Last measured CPU, in thousandths of a core.
    cpu_millicores: Gauge,
    rss_bytes: Gauge,
}

impl Budget {
    pub fn new(cpu_percent: f64, memory_mib: u64) -> Arc<Budget> {
        Arc::new(Budget {
            cpu_percent,
            memory_bytes: memory_mib.saturating_mul(1024 * 1024),
            level: AtomicU32::new(0),
            cpu_millicores: Gauge::new(
                "glasshouse_agent_cpu_millicores",
                "The agent's CPU over the last second, in thousandths of a core.",
            ),
            rss_bytes: Gauge::new("glasshouse_agent_resident_bytes", "The agent's resident memory."),
        })
    }

    pub fn level(&self) -> u32 {
        self.level.load(Ordering::Relaxed)
    }

    /// The per-container rate limit (events/s, 0 = none) under the current
    /// pressure level.
    pub fn scaled_rate(&self, base: u32) -> u32 {
        let level = self.level();
        if level == 0 {
            return base;
        }
        let base = if base == 0 { UNDER_PRESSURE } else { base };
        (base >> level).max(1)
    }

    /// Takes one measurement; returns the new level when it changed.
    pub fn observe(&self, cpu_percent: f64, rss_bytes: u64) -> Option<u32> {
        self.cpu_millicores.set((cpu_percent * 10.0).round().max(0.0) as u64);
        self.rss_bytes.set(rss_bytes);
        let over = (self.cpu_percent > 0.0 && cpu_percent > self.cpu_percent)
            || (self.memory_bytes > 0 && rss_bytes > self.memory_bytes);
        let relaxed = (self.cpu_percent == 0.0 || cpu_percent < self.cpu_percent / 2.0)
            && (self.memory_bytes == 0 || rss_bytes < self.memory_bytes / 10 * 8);
        let level = self.level();
        let next = if over {
            (level + 1).min(MAX_LEVEL)
        } else if relaxed {
            level.saturating_sub(1)
        } else {
            level
        };
        (next != level).then(|| {
            self.level.store(next, Ordering::Relaxed);
            next
        })
    }

    /// Measures the agent every `interval` until `cancel`.
    pub async fn run(self: Arc<Budget>, interval: Duration, cancel: CancellationToken) {
        if self.cpu_percent == 0.0 && self.memory_bytes == 0 {
            return;
        }
        let mut previous = (Instant::now(), cpu_ticks());
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        while glasshouse_runtime::service::or_cancelled(&cancel, tick.tick())
            .await
            .is_some()
        {
            let now = (Instant::now(), cpu_ticks());
            let (Some(before), Some(after)) = (previous.1, now.1) else {
                previous = now;
                continue;
            };
            let secs = now.0.duration_since(previous.0).as_secs_f64().max(1e-3);
            // Clock ticks are 1/100 s on Linux (USER_HZ).
            let cpu = after.saturating_sub(before) as f64 / 100.0 / secs * 100.0;
            previous = now;
            let rss = rss_bytes().unwrap_or(0);
            if let Some(level) = self.observe(cpu, rss) {
                tracing::warn!(
                    level,
                    cpu_percent = cpu,
                    cpu_budget = self.cpu_percent,
                    rss_mib = rss / (1024 * 1024),
                    memory_budget_mib = self.memory_bytes / (1024 * 1024),
                    "agent budget: pressure level changed (per-container rate limit divided by 2^level)"
                );
            }
        }
    }

    /// The budget's lines of `/metrics`.
    pub fn render(&self, out: &mut String) {
        use glasshouse_runtime::metrics::render_scalar;
        render_scalar(
            out,
            "glasshouse_agent_budget_level",
            "Pressure level against the CPU and memory budget (rate limit divided by 2^level).",
            "gauge",
            u64::from(self.level()),
        );
        self.cpu_millicores.render(out);
        self.rss_bytes.render(out);
    }
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory of this process.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf with a valid name has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_rises_over_budget_and_falls_well_under_it() {
        let b = Budget::new(10.0, 100);
        assert_eq!(b.scaled_rate(0), 0, "no pressure, no limit");
        assert_eq!(b.scaled_rate(800), 800);
        assert_eq!(b.observe(25.0, 1 << 20), Some(1));
        assert_eq!(b.scaled_rate(800), 400);
        assert_eq!(b.scaled_rate(0), UNDER_PRESSURE / 2);
        assert_eq!(b.observe(25.0, 1 << 20), Some(2));
        // Between half the budget and the budget: holds.
        assert_eq!(b.observe(7.0, 1 << 20), None);
        assert_eq!(b.observe(2.0, 1 << 20), Some(1));
        // Memory over budget raises it too, whatever the CPU.
        assert_eq!(b.observe(0.0, 200 << 20), Some(2));
        for _ in 0..20 {
            b.observe(99.0, 0);
        }
        assert_eq!(b.level(), MAX_LEVEL);
        assert_eq!(b.scaled_rate(100), 1, "never 0, which would mean no limit");
        for _ in 0..20 {
            b.observe(0.0, 0);
        }
        assert_eq!(b.level(), 0);
    }

    #[test]
    fn no_budget_no_pressure() {
        let b = Budget::new(0.0, 0);
        assert_eq!(b.observe(500.0, u64::MAX), None);
        assert_eq!(b.scaled_rate(0), 0);
    }

    #[test]
    fn the_agent_can_measure_itself() {
        assert!(cpu_ticks().is_some());
        assert!(rss_bytes().is_some_and(|r| r > 0));
    }
}
