//! What load measured: every request's latency in HdrHistograms, counts of outcomes, and a
//! per-second series. One [`Measure`] per load attempt on a node; the orchestrator adds the
//! counted attempts' measures into one, losslessly (histograms add bucket by bucket), so the
//! merged percentiles are exactly those of one histogram that saw every request.
//!
//! Latencies are microseconds. *Corrected* latency runs from a request's intended start (its
//! place in the schedule) to its end; *uncorrected* from when it was actually sent. They differ
//! when the generator or the target falls behind: that gap is coordinated omission, and the
//! corrected figure is the one users feel.
//!
//! Measures travel as [`LoadResult`]s: histograms in the HdrHistogram V2 deflate format, base64,
//! readable by every HdrHistogram implementation.

use std::collections::BTreeMap;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::report::Percentiles;

mod sparse;

pub use sparse::{SECOND_DIGITS, Sparse};

/// The largest latency recorded, in microseconds (one hour); longer ones saturate.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Significant digits of the whole-load histograms (0.1% resolution).
const DIGITS: u8 = 3;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// A response with this HTTP status (a WebSocket reply counts as 200).
    Http(u16),
    /// No response within the request timeout.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// The connection failed mid-request, or the response was malformed.
    Io,
}

impl Status {
    /// Whether the request counts as an error: a status of 400 or more, or no response.
    pub fn is_error(self) -> bool {
        !matches!(self, Status::Http(code) if code < 400)
    }
}

/// Requests by how they ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusCounts {
    /// 1xx responses.
    #[serde(rename = "1xx")]
    pub informational: u64,
    /// 2xx responses.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx responses.
    #[serde(rename = "3xx")]
    pub redirect: u64,
    /// 4xx responses.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx responses (and codes above 599).
    #[serde(rename = "5xx")]
    pub server_error: u64,
    /// No response within the timeout.
    pub timeout: u64,
    /// Connections that could not be made.
    pub connect: u64,
    /// Connections that broke, malformed responses.
    pub io: u64,
}

impl StatusCounts {
    fn count(&mut self, status: Status) {
        let slot = match status {
            Status::Http(0..=199) => &mut self.informational,
            Status::Http(200..=299) => &mut self.success,
            Status::Http(300..=399) => &mut self.redirect,
            Status::Http(400..=499) => &mut self.client_error,
            Status::Http(_) => &mut self.server_error,
            Status::Timeout => &mut self.timeout,
            Status::Connect => &mut self.connect,
            Status::Io => &mut self.io,
        };
        *slot += 1;
    }

    /// Adds `o` in; a peer's absurd counts saturate rather than overflow.
    fn add(&mut self, o: &StatusCounts) {
        let pairs = [
            (&mut self.informational, o.informational),
            (&mut self.success, o.success),
            (&mut self.redirect, o.redirect),
            (&mut self.client_error, o.client_error),
            (&mut self.server_error, o.server_error),
            (&mut self.timeout, o.timeout),
            (&mut self.connect, o.connect),
            (&mut self.io, o.io),
        ];
        for (into, from) in pairs {
            *into = into.saturating_add(from);
        }
    }
}

/// One second of a load, by the second its requests ended in. Its histograms are sparse: a
/// second costs what it recorded, not the histograms' range.
#[derive(Clone, Debug, Default)]
pub struct Second {
    /// Requests that ended in this second.
    pub requests: u64,
    /// Of those, errors.
    pub errors: u64,
    /// Arrivals dropped in this second.
    pub dropped: u64,
    /// Corrected latencies (1% resolution).
    corrected: Sparse,
    /// Uncorrected latencies, or `None` while they are the corrected ones: every request of the
    /// second was sent at its due time (always so in simulation, where this halves the series).
    uncorrected: Option<Sparse>,
}

impl PartialEq for Second {
    fn eq(&self, o: &Second) -> bool {
        (self.requests, self.errors, self.dropped) == (o.requests, o.errors, o.dropped)
            && self.corrected == o.corrected
            && self.uncorrected() == o.uncorrected()
    }
}

impl Second {
    /// An empty second; allocates nothing.
    pub const fn new() -> Second {
        Second { requests: 0, errors: 0, dropped: 0, corrected: Sparse::new(), uncorrected: None }
    }

    /// Corrected latencies: from each request's due time.
    pub fn corrected(&self) -> &Sparse {
        &self.corrected
    }

    /// Uncorrected latencies: from when each request was sent.
    pub fn uncorrected(&self) -> &Sparse {
        self.uncorrected.as_ref().unwrap_or(&self.corrected)
    }

    /// Records one request's latencies, already clamped to the histograms' range.
    fn record(&mut self, corrected_us: u64, uncorrected_us: u64) {
        if self.uncorrected.is_none() && corrected_us != uncorrected_us {
            self.uncorrected = Some(self.corrected.clone());
        }
        self.corrected.record(corrected_us);
        if let Some(u) = &mut self.uncorrected {
            u.record(uncorrected_us);
        }
    }

    /// The wire form of second `t`.
    pub fn to_wire(&self, t: u64) -> WireSecond {
        let histogram = encode(&self.corrected.to_dense());
        // While every request started on time the two are one histogram: encode it once.
        let uncorrected = match &self.uncorrected {
            None => histogram.clone(),
            Some(u) => encode(&u.to_dense()),
        };
        WireSecond { t, requests: self.requests, errors: self.errors, dropped: self.dropped, histogram, uncorrected }
    }

    /// Reads the wire form; a peer's malformed histogram is an error, not a panic.
    pub fn from_wire(wire: &WireSecond) -> Result<Second, String> {
        let corrected = Sparse::from_dense(&decode(&wire.histogram, SECOND_DIGITS)?);
        let uncorrected = if wire.uncorrected == wire.histogram {
            None // The same bytes: one histogram, read once.
        } else {
            Some(Sparse::from_dense(&decode(&wire.uncorrected, SECOND_DIGITS)?)).filter(|u| *u != corrected)
        };
        Ok(Second { requests: wire.requests, errors: wire.errors, dropped: wire.dropped, uncorrected, corrected })
    }

    /// Adds another second's figures (a peer's absurd counts saturate).
    pub fn add(&mut self, o: &Second) {
        self.requests = self.requests.saturating_add(o.requests);
        self.errors = self.errors.saturating_add(o.errors);
        self.dropped = self.dropped.saturating_add(o.dropped);
        match (&mut self.uncorrected, &o.uncorrected) {
            (None, None) => {}
            (Some(u), None) => u.add(&o.corrected),
            (Some(u), Some(ou)) => u.add(ou),
            (None, Some(ou)) => {
                let mut u = self.corrected.clone();
                u.add(ou);
                self.uncorrected = Some(u);
            }
        }
        self.corrected.add(&o.corrected);
    }
}

/// Everything one or more load attempts measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Measure {
    /// Requests sent and ended (with a response or an error).
    pub requests: u64,
    /// Of those, errors (see [`Status::is_error`]).
    pub errors: u64,
    /// Arrivals never sent: they could not start within the request timeout of their
    /// scheduled time, because every connection was busy (k6's `dropped_iterations`).
    pub dropped: u64,
    /// Requests sent more than [`LATE_US`] after their scheduled time.
    pub late: u64,
    /// Requests by how they ended.
    pub status: StatusCounts,
    /// Corrected latencies (0.1% resolution).
    pub corrected: Histogram<u64>,
    /// Uncorrected latencies (0.1% resolution).
    pub uncorrected: Histogram<u64>,
    /// The series, by second from the start of the load.
    pub seconds: BTreeMap<u64, Second>,
}

/// A request sent this much after its scheduled time, in microseconds, counts as late.
pub const LATE_US: u64 = 1_000;

impl Default for Measure {
    fn default() -> Measure {
        Measure::new()
    }
}

impl Measure {
    /// An empty measure.
    pub fn new() -> Measure {
        Measure {
            requests: 0,
            errors: 0,
            dropped: 0,
            late: 0,
            status: StatusCounts::default(),
            corrected: histogram(DIGITS),
            uncorrected: histogram(DIGITS),
            seconds: BTreeMap::new(),
        }
    }

    /// Records one request that ended in `second`: scheduled `late_us` before it was sent,
    /// `uncorrected_us` from sending to its end.
    pub fn record(&mut self, second: u64, late_us: u64, uncorrected_us: u64, status: Status) {
        let corrected_us = late_us.saturating_add(uncorrected_us).clamp(1, LATENCY_US_MAX);
        let uncorrected_us = uncorrected_us.clamp(1, LATENCY_US_MAX);
        let error = status.is_error();
        self.requests += 1;
        self.errors += u64::from(error);
        self.late += u64::from(late_us > LATE_US);
        self.status.count(status);
        record(&mut self.corrected, corrected_us, 1);
        record(&mut self.uncorrected, uncorrected_us, 1);
        let s = self.seconds.entry(second).or_default();
        s.requests += 1;
        s.errors += u64::from(error);
        s.record(corrected_us, uncorrected_us);
    }

    /// Records an arrival dropped in `second`.
    pub fn drop_arrival(&mut self, second: u64) {
        self.dropped += 1;
        self.seconds.entry(second).or_default().dropped += 1;
    }

    /// Adds `other` in, its seconds shifted by `offset_s`.
    pub fn add(&mut self, other: &Measure, offset_s: u64) {
        self.add_totals(other);
        for (second, s) in &other.seconds {
            self.seconds.entry(second + offset_s).or_default().add(s);
        }
    }

    /// Adds `other`'s totals in, not its seconds (a peer's absurd counts saturate).
    pub fn add_totals(&mut self, other: &Measure) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.dropped = self.dropped.saturating_add(other.dropped);
        self.late = self.late.saturating_add(other.late);
        self.status.add(&other.status);
        add(&mut self.corrected, &other.corrected);
        add(&mut self.uncorrected, &other.uncorrected);
    }

    /// Adds seconds taken out of another measure (see [`Measure::take_seconds_before`]).
    pub fn add_seconds(&mut self, seconds: BTreeMap<u64, Second>) {
        for (t, s) in seconds {
            match self.seconds.entry(t) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(s);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().add(&s),
            }
        }
    }

    /// Takes out the seconds before `second` (those no request will end in any more).
    pub fn take_seconds_before(&mut self, second: u64) -> BTreeMap<u64, Second> {
        let later = self.seconds.split_off(&second);
        std::mem::replace(&mut self.seconds, later)
    }

    /// Corrected latency percentiles in milliseconds, if any request ended.
    pub fn latency_ms(&self) -> Option<Percentiles> {
        percentiles(&self.corrected)
    }

    /// Uncorrected latency percentiles in milliseconds, if any request ended.
    pub fn latency_uncorrected_ms(&self) -> Option<Percentiles> {
        percentiles(&self.uncorrected)
    }

    /// The per-second series for a report: every second from the first to the last.
    pub fn series(&self) -> Vec<SeriesPoint> {
        let (Some(first), Some(last)) = (self.seconds.keys().next(), self.seconds.keys().next_back()) else {
            return Vec::new();
        };
        let empty = Second::new();
        (*first..=*last)
            .map(|t| {
                let s = self.seconds.get(&t).unwrap_or(&empty);
                let ms = |h: &Sparse, q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1e3 };
                SeriesPoint {
                    t_s: t,
                    requests: s.requests,
                    errors: s.errors,
                    dropped: s.dropped,
                    p50_ms: ms(s.corrected(), 0.5),
                    p99_ms: ms(s.corrected(), 0.99),
                    p50_uncorrected_ms: ms(s.uncorrected(), 0.5),
                    p99_uncorrected_ms: ms(s.uncorrected(), 0.99),
                }
            })
            .collect()
    }

    /// The wire form.
    pub fn to_wire(&self) -> LoadResult {
        LoadResult {
            requests: self.requests,
            errors: self.errors,
            dropped: self.dropped,
            late: self.late,
            status: self.status,
            histogram: encode(&self.corrected),
            uncorrected: encode(&self.uncorrected),
            seconds: self.seconds.iter().map(|(&t, s)| s.to_wire(t)).collect(),
        }
    }

    /// Reads the wire form; a peer's malformed histogram is an error, not a panic.
    pub fn from_wire(wire: &LoadResult) -> Result<Measure, String> {
        // A load lasts at most the longest scenario: more seconds, or a second past it, would
        // make `series` allocate every second up to it.
        let seconds_max = crate::limits::DURATION_S_MAX as u64;
        if wire.seconds.len() as u64 > seconds_max + 1 {
            return Err(format!("a load result of {} seconds; a load has at most {seconds_max}", wire.seconds.len()));
        }
        let mut seconds = BTreeMap::new();
        for s in &wire.seconds {
            if s.t > seconds_max {
                return Err(format!("a load result's second {} is past the longest load, {seconds_max} s", s.t));
            }
            seconds.insert(s.t, Second::from_wire(s)?);
        }
        Ok(Measure {
            requests: wire.requests,
            errors: wire.errors,
            dropped: wire.dropped,
            late: wire.late,
            status: wire.status,
            corrected: decode(&wire.histogram, DIGITS)?,
            uncorrected: decode(&wire.uncorrected, DIGITS)?,
            seconds,
        })
    }
}

/// A [`Measure`] as nodes send it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadResult {
    /// Requests ended.
    pub requests: u64,
    /// Errors among them.
    pub errors: u64,
    /// Arrivals dropped.
    pub dropped: u64,
    /// Requests sent late.
    pub late: u64,
    /// Requests by how they ended.
    pub status: StatusCounts,
    /// Corrected latencies in microseconds: HdrHistogram V2 deflate, base64.
    pub histogram: String,
    /// Uncorrected latencies, the same way.
    pub uncorrected: String,
    /// The series.
    pub seconds: Vec<WireSecond>,
}

/// One second of a [`LoadResult`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSecond {
    /// Seconds from the start of the load.
    pub t: u64,
    /// Requests ended.
    pub requests: u64,
    /// Errors among them.
    pub errors: u64,
    /// Arrivals dropped.
    pub dropped: u64,
    /// Corrected latencies, V2 deflate, base64.
    pub histogram: String,
    /// Uncorrected latencies, the same way.
    pub uncorrected: String,
}

/// How a running load is doing, sent with heartbeats so that whoever orchestrates can show it
/// live. The counters are totals since the load started; `second` is the last full second, sent
/// once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveLoad {
    /// Requests ended so far.
    pub requests: u64,
    /// Errors among them.
    pub errors: u64,
    /// Arrivals dropped so far.
    pub dropped: u64,
    /// The last full second, if not sent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second: Option<WireSecond>,
}

/// One second of a report's series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SeriesPoint {
    /// Seconds from the start of the run (or of the load, for `dtest load`).
    pub t_s: u64,
    /// Requests that ended in this second.
    pub requests: u64,
    /// Errors among them.
    pub errors: u64,
    /// Arrivals dropped.
    pub dropped: u64,
    /// Median corrected latency.
    pub p50_ms: f64,
    /// 99th percentile corrected latency.
    pub p99_ms: f64,
    /// Median uncorrected latency.
    pub p50_uncorrected_ms: f64,
    /// 99th percentile uncorrected latency.
    pub p99_uncorrected_ms: f64,
}

/// An empty histogram of microseconds, for values up to [`LATENCY_US_MAX`] (callers clamp). It
/// starts small and widens its range to the largest value recorded: a load whose latencies stay
/// under a second pays for buckets up to a second (100 KB at 3 digits), not up to an hour.
fn histogram(digits: u8) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 2, digits).expect("constant bounds are valid");
    h.auto(true);
    h
}

/// Records `count` values of `us`, which is at most [`LATENCY_US_MAX`], widening `h` if need be
/// (`saturating_record` would clamp to the current range instead).
fn record(h: &mut Histogram<u64>, us: u64, count: u64) {
    debug_assert!(us <= LATENCY_US_MAX);
    h.record_n(us, count).expect("a widening histogram takes any value up to LATENCY_US_MAX");
}

/// Adds `from` into `into`, whose range widens to take it; it cannot fail.
fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from).expect("a widening histogram takes any other of its digits");
}

/// The percentiles of `h` in milliseconds, if it holds anything.
pub fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1e3;
    Some(Percentiles {
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    })
}

/// `h` in the V2 deflate format, base64.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut bytes).expect("a histogram serializes into memory");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The longest encoded histogram taken from a peer, base64 characters. Ours at 3 digits over
/// the whole latency range take a few kB.
pub const HISTOGRAM_TEXT_MAX: usize = 1024 * 1024;

/// The most significant digits a peer's histogram may have: past 3, its counts array grows
/// tenfold a digit.
const PEER_DIGITS_MAX: u32 = 3;

/// The highest value a peer's histogram may track: 2^40 µs, 12 days.
const PEER_HIGHEST_MAX: u64 = 1 << 40;

/// The most bytes a peer's histogram's counts may take once inflated.
const PEER_PAYLOAD_MAX: u32 = 4 * 1024 * 1024;

/// Checks the header of a V2 deflate histogram before the decoder sizes its counts by it: a few
/// hostile bytes must not become gigabytes.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    if word(0) != Some(0x1c84_9314) {
        return Err("a histogram is not in the HdrHistogram V2 deflate format".to_owned());
    }
    // Inflated in memory, the first 40 bytes only.
    let mut header = [0u8; 40];
    let mut inflate = flate2::Decompress::new(true);
    let inflated = inflate.decompress(bytes.get(8..).unwrap_or_default(), &mut header, flate2::FlushDecompress::Sync);
    if inflated.is_err() || inflate.total_out() < header.len() as u64 {
        return Err("a histogram is not in the HdrHistogram V2 format: its header does not inflate".to_owned());
    }
    let u32_at = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let u64_at = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap_or_default());
    let (payload, digits, lowest, highest) = (u32_at(4), u32_at(12), u64_at(16), u64_at(24));
    if u32_at(0) != 0x1c84_9313 {
        return Err("a histogram is not in the HdrHistogram V2 format: its inner cookie is wrong".to_owned());
    }
    if payload > PEER_PAYLOAD_MAX
        || digits > PEER_DIGITS_MAX
        || lowest == 0
        || highest > PEER_HIGHEST_MAX
        || highest < lowest.saturating_mul(2)
    {
        return Err(format!(
            "a histogram's header is out of bounds: {digits} digits, values {lowest} to {highest}, {payload} bytes of \
             counts (at most {PEER_DIGITS_MAX} digits, values to {PEER_HIGHEST_MAX}, {PEER_PAYLOAD_MAX} bytes)"
        ));
    }
    Ok(())
}

/// Reads a histogram `encode` wrote (or another implementation did), into our bounds; a peer's
/// histogram whose text or header is beyond [`HISTOGRAM_TEXT_MAX`] and the header bounds is an
/// error, never an allocation it chose. So is one of more values than a run makes requests
/// ([`REQUESTS_MAX`](crate::limits::REQUESTS_MAX)): the sum of a run's histograms
/// ([`TASKS_MAX`](crate::limits::TASKS_MAX) of them at most) then stays within what the V2
/// format can write, and `encode` cannot fail.
pub fn decode(text: &str, digits: u8) -> Result<Histogram<u64>, String> {
    if text.len() > HISTOGRAM_TEXT_MAX {
        return Err(format!("a histogram of {} characters; at most {HISTOGRAM_TEXT_MAX} are read", text.len()));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("a histogram is not base64: {e}"))?;
    check_header(&bytes)?;
    let read: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("a histogram is not in the HdrHistogram V2 format: {e:?}"))?;
    let values_max = crate::limits::REQUESTS_MAX;
    if read.iter_recorded().try_fold(0u64, |sum, v| sum.checked_add(v.count_at_value())).is_none_or(|n| n > values_max)
    {
        return Err(format!("a histogram of more values than a run makes requests ({values_max})"));
    }
    if read.low() == 1 && read.high() <= LATENCY_US_MAX && read.sigfig() == digits {
        // Ours: the same buckets, nothing to convert.
        let mut read = read;
        read.auto(true);
        return Ok(read);
    }
    let mut h = histogram(digits);
    for v in read.iter_recorded() {
        record(&mut h, v.value_iterated_to().clamp(1, LATENCY_US_MAX), v.count_at_value());
    }
    Ok(h)
}

/// For tests: `n` deterministic latencies in microseconds, Pareto-like from `scale_us` up, with a
/// longer tail the closer `tail` is to 1 (uniform draws nearer 1 than `floor` are held there).
#[cfg(test)]
fn test_latencies(seed: u64, n: usize, scale_us: f64, tail: f64, floor: f64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            (scale_us / (1.0 - u).max(floor).powf(tail)) as u64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of latencies with a long tail.
    fn latencies(seed: u64, n: usize) -> Vec<u64> {
        test_latencies(seed, n, 200.0, 0.7, 1e-6)
    }

    #[test]
    fn merged_percentiles_equal_one_histogram_of_every_sample() {
        let mut merged = Measure::new();
        let mut single = Measure::new();
        for node in 0..10u64 {
            let mut m = Measure::new();
            for (i, us) in latencies(node + 1, 5_000).into_iter().enumerate() {
                let late = if i % 7 == 0 { us / 2 } else { 0 };
                let status = if i % 101 == 0 { Status::Http(503) } else { Status::Http(200) };
                m.record(i as u64 / 1_000, late, us, status);
                single.record(i as u64 / 1_000 + node, late, us, status);
            }
            // Through the wire, as the orchestrator gets it.
            let wire = serde_json::to_string(&m.to_wire()).unwrap();
            let back = Measure::from_wire(&serde_json::from_str(&wire).unwrap()).unwrap();
            merged.add(&back, node);
        }
        assert_eq!(merged.requests, 50_000);
        assert_eq!(merged.errors, single.errors);
        assert_eq!(merged.status, single.status);
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(merged.corrected.value_at_quantile(q), single.corrected.value_at_quantile(q), "q {q}");
            assert_eq!(merged.uncorrected.value_at_quantile(q), single.uncorrected.value_at_quantile(q), "q {q}");
        }
        assert_eq!(merged.latency_ms(), single.latency_ms());
        assert_eq!(merged.series(), single.series());
        assert!(merged.latency_ms().unwrap().p99 > merged.latency_uncorrected_ms().unwrap().p99);
    }

    #[test]
    fn status_classes_and_errors() {
        let mut m = Measure::new();
        for status in [Status::Http(101), Status::Http(204), Status::Http(302), Status::Http(404)] {
            m.record(0, 0, 10, status);
        }
        for status in [Status::Http(500), Status::Http(700), Status::Timeout, Status::Connect, Status::Io] {
            m.record(1, 0, 10, status);
        }
        m.drop_arrival(1);
        let s = m.status;
        assert_eq!(
            (s.informational, s.success, s.redirect, s.client_error, s.server_error, s.timeout, s.connect, s.io),
            (1, 1, 1, 1, 2, 1, 1, 1)
        );
        assert_eq!((m.requests, m.errors, m.dropped), (9, 6, 1));
        let series = m.series();
        assert_eq!(
            series.iter().map(|p| (p.requests, p.errors, p.dropped)).collect::<Vec<_>>(),
            [(4, 1, 0), (5, 5, 1)]
        );
    }

    #[test]
    fn a_peer_s_garbage_is_an_error() {
        let mut wire = Measure::new().to_wire();
        wire.histogram = "not base64!".to_owned();
        assert!(Measure::from_wire(&wire).unwrap_err().contains("base64"));
        wire.histogram = base64::engine::general_purpose::STANDARD.encode(b"\x1c\x84\x93\x14garbage");
        assert!(Measure::from_wire(&wire).unwrap_err().contains("V2"));
    }

    /// A V2 deflate histogram of no counts whose header says what a hostile peer likes.
    fn hostile(payload: u32, digits: u32, lowest: u64, highest: u64) -> String {
        let mut inner = Vec::new();
        for word in [0x1c84_9313, payload, 0, digits] {
            inner.extend_from_slice(&u32::to_be_bytes(word));
        }
        inner.extend_from_slice(&lowest.to_be_bytes());
        inner.extend_from_slice(&highest.to_be_bytes());
        inner.extend_from_slice(&1.0f64.to_be_bytes());
        let mut deflated = Vec::with_capacity(128);
        flate2::Compress::new(flate2::Compression::default(), true)
            .compress_vec(&inner, &mut deflated, flate2::FlushCompress::Finish)
            .expect("in memory");
        let mut bytes = 0x1c84_9314u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&(deflated.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&deflated);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn a_hostile_histogram_header_is_refused_before_it_sizes_anything() {
        // Each would make the decoder allocate hundreds of MB to GBs from a few dozen bytes.
        for (payload, digits, lowest, highest) in
            [(u32::MAX, 3, 1, 1 << 30), (0, 5, 1, 1 << 62), (0, 3, 1, u64::MAX / 2), (0, 3, 0, 1 << 30)]
        {
            let error = decode(&hostile(payload, digits, lowest, highest), 3).expect_err("refused");
            assert!(error.contains("out of bounds"), "{error}");
        }
        assert!(decode(&"A".repeat(HISTOGRAM_TEXT_MAX + 4), 3).expect_err("too long").contains("characters"));
        // Within the bounds, another implementation's empty histogram reads.
        assert_eq!(decode(&hostile(0, 3, 1, 3_600_000_000), 3).expect("in bounds").len(), 0);
    }

    /// The worst second a load can report: every bucket of the per-second precision filled over
    /// the whole latency range, in both histograms, with large counts. The run's bound on a
    /// node's replies counts each second at `SECOND_WIRE_BYTES_MAX`; it must hold this one.
    #[test]
    fn a_second_on_the_wire_fits_its_bound() {
        let mut full = histogram(SECOND_DIGITS);
        let mut other = histogram(SECOND_DIGITS);
        let (mut us, mut buckets) = (1, 0u64);
        // Counts that deflate cannot squeeze: a multiplicative hash of the bucket, up to 2^30.
        let count = |n: u64| 1 + (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 34);
        while us <= LATENCY_US_MAX {
            record(&mut full, us, count(buckets));
            record(&mut other, us, count(buckets + 1_000_003));
            buckets += 1;
            us = full.next_non_equivalent(us);
        }
        let wire = WireSecond {
            t: crate::limits::DURATION_S_MAX as u64,
            requests: u64::MAX,
            errors: u64::MAX,
            dropped: u64::MAX,
            histogram: encode(&full),
            uncorrected: encode(&other),
        };
        let bytes = serde_json::to_vec(&wire).expect("serializes").len() as u64;
        assert!(buckets > 3_000, "every bucket: {buckets}");
        assert!(bytes <= crate::run::SECOND_WIRE_BYTES_MAX, "a full second takes {bytes} bytes");
        assert!(bytes * 2 > crate::run::SECOND_WIRE_BYTES_MAX, "the bound is not loose: {bytes} bytes");
    }

    #[test]
    fn a_peer_s_absurd_counts_saturate_and_its_overfull_histograms_are_refused() {
        let mut m = Measure::new();
        m.record(0, 0, 1_000, Status::Http(200));
        let mut wire = m.to_wire();
        (wire.requests, wire.errors, wire.status.success) = (u64::MAX, u64::MAX, u64::MAX);
        wire.seconds[0].requests = u64::MAX;
        let absurd = Measure::from_wire(&wire).expect("counts alone are no error");
        let mut sum = absurd.clone();
        sum.add(&absurd, 0);
        assert_eq!((sum.requests, sum.errors, sum.status.success), (u64::MAX, u64::MAX, u64::MAX));
        assert_eq!(sum.seconds[&0].requests, u64::MAX);
        // One bucket past what a run can request: its sum with another would not encode.
        let mut full = histogram(DIGITS);
        record(&mut full, 1_000, crate::limits::REQUESTS_MAX);
        assert_eq!(decode(&encode(&full), DIGITS).expect("at the bound").len(), crate::limits::REQUESTS_MAX);
        record(&mut full, 2_000, 1);
        assert!(decode(&encode(&full), DIGITS).expect_err("past it").contains("more values"));
    }

    #[test]
    fn a_load_result_s_seconds_are_bounded_by_the_longest_load() {
        let mut m = Measure::new();
        m.record(0, 0, 1_000, Status::Http(200));
        let mut wire = m.to_wire();
        let max = crate::limits::DURATION_S_MAX as u64;
        wire.seconds[0].t = max + 1;
        assert!(Measure::from_wire(&wire).expect_err("past the longest load").contains("past the longest load"));
        wire.seconds[0].t = max;
        assert!(Measure::from_wire(&wire).is_ok());
        let empty = WireSecond { histogram: String::new(), uncorrected: String::new(), ..wire.seconds[0].clone() };
        wire.seconds = vec![empty; max as usize + 2];
        assert!(Measure::from_wire(&wire).expect_err("too many").contains("seconds"));
    }

    #[test]
    fn a_second_keeps_one_histogram_until_a_request_is_late() {
        let mut on_time = Measure::new();
        let mut late = Measure::new();
        for i in 0..100 {
            on_time.record(0, 0, 1_000 + i, Status::Http(200));
            late.record(0, if i == 50 { 700 } else { 0 }, 1_000 + i, Status::Http(200));
        }
        let (a, b) = (&on_time.seconds[&0], &late.seconds[&0]);
        assert!(a.uncorrected.is_none() && b.uncorrected.is_some());
        assert_eq!(a.uncorrected(), b.uncorrected(), "the late request's uncorrected latency is on time's");
        assert_ne!(a.corrected(), b.corrected());
        // Adding in either order, and through the wire, gives the same second.
        let mut ab = a.clone();
        ab.add(b);
        let mut ba = b.clone();
        ba.add(a);
        assert_eq!(ab, ba);
        assert_eq!(ab.uncorrected().len(), 200);
        assert_eq!(ab.corrected().value_at_quantile(1.0), b.corrected().value_at_quantile(1.0));
        for s in [a, b, &ab] {
            assert_eq!(&Second::from_wire(&s.to_wire(0)).unwrap(), s);
        }
        assert!(Second::from_wire(&a.to_wire(0)).unwrap().uncorrected.is_none());
    }

    #[test]
    fn whole_histograms_widen_to_what_they_hold() {
        let mut m = Measure::new();
        m.record(0, 0, 20_000, Status::Http(200));
        assert!(m.corrected.high() < 100_000, "{}", m.corrected.high());
        m.record(0, 0, u64::MAX, Status::Timeout);
        assert_eq!(m.corrected.max(), m.corrected.highest_equivalent(LATENCY_US_MAX));
        let back = Measure::from_wire(&m.to_wire()).unwrap();
        assert_eq!(back.corrected, m.corrected);
        let mut sum = Measure::new();
        sum.add(&back, 0);
        assert_eq!(sum.latency_ms(), m.latency_ms());
    }

    #[test]
    fn taking_old_seconds_leaves_the_rest() {
        let mut m = Measure::new();
        for second in 0..5 {
            m.record(second, 0, 100, Status::Http(200));
        }
        let old = m.take_seconds_before(3);
        assert_eq!(old.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(m.seconds.keys().copied().collect::<Vec<_>>(), [3, 4]);
        assert_eq!(m.requests, 5);
    }
}
