//! The phi accrual failure detector (Hayashibara et al. 2004), as Akka and Cassandra use it.
//!
//! Instead of a yes/no timeout, the detector says how suspicious a node's silence is: phi is
//! `-log10(P(a heartbeat arrives later than this))`, with the heartbeat inter-arrival times
//! modelled as a normal distribution fitted to the last `window` intervals. A phi of 8 means a
//! one-in-10^8 chance that the node is alive and merely late. The node is suspected once phi
//! reaches the threshold.
//!
//! Defaults are Akka's: threshold 8, 1,000 samples, a standard deviation of at least 100 ms, and
//! 3 s of acceptable pause added to the mean. **With heartbeats every second, a node that falls
//! silent is suspected 4.52 s after its last heartbeat** ([`PhiConfig::detection_ms`] computes
//! it for any settings; a test holds it). Lower the threshold or the pause to detect faster at
//! the price of more false suspicions under jitter and loss.
//!
//! Time is passed in (`now_ms`); the detector has no clock.

use crate::scenario::FailureDetector;

/// Settings of a [`PhiAccrual`] detector.
#[derive(Clone, Debug, PartialEq)]
pub struct PhiConfig {
    /// Phi at which a node is suspected.
    pub threshold: f64,
    /// Inter-arrival intervals kept, at least 2.
    pub window: usize,
    /// Floor of the standard deviation, in milliseconds.
    pub min_stddev_ms: f64,
    /// Silence tolerated on top of the mean interval, in milliseconds.
    pub acceptable_pause_ms: f64,
    /// The interval assumed before any is measured (the heartbeat period), in milliseconds.
    pub first_interval_ms: f64,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig::from(&FailureDetector {
            heartbeat_interval_ms: 1_000,
            phi_threshold: 8.0,
            window: 1_000,
            min_stddev_ms: 100.0,
            acceptable_pause_ms: 3_000.0,
        })
    }
}

impl From<&FailureDetector> for PhiConfig {
    fn from(f: &FailureDetector) -> Self {
        PhiConfig {
            threshold: f.phi_threshold,
            window: (f.window as usize).max(2),
            min_stddev_ms: f.min_stddev_ms,
            acceptable_pause_ms: f.acceptable_pause_ms,
            first_interval_ms: f.heartbeat_interval_ms as f64,
        }
    }
}

impl PhiConfig {
    /// How long after its last heartbeat a node that heartbeats exactly every `interval_ms` and
    /// then falls silent is suspected, to the millisecond.
    pub fn detection_ms(&self, interval_ms: u64) -> u64 {
        let mut detector = PhiAccrual::new(self.clone());
        let beats = self.window as u64 + 1;
        for i in 0..beats {
            detector.heartbeat(i * interval_ms);
        }
        let last = (beats - 1) * interval_ms;
        // Phi grows with silence, so bisect for the first millisecond at the threshold.
        let (mut lo, mut hi) = (0u64, 1u64);
        while detector.is_available(last + hi) {
            hi *= 2;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if detector.is_available(last + mid) { lo = mid } else { hi = mid }
        }
        hi
    }
}

/// One node's detector: feed it heartbeats, ask it for phi.
#[derive(Clone, Debug)]
pub struct PhiAccrual {
    config: PhiConfig,
    /// Intervals in a ring buffer, with running sums for O(1) mean and variance.
    intervals: Vec<f64>,
    next: usize,
    sum: f64,
    sum_squares: f64,
    last_ms: Option<u64>,
}

impl PhiAccrual {
    /// A detector that has heard nothing yet.
    pub fn new(config: PhiConfig) -> PhiAccrual {
        let capacity = config.window.max(2);
        let mut detector = PhiAccrual {
            config,
            intervals: Vec::with_capacity(capacity),
            next: 0,
            sum: 0.0,
            sum_squares: 0.0,
            last_ms: None,
        };
        // As Akka does: start from two intervals around the expected one (± a quarter), so the
        // first phi values are sensible before real intervals are known.
        let mean = detector.config.first_interval_ms;
        detector.record(mean - mean / 4.0);
        detector.record(mean + mean / 4.0);
        detector
    }

    fn record(&mut self, interval: f64) {
        if self.intervals.len() < self.config.window.max(2) {
            self.intervals.push(interval);
        } else {
            let old = std::mem::replace(&mut self.intervals[self.next], interval);
            self.sum -= old;
            self.sum_squares -= old * old;
            self.next = (self.next + 1) % self.intervals.len();
        }
        self.sum += interval;
        self.sum_squares += interval * interval;
    }

    /// A heartbeat arrived at `now_ms`. Heartbeats that arrive while the node is suspected do
    /// not add their (long) interval to the history, so one outage does not teach the detector
    /// to tolerate the next.
    pub fn heartbeat(&mut self, now_ms: u64) {
        if let Some(last) = self.last_ms {
            if now_ms < last {
                return; // Reordered delivery: an older heartbeat says nothing new.
            }
            if self.is_available(now_ms) {
                self.record((now_ms - last) as f64);
            }
        }
        self.last_ms = Some(now_ms);
    }

    /// When the last heartbeat arrived.
    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_ms
    }

    /// Mean of the recorded intervals, in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        self.sum / self.intervals.len() as f64
    }

    /// Standard deviation of the recorded intervals, in milliseconds (before the floor).
    pub fn stddev_ms(&self) -> f64 {
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        (self.sum_squares / n - mean * mean).max(0.0).sqrt()
    }

    /// Phi at `now_ms`: 0 before the first heartbeat, growing with silence.
    pub fn phi(&self, now_ms: u64) -> f64 {
        let Some(last) = self.last_ms else { return 0.0 };
        let silence = now_ms.saturating_sub(last) as f64;
        let mean = self.mean_ms() + self.config.acceptable_pause_ms;
        let stddev = self.stddev_ms().max(self.config.min_stddev_ms).max(f64::MIN_POSITIVE);
        phi(silence, mean, stddev)
    }

    /// When phi will reach the threshold if no heartbeat arrives: the moment to look at this
    /// node again. `None` before the first heartbeat. Solves Akka's approximation for the
    /// threshold (Newton's method on a monotone cubic), so it costs a few multiplications.
    pub fn suspect_at_ms(&self) -> Option<u64> {
        let last = self.last_ms?;
        let mean = self.mean_ms() + self.config.acceptable_pause_ms;
        let stddev = self.stddev_ms().max(self.config.min_stddev_ms).max(f64::MIN_POSITIVE);
        // phi = threshold where y (1.5976 + 0.070566 y^2) = ln((1 - p) / p), p = 10^-threshold.
        let p = 10f64.powf(-self.config.threshold);
        let k = ((1.0 - p) / p).ln();
        let mut y = k / 1.5976;
        for _ in 0..50 {
            let f = 0.070566 * y * y * y + 1.5976 * y - k;
            let step = f / (0.211698 * y * y + 1.5976);
            y -= step;
            if step.abs() < 1e-9 {
                break;
            }
        }
        let silence = (mean + y * stddev).max(0.0).ceil();
        Some(last.saturating_add(silence as u64))
    }

    /// Whether phi at `now_ms` is below the threshold.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.phi(now_ms) < self.config.threshold
    }
}

/// `-log10(1 - F(t))` for the normal distribution N(mean, stddev), with the logistic
/// approximation of the CDF that Akka uses (error below 0.0002), computed on whichever tail keeps
/// precision.
fn phi(t: f64, mean: f64, stddev: f64) -> f64 {
    let y = (t - mean) / stddev;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if t > mean { -(e / (1.0 + e)).log10() } else { -(1.0 - 1.0 / (1.0 + e)).log10() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_suspect_a_silent_node_4_52_seconds_after_its_last_heartbeat() {
        // Derivation: mean 1000 + pause 3000 = 4000 ms, stddev floored to 100 ms; phi = 8 where
        // y (1.5976 + 0.070566 y^2) = ln(10^8), y = 5.226, so 4000 + 522.6 ms.
        assert_eq!(PhiConfig::default().detection_ms(1_000), 4_523);
    }

    #[test]
    fn the_predicted_suspicion_time_is_when_phi_crosses_the_threshold() {
        for (threshold, pause) in [(8.0, 3_000.0), (1.0, 0.0), (12.0, 500.0), (3.0, 10_000.0)] {
            let config = PhiConfig { threshold, acceptable_pause_ms: pause, ..PhiConfig::default() };
            let mut d = PhiAccrual::new(config.clone());
            let mut now = 0;
            for i in 0..300u64 {
                now += 800 + (i * 37) % 400;
                d.heartbeat(now);
            }
            let at = d.suspect_at_ms().expect("heard from");
            assert!(!d.is_available(at), "threshold {threshold}: not yet suspected at {at}");
            assert!(d.is_available(at - 2), "threshold {threshold}: suspected before {at}");
        }
        assert_eq!(PhiAccrual::new(PhiConfig::default()).suspect_at_ms(), None);
    }

    #[test]
    fn phi_grows_with_silence_and_crosses_the_threshold_once() {
        let mut d = PhiAccrual::new(PhiConfig::default());
        for i in 0..=20 {
            d.heartbeat(i * 1_000);
        }
        let last = 20_000;
        assert!(d.phi(last + 1_000) < 0.01, "on time is not suspicious");
        assert!(d.is_available(last + 4_000));
        assert!(!d.is_available(last + 4_600));
        let mut previous = 0.0;
        for ms in (0..10_000).step_by(100) {
            let p = d.phi(last + ms);
            assert!(p >= previous, "phi never falls while silence grows");
            previous = p;
        }
    }

    #[test]
    fn jittery_heartbeats_widen_the_tolerance() {
        let config = PhiConfig { acceptable_pause_ms: 0.0, ..PhiConfig::default() };
        let steady = config.detection_ms(1_000);
        let mut jittery = PhiAccrual::new(config);
        let mut now = 0;
        for i in 0..200u64 {
            now += if i % 2 == 0 { 500 } else { 1_500 };
            jittery.heartbeat(now);
        }
        assert!(jittery.stddev_ms() > 400.0);
        assert!(jittery.is_available(now + steady), "jitter makes the same silence less suspicious");
    }

    #[test]
    fn an_outage_is_not_learned_and_late_or_reordered_beats_are_handled() {
        let mut d = PhiAccrual::new(PhiConfig::default());
        for i in 0..=10 {
            d.heartbeat(i * 1_000);
        }
        let mean = d.mean_ms();
        d.heartbeat(60_000); // back after a minute of silence: suspected, so not recorded
        assert_eq!(d.mean_ms(), mean);
        d.heartbeat(59_000); // reordered: ignored
        assert_eq!(d.last_heartbeat_ms(), Some(60_000));
        assert_eq!(PhiAccrual::new(PhiConfig::default()).phi(1_000_000), 0.0, "nothing heard, nothing suspected");
    }

    #[test]
    fn the_window_is_bounded_and_forgets_old_intervals() {
        let config = PhiConfig { window: 10, ..PhiConfig::default() };
        let mut d = PhiAccrual::new(config);
        let mut now = 0;
        for _ in 0..100 {
            now += 200;
            d.heartbeat(now);
        }
        assert_eq!(d.intervals.len(), 10);
        assert!((d.mean_ms() - 200.0).abs() < 1e-9, "only the last ten 200 ms intervals remain");
    }
}
