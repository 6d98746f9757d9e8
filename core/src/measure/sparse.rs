//! A histogram that holds only the buckets it recorded: one second of a load's latencies.
//!
//! An HdrHistogram keeps a counter for every bucket of its range, recorded or not: 26 KB for two
//! significant digits over 1 µs to an hour. A load's series has two histograms per second per
//! attempt, so dense ones cost attempts × seconds × the whole range, however few requests a
//! second saw. [`Sparse`] buckets values exactly as an HdrHistogram of [`SECOND_DIGITS`] over
//! 1 µs to [`LATENCY_US_MAX`] would (the bucketing is asked of one such histogram, built once),
//! keeps the recorded buckets in a sorted vector, and answers quantiles as that histogram
//! would: adding sparse histograms is as lossless as adding dense ones, and the series' p50 and
//! p99 are the same numbers. Memory is proportional to the distinct buckets recorded, at most
//! [`Sparse::BUCKETS_MAX`].

use std::sync::OnceLock;

use hdrhistogram::Histogram;

use super::LATENCY_US_MAX;

/// Significant digits of a second's histograms (1% resolution).
pub const SECOND_DIGITS: u8 = 2;

/// The dense histogram whose buckets [`Sparse`] uses. Built once; only asked about bucket bounds.
fn shape() -> &'static Histogram<u64> {
    static SHAPE: OnceLock<Histogram<u64>> = OnceLock::new();
    SHAPE.get_or_init(|| {
        Histogram::new_with_bounds(1, LATENCY_US_MAX, SECOND_DIGITS).expect("constant bounds are valid")
    })
}

/// One recorded bucket: its lowest value and how many values fell in it. Packed to 12 bytes,
/// since a long load holds many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(4))]
struct Bucket {
    /// The bucket's lowest value, in microseconds; below 2^32 because [`LATENCY_US_MAX`] is.
    low: u32,
    count: u64,
}

/// Latencies in microseconds, bucketed as a dense HdrHistogram of [`SECOND_DIGITS`] would be,
/// holding only recorded buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sparse {
    /// Recorded buckets by `low`, each once, none empty.
    buckets: Vec<Bucket>,
    /// The sum of the counts.
    total: u64,
}

impl Sparse {
    /// The most buckets a sparse histogram can hold: every bucket of the dense histogram that
    /// holds a value up to [`LATENCY_US_MAX`].
    pub const BUCKETS_MAX: usize = 3_286;

    /// An empty histogram; allocates nothing.
    pub const fn new() -> Sparse {
        Sparse { buckets: Vec::new(), total: 0 }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many values were recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// How many distinct buckets hold values.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Records `count` values of `us`, clamped to 1 µs ..= [`LATENCY_US_MAX`].
    pub fn record_n(&mut self, us: u64, count: u64) {
        if count == 0 {
            return;
        }
        let low = shape().lowest_equivalent(us.clamp(1, LATENCY_US_MAX));
        // The shape's buckets start at or below the value, which is at most LATENCY_US_MAX.
        let low = u32::try_from(low).expect("bucket bounds fit in 32 bits");
        self.total = self.total.saturating_add(count);
        match self.buckets.binary_search_by_key(&low, |b| b.low) {
            Ok(i) => self.buckets[i].count = self.buckets[i].count.saturating_add(count),
            Err(i) => {
                // Grow by a quarter, not by doubling: a finished second keeps at most 25% slack.
                if self.buckets.len() == self.buckets.capacity() {
                    self.buckets.reserve_exact((self.buckets.len() / 4).max(4));
                }
                self.buckets.insert(i, Bucket { low, count });
            }
        }
    }

    /// Records one value.
    pub fn record(&mut self, us: u64) {
        self.record_n(us, 1);
    }

    /// Adds every value of `other`.
    pub fn add(&mut self, other: &Sparse) {
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.clone_from(other);
            return;
        }
        self.total = self.total.saturating_add(other.total);
        let (a, b) = (&mut self.buckets, &other.buckets);
        // Adding seconds into a merged series mostly finds every bucket there already: then the
        // counts add in place, and nothing is allocated.
        let (mut i, mut new) = (0, 0);
        for y in b {
            while i < a.len() && a[i].low < y.low {
                i += 1;
            }
            new += usize::from(i == a.len() || a[i].low != y.low);
        }
        if new == 0 {
            let mut i = 0;
            for y in b {
                while a[i].low < y.low {
                    i += 1;
                }
                a[i].count = a[i].count.saturating_add(y.count);
            }
            return;
        }
        let mut merged = Vec::with_capacity(a.len() + new);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i], b[j]);
            if x.low == y.low {
                merged.push(Bucket { low: x.low, count: x.count.saturating_add(y.count) });
                (i, j) = (i + 1, j + 1);
            } else if x.low < y.low {
                merged.push(x);
                i += 1;
            } else {
                merged.push(y);
                j += 1;
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        *a = merged;
    }

    /// The value at quantile `q`, exactly as [`Histogram::value_at_quantile`] of a dense
    /// histogram holding the same values answers: the highest value of the first bucket whose
    /// cumulative count reaches `q` of the total (its lowest value for `q` = 0), 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        let q = q.min(1.0);
        let wanted = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for b in &self.buckets {
            seen += b.count;
            if seen >= wanted {
                let low = u64::from(b.low);
                return if q == 0.0 { low } else { shape().highest_equivalent(low) };
            }
        }
        0
    }

    /// The same values in a dense histogram of the shape's bounds (for the wire format).
    pub fn to_dense(&self) -> Histogram<u64> {
        let mut h = shape().clone();
        for b in &self.buckets {
            h.saturating_record_n(u64::from(b.low), b.count);
        }
        h
    }

    /// The values of a dense histogram of any bounds, re-bucketed into the shape's buckets
    /// (exactly the same buckets when the bounds and digits are the shape's).
    pub fn from_dense(h: &Histogram<u64>) -> Sparse {
        let shape = shape();
        let mut s = Sparse::new();
        for v in h.iter_recorded() {
            // Recorded values come in increasing order and bucket bounds never decrease with
            // the value, so each one lands in the last bucket or a new one after it. (Several
            // land in one only when `h` has finer buckets than the shape.)
            let low = shape.lowest_equivalent(v.value_iterated_to().clamp(1, LATENCY_US_MAX));
            let low = u32::try_from(low).expect("bucket bounds fit in 32 bits");
            let count = v.count_at_value();
            s.total = s.total.saturating_add(count);
            match s.buckets.last_mut() {
                Some(last) if last.low == low => last.count = last.count.saturating_add(count),
                last => {
                    debug_assert!(last.is_none_or(|b| b.low < low), "recorded values come in order");
                    s.buckets.push(Bucket { low, count });
                }
            }
        }
        s.buckets.shrink_to_fit();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic latencies with a tail long enough to reach the highest buckets.
    fn latencies(seed: u64, n: usize) -> Vec<u64> {
        super::super::test_latencies(seed, n, 50.0, 0.9, 1e-9)
    }

    #[test]
    fn quantiles_equal_a_dense_histogram_s() {
        for (seed, n) in [(1, 1), (2, 7), (3, 100), (4, 5_000), (5, 50_000)] {
            let mut sparse = Sparse::new();
            let mut dense = shape().clone();
            for us in latencies(seed, n).into_iter().chain([0, 1, LATENCY_US_MAX, u64::MAX]) {
                sparse.record(us);
                dense.saturating_record(us.clamp(1, LATENCY_US_MAX));
            }
            assert_eq!(sparse.len(), dense.len());
            for q in [0.0, 0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0, 1.5] {
                assert_eq!(sparse.value_at_quantile(q), dense.value_at_quantile(q), "seed {seed}, q {q}");
            }
            assert_eq!(sparse.to_dense(), dense);
            assert_eq!(Sparse::from_dense(&dense), sparse);
        }
        assert_eq!(Sparse::new().value_at_quantile(0.5), shape().value_at_quantile(0.5));
    }

    #[test]
    fn adding_is_recording_everything_in_one() {
        let (a, b) = (latencies(11, 3_000), latencies(12, 2_000));
        let (mut x, mut y, mut all) = (Sparse::new(), Sparse::new(), Sparse::new());
        a.iter().for_each(|&us| x.record(us));
        b.iter().for_each(|&us| y.record(us));
        a.iter().chain(&b).for_each(|&us| all.record(us));
        let mut sum = x.clone();
        sum.add(&y);
        assert_eq!(sum, all);
        let mut empty = Sparse::new();
        empty.add(&x);
        assert_eq!(empty, x);
        x.add(&Sparse::new());
        assert_eq!(empty, x);
        // Every bucket of `x` is in `sum` already: added in place, as if recorded again.
        let capacity = sum.buckets.capacity();
        sum.add(&x);
        assert_eq!(sum, {
            let mut again = Sparse::new();
            a.iter().chain(&a).chain(&b).for_each(|&us| again.record(us));
            again
        });
        assert_eq!(sum.buckets.capacity(), capacity, "nothing reallocated");
    }

    #[test]
    fn a_finer_histogram_from_another_implementation_lands_in_the_same_buckets() {
        let values = latencies(21, 10_000);
        let mut fine = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds");
        let mut direct = Sparse::new();
        for &us in &values {
            fine.saturating_record(us.clamp(1, LATENCY_US_MAX));
            direct.record(us);
        }
        assert_eq!(Sparse::from_dense(&fine), direct);
    }

    #[test]
    fn memory_follows_what_was_recorded() {
        let mut s = Sparse::new();
        assert_eq!(s.buckets.capacity(), 0, "an empty second allocates nothing");
        for _ in 0..1_000 {
            s.record(10_000);
        }
        assert_eq!((s.buckets(), s.len()), (1, 1_000));
        for us in 1..=LATENCY_US_MAX.ilog2() {
            s.record(1 << us);
        }
        assert!(s.buckets() <= Sparse::BUCKETS_MAX);
        assert_eq!(std::mem::size_of::<Bucket>(), 12);
    }

    #[test]
    fn every_bucket_of_the_range_fits() {
        let dense = shape();
        let mut all = Sparse::new();
        let mut us = 1;
        while us <= LATENCY_US_MAX {
            all.record(us);
            us = dense.next_non_equivalent(us);
        }
        assert_eq!(all.buckets(), Sparse::BUCKETS_MAX);
        // The dense histogram's last bucket reaches past the range: it has a few more counters.
        assert!(dense.distinct_values() >= Sparse::BUCKETS_MAX);
    }
}
