//! `cargo xtask package` end to end, judged by the real tools: rpm, rpmlint,
//! shellcheck, systemd-analyze, and an install / upgrade / erase in a
//! throwaway root with `rpm --root`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, package, repo_root, rpm_root, run, throwaway_root};

#[test]
fn package_layout_lint_install_upgrade_erase() {
    let tmp = tempfile::tempdir().unwrap();
    let rpm1 = package(&tmp.path().join("dist1"), "el9", 1, None);
    let work = common::work_dir_of(&tmp.path().join("dist1"));

    // Reproducible: the same commit twice gives the same bytes.
    let again = package(&tmp.path().join("dist1-again"), "el9", 1, None);
    assert_eq!(
        fs::read(&rpm1).unwrap(),
        fs::read(&again).unwrap(),
        "two builds are byte-identical"
    );
    check_sbom(&rpm1, &again, &work.join("payload"));

    let info = ok(Command::new("rpm").arg("-qip").arg(&rpm1));
    for want in [
        "Name        : my-agent",
        "Version     : 0.1.0",
        "Release     : 1.el9",
        "Architecture: x86_64",
    ] {
        assert!(info.contains(want), "{want}\n{info}");
    }
    let digest = ok(Command::new("rpm").arg("-Kv").arg(&rpm1));
    assert!(digest.contains("Header SHA256 digest: OK"), "{digest}");
    assert!(digest.contains("Payload SHA256 digest: OK"), "{digest}");

    let list = ok(Command::new("rpm").arg("-qlvp").arg(&rpm1));
    let line = |path: &str| -> String {
        list.lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} not in\n{list}"))
            .to_string()
    };
    assert!(
        line("/etc/my-agent/my-agent.yml").starts_with("-rw-r-----")
            && line("/etc/my-agent/my-agent.yml").contains("root     my-agent")
    );
    assert!(
        line("/var/log/my-agent").starts_with("drwxr-x---")
            && line("/var/log/my-agent").contains("my-agent my-agent")
    );
    assert!(line("/var/lib/my-agent").contains("my-agent my-agent"));
    assert!(line("/opt/my-agent/bin/my-agent").starts_with("-rwxr-xr-x"));
    assert!(line("/opt/my-agent/lib/libssl.so.3").contains("root     root"));
    line("/usr/lib/systemd/system/my-agent.service");
    line("/etc/rc.d/init.d/my-agent");
    line("/opt/my-agent/LICENSES/openssl-LICENSE.txt");
    for unowned in [
        "/opt",
        "/etc",
        "/usr/lib/systemd/system",
        "/var/log",
        "/var/lib",
    ] {
        assert!(
            !list.lines().any(|l| l.ends_with(&format!(" {unowned}"))),
            "{unowned} must not be owned"
        );
    }
    // Lean: nothing that only building against the prefix needs.
    for dev in [
        "/opt/my-agent/include",
        "/opt/my-agent/man",
        "/opt/my-agent/lib/pkgconfig",
        "/opt/my-agent/lib/libssl.so",
        "/opt/my-agent/lib/libjemalloc.a",
        "/opt/my-agent/bin/mysql_config",
    ] {
        assert!(
            !list.lines().any(|l| l.ends_with(&format!(" {dev}"))),
            "{dev} is in the package"
        );
    }
    let docs = ok(Command::new("rpm").args(["-qdp"]).arg(&rpm1));
    assert!(docs.contains("/usr/share/doc/my-agent/README.md"), "{docs}");
    assert!(
        docs.contains("/opt/my-agent/share/doc/sbom.cdx.json"),
        "{docs}"
    );
    let licenses = ok(Command::new("rpm").args(["-qLp"]).arg(&rpm1));
    assert!(
        licenses.contains("/opt/my-agent/LICENSES/openssl-LICENSE.txt"),
        "{licenses}"
    );
    // Every ELF is stripped, pointing at its debug file, which ships in
    // <name>-debuginfo of the same version and release.
    let mut elves = 0;
    for l in list.lines().filter(|l| l.starts_with('-')) {
        let path = l.rsplit(' ').next().unwrap();
        let bytes = fs::read(work.join("payload").join(path.trim_start_matches('/'))).unwrap();
        if !bytes.starts_with(b"\x7fELF") {
            continue;
        }
        elves += 1;
        let elf = goblin::elf::Elf::parse(&bytes).unwrap();
        let sections: Vec<&str> = elf
            .section_headers
            .iter()
            .filter_map(|h| elf.shdr_strtab.get_at(h.sh_name))
            .collect();
        // .debug_gdb_scripts is no debug info but a 34-byte loaded section
        // (rustc's request that gdb load its Rust pretty-printers), which
        // strip keeps, as in rpmbuild's packages of Rust programs.
        assert!(
            !sections
                .iter()
                .any(|s| s.starts_with(".debug_") && *s != ".debug_gdb_scripts")
                && !sections.contains(&".symtab"),
            "{path}: {sections:?}"
        );
        assert!(sections.contains(&".gnu_debuglink"), "{path}: {sections:?}");
    }
    assert!(elves >= 5, "{list}");
    let debuginfo = rpm1.with_file_name("my-agent-debuginfo-0.1.0-1.el9.x86_64.rpm");
    let debug_list = ok(Command::new("rpm").arg("-qlp").arg(&debuginfo));
    for f in [
        "/usr/lib/debug/opt/my-agent/lib/libjemalloc.so.2.debug",
        "/usr/lib/debug/opt/my-agent/bin/my-agent.debug",
    ] {
        assert!(debug_list.lines().any(|l| l == f), "{f} in\n{debug_list}");
    }
    println!(
        "package {} bytes, debuginfo {} bytes",
        fs::metadata(&rpm1).unwrap().len(),
        fs::metadata(&debuginfo).unwrap().len()
    );

    let configs = ok(Command::new("rpm").args(["-qcp"]).arg(&rpm1));
    for c in [
        "/etc/my-agent/my-agent.yml",
        "/etc/sysconfig/my-agent",
        "/etc/logrotate.d/my-agent",
    ] {
        assert!(configs.lines().any(|l| l == c), "{c} is %config: {configs}");
    }

    let requires = ok(Command::new("rpm").args(["-qp", "--requires"]).arg(&rpm1));
    assert!(
        requires.lines().any(|l| l.starts_with("libc.so.6(GLIBC_")),
        "{requires}"
    );
    assert!(
        !requires.contains("libssl")
            && !requires.contains("libyaml")
            && !requires.contains("libmariadb"),
        "{requires}"
    );
    assert!(requires.contains("/usr/sbin/useradd"), "{requires}");
    let provides = ok(Command::new("rpm").args(["-qp", "--provides"]).arg(&rpm1));
    assert!(
        !provides.contains(".so"),
        "nothing inside the prefix is provided: {provides}"
    );

    // Scriptlets and the init script pass shellcheck as POSIX sh.
    let scripts_dir = tmp.path().join("scripts");
    fs::create_dir(&scripts_dir).unwrap();
    for tag in ["PREIN", "POSTIN", "PREUN", "POSTUN"] {
        let body = ok(Command::new("rpm")
            .args(["-qp", "--qf", &format!("%{{{tag}}}")])
            .arg(&rpm1));
        assert!(
            !body.trim().is_empty() && body != "(none)",
            "{tag} scriptlet"
        );
        fs::write(scripts_dir.join(tag), format!("#!/bin/sh\n{body}")).unwrap();
    }
    let scripts = ok(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm1));
    assert!(
        scripts.contains("useradd --system") && scripts.contains("try-restart"),
        "{scripts}"
    );
    let init = work.join("payload/etc/rc.d/init.d/my-agent");
    let mut sc = Command::new("shellcheck");
    sc.args(["-s", "sh"]).arg(&init);
    for tag in ["PREIN", "POSTIN", "PREUN", "POSTUN"] {
        sc.arg(scripts_dir.join(tag));
    }
    ok(&mut sc);

    // The unit verifies cleanly. Its ExecStart must exist, so the payload's
    // /opt is bind-mounted over /opt in a private mount namespace: the
    // host's /opt is never touched.
    let unit = work.join("payload/usr/lib/systemd/system/my-agent.service");
    let (verified, stderr) = common::verify_unit(&work.join("payload/opt"), &unit);
    assert!(
        verified && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    let security = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit));
    let exposure = String::from_utf8_lossy(&security.stdout);
    let overall = exposure
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("")
        .to_string();
    println!("systemd-analyze security: {overall}");
    assert!(
        overall.contains("OK") || overall.contains("MEDIUM"),
        "{exposure}"
    );

    // rpmlint with the profile kept in the repository.
    let lint = run(Command::new("rpmlint")
        .arg("-c")
        .arg(common::repo_root().join("ci/rpmlint.toml"))
        .arg(&rpm1));
    let report = String::from_utf8_lossy(&lint.stdout);
    assert!(
        lint.status.success() && report.contains(" 0 errors"),
        "rpmlint:\n{report}\n{}",
        String::from_utf8_lossy(&lint.stderr)
    );

    // Install into a throwaway root.
    let root = tmp.path().join("root");
    throwaway_root(&root);
    ok(rpm_root(&root).arg("--initdb"));
    ok(rpm_root(&root)
        .args(["-i", "--nodeps", "--noplugins"])
        .arg(&rpm1));
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("my-agent:"))
        .expect("user created");
    assert!(user.ends_with(":/var/lib/my-agent:/sbin/nologin"), "{user}");
    assert!(fs::read_to_string(root.join("etc/group"))
        .unwrap()
        .contains("my-agent:"));
    // --nodeps: the throwaway root has no glibc package to satisfy Requires.
    let verify = run(rpm_root(&root).args(["-V", "--nodeps", "my-agent"]));
    assert!(
        verify.status.success() && verify.stdout.is_empty(),
        "rpm -V: {}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // The installed agent runs from the root's prefix with its own libraries.
    let agent = root.join("opt/my-agent/bin/my-agent");
    ok(Command::new(&agent)
        .arg("--config")
        .arg(root.join("etc/my-agent/my-agent.yml"))
        .arg("--dry-run"));
    let ldd = ok(Command::new("ldd").arg(&agent));
    for lib in [
        "libyaml-0.so.2",
        "libssl.so.3",
        "libcrypto.so.3",
        "libjemalloc.so.2",
    ] {
        let l = ldd
            .lines()
            .find(|l| l.contains(lib))
            .unwrap_or_else(|| panic!("{lib} in\n{ldd}"));
        assert!(
            l.contains(&root.join("opt/my-agent").display().to_string()),
            "{lib} from the prefix: {l}"
        );
    }
    for l in ldd.lines().filter(|l| l.contains("=>")) {
        let name = l.split_whitespace().next().unwrap();
        assert!(
            l.contains("/opt/my-agent/") || xtask::package::health::BASE_SYSTEM.contains(&name),
            "{name} is neither from the prefix nor base system: {l}"
        );
    }

    // Upgrade: a locally edited config is kept, the new default lands as .rpmnew.
    let config = root.join("etc/my-agent/my-agent.yml");
    let edited = fs::read_to_string(&config)
        .unwrap()
        .replace("collector.invalid", "collector.example.net");
    fs::write(&config, &edited).unwrap();
    let (secret, public) = signing_key(tmp.path());
    let rpm2 = package(&tmp.path().join("dist2"), "el9", 2, Some(&secret));
    // Signed: rpm checks the signature against the imported public key.
    let keydb = tmp.path().join("keydb");
    ok(Command::new("rpm")
        .arg("--dbpath")
        .arg(&keydb)
        .arg("--initdb"));
    ok(Command::new("rpm")
        .arg("--dbpath")
        .arg(&keydb)
        .arg("--import")
        .arg(&public));
    let checked = ok(Command::new("rpm")
        .arg("--dbpath")
        .arg(&keydb)
        .arg("-Kv")
        .arg(&rpm2));
    assert!(
        checked.contains("Header V4 RSA/SHA256 Signature, key ID") && checked.contains(": OK"),
        "{checked}"
    );
    assert!(
        !checked.contains("NOKEY") && !checked.contains("BAD"),
        "{checked}"
    );
    ok(rpm_root(&root)
        .args(["-U", "--nodeps", "--noplugins"])
        .arg(&rpm2));
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        edited,
        "local edits survive the upgrade"
    );
    assert!(
        root.join("etc/my-agent/my-agent.yml.rpmnew").exists(),
        "new default as .rpmnew"
    );
    assert_eq!(
        ok(rpm_root(&root).args(["-q", "my-agent"])).trim(),
        "my-agent-0.1.0-2.el9.x86_64"
    );

    // Erase: the prefix goes, logs, buffers and positions stay.
    fs::write(root.join("var/log/my-agent/my-agent.log"), "log\n").unwrap();
    fs::write(root.join("var/lib/my-agent/mysql-error.pos"), "{}").unwrap();
    ok(rpm_root(&root).args(["-e", "--nodeps", "--noplugins", "my-agent"]));
    assert!(!root.join("opt/my-agent").exists(), "prefix removed");
    assert!(root.join("var/log/my-agent/my-agent.log").exists());
    assert!(root.join("var/lib/my-agent/mysql-error.pos").exists());
}

/// A throwaway OpenPGP key made with gpg: (secret, public) armored files.
fn signing_key(dir: &Path) -> (PathBuf, PathBuf) {
    let (home, secret) = common::gpg_key(dir, "test", &["rsa2048", "sign", "never"], &[]);
    let public = dir.join("public.asc");
    let p = ok(common::gpg(&home).args(["--armor", "--export", "test@localhost"]));
    fs::write(&public, p).unwrap();
    (secret, public)
}

#[test]
fn health_check_fails_planted_bad_elves() {
    use xtask::package::health::check;
    use xtask::targets::{Target, TargetTable};
    let table = TargetTable::load(&common::repo_root().join("recipes/targets.toml")).unwrap();
    let el7 = table.select("el7").unwrap().remove(0);
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("opt/x");
    fs::create_dir_all(prefix.join("bin")).unwrap();
    // A real ELF from this machine that needs a library outside the allowlist.
    fs::copy("/usr/bin/xz", prefix.join("bin/xz")).unwrap();
    let report = check(tmp.path(), "/opt/x", "/opt/x/bin/x", &Target::host()).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with("/opt/x/bin/xz: NEEDED liblzma.so.5")),
        "{:?}",
        report.problems
    );

    // A binary built on this machine needs glibc >= 2.34: too new for el7.
    fs::remove_file(prefix.join("bin/xz")).unwrap();
    fs::copy("/bin/dash", prefix.join("bin/x")).unwrap();
    let report = check(tmp.path(), "/opt/x", "/opt/x/bin/x", &el7).unwrap();
    assert!(
        report.problems.iter().any(|p| p.starts_with(
            "/opt/x/bin/x: needs GLIBC_2.34 from libc.so.6, newer than el7 provides (glibc 2.17)"
        )),
        "{:?}",
        report.problems
    );
    let host = check(tmp.path(), "/opt/x", "/opt/x/bin/x", &Target::host()).unwrap();
    assert!(host.problems.is_empty(), "{:?}", host.problems);
    assert!(host.max_glibc.unwrap().0 >= vec![2, 34]);
}

/// Validates `doc` against the CycloneDX 1.5 JSON schema with python's
/// jsonschema, the schema and the SPDX and JSF schemas it refers to taken
/// from the pinned cyclonedx-python-lib wheel (recipes/test-tools.toml).
fn cyclonedx_errors(doc: &Path) -> String {
    let res = std::env::var_os("PYTHONPATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("cyclonedx/schema/_res"))
                .find(|d| d.join("bom-1.5.SNAPSHOT.schema.json").is_file())
        })
        .expect("the CycloneDX schemas on PYTHONPATH: run through `cargo xtask test`");
    const VALIDATE: &str = r#"
import json, os, sys, warnings
warnings.simplefilter("ignore")
from jsonschema import Draft7Validator, FormatChecker, RefResolver
res, doc = sys.argv[1], sys.argv[2]
def load(name):
    with open(os.path.join(res, name)) as f:
        return json.load(f)
store = {}
for name in ["bom-1.5.SNAPSHOT.schema.json", "spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json"]:
    schema = load(name)
    store[schema["$id"]] = schema
    store["http://cyclonedx.org/schema/" + name] = schema
bom = store["http://cyclonedx.org/schema/bom-1.5.schema.json"]
validator = Draft7Validator(bom, resolver=RefResolver.from_schema(bom, store=store), format_checker=FormatChecker())
with open(doc) as f:
    errors = sorted(validator.iter_errors(json.load(f)), key=str)
for e in errors[:20]:
    print("/".join(map(str, e.absolute_path)), e.message[:300])
"#;
    let out = run(Command::new("python3")
        .arg("-c")
        .arg(VALIDATE)
        .arg(&res)
        .arg(doc));
    assert!(
        out.status.success(),
        "the validator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The SBOM beside the RPM and in it: a valid CycloneDX 1.5 document that
/// names the four C components with their pinned sources and every crate
/// compiled into the agent, the same bytes from two builds.
fn check_sbom(rpm: &Path, again: &Path, payload: &Path) {
    let sbom = rpm.with_extension("cdx.json");
    let bytes = fs::read(&sbom).unwrap_or_else(|e| panic!("{}: {e}", sbom.display()));
    assert_eq!(
        bytes,
        fs::read(again.with_extension("cdx.json")).unwrap(),
        "two builds of one commit give the same SBOM"
    );
    assert_eq!(
        bytes,
        fs::read(payload.join("opt/my-agent/share/doc/sbom.cdx.json")).unwrap(),
        "the package ships the SBOM written beside it"
    );
    let errors = cyclonedx_errors(&sbom);
    assert!(errors.is_empty(), "{}: {errors}", sbom.display());

    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    // The validator can fail: a document that breaks the schema is caught.
    let mut broken = doc.clone();
    broken["components"][0]["hashes"] = serde_json::json!([{ "alg": "SHA-256", "content": "zz" }]);
    let broken_path = sbom.with_extension("broken.json");
    fs::write(&broken_path, serde_json::to_vec(&broken).unwrap()).unwrap();
    assert!(!cyclonedx_errors(&broken_path).is_empty());

    assert_eq!(doc["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(doc["metadata"]["component"]["version"], "0.1.0-1.el9");
    let components = doc["components"].as_array().unwrap();
    let purls: std::collections::BTreeSet<&str> = components
        .iter()
        .map(|c| c["purl"].as_str().unwrap())
        .collect();
    for recipe in ["jemalloc", "libyaml", "openssl", "mysqlclient"] {
        let text = fs::read_to_string(repo_root().join(format!("recipes/{recipe}.toml"))).unwrap();
        let recipe_doc: toml::Value = toml::from_str(&text).unwrap();
        let version = recipe_doc["version"].as_str().unwrap();
        let c = components
            .iter()
            .find(|c| c["name"] == recipe)
            .unwrap_or_else(|| panic!("{recipe} is not in the SBOM"));
        assert_eq!(c["version"], version);
        assert_eq!(
            c["licenses"][0]["expression"],
            recipe_doc["license"].as_str().unwrap()
        );
        // The scanners' name where the recipe gives one (jemalloc has none).
        assert_eq!(
            c.get("cpe").and_then(|v| v.as_str()),
            recipe_doc.get("cpe").and_then(|v| v.as_str()),
            "{c}"
        );
        // Every pinned source archive, with its sha256.
        let refs = c["externalReferences"].to_string();
        for source in recipe_doc["sources"].as_array().unwrap() {
            assert!(refs.contains(source["sha256"].as_str().unwrap()), "{refs}");
        }
    }
    // Every crate compiled into the agent, as cargo itself resolves them.
    let tree = ok(Command::new(env!("CARGO")).current_dir(repo_root()).args([
        "tree",
        "--locked",
        "-p",
        "my-agent",
        "-e",
        "normal,no-proc-macro",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]));
    let mut crates = 0;
    for line in tree.lines() {
        // `serde v1.0.219`, `my-agent v0.1.0 (/path)`, `x v1 (*)`.
        let mut words = line.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let purl = format!("pkg:cargo/{name}@{}", version.trim_start_matches('v'));
        assert!(purls.contains(purl.as_str()), "{purl} is not in the SBOM");
        crates += 1;
    }
    assert!(crates > 100, "{tree}");
    let lock = fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let serde = components.iter().find(|c| c["name"] == "serde").unwrap();
    assert!(lock.contains(serde["hashes"][0]["content"].as_str().unwrap()));
}
