//! The systemd unit of each target uses only keys that target's systemd
//! knows (EL7 219, EL8 239, EL9 252), and each flavour passes
//! `systemd-analyze verify` without a warning. Every rendered service file
//! ends with a newline, so an admin's `echo KEY=value >> file` starts a line.

mod common;

use std::fs;

use common::repo_root;
use xtask::package::payload::ProductVars;
use xtask::targets::TargetTable;

/// The systemd version that introduced each key the template may use
/// (systemd's NEWS); a key missing here fails the test until it is added.
const INTRODUCED: &[(&str, u32)] = &[
    ("Description", 1),
    ("Documentation", 1),
    ("After", 1),
    ("Wants", 1),
    ("StartLimitIntervalSec", 230),
    ("StartLimitBurst", 1),
    ("StartLimitInterval", 1),
    ("Type", 1),
    ("User", 1),
    ("Group", 1),
    ("EnvironmentFile", 1),
    ("Environment", 1),
    ("ExecStartPre", 1),
    ("ExecStart", 1),
    ("ExecReload", 1),
    ("Restart", 1),
    ("RestartSec", 1),
    ("LimitNOFILE", 1),
    ("TimeoutStopSec", 1),
    ("RuntimeDirectory", 211),
    ("UMask", 1),
    ("NoNewPrivileges", 187),
    ("PrivateTmp", 1),
    ("PrivateDevices", 209),
    ("ProtectHome", 214),
    ("ProtectSystem", 214),
    ("ProtectKernelTunables", 232),
    ("ProtectKernelModules", 232),
    ("ProtectControlGroups", 232),
    ("RemoveIPC", 232),
    ("StateDirectory", 235),
    ("LogsDirectory", 235),
    ("StateDirectoryMode", 235),
    ("LogsDirectoryMode", 235),
    ("LockPersonality", 235),
    ("RestrictRealtime", 231),
    ("MemoryDenyWriteExecute", 231),
    ("SystemCallFilter", 187),
    ("RestrictNamespaces", 233),
    ("ProtectHostname", 242),
    ("RestrictSUIDSGID", 242),
    ("ProtectKernelLogs", 244),
    ("ProtectClock", 245),
    ("ProtectProc", 247),
    ("RestrictAddressFamilies", 211),
    ("SystemCallArchitectures", 209),
    ("SystemCallErrorNumber", 209),
    ("CapabilityBoundingSet", 1),
    ("AmbientCapabilities", 229),
    ("DevicePolicy", 1),
    ("WantedBy", 1),
];

fn vars(target: &str, systemd: u32) -> ProductVars {
    ProductVars {
        name: "my-agent".into(),
        prefix: "/opt/my-agent".into(),
        user: "my-agent".into(),
        group: "my-agent".into(),
        summary: "test".into(),
        homepage: "https://example.net/".into(),
        version: "0.1.0".into(),
        release: "1".into(),
        target: target.into(),
        systemd_version: systemd,
        jemalloc_preload: false,
    }
}

#[test]
fn each_flavour_uses_only_known_keys_and_verifies() {
    let root = repo_root();
    let table = TargetTable::load(&root.join("recipes/targets.toml")).unwrap();
    let template = fs::read_to_string(root.join("templates/systemd.service.j2")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // ExecStart must exist for verify: a stand-in agent at the unit's path,
    // inside a private mount namespace so the host's /opt is untouched.
    let opt = tmp.path().join("opt/my-agent/bin");
    fs::create_dir_all(&opt).unwrap();
    fs::copy("/bin/true", opt.join("my-agent")).unwrap();
    for name in ["el7", "el8", "el9"] {
        let target = table.select(name).unwrap().remove(0);
        let unit = xtask::template::render(&template, &vars(name, target.systemd)).unwrap();
        assert!(unit.ends_with('\n'), "{name}: final newline");
        for line in unit.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let key = line.split('=').next().unwrap();
            let since = INTRODUCED
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("{name}: add `{key}` to INTRODUCED"))
                .1;
            assert!(
                since <= target.systemd,
                "{name}: {key} needs systemd {since}, the target has {}",
                target.systemd
            );
        }
        assert!(unit.contains("Restart=on-failure"), "{unit}");
        let path = tmp.path().join(format!("my-agent-{name}.service"));
        fs::write(&path, &unit).unwrap();
        let (verified, stderr) = common::verify_unit(&tmp.path().join("opt"), &path);
        assert!(
            verified && stderr.trim().is_empty(),
            "{name}: systemd-analyze verify: {stderr}"
        );
    }
}

#[test]
fn rendered_files_end_with_a_newline() {
    let root = repo_root();
    for template in [
        "sysconfig.j2",
        "agent.yml.j2",
        "logrotate.j2",
        "init.d.j2",
        "tmpfiles.conf.j2",
    ] {
        let text = fs::read_to_string(root.join("templates").join(template)).unwrap();
        let out = xtask::template::render(&text, &vars("el9", 252)).unwrap();
        assert!(
            out.ends_with('\n'),
            "{template} renders without a final newline"
        );
    }
}
