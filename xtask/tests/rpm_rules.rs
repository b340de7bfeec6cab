//! Each target's rpm rules (`[target.NAME.rpm]` in recipes/targets.toml)
//! against real packages and real keys made by gpg: a planted
//! `rpmlib(LargeFiles)` is refused for el7 only; an RSA key passes every
//! target; an Ed25519 key is refused for el7 and el8 (accepted for el9); a
//! key whose signing subkey rpm-rs would use is refused for el7; a key with
//! SHA-1 self-signatures is refused for el9.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use xtask::package::rpm_rules::{check_package, check_sign_key};
use xtask::targets::{Target, TargetTable};

fn targets() -> Vec<Target> {
    TargetTable::load(&repo_root().join("recipes/targets.toml"))
        .unwrap()
        .select("all")
        .unwrap()
}

fn target(name: &str) -> Target {
    targets().into_iter().find(|t| t.name == name).unwrap()
}

/// A small RPM requiring `rpmlib(<feature>)` besides what rpm-rs adds.
fn package_requiring(dir: &Path, feature: Option<&str>, xz: bool) -> PathBuf {
    let mut b = rpm::PackageBuilder::new("planted", "1.0", "MIT", "x86_64", "a test package");
    let compression = if xz {
        rpm::CompressionWithLevel::Xz(6)
    } else {
        rpm::CompressionWithLevel::Gzip(6)
    };
    b.using_config(rpm::BuildConfig::v4().compression(compression));
    let file = dir.join("hello");
    fs::write(&file, "hello\n").unwrap();
    b.with_file(&file, rpm::FileOptions::new("/opt/planted/hello"))
        .unwrap();
    if let Some(f) = feature {
        b.requires(rpm::Dependency::rpmlib(f, "4.12.0-1"));
    }
    let path = dir.join(format!("planted-{}.rpm", feature.unwrap_or("none")));
    b.build().unwrap().write_file(&path).unwrap();
    path
}

#[test]
fn a_planted_rpmlib_feature_is_refused_for_the_target_that_lacks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = package_requiring(tmp.path(), None, false);
    for t in targets() {
        check_package(&clean, &t).unwrap_or_else(|e| panic!("{}: {e:#}", t.name));
    }
    let planted = package_requiring(tmp.path(), Some("LargeFiles"), false);
    let e = format!("{:#}", check_package(&planted, &target("el7")).unwrap_err());
    assert!(
        e.contains("planted-LargeFiles.rpm: target el7 (rpm 4.11.3) cannot install it")
            && e.contains("requires rpmlib(LargeFiles), which rpm 4.11.3 does not provide"),
        "{e}"
    );
    check_package(&planted, &target("el8")).unwrap();
    check_package(&planted, &target("el9")).unwrap();
    // The real rpm agrees on what the package requires.
    let requires = ok(Command::new("rpm")
        .args(["-qp", "--requires"])
        .arg(&planted));
    assert!(
        requires.contains("rpmlib(LargeFiles) <= 4.12.0-1"),
        "{requires}"
    );
}

/// A throwaway key: `gen` for gpg's `--quick-gen-key`, plus a signing
/// subkey of algorithm `subkey` when given; returns the armored secret key.
fn key_with(dir: &Path, name: &str, gen: &[&str], subkey: Option<&str>, extra: &[&str]) -> PathBuf {
    let (home, secret) = gpg_key(dir, name, gen, extra);
    let Some(algo) = subkey else { return secret };
    let uid = format!("{name}@localhost");
    let listing = ok(gpg(&home).args(["--with-colons", "--list-keys", &uid]));
    let fpr = listing
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| f.len() == 40))
        .unwrap()
        .to_string();
    ok(gpg(&home).args(["--quick-add-key", &fpr, algo, "sign", "never"]));
    fs::write(
        &secret,
        ok(gpg(&home).args(["--armor", "--export-secret-keys", &uid])),
    )
    .unwrap();
    secret
}

#[test]
fn signing_keys_are_held_to_each_targets_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let all = targets();

    let rsa = key_with(tmp.path(), "rsa", &["rsa2048", "sign", "never"], None, &[]);
    check_sign_key(&rsa, &all).unwrap();

    let ed = key_with(tmp.path(), "ed", &["ed25519", "sign", "never"], None, &[]);
    let e = format!("{:#}", check_sign_key(&ed, &all).unwrap_err());
    assert!(
        e.contains("target el7 (rpm 4.11.3) cannot verify eddsa signatures")
            && e.contains("target el8 (rpm 4.14.3) cannot verify eddsa signatures")
            && !e.contains("target el9")
            && e.contains("rsa4096"),
        "{e}"
    );
    check_sign_key(&ed, &[target("el9")]).unwrap();

    let sub = key_with(
        tmp.path(),
        "sub",
        &["rsa2048", "cert", "never"],
        Some("rsa2048"),
        &[],
    );
    let e = format!("{:#}", check_sign_key(&sub, &[target("el7")]).unwrap_err());
    assert!(
        e.contains("target el7 (rpm 4.11.3) verifies only signatures made by a primary key")
            && e.contains("its signing subkey"),
        "{e}"
    );
    check_sign_key(&sub, &[target("el8"), target("el9")]).unwrap();

    let sha1 = key_with(
        tmp.path(),
        "sha1",
        &["rsa2048", "sign", "never"],
        None,
        &["--cert-digest-algo", "SHA1"],
    );
    let e = format!("{:#}", check_sign_key(&sha1, &all).unwrap_err());
    assert!(
        e.contains("target el9 (rpm 4.16.1) refuses keys with SHA-1 self-signatures")
            && !e.contains("target el7"),
        "{e}"
    );

    // The package command refuses the key before building anything.
    let out = xtask(
        tmp.path(),
        &[
            "package",
            "--target",
            "el7",
            "--sign-key",
            ed.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("target el7 (rpm 4.11.3) cannot verify eddsa signatures"),
        "{stderr}"
    );
}
