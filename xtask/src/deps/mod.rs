//! `cargo xtask deps`: fetch, verify, build and stage every component of the
//! product, reusing the build cache for anything unchanged. Each component
//! is a recipe (`recipe.rs`, from `recipes/*.toml`); its sources are fetched
//! (`fetch.rs`, `apt_source.rs`) into a content-addressed cache
//! (`source_cache.rs`), extracted (`extract.rs`), built (`component_build.rs`)
//! and kept by build key (`build_cache.rs`, one writer at a time:
//! `cache_lock.rs`).

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xshell::Shell;

use crate::deps::apt_source::AptMirror;
use crate::deps::build_cache::{BuildCache, BuildKey, KeyInputs, Lookup};
use crate::deps::cache_lock::CacheLock;
use crate::deps::component_build::{ComponentBuild, StepVars};
use crate::deps::extract::extract;
use crate::deps::fetch::Fetcher;
use crate::deps::recipe::RecipeSet;
use crate::deps::source_cache::SourceCache;
use crate::file_tree;
use crate::layout::{Layout, StagedPrefix};
use crate::product::Product;
use crate::toolchain::Toolchain;
use crate::tools::{self, ToolTable};

pub mod apt_source;
pub mod build_cache;
pub mod cache_lock;
pub mod component_build;
pub mod extract;
pub mod fetch;
pub mod recipe;
pub mod source_cache;

pub struct DepsOptions {
    pub sources_from: Option<PathBuf>,
    /// Build only these components (and what they depend on).
    pub only: Vec<String>,
    pub jobs: usize,
    /// The host compiler or zig for a glibc.
    pub toolchain: Toolchain,
}

#[derive(Debug)]
pub enum Outcome {
    Cached,
    Built,
}

#[derive(Debug)]
pub struct ComponentReport {
    pub name: String,
    pub version: String,
    pub key: BuildKey,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

pub struct DepsReport {
    pub staged: StagedPrefix,
    pub components: Vec<ComponentReport>,
}

pub fn run(
    sh: &Shell,
    product: &Product,
    layout: &Layout,
    opts: &DepsOptions,
) -> Result<DepsReport> {
    let started = Instant::now();
    let tools = ToolTable::load(&layout.recipes.join("tools.toml"))?;
    let wanted = if opts.only.is_empty() {
        product.components.clone()
    } else {
        opts.only.clone()
    };
    let recipes = RecipeSet::load(&layout.recipes, &wanted, &tools)?;

    let mut needed_tools: Vec<String> = recipes
        .ordered
        .iter()
        .flat_map(|r| r.tools.clone())
        .collect();
    needed_tools.sort();
    needed_tools.dedup();
    tools::ensure(sh, &tools, &needed_tools, &layout.cache.join("tools/pip"))?;
    let builder = opts.toolchain.identity(sh)?;
    let step_env = opts.toolchain.c_env();

    let _lock = CacheLock::acquire(&layout.cache)?;
    let sources = SourceCache::new(layout.cache.join("sources"));
    let builds = BuildCache::new(layout.cache.join("builds"));
    let mut fetcher = Fetcher::new(
        &sources,
        opts.sources_from.clone(),
        AptMirror::new(layout.apt_dir()),
    );

    // Every component's key first: they depend only on recipes, sources,
    // the prefix and the compiler, not on any build.
    let mut keys: Vec<BuildKey> = Vec::new();
    for recipe in &recipes.ordered {
        let dependency_keys: Vec<(&str, &BuildKey)> = recipes
            .ordered
            .iter()
            .zip(&keys)
            .filter(|(r, _)| recipe.depends.contains(&r.name))
            .map(|(r, k)| (r.name.as_str(), k))
            .collect();
        let key = KeyInputs {
            recipe_text: &recipe.text,
            source_sha256: recipe.sources.iter().map(|s| s.sha256.as_str()).collect(),
            dependency_keys,
            prefix: &product.prefix,
            builder: &builder,
        }
        .key();
        keys.push(key);
    }

    let staged = StagedPrefix {
        root: layout.stage_root(),
        prefix: product.prefix.clone(),
    };
    // A stage made from exactly these cache entries is left as it is: its
    // files keep their times, so cargo does not rebuild the -sys crates that
    // watch the prefix's headers and libraries on every run.
    let stamp_path = staged.root.join(".components");
    let stamp: String = recipes
        .ordered
        .iter()
        .zip(&keys)
        .map(|(r, k)| format!("{} {} {k}\n", r.name, r.version))
        .collect();
    // Looked up once: a corrupt entry is removed by its lookup and must
    // still be reported as such below.
    let lookups = keys
        .iter()
        .map(|k| builds.lookup(k))
        .collect::<Result<Vec<Lookup>>>()?;
    let all_cached = lookups.iter().all(|l| matches!(l, Lookup::Hit(_)));
    if all_cached
        && staged.path().is_dir()
        && fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
    {
        let components = recipes
            .ordered
            .iter()
            .zip(keys)
            .map(|(r, key)| ComponentReport {
                name: r.name.clone(),
                version: r.version.clone(),
                key,
                outcome: Outcome::Cached,
                elapsed: Duration::ZERO,
            })
            .collect::<Vec<_>>();
        for c in &components {
            eprintln!("==> {} {}: cached, already staged", c.name, c.version);
        }
        eprintln!(
            "==> staged {n} components ({n} cached, 0 built) in {}: up to date ({:.1?})",
            staged.path().display(),
            started.elapsed(),
            n = components.len(),
        );
        return Ok(DepsReport { staged, components });
    }

    // Otherwise the stage is rebuilt from cache entries, so it holds exactly
    // the current components and nothing left over from older ones.
    if staged.root.exists() {
        fs::remove_dir_all(&staged.root)
            .with_context(|| format!("cannot clear the stage {}", staged.root.display()))?;
    }
    fs::create_dir_all(staged.path())?;

    let mut reports: Vec<ComponentReport> = Vec::new();
    for ((recipe, key), lookup) in recipes.ordered.iter().zip(keys).zip(lookups) {
        let t0 = Instant::now();
        let (entry, outcome) = match lookup {
            Lookup::Hit(entry) => (entry, Outcome::Cached),
            other => {
                if let Lookup::Corrupt(why) = other {
                    eprintln!(
                        "==> {}: rebuilding a corrupt cache entry: {why}",
                        recipe.name
                    );
                }
                eprintln!("==> {} {}: building", recipe.name, recipe.version);
                let fetched = fetcher.fetch(recipe)?;
                let work = layout.build_dir(&recipe.name);
                if work.exists() {
                    fs::remove_dir_all(&work)
                        .with_context(|| format!("cannot clear {}", work.display()))?;
                }
                let src = work.join("src");
                extract(&fetched.path, fetched.source.subdir.as_deref(), &src).with_context(
                    || format!("recipe `{}`: cannot unpack its source", recipe.name),
                )?;
                let log_dir = layout.log_dir(&recipe.name);
                let _ = fs::remove_dir_all(&log_dir);
                let build = ComponentBuild {
                    recipe,
                    src: src.clone(),
                    destdir: work.join("dest"),
                    vars: StepVars {
                        prefix: product.prefix.clone(),
                        destdir: work.join("dest").display().to_string(),
                        staged_prefix: staged.path().display().to_string(),
                        jobs: opts.jobs,
                        src: src.display().to_string(),
                    },
                    log_dir,
                    env: step_env.clone(),
                };
                let tree = build.run(sh)?;
                let entry = builds.store(&key, &recipe.name, &recipe.version, &tree)?;
                // Build trees are large (OpenSSL's is ~600 MB) and the cache
                // holds the result; keep only the logs.
                let _ = fs::remove_dir_all(&work);
                (entry, Outcome::Built)
            }
        };
        file_tree::copy_into(&entry.tree(), &staged.path())?;
        let elapsed = t0.elapsed();
        eprintln!(
            "==> {} {}: {} in {:.1?}",
            recipe.name,
            recipe.version,
            match outcome {
                Outcome::Cached => "cached",
                Outcome::Built => "built",
            },
            elapsed
        );
        reports.push(ComponentReport {
            name: recipe.name.clone(),
            version: recipe.version.clone(),
            key,
            outcome,
            elapsed,
        });
    }

    // Written last: an interrupted staging leaves no stamp and is redone.
    fs::write(&stamp_path, &stamp)?;
    let cached = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Cached))
        .count();
    eprintln!(
        "==> staged {} components ({cached} cached, {} built) in {} ({:.1?})",
        reports.len(),
        reports.len() - cached,
        staged.path().display(),
        started.elapsed()
    );
    Ok(DepsReport {
        staged,
        components: reports,
    })
}
