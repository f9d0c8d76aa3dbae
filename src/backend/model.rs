//! The `model` backend: the in-process reference model, for checking a vectors file itself.

use std::collections::HashMap;

use async_trait::async_trait;

use super::{Backend, BackendError, BackendInfo, Capabilities, SuiteSession};
use crate::model::{
    Decision, LeaseConfig, LeaseSpender, ModelError, RateState, SpendOutcome, Strategy,
    TokenBudget, TokenBudgetOptions, TokenBudgetState,
};

pub struct ModelBackend;

#[async_trait]
impl Backend for ModelBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "model".into(),
            name: "tk-conform reference model".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            server: "in-process".into(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::everything()
    }

    async fn open_suite(&self, _suite: &str) -> Result<Box<dyn SuiteSession>, BackendError> {
        Ok(Box::new(ModelSession::default()))
    }
}

/// Per-suite state, keyed like a store would key it.
#[derive(Default)]
pub struct ModelSession {
    rate: HashMap<String, Option<RateState>>,
    budgets: HashMap<String, Option<TokenBudgetState>>,
    spender: Option<LeaseSpender>,
}

fn invalid(e: ModelError) -> BackendError {
    BackendError::Invalid(e.to_string())
}

#[async_trait]
impl SuiteSession for ModelSession {
    async fn check(
        &mut self,
        strategy: &Strategy,
        key: &str,
        now: f64,
        cost: f64,
    ) -> Result<Decision, BackendError> {
        let state = self.rate.entry(key.to_owned()).or_default();
        strategy
            .check(state, now, cost)
            .map(|o| o.decision)
            .map_err(invalid)
    }

    async fn debit(
        &mut self,
        options: &TokenBudgetOptions,
        key: &str,
        now: f64,
        tokens: f64,
    ) -> Result<Decision, BackendError> {
        let meter = TokenBudget::new(*options).map_err(invalid)?;
        let state = self.budgets.entry(key.to_owned()).or_default();
        meter.debit(state, now, tokens).map_err(invalid)
    }

    async fn lease_grant(
        &mut self,
        config: &LeaseConfig,
        capacity: f64,
        expires_at: f64,
    ) -> Result<(), BackendError> {
        self.spender
            .get_or_insert_with(|| LeaseSpender::new(*config))
            .grant(capacity, expires_at);
        Ok(())
    }

    async fn lease_spend(
        &mut self,
        config: &LeaseConfig,
        now: f64,
        cost: f64,
    ) -> Result<SpendOutcome, BackendError> {
        self.spender
            .get_or_insert_with(|| LeaseSpender::new(*config))
            .spend(now, cost)
            .map_err(invalid)
    }
}
