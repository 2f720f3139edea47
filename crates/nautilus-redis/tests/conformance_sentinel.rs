//! The whole conformance suite through a real Sentinel, which hands the client its
//! primary (the standalone server xtask starts).

#![allow(clippy::unwrap_used)]

mod common;

nautilus_core::conformance_suite!(|| common::harness("NAUTILUS_REDIS_SENTINEL_URL"));
