//! `my-agent --dry-run` on bad configs: exit 1 and one clear line naming
//! file:line:column and what was expected. A good config exits 0.

mod common;

use std::process::Command;

fn dry_run(dir: &std::path::Path, name: &str, text: &str) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_my-agent"))
        .arg("--config")
        .arg(&path)
        .arg("--dry-run")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = "sources:
  - type: tail
    path: /var/log/mysql/*.err
    pos_file: /var/lib/my-agent/error.pos
    tag: mysql.error
outputs:
  - match: \"**\"
    type: http
    endpoint: https://collector.example/api/bulk
    buffer:
      type: file
      path: /var/lib/my-agent/buffer
      flush_interval: 1s
";

#[test]
fn bad_configs_give_one_line_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _) = dry_run(dir.path(), "good.yml", GOOD);
    assert_eq!(code, 0);

    let cases = [
        (
            "syntax.yml",
            GOOD.replace("    tag: mysql.error", "    tag: [mysql.error"),
            "YAML syntax",
        ),
        (
            "unknown.yml",
            GOOD.replace(
                "    tag: mysql.error",
                "    tag: mysql.error\n    colour: red",
            ),
            "6:5: source: unknown key `colour`",
        ),
        (
            "duration.yml",
            GOOD.replace("flush_interval: 1s", "flush_interval: 1 fortnight"),
            "13:23: expected a duration like 1s, 30s, 5m or 72h, found `1 fortnight`",
        ),
        (
            "missing.yml",
            GOOD.replace("    path: /var/log/mysql/*.err\n", ""),
            "2:5: source: missing required key `path`",
        ),
    ];
    for (name, text, expected) in cases {
        let (code, stderr) = dry_run(dir.path(), name, &text);
        assert_eq!(code, 1, "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
        let path = dir.path().join(name).display().to_string();
        assert!(
            stderr.starts_with(&format!("error: {path}:")),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{name}: expected `{expected}` in {stderr}"
        );
        // file:line:column, all three.
        let rest = &stderr[format!("error: {path}:").len()..];
        let mut parts = rest.splitn(3, ':');
        assert!(
            parts.next().unwrap().parse::<usize>().is_ok(),
            "{name}: line in {stderr}"
        );
        assert!(
            parts.next().unwrap().parse::<usize>().is_ok(),
            "{name}: column in {stderr}"
        );
    }
}
