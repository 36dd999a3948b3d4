//! Statistics over the rounds of a measurement.

pub(super) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The value below which a share `p` of `values` lies (linear between
/// neighbours).
pub(super) fn quantile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = p * (v.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
}

/// The middle half of `values` (first to third quartile) over their
/// median, in percent.
pub(super) fn spread(values: &[f64]) -> f64 {
    (quantile(values, 0.75) - quantile(values, 0.25)) / median(values) * 100.0
}

pub(super) fn min_max(values: &[f64]) -> (f64, f64) {
    (
        values.iter().copied().fold(f64::NAN, f64::min),
        values.iter().copied().fold(f64::NAN, f64::max),
    )
}
