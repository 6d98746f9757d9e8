//! Means over seeds with their 95% confidence intervals (Student's t), alone and of paired
//! differences: what `dtest sim --strategy all --seeds A..B` reports. One seed says little about
//! a strategy (its faults and draws may favour it); over many seeds, a difference whose interval
//! excludes 0 is one the seeds do not explain. Pairing by seed (the same seeds for every
//! strategy) takes out what the seeds share, so smaller differences show.

use serde::Serialize;

/// Two-sided 95% critical values of Student's t for 1 to 30 degrees of freedom.
const T_95: [f64; 30] = [
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604, 2.1448,
    2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484,
    2.0452, 2.0423,
];

/// The 97.5% quantile of the standard normal distribution.
const Z_975: f64 = 1.959_963_984_540_054;

/// The two-sided 95% critical value of Student's t with `df` degrees of freedom (from 1): the
/// table up to 30, then the Cornish-Fisher expansion around the normal quantile, within 1e-5 of
/// the exact value there and closer beyond.
pub fn t_critical_95(df: u64) -> f64 {
    if let Some(&t) = usize::try_from(df).ok().and_then(|df| df.checked_sub(1)).and_then(|i| T_95.get(i)) {
        return t;
    }
    let (z, v) = (Z_975, df as f64);
    let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
    z + (z3 + z) / (4.0 * v)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * v * v * v)
}

/// A mean over `n` values with its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// How many values (for a difference: pairs).
    pub n: u64,
    /// Their mean.
    pub mean: f64,
    /// The interval's lower end; none with fewer than two values.
    pub low: Option<f64>,
    /// Its upper end.
    pub high: Option<f64>,
}

impl Estimate {
    /// The estimate of the mean of `values`; none without values.
    pub fn of(values: &[f64]) -> Option<Estimate> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let half = (n >= 2).then(|| {
            let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
            t_critical_95(n as u64 - 1) * (variance / n as f64).sqrt()
        });
        Some(Estimate { n: n as u64, mean, low: half.map(|h| mean - h), high: half.map(|h| mean + h) })
    }

    /// Half the interval's width: the `±` of `mean ± half`.
    pub fn half_width(&self) -> Option<f64> {
        Some((self.high? - self.low?) / 2.0)
    }

    /// Whether the interval lies wholly on one side of 0.
    pub fn excludes_zero(&self) -> bool {
        self.low.is_some_and(|l| l > 0.0) || self.high.is_some_and(|h| h < 0.0)
    }
}

/// The mean of paired differences with its interval, and whether it is significant.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Difference {
    /// The differences' mean and interval; `n` counts the pairs.
    #[serde(flatten)]
    pub estimate: Estimate,
    /// Whether the interval excludes 0: the seeds do not explain the difference.
    pub significant: bool,
}

impl Difference {
    /// `ours - theirs`, seed by seed, over the seeds where both have a value; none when no seed
    /// has both.
    pub fn paired(ours: &[Option<f64>], theirs: &[Option<f64>]) -> Option<Difference> {
        let differences: Vec<f64> = ours.iter().zip(theirs).filter_map(|(a, b)| Some((*a)? - (*b)?)).collect();
        let estimate = Estimate::of(&differences)?;
        Some(Difference { estimate, significant: estimate.excludes_zero() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, within: f64) -> bool {
        (a - b).abs() <= within
    }

    #[test]
    fn the_critical_values_are_student_s() {
        assert_eq!(t_critical_95(1), 12.7062);
        assert_eq!(t_critical_95(9), 2.2622);
        assert_eq!(t_critical_95(30), 2.0423);
        // Past the table: t(40) = 2.021075, t(60) = 2.000298, t(120) = 1.979930, then the normal.
        assert!(close(t_critical_95(40), 2.021_075, 1e-5), "{}", t_critical_95(40));
        assert!(close(t_critical_95(60), 2.000_298, 1e-5), "{}", t_critical_95(60));
        assert!(close(t_critical_95(120), 1.979_930, 1e-5), "{}", t_critical_95(120));
        assert!(close(t_critical_95(u64::MAX), Z_975, 1e-9));
        // The expansion joins the table smoothly: t(31) is between t(30) and t(40).
        assert!(t_critical_95(31) < 2.0423 && t_critical_95(31) > 2.0211, "{}", t_critical_95(31));
    }

    #[test]
    fn an_interval_of_known_numbers() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sample sd sqrt(32/7) = 2.13809, t(7) = 2.3646,
        // half-width 2.3646 * 2.13809 / sqrt(8) = 1.78747.
        let e = Estimate::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).expect("values");
        assert_eq!((e.n, e.mean), (8, 5.0));
        let half = e.half_width().expect("two values or more");
        assert!(close(half, 2.3646 * (32.0f64 / 7.0).sqrt() / 8f64.sqrt(), 1e-12), "{half}");
        assert!(close(half, 1.787_47, 1e-5), "{half}");
        assert!(e.excludes_zero());
        // One value: a mean, no interval; none: nothing.
        let one = Estimate::of(&[3.5]).expect("a value");
        assert_eq!((one.mean, one.low, one.high, one.excludes_zero()), (3.5, None, None, false));
        assert_eq!(Estimate::of(&[]), None);
        // Equal values: an interval of width 0.
        assert_eq!(Estimate::of(&[2.0, 2.0, 2.0]).and_then(|e| e.half_width()), Some(0.0));
    }

    #[test]
    fn paired_differences_skip_missing_values_and_mark_what_excludes_zero() {
        let ours = [Some(10.0), Some(12.0), None, Some(11.0), Some(13.0)];
        let theirs = [Some(9.0), Some(10.5), Some(8.0), None, Some(11.5)];
        // Pairs: 1.0, 1.5, 1.5; mean 4/3, sd sqrt(1/12), t(2) = 4.3027.
        let d = Difference::paired(&ours, &theirs).expect("pairs");
        assert_eq!(d.estimate.n, 3);
        assert!(close(d.estimate.mean, 4.0 / 3.0, 1e-12));
        let half = 4.3027 * (1.0f64 / 12.0).sqrt() / 3f64.sqrt();
        assert!(close(d.estimate.half_width().expect("an interval"), half, 1e-12));
        assert!(d.significant, "{d:?}");
        // The same values against themselves: 0, not significant.
        let same = Difference::paired(&ours, &ours).expect("pairs");
        assert_eq!((same.estimate.mean, same.estimate.low, same.significant), (0.0, Some(0.0), false));
        // Noise around 0 is not significant either.
        let noise = Difference::paired(&[Some(1.0), Some(-1.0), Some(2.0)], &[Some(0.0); 3]).expect("pairs");
        assert!(!noise.significant, "{noise:?}");
        assert_eq!(Difference::paired(&[None, Some(1.0)], &[Some(1.0), None]), None);
    }
}
