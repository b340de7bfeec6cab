//! Building for the fleet on this machine (glibc newer than every EL):
//! `cargo xtask package --target el7` with no other flag goes through zig,
//! stays within glibc 2.17, installs in a throwaway root, and the agent from
//! that root passes the agent's own shipping and MariaDB tests.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{ok, package, rpm_root, throwaway_root};

/// `GLIBC_2.17` -> [2, 17].
fn glibc_version(s: &str) -> Vec<u32> {
    s.split('.').map(|p| p.parse().unwrap()).collect()
}

/// Installs `rpm` into a fresh throwaway root under `dir` and returns it.
fn install(dir: &Path, rpm: &Path) -> std::path::PathBuf {
    let root = dir.join("root");
    throwaway_root(&root);
    // A MySQL host: the server's group exists before the agent arrives.
    let group = root.join("etc/group");
    let mut groups = fs::read_to_string(&group).unwrap();
    groups.push_str("mysql:x:27:\n");
    fs::write(&group, groups).unwrap();
    fs::write(root.join("etc/gshadow"), "root:*::\nmysql:!::\n").unwrap();
    ok(rpm_root(&root).arg("--initdb"));
    ok(rpm_root(&root)
        .args(["-i", "--nodeps", "--noplugins"])
        .arg(rpm));
    root
}

fn check_target(dir: &Path, target: &str, ceiling: &[u32], payload: &str) -> std::path::PathBuf {
    let rpm = package(&dir.join("dist"), target, 1, None);
    assert!(
        rpm.ends_with(format!("my-agent-0.1.0-1.{target}.x86_64.rpm")),
        "{}",
        rpm.display()
    );

    let requires = ok(Command::new("rpm").args(["-qp", "--requires"]).arg(&rpm));
    let mut newest = Vec::new();
    for line in requires.lines() {
        if let Some(v) = line.split("(GLIBC_").nth(1) {
            let v = glibc_version(v.trim_end_matches(")(64bit)"));
            assert!(v.as_slice() <= ceiling, "{target}: {line}");
            newest = newest.max(v);
        }
    }
    assert!(
        !newest.is_empty(),
        "{target}: no GLIBC_ requirement in\n{requires}"
    );
    assert!(
        !requires.contains("PayloadIsZstd"),
        "{target}: zstd payload\n{requires}"
    );
    let compressor = ok(Command::new("rpm")
        .args(["-qp", "--qf", "%{PAYLOADCOMPRESSOR}"])
        .arg(&rpm));
    assert_eq!(compressor, payload, "{target}");

    // The health report, per ELF, in the manifest.
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(dir.join(format!("dist/my-agent-0.1.0-1.{target}.manifest.json"))).unwrap(),
    )
    .unwrap();
    let elves = manifest["elves"].as_array().unwrap();
    assert!(elves.len() >= 5, "{elves:?}");
    for e in elves {
        if let Some(v) = e["max_glibc"].as_str() {
            assert!(glibc_version(v).as_slice() <= ceiling, "{target}: {e}");
        }
    }
    assert!(
        elves
            .iter()
            .any(|e| e["path"] == "/opt/my-agent/bin/my-agent"),
        "{elves:?}"
    );

    let root = install(dir, &rpm);
    // %post made the service user a member of the mysql group, so it can
    // read mysql:mysql 0640 logs.
    let groups = fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        groups
            .lines()
            .any(|l| l.starts_with("mysql:") && l.ends_with(":my-agent")),
        "{target}: {groups}"
    );
    let agent = root.join("opt/my-agent/bin/my-agent");
    ok(Command::new(&agent)
        .arg("--config")
        .arg(root.join("etc/my-agent/my-agent.yml"))
        .arg("--dry-run"));
    let ldd = ok(Command::new("ldd").arg(&agent));
    let from_root = fs::canonicalize(root.join("opt/my-agent/lib")).unwrap();
    for lib in [
        "libmariadb.so.3",
        "libssl.so.3",
        "libyaml-0.so.2",
        "libjemalloc.so.2",
    ] {
        let path = ldd
            .lines()
            .find(|l| l.contains(lib))
            .and_then(|l| l.split("=>").nth(1))
            .and_then(|p| p.split('(').next())
            .map(|p| fs::canonicalize(p.trim()).unwrap());
        assert!(
            path.as_ref().is_some_and(|p| p.starts_with(&from_root)),
            "{target}: {lib} from {}:\n{ldd}",
            from_root.display()
        );
    }
    root
}

#[test]
fn el7_and_el8_rpms_through_zig_install_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    let el7 = check_target(&tmp.path().join("el7"), "el7", &[2, 17], "gzip");
    let el8 = check_target(&tmp.path().join("el8"), "el8", &[2, 28], "xz");

    // One zig build (glibc 2.17) serves every EL target: the packages differ
    // only in packaging.
    let bin = "opt/my-agent/bin/my-agent";
    assert_eq!(
        fs::read(el7.join(bin)).unwrap(),
        fs::read(el8.join(bin)).unwrap(),
        "el7 and el8 share one agent build"
    );

    // Each installed agent, from its own root, passes the agent's own
    // tests: 100,000 lines to a loopback sink, and queries through that
    // root's libmariadb against a real MariaDB server. The test binaries
    // are the ones `cargo test` built already; MY_AGENT_BIN points their
    // harness at the installed agent.
    for (target, root) in [("el7", &el7), ("el8", &el8)] {
        let out = Command::new(env!("CARGO"))
            .current_dir(common::repo_root())
            .args([
                "test",
                "--locked",
                "-p",
                "my-agent",
                "--test",
                "ship",
                "--test",
                "mysql",
                "--",
                "ships_100k_lines",
                "mysql_query_shapes_errors_and_recovery",
            ])
            .env("MY_AGENT_BIN", root.join(bin))
            .output()
            .unwrap();
        let log = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "agent tests against the {target} agent:\n{log}"
        );
        // Both tests ran (a filter that matched nothing would pass as well).
        assert_eq!(
            log.matches("test result: ok. 1 passed").count(),
            2,
            "{target}: {log}"
        );
    }
}
