//! The whole conformance suite against a real standalone redis-server.

#![allow(clippy::unwrap_used)]

mod common;

nautilus_core::conformance_suite!(|| common::harness("NAUTILUS_REDIS_URL"));
