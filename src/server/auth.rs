//! Who may call `Fleet` and `Monitor` (spec 8): loopback peers only, unless the server was given
//! a secret, which every caller must then present (`x-<door>-secret` metadata or
//! `authorization: Bearer <secret>`).

use std::net::SocketAddr;

use tonic::{Request, Status};

#[derive(Debug, Clone)]
pub struct Guard {
    /// `x-fleet-secret` or `x-monitor-secret`.
    header: &'static str,
    secret: Option<String>,
}

impl Guard {
    pub fn new(header: &'static str, secret: Option<String>) -> Self {
        Guard {
            header,
            secret: secret.filter(|s| !s.is_empty()),
        }
    }

    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        self.admits(request.remote_addr(), |name| {
            request.metadata().get(name).and_then(|v| v.to_str().ok())
        })?;
        Ok(request)
    }

    fn admits<'a>(
        &self,
        peer: Option<SocketAddr>,
        metadata: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<(), Status> {
        match &self.secret {
            None => match peer {
                Some(addr) if is_loopback(addr.ip()) => Ok(()),
                Some(addr) => Err(Status::permission_denied(format!(
                    "only loopback peers may call this service without a secret (peer {addr}); start the server with a secret"
                ))),
                None => Err(Status::permission_denied(
                    "peer address unknown; loopback only",
                )),
            },
            Some(secret) => {
                let given = metadata(self.header)
                    .or_else(|| metadata("authorization").and_then(|v| v.strip_prefix("Bearer ")));
                match given {
                    Some(given) if same_secret(given, secret) => Ok(()),
                    Some(_) => Err(Status::unauthenticated(format!("wrong {}", self.header))),
                    None => Err(Status::unauthenticated(format!(
                        "missing secret: send `{}` metadata or `authorization: Bearer <secret>`",
                        self.header
                    ))),
                }
            }
        }
    }
}

/// Loopback, also as an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, what a dual-stack
/// listener reports for an IPv4 peer).
fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    }
}

/// Compares without stopping at the first difference, so timing does not leak the prefix.
fn same_secret(given: &str, secret: &str) -> bool {
    given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(format!("{ip}:5000").parse().unwrap())
    }

    #[test]
    fn without_a_secret_only_loopback_peers_pass() {
        let guard = Guard::new("x-fleet-secret", None);
        assert!(guard.admits(peer("127.0.0.1"), |_| None).is_ok());
        assert!(guard.admits(peer("[::1]"), |_| None).is_ok());
        // A dual-stack listener reports an IPv4 loopback peer as IPv4-mapped IPv6.
        assert!(guard.admits(peer("[::ffff:127.0.0.1]"), |_| None).is_ok());
        assert!(guard.admits(peer("[::ffff:127.3.4.5]"), |_| None).is_ok());
        let mapped = guard
            .admits(peer("[::ffff:192.0.2.7]"), |_| None)
            .unwrap_err();
        assert_eq!(mapped.code(), tonic::Code::PermissionDenied);
        let refused = guard.admits(peer("192.0.2.7"), |_| None).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn with_a_secret_every_peer_must_present_it() {
        let guard = Guard::new("x-fleet-secret", Some("s3cret".into()));
        let header = |v: &'static str| move |name: &str| (name == "x-fleet-secret").then_some(v);
        let bearer = |v: &'static str| move |name: &str| (name == "authorization").then_some(v);
        assert!(guard.admits(peer("127.0.0.1"), header("s3cret")).is_ok());
        assert!(
            guard
                .admits(peer("192.0.2.7"), bearer("Bearer s3cret"))
                .is_ok()
        );
        for refused in [
            guard.admits(peer("127.0.0.1"), |_| None),
            guard.admits(peer("127.0.0.1"), header("s3creT")),
            guard.admits(peer("127.0.0.1"), bearer("s3cret")),
        ] {
            assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
        }
    }
}
