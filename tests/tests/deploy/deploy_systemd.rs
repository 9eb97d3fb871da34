//! The systemd units of `deploy/systemd`: `systemd-analyze verify` accepts
//! each, silently (a unit it has warnings about fails, as a misspelt
//! directive, which systemd only warns about and ignores, proves), their
//! hardening scores stay in systemd's "OK" band, the agent's capability
//! bounding set is the DaemonSet's, and the example configs beside them parse
//! with the binaries' own config types (the analyzer's commented examples of
//! `[analysis]` and `[outputs]` too; the query service's `query.toml` with
//! `glasshouse_lake::query::QueryConfig`, its `[lake]` the analyzers').
//!
//! The units are checked in a scratch root (`--root`) holding the units, the
//! workspace's binaries at their `ExecStart` paths, and copies of this host's
//! systemd units, so nothing is installed on the host.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};
use glasshouse_runtime::service::parse_config;
use glasshouse_tests::deploy::{self, Scratch};
use glasshouse_tests::workspace_binary;

const UNITS: [&str; 4] = [
    "glasshouse-agent.service",
    "glasshouse-aggregator.service",
    "glasshouse-analyzer.service",
    "glasshouse-query.service",
];

/// A scratch root in which the units can be verified.
fn unit_root() -> anyhow::Result<Scratch> {
    let root = Scratch::new("systemd-root")?;
    let bin = root.0.join("usr/bin");
    std::fs::create_dir_all(&bin)?;
    for name in [
        "glasshouse-agent",
        "glasshouse-aggregator",
        "glasshouse-analyzer",
        "glasshouse-query",
    ] {
        let built = workspace_binary(name)?;
        if std::fs::hard_link(&built, bin.join(name)).is_err() {
            std::fs::copy(&built, bin.join(name))?;
        }
    }
    std::fs::create_dir_all(root.0.join("etc/systemd/system"))?;
    for unit in UNITS {
        std::fs::copy(
            deploy::repo_root().join("deploy/systemd").join(unit),
            root.0.join("etc/systemd/system").join(unit),
        )?;
    }
    // sysinit.target, network-online.target, sys-kernel-tracing.mount...:
    // copies of this host's units, links followed (links resolved inside the
    // root would loop).
    let units = root.0.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units)?;
    for entry in std::fs::read_dir("/usr/lib/systemd/system").context("this host's systemd units")? {
        let path = entry?.path();
        if path.is_file()
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, units.join(name))?;
        }
    }
    Ok(root)
}

/// `systemd-analyze verify --root ROOT UNIT`: Ok when it exits 0 and says
/// nothing, else what it said.
fn verify(root: &Path, unit: &str) -> anyhow::Result<Result<(), String>> {
    let out = Command::new(deploy::tool("systemd-analyze")?)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(unit)
        .output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{} {}", out.status, said.trim()))
    })
}

#[test]
fn units_pass_systemd_analyze_verify() -> anyhow::Result<()> {
    let root = unit_root()?;
    for unit in UNITS {
        if let Err(said) = verify(&root.0, unit)? {
            anyhow::bail!("systemd-analyze verify {unit}: {said}");
        }
    }

    // The same check refuses broken units.
    let good = std::fs::read_to_string(deploy::repo_root().join("deploy/systemd/glasshouse-analyzer.service"))?;
    for (what, from, to, expected) in [
        (
            "misspelt directive",
            "NoNewPrivileges=yes",
            "NoNewPrivilege=yes",
            "Unknown key",
        ),
        (
            "bad value",
            "ProtectSystem=strict",
            "ProtectSystem=strictt",
            "Failed to parse",
        ),
        (
            "missing binary",
            "ExecStart=/usr/bin/glasshouse-analyzer",
            "ExecStart=/usr/bin/glasshouse-analyser",
            "is not executable",
        ),
    ] {
        ensure!(good.contains(from), "{from} not in the analyzer unit");
        std::fs::write(root.0.join("etc/systemd/system/broken.service"), good.replace(from, to))?;
        match verify(&root.0, "broken.service")? {
            Ok(()) => anyhow::bail!("{what} accepted"),
            Err(said) => ensure!(said.contains(expected), "{what}: {said}"),
        }
    }
    Ok(())
}

/// `systemd-analyze security --offline`: exposure 0 (locked down) to 10.
#[test]
fn units_are_hardened() -> anyhow::Result<()> {
    let root = unit_root()?;
    for (unit, at_most) in [
        // Root with capabilities, host /proc and cgroups: the agent's job.
        ("glasshouse-agent.service", 4.0),
        ("glasshouse-aggregator.service", 2.0),
        ("glasshouse-analyzer.service", 2.0),
        ("glasshouse-query.service", 2.0),
    ] {
        let out = Command::new(deploy::tool("systemd-analyze")?)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--root={}", root.0.display()))
            .arg(unit)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .with_context(|| format!("no exposure level for {unit}: {text}"))?;
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .context("exposure score")?
            .parse()?;
        ensure!(score <= at_most, "{unit}: exposure {score} > {at_most}: {line}");
        println!("{unit}: {}", line.trim());
    }

    // The agent may hold the DaemonSet's capabilities (every sensor mode),
    // plus CAP_SYS_RESOURCE for pre-5.11 kernels, and nothing else.
    let unit = std::fs::read_to_string(deploy::repo_root().join("deploy/systemd/glasshouse-agent.service"))?;
    let bounding: BTreeSet<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .context("agent unit has no CapabilityBoundingSet")?
        .split_whitespace()
        .collect();
    let objects = deploy::validate(&deploy::helm_template(&["--set", "agent.sensor=auto"])?)?.objects;
    let mut expected: BTreeSet<String> = deploy::agent_capabilities(&objects)?
        .into_iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    expected.insert("CAP_SYS_RESOURCE".into());
    assert_eq!(bounding, expected.iter().map(String::as_str).collect::<BTreeSet<_>>());
    for unit in [
        "glasshouse-aggregator.service",
        "glasshouse-analyzer.service",
        "glasshouse-query.service",
    ] {
        let text = std::fs::read_to_string(deploy::repo_root().join("deploy/systemd").join(unit))?;
        ensure!(
            text.lines().any(|l| l == "CapabilityBoundingSet="),
            "{unit} keeps capabilities"
        );
        ensure!(
            text.lines().any(|l| l == "DynamicUser=yes"),
            "{unit} runs as a fixed user"
        );
    }
    Ok(())
}

#[test]
fn example_configs_parse_with_the_binaries_config_types() -> anyhow::Result<()> {
    let dir = deploy::repo_root().join("deploy/systemd");
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    let agent: glasshouse_agent::Config = parse_config("agent.toml", &read("agent.toml")?)?;
    let aggregator: glasshouse_aggregator::Config = parse_config("aggregator.toml", &read("aggregator.toml")?)?;
    let analyzer: glasshouse_analyzer::Config = parse_config("analyzer.toml", &read("analyzer.toml")?)?;
    let query: glasshouse_lake::query::QueryConfig = parse_config("query.toml", &read("query.toml")?)?;
    // Credentials come from LoadCredential= of the matching unit.
    let agent_tls = agent.tls.context("agent example without TLS")?;
    ensure!(
        agent_tls
            .ca_file
            .starts_with("/run/credentials/glasshouse-agent.service")
    );
    let aggregator_tls = aggregator.tls.context("aggregator example without TLS")?;
    ensure!(
        aggregator_tls
            .cert_file
            .starts_with("/run/credentials/glasshouse-aggregator.service")
    );
    ensure!(agent.aggregators.iter().all(|a| a.starts_with("https://")));
    assert_eq!(agent.spool_dir, Path::new("/var/lib/glasshouse/spool"));
    assert_eq!(aggregator.brokers, analyzer.brokers);
    ensure!(
        analyzer.metrics_listen.is_some(),
        "`glasshouse containers` needs metrics_listen"
    );
    // Metrics off loopback need a token, from the unit's LoadCredential=.
    for (unit, listen, token) in [
        (
            "aggregator",
            aggregator.metrics_listen,
            aggregator.metrics_token_file.as_deref(),
        ),
        (
            "analyzer",
            analyzer.metrics_listen,
            analyzer.metrics_token_file.as_deref(),
        ),
        ("agent", agent.metrics_listen, agent.metrics_token_file.as_deref()),
    ] {
        if listen.is_some_and(|a| !a.ip().is_loopback()) {
            let token = token.with_context(|| format!("{unit}: metrics off loopback without a token"))?;
            ensure!(
                token.starts_with(format!("/run/credentials/glasshouse-{unit}.service")),
                "{unit}: {}",
                token.display()
            );
            let text = std::fs::read_to_string(dir.join(format!("glasshouse-{unit}.service")))?;
            ensure!(
                text.contains("LoadCredential=metrics.token:"),
                "{unit} unit lacks the token credential"
            );
        }
    }

    // The query service reads the lake the analyzers write: the same
    // tables (format, location, storage, catalog; the writer's own settings
    // aside), an Iceberg lake in a catalog that hosts can share; its secrets
    // come from LoadCredential=.
    let tables = |lake: &glasshouse_lake::config::LakeConfig| {
        let c = &lake.catalog;
        format!(
            "{:?} {} {:?} {:?} {:?} {:?} {}",
            lake.format, lake.location, lake.s3, c.kind, c.uri, c.warehouse, c.namespace
        )
    };
    assert_eq!(
        tables(&query.lake),
        tables(&analyzer.lake),
        "query.toml's [lake] is not analyzer.toml's"
    );
    assert_eq!(analyzer.lake.format, glasshouse_lake::config::LakeFormat::Iceberg);
    assert_eq!(
        analyzer.lake.catalog.kind,
        glasshouse_lake::config::CatalogKindConfig::Rest
    );
    for (unit, lake) in [("analyzer", &analyzer.lake), ("query", &query.lake)] {
        let token = lake.catalog.token_file.as_deref().context("no catalog token_file")?;
        ensure!(
            token == Path::new(&format!("/run/credentials/glasshouse-{unit}.service/catalog-token")),
            "{unit}: {}",
            token.display()
        );
    }
    let query_unit = read("glasshouse-query.service")?;
    let password = query.sql.password_file.as_deref().context("no password_file")?;
    for (file, credential) in [
        (password, "sql-password"),
        (
            query.lake.catalog.token_file.as_deref().context("token")?,
            "catalog-token",
        ),
    ] {
        ensure!(file == Path::new("/run/credentials/glasshouse-query.service").join(credential));
        ensure!(
            query_unit.contains(&format!("LoadCredential={credential}:")),
            "glasshouse-query.service lacks the {credential} credential"
        );
    }

    // The commented examples of the analyzer's config parse too, once
    // uncommented: `# [[outputs.syslog]]`, `# key = value`.
    let uncommented: String = read("analyzer.toml")?
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => {
                rest
            }
            _ => l,
        })
        .fold(String::new(), |text, l| text + l + "\n");
    let examples: glasshouse_analyzer::Config = parse_config("analyzer.toml (uncommented)", &uncommented)?;
    assert_eq!(examples.outputs.syslog.len(), 2, "{uncommented}");
    let webhook = examples.outputs.webhook.context("no [outputs.webhook] example")?;
    ensure!(
        webhook
            .token_file
            .is_some_and(|f| f.starts_with("/run/credentials/glasshouse-analyzer.service")),
        "the webhook token comes from LoadCredential="
    );
    ensure!(!examples.analysis.cluster_cidrs.is_empty(), "{uncommented}");
    Ok(())
}
