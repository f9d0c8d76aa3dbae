//! throttlekit-py, an engine nobody here wrote, against the reference model: random timelines
//! through `--backend exec` with the Python adapter, every decision compared field by field.

use crate::util::differential::{self, EPOCH};

use crate::util;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tk_conform::backend::exec::{ExecBackend, ExecConfig};
use tk_conform::backend::model::ModelBackend;
use tk_conform::backend::{Backend, BackendError};
use tk_conform::model::{LeaseConfig, SpendOutcome, TokenBudgetOptions};

const SEED: u64 = 0x7c0f_0001;

async fn start(redis: &util::Redis) -> Option<(ExecBackend, tempfile::TempDir)> {
    let python = util::throttlekit_python()?;
    let logs = tempfile::tempdir().unwrap();
    let adapter = util::repo().join("adapters/python/throttlekit_py.py");
    let mut config = ExecConfig::new(
        format!("{} {}", util::quoted(&python), util::quoted(&adapter)),
        logs.path().join("adapter.stderr.log"),
    );
    config.redis_url = Some(redis.url());
    let backend = ExecBackend::start(config).await.expect("adapter starts");
    Some((backend, logs))
}

#[tokio::test]
async fn throttlekit_py_rate_strategies_agree_with_the_model() {
    let redis = util::Redis::start();
    let Some((engine, _logs)) = start(&redis).await else {
        return;
    };
    let disagreements =
        differential::random_rate_timelines(&engine, "throttlekit-py", SEED, 8).await;
    engine.shutdown().await.unwrap();
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// The minimal timelines of the two places where Lua's 14-digit number text shows.
#[tokio::test]
async fn throttlekit_py_and_the_model_store_lua_text_alike() {
    let redis = util::Redis::start();
    let Some((engine, _logs)) = start(&redis).await else {
        return;
    };
    let disagreements = differential::lua_text_timelines(&engine).await;
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn throttlekit_py_lease_spender_agrees_with_the_model() {
    let redis = util::Redis::start();
    let Some((engine, _logs)) = start(&redis).await else {
        return;
    };
    let model = ModelBackend;
    let mut rng = StdRng::seed_from_u64(SEED + 1);
    for n in 0..12 {
        let config = LeaseConfig {
            limit: 10.0,
            ttl_ms: 1000.0,
            window_coupled: n % 2 == 0,
        };
        let suite = format!("lease-{n}");
        let mut theirs = engine.open_suite(&suite).await.unwrap();
        let mut ours = model.open_suite(&suite).await.unwrap();
        let mut now = EPOCH;
        let mut expires_at = EPOCH + 1000.0;
        for op in 0..30 {
            now += [0.0, 100.0, 400.0][rng.random_range(0..3)];
            if rng.random_bool(0.25) {
                let capacity = rng.random_range(0..=4) as f64;
                expires_at = (now / 1000.0).floor() * 1000.0 + 1000.0;
                ours.lease_grant(&config, capacity, expires_at)
                    .await
                    .unwrap();
                theirs
                    .lease_grant(&config, capacity, expires_at)
                    .await
                    .unwrap();
                continue;
            }
            let cost = [1.0, 2.0, 0.5][rng.random_range(0..3)];
            let expected = ours.lease_spend(&config, now, cost).await.unwrap();
            let actual = theirs.lease_spend(&config, now, cost).await.unwrap();
            assert_eq!(
                expected, actual,
                "{suite} op {op} (now={now}, cost={cost}, expiresAt={expires_at})"
            );
        }
        // A cost the contract forbids is refused by both.
        assert!(matches!(
            theirs.lease_spend(&config, now, 0.0).await,
            Err(BackendError::Invalid(_))
        ));
        let _: SpendOutcome = ours.lease_spend(&config, now, 1.0).await.unwrap();
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn throttlekit_py_declares_debit_unsupported() {
    let redis = util::Redis::start();
    let Some((engine, _logs)) = start(&redis).await else {
        return;
    };
    // Declined with a reason: not claimed, and its trials are skipped in the adapter's words.
    assert!(!engine.capabilities().token_budget);
    let reason = engine.unsupported_reason(tk_conform::backend::Capability::TokenBudget);
    assert!(
        reason.starts_with("throttlekit-py: no direct tokenBudget door"),
        "{reason}"
    );
    let mut session = engine.open_suite("budget").await.unwrap();
    let options = TokenBudgetOptions {
        budget: 5.0,
        window_ms: 1000.0,
    };
    match session.debit(&options, "k", EPOCH, 1.0).await {
        Err(BackendError::Unsupported(reason)) => {
            assert!(reason.contains("ServiceBackend"), "{reason}")
        }
        other => panic!("expected unsupported, got {other:?}"),
    }
    drop(session);
    engine.shutdown().await.unwrap();
}
