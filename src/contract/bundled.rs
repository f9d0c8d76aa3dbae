//! The contract this binary was built with, embedded, so an installed `tk-conform` (a wheel,
//! `cargo install`) runs where there is no `./contract`. The embedded files are written to a
//! private folder and go through the same drift gate (`verify`) as any contract folder: a build
//! made from a drifted checkout still fails the gate.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

mod files {
    include!(concat!(env!("OUT_DIR"), "/bundled_contract.rs"));
}

/// The default `--contract` value, the one the bundled copy stands in for.
pub const DEFAULT_DIR: &str = "contract";

/// Extracted once per process; a failure is kept too (shared, hence the `Arc`).
static EXTRACTED: OnceLock<Result<tempfile::TempDir, Arc<io::Error>>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("no ./{DEFAULT_DIR} here, and the bundled contract cannot be written: {0}")]
struct Unwritable(#[source] Arc<io::Error>);

/// The embedded files: `(path relative to the contract folder, bytes)`.
pub fn files() -> &'static [(&'static str, &'static [u8])] {
    files::FILES
}

/// Writes the embedded contract into `dir`.
pub fn extract_to(dir: &Path) -> io::Result<()> {
    for (rel, bytes) in files() {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)?;
    }
    Ok(())
}

/// `dir` itself; or, when `dir` is the default `contract` and no such folder exists here, a
/// private copy of the bundled contract (extracted once per process, removed at exit).
pub fn resolve(dir: &Path) -> io::Result<PathBuf> {
    if dir != Path::new(DEFAULT_DIR) || dir.exists() {
        return Ok(dir.to_path_buf());
    }
    let extracted = EXTRACTED.get_or_init(|| {
        let temp = tempfile::Builder::new()
            .prefix("tk-conform-contract-")
            .tempdir()?;
        extract_to(temp.path())?;
        Ok(temp)
    });
    match extracted {
        Ok(temp) => {
            eprintln!(
                "tk-conform: no ./{DEFAULT_DIR} here: using the contract bundled with tk-conform {} \
                 (written to {}, verified like any contract folder)",
                env!("CARGO_PKG_VERSION"),
                temp.path().display()
            );
            Ok(temp.path().to_path_buf())
        }
        Err(e) => Err(io::Error::new(e.kind(), Unwritable(Arc::clone(e)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_the_checkout_and_passes_the_gate_until_a_byte_changes() {
        let names: Vec<&str> = files().iter().map(|(n, _)| *n).collect();
        for must in [
            "manifest.sha256",
            "golden-vectors.json",
            "scripts/manifest.json",
        ] {
            assert!(names.contains(&must), "{names:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        extract_to(dir.path()).unwrap();
        let report = crate::contract::verify::verify(dir.path()).unwrap();
        assert!(report.is_ok(), "{:?}", report.findings);
        // A drifted copy (as a build from an edited, unsealed checkout would bundle) fails.
        let lua = dir.path().join("scripts/gcra.check.lua");
        let mut text = std::fs::read(&lua).unwrap();
        text.extend_from_slice(b"\n-- drift\n");
        std::fs::write(&lua, text).unwrap();
        let report = crate::contract::verify::verify(dir.path()).unwrap();
        assert!(!report.is_ok());
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.to_string().contains("gcra.check.lua")),
            "{:?}",
            report.findings
        );
    }

    #[test]
    fn an_explicit_or_present_folder_is_used_as_is() {
        assert_eq!(
            resolve(Path::new("elsewhere")).unwrap(),
            PathBuf::from("elsewhere")
        );
    }
}
