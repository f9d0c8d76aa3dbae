//! The Node.js adapter (`adapters/node/contract_lua.mjs`) drives the project's own contract Lua
//! through its dependency-free RESP client; its decisions must be the model's, bit for bit.

use std::path::PathBuf;

use crate::util;
use crate::util::differential;
use tk_conform::backend::exec::{ExecBackend, ExecConfig};
use tk_conform::backend::{Backend, BackendError};
use tk_conform::model::{LeaseConfig, TokenBudgetOptions};

/// The contract's scripts folder (`TK_CONFORM_SCRIPTS_DIR` points elsewhere, for trying the adapter
/// against another engine's scripts with the same manifest shape).
fn scripts_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TK_CONFORM_SCRIPTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::repo().join("contract/scripts"));
    if dir.join("manifest.json").exists() {
        Some(dir)
    } else {
        util::skip_or_fail(&format!("no scripts manifest in {}", dir.display()));
        None
    }
}

async fn start(redis: &util::Redis) -> Option<(ExecBackend, tempfile::TempDir)> {
    let node = util::node()?;
    let scripts = scripts_dir()?;
    let logs = tempfile::tempdir().unwrap();
    let adapter = util::repo().join("adapters/node/contract_lua.mjs");
    let mut config = ExecConfig::new(
        format!(
            "{} {} --scripts {}",
            util::quoted(&node),
            util::quoted(&adapter),
            util::quoted(&scripts)
        ),
        logs.path().join("adapter.stderr.log"),
    );
    config.redis_url = Some(redis.url());
    Some((
        ExecBackend::start(config).await.expect("adapter starts"),
        logs,
    ))
}

#[tokio::test]
async fn node_contract_lua_agrees_with_the_model() {
    let redis = util::Redis::start();
    let Some((engine, _logs)) = start(&redis).await else {
        return;
    };
    let mut disagreements =
        differential::random_rate_timelines(&engine, "node contract Lua", 0x7c0f_0002, 4).await;
    disagreements.extend(differential::lua_text_timelines(&engine).await);
    engine.shutdown().await.unwrap();
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[tokio::test]
async fn node_adapter_declines_what_the_lua_does_not_serve_with_reasons() {
    let redis = util::Redis::start();
    let Some((engine, _logs)) = start(&redis).await else {
        return;
    };
    let mut session = engine.open_suite("declined").await.unwrap();
    let budget = TokenBudgetOptions {
        budget: 1.0,
        window_ms: 1000.0,
    };
    let lease = LeaseConfig {
        limit: 1.0,
        ttl_ms: 1000.0,
        window_coupled: true,
    };
    let debit = session.debit(&budget, "k", differential::EPOCH, 1.0).await;
    assert!(
        matches!(&debit, Err(BackendError::Unsupported(r)) if r.contains("no tokenBudget script")),
        "{debit:?}"
    );
    let spend = session.lease_spend(&lease, differential::EPOCH, 1.0).await;
    assert!(
        matches!(&spend, Err(BackendError::Unsupported(r)) if r.contains("client-side")),
        "{spend:?}"
    );
    drop(session);
    engine.shutdown().await.unwrap();
}
