//! The memory store: the reference model's pure functions over maps in this process.
//!
//! It serves a single server (no sharing), and is also the per-instance store of a Redis-backed
//! server (`tokenBudget`, `concurrency`). One mutex guards everything: decisions are microseconds
//! and nothing awaits while it is held.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Renewal, SlotGrant, Store, StoreError, StoreFaults, WindowGrant};
use crate::model::{
    Decision, RateState, Strategy, TokenBudget, TokenBudgetOptions, TokenBudgetState,
};
use crate::server::clock;

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    faults: StoreFaults,
}

#[derive(Default)]
struct Inner {
    /// Rate state with the expiry the contract's script would set on its key.
    rate: HashMap<String, (RateState, f64)>,
    budgets: HashMap<String, TokenBudgetState>,
    /// Held slots per slots key, oldest first.
    slots: HashMap<String, Vec<Slot>>,
    /// Reserve windows: start and units granted in it.
    windows: HashMap<String, (f64, f64)>,
}

#[derive(Debug, Clone)]
struct Slot {
    lease: String,
    expires_at: f64,
}

impl MemoryStore {
    pub fn new(faults: StoreFaults) -> Self {
        MemoryStore {
            inner: Mutex::default(),
            faults,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written map entry behind (every
        // write is one insert), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of slots currently held under `slots_key`, expired ones included until swept.
    pub fn held_slots(&self, slots_key: &str) -> usize {
        self.lock().slots.get(slots_key).map_or(0, Vec::len)
    }

    fn decide(
        inner: &mut Inner,
        strategy: &Strategy,
        key: &str,
        now: f64,
        cost: f64,
        commit: bool,
    ) -> Result<Decision, StoreError> {
        let mut state = match inner.rate.get(key) {
            Some((state, expires_at)) if *expires_at > now => Some(state.clone()),
            _ => None,
        };
        let outcome = strategy.check(&mut state, now, cost)?;
        if commit && let (Some(expiry), Some(state)) = (outcome.expiry_ms, state) {
            inner.rate.insert(key.to_owned(), (state, now + expiry));
        }
        Ok(outcome.decision)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn now_ms(&self) -> Result<f64, StoreError> {
        Ok(clock::now_ms())
    }

    async fn check(
        &self,
        strategy: &Strategy,
        key: &str,
        now: Option<f64>,
        cost: f64,
    ) -> Result<Decision, StoreError> {
        let now = now.unwrap_or_else(clock::now_ms);
        MemoryStore::decide(&mut self.lock(), strategy, key, now, cost, true)
    }

    async fn peek(
        &self,
        strategy: &Strategy,
        key: &str,
        cost: f64,
    ) -> Result<Decision, StoreError> {
        MemoryStore::decide(
            &mut self.lock(),
            strategy,
            key,
            clock::now_ms(),
            cost,
            false,
        )
    }

    async fn debit(
        &self,
        options: &TokenBudgetOptions,
        key: &str,
        tokens: f64,
    ) -> Result<Decision, StoreError> {
        let meter = TokenBudget::new(*options)?;
        let mut inner = self.lock();
        let mut state = inner.budgets.get(key).copied();
        let decision = meter.debit(&mut state, clock::now_ms(), tokens)?;
        if let Some(state) = state {
            inner.budgets.insert(key.to_owned(), state);
        }
        Ok(decision)
    }

    async fn acquire_slot(
        &self,
        slots_key: &str,
        ceiling: u32,
        ttl_ms: f64,
        lease: &str,
    ) -> Result<SlotGrant, StoreError> {
        let now = clock::now_ms();
        let mut inner = self.lock();
        let slots = inner.slots.entry(slots_key.to_owned()).or_default();
        if !self.faults.never_reclaim {
            slots.retain(|s| s.expires_at > now);
        }
        if slots.len() >= ceiling as usize {
            let earliest = slots
                .iter()
                .map(|s| s.expires_at)
                .fold(f64::INFINITY, f64::min);
            return Ok(SlotGrant {
                allowed: false,
                held: slots.len() as u32,
                expires_at: earliest,
                now,
            });
        }
        let expires_at = now + ttl_ms;
        slots.push(Slot {
            lease: lease.to_owned(),
            expires_at,
        });
        Ok(SlotGrant {
            allowed: true,
            held: slots.len() as u32,
            expires_at,
            now,
        })
    }

    async fn release_slot(&self, slots_key: &str, lease: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(slots) = inner.slots.get_mut(slots_key) else {
            return Ok(false);
        };
        if let Some(at) = slots.iter().position(|s| s.lease == lease) {
            slots.remove(at);
            return Ok(true);
        }
        if self.faults.late_release_frees && !slots.is_empty() {
            slots.remove(0);
        }
        Ok(false)
    }

    async fn renew_slot(
        &self,
        slots_key: &str,
        lease: &str,
        ttl_ms: f64,
    ) -> Result<Renewal, StoreError> {
        let now = clock::now_ms();
        let mut inner = self.lock();
        let slot = inner
            .slots
            .get_mut(slots_key)
            .and_then(|slots| slots.iter_mut().find(|s| s.lease == lease));
        Ok(match slot {
            Some(slot) if slot.expires_at > now || self.faults.never_reclaim => {
                if !self.faults.ignore_heartbeat {
                    slot.expires_at = now + ttl_ms;
                }
                Renewal::Live {
                    expires_at: slot.expires_at,
                }
            }
            _ => Renewal::Reclaimed,
        })
    }

    async fn sweep(&self) -> Result<u64, StoreError> {
        let now = clock::now_ms();
        let mut inner = self.lock();
        let mut freed = 0;
        if !self.faults.never_reclaim {
            for slots in inner.slots.values_mut() {
                let before = slots.len();
                slots.retain(|s| s.expires_at > now);
                freed += (before - slots.len()) as u64;
            }
            inner.slots.retain(|_, slots| !slots.is_empty());
        }
        inner.rate.retain(|_, (_, expires_at)| *expires_at > now);
        Ok(freed)
    }

    async fn reserve(
        &self,
        key: &str,
        limit: f64,
        window_ms: f64,
        wants: f64,
    ) -> Result<WindowGrant, StoreError> {
        let now = clock::now_ms();
        let start = (now / window_ms).floor() * window_ms;
        let mut inner = self.lock();
        let window = inner.windows.entry(key.to_owned()).or_insert((start, 0.0));
        if window.0 != start {
            *window = (start, 0.0);
        }
        let capacity = if self.faults.over_grant {
            wants
        } else {
            wants.min(limit - window.1).max(0.0)
        };
        window.1 += capacity;
        Ok(WindowGrant {
            capacity,
            window_end: start + window_ms,
            now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FixedWindowOptions;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn peek_does_not_consume_and_matches_check() {
        block_on(async {
            let store = MemoryStore::default();
            let s = Strategy::FixedWindow(FixedWindowOptions {
                limit: 2.0,
                window_ms: 3_600_000.0,
            });
            let peeked = store.peek(&s, "k", 1.0).await.unwrap();
            let peeked_again = store.peek(&s, "k", 1.0).await.unwrap();
            assert_eq!(peeked, peeked_again);
            let checked = store.check(&s, "k", None, 1.0).await.unwrap();
            assert_eq!(
                (peeked.allowed, peeked.remaining),
                (checked.allowed, checked.remaining)
            );
        });
    }

    #[test]
    fn sweep_reclaims_without_a_new_acquire() {
        block_on(async {
            let store = MemoryStore::default();
            assert!(store.acquire_slot("s", 1, 1.0, "a").await.unwrap().allowed);
            assert_eq!(store.held_slots("s"), 1);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            assert_eq!(store.sweep().await.unwrap(), 1);
            assert_eq!(store.held_slots("s"), 0);
            // The late release of the reclaimed lease frees nobody's slot.
            assert!(
                store
                    .acquire_slot("s", 1, 60_000.0, "b")
                    .await
                    .unwrap()
                    .allowed
            );
            assert!(!store.release_slot("s", "a").await.unwrap());
            assert_eq!(store.held_slots("s"), 1);
        });
    }

    #[test]
    fn never_reclaim_fault_keeps_expired_slots() {
        block_on(async {
            let store = MemoryStore::new(StoreFaults {
                never_reclaim: true,
                ..Default::default()
            });
            assert!(store.acquire_slot("s", 1, 1.0, "a").await.unwrap().allowed);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            assert_eq!(store.sweep().await.unwrap(), 0);
            assert!(!store.acquire_slot("s", 1, 1.0, "b").await.unwrap().allowed);
        });
    }

    #[test]
    fn reserve_never_grants_past_the_limit() {
        block_on(async {
            let store = MemoryStore::default();
            let granted: Vec<f64> = futures::future::join_all(
                (0..5).map(|_| store.reserve("w", 10.0, 3_600_000.0, 4.0)),
            )
            .await
            .into_iter()
            .map(|g| g.unwrap().capacity)
            .collect();
            assert_eq!(granted.iter().sum::<f64>(), 10.0, "{granted:?}");
        });
    }
}
