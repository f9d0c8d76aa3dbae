//! `tk-conform fuzz` against a protocol-2 adapter: the property oracle's search, one timeline
//! at a time in index order (so the first violation found is the lowest index), its shrink, and
//! the files it writes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};

use super::cli::FuzzArgs;
use super::property::{self, Case, Infra, Violation};
use crate::backend::exec::v2::LimiterKind;
use crate::property::PropertyTarget;
use crate::report::write_atomic;

pub fn run(
    args: &FuzzArgs,
    seed: u64,
    target: &PropertyTarget,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<ExitCode> {
    if !args.strategy.is_empty() {
        bail!(
            "--strategy names the contract's primitives; a protocol-2 adapter is fuzzed on every \
             explicit-clock kind it declares"
        );
    }
    let hello = target
        .backend
        .hello_v2()
        .context("the adapter speaks protocol 1 (a tk-conform bug: no property target then)")?;
    let kinds: Vec<LimiterKind> = hello
        .limiters
        .iter()
        .filter(|k| property::fuzzable(k))
        .cloned()
        .collect();
    if kinds.is_empty() {
        bail!(
            "the adapter declares no limiter kind with an explicit clock (other than concurrency), \
             so nothing can be fuzzed: real-time kinds are judged by `tk-conform run --backend exec`"
        );
    }
    let names: Vec<String> = kinds.iter().map(LimiterKind::describe).collect();
    println!(
        "fuzz: seed {seed}, backend exec, oracle family invariants, kinds: {}",
        names.join("; ")
    );
    let limit = args.timelines.unwrap_or(u64::MAX);
    let started = Instant::now();
    let (max_ops, max_keys) = (args.max_ops as usize, args.max_keys as usize);
    let judge = |case: &Case| -> anyhow::Result<Result<usize, Violation>> {
        let kind = kind_of(&kinds, case);
        runtime.block_on(async {
            match tokio::time::timeout(target.timeout, property::judge(target, kind, case)).await {
                Ok(r) => r.map_err(|Infra(m)| anyhow::anyhow!("the adapter: {m}")),
                Err(_) => bail!(
                    "a timeline of {} op(s) did not finish within {:?} (a hung adapter)",
                    case.ops.len(),
                    target.timeout
                ),
            }
        })
    };
    let (mut timelines, mut ops) = (0u64, 0u64);
    let mut found = None;
    while timelines < limit && started.elapsed() < args.time {
        let case = property::generate(&kinds, seed, timelines, max_ops, max_keys);
        timelines += 1;
        match judge(&case)? {
            Ok(n) => ops += n as u64,
            Err(v) => {
                ops += v.op as u64 + 1;
                found = Some((timelines - 1, case, v));
                break;
            }
        }
    }
    eprintln!(
        "fuzz: {timelines} timelines, {ops} ops in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let stem = args.out.join(format!("fuzz-{seed}"));
    let with_ext = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
    let mut record = serde_json::json!({
        "seed": seed,
        "backend": "exec",
        "oracle": "family invariants",
        "kinds": names,
        "timelines": timelines,
        "ops": ops,
        "found": null,
    });
    let Some((index, original, violation)) = found else {
        println!("fuzz: no violation in {timelines} timelines (seed {seed})");
        write_json(&with_ext("json"), &record)?;
        return Ok(ExitCode::SUCCESS);
    };
    let kind = kind_of(&kinds, &original);
    let (case, violation, tried) = runtime.block_on(property::shrink(
        target,
        kind,
        original.clone(),
        violation,
        args.shrink_attempts as usize,
    ));
    println!(
        "fuzz: {} in timeline {index} (seed {seed}), kind {} with {}; shrunk from {} op(s) to {} \
         ({tried} candidates tried)",
        violation.property,
        case.kind,
        crate::property::family::Point {
            params: case.params.clone()
        }
        .label(),
        original.ops.len(),
        case.ops.len()
    );
    println!("fuzz: {violation}");
    for (i, op) in case.ops.iter().enumerate() {
        println!(
            "  op {i}: key {}, cost {}, now t0+{} ms",
            op.key, op.cost, op.at
        );
    }
    let timeline_path = with_ext("timeline.json");
    let minimal = serde_json::json!({
        "generatedBy": format!("tk-conform {} fuzz --backend exec --seed {seed} (timeline {index}, shrunk)", env!("CARGO_PKG_VERSION")),
        "violated": violation.property,
        "op": violation.op,
        "message": violation.message,
        "timeline": case,
    });
    write_json(&timeline_path, &minimal)?;
    record["found"] = serde_json::json!({
        "timeline": index,
        "property": violation.property,
        "op": violation.op,
        "ops": case.ops.len(),
        "shrinkAttempts": tried,
        "timelineFile": timeline_path.display().to_string(),
    });
    write_json(&with_ext("json"), &record)?;
    println!(
        "fuzz: wrote {} (the minimal timeline)",
        timeline_path.display()
    );
    Ok(ExitCode::from(1))
}

fn kind_of<'a>(kinds: &'a [LimiterKind], case: &Case) -> &'a LimiterKind {
    kinds
        .iter()
        .find(|k| k.name == case.kind)
        .expect("cases name a kind they were made for")
}

fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("json always serializes");
    text.push('\n');
    write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}
