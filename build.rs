//! Compiles the vendored contract proto into gRPC code without a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "contract/throttlekit.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["contract"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
