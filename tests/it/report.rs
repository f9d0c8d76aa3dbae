//! `report.html` in a real browser: headless Chromium loads the page a run leaves, the DOM must
//! hold the expected plots, the page must log no error, and a screenshot goes into the run
//! folder (`report.png`) for people to look at.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{have_redis, repo, skip_or_fail};

const EXE: &str = env!("CARGO_BIN_EXE_tk-conform");

/// Battles are timing-bound and the machine is small: battles, and the browser (which would
/// load the cores under a battle), run one at a time with the battle area's.
use crate::battle::ONE_AT_A_TIME as ONE_BATTLE;

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_BATTLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Chromium, or `None` (skip) — except under `TK_CONFORM_REQUIRE_ALL=1`, where a missing browser
/// fails the test.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("TK_CONFORM_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    let reason = format!(
        "no browser at {} (.ci/run installs chromium)",
        path.display()
    );
    skip_or_fail(&reason);
    None
}

/// What the browser saw.
struct Loaded {
    dom: String,
    /// Script errors and `console.error` calls, from the page's own trap and Chromium's log.
    errors: Vec<String>,
}

fn browser(chromium: &Path, profile: &Path, extra: &[&str], page: &Path) -> (String, String) {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Loads `page` twice (DOM dump, then a full-page screenshot into `png`) with fresh profiles.
fn load(chromium: &Path, page: &Path, png: Option<&Path>) -> Loaded {
    let profile = tempfile::tempdir().unwrap();
    let (dom, log) = browser(
        chromium,
        &profile.path().join("dom"),
        &["--window-size=940,1000", "--dump-dom"],
        page,
    );
    let list = dom
        .split(r#"<ol id="console-errors""#)
        .nth(1)
        .and_then(|rest| rest.split("</ol>").next())
        .expect("the page keeps its console-errors list");
    let mut errors: Vec<String> = list
        .split("<li>")
        .skip(1)
        .map(|li| li.split("</li>").next().unwrap_or_default().to_owned())
        .collect();
    // The page logs nothing on purpose: any console line from it is an error or a stray script.
    errors.extend(
        log.lines()
            .filter(|l| l.contains(":CONSOLE(") || l.contains("Uncaught"))
            .map(String::from),
    );
    assert!(
        dom.contains(r#"data-loaded="1""#),
        "the page's load witness never ran: {dom:.2000}"
    );
    if let Some(png) = png {
        // The whole page: the load witness records its height.
        let height: usize = dom
            .split(r#"data-height=""#)
            .nth(1)
            .and_then(|h| h.split('"').next()?.parse().ok())
            .expect("the load witness records the page height");
        let height = height.clamp(600, 16_000) + 20;
        let size = format!("--window-size=940,{height}");
        let shot = format!("--screenshot={}", png.display());
        browser(chromium, &profile.path().join("png"), &[&size, &shot], page);
        let bytes = std::fs::read(png).expect("a screenshot");
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "not a PNG: {}",
            png.display()
        );
    }
    Loaded { dom, errors }
}

/// The page's own `console-errors` list must be empty (it stays in the DOM, hidden).
fn no_errors(loaded: &Loaded) {
    assert!(
        loaded.errors.is_empty(),
        "the page logged errors: {:?}",
        loaded.errors
    );
}

fn plots(dom: &str, plot: &str) -> usize {
    dom.matches(&format!(r#"data-plot="{plot}""#)).count()
}

/// A logs folder that outlives the test (`target/tmp/report/<name>`), so the run folder with its
/// screenshot can be looked at afterwards; emptied at the start.
fn kept_logs(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("report")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn latest(logs: &Path) -> PathBuf {
    logs.join(std::fs::read_link(logs.join("latest")).unwrap())
}

/// A vectors file with one expectation off by one: the model must fail that trial.
fn broken_vectors(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("contract/golden-vectors.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let expect = &mut v["suites"][0]["ops"][0]["expect"];
    let remaining = expect["remaining"]
        .as_i64()
        .expect("first op expects a decision");
    expect["remaining"] = (remaining + 1).into();
    let path = dir.join("broken-vectors.json");
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    path
}

#[test]
fn a_conformance_report_shows_every_trial_and_the_field_diff_in_a_browser() {
    let Some(chromium) = chromium() else { return };
    let _one = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let vectors = broken_vectors(tmp.path());
    let logs = kept_logs("conformance");
    let out = Command::new(EXE)
        .current_dir(repo())
        .args(["run", "--backend", "model", "--vectors"])
        .arg(&vectors)
        .arg("--logs")
        .arg(&logs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let run = latest(&logs);
    let page = run.join("report.html");
    let loaded = load(&chromium, &page, Some(&run.join("report.png")));
    no_errors(&loaded);
    let dom = &loaded.dom;
    assert_eq!(plots(dom, "verdicts"), 1, "{dom:.3000}");
    assert!(dom.contains(r#"id="verdict">fail<"#), "{dom:.3000}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    let trials = summary["trials"].as_array().unwrap().len();
    assert!(trials > 40, "{trials}");
    assert_eq!(dom.matches(r#"<tr class="t-"#).count(), trials);
    assert_eq!(dom.matches(r#"class="t-fail""#).count(), 1);
    // The one wrong field, with what the file expected and what the model answered.
    assert!(
        dom.contains(r#"<td><code>remaining</code></td><td class="want">"#),
        "{dom:.6000}"
    );
    eprintln!(
        "report.html {} bytes; screenshot {}",
        std::fs::metadata(&page).unwrap().len(),
        run.join("report.png").display()
    );
}

#[test]
fn a_battle_report_holds_timeline_windows_latency_slots_and_shares_in_a_browser() {
    let Some(chromium) = chromium() else { return };
    let _one = one_at_a_time();
    if !have_redis() {
        return;
    }
    let logs = kept_logs("battle");
    // A cap scenario (windows), a concurrency one (slots), one with a pause fault and two
    // groups (fault bands, shares).
    let out = Command::new(EXE)
        .current_dir(repo())
        .args([
            "battle",
            "cap-direct-fixed-window",
            "distributed-concurrency",
            "pause",
            "--seed",
            "13",
            "--logs",
        ])
        .arg(&logs)
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let run = latest(&logs);
    let page = run.join("report.html");
    let size = std::fs::metadata(&page).unwrap().len();
    let histories: u64 = walk(&run.join("scenarios"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    eprintln!("report.html {size} bytes for {histories} bytes of histories");
    assert!(size < 400_000, "report.html is {size} bytes");
    let loaded = load(&chromium, &page, Some(&run.join("report.png")));
    no_errors(&loaded);
    let dom = &loaded.dom;
    assert_eq!(dom.matches("data-scenario=").count(), 3);
    assert_eq!(plots(dom, "timeline"), 3);
    assert_eq!(plots(dom, "latency"), 3);
    assert!(plots(dom, "windows") >= 1, "no admits-per-window plot");
    assert_eq!(
        plots(dom, "slots"),
        2,
        "distributed-concurrency and pause hold slots"
    );
    assert_eq!(plots(dom, "shares"), 1, "pause has two groups");
    // The pause is shaded on its scenario's plots, and named.
    let pause = dom.split(r#"data-scenario="pause""#).nth(1).unwrap();
    assert!(pause.contains(r#"<rect class="fault""#), "{pause:.3000}");
    assert!(pause.contains("SigstopWorkers"), "{pause:.3000}");
    assert!(dom.contains(r#"class="k-ok""#) && dom.contains(r#"class="k-denied""#));
}

#[test]
fn a_broken_cap_shows_red_windows_in_the_report() {
    let Some(chromium) = chromium() else { return };
    let _one = one_at_a_time();
    if !have_redis() {
        return;
    }
    let logs = kept_logs("broken-cap");
    let out = Command::new(EXE)
        .current_dir(repo())
        .args(["battle", "cap-direct-gcra", "--worker-fault", "non-atomic"])
        .arg("--logs")
        .arg(&logs)
        .env("CI", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let run = latest(&logs);
    let loaded = load(
        &chromium,
        &run.join("report.html"),
        Some(&run.join("report.png")),
    );
    no_errors(&loaded);
    assert!(
        loaded.dom.contains(r#"<rect class="over""#),
        "{:.4000}",
        loaded.dom
    );
    assert!(loaded.dom.contains(r#"id="verdict">fail<"#));
}

#[test]
fn the_browser_check_catches_a_script_error_and_a_missing_plot() {
    let Some(chromium) = chromium() else { return };
    let _one = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let out = Command::new(EXE)
        .current_dir(repo())
        .args(["run", "--backend", "model", "--logs"])
        .arg(&logs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let page = latest(&logs).join("report.html");
    let good = std::fs::read_to_string(&page).unwrap();
    // A page whose script throws, and one that calls console.error: both must be caught.
    for (name, inject, expect) in [
        (
            "throws.html",
            "<script>noSuchFunction()</script>",
            "noSuchFunction",
        ),
        (
            "logs.html",
            "<script>console.error('bad plot')</script>",
            "bad plot",
        ),
    ] {
        let broken = tmp.path().join(name);
        std::fs::write(
            &broken,
            good.replace("</footer>", &format!("</footer>{inject}")),
        )
        .unwrap();
        let loaded = load(&chromium, &broken, None);
        assert!(
            loaded.errors.iter().any(|e| e.contains(expect)),
            "{name}: {:?}",
            loaded.errors
        );
    }
    let loaded = load(&chromium, &page, None);
    no_errors(&loaded);
    assert_eq!(plots(&loaded.dom, "verdicts"), 1);
    let stripped = tmp.path().join("no-plot.html");
    std::fs::write(&stripped, good.replace(r#"data-plot="verdicts""#, "")).unwrap();
    assert_eq!(plots(&load(&chromium, &stripped, None).dom, "verdicts"), 0);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn model_run(logs: &Path, vectors: Option<&Path>) -> PathBuf {
    let mut cmd = Command::new(EXE);
    cmd.current_dir(repo())
        .args(["run", "--backend", "model", "--logs"])
        .arg(logs);
    if let Some(v) = vectors {
        cmd.arg("--vectors").arg(v);
    }
    let out = cmd.output().unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    latest(logs)
}

fn report(args: &[&Path], out: &Path) -> std::process::Output {
    Command::new(EXE)
        .current_dir(repo())
        .arg("report")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn report_combines_runs_into_a_matrix_badges_and_a_checklist() {
    let _one = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let good = model_run(&tmp.path().join("good"), None);
    let vectors = broken_vectors(tmp.path());
    let bad = model_run(&tmp.path().join("bad"), Some(&vectors));
    let mut runs = vec![good.as_path()];
    let redis_run;
    if have_redis() {
        let logs = tmp.path().join("redis");
        let out = Command::new(EXE)
            .current_dir(repo())
            .args(["run", "--backend", "redis", "--logs"])
            .arg(&logs)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        redis_run = latest(&logs);
        runs.push(&redis_run);
    }
    let out_dir = tmp.path().join("report");
    let out = report(&runs, &out_dir);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let matrix: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("matrix.json")).unwrap()).unwrap();
    let engines = matrix["engines"].as_array().unwrap();
    assert_eq!(engines.len(), runs.len(), "{matrix:#}");
    let model = engines
        .iter()
        .find(|e| e["engine"].as_str().unwrap().contains("model"))
        .unwrap();
    let trials = model["rows"].as_object().unwrap().len();
    assert!(trials > 40);
    assert_eq!(model["passed"], trials);
    assert_eq!(model["stores"], serde_json::json!(["in-process"]));
    let badge = std::fs::read_to_string(out_dir.join(model["badge"].as_str().unwrap())).unwrap();
    assert!(
        badge.contains(&format!("contract v1: {trials}/{trials}")) && badge.contains("#15803d"),
        "{badge}"
    );
    if let Some(redis) = engines
        .iter()
        .find(|e| e["engine"] == "contract Lua scripts")
    {
        let store = redis["stores"][0].as_str().unwrap();
        assert!(
            store.starts_with("redis ") || store.starts_with("valkey "),
            "{store}"
        );
    }
    let checklist = std::fs::read_to_string(out_dir.join("checklist.md")).unwrap();
    assert!(
        checklist.contains(&format!("### Passed ({trials})")),
        "{checklist}"
    );
    assert!(checklist.contains("### Next"), "{checklist}");
    assert!(
        checklist.contains("tk-conform matrix --redis-server"),
        "{checklist}"
    );

    // The broken run: a red badge, and the checklist names the trial and the op.
    let bad_dir = tmp.path().join("bad-report");
    let out = report(&[&bad], &bad_dir);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let matrix: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bad_dir.join("matrix.json")).unwrap()).unwrap();
    let e = &matrix["engines"][0];
    assert_eq!(
        e["passed"].as_u64().unwrap() + 1,
        e["judged"].as_u64().unwrap()
    );
    let badge = std::fs::read_to_string(bad_dir.join(e["badge"].as_str().unwrap())).unwrap();
    assert!(badge.contains("#b91c1c"), "{badge}");
    let checklist = std::fs::read_to_string(bad_dir.join("checklist.md")).unwrap();
    assert!(checklist.contains("### Failed (1)"), "{checklist}");
    assert!(checklist.contains("diverged at op 0"), "{checklist}");
    assert!(checklist.contains("--exact"), "{checklist}");

    if let Some(chromium) = chromium() {
        let loaded = load(&chromium, &out_dir.join("index.html"), None);
        no_errors(&loaded);
        assert_eq!(loaded.dom.matches("data-engine=").count(), runs.len());
        assert!(loaded.dom.contains(r#"data-outcome="pass""#));
    }
}

#[test]
fn report_refuses_what_is_not_a_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let expect_2 = |dir: &Path, needle: &str| {
        let out = report(&[dir], &out_dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        assert!(!out_dir.join("matrix.json").exists());
    };
    // A folder with no summary, and a path that does not exist.
    expect_2(tmp.path(), "is not a run folder (no summary.json in it)");
    expect_2(&tmp.path().join("missing"), "missing is not a run folder");
    // A truncated summary: file, line and column.
    let run = tmp.path().join("truncated");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("summary.json"), "{\n  \"tool\": \"tk-conform\",\n").unwrap();
    expect_2(&run, "truncated/summary.json:3:0: not a tk-conform summary");
    // Valid JSON of the wrong shape.
    std::fs::write(run.join("summary.json"), r#"{"trials": 3}"#).unwrap();
    expect_2(&run, "truncated/summary.json:1:");
    // Another tool's summary with our shape.
    let good = model_run(&tmp.path().join("logs"), None);
    let text = std::fs::read_to_string(good.join("summary.json")).unwrap();
    std::fs::write(
        run.join("summary.json"),
        text.replace("\"tool\": \"tk-conform\"", "\"tool\": \"other\""),
    )
    .unwrap();
    expect_2(&run, "written by other, not tk-conform");
    // No run folder at all is a usage error.
    let out = Command::new(EXE).arg("report").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn battle_draws_one_bar_per_scenario_on_a_terminal_and_plain_lines_in_ci() {
    if !have_redis() {
        return;
    }
    let _one = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let battle = format!(
        "{EXE} battle cap-direct-gcra cap-direct-fixed-window --seed 5 --logs {}",
        tmp.path().join("tty").display()
    );
    // `script` gives the battle a terminal; its output is what the terminal showed.
    let out = Command::new("script")
        .args(["-qfec", &battle, "/dev/null"])
        .current_dir(repo())
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .output()
        .expect("script(1) from util-linux");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    for bar in ["1/2 cap-direct-gcra", "2/2 cap-direct-fixed-window"] {
        let line = shown
            .split(['\r', '\n'])
            .rfind(|l| l.contains(bar) && l.contains('['))
            .unwrap_or_else(|| panic!("no bar for {bar}: {shown}"));
        assert!(line.contains("120/120") && line.contains("pass"), "{line}");
    }
    let plain = Command::new(EXE)
        .current_dir(repo())
        .args(["battle", "cap-direct-gcra", "--seed", "5", "--logs"])
        .arg(tmp.path().join("ci"))
        .env("CI", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(plain.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("tk-conform: battle 1/1 cap-direct-gcra: planned 120 calls"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\r'),
        "{stderr:?}"
    );
}
