//! Helpers shared by the xtask's integration tests: running the real xtask
//! binary, a one-shot HTTP server on loopback, and small source tarballs.

#![allow(dead_code, unused_imports)]

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
    let rpm = dist.join(format!("my-agent-0.1.0-{release}{dist_tag}.x86_64.rpm"));
    // The work directory depends on the builder auto chose (host or zig).
    let payload = log
        .lines()
        .find_map(|l| l.strip_prefix("==> package: staging the payload in "))
        .unwrap_or_else(|| panic!("no payload directory in\n{log}"));
    fs::write(
        dist.join(".work-dir"),
        Path::new(payload).parent().unwrap().to_str().unwrap(),
    )
    .unwrap();
    rpm
}

/// The work directory (`target/<name>[/<toolchain>]`) of the last
/// `package` into `dist`: its `payload/` is the RPM's tree.
pub fn work_dir_of(dist: &Path) -> PathBuf {
    PathBuf::from(fs::read_to_string(dist.join(".work-dir")).unwrap())
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
        copy_libraries(root, Path::new(from));
    }
    // Scriptlets redirect to /dev/null, as on any real host.
    fs::create_dir_all(root.join("dev")).unwrap();
    ok(Command::new("mknod")
        .args(["-m", "0666"])
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"]));
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

/// A collector on loopback for installed agents: the agent tests' sink
/// (`agent/test-support`).
pub use test_support::Sink as NdjsonSink;

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to `secs` for `f`, panicking with `what` and `detail()`.
pub fn wait_until(secs: u64, what: &str, f: impl Fn() -> bool, detail: impl Fn() -> String) {
    let start = std::time::Instant::now();
    while !f() {
        if start.elapsed().as_secs() >= secs {
            panic!("timed out after {secs} s waiting for {what}\n{}", detail());
        }
        thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// podman as this machine runs it: runc, cgroupfs, no default ulimits.
pub fn containers_conf(dir: &Path) -> PathBuf {
    let conf = dir.join("containers.conf");
    fs::write(
        &conf,
        "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n",
    )
    .unwrap();
    conf
}

/// The Debian mirror this machine's apt uses (deb822 or one-line format).
pub fn debian_mirror() -> String {
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "sources" || x == "list") {
                texts.push(fs::read_to_string(p).unwrap_or_default());
            }
        }
    }
    for text in &texts {
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["URIs:", uri, ..] if !uri.contains("security") => return uri.to_string(),
                ["deb", uri, suite, ..] if !uri.starts_with('[') && !suite.contains("security") => {
                    return uri.to_string()
                }
                _ => {}
            }
        }
    }
    panic!("no Debian mirror in /etc/apt: the base image is made with debootstrap from it");
}

/// Copies the libraries `binary` loads (per ldd) from this machine into
/// `root` at the same paths, unless they are already in `root`.
pub fn copy_libraries(root: &Path, binary: &Path) {
    let ldd = ok(Command::new("ldd").arg(binary));
    for line in ldd.lines() {
        let path = line
            .split("=>")
            .nth(1)
            .unwrap_or(line)
            .split('(')
            .next()
            .unwrap()
            .trim();
        if path.starts_with('/') && !Path::new(path).starts_with(root) {
            let dest = root.join(path.trim_start_matches('/'));
            if !dest.exists() {
                fs::create_dir_all(dest.parent().unwrap()).unwrap();
                fs::copy(fs::canonicalize(path).unwrap(), dest).unwrap();
            }
        }
    }
}

/// Makes `tag` from a Debian root (`debootstrap --variant=minbase` with
/// `include`, from this machine's mirror) unless it exists; there is no
/// registry to pull from. `changes` are `podman import --change` lines.
pub fn debootstrap_image(tmp: &Path, conf: &Path, tag: &str, include: &str, changes: &[&str]) {
    let podman = || {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", conf);
        c
    };
    if podman()
        .args(["image", "exists", tag])
        .status()
        .unwrap()
        .success()
    {
        return;
    }
    let root = tmp.join("debootstrap");
    ok(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={include}"),
            "bookworm",
        ])
        .arg(&root)
        .arg(debian_mirror()));
    let tar = tmp.join("root.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let mut import = podman();
    import.arg("import");
    for change in changes {
        import.args(["--change", change]);
    }
    ok(import.arg(&tar).arg(tag));
}

/// `systemd-analyze verify UNIT`, with `opt` bind-mounted over /opt in a
/// private mount namespace (ExecStart must exist; the host's /opt is never
/// touched): (success, stderr).
pub fn verify_unit(opt: &Path, unit: &Path) -> (bool, String) {
    let out = run(Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$1\" /opt && exec systemd-analyze verify \"$2\"",
            "sh",
        ])
        .arg(opt)
        .arg(unit));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A gpg run on its own home `home`, unattended and without passphrases.
pub fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.arg("--homedir").arg(home).args([
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    c
}

/// A throwaway OpenPGP key `<name>@localhost` made by gpg in its own home
/// under `dir`: `gen` after `--quick-gen-key UID` (e.g. rsa2048 sign
/// never), `extra` before it (e.g. --cert-digest-algo SHA1). Returns the
/// home and the armored secret key.
pub fn gpg_key(dir: &Path, name: &str, gen: &[&str], extra: &[&str]) -> (PathBuf, PathBuf) {
    let home = dir.join(format!("gnupg-{name}"));
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let uid = format!("{name} <{name}@localhost>");
    ok(gpg(&home)
        .args(extra)
        .arg("--quick-gen-key")
        .arg(&uid)
        .args(gen));
    let secret = dir.join(format!("{name}.asc"));
    fs::write(
        &secret,
        ok(gpg(&home).args(["--armor", "--export-secret-keys", &uid])),
    )
    .unwrap();
    (home, secret)
}
