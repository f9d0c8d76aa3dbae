//! Token budget (spec 3): a per-window meter of a cost such as LLM tokens. A debit is admitted
//! while the meter is under budget *before* it, and then counted in full, so only the crossing
//! debit may overshoot.

use serde::{Deserialize, Serialize};

use super::Decision;
use super::error::{self, ModelError};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBudgetOptions {
    #[serde(serialize_with = "super::num::serialize")]
    pub budget: f64,
    #[serde(serialize_with = "super::num::serialize")]
    pub window_ms: f64,
}

/// The meter: which window it is counting and how much that window used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBudgetState {
    pub window_start: f64,
    pub used: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBudget {
    pub options: TokenBudgetOptions,
}

impl TokenBudgetOptions {
    pub fn validate(&self) -> Result<(), ModelError> {
        error::positive("budget", self.budget)?;
        error::positive("windowMs", self.window_ms)?;
        Ok(())
    }
}

impl TokenBudget {
    pub fn new(options: TokenBudgetOptions) -> Result<Self, ModelError> {
        options.validate()?;
        Ok(TokenBudget { options })
    }

    /// Debits `tokens` at `now`; `state` is `None` before the first debit.
    pub fn debit(
        &self,
        state: &mut Option<TokenBudgetState>,
        now: f64,
        tokens: f64,
    ) -> Result<Decision, ModelError> {
        let now = error::now(now)?;
        let tokens = error::cost(tokens)?;
        let o = &self.options;
        let start = (now / o.window_ms).floor() * o.window_ms;
        let reset_at = start + o.window_ms;
        let used = match state {
            Some(s) if s.window_start == start => s.used,
            _ => 0.0,
        };
        if used < o.budget {
            let used = used + tokens;
            *state = Some(TokenBudgetState {
                window_start: start,
                used,
            });
            return Ok(Decision::from_f64(
                true,
                o.budget,
                (o.budget - used).max(0.0),
                reset_at,
                0.0,
            ));
        }
        Ok(Decision::from_f64(
            false,
            o.budget,
            (o.budget - used).max(0.0),
            reset_at,
            reset_at - now,
        ))
    }
}
