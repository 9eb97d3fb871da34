//! Continuous matching: the installed packages of every container this
//! instance owns, against every advisory imported. A container is evaluated
//! again whenever its inventory arrives (it replaces the previous one) and
//! whenever advisories change; each evaluation is diffed against the
//! container's findings, so only changes come out: a finding **opened**
//! (an advisory now matches an installed version), **updated** (its fixed
//! version or severity changed), **resolved** (the package was upgraded or
//! removed, or the advisory withdrawn or no longer matching), and a container
//! forgotten (no inventory for `container_ttl`: its rows are deleted).
//!
//! Debian and Alpine advisories name source packages, so a binary package
//! is matched under its own name and under its source package's (dpkg
//! `Source:`, apk origin).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use glasshouse_proto::inventory;

pub use crate::vulns::finding::{State, Vulnerability, finding_key};
use crate::vulns::ocsf;
use crate::vulns::osv::{self, Advisory};
use crate::vulns::trust::Policy;

/// Advisories by id, indexed by (ecosystem without release, package key).
#[derive(Debug, Default)]
pub struct AdvisoryStore {
    by_id: HashMap<String, Arc<Advisory>>,
    index: HashMap<(String, String), BTreeSet<String>>,
}

impl AdvisoryStore {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Adds or replaces an advisory; `true` when that changed anything.
    pub fn upsert(&mut self, a: Advisory) -> bool {
        if self.by_id.get(&a.id).is_some_and(|old| **old == a) {
            return false;
        }
        self.remove(&a.id.clone());
        for (eco, key) in a.packages() {
            self.index
                .entry((eco.to_owned(), key))
                .or_default()
                .insert(a.id.clone());
        }
        self.by_id.insert(a.id.clone(), Arc::new(a));
        true
    }

    /// Forgets an advisory; `true` when it was known.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(old) = self.by_id.remove(id) else {
            return false;
        };
        for (eco, key) in old.packages() {
            if let Some(ids) = self.index.get_mut(&(eco.to_owned(), key.clone())) {
                ids.remove(id);
                if ids.is_empty() {
                    self.index.remove(&(eco.to_owned(), key));
                }
            }
        }
        true
    }

    fn candidates(&self, ecosystem: &str, name: &str) -> impl Iterator<Item = &Arc<Advisory>> {
        let base = ecosystem.split(':').next().unwrap_or_default().to_owned();
        self.index
            .get(&(base, osv::package_key(ecosystem, name)))
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }
}

/// What an evaluation produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A row of `glasshouse.vulnerabilities` (`None`: a tombstone).
    Row { key: String, json: Option<String> },
    /// An alert (OCSF JSON) for `glasshouse.alerts`, keyed by workload.
    Alert { workload: String, json: String },
}

/// Counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub inventories: u64,
    pub opened: u64,
    pub resolved: u64,
    pub untrusted: u64,
    pub unparsable_versions: u64,
    pub evaluations: u64,
}

#[derive(Debug)]
struct Tracked {
    /// The inventory topic partition the container's inventories arrive on.
    partition: i32,
    row: inventory::Row,
    last_seen_ns: i64,
    findings: BTreeMap<String, Vulnerability>,
    untrusted: Option<String>,
    /// Findings were taken over from before a restart and the inventory
    /// partition is still being replayed: inventories are kept, not
    /// evaluated, until [`Matcher::replayed`] says the partition is read
    /// to its end (then the latest inventory is evaluated against the
    /// taken-over findings, so only real changes come out).
    replaying: bool,
}

/// Containers, their findings and the advisories.
#[derive(Debug, Default)]
pub struct Matcher {
    pub advisories: AdvisoryStore,
    containers: HashMap<String, Tracked>,
    /// Findings as published before this instance started (read back from
    /// `glasshouse.vulnerabilities`), by container: taken over when the
    /// container's first inventory arrives, so a restart neither alerts
    /// again nor forgets when a finding was first seen.
    restored: HashMap<String, BTreeMap<String, Vulnerability>>,
    policy: Policy,
    pub stats: Stats,
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

impl Matcher {
    pub fn new(policy: Policy) -> Matcher {
        Matcher {
            policy,
            ..Matcher::default()
        }
    }

    pub fn containers(&self) -> usize {
        self.containers.len()
    }

    /// Findings published earlier (see `restored`).
    pub fn restore(&mut self, rows: impl IntoIterator<Item = Vulnerability>) {
        for v in rows {
            self.restored
                .entry(v.container_id.clone())
                .or_default()
                .insert(v.key.clone(), v);
        }
    }

    /// Forgets the containers of partitions this instance no longer owns
    /// (their new owner takes them over), without publishing anything.
    pub fn revoked(&mut self, partitions: &[i32]) {
        self.containers.retain(|_, t| !partitions.contains(&t.partition));
    }

    /// A container's inventory arrived (from `partition` of the inventory
    /// topic): it replaces the previous one.
    pub fn inventory(&mut self, row: inventory::Row, partition: i32, now_ns: i64) -> Vec<Output> {
        self.stats.inventories += 1;
        let id = row.attribution.container().to_owned();
        let mut out = Vec::new();
        let untrusted = self
            .policy
            .check(row.attribution.image.as_deref(), row.image_digest.as_deref())
            .map(|u| u.reason);
        let restored = &mut self.restored;
        let tracked = self.containers.entry(id.clone()).or_insert_with(|| {
            let findings = restored.remove(&id).unwrap_or_default();
            Tracked {
                partition,
                row: row.clone(),
                last_seen_ns: now_ns,
                replaying: !findings.is_empty(),
                findings,
                untrusted: None,
            }
        });
        tracked.partition = partition;
        if tracked.replaying {
            tracked.untrusted = untrusted;
            tracked.row = row;
            tracked.last_seen_ns = now_ns;
            return out;
        }
        // Alert once per container and reason (again when the image changed).
        if let Some(reason) = &untrusted
            && tracked.untrusted.as_ref() != Some(reason)
        {
            self.stats.untrusted += 1;
            out.push(Output::Alert {
                workload: row.attribution.workload_id.to_string(),
                json: ocsf::untrusted_image(&row, reason, now_ns),
            });
        }
        tracked.untrusted = untrusted;
        tracked.row = row;
        tracked.last_seen_ns = now_ns;
        out.extend(self.evaluate(&id, now_ns, true));
        out
    }

    /// Partition `partition` of the inventory topic is read to its end:
    /// its containers' latest inventories are evaluated against the
    /// findings taken over from before the restart.
    pub fn replayed(&mut self, partition: i32, now_ns: i64) -> Vec<Output> {
        let ids: Vec<String> = self
            .containers
            .iter_mut()
            .filter(|(_, t)| t.partition == partition && t.replaying)
            .map(|(id, t)| {
                t.replaying = false;
                id.clone()
            })
            .collect();
        ids.iter().flat_map(|id| self.evaluate(id, now_ns, true)).collect()
    }

    /// Advisories changed: every container is evaluated again (those still
    /// replaying once their partition is read: [`Matcher::replayed`]).
    pub fn reevaluate_all(&mut self, now_ns: i64) -> Vec<Output> {
        let ids: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, t)| !t.replaying)
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter().flat_map(|id| self.evaluate(id, now_ns, false)).collect()
    }

    /// Forgets containers without an inventory for `ttl_ns`: their rows
    /// are deleted (tombstones). Restored findings of containers that sent
    /// no inventory for as long are dropped from memory (whoever owns them
    /// deletes their rows).
    pub fn expire(&mut self, now_ns: i64, ttl_ns: i64) -> Vec<Output> {
        self.restored.retain(|_, findings| {
            findings
                .values()
                .any(|v| now_ns.div_euclid(1_000_000).saturating_sub(v.last_seen_ms) <= ttl_ns.div_euclid(1_000_000))
        });
        let gone: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, t)| now_ns.saturating_sub(t.last_seen_ns) > ttl_ns)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in gone {
            if let Some(t) = self.containers.remove(&id) {
                out.extend(t.findings.into_keys().map(|key| Output::Row { key, json: None }));
            }
        }
        out
    }

    /// The open findings of every container (for the live endpoint).
    pub fn open(&self) -> impl Iterator<Item = &Vulnerability> {
        self.containers
            .values()
            .flat_map(|t| t.findings.values())
            .filter(|v| v.state == State::Open)
    }

    /// Evaluates one container; with `refresh` (its inventory arrived) the
    /// rows of unchanged open findings are published again with a new
    /// `last_seen`, otherwise (advisories changed) only changes come out,
    /// so an import costs Kafka writes only for what it changed.
    fn evaluate(&mut self, id: &str, now_ns: i64, refresh: bool) -> Vec<Output> {
        self.stats.evaluations += 1;
        let Some(t) = self.containers.get(id) else {
            return Vec::new();
        };
        let row = &t.row;
        // Every (key → package, advisory, fixed) that matches now.
        let mut now: BTreeMap<String, (&inventory::Package, Arc<Advisory>, Option<String>)> = BTreeMap::new();
        let mut unparsable = 0;
        for p in &row.packages {
            let names = std::iter::once(&*p.name).chain(p.source_name.as_deref());
            for name in names {
                for a in self.advisories.candidates(&p.ecosystem, name) {
                    if let Some(hit) = a.affects(&p.ecosystem, name, &p.version, &mut unparsable) {
                        let key = finding_key(id, &p.ecosystem, &p.name, &a.id);
                        now.entry(key).or_insert((p, a.clone(), hit.fixed));
                    }
                }
            }
        }
        self.stats.unparsable_versions += unparsable;
        let mut out = Vec::new();
        let mut updated: Vec<Vulnerability> = Vec::new();
        for (key, (p, a, fixed)) in &now {
            let previous = t.findings.get(key);
            let severity = a.severity();
            let v = Vulnerability {
                key: key.clone(),
                state: State::Open,
                container_id: row.attribution.container().to_owned(),
                container_name: row.attribution.container_name.as_deref().map(str::to_owned),
                workload_id: row.attribution.workload_id.to_string(),
                host: row.attribution.host.to_string(),
                image: row.attribution.image.as_deref().map(str::to_owned),
                image_id: row.attribution.image_id.as_deref().map(str::to_owned),
                image_digest: row.image_digest.as_deref().map(str::to_owned),
                ecosystem: p.ecosystem.to_string(),
                package: p.name.to_string(),
                source_package: p.source_name.as_deref().map(str::to_owned),
                installed_version: p.version.to_string(),
                location: p.location.to_string(),
                advisory_id: a.id.clone(),
                aliases: a.all_aliases(),
                cves: a.cves(),
                summary: a.summary.clone(),
                severity: severity.as_str().to_owned(),
                cvss_score: a.cvss_score().map(|(s, _)| s),
                fixed_version: fixed.clone(),
                first_seen: previous.map_or_else(|| crate::view::timestamp(now_ns), |v| v.first_seen.clone()),
                first_seen_ms: previous.map_or(ms(now_ns), |v| v.first_seen_ms),
                last_seen: crate::view::timestamp(now_ns),
                last_seen_ms: ms(now_ns),
                resolved_at: None,
            };
            let activity = match previous {
                Some(prev) if prev.state == State::Open => {
                    let same = prev.fixed_version == v.fixed_version
                        && prev.severity == v.severity
                        && prev.installed_version == v.installed_version;
                    (!same).then_some(ocsf::Activity::Update)
                }
                _ => Some(ocsf::Activity::Create),
            };
            if activity.is_none() && !refresh {
                // Unchanged, and no new inventory to vouch for it: as it was.
                continue;
            }
            if let Some(activity) = activity {
                if activity == ocsf::Activity::Create {
                    self.stats.opened += 1;
                }
                out.push(Output::Alert {
                    workload: v.workload_id.clone(),
                    json: ocsf::vulnerability_finding(&v, a, activity, now_ns),
                });
            }
            out.push(Output::Row {
                key: key.clone(),
                json: Some(serde_json::to_string(&v).unwrap_or_default()),
            });
            updated.push(v);
        }
        // Open findings that no longer match: resolved.
        let mut resolved: Vec<Vulnerability> = Vec::new();
        for (key, prev) in &t.findings {
            if prev.state == State::Open && !now.contains_key(key) {
                let mut v = prev.clone();
                v.state = State::Resolved;
                v.resolved_at = Some(crate::view::timestamp(now_ns));
                v.last_seen = crate::view::timestamp(now_ns);
                v.last_seen_ms = ms(now_ns);
                let advisory = self.advisories.by_id.get(&v.advisory_id).cloned();
                out.push(Output::Alert {
                    workload: v.workload_id.clone(),
                    json: ocsf::vulnerability_resolved(&v, advisory.as_deref(), now_ns),
                });
                out.push(Output::Row {
                    key: key.clone(),
                    json: Some(serde_json::to_string(&v).unwrap_or_default()),
                });
                resolved.push(v);
            }
        }
        self.stats.resolved += resolved.len() as u64;
        let t = self.containers.get_mut(id).expect("looked up above");
        for v in updated.into_iter().chain(resolved) {
            t.findings.insert(v.key.clone(), v);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vulns::osv::tests::fixture;
    use glasshouse_proto::record::Attribution;

    fn package(eco: &str, name: &str, version: &str, source: Option<&str>) -> inventory::Package {
        inventory::Package {
            ecosystem: eco.into(),
            name: name.into(),
            version: version.into(),
            source_name: source.map(Into::into),
            location: "/var/lib/dpkg/status".into(),
        }
    }

    fn row(id: &str, packages: Vec<inventory::Package>) -> inventory::Row {
        inventory::Row {
            attribution: Attribution {
                boot_id: 1,
                batch_seq: 1,
                container_id: Some(id.into()),
                container_name: Some("web-1".into()),
                image: Some("localhost/app:1".into()),
                image_id: Some("sha256:3c44".into()),
                workload_id: "localhost/app".into(),
                ..Attribution::host("h".into(), "h".into())
            },
            image_digest: Some(format!("sha256:{}", "b".repeat(64)).into()),
            time_unix_ns: 1,
            distro: Some("Debian:12".into()),
            packages,
            errors: vec![],
        }
    }

    fn rows(out: &[Output]) -> Vec<Vulnerability> {
        out.iter()
            .filter_map(|o| match o {
                Output::Row { json: Some(j), .. } => Some(serde_json::from_str(j).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn alerts(out: &[Output]) -> Vec<serde_json::Value> {
        out.iter()
            .filter_map(|o| match o {
                Output::Alert { json, .. } => Some(serde_json::from_str(json).unwrap()),
                _ => None,
            })
            .collect()
    }

    const T0: i64 = 1_764_000_000_000_000_000;

    #[test]
    fn open_update_resolve_and_reevaluate_on_new_advisories() {
        let mut m = Matcher::default();
        m.advisories
            .upsert(Advisory::parse(&fixture("debian/DSA-5417-1.json")).unwrap());
        let libssl = package("Debian:12", "libssl3", "3.0.11-1~deb12u1", Some("openssl"));
        // The old advisory is fixed in the installed version: nothing.
        let out = m.inventory(row("c1", vec![libssl.clone()]), 0, T0);
        assert!(out.is_empty(), "{out:?}");

        // A new advisory is imported: the container is evaluated again.
        assert!(
            m.advisories
                .upsert(Advisory::parse(&fixture("debian/DSA-5532-1.json")).unwrap())
        );
        let out = m.reevaluate_all(T0 + 1_000_000_000);
        let r = rows(&out);
        assert_eq!(r.len(), 1);
        let v = &r[0];
        assert_eq!(
            (
                v.state,
                v.package.as_str(),
                v.source_package.as_deref(),
                v.advisory_id.as_str()
            ),
            (State::Open, "libssl3", Some("openssl"), "DSA-5532-1")
        );
        assert_eq!(v.fixed_version.as_deref(), Some("3.0.11-1~deb12u2"));
        assert_eq!(v.cves, ["CVE-2023-5363", "CVE-2023-5678"]);
        assert_eq!(v.key, r#"["c1","Debian:12","libssl3","DSA-5532-1"]"#);
        let a = alerts(&out);
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0]["class_uid"].as_u64(), a[0]["activity_id"].as_u64()),
            (Some(2002), Some(1))
        );
        assert_eq!(m.stats.opened, 1);
        // Advisories changed again, nothing new for this container: no output.
        assert!(m.reevaluate_all(T0 + 2_000_000_000).is_empty());

        // The same again: no alert, the row's last_seen moves, first_seen stays.
        let out = m.inventory(row("c1", vec![libssl.clone()]), 0, T0 + 5_000_000_000);
        assert!(alerts(&out).is_empty());
        let again = rows(&out);
        assert_eq!(again[0].first_seen_ms, v.first_seen_ms);
        assert!(again[0].last_seen_ms > v.last_seen_ms);

        // Upgraded past the fix: resolved, once.
        let fixed = package("Debian:12", "libssl3", "3.0.11-1~deb12u2", Some("openssl"));
        let out = m.inventory(row("c1", vec![fixed.clone()]), 0, T0 + 9_000_000_000);
        let r = rows(&out);
        assert_eq!((r.len(), r[0].state), (1, State::Resolved));
        assert!(r[0].resolved_at.is_some());
        let a = alerts(&out);
        assert_eq!(
            (a[0]["activity_id"].as_u64(), a[0]["status_id"].as_u64()),
            (Some(3), Some(4))
        );
        assert!(m.inventory(row("c1", vec![fixed]), 0, T0 + 10_000_000_000).is_empty());
        assert_eq!(m.open().count(), 0);

        // Gone for longer than the TTL: its rows are deleted.
        let out = m.expire(T0 + 100_000_000_000, 10_000_000_000);
        assert_eq!(
            out,
            vec![Output::Row {
                key: v.key.clone(),
                json: None
            }]
        );
        assert_eq!(m.containers(), 0);
    }

    #[test]
    fn a_binary_and_its_source_package_each_get_a_finding() {
        let mut m = Matcher::default();
        for f in ["debian/DSA-5417-1.json", "debian/DSA-5532-1.json"] {
            m.advisories.upsert(Advisory::parse(&fixture(f)).unwrap());
        }
        let out = m.inventory(
            row(
                "c1",
                vec![
                    package("Debian:12", "base-files", "12.4+deb12u4", None),
                    package("Debian:12", "libssl3", "3.0.11-1~deb12u1", Some("openssl")),
                    package("Debian:12", "openssl", "3.0.11-1~deb12u1", None),
                    package("Debian:12", "zlib1g", "1:1.2.13.dfsg-1", Some("zlib")),
                ],
            ),
            0,
            T0,
        );
        let found: Vec<_> = rows(&out).into_iter().map(|v| (v.package, v.advisory_id)).collect();
        assert_eq!(
            found,
            [
                ("libssl3".into(), "DSA-5532-1".into()),
                ("openssl".into(), "DSA-5532-1".into())
            ]
        );
        assert_eq!(alerts(&out).len(), 2);
    }

    #[test]
    fn withdrawn_advisories_resolve_and_other_releases_do_not_match() {
        let mut m = Matcher::default();
        let mut dsa = Advisory::parse(&fixture("debian/DSA-5532-1.json")).unwrap();
        m.advisories.upsert(dsa.clone());
        let bookworm = package("Debian:12", "openssl", "3.0.8-1", None);
        let bullseye = package("Debian:11", "openssl", "3.0.8-1", None);
        let out = m.inventory(row("c1", vec![bookworm, bullseye]), 0, T0);
        assert_eq!(rows(&out).len(), 1);
        dsa.withdrawn = Some("2024-01-01T00:00:00Z".into());
        assert!(m.advisories.upsert(dsa.clone()));
        assert!(!m.advisories.upsert(dsa), "unchanged advisory is no change");
        let out = m.reevaluate_all(T0 + 1);
        assert_eq!(rows(&out)[0].state, State::Resolved);
    }

    #[test]
    fn alpine_pypi_and_npm_packages_match_their_advisories() {
        let mut m = Matcher::default();
        for f in [
            "alpine/ALPINE-CVE-2023-5678.json",
            "pypi/GHSA-j8r2-6x86-q33q.json",
            "npm/GHSA-xvch-5gv4-984h.json",
        ] {
            m.advisories.upsert(Advisory::parse(&fixture(f)).unwrap());
        }
        let out = m.inventory(
            row(
                "c2",
                vec![
                    package("Alpine:v3.18", "libcrypto3", "3.1.4-r0", Some("openssl")),
                    package("Alpine:v3.18", "busybox", "1.36.1-r5", None),
                    package("PyPI", "Requests", "2.28.1", None),
                    package("npm", "minimist", "1.2.6", None),
                ],
            ),
            0,
            T0,
        );
        let mut found: Vec<_> = rows(&out)
            .into_iter()
            .map(|v| (v.package, v.advisory_id, v.severity))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("Requests".into(), "GHSA-j8r2-6x86-q33q".into(), "Medium".into()),
                ("libcrypto3".into(), "ALPINE-CVE-2023-5678".into(), "Unknown".into()),
            ]
        );
    }

    #[test]
    fn rpm_packages_match_by_rpm_version_order() {
        let mut m = Matcher::default();
        m.advisories
            .upsert(Advisory::parse(&fixture("almalinux/ALSA-2024-2447.json")).unwrap());
        let out = m.inventory(
            row(
                "c3",
                vec![
                    package("AlmaLinux:9", "openssl-libs", "1:3.0.7-24.el9", Some("openssl")),
                    package("AlmaLinux:9", "bash", "5.1.8-6.el9_1", None),
                ],
            ),
            0,
            T0,
        );
        let r = rows(&out);
        assert_eq!(r.len(), 1, "{r:#?}");
        assert_eq!(
            (r[0].package.as_str(), r[0].fixed_version.as_deref()),
            ("openssl-libs", Some("1:3.0.7-27.el9"))
        );
        assert_eq!(
            r[0].cves,
            ["CVE-2023-2975", "CVE-2023-3446", "CVE-2023-3817", "CVE-2023-5678"]
        );
        let fixed = m.inventory(
            row(
                "c3",
                vec![package(
                    "AlmaLinux:9",
                    "openssl-libs",
                    "1:3.0.7-27.el9",
                    Some("openssl"),
                )],
            ),
            0,
            T0 + 1,
        );
        assert_eq!(rows(&fixed)[0].state, State::Resolved);
    }

    #[test]
    fn an_untrusted_image_raises_one_finding() {
        let mut m = Matcher::new(Policy {
            trusted_repositories: vec!["localhost/trusted".into()],
            ..Policy::default()
        });
        let out = m.inventory(row("c1", vec![]), 0, T0);
        let a = alerts(&out);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0]["class_uid"].as_u64(), Some(2003));
        assert!(m.inventory(row("c1", vec![]), 0, T0 + 1).is_empty());
        let trusted = inventory::Row {
            attribution: Attribution {
                image: Some("localhost/trusted:2".into()),
                ..row("c9", vec![]).attribution
            },
            ..row("c9", vec![])
        };
        assert!(m.inventory(trusted, 0, T0).is_empty());
        assert_eq!(m.stats.untrusted, 1);
    }

    #[test]
    fn a_restart_takes_over_published_findings_and_revoked_containers_are_dropped() {
        let dsa = Advisory::parse(&fixture("debian/DSA-5532-1.json")).unwrap();
        let libssl = package("Debian:12", "libssl3", "3.0.11-1~deb12u1", Some("openssl"));
        let mut before = Matcher::default();
        before.advisories.upsert(dsa.clone());
        let published = rows(&before.inventory(row("c1", vec![libssl.clone()]), 0, T0));
        // A new instance, with the rows read back: the replayed inventory
        // raises no alert and keeps first_seen.
        let mut after = Matcher::default();
        after.advisories.upsert(dsa);
        after.restore(published.clone());
        // Replayed inventories (an older, vulnerable one too) are history:
        // nothing is published, nor on an advisory change meanwhile.
        let fixed = package("Debian:12", "libssl3", "3.0.11-1~deb12u2", Some("openssl"));
        assert!(
            after
                .inventory(row("c1", vec![fixed]), 2, T0 + 60_000_000_000)
                .is_empty()
        );
        assert!(
            after
                .inventory(row("c1", vec![libssl]), 2, T0 + 60_000_000_000)
                .is_empty()
        );
        assert!(after.reevaluate_all(T0 + 60_000_000_000).is_empty());
        assert!(after.replayed(1, T0 + 60_000_000_000).is_empty(), "another partition");
        // Read to its end: the latest inventory against the taken-over
        // findings; no alert, first_seen kept.
        let out = after.replayed(2, T0 + 61_000_000_000);
        assert!(alerts(&out).is_empty(), "{out:?}");
        assert_eq!(rows(&out)[0].first_seen_ms, published[0].first_seen_ms);
        assert!(after.replayed(2, T0 + 62_000_000_000).is_empty(), "once");
        // Its partition is revoked: forgotten without a word.
        after.revoked(&[1]);
        assert_eq!(after.containers(), 1);
        after.revoked(&[2]);
        assert_eq!(after.containers(), 0);
        // Restored rows of containers that never come back are dropped.
        let mut idle = Matcher::default();
        idle.restore(published);
        assert!(idle.expire(T0 + 20_000_000_000, 10_000_000_000).is_empty());
        assert!(idle.restored.is_empty());
    }

    #[test]
    fn hostile_package_names_cannot_share_a_key() {
        assert_ne!(
            finding_key("c", "npm", "a\",\"b", "X"),
            finding_key("c", "npm\",\"a", "b", "X")
        );
    }
}
