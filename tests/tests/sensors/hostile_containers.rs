//! Containers that attack the agent (`tests/hostile.c`, static, run inside
//! real Podman containers) while the real agent (eBPF, its own process, a
//! CPU and memory budget) streams through a real aggregator into a real
//! broker.
//!
//! Hurting it: a 1 MiB argv exec'd in a loop, about 100,000 distinct strings
//! per second (unique file names under /etc and unique arguments), invalid
//! UTF-8 in paths and arguments, a fork bomb (held by `--pids-limit`), and
//! an exec storm, all at once. The agent must stay alive and within its
//! memory budget, keep its CPU near its budget (see the bound below), count
//! what it drops (gap records in Kafka), and keep attributing a quiet
//! container's marked execs meanwhile: every one arrives, or is covered by a
//! gap of that container.
//!
//! Fooling it: a copy of a binary at `/tmp/kworker` exec'd with argv[0]
//! `[kworker/0:1]` is reported with its true path and its real argv (and as
//! drift); a process that deletes its own executable and goes on working is
//! still attributed, its writes and children naming the deleted file.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_proto::record::RecordType;
use glasshouse_proto::{file, gaps, ipc, process};
use glasshouse_tests::marks::{self, Watch};
use glasshouse_tests::topics::payloads_until_quiet;
use glasshouse_tests::{
    AgentProcess, AggregatorProcess, Broker, PodmanService, TEST_IMAGE, build_hostile, http_get, metric_value, podman,
    require_test_image,
};

/// The agent's budget in this test: percent of one core, and MiB.
const CPU_BUDGET_PERCENT: f64 = 25.0;
const MEMORY_BUDGET_MIB: u64 = 256;
/// Events per second one container may produce: well above the quiet
/// container's (about 15 marks/s, each an exec, a fork and an exit, plus its
/// `sleep`), well below the attackers'.
const RATE_LIMIT: u32 = 500;
/// How long each attack runs.
const ATTACK_SECS: u32 = 15;

/// Containers removed on drop.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            // Ignored: cleanup only.
            let _ = podman(&["rm", "-f", "-t", "0", name]);
        }
    }
}

struct Stack {
    broker: Broker,
    _podman: PodmanService,
    _aggregator: AggregatorProcess,
    agent: AgentProcess,
}

fn stack(agent_id: &str, extra: &str) -> anyhow::Result<Stack> {
    require_test_image()?;
    let broker = Broker::start()?;
    let podman_api = PodmanService::start()?;
    let aggregator = AggregatorProcess::start(&broker.bootstrap(), "flush_max_age_ms = 20")?;
    let agent = AgentProcess::start(
        &aggregator.endpoint(),
        &format!(
            "agent_id = \"{agent_id}\"\nsensor = \"bpf\"\nruntime_sockets = [\"{}\"]\nbatch_max_age_ms = 50\n{extra}",
            podman_api.socket.display()
        ),
    )?;
    Ok(Stack {
        broker,
        _podman: podman_api,
        _aggregator: aggregator,
        agent,
    })
}

fn rows<R>(
    brokers: &str,
    rt: RecordType,
    read: impl Fn(&arrow_array::RecordBatch) -> anyhow::Result<Vec<R>>,
) -> anyhow::Result<Vec<R>> {
    let mut out = Vec::new();
    for p in payloads_until_quiet(brokers, rt.topic(), Duration::from_secs(3))? {
        out.extend(read(&ipc::decode(&p)?)?);
    }
    Ok(out)
}

fn run_attack(containers: &mut Containers, dir: &Path, mode: &str, extra: &[&str]) -> anyhow::Result<String> {
    let name = format!("gh-hostile-{mode}-{}", std::process::id());
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    let volume = format!("{}:/gh:ro", dir.display());
    let secs = ATTACK_SECS.to_string();
    let mut args = vec!["run", "-d", "--name", &name, "-v", &volume];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[TEST_IMAGE, "/gh/hostile", mode, &secs]);
    let id = podman(&args)?;
    containers.0.push(name);
    Ok(id)
}

#[test]
fn attacks_neither_break_nor_blind_the_agent() -> anyhow::Result<()> {
    let hostile = build_hostile()?;
    let s = stack(
        "hostile-agent",
        &format!(
            "cpu_budget_percent = {CPU_BUDGET_PERCENT}\nmemory_budget_mib = {MEMORY_BUDGET_MIB}\n\
             container_rate_limit = {RATE_LIMIT}"
        ),
    )?;
    let brokers = s.broker.bootstrap();
    let metrics = s.agent.metrics.to_string();
    let runtime = tokio::runtime::Runtime::new()?;
    let page = || runtime.block_on(http_get(&metrics, "/metrics")).unwrap_or_default();

    // The quiet container, marking before, during and after the attack.
    let mut containers = Containers(Vec::new());
    let prefix = format!("gh{}quiet", std::process::id());
    let quiet_name = format!("gh-hostile-quiet-{}", std::process::id());
    let _ = podman(&["rm", "-f", "-t", "0", &quiet_name]);
    let quiet_id = marks::run(&quiet_name, &prefix, 1_000_000, 50)?;
    containers.0.push(quiet_name.clone());
    let watch = Watch::start(&brokers, &prefix)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while marks::done(&quiet_name)? < 20 {
        ensure!(Instant::now() < deadline, "the quiet container does not mark");
        std::thread::sleep(Duration::from_millis(200));
    }

    let cpu_before = s.agent.cpu_time()?;
    let started = Instant::now();
    let attackers = start_attacks(&mut containers, &hostile)?;
    // Sample the agent until every attacker has exited.
    let (peak_level, samples) = sample_until_done(&containers.0[1..], &page)?;
    let elapsed = started.elapsed();
    let cpu = (s.agent.cpu_time()? - cpu_before).as_secs_f64() / elapsed.as_secs_f64() * 100.0;
    let peak_rss = s.agent.peak_rss()?;
    let mut done = Vec::new();
    for name in &containers.0[1..] {
        done.push(podman(&["logs", name])?.replace('\n', " "));
    }
    println!("attacks ran {:.1} s: {}", elapsed.as_secs_f64(), done.join("; "));

    // The quiet container: every mark of the attack's time attributed to it.
    let (total, lost) = quiet_marks(watch, &quiet_name, &quiet_id)?;

    // What the agent said it dropped, by container and reason.
    let dropped = dropped_by(&brokers, &quiet_id, &attackers)?;
    let quiet_dropped: u64 = dropped.iter().filter(|((c, _), _)| c == "quiet").map(|(_, n)| n).sum();
    let p = page();
    let counters = drop_counters(&p);

    // What arrived of the attackers.
    let Arrived {
        big,
        big_argv_bytes,
        bad_files,
        bad_execs,
        dict_files,
        bomb_forks,
    } = arrived(&brokers, &attackers)?;

    println!(
        "agent: CPU {cpu:.1} % of a core over the attack (budget {CPU_BUDGET_PERCENT} %), peak RSS {} MiB \
         (budget {MEMORY_BUDGET_MIB} MiB), pressure level peaked at {peak_level} ({samples} samples)",
        peak_rss >> 20
    );
    let mut dropped_sorted: Vec<_> = dropped.iter().collect();
    dropped_sorted.sort();
    println!("gaps (container, reason): dropped {dropped_sorted:?}");
    println!("agent counters: {}", counters.join("; "));
    println!(
        "quiet container: {total} marks, lost {} (its gaps cover {quiet_dropped}); \
         1 MiB argv: {} execs, at most {big_argv_bytes} argv bytes each (separators and the cut mark included); \
         invalid UTF-8: {bad_files} file rows, {} execs; dictionary flood: {dict_files} file rows; \
         fork bomb: {bomb_forks} forks",
        lost.len(),
        big.len(),
        bad_execs.len()
    );

    // The agent is alive and kept its memory budget.
    ensure!(!page().is_empty(), "the agent died");
    ensure!(
        peak_rss <= MEMORY_BUDGET_MIB << 20,
        "peak RSS {} MiB over the {MEMORY_BUDGET_MIB} MiB budget",
        peak_rss >> 20
    );
    // CPU: the budget throttles what is processed and sent, not the reading
    // of kernel events (README: in-kernel sampling is not built), so the
    // agent can exceed it by what reading costs under a storm; the agent
    // budget test saw 2-3.5x a 2 % budget. Bound: twice the budget.
    ensure!(
        cpu <= 2.0 * CPU_BUDGET_PERCENT,
        "agent CPU {cpu:.1} % over twice its {CPU_BUDGET_PERCENT} % budget"
    );
    // /metrics counts every rate-limited event (the gaps read above were
    // sent before the page was read).
    let rate_limited_gaps: u64 = dropped
        .iter()
        .filter(|((_, reason), _)| *reason == gaps::Reason::RateLimited.as_str())
        .map(|(_, n)| n)
        .sum();
    let counted = metric_value(&p, "glasshouse_agent_rate_limited_total").unwrap_or(0);
    ensure!(
        counted >= rate_limited_gaps && counted > 0,
        "glasshouse_agent_rate_limited_total {counted}, rate-limited gaps {rate_limited_gaps}"
    );
    // It counted what it dropped: the floods are beyond the rate limit.
    for flood in ["dict", "execstorm"] {
        ensure!(
            dropped.keys().any(|(c, _)| c == flood),
            "no gap reported for the {flood} attack: {dropped_sorted:?}"
        );
    }
    // The quiet container was not blinded: every loss is a reported gap.
    ensure!(
        (lost.len() as u64) <= quiet_dropped,
        "quiet container lost {} marks, gaps cover {quiet_dropped}",
        lost.len()
    );
    ensure!(total > 0 && lost.len() < total as usize, "no quiet mark arrived");
    // The hostile inputs arrived bounded and escaped-safe.
    ensure!(!big.is_empty(), "no exec of the 1 MiB argv arrived");
    // The kernel side keeps 8 KiB of the argument area (separators
    // included) and the agent marks the cut with one more argument.
    for r in &big {
        let (mark, kept) = r.argv.split_last().context("empty argv")?;
        let kept_bytes: usize = kept.iter().map(|a| a.len() + 1).sum();
        ensure!(
            mark.as_bytes() == glasshouse_agent::procfs::TRUNCATED_MARK && kept_bytes <= 8 * 1024,
            "1 MiB argv arrived as {kept_bytes} bytes, last argument {:?}",
            mark.get(..mark.len().min(40))
        );
    }
    ensure!(
        bad_files > 0 && !bad_execs.is_empty(),
        "no invalid-UTF-8 file or exec arrived"
    );
    for r in &bad_execs {
        let path = r.path.as_deref().unwrap_or_default();
        ensure!(path.contains('\u{fffd}'), "invalid UTF-8 not replaced: {path:?}");
    }
    ensure!(bomb_forks > 0, "no fork of the fork bomb arrived");
    let _ = std::fs::remove_dir_all(&hostile);
    Ok(())
}

#[test]
fn renamed_and_deleted_binaries_are_reported_truthfully() -> anyhow::Result<()> {
    let hostile = build_hostile()?;
    let s = stack("fooled-agent", "")?;
    let brokers = s.broker.bootstrap();
    let mut containers = Containers(Vec::new());
    let name = format!("gh-fool-{}", std::process::id());
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    let volume = format!("{}:/gh:ro", hostile.display());
    let script = "cp /gh/hostile /tmp/kworker && /tmp/kworker as '[kworker/0:1]' /tmp/kworker noop disguised; \
                  cp /gh/hostile /tmp/gone && /tmp/gone selfdelete 3; echo done";
    let id = podman(&[
        "run", "--name", &name, "-v", &volume, TEST_IMAGE, "/bin/sh", "-c", script,
    ])?;
    containers.0.push(name.clone());
    ensure!(id.contains("done"), "the container's script failed: {id}");
    let id = podman(&["inspect", "-f", "{{.Id}}", &name])?;

    let deadline = Instant::now() + Duration::from_secs(60);
    let (execs, writes) = loop {
        let execs: Vec<process::Row> = rows(&brokers, RecordType::Process, |b| Ok(process::read_rows(b)?))?
            .into_iter()
            .filter(|r| r.attribution.container_id.as_deref() == Some(id.as_str()) && r.kind == process::Kind::Exec)
            .collect();
        let writes: Vec<file::Row> = rows(&brokers, RecordType::File, |b| Ok(file::read_rows(b)?))?
            .into_iter()
            .filter(|r| r.attribution.container_id.as_deref() == Some(id.as_str()) && &*r.path == "/etc/gh-deleted")
            .collect();
        let disguised = execs
            .iter()
            .any(|r| r.argv.first().is_some_and(|a| &**a == "[kworker/0:1]"));
        let after = execs
            .iter()
            .any(|r| r.argv.get(1).is_some_and(|a| &**a == "after-delete"));
        if disguised && after && !writes.is_empty() {
            break (execs, writes);
        }
        ensure!(
            Instant::now() < deadline,
            "missing rows: disguised exec {disguised}, exec after delete {after}, writes {}",
            writes.len()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    // The exec by the disguise itself: argv[0] is what it chose.
    let disguised = execs
        .iter()
        .find(|r| r.argv.first().is_some_and(|a| &**a == "[kworker/0:1]"))
        .with_context(|| format!("no exec with the disguise's argv[0]: {execs:#?}"))?;
    println!(
        "renamed binary: path {:?}, argv {:?}, drift {}",
        disguised.path, disguised.argv, disguised.drift
    );
    ensure!(disguised.path.as_deref() == Some("/tmp/kworker"), "{disguised:?}");
    ensure!(
        disguised
            .argv
            .iter()
            .map(|a| &**a)
            .eq(["[kworker/0:1]", "noop", "disguised"]),
        "argv as the process set it: {disguised:?}"
    );
    ensure!(
        disguised.drift,
        "a binary copied in after the start is drift: {disguised:?}"
    );

    let gone = execs
        .iter()
        .find(|r| r.path.as_deref() == Some("/tmp/gone"))
        .context("no exec of /tmp/gone")?;
    let after = execs
        .iter()
        .find(|r| r.argv.get(1).is_some_and(|a| &**a == "after-delete"))
        .context("exec after delete")?;
    let write = &writes[0];
    println!(
        "deleted executable: its exec {:?} (drift {}); its child's parent_exe {:?}; its write's exe {:?}",
        gone.path, gone.drift, after.parent_exe, write.exe
    );
    ensure!(gone.drift, "{gone:?}");
    // Still attributed, naming the file that ran (the kernel may add " (deleted)").
    for (what, exe) in [("child's parent", &after.parent_exe), ("writer", &write.exe)] {
        let exe = exe.as_deref().unwrap_or_default();
        ensure!(
            exe == "/tmp/gone" || exe == "/tmp/gone (deleted)",
            "{what} exe {exe:?}: not the deleted file"
        );
    }
    let _ = std::fs::remove_dir_all(&hostile);
    Ok(())
}

/// What arrived of the attackers, from the topics.
struct Arrived {
    /// Execs of the 1 MiB argv, and the most argv bytes one of them kept.
    big: Vec<process::Row>,
    big_argv_bytes: usize,
    /// File rows and execs of invalid-UTF-8 names.
    bad_files: usize,
    bad_execs: Vec<process::Row>,
    /// File rows of the dictionary flood.
    dict_files: usize,
    /// Forks of the fork bomb.
    bomb_forks: u64,
}

fn arrived(brokers: &str, attackers: &HashMap<&str, String>) -> anyhow::Result<Arrived> {
    let process_rows = rows(brokers, RecordType::Process, |b| Ok(process::read_rows(b)?))?;
    let file_rows = rows(brokers, RecordType::File, |b| Ok(file::read_rows(b)?))?;
    let of = |mode: &str| attackers.get(mode).cloned().unwrap_or_default();
    let big: Vec<process::Row> = process_rows
        .iter()
        .filter(|r| {
            r.attribution.container_id.as_deref() == Some(of("bigargv").as_str())
                && r.argv.get(1).is_some_and(|a| &**a == "noop")
        })
        .cloned()
        .collect();
    let big_argv_bytes = big
        .iter()
        .map(|r| r.argv.iter().map(|a| a.len() + 1).sum::<usize>())
        .max()
        .unwrap_or(0);
    let bad_files = file_rows
        .iter()
        .filter(|r| {
            r.attribution.container_id.as_deref() == Some(of("badutf8").as_str()) && r.path.starts_with("/etc/bad-")
        })
        .count();
    let bad_execs: Vec<process::Row> = process_rows
        .iter()
        .filter(|r| {
            r.attribution.container_id.as_deref() == Some(of("badutf8").as_str())
                && r.kind == process::Kind::Exec
                && r.path.as_deref().is_some_and(|p| p.starts_with("/tmp/bad-"))
        })
        .cloned()
        .collect();
    let dict_files = file_rows
        .iter()
        .filter(|r| r.attribution.container_id.as_deref() == Some(of("dict").as_str()))
        .count();
    let bomb_forks = process_rows
        .iter()
        .filter(|r| {
            r.attribution.container_id.as_deref() == Some(of("forkbomb").as_str()) && r.kind == process::Kind::Fork
        })
        .map(|r| u64::from(r.count))
        .sum::<u64>();

    Ok(Arrived {
        big,
        big_argv_bytes,
        bad_files,
        bad_execs,
        dict_files,
        bomb_forks,
    })
}

/// Events the agent reported as dropped (its gaps), by container
/// ("quiet", an attack mode, "other" or "host") and reason.
fn dropped_by(
    brokers: &str,
    quiet_id: &str,
    attackers: &HashMap<&str, String>,
) -> anyhow::Result<HashMap<(String, &'static str), u64>> {
    let gap_rows = rows(brokers, RecordType::Gaps, |b| Ok(gaps::read_rows(b)?))?;
    let mut dropped: HashMap<(String, &'static str), u64> = HashMap::new();
    let name_of = |id: Option<&str>| -> String {
        match id {
            Some(id) if id == quiet_id => "quiet".to_owned(),
            Some(id) => attackers
                .iter()
                .find(|(_, a)| a.as_str() == id)
                .map_or_else(|| "other".to_owned(), |(m, _)| (*m).to_owned()),
            None => "host".to_owned(),
        }
    };
    for g in &gap_rows {
        *dropped
            .entry((name_of(g.attribution.container_id.as_deref()), g.reason.as_str()))
            .or_default() += g.dropped;
    }
    Ok(dropped)
}

/// Reads the agent's `/metrics` (through `page`) every half second until
/// none of `attackers` runs; returns the highest pressure level seen and
/// the number of samples. Fails if the page stops answering.
fn sample_until_done(attackers: &[String], page: &dyn Fn() -> String) -> anyhow::Result<(u64, u32)> {
    let mut peak_level = 0;
    let mut samples = 0;
    let mut inspect = vec!["inspect", "-f", "{{.State.Running}}"];
    inspect.extend(attackers.iter().map(String::as_str));
    let deadline = Instant::now() + Duration::from_secs(u64::from(ATTACK_SECS) + 120);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let p = page();
        ensure!(
            !p.is_empty(),
            "the agent's /metrics stopped answering during the attack"
        );
        peak_level = peak_level.max(metric_value(&p, "glasshouse_agent_budget_level").unwrap_or(0));
        samples += 1;
        if !podman(&inspect)?.contains("true") {
            break;
        }
        ensure!(Instant::now() < deadline, "the attacks did not end");
    }
    Ok((peak_level, samples))
}

/// Starts one container per attack mode; their ids by mode.
fn start_attacks(containers: &mut Containers, hostile: &Path) -> anyhow::Result<HashMap<&'static str, String>> {
    let mut attackers = HashMap::new();
    for (mode, extra) in [
        ("bigargv", &[][..]),
        ("dict", &[][..]),
        ("badutf8", &[][..]),
        // The host survives the bomb: at most 64 tasks.
        ("forkbomb", &["--pids-limit", "64"][..]),
        ("execstorm", &[][..]),
    ] {
        attackers.insert(mode, run_attack(containers, hostile, mode, extra)?);
    }
    Ok(attackers)
}

/// Stops the quiet container and waits for its marks: how many it made and
/// which were lost; every mark that arrived is attributed to it.
fn quiet_marks(watch: Watch, quiet_name: &str, quiet_id: &str) -> anyhow::Result<(u32, Vec<u32>)> {
    std::thread::sleep(Duration::from_secs(2));
    podman(&["kill", quiet_name])?;
    let _ = podman(&["wait", quiet_name]);
    let total = marks::done(quiet_name)?;
    watch.wait_for(total, Duration::from_secs(60))?;
    let (lost, attributed) = {
        let t = watch.lock()?;
        (t.lost(total), t.containers.clone())
    };
    watch.finish()?;
    ensure!(
        attributed.keys().all(|c| c.as_deref() == Some(quiet_id)),
        "quiet marks attributed to {attributed:?}"
    );

    Ok((total, lost))
}

/// The agent's counters of what it dropped, from its `/metrics` page.
fn drop_counters(page: &str) -> Vec<String> {
    page.lines()
        .filter(|l| {
            !l.starts_with('#') && (l.contains("drop") || l.contains("rate_limited") || l.contains("unreadable"))
        })
        .map(str::to_owned)
        .collect()
}
