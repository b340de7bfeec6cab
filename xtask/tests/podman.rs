//! The podman builder for real: no registry is reachable, so the test makes
//! its own base image (a Debian root from debootstrap, `podman import`),
//! then `cargo xtask package --builder podman --image <that>` builds the RPM
//! inside a container; a second run reuses the builder image and the caches.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{containers_conf, debootstrap_image, ok};

/// Base image made by this test (kept between runs like any pulled image).
const BASE: &str = "localhost/my-agent-test-debian:bookworm";

fn package_in_podman(conf: &Path, dist: &Path) -> (String, f64) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "package",
            "--target",
            "host",
            "--builder",
            "podman",
            "--image",
            BASE,
        ])
        .arg("--dist-dir")
        .arg(dist)
        .env("CONTAINERS_CONF", conf)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "podman build failed:\n{log}");
    (log, secs)
}

#[test]
fn podman_builder_builds_the_rpm_and_reuses_image_and_caches() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = containers_conf(tmp.path());
    debootstrap_image(tmp.path(), &conf, BASE, "ca-certificates", &[]);

    let dist = tmp.path().join("dist");
    let (first, first_secs) = package_in_podman(&conf, &dist);
    let rpm = dist.join("my-agent-0.1.0-1.x86_64.rpm");
    let meta = fs::metadata(&rpm).unwrap_or_else(|e| panic!("{}: {e}\n{first}", rpm.display()));
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert_eq!(meta.uid(), uid, "the RPM belongs to the calling user");
    let info = ok(Command::new("rpm").arg("-qip").arg(&rpm));
    assert!(info.contains("Name        : my-agent"), "{info}");
    assert!(
        first.contains("==> podman: cargo xtask") && first.contains("--builder host"),
        "{first}"
    );

    // Second run: the same image, the cached components and the cached
    // cargo target directory; nothing of the agent is compiled again.
    fs::remove_file(&rpm).unwrap();
    let (second, second_secs) = package_in_podman(&conf, &dist);
    assert!(second.contains("==> podman: reusing image"), "{second}");
    assert!(!second.contains("Compiling my-agent"), "{second}");
    assert!(rpm.is_file());
    println!("podman builder: first run {first_secs:.1} s, second run {second_secs:.1} s");
}
