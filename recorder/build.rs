//! Compiles the XDP program (`xdp-prog/linecord_xdp.c`) with clang for `-target bpf`; the
//! object is embedded in the recorder binary (`backend::xdp_prog`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xdp-prog");
    let src = src_dir.join("linecord_xdp.c");
    let header = src_dir.join("linecord_xdp.h");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", header.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("linecord_xdp.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        // Debian keeps asm/types.h under the multiarch include directory.
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-I/usr/include/aarch64-linux-gnu")
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "compiling {} with {clang} failed ({s}); it needs the Debian packages clang, libbpf-dev \
             and linux-libc-dev: run `bash scripts/setup.sh`",
            src.display()
        ),
        Err(e) => panic!(
            "cannot run {clang} ({e}) to compile the XDP program {}: install clang, libbpf-dev and \
             linux-libc-dev (`bash scripts/setup.sh` does it), or set CLANG to a clang binary",
            src.display()
        ),
    }
}
