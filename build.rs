//! Compiles the vendored contract proto into gRPC code without a system `protoc`, and embeds
//! the contract folder (`contract::bundled`) so an installed binary runs outside a checkout.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "contract/throttlekit.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["contract"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    bundle_contract()?;
    Ok(())
}

/// Writes `$OUT_DIR/bundled_contract.rs`: every file under `contract/` as `(relative path,
/// include_bytes!)`, sorted.
fn bundle_contract() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("contract");
    println!("cargo:rerun-if-changed=contract");
    let mut files = Vec::new();
    walk(&root, &mut files)?;
    files.sort();
    let mut out = String::from("pub const FILES: &[(&str, &[u8])] = &[\n");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let rel = file
            .strip_prefix(&root)?
            .to_string_lossy()
            .replace('\\', "/");
        out.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            file.display().to_string()
        ));
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR")?).join("bundled_contract.rs");
    std::fs::write(dest, out)?;
    Ok(())
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else if path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}
