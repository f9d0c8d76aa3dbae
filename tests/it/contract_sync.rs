//! `contract sync`: vendoring from a directory (both layouts) or a .tar.gz over HTTP on
//! 127.0.0.1, refusing bad upstreams and leaving the old contract intact when it does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util;
use crate::util::{
    flip_byte, leftovers, snapshot, tk_conform, write, write_contract, write_throttlekit_checkout,
};
use tk_conform::contract::sync::{ArchiveLimits, SyncError, SyncOptions, sync};
use tk_conform::contract::verify::verify;

/// A work area: `work/contract` holds an existing, valid contract to be replaced.
struct Area {
    tmp: tempfile::TempDir,
}

impl Area {
    fn new() -> Area {
        let area = Area {
            tmp: tempfile::tempdir().unwrap(),
        };
        write_contract(&area.target());
        area
    }
    fn upstream(&self) -> PathBuf {
        self.tmp.path().join("upstream")
    }
    fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }
    fn target(&self) -> PathBuf {
        self.work().join("contract")
    }
    fn options(&self, from: &str) -> SyncOptions {
        SyncOptions {
            from: from.to_owned(),
            to: self.target(),
            limits: ArchiveLimits::default(),
        }
    }
}

/// Runs a sync that must fail, and checks the old contract and its folder are as they were.
fn refused(area: &Area, options: &SyncOptions) -> SyncError {
    let before = snapshot(&area.target());
    let err = sync(options, &runtime()).expect_err("the sync should have been refused");
    assert_eq!(
        snapshot(&area.target()),
        before,
        "a failed sync changed the old contract"
    );
    assert!(verify(&area.target()).unwrap().is_ok());
    assert_eq!(
        leftovers(&area.work(), &["contract"]),
        Vec::<String>::new(),
        "staging left behind"
    );
    err
}

/// The runtime a sync downloads on (the command passes its own).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn syncs_from_a_checkout_in_this_projects_layout() {
    let area = Area::new();
    let up = area.upstream().join("contract");
    util::write_contract_files(&up, &up.join("scripts"));
    // Make the upstream differ from what the target holds.
    write(&up.join("SOURCE"), "source: upstream\n");
    write(&up.join("throttlekit.proto"), "// upstream proto\n");
    tk_conform::contract::seal::seal(&up).unwrap();
    let (code, stdout, stderr) = tk_conform(&[
        "contract",
        "sync",
        "--from",
        area.upstream().to_str().unwrap(),
        "--to",
        area.target().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("(tk-conform layout)"), "{stdout}");
    let target = area.target();
    assert!(verify(&target).unwrap().is_ok());
    for file in [
        "throttlekit.proto",
        "golden-vectors.json",
        "scripts/manifest.json",
        "scripts/gcra.check.lua",
    ] {
        assert_eq!(
            read(&target.join(file)),
            read(&area.upstream().join("contract").join(file)),
            "{file}"
        );
    }
    let source = std::fs::read_to_string(target.join("SOURCE")).unwrap();
    let shown = std::fs::canonicalize(area.upstream()).unwrap();
    assert!(
        source.contains(&format!("source: {}\n", shown.display())),
        "{source}"
    );
    assert!(source.contains("layout: tk-conform\n"), "{source}");
    assert_eq!(leftovers(&area.work(), &["contract"]), Vec::<String>::new());

    // The contract folder itself is an upstream too.
    let from = area.upstream().join("contract");
    let report = sync(&area.options(from.to_str().unwrap()), &runtime()).unwrap();
    assert_eq!(report.files.len(), 5);
    assert!(verify(&target).unwrap().is_ok());
}

#[test]
fn syncs_from_a_checkout_in_the_throttlekit_layout() {
    let area = Area::new();
    write_throttlekit_checkout(&area.upstream());
    // Into a folder that does not exist yet.
    let fresh = area.tmp.path().join("elsewhere/contract");
    let options = SyncOptions {
        to: fresh.clone(),
        ..area.options(area.upstream().to_str().unwrap())
    };
    let report = sync(&options, &runtime()).unwrap();
    assert_eq!(report.layout.name(), "throttlekit");
    assert!(verify(&fresh).unwrap().is_ok());
    assert_eq!(
        read(&fresh.join("scripts/gcra.read.lua")),
        read(
            &area
                .upstream()
                .join("packages/redis-core/lua/gcra.read.lua")
        )
    );
    let source = std::fs::read_to_string(fresh.join("SOURCE")).unwrap();
    assert!(source.contains("layout: throttlekit\n"), "{source}");
    assert!(
        source.contains("  scripts/gcra.check.lua <- packages/redis-core/lua/gcra.check.lua\n"),
        "{source}"
    );
}

#[test]
fn refuses_an_upstream_whose_checksums_disagree() {
    let area = Area::new();
    write_throttlekit_checkout(&area.upstream());
    flip_byte(&area.upstream().join("contract/golden-vectors.json"));
    let err = refused(&area, &area.options(area.upstream().to_str().unwrap()));
    assert!(err.is_check_failure());
    let shown = err.to_string();
    assert!(
        shown.starts_with(
            "upstream checksum mismatch: contract/golden-vectors.json: contract/manifest.sha256 pins sha256 "
        ),
        "{shown}"
    );

    // A Lua file checked only through its scripts manifest.
    let area = Area::new();
    write_throttlekit_checkout(&area.upstream());
    flip_byte(
        &area
            .upstream()
            .join("packages/redis-core/lua/gcra.read.lua"),
    );
    let shown = refused(&area, &area.options(area.upstream().to_str().unwrap())).to_string();
    assert!(
        shown.contains(
            "packages/redis-core/lua/gcra.read.lua: packages/redis-core/lua/manifest.json pins sha256"
        ),
        "{shown}"
    );

    // And the command exits 2 (drift, as the README's exit codes say), keeping the old contract.
    let (code, _, stderr) = tk_conform(&[
        "contract",
        "sync",
        "--from",
        area.upstream().to_str().unwrap(),
        "--to",
        area.target().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("was left as it was"), "{stderr}");
}

#[test]
fn refuses_an_upstream_of_another_contract_version() {
    let area = Area::new();
    let up = area.upstream().join("contract");
    write_contract(&up);
    let text = std::fs::read_to_string(up.join("golden-vectors.json")).unwrap();
    write(
        &up.join("golden-vectors.json"),
        text.replacen(
            "\"contractVersion\": \"1\"",
            "\"contractVersion\": \"2\"",
            1,
        ),
    );
    // Re-pin by hand (seal refuses another version), so only the version is wrong.
    let pins = up.join("manifest.sha256");
    let mut m = tk_conform::contract::checksums::ChecksumManifest::parse(
        &std::fs::read_to_string(&pins).unwrap(),
        &pins,
    )
    .unwrap();
    m.entries.insert(
        "golden-vectors.json".into(),
        util::digest_of(&up.join("golden-vectors.json")),
    );
    std::fs::write(&pins, m.render()).unwrap();
    let shown = refused(&area, &area.options(up.to_str().unwrap())).to_string();
    assert!(
        shown.starts_with("upstream golden-vectors.json: contractVersion is \"2\""),
        "{shown}"
    );
}

#[test]
fn refuses_to_replace_a_folder_holding_foreign_files() {
    let area = Area::new();
    write_contract(&area.upstream());
    write(&area.target().join("my-notes.md"), "not a contract file\n");
    let before = snapshot(&area.target());
    let err = sync(&area.options(area.upstream().to_str().unwrap()), &runtime()).unwrap_err();
    assert!(!err.is_check_failure());
    assert!(err.to_string().contains("my-notes.md"), "{err}");
    assert_eq!(snapshot(&area.target()), before);
}

#[test]
fn refuses_a_directory_that_is_not_a_contract() {
    let area = Area::new();
    write(&area.upstream().join("README.md"), "nothing here\n");
    let err = refused(&area, &area.options(area.upstream().to_str().unwrap()));
    assert!(matches!(err, SyncError::NotAContract { .. }), "{err}");
}

// ---- archives over HTTP on 127.0.0.1 ----------------------------------------------------------

/// What the test server answers for one path.
#[derive(Clone)]
struct Body {
    bytes: Vec<u8>,
    /// Without Content-Length the client must count while streaming.
    content_length: bool,
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 that answers GETs from a table and stops on drop.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(routes: BTreeMap<String, Body>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // Bounded even if a test forgets to drop the server.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => answer(stream, &routes),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(mut stream: std::net::TcpStream, routes: &BTreeMap<String, Body>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let response = match routes.get(&path) {
        Some(body) => {
            let mut r =
                b"HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nConnection: close\r\n"
                    .to_vec();
            if body.content_length {
                r.extend_from_slice(format!("Content-Length: {}\r\n", body.bytes.len()).as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            r.extend_from_slice(&body.bytes);
            r
        }
        None => {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        }
    };
    let _ = stream.write_all(&response);
    let _ = stream.flush();
}

/// One tar entry; `Raw` writes its name bytes unchecked, as a hostile archive would.
enum Entry {
    File(String, Vec<u8>),
    Raw(&'static [u8], Vec<u8>),
    Symlink(String, String),
}

fn targz(entries: &[Entry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        match entry {
            Entry::File(path, bytes) => {
                header.set_size(bytes.len() as u64);
                header.set_cksum();
                tar.append_data(&mut header, path, bytes.as_slice())
                    .unwrap();
            }
            Entry::Raw(name, bytes) => {
                header.set_size(bytes.len() as u64);
                header.set_entry_type(tar::EntryType::Regular);
                header.as_old_mut().name[..name.len()].copy_from_slice(name);
                header.set_cksum();
                tar.append(&header, bytes.as_slice()).unwrap();
            }
            Entry::Symlink(path, target) => {
                header.set_size(0);
                header.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A ThrottleKit checkout as a release archive does it: everything under one top folder.
fn checkout_entries(root: &Path) -> Vec<Entry> {
    tk_conform::contract::tree::list(root)
        .unwrap()
        .into_keys()
        .map(|rel| Entry::File(format!("throttlekit-main/{rel}"), read(&root.join(&rel))))
        .collect()
}

fn serve(path: &str, bytes: Vec<u8>, content_length: bool) -> Server {
    Server::start(BTreeMap::from([(
        path.to_owned(),
        Body {
            bytes,
            content_length,
        },
    )]))
}

#[test]
fn syncs_from_a_tar_gz_url() {
    let area = Area::new();
    write_throttlekit_checkout(&area.upstream());
    let archive = targz(&checkout_entries(&area.upstream()));
    let digest = tk_conform::contract::checksums::sha256_hex(&archive);
    let server = serve("/releases/contract.tar.gz", archive, true);
    let url = server.url("/releases/contract.tar.gz");
    let (code, stdout, stderr) = tk_conform(&[
        "contract",
        "sync",
        "--from",
        &url,
        "--to",
        area.target().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(verify(&area.target()).unwrap().is_ok());
    let source = std::fs::read_to_string(area.target().join("SOURCE")).unwrap();
    assert!(source.contains(&format!("source: {url}\n")), "{source}");
    assert!(
        source.contains(&format!("archive-sha256: {digest}\n")),
        "{source}"
    );
    assert_eq!(leftovers(&area.work(), &["contract"]), Vec::<String>::new());
}

#[test]
fn refuses_archive_entries_that_escape_or_link() {
    let area = Area::new();
    write_throttlekit_checkout(&area.upstream());
    let outside = tempfile::tempdir().unwrap();
    let absolute = format!("{}/abs.txt", outside.path().display()).into_bytes();
    let absolute: &'static [u8] = Box::leak(absolute.into_boxed_slice());
    let cases: [(&str, Entry, &str); 4] = [
        (
            "/dotdot.tar.gz",
            Entry::Raw(b"../escaped.txt", b"x".to_vec()),
            "entry `../escaped.txt` escapes the target",
        ),
        (
            "/nested.tar.gz",
            Entry::Raw(b"throttlekit-main/../../escaped.txt", b"x".to_vec()),
            "escapes the target",
        ),
        (
            "/absolute.tar.gz",
            Entry::Raw(absolute, b"x".to_vec()),
            "escapes the target",
        ),
        (
            "/link.tar.gz",
            Entry::Symlink(
                "throttlekit-main/contract/evil".into(),
                "/etc/passwd".into(),
            ),
            "is a link (to `/etc/passwd`)",
        ),
    ];
    for (path, bad, message) in cases {
        let mut entries = checkout_entries(&area.upstream());
        entries.insert(1, bad);
        let server = serve(path, targz(&entries), true);
        let err = refused(&area, &area.options(&server.url(path)));
        assert!(
            matches!(err, SyncError::ArchiveRefused { .. }),
            "{path}: {err}"
        );
        assert!(err.to_string().contains(message), "{path}: {err}");
    }
    assert!(!outside.path().join("abs.txt").exists());
}

#[test]
fn refuses_archives_over_the_size_limits() {
    let area = Area::new();
    write_throttlekit_checkout(&area.upstream());
    let archive = targz(&checkout_entries(&area.upstream()));
    let size = archive.len() as u64;
    for content_length in [true, false] {
        let server = serve("/big.tar.gz", archive.clone(), content_length);
        let mut options = area.options(&server.url("/big.tar.gz"));
        options.limits.max_archive_bytes = size - 1;
        let err = refused(&area, &options);
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("over the limit of {}", size - 1)),
            "{shown}"
        );
        assert!(err.is_check_failure());
    }
    // The unpacked size is bounded too (a small archive can inflate a lot).
    let server = serve("/bomb.tar.gz", archive, true);
    let mut options = area.options(&server.url("/bomb.tar.gz"));
    options.limits.max_unpacked_bytes = 4096;
    let shown = refused(&area, &options).to_string();
    assert!(shown.contains("unpack to more than 4096 bytes"), "{shown}");
}

#[test]
fn a_missing_archive_is_a_download_error() {
    let area = Area::new();
    let server = serve("/present.tar.gz", Vec::new(), true);
    let url = server.url("/absent.tar.gz");
    let (code, _, stderr) = tk_conform(&[
        "contract",
        "sync",
        "--from",
        &url,
        "--to",
        area.target().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
    assert!(verify(&area.target()).unwrap().is_ok());
}
