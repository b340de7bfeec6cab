//! Recipes: one TOML file per third-party component (`recipes/<name>.toml`).
//!
//! Everything that differs between libraries lives in the recipe; the Rust
//! code only knows how to fetch, verify, extract, run steps and cache. A new
//! library is a new TOML file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::tools::ToolTable;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub version: String,
    pub license: String,
    /// Files in the source tree copied to `LICENSES/` of the prefix.
    pub license_files: Vec<String>,
    pub homepage: String,
    /// The component's CPE 2.3 name, which vulnerability scanners match
    /// the SBOM against (its version field must be `version`).
    #[serde(default)]
    pub cpe: Option<String>,
    /// Build tools (keys of `recipes/tools.toml`) that must be on PATH.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Components whose installed files this one builds against.
    #[serde(default)]
    pub depends: Vec<String>,
    /// Alternative archives of the same source tree, tried in order.
    pub sources: Vec<Source>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub install: Install,
    /// The recipe file's bytes, but for the lines that only describe the
    /// component (`cpe = `): part of the build cache key, so naming a
    /// component for the SBOM rebuilds nothing.
    #[serde(skip)]
    pub text: String,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Mandatory: nothing is used unless its digest matches.
    pub sha256: String,
    /// Name of the file when downloaded from `urls`.
    pub file: Option<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    /// The distribution's source archive as a mirror of the same file.
    pub debian: Option<DebianSource>,
    /// Directory inside the archive that becomes the source tree; only it is
    /// extracted.
    pub subdir: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    pub package: String,
    /// Pinned: the archive's default pick may be a version it cannot serve.
    pub version: String,
    /// The orig tarball's name as `apt-get source` writes it.
    pub file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    /// Program and arguments; each is a minijinja template (see `StepVars`).
    pub run: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The step is skipped when this path exists in the source tree.
    pub skip_if_exists: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// Paths relative to the prefix that must exist after the install step.
    #[serde(default)]
    pub files: Vec<String>,
    /// Paths relative to the prefix deleted after install.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Symlinks to create: path relative to the prefix -> link target.
    #[serde(default)]
    pub links: BTreeMap<String, String>,
}

impl Source {
    /// A short name for messages.
    pub fn label(&self) -> String {
        self.file
            .clone()
            .or_else(|| self.debian.as_ref().map(|d| d.file.clone()))
            .unwrap_or_else(|| format!("sha256:{}", &self.sha256[..12]))
    }
}

impl Recipe {
    pub fn load(path: &Path) -> Result<Recipe> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read recipe {}", path.display()))?;
        Recipe::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Recipe> {
        let mut recipe: Recipe = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        recipe.text = text
            .split_inclusive('\n')
            .filter(|line| {
                !line.trim_start().starts_with("cpe ") && !line.trim_start().starts_with("cpe=")
            })
            .collect();
        recipe.path = path.to_path_buf();
        recipe
            .validate()
            .with_context(|| format!("{}: invalid recipe", path.display()))?;
        Ok(recipe)
    }

    fn validate(&self) -> Result<()> {
        if let Some(cpe) = &self.cpe {
            // cpe:2.3:part:vendor:product:version:...
            let parts: Vec<&str> = cpe.split(':').collect();
            if parts.len() != 13 || parts[..2] != ["cpe", "2.3"] {
                bail!("cpe = \"{cpe}\": expected a CPE 2.3 name (cpe:2.3: and 11 fields)");
            }
            if parts[5] != self.version {
                bail!(
                    "cpe = \"{cpe}\" names version {} but the recipe builds {}: change both together",
                    parts[5],
                    self.version
                );
            }
        }
        if let Some(stem) = self.path.file_stem().and_then(|s| s.to_str()) {
            if stem != self.name {
                bail!(
                    "name `{}` does not match the file name `{stem}.toml`",
                    self.name
                );
            }
        }
        if self.sources.is_empty() {
            bail!("no [[sources]]: a recipe needs at least one pinned source");
        }
        for (i, source) in self.sources.iter().enumerate() {
            let ok = source.sha256.len() == 64
                && source
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            if !ok {
                bail!(
                    "sources[{i}].sha256 `{}` is not 64 lowercase hex digits",
                    source.sha256
                );
            }
            if !source.urls.is_empty() && source.file.is_none() {
                bail!("sources[{i}] has urls but no `file` to save them as");
            }
            if let Some(subdir) = &source.subdir {
                if subdir.starts_with('/') || subdir.split('/').any(|p| p == "..") {
                    bail!(
                        "sources[{i}].subdir `{subdir}` must be a relative path inside the archive"
                    );
                }
            }
        }
        if self.steps.is_empty() {
            bail!("no [[steps]]: nothing would be built");
        }
        for step in &self.steps {
            if step.run.is_empty() {
                bail!("step `{}` has an empty `run`", step.name);
            }
            for arg in step.run.iter().chain(step.env.values()) {
                crate::template::check(arg)
                    .with_context(|| format!("step `{}`: bad template `{arg}`", step.name))?;
            }
        }
        for rel in self
            .install
            .files
            .iter()
            .chain(&self.install.remove)
            .chain(self.install.links.keys())
        {
            if rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
                bail!("install path `{rel}` must be relative to the prefix");
            }
        }
        Ok(())
    }
}

/// The product's components and everything they depend on, loaded and put in
/// build order (dependencies first).
#[derive(Debug)]
pub struct RecipeSet {
    pub ordered: Vec<Recipe>,
}

impl RecipeSet {
    pub fn load(dir: &Path, components: &[String], tools: &ToolTable) -> Result<RecipeSet> {
        let mut loaded: BTreeMap<String, Recipe> = BTreeMap::new();
        let mut pending: Vec<String> = components.to_vec();
        while let Some(name) = pending.pop() {
            if loaded.contains_key(&name) {
                continue;
            }
            if name.is_empty() || name.contains(['/', '.']) {
                bail!("`{name}` is not a valid component name");
            }
            let path = dir.join(format!("{name}.toml"));
            if !path.exists() {
                bail!(
                    "no recipe for component `{name}`: expected {}",
                    path.display()
                );
            }
            let recipe = Recipe::load(&path)?;
            for tool in &recipe.tools {
                if !tools.contains(tool) {
                    bail!(
                        "{}: tool `{tool}` is not described in recipes/tools.toml",
                        path.display()
                    );
                }
            }
            pending.extend(recipe.depends.iter().cloned());
            loaded.insert(name, recipe);
        }
        let ordered = order(loaded)?;
        Ok(RecipeSet { ordered })
    }

    pub fn get(&self, name: &str) -> Option<&Recipe> {
        self.ordered.iter().find(|r| r.name == name)
    }
}

/// Topological order, dependencies first; ties broken by name so the order
/// is stable. A cycle is an error naming its members.
pub fn order(mut recipes: BTreeMap<String, Recipe>) -> Result<Vec<Recipe>> {
    for recipe in recipes.values() {
        for dep in &recipe.depends {
            if !recipes.contains_key(dep) {
                bail!(
                    "{}: depends on `{dep}`, which has no recipe",
                    recipe.path.display()
                );
            }
        }
    }
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut ordered = Vec::new();
    while !recipes.is_empty() {
        let ready: Vec<String> = recipes
            .values()
            .filter(|r| r.depends.iter().all(|d| done.contains(d)))
            .map(|r| r.name.clone())
            .collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = recipes.keys().map(String::as_str).collect();
            bail!("dependency cycle between recipes: {}", stuck.join(", "));
        }
        for name in ready {
            let recipe = recipes.remove(&name).expect("ready recipe is present");
            done.insert(name);
            ordered.push(recipe);
        }
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "zlib"
version = "1.3"
license = "Zlib"
license_files = ["LICENSE"]
homepage = "https://zlib.net/"
depends = []

[[sources]]
sha256 = "ff0ba4c292013dbc27530b3a81e1f9a813cd39de01ca5e0f8bf355702efa593e"
file = "zlib-1.3.tar.gz"
urls = ["https://zlib.net/zlib-1.3.tar.gz"]
subdir = "zlib-1.3"

[[steps]]
name = "configure"
run = ["./configure", "--prefix={{ prefix }}"]
"#;

    fn parse(text: &str) -> Result<Recipe> {
        Recipe::parse(text, Path::new("recipes/zlib.toml"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn parses_a_good_recipe() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.name, "zlib");
        assert_eq!(r.sources[0].subdir.as_deref(), Some("zlib-1.3"));
        assert_eq!(r.steps[0].run[1], "--prefix={{ prefix }}");
    }

    #[test]
    fn a_cpe_names_the_recipe_version_and_changes_no_build_key() {
        let named = GOOD.replace(
            "depends = []\n",
            "depends = []\ncpe = \"cpe:2.3:a:zlib:zlib:1.3:*:*:*:*:*:*:*\"\n",
        );
        let r = parse(&named).unwrap();
        assert_eq!(
            r.cpe.as_deref(),
            Some("cpe:2.3:a:zlib:zlib:1.3:*:*:*:*:*:*:*")
        );
        assert_eq!(r.text, parse(GOOD).unwrap().text);
        let stale = named.replace("zlib:1.3:", "zlib:1.2:");
        assert!(err(&stale).contains("names version 1.2 but the recipe builds 1.3"));
        let short = named.replace(":*:*:*:*:*:*:*", "");
        assert!(err(&short).contains("expected a CPE 2.3 name"));
    }

    #[test]
    fn missing_sha256_is_an_error_with_file_and_line() {
        let text = GOOD.replace(
            "sha256 = \"ff0ba4c292013dbc27530b3a81e1f9a813cd39de01ca5e0f8bf355702efa593e\"\n",
            "",
        );
        let e = err(&text);
        assert!(e.contains("recipes/zlib.toml"), "{e}");
        assert!(e.contains("missing field `sha256`"), "{e}");
        assert!(e.contains("line 9"), "{e}");
    }

    #[test]
    fn malformed_sha256_is_an_error() {
        let e = err(&GOOD.replace("ff0ba4c2", "XYZ"));
        assert!(e.contains("is not 64 lowercase hex digits"), "{e}");
    }

    #[test]
    fn unknown_field_is_an_error() {
        let e = err(&GOOD.replace("depends = []", "depends = []\ncolour = \"blue\""));
        assert!(e.contains("unknown field `colour`"), "{e}");
        assert!(e.contains("line 8"), "{e}");
    }

    #[test]
    fn name_must_match_file() {
        let e = format!(
            "{:#}",
            Recipe::parse(GOOD, Path::new("recipes/zstd.toml")).unwrap_err()
        );
        assert!(e.contains("does not match the file name"), "{e}");
    }

    #[test]
    fn bad_template_is_an_error() {
        let e = err(&GOOD.replace("{{ prefix }}", "{{ prefix"));
        assert!(e.contains("bad template"), "{e}");
    }

    #[test]
    fn escaping_subdir_is_an_error() {
        let e = err(&GOOD.replace("subdir = \"zlib-1.3\"", "subdir = \"../etc\""));
        assert!(e.contains("must be a relative path"), "{e}");
    }

    fn named(name: &str, depends: &[&str]) -> Recipe {
        let mut r = parse(GOOD).unwrap();
        r.name = name.to_string();
        r.depends = depends.iter().map(|s| s.to_string()).collect();
        r
    }

    #[test]
    fn orders_dependencies_first() {
        let set: BTreeMap<_, _> = [
            named("mysqlclient", &["openssl"]),
            named("openssl", &[]),
            named("agentlib", &["mysqlclient", "libyaml"]),
            named("libyaml", &[]),
        ]
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
        let names: Vec<String> = order(set).unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["libyaml", "openssl", "mysqlclient", "agentlib"]);
    }

    #[test]
    fn dependency_cycle_is_an_error() {
        let set: BTreeMap<_, _> = [
            named("a", &["b"]),
            named("b", &["c"]),
            named("c", &["a"]),
            named("d", &[]),
        ]
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
        let e = format!("{:#}", order(set).unwrap_err());
        assert!(
            e.contains("dependency cycle between recipes: a, b, c"),
            "{e}"
        );
    }

    #[test]
    fn unknown_dependency_is_an_error() {
        let set: BTreeMap<_, _> = [named("a", &["nope"])]
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        let e = format!("{:#}", order(set).unwrap_err());
        assert!(e.contains("depends on `nope`, which has no recipe"), "{e}");
    }

    #[test]
    fn repository_recipes_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes");
        let tools = ToolTable::load(&root.join("tools.toml")).unwrap();
        let product = crate::product::Product::load(&root.join("my-agent.toml")).unwrap();
        let set = RecipeSet::load(&root, &product.components, &tools).unwrap();
        let names: Vec<&str> = set.ordered.iter().map(|r| r.name.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("openssl") < pos("mysqlclient"), "{names:?}");
        assert_eq!(names.len(), 4);
    }
}
