//! The scoring engine: per workload, learns the baseline and scores every
//! event against it and against the workload's other replicas; runs the
//! detections that need no baseline; keeps a score per container over a
//! sliding window; and turns findings into alerts, one per workload and
//! finding per window with a count.
//!
//! # Scores
//! Each feature of an event (see [`crate::features`]) gets a score in
//! `0..=1` from the baseline of its workload and phase:
//!
//! | baseline | feature | score |
//! |---|---|---|
//! | stable or locked | never seen | 1.0 (0.5 for an argument shape or new peer address of a known executable or port; 0.6 for a syscall, 0.9 for a dangerous one) |
//! | stable | learned while the workload ran on several hosts, but shown by fewer than `min_hosts` of them | as never seen (`baseline.unconfirmed`) |
//! | stable or locked | seen at most twice in 1,000 or more | 0.4 (rare) |
//! | any | shown only by this replica while at least `fleet_min_replicas - 1` peers, running since before it first appeared, never did | 0.8 (fleet outlier) |
//!
//! The event's score is its highest feature score; a score at or above
//! `alert_threshold` is a finding. Every event's score also adds to its
//! container's score over `window`; crossing `container_threshold` is a
//! finding too (many small deviations together).
//!
//! # Learning, gaps
//! Events learn while the baseline is learning (see [`crate::baseline`]).
//! An event inside a window the agent reported as incomplete (a gap record)
//! is neither learned from nor counted towards stability; features a
//! container showed only during a gap reported afterwards are forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use glasshouse_proto::{file, gaps, network, process, resources, syscalls};

use crate::baseline::{Baseline, Map, ResourceMetric, Rules, Shower, State, short};
use crate::clock::Clock;
use crate::error::CommandError;
use crate::features::{self, Cidr, Feature, Kind, Phase, Phases};
use crate::finding::{self, Anomaly, Container, Endpoint, Finding, Fleet, Process, Severity, Technique};
use crate::internal_events::Metrics;
use crate::ocsf;
use crate::rules::{self, RuleHit};

/// Tunables of the engine (from the `[analysis]` config table).
#[derive(Debug, Clone)]
pub struct Settings {
    pub phases: Phases,
    pub rules: Rules,
    pub cluster: Vec<Cidr>,
    pub alert_threshold: f64,
    pub container_threshold: f64,
    /// Alert deduplication window and container score window.
    pub window_ns: i64,
    pub fleet_min_replicas: usize,
    /// Hosts that must show a feature before it is normal for a workload
    /// (see [`crate::baseline`], "Support from several hosts").
    pub min_hosts: u32,
    /// A peer must have been running this long before a feature appeared
    /// for its silence to count.
    pub fleet_peer_age_ns: i64,
    /// A replica seen within this is active.
    pub active_ns: i64,
    pub mining_ports: Vec<u16>,
    pub mining_cpu_cores: f64,
    pub mining_cpu_samples: u32,
}

/// Process table entries kept for lineage, across all hosts.
const MAX_PROCESSES: usize = 262_144;
/// Gap windows kept per container (or host).
const MAX_GAPS: usize = 64;

/// An alert ready to publish: OCSF JSON, keyed by workload.
#[derive(Debug, Clone)]
pub struct Alert {
    pub workload: Arc<str>,
    pub partition: i32,
    pub uid: String,
    /// Its OCSF Detection Finding.
    pub document: ocsf::Document,
    pub finding: Finding,
    /// Occurrences in its window so far (1 for the first alert).
    pub count: u64,
}

#[derive(Debug)]
struct ContainerState {
    workload: Arc<str>,
    info: Container,
    first_seen_ns: i64,
    /// (wall time ns, score) of the window.
    scores: VecDeque<(i64, f64)>,
    score: f64,
    last_cpu: Option<(i64, u64)>,
    forks: u64,
    high_cpu_samples: u32,
    /// Wall time of its latest event or sample.
    last_seen_wall: i64,
}

/// A finding's alert window.
#[derive(Debug)]
struct Open {
    opened_ns: i64,
    count: u64,
    last_ns: i64,
    first: Finding,
    uid: String,
    partition: i32,
}

/// Live score of one container (for `glasshouse containers`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerScore {
    pub container: Container,
    pub workload: Arc<str>,
    pub score: f64,
    pub baseline_state: &'static str,
}

/// The engine. Feed it rows; take alerts with [`Engine::drain_alerts`] and
/// changed baselines with [`Engine::dirty_baselines`].
#[derive(Debug)]
pub struct Engine {
    settings: Settings,
    baselines: Map<Arc<str>, Baseline>,
    dirty: std::collections::HashSet<Arc<str>>,
    containers: Map<Arc<str>, ContainerState>,
    processes: ProcTable,
    /// Gap windows by container id, and by host for gaps of a whole host.
    gaps: HashMap<Arc<str>, VecDeque<(i64, i64)>>,
    host_gaps: HashMap<Arc<str>, VecDeque<(i64, i64)>>,
    open: Map<(Arc<str>, String), Open>,
    outbox: Vec<Alert>,
    partition: i32,
    /// Wall clock as of the latest tick (refreshed every second).
    now_wall: i64,
    clock: Clock,
    /// Where the engine counts what it does (shared with the analyzer's
    /// `/metrics`).
    pub metrics: Arc<Metrics>,
}

impl Engine {
    /// An engine on the system clock.
    pub fn new(settings: Settings) -> Engine {
        Engine::with_clock(settings, Clock::system())
    }

    /// An engine whose wall clock (alert windows, forgetting silent
    /// containers, operator changes) is `clock`.
    pub fn with_clock(settings: Settings, clock: Clock) -> Engine {
        Engine {
            settings,
            baselines: Map::default(),
            dirty: Default::default(),
            containers: Map::default(),
            processes: Map::default(),
            gaps: HashMap::new(),
            host_gaps: HashMap::new(),
            open: Map::default(),
            outbox: Vec::new(),
            partition: 0,
            now_wall: clock.now_ns(),
            clock,
            metrics: Arc::default(),
        }
    }

    /// The event-topic partition the next rows come from.
    pub fn set_partition(&mut self, partition: i32) {
        self.partition = partition;
    }

    pub fn baseline(&self, workload: &str) -> Option<&Baseline> {
        self.baselines.get(workload)
    }

    pub fn baselines(&self) -> impl Iterator<Item = &Baseline> {
        self.baselines.values()
    }

    /// Restores baselines (from snapshots), replacing what is held.
    pub fn restore(&mut self, baseline: Baseline) {
        let w: Arc<str> = baseline.workload.as_str().into();
        self.dirty.remove(&w);
        self.baselines.insert(w, baseline);
    }

    /// Forgets the workloads of `partition` (it moved to another analyzer).
    pub fn drop_partition(&mut self, partition: i32) {
        self.baselines.retain(|_, b| b.partition != partition);
        let baselines = &self.baselines;
        self.dirty.retain(|w| baselines.contains_key(w));
        self.containers.retain(|_, c| baselines.contains_key(&c.workload));
    }

    /// The baselines changed since the last call (their snapshots are due).
    pub fn dirty_baselines(&mut self) -> Vec<&Baseline> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty.iter().filter_map(|w| self.baselines.get(w)).collect()
    }

    /// Marks a workload's baseline for a snapshot.
    pub fn mark_dirty(&mut self, workload: &str) {
        if let Some((w, _)) = self.baselines.get_key_value(workload) {
            self.dirty.insert(w.clone());
        }
    }

    /// Marks every baseline for a snapshot.
    pub fn mark_all_dirty(&mut self) {
        self.dirty.extend(self.baselines.keys().cloned());
    }

    pub fn drain_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.outbox)
    }

    /// Live container scores, highest first.
    pub fn container_scores(&self) -> Vec<ContainerScore> {
        let mut v: Vec<ContainerScore> = self
            .containers
            .values()
            .map(|c| ContainerScore {
                container: c.info.clone(),
                workload: c.workload.clone(),
                score: c.score,
                baseline_state: self.baselines.get(&c.workload).map_or("none", |b| b.state.as_str()),
            })
            .collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score));
        v
    }

    /// Operator command: lock, unlock or reset a workload's baseline.
    pub fn command(&mut self, workload: &str, command: Command) -> Result<u64, CommandError> {
        let now = self.clock.now_ns();
        if let Command::Import(b) = command {
            let mut b = *b;
            if b.workload != workload {
                return Err(CommandError::WrongWorkload {
                    snapshot: b.workload,
                    workload: workload.to_owned(),
                });
            }
            b.partition = self.partition;
            let previous = self.baselines.get(workload).map_or(0, |p| p.version);
            b.version = b.version.max(previous);
            b.change(now, "imported by operator".into());
            let v = b.version;
            self.restore(b);
            self.dirty.insert(workload.into());
            return Ok(v);
        }
        let partition = self.partition;
        let b = self
            .baselines
            .entry(workload.into())
            .or_insert_with(|| Baseline::new(workload, partition, now));
        match command {
            Command::Lock => b.set_state(State::Locked, now, "locked by operator".into()),
            Command::Unlock => b.set_state(State::Learning, now, "unlocked by operator: learning".into()),
            Command::Reset => b.reset(now),
            Command::Import(_) => unreachable!("handled above"),
        }
        let v = b.version;
        self.dirty.insert(workload.into());
        Ok(v)
    }

    fn in_gap(&self, container: &str, host: &str, time_ns: i64) -> bool {
        let covers =
            |g: Option<&VecDeque<(i64, i64)>>| g.is_some_and(|g| g.iter().any(|(s, e)| (*s..=*e).contains(&time_ns)));
        covers(self.gaps.get(container)) || covers(self.host_gaps.get(host))
    }

    /// Registers the container of an event; returns its first-seen time.
    fn container(&mut self, info: &Container, workload: &Arc<str>, time_ns: i64) -> i64 {
        if let Some(c) = self.containers.get_mut(&info.id) {
            if c.info.name.is_none() && info.name.is_some() {
                c.info = info.clone();
            }
            c.last_seen_wall = self.now_wall;
            c.first_seen_ns = c.first_seen_ns.min(time_ns);
            return c.first_seen_ns;
        }
        self.containers.insert(
            info.id.clone(),
            ContainerState {
                workload: workload.clone(),
                info: info.clone(),
                first_seen_ns: time_ns,
                scores: VecDeque::new(),
                score: 0.0,
                last_cpu: None,
                forks: 0,
                high_cpu_samples: 0,
                last_seen_wall: self.now_wall,
            },
        );
        time_ns
    }

    /// The baseline of a workload, created when missing; notes the image.
    fn baseline_mut(&mut self, workload: &Arc<str>, image_id: Option<&str>, time_ns: i64) -> &mut Baseline {
        baseline_entry(
            &mut self.baselines,
            &mut self.dirty,
            self.partition,
            workload,
            image_id,
            time_ns,
        )
    }

    pub fn handle_process(&mut self, row: &process::Row) {
        // The process table for lineage.
        let key = (row.attribution.host.clone(), row.pid);
        match row.kind {
            process::Kind::Exec | process::Kind::Running => {
                if let Some(path) = &row.path {
                    self.remember_process(key, path.clone(), row.ppid);
                }
            }
            process::Kind::Fork => {
                if let Some((exe, _)) = self.processes.get(&(row.attribution.host.clone(), row.ppid)).cloned() {
                    self.remember_process(key, exe, row.ppid);
                }
            }
            process::Kind::Exit => {
                self.processes.remove(&key);
            }
        }
        let Some(info) = Container::of(&row.attribution) else {
            return;
        };
        self.metrics.events.add(1);
        // A fork counts towards the interval after the container's latest
        // resource sample only if it happened after that sample: events
        // replayed after a restart (or lagging behind the resources topic)
        // must not inflate the next interval's fork rate.
        if row.kind == process::Kind::Fork
            && let Some(c) = self.containers.get_mut(&info.id)
            && c.last_cpu.is_none_or(|(sampled, _)| row.time_unix_ns > sampled)
        {
            c.forks += u64::from(row.count);
        }
        let first = self.container(&info, &row.attribution.workload_id, row.time_unix_ns);
        let phase = self
            .settings
            .phases
            .of(row.exec_in, row.kind == process::Kind::Running, first, row.time_unix_ns);
        let feats = features::of_process(row, phase);
        if feats.is_empty() {
            return;
        }
        let ev = Event {
            workload: row.attribution.workload_id.clone(),
            info,
            image_id: row.attribution.image_id.as_deref(),
            time_ns: row.time_unix_ns,
            count: u64::from(row.count),
            source: Source::Process(row),
        };
        let rule_findings = rules::process(row).into_iter().map(|h| (h, phase)).collect();
        self.evaluate(ev, feats, rule_findings);
    }

    fn remember_process(&mut self, key: (Arc<str>, u32), exe: Arc<str>, ppid: u32) {
        if self.processes.len() >= MAX_PROCESSES && !self.processes.contains_key(&key) {
            tracing::warn!(
                entries = MAX_PROCESSES,
                "process table full, cleared (lineage restarts)"
            );
            self.processes.clear();
        }
        self.processes.insert(key, (exe, ppid));
    }

    pub fn handle_network(&mut self, row: &network::Row) {
        let Some(info) = Container::of(&row.attribution) else {
            return;
        };
        self.metrics.events.add(1);
        let first = self.container(&info, &row.attribution.workload_id, row.time_unix_ns);
        let phase = self
            .settings
            .phases
            .of(false, row.pre_existing, first, row.time_unix_ns);
        let feats = features::of_network(row, phase, &self.settings.cluster);
        if feats.is_empty() {
            return;
        }
        let hits = rules::network(row, &self.settings.mining_ports)
            .into_iter()
            .map(|h| (h, phase))
            .collect();
        let ev = Event {
            workload: row.attribution.workload_id.clone(),
            info,
            image_id: row.attribution.image_id.as_deref(),
            time_ns: row.time_unix_ns,
            count: u64::from(row.count),
            source: Source::Network(row),
        };
        self.evaluate(ev, feats, hits);
    }

    pub fn handle_file(&mut self, row: &file::Row) {
        let Some(info) = Container::of(&row.attribution) else {
            return;
        };
        self.metrics.events.add(1);
        let first = self.container(&info, &row.attribution.workload_id, row.time_unix_ns);
        let phase = self.settings.phases.of(false, false, first, row.time_unix_ns);
        let feats = features::of_file(row, phase);
        let hits = rules::file(row).into_iter().map(|h| (h, phase)).collect();
        let ev = Event {
            workload: row.attribution.workload_id.clone(),
            info,
            image_id: row.attribution.image_id.as_deref(),
            time_ns: row.time_unix_ns,
            count: u64::from(row.count),
            source: Source::File(row),
        };
        self.evaluate(ev, feats, hits);
    }

    pub fn handle_syscalls(&mut self, rows: &[syscalls::Row]) {
        for row in rows {
            let Some(info) = Container::of(&row.attribution) else {
                continue;
            };
            let first = self.container(&info, &row.attribution.workload_id, row.start_unix_ns);
            let phase = self.settings.phases.of(false, false, first, row.start_unix_ns);
            let value = row
                .name
                .as_deref()
                .map_or_else(|| format!("nr {}", row.nr), str::to_owned);
            let ev = Event {
                workload: row.attribution.workload_id.clone(),
                info,
                image_id: row.attribution.image_id.as_deref(),
                time_ns: row.start_unix_ns,
                count: row.count,
                source: Source::None,
            };
            self.evaluate(ev, vec![Feature::new(phase, Kind::Syscall, value)], Vec::new());
        }
    }

    pub fn handle_resources(&mut self, row: &resources::Row) {
        let Some(info) = Container::of(&row.attribution) else {
            return;
        };
        self.container(&info, &row.attribution.workload_id, row.time_unix_ns);
        let in_gap = self.in_gap(&info.id, &info.host, row.time_unix_ns);
        let settings = self.settings.clone();
        let c = self.containers.get_mut(&info.id).expect("registered above");
        let previous = c.last_cpu.replace((row.time_unix_ns, row.counters.cpu_usage_ns));
        let forks = std::mem::take(&mut c.forks);
        let Some((t0, cpu0)) = previous else {
            return;
        };
        let dt = row.time_unix_ns.saturating_sub(t0);
        if dt <= 0 || row.counters.cpu_usage_ns < cpu0 {
            return;
        }
        let secs = dt as f64 / 1e9;
        let cores = (row.counters.cpu_usage_ns - cpu0) as f64 / dt as f64;
        let values = [
            (ResourceMetric::Cpu, cores),
            (ResourceMetric::Memory, row.counters.memory_bytes as f64),
            (ResourceMetric::ForkRate, forks as f64 / secs),
        ];
        if cores >= settings.mining_cpu_cores {
            c.high_cpu_samples += 1;
        } else {
            c.high_cpu_samples = 0;
        }
        let sustained = c.high_cpu_samples >= settings.mining_cpu_samples;
        let high_samples = c.high_cpu_samples;
        let workload = row.attribution.workload_id.clone();
        let b = self.baseline_mut(&workload, row.attribution.image_id.as_deref(), row.time_unix_ns);
        let version = b.version;
        let state = b.state;
        let mut deviations = Vec::new();
        for (metric, value) in values {
            if state == State::Stable || state == State::Locked {
                if let Some((median, mad)) = b.resources.get(&metric).and_then(|m| m.median_mad())
                    && let floor = match metric {
                        ResourceMetric::Cpu => 0.25,
                        ResourceMetric::Memory => 64.0 * 1024.0 * 1024.0,
                        ResourceMetric::ForkRate => 5.0,
                    }
                    && value > median + 6.0 * mad + floor
                    && value > 2.0 * median
                {
                    deviations.push((metric, value, median, b.resources[&metric].samples.len()));
                }
            } else if !in_gap {
                b.sample(metric, value);
            }
        }
        let ev = Event {
            workload: workload.clone(),
            info,
            image_id: None,
            time_ns: row.time_unix_ns,
            count: 1,
            source: Source::None,
        };
        if sustained {
            let f = self.rule_finding(
                &ev,
                &rules::sustained_cpu(cores, high_samples),
                version,
                state,
                Anomaly {
                    parameter: "cpu_cores".into(),
                    observed: format!("{cores:.2}"),
                    baseline: Vec::new(),
                    fleet: None,
                },
            );
            self.emit(f);
        }
        for (metric, value, median, n) in deviations {
            let f = Finding {
                workload: workload.clone(),
                rule: "baseline.resource",
                key: format!("baseline.resource|{}", metric.as_str()),
                title: format!(
                    "{} {value:.2} far above the workload's median {median:.2}",
                    metric.as_str()
                ),
                desc: format!(
                    "The container's {} deviates from its workload's robust profile (median and median absolute deviation of {n} samples).",
                    metric.as_str()
                ),
                severity: Severity::Medium,
                confidence: 60,
                technique: (metric == ResourceMetric::Cpu).then_some(finding::RESOURCE_HIJACKING),
                anomaly: Anomaly {
                    parameter: metric.as_str().into(),
                    observed: format!("{value:.2}"),
                    baseline: vec![(format!("median {median:.2}"), n as u64)],
                    fleet: None,
                },
                container: ev.info.clone(),
                process: None,
                endpoint: None,
                file: None,
                baseline_version: version,
                baseline_state: state.as_str(),
                score: 0.8,
                time_ns: row.time_unix_ns,
                event_id: None,
            };
            self.emit(f);
        }
    }

    pub fn handle_gap(&mut self, row: &gaps::Row) {
        let g = match &row.attribution.container_id {
            Some(c) => self.gaps.entry(c.clone()).or_default(),
            None => self.host_gaps.entry(row.attribution.host.clone()).or_default(),
        };
        if g.len() == MAX_GAPS {
            g.pop_front();
        }
        g.push_back((row.start_unix_ns, row.end_unix_ns));
        // Forget what a container showed only during the gap.
        let Some(container) = &row.attribution.container_id else {
            return;
        };
        let Some(b) = self.baselines.get_mut(&row.attribution.workload_id) else {
            return;
        };
        if b.state != State::Learning {
            return;
        }
        let Some(n) = b.replicas.get(&**container).map(|r| r.n) else {
            return;
        };
        let mut forgotten = 0;
        for values in b.features.values_mut() {
            values.retain(|_, s| {
                let drop = s.only_replica(n) && (row.start_unix_ns..=row.end_unix_ns).contains(&s.first_seen_ns);
                forgotten += usize::from(drop);
                !drop
            });
        }
        if forgotten > 0 {
            b.change(
                row.end_unix_ns,
                format!(
                    "forgot {forgotten} features container {} showed only during a gap",
                    short(container)
                ),
            );
            self.dirty.insert(row.attribution.workload_id.clone());
        }
    }

    /// Scores, learns and reports one event. A sample (a syscall count) is
    /// learned and scored like an event but does not count as one towards
    /// the novelty rate.
    fn evaluate(&mut self, ev: Event<'_>, feats: Vec<Feature>, hits: Vec<(RuleHit, Phase)>) {
        let in_gap = self.in_gap(&ev.info.id, &ev.info.host, ev.time_ns);
        let settings = &self.settings;
        // The tick's clock (1 s resolution) is enough for a window of minutes.
        let wall = self.now_wall;
        let b = baseline_entry(
            &mut self.baselines,
            &mut self.dirty,
            self.partition,
            &ev.workload,
            ev.image_id,
            ev.time_ns,
        );
        let by = b.replica(&ev.info.id, &ev.info.host, ev.time_ns);
        let version = b.version;
        let state = b.state;
        // Score every feature; keep the first highest.
        let mut best: Option<(f64, &'static str, usize)> = None;
        for (i, f) in feats.iter().enumerate() {
            let (score, rule) = assess(b, f, by, ev.time_ns, settings);
            if score > best.map_or(0.0, |b| b.0) {
                best = Some((score, rule, i));
            }
        }
        // Rule hits: suppressed when the baseline established the behaviour.
        let mut rule_findings = Vec::new();
        for (hit, phase) in &hits {
            let established = b.get(*phase, hit.kind, &hit.value).is_some_and(|s| {
                b.supported(s, settings.min_hosts)
                    && (matches!(state, State::Stable | State::Locked)
                        || s.replica_count() >= 2 && !s.only_replica(by.replica))
            });
            if hit.rule.starts_with("rule.mining") || !established {
                let anomaly = rule_anomaly(b, *phase, hit, by);
                rule_findings.push((hit.clone(), anomaly));
            }
        }
        // Learn.
        let mut learned = false;
        if in_gap {
            self.metrics.gap_events.add(1);
        } else {
            if state == State::Learning && !matches!(ev.source, Source::None) {
                b.count_event(ev.time_ns, &settings.rules);
            }
            for f in &feats {
                learned |= b.learn_since(f, ev.count, by, ev.time_ns, ev.time_ns - settings.active_ns);
            }
        }
        let baseline_finding = best
            .filter(|(score, _, _)| *score >= settings.alert_threshold)
            .map(|(score, rule, i)| baseline_finding(b, &feats[i], (score, rule), by, &ev, version, &self.processes));
        if learned {
            self.dirty.insert(ev.workload.clone());
        }
        // Rule findings alert on their own; the container score sums the
        // baseline's view of the container.
        let score = best.map_or(0.0, |b| b.0);
        for (hit, anomaly) in rule_findings {
            let f = self.rule_finding(&ev, &hit, version, state, anomaly);
            self.emit(f);
        }
        if let Some(f) = baseline_finding {
            self.emit(f);
        }
        self.add_container_score(&ev, score, wall, version, state);
    }

    fn add_container_score(&mut self, ev: &Event<'_>, score: f64, wall: i64, version: u64, state: State) {
        let window = self.settings.window_ns;
        let threshold = self.settings.container_threshold;
        let Some(c) = self.containers.get_mut(&ev.info.id) else {
            return;
        };
        while c.scores.front().is_some_and(|(t, _)| wall - *t > window) {
            let (_, s) = c.scores.pop_front().expect("checked");
            c.score -= s;
        }
        if score <= 0.0 {
            return;
        }
        let before = c.score;
        c.scores.push_back((wall, score));
        c.score += score;
        if before < threshold && c.score >= threshold {
            let total = c.score;
            let d = details(ev.source, &self.processes);
            let f = Finding {
                workload: ev.workload.clone(),
                rule: "container.score",
                key: format!("container.score|{}", ev.info.id),
                title: format!(
                    "Container {} deviates from its workload: score {total:.1} over the window",
                    short(&ev.info.id)
                ),
                desc: "Many deviations from the workload's baseline in a short time, none alone decisive.".into(),
                severity: Severity::Medium,
                confidence: 50,
                technique: None,
                anomaly: Anomaly {
                    parameter: "container score".into(),
                    observed: format!("{total:.2}"),
                    baseline: vec![(format!("threshold {threshold:.2}"), 0)],
                    fleet: None,
                },
                container: ev.info.clone(),
                process: d.process,
                endpoint: d.endpoint,
                file: d.file,
                baseline_version: version,
                baseline_state: state.as_str(),
                score: total,
                time_ns: ev.time_ns,
                event_id: d.event_id,
            };
            self.emit(f);
        }
    }

    fn rule_finding(&self, ev: &Event<'_>, hit: &RuleHit, version: u64, state: State, anomaly: Anomaly) -> Finding {
        let d = details(ev.source, &self.processes);
        Finding {
            workload: ev.workload.clone(),
            rule: hit.rule,
            key: format!("{}|{}", hit.rule, hit.value),
            title: hit.title.clone(),
            desc: hit.desc.to_owned(),
            severity: hit.severity,
            confidence: 90,
            technique: Some(hit.technique),
            anomaly,
            container: ev.info.clone(),
            process: d.process,
            endpoint: d.endpoint,
            file: d.file,
            baseline_version: version,
            baseline_state: state.as_str(),
            score: 1.0,
            time_ns: ev.time_ns,
            event_id: d.event_id,
        }
    }

    /// Opens an alert window for a finding, or counts it in the open one.
    fn emit(&mut self, f: Finding) {
        self.metrics.findings.add(1);
        let now = self.clock.now_ns();
        let key = (f.workload.clone(), f.key.clone());
        if let Some(open) = self.open.get_mut(&key)
            && now - open.opened_ns < self.settings.window_ns
        {
            open.count += 1;
            open.last_ns = open.last_ns.max(f.time_ns);
            self.metrics.suppressed.add(1);
            return;
        }
        let uid = alert_uid(&f);
        let partition = self.baselines.get(&f.workload).map_or(self.partition, |b| b.partition);
        self.push_alert(&f, &uid, partition, 1, f.time_ns, ocsf::Activity::Create);
        self.open.insert(
            key,
            Open {
                opened_ns: now,
                count: 1,
                last_ns: f.time_ns,
                first: f,
                uid,
                partition,
            },
        );
    }

    fn push_alert(
        &mut self,
        f: &Finding,
        uid: &str,
        partition: i32,
        count: u64,
        last_ns: i64,
        activity: ocsf::Activity,
    ) {
        let document = ocsf::detection_finding(f, uid, activity, count, last_ns);
        self.metrics.alerts.add(1);
        self.outbox.push(Alert {
            workload: f.workload.clone(),
            partition,
            uid: uid.to_owned(),
            document,
            finding: f.clone(),
            count,
        });
    }

    /// Periodic work: closes alert windows (an update with the final count
    /// when the finding recurred), moves baselines to stable.
    pub fn tick(&mut self) {
        let now = self.clock.now_ns();
        let window = self.settings.window_ns;
        let closed: Vec<(Arc<str>, String)> = self
            .open
            .iter()
            .filter(|(_, o)| now - o.opened_ns >= window)
            .map(|(k, _)| k.clone())
            .collect();
        for k in closed {
            let o = self.open.remove(&k).expect("listed");
            if o.count > 1 {
                self.push_alert(
                    &o.first,
                    &o.uid,
                    o.partition,
                    o.count,
                    o.last_ns,
                    ocsf::Activity::Update,
                );
            }
        }
        let rules = self.settings.rules;
        for (w, b) in &mut self.baselines {
            // Stability is judged on event time: the newest event seen.
            let latest = b
                .replicas
                .values()
                .map(|r| r.last_seen_ns)
                .max()
                .unwrap_or(b.created_ns);
            if b.maybe_stabilize(latest, &rules) {
                tracing::info!(workload = %w, version = b.version, events = b.events, "baseline stable");
                self.dirty.insert(w.clone());
            }
        }
        self.now_wall = now;
        // Containers silent for two windows (and their gap records) are
        // forgotten: their score is 0, and churn must not grow the tables.
        self.containers.retain(|_, c| now - c.last_seen_wall < 2 * window);
        let horizon = now - 2 * window;
        for gaps in [&mut self.gaps, &mut self.host_gaps] {
            gaps.retain(|_, g| {
                g.retain(|(_, end)| *end >= horizon);
                !g.is_empty()
            });
        }
    }
}

/// The baseline of a workload in `baselines`, created when missing (on
/// `partition`); notes the image. New and changed baselines go to `dirty`.
fn baseline_entry<'a>(
    baselines: &'a mut Map<Arc<str>, Baseline>,
    dirty: &mut std::collections::HashSet<Arc<str>>,
    partition: i32,
    workload: &Arc<str>,
    image_id: Option<&str>,
    time_ns: i64,
) -> &'a mut Baseline {
    let b = baselines
        .entry(workload.clone())
        .or_insert_with(|| Baseline::new(workload, partition, time_ns));
    b.partition = partition;
    let changed = image_id.is_some_and(|i| b.see_image(i, time_ns));
    if changed || b.version == 1 {
        dirty.insert(workload.clone());
    }
    b
}

/// Operator commands on a baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Lock,
    Unlock,
    Reset,
    Import(Box<Baseline>),
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Lock => "lock",
            Command::Unlock => "unlock",
            Command::Reset => "reset",
            Command::Import(_) => "import",
        })
    }
}

/// One event being evaluated.
#[derive(Debug)]
struct Event<'r> {
    workload: Arc<str>,
    info: Container,
    image_id: Option<&'r str>,
    time_ns: i64,
    count: u64,
    source: Source<'r>,
}

/// The row behind an event: its evidence is built only for a finding.
#[derive(Debug, Clone, Copy)]
enum Source<'r> {
    None,
    Process(&'r process::Row),
    Network(&'r network::Row),
    File(&'r file::Row),
}

/// Process table for lineage: (host, pid) → (executable, parent pid).
type ProcTable = Map<(Arc<str>, u32), (Arc<str>, u32)>;

/// Executables of the ancestors of a process whose parent is `ppid`.
fn lineage(processes: &ProcTable, host: &Arc<str>, mut ppid: u32) -> Vec<Arc<str>> {
    let mut out = Vec::new();
    while ppid > 1 && out.len() < 8 {
        let Some((exe, parent)) = processes.get(&(host.clone(), ppid)) else {
            break;
        };
        out.push(exe.clone());
        if *parent == ppid {
            break;
        }
        ppid = *parent;
    }
    out
}

/// The evidence of a finding about an event.
#[derive(Debug, Default)]
struct Details {
    event_id: Option<String>,
    process: Option<Process>,
    endpoint: Option<Endpoint>,
    file: Option<Arc<str>>,
}

fn details(source: Source<'_>, processes: &ProcTable) -> Details {
    match source {
        Source::None => Details::default(),
        Source::Process(row) => Details {
            event_id: Some(event_id(
                &row.attribution.agent_id,
                row.attribution.boot_id,
                row.attribution.batch_seq,
                row.event_index,
            )),
            process: Some(Process {
                pid: row.pid,
                ppid: row.ppid,
                uid: row.uid,
                path: row.path.clone(),
                argv: row.argv.clone(),
                cwd: row.cwd.clone(),
                parent_exe: row.parent_exe.clone(),
                lineage: lineage(processes, &row.attribution.host, row.ppid),
            }),
            endpoint: None,
            file: None,
        },
        Source::Network(row) => Details {
            event_id: Some(event_id(
                &row.attribution.agent_id,
                row.attribution.boot_id,
                row.attribution.batch_seq,
                row.event_index,
            )),
            process: Some(Process {
                pid: row.pid,
                path: processes
                    .get(&(row.attribution.host.clone(), row.pid))
                    .map(|p| p.0.clone()),
                lineage: lineage(processes, &row.attribution.host, row.pid),
                ..Process::default()
            }),
            endpoint: row.remote_addr.clone().map(|addr| Endpoint {
                addr,
                port: row.remote_port,
            }),
            file: None,
        },
        Source::File(row) => Details {
            event_id: Some(event_id(
                &row.attribution.agent_id,
                row.attribution.boot_id,
                row.attribution.batch_seq,
                row.event_index,
            )),
            process: Some(Process {
                pid: row.pid,
                path: row.exe.clone(),
                lineage: lineage(processes, &row.attribution.host, row.pid),
                ..Process::default()
            }),
            endpoint: None,
            file: Some(row.path.clone()),
        },
    }
}

/// `agent/boot/batch/index`: the stable event id.
pub fn event_id(agent: &str, boot: u64, batch: u64, index: u32) -> String {
    format!("{agent}/{boot}/{batch}/{index}")
}

/// A deterministic alert id: the same first event and finding give the same
/// id, so a replayed alert (at-least-once) can be recognised downstream.
fn alert_uid(f: &Finding) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(f.workload.as_bytes());
    h.update(&[0]);
    h.update(f.key.as_bytes());
    h.update(&[0]);
    match &f.event_id {
        Some(id) => h.update(id.as_bytes()),
        None => h.update(&f.time_ns.to_le_bytes()),
    }
    let mut h2 = crc32fast::Hasher::new_with_initial(0x9e37_79b9);
    h2.update(f.key.as_bytes());
    h2.update(&f.time_ns.to_le_bytes());
    format!("gh-{:08x}{:08x}", h.finalize(), h2.finalize())
}

/// The score of one feature (see the module documentation).
fn assess(b: &Baseline, f: &Feature, by: Shower, time_ns: i64, s: &Settings) -> (f64, &'static str) {
    let stats = b.get(f.phase, f.kind, &f.value);
    let settled = matches!(b.state, State::Stable | State::Locked);
    if settled {
        let novel = || match f.kind {
            Kind::Args => {
                let exe = f.value.split(' ').next().unwrap_or_default();
                if b.get(f.phase, Kind::Exec, exe)
                    .is_some_and(|st| b.supported(st, s.min_hosts))
                {
                    0.5
                } else {
                    1.0
                }
            }
            Kind::Peer => 0.5,
            Kind::Syscall if rules::DANGEROUS_SYSCALLS.contains(&f.value.as_str()) => 0.9,
            Kind::Syscall => 0.6,
            _ => 1.0,
        };
        match stats {
            None => return (novel(), "baseline.novel"),
            // Learned from too few of the hosts that ran the workload: one
            // host's say-so does not make it normal.
            Some(st) if !b.supported(st, s.min_hosts) => return (novel(), "baseline.unconfirmed"),
            // The total is a sum over the kind's values: only when it matters.
            Some(st) if st.count <= 2 && b.totals(f.phase, f.kind).1 >= 1000 => {
                return (0.4, "baseline.rare");
            }
            Some(_) => {}
        }
    }
    // Fleet: only this replica shows it while established peers do not.
    if matches!(f.kind, Kind::Syscall | Kind::Peer | Kind::Args) {
        return (0.0, "");
    }
    let (alone, since) = match stats {
        None => (true, time_ns),
        Some(st) => (st.only_replica(by.replica), st.first_seen_ns),
    };
    if alone
        && s.fleet_min_replicas >= 2
        && b.peers(by.replica, time_ns - s.active_ns, since - s.fleet_peer_age_ns) + 1 >= s.fleet_min_replicas
    {
        return (0.8, "fleet.outlier");
    }
    (0.0, "")
}

/// What the baseline holds next to an observed feature.
fn anomaly_of(b: &Baseline, f: &Feature, by: Shower) -> Anomaly {
    let stats = b.get(f.phase, f.kind, &f.value);
    // The hosts that showed it: the baseline's, else this event's.
    let host_names = match stats {
        Some(st) if !st.hosts.is_empty() => b.host_names(st, finding::FLEET_HOST_NAMES),
        _ => b.hosts.get(by.host as usize).cloned().into_iter().collect(),
    };
    let replicas = b.next_replica.max(1);
    Anomaly {
        parameter: format!("{} ({} phase)", f.kind.parameter(), f.phase.as_str()),
        observed: f.value.clone(),
        baseline: b
            .top(f.phase, f.kind, 10)
            .into_iter()
            .map(|(v, c)| (v.to_owned(), c))
            .collect(),
        fleet: Some(Fleet {
            replicas_with: stats.map_or(1, |s| s.replica_count().max(1)),
            replicas,
            hosts_with: stats.map_or(1, |s| s.host_count().max(1)),
            hosts: (b.hosts.len() as u32).max(by.host + 1),
            host_names,
        }),
    }
}

fn rule_anomaly(b: &Baseline, phase: Phase, hit: &RuleHit, by: Shower) -> Anomaly {
    anomaly_of(b, &Feature::new(phase, hit.kind, &hit.value), by)
}

fn baseline_finding(
    b: &Baseline,
    f: &Feature,
    (score, rule): (f64, &'static str),
    by: Shower,
    ev: &Event<'_>,
    version: u64,
    processes: &ProcTable,
) -> Finding {
    let d = details(ev.source, processes);
    let (title, technique) = match (rule, f.kind) {
        ("fleet.outlier", _) => (
            format!(
                "Only this replica of {} shows {} {}",
                ev.workload,
                f.kind.as_str(),
                f.value
            ),
            technique_of(f.kind),
        ),
        ("baseline.rare", _) => (
            format!("Rare {} {} for {}", f.kind.as_str(), f.value, ev.workload),
            technique_of(f.kind),
        ),
        ("baseline.unconfirmed", _) => (
            format!(
                "Unconfirmed {} {} in {}: learned from too few hosts ({} phase)",
                f.kind.as_str(),
                f.value,
                ev.workload,
                f.phase.as_str()
            ),
            technique_of(f.kind),
        ),
        _ => (
            format!(
                "New {} {} in {} ({} phase)",
                f.kind.as_str(),
                f.value,
                ev.workload,
                f.phase.as_str()
            ),
            technique_of(f.kind),
        ),
    };
    let desc = match rule {
        "fleet.outlier" => "The workload's other replicas, running for longer, never showed this.".to_owned(),
        "baseline.rare" => "Seen in the baseline, but at most twice in a thousand.".to_owned(),
        "baseline.unconfirmed" => {
            let st = b.get(f.phase, f.kind, &f.value);
            let shown = st.map_or(0, |st| st.host_count());
            let running = st.map_or(0, |st| st.hosts_running);
            let names = st
                .map(|st| b.host_names(st, finding::FLEET_HOST_NAMES))
                .unwrap_or_default();
            format!(
                "The workload's baseline (version {version}) learned this {} from {shown} host(s) ({}) of the {running} \
                 that ran the workload then: one host cannot make a behaviour normal for the workload \
                 (analysis.min_hosts). Lock the baseline to approve it.",
                f.kind.as_str(),
                names.join(", ")
            )
        }
        _ => format!(
            "The workload's {} baseline (version {version}) never saw this {}.",
            b.state.as_str(),
            f.kind.as_str()
        ),
    };
    let severity = if score >= 0.9 {
        Severity::High
    } else if score >= 0.7 {
        Severity::Medium
    } else {
        Severity::Low
    };
    Finding {
        workload: ev.workload.clone(),
        rule,
        key: format!("{rule}|{}", f.key()),
        title,
        desc,
        severity,
        confidence: (score * 100.0).round().clamp(0.0, 100.0) as u8,
        technique,
        anomaly: anomaly_of(b, f, by),
        container: ev.info.clone(),
        process: d.process,
        endpoint: d.endpoint,
        file: d.file,
        baseline_version: version,
        baseline_state: b.state.as_str(),
        score,
        time_ns: ev.time_ns,
        event_id: d.event_id,
    }
}

fn technique_of(kind: Kind) -> Option<Technique> {
    Some(match kind {
        Kind::Exec | Kind::Lineage | Kind::Args => finding::COMMAND_INTERPRETER,
        Kind::Shell => finding::UNIX_SHELL,
        Kind::Drift => finding::INGRESS_TOOL_TRANSFER,
        Kind::Connect | Kind::Peer => finding::APPLICATION_LAYER_PROTOCOL,
        Kind::Listen => finding::NON_STANDARD_PORT,
        Kind::File => finding::STORED_DATA_MANIPULATION,
        Kind::Syscall => finding::NATIVE_API,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use glasshouse_proto::record::Attribution;
    use std::time::Duration;

    pub const S: i64 = 1_000_000_000;

    pub fn settings() -> Settings {
        Settings {
            phases: Phases { startup_ns: 0 },
            rules: Rules {
                min_learning_ns: 10 * S,
                min_events: 10,
                max_novelty: 0.2,
                novelty_window_ns: 5 * S,
            },
            cluster: vec!["10.88.0.0/16".parse().unwrap()],
            alert_threshold: 0.7,
            container_threshold: 3.0,
            window_ns: 300 * S,
            fleet_min_replicas: 3,
            min_hosts: 2,
            fleet_peer_age_ns: 60 * S,
            active_ns: 600 * S,
            mining_ports: vec![3333],
            mining_cpu_cores: 0.9,
            mining_cpu_samples: 3,
        }
    }

    pub fn exec(container: &str, t: i64, path: &str, argv: &[&str]) -> process::Row {
        process::Row {
            attribution: Attribution {
                boot_id: 1,
                batch_seq: t as u64,
                container_id: Some(container.into()),
                container_name: Some(format!("web-{container}").into()),
                image: Some("localhost/web:1".into()),
                image_id: Some("sha256:1111111111111111".into()),
                workload_id: "localhost/web".into(),
                ..Attribution::host("a".into(), "h1".into())
            },
            event_index: 0,
            time_unix_ns: t,
            kind: process::Kind::Exec,
            pid: 100,
            ppid: 1,
            uid: 0,
            gid: 0,
            path: Some(path.into()),
            argv: argv.iter().map(|a| (*a).into()).collect(),
            cwd: Some("/".into()),
            parent_exe: Some("/bin/server".into()),
            exit_code: None,
            count: 1,
            exec_in: false,
            drift: false,
            stdio_socket: false,
        }
    }

    pub fn connect(container: &str, t: i64, addr: &str, port: u16) -> network::Row {
        network::Row {
            attribution: Attribution {
                agent_id: "a".into(),
                boot_id: 1,
                batch_seq: t as u64,
                host: "h1".into(),
                container_id: Some(container.into()),
                workload_id: "localhost/web".into(),
                ..Default::default()
            },
            event_index: 1,
            time_unix_ns: t,
            kind: network::Kind::Connect,
            pid: 100,
            family: network::Family::Ipv4,
            local_addr: "10.88.0.2".into(),
            local_port: 40000,
            remote_addr: Some(addr.into()),
            remote_port: port,
            count: 1,
            ..Default::default()
        }
    }

    /// Three replicas doing the same for 30 s: a stable baseline.
    pub fn stable_engine() -> Engine {
        let mut e = Engine::new(settings());
        for t in 0..30 {
            for c in ["c1", "c2", "c3"] {
                e.handle_process(&exec(c, t * S, "/bin/worker", &["worker", "--id", &t.to_string()]));
                e.handle_network(&connect(c, t * S, "10.88.0.9", 5432));
            }
        }
        e.tick();
        assert_eq!(e.baseline("localhost/web").unwrap().state, State::Stable);
        e.drain_alerts();
        e
    }

    fn rules_of(alerts: &[Alert]) -> Vec<&'static str> {
        alerts.iter().map(|a| a.finding.rule).collect()
    }

    fn on(host: &str, mut row: process::Row) -> process::Row {
        row.attribution.host = host.into();
        row
    }

    #[test]
    fn one_host_cannot_teach_a_workload_on_several_hosts() {
        // Replicas on two hosts do the same, except that h1 (compromised)
        // also runs nc while the baseline learns.
        let mut e = Engine::new(settings());
        for t in 0..30 {
            e.handle_process(&on("h1", exec("c1", t * S, "/bin/worker", &["worker"])));
            e.handle_process(&on("h2", exec("c2", t * S, "/bin/worker", &["worker"])));
            if t % 10 == 5 {
                e.handle_process(&on("h1", exec("c1", t * S, "/usr/bin/nc", &["nc", "-e"])));
            }
        }
        e.tick();
        let b = e.baseline("localhost/web").unwrap();
        assert_eq!(b.state, State::Stable);
        assert!(
            b.get(Phase::Steady, Kind::Exec, "/usr/bin/nc").is_some(),
            "held, but not normal"
        );
        e.drain_alerts();
        // What both hosts showed is normal on either.
        e.handle_process(&on("h2", exec("c2", 31 * S, "/bin/worker", &["worker"])));
        assert!(e.drain_alerts().is_empty());
        // What only h1 showed is not: on h2 or on h1 it alerts, naming h1.
        for (host, c) in [("h2", "c2"), ("h1", "c1")] {
            e.handle_process(&on(host, exec(c, 32 * S, "/usr/bin/nc", &["nc", "-e"])));
            let alerts = e.drain_alerts();
            let a = alerts
                .iter()
                .find(|a| a.finding.rule == "baseline.unconfirmed" && a.finding.anomaly.observed == "/usr/bin/nc")
                .unwrap_or_else(|| panic!("no unconfirmed alert on {host}: {alerts:#?}"));
            assert_eq!(a.finding.severity, Severity::High);
            let fleet = a.finding.anomaly.fleet.as_ref().unwrap();
            assert_eq!(
                (fleet.hosts_with, fleet.hosts, &fleet.host_names[..]),
                (1, 2, &["h1".to_owned()][..])
            );
            assert!(
                a.finding.desc.contains("from 1 host(s) (h1) of the 2"),
                "{}",
                a.finding.desc
            );
            assert!(a.document.json().contains("shown on h1"), "{}", a.document.json());
            // Alerts are per workload and finding per window: the next
            // host's is the same alert, counted.
            e.open.clear();
        }
        // Alerting teaches nothing: support is counted while learning only.
        assert_eq!(
            e.baseline("localhost/web")
                .unwrap()
                .get(Phase::Steady, Kind::Exec, "/usr/bin/nc")
                .unwrap()
                .host_count(),
            1
        );
    }

    #[test]
    fn one_host_workloads_learn_alone_and_locking_approves() {
        // One host only: its say-so is all there is.
        let mut e = Engine::new(settings());
        for t in 0..30 {
            e.handle_process(&exec("c1", t * S, "/bin/worker", &["worker"]));
        }
        e.tick();
        e.drain_alerts();
        // A second host joins later: what the first learned alone is normal.
        e.handle_process(&on("h2", exec("c2", 31 * S, "/bin/worker", &["worker"])));
        assert!(e.drain_alerts().is_empty());

        // Two hosts, one shows something alone; the operator locks (approves).
        let mut e = Engine::new(settings());
        for t in 0..30 {
            e.handle_process(&on("h1", exec("c1", t * S, "/bin/worker", &["worker"])));
            e.handle_process(&on("h2", exec("c2", t * S, "/bin/worker", &["worker"])));
        }
        e.handle_process(&on("h1", exec("c1", 3 * S, "/usr/bin/backup", &["backup"])));
        e.tick();
        e.command("localhost/web", Command::Lock).unwrap();
        e.drain_alerts();
        e.handle_process(&on("h2", exec("c2", 31 * S, "/usr/bin/backup", &["backup"])));
        assert!(e.drain_alerts().is_empty());

        // A workload that moved: h1 ran it long before (past `active_ns`),
        // h2 runs it now; what h2 learns alone is normal.
        let mut e = Engine::new(settings());
        e.handle_process(&on("h1", exec("c1", 0, "/bin/worker", &["worker"])));
        for t in 1000..1030 {
            e.handle_process(&on("h2", exec("c2", t * S, "/bin/worker", &["worker"])));
            e.handle_process(&on("h2", exec("c2", t * S, "/bin/helper", &["helper"])));
        }
        e.tick();
        assert_eq!(e.baseline("localhost/web").unwrap().state, State::Stable);
        e.drain_alerts();
        e.handle_process(&on("h2", exec("c2", 1031 * S, "/bin/helper", &["helper"])));
        assert!(e.drain_alerts().is_empty());
    }

    #[test]
    fn known_behaviour_raises_nothing_and_new_behaviour_alerts_once_per_window() {
        let mut e = stable_engine();
        let clock = Clock::manual(crate::clock::system_ns());
        e.clock = clock.clone();
        e.handle_process(&exec("c2", 31 * S, "/bin/worker", &["worker", "--id", "99"]));
        e.handle_network(&connect("c3", 31 * S, "10.88.0.9", 5432));
        assert!(e.drain_alerts().is_empty());

        e.handle_process(&exec("c2", 32 * S, "/usr/bin/wget", &["wget", "http://x/y"]));
        let alerts = e.drain_alerts();
        assert_eq!(rules_of(&alerts), ["baseline.novel"], "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(&*a.finding.container.id, "c2");
        assert_eq!(a.finding.anomaly.observed, "/usr/bin/wget");
        assert_eq!(a.finding.anomaly.baseline, vec![("/bin/worker".to_owned(), 91)]);
        assert_eq!(a.finding.baseline_version, e.baseline("localhost/web").unwrap().version);
        let v = a.document.value();
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["evidences"][0]["container"]["uid"], "c2");

        // The same again: counted, not alerted; the window's close (by the
        // wall clock, not event time) says how often.
        e.handle_process(&exec("c2", 33 * S, "/usr/bin/wget", &["wget", "http://x/z"]));
        assert!(e.drain_alerts().is_empty());
        assert_eq!(e.metrics.suppressed.get(), 1);
        clock.advance(Duration::from_secs(299));
        e.tick();
        assert!(e.drain_alerts().is_empty(), "the window is still open");
        clock.advance(Duration::from_secs(1));
        e.tick();
        let update = e.drain_alerts();
        assert_eq!(update.len(), 1);
        assert_eq!(update[0].count, 2);
        assert_eq!(update[0].uid, a.uid);
        let v = update[0].document.value();
        assert_eq!((v["activity_id"].as_u64(), v["count"].as_u64()), (Some(2), Some(2)));
    }

    #[test]
    fn new_peers_and_ports_score_by_what_is_known() {
        let mut e = stable_engine();
        // A new address on a known port and class: low score, no alert.
        e.handle_network(&connect("c1", 31 * S, "10.88.0.10", 5432));
        assert!(e.drain_alerts().is_empty());
        // A new port to the internet: an alert.
        e.handle_network(&connect("c1", 32 * S, "93.184.216.34", 4444));
        let alerts = e.drain_alerts();
        assert_eq!(rules_of(&alerts), ["baseline.novel"]);
        assert_eq!(alerts[0].finding.anomaly.observed, "4444/public");
        assert_eq!(
            alerts[0].finding.endpoint,
            Some(Endpoint {
                addr: "93.184.216.34".into(),
                port: 4444
            })
        );
        // A stratum port: the mining rule, whatever the baseline.
        e.handle_network(&connect("c1", 33 * S, "93.184.216.35", 3333));
        let alerts = e.drain_alerts();
        assert!(rules_of(&alerts).contains(&"rule.mining.stratum_port"), "{alerts:#?}");
    }

    #[test]
    fn rules_fire_without_a_baseline() {
        let mut e = Engine::new(settings());
        let mut shell = exec("c1", S, "/bin/sh", &["sh", "-i"]);
        shell.exec_in = true;
        e.handle_process(&shell);
        let mut drift = exec("c1", 2 * S, "/tmp/payload", &["/tmp/payload"]);
        drift.drift = true;
        e.handle_process(&drift);
        e.handle_file(&file::Row {
            attribution: Attribution {
                agent_id: "a".into(),
                boot_id: 1,
                batch_seq: 3,
                host: "h1".into(),
                container_id: Some("c1".into()),
                workload_id: "localhost/web".into(),
                ..Default::default()
            },
            time_unix_ns: 3 * S,
            kind: file::Kind::Write,
            pid: 100,
            path: "/etc/passwd".into(),
            exe: Some("/bin/busybox".into()),
            flags: 1,
            count: 1,
            ..Default::default()
        });
        let alerts = e.drain_alerts();
        assert_eq!(
            rules_of(&alerts),
            ["rule.interactive_shell", "rule.drift", "rule.account_files"],
            "{:?}",
            rules_of(&alerts)
        );
        assert_eq!(alerts[0].finding.severity, Severity::Medium, "an exec-in shell");
        assert_eq!(alerts[1].finding.technique.unwrap().uid, "T1105");
        assert_eq!(alerts[2].finding.file.as_deref(), Some("/etc/passwd"));
    }

    #[test]
    fn a_shell_on_a_socket_is_a_reverse_shell() {
        let mut e = Engine::new(settings());
        let mut rev = exec("c1", S, "/bin/busybox", &["/bin/sh"]);
        rev.stdio_socket = true;
        e.handle_process(&rev);
        // A non-shell on a socket (inetd-style service) is not.
        let mut svc = exec("c1", 2 * S, "/usr/sbin/sshd", &["sshd", "-i"]);
        svc.stdio_socket = true;
        e.handle_process(&svc);
        let alerts = e.drain_alerts();
        assert_eq!(rules_of(&alerts), ["rule.reverse_shell"], "{:?}", rules_of(&alerts));
        assert_eq!(alerts[0].finding.severity, Severity::Critical);
    }

    #[test]
    fn a_replica_unlike_its_peers_is_suspicious_while_learning() {
        let mut e = Engine::new(Settings {
            rules: Rules {
                min_learning_ns: 3600 * S,
                ..settings().rules
            },
            ..settings()
        });
        for t in 0..100 {
            for c in ["c1", "c2", "c3"] {
                e.handle_process(&exec(c, t * S, "/bin/worker", &["worker"]));
            }
        }
        e.tick();
        assert_eq!(e.baseline("localhost/web").unwrap().state, State::Learning);
        assert!(
            e.drain_alerts().is_empty(),
            "replicas that start together are peers, not outliers"
        );
        e.handle_network(&connect("c3", 100 * S, "198.51.100.7", 8080));
        let alerts = e.drain_alerts();
        assert_eq!(rules_of(&alerts), ["fleet.outlier"], "{alerts:#?}");
        let fleet = alerts[0].finding.anomaly.fleet.clone().unwrap();
        assert_eq!((fleet.replicas_with, fleet.replicas), (1, 3));
        // Once a second replica shows it, it is the fleet's behaviour.
        e.handle_network(&connect("c1", 101 * S, "198.51.100.7", 8080));
        e.handle_network(&connect("c2", 102 * S, "198.51.100.7", 8080));
        assert!(e.drain_alerts().is_empty());
    }

    #[test]
    fn what_a_container_showed_during_a_gap_is_not_learned() {
        let mut e = Engine::new(settings());
        e.handle_process(&exec("c1", S, "/bin/worker", &["worker"]));
        e.handle_process(&exec("c1", 5 * S, "/bin/odd", &["odd"]));
        let gap = gaps::Row {
            attribution: Attribution {
                agent_id: "a".into(),
                boot_id: 1,
                batch_seq: 9,
                host: "h1".into(),
                container_id: Some("c1".into()),
                workload_id: "localhost/web".into(),
                ..Default::default()
            },
            start_unix_ns: 4 * S,
            end_unix_ns: 6 * S,
            reason: gaps::Reason::KernelBufferFull,
            dropped: 10,
        };
        e.handle_gap(&gap);
        let b = e.baseline("localhost/web").unwrap();
        assert!(b.get(Phase::Steady, Kind::Exec, "/bin/odd").is_none(), "forgotten");
        assert!(b.get(Phase::Steady, Kind::Exec, "/bin/worker").is_some());
        // Arriving after the gap record: not learned either.
        e.handle_process(&exec("c1", 5 * S, "/bin/odd2", &["odd2"]));
        assert!(
            e.baseline("localhost/web")
                .unwrap()
                .get(Phase::Steady, Kind::Exec, "/bin/odd2")
                .is_none()
        );
        assert_eq!(e.metrics.gap_events.get(), 1);
    }

    #[test]
    fn container_churn_does_not_grow_the_tables() {
        let clock = Clock::manual(crate::clock::system_ns());
        let mut e = Engine::with_clock(settings(), clock.clone());
        for i in 0..1000 {
            let c = format!("churn-{i}");
            e.handle_process(&exec(&c, S, "/bin/worker", &["worker"]));
            e.handle_gap(&gaps::Row {
                attribution: Attribution {
                    agent_id: "a".into(),
                    boot_id: 1,
                    batch_seq: 1,
                    host: "h1".into(),
                    container_id: Some(c.as_str().into()),
                    workload_id: "localhost/web".into(),
                    ..Default::default()
                },
                start_unix_ns: S,
                end_unix_ns: 2 * S,
                reason: gaps::Reason::RateLimited,
                dropped: 1,
            });
        }
        e.handle_process(&exec("alive", S, "/bin/worker", &["worker"]));
        assert_eq!((e.containers.len(), e.gaps.len()), (1001, 1000));
        // One window later all are remembered; "alive" is seen again.
        let window = Duration::from_nanos(e.settings.window_ns as u64);
        clock.advance(window + Duration::from_secs(1));
        e.tick();
        assert_eq!(e.containers.len(), 1001);
        e.handle_process(&exec("alive", 2 * S, "/bin/worker", &["worker"]));
        // Two windows after the others were last seen, only "alive" remains.
        clock.advance(window);
        e.tick();
        assert_eq!((e.containers.len(), e.gaps.len()), (1, 0));
        // The baseline keeps what the replicas taught it.
        assert!(e.baseline("localhost/web").unwrap().next_replica >= 1001);
    }

    #[test]
    fn forks_before_the_latest_sample_do_not_count_towards_the_next() {
        let mut e = Engine::new(settings());
        let sample = |t: i64| resources::Row {
            attribution: Attribution {
                agent_id: "a".into(),
                boot_id: 1,
                batch_seq: 1,
                host: "h1".into(),
                container_id: Some("c1".into()),
                workload_id: "localhost/web".into(),
                ..Default::default()
            },
            time_unix_ns: t * S,
            counters: resources::Counters::default(),
        };
        let fork = |t: i64| process::Row {
            kind: process::Kind::Fork,
            ..exec("c1", t * S, "/bin/worker", &["worker"])
        };
        e.handle_process(&exec("c1", 0, "/bin/worker", &["worker"]));
        e.handle_resources(&sample(10));
        // Replayed forks of before the sample, then one after it.
        for t in 0..10 {
            e.handle_process(&fork(t));
        }
        e.handle_process(&fork(15));
        e.handle_resources(&sample(20));
        let rate = e.baseline("localhost/web").unwrap().resources[&ResourceMetric::ForkRate].samples[0];
        assert!((rate - 0.1).abs() < 1e-9, "one fork in 10 s, got {rate}");
    }

    #[test]
    fn sustained_cpu_is_a_mining_finding() {
        let mut e = Engine::new(settings());
        let sample = |t: i64, cpu_s: u64| resources::Row {
            attribution: Attribution {
                agent_id: "a".into(),
                boot_id: 1,
                batch_seq: 1,
                host: "h1".into(),
                container_id: Some("c1".into()),
                workload_id: "localhost/web".into(),
                ..Default::default()
            },
            time_unix_ns: t * S,
            counters: resources::Counters {
                cpu_usage_ns: cpu_s * S as u64,
                ..Default::default()
            },
        };
        for t in 0..3 {
            e.handle_resources(&sample(t * 10, t as u64 * 10));
        }
        assert!(e.drain_alerts().is_empty(), "two samples at a full core");
        e.handle_resources(&sample(30, 30));
        assert_eq!(rules_of(&e.drain_alerts()), ["rule.mining.cpu"]);
    }

    #[test]
    fn operator_commands_version_the_baseline() {
        let mut e = stable_engine();
        let v = e.baseline("localhost/web").unwrap().version;
        assert_eq!(e.command("localhost/web", Command::Lock), Ok(v + 1));
        assert_eq!(e.baseline("localhost/web").unwrap().state, State::Locked);
        assert_eq!(e.command("localhost/web", Command::Unlock), Ok(v + 2));
        e.command("localhost/web", Command::Reset).unwrap();
        let b = e.baseline("localhost/web").unwrap();
        assert!(b.features.is_empty() && b.version > v + 2 && b.state == State::Learning);
        let mut other = b.clone();
        other.workload = "elsewhere".into();
        assert!(e.command("localhost/web", Command::Import(Box::new(other))).is_err());
    }
}
