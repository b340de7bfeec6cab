//! Running a recipe's steps in its extracted source tree, one log file per
//! step, then shaping what it installed (links, removals, licenses) and
//! checking the files the recipe promises.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use xshell::Shell;

use crate::deps::recipe::Recipe;

/// Variables available to recipe templates.
#[derive(Debug, Serialize)]
pub struct StepVars {
    /// The final install prefix, e.g. /opt/my-agent.
    pub prefix: String,
    /// Where `make install` puts files (`DESTDIR`): `<destdir><prefix>/...`.
    pub destdir: String,
    /// The prefix as staged on this host, holding the dependencies.
    pub staged_prefix: String,
    pub jobs: usize,
    pub src: String,
}

pub struct ComponentBuild<'a> {
    pub recipe: &'a Recipe,
    pub src: PathBuf,
    pub destdir: PathBuf,
    pub vars: StepVars,
    pub log_dir: PathBuf,
    /// Environment for every step (the zig builder's CC, CXX, PATH), before
    /// the step's own.
    pub env: Vec<(String, String)>,
}

/// How many log lines a failure shows.
const TAIL_LINES: usize = 40;

impl ComponentBuild<'_> {
    /// Runs every step, then returns the installed tree (`<destdir><prefix>`).
    pub fn run(&self, sh: &Shell) -> Result<PathBuf> {
        fs::create_dir_all(&self.log_dir)
            .with_context(|| format!("cannot create {}", self.log_dir.display()))?;
        for (i, step) in self.recipe.steps.iter().enumerate() {
            if let Some(marker) = &step.skip_if_exists {
                if self.src.join(marker).exists() {
                    eprintln!(
                        "    {}: {} skipped ({marker} exists)",
                        self.recipe.name, step.name
                    );
                    continue;
                }
            }
            let args: Vec<String> = step
                .run
                .iter()
                .map(|a| crate::template::render(a, &self.vars))
                .collect::<Result<_>>()
                .with_context(|| format!("{}: step `{}`", self.recipe.path.display(), step.name))?;
            let mut env = self.env.clone();
            for (k, v) in &step.env {
                env.push((k.clone(), crate::template::render(v, &self.vars)?));
            }
            let log = self.log_dir.join(format!("{:02}-{}.log", i + 1, step.name));
            self.run_step(sh, &step.name, &args, &env, &log)?;
        }
        self.finish_install()
    }

    fn run_step(
        &self,
        sh: &Shell,
        step: &str,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<()> {
        let name = &self.recipe.name;
        let mut file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        writeln!(file, "# in {}", self.src.display())?;
        for (k, v) in env {
            writeln!(file, "# env {k}={v}")?;
        }
        writeln!(file, "# run {}", shell_words(args))?;
        file.flush()?;

        let _cwd = sh.push_dir(&self.src);
        let cmd = sh.cmd(&args[0]).args(&args[1..]).envs(env.iter().cloned());
        let mut command: Command = cmd.into();
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);

        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
        );
        bar.set_message(format!("{name}: {step}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        if bar.is_hidden() {
            eprintln!("    {name}: {step} (log: {})", log.display());
        }
        let started = Instant::now();
        let status = command
            .status()
            .with_context(|| format!("{name}: cannot start `{}` for step `{step}`", args[0]));
        bar.finish_and_clear();
        let status = status?;
        if !status.success() {
            eprintln!("--- last {TAIL_LINES} lines of {} ---", log.display());
            for line in tail(log, TAIL_LINES) {
                eprintln!("{line}");
            }
            eprintln!("--- end of {} ---", log.display());
            bail!(
                "{name}: step `{step}` failed ({status}) after {:.0?}; full log: {}",
                started.elapsed(),
                log.display()
            );
        }
        eprintln!("    {name}: {step} done in {:.1?}", started.elapsed());
        Ok(())
    }

    fn finish_install(&self) -> Result<PathBuf> {
        let recipe = self.recipe;
        let tree = self.destdir.join(self.vars.prefix.trim_start_matches('/'));
        if !tree.is_dir() {
            bail!(
                "{}: the install step put nothing under {} (is DESTDIR passed?)",
                recipe.name,
                tree.display()
            );
        }
        // Files outside the prefix would be lost from the package: refuse.
        let stray = stray_paths(&self.destdir, &tree)?;
        if !stray.is_empty() {
            bail!(
                "{}: installed files outside the prefix {}: {}",
                recipe.name,
                self.vars.prefix,
                stray.join(", ")
            );
        }
        for rel in &recipe.install.remove {
            let path = tree.join(rel);
            if path.exists() {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        for (rel, target) in &recipe.install.links {
            let path = tree.join(rel);
            let _ = fs::remove_file(&path);
            std::os::unix::fs::symlink(target, &path)
                .with_context(|| format!("cannot create link {} -> {target}", path.display()))?;
        }
        let licenses = tree.join("LICENSES");
        fs::create_dir_all(&licenses)?;
        for file in &recipe.license_files {
            let from = self.src.join(file);
            let base = Path::new(file)
                .file_name()
                .expect("license file has a name");
            let to = licenses.join(format!("{}-{}", recipe.name, base.to_string_lossy()));
            fs::copy(&from, &to).with_context(|| {
                format!(
                    "{}: license file `{file}` not found in the source tree",
                    recipe.path.display()
                )
            })?;
        }
        let missing: Vec<&str> = recipe
            .install
            .files
            .iter()
            .filter(|rel| !tree.join(rel).exists())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: expected files missing after install: {} (looked in {})",
                recipe.name,
                missing.join(", "),
                tree.display()
            );
        }
        Ok(tree)
    }
}

/// Paths under `destdir` that are neither the prefix tree nor its parents.
fn stray_paths(destdir: &Path, tree: &Path) -> Result<Vec<String>> {
    let mut stray = Vec::new();
    let mut stack = vec![destdir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path == tree {
                continue;
            }
            if tree.starts_with(&path) {
                stack.push(path);
            } else {
                stray.push(
                    path.strip_prefix(destdir)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    Ok(stray)
}

fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let mut lines: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in BufReader::new(file).split(b'\n').map_while(Result::ok) {
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(String::from_utf8_lossy(&line).into_owned());
    }
    lines.into()
}

/// A command line as a user would paste it into a shell.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=./:,+{}@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        fs::write(f.path(), text).unwrap();
        let t = tail(f.path(), 40);
        assert_eq!(t.len(), 40);
        assert_eq!(t[0], "line 61");
        assert_eq!(t[39], "line 100");
    }

    #[test]
    fn quotes_for_the_log() {
        let args = [
            "./config".to_string(),
            r"-Wl,-rpath,\$$ORIGIN/../lib".to_string(),
        ];
        assert_eq!(
            shell_words(&args),
            r"./config '-Wl,-rpath,\$$ORIGIN/../lib'"
        );
    }
}
