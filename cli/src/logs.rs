//! `--log-format text|json` and `--log-level` of the long-running commands (`node`, `serve`,
//! `run`): their logs go to stderr through `tracing`, one line per event, as text for people or
//! as JSON objects for log collectors. Execution, task and attempt ids are fields (of the event,
//! or of the `execution` span it happened in), never only words in a message. No token is ever
//! a field or in a message: no request, header or URL with credentials is logged.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use tracing::Level;

/// The progress bar on stderr, if one is drawn: log lines are written around it.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Log lines from now on are written above `bar` (or plainly, with `None`).
pub fn around(bar: Option<&indicatif::ProgressBar>) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar.cloned();
}

/// stderr, with the progress bar cleared while a line is written. The formatter writes each
/// event whole in one call.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(line))?,
            None => std::io::stderr().write_all(line)?,
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `2026-12-03T09:00:00.000Z  INFO execution{execution=ex-1}: task ended task=3 attempt=1`.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `span`.
    Json,
}

/// The least severe events written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Severity {
    /// Failures only.
    Error,
    /// And what the work survives (a node suspected, a task moved, a journal that stalls).
    Warn,
    /// And each execution's, node's and task attempt's life.
    Info,
    /// And whatever else the daemons' libraries say at this level.
    Debug,
}

/// The logging flags.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Logs on stderr as `text` or as `json` lines.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    log_format: Format,
    /// The least severe events logged [default: info for daemons, warn for `run`].
    #[arg(long, value_enum)]
    log_level: Option<Severity>,
}

impl LogArgs {
    /// Sends the process's logs to stderr; `default` unless `--log-level` says otherwise.
    pub fn init(&self, default: Severity) {
        let level = match self.log_level.unwrap_or(default) {
            Severity::Error => Level::ERROR,
            Severity::Warn => Level::WARN,
            Severity::Info => Level::INFO,
            Severity::Debug => Level::DEBUG,
        };
        // Colours for a person at a terminal only: a file or a collector gets plain text.
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let builder =
            tracing_subscriber::fmt().with_writer(|| Stderr).with_max_level(level).with_target(false).with_ansi(colour);
        // Another subscriber already set (a test harness's) keeps its place.
        let _ = match self.log_format {
            Format::Text => builder.try_init(),
            Format::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        };
    }
}
