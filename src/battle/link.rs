//! What `link = "FROM->TO"` selects, and the name of a network fault's heal. A leaf: the
//! scenario validates selectors with it and `network` matches them against the proxy's links,
//! so neither needs the other.
//!
//! Links: `<group>->redis` for each direct-door group, `<group>->server<i>` for each group on a
//! service door, and `server<i>->redis` for each server. A selector's FROM is `worker` (every
//! group), a group's name, `server` (every server) or `server<i>`; its TO is `redis`, `server`
//! or `server<i>`.

/// Where a link starts: worker processes (all, or one group) or servers (all, or one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    Workers(Option<String>),
    Servers(Option<usize>),
}

/// Where a link ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    Redis,
    Servers(Option<usize>),
}

/// A parsed `FROM->TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub from: From,
    pub to: To,
}

/// Why a `link` is not a selector; the text says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("`{0}` is not `FROM->TO` (e.g. `worker->redis`, `server0->redis`, `racers->server1`)")]
    NotFromTo(String),
    #[error("`{0}`: FROM is empty")]
    EmptyFrom(String),
    #[error("`{0}`: TO must be `redis`, `server` or `server<i>`")]
    BadTo(String),
    #[error("`{0}`: servers talk to Redis only")]
    ServerToServer(String),
}

fn server_index(text: &str) -> Option<Option<usize>> {
    let rest = text.strip_prefix("server")?;
    if rest.is_empty() {
        return Some(None);
    }
    rest.parse().ok().map(Some)
}

/// Parses `FROM->TO`.
pub fn parse(text: &str) -> Result<Selector, LinkError> {
    let Some((from, to)) = text.split_once("->") else {
        return Err(LinkError::NotFromTo(text.to_string()));
    };
    let from = match (from, server_index(from)) {
        ("worker", _) => From::Workers(None),
        (_, Some(i)) => From::Servers(i),
        ("", _) => return Err(LinkError::EmptyFrom(text.to_string())),
        (group, None) => From::Workers(Some(group.to_string())),
    };
    let to = match (to, server_index(to)) {
        ("redis", _) => To::Redis,
        (_, Some(i)) => To::Servers(i),
        _ => return Err(LinkError::BadTo(text.to_string())),
    };
    if matches!((&from, to), (From::Servers(_), To::Servers(_))) {
        return Err(LinkError::ServerToServer(text.to_string()));
    }
    Ok(Selector { from, to })
}

impl Selector {
    /// Whether the link from `from` to `to` is one this selector picks.
    pub fn selects(&self, from: &From, to: To) -> bool {
        let from = match (&self.from, from) {
            (From::Workers(None), From::Workers(_)) => true,
            (From::Workers(Some(a)), From::Workers(Some(b))) => a == b,
            (From::Servers(None), From::Servers(_)) => true,
            (From::Servers(Some(a)), From::Servers(Some(b))) => a == b,
            _ => false,
        };
        let to = match (self.to, to) {
            (To::Redis, To::Redis) => true,
            (To::Servers(None), To::Servers(_)) => true,
            (To::Servers(Some(a)), To::Servers(Some(b))) => a == b,
            _ => false,
        };
        from && to
    }

    /// The server indices the selector names (FROM or TO), for the fleet-size check.
    pub fn server_indices(&self) -> impl Iterator<Item = usize> {
        let from = match self.from {
            From::Servers(Some(i)) => Some(i),
            _ => None,
        };
        let to = match self.to {
            To::Servers(Some(i)) => Some(i),
            _ => None,
        };
        from.into_iter().chain(to)
    }
}

/// The name the runner gives the heal of network fault `fault`.
pub fn heal_name(fault: &str) -> String {
    format!("{fault}:heal")
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
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err("redis").contains("FROM->TO"));
        assert!(err("->redis").contains("FROM is empty"));
        assert!(err("worker->db").contains("TO must be"));
        assert!(err("server0->server1").contains("Redis only"));
    }

    #[test]
    fn selectors_pick_their_links() {
        let sel = parse("racers->server").unwrap();
        assert!(sel.selects(&From::Workers(Some("racers".into())), To::Servers(Some(2))));
        assert!(!sel.selects(&From::Workers(Some("others".into())), To::Servers(Some(2))));
        assert!(!sel.selects(&From::Workers(Some("racers".into())), To::Redis));
        let sel = parse("worker->server1").unwrap();
        assert_eq!(sel.server_indices().collect::<Vec<_>>(), vec![1]);
        assert!(sel.selects(&From::Workers(Some("a".into())), To::Servers(Some(1))));
        assert!(!sel.selects(&From::Servers(Some(1)), To::Redis));
    }
}
