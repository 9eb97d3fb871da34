//! The README's five-minute walk-through, run as written: `deploy/local/run.sh`
//! starts the local stack (its own state directory, its `glasshouse` link in
//! a temporary folder put first on PATH), then every `sh` block of the
//! walk-through runs in bash from the repository's root; a block followed by
//! `<!-- expect: TEXT -->` must print TEXT (retried for up to a minute: rows
//! reach the lake about 5 s after they happen). Then the stack is stopped the
//! way a user does it when its output is piped through `tee`: SIGINT to the
//! whole foreground process group, which kills `tee` first; every part must
//! still stop.
//!
//! The local stack listens on fixed ports (9092, 50051, 5433, 50052,
//! 9464–9467): this test takes a lock so only one runs at a time, and fails
//! with the ports named if another stack holds them. It removes the
//! container `demo` the walk-through creates, before and after.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

const PORTS: [u16; 8] = [9092, 50051, 5433, 50052, 9464, 9465, 9466, 9467];
/// setup.sh and a cargo build that finds nothing to do take seconds; an
/// incremental rebuild a few minutes.
const START_TIMEOUT: Duration = Duration::from_secs(600);
const EXPECT_TIMEOUT: Duration = Duration::from_secs(60);

/// A shell block of the walk-through and what it must print.
#[derive(Debug, PartialEq)]
struct Block {
    script: String,
    expect: Option<String>,
}

/// The `sh` blocks of the README section that starts with `heading`.
fn walkthrough_blocks(readme: &str, heading: &str) -> anyhow::Result<Vec<Block>> {
    let start = readme
        .find(heading)
        .with_context(|| format!("README has no {heading:?} section"))?;
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut lines = section.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let mut script = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            script.push_str(l);
            script.push('\n');
        }
        let expect = lines
            .peek()
            .and_then(|l| l.trim().strip_prefix("<!-- expect:"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(|e| e.trim().to_owned());
        blocks.push(Block { script, expect });
    }
    Ok(blocks)
}

/// An exclusive lock across test processes on the local stack's ports.
fn local_stack_lock() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("glasshouse-tests-local-stack.lock"))?;
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    ensure!(
        locked == 0,
        "locking the local stack's ports: {}",
        std::io::Error::last_os_error()
    );
    Ok(file)
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// `run.sh … | tee`, in its own process group, like a terminal's foreground job.
struct Stack {
    child: Child,
    state: PathBuf,
    output: PathBuf,
}

impl Stack {
    fn start(repo: &Path, state: &Path, bin: &Path) -> anyhow::Result<Stack> {
        let output = state.with_extension("out");
        let target = glasshouse_tests::workspace_binary("glasshouse")?
            .parent()
            .and_then(Path::parent)
            .context("no target directory")?
            .to_owned();
        let child = Command::new("bash")
            .arg("-c")
            .arg(r#"./deploy/local/run.sh 2>&1 | tee "$1""#)
            .arg("bash")
            .arg(&output)
            .current_dir(repo)
            .env("GLASSHOUSE_STATE", state)
            .env("GLASSHOUSE_BIN_LINK", bin.join("glasshouse"))
            .env("CARGO_TARGET_DIR", target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Stack {
            child,
            state: state.to_owned(),
            output,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    fn wait_running(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log();
            if log.contains("Glasshouse is running") {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("run.sh exited ({status}) before the stack ran:\n{log}");
            }
            ensure!(
                Instant::now() < deadline,
                "run.sh did not start the stack in {START_TIMEOUT:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The pids run.sh recorded for its parts.
    fn parts(&self) -> Vec<(String, i32)> {
        let Ok(dir) = std::fs::read_dir(self.state.join("pids")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let pid = std::fs::read_to_string(e.path()).ok()?.trim().parse().ok()?;
                Some((e.file_name().to_string_lossy().into_owned(), pid))
            })
            .collect()
    }

    /// Ctrl-C at the terminal: SIGINT to the whole process group (`tee` too).
    /// Every part must be gone within a minute.
    fn interrupt(&mut self) -> anyhow::Result<()> {
        let parts = self.parts();
        let group = i32::try_from(self.child.id())?;
        // SAFETY: signalling the process group this test created.
        unsafe { libc::kill(-group, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && (parts.iter().any(|(_, p)| alive(*p)) || self.child.try_wait()?.is_none()) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let left: Vec<_> = parts.iter().filter(|(_, p)| alive(*p)).collect();
        ensure!(
            left.is_empty(),
            "after Ctrl-C (tee killed first) these parts still run: {left:?}"
        );
        ensure!(
            self.child.try_wait()?.is_some(),
            "run.sh still runs a minute after Ctrl-C"
        );
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Best effort, after a failure: stop the parts run.sh recorded.
        for (_, pid) in self.parts() {
            // SAFETY: pids this test's run.sh started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Ok(group) = i32::try_from(self.child.id()) {
            // SAFETY: the process group this test created (bash, run.sh, tee, cargo).
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

fn run_block(repo: &Path, bin: &Path, state: &Path, block: &Block) -> anyhow::Result<()> {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let deadline = Instant::now() + EXPECT_TIMEOUT;
    loop {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &block.script])
            .current_dir(repo)
            .env("PATH", &path)
            .env("GLASSHOUSE_STATE", state)
            .stdin(Stdio::null())
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let seen = block.expect.as_ref().is_none_or(|e| stdout.contains(e.as_str()));
        if out.status.success() && seen {
            eprintln!("$ {}{stdout}", block.script);
            return Ok(());
        }
        // Only blocks that wait for something are tried again.
        if block.expect.is_none() || Instant::now() >= deadline {
            bail!(
                "README block failed ({}{}):\n{}--- stdout\n{stdout}--- stderr\n{stderr}",
                out.status,
                block
                    .expect
                    .as_ref()
                    .map(|e| format!(", expected {e:?} in its output"))
                    .unwrap_or_default(),
                block.script
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn readme_walkthrough_runs_on_the_local_stack() -> anyhow::Result<()> {
    glasshouse_tests::require_test_image()?;
    let repo = glasshouse_tests::manifest_dir().join("..").canonicalize()?;
    let readme = std::fs::read_to_string(repo.join("README.md"))?;
    let blocks = walkthrough_blocks(&readme, "## Five minutes with Glasshouse")?;
    ensure!(
        blocks.len() >= 5,
        "the walk-through has {} sh blocks: {blocks:?}",
        blocks.len()
    );

    let _lock = local_stack_lock()?;
    let busy: Vec<u16> = PORTS
        .iter()
        .copied()
        .filter(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        .collect();
    ensure!(
        busy.is_empty(),
        "ports of the local stack in use (another ./deploy/local/run.sh?): {busy:?}"
    );
    let _ = glasshouse_tests::podman(&["rm", "-f", "demo"]);

    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let bin = dir.path().join("bin");
    let mut stack = Stack::start(&repo, &state, &bin)?;
    stack.wait_running()?;
    let log = stack.log();
    let link = bin.join("glasshouse");
    ensure!(
        log.contains(&format!("`glasshouse` is on PATH: {}", link.display())) && link.is_file(),
        "run.sh did not say where it put glasshouse:\n{log}"
    );
    ensure!(
        log.contains("Try next"),
        "run.sh did not print the next commands:\n{log}"
    );

    let result = blocks.iter().try_for_each(|b| run_block(&repo, &bin, &state, b));
    let _ = glasshouse_tests::podman(&["rm", "-f", "demo"]);
    let stopped = stack.interrupt();
    result?;
    stopped?;
    // No Kafka property warnings from the local stack's own configs.
    for part in ["aggregator", "analyzer", "query"] {
        let log = std::fs::read_to_string(state.join("logs").join(format!("{part}.log")))?;
        let warned: Vec<&str> = log.lines().filter(|l| l.contains("CONFWARN")).collect();
        ensure!(
            warned.is_empty(),
            "{part}: librdkafka configuration warnings: {warned:#?}"
        );
    }
    Ok(())
}

#[test]
fn walkthrough_blocks_are_read_with_their_expectations() {
    let readme = "# X\n## Five minutes\ntext\n```sh\na\nb\n```\n<!-- expect: out -->\n```text\nskip\n```\n```sh\nc\n```\n## Next\n```sh\nd\n```\n";
    let blocks = walkthrough_blocks(readme, "## Five minutes").unwrap();
    assert_eq!(
        blocks,
        vec![
            Block {
                script: "a\nb\n".into(),
                expect: Some("out".into())
            },
            Block {
                script: "c\n".into(),
                expect: None
            },
        ]
    );
}
