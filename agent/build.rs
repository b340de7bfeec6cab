//! Links the agent against the staged prefix, never the host's libraries.
//!
//! The xtask sets MY_AGENT_STAGED_PREFIX (and OPENSSL_DIR, JEMALLOC_OVERRIDE,
//! PKG_CONFIG_PATH for the -sys crates). A plain `cargo build` in a checkout
//! falls back to the default stage under target/, and fails with the command
//! to run when there is none.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=MY_AGENT_STAGED_PREFIX");
    let staged = match env::var_os("MY_AGENT_STAGED_PREFIX") {
        Some(p) => PathBuf::from(p),
        None => {
            let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
            root.join("target/my-agent/stage/opt/my-agent")
        }
    };
    let lib = staged.join("lib");
    if !lib.join("libyaml-0.so.2").exists() {
        panic!(
            "no staged prefix at {}: run `cargo xtask deps` first (or build with `cargo xtask agent`)",
            staged.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", lib.display());
    // Installed layout: <prefix>/bin/my-agent loads <prefix>/lib.
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib");
    // A GNU build id names the binary's debug file in the debuginfo RPM
    // (/usr/lib/debug/.build-id/xx/yyyy.debug). Debian's gcc asks the
    // linker for one by default; `zig cc` (cargo-zigbuild) does not.
    println!("cargo:rustc-link-arg-bins=-Wl,--build-id=sha1");
    // Debug builds (tests) run from target/, where $ORIGIN/../lib is not the
    // prefix: let them find the stage. Release builds, which are packaged,
    // never carry a build-tree path.
    if env::var("PROFILE").as_deref() == Ok("debug") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
