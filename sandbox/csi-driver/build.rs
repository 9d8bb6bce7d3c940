//! Generates the CSI gRPC server code from the vendored spec (proto/csi.proto, CSI spec v1.12.0
//! from the Go module github.com/container-storage-interface/spec). protox parses it in Rust, so
//! no protoc is needed on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let descriptors = protox::compile(["csi.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        // Unimplemented for every RPC we leave out (Node, GroupController, ...).
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto/csi.proto");
    Ok(())
}
