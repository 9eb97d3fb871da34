//! The Helm chart and the plain manifests rendered from it: the chart lints;
//! the committed manifests are exactly its render; every render (defaults and
//! variants) passes strict offline schema validation of Kubernetes 1.30 and
//! 1.37 plus the Strimzi KafkaTopic schema, while broken manifests are
//! refused by the same validator; the TOML in every ConfigMap parses with the
//! binaries' own config types (unknown keys refused); ports, topics and the
//! agent's capabilities agree with the code.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, ensure};
use glasshouse_proto::service::parse_config;
use glasshouse_tests::deploy::{self, Scratch, agent_capabilities, find, helm_template, validate};
use serde_json::Value;

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
        "namespaces.create=false",
    ],
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

fn pod_spec(object: &Value) -> &Value {
    &object["spec"]["template"]["spec"]
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
    for (args, expected) in [
        (["--set", "siem.syslog.enabled=true"], "no syslog sink yet"),
        (["--set", "siem.webhook.enabled=true"], "no webhook sink yet"),
        (["--set", "agent.sensor=kprobe"], "is not one of bpf, auto, netlink"),
        (["--set", "analyzer.replicas=13"], "would get no partition"),
        (["--set", "tls.requireClientCert=false"], "enable tokens too"),
    ] {
        let e = helm_template(&args)
            .err()
            .with_context(|| format!("{args:?} rendered"))?
            .to_string();
        ensure!(e.contains(expected), "{args:?}: {e}");
    }
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
        assert_eq!(agent.tls.is_some(), aggregator.tls.is_some());
        assert_eq!(agent.token_file.is_some(), aggregator.tokens_file.is_some());
        let deployment = find(&objects, "Deployment", "glasshouse-aggregator")?;
        let ports = &pod_spec(deployment)["containers"][0]["ports"];
        assert_eq!(ports[0]["containerPort"].as_u64(), Some(port));
        assert_eq!(
            ports[1]["containerPort"].as_u64(),
            aggregator.metrics_listen.map(|a| u64::from(a.port()))
        );
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
        let expected: BTreeSet<(String, bool)> = glasshouse_proto::kafka::all_topics()
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

    let objects = render_valid(&[])?;
    for name in ["glasshouse-aggregator", "glasshouse-analyzer"] {
        let d = find(&objects, "Deployment", name)?;
        let spec = pod_spec(d);
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        let security = &spec["containers"][0]["securityContext"];
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(security["capabilities"].get("add").is_none(), "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(spec["automountServiceAccountToken"], false);
        let namespace = d["metadata"]["namespace"].as_str().context("namespace")?;
        let ns = find(&objects, "Namespace", namespace)?;
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
    }
    Ok(())
}
