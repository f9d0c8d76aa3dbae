//! `manifest.sha256` (spec 7): one `<64 hex>  <relative path>` line per vendored file, the format
//! `sha256sum` writes and `sha256sum -c` reads, so a person can check a contract without tk-conform.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error("{file}:{line}: {message} (expected `<64 lowercase hex>  <relative path>`)")]
    Malformed {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: `{path}` is listed twice")]
    Duplicate {
        file: PathBuf,
        line: usize,
        path: String,
    },
}

/// The parsed manifest: relative path (with `/` separators) → hex digest, in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChecksumManifest {
    pub entries: BTreeMap<String, String>,
}

impl ChecksumManifest {
    /// Parses `text`; `file` is only used to name the manifest in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ChecksumError> {
        let mut entries = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let malformed = |message: &str| ChecksumError::Malformed {
                file: file.to_owned(),
                line,
                message: message.to_owned(),
            };
            let (digest, rest) = raw
                .split_once(' ')
                .ok_or_else(|| malformed("no space between digest and path"))?;
            // sha256sum writes two separators: ` ` for text mode or ` *` for binary mode.
            let path = rest
                .strip_prefix(' ')
                .or_else(|| rest.strip_prefix('*'))
                .ok_or_else(|| malformed("digest and path must be separated by two spaces"))?;
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(malformed("the digest is not 64 hex digits"));
            }
            if path.is_empty() {
                return Err(malformed("the path is empty"));
            }
            let path = path.strip_prefix("./").unwrap_or(path).to_owned();
            if entries.contains_key(&path) {
                return Err(ChecksumError::Duplicate {
                    file: file.to_owned(),
                    line,
                    path,
                });
            }
            entries.insert(path, digest.to_ascii_lowercase());
        }
        Ok(ChecksumManifest { entries })
    }

    /// Renders the manifest in `sha256sum` format, sorted by path, one trailing newline.
    pub fn render(&self) -> String {
        self.entries
            .iter()
            .map(|(path, digest)| format!("{digest}  {path}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(sha256_hex(b""), EMPTY);
    }

    #[test]
    fn parse_and_render_round_trip() {
        let text = format!("{EMPTY}  b.txt\n{EMPTY} *./a/c.lua\n\n");
        let m = ChecksumManifest::parse(&text, Path::new("m")).unwrap();
        assert_eq!(m.entries.keys().collect::<Vec<_>>(), ["a/c.lua", "b.txt"]);
        assert_eq!(m.render(), format!("{EMPTY}  a/c.lua\n{EMPTY}  b.txt\n"));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let err = ChecksumManifest::parse(&format!("{EMPTY}  a\nxyz  b\n"), Path::new("m.sha256"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("m.sha256:2: the digest is not 64 hex"),
            "{err}"
        );
        let err = ChecksumManifest::parse(&format!("{EMPTY}  a\n{EMPTY}  a\n"), Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("m:2: `a` is listed twice"), "{err}");
    }
}
