//! `dtest sim FILE --seed N --shrink`: the smallest scenario that still fails the way seed N
//! fails ([`dtest_sim::shrink`]), written as a scenario file, with the command that replays it.
//! Exits 1 when it wrote one (the run fails), 0 when the seed passes, 2 on bad input.

use std::path::{Path, PathBuf};

use dtest_core::scenario::{self, Scenario};
use dtest_sim::SimOptions;
use dtest_sim::shrink::{Failing, Outcome, SIMULATIONS_MAX, Shrunk, Size, Step, shrink};

use crate::Exit;
use crate::validate::print_stdout;

/// The flags of shrinking, flattened into `dtest sim`'s (hence a name of its own: clap names a
/// flattened group after its struct).
#[derive(Debug, clap::Args)]
pub struct ShrinkArgs {
    /// Shrink the failing run of --seed N (with --swarm, the fault mix it drew): fewer faults
    /// (delta debugging), shorter fault windows, then fewer nodes and tasks, while the same
    /// invariant or expectation still fails. Writes the smallest scenario found and prints the
    /// command that replays it; exits 1 when it wrote one, 0 when the seed passes.
    #[arg(
        long,
        requires = "seed",
        conflicts_with_all = ["seeds", "shard", "check_determinism", "out", "html", "trace"]
    )]
    pub shrink: bool,
    /// Where --shrink writes the smallest scenario, replacing any file there; by default
    /// `<FILE's name>.seed-<N>.shrunk.json` in the current directory.
    #[arg(long, value_name = "PATH", requires = "shrink")]
    pub shrink_out: Option<PathBuf>,
}

/// What the command was given besides its own flags: the scenario (from `file`), the options
/// of the seed's run, the `--strategy` as typed, and whether to print JSON.
pub struct Given<'a> {
    /// The scenario file, as typed.
    pub file: &'a Path,
    /// The scenario it holds.
    pub scenario: &'a Scenario,
    /// The seed's run: seed, strategy, swarm, broken fencing.
    pub options: &'a SimOptions,
    /// `--strategy NAME`, for the replay command.
    pub strategy: Option<&'a str>,
    /// `--json`.
    pub json: bool,
}

/// Shrinks the seed, writes the smallest failing scenario and prints what it did.
pub fn run(args: &ShrinkArgs, given: &Given<'_>) -> Exit {
    if given.strategy == Some("all") {
        eprintln!("error: --shrink shrinks one run; --strategy all runs one per strategy: name one");
        return Exit::BadInput;
    }
    let seed = given.options.seed;
    let out = args.shrink_out.clone().unwrap_or_else(|| default_out(given.file, seed));
    let bar = spinner(seed);
    let progress = |step: &Step| bar.set_message(step_text(step));
    let outcome = shrink(given.scenario, given.options, &progress);
    bar.finish_and_clear();
    let shrunk = match outcome {
        Ok(Outcome::Shrunk(shrunk)) => shrunk,
        Ok(Outcome::Passes) => return passes(given),
        Ok(Outcome::NotReproduced { failing, instead }) => {
            eprintln!(
                "error: seed {seed} fails {failing}, but the scenario file made of its run does not: {instead}; nothing to write"
            );
            return Exit::Failed;
        }
        Err(e) => {
            eprintln!("{}: {e}", given.file.display());
            return Exit::BadInput;
        }
    };
    if let Err(e) = std::fs::write(&out, scenario::to_json(&shrunk.scenario)) {
        eprintln!("error: cannot write {}: {e}", out.display());
        return Exit::BadInput;
    }
    let replay = replay(&out, seed, given);
    let text =
        if given.json { shrunk_json(given, &shrunk, &out, &replay) } else { shrunk_text(&shrunk, &out, &replay) };
    match print_stdout(&text) {
        Exit::Ok => Exit::Failed,
        other => other,
    }
}

/// Where the smallest scenario goes unless `--shrink-out` says: `<stem>.seed-<N>.shrunk.json`
/// in the current directory, so shrinking a shipped scenario leaves the shipped file alone.
fn default_out(file: &Path, seed: u64) -> PathBuf {
    let stem = file.file_stem().map_or_else(|| "scenario".into(), |s| s.to_string_lossy());
    PathBuf::from(format!("{stem}.seed-{seed}.shrunk.json"))
}

/// A spinner on stderr (drawn only on a terminal) with the phase and the simulations so far.
fn spinner(seed: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{{spinner}} shrinking seed {seed}: {{msg}} [{{elapsed}}]"))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("running it (at most {SIMULATIONS_MAX} simulations)"));
    bar
}

/// A progress line: the phase, the smallest failing case so far, and the simulations.
fn step_text(step: &Step) -> String {
    let s = step.size;
    format!(
        "{}: {} faults, {} nodes, {} tasks; {} simulations",
        step.phase.name(),
        s.faults,
        s.nodes,
        s.tasks,
        step.simulations
    )
}

/// Seed passed: says so, exits 0.
fn passes(given: &Given<'_>) -> Exit {
    let seed = given.options.seed;
    if given.json {
        let json = serde_json::json!({
            "scenario": given.scenario.name,
            "seed": seed,
            "swarm": given.options.swarm,
            "passed": true,
        });
        print_stdout(&format!("{}\n", serde_json::to_string_pretty(&json).unwrap_or_default()))
    } else {
        print_stdout(&format!("seed {seed} passes: nothing to shrink\n"))
    }
}

/// The command that replays the smallest scenario: no `--swarm` (its faults are in the file),
/// the strategy and the test-only broken fencing as given.
fn replay(out: &Path, seed: u64, given: &Given<'_>) -> String {
    let mut command = format!("dtest sim {} --seed {seed}", shell_word(&out.display().to_string()));
    if let Some(strategy) = given.strategy {
        command.push_str(&format!(" --strategy {}", shell_word(strategy)));
    }
    if given.options.break_fencing {
        command.push_str(" --break-fencing");
    }
    command
}

/// `word` as a shell reads it back: as is when it is plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Fault-seconds as printed.
fn fault_seconds(size: &Size) -> f64 {
    size.fault_ms as f64 / 1e3
}

/// The result for people: what kept failing, sizes before and after, the file, the replay.
fn shrunk_text(shrunk: &Shrunk, out: &Path, replay: &str) -> String {
    let (b, a) = (&shrunk.before, &shrunk.after);
    let mut text =
        format!("seed {} fails {}; shrunk in {} simulations\n", shrunk.seed, shrunk.failing, shrunk.simulations);
    if shrunk.stopped_early {
        text.push_str(&format!(
            "  stopped at the limit of {SIMULATIONS_MAX} simulations: this is the smallest failing case found so far\n"
        ));
    }
    text.push_str(&format!("  {:<14} {:>9} {:>9}\n", "", "before", "after"));
    for (what, before, after) in
        [("faults", b.faults, a.faults), ("nodes", b.nodes, a.nodes), ("tasks", b.tasks, a.tasks)]
    {
        text.push_str(&format!("  {what:<14} {before:>9} {after:>9}\n"));
    }
    text.push_str(&format!("  {:<14} {:>9.1} {:>9.1}\n", "fault-seconds", fault_seconds(b), fault_seconds(a)));
    text.push_str(&format!("  fails: {}\n", shrunk.failure));
    text.push_str(&format!("wrote {}\nreplay: {replay}\n", out.display()));
    text
}

/// The result as JSON (`--json`).
fn shrunk_json(given: &Given<'_>, shrunk: &Shrunk, out: &Path, replay: &str) -> String {
    let size = |s: &Size| serde_json::json!({ "faults": s.faults, "nodes": s.nodes, "tasks": s.tasks, "fault_seconds": fault_seconds(s) });
    let failing = match &shrunk.failing {
        Failing::Invariant(invariant) => serde_json::json!({ "invariant": invariant }),
        Failing::Liveness(late) => serde_json::json!({ "invariant": "liveness", "late": late }),
        Failing::Expectation(name) => serde_json::json!({ "expectation": name }),
    };
    let json = serde_json::json!({
        "scenario": given.scenario.name,
        "seed": shrunk.seed,
        "swarm": given.options.swarm,
        "passed": false,
        "failing": failing,
        "failure": shrunk.failure,
        "before": size(&shrunk.before),
        "after": size(&shrunk.after),
        "simulations": shrunk.simulations,
        "stopped_early": shrunk.stopped_early,
        "written": out.display().to_string(),
        "replay": replay,
    });
    format!("{}\n", serde_json::to_string_pretty(&json).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_words_survive_the_shell() {
        assert_eq!(shell_word("out/node-failure.seed-7.shrunk.json"), "out/node-failure.seed-7.shrunk.json");
        assert_eq!(shell_word("my file's.json"), r"'my file'\''s.json'");
        assert_eq!(
            default_out(Path::new("scenarios/node-failure.json"), 7),
            Path::new("node-failure.seed-7.shrunk.json")
        );
    }
}
