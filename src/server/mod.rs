//! The reference server: the service door of spec 8 (RateLimiter, Fleet, Monitor over gRPC)
//! serving the policies of a spec-9 file from a memory or Redis store.
//!
//! Layers, outside in: `cli` (process: listen, sweep, drain) → `listener` (handshake and idle
//! bounds, a connection cap) → `grpc` (messages and status
//! codes) → `engine` (which kind serves which operation, validation, binding axis) → `store`
//! (state: `memory` runs the reference model, `redis` runs the contract's Lua plus the server's
//! own scripts in `lua/`). Choices the spec leaves open, made here:
//! - Admit on a policy with a concurrency axis always holds a slot when granted (`hold` and
//!   `value` are accepted and not used; `Release.dropped` likewise). A unified Admit takes the
//!   slot first and gives it back when the rate axis refuses, so a refusal never consumes rate.
//!   `binding_axis` is the axis that refused, or on a grant the one with fewer units left.
//! - Peek answers what a Check of cost 1 would get now; `Forecast.spendable_now` is
//!   `1 + floor(remaining / cost)` from that peek (0 when it is refused), which equals the admits
//!   that follow for every strategy; `next_replenish_at` is now (or now + retry when refused) and
//!   `full_at` the peek's `resetAt`.
//! - Peek on Redis runs the check script on a `COPY` of the key inside MULTI and deletes the copy,
//!   so it is the contract's own arithmetic and changes nothing.
//! - Fleet.Reserve grants `min(wants, batch, limit - granted this window)` from the window of
//!   (policy, `caller.domain`), valid until the window's end; a refusal's `retry_after_ms` is
//!   the time to that end.
//!   Only federated window policies are leasable (AXIS_RATE or unspecified).
//! - Lease ids carry their policy and identity, so any server of a fleet can release or renew
//!   any lease; `concurrency` and `tokenBudget` stay per instance even with `--redis`.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod duration;
pub mod engine;
pub mod fail_mode;
pub mod fault;
pub mod grpc;
pub mod lease_id;
pub mod listener;
pub mod monitor;
pub mod policy;
pub mod store;
pub mod two_tier;

pub use cli::{Access, ServeArgs, ServeOptions, serve, serve_with};
