//! The distribution's source archive as a mirror: `apt-get source
//! --download-only PKG=VERSION` into a private apt directory.
//!
//! The `deb-src` entries are derived from the host's own `deb` entries, in a
//! directory of ours; /etc/apt is never edited and no archive host is written
//! down anywhere.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::deps::recipe::DebianSource;
use crate::tools::find_on_path;

pub struct AptMirror {
    dir: PathBuf,
    etc: PathBuf,
    prepared: Option<Result<(), String>>,
}

impl AptMirror {
    /// `dir` is a scratch directory of ours (lists, cache, downloads).
    pub fn new(dir: PathBuf) -> AptMirror {
        AptMirror {
            dir,
            etc: PathBuf::from("/etc/apt"),
            prepared: None,
        }
    }

    fn options(&self) -> Vec<String> {
        let d = &self.dir;
        vec![
            format!(
                "-oDir::Etc::SourceList={}",
                d.join("sources.list").display()
            ),
            format!(
                "-oDir::Etc::SourceParts={}",
                d.join("sources.list.d").display()
            ),
            format!("-oDir::State::Lists={}", d.join("lists").display()),
            format!("-oDir::Cache={}", d.join("cache").display()),
            // Our directories are not readable by apt's `_apt` sandbox user.
            "-oAPT::Sandbox::User=root".to_string(),
            "-oDebug::NoLocking=1".to_string(),
            "-qq".to_string(),
        ]
    }

    fn prepare(&mut self) -> Result<(), String> {
        if let Some(done) = &self.prepared {
            return done.clone();
        }
        let result = self.try_prepare().map_err(|e| format!("{e:#}"));
        self.prepared = Some(result.clone());
        result
    }

    fn try_prepare(&self) -> Result<()> {
        if find_on_path("apt-get").is_none() {
            bail!("apt-get is not available on this machine");
        }
        let (one_line, deb822) = derive_deb_src(&self.etc)?;
        if one_line.is_empty() && deb822.is_empty() {
            bail!(
                "no `deb` entries in {} to derive deb-src entries from",
                self.etc.display()
            );
        }
        let d = &self.dir;
        for sub in ["sources.list.d", "lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(d.join(sub))
                .with_context(|| format!("cannot create {}", d.join(sub).display()))?;
        }
        fs::write(d.join("sources.list"), one_line)?;
        fs::write(d.join("sources.list.d/derived.sources"), deb822)?;
        let sh = Shell::new()?;
        let opts = self.options();
        cmd!(sh, "apt-get {opts...} update")
            .quiet()
            .output()
            .context("`apt-get update` for the derived deb-src entries failed")?;
        Ok(())
    }

    /// Downloads the source package and returns the path of `deb.file`.
    pub fn download(&mut self, deb: &DebianSource) -> Result<PathBuf> {
        self.prepare().map_err(anyhow::Error::msg)?;
        let out = self.dir.join("download");
        fs::create_dir_all(&out)?;
        let sh = Shell::new()?;
        let _cwd = sh.push_dir(&out);
        let opts = self.options();
        let spec = format!("{}={}", deb.package, deb.version);
        let result = cmd!(sh, "apt-get {opts...} source --download-only {spec}")
            .quiet()
            .ignore_status()
            .output()?;
        if !result.status.success() {
            let stderr = String::from_utf8_lossy(&result.stderr);
            bail!("apt-get failed: {}", stderr.trim());
        }
        let file = out.join(&deb.file);
        if !file.is_file() {
            bail!("apt-get succeeded but wrote no {}", deb.file);
        }
        Ok(file)
    }
}

/// Turns the host's `deb` entries into `deb-src` ones: one-line entries from
/// `sources.list` and `*.list`, deb822 stanzas from `*.sources`.
pub fn derive_deb_src(etc: &Path) -> Result<(String, String)> {
    let mut one_line = String::new();
    let mut deb822 = String::new();
    let mut files = vec![etc.join("sources.list")];
    if let Ok(entries) = fs::read_dir(etc.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => deb822.push_str(&deb822_to_src(&text)),
            _ if file.file_name().is_some_and(|n| n == "sources.list")
                || file.extension().is_some_and(|e| e == "list") =>
            {
                one_line.push_str(&one_line_to_src(&text))
            }
            _ => {}
        }
    }
    Ok((one_line, deb822))
}

fn one_line_to_src(text: &str) -> String {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("deb "))
        .map(|rest| format!("deb-src {}\n", rest.trim()))
        .collect()
}

fn deb822_to_src(text: &str) -> String {
    let mut out = String::new();
    for stanza in text.split("\n\n") {
        let mut has_deb = false;
        let mut enabled = true;
        let mut fields = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some(types) = line.strip_prefix("Types:") {
                has_deb = types.split_whitespace().any(|t| t == "deb");
                continue;
            }
            if let Some(v) = line.strip_prefix("Enabled:") {
                enabled = !v.trim().eq_ignore_ascii_case("no");
            }
            fields.push(line);
        }
        if has_deb && enabled {
            out.push_str("Types: deb-src\n");
            for f in fields {
                out.push_str(f);
                out.push('\n');
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_deb_src_from_both_formats() {
        let etc = tempfile::tempdir().unwrap();
        fs::create_dir(etc.path().join("sources.list.d")).unwrap();
        fs::write(
            etc.path().join("sources.list"),
            "# comment\ndeb [arch=amd64] http://mirror.test/debian bookworm main\ndeb-src http://x/ y z\n",
        )
        .unwrap();
        fs::write(
            etc.path().join("sources.list.d/debian.sources"),
            "Types: deb\n# note\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
             Types: deb\nURIs: http://off.test/\nSuites: s\nComponents: c\nEnabled: no\n",
        )
        .unwrap();
        fs::write(
            etc.path().join("sources.list.d/other.list.disabled"),
            "deb http://disabled.test/ x y\n",
        )
        .unwrap();
        let (one, deb822) = derive_deb_src(etc.path()).unwrap();
        assert_eq!(
            one,
            "deb-src [arch=amd64] http://mirror.test/debian bookworm main\n"
        );
        assert_eq!(
            deb822,
            "Types: deb-src\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        );
    }
}
