//! Golden vectors and checks against a reference ranking. Properties over many node
//! sets, balance and movement are in `tests/placement.rs`.

#![allow(clippy::unwrap_used)]

use super::rank::{fmix64, unit};
use super::*;

/// Keys and their slots, pinned: a change here moves keys in every deployment.
const GOLDEN_SLOTS: &[(&str, u32)] = &[
    ("", 682466),
    ("a", 54465),
    ("user:42", 228383),
    ("user:1000000", 976503),
    ("order/2024/07/31", 48750),
    ("日本語キー", 890634),
    ("key-0", 383700),
    ("tenant-a/user-17", 636050),
    ("🦀", 906400),
    ("a\0b", 248271),
];

const KEYS: &[&str] = &[
    "",
    "a",
    "user:42",
    "user:1000000",
    "order/2024/07/31",
    "日本語キー",
    "key-0",
    "key-1",
    "key-2",
    "key-3",
    "session:9f8e7d",
    "tenant-a/user-17",
    "tenant-b/user-17",
    "🦀",
    "a\0b",
    "Key",
    "key",
    "key ",
    "zzzz",
];

/// A node set and, per key of [`KEYS`], the first three of its preference list.
type Golden = (Vec<(&'static str, u32)>, [[&'static str; 3]; 19]);

fn golden() -> Vec<Golden> {
    let eight = [
        "node-0", "node-1", "node-2", "node-3", "node-4", "node-5", "node-6", "node-7",
    ];
    vec![
        (
            vec![("a", 1), ("b", 1), ("c", 1)],
            [
                ["b", "a", "c"],
                ["c", "b", "a"],
                ["a", "b", "c"],
                ["c", "b", "a"],
                ["b", "a", "c"],
                ["c", "b", "a"],
                ["c", "a", "b"],
                ["a", "c", "b"],
                ["a", "c", "b"],
                ["a", "b", "c"],
                ["a", "c", "b"],
                ["b", "c", "a"],
                ["a", "b", "c"],
                ["a", "c", "b"],
                ["a", "b", "c"],
                ["c", "b", "a"],
                ["b", "c", "a"],
                ["a", "b", "c"],
                ["b", "c", "a"],
            ],
        ),
        (
            eight.iter().map(|&id| (id, 1)).collect(),
            [
                ["node-1", "node-5", "node-3"],
                ["node-3", "node-1", "node-0"],
                ["node-1", "node-6", "node-2"],
                ["node-2", "node-1", "node-7"],
                ["node-5", "node-3", "node-6"],
                ["node-1", "node-4", "node-5"],
                ["node-4", "node-1", "node-2"],
                ["node-6", "node-3", "node-5"],
                ["node-2", "node-4", "node-0"],
                ["node-5", "node-7", "node-1"],
                ["node-3", "node-6", "node-2"],
                ["node-1", "node-3", "node-4"],
                ["node-1", "node-4", "node-0"],
                ["node-2", "node-7", "node-1"],
                ["node-5", "node-0", "node-4"],
                ["node-1", "node-5", "node-4"],
                ["node-0", "node-6", "node-3"],
                ["node-2", "node-4", "node-7"],
                ["node-2", "node-3", "node-4"],
            ],
        ),
        (
            vec![("n1", 1), ("n2", 2), ("n3", 3), ("n4", 4)],
            [
                ["n2", "n1", "n4"],
                ["n4", "n3", "n1"],
                ["n2", "n4", "n1"],
                ["n3", "n2", "n4"],
                ["n4", "n2", "n3"],
                ["n4", "n3", "n2"],
                ["n4", "n3", "n2"],
                ["n3", "n4", "n1"],
                ["n3", "n4", "n1"],
                ["n4", "n3", "n2"],
                ["n4", "n3", "n1"],
                ["n3", "n4", "n2"],
                ["n1", "n4", "n2"],
                ["n4", "n3", "n2"],
                ["n4", "n1", "n3"],
                ["n2", "n3", "n4"],
                ["n4", "n3", "n2"],
                ["n2", "n4", "n3"],
                ["n4", "n3", "n1"],
            ],
        ),
        (
            vec![
                ("redis-a:6379", 100),
                ("redis-b:6379", 100),
                ("redis-c:6379", 50),
            ],
            [
                ["redis-a:6379", "redis-b:6379", "redis-c:6379"],
                ["redis-a:6379", "redis-b:6379", "redis-c:6379"],
                ["redis-b:6379", "redis-c:6379", "redis-a:6379"],
                ["redis-a:6379", "redis-c:6379", "redis-b:6379"],
                ["redis-c:6379", "redis-a:6379", "redis-b:6379"],
                ["redis-a:6379", "redis-b:6379", "redis-c:6379"],
                ["redis-b:6379", "redis-c:6379", "redis-a:6379"],
                ["redis-a:6379", "redis-b:6379", "redis-c:6379"],
                ["redis-c:6379", "redis-a:6379", "redis-b:6379"],
                ["redis-c:6379", "redis-b:6379", "redis-a:6379"],
                ["redis-b:6379", "redis-c:6379", "redis-a:6379"],
                ["redis-b:6379", "redis-a:6379", "redis-c:6379"],
                ["redis-c:6379", "redis-a:6379", "redis-b:6379"],
                ["redis-b:6379", "redis-a:6379", "redis-c:6379"],
                ["redis-a:6379", "redis-c:6379", "redis-b:6379"],
                ["redis-c:6379", "redis-b:6379", "redis-a:6379"],
                ["redis-a:6379", "redis-b:6379", "redis-c:6379"],
                ["redis-a:6379", "redis-b:6379", "redis-c:6379"],
                ["redis-a:6379", "redis-b:6379", "redis-c:6379"],
            ],
        ),
    ]
}

#[test]
fn slots_are_pinned() {
    for &(key, slot) in GOLDEN_SLOTS {
        assert_eq!(slot_of(key), slot, "slot of {key:?}");
    }
}

#[test]
fn placements_are_pinned() {
    for (nodes, expected) in golden() {
        let placement = Placement::new(nodes.iter().copied()).unwrap();
        for (key, want) in KEYS.iter().zip(expected) {
            let got: Vec<&str> = placement
                .preference(key, 3)
                .into_iter()
                .map(|i| placement.node_id(i).unwrap())
                .collect();
            assert_eq!(got, want, "preference of {key:?} over {nodes:?}");
            assert_eq!(placement.node_id_of(key), Some(want[0]), "owner of {key:?}");
        }
    }
}

/// The definition, computed the slow way: every rank exact, sorted.
fn reference(p: &Placement, slot: u32) -> Vec<&str> {
    let h = slot_hash(slot);
    let mut ranked: Vec<(Rank, &str)> = p
        .nodes
        .iter()
        .map(|(id, w)| {
            let score = fmix64(xxh3_64_with_seed(id.as_bytes(), NODE_SEED) ^ h);
            let key = if p.weighted {
                ln(unit(score)) / f64::from(*w)
            } else {
                0.0
            };
            (Rank { key, score }, id.as_str())
        })
        .collect();
    ranked.sort_by(|(a, x), (b, y)| {
        b.key
            .total_cmp(&a.key)
            .then(b.score.cmp(&a.score))
            .then(x.cmp(y))
    });
    ranked.into_iter().map(|(_, id)| id).collect()
}

fn ids(p: &Placement, list: Vec<usize>) -> Vec<&str> {
    list.into_iter().map(|i| p.node_id(i).unwrap()).collect()
}

/// The table (lanes, bounds) and the preference lists (pruning) against the definition.
#[test]
fn shortcuts_agree_with_the_definition() {
    let mut sets: Vec<Vec<(String, u32)>> = (1..=13)
        .map(|n| (0..n).map(|i| (format!("n{i}"), 1)).collect())
        .collect();
    sets.push((0..13).map(|i| (format!("n{i}"), 1 + i % 4)).collect());
    sets.push(vec![
        ("tiny".into(), 1),
        ("huge".into(), u32::MAX),
        ("mid".into(), 1000),
    ]);
    sets.push(vec![("a".into(), 1), ("b".into(), 2)]);
    sets.push((0..40).map(|i| (format!("w{i}"), 1 + i * 7 % 11)).collect());
    for nodes in sets {
        let p = Placement::new(nodes.clone()).unwrap();
        for i in 0..1500_u32 {
            let slot = i.wrapping_mul(2_654_435_761) % SLOTS;
            let want = reference(&p, slot);
            assert_eq!(
                ids(&p, p.slot_preference(slot, nodes.len())),
                want,
                "{nodes:?}"
            );
            assert_eq!(
                ids(&p, p.slot_preference(slot, 2)),
                want[..want.len().min(2)]
            );
            assert_eq!(p.node_id(p.slot_owner(slot).unwrap()), Some(want[0]));
        }
        // The router's inline lists, every length they serve.
        for i in 0..500_u32 {
            let key = format!("key-{i}");
            let want = reference(&p, slot_of(&key));
            for n in 1..=INLINE_PREFERENCE + 1 {
                let got: Vec<usize> = p.preference_inline(&key, n).into_iter().collect();
                assert_eq!(ids(&p, got), want[..want.len().min(n)], "{nodes:?} {key}");
            }
        }
    }
}

#[test]
fn input_order_and_equal_weights_do_not_matter() {
    let p = Placement::new([("a", 1), ("b", 1), ("c", 1), ("d", 1)]).unwrap();
    let reversed = Placement::new([("d", 5), ("c", 5), ("b", 5), ("a", 5)]).unwrap();
    assert!(!p.is_weighted() && !reversed.is_weighted());
    assert_eq!(reversed.index_of("d"), Some(0));
    for key in KEYS {
        assert_eq!(p.node_id_of(key), reversed.node_id_of(key));
        assert_eq!(
            ids(&p, p.preference(key, 4)),
            ids(&reversed, reversed.preference(key, 4))
        );
    }
    // Doubling every weight halves every rank exactly: nothing moves.
    let w = Placement::new([("a", 1), ("b", 2), ("c", 3)]).unwrap();
    let doubled = Placement::new([("a", 2), ("b", 4), ("c", 6)]).unwrap();
    for i in 0..2000 {
        let slot = i * 523;
        assert_eq!(
            ids(&w, w.slot_preference(slot, 3)),
            ids(&doubled, doubled.slot_preference(slot, 3))
        );
    }
}

#[test]
fn refuses_bad_node_lists() {
    let refused = |r: Result<Placement>| match r {
        Err(Error::InvalidArgument { reason }) => reason,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert!(
        refused(Placement::new([("a", 1), ("b", 2), ("a", 3)])).contains("\"a\" appears twice")
    );
    assert!(refused(Placement::new([("a", 1), ("b", 0)])).contains("weight 0"));
    assert!(refused(Placement::new([("", 1)])).contains("empty"));
    let too_many = (0..=MAX_NODES).map(|i| (i.to_string(), 1));
    assert!(refused(Placement::new(too_many)).contains("65536 nodes"));
    let most = Placement::new((0..MAX_NODES).map(|i| (i.to_string(), 1))).unwrap();
    assert!(most.node_of("k").is_some_and(|i| i < MAX_NODES));
}

#[test]
fn empty_and_out_of_range_answer_nothing() {
    let empty = Placement::new(Vec::<(String, u32)>::new()).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.node_of("k"), None);
    assert_eq!(empty.node_id_of("k"), None);
    assert!(empty.preference("k", 3).is_empty());
    assert_eq!(moved_slots(&empty, &empty).count(), 0);
    let one = Placement::new([("only", 7)]).unwrap();
    assert_eq!(moved_slots(&empty, &one).count(), SLOTS as usize);
    assert_eq!(moved_slots(&one, &empty).count(), SLOTS as usize);
    assert_eq!(one.slot_owner(SLOTS), None);
    assert!(one.slot_preference(SLOTS, 2).is_empty());
    assert_eq!(one.preference("k", 0), Vec::<usize>::new());
    assert_eq!(one.preference("k", 5), vec![0]);
    assert_eq!(one.index_of("other"), None);
    assert_eq!(one.node_id(1), None);
}

#[test]
fn clones_and_precomputed_tables_answer_the_same() {
    let p = Placement::new([("a", 1), ("b", 3), ("c", 2)]).unwrap();
    let owners: Vec<_> = KEYS.iter().map(|k| p.node_of(k)).collect();
    let clone = p.clone();
    clone.precompute();
    assert!(
        clone
            .table
            .iter()
            .flatten()
            .all(|e| e.load(Ordering::Relaxed) != UNSET)
    );
    assert_eq!(
        KEYS.iter().map(|k| clone.node_of(k)).collect::<Vec<_>>(),
        owners
    );
    let mut out = vec![99];
    clone.preference_into("user:42", 2, &mut out);
    assert_eq!(out, p.preference("user:42", 2));
    // The table stays out of Debug.
    assert!(format!("{p:?}").len() < 200);
}
