//! What the benchmarks (`tests/benches/`) share: their smoke mode, the
//! local stack's configs parsed into their types, min / median / max, and
//! the machine's load while a part ran.
//!
//! # Smoke mode
//! `cargo bench` passes `--bench` to a benchmark; `cargo test --benches`
//! (which the README's test command runs) does not. Without it a benchmark
//! runs in smoke mode: every part, with sizes small enough for seconds,
//! printing its lines (marked as a smoke run), comparing no figure with
//! anything. It proves the benchmark still runs end to end, so a change
//! that breaks one fails the tests instead of the next measurement.

use std::fmt;
use std::time::Duration;

use anyhow::Context;

/// Whether this benchmark runs in smoke mode (no `--bench` argument).
pub fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// `full` in a measuring run, `small` in smoke mode.
pub fn size<T>(full: T, small: T) -> T {
    if smoke() { small } else { full }
}

/// Printed before a benchmark's lines: what the run is.
pub fn banner(name: &str) {
    if smoke() {
        println!("{name}: smoke run (small sizes, figures are not measurements; `cargo bench` measures)");
    }
}

/// `deploy/local/NAME` (the local stack's config) parsed as the config
/// type `T`; a benchmark then sets its own settings on the type.
pub fn local_config<T>(name: &str) -> anyhow::Result<T>
where
    T: serde::de::DeserializeOwned + glasshouse_runtime::service::Validate,
{
    let path = crate::manifest_dir().join("../deploy/local").join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(glasshouse_runtime::service::parse_config(name, &text)?)
}

/// The smallest, median and largest of several runs' figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no figures.
    pub fn of(figures: &[f64]) -> Option<Spread> {
        let mut v = figures.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Spread {
            min: *v.first()?,
            median: v[v.len() / 2],
            max: *v.last()?,
        })
    }

    /// Each figure multiplied by `factor` (a change of unit).
    pub fn scaled(self, factor: f64) -> Spread {
        Spread {
            min: self.min * factor,
            median: self.median * factor,
            max: self.max * factor,
        }
    }
}

impl fmt::Display for Spread {
    /// `min / median / max`, with the formatter's precision (`{:.2}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = f.precision().unwrap_or(0);
        write!(f, "{:.p$} / {:.p$} / {:.p$}", self.min, self.median, self.max)
    }
}

/// The machine's CPU use from [`Load::start`] to [`Load::report`]: busy
/// cores of the whole machine (/proc/stat) and how much of it was this
/// process (its threads, including the services a benchmark runs
/// in-process), so other processes' share can be read off.
#[derive(Debug)]
pub struct Load {
    machine: (u64, u64),
    own: Duration,
    started: std::time::Instant,
}

/// Busy and total jiffies of all CPUs.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let fields: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait are not busy.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU time of this process (all threads).
pub fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

impl Load {
    pub fn start() -> Load {
        Load {
            machine: machine_jiffies(),
            own: own_cpu(),
            started: std::time::Instant::now(),
        }
    }

    /// `machine busy B of N cores (this process P)` over the time since
    /// [`Load::start`].
    pub fn report(&self) -> String {
        let (busy, total) = machine_jiffies();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = |d: u64, t: u64| if t == 0 { 0.0 } else { d as f64 / t as f64 };
        let busy_cores = share(busy - self.machine.0, total - self.machine.1) * cores as f64;
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let own = (own_cpu() - self.own).as_secs_f64() / wall;
        format!("machine busy {busy_cores:.2} of {cores} cores (this process {own:.2})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_min_median_max_in_any_order() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 5.0, 4.0]).expect("figures");
        assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 5.0));
        assert_eq!(format!("{s:.1}"), "1.0 / 3.0 / 5.0");
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(s.scaled(2.0).max, 10.0);
    }

    #[test]
    fn the_load_of_a_busy_thread_shows_in_both_figures() {
        let load = Load::start();
        let until = std::time::Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let report = load.report();
        let own: f64 = report
            .rsplit("this process ")
            .next()
            .and_then(|r| r.trim_end_matches(')').parse().ok())
            .expect("own share");
        assert!(own > 0.5, "{report}");
    }
}
