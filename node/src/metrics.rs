//! `GET /metrics` for Prometheus: the encoding and content negotiation `dtest node` and `dtest
//! serve` share, and what the node daemon exposes.
//!
//! Nothing is counted on a hot path for it. A scrape takes a [`Collector`] of plain figures read
//! from the daemon's state at that moment, registers it in a fresh [`Registry`] and encodes it;
//! the few counters the daemon keeps for it ([`Tally`], [`LoadTotals`]) are bumped where frames
//! leave an agent and where a load reports its live figures (once a second), never per request.
//!
//! The answer is OpenMetrics text (`# EOF`-terminated), which Prometheus asks for first; a client
//! whose `Accept` names `text/plain` and not OpenMetrics (promtool's linter reads that format) gets
//! the classic Prometheus text format, version 0.0.4, of the same families.

use std::sync::Mutex;

use dtest_core::measure::{Measure, Second, Sparse};
use dtest_core::protocol::{Frame, Outcome, Packet, ToOrchestrator};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::load::Progress;

/// The content type of the OpenMetrics text answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the classic Prometheus text answer.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the load latency histogram's buckets, in seconds (then `+Inf`).
pub const LATENCY_BUCKETS_S: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The text format of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The classic Prometheus text format, version 0.0.4.
    PrometheusText,
}

impl Format {
    /// The format for a request's `Accept` header: OpenMetrics unless the client names
    /// `text/plain` and not OpenMetrics.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("text/plain") && !a.contains("application/openmetrics-text") => {
                Format::PrometheusText
            }
            _ => Format::OpenMetrics,
        }
    }

    /// Its content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::PrometheusText => PROMETHEUS_TEXT,
        }
    }
}

/// What `collector` collects, encoded in `format`.
pub fn encode(collector: impl Collector, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut text = String::new();
    let encoded = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry),
        Format::PrometheusText => prometheus_client::encoding::prometheus_text::encode(&mut text, &registry),
    };
    // Writing to a String cannot fail, and the collectors only write.
    debug_assert!(encoded.is_ok());
    text
}

/// The answer to `GET /metrics`: what `collector` collects, in the format `accept` asks for.
pub fn respond(collector: impl Collector, accept: Option<&str>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let format = Format::negotiate(accept);
    ([(axum::http::header::CONTENT_TYPE, format.content_type())], encode(collector, format)).into_response()
}

/// Label pairs of one sample.
pub type Labels<'a> = [(&'a str, &'a str)];

/// Writes a gauge family: one sample per label set.
pub fn gauges<'a, V: EncodeGaugeValue + 'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (&'a Labels<'a>, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// Writes a counter family (`NAME_total`): one sample per label set.
pub fn counters<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (&'a Labels<'a>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family
            .encode_family(&labels)?
            .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// What the node's attempts ended as, counted once each when the agent first sends the result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Heartbeats the agents sent (before the link's faults, as a network would lose them).
    pub heartbeats: u64,
    /// Attempts ended: passed, failed, timed out, cancelled.
    pub ended: [u64; 4],
}

/// The `outcome` labels of [`Tally::ended`], in its order.
const OUTCOMES: [&str; 4] = ["passed", "failed", "timed_out", "cancelled"];

impl Tally {
    /// Counts what `frames`, just taken from one life's agent, say. `counted_id` is the highest
    /// packet id of a result counted for that life: a resent result keeps its id, a new one gets
    /// a higher one, so each result counts once.
    pub(crate) fn count(&mut self, counted_id: &mut u64, frames: &[Frame<ToOrchestrator>]) {
        for frame in frames {
            match frame {
                Frame::Data(Packet { body: ToOrchestrator::Heartbeat { .. }, .. }) => self.heartbeats += 1,
                Frame::Data(Packet { id, body: ToOrchestrator::Finished { outcome, .. }, .. }) if *id > *counted_id => {
                    *counted_id = *id;
                    let index = match outcome {
                        Outcome::Passed => 0,
                        Outcome::Failed(_) => 1,
                        Outcome::TimedOut => 2,
                        Outcome::Cancelled => 3,
                    };
                    self.ended[index] += 1;
                }
                _ => {}
            }
        }
    }
}

/// What the node's loads measured since the daemon started: requests, errors and dropped
/// arrivals, and the corrected latencies in [`LATENCY_BUCKETS_S`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LoadTotals {
    pub requests: u64,
    pub errors: u64,
    pub dropped: u64,
    /// Latencies per bucket (not cumulative); the last is `+Inf`.
    pub latency: [u64; LATENCY_BUCKETS_S.len() + 1],
    /// Their sum, in seconds.
    pub latency_sum_s: f64,
}

impl LoadTotals {
    /// Adds `latencies` (microseconds). Live seconds and whole loads both come as [`Sparse`]
    /// histograms, whose buckets are the same for both, so a latency lands in the same bucket
    /// whichever way it is added.
    fn add_latencies(&mut self, latencies: &Sparse) {
        if latencies.is_empty() {
            return;
        }
        let histogram = latencies.to_dense();
        for value in histogram.iter_recorded() {
            // A bucket's highest value: a latency counts under a bound it surely is within.
            let s = value.value_iterated_to() as f64 / 1e6;
            let bucket = LATENCY_BUCKETS_S.iter().position(|&bound| s <= bound).unwrap_or(LATENCY_BUCKETS_S.len());
            self.latency[bucket] += value.count_at_value();
        }
        self.latency_sum_s += histogram.mean() * histogram.len() as f64 / 1e6;
    }
}

/// What one running load has added to its node's [`LoadTotals`]: its live figures as they come,
/// then, when it ends, the rest of what it measured, so the totals hold each load exactly once.
#[derive(Debug, Default)]
pub(crate) struct LoadFeed {
    added: LoadTotals,
    /// The first second of the load not added yet.
    next_second: u64,
    /// Its end was added: later live figures are stale.
    settled: bool,
}

impl LoadFeed {
    /// Adds what the live figures `progress` say beyond what was added before.
    pub(crate) fn live(&mut self, totals: &Mutex<LoadTotals>, progress: &Progress) {
        if self.settled {
            return;
        }
        let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
        let mut more = LoadTotals {
            requests: progress.requests.saturating_sub(self.added.requests),
            errors: progress.errors.saturating_sub(self.added.errors),
            dropped: progress.dropped.saturating_sub(self.added.dropped),
            ..LoadTotals::default()
        };
        if let Some((t, second)) = &progress.last_second
            && *t >= self.next_second
        {
            self.next_second = t + 1;
            add_second(&mut more, second);
        }
        add(&mut self.added, &more);
        add(&mut totals, &more);
    }

    /// The load ended having measured `measure`: adds what its live figures had not.
    pub(crate) fn settle(&mut self, totals: &Mutex<LoadTotals>, measure: &Measure) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut whole = LoadTotals {
            requests: measure.requests,
            errors: measure.errors,
            dropped: measure.dropped,
            ..LoadTotals::default()
        };
        whole.add_latencies(&Sparse::from_dense(&measure.corrected));
        // The live seconds hold some of the whole load's latencies, bucketed alike: per bucket,
        // what is left is the difference.
        let mut more = LoadTotals {
            requests: whole.requests.saturating_sub(self.added.requests),
            errors: whole.errors.saturating_sub(self.added.errors),
            dropped: whole.dropped.saturating_sub(self.added.dropped),
            latency_sum_s: (whole.latency_sum_s - self.added.latency_sum_s).max(0.0),
            ..LoadTotals::default()
        };
        for (m, (w, a)) in more.latency.iter_mut().zip(whole.latency.iter().zip(&self.added.latency)) {
            *m = w.saturating_sub(*a);
        }
        add(&mut self.added, &more);
        add(&mut totals.lock().unwrap_or_else(|e| e.into_inner()), &more);
    }
}

fn add_second(totals: &mut LoadTotals, second: &Second) {
    totals.add_latencies(second.corrected());
}

fn add(to: &mut LoadTotals, more: &LoadTotals) {
    to.requests += more.requests;
    to.errors += more.errors;
    to.dropped += more.dropped;
    for (t, m) in to.latency.iter_mut().zip(&more.latency) {
        *t += m;
    }
    to.latency_sum_s += more.latency_sum_s;
}

/// What a node daemon knows at one scrape.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeFigures {
    /// Plans held.
    pub plans: u64,
    /// Command attempts running (or waiting for a command slot).
    pub commands: u64,
    /// Load attempts running (or waiting for their start time).
    pub loads: u64,
    pub tally: Tally,
    pub load: LoadTotals,
}

impl Collector for NodeFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        gauges(e, "dtest_node_plans", "Plans (runs) the node holds.", [(&[][..], self.plans)])?;
        gauges(
            e,
            "dtest_node_tasks_running",
            "Attempts running on the node, by kind of work (with commands waiting for a slot and loads for their start).",
            [(&[("kind", "command")][..], self.commands), (&[("kind", "load")][..], self.loads)],
        )?;
        let ended: Vec<[(&str, &str); 1]> = OUTCOMES.iter().map(|o| [("outcome", *o)]).collect();
        counters(
            e,
            "dtest_node_tasks_ended",
            "Attempts the node ended, by outcome, counted when their result is first sent.",
            ended.iter().zip(self.tally.ended).map(|(labels, n)| (&labels[..], n)),
        )?;
        counters(
            e,
            "dtest_node_heartbeats_sent",
            "Heartbeats the node's agents sent.",
            [(&[][..], self.tally.heartbeats)],
        )?;
        counters(
            e,
            "dtest_node_load_requests",
            "Load requests that ended, with an answer or an error.",
            [(&[][..], self.load.requests)],
        )?;
        counters(e, "dtest_node_load_errors", "Load requests that ended in an error.", [(&[][..], self.load.errors)])?;
        counters(
            e,
            "dtest_node_load_dropped",
            "Load arrivals dropped: no connection was free within the request timeout.",
            [(&[][..], self.load.dropped)],
        )?;
        let mut histogram = e.encode_descriptor(
            "dtest_node_load_latency",
            "Load request latency from each request's due time (corrected for coordinated omission), live about \
             once a second.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let buckets: Vec<(f64, u64)> =
            LATENCY_BUCKETS_S.iter().copied().chain([f64::INFINITY]).zip(self.load.latency).collect();
        let count = self.load.latency.iter().sum();
        histogram.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.load.latency_sum_s,
            count,
            &buckets,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use dtest_core::measure::Status;
    use dtest_core::protocol::{DeliveryMode, Incarnation, TaskId};

    use super::*;

    fn finished(id: u64, outcome: Outcome) -> Frame<ToOrchestrator> {
        let body = ToOrchestrator::Finished {
            incarnation: Incarnation(1),
            task: TaskId(id),
            attempt: dtest_core::protocol::Attempt(1),
            outcome,
            load: None,
        };
        Frame::Data(Packet { session: 1, id, floor: 1, mode: DeliveryMode::ExactlyOnce, body })
    }

    fn heartbeat() -> Frame<ToOrchestrator> {
        let body = ToOrchestrator::Heartbeat {
            incarnation: Incarnation(1),
            metrics: Default::default(),
            running: Vec::new(),
            load: Vec::new(),
        };
        Frame::Data(Packet { session: 1, id: 0, floor: 1, mode: DeliveryMode::FireAndForget, body })
    }

    #[test]
    fn a_resent_result_counts_once_and_heartbeats_each_time() {
        let (mut tally, mut counted) = (Tally::default(), 0);
        tally.count(&mut counted, &[finished(1, Outcome::Passed), heartbeat(), finished(2, Outcome::TimedOut)]);
        tally.count(&mut counted, &[finished(1, Outcome::Passed), heartbeat()]);
        tally.count(&mut counted, &[finished(3, Outcome::Failed("exit 1".into())), finished(4, Outcome::Cancelled)]);
        assert_eq!(tally, Tally { heartbeats: 2, ended: [1, 1, 1, 1] });
    }

    /// A measure of `latencies_us`, all in second 0; those of 10 s or more timed out.
    fn measure(latencies_us: &[u64]) -> Measure {
        let mut measure = Measure::new();
        for &us in latencies_us {
            measure.record(0, 0, us, if us >= 10_000_000 { Status::Timeout } else { Status::Http(200) });
        }
        measure
    }

    #[test]
    fn a_load_counts_once_whether_its_figures_came_live_or_at_its_end() {
        let totals = Mutex::new(LoadTotals::default());
        let whole = measure(&[300, 2_000, 2_000, 40_000, 20_000_000]);
        let mut feed = LoadFeed::default();
        let second = whole.seconds.get(&0).cloned().expect("second 0");
        let live = Progress { requests: 3, errors: 1, last_second: Some((0, second)), ..Progress::default() };
        feed.live(&totals, &live);
        feed.live(&totals, &live);
        let seen = totals.lock().unwrap().clone();
        assert_eq!((seen.requests, seen.errors, seen.latency.iter().sum::<u64>()), (3, 1, 5), "second 0 added once");
        feed.settle(&totals, &whole);
        feed.live(&totals, &Progress { requests: 99, ..Progress::default() });
        let totals = totals.into_inner().unwrap();
        assert_eq!((totals.requests, totals.errors), (5, 1), "the end tops up to the measure, later figures are stale");
        assert_eq!(totals.latency.iter().sum::<u64>(), 5);
        assert_eq!((totals.latency[0], totals.latency[2], totals.latency[6], totals.latency[14]), (1, 2, 1, 1));
        // Within the 1% resolution of 20 s.
        assert!((totals.latency_sum_s - 20.0443).abs() < 0.2, "{}", totals.latency_sum_s);
    }

    fn figures() -> NodeFigures {
        let mut load = LoadTotals { requests: 10, errors: 2, dropped: 1, ..LoadTotals::default() };
        load.add_latencies(&Sparse::from_dense(&measure(&[800, 3_000, 3_000]).corrected));
        NodeFigures { plans: 2, commands: 1, loads: 1, tally: Tally { heartbeats: 7, ended: [3, 1, 0, 2] }, load }
    }

    #[test]
    fn the_openmetrics_answer_has_every_family_and_ends_with_eof() {
        let text = encode(figures(), Format::OpenMetrics);
        for line in [
            "# TYPE dtest_node_plans gauge",
            "dtest_node_plans 2",
            "dtest_node_tasks_running{kind=\"command\"} 1",
            "dtest_node_tasks_running{kind=\"load\"} 1",
            "# TYPE dtest_node_tasks_ended counter",
            "dtest_node_tasks_ended_total{outcome=\"passed\"} 3",
            "dtest_node_tasks_ended_total{outcome=\"cancelled\"} 2",
            "dtest_node_heartbeats_sent_total 7",
            "dtest_node_load_requests_total 10",
            "dtest_node_load_errors_total 2",
            "dtest_node_load_dropped_total 1",
            "# TYPE dtest_node_load_latency_seconds histogram",
            "# UNIT dtest_node_load_latency_seconds seconds",
            "dtest_node_load_latency_seconds_count 3",
            "dtest_node_load_latency_seconds_bucket{le=\"0.001\"} 1",
            "dtest_node_load_latency_seconds_bucket{le=\"0.005\"} 3",
            "dtest_node_load_latency_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        let samples = text.lines().filter(|l| !l.starts_with('#'));
        assert!(samples.clone().all(|l| l.starts_with("dtest_node_")), "{text}");
        // Plans, running by kind, ended by outcome, four single counters, the histogram's sum, count and buckets.
        assert_eq!(samples.count(), 1 + 2 + 4 + 4 + (2 + 15), "{text}");
    }

    #[test]
    fn a_client_asking_for_text_plain_only_gets_the_classic_format() {
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::OpenMetrics);
        let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain; version=0.0.4")), Format::PrometheusText);
        let text = encode(figures(), Format::PrometheusText);
        assert!(text.contains("# TYPE dtest_node_tasks_ended_total counter\n"), "{text}");
        assert!(text.contains("dtest_node_load_latency_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        #[derive(Debug)]
        struct Odd;
        impl Collector for Odd {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                gauges(&mut encoder, "dtest_odd", "Odd labels.", [(&[("node", "a\"b\\c\nd")][..], 1)])
            }
        }
        for format in [Format::OpenMetrics, Format::PrometheusText] {
            let text = encode(Odd, format);
            assert!(text.contains(r#"dtest_odd{node="a\"b\\c\nd"} 1"#), "{format:?}: {text}");
        }
    }
}
