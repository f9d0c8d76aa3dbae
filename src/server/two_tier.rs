//! twoTier policies (spec 9): each server spends instance-local credits (the lease spender of
//! spec 4) and refills them in chunks of up to `batch` from the shared store (the "L2"), where
//! the policy's own strategy decides how much may be leased.

use std::collections::HashMap;
use std::sync::Mutex;

use super::clock;
use super::policy::TwoTier;
use super::store::{Store, StoreError};
use crate::model::{Decision, LeaseConfig, LeaseSpender, SpendOutcome, Strategy};

/// A refresh may lose a race with other servers for the L2's last units; try a bounded number.
const REFRESH_ATTEMPTS: usize = 3;

#[derive(Default)]
pub struct TwoTierSpenders {
    spenders: Mutex<HashMap<String, LeaseSpender>>,
}

impl TwoTierSpenders {
    /// Admits `cost` for `key` from local credits, leasing more from the L2 when they run out.
    pub async fn check(
        &self,
        store: &dyn Store,
        strategy: &Strategy,
        config: TwoTier,
        key: &str,
        cost: f64,
    ) -> Result<Decision, StoreError> {
        let lease_config = LeaseConfig {
            limit: strategy.limit(),
            ttl_ms: 0.0,
            window_coupled: config.window_coupled,
        };
        for _ in 0..REFRESH_ATTEMPTS {
            if let SpendOutcome::Allowed(decision) = self.spend(key, lease_config, cost)? {
                return Ok(decision);
            }
            let wants = f64::from(config.batch).max(cost);
            match lease_from_l2(store, strategy, key, wants, cost).await? {
                Lease::Granted {
                    capacity,
                    expires_at,
                } => self.grant(key, lease_config, capacity, expires_at),
                Lease::Refused(denial) => return Ok(denial),
            }
        }
        // Every refresh was spent by others before this call could use it: the L2 is dry.
        store.peek(strategy, key, cost).await.map(|mut d| {
            d.allowed = false;
            d.retry_after_ms = d.retry_after_ms.max(1);
            d
        })
    }

    /// What a check would answer from local credits alone; `None` when it would refresh.
    pub fn peek(&self, key: &str, cost: f64) -> Option<Decision> {
        let spenders = self.spenders.lock().unwrap_or_else(|p| p.into_inner());
        let mut spender = spenders.get(key)?.clone();
        match spender.spend(clock::now_ms(), cost) {
            Ok(SpendOutcome::Allowed(decision)) => Some(decision),
            _ => None,
        }
    }

    /// Credits held locally for `key` (whole units), for Forecast.
    pub fn credits(&self, key: &str) -> f64 {
        let spenders = self.spenders.lock().unwrap_or_else(|p| p.into_inner());
        spenders.get(key).map_or(0.0, |s| {
            let rolled =
                s.config.window_coupled && s.expires_at.is_some_and(|at| clock::now_ms() >= at);
            if rolled { 0.0 } else { s.credits.floor() }
        })
    }

    fn spend(&self, key: &str, config: LeaseConfig, cost: f64) -> Result<SpendOutcome, StoreError> {
        let mut spenders = self.spenders.lock().unwrap_or_else(|p| p.into_inner());
        let spender = spenders
            .entry(key.to_owned())
            .or_insert_with(|| LeaseSpender::new(config));
        Ok(spender.spend(clock::now_ms(), cost)?)
    }

    fn grant(&self, key: &str, config: LeaseConfig, capacity: f64, expires_at: f64) {
        let mut spenders = self.spenders.lock().unwrap_or_else(|p| p.into_inner());
        spenders
            .entry(key.to_owned())
            .or_insert_with(|| LeaseSpender::new(config))
            .grant(capacity, expires_at);
    }
}

enum Lease {
    Granted { capacity: f64, expires_at: f64 },
    Refused(Decision),
}

/// Takes up to `wants` units from the L2 with the strategy's own check: all of them when they
/// fit, else whatever the denial says remains, if that covers `cost`.
async fn lease_from_l2(
    store: &dyn Store,
    strategy: &Strategy,
    key: &str,
    wants: f64,
    cost: f64,
) -> Result<Lease, StoreError> {
    let first = store.check(strategy, key, None, wants).await?;
    if first.allowed {
        return Ok(Lease::Granted {
            capacity: wants,
            expires_at: first.reset_at as f64,
        });
    }
    let rest = first.remaining as f64;
    if rest < 1.0 || rest < cost {
        return Ok(Lease::Refused(first));
    }
    let second = store.check(strategy, key, None, rest).await?;
    Ok(if second.allowed {
        Lease::Granted {
            capacity: rest,
            expires_at: second.reset_at as f64,
        }
    } else {
        Lease::Refused(second)
    })
}
