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

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::checksums::{ChecksumManifest, sha256_hex};
use super::layout::{
    self, CHECKSUMS, PROTO, SCRIPTS_DIR, SCRIPTS_MANIFEST, SOURCE, VECTORS, is_plain_relative,
};
use super::tree::{self, EntryKind};
use super::vectors::VectorsFile;
use super::verify;

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

/// Time limits for the download.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// How deep below the root the ThrottleKit scripts folder is looked for.
const MAX_SEARCH_DEPTH: usize = 8;

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

/// Runs a whole sync. Downloads use a private single-threaded runtime: do not call this from
/// inside an async context (use [`download`] + [`sync_from_archive`] there).
pub fn sync(options: &SyncOptions) -> Result<SyncReport, SyncError> {
    if is_url(&options.from) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_error(Path::new("tokio runtime")))?;
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

/// Fetches `url` into memory, refusing anything over `limits.max_archive_bytes`.
pub async fn download(url: &str, limits: ArchiveLimits) -> Result<Vec<u8>, SyncError> {
    let failed = |message: String| SyncError::Download {
        url: url.to_owned(),
        message,
    };
    let fetch = |source| SyncError::Fetch {
        url: url.to_owned(),
        source,
    };
    let too_big = |size: String| SyncError::ArchiveRefused {
        url: url.to_owned(),
        message: format!(
            "it is {size} bytes, over the limit of {} (raise --max-archive-bytes if this is expected)",
            limits.max_archive_bytes
        ),
    };
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(DOWNLOAD_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(fetch)?;
    let mut response = client.get(url).send().await.map_err(fetch)?;
    if !response.status().is_success() {
        return Err(failed(format!("the server answered {}", response.status())));
    }
    if let Some(length) = response.content_length()
        && length > limits.max_archive_bytes
    {
        return Err(too_big(length.to_string()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > limits.max_archive_bytes {
            return Err(too_big(format!("more than {}", limits.max_archive_bytes)));
        }
    }
    Ok(bytes)
}

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

/// Where the contract's pieces sit in an upstream tree.
struct Upstream {
    root: PathBuf,
    contract_dir: PathBuf,
    scripts_dir: PathBuf,
    layout: UpstreamLayout,
}

impl Upstream {
    /// `path` relative to the upstream root, for messages and SOURCE.
    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/")
    }
}

fn is_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn locate(root: &Path, from: &str) -> Result<Upstream, SyncError> {
    let not_contract = |message: String| SyncError::NotAContract {
        from: from.to_owned(),
        message,
    };
    if !root.is_dir() {
        return Err(not_contract(
            "not a directory (pass a checkout, a contract folder, or an http(s) URL of a .tar.gz)"
                .into(),
        ));
    }
    let holds_contract = |d: &Path| is_file(&d.join(PROTO)) && is_file(&d.join(VECTORS));
    let contract_dir = if holds_contract(root) {
        root.to_owned()
    } else if holds_contract(&root.join("contract")) {
        root.join("contract")
    } else {
        return Err(not_contract(format!(
            "no contract folder: expected {PROTO} and {VECTORS} in it or in its contract/ folder"
        )));
    };
    let own_scripts = contract_dir.join(SCRIPTS_DIR);
    let (scripts_dir, layout) = if is_file(&own_scripts.join("manifest.json")) {
        (own_scripts, UpstreamLayout::TkConform)
    } else {
        (find_scripts_dir(root, from)?, UpstreamLayout::ThrottleKit)
    };
    Ok(Upstream {
        root: root.to_owned(),
        contract_dir,
        scripts_dir,
        layout,
    })
}

/// Looks below `root` for the folder whose `manifest.json` is a scripts manifest.
fn find_scripts_dir(root: &Path, from: &str) -> Result<PathBuf, SyncError> {
    let mut found = Vec::new();
    search(root, 0, &mut found).map_err(io_error(root))?;
    // The same manifest may be shipped twice (e.g. source and build output): fine if identical.
    let mut by_content: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for dir in found {
        let manifest = dir.join("manifest.json");
        let bytes = std::fs::read(&manifest).map_err(io_error(&manifest))?;
        by_content.entry(sha256_hex(&bytes)).or_default().push(dir);
    }
    match by_content.len() {
        0 => Err(SyncError::NotAContract {
            from: from.to_owned(),
            message:
                "no scripts folder found: expected a manifest.json listing `scripts` (and the \
                      *.lua files it names) below the root"
                    .into(),
        }),
        1 => {
            let mut dirs = by_content.into_values().next().unwrap_or_default();
            dirs.sort();
            Ok(dirs.remove(0))
        }
        _ => Err(SyncError::NotAContract {
            from: from.to_owned(),
            message: format!(
                "several different scripts manifests found ({}); sync from a tree that holds one",
                by_content
                    .values()
                    .flatten()
                    .map(|d| d.join("manifest.json").display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

fn search(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let manifest = dir.join("manifest.json");
    if is_file(&manifest) && looks_like_scripts_manifest(&manifest) {
        found.push(dir.to_owned());
    }
    if depth >= MAX_SEARCH_DEPTH {
        return Ok(());
    }
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let skip = name.starts_with('.') || name == "node_modules" || name == "target";
        if !skip && entry.file_type()?.is_dir() {
            subdirs.push(entry.path());
        }
    }
    subdirs.sort();
    for sub in subdirs {
        search(&sub, depth + 1, found)?;
    }
    Ok(())
}

fn looks_like_scripts_manifest(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) else {
        return false;
    };
    map.get("scripts").is_some_and(|s| s.is_array()) && map.contains_key("contractVersion")
}

/// One file to vendor: where it goes, where it came from, and its bytes.
struct Vendored {
    dest: String,
    origin: String,
    bytes: Vec<u8>,
}

/// Checks the upstream against its own checksums and versions, and reads what to vendor.
fn collect(up: &Upstream) -> Result<Vec<Vendored>, SyncError> {
    let checksums_path = up.contract_dir.join(CHECKSUMS);
    let checksums_rel = up.rel(&checksums_path);
    if !is_file(&checksums_path) {
        return Err(SyncError::UpstreamInvalid {
            path: checksums_rel,
            message: "missing: without its checksums the upstream cannot be checked".into(),
        });
    }
    let text = std::fs::read_to_string(&checksums_path).map_err(io_error(&checksums_path))?;
    let pins = ChecksumManifest::parse(&text, Path::new(&checksums_rel)).map_err(|e| {
        SyncError::UpstreamInvalid {
            path: checksums_rel.clone(),
            message: e.to_string(),
        }
    })?;
    // Every pinned file must be there with the pinned bytes.
    let mut pinned: BTreeSet<PathBuf> = BTreeSet::new();
    for (listed, expected) in &pins.entries {
        let file = resolve_pinned(up, listed).ok_or_else(|| SyncError::UpstreamInvalid {
            path: checksums_rel.clone(),
            message: format!("it pins `{listed}`, which the upstream does not contain"),
        })?;
        let bytes = read_regular(up, &file)?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(SyncError::UpstreamMismatch {
                path: up.rel(&file),
                pinned_by: checksums_rel.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        pinned.insert(file);
    }
    let mut out = Vec::new();
    for name in [PROTO, VECTORS] {
        let file = up.contract_dir.join(name);
        if !pinned.contains(&file) {
            return Err(SyncError::UpstreamInvalid {
                path: checksums_rel.clone(),
                message: format!("it does not pin {}", up.rel(&file)),
            });
        }
        out.push(Vendored {
            dest: name.to_owned(),
            origin: up.rel(&file),
            bytes: read_regular(up, &file)?,
        });
    }
    let vectors_text = String::from_utf8_lossy(&out[1].bytes).into_owned();
    layout::parse_versioned_json::<VectorsFile>(&vectors_text, Path::new(&out[1].origin)).map_err(
        |e| SyncError::UpstreamInvalid {
            path: out[1].origin.clone(),
            message: e.detail(),
        },
    )?;

    let manifest_path = up.scripts_dir.join("manifest.json");
    let manifest_rel = up.rel(&manifest_path);
    let manifest_bytes = read_regular(up, &manifest_path)?;
    let manifest = layout::parse_versioned_json::<super::scripts::ScriptsManifest>(
        &String::from_utf8_lossy(&manifest_bytes),
        Path::new(&manifest_rel),
    )
    .map_err(|e| SyncError::UpstreamInvalid {
        path: manifest_rel.clone(),
        message: e.detail(),
    })?;
    out.push(Vendored {
        dest: SCRIPTS_MANIFEST.to_owned(),
        origin: manifest_rel.clone(),
        bytes: manifest_bytes,
    });
    let mut seen = BTreeSet::new();
    for script in &manifest.scripts {
        if !is_plain_relative(&script.file) {
            return Err(SyncError::UpstreamInvalid {
                path: manifest_rel.clone(),
                message: format!(
                    "script `{}` names `{}`, which is not a plain relative path",
                    script.name, script.file
                ),
            });
        }
        if !seen.insert(script.file.clone()) {
            continue;
        }
        let file = up.scripts_dir.join(&script.file);
        if !file.exists() && std::fs::symlink_metadata(&file).is_err() {
            return Err(SyncError::UpstreamInvalid {
                path: manifest_rel.clone(),
                message: format!(
                    "script `{}` names `{}`, which the upstream does not contain",
                    script.name, script.file
                ),
            });
        }
        let bytes = read_regular(up, &file)?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&script.sha256) {
            return Err(SyncError::UpstreamMismatch {
                path: up.rel(&file),
                pinned_by: manifest_rel.clone(),
                expected: script.sha256.clone(),
                actual,
            });
        }
        out.push(Vendored {
            dest: format!("{SCRIPTS_DIR}/{}", script.file),
            origin: up.rel(&file),
            bytes,
        });
    }
    Ok(out)
}

/// Finds the file a `manifest.sha256` line names: relative to the manifest's folder first, then
/// to each folder above it up to the upstream root. Never outside the root.
fn resolve_pinned(up: &Upstream, listed: &str) -> Option<PathBuf> {
    let mut base = Some(up.contract_dir.as_path());
    while let Some(dir) = base {
        if let Some(candidate) = normalize_within(&up.root, &dir.join(listed))
            && std::fs::symlink_metadata(&candidate).is_ok()
        {
            return Some(candidate);
        }
        if dir == up.root {
            break;
        }
        base = dir.parent();
    }
    None
}

/// Resolves `.` and `..` lexically; `None` when the result leaves `root`.
fn normalize_within(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.starts_with(root).then_some(out)
}

/// Reads an upstream file that must be a plain file (a link could point anywhere).
fn read_regular(up: &Upstream, path: &Path) -> Result<Vec<u8>, SyncError> {
    let meta = std::fs::symlink_metadata(path).map_err(io_error(path))?;
    if !meta.is_file() {
        return Err(SyncError::UpstreamInvalid {
            path: up.rel(path),
            message: "not a plain file (a link or special file)".into(),
        });
    }
    std::fs::read(path).map_err(io_error(path))
}

fn source_text(note: &SourceNote, up: &Upstream, files: &[Vendored]) -> String {
    let mut text = format!(
        "# Where this contract came from. Written by `tk-conform contract sync`.\n\
         source: {}\nlayout: {}\nsynced-at: {}\nsynced-by: tk-conform {}\n",
        note.from,
        up.layout.name(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(digest) = &note.archive_sha256 {
        text.push_str(&format!("archive-sha256: {digest}\n"));
    }
    text.push_str("files:\n");
    for f in files {
        text.push_str(&format!("  {} <- {}\n", f.dest, f.origin));
    }
    text
}

/// Stages the new contract beside `target`, verifies it, and swaps it in.
fn install(target: &Path, files: &[Vendored], source: &str) -> Result<(), SyncError> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
    check_replaceable(target)?;

    let staged = tempfile::Builder::new()
        .prefix(".contract-sync-")
        .tempdir_in(&parent)
        .map_err(io_error(&parent))?;
    let mut pins = ChecksumManifest::default();
    for f in files {
        let out = staged.path().join(&f.dest);
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        std::fs::write(&out, &f.bytes).map_err(io_error(&out))?;
        pins.entries.insert(f.dest.clone(), sha256_hex(&f.bytes));
    }
    let source_path = staged.path().join(SOURCE);
    std::fs::write(&source_path, source).map_err(io_error(&source_path))?;
    pins.entries
        .insert(SOURCE.to_owned(), sha256_hex(source.as_bytes()));
    let checksums = staged.path().join(CHECKSUMS);
    std::fs::write(&checksums, pins.render()).map_err(io_error(&checksums))?;
    let report =
        verify::verify(staged.path()).map_err(|e| SyncError::StagedInvalid(e.to_string()))?;
    if !report.is_ok() {
        let lines: Vec<String> = report.findings.iter().map(|f| f.to_string()).collect();
        return Err(SyncError::StagedInvalid(lines.join("; ")));
    }
    swap_in(staged, target, &parent)
}

/// Refuses to replace a directory holding anything but contract files: sync must never delete
/// data it did not put there.
fn check_replaceable(target: &Path) -> Result<(), SyncError> {
    let refuse = |message: String| SyncError::Target {
        target: target.to_owned(),
        message,
    };
    let meta = match std::fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(target)(e)),
    };
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    let mut allowed: BTreeSet<String> = [CHECKSUMS, SOURCE, PROTO, VECTORS, SCRIPTS_MANIFEST]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if let Ok(text) = std::fs::read_to_string(target.join(CHECKSUMS))
        && let Ok(m) = ChecksumManifest::parse(&text, Path::new(CHECKSUMS))
    {
        allowed.extend(m.entries.into_keys());
    }
    if let Ok(m) = layout::read_scripts_manifest(&target.join(SCRIPTS_MANIFEST)) {
        allowed.extend(layout::pinned_files(Some(&m)));
    }
    let on_disk = tree::list(target).map_err(io_error(target))?;
    let foreign: Vec<&String> = on_disk
        .iter()
        .filter(|(p, kind)| **kind == EntryKind::Other || !allowed.contains(*p))
        .map(|(p, _)| p)
        .collect();
    if !foreign.is_empty() {
        return Err(refuse(format!(
            "it holds files that are not part of a contract ({}); move them away first",
            foreign
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// Renames the old contract aside, the staged one into place, then deletes the old one. If the
/// second rename fails, the old contract is renamed back.
fn swap_in(staged: tempfile::TempDir, target: &Path, parent: &Path) -> Result<(), SyncError> {
    if std::fs::symlink_metadata(target).is_err() {
        let staged_path = staged.keep();
        return std::fs::rename(&staged_path, target).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staged_path);
            io_error(target)(e)
        });
    }
    // An empty placeholder: renaming a directory onto an empty one replaces it.
    let aside = tempfile::Builder::new()
        .prefix(".contract-old-")
        .tempdir_in(parent)
        .map_err(io_error(parent))?
        .keep();
    if let Err(e) = std::fs::rename(target, &aside) {
        let _ = std::fs::remove_dir(&aside);
        return Err(io_error(target)(e));
    }
    let staged_path = staged.keep();
    if let Err(e) = std::fs::rename(&staged_path, target) {
        let _ = std::fs::rename(&aside, target);
        let _ = std::fs::remove_dir_all(&staged_path);
        return Err(io_error(target)(e));
    }
    std::fs::remove_dir_all(&aside).map_err(io_error(&aside))
}
