//! Built components, stored by a key over everything that shapes the build:
//! `<cache>/builds/<key>/{tree/, manifest.json}`.
//!
//! An entry is assembled in a temporary directory and renamed into place, so
//! a crash never leaves a half-written entry under a real key; on lookup the
//! tree is checked against its manifest, and an entry that fails the check is
//! removed and rebuilt.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::file_tree::{self, TreeEntry};
use crate::toolchain::BuilderIdentity;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BuildKey(pub String);

impl std::fmt::Display for BuildKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything a component's build key is made of.
pub struct KeyInputs<'a> {
    pub recipe_text: &'a str,
    pub source_sha256: Vec<&'a str>,
    pub dependency_keys: Vec<(&'a str, &'a BuildKey)>,
    pub prefix: &'a str,
    pub builder: &'a BuilderIdentity,
}

/// Bumped when the layout of entries or the build mechanism changes in a way
/// that makes old entries wrong.
const FORMAT: &str = "my-agent-build-cache-v1";

impl KeyInputs<'_> {
    pub fn key(&self) -> BuildKey {
        let mut h = Sha256::new();
        // Length-prefixed fields: no two different inputs hash alike by
        // shifting bytes from one field into the next.
        let mut field = |name: &str, value: &str| {
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value.as_bytes());
        };
        field("format", FORMAT);
        field("recipe", self.recipe_text);
        for sha in &self.source_sha256 {
            field("source", sha);
        }
        let mut deps = self.dependency_keys.clone();
        deps.sort();
        for (name, key) in deps {
            field("dependency", name);
            field("dependency-key", &key.0);
        }
        field("prefix", self.prefix);
        field("compiler", &self.builder.compiler);
        field("target", &self.builder.target);
        BuildKey(hex::encode(h.finalize()))
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub component: String,
    pub version: String,
    pub key: BuildKey,
    pub entries: Vec<TreeEntry>,
}

pub struct BuildCache {
    dir: PathBuf,
}

/// A verified entry.
pub struct CacheEntry {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl CacheEntry {
    /// The installed files, relative to the prefix.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }
}

/// What a lookup found.
pub enum Lookup {
    Hit(CacheEntry),
    Miss,
    /// An entry existed but did not match its manifest; it has been removed.
    Corrupt(String),
}

impl BuildCache {
    pub fn new(dir: PathBuf) -> BuildCache {
        BuildCache { dir }
    }

    fn entry_dir(&self, key: &BuildKey) -> PathBuf {
        self.dir.join(&key.0)
    }

    pub fn lookup(&self, key: &BuildKey) -> Result<Lookup> {
        let dir = self.entry_dir(key);
        if !dir.exists() {
            return Ok(Lookup::Miss);
        }
        match verify(&dir, key) {
            Ok(manifest) => Ok(Lookup::Hit(CacheEntry { dir, manifest })),
            Err(why) => {
                fs::remove_dir_all(&dir).with_context(|| {
                    format!("cannot remove corrupt cache entry {}", dir.display())
                })?;
                Ok(Lookup::Corrupt(format!("{}: {why:#}", dir.display())))
            }
        }
    }

    /// Stores `tree` (the component's files relative to the prefix).
    pub fn store(
        &self,
        key: &BuildKey,
        component: &str,
        version: &str,
        tree: &Path,
    ) -> Result<CacheEntry> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create build cache {}", self.dir.display()))?;
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{}", key.0, std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        file_tree::copy_into(tree, &tmp.join("tree"))?;
        let manifest = Manifest {
            component: component.to_string(),
            version: version.to_string(),
            key: key.clone(),
            entries: file_tree::list(&tmp.join("tree"))?,
        };
        fs::write(
            tmp.join("manifest.json"),
            serde_json::to_vec_pretty(&manifest)?,
        )?;
        let dir = self.entry_dir(key);
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&tmp, &dir)
            .with_context(|| format!("cannot move {} into place", tmp.display()))?;
        Ok(CacheEntry { dir, manifest })
    }
}

fn verify(dir: &Path, key: &BuildKey) -> Result<Manifest> {
    let text = fs::read(dir.join("manifest.json")).context("no manifest")?;
    let manifest: Manifest = serde_json::from_slice(&text).context("unreadable manifest")?;
    anyhow::ensure!(&manifest.key == key, "manifest is for key {}", manifest.key);
    let actual = file_tree::list(&dir.join("tree")).context("unreadable tree")?;
    if actual != manifest.entries {
        let differs = actual
            .iter()
            .zip(&manifest.entries)
            .find(|(a, m)| a != m)
            .map(|(a, _)| a.path().to_string())
            .unwrap_or_else(|| "the file count".to_string());
        anyhow::bail!("tree does not match its manifest ({differs} differs)");
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> BuilderIdentity {
        BuilderIdentity {
            compiler: "cc (Debian 12.2.0-14) 12.2.0".into(),
            target: "x86_64-linux-gnu".into(),
        }
    }

    fn base_key(
        recipe: &str,
        sha: &str,
        dep: Option<&BuildKey>,
        prefix: &str,
        b: &BuilderIdentity,
    ) -> BuildKey {
        KeyInputs {
            recipe_text: recipe,
            source_sha256: vec![sha],
            dependency_keys: dep.map(|k| vec![("openssl", k)]).unwrap_or_default(),
            prefix,
            builder: b,
        }
        .key()
    }

    #[test]
    fn key_changes_with_each_input() {
        let b = builder();
        let dep = BuildKey("d".repeat(64));
        let k = base_key("r", "s", Some(&dep), "/opt/my-agent", &b);
        assert_eq!(
            k,
            base_key("r", "s", Some(&dep), "/opt/my-agent", &b),
            "stable"
        );
        let others = [
            base_key("r2", "s", Some(&dep), "/opt/my-agent", &b),
            base_key("r", "s2", Some(&dep), "/opt/my-agent", &b),
            base_key(
                "r",
                "s",
                Some(&BuildKey("e".repeat(64))),
                "/opt/my-agent",
                &b,
            ),
            base_key("r", "s", None, "/opt/my-agent", &b),
            base_key("r", "s", Some(&dep), "/opt/db-agent", &b),
            base_key(
                "r",
                "s",
                Some(&dep),
                "/opt/my-agent",
                &BuilderIdentity {
                    compiler: "clang 16".into(),
                    ..builder()
                },
            ),
            base_key(
                "r",
                "s",
                Some(&dep),
                "/opt/my-agent",
                &BuilderIdentity {
                    target: "aarch64-linux-gnu".into(),
                    ..builder()
                },
            ),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(&k, other, "input {i} did not change the key");
        }
        // Moving bytes between fields changes the key too.
        assert_ne!(
            base_key("rs", "", None, "/p", &b),
            base_key("r", "s", None, "/p", &b)
        );
    }

    #[test]
    fn stores_verifies_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(dir.path().join("builds"));
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("lib")).unwrap();
        fs::write(tree.join("lib/liba.so.1"), b"one").unwrap();
        let key = BuildKey("a".repeat(64));

        assert!(matches!(cache.lookup(&key).unwrap(), Lookup::Miss));
        cache.store(&key, "a", "1", &tree).unwrap();
        let Lookup::Hit(entry) = cache.lookup(&key).unwrap() else {
            panic!("expected a hit")
        };
        assert_eq!(
            fs::read(entry.tree().join("lib/liba.so.1")).unwrap(),
            b"one"
        );
        // No temporary directory is left next to entries.
        let names: Vec<_> = fs::read_dir(dir.path().join("builds")).unwrap().collect();
        assert_eq!(names.len(), 1);

        fs::write(entry.tree().join("lib/liba.so.1"), b"two").unwrap();
        let Lookup::Corrupt(why) = cache.lookup(&key).unwrap() else {
            panic!("expected corrupt")
        };
        assert!(why.contains("lib/liba.so.1 differs"), "{why}");
        assert!(
            matches!(cache.lookup(&key).unwrap(), Lookup::Miss),
            "corrupt entry removed"
        );

        // A half-written entry (no manifest) is corrupt, not a hit.
        cache.store(&key, "a", "1", &tree).unwrap();
        fs::remove_file(dir.path().join("builds").join(&key.0).join("manifest.json")).unwrap();
        assert!(matches!(cache.lookup(&key).unwrap(), Lookup::Corrupt(_)));
    }
}
