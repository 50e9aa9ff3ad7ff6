//! Figures over repetitions: the median of a point's runs with a distribution-free 95%
//! confidence interval from order statistics, and the comparison of two such intervals.
//!
//! The interval: with the `n` values sorted, `[x(k), x(n+1-k)]` (1-based) covers the true
//! median with probability `1 - 2·P(B <= k-1)` for `B ~ Binomial(n, 1/2)`, whatever the
//! distribution (continuous, the runs independent). `k` is the largest that keeps that
//! probability at 95% or more. Below six runs no pair of order statistics reaches 95%:
//! the interval is then the whole range, and [`Interval::level`] says how much it covers
//! (75% with 3 runs, 94% with 5), so a reader sees that the figure rests on few runs.

/// A median and its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The median of the values.
    pub median: f64,
    /// The interval's lower end.
    pub low: f64,
    /// Its upper end.
    pub high: f64,
    /// The probability that it covers the true median (0.95 or more from six values).
    pub level: f64,
    /// Values it rests on.
    pub n: usize,
}

impl Interval {
    /// Half the interval's width over the median, as a fraction (0.05: ±5 %).
    pub fn relative_half_width(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.high - self.low) / 2.0 / self.median.abs()
        }
    }
}

/// `P(B <= k)` for `B ~ Binomial(n, 1/2)`.
fn binomial_half_cdf(n: usize, k: usize) -> f64 {
    // Terms C(n, i) / 2^n built up multiplicatively, in logs so large n does not overflow.
    let mut log_term = -(n as f64) * std::f64::consts::LN_2; // i = 0
    let mut sum = log_term.exp();
    for i in 1..=k.min(n) {
        log_term += ((n - i + 1) as f64).ln() - (i as f64).ln();
        sum += log_term.exp();
    }
    sum.min(1.0)
}

/// The median of `values` (finite ones; NaNs are left out) and its 95% interval; `None`
/// for no values.
pub fn median_interval(values: &[f64]) -> Option<Interval> {
    let mut x: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if x.is_empty() {
        return None;
    }
    x.sort_by(f64::total_cmp);
    let n = x.len();
    let median = if n % 2 == 1 {
        x[n / 2]
    } else {
        (x[n / 2 - 1] + x[n / 2]) / 2.0
    };
    // The largest k (1-based) with coverage >= 95%; 1 (the range) when none reaches it.
    let mut k = 1;
    while k < n / 2 + 1 && 1.0 - 2.0 * binomial_half_cdf(n, k) >= 0.95 {
        k += 1;
    }
    let level = (1.0 - 2.0 * binomial_half_cdf(n, k - 1)).max(0.0);
    Some(Interval {
        median,
        low: x[k - 1],
        high: x[n - k],
        level,
        n,
    })
}

/// How a figure moved between two sets of runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Better beyond the threshold, and beyond the noise (the intervals do not overlap).
    Better,
    /// Worse beyond the threshold and the noise.
    Worse,
    /// Within the threshold, or the intervals overlap.
    Same,
}

/// Compares `new` with `base`: `Better` or `Worse` only when the intervals do not
/// overlap and the medians differ by more than `threshold` (a fraction of the base
/// median); `higher_is_better` for rates, not for latencies. The relative change comes
/// with it.
pub fn compare(
    base: &Interval,
    new: &Interval,
    threshold: f64,
    higher_is_better: bool,
) -> (Change, f64) {
    let rel = if base.median == 0.0 {
        0.0
    } else {
        (new.median - base.median) / base.median.abs()
    };
    let apart = new.low > base.high || new.high < base.low;
    if !apart || rel.abs() <= threshold {
        return (Change::Same, rel);
    }
    let up = rel > 0.0;
    let change = if up == higher_is_better {
        Change::Better
    } else {
        Change::Worse
    };
    (change, rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small generator for the tests (SplitMix64).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn binomial_tail_is_right() {
        assert!((binomial_half_cdf(5, 0) - 1.0 / 32.0).abs() < 1e-12);
        assert!((binomial_half_cdf(5, 2) - 0.5).abs() < 1e-12);
        assert!((binomial_half_cdf(10, 10) - 1.0).abs() < 1e-12);
        assert!((binomial_half_cdf(4, 1) - 5.0 / 16.0).abs() < 1e-12);
    }

    #[test]
    fn few_values_give_the_range_and_say_how_little_it_covers() {
        let i = median_interval(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((i.median, i.low, i.high), (2.0, 1.0, 3.0));
        assert!((i.level - 0.75).abs() < 1e-12);
        let i = median_interval(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(i.median, 2.5);
        let i = median_interval(&[1.0]).unwrap();
        assert_eq!((i.median, i.low, i.high, i.level), (1.0, 1.0, 1.0, 0.0));
        assert!(median_interval(&[]).is_none());
        assert!(median_interval(&[f64::NAN]).is_none());
        // From six values the interval reaches 95%.
        let six = median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert!(six.level >= 0.95, "{six:?}");
        let many: Vec<f64> = (1..=100).map(f64::from).collect();
        let i = median_interval(&many).unwrap();
        assert!(i.level >= 0.95 && i.level < 0.97, "{i:?}");
        assert!(i.low > 35.0 && i.high < 65.0, "{i:?}");
    }

    /// Over many draws from known distributions, the interval covers the true median at
    /// least at its stated rate (less a margin for the finite number of draws).
    #[test]
    fn the_interval_covers_the_true_median_at_its_stated_rate() {
        let mut rng = Rng(42);
        // (name, sampler, true median)
        type Sampler = fn(&mut Rng) -> f64;
        let cases: [(&str, Sampler, f64); 3] = [
            ("uniform", |r| r.next(), 0.5),
            (
                "exponential",
                |r| -(1.0 - r.next()).ln(),
                std::f64::consts::LN_2,
            ),
            (
                // A latency-like skew: lognormal with sigma 1 (Box-Muller), median 1.
                "lognormal",
                |r| {
                    let (u, v) = (1.0 - r.next(), r.next());
                    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()).exp()
                },
                1.0,
            ),
        ];
        for (name, sample, truth) in cases {
            for n in [5usize, 6, 9, 20, 50] {
                let draws = 4000;
                let mut covered = 0;
                let mut level = 0.0;
                for _ in 0..draws {
                    let xs: Vec<f64> = (0..n).map(|_| sample(&mut rng)).collect();
                    let i = median_interval(&xs).unwrap();
                    level = i.level;
                    covered += usize::from(i.low <= truth && truth <= i.high);
                }
                let rate = covered as f64 / draws as f64;
                // Three standard errors of a proportion at this level and draw count.
                let margin = 3.0 * (level * (1.0 - level) / draws as f64).sqrt() + 1e-3;
                assert!(
                    rate >= level - margin,
                    "{name}, n = {n}: covered {rate:.4}, stated {level:.4}"
                );
            }
        }
    }

    #[test]
    fn a_change_counts_only_beyond_the_noise_and_the_threshold() {
        let iv = |m: f64, lo: f64, hi: f64| Interval {
            median: m,
            low: lo,
            high: hi,
            level: 0.95,
            n: 9,
        };
        let base = iv(100.0, 95.0, 105.0);
        // Latency up 20 %, apart: worse.
        assert_eq!(
            compare(&base, &iv(120.0, 115.0, 125.0), 0.1, false).0,
            Change::Worse
        );
        // The same for a rate: better.
        assert_eq!(
            compare(&base, &iv(120.0, 115.0, 125.0), 0.1, true).0,
            Change::Better
        );
        // Overlapping intervals: no change, however far the medians.
        assert_eq!(
            compare(&base, &iv(120.0, 100.0, 140.0), 0.1, false).0,
            Change::Same
        );
        // Apart, but within the threshold.
        assert_eq!(
            compare(&base, &iv(108.0, 106.0, 110.0), 0.1, false).0,
            Change::Same
        );
        let (_, rel) = compare(&base, &iv(80.0, 78.0, 82.0), 0.1, false);
        assert!((rel + 0.2).abs() < 1e-12);
    }
}
