//! Local node daemons (`dtest run --local N`): child processes of this one on loopback, each
//! standing for a scenario node, started, killed, paused and restarted as the run asks.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dtest_core::scenario::{NodeRef, Resources, Scenario};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use crate::SessionError;

/// Local nodes at most (`--local N`).
pub const LOCAL_MAX: u32 = 64;

/// How long a starting daemon has to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What a local node stands for.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `<group>-<n>`.
    pub name: String,
    /// The scenario node.
    pub node_ref: NodeRef,
    /// Its group's name.
    pub group: String,
    /// Its group's region.
    pub region: Option<String>,
    /// Its group's zone.
    pub zone: Option<String>,
    /// Its group's capabilities.
    pub capabilities: Vec<String>,
    /// Its group's resources, declared to the daemon.
    pub resources: Option<Resources>,
}

/// Which scenario node each of `n` local daemons stands for: the scenario's nodes in order,
/// numbering on within a group when there are more daemons than scenario nodes.
pub fn identities(scenario: &Scenario, n: u32) -> Vec<Identity> {
    let nodes: Vec<NodeRef> = scenario.nodes().collect();
    let mut next_index: BTreeMap<u32, u32> = BTreeMap::new();
    (0..n as usize)
        .map(|i| {
            let base = nodes[i % nodes.len()];
            let group = &scenario.groups[base.group.0 as usize];
            let index = next_index.entry(base.group.0).or_insert(0);
            *index += 1;
            Identity {
                name: format!("{}-{}", group.name, index),
                node_ref: NodeRef { group: base.group, index: *index },
                group: group.name.clone(),
                region: group.region.clone(),
                zone: group.zone.clone(),
                capabilities: group.capabilities.clone(),
                resources: group.resources.clone(),
            }
        })
        .collect()
}

/// A node daemon started by this process.
pub struct LocalNode {
    /// What it stands for.
    pub identity: Identity,
    /// Its port (kept across restarts).
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    exe: Option<PathBuf>,
}

impl LocalNode {
    /// Starts a daemon for `identity` from the `dtest` binary `exe` (this process's own when
    /// `None`), logging to `log`.
    pub async fn start(
        identity: Identity,
        log: PathBuf,
        exe: Option<PathBuf>,
        token_file: &Path,
        heartbeat_ms: u64,
    ) -> Result<LocalNode, SessionError> {
        let mut node = LocalNode { identity, port: 0, child: None, log, exe };
        node.restart(token_file, heartbeat_ms).await?;
        Ok(node)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the daemon process still runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether it was killed and not restarted.
    pub fn is_down(&self) -> bool {
        self.child.is_none()
    }

    /// Sends `signal` to the daemon (a paused one is continued first, so it can act on it).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            if signal != nix::sys::signal::Signal::SIGSTOP {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            }
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }

    /// Kills the daemon at once and waits for it: a crash of the node, so the work it ran dies
    /// with it, as on a machine that goes down. (The daemon runs each command in its own process
    /// group, which SIGKILL to the daemon alone would leave running, orphaned.)
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let groups = child.id().map(|pid| children_of(pid as i32)).unwrap_or_default();
            let _ = child.start_kill();
            let _ = child.wait().await;
            for group in groups {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// Starts the daemon (again, on the same port once it had one) and waits for its address.
    pub async fn restart(&mut self, token_file: &Path, heartbeat_ms: u64) -> Result<(), SessionError> {
        let failed = |why: String| SessionError::LocalNode { node: self.identity.name.clone(), why };
        let exe = match &self.exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe().map_err(|e| failed(format!("cannot find the dtest binary: {e}")))?,
        };
        let workdir = std::env::current_dir().map_err(|e| failed(format!("the current directory: {e}")))?;
        let id = &self.identity;
        let mut command = Command::new(exe);
        command
            .arg("node")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--token-file")
            .arg(token_file)
            .arg("--allow-commands")
            .arg("--group")
            .arg(&id.group)
            .arg("--workdir")
            .arg(&workdir)
            .arg("--heartbeat-ms")
            .arg(heartbeat_ms.to_string())
            .arg("--parent-pid")
            .arg(std::process::id().to_string());
        if let Some(region) = &id.region {
            command.arg("--region").arg(region);
        }
        if let Some(zone) = &id.zone {
            command.arg("--zone").arg(zone);
        }
        if !id.capabilities.is_empty() {
            command.arg("--capabilities").arg(id.capabilities.join(","));
        }
        if let Some(r) = &id.resources {
            let mut declared = format!(
                "cpu_millis={},memory_mb={},disk_mb={},net_mbps={},gpus={}",
                r.cpu_millis, r.memory_mb, r.disk_mb, r.net_mbps, r.gpus
            );
            for (name, amount) in &r.custom {
                declared.push_str(&format!(",{name}={amount}"));
            }
            command.arg("--resources").arg(declared);
        }
        let log = std::fs::File::create(&self.log).map_err(|e| failed(format!("{}: {e}", self.log.display())))?;
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log).kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| failed(format!("cannot start: {e}")))?;
        let stdout = child.stdout.take().ok_or_else(|| failed("no stdout".to_owned()))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => {
                let _ = child.start_kill();
                let mut text = String::new();
                let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
                return Err(failed(format!("did not start: {}", text.trim())));
            }
        };
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .ok_or_else(|| failed(format!("unexpected first line: {line}")))?;
        self.port = port;
        self.child = Some(child);
        Ok(())
    }
}

/// The processes whose parent is `pid`, from /proc (none where there is no /proc).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| {
            let child: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            // `pid (comm) state ppid ...`: the command may hold spaces and parentheses.
            let (_, rest) = stat.rsplit_once(')')?;
            let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// A directory removed when dropped, whatever the way out.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system's temporary one.
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let unique = fresh_token()?;
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), &unique[..12]));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 128 bits from the operating system, as hex: tokens and execution ids.
pub fn fresh_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}
