//! Criterion benchmarks of Nautilus; see `benches/`. Run with `cargo xtask bench`.
