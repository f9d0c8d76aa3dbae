//! Shared helpers for the integration tests: contract copies to break on purpose, the
//! `tk-conform` binary, the contract fixtures in `fixtures`, the external tools (Redis, the
//! adapters' interpreters) in `tools`, `tk-conform run` against a user's Redis in `user_redis`,
//! and the differential checks in `differential`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use sha2::{Digest, Sha256};
use tk_conform::contract::vectors::VectorsFile;

pub mod differential;
pub mod fixtures;
pub mod tools;
pub mod user_redis;

pub use fixtures::*;
pub use tools::*;
pub use user_redis::*;

/// A real epoch in ms, for timelines written in tests.
pub const EPOCH: f64 = 1_700_000_000_000.0;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tk-conform"))
}

/// Whether a Redis binary is on PATH. Without one the caller skips, unless
/// `TK_CONFORM_REQUIRE_ALL=1` (set by .ci/run): then nothing may skip and this panics.
pub fn have_redis() -> bool {
    if tk_conform::infra::find_redis_binary().is_some() {
        return true;
    }
    skip_or_fail("no redis-server or valkey-server on PATH (.ci/run installs one)");
    false
}

pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A copy of the project's contract folder in a temp dir, with its golden vectors, unsealed (no manifest.sha256) so it can be
/// edited like an engine author's work in progress.
pub struct ContractCopy {
    pub dir: tempfile::TempDir,
}

impl ContractCopy {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = repo().join("contract");
        copy_tree(&src, dir.path());
        let _ = std::fs::remove_file(dir.path().join("manifest.sha256"));
        ContractCopy { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Edits one Lua script and updates its sha256 in scripts/manifest.json, as an engine author
    /// changing their scripts would.
    pub fn edit_script(&self, file: &str, edit: impl FnOnce(&str) -> String) {
        let path = self.path().join("scripts").join(file);
        let before = std::fs::read_to_string(&path).unwrap();
        let after = edit(&before);
        assert_ne!(before, after, "the edit of {file} changed nothing");
        std::fs::write(&path, &after).unwrap();
        let manifest_path = self.path().join("scripts/manifest.json");
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
        for entry in manifest["scripts"].as_array_mut().unwrap() {
            if entry["file"] == file {
                entry["sha256"] = json!(hex::encode(Sha256::digest(after.as_bytes())));
            }
        }
        std::fs::write(
            &manifest_path,
            serde_json::to_vec_pretty(&manifest).unwrap(),
        )
        .unwrap();
    }

    pub fn vectors(&self) -> VectorsFile {
        serde_json::from_slice(&std::fs::read(self.path().join("golden-vectors.json")).unwrap())
            .unwrap()
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The parsed `summary.json` of the run folder `logs/latest` points at.
pub fn latest_summary(logs: &Path) -> serde_json::Value {
    let path = logs.join("latest").join("summary.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}
