//! What a link does to the bytes of each direction, and the log line of every change.

use serde::{Deserialize, Serialize};

/// Which way a rule acts: client → upstream (`request`), upstream → client (`reply`), or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Request,
    Reply,
    #[default]
    Both,
}

/// What happens to bytes read in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "flow", rename_all = "kebab-case")]
pub enum Flow {
    #[default]
    Pass,
    /// Held for `fixed_ms` plus a uniform `0..=jitter_ms`, order kept.
    #[serde(rename_all = "camelCase")]
    Delay { fixed_ms: u64, jitter_ms: u64 },
    /// Read and thrown away. A connection that lost bytes is reset when the rule ends, since a
    /// TCP stream with a hole in it would pair later replies with the wrong requests.
    Discard,
    /// Neither read nor written until the rule ends (the kernel buffers fill, as in a partition).
    Stall,
}

/// A link's state: one flow per direction, plus what happens to connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    pub request: Flow,
    pub reply: Flow,
    /// New connections are refused (the listener is closed).
    pub refuse_new: bool,
    /// New connections are accepted and reset at once.
    pub reset_new: bool,
}

impl Rules {
    pub fn flow(&self, dir: Direction) -> Flow {
        match dir {
            Direction::Reply => self.reply,
            _ => self.request,
        }
    }

    fn with(mut self, dir: Direction, flow: Flow) -> Rules {
        if dir != Direction::Reply {
            self.request = flow;
        }
        if dir != Direction::Request {
            self.reply = flow;
        }
        self
    }
}

/// One change the schedule asks of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum NetAction {
    #[serde(rename_all = "camelCase")]
    Delay {
        fixed_ms: u64,
        jitter_ms: u64,
        direction: Direction,
    },
    /// Requests are forwarded, replies discarded: the call commits, the client times out.
    DropReplies,
    /// Nothing is forwarded in `direction`.
    Blackhole { direction: Direction },
    /// Every open connection is reset; new ones are reset as they come.
    Reset,
    /// New connections are refused and open ones stall.
    Partition,
    /// Back to passing everything.
    Heal,
}

impl NetAction {
    pub fn name(&self) -> &'static str {
        match self {
            NetAction::Delay { .. } => "delay",
            NetAction::DropReplies => "drop-replies",
            NetAction::Blackhole { .. } => "blackhole",
            NetAction::Reset => "reset",
            NetAction::Partition => "partition",
            NetAction::Heal => "heal",
        }
    }

    /// The rules a link holds while this action is in force.
    pub fn rules(&self) -> Rules {
        let pass = Rules::default();
        match *self {
            NetAction::Delay {
                fixed_ms,
                jitter_ms,
                direction,
            } => pass.with(
                direction,
                Flow::Delay {
                    fixed_ms,
                    jitter_ms,
                },
            ),
            NetAction::DropReplies => pass.with(Direction::Reply, Flow::Discard),
            NetAction::Blackhole { direction } => pass.with(direction, Flow::Discard),
            NetAction::Reset => Rules {
                reset_new: true,
                ..pass
            },
            NetAction::Partition => Rules {
                refuse_new: true,
                ..pass.with(Direction::Both, Flow::Stall)
            },
            NetAction::Heal => pass,
        }
    }
}

/// One line of the fault log: when a link's rules changed, and to what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetEvent {
    /// Epoch microseconds.
    pub at_us: i64,
    pub link: String,
    pub action: NetAction,
    pub rules: Rules,
    /// Connections the change closed at once (`reset`).
    pub closed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_replies_discards_only_replies() {
        let r = NetAction::DropReplies.rules();
        assert_eq!(r.request, Flow::Pass);
        assert_eq!(r.reply, Flow::Discard);
        assert!(!r.refuse_new);
    }

    #[test]
    fn partition_refuses_and_stalls_both_ways() {
        let r = NetAction::Partition.rules();
        assert!(r.refuse_new);
        assert_eq!((r.request, r.reply), (Flow::Stall, Flow::Stall));
    }

    #[test]
    fn delay_on_one_direction_leaves_the_other() {
        let r = NetAction::Delay {
            fixed_ms: 5,
            jitter_ms: 1,
            direction: Direction::Request,
        }
        .rules();
        assert_eq!(r.reply, Flow::Pass);
        assert_eq!(
            r.flow(Direction::Request),
            Flow::Delay {
                fixed_ms: 5,
                jitter_ms: 1
            }
        );
    }
}
