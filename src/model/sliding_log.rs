//! Sliding window log (spec 2, slidingWindowLog): one sorted-set entry per admitted unit.

use super::strategy::{CheckOutcome, RateState, SlidingWindowLogOptions};
use super::{Decision, num};

/// One member of the sorted set: its score (the `now` it was admitted at) and its name.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub score: f64,
    pub member: String,
}

pub(super) fn check(
    o: &SlidingWindowLogOptions,
    state: &mut Option<RateState>,
    now: f64,
    cost: f64,
) -> CheckOutcome {
    let mut entries = match state.take() {
        Some(RateState::SlidingWindowLog { entries }) => entries,
        _ => Vec::new(),
    };
    // ZREMRANGEBYSCORE key -inf (now - windowMs): runs before the decision, even on a denial.
    let cutoff = now - o.window_ms;
    entries.retain(|e| e.score > cutoff);
    let count = entries.len() as f64;

    let outcome = if count + cost <= o.limit {
        for i in 1..=(cost as u64) {
            // The script names members `now .. '-' .. (count + i)`: Lua text, 14 significant digits.
            let member = format!("{}-{}", num::lua_text(now), num::lua_text(count + i as f64));
            zadd(&mut entries, now, member);
        }
        let oldest = entries.first().map_or(now, |e| e.score);
        CheckOutcome {
            decision: Decision::from_f64(
                true,
                o.limit,
                (o.limit - (count + cost)).max(0.0),
                (oldest + o.window_ms).ceil(),
                0.0,
            ),
            expiry_ms: Some(o.window_ms.ceil().max(1.0)),
        }
    } else {
        let retry = if count == 0.0 {
            o.window_ms
        } else {
            let k = (count + cost - o.limit).clamp(1.0, count);
            let reference = entries[k as usize - 1].score;
            (reference + o.window_ms - now).ceil().max(1.0)
        };
        let oldest = entries.first().map_or(now, |e| e.score);
        CheckOutcome {
            decision: Decision::from_f64(
                false,
                o.limit,
                (o.limit - count).max(0.0),
                (oldest + o.window_ms).ceil(),
                retry,
            ),
            expiry_ms: None,
        }
    };
    // An empty sorted set does not exist in Redis.
    if !entries.is_empty() {
        *state = Some(RateState::SlidingWindowLog { entries });
    }
    outcome
}

/// ZADD semantics: a new member is inserted in (score, member) order; an existing one is re-scored.
fn zadd(entries: &mut Vec<LogEntry>, score: f64, member: String) {
    entries.retain(|e| e.member != member);
    let at = entries
        .iter()
        .position(|e| (e.score, e.member.as_str()) > (score, member.as_str()))
        .unwrap_or(entries.len());
    entries.insert(at, LogEntry { score, member });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SlidingWindowLogOptions;

    /// Member names are Lua text (14 significant digits): `…1618.25` is written `…1618.2`, so an
    /// admission at `…1618.25` can re-score the member admitted at `…1618.2` instead of adding one.
    #[test]
    fn member_names_are_lua_text() {
        let options = SlidingWindowLogOptions {
            limit: 5.0,
            window_ms: 1000.0,
        };
        let mut state = None;
        for now in [
            1_700_000_000_618.21,
            1_700_000_001_618.2,
            1_700_000_001_618.25,
        ] {
            assert!(check(&options, &mut state, now, 1.0).decision.allowed);
        }
        let Some(RateState::SlidingWindowLog { entries }) = state else {
            panic!("the log keeps entries");
        };
        let members: Vec<_> = entries
            .iter()
            .map(|e| (e.member.as_str(), e.score))
            .collect();
        assert_eq!(members, [("1700000001618.2-2", 1_700_000_001_618.25)]);
    }
}
