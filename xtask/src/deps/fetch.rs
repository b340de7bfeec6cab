//! Getting a recipe's source archive, cheapest place first:
//! the content-addressed cache, `--sources-from DIR`, the recipe's URLs, and
//! the distribution's source archive. Every byte is checked against the
//! recipe's sha256 before it is used.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::deps::apt_source::AptMirror;
use crate::deps::recipe::{Recipe, Source};
use crate::deps::source_cache::{ChecksumMismatch, SourceCache};
use crate::file_tree::sha256_file;

pub struct Fetcher<'a> {
    cache: &'a SourceCache,
    sources_from: Option<PathBuf>,
    /// sha256 -> file, built on first use of `--sources-from`.
    local_index: Option<HashMap<String, PathBuf>>,
    http: Option<reqwest::blocking::Client>,
    apt: AptMirror,
}

/// An archive in the cache and the recipe source it satisfies.
pub struct Fetched<'r> {
    pub path: PathBuf,
    pub source: &'r Source,
}

impl<'a> Fetcher<'a> {
    pub fn new(cache: &'a SourceCache, sources_from: Option<PathBuf>, apt: AptMirror) -> Self {
        Fetcher {
            cache,
            sources_from,
            local_index: None,
            http: None,
            apt,
        }
    }

    pub fn fetch<'r>(&mut self, recipe: &'r Recipe) -> Result<Fetched<'r>> {
        for source in &recipe.sources {
            if let Some(path) = self.cache.get(&source.sha256) {
                return Ok(Fetched { path, source });
            }
        }

        let mut tried: Vec<String> = Vec::new();
        if let Some(dir) = self.sources_from.clone() {
            for source in &recipe.sources {
                if let Some(found) = self.local_index(&dir)?.get(&source.sha256).cloned() {
                    let path = self.cache.insert_file(&source.sha256, &found)?;
                    eprintln!("==> {}: using {}", recipe.name, found.display());
                    return Ok(Fetched { path, source });
                }
            }
            tried.push(format!("{}: no file with a matching sha256", dir.display()));
        }

        for source in &recipe.sources {
            for url in &source.urls {
                match self.download(recipe, source, url) {
                    Ok(path) => return Ok(Fetched { path, source }),
                    Err(e) if e.downcast_ref::<ChecksumMismatch>().is_some() => {
                        // Bytes that do not match the pin are not a network
                        // hiccup to route around: stop and say so.
                        return Err(e.context(format!("recipe `{}`", recipe.name)));
                    }
                    Err(e) => {
                        eprintln!(
                            "==> {}: {url} failed, trying the next source: {e:#}",
                            recipe.name
                        );
                        tried.push(format!("{url}: {e:#}"));
                    }
                }
            }
        }

        for source in &recipe.sources {
            let Some(deb) = &source.debian else { continue };
            let label = format!("apt-get source {}={}", deb.package, deb.version);
            eprintln!(
                "==> {}: trying the distribution's source archive ({label})",
                recipe.name
            );
            match self.apt.download(deb) {
                Ok(file) => {
                    let path = self
                        .cache
                        .insert_file(&source.sha256, &file)
                        .with_context(|| format!("recipe `{}`, {label}", recipe.name))?;
                    return Ok(Fetched { path, source });
                }
                Err(e) => tried.push(format!("{label}: {e:#}")),
            }
        }

        let mut msg = format!(
            "recipe `{}` ({}): no source could be fetched. Tried:",
            recipe.name,
            recipe.path.display()
        );
        if tried.is_empty() {
            msg.push_str("\n  - nothing: the recipe lists no URL or distribution source");
        }
        for t in &tried {
            msg.push_str(&format!("\n  - {t}"));
        }
        msg.push_str(
            "\nDownload one of the recipe's files elsewhere and pass its folder with --sources-from DIR.",
        );
        bail!(msg)
    }

    fn local_index(&mut self, dir: &Path) -> Result<&HashMap<String, PathBuf>> {
        if self.local_index.is_none() {
            let mut index = HashMap::new();
            let entries =
                fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
            for entry in entries {
                let path = entry?.path();
                if path.is_file() {
                    index.insert(sha256_file(&path)?, path);
                }
            }
            self.local_index = Some(index);
        }
        Ok(self.local_index.as_ref().expect("just built"))
    }

    fn client(&mut self) -> Result<&reqwest::blocking::Client> {
        if self.http.is_none() {
            let client = reqwest::blocking::Client::builder()
                // An offline machine must fail over to the next source in
                // seconds, not minutes.
                .connect_timeout(Duration::from_secs(5))
                .timeout(None)
                .user_agent(concat!("my-agent-xtask/", env!("CARGO_PKG_VERSION")))
                .build()
                .context("cannot set up the HTTP client")?;
            self.http = Some(client);
        }
        Ok(self.http.as_ref().expect("just built"))
    }

    fn download(&mut self, recipe: &Recipe, source: &Source, url: &str) -> Result<PathBuf> {
        let cache = self.cache;
        let mut response = self
            .client()?
            .get(url)
            .send()
            .context("request failed")?
            .error_for_status()?;
        let total = response.content_length();
        let mut pending = cache.writer(&source.sha256)?;

        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner(),
        };
        bar.set_message(format!("{}: {}", recipe.name, source.label()));
        if bar.is_hidden() {
            eprintln!("==> {}: downloading {url}", recipe.name);
        }

        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match response.read(&mut buf) {
                Ok(n) => n,
                Err(e) => bail!(
                    "truncated download: connection lost after {} of {} bytes ({e})",
                    pending.written(),
                    total.map_or("an unknown number of".to_string(), |t| t.to_string())
                ),
            };
            if n == 0 {
                break;
            }
            pending.write_all(&buf[..n])?;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        if let Some(expected) = total {
            if pending.written() != expected {
                bail!(
                    "truncated download: got {} of {expected} bytes",
                    pending.written()
                );
            }
        }
        pending.commit(url)
    }
}
