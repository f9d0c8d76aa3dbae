//! Differential check of the contract's Lua scripts against the reference model, in a real
//! `redis-server`: random options (fractional rates, widths), random costs, epochs >= 1.7e12.
//! After each call the test checks the PTTL the script set against the model's expiry, then
//! PERSISTs the key so Redis's wall-clock expiry cannot interfere with logical time.

use crate::util;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tk_conform::infra::{RedisInstance, RedisOptions, connect};
use tk_conform::model::{
    FixedWindowOptions, GcraOptions, RateState, SlidingWindowLogOptions, SlidingWindowOptions,
    Strategy, StrategyKind, TokenBucketOptions,
};
use tk_conform::redis_scripts::ScriptSet;

fn random_strategy(rng: &mut StdRng, which: usize) -> Strategy {
    let pick = |rng: &mut StdRng, choices: &[f64]| choices[rng.random_range(0..choices.len())];
    match which {
        0 => Strategy::Gcra(GcraOptions {
            limit: pick(rng, &[1.0, 3.0, 7.0, 10.0, 2.5]),
            period_ms: pick(rng, &[1000.0, 60_000.0, 333.0, 1500.5]),
            burst: pick(rng, &[1.0, 2.0, 5.0, 3.5]),
        }),
        1 => Strategy::TokenBucket(TokenBucketOptions {
            capacity: pick(rng, &[1.0, 5.0, 10.0, 2.5]),
            refill_per_sec: pick(rng, &[0.5, 1.0, 3.0, 0.1, 7.3]),
        }),
        2 => Strategy::FixedWindow(FixedWindowOptions {
            limit: pick(rng, &[1.0, 3.0, 10.0, 4.5]),
            window_ms: pick(rng, &[1000.0, 60_000.0, 1500.0, 333.3]),
        }),
        3 => Strategy::SlidingWindow(SlidingWindowOptions {
            limit: pick(rng, &[1.0, 3.0, 10.0, 6.5]),
            window_ms: pick(rng, &[1000.0, 60_000.0, 1000.0 / 3.0 * 3.0, 700.0]),
            buckets: pick(rng, &[1.0, 3.0, 4.0, 10.0]),
        }),
        _ => Strategy::SlidingWindowLog(SlidingWindowLogOptions {
            limit: pick(rng, &[1.0, 3.0, 10.0, 4.5]),
            window_ms: pick(rng, &[1000.0, 60_000.0, 1500.5, 333.0]),
        }),
    }
}

/// The `read` script's reply without its leading PTTL, as text.
fn raw_state(reply: &redis::Value) -> Vec<String> {
    let redis::Value::Array(items) = reply else {
        panic!("read replied {reply:?}")
    };
    assert!(matches!(items[0], redis::Value::Int(_)), "{reply:?}");
    items[1..]
        .iter()
        .map(|v| match v {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("read replied {other:?}"),
        })
        .collect()
}

/// What the read script must show for the model's state: the same doubles (17 digits parse back
/// exactly, so compare the parsed numbers' text in Rust's shortest form).
fn model_state(state: &Option<RateState>) -> Vec<String> {
    let n = |x: f64| format!("{x:?}");
    match state {
        None => vec![],
        Some(RateState::Gcra { tat }) => vec![n(*tat)],
        Some(RateState::TokenBucket { tokens, last }) => vec![n(*tokens), n(*last)],
        Some(RateState::FixedWindow { start, count }) => vec![n(*start), n(*count)],
        Some(RateState::SlidingWindow { slots }) => slots
            .iter()
            .flat_map(|(slot, (index, count))| [slot.to_string(), format!("{index}:{}", n(*count))])
            .collect(),
        Some(RateState::SlidingWindowLog { entries }) => {
            entries.iter().map(|e| n(e.score)).collect()
        }
    }
}

/// Normalises the read script's text the same way (numbers reparsed; log members dropped, as
/// their text is only a unique name; slots sorted by slot number).
fn normalise(kind: StrategyKind, raw: Vec<String>) -> Vec<String> {
    let n = |t: &str| format!("{:?}", t.parse::<f64>().unwrap());
    match kind {
        StrategyKind::SlidingWindowLog => raw.chunks(2).map(|p| n(&p[1])).collect(),
        StrategyKind::SlidingWindow => {
            let mut pairs: Vec<(i64, String)> = raw
                .chunks(2)
                .map(|p| {
                    let (index, count) = p[1].split_once(':').unwrap();
                    (p[0].parse().unwrap(), format!("{index}:{}", n(count)))
                })
                .collect();
            pairs.sort();
            pairs
                .into_iter()
                .flat_map(|(slot, v)| [slot.to_string(), v])
                .collect()
        }
        _ => raw.iter().map(|t| n(t)).collect(),
    }
}

/// A key written with less than this to live may be gone (or at PTTL 0) by the time the test
/// asks: the wall time between the call and PTTL, on a loaded machine running the whole
/// integration binary in parallel, can reach tens of ms.
const WALL_SLACK_MS: f64 = 100.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_scripts_match_the_model_bit_for_bit() {
    if !util::have_redis() {
        return;
    }
    let redis = RedisInstance::provision(&RedisOptions::default())
        .await
        .unwrap();
    let mut con = connect(redis.url()).await.unwrap();
    let contract = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contract");
    let scripts = ScriptSet::from_contract_dir(&contract).unwrap();
    let seed = 0x7c_0f_f0_42;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut calls = 0;
    for timeline in 0..150 {
        let strategy = random_strategy(&mut rng, timeline % 5);
        let key = format!("diff:{timeline}");
        let mut state: Option<RateState> = None;
        let mut now = 1.7e12 + rng.random_range(0..10_000) as f64;
        for op in 0..25 {
            now += match rng.random_range(0..4) {
                0 => 0.0,
                1 => rng.random_range(1..50) as f64,
                2 => rng.random_range(50..3000) as f64,
                _ => rng.random_range(0..1000) as f64 + 0.5,
            };
            let cost = match strategy {
                Strategy::SlidingWindowLog(_) => rng.random_range(0..4) as f64,
                _ => [0.0, 1.0, 1.0, 2.0, 3.0, 0.5, 12.0][rng.random_range(0..7)],
            };
            let expected = strategy.check(&mut state, now, cost).unwrap();
            let actual = scripts
                .check(&mut con, &key, &strategy, now, cost)
                .await
                .unwrap();
            let context = format!(
                "seed {seed:#x} timeline {timeline} op {op}: {strategy:?} now={now} cost={cost}"
            );
            assert_eq!(actual, expected.decision, "{context}");
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut con)
                .await
                .unwrap();
            if let Some(expiry) = expected.expiry_ms
                && state.is_some()
            {
                assert!(
                    pttl > 0 && pttl as f64 <= expiry
                        || (pttl <= 0 && pttl != -1 && expiry <= WALL_SLACK_MS),
                    "{context}: PTTL {pttl}, model expiry {expiry}"
                );
            }
            let raw = scripts.read(&mut con, &key, strategy.kind()).await.unwrap();
            let raw = raw_state(&raw);
            if raw.is_empty()
                && expected.expiry_ms.is_some_and(|e| e <= WALL_SLACK_MS)
                && state.is_some()
            {
                // A key written with a few ms to live can expire in wall time before the read:
                // Redis is then right to have nothing, and the model follows it.
                state = None;
                calls += 1;
                continue;
            }
            assert_eq!(
                normalise(strategy.kind(), raw),
                model_state(&state),
                "{context}: read script"
            );
            let _: i64 = redis::cmd("PERSIST")
                .arg(&key)
                .query_async(&mut con)
                .await
                .unwrap();
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut con)
                .await
                .unwrap();
            if exists == 0 && state.is_some() {
                // The key ran out between the read and PERSIST: only a short-lived one may.
                assert!(
                    expected.expiry_ms.is_some_and(|e| e <= WALL_SLACK_MS),
                    "{context}: the key is gone, model expiry {:?}",
                    expected.expiry_ms
                );
                state = None;
            }
            calls += 1;
        }
    }
    assert_eq!(calls, 150 * 25);
}

/// The pipelined check (EVALSHA + PTTL in one round trip) on an empty script cache: a pipeline
/// cannot reload on NOSCRIPT, so it falls back to EVAL and a PTTL of its own; after a SCRIPT
/// FLUSH it does so again. The decision and the PTTL are those of the plain call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipelined_check_falls_back_on_noscript() {
    if !util::have_redis() {
        return;
    }
    let redis = RedisInstance::provision(&RedisOptions::default())
        .await
        .unwrap();
    let mut con = connect(redis.url()).await.unwrap();
    let contract = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contract");
    let scripts = ScriptSet::from_contract_dir(&contract).unwrap();
    let strategy = Strategy::FixedWindow(FixedWindowOptions {
        limit: 3.0,
        window_ms: 60_000.0,
    });
    let bound = scripts.bind(&strategy).unwrap();
    let now = 1.7e12;
    for round in 0..3 {
        if round == 2 {
            let _: String = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut con)
                .await
                .unwrap();
        }
        let (decision, pttl) = bound
            .call_with_pttl(&mut con, "pipelined", now, 1.0)
            .await
            .unwrap();
        assert!(decision.allowed, "round {round}: {decision:?}");
        assert_eq!(decision.remaining, 2 - round, "round {round}");
        // PEXPIRE to the window's end, 60 s after `now` (Redis counts it down in wall time).
        assert!((1..=60_000).contains(&pttl), "round {round}: PTTL {pttl}");
    }
}
