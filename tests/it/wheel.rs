//! tk-conform in an engine author's CI: the wheel (maturin `bindings = "bin"`) builds from the
//! existing debug build, installs into a fresh venv, and runs from there, outside this
//! repository, on the contract bundled in the binary. And `action.yml` has the inputs and steps
//! the README promises.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{repo, skip_or_fail};

/// Bound on the wheel build (it reuses target/debug: seconds, unless a cold build is needed).
const BUILD_BOUND: Duration = Duration::from_secs(900);

/// maturin: `TK_CONFORM_MATURIN`, the venv `.ci/run` makes, or PATH. Missing: skip, except
/// under `TK_CONFORM_REQUIRE_ALL=1`, where it fails.
fn maturin() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TK_CONFORM_MATURIN").map(PathBuf::from),
        Some(repo().join("target/maturin-venv/bin/maturin")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(found);
    }
    if Command::new("maturin")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Some(PathBuf::from("maturin"));
    }
    let reason = "no maturin (.ci/run installs it into target/maturin-venv)";
    skip_or_fail(reason);
    None
}

/// Runs `command` to completion, killing it after `bound`.
fn bounded(mut command: Command, bound: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let started = Instant::now();
    let watchdog = std::thread::spawn(move || {
        while started.elapsed() < bound {
            std::thread::sleep(Duration::from_millis(200));
            // Gone already: nothing to kill (the pid is checked against /proc before a kill).
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().expect("wait");
    drop(watchdog);
    out
}

fn text(out: &Output) -> String {
    crate::util::text(out)
}

#[test]
fn the_wheel_installs_into_a_fresh_venv_and_runs_outside_the_repository() {
    let Some(maturin) = maturin() else { return };
    // A build and a zip of the binary: not while a timing-bound battle runs.
    let _one = crate::battle::ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let wheels = tmp.path().join("wheels");
    let mut build = Command::new(&maturin);
    build
        .args(["build", "--profile", "dev", "--out"])
        .arg(&wheels)
        .current_dir(repo());
    let started = Instant::now();
    let out = bounded(build, BUILD_BOUND);
    assert!(out.status.success(), "maturin build: {}", text(&out));
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("a wheel");
    let size = std::fs::metadata(&wheel).unwrap().len();
    eprintln!(
        "built {} ({size} bytes) in {:.1} s",
        wheel.display(),
        started.elapsed().as_secs_f64()
    );

    let venv = tmp.path().join("venv");
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(out.status.success(), "venv: {}", text(&out));
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "--no-index", "--quiet"])
        .arg(&wheel)
        .output()
        .unwrap();
    assert!(out.status.success(), "pip install: {}", text(&out));
    let exe = venv.join("bin/tk-conform");
    assert!(exe.is_file(), "the wheel installs bin/tk-conform");

    // Somewhere with no contract/, scenarios/ or Cargo.toml.
    let elsewhere = tmp.path().join("engine-repo");
    std::fs::create_dir(&elsewhere).unwrap();
    let run = |args: &[&str]| {
        Command::new(&exe)
            .args(args)
            .current_dir(&elsewhere)
            .env_remove("TK_CONFORM_REDIS_URL")
            .output()
            .unwrap()
    };
    let out = run(&["--version"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tk-conform {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run(&["run", "--backend", "model", "--logs", "logs"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("using the contract bundled with tk-conform"),
        "{all}"
    );
    assert!(all.contains("0 failed"), "{all}");
    let latest = elsewhere.join("logs/latest");
    assert!(latest.join("report.html").is_file(), "{all}");
    let out = run(&["contract", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The installed binary still gates: a local contract/ that drifted fails the run (exit 2)
    // naming the file, and the bundled copy is not used in its place.
    let contract = elsewhere.join("contract");
    tk_conform::contract::bundled::extract_to(&contract).unwrap();
    let lua = contract.join("scripts/gcra.check.lua");
    let mut bytes = std::fs::read(&lua).unwrap();
    bytes.extend_from_slice(b"\n-- drift\n");
    std::fs::write(&lua, bytes).unwrap();
    let out = run(&["run", "--backend", "model", "--logs", "logs"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("gcra.check.lua"), "{all}");
    assert!(!all.contains("using the contract bundled"), "{all}");
}

#[test]
fn the_action_has_the_promised_inputs_and_uploads_the_logs() {
    let text = std::fs::read_to_string(repo().join("action.yml")).unwrap();
    let action: serde_json::Value = serde_saphyr::from_str(&text).expect("action.yml is YAML");
    for input in ["adapter", "backend", "redis-version"] {
        assert!(
            action["inputs"][input]["description"].is_string(),
            "input {input} is missing a description"
        );
    }
    assert_eq!(action["runs"]["using"], "composite");
    let steps = action["runs"]["steps"].as_array().unwrap();
    let install = steps
        .iter()
        .find(|s| s["name"] == "Install tk-conform")
        .unwrap();
    assert!(
        install["run"]
            .as_str()
            .unwrap()
            .contains("pip\" install -q \"tk-conform==$TK_VERSION\"")
    );
    assert_eq!(
        action["inputs"]["tk-conform-version"]["default"],
        env!("CARGO_PKG_VERSION"),
        "the action installs this release"
    );
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("an upload step");
    assert_eq!(
        upload["if"], "always()",
        "logs are uploaded when the gate fails too"
    );
    assert_eq!(upload["with"]["path"], "logs/");
    // Every composite `run` step names its shell (GitHub requires it).
    for s in steps.iter().filter(|s| s.get("run").is_some()) {
        assert_eq!(s["shell"], "bash", "{s}");
    }
}
