//! The battle's side of the fault proxy: the links of one run (see [`super::link`] for what a
//! `link = "FROM->TO"` selects) and the heals the runner schedules after `for_ms`. The fault
//! windows it reports are read from the fault records (`faults::windows`).

use std::net::{SocketAddr, ToSocketAddrs};

use super::link::{self, From, To, heal_name};
use super::scenario::{Fault, FaultAction};
use crate::netfault::{Direction, NetAction, NetEvent, Proxy, ProxyError};

/// Why a run's links could not be set up, or a network fault not carried out.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{url}: not a redis:// URL")]
    NotRedisUrl { url: String },
    #[error("{url}: cannot resolve {hostport} for the fault proxy")]
    Unresolvable { url: String, hostport: String },
    #[error("server address {0}")]
    ServerAddress(String),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error("`{0}` selects none of this run's links")]
    NoLink(String),
}

/// The scenario's faults plus one `heal` per network fault, `for_ms` after it.
pub fn with_heals(faults: &[Fault]) -> Vec<Fault> {
    let mut all = faults.to_vec();
    for f in faults {
        if let (true, Some(for_ms)) = (f.action.is_network(), f.for_ms) {
            all.push(Fault {
                name: heal_name(&f.name),
                at_ms: f.at_ms + for_ms,
                action: FaultAction::Heal,
                for_ms: None,
                ..f.clone()
            });
        }
    }
    all
}

fn action(f: &Fault) -> NetAction {
    let direction = f.direction.unwrap_or(Direction::Both);
    match f.action {
        FaultAction::Delay => NetAction::Delay {
            fixed_ms: f.delay_ms.unwrap_or(0),
            jitter_ms: f.jitter_ms.unwrap_or(0),
            direction,
        },
        FaultAction::DropReplies => NetAction::DropReplies,
        FaultAction::Blackhole => NetAction::Blackhole { direction },
        FaultAction::Reset => NetAction::Reset,
        FaultAction::Partition => NetAction::Partition,
        _ => NetAction::Heal,
    }
}

struct LinkInfo {
    name: String,
    from: From,
    to: To,
}

/// The proxy of one scenario run and what each of its links connects.
#[derive(Default)]
pub struct Network {
    proxy: Proxy,
    links: Vec<LinkInfo>,
}

/// `host:port` of a `redis://` URL.
fn url_addr(url: &str) -> Result<(String, SocketAddr, String), NetworkError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| NetworkError::NotRedisUrl { url: url.into() })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let addr = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| NetworkError::Unresolvable {
            url: url.into(),
            hostport: hostport.into(),
        })?;
    Ok((format!("{scheme}://{userinfo}"), addr, path.to_string()))
}

impl Network {
    pub fn new() -> Network {
        Network::default()
    }

    async fn add(
        &mut self,
        name: String,
        from: From,
        to: To,
        upstream: SocketAddr,
    ) -> Result<SocketAddr, NetworkError> {
        let addr = self.proxy.add(&name, upstream).await?;
        self.links.push(LinkInfo { name, from, to });
        Ok(addr)
    }

    async fn redis_link(
        &mut self,
        name: String,
        from: From,
        url: &str,
    ) -> Result<String, NetworkError> {
        let (head, upstream, path) = url_addr(url)?;
        let addr = self.add(name, from, To::Redis, upstream).await?;
        Ok(format!("{head}{addr}{path}"))
    }

    /// The Redis URL server `index` uses: through its own link.
    pub async fn redis_for_server(
        &mut self,
        index: usize,
        url: &str,
    ) -> Result<String, NetworkError> {
        self.redis_link(
            format!("server{index}->redis"),
            From::Servers(Some(index)),
            url,
        )
        .await
    }

    /// The Redis URL the workers of `group` use.
    pub async fn redis_for_group(
        &mut self,
        group: &str,
        url: &str,
    ) -> Result<String, NetworkError> {
        self.redis_link(
            format!("{group}->redis"),
            From::Workers(Some(group.into())),
            url,
        )
        .await
    }

    /// The addresses the workers of `group` use for the fleet: one link per server.
    pub async fn servers_for_group(
        &mut self,
        group: &str,
        servers: &[String],
    ) -> Result<Vec<String>, NetworkError> {
        let mut out = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            let upstream: SocketAddr = s
                .parse()
                .map_err(|_| NetworkError::ServerAddress(s.clone()))?;
            let addr = self
                .add(
                    format!("{group}->server{i}"),
                    From::Workers(Some(group.into())),
                    To::Servers(Some(i)),
                    upstream,
                )
                .await?;
            out.push(addr.to_string());
        }
        Ok(out)
    }

    /// Carries out a network fault (or its heal); returns the links it hit.
    pub fn apply(&self, fault: &Fault) -> Result<Vec<String>, NetworkError> {
        let text = fault.link.as_deref().unwrap_or_default();
        let sel = link::parse(text)?;
        let picked: Vec<&str> = self
            .links
            .iter()
            .filter(|l| sel.selects(&l.from, l.to))
            .map(|l| l.name.as_str())
            .collect();
        if picked.is_empty() {
            return Err(NetworkError::NoLink(text.to_string()));
        }
        let events = self
            .proxy
            .apply(|name| picked.contains(&name), action(fault));
        Ok(events
            .iter()
            .map(|e| {
                if e.closed > 0 {
                    format!("{} ({} connections reset)", e.link, e.closed)
                } else {
                    e.link.clone()
                }
            })
            .collect())
    }

    pub fn log(&self) -> Vec<NetEvent> {
        self.proxy.log()
    }

    pub fn link_names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_credentials_and_database() {
        let (head, addr, path) = url_addr("redis://:pw@127.0.0.1:6390/3").unwrap();
        assert_eq!(head, "redis://:pw@");
        assert_eq!(addr.port(), 6390);
        assert_eq!(path, "/3");
        assert!(url_addr("127.0.0.1:6390").is_err());
    }
}
