//! The container images of `deploy/containers`: `build.sh` builds all three
//! with `podman build` from this workspace's binaries and a base image made
//! here (no registry); each image runs as the user it declares and prints
//! its version; and the three images run the pipeline together: the agent
//! image with exactly the capabilities, seccomp setting, host namespaces and
//! read-only host mounts of the rendered Kubernetes DaemonSet (taken from the
//! manifest, so the DaemonSet's capability list is tested, not restated)
//! loads its eBPF sensor, sees an exec in a new container, and the aggregator
//! image writes it to Kafka, where an independent consumer finds it,
//! attributed and from the node's host name; the analyzer image joins its
//! group; all three stop cleanly on SIGTERM.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use glasshouse_proto::process::{self, Kind, Row};
use glasshouse_proto::record::RecordType;
use glasshouse_tests::deploy::{self, Scratch};
use glasshouse_tests::{Broker, PodmanService, TEST_IMAGE, free_port, podman, require_test_image, workspace_binary};
use serde_json::Value;

const TAG: &str = "deploy-test";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Containers removed (with `podman rm -f`) on drop.
#[derive(Debug, Default)]
struct Containers(Vec<String>);

impl Containers {
    /// `podman run -d --name NAME ARGS`, remembered for removal.
    fn run(&mut self, name: &str, args: &[String]) -> anyhow::Result<()> {
        self.0.push(name.to_owned());
        let mut all = vec!["run".to_owned(), "-d".to_owned(), "--name".to_owned(), name.to_owned()];
        all.extend(args.iter().cloned());
        podman(&all.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(())
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            // Ignored error: cleanup only.
            let _ = podman(&["rm", "-f", "-t", "2", name]);
        }
    }
}

/// What a container printed so far, stdout and stderr, without colours.
fn logs(name: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("podman").args(["logs", name]).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An ANSI escape: ESC [ ... letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    Ok(plain)
}

fn wait_for_log(name: &str, what: &str, within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let text = logs(name)?;
        if text.contains(what) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("{name} did not log {what:?} within {within:?}; it logged:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Builds the three images; returns their names (agent, aggregator, analyzer).
fn build_images() -> anyhow::Result<[String; 3]> {
    let bins = workspace_binary("glasshouse-agent")?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    workspace_binary("glasshouse")?;
    let names = ["agent", "aggregator", "analyzer"].map(|c| format!("localhost/glasshouse-{c}:{TAG}"));
    let base = format!("localhost/glasshouse-base:{TAG}");
    let image_id =
        |name: &str| podman(&["image", "inspect", "--format", "{{.Id}}", name]).map(|id| id.trim().to_owned());
    // What the tags named before (a previous run's images).
    let before: Vec<String> = names
        .iter()
        .chain([&base])
        .filter_map(|name| image_id(name).ok())
        .collect();
    let out = std::process::Command::new(deploy::repo_root().join("deploy/containers/build.sh"))
        .arg("--binaries")
        .arg(&bins)
        .args(["--tag", TAG])
        .output()
        .context("running deploy/containers/build.sh")?;
    ensure!(
        out.status.success(),
        "build.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = String::from_utf8_lossy(&out.stdout);
    let mut after = Vec::new();
    for name in names.iter().chain([&base]) {
        ensure!(
            built.lines().any(|l| l == name),
            "build.sh did not build {name}: {built}"
        );
        after.push(image_id(name)?);
    }
    // A rebuild removes the images it replaced unless a container uses
    // them: repeated runs must not fill the disk.
    for old in before.iter().filter(|id| !after.contains(id)) {
        let users = podman(&["ps", "-a", "-q", "--filter", &format!("ancestor={old}")])?;
        ensure!(
            !users.trim().is_empty() || podman(&["image", "exists", old]).is_err(),
            "build.sh left the replaced image {old} behind"
        );
    }
    Ok(names)
}

/// [`build_images`] once per test binary (both tests need the images; two
/// concurrent builds of the same tags would race).
fn images() -> anyhow::Result<[String; 3]> {
    static BUILT: std::sync::Mutex<Option<[String; 3]>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().map_err(|_| anyhow::anyhow!("image build lock poisoned"))?;
    if let Some(images) = &*built {
        return Ok(images.clone());
    }
    let started = Instant::now();
    let images = build_images()?;
    println!("built the base and three images in {:?}", started.elapsed());
    *built = Some(images.clone());
    Ok(images)
}

/// `podman run` arguments that give a container what the DaemonSet gives the
/// agent pod: host PID, network and UTS namespaces, its security context,
/// and its hostPath mounts of host directories.
fn daemonset_run_args(objects: &[Value]) -> anyhow::Result<Vec<String>> {
    let ds = deploy::find(objects, "DaemonSet", "glasshouse-agent")?;
    let spec = &ds["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let security = &container["securityContext"];
    ensure!(spec["hostPID"] == true && spec["hostNetwork"] == true);
    ensure!(security["privileged"] == false);
    let mut args: Vec<String> = ["--pid=host", "--network=host", "--uts=host"].map(String::from).into();
    args.push(format!(
        "--user={}:{}",
        security["runAsUser"].as_u64().context("runAsUser")?,
        security["runAsGroup"].as_u64().context("runAsGroup")?
    ));
    if security["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
    }
    if security["allowPrivilegeEscalation"] == false {
        args.push("--security-opt=no-new-privileges".into());
    }
    if security["seccompProfile"]["type"] == "Unconfined" {
        args.push("--security-opt=seccomp=unconfined".into());
    }
    ensure!(security["capabilities"]["drop"] == serde_json::json!(["ALL"]));
    args.push("--cap-drop=all".into());
    for cap in deploy::agent_capabilities(objects)? {
        args.push(format!("--cap-add={cap}"));
    }
    let volumes = spec["volumes"].as_array().context("volumes")?;
    for mount in container["volumeMounts"].as_array().context("volumeMounts")? {
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .context("mount without volume")?;
        // Host directories; the test gives its own spool, config and socket.
        if volume["hostPath"]["type"] == "Directory" {
            let ro = if mount["readOnly"] == true { ":ro" } else { "" };
            args.push(format!(
                "--volume={}:{}{ro}",
                volume["hostPath"]["path"].as_str().context("hostPath")?,
                mount["mountPath"].as_str().context("mountPath")?
            ));
        }
    }
    Ok(args)
}

#[test]
fn images_build_and_run_as_their_declared_users() -> anyhow::Result<()> {
    let images = images()?;
    for (image, binary, user) in [
        (&images[0], "glasshouse-agent", "0:0"),
        (&images[1], "glasshouse-aggregator", "65532:65532"),
        (&images[2], "glasshouse-analyzer", "65532:65532"),
    ] {
        let config = podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{json .Config.Entrypoint}}",
            image,
        ])?;
        assert_eq!(config, format!("{user} [\"/usr/bin/{binary}\"]"), "{image}");
        let version = podman(&["run", "--rm", image, "--version"])?;
        assert_eq!(version, format!("{binary} {VERSION}"));
    }
    let help = podman(&[
        "run",
        "--rm",
        "--entrypoint",
        "/usr/bin/glasshouse",
        &images[2],
        "--help",
    ])?;
    ensure!(help.contains("watch"), "glasshouse CLI: {help}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_run_the_pipeline_with_the_daemonset_privileges() -> anyhow::Result<()> {
    require_test_image()?;
    let [agent_image, aggregator_image, analyzer_image] = tokio::task::spawn_blocking(images).await??;
    let objects = deploy::validate(&deploy::helm_template(&[])?)?.objects;
    let agent_args = daemonset_run_args(&objects)?;

    let broker = Broker::start()?;
    let podman_api = PodmanService::start()?;
    let scratch = Scratch::new("images")?;
    let dir = &scratch.0;
    let suffix = free_port()?;
    let mut containers = Containers::default();

    // Aggregator image, as the Deployment runs it: non-root, no capabilities,
    // read-only root.
    let ingest = free_port()?;
    let aggregator = format!("gh-deploy-aggregator-{suffix}");
    run_as_deployment(
        &mut containers,
        dir,
        &aggregator,
        "aggregator.toml",
        &format!(
            "listen = \"127.0.0.1:{ingest}\"\nbrokers = \"{}\"\nflush_max_age_ms = 20\n[topics]\npartitions = 3\n",
            broker.bootstrap()
        ),
        aggregator_image,
    )?;
    glasshouse_tests::wait_for_port(([127, 0, 0, 1], ingest).into(), Duration::from_secs(30)).with_context(|| {
        format!(
            "aggregator image did not listen: {}",
            logs(&aggregator).unwrap_or_default()
        )
    })?;

    // Agent image with the DaemonSet's privileges; eBPF forced, so that a
    // missing capability fails instead of falling back.
    let metrics = free_port()?;
    std::fs::create_dir_all(dir.join("spool"))?;
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "aggregators = [\"http://127.0.0.1:{ingest}\"]\nsensor = \"bpf\"\nruntime_sockets = [\"/run/podman/podman.sock\"]\ncri_sockets = []\nbatch_max_age_ms = 50\nmetrics_listen = \"127.0.0.1:{metrics}\"\n"
        ),
    )?;
    let agent = format!("gh-deploy-agent-{suffix}");
    let mut args = agent_args.clone();
    args.extend([
        format!(
            "--volume={}:/etc/glasshouse/agent.toml:ro",
            dir.join("agent.toml").display()
        ),
        format!("--volume={}:/var/lib/glasshouse/spool", dir.join("spool").display()),
        format!("--volume={}:/run/podman/podman.sock:ro", podman_api.socket.display()),
        agent_image,
    ]);
    containers.run(&agent, &args)?;
    let started = tokio::task::spawn_blocking({
        let agent = agent.clone();
        move || wait_for_log(&agent, "sensor started", Duration::from_secs(30))
    })
    .await??;
    ensure!(
        started.contains("mode=\"bpf\""),
        "agent image with {agent_args:?} did not load eBPF:\n{started}"
    );

    // A container started now runs `cat`.
    let name = format!("gh-deploy-workload-{suffix}");
    let container_id = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            let id = podman(&[
                "create",
                "--name",
                &name,
                TEST_IMAGE,
                "/bin/sh",
                "-c",
                "sleep 1; cat /etc/hostname",
            ])?;
            podman(&["start", "--attach", &name])?;
            anyhow::Ok(id)
        }
    })
    .await??;
    containers.0.push(name.clone());

    // An independent consumer finds the exec, attributed, from the node.
    let is_cat = |r: &Row| {
        r.attribution.container_id.as_deref() == Some(container_id.as_str())
            && r.kind == Kind::Exec
            && r.argv.first().map(|a| &**a) == Some("cat")
    };
    let mut tail = glasshouse_tests::Tail::new(&broker.bootstrap(), &[RecordType::Process])?;
    let mut rows: Vec<Row> = Vec::new();
    let seen = tail
        .until(Duration::from_secs(30), |_, batch| {
            rows.extend(process::read_rows(batch)?);
            Ok(rows.iter().any(is_cat))
        })
        .await?;
    drop(tail);
    ensure!(
        seen,
        "no exec of cat in {container_id} within 30 s\nagent:\n{}\naggregator:\n{}",
        logs(&agent)?,
        logs(&aggregator)?
    );
    let found = rows.iter().find(|r| is_cat(r)).cloned().context("seen above")?;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_owned();
    assert_eq!(found.attribution.image.as_deref(), Some(TEST_IMAGE));
    assert_eq!(found.attribution.container_name.as_deref(), Some(name.as_str()));
    assert_eq!(
        found.argv.iter().map(|a| &**a).collect::<Vec<_>>(),
        ["cat", "/etc/hostname"]
    );
    assert_eq!(
        &*found.attribution.host, hostname,
        "the agent in its pod reports the node's host name"
    );
    assert_eq!(
        &*found.attribution.agent_id, hostname,
        "default agent id: the node's host name"
    );

    // Analyzer image, as the Deployment runs it.
    let analyzer = run_analyzer_image(&mut containers, dir, &broker.bootstrap(), suffix, analyzer_image).await?;

    // The agent's /metrics, from the host network, names its mode.
    let page = glasshouse_tests::http_get(&format!("127.0.0.1:{metrics}"), "/metrics").await?;
    ensure!(page.contains("glasshouse_agent_sensor_mode{mode=\"bpf\"} 1"), "{page}");

    // SIGTERM (what Kubernetes sends): the agent drains and exits 0.
    stopped_with_sigterm(&agent)?;
    ensure!(logs(&agent)?.contains("agent stopped"));
    for name in [&analyzer, &aggregator] {
        stopped_with_sigterm(name)?;
    }
    drop(containers);
    // Whatever the analyzer image alerted on is valid OCSF.
    glasshouse_tests::topics::validate_all_alerts(&broker.bootstrap())?;
    drop(podman_api);
    drop(broker);
    Ok(())
}

/// The analyzer image as the Deployment runs it (host network, read-only
/// root, no capabilities), once it reaches Kafka and joins its group.
async fn run_analyzer_image(
    containers: &mut Containers,
    dir: &std::path::Path,
    brokers: &str,
    suffix: u16,
    analyzer_image: String,
) -> anyhow::Result<String> {
    let analyzer = format!("gh-deploy-analyzer-{suffix}");
    run_as_deployment(
        containers,
        dir,
        &analyzer,
        "analyzer.toml",
        &format!(
            "brokers = \"{brokers}\"\ngroup = \"deploy-images-{suffix}\"\nview = true\nsession_timeout_ms = 3000\n[topics]\npartitions = 3\n"
        ),
        analyzer_image,
    )?;

    // The analyzer image, unprivileged on a read-only root, reaches Kafka
    // and joins its group. (Whether the group then gets partitions is the
    // consumer's business, tested in-process by exec_end_to_end: here a
    // fresh group on tansu 0.6 over topics already holding data got none for
    // 90 s, the host binary too, so this test does not wait for rows.)
    tokio::task::spawn_blocking({
        let analyzer = analyzer.clone();
        move || wait_for_log(&analyzer, "consuming", Duration::from_secs(30))
    })
    .await??;

    Ok(analyzer)
}

/// Stops container `name` with SIGTERM (25 s before SIGKILL) and checks it
/// exited 0.
fn stopped_with_sigterm(name: &str) -> anyhow::Result<()> {
    podman(&["stop", "-t", "25", name])?;
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", name])?;
    ensure!(code == "0", "{name} exited {code}:\n{}", logs(name)?);
    Ok(())
}

/// Runs `image` as its Deployment does: host network, read-only root, no
/// capabilities, no new privileges, `config` mounted as
/// `/etc/glasshouse/{file}`.
fn run_as_deployment(
    containers: &mut Containers,
    dir: &std::path::Path,
    name: &str,
    file: &str,
    config: &str,
    image: String,
) -> anyhow::Result<()> {
    std::fs::write(dir.join(file), config)?;
    containers.run(
        name,
        &[
            "--network=host".into(),
            "--read-only".into(),
            "--cap-drop=all".into(),
            "--security-opt=no-new-privileges".into(),
            format!("--volume={}:/etc/glasshouse/{file}:ro", dir.join(file).display()),
            image,
        ],
    )
}
