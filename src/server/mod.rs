//! The reference server: the service door of spec 8 (RateLimiter, Fleet, Monitor over gRPC)
//! serving the policies of a spec-9 file from a memory or Redis store.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod duration;
pub mod engine;
pub mod fault;
pub mod grpc;
pub mod lease_id;
pub mod monitor;
pub mod policy;
pub mod store;
pub mod two_tier;

pub use cli::ServeArgs;
