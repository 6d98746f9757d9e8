//! Exponential backoff with full jitter (the AWS architecture blog's recommendation): before
//! retry `n` (from 0), wait a uniform draw from `[0, min(cap, base · 2^n)]` milliseconds. Full
//! jitter spreads the retries of many failed tasks instead of letting them return in waves.
//! The draw comes from the caller's seeded generator, so a simulation replays it exactly.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;

/// The wait before retry `attempt` (0 for the first retry), in milliseconds.
pub fn full_jitter_ms(attempt: u32, base_ms: f64, cap_ms: f64, rng: &mut ChaCha8Rng) -> u64 {
    let ceiling = (base_ms * 2f64.powi(attempt.min(62) as i32)).min(cap_ms).max(0.0);
    let ceiling = ceiling.round() as u64;
    if ceiling == 0 { 0 } else { rng.next_u64() % (ceiling + 1) }
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;

    #[test]
    fn waits_grow_exponentially_up_to_the_cap_and_are_spread_over_the_whole_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for attempt in 0..20 {
            let ceiling = (100.0 * 2f64.powi(attempt)).min(10_000.0) as u64;
            let draws: Vec<u64> =
                (0..2_000).map(|_| full_jitter_ms(attempt as u32, 100.0, 10_000.0, &mut rng)).collect();
            assert!(draws.iter().all(|&d| d <= ceiling), "attempt {attempt}: above {ceiling}");
            let mean = draws.iter().sum::<u64>() as f64 / draws.len() as f64;
            let expected = ceiling as f64 / 2.0;
            assert!(
                (mean - expected).abs() < expected * 0.1,
                "attempt {attempt}: mean {mean}, expected about {expected}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_waits() {
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..10).map(|a| full_jitter_ms(a, 100.0, 10_000.0, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        assert_eq!(full_jitter_ms(5, 0.0, 10_000.0, &mut ChaCha8Rng::seed_from_u64(0)), 0);
    }
}
