//! One oracle, two doors: the contract's Lua called directly on Redis and the service's Check
//! spend one budget when the server stores in that Redis (spec 9, `<prefix>:<identity>`).

use std::sync::Arc;

use super::rate::check;
use super::{SuiteContext, SuiteFailure, SuiteResult, expect_eq};
use crate::model::{Decision, GcraOptions, Strategy};
use crate::redis_scripts::ScriptSet;

/// `oracle` in the suites' policy file: GCRA, limit 4 per hour, burst 4.
pub(super) const ORACLE_BURST: i64 = 4;
const ORACLE: Strategy = Strategy::Gcra(GcraOptions {
    limit: 4.0,
    period_ms: 3_600_000.0,
    burst: 4.0,
});

pub(super) async fn one_oracle_shared_budget(ctx: Arc<SuiteContext>) -> SuiteResult {
    let Some(url) = &ctx.redis_url else {
        return Err(SuiteFailure("setup: no Redis URL".into()));
    };
    let scripts = ScriptSet::from_contract_dir(&ctx.contract_dir)
        .map_err(|e| SuiteFailure(format!("setup: the contract's scripts: {e}")))?;
    let mut con = crate::infra::connect(url)
        .await
        .map_err(|e| SuiteFailure(format!("setup: {e}")))?;
    let identity = ctx.key("oracle", "k");
    // The key a direct-Redis client of policy `oracle` uses: `<prefix>:<identity>`, under the
    // server's key prefix when it was given one.
    let direct_key = match &ctx.store_prefix {
        Some(p) => format!("{p}:oracle:{identity}"),
        None => format!("oracle:{identity}"),
    };
    let mut direct = async |step: &str| -> Result<Decision, SuiteFailure> {
        scripts
            .check(&mut con, &direct_key, &ORACLE, 0.0, 1.0)
            .await
            .map_err(|e| SuiteFailure(format!("{step}: {e}")))
    };
    let outcome = async {
        let mut remaining = ORACLE_BURST;
        for op in 0..ORACLE_BURST + 2 {
            let via_service = op % 2 == 0;
            let step = if via_service {
                format!("op {op} (service door: Check oracle key={identity})")
            } else {
                format!("op {op} (direct door: gcra.check on {direct_key})")
            };
            let d = if via_service {
                check(&ctx, &step, "oracle", &identity, 1).await?
            } else {
                direct(&step).await?
            };
            let allowed = remaining > 0;
            remaining = (remaining - 1).max(0);
            expect_eq(&step, "allowed", allowed, d.allowed)?;
            expect_eq(
                &step,
                "remaining (one budget across both doors)",
                remaining,
                d.remaining,
            )?;
        }
        Ok(())
    }
    .await;
    // The key is outside any run prefix when the server keeps its own keys: delete it here.
    if ctx.store_prefix.is_none() {
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(&direct_key)
            .query_async(&mut con)
            .await;
    }
    outcome
}
