//! Running a command task: its own process group, output kept to a bounded tail, the exit code
//! as the outcome. Timeouts and cancellation are the agent's decisions; the shell only stops the
//! process group when told.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use dtest_core::protocol::Outcome;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Bytes of output kept per stream (the end of it).
pub const OUTPUT_TAIL: usize = 2048;

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

/// Runs `argv` in `workdir` to its end. Dropping the future kills the whole process group.
pub async fn run(argv: &[String], env: &BTreeMap<String, String>, workdir: &Path) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::Failed("the command is empty".to_owned());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env)
        .current_dir(workdir)
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

/// Reads a stream to its end, keeping its last [`OUTPUT_TAIL`] bytes.
async fn tail(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept: Vec<u8> = Vec::with_capacity(OUTPUT_TAIL);
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * OUTPUT_TAIL {
                    kept.drain(..kept.len() - OUTPUT_TAIL);
                }
            }
        }
    }
    if kept.len() > OUTPUT_TAIL {
        kept.drain(..kept.len() - OUTPUT_TAIL);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_the_instance() {
        let argv = ["t".to_owned(), "--shard".to_owned(), "{index}/{count}".to_owned()];
        assert_eq!(substitute(&argv, 3, 12), ["t", "--shard", "3/12"]);
    }

    #[tokio::test]
    async fn exit_codes_decide_and_failures_keep_the_tail_of_the_output() {
        let dir = std::env::temp_dir();
        let env = BTreeMap::new();
        assert_eq!(run(&["true".to_owned()], &env, &dir).await, Outcome::Passed);
        let script = "for i in $(seq 1 5000); do echo line $i; done; echo boom >&2; exit 3";
        let outcome = run(&["sh".to_owned(), "-c".to_owned(), script.to_owned()], &env, &dir).await;
        let Outcome::Failed(message) = outcome else { panic!("a failing command fails") };
        assert!(message.starts_with("exit code 3"), "{message}");
        assert!(message.contains("line 5000") && !message.contains("line 1\n"), "only the tail: {message}");
        assert!(message.contains("boom"));
        assert!(message.len() < 3 * OUTPUT_TAIL);
        let missing = run(&["no-such-program-dtest".to_owned()], &env, &dir).await;
        assert!(matches!(missing, Outcome::Failed(m) if m.starts_with("cannot start no-such-program-dtest")));
    }
}
