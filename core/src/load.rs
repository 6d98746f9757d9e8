//! Load patterns as pure functions of time: the request rate at any moment and the number of
//! arrivals in any interval, exactly, so schedules need no clock and no state.
//!
//! Time `t` counts from the start of the load, in milliseconds; rates are requests per second;
//! after the pattern's `duration_ms` the rate is 0. Pictures over a pattern's duration:
//!
//! ```text
//! constant  ▆▆▆▆▆▆▆▆   rps
//! ramp      ▁▂▃▄▅▆▇█   from_rps → to_rps (or down), a straight line
//! spike     ▂▂▂█▂▂▂▂   base_rps, spike_rps from spike_at_s for spike_duration_s
//! wave      ▄▆█▆▄▂▁▂   base_rps ± amplitude_rps, a sine of period_s
//! random    ▃▇▂▅▁▆▄▇   uniform in [min_rps, max_rps], redrawn every change_every_s from the seed
//! burst     █▁▁█▁▁█▁   burst_rps for burst_duration_s at the start of every burst_every_s, else base_rps
//! ```

use crate::scenario::Pattern;

/// A pattern with the seed its `random` draws come from.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pattern: Pattern,
    seed: u64,
    /// For `random`: arrivals before each segment (at most `RANDOM_CHANGES_MAX` + 2 entries).
    prefix: Vec<f64>,
}

impl Schedule {
    /// The schedule of `pattern`; `seed` fixes a `random` pattern's rates.
    pub fn new(pattern: Pattern, seed: u64) -> Schedule {
        let mut prefix = Vec::new();
        if let Pattern::Random { min_rps, max_rps, change_every_ms, duration_ms } = pattern {
            let segments = duration_ms.div_ceil(change_every_ms.max(1));
            prefix.reserve(segments as usize + 1);
            let mut total = 0.0;
            for segment in 0..=segments {
                prefix.push(total);
                total += (min_rps + (max_rps - min_rps) * unit(seed, segment)) * change_every_ms as f64 / 1000.0;
            }
        }
        Schedule { pattern, seed, prefix }
    }

    /// Arrivals over the whole pattern, whole ones.
    pub fn total_arrivals(&self) -> u64 {
        // Ulps of rounding must not lose the last arrival of an exact total.
        (self.arrivals_until(self.duration_ms() as f64) + 1e-9).floor() as u64
    }

    /// When arrival `k` (from 0) is due, in milliseconds from the start: the moment the
    /// expected arrivals reach `k`, so arrival 0 is at 0 and a constant 100 rps puts one every
    /// 10 ms. `None` past the last. `after_ms` is a time known not to be later (the previous
    /// arrival's), which makes stepping through a schedule cost a few evaluations per arrival.
    pub fn arrival_ms(&self, k: u64, after_ms: f64) -> Option<f64> {
        if k >= self.total_arrivals() {
            return None;
        }
        let target = k as f64;
        let (mut lo, mut hi) = (after_ms.max(0.0), self.duration_ms() as f64);
        if self.arrivals_until(lo) >= target {
            return Some(lo);
        }
        // Newton steps on the integral, kept inside a shrinking bracket (bisection when a step
        // would leave it or the rate is zero).
        let mut t = lo;
        for _ in 0..200 {
            let behind = target - self.arrivals_until(t);
            if behind.abs() < 1e-9 {
                break;
            }
            if behind > 0.0 {
                lo = t
            } else {
                hi = t
            }
            if hi - lo < 1e-6 {
                break;
            }
            let rate = self.rate_at(t) / 1000.0;
            let step = if rate > 0.0 { t + behind / rate } else { f64::NAN };
            t = if step > lo && step < hi { step } else { (lo + hi) / 2.0 };
        }
        Some(t.clamp(lo, hi))
    }

    /// The due times of one instance's share of the arrivals: instance `index` (from 0) of
    /// `of` takes arrivals `index`, `index + of`, `index + 2·of`, …, so the instances together
    /// make exactly the whole schedule, interleaved.
    pub fn share(&self, index: u32, of: u32) -> Arrivals<'_> {
        Arrivals { schedule: self, next: u64::from(index), step: u64::from(of.max(1)), after_ms: 0.0 }
    }

    /// How long the load runs, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.pattern.duration_ms()
    }

    /// The rate at `t_ms`, in requests per second.
    pub fn rate_at(&self, t_ms: f64) -> f64 {
        if t_ms < 0.0 || t_ms >= self.duration_ms() as f64 {
            return 0.0;
        }
        match self.pattern {
            Pattern::Constant { rps, .. } => rps,
            Pattern::Ramp { from_rps, to_rps, duration_ms } => {
                from_rps + (to_rps - from_rps) * t_ms / duration_ms as f64
            }
            Pattern::Spike { base_rps, spike_rps, spike_at_ms, spike_duration_ms, .. } => {
                let (at, end) = (spike_at_ms as f64, (spike_at_ms + spike_duration_ms) as f64);
                if (at..end).contains(&t_ms) { spike_rps } else { base_rps }
            }
            Pattern::Wave { base_rps, amplitude_rps, period_ms, .. } => {
                base_rps + amplitude_rps * (std::f64::consts::TAU * t_ms / period_ms as f64).sin()
            }
            Pattern::Random { min_rps, max_rps, change_every_ms, .. } => {
                let segment = (t_ms / change_every_ms as f64).floor() as u64;
                min_rps + (max_rps - min_rps) * unit(self.seed, segment)
            }
            Pattern::Burst { base_rps, burst_rps, burst_every_ms, burst_duration_ms, .. } => {
                let phase = t_ms % burst_every_ms as f64;
                if phase < burst_duration_ms as f64 { burst_rps } else { base_rps }
            }
        }
    }

    /// Expected arrivals from the start to `t_ms`: the integral of the rate (exact).
    pub fn arrivals_until(&self, t_ms: f64) -> f64 {
        let t = t_ms.clamp(0.0, self.duration_ms() as f64);
        let seconds = |ms: f64| ms / 1000.0;
        match self.pattern {
            Pattern::Constant { rps, .. } => rps * seconds(t),
            Pattern::Ramp { from_rps, to_rps, duration_ms } => {
                from_rps * seconds(t) + (to_rps - from_rps) * seconds(t) * t / (2.0 * duration_ms as f64)
            }
            Pattern::Spike { base_rps, spike_rps, spike_at_ms, spike_duration_ms, .. } => {
                let (at, end) = (spike_at_ms as f64, (spike_at_ms + spike_duration_ms) as f64);
                let in_spike = (t.min(end) - at).max(0.0);
                base_rps * seconds(t - in_spike) + spike_rps * seconds(in_spike)
            }
            Pattern::Wave { base_rps, amplitude_rps, period_ms, .. } => {
                let p = period_ms as f64;
                base_rps * seconds(t)
                    + amplitude_rps * seconds(p) / std::f64::consts::TAU * (1.0 - (std::f64::consts::TAU * t / p).cos())
            }
            Pattern::Random { min_rps, max_rps, change_every_ms, .. } => {
                let c = change_every_ms as f64;
                let full = ((t / c).floor() as usize).min(self.prefix.len() - 1);
                let rest = t - full as f64 * c;
                self.prefix[full] + (min_rps + (max_rps - min_rps) * unit(self.seed, full as u64)) * seconds(rest)
            }
            Pattern::Burst { base_rps, burst_rps, burst_every_ms, burst_duration_ms, .. } => {
                let (b, l) = (burst_every_ms as f64, burst_duration_ms as f64);
                let periods = (t / b).floor();
                let phase = t - periods * b;
                let per_period = burst_rps * seconds(l) + base_rps * seconds(b - l);
                let partial = burst_rps * seconds(phase.min(l)) + base_rps * seconds((phase - l).max(0.0));
                periods * per_period + partial
            }
        }
    }

    /// Expected arrivals in `[from_ms, to_ms)`.
    pub fn arrivals_between(&self, from_ms: f64, to_ms: f64) -> f64 {
        (self.arrivals_until(to_ms) - self.arrivals_until(from_ms)).max(0.0)
    }
}

/// The due times of one instance's arrivals, in milliseconds from the start.
#[derive(Clone, Debug)]
pub struct Arrivals<'a> {
    schedule: &'a Schedule,
    next: u64,
    step: u64,
    after_ms: f64,
}

impl Iterator for Arrivals<'_> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        let t = self.schedule.arrival_ms(self.next, self.after_ms)?;
        self.next += self.step;
        self.after_ms = t;
        Some(t)
    }
}

/// A uniform draw in [0, 1) from `seed` and `index`, stateless (SplitMix64).
fn unit(seed: u64, index: u64) -> f64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Pattern> {
        vec![
            Pattern::Constant { rps: 200.0, duration_ms: 30_000 },
            Pattern::Ramp { from_rps: 50.0, to_rps: 500.0, duration_ms: 30_000 },
            Pattern::Ramp { from_rps: 500.0, to_rps: 0.0, duration_ms: 10_000 },
            Pattern::Spike {
                base_rps: 100.0,
                spike_rps: 800.0,
                spike_at_ms: 10_000,
                spike_duration_ms: 5_000,
                duration_ms: 30_000,
            },
            Pattern::Wave { base_rps: 300.0, amplitude_rps: 200.0, period_ms: 10_000, duration_ms: 30_000 },
            Pattern::Random { min_rps: 50.0, max_rps: 400.0, change_every_ms: 2_000, duration_ms: 30_000 },
            Pattern::Burst {
                base_rps: 50.0,
                burst_rps: 600.0,
                burst_every_ms: 10_000,
                burst_duration_ms: 2_000,
                duration_ms: 30_000,
            },
        ]
    }

    #[test]
    fn arrivals_are_the_integral_of_the_rate() {
        for pattern in all() {
            let s = Schedule::new(pattern.clone(), 42);
            let mut integral = 0.0;
            let step = 0.5;
            let mut t = 0.0;
            while t < 35_000.0 {
                integral += s.rate_at(t + step / 2.0) * step / 1000.0;
                t += step;
                if (t % 1_000.0).abs() < 1e-9 {
                    let exact = s.arrivals_until(t);
                    assert!((exact - integral).abs() < 0.5 + exact * 1e-4, "{pattern:?} at {t}: {exact} vs {integral}");
                }
            }
        }
    }

    #[test]
    fn arrivals_fall_where_the_integral_says_and_shares_make_the_whole() {
        for pattern in all() {
            let s = Schedule::new(pattern.clone(), 42);
            let whole: Vec<f64> = s.share(0, 1).collect();
            assert_eq!(whole.len() as u64, s.total_arrivals(), "{pattern:?}");
            assert!(whole.windows(2).all(|w| w[0] <= w[1]), "{pattern:?}: due times never go back");
            for (k, t) in whole.iter().enumerate().step_by(97) {
                assert!((s.arrivals_until(*t) - k as f64).abs() < 1e-6, "{pattern:?}: arrival {k} at {t}");
            }
            // Per second, the arrivals are the integral's, to within one.
            for second in 0..30 {
                let (from, to) = (second as f64 * 1000.0, (second + 1) as f64 * 1000.0);
                let n = whole.iter().filter(|t| (from..to).contains(*t)).count() as f64;
                // Within one (two in the last second, whose fraction of an arrival is left out).
                assert!((n - s.arrivals_between(from, to)).abs() < 2.0, "{pattern:?} second {second}");
            }
            let mut shares: Vec<f64> = (0..3).flat_map(|i| s.share(i, 3).collect::<Vec<_>>()).collect();
            shares.sort_by(f64::total_cmp);
            assert_eq!(shares.len(), whole.len(), "{pattern:?}: three shares are the whole schedule");
            assert!(shares.iter().zip(&whole).all(|(a, b)| (a - b).abs() < 1e-6), "{pattern:?}: the same due times");
        }
        let constant = Schedule::new(Pattern::Constant { rps: 100.0, duration_ms: 1_000 }, 0);
        let due: Vec<f64> = constant.share(0, 1).collect();
        assert_eq!(due.len(), 100);
        assert!(due.iter().enumerate().all(|(k, t)| (t - k as f64 * 10.0).abs() < 1e-6), "{due:?}");
    }

    #[test]
    fn rates_follow_their_pictures() {
        let rate = |p: Pattern, t: f64| Schedule::new(p, 1).rate_at(t);
        let ramp = Pattern::Ramp { from_rps: 10.0, to_rps: 200.0, duration_ms: 120_000 };
        assert_eq!(rate(ramp.clone(), 0.0), 10.0);
        assert_eq!(rate(ramp.clone(), 60_000.0), 105.0);
        assert_eq!(rate(ramp, 120_000.0), 0.0, "nothing after the end");
        let spike =
            Pattern::Spike { base_rps: 1.0, spike_rps: 9.0, spike_at_ms: 10, spike_duration_ms: 5, duration_ms: 30 };
        assert_eq!([9.0, 10.0, 14.0, 15.0].map(|t| rate(spike.clone(), t)), [1.0, 9.0, 9.0, 1.0]);
        let wave = Pattern::Wave { base_rps: 300.0, amplitude_rps: 200.0, period_ms: 10_000, duration_ms: 30_000 };
        assert!((rate(wave.clone(), 2_500.0) - 500.0).abs() < 1e-9 && (rate(wave, 7_500.0) - 100.0).abs() < 1e-9);
        let burst = Pattern::Burst {
            base_rps: 50.0,
            burst_rps: 600.0,
            burst_every_ms: 10_000,
            burst_duration_ms: 2_000,
            duration_ms: 30_000,
        };
        assert_eq!([0.0, 1_999.0, 2_000.0, 10_500.0].map(|t| rate(burst.clone(), t)), [600.0, 600.0, 50.0, 600.0]);
    }

    #[test]
    fn random_rates_stay_in_bounds_and_depend_only_on_the_seed() {
        let p = Pattern::Random { min_rps: 50.0, max_rps: 400.0, change_every_ms: 1_000, duration_ms: 600_000 };
        let rates =
            |seed| (0..600).map(|s| Schedule::new(p.clone(), seed).rate_at(s as f64 * 1_000.0)).collect::<Vec<_>>();
        let a = rates(7);
        assert!(a.iter().all(|r| (50.0..400.0).contains(r)));
        assert_eq!(a, rates(7));
        assert_ne!(a, rates(8));
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!((mean - 225.0).abs() < 20.0, "uniform draws average the middle: {mean}");
    }
}
