//! The lease spender (spec 4): spends credits granted by a fleet lease locally, and says
//! "refresh needed" instead of ever inventing a denial.

use serde::{Deserialize, Serialize};

use super::Decision;
use super::error::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseConfig {
    #[serde(serialize_with = "super::num::serialize")]
    pub limit: f64,
    #[serde(serialize_with = "super::num::serialize")]
    pub ttl_ms: f64,
    pub window_coupled: bool,
}

/// What a spend returns: an admitted decision, or a request to refresh the lease first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendOutcome {
    Allowed(Decision),
    NeedsRefresh,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeaseSpender {
    pub config: LeaseConfig,
    pub credits: f64,
    pub expires_at: Option<f64>,
}

impl LeaseSpender {
    pub fn new(config: LeaseConfig) -> Self {
        LeaseSpender {
            config,
            credits: 0.0,
            expires_at: None,
        }
    }

    pub fn grant(&mut self, capacity: f64, expires_at: f64) {
        self.credits += capacity;
        self.expires_at = Some(expires_at);
    }

    pub fn spend(&mut self, now: f64, cost: f64) -> Result<SpendOutcome, ModelError> {
        if !(cost.is_finite() && cost > 0.0) {
            return Err(ModelError::InvalidCost {
                requirement: "a positive finite number",
                value: cost,
            });
        }
        if self.config.window_coupled
            && self.expires_at.is_some_and(|at| now >= at)
            && self.credits > 0.0
        {
            // The window rolled: leftovers are discarded, never carried.
            self.credits = 0.0;
        }
        if self.credits >= cost {
            self.credits -= cost;
            let reset_at = self.expires_at.unwrap_or(now + self.config.ttl_ms);
            return Ok(SpendOutcome::Allowed(Decision::from_f64(
                true,
                self.config.limit,
                self.credits.floor().max(0.0),
                reset_at,
                0.0,
            )));
        }
        Ok(SpendOutcome::NeedsRefresh)
    }
}
