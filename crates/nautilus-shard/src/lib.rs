#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod ln;
pub mod placement;

pub use placement::Placement;
