//! tk-conform: a conformance harness and battle-test runner for distributed rate limiters.
//! `ARCHITECTURE.md` maps the modules.

pub mod backend;
pub mod battle;
pub mod bench;
pub mod cli_edge;
pub mod conformance;
pub mod contract;
pub mod exit;
pub mod fuzz;
pub mod infra;
pub mod matrix;
pub mod model;
pub mod mutate;
pub mod netfault;
pub mod property;
pub mod redis_scripts;
pub mod report;
pub mod server;
pub mod service_suites;

/// gRPC types and stubs generated from `contract/throttlekit.proto` at build time.
pub mod proto {
    tonic::include_proto!("throttlekit.v1");
}
