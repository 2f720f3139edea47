//! Placement's promises, through its public API: determinism, distinct preference
//! lists, minimal movement (properties over random node sets), then balance and
//! movement measured over a million keys (deterministic counts, not timings).

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use nautilus_shard::Placement;
use nautilus_shard::placement::{SLOTS, moved_slots, owner_changed, slot_of};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Slots the properties look at: spread over the table, and the slots of real keys.
fn sample_slots() -> impl Iterator<Item = u32> {
    (0..1024_u32)
        .map(|i| i.wrapping_mul(2_654_435_761) % SLOTS)
        .chain((0..1024).map(|i| slot_of(&format!("user:{i}"))))
}

/// The full preference list of a slot, as ids.
fn ranking(p: &Placement, slot: u32) -> Vec<&str> {
    p.slot_preference(slot, p.len())
        .into_iter()
        .map(|i| p.node_id(i).unwrap())
        .collect()
}

fn owner(p: &Placement, slot: u32) -> Option<&str> {
    p.slot_owner(slot).and_then(|i| p.node_id(i))
}

/// 1 to 8 nodes with ids of 1 to 4 letters; half the time all weights are equal.
fn node_set() -> impl Strategy<Value = Vec<(String, u32)>> {
    (
        proptest::collection::btree_map("[a-z]{1,4}", 1_u32..=5, 1..=8),
        any::<bool>(),
    )
        .prop_map(|(nodes, equal): (BTreeMap<String, u32>, bool)| {
            nodes
                .into_iter()
                .map(|(id, w)| (id, if equal { 1 } else { w }))
                .collect()
        })
}

proptest! {
    // Failures are kept next to this file (the default looks for a lib.rs above it).
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn placement_depends_only_on_ids_and_weights(nodes in node_set()) {
        let a = Placement::new(nodes.clone()).unwrap();
        let b = Placement::new(nodes.iter().rev().cloned()).unwrap();
        for slot in sample_slots() {
            prop_assert_eq!(ranking(&a, slot), ranking(&b, slot));
            prop_assert_eq!(owner(&a, slot), owner(&b, slot));
        }
    }

    #[test]
    fn preference_lists_are_distinct_and_start_with_the_owner(
        nodes in node_set(),
        n in 0_usize..12,
    ) {
        let p = Placement::new(nodes.clone()).unwrap();
        let mut out = Vec::new();
        for slot in sample_slots() {
            let list = p.slot_preference(slot, n);
            prop_assert_eq!(list.len(), n.min(nodes.len()));
            let mut seen = list.clone();
            seen.sort_unstable();
            seen.dedup();
            prop_assert_eq!(seen.len(), list.len());
            if n > 0 {
                prop_assert_eq!(Some(list[0]), p.slot_owner(slot));
            }
            // A shorter list is a prefix of a longer one.
            prop_assert_eq!(&list[..], &ranking_indices(&p, slot)[..list.len()]);
            p.slot_preference_into(slot, n, &mut out);
            prop_assert_eq!(&out, &list);
        }
    }

    #[test]
    fn adding_a_node_moves_keys_only_to_it(
        nodes in node_set(),
        // Five letters: never one of the existing ids.
        extra in "[a-z]{5}",
        weight in 1_u32..=5,
    ) {
        let before = Placement::new(nodes.clone()).unwrap();
        let mut more = nodes;
        more.push((extra.clone(), weight));
        let after = Placement::new(more).unwrap();
        for slot in sample_slots() {
            if owner(&before, slot) != owner(&after, slot) {
                prop_assert_eq!(owner(&after, slot), Some(extra.as_str()));
            }
            // Everyone else keeps their order: replica sets change minimally.
            let mut rest = ranking(&after, slot);
            rest.retain(|id| *id != extra);
            prop_assert_eq!(rest, ranking(&before, slot));
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys(nodes in node_set(), pick in any::<prop::sample::Index>()) {
        let before = Placement::new(nodes.clone()).unwrap();
        let mut fewer = nodes;
        let (gone, _) = fewer.remove(pick.index(fewer.len()));
        let after = Placement::new(fewer).unwrap();
        for slot in sample_slots() {
            if owner(&before, slot) != owner(&after, slot) {
                prop_assert_eq!(owner(&before, slot), Some(gone.as_str()));
            }
            let mut rest = ranking(&before, slot);
            rest.retain(|id| *id != gone);
            prop_assert_eq!(rest, ranking(&after, slot));
        }
    }

    #[test]
    fn reweighing_a_node_moves_keys_only_to_or_from_it(
        nodes in node_set(),
        pick in any::<prop::sample::Index>(),
        weight in 1_u32..=8,
    ) {
        let before = Placement::new(nodes.clone()).unwrap();
        let mut changed = nodes;
        let at = pick.index(changed.len());
        let old_weight = changed[at].1;
        changed[at].1 = weight;
        let id = changed[at].0.clone();
        let after = Placement::new(changed).unwrap();
        for slot in sample_slots() {
            let (was, is) = (owner(&before, slot), owner(&after, slot));
            if was != is {
                // A heavier node only gains keys, a lighter one only loses them.
                if weight > old_weight {
                    prop_assert_eq!(is, Some(id.as_str()));
                } else {
                    prop_assert_eq!(was, Some(id.as_str()));
                }
            }
            let (mut old_rest, mut new_rest) = (ranking(&before, slot), ranking(&after, slot));
            old_rest.retain(|n| *n != id);
            new_rest.retain(|n| *n != id);
            prop_assert_eq!(old_rest, new_rest);
        }
    }
}

fn ranking_indices(p: &Placement, slot: u32) -> Vec<usize> {
    p.slot_preference(slot, p.len())
}

const KEYS: usize = 1_000_000;

/// The slots of `key-0` .. `key-999999`, hashed once for every test below.
fn key_slots() -> &'static [u32] {
    static SLOTS_OF_KEYS: OnceLock<Vec<u32>> = OnceLock::new();
    SLOTS_OF_KEYS.get_or_init(|| (0..KEYS).map(|i| slot_of(&format!("key-{i}"))).collect())
}

/// Keys per node.
fn counts(p: &Placement) -> Vec<usize> {
    let mut counts = vec![0; p.len()];
    for &slot in key_slots() {
        counts[p.slot_owner(slot).unwrap()] += 1;
    }
    counts
}

fn equal_nodes(n: usize) -> Placement {
    Placement::new((0..n).map(|i| (format!("node-{i}"), 1))).unwrap()
}

fn max_over_mean(p: &Placement) -> f64 {
    let counts = counts(p);
    let mean = KEYS as f64 / counts.len() as f64;
    *counts.iter().max().unwrap() as f64 / mean
}

#[test]
fn eight_equal_nodes_are_balanced() {
    let ratio = max_over_mean(&equal_nodes(8));
    println!("8 equal nodes, 1M keys: fullest / mean = {ratio:.4}");
    assert!(ratio <= 1.03, "{ratio}");
}

#[test]
fn sixty_four_equal_nodes_are_balanced() {
    let ratio = max_over_mean(&equal_nodes(64));
    println!("64 equal nodes, 1M keys: fullest / mean = {ratio:.4}");
    assert!(ratio <= 1.05, "{ratio}");
}

#[test]
fn weights_are_honoured_in_proportion() {
    let p = Placement::new([("w1", 1), ("w2", 2), ("w3", 3), ("w4", 4)]).unwrap();
    for (i, count) in counts(&p).into_iter().enumerate() {
        let share = count as f64 / KEYS as f64;
        let want = (i + 1) as f64 / 10.0;
        let off = (share - want).abs() / want;
        println!(
            "weight {}: {:.4} of 1M keys (weight share {want}), off by {:.2}%",
            i + 1,
            share,
            off * 100.0
        );
        assert!(off <= 0.02, "weight {}: share {share}, want {want}", i + 1);
    }
}

#[test]
fn a_ninth_node_takes_about_a_ninth_and_only_for_itself() {
    let (eight, nine) = (equal_nodes(8), equal_nodes(9));
    let mut moved = 0;
    for &slot in key_slots() {
        if owner(&eight, slot) != owner(&nine, slot) {
            assert_eq!(owner(&nine, slot), Some("node-8"));
            moved += 1;
        }
    }
    let fraction = moved as f64 / KEYS as f64;
    println!(
        "8 -> 9 equal nodes: {:.4} of 1M keys moved (1/9 = {:.4})",
        fraction,
        1.0 / 9.0
    );
    assert!(fraction <= 1.05 / 9.0, "{fraction}");
    assert!(fraction >= 0.95 / 9.0, "{fraction}");
    // The slots a migration walks: the same rule, over the whole table.
    let slots: Vec<u32> = moved_slots(&eight, &nine).collect();
    assert!(slots.iter().all(|&s| owner(&nine, s) == Some("node-8")));
    let slot_fraction = slots.len() as f64 / f64::from(SLOTS);
    println!("8 -> 9 equal nodes: {slot_fraction:.4} of the slots moved");
    assert!((slot_fraction - 1.0 / 9.0).abs() <= 0.05 / 9.0);
    // And per key, by id.
    for i in 0..2000 {
        let key = format!("key-{i}");
        let moved_slot = slots.binary_search(&slot_of(&key)).is_ok();
        assert_eq!(owner_changed(&eight, &nine, &key), moved_slot);
    }
}

#[test]
fn removing_one_of_nine_moves_only_its_ninth() {
    let nine = equal_nodes(9);
    let without =
        Placement::new((0..9).filter(|&i| i != 4).map(|i| (format!("node-{i}"), 1))).unwrap();
    let mut moved = 0;
    for &slot in key_slots() {
        if owner(&nine, slot) != owner(&without, slot) {
            assert_eq!(owner(&nine, slot), Some("node-4"));
            moved += 1;
        }
    }
    let fraction = moved as f64 / KEYS as f64;
    println!("9 -> 8 equal nodes (node-4 removed): {fraction:.4} of 1M keys moved");
    assert!(fraction <= 1.05 / 9.0, "{fraction}");
}
