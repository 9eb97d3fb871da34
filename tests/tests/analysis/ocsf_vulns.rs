//! Vulnerability findings (OCSF Vulnerability Finding, class 2002: opened,
//! updated, resolved) and untrusted images (Compliance Finding, class 2003)
//! validate against the official OCSF 1.8 schema, with hostile package and
//! container strings coming back unchanged after JSON parsing.

use glasshouse_analyzer::vulns::matcher::{Matcher, Output};
use glasshouse_analyzer::vulns::osv::Advisory;
use glasshouse_analyzer::vulns::trust::Policy;
use glasshouse_proto::inventory;
use glasshouse_proto::record::Attribution;

const HOSTILE: &str = "evil\n<1>Jan 1 00:00:00 forged: \u{1b}[31mred\u{202e}\"]\\|CEF:0|\0";

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(glasshouse_tests::manifest_dir().join("fixtures/osv").join(rel)).unwrap()
}

fn row(packages: Vec<inventory::Package>) -> inventory::Row {
    inventory::Row {
        attribution: Attribution {
            boot_id: 1,
            batch_seq: 1,
            container_id: Some("41ee3b278ccc".into()),
            container_name: Some(HOSTILE.into()),
            image: Some(format!("localhost/untrusted:{}", "1").into()),
            image_id: Some("sha256:3c44".into()),
            workload_id: "localhost/untrusted".into(),
            ..Attribution::host("host-a".into(), "host-a".into())
        },
        image_digest: Some(format!("sha256:{}", "c".repeat(64)).into()),
        time_unix_ns: 1,
        distro: Some("Debian:12".into()),
        packages,
        errors: vec![],
    }
}

fn package(eco: &str, name: &str, version: &str, location: &str) -> inventory::Package {
    inventory::Package {
        ecosystem: eco.into(),
        name: name.into(),
        version: version.into(),
        source_name: Some("openssl".into()),
        location: location.into(),
    }
}

#[test]
fn vulnerability_and_image_trust_findings_validate() -> anyhow::Result<()> {
    let mut m = Matcher::new(Policy {
        trusted_registries: vec!["quay.io".into()],
        ..Policy::default()
    });
    for f in [
        "debian/DSA-5532-1.json",
        "alpine/ALPINE-CVE-2023-5678.json",
        "pypi/GHSA-j8r2-6x86-q33q.json",
        "npm/GHSA-xvch-5gv4-984h.json",
    ] {
        m.advisories.upsert(Advisory::parse(&fixture(f))?);
    }
    let t0 = 1_764_000_000_000_000_000;
    let hostile_path = format!("/var/lib/dpkg/{HOSTILE}");
    let mut outputs = m.inventory(
        row(vec![
            package("Debian:12", "libssl3", "3.0.11-1~deb12u1", &hostile_path),
            package("Alpine:v3.18", "libcrypto3", "3.1.4-r0", "/lib/apk/db/installed"),
            package(
                "PyPI",
                "requests",
                "2.28.1",
                "/usr/lib/python3/dist-packages/requests-2.28.1.dist-info/METADATA",
            ),
            package("npm", "minimist", "1.2.5", "/app/package-lock.json"),
        ]),
        0,
        t0,
    );
    // An update (a new installed version, still affected) and a resolution.
    outputs.extend(m.inventory(
        row(vec![
            package("Debian:12", "libssl3", "3.0.11-1~deb12u1", &hostile_path),
            package("Alpine:v3.18", "libcrypto3", "3.1.4-r0", "/lib/apk/db/installed"),
            package("PyPI", "requests", "2.30.0", "/x/METADATA"),
        ]),
        0,
        t0 + 1_000_000_000,
    ));
    let docs: Vec<String> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Alert { json, .. } => Some(json.clone()),
            Output::Row { .. } => None,
        })
        .collect();
    let classes: Vec<(u64, u64)> = docs
        .iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            (v["class_uid"].as_u64().unwrap(), v["activity_id"].as_u64().unwrap())
        })
        .collect();
    // Trust finding; four opened; requests updated; minimist resolved.
    let count = |c: (u64, u64)| classes.iter().filter(|x| **x == c).count();
    assert_eq!(count((2003, 1)), 1, "{classes:?}");
    assert_eq!(count((2002, 1)), 4, "{classes:?}");
    assert_eq!(count((2002, 2)), 1, "{classes:?}");
    assert_eq!(count((2002, 3)), 1, "{classes:?}");
    glasshouse_tests::validate_ocsf(&docs)?;
    // Hostile strings survive JSON unchanged, and nothing raw leaks a newline.
    let debian: serde_json::Value = docs
        .iter()
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .find(|v| v["vulnerabilities"][0]["affected_packages"][0]["name"] == "libssl3")
        .unwrap();
    assert_eq!(
        debian["vulnerabilities"][0]["affected_packages"][0]["path"],
        hostile_path.as_str()
    );
    assert_eq!(debian["resources"][0]["name"], HOSTILE);
    assert_eq!(debian["vulnerabilities"][0]["cve"]["uid"], "CVE-2023-5363");
    assert_eq!(
        debian["vulnerabilities"][0]["affected_packages"][0]["fixed_in_version"],
        "3.0.11-1~deb12u2"
    );
    // The validator rejects what the schema forbids (it can fail).
    let mut bad = debian.clone();
    bad["vulnerabilities"][0]["affected_packages"][0]
        .as_object_mut()
        .unwrap()
        .remove("version");
    assert!(glasshouse_tests::validate_ocsf(&[bad.to_string()]).is_err());
    Ok(())
}
