//! Generates the `glasshouse.v1` gRPC code with tonic-prost-build (needs `protoc`,
//! installed by `deploy/local/setup.sh` from Debian's `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=glasshouse/v1/ingest.proto");
    tonic_prost_build::configure()
        .bytes(".glasshouse.v1.StringDef.value")
        .compile_protos(&["glasshouse/v1/ingest.proto"], &["."])?;
    Ok(())
}
