//! Compiles the eBPF programs in `bpf/` with clang into `OUT_DIR`; the agent
//! embeds the objects. CO-RE: the programs declare the kernel types they read
//! in `bpf/glasshouse.h`, libbpf relocates against the running kernel's BTF.
//!
//! Also generates the client (and, for the tests' fake runtime, the server) of
//! the Kubernetes CRI subset in `proto/cri.proto` with tonic-prost-build (needs
//! `protoc`, like the `glasshouse-proto` crate).

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["sensors"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("no eBPF target architecture known for {other}"),
        Err(e) => panic!("CARGO_CFG_TARGET_ARCH: {e}"),
    };
    let clang = std::env::var("GLASSHOUSE_BPF_CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-changed=bpf/glasshouse.h");
    println!("cargo:rerun-if-env-changed=GLASSHOUSE_BPF_CLANG");
    for name in PROGRAMS {
        let src = format!("bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            .args(["-Ibpf", "-c", &src, "-o"])
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {clang} to compile {src} (install clang and libbpf-dev): {e}"));
        assert!(status.success(), "{clang} failed to compile {src}");
    }
    compile_cri_proto();
}

fn compile_cri_proto() {
    println!("cargo:rerun-if-changed=proto/cri.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/cri.proto"], &["proto"])
        .unwrap_or_else(|e| panic!("cannot compile proto/cri.proto (install protoc): {e}"));
}
