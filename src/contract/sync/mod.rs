//! Vendoring a contract from upstream: a directory or an http(s) URL of a `.tar.gz`.
//!
//! Two upstream layouts are understood:
//! * this project's: a contract folder (the given directory or its `contract/`) holding
//!   `throttlekit.proto`, `golden-vectors.json`, `manifest.sha256` and `scripts/manifest.json`;
//! * ThrottleKit's: the same `contract/` folder, with the scripts folder (a `manifest.json`
//!   listing `*.lua` files) somewhere else below the checkout root.
//!
//! Sync trusts nothing it has not checked: every line of the upstream's own `manifest.sha256`
//! must match its file, every Lua file the sha256 its scripts manifest records, both JSON files
//! must carry the pinned `contractVersion`, and archive entries may not escape (`..`, absolute
//! paths, links) or exceed the size limits. The new contract is staged in a temporary directory
//! beside the target, verified, and swapped in with renames, so a failed sync leaves the old
//! contract as it was.

use std::path::{Path, PathBuf};

use super::checksums::sha256_hex;

mod archive;
mod download;
mod stage;
mod upstream;

pub use archive::unpack;
pub use download::download;
use stage::install;
use upstream::{collect, locate, source_text};

/// Bounds on what a downloaded archive may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Compressed bytes downloaded.
    pub max_archive_bytes: u64,
    /// Sum of the unpacked file sizes (guards against decompression bombs).
    pub max_unpacked_bytes: u64,
    pub max_entries: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_archive_bytes: 32 * 1024 * 1024,
            max_unpacked_bytes: 256 * 1024 * 1024,
            max_entries: 20_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// A directory or an `http://` / `https://` URL of a `.tar.gz`.
    pub from: String,
    /// The contract directory to (re)write.
    pub to: PathBuf,
    pub limits: ArchiveLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamLayout {
    TkConform,
    ThrottleKit,
}

impl UpstreamLayout {
    pub fn name(self) -> &'static str {
        match self {
            UpstreamLayout::TkConform => "tk-conform",
            UpstreamLayout::ThrottleKit => "throttlekit",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncReport {
    pub target: PathBuf,
    pub layout: UpstreamLayout,
    /// `(path in the contract, path in the upstream)` for every vendored file.
    pub files: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{from}: {message}")]
    NotAContract { from: String, message: String },
    #[error(
        "upstream checksum mismatch: {path}: {pinned_by} pins sha256 {expected}, the file has {actual}; \
         refusing to vendor it"
    )]
    UpstreamMismatch {
        path: String,
        pinned_by: String,
        expected: String,
        actual: String,
    },
    #[error("upstream {path}: {message}; refusing to vendor it")]
    UpstreamInvalid { path: String, message: String },
    #[error("archive {url}: {message}; refusing to unpack it")]
    ArchiveRefused { url: String, message: String },
    #[error("download {url}: {message}")]
    Download { url: String, message: String },
    #[error("download {url}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("refusing to replace {}: {message}", target.display())]
    Target { target: PathBuf, message: String },
    #[error("the staged contract did not verify (a tk-conform bug): {0}")]
    StagedInvalid(String),
}

impl SyncError {
    /// True when the upstream was reached but failed a check (as opposed to an environment or
    /// usage problem): CI treats these like drift.
    pub fn is_check_failure(&self) -> bool {
        matches!(
            self,
            SyncError::UpstreamMismatch { .. }
                | SyncError::UpstreamInvalid { .. }
                | SyncError::ArchiveRefused { .. }
        )
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs a whole sync; a download runs on the caller's `runtime` (do not call this from inside
/// an async context: use [`download`] + [`sync_from_archive`] there).
pub fn sync(
    options: &SyncOptions,
    runtime: &tokio::runtime::Runtime,
) -> Result<SyncReport, SyncError> {
    if is_url(&options.from) {
        let bytes = runtime.block_on(download(&options.from, options.limits))?;
        sync_from_archive(&options.from, &bytes, &options.to, options.limits)
    } else {
        let root = Path::new(&options.from);
        let shown = std::fs::canonicalize(root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| options.from.clone());
        let source = SourceNote {
            from: shown,
            archive_sha256: None,
        };
        sync_from_dir(root, &options.to, &source)
    }
}

pub fn is_url(from: &str) -> bool {
    from.starts_with("http://") || from.starts_with("https://")
}

/// Unpacks a downloaded `.tar.gz` into a scratch directory and syncs from it.
pub fn sync_from_archive(
    url: &str,
    bytes: &[u8],
    to: &Path,
    limits: ArchiveLimits,
) -> Result<SyncReport, SyncError> {
    let scratch = tempfile::Builder::new()
        .prefix("tk-conform-archive-")
        .tempdir()
        .map_err(io_error(Path::new("temporary directory")))?;
    let root = unpack(url, bytes, scratch.path(), limits)?;
    let source = SourceNote {
        from: url.to_owned(),
        archive_sha256: Some(sha256_hex(bytes)),
    };
    sync_from_dir(&root, to, &source)
}

/// What SOURCE records about the upstream.
struct SourceNote {
    from: String,
    archive_sha256: Option<String>,
}

fn sync_from_dir(root: &Path, to: &Path, note: &SourceNote) -> Result<SyncReport, SyncError> {
    let upstream = locate(root, &note.from)?;
    let files = collect(&upstream)?;
    install(to, &files, &source_text(note, &upstream, &files))?;
    Ok(SyncReport {
        target: to.to_owned(),
        layout: upstream.layout,
        files: files
            .iter()
            .map(|f| (f.dest.clone(), f.origin.clone()))
            .collect(),
    })
}
