//! Unpacking an upstream archive, refusing escapes, links and oversize content.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::{ArchiveLimits, SyncError, io_error};

/// Unpacks a `.tar.gz` below `dest`, entry by entry, refusing escapes, links and oversize
/// content. Returns the upstream root: the single top-level folder when there is one (as in
/// archives of a source tree), else `dest`.
pub fn unpack(
    url: &str,
    bytes: &[u8],
    dest: &Path,
    limits: ArchiveLimits,
) -> Result<PathBuf, SyncError> {
    let refuse = |message: String| SyncError::ArchiveRefused {
        url: url.to_owned(),
        message,
    };
    let broken = |e: std::io::Error| refuse(format!("not a readable .tar.gz ({e})"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut entries_seen = 0usize;
    let mut unpacked = 0u64;
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(refuse(format!(
                "it has more than {} entries",
                limits.max_entries
            )));
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let raw_path = entry.path().map_err(broken)?.into_owned();
        let shown = raw_path.display().to_string();
        let mut rel = PathBuf::new();
        for component in raw_path.components() {
            match component {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse(format!(
                        "entry `{shown}` escapes the target (a `..` or absolute path)"
                    )));
                }
            }
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(refuse(format!(
                "entry `{shown}` is a link (to `{target}`); contracts are plain files"
            )));
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let out = dest.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&out).map_err(io_error(&out))?;
            continue;
        }
        if !kind.is_file() {
            return Err(refuse(format!(
                "entry `{shown}` is a special file ({kind:?}); contracts are plain files"
            )));
        }
        let size = entry.header().size().map_err(broken)?;
        unpacked += size;
        if unpacked > limits.max_unpacked_bytes {
            return Err(refuse(format!(
                "its files unpack to more than {} bytes",
                limits.max_unpacked_bytes
            )));
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let mut content = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut content)
            .map_err(broken)?;
        std::fs::write(&out, &content).map_err(io_error(&out))?;
    }
    let mut top = std::fs::read_dir(dest)
        .map_err(io_error(dest))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error(dest))?;
    if top.len() == 1 && top[0].file_type().is_ok_and(|t| t.is_dir()) {
        return Ok(top.remove(0).path());
    }
    Ok(dest.to_owned())
}
