//! A circuit breaker per node, as resilience4j's count-based breaker: closed, open, half-open.
//!
//! **Closed**: work flows; the outcomes of the last `window` attempts are kept. Once at least
//! `minimum_calls` are in and the failure rate reaches `failure_rate`, the breaker **opens**: the
//! node gets no new work for `open_ms`. Then it is **half-open**: up to `half_open_trials`
//! attempts are let through; if their failure rate reaches `failure_rate` it opens again,
//! otherwise it closes with a fresh window. Defaults: 50% of the last 100 (at least 10), open
//! for 30 s, 5 trials. The breaker only answers; the orchestrator tells the pool
//! (`Pool::set_circuit_open`).

/// Settings of a [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Outcomes kept while closed.
    pub window: usize,
    /// Outcomes needed before the failure rate counts.
    pub minimum_calls: usize,
    /// Failure rate (0 to 1) that opens the breaker.
    pub failure_rate: f64,
    /// How long it stays open.
    pub open_ms: u64,
    /// Attempts let through while half-open.
    pub half_open_trials: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { window: 100, minimum_calls: 10, failure_rate: 0.5, open_ms: 30_000, half_open_trials: 5 }
    }
}

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Work flows.
    Closed,
    /// No new work until `until_ms`.
    Open {
        /// When it turns half-open.
        until_ms: u64,
    },
    /// A few trial attempts are let through.
    HalfOpen {
        /// Trials not yet handed out.
        permits: u32,
        /// Trial outcomes so far.
        successes: u32,
        /// Trial failures so far.
        failures: u32,
    },
}

/// One node's breaker.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    /// Outcomes while closed (true = failure), a ring buffer with a failure count.
    outcomes: Vec<bool>,
    next: usize,
    failures: usize,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            state: BreakerState::Closed,
            outcomes: Vec::with_capacity(config.window.max(1)),
            next: 0,
            failures: 0,
            config,
        }
    }

    /// The state at `now_ms` (an open breaker whose time is up is half-open).
    pub fn state(&mut self, now_ms: u64) -> BreakerState {
        if let BreakerState::Open { until_ms } = self.state
            && now_ms >= until_ms
        {
            self.state =
                BreakerState::HalfOpen { permits: self.config.half_open_trials.max(1), successes: 0, failures: 0 };
        }
        self.state
    }

    /// Whether new work may go to the node at `now_ms`; while half-open this hands out one of
    /// the trial permits.
    pub fn try_acquire(&mut self, now_ms: u64) -> bool {
        match self.state(now_ms) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { permits, successes, failures } => {
                if permits == 0 {
                    return false;
                }
                self.state = BreakerState::HalfOpen { permits: permits - 1, successes, failures };
                true
            }
        }
    }

    /// Whether the node is closed to new work at `now_ms` (open, or half-open with no permit
    /// left), for `Pool::set_circuit_open`.
    pub fn is_open(&mut self, now_ms: u64) -> bool {
        match self.state(now_ms) {
            BreakerState::Closed => false,
            BreakerState::Open { .. } => true,
            BreakerState::HalfOpen { permits, .. } => permits == 0,
        }
    }

    /// Records the outcome of an attempt on the node at `now_ms`; returns the new state.
    pub fn record(&mut self, now_ms: u64, failed: bool) -> BreakerState {
        match self.state(now_ms) {
            BreakerState::Closed => {
                let window = self.config.window.max(1);
                if self.outcomes.len() < window {
                    self.outcomes.push(failed);
                } else {
                    let old = std::mem::replace(&mut self.outcomes[self.next], failed);
                    self.failures -= usize::from(old);
                    self.next = (self.next + 1) % window;
                }
                self.failures += usize::from(failed);
                let calls = self.outcomes.len();
                if calls >= self.config.minimum_calls.max(1)
                    && self.failures as f64 / calls as f64 >= self.config.failure_rate
                {
                    self.open(now_ms);
                }
            }
            // An attempt started before the breaker opened may still report; it changes nothing.
            BreakerState::Open { .. } => {}
            BreakerState::HalfOpen { permits, successes, failures } => {
                let (successes, failures) = if failed { (successes, failures + 1) } else { (successes + 1, failures) };
                let trials = self.config.half_open_trials.max(1);
                if f64::from(failures) / f64::from(trials) >= self.config.failure_rate {
                    self.open(now_ms);
                } else if successes + failures >= trials {
                    self.close();
                } else {
                    self.state = BreakerState::HalfOpen { permits, successes, failures };
                }
            }
        }
        self.state
    }

    fn open(&mut self, now_ms: u64) {
        self.state = BreakerState::Open { until_ms: now_ms.saturating_add(self.config.open_ms) };
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.outcomes.clear();
        self.next = 0;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig { window: 10, minimum_calls: 4, failure_rate: 0.5, open_ms: 1_000, half_open_trials: 2 }
    }

    #[test]
    fn opens_at_the_failure_rate_once_enough_calls_are_in() {
        let mut b = CircuitBreaker::new(config());
        assert_eq!(b.record(0, true), BreakerState::Closed);
        assert_eq!(b.record(0, true), BreakerState::Closed, "two calls are too few to judge");
        assert_eq!(b.record(0, false), BreakerState::Closed);
        assert_eq!(b.record(5, false), BreakerState::Open { until_ms: 1_005 }, "2 of 4 failed");
        assert!(!b.try_acquire(500));
        assert!(b.is_open(500));
    }

    #[test]
    fn half_open_lets_trials_through_and_closes_or_reopens() {
        let mut b = CircuitBreaker::new(config());
        for _ in 0..4 {
            b.record(0, true);
        }
        assert!(matches!(b.state(1_000), BreakerState::HalfOpen { permits: 2, .. }));
        assert!(b.try_acquire(1_000));
        assert!(b.try_acquire(1_000));
        assert!(!b.try_acquire(1_000), "only two trials");
        assert!(b.is_open(1_000));
        assert!(matches!(b.record(1_100, false), BreakerState::HalfOpen { .. }));
        assert_eq!(b.record(1_200, false), BreakerState::Closed, "both trials passed");
        assert!(!b.is_open(1_200));

        for _ in 0..4 {
            b.record(2_000, true);
        }
        assert!(b.try_acquire(3_000));
        assert_eq!(b.record(3_100, true), BreakerState::Open { until_ms: 4_100 }, "a failed trial reopens");
    }

    #[test]
    fn the_window_slides() {
        let mut b = CircuitBreaker::new(BreakerConfig { minimum_calls: 10, ..config() });
        for i in 0..100 {
            // Failures every third call: 33%, under the rate, however long it runs.
            assert_eq!(b.record(i, i % 3 == 0), BreakerState::Closed, "call {i}");
        }
        assert_eq!(b.outcomes.len(), 10);
    }
}
