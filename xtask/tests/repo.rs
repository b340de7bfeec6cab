//! `cargo xtask repo` judged by Debian's dnf (4.14) and createrepo_c, the
//! way a fleet installs: the release RPM first, then packages from the
//! signed repository with `gpgcheck` and `repo_gpgcheck` on; an upgrade
//! keeps a host's config edits (`.rpmnew` beside them) and a downgrade
//! works; a tampered `repomd.xml`, an unsigned RPM and a key that is not
//! the repository's are each refused (with small packages built here), and
//! the agent itself installs, upgrades and downgrades from its repository on
//! a root given what an EL host provides.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// `planted-1.0-<release>.<dist>.x86_64.rpm` with a config file, signed
/// or not.
fn planted(dir: &Path, dist: &str, release: u32, sign: Option<&Path>) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let conf = dir.join(format!("planted-{release}.conf"));
    fs::write(&conf, format!("setting = {release}\n")).unwrap();
    let mut b = rpm::PackageBuilder::new("planted", "1.0", "MIT", "x86_64", "a test package");
    b.using_config(rpm::BuildConfig::v4().compression(rpm::CompressionWithLevel::Gzip(6)))
        .release(format!("{release}.{dist}"));
    b.with_file(
        &conf,
        rpm::FileOptions::new("/etc/planted.conf")
            .config()
            .noreplace(),
    )
    .unwrap();
    let pkg = match sign {
        Some(key) => b
            .build_and_sign(rpm::signature::pgp::Signer::from_asc_file(key).unwrap())
            .unwrap(),
        None => b.build().unwrap(),
    };
    let path = dir.join(format!("planted-1.0-{release}.{dist}.x86_64.rpm"));
    pkg.write_file(&path).unwrap();
    path
}

fn repo(tmp: &Path, dist: &Path, out: &Path, key: &Path) {
    let out = xtask(
        tmp,
        &[
            "repo",
            "--dist-dir",
            dist.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--sign-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "xtask repo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// dnf on `root` as an EL `releasever` host would run it, with the
/// repository file the release RPM installed. `gpgkey` names a file on
/// the host, so the key the release RPM put in the root is named by path.
fn dnf(root: &Path, releasever: &str, key: &Path, args: &[&str]) -> Output {
    Command::new("dnf")
        .arg("--installroot")
        .arg(root)
        .args(["--releasever", releasever, "-y", "--refresh"])
        // EL8 and EL9's default; Debian's dnf skips a broken repository.
        .arg("--setopt=skip_if_unavailable=False")
        .arg(format!(
            "--setopt=reposdir={}",
            root.join("etc/yum.repos.d").display()
        ))
        .arg(format!(
            "--setopt=cachedir={}",
            root.join("var/cache/test-dnf").display()
        ))
        .arg(format!("--setopt=my-agent.gpgkey=file://{}", key.display()))
        .args(args)
        .output()
        .expect("dnf runs")
}

fn dnf_ok(root: &Path, releasever: &str, key: &Path, args: &[&str]) -> String {
    let out = dnf(root, releasever, key, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dnf {args:?}:\n{text}");
    text
}

fn dnf_refused(root: &Path, releasever: &str, key: &Path, args: &[&str]) -> String {
    let out = dnf(root, releasever, key, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "dnf {args:?} should have failed:\n{text}"
    );
    text
}

fn installed(root: &Path) -> String {
    let out = run(Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(["-q", "planted"]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A root with the release RPM installed (as a host's first step).
fn host_root(dir: &Path, name: &str, out: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join(name);
    fs::create_dir_all(&root).unwrap();
    ok(Command::new("rpm").arg("--root").arg(&root).arg("--initdb"));
    host_root_in(&root, out)
}

/// The release RPM installed in an existing `root`.
fn host_root_in(root: &Path, out: &Path) -> (PathBuf, PathBuf) {
    let root = root.to_path_buf();
    let release = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("my-agent-release-")
        })
        .expect("the release RPM at the top of the repository");
    ok(Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .args(["-i", "--nodeps", "--nosignature"])
        .arg(&release));
    let key = root.join("etc/pki/rpm-gpg/RPM-GPG-KEY-my-agent");
    let repo_file = fs::read_to_string(root.join("etc/yum.repos.d/my-agent.repo")).unwrap();
    assert!(
        repo_file.contains("gpgcheck=1")
            && repo_file.contains("repo_gpgcheck=1")
            && repo_file.contains("/$releasever/$basearch/"),
        "{repo_file}"
    );
    assert!(key.exists());
    (root, key)
}

#[test]
fn a_signed_repository_installs_upgrades_and_downgrades_with_dnf() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (home, secret) = gpg_key(t, "fleet", &["rsa2048", "sign", "never"], &[]);
    let dist1 = t.join("dist1");
    let dist2 = t.join("dist2");
    for dist in ["el7", "el8", "el9"] {
        // Unsigned: `repo` signs what is not signed yet.
        planted(&dist1, dist, 1, None);
        planted(&dist2, dist, 2, Some(&secret));
    }
    let out = t.join("repo");
    repo(t, &dist1, &out, &secret);

    // Metadata every target reads: gzip (EL7's yum reads no zstd), and
    // repomd.xml signed by the key the release RPM ships.
    for dist in ["el7", "el8", "el9"] {
        let repodata = out.join(dist).join("x86_64/repodata");
        let names: Vec<String> = fs::read_dir(&repodata)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with("primary.xml.gz")),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.ends_with(".zst")), "{names:?}");
        ok(gpg(&home)
            .arg("--verify")
            .arg(repodata.join("repomd.xml.asc"))
            .arg(repodata.join("repomd.xml")));
    }

    for (dist, releasever) in [("el9", "9"), ("el8", "8")] {
        let (root, key) = host_root(t, &format!("root-{dist}"), &out);
        dnf_ok(&root, releasever, &key, &["install", "planted"]);
        assert_eq!(installed(&root), format!("planted-1.0-1.{dist}.x86_64"));
        fs::write(root.join("etc/planted.conf"), "edited by the DBA\n").unwrap();
    }

    // Release 2 joins the repository (release 1 stays: downgrades exist).
    repo(t, &dist2, &out, &secret);
    for (dist, releasever) in [("el9", "9"), ("el8", "8")] {
        let root = t.join(format!("root-{dist}"));
        let key = root.join("etc/pki/rpm-gpg/RPM-GPG-KEY-my-agent");
        dnf_ok(&root, releasever, &key, &["upgrade"]);
        assert_eq!(installed(&root), format!("planted-1.0-2.{dist}.x86_64"));
        assert_eq!(
            fs::read_to_string(root.join("etc/planted.conf")).unwrap(),
            "edited by the DBA\n",
            "the edit survives the upgrade"
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/planted.conf.rpmnew")).unwrap(),
            "setting = 2\n"
        );
        dnf_ok(&root, releasever, &key, &["downgrade", "planted"]);
        assert_eq!(installed(&root), format!("planted-1.0-1.{dist}.x86_64"));
    }

    let root = t.join("root-el9");
    let key = root.join("etc/pki/rpm-gpg/RPM-GPG-KEY-my-agent");
    let repodata = out.join("el9/x86_64/repodata");

    // A key that is not the repository's: its metadata is refused.
    let (stranger_home, _) = gpg_key(t, "stranger", &["rsa2048", "sign", "never"], &[]);
    let other_public = t.join("stranger.pub");
    fs::write(
        &other_public,
        ok(gpg(&stranger_home).args(["--armor", "--export", "stranger@localhost"])),
    )
    .unwrap();
    // A fresh host given the stranger's key instead of the release RPM's
    // (a host that has imported the right one keeps trusting it).
    let (fresh, _) = host_root(t, "root-stranger", &out);
    let text = dnf_refused(&fresh, "9", &other_public, &["install", "planted"]);
    assert!(text.to_lowercase().contains("gpg"), "{text}");
    assert_eq!(installed(&fresh), "package planted is not installed");

    // A tampered repomd.xml: its signature no longer matches.
    let repomd = repodata.join("repomd.xml");
    let original = fs::read_to_string(&repomd).unwrap();
    fs::write(&repomd, original.replace("<revision>", "<revision>1")).unwrap();
    let text = dnf_refused(&root, "9", &key, &["upgrade"]);
    assert!(
        text.contains("repomd.xml GPG signature verification error"),
        "{text}"
    );
    fs::write(&repomd, &original).unwrap();

    // An unsigned RPM slipped into the repository (metadata re-signed by
    // the right key): refused by gpgcheck.
    let unsigned = planted(&t.join("dist3"), "el9", 3, None);
    fs::copy(
        &unsigned,
        out.join("el9/x86_64").join(unsigned.file_name().unwrap()),
    )
    .unwrap();
    ok(Command::new("createrepo_c")
        .args(["--update", "--general-compress-type", "gz"])
        .arg(out.join("el9/x86_64")));
    ok(gpg(&home)
        .args(["--yes", "--armor", "--detach-sign", "--output"])
        .arg(repodata.join("repomd.xml.asc"))
        .arg(&repomd));
    let text = dnf_refused(&root, "9", &key, &["upgrade"]);
    assert!(
        text.contains("not signed") || text.contains("GPG check FAILED"),
        "{text}"
    );
    assert_eq!(installed(&root), "planted-1.0-1.el9.x86_64");
}

/// What an EL host's base system gives the agent's package: every
/// Requires of `agent_rpm` but rpm's own features (glibc's sonames,
/// /bin/sh, the tools its %pre runs), provided by one small package that
/// the test installs first, as the OS would have. The tools themselves are
/// in the root (`throwaway_root`), so the scriptlets run for real.
fn el_base(dir: &Path, agent_rpm: &Path) -> PathBuf {
    let requires = ok(Command::new("rpm")
        .args(["-qp", "--requires"])
        .arg(agent_rpm));
    let mut b = rpm::PackageBuilder::new("el-base", "1", "MIT", "x86_64", "an EL base system");
    b.using_config(rpm::BuildConfig::v4().compression(rpm::CompressionWithLevel::Gzip(6)));
    let mut provided = 0;
    for r in requires.lines().map(str::trim) {
        if r.is_empty() || r.starts_with("rpmlib(") || r.starts_with("my-agent") {
            continue;
        }
        // `/bin/sh`, `libc.so.6()(64bit)`, `libc.so.6(GLIBC_2.17)(64bit)`.
        b.provides(rpm::Dependency::any(r.split_whitespace().next().unwrap()));
        provided += 1;
    }
    assert!(provided > 5, "the agent's Requires:\n{requires}");
    let path = dir.join("el-base-1-1.x86_64.rpm");
    b.build().unwrap().write_file(&path).unwrap();
    path
}

fn installed_agent(root: &Path) -> String {
    let out = run(Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(["-q", "my-agent"]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The agent itself from its repository, as a fleet gets it: release 1 of
/// el8 and el9 built by `cargo xtask package` (unsigned: `repo` signs
/// them), installed with dnf on a root that has what an EL host has;
/// release 2 published beside it, `dnf upgrade` keeps the DBA's config
/// edit (the new default as `.rpmnew`) and what the agent keeps in
/// /var/lib/my-agent, and `dnf downgrade` goes back.
#[test]
fn the_agent_installs_upgrades_and_downgrades_from_its_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (_home, secret) = gpg_key(t, "fleet", &["rsa2048", "sign", "never"], &[]);
    let (dist1, dist2) = (t.join("dist1"), t.join("dist2"));
    let mut agents = Vec::new();
    for dist in ["el9", "el8"] {
        agents.push(package(&dist1, dist, 1, None));
        package(&dist2, dist, 2, None);
    }
    let out = t.join("repo");
    repo(t, &dist1, &out, &secret);
    // Each RPM's SBOM is published beside it.
    for dist in ["el8", "el9"] {
        let sbom = out.join(format!(
            "{dist}/x86_64/my-agent-0.1.0-1.{dist}.x86_64.cdx.json"
        ));
        assert!(sbom.is_file(), "{} is missing", sbom.display());
    }

    let config = "etc/my-agent/my-agent.yml";
    for ((dist, releasever), agent) in [("el9", "9"), ("el8", "8")].into_iter().zip(&agents) {
        let root = t.join(format!("agent-{dist}"));
        throwaway_root(&root);
        ok(Command::new("rpm").arg("--root").arg(&root).arg("--initdb"));
        let base = el_base(t, agent);
        ok(Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .arg("-i")
            .arg(&base));
        let (root, key) = host_root_in(&root, &out);
        let text = dnf_ok(&root, releasever, &key, &["install", "my-agent"]);
        assert_eq!(
            installed_agent(&root),
            format!("my-agent-0.1.0-1.{dist}.x86_64"),
            "{text}"
        );
        ok(Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .args(["-V", "my-agent"]));
        fs::write(root.join(config), "# edited by the DBA\n").unwrap();
        fs::write(root.join("var/lib/my-agent/positions.json"), "kept").unwrap();
    }

    repo(t, &dist2, &out, &secret);
    for (dist, releasever) in [("el9", "9"), ("el8", "8")] {
        let root = t.join(format!("agent-{dist}"));
        let key = root.join("etc/pki/rpm-gpg/RPM-GPG-KEY-my-agent");
        dnf_ok(&root, releasever, &key, &["upgrade", "my-agent"]);
        assert_eq!(
            installed_agent(&root),
            format!("my-agent-0.1.0-2.{dist}.x86_64")
        );
        assert_eq!(
            fs::read_to_string(root.join(config)).unwrap(),
            "# edited by the DBA\n",
            "the edit survives the upgrade"
        );
        let rpmnew = fs::read_to_string(root.join(format!("{config}.rpmnew"))).unwrap();
        assert!(rpmnew.contains(&format!("0.1.0-2.{dist}")), "{rpmnew}");
        assert_eq!(
            fs::read_to_string(root.join("var/lib/my-agent/positions.json")).unwrap(),
            "kept"
        );
        dnf_ok(&root, releasever, &key, &["downgrade", "my-agent"]);
        assert_eq!(
            installed_agent(&root),
            format!("my-agent-0.1.0-1.{dist}.x86_64")
        );
        assert_eq!(
            fs::read_to_string(root.join("var/lib/my-agent/positions.json")).unwrap(),
            "kept"
        );
        assert!(root.join("opt/my-agent/bin/my-agent").is_file());
    }
}
