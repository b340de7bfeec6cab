//! `<name>-debuginfo` is a package of its own beside the agent, judged by
//! the real rpm: its header, an install of both into a throwaway root with
//! `rpm --root`, the debug file found by build id as gdb looks it up, and an
//! erase that leaves the agent alone. Its own test binary: `package` builds
//! in the checkout's one work directory, which two tests of one binary would
//! share at once.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{ok, package, rpm_root, run, throwaway_root};

/// The "Build ID" `readelf -n` shows for `elf`, if any.
fn readelf_build_id(elf: &Path) -> Option<String> {
    let notes = ok(Command::new("readelf").arg("-n").arg(elf));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .map(String::from)
}

/// Address and size of each section of `elf`, by name.
fn section_table(elf: &Path) -> std::collections::HashMap<String, (u64, u64)> {
    let table = ok(Command::new("readelf").arg("-SW").arg(elf));
    table
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_once(']')?.1.split_whitespace().collect();
            let hex = |i: usize| u64::from_str_radix(fields.get(i)?, 16).ok();
            Some((fields.first()?.to_string(), (hex(2)?, hex(4)?)))
        })
        .collect()
}

/// The shipped agent (a zig build) has the functions agent/link/hot-text.txt
/// names, its start-up code and its allocator shims in `.text.hot`, ahead
/// of the rest of its code (agent/build.rs): a linker that ignored the
/// script would still link, with the idle agent's code spread over the
/// whole binary again. The symbols come from the debug file; the shipped
/// binary has none.
fn hot_text_is_laid_out_first(agent: &Path, debug_file: &Path) {
    let sections = section_table(agent);
    let (hot, text) = (sections.get(".text.hot"), sections.get(".text"));
    let (Some(&(hot_at, hot_size)), Some(&(text_at, _))) = (hot, text) else {
        panic!("the agent has no .text.hot ahead of .text: {sections:?}");
    };
    assert!(hot_at < text_at, "{sections:?}");
    // The section `main` reads a byte of, beside the read-only data rather
    // than among the unwind tables.
    let (gdb, rodata) = (sections.get(".debug_gdb_scripts"), sections.get(".rodata"));
    assert!(
        matches!((gdb, rodata), (Some(g), Some(r)) if g.0 < r.0),
        "{sections:?}"
    );

    let list = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/link/hot-text.txt"),
    )
    .unwrap();
    let listed: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let symbols = ok(Command::new("nm").arg("--defined-only").arg(debug_file));
    let functions: Vec<(u64, &str)> = symbols
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                [at, "t" | "T", name] => Some((u64::from_str_radix(at, 16).ok()?, name)),
                _ => None,
            }
        })
        .collect();
    // As the linker's glob matches them, narrowed to what `*` stands for
    // in the list (xtask/bench/src/hot_text.rs): a legacy hash, with or
    // without LLVM's number after it, or that number alone.
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let matches = |pattern: &str, name: &str| match pattern.strip_suffix('*') {
        Some(path) if path.ends_with("17h") => name.strip_prefix(path).is_some_and(|rest| {
            let (hash, n) = rest.split_once('.').unwrap_or((rest, "0"));
            hash.len() == 17 && hash.ends_with('E') && number(n)
        }),
        Some(path) if path.ends_with('.') => name.strip_prefix(path).is_some_and(number),
        Some(_) => panic!("hot-text.txt: `{pattern}`: `*` stands only for a hash or a number"),
        None => name == pattern,
    };
    let hot_range = hot_at..hot_at + hot_size;
    for unlisted in ["_start", "__rust_alloc", "__rust_dealloc"] {
        // `_start` by name, the shims by their mangled names' ends.
        let at = functions
            .iter()
            .find(|(_, n)| *n == unlisted || n.ends_with(&format!("_{unlisted}")))
            .unwrap_or_else(|| panic!("no function {unlisted} in the agent"))
            .0;
        assert!(
            hot_range.contains(&at),
            "{unlisted} is at {at:#x}, outside .text.hot at {hot_at:#x}+{hot_size:#x}"
        );
    }
    let mut found = 0;
    for pattern in &listed {
        let mut any = false;
        for &(at, name) in functions.iter().filter(|(_, n)| matches(pattern, n)) {
            any = true;
            assert!(
                hot_range.contains(&at),
                "{name} (listed as {pattern}) is at {at:#x}, outside .text.hot at {hot_at:#x}+{hot_size:#x}"
            );
        }
        found += usize::from(any);
    }
    // A list made for other code matches little: regenerate it.
    assert!(
        found * 10 >= listed.len() * 9,
        "only {found} of the {} functions agent/link/hot-text.txt names are in the agent: \
         run `cargo xtask bench --run hot-text`",
        listed.len()
    );
    println!(
        "hot text: {found} of {} listed functions found, .text.hot {hot_size} bytes",
        listed.len()
    );
}

#[test]
fn debuginfo_installs_beside_the_agent_and_is_found_by_build_id() {
    let tmp = tempfile::tempdir().unwrap();
    let agent_rpm = package(&tmp.path().join("dist"), "el7", 1, None);
    let debug_rpm = agent_rpm.with_file_name("my-agent-debuginfo-0.1.0-1.el7.x86_64.rpm");

    // The header: a name of its own, nothing of the agent's provided, the
    // agent of exactly this build required.
    let name = ok(Command::new("rpm")
        .args(["-qp", "--qf", "%{NAME}"])
        .arg(&debug_rpm));
    assert_eq!(name, "my-agent-debuginfo");
    let provides = ok(Command::new("rpm")
        .args(["-qp", "--provides"])
        .arg(&debug_rpm));
    assert!(
        provides
            .lines()
            .all(|l| l.starts_with("my-agent-debuginfo = ")
                || l.starts_with("my-agent-debuginfo(")),
        "only its own name is provided:\n{provides}"
    );
    let requires = ok(Command::new("rpm")
        .args(["-qp", "--requires"])
        .arg(&debug_rpm));
    assert!(
        requires.lines().any(|l| l == "my-agent = 0.1.0-1.el7"),
        "{requires}"
    );
    let list = ok(Command::new("rpm").arg("-qlp").arg(&debug_rpm));
    assert!(
        list.lines()
            .any(|l| l == "/usr/lib/debug/opt/my-agent/bin/my-agent.debug"),
        "{list}"
    );

    // Both in one transaction. --nodeps: the throwaway root has no glibc
    // package to satisfy the agent's Requires.
    let root = tmp.path().join("root");
    throwaway_root(&root);
    ok(rpm_root(&root).arg("--initdb"));
    ok(rpm_root(&root)
        .args(["-i", "--nodeps", "--noplugins"])
        .arg(&agent_rpm)
        .arg(&debug_rpm));
    let installed = ok(rpm_root(&root).args(["-q", "my-agent", "my-agent-debuginfo"]));
    assert_eq!(
        installed.lines().collect::<Vec<_>>(),
        [
            "my-agent-0.1.0-1.el7.x86_64",
            "my-agent-debuginfo-0.1.0-1.el7.x86_64"
        ]
    );
    let verify = |packages: &[&str]| {
        let out = run(rpm_root(&root).args(["-V", "--nodeps"]).args(packages));
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "rpm -V {packages:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    verify(&["my-agent", "my-agent-debuginfo"]);

    // As gdb and eu-unstrip look it up: the installed agent's build id
    // names a link that resolves to its debug file, of the same build id
    // and with the DWARF in it.
    let agent = root.join("opt/my-agent/bin/my-agent");
    let id = readelf_build_id(&agent).expect("the agent is linked with a build id");
    let link = root.join(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ));
    let target = fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
    assert!(target.is_relative(), "{}", target.display());
    let debug_file = fs::canonicalize(&link).unwrap();
    assert_eq!(
        debug_file,
        fs::canonicalize(root.join("usr/lib/debug/opt/my-agent/bin/my-agent.debug")).unwrap()
    );
    assert_eq!(readelf_build_id(&debug_file).as_deref(), Some(id.as_str()));
    let sections = ok(Command::new("readelf").arg("-S").arg(&debug_file));
    assert!(sections.contains(".debug_info"), "{sections}");
    hot_text_is_laid_out_first(&agent, &debug_file);

    // Every build-id link of the package resolves to a debug file of that
    // build id; the ELF files without a build id have none.
    let real_root = fs::canonicalize(&root).unwrap();
    let mut linked = Vec::new();
    for l in list
        .lines()
        .filter(|l| l.starts_with("/usr/lib/debug/.build-id/") && l.ends_with(".debug"))
    {
        let link = root.join(l.trim_start_matches('/'));
        let id: String = l
            .trim_start_matches("/usr/lib/debug/.build-id/")
            .trim_end_matches(".debug")
            .replace('/', "");
        let file = fs::canonicalize(&link).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert_eq!(readelf_build_id(&file).as_deref(), Some(id.as_str()), "{l}");
        linked.push(file.strip_prefix(&real_root).unwrap().display().to_string());
    }
    linked.sort();
    println!("build-id links to: {}", linked.join(", "));

    // The agent needs nothing of it, it needs the agent: erasing the agent
    // alone is refused.
    let erase_agent = run(rpm_root(&root).args(["-e", "--test", "my-agent"]));
    let refused = String::from_utf8_lossy(&erase_agent.stderr);
    assert!(
        !erase_agent.status.success() && refused.contains("my-agent-debuginfo"),
        "{refused}"
    );
    ok(rpm_root(&root).args(["-e", "--noplugins", "my-agent-debuginfo"]));
    assert!(!run(rpm_root(&root).args(["-q", "my-agent-debuginfo"]))
        .status
        .success());
    assert_eq!(
        ok(rpm_root(&root).args(["-q", "my-agent"])).trim(),
        "my-agent-0.1.0-1.el7.x86_64"
    );
    assert!(agent.is_file() && !link.exists());
    verify(&["my-agent"]);

    // Installed on its own after the agent, as a DBA adds it to a running
    // host: a package of its own, not "already installed".
    ok(rpm_root(&root).args(["-i", "--noplugins"]).arg(&debug_rpm));
    verify(&["my-agent", "my-agent-debuginfo"]);
}
