//! The whole product prefix, staged by the real xtask from the machine's
//! shared cache (warm after `cargo xtask deps`; a cold cache builds it all):
//! the promised libraries are there and every ELF loads its neighbours from
//! the prefix, never from the build host.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Libraries every target system provides; anything else must come from
/// the prefix.
const BASE_SYSTEM: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "ld-linux-x86-64.so.2",
];

fn stage() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["deps", "--work-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let prefix = tmp.path().join("stage/opt/my-agent");
    (tmp, prefix)
}

fn elf_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            elf_files(&path, out);
        } else if meta.is_file() {
            let mut magic = [0u8; 4];
            use std::io::Read;
            let n = fs::File::open(&path).unwrap().read(&mut magic).unwrap();
            if n == 4 && magic == *b"\x7fELF" {
                out.push(path);
            }
        }
    }
}

fn dynamic_entries(file: &Path, tag: &str) -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("({tag})")))
        .filter_map(|l| Some(l.split('[').nth(1)?.split(']').next()?.to_string()))
        .collect()
}

#[test]
fn prefix_is_complete_and_self_contained() {
    let (_tmp, prefix) = stage();
    for f in [
        "lib/libjemalloc.so.2",
        "lib/libyaml-0.so.2",
        "lib/libssl.so.3",
        "lib/libcrypto.so.3",
        "lib/libmariadb.so.3",
        "include/jemalloc/jemalloc.h",
        "include/yaml.h",
        "include/openssl/ssl.h",
        "include/mariadb/mysql.h",
    ] {
        assert!(prefix.join(f).is_file(), "{f} missing from the stage");
    }
    for link in ["lib/libmysqlclient.so", "lib/libmysqlclient_r.so"] {
        let target = fs::read_link(prefix.join(link)).unwrap();
        assert_eq!(target, Path::new("libmariadb.so.3"), "{link}");
    }

    let mut elves = Vec::new();
    elf_files(&prefix, &mut elves);
    assert!(elves.len() >= 6, "{elves:?}");
    let shipped: BTreeSet<String> = fs::read_dir(prefix.join("lib"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut problems = Vec::new();
    for elf in &elves {
        let needed = dynamic_entries(elf, "NEEDED");
        for lib in &needed {
            if !BASE_SYSTEM.contains(&lib.as_str()) && !shipped.contains(lib) {
                problems.push(format!(
                    "{}: NEEDED {lib} is neither in the prefix nor base system",
                    elf.display()
                ));
            }
        }
        let runpath =
            dynamic_entries(elf, "RUNPATH").join(":") + &dynamic_entries(elf, "RPATH").join(":");
        // Every prefix library must be found through an $ORIGIN entry, as
        // the loader would on the target host.
        for lib in needed.iter().filter(|l| shipped.contains(*l)) {
            let found = runpath
                .split(':')
                .filter_map(|r| r.strip_prefix("$ORIGIN"))
                .any(|rest| {
                    elf.parent()
                        .unwrap()
                        .join(format!(".{rest}"))
                        .join(lib)
                        .exists()
                });
            if !found {
                problems.push(format!(
                    "{}: {lib} not reachable through its RUNPATH {runpath:?}",
                    elf.display()
                ));
            }
        }
        if runpath.split(':').any(|p| p.starts_with('/')) {
            problems.push(format!("{}: absolute RUNPATH {runpath}", elf.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    staged_openssl_runs_with_the_staged_libcrypto(&prefix);
}

fn staged_openssl_runs_with_the_staged_libcrypto(prefix: &Path) {
    let openssl = prefix.join("bin/openssl");
    let out = Command::new(&openssl).arg("version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.starts_with("OpenSSL 3.0.20 "), "{version}");

    let out = Command::new("ldd").arg(&openssl).output().unwrap();
    let ldd = String::from_utf8_lossy(&out.stdout);
    let libcrypto = ldd
        .lines()
        .find(|l| l.contains("libcrypto.so.3"))
        .expect("links libcrypto");
    let resolved = libcrypto
        .split("=>")
        .nth(1)
        .unwrap()
        .split('(')
        .next()
        .unwrap()
        .trim();
    assert_eq!(
        fs::canonicalize(resolved).unwrap(),
        fs::canonicalize(prefix.join("lib/libcrypto.so.3")).unwrap(),
        "{ldd}"
    );

    // libmariadb finds the staged libssl too.
    let out = Command::new("ldd")
        .arg(prefix.join("lib/libmariadb.so.3"))
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&out.stdout);
    let libssl = ldd
        .lines()
        .find(|l| l.contains("libssl.so.3"))
        .expect("links libssl");
    assert!(
        libssl.contains(&prefix.join("lib").display().to_string()),
        "{ldd}"
    );
}
