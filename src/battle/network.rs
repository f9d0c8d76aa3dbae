//! The battle's side of the fault proxy: which links a scenario has, what `link = "FROM->TO"`
//! selects, the heals the runner schedules after `for_ms`, and the fault windows it reports.
//!
//! Links: `<group>->redis` for each direct-door group, `<group>->server<i>` for each group on a
//! service door, and `server<i>->redis` for each server. A selector's FROM is `worker` (every
//! group), a group's name, `server` (every server) or `server<i>`; its TO is `redis`, `server`
//! or `server<i>`.

use std::net::{SocketAddr, ToSocketAddrs};

use serde_json::json;

use super::faults::FaultRecord;
use super::scenario::{Fault, FaultAction, MAX_DURATION_MS, Scenario, ScenarioError};
use crate::netfault::{Direction, NetAction, NetEvent, Proxy};

/// Bounds on a delay rule, so a typo cannot stall a run for minutes.
pub const MAX_DELAY_MS: u64 = 10_000;
pub const MAX_CALL_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum From {
    Workers(Option<String>),
    Servers(Option<usize>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Redis,
    Servers(Option<usize>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    from: From,
    to: To,
}

fn server_index(text: &str) -> Option<Option<usize>> {
    let rest = text.strip_prefix("server")?;
    if rest.is_empty() {
        return Some(None);
    }
    rest.parse().ok().map(Some)
}

fn parse(text: &str) -> Result<Selector, String> {
    let Some((from, to)) = text.split_once("->") else {
        return Err(format!(
            "`{text}` is not `FROM->TO` (e.g. `worker->redis`, `server0->redis`, `racers->server1`)"
        ));
    };
    let from = match (from, server_index(from)) {
        ("worker", _) => From::Workers(None),
        (_, Some(i)) => From::Servers(i),
        ("", _) => return Err(format!("`{text}`: FROM is empty")),
        (group, None) => From::Workers(Some(group.to_string())),
    };
    let to = match (to, server_index(to)) {
        ("redis", _) => To::Redis,
        (_, Some(i)) => To::Servers(i),
        _ => {
            return Err(format!(
                "`{text}`: TO must be `redis`, `server` or `server<i>`"
            ));
        }
    };
    if matches!((&from, to), (From::Servers(_), To::Servers(_))) {
        return Err(format!("`{text}`: servers talk to Redis only"));
    }
    Ok(Selector { from, to })
}

/// Checks the `[network]` table and every network fault of `s`.
pub fn validate(s: &Scenario) -> Result<(), ScenarioError> {
    let plan = &s.plan;
    if let Some(t) = plan.network.call_timeout_ms
        && (t == 0 || t > MAX_CALL_TIMEOUT_MS)
    {
        return Err(s.invalid(
            "network.call_timeout_ms",
            format!("must be 1..={MAX_CALL_TIMEOUT_MS}"),
        ));
    }
    let fleet = plan.topology.fleet;
    for (i, f) in plan.faults.iter().enumerate() {
        let key = |field: &str| format!("faults[{i}].{field}");
        if !f.action.is_network() {
            if f.link.is_some() || f.for_ms.is_some() || f.delay_ms.is_some() {
                return Err(s.invalid(
                    &key("link"),
                    "`link`, `for_ms` and `delay_ms` belong to network faults only",
                ));
            }
            continue;
        }
        if f.action == FaultAction::Heal {
            return Err(s.invalid(
                &key("action"),
                "`heal` is written by the runner: give the fault a `for_ms` instead",
            ));
        }
        if f.action == FaultAction::NetnsPartition {
            if !plan.network.netns {
                return Err(s.invalid(
                    &key("action"),
                    "`netns-partition` needs Redis in a namespace: set `[network] netns = true`",
                ));
            }
            if f.link.is_some() {
                return Err(s.invalid(
                    &key("link"),
                    "`netns-partition` cuts Redis off from everyone: no `link`",
                ));
            }
            match f.for_ms {
                Some(ms) if (1..=MAX_DURATION_MS).contains(&ms) => continue,
                _ => {
                    return Err(s.invalid(
                        &key("for_ms"),
                        format!("network faults need `for_ms` in 1..={MAX_DURATION_MS}"),
                    ));
                }
            }
        }
        if !plan.network.proxy {
            return Err(s.invalid(
                &key("action"),
                "network faults need the fault proxy: set `[network] proxy = true`",
            ));
        }
        let Some(link) = &f.link else {
            return Err(s.invalid(&key("link"), "network faults need a `link = \"FROM->TO\"`"));
        };
        let sel = parse(link).map_err(|m| s.invalid(&key("link"), m))?;
        if let From::Workers(Some(g)) = &sel.from
            && s.group(g).is_none()
        {
            return Err(s.invalid(&key("link"), format!("no worker group called `{g}`")));
        }
        for index in [&sel.from, &From::Servers(None)]
            .into_iter()
            .filter_map(|f| match f {
                From::Servers(Some(i)) => Some(*i),
                _ => None,
            })
            .chain(match sel.to {
                To::Servers(Some(i)) => Some(i),
                _ => None,
            })
        {
            if index >= fleet {
                return Err(s.invalid(
                    &key("link"),
                    format!("the fleet has {fleet} servers (0-based index), not server{index}"),
                ));
            }
        }
        match f.for_ms {
            Some(ms) if (1..=MAX_DURATION_MS).contains(&ms) => {}
            _ => {
                return Err(s.invalid(
                    &key("for_ms"),
                    format!("network faults need `for_ms` in 1..={MAX_DURATION_MS}"),
                ));
            }
        }
        if f.action == FaultAction::Delay {
            match f.delay_ms {
                Some(ms) if (1..=MAX_DELAY_MS).contains(&ms) => {}
                _ => {
                    return Err(s.invalid(
                        &key("delay_ms"),
                        format!("`delay` needs `delay_ms` in 1..={MAX_DELAY_MS}"),
                    ));
                }
            }
        }
        if f.jitter_ms.is_some_and(|j| j > MAX_DELAY_MS) {
            return Err(s.invalid(&key("jitter_ms"), format!("must be <= {MAX_DELAY_MS}")));
        }
        if f.direction.is_some() && !matches!(f.action, FaultAction::Delay | FaultAction::Blackhole)
        {
            return Err(s.invalid(
                &key("direction"),
                "`direction` applies to `delay` and `blackhole` only",
            ));
        }
    }
    Ok(())
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

pub fn heal_name(fault: &str) -> String {
    format!("{fault}:heal")
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
fn url_addr(url: &str) -> Result<(String, SocketAddr, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url}: not a redis:// URL"))?;
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
        .ok_or_else(|| format!("{url}: cannot resolve {hostport} for the fault proxy"))?;
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
    ) -> Result<SocketAddr, String> {
        let addr = self
            .proxy
            .add(&name, upstream)
            .await
            .map_err(|e| e.to_string())?;
        self.links.push(LinkInfo { name, from, to });
        Ok(addr)
    }

    async fn redis_link(&mut self, name: String, from: From, url: &str) -> Result<String, String> {
        let (head, upstream, path) = url_addr(url)?;
        let addr = self.add(name, from, To::Redis, upstream).await?;
        Ok(format!("{head}{addr}{path}"))
    }

    /// The Redis URL server `index` uses: through its own link.
    pub async fn redis_for_server(&mut self, index: usize, url: &str) -> Result<String, String> {
        self.redis_link(
            format!("server{index}->redis"),
            From::Servers(Some(index)),
            url,
        )
        .await
    }

    /// The Redis URL the workers of `group` use.
    pub async fn redis_for_group(&mut self, group: &str, url: &str) -> Result<String, String> {
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
    ) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            let upstream: SocketAddr = s.parse().map_err(|_| format!("server address {s}"))?;
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
    pub fn apply(&self, fault: &Fault) -> Result<Vec<String>, String> {
        let text = fault.link.as_deref().unwrap_or_default();
        let sel = parse(text)?;
        let picked: Vec<&str> = self
            .links
            .iter()
            .filter(|l| selects(&sel, l))
            .map(|l| l.name.as_str())
            .collect();
        if picked.is_empty() {
            return Err(format!("`{text}` selects none of this run's links"));
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

fn selects(sel: &Selector, link: &LinkInfo) -> bool {
    let from = match (&sel.from, &link.from) {
        (From::Workers(None), From::Workers(_)) => true,
        (From::Workers(Some(a)), From::Workers(Some(b))) => a == b,
        (From::Servers(None), From::Servers(_)) => true,
        (From::Servers(Some(a)), From::Servers(Some(b))) => a == b,
        _ => false,
    };
    let to = match (sel.to, link.to) {
        (To::Redis, To::Redis) => true,
        (To::Servers(None), To::Servers(_)) => true,
        (To::Servers(Some(a)), To::Servers(Some(b))) => a == b,
        _ => false,
    };
    from && to
}

/// `[from, to)` of every network fault, in ms after the barrier, for `result.json`.
pub fn windows(records: &[FaultRecord], t0_us: i64) -> Vec<serde_json::Value> {
    let ms = |us: i64| (us - t0_us) as f64 / 1000.0;
    records
        .iter()
        .filter(|r| r.action.is_network() && r.action != FaultAction::Heal)
        .map(|r| {
            let heal = records
                .iter()
                .find(|h| h.name == heal_name(&r.name))
                .and_then(|h| h.at_us);
            json!({
                "fault": r.name,
                "action": r.action,
                "links": r.targets,
                "fromMs": r.at_us.map(ms),
                "toMs": heal.map(ms),
                "error": r.error,
            })
        })
        .collect()
}

/// The window `[start, end]` (epoch µs) of the network fault `name`, when it was carried out;
/// `end` is the heal, or `None` when the run ended first.
pub fn window_of(records: &[FaultRecord], name: &str) -> Option<(i64, Option<i64>)> {
    let start = records.iter().find(|r| r.name == name)?.at_us?;
    let end = records
        .iter()
        .find(|h| h.name == heal_name(name))
        .and_then(|h| h.at_us);
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_refuse_nonsense() {
        assert_eq!(
            parse("worker->redis").unwrap(),
            Selector {
                from: From::Workers(None),
                to: To::Redis
            }
        );
        assert_eq!(
            parse("server1->redis").unwrap().from,
            From::Servers(Some(1))
        );
        assert_eq!(parse("racers->server").unwrap().to, To::Servers(None));
        assert!(parse("redis").unwrap_err().contains("FROM->TO"));
        assert!(parse("worker->db").unwrap_err().contains("TO must be"));
        assert!(
            parse("server0->server1")
                .unwrap_err()
                .contains("Redis only")
        );
    }

    #[test]
    fn urls_keep_their_credentials_and_database() {
        let (head, addr, path) = url_addr("redis://:pw@127.0.0.1:6390/3").unwrap();
        assert_eq!(head, "redis://:pw@");
        assert_eq!(addr.port(), 6390);
        assert_eq!(path, "/3");
        assert!(url_addr("127.0.0.1:6390").is_err());
    }
}
