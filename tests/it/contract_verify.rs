//! `contract verify` and `contract seal`: the drift gate over a contract directory. Drift and a
//! refused seal exit 2, as the README's exit-code table says.

use std::path::Path;

use crate::util::{digest_of, flip_byte, tk_conform, write, write_contract};
use tk_conform::contract::layout::{Contract, LayoutError};
use tk_conform::contract::verify::{Problem, verify};
use tk_conform::contract::{CONTRACT_VERSION, seal};

fn verify_lines(dir: &Path) -> (i32, Vec<String>) {
    let (code, stdout, _) =
        tk_conform(&["contract", "verify", "--contract", dir.to_str().unwrap()]);
    (code, stdout.lines().map(str::to_owned).collect())
}

#[test]
fn the_committed_contract_verifies() {
    let (code, stdout, stderr) = tk_conform(&["contract", "verify"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("verified"), "{stdout}");
}

#[test]
fn a_fresh_fixture_verifies_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    write_contract(tmp.path());
    let report = verify(tmp.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.findings);
    assert_eq!(report.pinned, 6);
    let contract = Contract::load(tmp.path()).unwrap();
    assert_eq!(contract.vectors.contract_version, CONTRACT_VERSION);
    let scripts = contract.scripts.as_ref().unwrap();
    assert_eq!(scripts.scripts.len(), 2);
    assert!(
        contract
            .script_text(&scripts.scripts[0])
            .unwrap()
            .contains("fixture")
    );
}

#[test]
fn a_flipped_byte_in_any_contract_file_fails_naming_that_file() {
    for file in [
        "throttlekit.proto",
        "golden-vectors.json",
        "scripts/manifest.json",
        "scripts/gcra.check.lua",
        "scripts/gcra.read.lua",
        "SOURCE",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        write_contract(tmp.path());
        let pinned = digest_of(&tmp.path().join(file));
        flip_byte(&tmp.path().join(file));
        let actual = digest_of(&tmp.path().join(file));
        let (code, lines) = verify_lines(tmp.path());
        assert_eq!(code, 2, "{file}: {lines:?}");
        let expected_line =
            format!("drifted: {file}: manifest.sha256 pins sha256 {pinned}, actual {actual}");
        assert!(lines.contains(&expected_line), "{file}: {lines:#?}");
    }
}

#[test]
fn a_flipped_byte_in_the_checksum_manifest_names_the_file_it_pins() {
    let tmp = tempfile::tempdir().unwrap();
    write_contract(tmp.path());
    let manifest = tmp.path().join("manifest.sha256");
    let text = std::fs::read_to_string(&manifest).unwrap();
    // The first character of the line for golden-vectors.json.
    let line = text
        .lines()
        .find(|l| l.ends_with("golden-vectors.json"))
        .unwrap();
    let flipped_digit = if line.starts_with('0') { '1' } else { '0' };
    let flipped = format!("{flipped_digit}{}", &line[1..]);
    std::fs::write(&manifest, text.replace(line, &flipped)).unwrap();
    let (code, lines) = verify_lines(tmp.path());
    assert_eq!(code, 2);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("drifted: golden-vectors.json: manifest.sha256 pins sha256 ")),
        "{lines:#?}"
    );
}

#[test]
fn a_lua_file_that_disagrees_with_its_scripts_manifest_is_drift() {
    let tmp = tempfile::tempdir().unwrap();
    write_contract(tmp.path());
    let lua = tmp.path().join("scripts/gcra.read.lua");
    flip_byte(&lua);
    let report = verify(tmp.path()).unwrap();
    let problems: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.path == "scripts/gcra.read.lua")
        .map(|f| &f.problem)
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::Drifted { .. }))
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::ScriptDigest { script, .. } if script == "gcra.read")),
        "{problems:?}"
    );
    // Re-sealing cannot bless it: the scripts manifest still disagrees.
    let err = seal::seal(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("drifted: scripts/gcra.read.lua: scripts/manifest.json records sha256"),
        "{err}"
    );
}

#[test]
fn missing_unexpected_and_unpinned_files_are_each_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_contract(dir);
    let gone = digest_of(&dir.join("scripts/gcra.check.lua"));
    std::fs::remove_file(dir.join("scripts/gcra.check.lua")).unwrap();
    write(&dir.join("notes.txt"), "hello\n");
    write(&dir.join("scripts/extra.lua"), "-- stray\n");
    let (code, lines) = verify_lines(dir);
    assert_eq!(code, 2);
    assert!(
        lines.contains(&format!(
            "missing: scripts/gcra.check.lua: listed in manifest.sha256 (expected sha256 {gone})"
        )),
        "{lines:#?}"
    );
    let notes = digest_of(&dir.join("notes.txt"));
    assert!(
        lines.contains(&format!(
            "unexpected: notes.txt: not listed in manifest.sha256 (actual sha256 {notes})"
        )),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("unexpected: scripts/extra.lua:"))
    );
    assert_eq!(lines.len(), 3, "{lines:#?}");

    // A missing checksum manifest and SOURCE are named too.
    std::fs::remove_file(dir.join("manifest.sha256")).unwrap();
    std::fs::remove_file(dir.join("SOURCE")).unwrap();
    let (_, lines) = verify_lines(dir);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("missing: manifest.sha256:")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("missing: SOURCE:")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("unpinned: golden-vectors.json:")),
        "{lines:#?}"
    );
}

#[test]
fn a_link_inside_the_contract_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_contract(tmp.path());
    let proto = tmp.path().join("throttlekit.proto");
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = outside.path().join("throttlekit.proto");
    std::fs::rename(&proto, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &proto).unwrap();
    let (code, lines) = verify_lines(tmp.path());
    assert_eq!(code, 2);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("not a regular file: throttlekit.proto:")),
        "{lines:#?}"
    );
}

/// Rewrites `file` with `text` and re-seals nothing: the version check must fire on its own, so
/// the test re-pins the manifest by hand.
fn replace_and_repin(dir: &Path, file: &str, text: &str) {
    write(&dir.join(file), text);
    let manifest = dir.join("manifest.sha256");
    let mut pins = tk_conform::contract::checksums::ChecksumManifest::parse(
        &std::fs::read_to_string(&manifest).unwrap(),
        &manifest,
    )
    .unwrap();
    pins.entries
        .insert(file.to_owned(), digest_of(&dir.join(file)));
    std::fs::write(&manifest, pins.render()).unwrap();
}

#[test]
fn another_contract_version_fails_naming_the_file() {
    for file in ["golden-vectors.json", "scripts/manifest.json"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_contract(dir);
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let bumped = text.replacen(
            "\"contractVersion\": \"1\"",
            "\"contractVersion\": \"2\"",
            1,
        );
        assert_ne!(text, bumped);
        replace_and_repin(dir, file, &bumped);
        let (code, lines) = verify_lines(dir);
        assert_eq!(code, 2, "{file}");
        assert_eq!(
            lines,
            [format!(
                "invalid: {file}: contractVersion is \"2\", but this tk-conform judges contract version \"1\" \
                 (sync a contract of that version, or use a tk-conform built for this one)"
            )],
            "{file}"
        );
        let err = Contract::load(dir).unwrap_err();
        assert!(matches!(err, LayoutError::Version { .. }), "{err}");
        assert!(err.to_string().contains(file), "{err}");
    }
}

#[test]
fn malformed_json_fails_with_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_contract(dir);
    // Line 3 lacks its comma: the parser stops at the start of line 4.
    let broken =
        "{\n  \"contractVersion\": \"1\",\n  \"generatedFrom\": \"x\"\n  \"frozen\": false\n}\n";
    replace_and_repin(dir, "golden-vectors.json", broken);
    let (code, lines) = verify_lines(dir);
    assert_eq!(code, 2);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("invalid: golden-vectors.json: line 4, column 3: expected `,` or `}`"),
        "{lines:#?}"
    );
    let err = Contract::load(dir).unwrap_err();
    let LayoutError::Json { line, column, .. } = &err else {
        panic!("expected a JSON error, got {err}");
    };
    assert_eq!(*line, 4);
    assert!(*column > 0);
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}:4:{column}: ",
            dir.join("golden-vectors.json").display()
        )),
        "{shown}"
    );

    // A well-formed file with the wrong shape reports its position as well.
    let wrong_shape = "{\n  \"contractVersion\": \"1\",\n  \"generatedFrom\": 7\n}\n";
    replace_and_repin(dir, "golden-vectors.json", wrong_shape);
    let (_, lines) = verify_lines(dir);
    assert!(
        lines[0].starts_with("invalid: golden-vectors.json: line 3, column "),
        "{lines:#?}"
    );
}

#[test]
fn seal_repins_after_an_intended_edit_and_refuses_strays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_contract(dir);
    flip_byte(&dir.join("throttlekit.proto"));
    assert_eq!(verify_lines(dir).0, 2);
    let (code, stdout, stderr) =
        tk_conform(&["contract", "seal", "--contract", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("pinned: throttlekit.proto"), "{stdout}");
    assert_eq!(verify_lines(dir).0, 0);

    write(&dir.join("stray.bin"), [0u8, 1, 2]);
    let (code, _, stderr) = tk_conform(&["contract", "seal", "--contract", dir.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unexpected: stray.bin"), "{stderr}");

    // SOURCE is written when missing, and pinned.
    std::fs::remove_file(dir.join("stray.bin")).unwrap();
    std::fs::remove_file(dir.join("SOURCE")).unwrap();
    let report = seal::seal(dir).unwrap();
    assert!(report.wrote_source);
    assert!(report.pinned.contains(&"SOURCE".to_owned()));
    assert!(verify(dir).unwrap().is_ok());
}

#[test]
fn a_missing_directory_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let (code, _, stderr) = tk_conform(&[
        "contract",
        "verify",
        "--contract",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a contract directory"), "{stderr}");
}
