//! Percentiles and latency summaries.

use std::time::Duration;

/// Returns the `p`-th percentile (0 to 100) of `values`, or `None` when `values` is empty or `p`
/// is outside 0..=100 or not a number.
///
/// The method is linear interpolation between closest ranks, numpy's default (`method="linear"`):
/// sort the values, take the fractional rank `h = (n - 1) * p / 100`, and interpolate between the
/// values at `floor(h)` and `ceil(h)`. NaN values are ignored.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    percentile_of_sorted(&sorted, p)
}

/// Like [`percentile`], for values already sorted ascending and free of NaN.
pub fn percentile_of_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }

    let rank = (sorted.len() - 1) as f64 * p / 100.0;
    let lower = rank.floor() as usize;
    let upper = rank.ceil() as usize;
    let fraction = rank - lower as f64;
    Some(sorted[lower] + (sorted[upper] - sorted[lower]) * fraction)
}

/// Returns the `p`-th percentile of the successful latencies `ok_sorted` (sorted ascending)
/// together with `failures` requests counted as infinitely slow, with [`percentile`]'s method.
///
/// `Some(f64::INFINITY)` means the percentile falls among the failures: it is unbounded. `None`
/// means there is nothing to summarize or `p` is out of range.
pub fn percentile_with_failures(ok_sorted: &[f64], failures: usize, p: f64) -> Option<f64> {
    let n = ok_sorted.len() + failures;
    if n == 0 || !(0.0..=100.0).contains(&p) {
        return None;
    }

    let rank = (n - 1) as f64 * p / 100.0;
    let (lower, upper) = (rank.floor() as usize, rank.ceil() as usize);
    let value = |i: usize| ok_sorted.get(i).copied().unwrap_or(f64::INFINITY);
    if value(upper).is_infinite() {
        return Some(f64::INFINITY);
    }
    Some(value(lower) + (value(upper) - value(lower)) * (rank - lower as f64))
}

/// Summary statistics of a set of latencies, all `None` when the set is empty.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencyStats {
    /// Number of latencies summarized.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: Option<Duration>,
    /// Median.
    pub p50: Option<Duration>,
    /// 95th percentile.
    pub p95: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// Smallest value.
    pub min: Option<Duration>,
    /// Largest value.
    pub max: Option<Duration>,
}

impl LatencyStats {
    /// Summarizes `latencies` with [`percentile`]'s method.
    pub fn from_latencies(latencies: &[Duration]) -> Self {
        let mut seconds: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
        seconds.sort_by(f64::total_cmp);
        let at = |p: f64| percentile_of_sorted(&seconds, p).map(Duration::from_secs_f64);
        let mean = (!seconds.is_empty())
            .then(|| Duration::from_secs_f64(seconds.iter().sum::<f64>() / seconds.len() as f64));

        Self {
            n: seconds.len(),
            mean,
            p50: at(50.0),
            p95: at(95.0),
            p99: at(99.0),
            min: seconds.first().copied().map(Duration::from_secs_f64),
            max: seconds.last().copied().map(Duration::from_secs_f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_empty_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn percentile_of_one_value_is_that_value() {
        for p in [0.0, 50.0, 95.0, 100.0] {
            assert_eq!(percentile(&[3.5], p), Some(3.5));
        }
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], p) for p = 50, 95, 99, 0, 100, 25.
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        let cases = [
            (50.0, 5.5),
            (95.0, 9.55),
            (99.0, 9.91),
            (0.0, 1.0),
            (100.0, 10.0),
            (25.0, 3.25),
        ];
        for (p, expected) in cases {
            let got = percentile(&values, p).unwrap();
            assert!(
                (got - expected).abs() < 1e-12,
                "p{p}: got {got}, expected {expected}"
            );
        }
    }

    #[test]
    fn percentile_ignores_input_order() {
        // numpy.percentile([0.3, 0.1, 0.2, 0.9], 95) == 0.81
        let got = percentile(&[0.3, 0.1, 0.2, 0.9], 95.0).unwrap();
        assert!((got - 0.81).abs() < 1e-12, "got {got}");
    }

    #[test]
    fn percentile_with_ties() {
        // numpy.percentile([2, 2, 2, 5], [50, 95]) == [2.0, 4.55]
        let values = [2.0, 2.0, 5.0, 2.0];
        assert_eq!(percentile(&values, 50.0), Some(2.0));
        let p95 = percentile(&values, 95.0).unwrap();
        assert!((p95 - 4.55).abs() < 1e-12, "got {p95}");
    }

    #[test]
    fn percentile_rejects_out_of_range_p() {
        assert_eq!(percentile(&[1.0, 2.0], 101.0), None);
        assert_eq!(percentile(&[1.0, 2.0], -1.0), None);
        assert_eq!(percentile(&[1.0, 2.0], f64::NAN), None);
    }

    #[test]
    fn failures_push_percentiles_to_unbounded() {
        let ok: Vec<f64> = (1..=10).map(f64::from).collect();
        // No failures: the same as the plain percentile.
        assert_eq!(
            percentile_with_failures(&ok, 0, 95.0),
            percentile(&ok, 95.0)
        );
        // 10 ok and 90 failures: the median is among the failures.
        assert_eq!(percentile_with_failures(&ok, 90, 50.0), Some(f64::INFINITY));
        // 99 ok and 1 failure: p50 is finite, p99 touches the failure and is unbounded.
        let many: Vec<f64> = (1..=99).map(f64::from).collect();
        assert_eq!(
            percentile_with_failures(&many, 1, 50.0),
            percentile(&[many.clone(), vec![100.0]].concat(), 50.0)
        );
        assert_eq!(
            percentile_with_failures(&many, 1, 99.0),
            Some(f64::INFINITY)
        );
        assert_eq!(percentile_with_failures(&[], 0, 50.0), None);
        assert_eq!(percentile_with_failures(&[], 3, 50.0), Some(f64::INFINITY));
    }

    #[test]
    fn stats_of_empty_are_none() {
        let stats = LatencyStats::from_latencies(&[]);
        assert_eq!(stats.n, 0);
        assert_eq!(stats.mean, None);
        assert_eq!(stats.p95, None);
        assert_eq!(stats.max, None);
    }

    #[test]
    fn stats_of_known_values() {
        let latencies: Vec<Duration> = [1, 2, 3, 4].into_iter().map(Duration::from_secs).collect();
        let stats = LatencyStats::from_latencies(&latencies);
        assert_eq!(stats.n, 4);
        assert_eq!(stats.mean, Some(Duration::from_secs_f64(2.5)));
        assert_eq!(stats.p50, Some(Duration::from_secs_f64(2.5)));
        assert_eq!(stats.min, Some(Duration::from_secs(1)));
        assert_eq!(stats.max, Some(Duration::from_secs(4)));
        // numpy.percentile([1, 2, 3, 4], 95) == 3.85
        let p95 = stats.p95.unwrap().as_secs_f64();
        assert!((p95 - 3.85).abs() < 1e-9, "got {p95}");
    }
}
