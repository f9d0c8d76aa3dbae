//! Free TCP ports on the loopback interface.

use std::net::{Ipv4Addr, TcpListener};

/// A port on 127.0.0.1 that was free a moment ago. Another process may take it before we do, so
/// callers that start a server on it retry with a fresh port when the bind fails.
pub fn free_loopback_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
