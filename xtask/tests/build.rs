//! Building through the real xtask binary: the build cache's reuse and
//! invalidation, a failing step's log tail, and a real libyaml build.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// A recipe that "builds" by copying a file into the prefix with sh.
fn tiny_recipe(name: &str, depends: &[&str], sha: &str, extra_comment: &str) -> String {
    let deps: Vec<String> = depends.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        r#"# {extra_comment}
name = "{name}"
version = "1"
license = "MIT"
license_files = ["LICENSE"]
homepage = "https://example.invalid/"
depends = [{deps}]

[[sources]]
sha256 = "{sha}"
subdir = "src-1"

[[steps]]
name = "install"
run = ["sh", "-c", "mkdir -p {{{{ destdir }}}}{{{{ prefix }}}}/share && cp data.txt {{{{ destdir }}}}{{{{ prefix }}}}/share/{name}.txt"]

[install]
files = ["share/{name}.txt"]
"#,
        deps = deps.join(", ")
    )
}

fn deps_run(tmp: &Path, recipes: &Path, downloads: &Path) -> (bool, String) {
    let mut args = product_args(recipes);
    args.extend([
        "deps".into(),
        "--sources-from".into(),
        downloads.display().to_string(),
    ]);
    let out = xtask(tmp, &args.iter().map(String::as_str).collect::<Vec<_>>());
    (out.status.success(), stderr(&out))
}

fn outcome(log: &str, component: &str) -> &'static str {
    if log.contains(&format!("==> {component} 1: built")) {
        "built"
    } else if log.contains(&format!("==> {component} 1: cached")) {
        "cached"
    } else {
        "absent"
    }
}

#[test]
fn cache_reuses_and_rebuilds_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let body = tarball("src-1", &[("LICENSE", "MIT"), ("data.txt", "payload")]);
    let sha = sha256(&body);
    let downloads = tmp.path().join("downloads");
    fs::create_dir(&downloads).unwrap();
    fs::write(downloads.join("src.tar.gz"), &body).unwrap();
    let recipes = recipes_dir(tmp.path(), &["top", "other"]);
    fs::write(
        recipes.join("base.toml"),
        tiny_recipe("base", &[], &sha, "v1"),
    )
    .unwrap();
    fs::write(
        recipes.join("top.toml"),
        tiny_recipe("top", &["base"], &sha, "v1"),
    )
    .unwrap();
    fs::write(
        recipes.join("other.toml"),
        tiny_recipe("other", &[], &sha, "v1"),
    )
    .unwrap();

    let (ok, log) = deps_run(tmp.path(), &recipes, &downloads);
    assert!(ok, "{log}");
    for c in ["base", "top", "other"] {
        assert_eq!(outcome(&log, c), "built", "{c}: {log}");
    }
    let staged = tmp.path().join("work/stage/opt/test-agent");
    assert_eq!(
        fs::read_to_string(staged.join("share/top.txt")).unwrap(),
        "payload"
    );
    assert!(staged.join("LICENSES/base-LICENSE").is_file());
    assert!(
        !Path::new("/opt/test-agent").exists(),
        "nothing is written to the host's /opt"
    );

    let mtime = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
    let staged_at = mtime(&staged.join("share/top.txt"));
    let (ok, log) = deps_run(tmp.path(), &recipes, &downloads);
    assert!(ok, "{log}");
    for c in ["base", "top", "other"] {
        assert_eq!(outcome(&log, c), "cached", "{c}: {log}");
    }
    assert!(log.contains("(3 cached, 0 built)"), "{log}");
    assert_eq!(
        mtime(&staged.join("share/top.txt")),
        staged_at,
        "an up-to-date stage is left untouched (cargo watches its files)"
    );

    // Changing base's recipe rebuilds base and its dependent, nothing else.
    fs::write(
        recipes.join("base.toml"),
        tiny_recipe("base", &[], &sha, "v2"),
    )
    .unwrap();
    let (ok, log) = deps_run(tmp.path(), &recipes, &downloads);
    assert!(ok, "{log}");
    assert_eq!(outcome(&log, "base"), "built", "{log}");
    assert_eq!(outcome(&log, "top"), "built", "{log}");
    assert_eq!(outcome(&log, "other"), "cached", "{log}");

    // A damaged entry is detected and rebuilt, not staged.
    let builds = tmp.path().join("cache/builds");
    for entry in fs::read_dir(&builds).unwrap() {
        let file = entry.unwrap().path().join("tree/share/other.txt");
        if file.exists() {
            fs::write(&file, "tampered").unwrap();
        }
    }
    let (ok, log) = deps_run(tmp.path(), &recipes, &downloads);
    assert!(ok, "{log}");
    assert!(log.contains("rebuilding a corrupt cache entry"), "{log}");
    assert_eq!(outcome(&log, "other"), "built", "{log}");
    assert_eq!(
        fs::read_to_string(staged.join("share/other.txt")).unwrap(),
        "payload"
    );
}

#[test]
fn failing_step_prints_log_tail_and_path() {
    let tmp = tempfile::tempdir().unwrap();
    let body = tarball("src-1", &[("LICENSE", "MIT")]);
    let sha = sha256(&body);
    let downloads = tmp.path().join("downloads");
    fs::create_dir(&downloads).unwrap();
    fs::write(downloads.join("src.tar.gz"), &body).unwrap();
    let recipes = recipes_dir(tmp.path(), &["broken"]);
    let recipe = tiny_recipe("broken", &[], &sha, "").replace(
        r#"run = ["sh", "-c", "mkdir"#,
        r#"run = ["sh", "-c", "for i in $(seq 1 100); do echo line $i; done; exit 3", "mkdir"#,
    );
    fs::write(recipes.join("broken.toml"), recipe).unwrap();

    let (ok, log) = deps_run(tmp.path(), &recipes, &downloads);
    assert!(!ok, "{log}");
    let log_path = tmp.path().join("work/logs/broken/01-install.log");
    assert!(
        log.contains(&format!("--- last 40 lines of {} ---", log_path.display())),
        "{log}"
    );
    assert!(
        log.contains("line 61\n") && log.contains("line 100\n"),
        "{log}"
    );
    assert!(!log.contains("line 60\n"), "only the last 40 lines: {log}");
    assert!(log.contains("step `install` failed"), "{log}");
    assert!(fs::read_to_string(log_path).unwrap().contains("line 1\n"));
    assert!(
        !tmp.path().join("cache/builds").exists()
            || fs::read_dir(tmp.path().join("cache/builds"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// The real libyaml recipe from its real tarball: sources come from the
/// machine's shared source cache when it has them, else through the
/// recipe's own chain (URLs, then the distribution's archive).
#[test]
fn builds_libyaml_from_its_real_tarball() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["deps".into(), "--only".into(), "libyaml".into()];
    if let Some(shared) = shared_source_cache() {
        args.extend(["--sources-from".into(), shared]);
    }
    let out = xtask(
        tmp.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("==> libyaml 0.2.5: built"), "{log}");

    let prefix = tmp.path().join("work/stage/opt/my-agent");
    for f in [
        "lib/libyaml-0.so.2",
        "include/yaml.h",
        "lib/pkgconfig/yaml-0.1.pc",
        "LICENSES/libyaml-License",
    ] {
        assert!(prefix.join(f).exists(), "{f} missing");
    }
    assert!(
        !prefix.join("lib/libyaml.la").exists(),
        "recipe removes libtool archives"
    );
    let pc = fs::read_to_string(prefix.join("lib/pkgconfig/yaml-0.1.pc")).unwrap();
    assert!(
        pc.contains("prefix=/opt/my-agent"),
        "built for the final prefix: {pc}"
    );

    let readelf = Command::new("readelf")
        .args(["-d"])
        .arg(prefix.join("lib/libyaml-0.so.2"))
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&readelf.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert_eq!(needed, ["libc.so.6"], "{dynamic}");
    assert!(
        dynamic.contains("(SONAME)") && dynamic.contains("[libyaml-0.so.2]"),
        "{dynamic}"
    );

    // A second run with nothing changed reuses the build.
    let out = xtask(
        tmp.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("==> libyaml 0.2.5: cached"), "{log}");
}

fn shared_source_cache() -> Option<String> {
    let dir = match std::env::var_os("MY_AGENT_CACHE_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => match std::env::var_os("XDG_CACHE_HOME") {
            Some(x) => Path::new(&x).join("my-agent"),
            None => Path::new(&std::env::var_os("HOME")?).join(".cache/my-agent"),
        },
    }
    .join("sources");
    dir.is_dir().then(|| dir.display().to_string())
}
