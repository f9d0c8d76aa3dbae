//! Rate limiters and budgets over the service door: Check, CheckMany, Peek, Forecast, Debit.

use std::sync::Arc;

use super::client::ok;
use super::{SuiteContext, SuiteFailure, SuiteResult, differ, expect_eq};
use crate::model::Decision;
use crate::proto;
use crate::server::monitor::from_proto;

/// `burst5` in the suites' policy file: GCRA, limit 5 per hour, burst 5.
pub(super) const BURST5: i64 = 5;

pub(super) async fn check(
    ctx: &SuiteContext,
    step: &str,
    policy: &str,
    key: &str,
    cost: i64,
) -> Result<Decision, SuiteFailure> {
    let request = proto::CheckRequest {
        policy: policy.into(),
        key: key.into(),
        cost,
    };
    let response = ok(step, ctx.clients.rate().check(request).await)?;
    decision_of(step, response.decision)
}

pub(super) fn decision_of(
    step: &str,
    decision: Option<proto::Decision>,
) -> Result<Decision, SuiteFailure> {
    decision
        .as_ref()
        .map(from_proto)
        .ok_or_else(|| SuiteFailure(format!("{step}: the reply has no decision")))
}

async fn peek(
    ctx: &SuiteContext,
    step: &str,
    policy: &str,
    key: &str,
) -> Result<Decision, SuiteFailure> {
    let request = proto::PeekRequest {
        policy: policy.into(),
        key: key.into(),
    };
    let response = ok(step, ctx.clients.rate().peek(request).await)?;
    decision_of(step, response.decision)
}

/// Admits `burst` times on a cold key (remaining counting down), then denies.
async fn exhaust(ctx: &SuiteContext, label: &str, key: &str) -> SuiteResult {
    for i in 0..BURST5 {
        let step = format!("{label}op {i} (Check burst5 key={key})");
        let d = check(ctx, &step, "burst5", key, 1).await?;
        expect_eq(&step, "allowed", true, d.allowed)?;
        expect_eq(&step, "limit", BURST5, d.limit)?;
        expect_eq(&step, "remaining", BURST5 - 1 - i, d.remaining)?;
        expect_eq(&step, "retryAfterMs", 0, d.retry_after_ms)?;
    }
    let step = format!("{label}op {BURST5} (Check burst5 key={key}, past the burst)");
    let d = check(ctx, &step, "burst5", key, 1).await?;
    expect_eq(&step, "allowed", false, d.allowed)?;
    expect_eq(&step, "remaining", 0, d.remaining)?;
    if d.retry_after_ms <= 0 {
        return Err(differ(&step, "retryAfterMs", "> 0", d.retry_after_ms));
    }
    Ok(())
}

pub(super) async fn cold_burst_then_deny(ctx: Arc<SuiteContext>) -> SuiteResult {
    exhaust(&ctx, "", &ctx.key("burst", "k")).await
}

pub(super) async fn independent_keys(ctx: Arc<SuiteContext>) -> SuiteResult {
    exhaust(&ctx, "key a: ", &ctx.key("indep", "a")).await?;
    exhaust(&ctx, "key b (after a was spent): ", &ctx.key("indep", "b")).await
}

pub(super) async fn peek_does_not_consume(ctx: Arc<SuiteContext>) -> SuiteResult {
    let key = ctx.key("peek", "k");
    let mut op = 0;
    for spent in 0..=BURST5 {
        // Peek three times: none of them may move the budget.
        let mut peeked = Vec::new();
        for _ in 0..3 {
            let step = format!("op {op} (Peek burst5 key={key} after {spent} admits)");
            let p = peek(&ctx, &step, "burst5", &key).await?;
            expect_eq(
                &step,
                "allowed (= remaining >= 1)",
                p.remaining >= 1,
                p.allowed,
            )?;
            peeked.push(p);
            op += 1;
        }
        let step = format!("op {op} (Check burst5 key={key} after {spent} admits and 3 Peeks)");
        let checked = check(&ctx, &step, "burst5", &key, 1).await?;
        op += 1;
        for p in &peeked {
            expect_eq(&step, "allowed (Peek said)", p.allowed, checked.allowed)?;
            expect_eq(&step, "limit (Peek said)", p.limit, checked.limit)?;
            if checked.allowed {
                // Peek reports what is left before the call it previews; the admit takes one.
                expect_eq(
                    &step,
                    "remaining (Peek's remaining - 1)",
                    p.remaining - 1,
                    checked.remaining,
                )?;
            }
        }
        let should_allow = spent < BURST5;
        expect_eq(&step, "allowed", should_allow, checked.allowed)?;
        if should_allow {
            expect_eq(&step, "remaining", BURST5 - 1 - spent, checked.remaining)?;
        }
    }
    Ok(())
}

pub(super) async fn forecast_counts_admits(ctx: Arc<SuiteContext>) -> SuiteResult {
    // (admits spent first, cost per admit)
    for (spent, cost) in [(0, 1), (2, 1), (0, 2), (BURST5, 1)] {
        let key = ctx.key("forecast", &format!("s{spent}c{cost}"));
        for i in 0..spent {
            check(
                &ctx,
                &format!("warm-up Check {i} key={key}"),
                "burst5",
                &key,
                1,
            )
            .await?;
        }
        let step = format!("Forecast burst5 key={key} cost={cost} after {spent} admits");
        let request = proto::ForecastRequest {
            policy: "burst5".into(),
            key: key.clone(),
            cost,
        };
        let forecast = ok(&step, ctx.clients.rate().forecast(request).await)?
            .forecast
            .ok_or_else(|| SuiteFailure(format!("{step}: the reply has no forecast")))?;
        let mut admits = 0;
        // Bounded: a burst of 5 can never admit more than 5 in a row.
        for i in 0..=(BURST5 + 1) {
            let d = check(
                &ctx,
                &format!("Check {i} after the forecast, key={key} cost={cost}"),
                "burst5",
                &key,
                cost,
            )
            .await?;
            if !d.allowed {
                break;
            }
            admits += 1;
        }
        expect_eq(
            &step,
            "spendable_now (vs admits that followed)",
            admits,
            forecast.spendable_now,
        )?;
    }
    Ok(())
}

/// Tries of CheckMany on cold keys: a server that decides keys at different instants shows it
/// only now and then (ThrottleKit: 3 runs of 4), so one try would pass it by luck.
pub(super) const CHECK_MANY_TRIES: usize = 20;

pub(super) async fn check_many_in_order(ctx: Arc<SuiteContext>) -> SuiteResult {
    let mut apart = Vec::new();
    for attempt in 0..CHECK_MANY_TRIES {
        if let Some(difference) = check_many_once(&ctx, attempt).await? {
            apart.push(difference);
        }
    }
    if apart.is_empty() {
        return Ok(());
    }
    Err(SuiteFailure(format!(
        "CheckMany pair: the first admits of cold keys reported different resetAt (not one instant) \
         in {} of {CHECK_MANY_TRIES} tries; first: {}",
        apart.len(),
        apart[0]
    )))
}

/// One CheckMany on three cold keys: its order is checked here; a resetAt that differs between
/// the cold keys' first admits (`now + T` for each, equal iff one instant) is returned.
async fn check_many_once(
    ctx: &SuiteContext,
    attempt: usize,
) -> Result<Option<String>, SuiteFailure> {
    let names = ["a", "b", "a", "c", "a", "b"];
    let keys: Vec<String> = names
        .iter()
        .map(|n| ctx.key("many", &format!("{n}{attempt}")))
        .collect();
    // `pair` admits two per key: the third `a` is the only denial.
    let expected = [
        (true, 1),
        (true, 1),
        (true, 0),
        (true, 1),
        (false, 0),
        (true, 0),
    ];
    let step = format!("try {attempt}: CheckMany pair keys=[a, b, a, c, a, b]");
    let request = proto::CheckManyRequest {
        policy: "pair".into(),
        keys,
        cost: 1,
    };
    let reply = ok(&step, ctx.clients.rate().check_many(request).await)?;
    expect_eq(
        &step,
        "decisions.len",
        expected.len(),
        reply.decisions.len(),
    )?;
    let decisions: Vec<Decision> = reply.decisions.iter().map(from_proto).collect();
    for (i, ((allowed, remaining), d)) in expected.iter().zip(&decisions).enumerate() {
        let at = format!("{step}: decision {i} (key {})", names[i]);
        expect_eq(&at, "allowed", *allowed, d.allowed)?;
        expect_eq(&at, "remaining", *remaining, d.remaining)?;
    }
    for (i, name) in [(1, "b"), (3, "c")] {
        if decisions[i].reset_at != decisions[0].reset_at {
            return Ok(Some(format!(
                "{step}: decision {i} (first admit of cold key {name}) resetAt {} vs decision 0 (cold key a) resetAt {}",
                decisions[i].reset_at, decisions[0].reset_at
            )));
        }
    }
    Ok(None)
}

pub(super) async fn debit_spends_then_refuses(ctx: Arc<SuiteContext>) -> SuiteResult {
    // The hour can turn mid-suite (the budget then restarts): one more try on a fresh key.
    for attempt in 0..2 {
        if !debit_once(&ctx, attempt).await? {
            return Ok(());
        }
    }
    Err(SuiteFailure(
        "Debit tokens: the budget window rolled over mid-suite twice in a row".into(),
    ))
}

/// One run of the debits on a fresh key; `true` when the window rolled over mid-way.
async fn debit_once(ctx: &SuiteContext, attempt: usize) -> Result<bool, SuiteFailure> {
    let key = ctx.key("debit", &format!("k{attempt}"));
    // `tokens`: a budget of 5 per hour; the crossing debit is counted in full.
    let ops = [(3, true, 2), (3, true, 0), (1, false, 0), (0, false, 0)];
    let mut reset_at = None;
    for (i, (tokens, allowed, remaining)) in ops.into_iter().enumerate() {
        let step = format!("op {i} (Debit tokens key={key} tokens={tokens})");
        let request = proto::DebitRequest {
            policy: "tokens".into(),
            key: key.clone(),
            tokens,
        };
        let d = decision_of(
            &step,
            ok(&step, ctx.clients.rate().debit(request).await)?.decision,
        )?;
        if reset_at.is_some_and(|r| r != d.reset_at) {
            return Ok(true);
        }
        reset_at = Some(d.reset_at);
        expect_eq(&step, "allowed", allowed, d.allowed)?;
        expect_eq(&step, "limit", 5, d.limit)?;
        expect_eq(&step, "remaining", remaining, d.remaining)?;
        if !allowed && d.retry_after_ms <= 0 {
            return Err(differ(&step, "retryAfterMs", "> 0", d.retry_after_ms));
        }
    }
    Ok(false)
}
