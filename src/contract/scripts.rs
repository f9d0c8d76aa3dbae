//! The scripts manifest (spec 6): `scripts/manifest.json` beside the Lua files.
//!
//! A backend marshals ARGV by the names listed here, never by a hard-coded order, so an engine
//! author can point tk-conform at scripts whose arguments are ordered differently.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptsManifest {
    pub contract_version: String,
    pub generated_from: String,
    pub frozen: bool,
    /// The five reply-tuple names, in order.
    pub reply_tuple: Vec<String>,
    /// How `now` is passed (e.g. "epoch ms; 0 = use the server's TIME").
    pub now_argv: String,
    pub scripts: Vec<ScriptEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScriptRole {
    Check,
    Read,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptEntry {
    /// `<strategy>.<role>`, e.g. `gcra.check`.
    pub name: String,
    /// The contract's strategy name (`gcra`, `tokenBucket`, ...).
    pub strategy: String,
    pub role: ScriptRole,
    /// File name relative to the manifest's folder.
    pub file: String,
    pub keys: Vec<String>,
    /// ARGV names in the order the script reads them.
    pub argv: Vec<String>,
    /// Lowercase hex sha256 of the file's bytes.
    pub sha256: String,
}

impl ScriptsManifest {
    pub fn script(&self, strategy: &str, role: ScriptRole) -> Option<&ScriptEntry> {
        self.scripts
            .iter()
            .find(|s| s.strategy == strategy && s.role == role)
    }
}
