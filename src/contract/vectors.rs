//! The golden vectors file (spec 5): serde types for `golden-vectors.json`.

use serde::{Deserialize, Serialize};

use crate::model::{Decision, LeaseConfig, Strategy, TokenBudgetOptions, num};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VectorsFile {
    pub contract_version: String,
    pub generated_from: String,
    pub frozen: bool,
    pub decision_fields: Vec<String>,
    pub suites: Vec<Suite>,
}

/// One timeline, told apart by `primitive`. Each starts from empty state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive", rename_all = "camelCase")]
pub enum Suite {
    RateLimit(RateLimitSuite),
    TokenBudget(TokenBudgetSuite),
    Lease(LeaseSuite),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSuite {
    pub name: String,
    pub strategy: Strategy,
    pub key: String,
    pub ops: Vec<RateOp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateOp {
    #[serde(serialize_with = "num::serialize")]
    pub now: f64,
    #[serde(serialize_with = "num::serialize")]
    pub cost: f64,
    pub expect: Decision,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenBudgetSuite {
    pub name: String,
    pub options: TokenBudgetOptions,
    pub ops: Vec<DebitOp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebitOp {
    #[serde(serialize_with = "num::serialize")]
    pub now: f64,
    #[serde(serialize_with = "num::serialize")]
    pub tokens: f64,
    pub expect: Decision,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSuite {
    pub name: String,
    #[serde(flatten)]
    pub config: LeaseConfig,
    pub events: Vec<LeaseEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum LeaseEvent {
    #[serde(rename_all = "camelCase")]
    Grant {
        #[serde(serialize_with = "num::serialize")]
        capacity: f64,
        #[serde(serialize_with = "num::serialize")]
        expires_at: f64,
    },
    #[serde(rename_all = "camelCase")]
    Spend {
        #[serde(serialize_with = "num::serialize")]
        now: f64,
        #[serde(serialize_with = "num::serialize")]
        cost: f64,
        expect: SpendExpect,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpendExpect {
    pub needs_refresh: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

impl Suite {
    pub fn name(&self) -> &str {
        match self {
            Suite::RateLimit(s) => &s.name,
            Suite::TokenBudget(s) => &s.name,
            Suite::Lease(s) => &s.name,
        }
    }

    /// The contract's name for the suite's primitive, as in `"primitive": "rateLimit"`.
    pub fn primitive(&self) -> &'static str {
        match self {
            Suite::RateLimit(_) => "rateLimit",
            Suite::TokenBudget(_) => "tokenBudget",
            Suite::Lease(_) => "lease",
        }
    }

    /// The trial name the runner shows: `<primitive>::<suite name>`.
    pub fn trial_name(&self) -> String {
        format!("{}::{}", self.primitive(), self.name())
    }
}
