//! Rendering of recipe arguments (`{{ prefix }}`, `{{ jobs }}`, ...) with
//! minijinja, the engine that also renders `templates/`.

use anyhow::{Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A misspelt variable must fail the build, not expand to nothing.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Rendered files end with their template's final newline, so an admin's
    // `echo KEY=value >> /etc/sysconfig/<name>` starts a line of its own.
    env.set_keep_trailing_newline(true);
    env
}

/// Checks that `text` is a well-formed template.
pub fn check(text: &str) -> Result<()> {
    environment().template_from_str(text)?;
    Ok(())
}

pub fn render<S: Serialize>(text: &str, vars: &S) -> Result<String> {
    let env = environment();
    let template = env.template_from_str(text)?;
    template
        .render(vars)
        .with_context(|| format!("cannot render `{text}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_rejects_unknown_variables() {
        let vars = serde_json::json!({"prefix": "/opt/x", "jobs": 2});
        assert_eq!(
            render("--prefix={{ prefix }}", &vars).unwrap(),
            "--prefix=/opt/x"
        );
        assert_eq!(render("-j{{ jobs }}", &vars).unwrap(), "-j2");
        // Shell and make escapes pass through untouched.
        assert_eq!(render("\\$$ORIGIN", &vars).unwrap(), "\\$$ORIGIN");
        let e = format!("{:#}", render("{{ prefx }}", &vars).unwrap_err());
        assert!(e.contains("undefined"), "{e}");
    }
}
