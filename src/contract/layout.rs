//! A contract directory on disk and how to load it.
//!
//! ```text
//! contract/
//!   throttlekit.proto        the service door (spec 8)
//!   golden-vectors.json      decision vectors (spec 5)
//!   scripts/manifest.json    the scripts manifest (spec 6) ...
//!   scripts/<file>           ... and every Lua file it names
//!   SOURCE                   where the contract came from (sync and seal write it)
//!   manifest.sha256          sha256sum of every file above (spec 7)
//! ```
//! Loading checks `contractVersion` before anything else reads the files, so a contract of another
//! version fails with that reason rather than with a confusing parse error.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::CONTRACT_VERSION;
use super::scripts::{ScriptEntry, ScriptsManifest};
use super::vectors::VectorsFile;

pub const PROTO: &str = "throttlekit.proto";
pub const VECTORS: &str = "golden-vectors.json";
pub const SCRIPTS_DIR: &str = "scripts";
pub const SCRIPTS_MANIFEST: &str = "scripts/manifest.json";
pub const CHECKSUMS: &str = "manifest.sha256";
pub const SOURCE: &str = "SOURCE";

/// The contract directory this project ships, relative to the repository root.
pub const DEFAULT_DIR: &str = "contract";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {}", path.display(), version_detail(found))]
    Version { path: PathBuf, found: String },
    #[error("{}: {}", path.display(), script_path_detail(name, file))]
    ScriptPath {
        path: PathBuf,
        name: String,
        file: String,
    },
}

impl LayoutError {
    /// The error without the file name, for reports that are already keyed by the file.
    pub fn detail(&self) -> String {
        match self {
            LayoutError::Io { source, .. } => source.to_string(),
            LayoutError::Json {
                line,
                column,
                message,
                ..
            } => format!("line {line}, column {column}: {message}"),
            LayoutError::Version { found, .. } => version_detail(found),
            LayoutError::ScriptPath { name, file, .. } => script_path_detail(name, file),
        }
    }
}

fn version_detail(found: &str) -> String {
    format!(
        "contractVersion is {found}, but this tk-conform judges contract version \"{CONTRACT_VERSION}\" \
         (sync a contract of that version, or use a tk-conform built for this one)"
    )
}

fn script_path_detail(name: &str, file: &str) -> String {
    format!(
        "script `{name}` names file `{file}`, which is not a plain relative path inside the scripts folder"
    )
}

/// A loaded contract: its files parsed and version-checked (checksums are `verify`'s job).
#[derive(Debug, Clone)]
pub struct Contract {
    pub root: PathBuf,
    pub proto: String,
    pub vectors: VectorsFile,
    /// `None` when the contract ships no scripts folder.
    pub scripts: Option<ScriptsManifest>,
}

impl Contract {
    pub fn load(root: &Path) -> Result<Contract, LayoutError> {
        let proto = read_text(&root.join(PROTO))?;
        let vectors = read_versioned_json(&root.join(VECTORS))?;
        let scripts_path = root.join(SCRIPTS_MANIFEST);
        let scripts = if scripts_path.exists() {
            Some(read_scripts_manifest(&scripts_path)?)
        } else {
            None
        };
        Ok(Contract {
            root: root.to_owned(),
            proto,
            vectors,
            scripts,
        })
    }

    /// The text of one script, read from the scripts folder.
    pub fn script_text(&self, entry: &ScriptEntry) -> Result<String, LayoutError> {
        read_text(&self.root.join(SCRIPTS_DIR).join(&entry.file))
    }
}

/// Reads and version-checks a scripts manifest, and checks that every file it names stays inside
/// its folder.
pub fn read_scripts_manifest(path: &Path) -> Result<ScriptsManifest, LayoutError> {
    let manifest: ScriptsManifest = read_versioned_json(path)?;
    for entry in &manifest.scripts {
        if !is_plain_relative(&entry.file) {
            return Err(LayoutError::ScriptPath {
                path: path.to_owned(),
                name: entry.name.clone(),
                file: entry.file.clone(),
            });
        }
    }
    Ok(manifest)
}

/// The files `manifest.sha256` must pin, as `/`-separated paths relative to the contract root.
pub fn pinned_files(scripts: Option<&ScriptsManifest>) -> Vec<String> {
    let mut files = vec![PROTO.to_owned(), VECTORS.to_owned(), SOURCE.to_owned()];
    if let Some(manifest) = scripts {
        files.push(SCRIPTS_MANIFEST.to_owned());
        files.extend(
            manifest
                .scripts
                .iter()
                .map(|s| format!("{SCRIPTS_DIR}/{}", s.file)),
        );
    }
    files.sort();
    files.dedup();
    files
}

/// True for a non-empty relative path made only of normal components (no `..`, no root, no `.`).
pub fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

pub fn read_text(path: &Path) -> Result<String, LayoutError> {
    std::fs::read_to_string(path).map_err(|source| LayoutError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Parses a JSON contract file whose top level carries `contractVersion`, checking the version
/// first. Errors carry the file, line and column serde_json reports.
pub fn read_versioned_json<T: DeserializeOwned>(path: &Path) -> Result<T, LayoutError> {
    let text = read_text(path)?;
    parse_versioned_json(&text, path)
}

pub fn parse_versioned_json<T: DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, LayoutError> {
    #[derive(Deserialize)]
    struct VersionProbe {
        #[serde(rename = "contractVersion")]
        contract_version: Option<serde_json::Value>,
    }
    let json_error = |e: serde_json::Error| {
        // serde_json appends " at line L column C"; the error carries them as fields instead.
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let text = e.to_string();
        LayoutError::Json {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: text.strip_suffix(&suffix).unwrap_or(&text).to_owned(),
        }
    };
    let probe: VersionProbe = serde_json::from_str(text).map_err(json_error)?;
    match probe.contract_version {
        Some(serde_json::Value::String(v)) if v == CONTRACT_VERSION => {}
        Some(other) => {
            return Err(LayoutError::Version {
                path: path.to_owned(),
                found: other.to_string(),
            });
        }
        None => {
            return Err(LayoutError::Version {
                path: path.to_owned(),
                found: "missing".to_owned(),
            });
        }
    }
    serde_json::from_str(text).map_err(json_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths() {
        for ok in ["a.lua", "lua/a.lua"] {
            assert!(is_plain_relative(ok), "{ok}");
        }
        for bad in ["", "../a.lua", "/a.lua", "./a.lua", "a/../b", "a\\b"] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }

    #[test]
    fn version_is_checked_before_the_shape() {
        let err =
            parse_versioned_json::<VectorsFile>(r#"{"contractVersion": "2"}"#, Path::new("v.json"))
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("v.json: contractVersion is \"2\""), "{err}");
        let err = parse_versioned_json::<VectorsFile>(
            "{\n  \"contractVersion\": \"1\",\n  x",
            Path::new("v.json"),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                LayoutError::Json {
                    line: 3,
                    column: 3,
                    ..
                }
            ),
            "{err}"
        );
    }
}
