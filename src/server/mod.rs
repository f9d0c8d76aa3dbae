//! The reference server: the service door of spec 8 (RateLimiter, Fleet, Monitor over gRPC)
//! serving the policies of a spec-9 file from a memory or Redis store.

pub mod clock;
pub mod duration;
pub mod fault;
pub mod lease_id;
pub mod policy;
pub mod store;
