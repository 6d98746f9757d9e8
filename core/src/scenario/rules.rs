//! The rules a task's values obey, as functions of the validated types: the parser applies them
//! while it builds a [`Scenario`](super::Scenario) from a file, and a node applies them to the
//! plan it is sent, so that both refuse the same values, with the same limits and messages.
//!
//! In a scenario file, the bounds of single fields are the JSON Schema's (`check`), whose
//! problems end the parse before these rules run; the rules check the same bounds again, with
//! the same constants and words, for values that never met the schema (a plan off the wire).
//! Problems are `(field path, message)` pairs, the path under the one the caller gives.

use std::collections::BTreeMap;

use super::check::number;
use super::diagnostic::Path;
use super::{Pattern, Resources};
use crate::limits::*;

/// Problems found: each one's field and what is wrong with it.
pub type Problems = Vec<(Path, String)>;

/// How the times of a value are written where it came from, so that a problem names the field
/// and the amount as its writer wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Units {
    /// Seconds, in `_s` fields: the scenario file.
    Seconds,
    /// Milliseconds, in `_ms` fields: the validated types, and the node API that carries them.
    Millis,
}

impl Units {
    /// The field holding time `stem`: `duration_s` or `duration_ms`.
    pub fn field(self, stem: &str) -> String {
        match self {
            Units::Seconds => format!("{stem}_s"),
            Units::Millis => format!("{stem}_ms"),
        }
    }

    /// `ms` as written in these units: `2.5` seconds, `2500` milliseconds.
    pub fn amount(self, ms: u64) -> String {
        match self {
            Units::Seconds => number(ms as f64 / 1000.0),
            Units::Millis => ms.to_string(),
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Units::Seconds => "s",
            Units::Millis => "ms",
        }
    }
}

/// A name of a group, task, target, region, zone, capability or resource: letters, digits, `_`,
/// `-` and `.`, starting with a letter or digit, at most [`NAME_BYTES_MAX`] bytes.
pub fn name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("expected a name, found an empty string".to_owned())
    } else if name.len() > NAME_BYTES_MAX {
        Err(format!("a name is at most {NAME_BYTES_MAX} bytes (NAME_BYTES_MAX), found {}", name.len()))
    } else if !name.as_bytes()[0].is_ascii_alphanumeric()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        Err(format!("a name is letters, digits, `_`, `-` and `.`, starting with a letter or digit; found {name:?}"))
    } else {
        Ok(())
    }
}

/// Any string a file or a peer gives: at most [`STRING_BYTES_MAX`] bytes.
pub fn text(text: &str) -> Result<(), String> {
    match text.len() > STRING_BYTES_MAX {
        true => Err(format!("a string is at most {STRING_BYTES_MAX} bytes (STRING_BYTES_MAX), found {}", text.len())),
        false => Ok(()),
    }
}

/// A command's working directory: relative to the node's `--workdir` and under it as written
/// (no `..`), so that `cwd` chooses where in the node's tree a command runs and a mistake cannot
/// send it elsewhere. A symbolic link inside is followed: commands run code anyway, so this is
/// no boundary against one that wants out.
pub fn cwd(cwd: &str) -> Result<(), String> {
    let path = std::path::Path::new(cwd);
    if cwd.is_empty() {
        Err("expected a directory, found an empty string; `.` is the node's --workdir".to_owned())
    } else if path.is_absolute() || path.components().any(|c| c == std::path::Component::ParentDir) {
        Err(format!("expected a directory under the node's --workdir, without `..`; found {cwd:?}"))
    } else {
        c_string(cwd)
    }
}

/// A string handed to the operating system (an argument, a variable's value, a directory): a
/// [`text`] without NUL, which would end it there.
fn c_string(value: &str) -> Result<(), String> {
    match value.contains('\0') {
        true => Err("expected no NUL in a command's arguments, variables or directory".to_owned()),
        false => text(value),
    }
}

/// A whole number from `min` to `max`, in the schema's words.
pub fn within(value: u64, min: u64, max: u64) -> Result<(), String> {
    if value < min {
        Err(format!("expected at least {min}, found {value}"))
    } else if value > max {
        Err(format!("expected at most {max}, found {value}"))
    } else {
        Ok(())
    }
}

/// A number of items from `min` to `max`, in the schema's words.
pub fn items(count: usize, min: usize, max: usize) -> Result<(), String> {
    if count < min {
        Err(format!("expected at least {min} item{}, found {count}", if min == 1 { "" } else { "s" }))
    } else if count > max {
        Err(format!("expected at most {max} items, found {count}"))
    } else {
        Ok(())
    }
}

/// A total under a named limit: "120003 nodes in all, above the limit of 100000 (NODES_MAX)".
pub fn at_most(count: u64, what: &str, limit: u64, limit_name: &str) -> Result<(), String> {
    match count > limit {
        true => Err(format!("{count} {what}, above the limit of {limit} ({limit_name})")),
        false => Ok(()),
    }
}

/// A time that must be positive (whole milliseconds, at least 1) and at most `max_ms`.
pub fn positive_ms(ms: u64, max_ms: u64) -> Result<(), String> {
    match ms {
        0 => Err("expected a positive time of at least 1 ms, found 0".to_owned()),
        _ => within(ms, 1, max_ms),
    }
}

/// A request rate: a number from 0 to [`RPS_MAX`].
pub fn rate(rps: f64) -> Result<(), String> {
    if rps.is_nan() {
        Err("expected a number, found NaN".to_owned())
    } else if rps < 0.0 {
        Err(format!("expected at least 0, found {}", number(rps)))
    } else if rps > RPS_MAX {
        Err(format!("expected at most {}, found {}", number(RPS_MAX), number(rps)))
    } else {
        Ok(())
    }
}

/// A command's program and arguments, its environment and its directory: 1 to [`ARGV_MAX`]
/// arguments, the first a program name, `{index}` and `{count}` the only placeholders, none with
/// a NUL; at most [`ENV_MAX`] variables, whose names are not empty and hold no `=` or NUL; a
/// [`cwd`] inside the node's working directory; every string at most [`STRING_BYTES_MAX`] bytes.
pub fn command(argv: &[String], env: &BTreeMap<String, String>, cwd: Option<&str>, at: &Path, problems: &mut Problems) {
    if let Err(why) = items(argv.len(), 1, ARGV_MAX) {
        problems.push((at.key("argv"), why));
    }
    if argv.first().is_some_and(|program| program.is_empty()) {
        problems.push((at.key("argv").index(0), "expected a program name, found an empty string".to_owned()));
    }
    for (i, arg) in argv.iter().enumerate() {
        if let Err(why) = c_string(arg) {
            problems.push((at.key("argv").index(i), why));
        }
        for placeholder in placeholders(arg) {
            if placeholder != "index" && placeholder != "count" {
                problems.push((
                    at.key("argv").index(i),
                    format!("unknown placeholder `{{{placeholder}}}`; expected `{{index}}` or `{{count}}`"),
                ));
            }
        }
    }
    if env.len() > ENV_MAX {
        problems.push((at.key("env"), format!("expected at most {ENV_MAX} entries, found {}", env.len())));
    }
    for (name, value) in env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            problems.push((
                at.key("env").key(name),
                "an environment variable name is not empty and has no `=` or NUL".to_owned(),
            ));
        } else if let Err(why) = text(name).and_then(|()| c_string(value)) {
            problems.push((at.key("env").key(name), why));
        }
    }
    if let Some(Err(why)) = cwd.map(self::cwd) {
        problems.push((at.key("cwd"), why));
    }
}

/// The `{word}` placeholders in an argument, where word is lowercase letters and `_`.
fn placeholders(arg: &str) -> impl Iterator<Item = &str> {
    arg.split('{').skip(1).filter_map(|rest| {
        let word = rest.split_once('}')?.0;
        (!word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then_some(word)
    })
}

/// A URL dtest can send load to: `http`, `https`, `ws` or `wss`, with a host.
pub fn url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("expected a URL like `http://host:port/path`, found {url:?}"));
    };
    if !matches!(scheme, "http" | "https" | "ws" | "wss") {
        return Err(format!("expected an `http`, `https`, `ws` or `wss` URL, found scheme {scheme:?}"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("expected a host in the URL, found {url:?}"));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!("a URL has no spaces; found {url:?}"));
    }
    text(url)
}

/// A target's TLS settings for `url`, when given: `ca_file` or `insecure`, not both, and only
/// for an `https` or `wss` URL.
pub fn tls(url: Option<&str>, insecure: bool, ca_file: bool, at: &Path, problems: &mut Problems) {
    if insecure && ca_file {
        problems.push((at.clone(), "`ca_file` and `insecure` contradict each other: give one".to_owned()));
    }
    if url.is_some_and(|u| !(u.starts_with("https://") || u.starts_with("wss://"))) {
        problems.push((at.clone(), "only an `https` or `wss` `url` speaks TLS".to_owned()));
    }
}

/// A load's request headers: at most [`HEADERS_MAX`], named in visible ASCII without `:`.
pub fn headers(headers: &BTreeMap<String, String>, at: &Path, problems: &mut Problems) {
    if headers.len() > HEADERS_MAX {
        problems.push((at.clone(), format!("expected at most {HEADERS_MAX} entries, found {}", headers.len())));
    }
    for (name, value) in headers {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            problems.push((at.key(name), "expected a header name of visible ASCII without `:`".to_owned()));
        } else if let Err(why) = text(name).and_then(|()| text(value)) {
            problems.push((at.key(name), why));
        }
    }
}

/// An amount of each resource: each under its limit, at most [`CUSTOM_RESOURCES_MAX`] named
/// custom ones, each with a name.
pub fn resources(r: &Resources, at: &Path, problems: &mut Problems) {
    let fixed = [
        ("cpu_millis", r.cpu_millis, CPU_MILLIS_MAX),
        ("memory_mb", r.memory_mb, MEMORY_MB_MAX),
        ("disk_mb", r.disk_mb, DISK_MB_MAX),
        ("net_mbps", r.net_mbps, NET_MBPS_MAX),
        ("gpus", r.gpus, GPUS_MAX),
    ];
    for (field, amount, max) in fixed {
        if let Err(why) = within(amount, 0, max) {
            problems.push((at.key(field), why));
        }
    }
    if r.custom.len() > CUSTOM_RESOURCES_MAX {
        let why = format!("expected at most {CUSTOM_RESOURCES_MAX} entries, found {}", r.custom.len());
        problems.push((at.key("custom"), why));
    }
    for (custom, &units) in &r.custom {
        if let Err(why) = name(custom).and_then(|()| within(units, 0, CUSTOM_UNITS_MAX)) {
            problems.push((at.key("custom").key(custom), why));
        }
    }
}

impl Pattern {
    /// Checks the pattern: rates from 0 to [`RPS_MAX`]; lengths, periods and spikes positive
    /// and at most [`DURATION_S_MAX`]; a spike inside the pattern, a wave never below zero,
    /// `min_rps <= max_rps`, at most [`RANDOM_CHANGES_MAX`] random rate changes, a burst
    /// shorter than its period. Problems name the fields as written in `units`, under `at`.
    pub fn validate(&self, units: Units, at: &Path, problems: &mut Problems) {
        let mut rates: Vec<(&str, f64)> = Vec::new();
        // Times that must be positive, and times that may be zero.
        let mut lengths: Vec<(&str, u64)> = Vec::new();
        let mut offsets: Vec<(&str, u64)> = Vec::new();
        match *self {
            Pattern::Constant { rps, duration_ms } => {
                rates.push(("rps", rps));
                lengths.push(("duration", duration_ms));
            }
            Pattern::Ramp { from_rps, to_rps, duration_ms } => {
                rates.extend([("from_rps", from_rps), ("to_rps", to_rps)]);
                lengths.push(("duration", duration_ms));
            }
            Pattern::Spike { base_rps, spike_rps, spike_at_ms, spike_duration_ms, duration_ms } => {
                rates.extend([("base_rps", base_rps), ("spike_rps", spike_rps)]);
                lengths.extend([("spike_duration", spike_duration_ms), ("duration", duration_ms)]);
                offsets.push(("spike_at", spike_at_ms));
            }
            Pattern::Wave { base_rps, amplitude_rps, period_ms, duration_ms } => {
                rates.extend([("base_rps", base_rps), ("amplitude_rps", amplitude_rps)]);
                lengths.extend([("period", period_ms), ("duration", duration_ms)]);
            }
            Pattern::Random { min_rps, max_rps, change_every_ms, duration_ms } => {
                rates.extend([("min_rps", min_rps), ("max_rps", max_rps)]);
                lengths.extend([("change_every", change_every_ms), ("duration", duration_ms)]);
            }
            Pattern::Burst { base_rps, burst_rps, burst_every_ms, burst_duration_ms, duration_ms } => {
                rates.extend([("base_rps", base_rps), ("burst_rps", burst_rps)]);
                lengths.extend([
                    ("burst_every", burst_every_ms),
                    ("burst_duration", burst_duration_ms),
                    ("duration", duration_ms),
                ]);
            }
        }
        for (field, rps) in rates {
            if let Err(why) = rate(rps) {
                problems.push((at.key(field), why));
            }
        }
        let max = units.amount(DURATION_MS_MAX);
        for (stem, ms, positive) in
            lengths.iter().map(|&(s, ms)| (s, ms, true)).chain(offsets.iter().map(|&(s, ms)| (s, ms, false)))
        {
            if positive && ms == 0 {
                problems.push((
                    at.key(&units.field(stem)),
                    "expected a positive time of at least 1 ms, found 0".to_owned(),
                ));
            } else if ms > DURATION_MS_MAX {
                let why = format!("expected at most {max}, found {}", units.amount(ms));
                problems.push((at.key(&units.field(stem)), why));
            }
        }
        self.consistent(units, at, problems);
    }

    /// The checks that span the pattern's fields.
    fn consistent(&self, units: Units, at: &Path, problems: &mut Problems) {
        let field = |stem: &str| units.field(stem);
        match *self {
            Pattern::Constant { .. } | Pattern::Ramp { .. } => {}
            Pattern::Spike { spike_at_ms, spike_duration_ms, duration_ms, .. } => {
                let end_ms = spike_at_ms.saturating_add(spike_duration_ms);
                if end_ms > duration_ms {
                    problems.push((
                        at.key(&field("spike_duration")),
                        format!(
                            "the spike ends at {} {}, after the pattern's `{}` ({})",
                            units.amount(end_ms),
                            units.symbol(),
                            field("duration"),
                            units.amount(duration_ms)
                        ),
                    ));
                }
            }
            Pattern::Wave { base_rps, amplitude_rps, .. } => {
                if amplitude_rps > base_rps {
                    problems.push((
                        at.key("amplitude_rps"),
                        format!(
                            "expected at most `base_rps` ({base_rps}) so the rate never goes below zero, found \
                             {amplitude_rps}"
                        ),
                    ));
                }
            }
            Pattern::Random { min_rps, max_rps, change_every_ms, duration_ms } => {
                if min_rps > max_rps {
                    problems
                        .push((at.key("max_rps"), format!("expected at least `min_rps` ({min_rps}), found {max_rps}")));
                }
                if change_every_ms > 0 && duration_ms / change_every_ms > RANDOM_CHANGES_MAX {
                    problems.push((
                        at.key(&field("change_every")),
                        format!(
                            "expected at most {RANDOM_CHANGES_MAX} rate changes over `{}`, found {}",
                            field("duration"),
                            duration_ms / change_every_ms
                        ),
                    ));
                }
            }
            Pattern::Burst { burst_every_ms, burst_duration_ms, .. } => {
                if burst_duration_ms >= burst_every_ms {
                    problems.push((
                        at.key(&field("burst_duration")),
                        format!(
                            "expected less than `{}` ({}), found {}",
                            field("burst_every"),
                            units.amount(burst_every_ms),
                            units.amount(burst_duration_ms)
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(pattern: &Pattern, units: Units) -> Vec<String> {
        let mut problems = Vec::new();
        pattern.validate(units, &Path::root().key("pattern"), &mut problems);
        problems.into_iter().map(|(path, why)| format!("{path}: {why}")).collect()
    }

    #[test]
    fn patterns_within_the_limits_pass() {
        let ok = [
            Pattern::Constant { rps: 0.0, duration_ms: 1 },
            Pattern::Ramp { from_rps: 0.0, to_rps: RPS_MAX, duration_ms: DURATION_MS_MAX },
            Pattern::Spike { base_rps: 1.0, spike_rps: 5.0, spike_at_ms: 0, spike_duration_ms: 10, duration_ms: 10 },
            Pattern::Wave { base_rps: 5.0, amplitude_rps: 5.0, period_ms: 1_000, duration_ms: 60_000 },
            Pattern::Random { min_rps: 1.0, max_rps: 1.0, change_every_ms: 10, duration_ms: 1_000_000 },
            Pattern::Burst {
                base_rps: 0.0,
                burst_rps: 9.0,
                burst_every_ms: 10,
                burst_duration_ms: 9,
                duration_ms: 100,
            },
        ];
        for pattern in ok {
            assert_eq!(problems(&pattern, Units::Millis), Vec::<String>::new(), "{pattern:?}");
        }
    }

    #[test]
    fn rates_that_are_not_numbers_negative_or_too_high_are_refused() {
        let constant = |rps| Pattern::Constant { rps, duration_ms: 1_000 };
        assert_eq!(problems(&constant(f64::NAN), Units::Millis), ["pattern.rps: expected a number, found NaN"]);
        assert_eq!(problems(&constant(-1.5), Units::Millis), ["pattern.rps: expected at least 0, found -1.5"]);
        assert_eq!(
            problems(&constant(f64::INFINITY), Units::Millis),
            ["pattern.rps: expected at most 10000000, found inf"]
        );
        assert_eq!(
            problems(&constant(1e8), Units::Millis),
            ["pattern.rps: expected at most 10000000, found 100000000"]
        );
    }

    #[test]
    fn times_are_positive_and_bounded_and_named_in_the_writers_units() {
        let zero = Pattern::Constant { rps: 1.0, duration_ms: 0 };
        let why = "expected a positive time of at least 1 ms, found 0";
        assert_eq!(problems(&zero, Units::Seconds), [format!("pattern.duration_s: {why}")]);
        assert_eq!(problems(&zero, Units::Millis), [format!("pattern.duration_ms: {why}")]);
        let long = Pattern::Ramp { from_rps: 1.0, to_rps: 2.0, duration_ms: u64::MAX };
        assert_eq!(
            problems(&long, Units::Millis),
            [format!("pattern.duration_ms: expected at most 604800000, found {}", u64::MAX)]
        );
        let late = Pattern::Spike {
            base_rps: 1.0,
            spike_rps: 2.0,
            spike_at_ms: u64::MAX,
            spike_duration_ms: 1,
            duration_ms: 30_000,
        };
        let found = problems(&late, Units::Seconds);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("pattern.spike_at_s: expected at most 604800, found 1.8"), "{found:?}");
        assert!(found[1].starts_with("pattern.spike_duration_s: the spike ends at 1.8"), "{found:?}");
    }

    #[test]
    fn fields_that_must_agree_are_checked_with_the_parsers_messages() {
        let spike = Pattern::Spike {
            base_rps: 1.0,
            spike_rps: 2.0,
            spike_at_ms: 3_000,
            spike_duration_ms: 30_000,
            duration_ms: 30_000,
        };
        assert_eq!(
            problems(&spike, Units::Seconds),
            ["pattern.spike_duration_s: the spike ends at 33 s, after the pattern's `duration_s` (30)"]
        );
        assert_eq!(
            problems(&spike, Units::Millis),
            ["pattern.spike_duration_ms: the spike ends at 33000 ms, after the pattern's `duration_ms` (30000)"]
        );
        let wave = Pattern::Wave { base_rps: 10.0, amplitude_rps: 20.0, period_ms: 1_000, duration_ms: 10_000 };
        assert_eq!(
            problems(&wave, Units::Millis),
            ["pattern.amplitude_rps: expected at most `base_rps` (10) so the rate never goes below zero, found 20"]
        );
        let random = Pattern::Random { min_rps: 5.0, max_rps: 1.0, change_every_ms: 1, duration_ms: 1_000_000 };
        assert_eq!(
            problems(&random, Units::Millis),
            [
                "pattern.max_rps: expected at least `min_rps` (5), found 1",
                "pattern.change_every_ms: expected at most 100000 rate changes over `duration_ms`, found 1000000",
            ]
        );
        let burst = Pattern::Burst {
            base_rps: 1.0,
            burst_rps: 2.0,
            burst_every_ms: 5_000,
            burst_duration_ms: 5_000,
            duration_ms: 60_000,
        };
        assert_eq!(
            problems(&burst, Units::Seconds),
            ["pattern.burst_duration_s: expected less than `burst_every_s` (5), found 5"]
        );
    }

    #[test]
    fn commands_name_a_program_and_known_placeholders_only() {
        let argv = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        let check = |argv: &[String], env: &BTreeMap<String, String>| {
            let mut problems = Vec::new();
            command(argv, env, None, &Path::root(), &mut problems);
            problems.into_iter().map(|(path, why)| format!("{path}: {why}")).collect::<Vec<_>>()
        };
        let env = BTreeMap::new();
        assert_eq!(check(&argv(&["t", "{index}/{count}"]), &env), Vec::<String>::new());
        assert_eq!(check(&[], &env), ["argv: expected at least 1 item, found 0"]);
        assert_eq!(
            check(&argv(&["", "{idx}"]), &env),
            [
                "argv[0]: expected a program name, found an empty string",
                "argv[1]: unknown placeholder `{idx}`; expected `{index}` or `{count}`",
            ]
        );
        let bad: BTreeMap<String, String> = [("A=B", ""), ("", "")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
        assert_eq!(check(&argv(&["t"]), &bad).len(), 2);
        let many: BTreeMap<String, String> = (0..=ENV_MAX).map(|i| (format!("V{i}"), String::new())).collect();
        assert_eq!(check(&argv(&["t"]), &many), [format!("env: expected at most {ENV_MAX} entries, found 1025")]);
    }

    #[test]
    fn a_command_s_strings_are_bounded_and_its_directory_stays_under_the_node_s() {
        let check = |argv: &[&str], env: &[(&str, &str)], cwd: Option<&str>| {
            let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
            let env: BTreeMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let mut problems = Vec::new();
            command(&argv, &env, cwd, &Path::root(), &mut problems);
            problems.into_iter().map(|(path, why)| format!("{path}: {why}")).collect::<Vec<_>>()
        };
        for fine in [".", "tests", "a/b/./c", "dir..name"] {
            assert_eq!(check(&["t"], &[], Some(fine)), Vec::<String>::new(), "{fine}");
        }
        for escape in ["/etc", "..", "a/../../b", ""] {
            let problems = check(&["t"], &[], Some(escape));
            assert!(problems.len() == 1 && problems[0].starts_with("cwd: expected"), "{escape}: {problems:?}");
        }
        let long = "x".repeat(STRING_BYTES_MAX + 1);
        let bounded = format!("a string is at most {STRING_BYTES_MAX} bytes (STRING_BYTES_MAX), found 65537");
        assert_eq!(check(&["t", &long], &[], None), [format!("argv[1]: {bounded}")]);
        assert_eq!(check(&["t"], &[("V", &long)], None), [format!("env.V: {bounded}")]);
        assert_eq!(check(&["t"], &[], Some(&long)), [format!("cwd: {bounded}")]);
        assert_eq!(check(&["t\0"], &[("V", "a\0")], None).len(), 2);
        assert_eq!(check(&["t", &"x".repeat(STRING_BYTES_MAX)], &[], None), Vec::<String>::new());
    }

    #[test]
    fn counts_totals_names_and_resources_follow_the_limits() {
        assert_eq!(within(0, 1, TASK_COUNT_MAX), Err("expected at least 1, found 0".to_owned()));
        assert_eq!(
            within(CONNECTIONS_MAX + 1, 1, CONNECTIONS_MAX),
            Err("expected at most 100000, found 100001".to_owned())
        );
        assert_eq!(
            at_most(TASKS_MAX + 1, "task instances in all", TASKS_MAX, "TASKS_MAX"),
            Err("1000001 task instances in all, above the limit of 1000000 (TASKS_MAX)".to_owned())
        );
        assert_eq!(positive_ms(0, 10), Err("expected a positive time of at least 1 ms, found 0".to_owned()));
        assert!(name("a.b-c_1").is_ok() && name("-a").is_err() && name(&"a".repeat(NAME_BYTES_MAX + 1)).is_err());
        assert!(url("http://host:80/x").is_ok() && url("ftp://host").is_err() && url("http://:80").is_err());
        let mut found = Vec::new();
        tls(Some("http://host"), true, true, &Path::root(), &mut found);
        assert_eq!(found.len(), 2, "{found:?}");
        let mut r = Resources { cpu_millis: CPU_MILLIS_MAX + 1, ..Resources::default() };
        r.custom.insert("bad name".to_owned(), 1);
        found.clear();
        resources(&r, &Path::root(), &mut found);
        let fields: Vec<String> = found.iter().map(|(path, _)| path.to_string()).collect();
        assert_eq!(fields, ["cpu_millis", "custom[\"bad name\"]"]);
    }
}
