//! Running a command task with least privilege: its own process group, its own directory
//! (created 0700 before it starts, removed after its process group is killed), a scrubbed
//! environment (none of the daemon's variables but a few harmless ones), output kept to a
//! bounded tail, the exit code as the outcome. Timeouts and cancellation are the agent's
//! decisions; the shell only stops the process group when told.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dtest_core::protocol::Outcome;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Bytes of output kept per stream (the end of it).
pub const OUTPUT_TAIL: usize = 2048;

/// The only variables of the daemon's own environment a command gets; every other one (tokens,
/// credentials, whatever the daemon was started with) is dropped.
pub const KEPT_VARIABLES: [&str; 5] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

/// A command's `PATH` when the daemon has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Removing an attempt's directory is tried this many times, a moment apart: the processes of a
/// group just killed may still be writing into it.
const REMOVE_TRIES: u32 = 20;

/// A command's whole environment: of `parent` (the daemon's) only [`KEPT_VARIABLES`], with
/// `PATH` [`DEFAULT_PATH`] when it has none; `TMPDIR` the attempt's own directory; the plan's
/// variables over those; the node's own (`DTEST_*`) over everything.
pub fn environment(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    tmpdir: &Path,
    plan: &BTreeMap<String, String>,
    node: &[(&str, OsString)],
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> =
        parent.into_iter().filter(|(name, _)| KEPT_VARIABLES.iter().any(|kept| name == kept)).collect();
    env.entry("PATH".into()).or_insert_with(|| DEFAULT_PATH.into());
    env.insert("TMPDIR".into(), tmpdir.into());
    env.extend(plan.iter().map(|(name, value)| (name.into(), value.into())));
    env.extend(node.iter().map(|(name, value)| ((*name).into(), value.clone())));
    env
}

/// Where and with what a command runs, besides its arguments.
#[derive(Clone, Debug)]
pub struct Setting {
    /// The attempt's own directory, created (0700, empty) before the command starts and removed
    /// after its process group is killed; its `TMPDIR`, and where it runs unless `cwd` says.
    pub dir: PathBuf,
    /// Where it runs instead of `dir`, if the plan says.
    pub cwd: Option<PathBuf>,
    /// The node's working directory (absolute): a program given as a relative path with a `/`
    /// (`./run-tests`, `bin/check`) is found there.
    pub workdir: PathBuf,
    /// Its whole environment (see [`environment`]).
    pub env: BTreeMap<OsString, OsString>,
}

/// `argv` with `{index}` and `{count}` replaced by the instance's.
pub fn substitute(argv: &[String], index: u32, count: u32) -> Vec<String> {
    argv.iter().map(|arg| arg.replace("{index}", &index.to_string()).replace("{count}", &count.to_string())).collect()
}

/// A process group to stop when the task is dropped (cancelled, timed out, node leaving).
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // The group may have ended already; nothing to do then.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// An attempt's directory: removed (in the background, tried again while the killed group's
/// last writes land) when dropped, after the command's process group is killed.
struct Own(PathBuf);

impl Drop for Own {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.0);
        let remove = move || {
            for _ in 0..REMOVE_TRIES {
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => std::thread::sleep(Duration::from_millis(50)),
                    _ => break,
                }
            }
            // The plan's directory goes with its last attempt's; it stays while others run.
            if let Some(plan) = dir.parent() {
                let _ = std::fs::remove_dir(plan);
            }
        };
        // Removal can block on a slow disk: never on the runtime's own threads.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Makes `dir` afresh and empty, readable by its owner only (whatever an earlier life of the
/// daemon left there is removed).
fn create(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut tries = 0;
    loop {
        // The plan's directory may be removed by an attempt ending meanwhile: then again.
        match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < REMOVE_TRIES => tries += 1,
            done => return done,
        }
    }
}

/// The program to start: a relative path with a `/` is the node's working directory's; a bare
/// name is looked up in the command's `PATH`.
fn program_path(program: &str, workdir: &Path) -> PathBuf {
    let path = Path::new(program);
    match program.contains('/') && path.is_relative() {
        true => workdir.join(path),
        false => path.to_path_buf(),
    }
}

/// Runs `argv` as `setting` says to its end. Dropping the future kills the whole process group,
/// then removes the attempt's directory.
pub async fn run(argv: &[String], setting: Setting) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::Failed("the command is empty".to_owned());
    };
    // Made here, not on a blocking thread: with no wait between making it and its guard, a
    // cancel at any moment leaves no directory behind.
    if let Err(e) = create(&setting.dir) {
        return Outcome::Failed(format!("cannot make the task's directory {}: {e}", setting.dir.display()));
    }
    // Declared before the process group's guard, so dropped after it: killed, then removed.
    let _own = Own(setting.dir.clone());
    let mut command = Command::new(program_path(program, &setting.workdir));
    command
        .args(args)
        .env_clear()
        .envs(&setting.env)
        .current_dir(setting.cwd.as_deref().unwrap_or(&setting.dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::Failed(format!("cannot start {program}: {e}")),
    };
    // Killed on drop: on cancellation, and after the end, for whatever the command left running.
    let _group = Group(child.id().map(|id| id as i32));
    let stdout = child.stdout.take().map(tail);
    let stderr = child.stderr.take().map(tail);
    let (status, stdout, stderr) = tokio::join!(child.wait(), opt(stdout), opt(stderr));
    match status {
        Ok(status) if status.success() => Outcome::Passed,
        Ok(status) => {
            let how = match status.code() {
                Some(code) => format!("exit code {code}"),
                None => "killed by a signal".to_owned(),
            };
            let mut message = how;
            for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
                if !text.trim().is_empty() {
                    message.push_str(&format!("\n--- {name} (last {OUTPUT_TAIL} bytes) ---\n{}", text.trim_end()));
                }
            }
            Outcome::Failed(message)
        }
        Err(e) => Outcome::Failed(format!("waiting for {program}: {e}")),
    }
}

async fn opt(f: Option<impl Future<Output = String>>) -> String {
    match f {
        Some(f) => f.await,
        None => String::new(),
    }
}

/// The last [`OUTPUT_TAIL`] bytes of a stream, in memory that never grows past them.
struct Tail {
    kept: Vec<u8>,
}

impl Tail {
    fn new() -> Tail {
        Tail { kept: Vec::with_capacity(OUTPUT_TAIL) }
    }

    /// Keeps the last [`OUTPUT_TAIL`] bytes of what was kept followed by `bytes`, within the
    /// capacity allocated at the start.
    fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(OUTPUT_TAIL)..];
        let over = (self.kept.len() + bytes.len()).saturating_sub(OUTPUT_TAIL);
        self.kept.drain(..over);
        self.kept.extend_from_slice(bytes);
    }
}

/// Reads a stream to its end, keeping its last [`OUTPUT_TAIL`] bytes: a command printing a
/// gigabyte costs this buffer and a read buffer, no more.
async fn tail(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Tail::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => kept.push(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&kept.kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_the_instance() {
        let argv = ["t".to_owned(), "--shard".to_owned(), "{index}/{count}".to_owned()];
        assert_eq!(substitute(&argv, 3, 12), ["t", "--shard", "3/12"]);
    }

    /// A setting of an attempt directory `name` under a fresh scratch working directory.
    fn setting(name: &str) -> Setting {
        let workdir = std::env::temp_dir().join(format!("dtest-exec-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&workdir).expect("a scratch directory");
        let dir = workdir.join(".dtest/tasks/plan/1-1");
        let env = environment(std::env::vars_os(), &dir, &BTreeMap::new(), &[]);
        Setting { dir, cwd: None, workdir, env }
    }

    /// Attempt `n` in the scratch directory of `at`: every attempt has a directory of its own,
    /// as on a node (the one before may still be being removed in the background).
    fn attempt(at: &Setting, n: u32) -> Setting {
        Setting { dir: at.workdir.join(format!(".dtest/tasks/plan/1-{n}")), ..at.clone() }
    }

    /// Whether `dir` is gone within a few seconds (it is removed in the background).
    async fn removed(dir: &Path) -> bool {
        for _ in 0..100 {
            if !dir.exists() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn exit_codes_decide_and_failures_keep_the_tail_of_the_output() {
        let at = setting("exit");
        let sh = |script: &str| ["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        assert_eq!(run(&["true".to_owned()], attempt(&at, 1)).await, Outcome::Passed);
        let script = "for i in $(seq 1 5000); do echo line $i; done; echo boom >&2; exit 3";
        let outcome = run(&sh(script), attempt(&at, 2)).await;
        let Outcome::Failed(message) = outcome else { panic!("a failing command fails") };
        assert!(message.starts_with("exit code 3"), "{message}");
        assert!(message.contains("line 5000") && !message.contains("line 1\n"), "only the tail: {message}");
        assert!(message.contains("boom"));
        assert!(message.len() < 3 * OUTPUT_TAIL);
        let missing = run(&["no-such-program-dtest".to_owned()], attempt(&at, 3)).await;
        assert!(matches!(missing, Outcome::Failed(m) if m.starts_with("cannot start no-such-program-dtest")));
        let _ = std::fs::remove_dir_all(&at.workdir);
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_in_the_memory_it_started_with() {
        let mut tail = Tail::new();
        let capacity = tail.kept.capacity();
        let chunk: Vec<u8> = (0..8192u32).map(|i| b'a' + (i % 26) as u8).collect();
        // 200 MB in the chunks a pipe gives, and single bytes and a chunk larger than the tail.
        for _ in 0..(200_000_000 / chunk.len()) {
            tail.push(&chunk);
        }
        assert_eq!((tail.kept.len(), tail.kept.capacity()), (OUTPUT_TAIL, capacity));
        assert_eq!(tail.kept[..], chunk[chunk.len() - OUTPUT_TAIL..]);
        tail.push(b"x");
        tail.push(&[b'y'; 3 * OUTPUT_TAIL]);
        tail.push(b"z");
        assert_eq!((tail.kept.len(), tail.kept.capacity()), (OUTPUT_TAIL, capacity));
        assert!(tail.kept.ends_with(b"yz"));
    }

    #[tokio::test]
    async fn a_flood_of_output_ends_with_a_bounded_tail() {
        let at = setting("flood");
        let script = "yes | head -c 200000000; yes err | head -c 50000000 >&2; exit 1";
        let outcome = run(&["sh".to_owned(), "-c".to_owned(), script.to_owned()], at.clone()).await;
        let Outcome::Failed(message) = outcome else { panic!("the flood fails: {outcome:?}") };
        let (stdout, stderr) = message.split_once("--- stderr").expect("both streams");
        let lines = |text: &str| text.lines().filter(|l| *l == "y" || *l == "err").count();
        assert!(lines(stdout) > 100 && lines(stdout) <= OUTPUT_TAIL / 2, "{stdout}");
        assert!(lines(stderr) > 100 && lines(stderr) <= OUTPUT_TAIL / 4, "{stderr}");
        assert!(message.len() < 2 * OUTPUT_TAIL + 200, "{} bytes", message.len());
        let _ = std::fs::remove_dir_all(&at.workdir);
    }

    #[test]
    fn the_environment_keeps_a_few_of_the_daemons_variables_and_adds_its_own() {
        let parent = [
            ("PATH", "/opt/bin"),
            ("HOME", "/home/n"),
            ("LANG", "C.UTF-8"),
            ("NODE_TOKEN", "secret"),
            ("AWS_SECRET_ACCESS_KEY", "k"),
            ("TZ", "UTC"),
            ("DTEST_INBOX", "/forged"),
        ]
        .map(|(name, value)| (OsString::from(name), OsString::from(value)));
        let plan: BTreeMap<String, String> =
            [("HOME", "/plan-home"), ("SHARD", "3"), ("DTEST_WORKDIR", "/plan-forged")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .into();
        let node =
            [("DTEST_INBOX", OsString::from("/w/.dtest/inbox-1.jsonl")), ("DTEST_WORKDIR", OsString::from("/w"))];
        let env = environment(parent, Path::new("/w/.dtest/tasks/p/1-1"), &plan, &node);
        let text = |name: &str| env.get(&OsString::from(name)).map(|v| v.to_string_lossy().into_owned());
        let names: Vec<String> = env.keys().map(|k| k.to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["DTEST_INBOX", "DTEST_WORKDIR", "HOME", "LANG", "PATH", "SHARD", "TMPDIR", "TZ"]);
        assert_eq!(text("PATH").as_deref(), Some("/opt/bin"));
        assert_eq!(text("HOME").as_deref(), Some("/plan-home"), "the plan's variables are over the daemon's");
        assert_eq!(text("TMPDIR").as_deref(), Some("/w/.dtest/tasks/p/1-1"));
        assert_eq!(text("DTEST_WORKDIR").as_deref(), Some("/w"), "the node's own are over the plan's");
        assert_eq!(text("DTEST_INBOX").as_deref(), Some("/w/.dtest/inbox-1.jsonl"));
        let bare = environment(Vec::new(), Path::new("/t"), &BTreeMap::new(), &[]);
        let names: Vec<&OsString> = bare.keys().collect();
        assert_eq!(names, ["PATH", "TMPDIR"]);
        assert_eq!(bare[&OsString::from("PATH")], DEFAULT_PATH);
    }

    #[tokio::test]
    async fn a_command_runs_in_its_own_directory_which_is_removed_after_and_finds_relative_programs() {
        let at = setting("own");
        let bin = at.workdir.join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        let script = bin.join("probe");
        let probe = "#!/bin/sh\npwd > \"$1\"\nstat -c %a . >> \"$1\"\ntouch litter\nsleep 300 >/dev/null 2>&1 &\n";
        std::fs::write(&script, probe).expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let report = at.workdir.join("report");
        let argv = ["./bin/probe".to_owned(), report.display().to_string()];
        assert_eq!(run(&argv, at.clone()).await, Outcome::Passed);
        let text = std::fs::read_to_string(&report).expect("the probe ran");
        assert_eq!(text, format!("{}\n700\n", at.dir.display()), "its own directory, the owner's only");
        assert!(removed(&at.dir).await, "{} was removed with what the command left", at.dir.display());
        let elsewhere = Setting { cwd: Some(at.workdir.clone()), ..attempt(&at, 2) };
        assert_eq!(run(&["bin/probe".to_owned(), report.display().to_string()], elsewhere).await, Outcome::Passed);
        assert!(std::fs::read_to_string(&report).expect("ran").starts_with(&format!("{}\n", at.workdir.display())));
        let _ = std::fs::remove_dir_all(&at.workdir);
    }
}
