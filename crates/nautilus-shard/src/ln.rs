//! A natural logarithm that gives the same bits on every platform.
//!
//! Weighted placement ranks nodes by `ln(u) / weight`, so the logarithm decides where
//! keys live and must not change between machines, libms or Rust releases. `f64::ln`
//! calls the platform's libm, whose last bit differs between implementations (glibc,
//! musl, macOS, MSVC) and versions. This one uses only `+`, `-`, `*` and `/` on `f64`,
//! which IEEE 754 rounds exactly, plus bit manipulation; Rust never fuses a multiply
//! and an add behind our back, so every step is reproducible.
//!
//! Method: `x = 2^k * m` with `m` in `[sqrt(1/2), sqrt(2))`, then
//! `ln(m) = 2 atanh(s)` with `s = (m - 1) / (m + 1)`, `|s| <= 0.1716`, summed as the
//! series `2s + 2s^3/3 + ... + 2s^21/21` (the next term is below 2^-54 of the sum,
//! summed by Estrin's scheme so the terms are computed side by side), and
//! `k ln 2` added in two parts so that `k * LN2_HI` is exact. Measured against
//! `f64::ln`, the relative difference stays within a few units in the last place
//! (the tests require 1e-15).

/// ln 2 rounded to 32 significant bits, so that `k * LN2_HI` is exact for any
/// exponent `k` of an `f64` (|k| <= 1074 needs 11 bits).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
/// ln 2 - LN2_HI.
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// Where the mantissa is folded back: above it `m / 2` is closer to 1.
const SQRT_2: f64 = std::f64::consts::SQRT_2;
/// 2^54, to lift subnormals into the normal range.
const TWO_54: f64 = 18_014_398_509_481_984.0;

/// Coefficients `2 / (2i + 1)` of `2 atanh(s) = 2s + s * (C3 z + C5 z^2 + ...)`,
/// `z = s^2`. Rust evaluates these divisions at compile time with IEEE rounding.
const C3: f64 = 2.0 / 3.0;
const C5: f64 = 2.0 / 5.0;
const C7: f64 = 2.0 / 7.0;
const C9: f64 = 2.0 / 9.0;
const C11: f64 = 2.0 / 11.0;
const C13: f64 = 2.0 / 13.0;
const C15: f64 = 2.0 / 15.0;
const C17: f64 = 2.0 / 17.0;
const C19: f64 = 2.0 / 19.0;
const C21: f64 = 2.0 / 21.0;

/// The natural logarithm of `x`, identical on every platform.
///
/// Total: `ln(0) = -inf`, `ln(+inf) = +inf`, NaN or a negative `x` gives NaN.
pub(crate) fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x == f64::INFINITY {
        return x;
    }
    let (mut bits, mut k) = (x.to_bits(), 0_i64);
    if bits >> 52 == 0 {
        // Subnormal: exact scaling by a power of two.
        bits = (x * TWO_54).to_bits();
        k = -54;
    }
    // The biased exponent of a positive finite f64 fits in 11 bits.
    k += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if m > SQRT_2 {
        m *= 0.5;
        k += 1;
    }
    // Exact (Sterbenz: m is within a factor 2 of 1).
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    // Estrin's scheme: the same sum as Horner's in a quarter of the latency.
    let z2 = z * z;
    let z4 = z2 * z2;
    let z8 = z4 * z4;
    let low = (C3 + C5 * z) + (C7 + C9 * z) * z2;
    let high = (C11 + C13 * z) + (C15 + C17 * z) * z2;
    let series = z * ((low + high * z4) + (C19 + C21 * z) * z8);
    let ln_m = 2.0 * s + s * series;
    // |k| <= 1077, exactly representable.
    let dk = k as f64;
    dk * LN2_HI + (ln_m + dk * LN2_LO)
}

#[cfg(test)]
mod tests {
    use super::ln;

    /// splitmix64: a fixed sequence of test inputs.
    fn mix(i: u64) -> u64 {
        let mut z = i
            .wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn check(x: f64) {
        let (ours, libm) = (ln(x), x.ln());
        if libm == 0.0 {
            assert_eq!(ours, 0.0, "ln({x:e})");
            return;
        }
        let rel = ((ours - libm) / libm).abs();
        assert!(
            rel <= 1e-15,
            "ln({x:e}) = {ours:e}, libm {libm:e}, relative {rel:e}"
        );
    }

    #[test]
    fn matches_libm_on_placement_inputs() {
        // The inputs placement feeds it: (k + 0.5) / 2^52 for 52-bit k.
        for i in 0..200_000 {
            let k = mix(i) >> 12;
            check((k as f64 + 0.5) * (1.0 / 4_503_599_627_370_496.0));
        }
        // Near 1, where ln(u) ~ u - 1 is tiny, and the extremes of the range.
        let one_minus = |e: u64| (((1_u64 << 52) - e) as f64 - 0.5) / 4_503_599_627_370_496.0;
        for e in 1..20_000 {
            check(one_minus(e));
        }
        check(0.5 / 4_503_599_627_370_496.0);
    }

    #[test]
    fn matches_libm_across_the_range() {
        for i in 0..200_000 {
            // Any positive finite double, including subnormals.
            let x = f64::from_bits(mix(i) & 0x7fef_ffff_ffff_ffff);
            if x > 0.0 {
                check(x);
            }
        }
        for x in [
            f64::MIN_POSITIVE,
            f64::MAX,
            5e-324,
            1.0,
            2.0,
            0.5,
            std::f64::consts::E,
            std::f64::consts::SQRT_2,
            std::f64::consts::FRAC_1_SQRT_2,
            1.0 + f64::EPSILON,
            1.0 - f64::EPSILON / 2.0,
        ] {
            check(x);
        }
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert_eq!(ln(f64::INFINITY), f64::INFINITY);
        assert!(ln(-1.0).is_nan());
        assert!(ln(f64::NAN).is_nan());
    }

    /// Weighted placement with equal weights orders nodes exactly like raw scores only
    /// if ln never decreases; check it on neighbouring inputs.
    #[test]
    fn never_decreases_between_neighbours() {
        for i in 0..200_000 {
            let k = (mix(i) >> 12).min((1 << 52) - 2);
            let a = (k as f64 + 0.5) / 4_503_599_627_370_496.0;
            let b = (k as f64 + 1.5) / 4_503_599_627_370_496.0;
            assert!(ln(a) <= ln(b), "ln not monotone at {a:e}");
        }
        // Across the point where the mantissa is folded (x = sqrt(1/2)).
        let mut x = f64::from_bits(std::f64::consts::FRAC_1_SQRT_2.to_bits() - 50_000);
        for _ in 0..100_000 {
            let next = f64::from_bits(x.to_bits() + 1);
            assert!(ln(x) <= ln(next), "ln not monotone at {x:e}");
            x = next;
        }
    }
}
