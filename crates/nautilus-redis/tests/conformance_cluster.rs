//! The whole conformance suite against a real three-primary Redis Cluster.

#![allow(clippy::unwrap_used)]

mod common;

nautilus_core::conformance_suite!(|| common::harness("NAUTILUS_REDIS_CLUSTER_URL"));
