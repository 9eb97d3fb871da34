//! The Helm chart and the plain manifests rendered from it: the chart lints;
//! the committed manifests are exactly its render; every render (defaults and
//! variants) passes strict offline schema validation of Kubernetes 1.30 and
//! 1.37 plus the Strimzi KafkaTopic schema, while broken manifests are
//! refused by the same validator; the TOML in every ConfigMap parses with the
//! binaries' own config types (unknown keys refused); ports, topics and the
//! agent's capabilities agree with the code; SIEM outputs and `[analysis]`
//! reach the analyzer's config, its pod and its NetworkPolicy; the lake
//! (`[lake]`, `[lake.s3]`, `[lake.catalog]`) is the same in the analyzer's
//! config and in the query service's (`glasshouse-query`, with `[sql]`),
//! whose pods (a Deployment over a fleet lake, or a container in the
//! analyzer pod over its emptyDir), Service and NetworkPolicy agree with it;
//! values the binaries would refuse, or that no deployment could honour,
//! fail the render, saying why.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};
use glasshouse_runtime::service::parse_config;
use glasshouse_tests::deploy::{self, Scratch, agent_capabilities, find, helm_template, validate};
use serde_json::Value;

/// The REST catalog of [`FLEET`].
const CATALOG_URI: &str = "http://polaris.iceberg.svc:8181/api/catalog";

/// A fleet lake (s3://, REST catalog) and a query Deployment.
const FLEET: &[&str] = &[
    "--set",
    "analyzer.lake.enabled=true,analyzer.lake.location=s3://lake/glasshouse",
    "--set",
    "analyzer.lake.s3.endpoint=http://minio.storage.svc:9000,analyzer.lake.s3.allowHttp=true,analyzer.lake.s3.port=9000",
    "--set",
    "analyzer.lake.s3.credentialsSecret.name=lake-s3",
    "--set",
    "analyzer.lake.catalog.kind=rest,analyzer.lake.catalog.uri=http://polaris.iceberg.svc:8181/api/catalog",
    "--set",
    "analyzer.lake.catalog.tokenSecret.name=catalog-token",
    "--set",
    "query.enabled=true,query.passwordSecret.name=sql-password",
];

/// A lake on the emptyDir of the one analyzer pod and the query container
/// beside the analyzer.
const SIDECAR: &[&str] = &[
    "--set",
    "analyzer.replicas=1,analyzer.lake.enabled=true",
    "--set",
    "query.enabled=true,query.replicas=0,query.passwordSecret.name=sql-password",
];

/// Value variants rendered and validated besides the defaults.
const VARIANTS: &[&[&str]] = &[
    &[],
    // Fallback sensor, tokens next to mTLS, Secrets created by the chart.
    &[
        "--set",
        "agent.sensor=auto",
        "--set",
        "tokens.enabled=true",
        "--set",
        "tokens.create=true",
        "--set",
        "tokens.nodes.node-a.hostname=node-a.example",
        "--set",
        "tokens.nodes.node-a.token=0123456789abcdef0123",
        "--set",
        "tls.requireClientCert=false",
        "--set",
        "tls.create=true",
        "--set",
        "tls.aggregator.cert=CERT",
        "--set",
        "tls.aggregator.key=KEY",
        "--set",
        "tls.aggregator.clientCA=CA",
        "--set",
        "tls.agents.ca=CA",
        "--set",
        "tls.agents.nodes.node-a.cert=CERT",
        "--set",
        "tls.agents.nodes.node-a.key=KEY",
        "--set",
        "revokedAgents={lost-host}",
    ],
    // No TLS (gRPC probes), fixed replicas, no policies, no Strimzi, CRI-O,
    // consumer properties, the netlink sensor.
    &[
        "--set",
        "tls.enabled=false",
        "--set",
        "aggregator.autoscaling.enabled=false",
        "--set",
        "networkPolicies.enabled=false",
        "--set",
        "kafka.strimzi.topics=false",
        "--set",
        "agent.criSockets={/run/crio/crio.sock}",
        "--set",
        "agent.sensor=netlink",
        "--set",
        "analyzer.kafkaProperties.fetch\\.min\\.bytes=1024",
        "--set",
        "aggregator.kafkaProperties.enable\\.idempotence=false",
        "--set",
        "namespaces.create=false",
    ],
    // A fleet lake: S3 with its key Secret, a REST catalog with its token
    // Secret, the query service as a Deployment of its own.
    FLEET,
    // A lake on the analyzer pod's emptyDir, served by a query container in
    // the same pod.
    SIDECAR,
];

fn render_valid(args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let yaml = helm_template(args)?;
    let v = validate(&yaml)?;
    ensure!(v.valid, "render with {args:?} is not valid:\n{}", v.report);
    ensure!(
        v.report.lines().last().is_some_and(|l| l.starts_with("valid: ")),
        "{}",
        v.report
    );
    Ok(v.objects)
}

fn config_text<'a>(objects: &'a [Value], name: &str, key: &str) -> anyhow::Result<&'a str> {
    find(objects, "ConfigMap", name)?["data"][key]
        .as_str()
        .with_context(|| format!("ConfigMap {name} has no {key}"))
}

/// The analyzer's config of a render, parsed by its own type.
fn analyzer_config(objects: &[Value]) -> anyhow::Result<glasshouse_analyzer::Config> {
    parse_config(
        "analyzer.toml",
        config_text(objects, "glasshouse-analyzer", "analyzer.toml")?,
    )
    .map_err(Into::into)
}

/// The query service's config of a render, parsed by its own type.
fn query_config(objects: &[Value]) -> anyhow::Result<glasshouse_lake::query::QueryConfig> {
    parse_config("query.toml", config_text(objects, "glasshouse-query", "query.toml")?).map_err(Into::into)
}

fn pod_spec(object: &Value) -> &Value {
    &object["spec"]["template"]["spec"]
}

/// The container `name` of a Deployment's pod.
fn container<'a>(deployment: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    pod_spec(deployment)["containers"]
        .as_array()
        .context("containers")?
        .iter()
        .find(|c| c["name"] == name)
        .with_context(|| format!("no container {name} in {}", deployment["metadata"]["name"]))
}

/// A container's ports as (name, number).
fn ports(container: &Value) -> Vec<(String, u64)> {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["containerPort"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The Secret (and its key) mounted so that `file` exists in `container`
/// of `deployment`: a read-only mount of the file's directory whose volume
/// maps one key of the Secret to the file's name.
fn secret_behind(deployment: &Value, container: &Value, file: &Path) -> anyhow::Result<(String, String)> {
    let (dir, name) = (
        file.parent().and_then(|p| p.to_str()).context("directory")?,
        file.file_name().and_then(|f| f.to_str()).context("file name")?,
    );
    let mount = container["volumeMounts"]
        .as_array()
        .context("mounts")?
        .iter()
        .find(|m| m["mountPath"] == dir)
        .with_context(|| format!("nothing mounted at {dir} in {}", container["name"]))?;
    ensure!(mount["readOnly"] == true, "{mount}");
    let volume = pod_spec(deployment)["volumes"]
        .as_array()
        .context("volumes")?
        .iter()
        .find(|v| v["name"] == mount["name"])
        .with_context(|| format!("no volume {}", mount["name"]))?;
    let items = volume["secret"]["items"].as_array().context("secret items")?;
    ensure!(items.len() == 1 && items[0]["path"] == name, "{volume}");
    Ok((
        volume["secret"]["secretName"]
            .as_str()
            .context("secretName")?
            .to_owned(),
        items[0]["key"].as_str().context("key")?.to_owned(),
    ))
}

/// The (name, Secret) of each variable of a container's `env`.
fn env_secrets(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["valueFrom"]["secretKeyRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// Whether a Service's selector selects the pods of `deployment`.
fn selects(service: &Value, deployment: &Value) -> bool {
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    service["spec"]["selector"]
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

/// The ports of a NetworkPolicy's rules (`ingress` or `egress`), one list
/// per rule, as (port, protocol).
fn policy_ports(policy: &Value, direction: &str) -> Vec<Vec<(String, String)>> {
    policy["spec"][direction]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            rule["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let port = match &p["port"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (port, p["protocol"].as_str().unwrap_or_default().to_owned())
                })
                .collect()
        })
        .collect()
}

/// The glasshouse-query container of `deployment` runs the binary of the
/// analyzer's image with the rendered query.toml, serves the ports of
/// `[sql]` (probed on the PostgreSQL one) and has the password Secret where
/// `password_file` points, under the restricted security context.
fn check_query_container(
    objects: &[Value],
    deployment: &Value,
    query: &glasshouse_lake::query::QueryConfig,
) -> anyhow::Result<()> {
    let c = container(deployment, "query")?;
    let analyzer = container(find(objects, "Deployment", "glasshouse-analyzer")?, "analyzer")?;
    ensure!(
        c["image"] == analyzer["image"],
        "the analyzer image ships glasshouse-query: {}",
        c["image"]
    );
    ensure!(
        c["command"] == serde_json::json!(["/usr/bin/glasshouse-query"]),
        "{}",
        c["command"]
    );
    let config = c["args"][1].as_str().context("--config FILE")?;
    ensure!(c["args"][0] == "--config" && c["args"].as_array().map(Vec::len) == Some(2));
    let mount = c["volumeMounts"]
        .as_array()
        .context("mounts")?
        .iter()
        .find(|m| m["mountPath"] == config)
        .with_context(|| format!("{config} not mounted"))?;
    ensure!(mount["subPath"] == "query.toml" && mount["readOnly"] == true, "{mount}");
    let volume = pod_spec(deployment)["volumes"]
        .as_array()
        .context("volumes")?
        .iter()
        .find(|v| v["name"] == mount["name"])
        .context("config volume")?;
    ensure!(volume["configMap"]["name"] == "glasshouse-query", "{volume}");

    let (pg, flight) = (
        u64::from(query.sql.pg_listen.context("pg_listen")?.port()),
        u64::from(query.sql.flight_listen.context("flight_listen")?.port()),
    );
    assert_eq!(
        ports(c),
        [("postgres".to_owned(), pg), ("flight-sql".to_owned(), flight)]
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        ensure!(c[probe]["tcpSocket"]["port"] == "postgres", "{probe}: {}", c[probe]);
    }
    let password = query.sql.password_file.as_deref().context("password_file")?;
    assert_eq!(
        secret_behind(deployment, c, password)?,
        ("sql-password".to_owned(), "password".to_owned())
    );
    let security = &c["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"], serde_json::json!({"drop": ["ALL"]}));
    ensure!(
        c["resources"]["limits"]["memory"].is_string(),
        "no memory limit of its own"
    );
    Ok(())
}

#[test]
fn chart_lints_and_the_committed_manifests_are_its_render() -> anyhow::Result<()> {
    let helm = deploy::tool("helm")?;
    let lint = Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(deploy::chart())
        .output()?;
    ensure!(
        lint.status.success(),
        "helm lint --strict: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let scratch = Scratch::new("render")?;
    let render = Command::new(deploy::repo_root().join("deploy/kubernetes/render.sh"))
        .arg(&scratch.0)
        .output()?;
    ensure!(
        render.status.success(),
        "render.sh: {}",
        String::from_utf8_lossy(&render.stderr)
    );
    for file in ["glasshouse.yaml", "kafka-topics.yaml"] {
        let fresh = std::fs::read_to_string(scratch.0.join(file))?;
        let committed = std::fs::read_to_string(deploy::repo_root().join("deploy/kubernetes").join(file))?;
        ensure!(
            fresh == committed,
            "deploy/kubernetes/{file} differs from the chart's render: run deploy/kubernetes/render.sh"
        );
    }
    Ok(())
}

#[test]
fn committed_manifests_and_every_render_are_valid_kubernetes() -> anyhow::Result<()> {
    let dir = deploy::repo_root().join("deploy/kubernetes");
    let yaml = format!(
        "{}\n---\n{}",
        std::fs::read_to_string(dir.join("glasshouse.yaml"))?,
        std::fs::read_to_string(dir.join("kafka-topics.yaml"))?
    );
    let v = validate(&yaml)?;
    ensure!(v.valid, "deploy/kubernetes is not valid:\n{}", v.report);
    let kinds: BTreeSet<&str> = v.objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "DaemonSet",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "PriorityClass",
        "KafkaTopic",
    ] {
        ensure!(kinds.contains(kind), "no {kind} in deploy/kubernetes: {kinds:?}");
    }
    for args in VARIANTS {
        render_valid(args)?;
    }
    Ok(())
}

/// The validator can fail: each broken manifest is refused, naming why.
#[test]
fn the_validator_refuses_broken_manifests() -> anyhow::Result<()> {
    let pod = "selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, image: i}]";
    let cases: &[(&str, String, &str)] = &[
        (
            "misspelt field",
            format!("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: x}}\nspec:\n  {pod}\n      hostPid: true\n"),
            "'hostPid' was unexpected",
        ),
        (
            "wrong type",
            format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\nspec:\n  replicas: two\n  {pod}\n"),
            "'two' is not of type 'integer'",
        ),
        (
            "unknown field in a Service",
            "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 1}]\n  bogusPolicy: Local\n"
                .to_owned(),
            "'bogusPolicy' was unexpected",
        ),
        (
            "duplicate key",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n".to_owned(),
            "duplicate key 'name'",
        ),
        (
            "KafkaTopic with 0 partitions and a misspelt field",
            "apiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaTopic\nmetadata: {name: t, labels: {strimzi.io/cluster: c}}\nspec: {partitions: 0, replica: 3}\n"
                .to_owned(),
            "0 is less than the minimum of 1",
        ),
        (
            "KafkaTopic no topic operator would pick up",
            "apiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaTopic\nmetadata: {name: t, labels: {}}\nspec: {partitions: 1}\n"
                .to_owned(),
            "'strimzi.io/cluster' is a required property",
        ),
        (
            "a kind without schema",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n".to_owned(),
            "no schema",
        ),
    ];
    for (what, yaml, expected) in cases {
        let v = validate(yaml)?;
        ensure!(!v.valid, "{what}: accepted:\n{yaml}\n{}", v.report);
        ensure!(v.report.contains(expected), "{what}: no {expected:?} in:\n{}", v.report);
    }

    // A bad value reaches the validator through the chart, and is refused.
    let yaml = helm_template(&["--set", "agent.tolerations=everywhere"])?;
    let v = validate(&yaml)?;
    ensure!(!v.valid, "tolerations as a string accepted:\n{}", v.report);
    ensure!(v.report.contains("DaemonSet/glasshouse-agent"), "{}", v.report);
    Ok(())
}

#[test]
fn chart_refuses_values_it_cannot_render_truthfully() -> anyhow::Result<()> {
    let syslog = |address: &str| format!("siem.syslog[0].address={address}");
    let webhook = |url: &str| format!("siem.webhook.enabled=true,siem.webhook.url={url}");
    for (set, expected) in [
        ("agent.sensor=kprobe".to_owned(), "is not one of bpf, auto, netlink"),
        ("analyzer.replicas=13".to_owned(), "would get no partition"),
        ("tls.requireClientCert=false".to_owned(), "enable tokens too"),
        // What the analyzer would refuse at start (SocketAddr, http:// only).
        (
            syslog("siem.example:514"),
            "siem.syslog[0].address \"siem.example:514\" is not IP:PORT",
        ),
        (syslog("192.0.2.300:514"), "is not IP:PORT"),
        (syslog("192.0.2.10"), "is not IP:PORT"),
        (syslog("[2001:db8::1::2]:514"), "is not IP:PORT"),
        (
            format!("{},siem.syslog[0].protocol=tls", syslog("192.0.2.10:514")),
            "siem.syslog[0].protocol \"tls\" is not udp or tcp",
        ),
        (
            format!("{},siem.syslog[0].facility=24", syslog("192.0.2.10:514")),
            "facility 24 is not a syslog facility (0 to 23)",
        ),
        // The values of the chart before syslog existed.
        (
            "siem.syslog.enabled=true".to_owned(),
            "siem.syslog is a list of outputs",
        ),
        (
            webhook("https://splunk.example:8088/services/collector/event"),
            "https is not supported by the analyzer yet",
        ),
        (
            webhook("http://splunk.example/services/collector/event"),
            "must name HOST:PORT",
        ),
        ("siem.webhook.enabled=true".to_owned(), "siem.webhook.url must be set"),
    ] {
        let e = helm_template(&["--set", &set])
            .err()
            .with_context(|| format!("{set} rendered"))?
            .to_string();
        ensure!(e.contains(expected), "{set}: no {expected:?} in: {e}");
    }
    // What the chart accepts, the analyzer accepts: the IPv6 forms of Rust's
    // SocketAddr, the extreme facilities.
    for address in ["[2001:db8::7]:6514", "[::ffff:192.0.2.1]:514", "[1:2:3:4:5:6:7:8]:514"] {
        for facility in [0, 23] {
            let objects = render_valid(&[
                "--set",
                &format!("{},siem.syslog[0].facility={facility}", syslog(address)),
            ])?;
            let analyzer: glasshouse_analyzer::Config = parse_config(
                "analyzer.toml",
                config_text(&objects, "glasshouse-analyzer", "analyzer.toml")?,
            )?;
            assert_eq!(analyzer.outputs.syslog[0].address.to_string(), address);
            assert_eq!(analyzer.outputs.syslog[0].facility, facility);
        }
    }
    Ok(())
}

/// The egress rules of the analyzer's NetworkPolicy, as (peers, ports).
fn analyzer_egress(objects: &[Value]) -> anyhow::Result<Vec<(Value, Value)>> {
    let policy = find(objects, "NetworkPolicy", "glasshouse-analyzer")?;
    Ok(policy["spec"]["egress"]
        .as_array()
        .context("analyzer egress")?
        .iter()
        .map(|r| (r["to"].clone(), r["ports"].clone()))
        .collect())
}

/// Syslog (UDP and TCP) and webhook values reach the analyzer's config as
/// `[[outputs.syslog]]` and `[outputs.webhook]` that the analyzer's own
/// config type accepts; the token Secret is mounted where `token_file`
/// points; the analyzer's NetworkPolicy lets exactly those destinations out.
#[test]
fn siem_outputs_reach_the_analyzer_config_and_its_network_policy() -> anyhow::Result<()> {
    use glasshouse_analyzer::outputs::Protocol;
    use serde_json::json;

    let parse = analyzer_config;

    // Defaults: no outputs, and nothing out but DNS, Kafka and the other
    // analyzers' metrics ports.
    let objects = render_valid(&[])?;
    let analyzer = parse(&objects)?;
    ensure!(analyzer.outputs.syslog.is_empty() && analyzer.outputs.webhook.is_none());
    assert_eq!(analyzer_egress(&objects)?.len(), 3, "{:#?}", analyzer_egress(&objects)?);

    let objects = render_valid(&[
        "--set",
        "siem.syslog[0].address=192.0.2.10:514",
        "--set",
        "siem.syslog[1].address=[2001:db8::7]:6514,siem.syslog[1].protocol=tcp,siem.syslog[1].facility=13,siem.syslog[1].appName=gh-prod",
        "--set",
        "siem.webhook.enabled=true,siem.webhook.url=http://198.51.100.7:8088/services/collector/event",
        "--set",
        "siem.webhook.tokenSecret.name=hec,siem.webhook.tokenSecret.key=hec-token,siem.webhook.index=security",
    ])?;
    let analyzer = parse(&objects)?;
    let syslog = &analyzer.outputs.syslog;
    assert_eq!(syslog.len(), 2);
    assert_eq!(syslog[0].address.to_string(), "192.0.2.10:514");
    assert_eq!(
        (syslog[0].protocol, syslog[0].facility, syslog[0].app_name.as_str()),
        (Protocol::Udp, 10, "glasshouse"),
        "unset keys keep the analyzer's defaults"
    );
    assert_eq!(syslog[1].address.to_string(), "[2001:db8::7]:6514");
    assert_eq!(
        (syslog[1].protocol, syslog[1].facility, syslog[1].app_name.as_str()),
        (Protocol::Tcp, 13, "gh-prod")
    );
    let webhook = analyzer.outputs.webhook.as_ref().context("no [outputs.webhook]")?;
    assert_eq!(webhook.url, "http://198.51.100.7:8088/services/collector/event");
    assert_eq!(webhook.sourcetype, "ocsf:detection_finding");
    assert_eq!(webhook.index.as_deref(), Some("security"));

    // The token file is the Secret's key, mounted read-only.
    let token_file = webhook.token_file.as_ref().context("no token_file")?;
    let (dir, file) = (
        token_file.parent().and_then(|p| p.to_str()).context("token dir")?,
        token_file.file_name().and_then(|f| f.to_str()).context("token file")?,
    );
    let spec = pod_spec(find(&objects, "Deployment", "glasshouse-analyzer")?);
    let mount = spec["containers"][0]["volumeMounts"]
        .as_array()
        .context("mounts")?
        .iter()
        .find(|m| m["mountPath"] == dir)
        .with_context(|| format!("nothing mounted at {dir}"))?;
    assert_eq!(mount["readOnly"], true);
    let volume = spec["volumes"]
        .as_array()
        .context("volumes")?
        .iter()
        .find(|v| v["name"] == mount["name"])
        .context("volume of the token mount")?;
    assert_eq!(volume["secret"]["secretName"], "hec");
    assert_eq!(volume["secret"]["items"], json!([{"key": "hec-token", "path": file}]));

    // Egress: each syslog address as an ipBlock with its port and transport,
    // the webhook's host and port.
    let egress = analyzer_egress(&objects)?;
    for (cidr, port, protocol) in [
        ("192.0.2.10/32", 514, "UDP"),
        ("2001:db8::7/128", 6514, "TCP"),
        ("198.51.100.7/32", 8088, "TCP"),
    ] {
        let want = (
            json!([{"ipBlock": {"cidr": cidr}}]),
            json!([{"port": port, "protocol": protocol}]),
        );
        ensure!(egress.contains(&want), "no egress {want:?} in {egress:#?}");
    }
    assert_eq!(egress.len(), 3 + 3, "{egress:#?}");

    // A webhook named by DNS: its port to anywhere, unless `to` narrows it;
    // a syslog `to` replaces the ipBlock.
    let objects = render_valid(&[
        "--set",
        "siem.webhook.enabled=true,siem.webhook.url=http://splunk.example:8088/services/collector/event",
    ])?;
    let analyzer = parse(&objects)?;
    ensure!(
        analyzer
            .outputs
            .webhook
            .as_ref()
            .is_some_and(|w| w.token_file.is_none())
    );
    let egress = analyzer_egress(&objects)?;
    let any = (Value::Null, json!([{"port": 8088, "protocol": "TCP"}]));
    ensure!(egress.contains(&any), "{egress:#?}");
    let objects = render_valid(&[
        "--set",
        "siem.webhook.enabled=true,siem.webhook.url=http://splunk.example:8088/x",
        "--set",
        "siem.webhook.to[0].ipBlock.cidr=198.51.100.0/24",
        "--set",
        "siem.syslog[0].address=10.96.0.20:514,siem.syslog[0].to[0].podSelector.matchLabels.app=collector",
    ])?;
    let egress = analyzer_egress(&objects)?;
    for want in [
        (
            json!([{"ipBlock": {"cidr": "198.51.100.0/24"}}]),
            json!([{"port": 8088, "protocol": "TCP"}]),
        ),
        (
            json!([{"podSelector": {"matchLabels": {"app": "collector"}}}]),
            json!([{"port": 514, "protocol": "UDP"}]),
        ),
    ] {
        ensure!(egress.contains(&want), "no egress {want:?} in {egress:#?}");
    }
    Ok(())
}

/// `analyzer.analysis` in values.yaml holds the code's defaults (so the
/// chart pins nothing the code would not), and what is set there reaches
/// `[analysis]`; a key the analyzer does not know is rendered and refused
/// by the analyzer's config type, naming it.
#[test]
fn analysis_values_are_the_code_defaults_and_reach_the_config() -> anyhow::Result<()> {
    let parse = |args: &[&str]| -> anyhow::Result<glasshouse_analyzer::Config> {
        let objects = render_valid(args)?;
        parse_config(
            "analyzer.toml",
            config_text(&objects, "glasshouse-analyzer", "analyzer.toml")?,
        )
        .map_err(Into::into)
    };
    let defaults = parse(&[])?;
    assert_eq!(
        format!("{:?}", defaults.analysis),
        format!("{:?}", glasshouse_analyzer::config::Analysis::default()),
        "values.yaml analyzer.analysis differs from analyzer/src/config.rs"
    );

    let set = parse(&[
        "--set",
        "analyzer.analysis.clusterCidrs={10.244.0.0/16,10.96.0.0/12}",
        "--set",
        "analyzer.analysis.minLearningSecs=600,analyzer.analysis.alertThreshold=0.8",
        "--set",
        "analyzer.analysis.enabled=false",
    ])?;
    assert_eq!(set.analysis.settings().cluster.len(), 2);
    assert_eq!(set.analysis.min_learning_secs, 600);
    assert_eq!(set.analysis.alert_threshold, 0.8);
    assert!(!set.analysis.enabled);

    let objects = render_valid(&["--set", "analyzer.analysis.minLearningSeconds=600"])?;
    let e = parse_config::<glasshouse_analyzer::Config>(
        "analyzer.toml",
        config_text(&objects, "glasshouse-analyzer", "analyzer.toml")?,
    )
    .err()
    .context("an unknown [analysis] key was accepted")?
    .to_string();
    ensure!(e.contains("min_learning_seconds"), "{e}");
    Ok(())
}

/// The TOML of every ConfigMap parses with the binary's own config struct
/// (`deny_unknown_fields`, the same validation as at start), and the
/// addresses, ports and topics line up across objects.
#[test]
fn configs_use_the_binaries_keys_and_agree_with_services_and_topics() -> anyhow::Result<()> {
    for args in VARIANTS {
        let objects = render_valid(args)?;
        let agent: glasshouse_agent::Config =
            parse_config("agent.toml", config_text(&objects, "glasshouse-agent", "agent.toml")?)?;
        let aggregator: glasshouse_aggregator::Config = parse_config(
            "aggregator.toml",
            config_text(&objects, "glasshouse-aggregator", "aggregator.toml")?,
        )?;
        let analyzer: glasshouse_analyzer::Config = parse_config(
            "analyzer.toml",
            config_text(&objects, "glasshouse-analyzer", "analyzer.toml")?,
        )?;

        // The agent reaches the aggregator Service, on the port it listens on.
        let service = find(&objects, "Service", "glasshouse-aggregator")?;
        let namespace = service["metadata"]["namespace"].as_str().context("service namespace")?;
        let port = service["spec"]["ports"][0]["port"].as_u64().context("service port")?;
        let scheme = if aggregator.tls.is_some() { "https" } else { "http" };
        assert_eq!(
            agent.aggregators,
            [format!("{scheme}://glasshouse-aggregator.{namespace}.svc:{port}")],
            "{args:?}"
        );
        assert_eq!(u64::from(aggregator.listen.port()), port);
        // `aggregator.kafkaProperties` reach the aggregator's `[kafka]`.
        let idempotence = args
            .contains(&"aggregator.kafkaProperties.enable\\.idempotence=false")
            .then(|| "false".to_owned());
        assert_eq!(
            aggregator.kafka.get("enable.idempotence").cloned(),
            idempotence,
            "{args:?}"
        );
        assert_eq!(agent.tls.is_some(), aggregator.tls.is_some());
        assert_eq!(agent.token_file.is_some(), aggregator.tokens_file.is_some());
        let deployment = find(&objects, "Deployment", "glasshouse-aggregator")?;
        let ports = &pod_spec(deployment)["containers"][0]["ports"];
        assert_eq!(ports[0]["containerPort"].as_u64(), Some(port));
        assert_eq!(
            ports[1]["containerPort"].as_u64(),
            aggregator.metrics_listen.map(|a| u64::from(a.port()))
        );
        // The analyzer's /metrics and /containers: container port, headless
        // Service, NetworkPolicy ingress.
        let metrics = analyzer.metrics_listen.map(|a| u64::from(a.port()));
        ensure!(metrics.is_some(), "the analyzer has no metrics_listen");
        let deployment = find(&objects, "Deployment", "glasshouse-analyzer")?;
        let port = &pod_spec(deployment)["containers"][0]["ports"][0];
        assert_eq!(
            (port["name"].as_str(), port["containerPort"].as_u64()),
            (Some("metrics"), metrics)
        );
        let service = find(&objects, "Service", "glasshouse-analyzer")?;
        assert_eq!(service["spec"]["clusterIP"], "None");
        assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), metrics);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
        if let Ok(policy) = find(&objects, "NetworkPolicy", "glasshouse-analyzer") {
            assert_eq!(
                policy["spec"]["ingress"][0]["ports"],
                serde_json::json!([{"port": "metrics", "protocol": "TCP"}])
            );
        }
        let daemonset = find(&objects, "DaemonSet", "glasshouse-agent")?;
        assert_eq!(
            pod_spec(daemonset)["containers"][0]["ports"][0]["containerPort"].as_u64(),
            agent.metrics_listen.map(|a| u64::from(a.port()))
        );
        // Every socket the agent is told about is mounted at that path.
        let mounts: Vec<&str> = pod_spec(daemonset)["containers"][0]["volumeMounts"]
            .as_array()
            .context("volumeMounts")?
            .iter()
            .filter_map(|m| m["mountPath"].as_str())
            .collect();
        for socket in agent.runtime_sockets.iter().chain(&agent.cri_sockets) {
            let socket = socket.to_str().context("socket path")?;
            ensure!(mounts.contains(&socket), "{socket} not mounted: {mounts:?}");
        }
        for file in [agent.tls.as_ref().map(|t| &t.ca_file), agent.token_file.as_ref()]
            .into_iter()
            .flatten()
        {
            let file = file.to_str().context("path")?;
            ensure!(mounts.contains(&file), "{file} not mounted: {mounts:?}");
        }

        assert_eq!(aggregator.brokers, analyzer.brokers);
        assert_eq!(aggregator.topics.partitions, analyzer.topics.partitions);
        // glasshouse-query reads the lake the analyzers write: the same
        // `[lake]`, as each binary's config type reads it.
        if find(&objects, "ConfigMap", "glasshouse-query").is_ok() {
            let query = query_config(&objects)?;
            assert_eq!(format!("{:?}", query.lake), format!("{:?}", analyzer.lake), "{args:?}");
        }

        // KafkaTopics: exactly the design's topics, compacted where the code
        // says, with the partitions the services would create them with.
        let topics: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "KafkaTopic").collect();
        if topics.is_empty() {
            continue;
        }
        let rendered: BTreeSet<(String, bool)> = topics
            .iter()
            .map(|t| {
                (
                    t["spec"]["topicName"].as_str().unwrap_or_default().to_owned(),
                    t["spec"]["config"]["cleanup.policy"] == "compact",
                )
            })
            .collect();
        let expected: BTreeSet<(String, bool)> = glasshouse_runtime::kafka::all_topics()
            .into_iter()
            .map(|(t, c)| (t.to_owned(), c))
            .collect();
        assert_eq!(rendered, expected);
        for t in topics {
            assert_eq!(
                t["spec"]["partitions"].as_i64(),
                Some(i64::from(aggregator.topics.partitions))
            );
            assert_eq!(
                t["spec"]["replicas"].as_i64(),
                Some(i64::from(aggregator.topics.replication))
            );
            assert_eq!(
                t["spec"]["config"]["max.message.bytes"].as_u64(),
                Some(aggregator.max_message_bytes as u64),
                "a topic must take the largest message the producer sends"
            );
        }
    }
    Ok(())
}

/// The agent gets exactly the capabilities its DaemonSet comments justify,
/// per sensor; the central services meet Pod Security `restricted`.
#[test]
fn pods_get_only_the_privileges_they_need() -> anyhow::Result<()> {
    let base = ["SYS_PTRACE", "DAC_READ_SEARCH"];
    for (sensor, extra) in [
        ("bpf", &["BPF", "PERFMON"][..]),
        ("auto", &["BPF", "PERFMON", "NET_ADMIN", "SYS_NICE"][..]),
        ("netlink", &["NET_ADMIN", "SYS_NICE"][..]),
    ] {
        let objects = render_valid(&["--set", &format!("agent.sensor={sensor}")])?;
        let got: BTreeSet<String> = agent_capabilities(&objects)?.into_iter().collect();
        let want: BTreeSet<String> = base.iter().chain(extra).map(|c| (*c).to_owned()).collect();
        assert_eq!(got, want, "sensor {sensor}");

        let ds = find(&objects, "DaemonSet", "glasshouse-agent")?;
        let spec = pod_spec(ds);
        let container = &spec["containers"][0];
        let security = &container["securityContext"];
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(security["privileged"], false);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(spec["hostPID"], true);
        assert_eq!(spec["hostNetwork"], true, "the node's host name is the agent's");
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["tolerations"], serde_json::json!([{"operator": "Exists"}]));
        assert!(container["resources"]["limits"]["memory"].is_string());
        // Host paths are mounted read-only, but the spool.
        let volumes = spec["volumes"].as_array().context("volumes")?;
        for mount in container["volumeMounts"].as_array().context("mounts")? {
            let name = mount["name"].as_str().context("mount name")?;
            let volume = volumes.iter().find(|v| v["name"] == name).context("volume")?;
            if volume.get("hostPath").is_some() && name != "spool" {
                assert_eq!(mount["readOnly"], true, "{name} must be read-only");
            }
        }
        let paths: BTreeSet<&str> = volumes.iter().filter_map(|v| v["hostPath"]["path"].as_str()).collect();
        ensure!(paths.contains("/sys/fs/cgroup"), "{paths:?}");
        if sensor != "netlink" {
            ensure!(
                paths.contains("/sys/kernel/btf") && paths.contains("/sys/kernel/tracing"),
                "{paths:?}"
            );
        }
    }

    // The central services, the query service in both of its shapes too:
    // every container of every pod.
    for args in [&[][..], FLEET, SIDECAR] {
        let objects = render_valid(args)?;
        let names: &[&str] = if args == FLEET {
            &["glasshouse-aggregator", "glasshouse-analyzer", "glasshouse-query"]
        } else {
            &["glasshouse-aggregator", "glasshouse-analyzer"]
        };
        for name in names {
            let d = find(&objects, "Deployment", name)?;
            let spec = pod_spec(d);
            assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
            assert_eq!(spec["automountServiceAccountToken"], false);
            let containers = spec["containers"].as_array().context("containers")?;
            ensure!(
                containers.len()
                    == if args == SIDECAR && *name == "glasshouse-analyzer" {
                        2
                    } else {
                        1
                    },
                "{name}: {} containers",
                containers.len()
            );
            for c in containers {
                let security = &c["securityContext"];
                assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
                assert!(security["capabilities"].get("add").is_none(), "{name}");
                assert_eq!(security["allowPrivilegeEscalation"], false);
                assert_eq!(security["readOnlyRootFilesystem"], true, "{name}/{}", c["name"]);
            }
            let account = find(
                &objects,
                "ServiceAccount",
                spec["serviceAccountName"].as_str().context("serviceAccountName")?,
            )?;
            assert_eq!(account["automountServiceAccountToken"], false);
            let namespace = d["metadata"]["namespace"].as_str().context("namespace")?;
            let ns = find(&objects, "Namespace", namespace)?;
            assert_eq!(
                ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
                "restricted"
            );
        }
    }
    Ok(())
}

/// The lake and query values. Off by default (no query objects at all).
/// A fleet lake (s3://, REST catalog) renders the same `[lake]` for the
/// analyzer and glasshouse-query, each accepted by its binary's config
/// type; the S3 keys come from their Secret as the AWS variables and the
/// catalog token (or OAuth2 credential) from its Secret where
/// `token_file` (`credential_file`) points, in both pods;
/// the query Deployment serves the `[sql]` ports behind the Service
/// glasshouse-sql, which selects it, not the analyzers; the analyzer has no
/// SQL port left; the NetworkPolicies let SQL into the query pods only and
/// both kinds of pod out to the object store and the catalog. An emptyDir
/// lake is served by a query container in the analyzer pod, sharing the
/// volume (and so the sqlite catalog). Impossible combinations fail the
/// render, saying why.
#[test]
fn lake_and_query_values_reach_the_configs_pods_and_policies() -> anyhow::Result<()> {
    use glasshouse_lake::config::{CatalogKindConfig, LakeFormat};

    let objects = render_valid(&[])?;
    ensure!(!analyzer_config(&objects)?.lake.enabled, "lake on by default");
    ensure!(
        !config_text(&objects, "glasshouse-analyzer", "analyzer.toml")?.contains("[sql]"),
        "the analyzer serves no SQL"
    );
    for (kind, name) in [
        ("ConfigMap", "glasshouse-query"),
        ("Deployment", "glasshouse-query"),
        ("Service", "glasshouse-sql"),
        ("NetworkPolicy", "glasshouse-query"),
    ] {
        ensure!(find(&objects, kind, name).is_err(), "{kind}/{name} rendered by default");
    }

    // The fleet.
    let objects = render_valid(FLEET)?;
    let analyzer = analyzer_config(&objects)?;
    let query = query_config(&objects)?;
    assert_eq!(format!("{:?}", analyzer.lake), format!("{:?}", query.lake));
    let lake = &query.lake;
    ensure!(lake.format == LakeFormat::Iceberg && lake.location == "s3://lake/glasshouse");
    ensure!(lake.s3.endpoint.as_deref() == Some("http://minio.storage.svc:9000") && lake.s3.allow_http);
    ensure!(lake.catalog.kind == CatalogKindConfig::Rest && lake.catalog.uri.as_deref() == Some(CATALOG_URI));
    let token_file = lake.catalog.token_file.clone().context("no catalog token_file")?;
    let aws = [
        ("AWS_ACCESS_KEY_ID".to_owned(), "lake-s3".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "lake-s3".to_owned()),
    ];

    let analyzers = find(&objects, "Deployment", "glasshouse-analyzer")?;
    let queries = find(&objects, "Deployment", "glasshouse-query")?;
    assert_eq!(queries["spec"]["replicas"], 2, "query.replicas default");
    check_query_container(&objects, queries, &query)?;
    let analyzer_container = container(analyzers, "analyzer")?;
    ensure!(
        pod_spec(analyzers)["containers"].as_array().map(Vec::len) == Some(1),
        "a query container in the analyzer pod of a fleet"
    );
    let metrics = u64::from(analyzer.metrics_listen.context("metrics_listen")?.port());
    assert_eq!(
        ports(analyzer_container),
        [("metrics".to_owned(), metrics)],
        "the analyzer has no SQL port"
    );
    ensure!(
        !analyzer_container["volumeMounts"].to_string().contains("sql-password"),
        "the analyzer mounts the SQL password"
    );
    for (deployment, c) in [(analyzers, analyzer_container), (queries, container(queries, "query")?)] {
        assert_eq!(env_secrets(c), aws, "{}", c["name"]);
        assert_eq!(
            secret_behind(deployment, c, &token_file)?,
            ("catalog-token".to_owned(), "token".to_owned()),
            "{}",
            c["name"]
        );
        ensure!(
            !c["volumeMounts"].to_string().contains("/var/lib/glasshouse/lake"),
            "an s3 lake needs no volume"
        );
    }

    // The fleet with OAuth2 client credentials instead of a token: both
    // pods get `credential_file` behind its Secret and the refresh period.
    let with_credential: Vec<&str> = FLEET
        .iter()
        .map(|a| match *a {
            "analyzer.lake.catalog.tokenSecret.name=catalog-token" => {
                "analyzer.lake.catalog.credentialSecret.name=catalog-credential,analyzer.lake.catalog.tokenRefreshSecs=900"
            }
            other => other,
        })
        .collect();
    let objects = render_valid(&with_credential)?;
    for (lake, name) in [
        (analyzer_config(&objects)?.lake, "analyzer"),
        (query_config(&objects)?.lake, "query"),
    ] {
        ensure!(
            lake.catalog.token_file.is_none(),
            "{name}: a token_file beside the credential"
        );
        ensure!(lake.catalog.token_refresh_secs == 900, "{name}: {:?}", lake.catalog);
        let credential = lake.catalog.credential_file.context("no catalog credential_file")?;
        let deployment = find(&objects, "Deployment", &format!("glasshouse-{name}"))?;
        assert_eq!(
            secret_behind(deployment, container(deployment, name)?, &credential)?,
            ("catalog-credential".to_owned(), "credential".to_owned()),
            "{name}"
        );
    }

    let (pg, flight) = (
        u64::from(query.sql.pg_listen.context("pg_listen")?.port()),
        u64::from(query.sql.flight_listen.context("flight_listen")?.port()),
    );
    let service = find(&objects, "Service", "glasshouse-sql")?;
    ensure!(
        selects(service, queries) && !selects(service, analyzers),
        "glasshouse-sql selects {}",
        service["spec"]["selector"]
    );
    let service_ports: Vec<(u64, &str)> = service["spec"]["ports"]
        .as_array()
        .context("service ports")?
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap_or_default(),
                p["targetPort"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(service_ports, [(pg, "postgres"), (flight, "flight-sql")]);

    let sql_in = vec![vec![
        ("postgres".to_owned(), "TCP".to_owned()),
        ("flight-sql".to_owned(), "TCP".to_owned()),
    ]];
    let tcp = |port: u64| vec![(port.to_string(), "TCP".to_owned())];
    let dns = vec![("53".to_owned(), "UDP".to_owned()), ("53".to_owned(), "TCP".to_owned())];
    let policy = find(&objects, "NetworkPolicy", "glasshouse-query")?;
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        queries["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy_ports(policy, "ingress"), sql_in);
    assert_eq!(
        policy_ports(policy, "egress"),
        [dns.clone(), tcp(9000), tcp(8181)],
        "the query pods talk to DNS, the object store and the catalog only"
    );
    let policy = find(&objects, "NetworkPolicy", "glasshouse-analyzer")?;
    assert_eq!(
        policy_ports(policy, "ingress"),
        [vec![("metrics".to_owned(), "TCP".to_owned())]],
        "SQL reaches the analyzer pods"
    );
    let egress = policy_ports(policy, "egress");
    ensure!(egress.contains(&tcp(9000)) && egress.contains(&tcp(8181)), "{egress:?}");

    // A catalog URI without a port: its scheme's.
    let objects = render_valid(
        &[
            FLEET,
            &["--set", "analyzer.lake.catalog.uri=https://glue.example/iceberg"],
        ]
        .concat(),
    )?;
    let egress = policy_ports(find(&objects, "NetworkPolicy", "glasshouse-query")?, "egress");
    ensure!(egress.contains(&tcp(443)), "{egress:?}");

    // One pod: the query container beside the analyzer, over its emptyDir
    // lake and sqlite catalog.
    let objects = render_valid(SIDECAR)?;
    let analyzer = analyzer_config(&objects)?;
    let query = query_config(&objects)?;
    assert_eq!(format!("{:?}", analyzer.lake), format!("{:?}", query.lake));
    ensure!(query.lake.format == LakeFormat::Iceberg && query.lake.catalog.kind == CatalogKindConfig::Sql);
    let writer = glasshouse_lake::iceberg_lake::settings(&analyzer.lake).map_err(anyhow::Error::msg)?;
    let reader = glasshouse_lake::iceberg_lake::settings(&query.lake).map_err(anyhow::Error::msg)?;
    ensure!(
        writer == reader,
        "the two processes open different catalogs: {writer:?} {reader:?}"
    );
    ensure!(find(&objects, "Deployment", "glasshouse-query").is_err());
    ensure!(find(&objects, "NetworkPolicy", "glasshouse-query").is_err());
    let analyzers = find(&objects, "Deployment", "glasshouse-analyzer")?;
    check_query_container(&objects, analyzers, &query)?;
    let lake_volume = pod_spec(analyzers)["volumes"]
        .as_array()
        .context("volumes")?
        .iter()
        .find(|v| v["name"] == "lake")
        .context("no lake volume")?;
    ensure!(lake_volume.get("emptyDir").is_some(), "{lake_volume}");
    for name in ["analyzer", "query"] {
        let mount = container(analyzers, name)?["volumeMounts"]
            .as_array()
            .context("mounts")?
            .iter()
            .find(|m| m["name"] == "lake")
            .with_context(|| format!("{name} does not mount the lake"))?
            .clone();
        ensure!(
            mount["mountPath"] == query.lake.location.as_str() && mount["readOnly"] != true,
            "{name}: {mount} (sqlite writes its catalog there)"
        );
    }
    let (pg, flight) = (
        query.sql.pg_listen.context("pg_listen")?.port(),
        query.sql.flight_listen.context("flight_listen")?.port(),
    );
    ensure!(
        ![pg, flight].contains(&analyzer.metrics_listen.context("metrics_listen")?.port()),
        "one pod, one port each"
    );
    ensure!(selects(find(&objects, "Service", "glasshouse-sql")?, analyzers));
    let policy = find(&objects, "NetworkPolicy", "glasshouse-analyzer")?;
    assert_eq!(
        policy_ports(policy, "ingress"),
        [vec![("metrics".to_owned(), "TCP".to_owned())], sql_in[0].clone()]
    );

    let sidecar = "analyzer.lake.enabled=true,query.enabled=true,query.passwordSecret.name=p,query.replicas=0";
    for (set, why) in [
        ("analyzer.sql.enabled=true", "the analyzer no longer serves SQL"),
        ("query.enabled=true", "query.enabled needs analyzer.lake.enabled"),
        (
            "query.enabled=true,analyzer.lake.enabled=true",
            "query.enabled needs query.passwordSecret.name",
        ),
        (
            "query.enabled=true,analyzer.lake.enabled=true,query.passwordSecret.name=p",
            "query.replicas=2: a glasshouse-query Deployment cannot read the analyzer pods' emptyDir lake",
        ),
        (
            sidecar,
            "with analyzer.replicas=2: each pod's lake holds only its own partitions' rows",
        ),
        (
            format!("{sidecar},analyzer.replicas=1,query.pgPort=9466").as_str(),
            "whose metrics port is 9466",
        ),
        (
            format!("{sidecar},analyzer.replicas=1,analyzer.lake.format=parquet").as_str(),
            "query.enabled needs analyzer.lake.format=iceberg",
        ),
        (
            "analyzer.lake.enabled=true,analyzer.lake.location=s3://b/p",
            "a sqlite catalog is a file of one pod and cannot be shared between pods",
        ),
        (
            "analyzer.lake.enabled=true,analyzer.lake.catalog.kind=rest",
            "analyzer.lake.catalog.kind=rest needs an s3:// analyzer.lake.location",
        ),
        (
            "analyzer.lake.enabled=true,analyzer.lake.location=s3://b/p,analyzer.lake.catalog.kind=rest",
            "needs analyzer.lake.catalog.uri",
        ),
        (
            "analyzer.lake.enabled=true,analyzer.lake.location=s3://b/p,analyzer.lake.catalog.kind=rest,analyzer.lake.catalog.uri=polaris:8181",
            "must be http(s)://HOST[:PORT][/PATH]",
        ),
        (
            "analyzer.lake.enabled=true,analyzer.lake.format=parquet,analyzer.lake.location=s3://b/p",
            "one writer per location",
        ),
        (
            "analyzer.lake.enabled=true,analyzer.lake.location=s3://b/p,analyzer.lake.catalog.kind=rest,analyzer.lake.catalog.uri=http://c:8181,analyzer.lake.catalog.credentialSecret.name=c,analyzer.lake.catalog.tokenSecret.name=t",
            "set credentialSecret (renewed tokens) or tokenSecret",
        ),
        (
            "analyzer.lake.enabled=true,analyzer.lake.location=s3://b/p,analyzer.lake.catalog.kind=rest,analyzer.lake.catalog.uri=http://c:8181,analyzer.lake.catalog.tokenRefreshSecs=0",
            "tokenRefreshSecs 0 must be at least 1",
        ),
        (
            "analyzer.lake.enabled=true,analyzer.lake.format=delta",
            "is not iceberg or parquet",
        ),
        (
            "analyzer.lake.enabled=true,analyzer.lake.location=/data",
            "an s3://bucket/prefix URL",
        ),
    ] {
        let e = helm_template(&["--set", set])
            .err()
            .with_context(|| format!("{set} rendered"))?
            .to_string();
        ensure!(e.contains(why), "{set}: no {why:?} in: {e}");
    }
    Ok(())
}
