//! Vulnerability assessment costs, printed (no timed assertions):
//!
//! - inventory: reading this host's own package databases through
//!   `RootFs` (`/` as the root: its real dpkg status and Python packages),
//!   per scan;
//! - matching: a fleet of synthetic containers (each 400 dpkg packages, a
//!   quarter of them named in advisories, one in 25 of those older than the
//!   fix) against synthetic Debian advisories; the time per inventory, and
//!   to evaluate every container again (what an advisory import costs).
//!
//! `cargo bench -p glasshouse-tests --bench vulns`; `cargo test --benches`
//! runs it in smoke mode (`glasshouse_tests::bench`). Each figure is min /
//! median / max over several runs, with the machine's load.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use glasshouse_agent::inventory::{Settings, scan};
use glasshouse_agent::rootfs::RootFs;
use glasshouse_analyzer::vulns::matcher::Matcher;
use glasshouse_analyzer::vulns::osv::Advisory;
use glasshouse_proto::inventory;
use glasshouse_proto::record::Attribution;
use glasshouse_tests::bench::{self, Load, Spread};

fn advisory(i: usize) -> Advisory {
    let json = format!(
        r#"{{"id":"DSA-{i}-1","modified":"2024-01-01T00:00:00Z","related":["CVE-2024-{i}"],
            "affected":[{{"package":{{"ecosystem":"Debian:12","name":"pkg{}"}},
            "ranges":[{{"type":"ECOSYSTEM","events":[{{"introduced":"0"}},{{"fixed":"1.{}-1"}}]}}]}}]}}"#,
        i % 1600,
        i % 7
    );
    Advisory::parse(json.as_bytes()).expect("synthetic advisory")
}

fn container(c: usize) -> inventory::Row {
    inventory::Row {
        attribution: Attribution {
            agent_id: "a".into(),
            boot_id: 1,
            batch_seq: 1,
            host: "h".into(),
            container_id: Some(format!("{c:064x}").into()),
            image: Some(format!("localhost/app{}:1", c % 50).into()),
            workload_id: format!("localhost/app{}", c % 50).into(),
            ..Default::default()
        },
        image_digest: None,
        time_unix_ns: 1,
        distro: Some("Debian:12".into()),
        packages: (0..400)
            .map(|p| inventory::Package {
                ecosystem: "Debian:12".into(),
                name: format!("pkg{}", (p * 4 + c) % 6400).into(),
                // One package in 25 older than every fix, the rest newer.
                version: if (p + c).is_multiple_of(25) { "0.9-1" } else { "2.0-1" }.into(),
                source_name: None,
                location: "/var/lib/dpkg/status".into(),
            })
            .collect(),
        errors: vec![],
    }
}

fn main() {
    bench::banner("vulns");
    let rounds = bench::size(5, 1);
    // Inventory of this host's root.
    let root = RootFs::open_dir(Path::new("/")).expect("open /");
    let settings = Settings {
        interval: Duration::from_secs(60),
        resend: Duration::from_secs(3600),
        npm_lockfiles: vec![PathBuf::from("/app/package-lock.json")],
        proc_root: PathBuf::from("/proc"),
    };
    let runs = bench::size(20, 2);
    let load = Load::start();
    let mut packages = 0;
    let (mut scans, mut fingerprints) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        packages = scan(&root, &settings).packages.len();
        scans.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        std::hint::black_box(glasshouse_agent::inventory::fingerprint(&root, &settings));
        fingerprints.push(started.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "inventory of this host's root, {runs} runs (min / median / max): {packages} packages in {:.2} ms per scan; \
         change check (fingerprint) {:.3} ms",
        Spread::of(&scans).expect("runs"),
        Spread::of(&fingerprints).expect("runs")
    );
    println!("  while it ran: {}", load.report());

    // Matching.
    let sizes = if bench::smoke() {
        vec![(10, 200)]
    } else {
        vec![(100, 2_000), (1_000, 10_000)]
    };
    for (containers, advisories) in sizes {
        let load = Load::start();
        let (mut firsts, mut agains) = (Vec::new(), Vec::new());
        let (mut outputs, mut open, mut again) = (0, 0, 0);
        for _ in 0..rounds {
            let mut m = Matcher::default();
            for i in 0..advisories {
                m.advisories.upsert(advisory(i));
            }
            let started = Instant::now();
            outputs = 0;
            for c in 0..containers {
                outputs += m.inventory(container(c), 0, 1).len();
            }
            firsts.push(started.elapsed().as_secs_f64() * 1e3 / containers as f64);
            // Re-evaluation of every container with nothing changed (an
            // import of advisories that match nothing new).
            let started = Instant::now();
            again = m.reevaluate_all(2).len();
            agains.push(started.elapsed().as_secs_f64() * 1e3);
            open = m.open().count();
        }
        println!(
            "matching {containers} containers x 400 packages against {advisories} advisories, {rounds} rounds \
             (min / median / max): first inventories {:.3} ms per container ({outputs} outputs, open {open}), \
             re-evaluating all {:.1} ms ({again} outputs)",
            Spread::of(&firsts).expect("rounds"),
            Spread::of(&agains).expect("rounds"),
        );
        println!("  while it ran: {}", load.report());
    }
}
