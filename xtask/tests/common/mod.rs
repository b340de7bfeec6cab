//! Helpers shared by the xtask's integration tests: running the real xtask
//! binary, a one-shot HTTP server on loopback, and small source tarballs.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs the xtask binary with its caches and work directory inside `tmp`.
pub fn xtask(tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .arg("--cache-dir")
        .arg(tmp.join("cache"))
        .arg("--work-dir")
        .arg(tmp.join("work"))
        .env_remove("MY_AGENT_CACHE_DIR")
        .output()
        .expect("xtask runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Serves `response` (raw HTTP bytes) to every connection until the test
/// process ends; returns the base URL.
pub fn serve(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(&response);
            // Dropping the stream closes it: a short body is a truncation.
        }
    });
    format!("http://{addr}")
}

pub fn http_ok(body: &[u8], content_length: usize) -> Vec<u8> {
    let mut r =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n")
            .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A .tar.gz with `top/` holding `files`.
pub fn tarball(top: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("{top}/{name}"), body.as_bytes())
            .unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A recipes folder with the repository's tools table and a product file
/// listing `components`.
pub fn recipes_dir(tmp: &Path, components: &[&str]) -> PathBuf {
    let dir = tmp.join("recipes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo_root().join("recipes/tools.toml"),
        dir.join("tools.toml"),
    )
    .unwrap();
    let list: Vec<String> = components.iter().map(|c| format!("\"{c}\"")).collect();
    std::fs::write(
        dir.join("product.toml"),
        format!(
            "name = \"test-agent\"\nprefix = \"/opt/test-agent\"\nsummary = \"s\"\n\
             maintainer = \"m\"\nlicense = \"MIT\"\nhomepage = \"h\"\ncomponents = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    dir
}

pub fn product_args(recipes: &Path) -> Vec<String> {
    vec![
        "--product".into(),
        recipes.join("product.toml").display().to_string(),
    ]
}

/// Builds the package for `target` with the real xtask into `dist`. The work directory is
/// the checkout's own (target/my-agent): another one would give the agent's
/// -sys crates another prefix path and rebuild them.
pub fn package(dist: &Path, target: &str, release: u32, sign_key: Option<&Path>) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args([
        "package",
        "--target",
        target,
        "--rpm-release",
        &release.to_string(),
    ]);
    if let Some(key) = sign_key {
        cmd.arg("--sign-key").arg(key);
    }
    let out = cmd
        .arg("--dist-dir")
        .arg(dist)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "package failed:\n{log}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dist_tag = if target == "host" {
        String::new()
    } else {
        format!(".{target}")
    };
    dist.join(format!("my-agent-0.1.0-{release}{dist_tag}.x86_64.rpm"))
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A minimal root for `rpm --root`: /bin/sh, getent, groupadd, useradd and
/// the libraries they load, copied from this machine, and the account files.
pub fn throwaway_root(root: &Path) {
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "etc",
        "var/lib/rpm",
        "tmp",
        "run",
        "var/log",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(target, root.join(link)).unwrap();
    }
    let tools = [
        ("/bin/dash", "usr/bin/sh"),
        ("/usr/bin/getent", "usr/bin/getent"),
        ("/usr/sbin/groupadd", "usr/sbin/groupadd"),
        ("/usr/sbin/useradd", "usr/sbin/useradd"),
        ("/usr/sbin/usermod", "usr/sbin/usermod"),
        ("/usr/bin/sed", "usr/bin/sed"),
        ("/usr/bin/tail", "usr/bin/tail"),
    ];
    for (from, to) in tools {
        fs::copy(from, root.join(to)).unwrap();
        let ldd = ok(Command::new("ldd").arg(from));
        for line in ldd.lines() {
            let path = line
                .split("=>")
                .nth(1)
                .unwrap_or(line)
                .split('(')
                .next()
                .unwrap()
                .trim();
            if path.starts_with('/') {
                let real = fs::canonicalize(path).unwrap();
                let dest = root.join(path.trim_start_matches('/'));
                fs::create_dir_all(dest.parent().unwrap()).unwrap();
                if !dest.exists() {
                    fs::copy(real, dest).unwrap();
                }
            }
        }
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    fs::write(root.join("etc/gshadow"), "root:*::\n").unwrap();
    if Path::new("/etc/login.defs").exists() {
        fs::copy("/etc/login.defs", root.join("etc/login.defs")).unwrap();
    }
}

pub fn rpm_root(root: &Path) -> Command {
    let mut c = Command::new("rpm");
    c.arg("--root").arg(root);
    c
}
