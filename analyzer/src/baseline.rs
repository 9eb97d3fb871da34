//! The baseline of one workload: every feature its containers showed (see
//! [`crate::features`]), with counts, first and last seen, and in how many
//! replicas and on how many hosts; robust statistics of its resource use;
//! its lifecycle state and version.
//!
//! # Lifecycle
//! `learning` → `stable` when all of [`Rules`] hold: learned for at least
//! `min_learning`, from at least `min_events` events, and the novelty rate
//! (new features per event over the last completed novelty window) is under
//! `max_novelty`. A stable baseline keeps counting the features it holds but
//! adds no new ones: those are what scoring reports. `locked` (by an
//! operator) changes nothing at all. Unlock returns to learning; reset
//! starts from nothing.
//!
//! # Support from several hosts
//! A feature learned while the workload ran on several hosts is *normal*
//! only once at least `min_hosts` of them (or all, when fewer ran it)
//! showed it ([`Baseline::supported`]): one compromised host cannot teach
//! a fleet workload that an attack is normal. Support is counted while the
//! baseline learns: showing it again after that, from any host, only alerts
//! again. Until then a settled
//! baseline scores it as new (`baseline.unconfirmed`), and every alert
//! names the hosts that showed what it reports. A feature learned while
//! the workload ran on one host needs only that host. A `locked` baseline
//! is the operator's approval of all it holds.
//!
//! A new image version of the workload (an image id the baseline has not
//! seen) returns a stable baseline to learning **with everything it holds**:
//! the new version starts from the previous version's baseline.
//!
//! # Versions
//! The version increases with every change of what the baseline holds or of
//! its state: a feature learned, a lifecycle change, an operator command,
//! an image change. Counts and last-seen times of known features are
//! statistics, not changes. The last [`HISTORY`] changes are kept with the
//! baseline, and every alert names the version it was scored against.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::features::{Feature, Kind, Phase};

/// Changes kept in a baseline's history.
pub const HISTORY: usize = 32;
/// Replicas and hosts a feature remembers by number; past that it counts
/// "more".
pub const FEATURE_REPLICAS: usize = 32;
/// Replicas a baseline keeps details of (the least recently seen go first).
pub const MAX_REPLICAS: usize = 1024;
/// Distinct values kept per feature kind and phase; past that new values
/// are not learned (and a stable baseline would report them as new).
pub const MAX_VALUES: usize = 4096;
/// Resource samples kept per metric for the robust statistics.
pub const RESERVOIR: usize = 256;

/// A hash map with a fast, per-instance seeded hash (foldhash): the hot path
/// looks up several feature values per event.
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Features by phase and kind, then value.
pub type FeatureMap = Map<(Phase, Kind), Map<Box<str>, Stats>>;

/// Lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Learning,
    Stable,
    Locked,
}

impl State {
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Learning => "learning",
            State::Stable => "stable",
            State::Locked => "locked",
        }
    }
}

/// When a learning baseline becomes stable.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub min_learning_ns: i64,
    pub min_events: u64,
    /// New features per event, over the last completed novelty window.
    pub max_novelty: f64,
    pub novelty_window_ns: i64,
}

/// What is known of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    /// Numbers of the replicas (see [`Replica::n`]) that showed it, at most
    /// [`FEATURE_REPLICAS`]; `more_replicas` counts the others.
    pub replicas: Vec<u32>,
    #[serde(default)]
    pub more_replicas: u32,
    /// Numbers of the hosts (index into [`Baseline::hosts`]).
    pub hosts: Vec<u32>,
    #[serde(default)]
    pub more_hosts: u32,
    /// Hosts running the workload (a replica active within the engine's
    /// `active_secs`) when the feature was first learned: how much support
    /// it needs (see [`Baseline::supported`]). 0 in snapshots from before it
    /// was kept: needs one host.
    #[serde(default)]
    pub hosts_running: u32,
}

impl Stats {
    fn new(time_ns: i64) -> Stats {
        Stats {
            count: 0,
            first_seen_ns: time_ns,
            last_seen_ns: time_ns,
            replicas: Vec::new(),
            more_replicas: 0,
            hosts: Vec::new(),
            more_hosts: 0,
            hosts_running: 0,
        }
    }

    /// Counts one showing; the host adds to the feature's support only
    /// while the baseline learns (`learning`).
    fn record(&mut self, count: u64, time_ns: i64, replica: u32, host: u32, learning: bool) {
        self.count += count;
        self.first_seen_ns = self.first_seen_ns.min(time_ns);
        self.last_seen_ns = self.last_seen_ns.max(time_ns);
        add_member(&mut self.replicas, &mut self.more_replicas, replica);
        if learning {
            add_member(&mut self.hosts, &mut self.more_hosts, host);
        }
    }

    /// Replicas that showed the feature.
    pub fn replica_count(&self) -> u32 {
        self.replicas.len() as u32 + self.more_replicas
    }

    pub fn host_count(&self) -> u32 {
        self.hosts.len() as u32 + self.more_hosts
    }

    /// Whether replica `n` is the only one known to have shown it.
    pub fn only_replica(&self, n: u32) -> bool {
        self.more_replicas == 0 && self.replicas == [n]
    }
}

fn add_member(members: &mut Vec<u32>, more: &mut u32, n: u32) {
    if !members.contains(&n) {
        if members.len() < FEATURE_REPLICAS {
            members.push(n);
        } else {
            *more = more.saturating_add(1);
        }
    }
}

/// One container of the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    /// Number of the replica within the workload (features refer to it).
    pub n: u32,
    pub host: u32,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
}

/// A robust profile of one resource metric: the last [`RESERVOIR`] samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub samples: VecDeque<f64>,
}

impl Metric {
    pub fn push(&mut self, v: f64) {
        if self.samples.len() == RESERVOIR {
            self.samples.pop_front();
        }
        self.samples.push_back(v);
    }

    /// Median and median absolute deviation, if any samples.
    pub fn median_mad(&self) -> Option<(f64, f64)> {
        if self.samples.is_empty() {
            return None;
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        };
        let mut v: Vec<f64> = self.samples.iter().copied().collect();
        let m = median(&mut v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
        Some((m, median(&mut dev)))
    }

    /// The largest sample.
    pub fn max(&self) -> Option<f64> {
        self.samples.iter().copied().max_by(f64::total_cmp)
    }
}

/// The resource metrics a baseline profiles, per sample interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceMetric {
    /// CPU in cores (CPU seconds per second).
    Cpu,
    /// Resident memory in bytes.
    Memory,
    /// Process creations per second.
    ForkRate,
}

impl ResourceMetric {
    pub const ALL: [ResourceMetric; 3] = [ResourceMetric::Cpu, ResourceMetric::Memory, ResourceMetric::ForkRate];

    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceMetric::Cpu => "cpu_cores",
            ResourceMetric::Memory => "memory_bytes",
            ResourceMetric::ForkRate => "forks_per_second",
        }
    }
}

/// One change of a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub version: u64,
    pub time_ns: i64,
    pub what: String,
}

/// The baseline of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub workload: String,
    /// The event-topic partition the workload's events arrive on: the
    /// snapshot goes to the same partition of the baselines topic.
    pub partition: i32,
    pub version: u64,
    pub state: State,
    pub state_since_ns: i64,
    pub created_ns: i64,
    /// Image ids seen, oldest first (at most 16).
    pub images: Vec<String>,
    /// Events learned from.
    pub events: u64,
    /// Features by phase and kind, then value.
    #[serde(with = "feature_map")]
    pub features: FeatureMap,
    /// Replicas by container id.
    pub replicas: Map<String, Replica>,
    pub next_replica: u32,
    /// Host names; features and replicas refer to them by index.
    pub hosts: Vec<String>,
    pub resources: Map<ResourceMetric, Metric>,
    /// The novelty window in progress: its start, events and new features.
    pub window_start_ns: i64,
    pub window_events: u64,
    pub window_new: u64,
    /// New features per event over the last completed window.
    pub novelty: Option<f64>,
    pub history: VecDeque<Change>,
}

/// Serde of the feature map as a list (JSON object keys must be strings).
mod feature_map {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Entry {
        phase: Phase,
        kind: Kind,
        value: String,
        #[serde(flatten)]
        stats: Stats,
    }

    pub fn serialize<S: Serializer>(m: &FeatureMap, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<Entry> = m
            .iter()
            .flat_map(|((phase, kind), values)| {
                values.iter().map(|(value, stats)| Entry {
                    phase: *phase,
                    kind: *kind,
                    value: value.to_string(),
                    stats: stats.clone(),
                })
            })
            .collect();
        entries.sort_by(|a, b| (a.phase, a.kind, &a.value).cmp(&(b.phase, b.kind, &b.value)));
        s.collect_seq(entries)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FeatureMap, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        let mut m = FeatureMap::default();
        for e in entries {
            m.entry((e.phase, e.kind)).or_default().insert(e.value.into(), e.stats);
        }
        Ok(m)
    }
}

/// Who showed a feature: the replica and host numbers of the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shower {
    pub replica: u32,
    pub host: u32,
}

impl Baseline {
    pub fn new(workload: &str, partition: i32, now_ns: i64) -> Baseline {
        let mut b = Baseline {
            workload: workload.to_owned(),
            partition,
            version: 0,
            state: State::Learning,
            state_since_ns: now_ns,
            created_ns: now_ns,
            images: Vec::new(),
            events: 0,
            features: Map::default(),
            replicas: Map::default(),
            next_replica: 0,
            hosts: Vec::new(),
            resources: Map::default(),
            window_start_ns: now_ns,
            window_events: 0,
            window_new: 0,
            novelty: None,
            history: VecDeque::new(),
        };
        b.change(now_ns, "created, learning".into());
        b
    }

    /// Records a change: the next version.
    pub fn change(&mut self, time_ns: i64, what: String) {
        self.version += 1;
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Change {
            version: self.version,
            time_ns,
            what,
        });
    }

    /// What the baseline knows of `feature`.
    pub fn get(&self, phase: Phase, kind: Kind, value: &str) -> Option<&Stats> {
        self.features.get(&(phase, kind))?.get(value)
    }

    /// Distinct values and total count of one phase and kind.
    pub fn totals(&self, phase: Phase, kind: Kind) -> (usize, u64) {
        self.features
            .get(&(phase, kind))
            .map_or((0, 0), |m| (m.len(), m.values().map(|s| s.count).sum()))
    }

    /// Hosts that must have shown a feature for it to be normal: `min_hosts`,
    /// or every host that ran the workload when it was learned if fewer.
    pub fn hosts_needed(stats: &Stats, min_hosts: u32) -> u32 {
        min_hosts.min(stats.hosts_running).max(1)
    }

    /// Whether a feature the baseline holds is normal: shown by enough
    /// hosts, or approved by an operator (a locked baseline).
    pub fn supported(&self, stats: &Stats, min_hosts: u32) -> bool {
        self.state == State::Locked || stats.host_count() >= Baseline::hosts_needed(stats, min_hosts)
    }

    /// Hosts with a replica seen since `since_ns`.
    pub fn active_hosts(&self, since_ns: i64) -> u32 {
        let mut hosts: Vec<u32> = self
            .replicas
            .values()
            .filter(|r| r.last_seen_ns >= since_ns)
            .map(|r| r.host)
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        u32::try_from(hosts.len()).unwrap_or(u32::MAX)
    }

    /// Names of the hosts that showed a feature (at most `n`).
    pub fn host_names(&self, stats: &Stats, n: usize) -> Vec<String> {
        stats
            .hosts
            .iter()
            .filter_map(|&h| self.hosts.get(h as usize))
            .take(n)
            .cloned()
            .collect()
    }

    /// Whether the feature is known in any phase.
    pub fn known_in_any_phase(&self, kind: Kind, value: &str) -> bool {
        [Phase::Startup, Phase::Steady, Phase::ExecIn]
            .into_iter()
            .any(|p| self.get(p, kind, value).is_some())
    }

    /// The most frequent values of one phase and kind, for explanations.
    pub fn top(&self, phase: Phase, kind: Kind, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self
            .features
            .get(&(phase, kind))
            .map(|m| m.iter().map(|(k, s)| (&**k, s.count)).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }

    /// The replica and host numbers of a container, registering it.
    pub fn replica(&mut self, container_id: &str, host: &str, time_ns: i64) -> Shower {
        let host_n = match self.hosts.iter().position(|h| h == host) {
            Some(i) => i as u32,
            None => {
                self.hosts.push(host.to_owned());
                (self.hosts.len() - 1) as u32
            }
        };
        if let Some(r) = self.replicas.get_mut(container_id) {
            r.last_seen_ns = r.last_seen_ns.max(time_ns);
            return Shower {
                replica: r.n,
                host: r.host,
            };
        }
        if self.replicas.len() >= MAX_REPLICAS
            && let Some(oldest) = self
                .replicas
                .iter()
                .min_by_key(|(_, r)| r.last_seen_ns)
                .map(|(k, _)| k.clone())
        {
            self.replicas.remove(&oldest);
        }
        let n = self.next_replica;
        self.next_replica += 1;
        self.replicas.insert(
            container_id.to_owned(),
            Replica {
                n,
                host: host_n,
                first_seen_ns: time_ns,
                last_seen_ns: time_ns,
            },
        );
        Shower {
            replica: n,
            host: host_n,
        }
    }

    /// Replicas seen since `since_ns`, other than `except`, that were
    /// already seen at `before_ns`: the peers that could have shown a
    /// feature that appeared at `before_ns`.
    pub fn peers(&self, except: u32, since_ns: i64, before_ns: i64) -> usize {
        self.replicas
            .values()
            .filter(|r| r.n != except && r.last_seen_ns >= since_ns && r.first_seen_ns <= before_ns)
            .count()
    }

    /// Counts an event the baseline learns from (for the novelty rate).
    pub fn count_event(&mut self, time_ns: i64, rules: &Rules) {
        if time_ns.saturating_sub(self.window_start_ns) >= rules.novelty_window_ns {
            if self.window_events > 0 {
                self.novelty = Some(self.window_new as f64 / self.window_events as f64);
            }
            self.window_start_ns = time_ns;
            self.window_events = 0;
            self.window_new = 0;
        }
        self.window_events += 1;
        self.events += 1;
    }

    /// Learns `count` occurrences of a feature shown by `by` at `time_ns`.
    /// Returns true when the feature is new to the baseline (a change).
    /// A stable or locked baseline only updates known features.
    pub fn learn(&mut self, feature: &Feature, count: u64, by: Shower, time_ns: i64) -> bool {
        self.learn_since(feature, count, by, time_ns, i64::MIN)
    }

    /// [`Baseline::learn`], where a new feature needs the support of the
    /// hosts with a replica seen since `active_since_ns` (a host the
    /// workload left long ago does not count).
    pub fn learn_since(
        &mut self,
        feature: &Feature,
        count: u64,
        by: Shower,
        time_ns: i64,
        active_since_ns: i64,
    ) -> bool {
        let learning = self.state == State::Learning;
        if self.state == State::Locked {
            return false;
        }
        let key = (feature.phase, feature.kind);
        // A feature it holds (nearly every event once learned): one lookup.
        if let Some(stats) = self
            .features
            .get_mut(&key)
            .and_then(|values| values.get_mut(feature.value.as_str()))
        {
            stats.record(count, time_ns, by.replica, by.host, learning);
            return false;
        }
        if !learning || self.features.get(&key).is_some_and(|values| values.len() >= MAX_VALUES) {
            return false;
        }
        let hosts_running = self.active_hosts(active_since_ns);
        let values = self.features.entry(key).or_default();
        let mut stats = Stats::new(time_ns);
        stats.hosts_running = hosts_running;
        stats.record(count, time_ns, by.replica, by.host, true);
        values.insert(feature.value.as_str().into(), stats);
        // Syscall profiles are samples, not events: they do not count
        // towards the novelty rate (new features per event).
        if feature.kind != Kind::Syscall {
            self.window_new += 1;
        }
        self.change(time_ns, format!("learned {feature}"));
        true
    }

    /// Adds a resource sample.
    pub fn sample(&mut self, metric: ResourceMetric, value: f64) {
        if self.state == State::Locked {
            return;
        }
        self.resources.entry(metric).or_default().push(value);
    }

    /// Moves a learning baseline to stable when the rules say so; returns
    /// true when it did.
    pub fn maybe_stabilize(&mut self, now_ns: i64, rules: &Rules) -> bool {
        if self.state != State::Learning
            || now_ns.saturating_sub(self.state_since_ns) < rules.min_learning_ns
            || self.events < rules.min_events
        {
            return false;
        }
        let Some(novelty) = self.novelty else {
            return false;
        };
        if novelty > rules.max_novelty {
            return false;
        }
        self.set_state(
            State::Stable,
            now_ns,
            format!("stable (novelty {novelty:.4} per event, {} events)", self.events),
        );
        true
    }

    /// Changes the lifecycle state, recording why.
    pub fn set_state(&mut self, state: State, now_ns: i64, why: String) {
        self.state = state;
        self.state_since_ns = now_ns;
        if state == State::Learning {
            // A fresh novelty measurement for the new learning period.
            self.novelty = None;
            self.window_start_ns = now_ns;
            self.window_events = 0;
            self.window_new = 0;
        }
        self.change(now_ns, why);
    }

    /// Notes the image id of an event; a new image version of a stable
    /// workload returns it to learning, starting from what it holds.
    /// Returns true when the baseline changed.
    pub fn see_image(&mut self, image_id: &str, now_ns: i64) -> bool {
        if image_id.is_empty() || self.images.iter().any(|i| i == image_id) {
            return false;
        }
        if self.images.len() == 16 {
            self.images.remove(0);
        }
        let previous = self.images.last().cloned();
        self.images.push(image_id.to_owned());
        match (previous, self.state) {
            (Some(prev), State::Stable) => {
                self.set_state(
                    State::Learning,
                    now_ns,
                    format!(
                        "new image {} (was {}): learning again from version {}",
                        short(image_id),
                        short(&prev),
                        self.version
                    ),
                );
            }
            _ => self.change(now_ns, format!("image {}", short(image_id))),
        }
        true
    }

    /// Forgets everything: a new baseline that keeps the version sequence.
    pub fn reset(&mut self, now_ns: i64) {
        let version = self.version;
        let history = std::mem::take(&mut self.history);
        *self = Baseline::new(&self.workload, self.partition, now_ns);
        self.version = version;
        self.history = history;
        self.change(now_ns, "reset by operator".into());
    }

    /// Approximate bytes the baseline takes in memory.
    pub fn approx_bytes(&self) -> usize {
        let features: usize = self
            .features
            .values()
            .flat_map(|m| m.iter())
            .map(|(k, s)| k.len() + 96 + 4 * (s.replicas.len() + s.hosts.len()))
            .sum();
        let resources: usize = self.resources.values().map(|m| m.samples.len() * 8 + 48).sum();
        size_of::<Baseline>()
            + features
            + resources
            + self.replicas.keys().map(|k| k.len() + 80).sum::<usize>()
            + self.hosts.iter().map(|h| h.len() + 24).sum::<usize>()
            + self.history.iter().map(|c| c.what.len() + 40).sum::<usize>()
    }
}

/// The first 12 characters of an id, for messages.
pub fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn rules() -> Rules {
        Rules {
            min_learning_ns: 10 * S,
            min_events: 5,
            max_novelty: 0.2,
            novelty_window_ns: 5 * S,
        }
    }

    #[test]
    fn learns_then_stabilizes_then_only_counts() {
        let r = rules();
        let mut b = Baseline::new("w", 0, 0);
        let a = b.replica("c1", "h1", 0);
        let f = Feature::new(Phase::Steady, Kind::Exec, "/app");
        assert!(b.learn(&f, 1, a, 0));
        let v = b.version;
        assert!(!b.learn(&f, 1, a, S));
        assert_eq!(b.version, v, "counting a known feature is not a change");
        for t in 0..20 {
            b.count_event(t * S, &r);
        }
        // Window [0,5) had one new feature in 5 events; later windows none.
        assert!(b.maybe_stabilize(20 * S, &r));
        assert_eq!(b.state, State::Stable);
        assert!(b.version > v);
        let g = Feature::new(Phase::Steady, Kind::Exec, "/tmp/x");
        assert!(!b.learn(&g, 1, a, 21 * S), "stable: new features are not learned");
        assert!(b.get(Phase::Steady, Kind::Exec, "/tmp/x").is_none());
        assert!(!b.learn(&f, 1, a, 21 * S));
        assert_eq!(b.get(Phase::Steady, Kind::Exec, "/app").unwrap().count, 3);
    }

    #[test]
    fn does_not_stabilize_early_or_while_novel() {
        let r = rules();
        let mut b = Baseline::new("w", 0, 0);
        let a = b.replica("c1", "h1", 0);
        for t in 0..30 {
            b.count_event(t * S, &r);
            b.learn(
                &Feature::new(Phase::Steady, Kind::Exec, format!("/bin/{t}")),
                1,
                a,
                t * S,
            );
            assert!(!b.maybe_stabilize(t * S, &r), "every event novel at {t}");
        }
        let mut fresh = Baseline::new("w", 0, 0);
        for t in 0..20 {
            fresh.count_event(t, &r);
        }
        assert!(!fresh.maybe_stabilize(S, &r), "too early");
    }

    #[test]
    fn a_new_image_relearns_from_the_previous_baseline() {
        let r = rules();
        let mut b = Baseline::new("w", 0, 0);
        let a = b.replica("c1", "h1", 0);
        b.see_image("sha256:aaaaaaaaaaaaaaaa", 0);
        b.learn(&Feature::new(Phase::Steady, Kind::Exec, "/app"), 1, a, 0);
        for t in 0..20 {
            b.count_event(t * S, &r);
        }
        assert!(b.maybe_stabilize(20 * S, &r));
        let before = b.version;
        assert!(b.see_image("sha256:bbbbbbbbbbbbbbbb", 21 * S));
        assert_eq!(b.state, State::Learning);
        assert!(b.get(Phase::Steady, Kind::Exec, "/app").is_some(), "inherited");
        let last = b.history.back().unwrap();
        assert!(last.what.contains(&format!("from version {before}")), "{last:?}");
        assert!(!b.see_image("sha256:bbbbbbbbbbbbbbbb", 22 * S));
    }

    #[test]
    fn replicas_and_hosts_are_counted_per_feature() {
        let mut b = Baseline::new("w", 0, 0);
        let f = Feature::new(Phase::Steady, Kind::Connect, "443/public");
        for (c, h) in [("c1", "h1"), ("c2", "h1"), ("c3", "h2"), ("c1", "h1")] {
            let by = b.replica(c, h, 0);
            b.learn(&f, 1, by, 0);
        }
        let s = b.get(Phase::Steady, Kind::Connect, "443/public").unwrap();
        assert_eq!((s.count, s.replica_count(), s.host_count()), (4, 3, 2));
        assert!(!s.only_replica(0));
        assert_eq!(b.peers(0, 0, 0), 2);
    }

    #[test]
    fn snapshots_round_trip_and_reset_keeps_the_version_sequence() {
        let mut b = Baseline::new("w", 2, 0);
        let a = b.replica("c1", "h1", 0);
        b.learn(&Feature::new(Phase::ExecIn, Kind::Shell, "/bin/sh"), 2, a, 0);
        b.sample(ResourceMetric::Cpu, 0.5);
        let json = serde_json::to_string(&b).unwrap();
        let back: Baseline = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        let v = b.version;
        b.reset(5);
        assert!(b.version > v && b.features.is_empty() && b.partition == 2);
        assert!(b.history.iter().any(|c| c.what == "reset by operator"));
    }

    #[test]
    fn robust_statistics() {
        let mut m = Metric::default();
        for v in [1.0, 2.0, 3.0, 4.0, 100.0] {
            m.push(v);
        }
        assert_eq!(m.median_mad(), Some((3.0, 1.0)));
        for _ in 0..RESERVOIR {
            m.push(7.0);
        }
        assert_eq!(m.samples.len(), RESERVOIR);
        assert_eq!(m.median_mad(), Some((7.0, 0.0)));
    }
}
