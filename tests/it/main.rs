//! The integration tests, one binary with one module per area (one link instead of one per
//! file). `util` holds what the areas share. Filter an area with `cargo test --test it <area>`.

mod util;

mod battle;
mod bench_replay;
mod contract_mutations;
mod contract_sync;
mod contract_vectors;
mod contract_verify;
mod exec_backend;
mod exec_node;
mod exec_run;
mod exec_throttlekit;
mod exec_v2;
mod fuzz_mutate;
mod matrix;
mod model_properties;
mod netfault;
mod report;
mod run_infra;
mod run_redis;
mod scripts_vs_model;
mod secrets;
mod server_cli;
mod server_redis;
mod server_run;
mod server_suites;
mod wheel;
