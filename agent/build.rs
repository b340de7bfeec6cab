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
    // Release builds lay the functions that run at start-up, at idle and
    // while shipping out first and together: the kernel maps the pages
    // around each page of code touched (64 KiB, or a whole large folio of
    // the page cache), so spread over the whole binary they kept 2.5 MiB of
    // it resident at idle, together under 1 MiB.
    if env::var("PROFILE").as_deref() == Ok("release") {
        let script = hot_text_script();
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}

/// Writes a linker script placing the functions `link/hot-text.txt` names,
/// in its order, in a `.text.hot` section ahead of `.text` (and the gdb
/// scripts section before `.rodata`), and returns its path. `INSERT`
/// keeps the linker's own layout for the rest (lld and GNU ld alike). A
/// name that matches nothing is only left out.
fn hot_text_script() -> PathBuf {
    let list = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("link/hot-text.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (written by `cargo xtask bench --run hot-text`)",
            list.display()
        )
    });
    let mut script = String::from("SECTIONS {\n  .text.hot : {\n");
    // Code no profile lists: the C runtime's start-up (`_start` in crt1.o or
    // Scrt1.o, gcc's crtbegin*.o), which runs in every process, and the
    // allocator shims every allocation goes through, a few instructions
    // that jump on into jemalloc, which callgrind does not report. Left in
    // `.text` they kept its first page, and the 64 KiB around it, resident.
    script.push_str("    *crt1.o(.text .text.*)\n    *crtbegin*.o(.text .text.*)\n");
    for shim in ["alloc", "dealloc", "realloc", "alloc_zeroed"] {
        script.push_str(&format!("    *(.text.*__rust_{shim})\n"));
    }
    for (n, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        // A name is one token of the script: anything else would change
        // its meaning, or the link.
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.$*".contains(&b))
        {
            panic!(
                "{}:{}: expected a symbol name (letters, digits, `_ . $` and `*` for a hash), found `{name}`",
                list.display(),
                n + 1
            );
        }
        // LLVM puts a function it deems cold in `.text.unlikely.<name>`.
        script.push_str(&format!("    *(.text.{name} .text.unlikely.{name})\n"));
    }
    // Ahead of `.text`: the one anchor every linker here has (zig's links
    // no `.init`, and refuses to insert after a section it lacks).
    script.push_str("  }\n} INSERT BEFORE .text;\n");
    // `main` reads a byte of the gdb pretty-printer section (rustc keeps
    // the section alive that way), which lies among the unwind tables: the
    // one read mapped 64 KiB of them. Beside the read-only data, which is
    // read anyway, it maps nothing more.
    script.push_str(
        "SECTIONS {\n  .debug_gdb_scripts : { KEEP(*(.debug_gdb_scripts)) }\n} INSERT BEFORE .rodata;\n",
    );
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("hot-text.ld");
    std::fs::write(&out, script).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    out
}
