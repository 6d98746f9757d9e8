//! Simulations running in the background: one seed, a sweep, or a comparison of strategies,
//! each on threads of its own (a simulation is CPU work; it never runs on the async runtime),
//! each with a [`Watch`] that shows its progress and stops it. A tool waits for a job as long as
//! its caller allows, then hands back the id; the status tools read the job later.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dtest_core::report::Report;
use dtest_core::scenario::{Distribution, Scenario};
use dtest_sim::sweep::SeedOutcome;
use dtest_sim::{SimError, SimOptions, Watch};

/// Jobs running at once; beyond, a tool answers that the server is busy.
pub const RUNNING_MAX: usize = 4;

/// Jobs remembered; the oldest finished ones are forgotten beyond.
const KEPT_MAX: usize = 256;

/// Failing seeds a sweep keeps and shows; the rest are counted.
pub const FAILING_KEPT: usize = 100;

/// What a job does.
#[derive(Clone, Debug)]
pub enum Work {
    /// One seed.
    Simulation,
    /// A range of seeds; the command line that replays one, without `--seed`.
    Sweep { seeds: std::ops::Range<u64>, replay: String },
    /// The same seed under each strategy.
    Comparison { strategies: Vec<Distribution>, seed: u64 },
}

/// What a job ended with.
#[derive(Clone, Debug)]
pub enum Ended {
    /// One seed's report.
    Report(Box<Report>),
    /// A sweep's counts and first failing seeds.
    Sweep(SweepEnd),
    /// One report per strategy.
    Comparison(Vec<Report>),
    /// Stopped by a cancel.
    Cancelled,
    /// The scenario cannot be simulated.
    Error(String),
}

/// What a sweep keeps of its outcomes: a million seeds' worth would not fit many jobs.
#[derive(Clone, Debug)]
pub struct SweepEnd {
    /// Seeds that passed.
    pub passed: u64,
    /// Seeds that failed.
    pub failed: u64,
    /// The first [`FAILING_KEPT`] failing seeds, in order.
    pub failing: Vec<SeedOutcome>,
    /// The summary `dtest sim --seeds` prints, its list cut as `failing` is.
    pub summary: String,
}

/// A job.
pub struct Job {
    /// `sim-N`.
    pub id: String,
    /// The scenario's name.
    pub name: String,
    /// What it does.
    pub work: Work,
    /// The scenario's simulated length, ms.
    pub duration_ms: u64,
    /// Its clock and its stop.
    pub watch: Watch,
    /// Seeds or strategies done.
    pub done: AtomicU64,
    /// When it started and ended, ms since the Unix epoch.
    pub started_ms: u64,
    ended: Mutex<Option<(Arc<Ended>, u64)>>,
    finished: tokio::sync::watch::Sender<bool>,
}

impl Job {
    /// How it ended, and when; `None` while it runs.
    pub fn ended(&self) -> Option<(Arc<Ended>, u64)> {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_running(&self) -> bool {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }

    /// The contract's execution state.
    pub fn state(&self) -> &'static str {
        let Some((ended, _)) = self.ended() else { return "running" };
        match &*ended {
            Ended::Cancelled => "cancelled",
            Ended::Error(_) => "failed",
            Ended::Report(report) => passed(report.passed()),
            Ended::Sweep(sweep) => passed(sweep.failed == 0),
            Ended::Comparison(reports) => passed(reports.iter().all(Report::passed)),
        }
    }

    /// How many units of work it has: simulated ms for one seed, seeds, or strategies.
    pub fn total(&self) -> u64 {
        match &self.work {
            Work::Simulation => self.duration_ms,
            Work::Sweep { seeds, .. } => seeds.end - seeds.start,
            Work::Comparison { strategies, .. } => strategies.len() as u64,
        }
    }

    /// How many of [`Job::total`] are done.
    pub fn progress(&self) -> u64 {
        match &self.work {
            Work::Simulation => self.watch.now_ms().min(self.duration_ms),
            _ => self.done.load(Ordering::Relaxed),
        }
    }

    /// Waits until it ends.
    pub async fn finished(&self) {
        let mut finished = self.finished.subscribe();
        let _ = finished.wait_for(|done| *done).await;
    }

    fn end(&self, ended: Ended) {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some((Arc::new(ended), dtest_serve::unix_ms()));
        self.finished.send_replace(true);
    }
}

fn passed(passed: bool) -> &'static str {
    if passed { "succeeded" } else { "failed" }
}

/// The jobs of this server.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    next: AtomicU64,
}

impl Jobs {
    /// Starts `work` on `scenario`; `None` when [`RUNNING_MAX`] jobs run already.
    pub fn start(&self, scenario: Scenario, options: SimOptions, work: Work) -> Option<Arc<Job>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.values().filter(|job| job.is_running()).count() >= RUNNING_MAX {
            return None;
        }
        while jobs.len() >= KEPT_MAX {
            let Some(oldest) = jobs.iter().find(|(_, job)| !job.is_running()).map(|(n, _)| *n) else { break };
            jobs.remove(&oldest);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let watch = Watch::default();
        let job = Arc::new(Job {
            id: format!("sim-{n}"),
            name: scenario.name.clone(),
            work,
            duration_ms: scenario.duration_ms,
            watch: watch.clone(),
            done: AtomicU64::new(0),
            started_ms: dtest_serve::unix_ms(),
            ended: Mutex::new(None),
            finished: tokio::sync::watch::Sender::new(false),
        });
        jobs.insert(n, job.clone());
        let running = job.clone();
        let options = SimOptions { watch: Some(watch), ..options };
        std::thread::spawn(move || {
            // A panic (a core assertion) must still end the job, or it would hold a running slot
            // for good.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&running, &scenario, &options)));
            running.end(ran.unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("no message");
                Ended::Error(format!("the simulation panicked ({why}); this is a bug in dtest"))
            }));
        });
        Some(job)
    }

    /// The job `id`, if this server has it.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        let n: u64 = id.strip_prefix("sim-")?.parse().ok()?;
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&n).cloned()
    }
}

fn run(job: &Job, scenario: &Scenario, options: &SimOptions) -> Ended {
    let ended = match &job.work {
        Work::Simulation => dtest_sim::simulate(scenario, options).map(|report| Ended::Report(Box::new(report))),
        Work::Sweep { seeds, replay } => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let progress = |_: &SeedOutcome| {
                job.done.fetch_add(1, Ordering::Relaxed);
            };
            dtest_sim::sweep::sweep(scenario, seeds.clone(), options, threads, &progress).map(|sweep| {
                let failing: Vec<SeedOutcome> = sweep.failing().take(FAILING_KEPT).cloned().collect();
                let failed = sweep.failing().count() as u64;
                Ended::Sweep(SweepEnd {
                    passed: sweep.outcomes.len() as u64 - failed,
                    failed,
                    failing,
                    summary: sweep.summary(replay, FAILING_KEPT),
                })
            })
        }
        Work::Comparison { strategies, .. } => {
            let progress = |_: &Report| {
                job.done.fetch_add(1, Ordering::Relaxed);
            };
            dtest_sim::compare::compare(scenario, options, strategies, &progress).map(Ended::Comparison)
        }
    };
    match ended {
        Ok(ended) => ended,
        Err(SimError::Stopped) => Ended::Cancelled,
        Err(e) => Ended::Error(e.to_string()),
    }
}
