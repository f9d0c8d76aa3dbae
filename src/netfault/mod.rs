//! Network faults in userspace: a TCP proxy per link whose rules the battle schedule switches.
//!
//! The kernel's netem is not available on the machines this runs on, so latency and lost replies
//! are made here: every connection of a link is accepted by [`proxy::Link`], which opens its own
//! connection upstream and pumps bytes both ways under the link's current [`Rules`]. The proxy
//! runs inside the harness process, so it dies with it: nothing is left behind.
//!
//! - [`rules`]: what a link does to each direction (`delay`, `drop-replies`, `blackhole`,
//!   `reset`, `partition`) and the [`NetEvent`] every change is logged as.
//! - [`proxy`]: the listener and the per-connection pumps.
//! - [`netns`]: a real partition (root only): a namespace, a veth pair, iptables inside it.

pub mod netns;
pub mod proxy;
pub mod rules;

pub use proxy::{Link, Proxy, ProxyError};
pub use rules::{Direction, Flow, NetAction, NetEvent, Rules};
