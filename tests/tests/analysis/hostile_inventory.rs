//! Hostile input against the vulnerability path's decoders, property tests
//! from mutated valid inputs (bytes overwritten, inserted, removed,
//! truncated) and random strings: an error or a result, never a panic.
//!
//! - the analyzer's reading of `glasshouse.inventory` Arrow IPC messages;
//! - the agent's package database parsers (rpm sqlite through the SQLite
//!   reader, dpkg status, apk installed, npm lockfiles, rpm header blobs);
//! - OSV advisory parsing and matching;
//! - version comparison in every scheme, which must also be antisymmetric
//!   (`a < b` exactly when `b > a`) and reflexive for every version it parses.

use glasshouse_agent::inventory as agent_inventory;
use glasshouse_analyzer::vulns::osv::Advisory;
use glasshouse_analyzer::vulns::version::Scheme;
use glasshouse_proto::record::Attribution;
use glasshouse_proto::{inventory, ipc};
use proptest::prelude::*;

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(glasshouse_tests::manifest_dir().join("fixtures").join(rel)).expect("fixture")
}

/// Up to `n` byte edits of `bytes`.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, kind, value) in edits {
        if bytes.is_empty() {
            bytes.push(value);
            continue;
        }
        let i = at % bytes.len();
        match kind % 4 {
            0 => bytes[i] = value,
            1 => bytes.insert(i, value),
            2 => {
                bytes.remove(i);
            }
            _ => bytes.truncate(i),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)
}

fn inventory_message() -> Vec<u8> {
    let mut b = inventory::Builder::default();
    b.append(&inventory::Row {
        attribution: Attribution {
            agent_id: "a".into(),
            boot_id: 1,
            batch_seq: 1,
            host: "h".into(),
            container_id: Some("c".into()),
            image: Some("i".into()),
            workload_id: "w".into(),
            ..Default::default()
        },
        image_digest: Some("sha256:00".into()),
        time_unix_ns: 1,
        distro: Some("Debian:12".into()),
        packages: vec![inventory::Package {
            ecosystem: "Debian:12".into(),
            name: "libssl3".into(),
            version: "3.0.11-1".into(),
            source_name: Some("openssl".into()),
            location: "/var/lib/dpkg/status".into(),
        }],
        errors: vec!["e".into()],
    });
    ipc::encode(&b.finish()).expect("encode")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn inventory_messages_are_read_or_refused(e in edits()) {
        if let Ok(batch) = ipc::decode(&mutate(inventory_message(), &e)) {
            let _ = inventory::read_rows(&batch);
        }
    }

    #[test]
    fn package_databases_are_parsed_or_refused(which in 0usize..4, e in edits()) {
        let (name, bytes) = [
            ("rpm/rpmdb.sqlite", fixture("rpm/rpmdb.sqlite")),
            ("dpkg/status", fixture("dpkg/status")),
            ("apk/installed", fixture("apk/installed")),
            ("npm", br#"{"packages":{"node_modules/minimist":{"version":"1.2.5"}}}"#.to_vec()),
        ][which].clone();
        let bytes = mutate(bytes, &e);
        let text = String::from_utf8_lossy(&bytes);
        match name {
            "rpm/rpmdb.sqlite" => {
                let _ = agent_inventory::parse_rpm_sqlite(&bytes, "AlmaLinux:9");
                let _ = agent_inventory::rpm_header(&bytes, "AlmaLinux:9");
            }
            "dpkg/status" => { let _ = agent_inventory::parse_dpkg(&text, "Debian:12"); }
            "apk/installed" => { let _ = agent_inventory::parse_apk(&text, "Alpine:v3.18"); }
            _ => { let _ = agent_inventory::parse_npm_lock(&bytes, "/app/package-lock.json"); }
        }
    }

    #[test]
    fn advisories_are_parsed_or_refused_and_match_without_panics(which in 0usize..3, e in edits(), v in "[0-9a-z.:~^_+-]{0,16}") {
        let file = ["debian/DSA-5532-1.json", "alpine/ALPINE-CVE-2023-5678.json", "npm/GHSA-xvch-5gv4-984h.json"][which];
        if let Ok(a) = Advisory::parse(&mutate(fixture(&format!("osv/{file}")), &e)) {
            let mut bad = 0;
            for eco in ["Debian:12", "Alpine:v3.18", "npm"] {
                for p in &a.affected {
                    let _ = a.affects(eco, &p.package.name, &v, &mut bad);
                }
            }
            let _ = a.severity();
        }
    }

    #[test]
    fn versions_compare_antisymmetrically(a in "[0-9a-z.:~^_+-]{0,12}", b in "[0-9a-z.:~^_+-]{0,12}") {
        for scheme in [Scheme::Dpkg, Scheme::Apk, Scheme::Pep440, Scheme::Semver, Scheme::Rpm] {
            if let (Ok(x), Ok(y)) = (scheme.compare(&a, &b), scheme.compare(&b, &a)) {
                prop_assert_eq!(x, y.reverse(), "{} {} vs {}", scheme.name(), a, b);
                prop_assert_eq!(scheme.compare(&a, &a).ok(), Some(std::cmp::Ordering::Equal));
            }
        }
    }
}
