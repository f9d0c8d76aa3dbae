//! Fixture contracts for the contract tests, built in temporary directories.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tk_conform::contract::checksums::{ChecksumManifest, sha256_hex};
use tk_conform::contract::scripts::{ScriptEntry, ScriptRole, ScriptsManifest};

use super::repo;

/// Runs the real binary; returns (exit code, stdout, stderr).
pub fn tk_conform(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tk-conform"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run tk-conform");
    (
        out.status.code().expect("exited normally"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fixture scripts: stand-ins with the manifest's shape, not the project's Lua scripts.
pub const SCRIPTS: [(&str, &str, &str); 2] = [
    (
        "gcra.check",
        "gcra.check.lua",
        "-- fixture stand-in for the gcra check script\nreturn {1, 5, 4, 0, 0}\n",
    ),
    (
        "gcra.read",
        "gcra.read.lua",
        "-- fixture stand-in for the gcra read script\nreturn redis.call('GET', KEYS[1])\n",
    ),
];

pub fn scripts_manifest(version: &str) -> String {
    let manifest = ScriptsManifest {
        contract_version: version.to_owned(),
        generated_from: "tk-conform test fixture".to_owned(),
        frozen: false,
        reply_tuple: ["allowed", "limit", "remaining", "resetAt", "retryAfterMs"]
            .map(String::from)
            .to_vec(),
        now_argv: "epoch ms; 0 = the server's TIME".to_owned(),
        scripts: SCRIPTS
            .iter()
            .map(|(name, file, text)| ScriptEntry {
                name: (*name).to_owned(),
                strategy: "gcra".to_owned(),
                role: if name.ends_with("check") {
                    ScriptRole::Check
                } else {
                    ScriptRole::Read
                },
                file: (*file).to_owned(),
                keys: vec!["key".to_owned()],
                argv: ["now", "periodMs", "limit", "burst", "cost"]
                    .map(String::from)
                    .to_vec(),
                sha256: sha256_hex(text.as_bytes()),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&manifest).unwrap() + "\n"
}

pub fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The committed proto and golden vectors, plus fixture scripts, under `dir` (not sealed).
pub fn write_contract_files(dir: &Path, scripts_dir: &Path) {
    let real = repo().join("contract");
    write(
        &dir.join("throttlekit.proto"),
        std::fs::read(real.join("throttlekit.proto")).unwrap(),
    );
    write(
        &dir.join("golden-vectors.json"),
        std::fs::read(real.join("golden-vectors.json")).unwrap(),
    );
    write(&scripts_dir.join("manifest.json"), scripts_manifest("1"));
    for (_, file, text) in SCRIPTS {
        write(&scripts_dir.join(file), text);
    }
}

/// A complete, sealed contract in this project's layout.
pub fn write_contract(dir: &Path) {
    write_contract_files(dir, &dir.join("scripts"));
    write(&dir.join("SOURCE"), "source: test fixture\n");
    tk_conform::contract::seal::seal(dir).expect("seal the fixture");
}

/// A checkout in the ThrottleKit layout: `contract/` with the proto, vectors and checksums, and
/// the scripts folder elsewhere below the root. `manifest.sha256` pins files relative to
/// `contract/` and, for one script, relative to the root.
pub fn write_throttlekit_checkout(root: &Path) {
    let contract = root.join("contract");
    let scripts = root.join("packages/redis-core/lua");
    write_contract_files(&contract, &scripts);
    write(&root.join("README.md"), "# ThrottleKit (fixture)\n");
    // A decoy that must not be taken for the scripts folder.
    write(
        &root.join("node_modules/other/manifest.json"),
        r#"{"contractVersion": "1", "scripts": []}"#,
    );
    let mut pins = ChecksumManifest::default();
    for name in ["throttlekit.proto", "golden-vectors.json"] {
        pins.entries
            .insert(name.to_owned(), digest_of(&contract.join(name)));
    }
    pins.entries.insert(
        "../packages/redis-core/lua/manifest.json".to_owned(),
        digest_of(&scripts.join("manifest.json")),
    );
    pins.entries.insert(
        "packages/redis-core/lua/gcra.check.lua".to_owned(),
        digest_of(&scripts.join("gcra.check.lua")),
    );
    write(&contract.join("manifest.sha256"), pins.render());
}

pub fn digest_of(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

/// Flips one bit of the byte in the middle of the file.
pub fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// Every file below `dir` with its bytes, to show a directory was left untouched.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    tk_conform::contract::tree::list(dir)
        .unwrap()
        .into_keys()
        .map(|rel| {
            let bytes = std::fs::read(dir.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// Names in `dir` other than `keep`: leftovers of staging or scratch directories.
pub fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}
