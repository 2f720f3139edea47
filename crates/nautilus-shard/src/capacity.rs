//! A global capacity split over the nodes by weight.

/// `total` split over `weights` in proportion, as whole numbers that add up to exactly
/// `total` (largest remainders get the leftover units). A node's share is within one
/// record (or byte) of its exact proportion.
pub(crate) fn split(total: u64, weights: &[u32]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<(u64, u128)> = weights
        .iter()
        .map(|&w| {
            let p = u128::from(total) * u128::from(w);
            ((p / sum) as u64, p % sum)
        })
        .collect();
    let mut shares: Vec<u64> = exact.iter().map(|e| e.0).collect();
    let left = total - shares.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for &i in order.iter().take(left as usize) {
        shares[i] += 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn equal_weights_split_evenly() {
        assert_eq!(split(20, &[1, 1, 1]), vec![7, 7, 6]);
        assert_eq!(split(5, &[2, 1]), vec![3, 2]);
    }

    proptest! {
        #[test]
        fn shares_add_up_and_follow_the_weights(total in 0u64..1 << 50, weights in proptest::collection::vec(1u32..1000, 1..50)) {
            let shares = split(total, &weights);
            prop_assert_eq!(shares.iter().sum::<u64>(), total);
            let sum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            for (s, w) in shares.iter().zip(&weights) {
                let exact = total as f64 * f64::from(*w) / sum;
                prop_assert!((*s as f64 - exact).abs() <= 1.0 + exact * 1e-9);
            }
        }
    }
}
