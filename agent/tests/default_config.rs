//! The default configuration shipped in templates/ renders for any product
//! name and passes `--dry-run`.

use std::process::Command;

#[test]
fn default_config_renders_and_validates() {
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../templates/agent.yml.j2"
    ))
    .unwrap();
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let dir = tempfile::tempdir().unwrap();
    for (name, prefix) in [("my-agent", "/opt/my-agent"), ("db-agent", "/opt/db-agent")] {
        let text = env
            .render_str(
                &template,
                minijinja::context! { name => name, prefix => prefix, version => "0.1.0", release => "1" },
            )
            .unwrap();
        assert!(text.contains(&format!("/var/lib/{name}/buffer/")), "{text}");
        assert!(
            text.contains("${hostname}"),
            "fluentd-style placeholders survive rendering"
        );
        let path = dir.path().join(format!("{name}.yml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_my-agent"))
            .arg("-c")
            .arg(&path)
            .arg("--dry-run")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
