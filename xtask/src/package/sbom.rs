//! The package's software bill of materials: a CycloneDX 1.5 JSON document
//! naming every C component built into the prefix (from its recipe: version,
//! license, CPE, each pinned source with its sha256) and every crate linked
//! into the agent (from `cargo metadata` and `Cargo.lock`: version, license,
//! checksum), with the dependency graph between them. Shipped in the RPM and
//! written beside it; the same commit gives the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::deps::recipe::{Recipe, RecipeSet};

/// Where the package ships it, under its prefix.
pub const PAYLOAD_PATH: &str = "share/doc/sbom.cdx.json";

/// What the document describes: one RPM of the product.
pub struct SbomSubject<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub release: &'a str,
    pub license: &'a str,
    pub summary: &'a str,
    pub homepage: &'a str,
    pub target: &'a str,
    /// SOURCE_DATE_EPOCH: the document's timestamp.
    pub source_date: u64,
}

/// The agent crate and everything it links, for the agent's platform.
pub struct CrateGraph {
    pub root: String,
    pub crates: BTreeMap<String, Crate>,
}

pub struct Crate {
    pub name: String,
    pub version: String,
    pub license: Option<String>,
    /// The registry's sha256 of the .crate file, from Cargo.lock.
    pub checksum: Option<String>,
    /// Package ids of its normal (linked) dependencies.
    pub depends: BTreeSet<String>,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetaPackage>,
    resolve: Resolve,
}

#[derive(Deserialize)]
struct MetaPackage {
    id: String,
    name: String,
    version: String,
    license: Option<String>,
    manifest_path: String,
    source: Option<String>,
    targets: Vec<MetaTarget>,
}

#[derive(Deserialize)]
struct MetaTarget {
    kind: Vec<String>,
}

#[derive(Deserialize)]
struct Resolve {
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    id: String,
    deps: Vec<NodeDep>,
}

#[derive(Deserialize)]
struct NodeDep {
    pkg: String,
    dep_kinds: Vec<DepKind>,
}

#[derive(Deserialize)]
struct DepKind {
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Lock {
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    checksum: Option<String>,
}

/// The platform the agent is built for: `cargo metadata` keeps only the
/// dependencies that apply to it (no Windows or macOS crates).
const AGENT_PLATFORM: &str = "x86_64-unknown-linux-gnu";

impl CrateGraph {
    /// The crate at `manifest` (the agent's Cargo.toml) and its normal
    /// dependencies, transitively: what is compiled into its binary. Build
    /// scripts', tests' and proc macros' dependencies are not in it.
    pub fn load(sh: &Shell, workspace: &Path, manifest: &Path) -> Result<CrateGraph> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace_manifest = workspace.join("Cargo.toml");
        let out = cmd!(
            sh,
            "{cargo} metadata --format-version 1 --locked --filter-platform {AGENT_PLATFORM} --manifest-path {workspace_manifest}"
        )
        .quiet()
        .read()
        .context("`cargo metadata` failed: the SBOM lists the agent's crates from it")?;
        let meta: Metadata =
            serde_json::from_str(&out).context("reading `cargo metadata` output")?;
        let lock_path = workspace.join("Cargo.lock");
        let lock_text = std::fs::read_to_string(&lock_path)
            .with_context(|| format!("cannot read {}", lock_path.display()))?;
        let lock: Lock = toml::from_str(&lock_text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", lock_path.display()))?;
        let checksums: BTreeMap<(String, String), String> = lock
            .package
            .into_iter()
            .filter_map(|p| Some(((p.name, p.version), p.checksum?)))
            .collect();

        let manifest = manifest
            .canonicalize()
            .with_context(|| format!("cannot find {}", manifest.display()))?;
        let Some(root) = meta
            .packages
            .iter()
            .find(|p| Path::new(&p.manifest_path) == manifest)
        else {
            bail!(
                "{} is not a package of the workspace at {}",
                manifest.display(),
                workspace.display()
            );
        };
        let root = root.id.clone();
        let packages: BTreeMap<&str, &MetaPackage> =
            meta.packages.iter().map(|p| (p.id.as_str(), p)).collect();
        let nodes: BTreeMap<&str, &Node> = meta
            .resolve
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n))
            .collect();

        let mut crates = BTreeMap::new();
        let mut todo = vec![root.clone()];
        while let Some(id) = todo.pop() {
            if crates.contains_key(&id) {
                continue;
            }
            let (Some(p), Some(node)) = (packages.get(id.as_str()), nodes.get(id.as_str())) else {
                bail!("`cargo metadata` names {id} but does not describe it");
            };
            // Proc macros run in the compiler; neither they nor what only
            // they use is in the binary.
            let proc_macro = |id: &str| {
                packages.get(id).is_some_and(|p| {
                    p.targets
                        .iter()
                        .any(|t| t.kind.iter().any(|k| k == "proc-macro"))
                })
            };
            let depends: BTreeSet<String> = node
                .deps
                .iter()
                .filter(|d| d.dep_kinds.iter().any(|k| k.kind.is_none()))
                .filter(|d| !proc_macro(&d.pkg))
                .map(|d| d.pkg.clone())
                .collect();
            todo.extend(depends.iter().cloned());
            let checksum = p
                .source
                .as_ref()
                .and_then(|_| checksums.get(&(p.name.clone(), p.version.clone())).cloned());
            crates.insert(
                id,
                Crate {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    // Old manifests wrote `MIT/Apache-2.0` for `MIT OR Apache-2.0`.
                    license: p.license.as_ref().map(|l| l.replace('/', " OR ")),
                    checksum,
                    depends,
                },
            );
        }
        Ok(CrateGraph { root, crates })
    }
}

fn purl_of_crate(c: &Crate) -> String {
    format!("pkg:cargo/{}@{}", c.name, c.version)
}

fn purl_of_recipe(r: &Recipe) -> String {
    format!("pkg:generic/{}@{}", r.name, r.version)
}

fn licenses(expression: Option<&str>) -> Value {
    match expression {
        Some(e) if !e.trim().is_empty() => json!([{ "expression": e }]),
        // No license field (a license file only): say so rather than guess.
        _ => json!([{ "license": { "name": "NOASSERTION" } }]),
    }
}

fn c_component(r: &Recipe) -> Value {
    let mut references = Vec::new();
    for s in &r.sources {
        let hashes = json!([{ "alg": "SHA-256", "content": s.sha256 }]);
        for url in &s.urls {
            references.push(json!({
                "type": "distribution",
                "url": url,
                "hashes": hashes,
            }));
        }
        if let Some(d) = &s.debian {
            references.push(json!({
                "type": "distribution",
                "url": format!("pkg:deb/debian/{}@{}?arch=source", d.package, d.version),
                "comment": format!("Debian's source archive {}", d.file),
                "hashes": hashes,
            }));
        }
    }
    references.push(json!({ "type": "website", "url": r.homepage }));
    let mut component = json!({
        "type": "library",
        "bom-ref": purl_of_recipe(r),
        "name": r.name,
        "version": r.version,
        "licenses": licenses(Some(&r.license)),
        "purl": purl_of_recipe(r),
        "externalReferences": references,
        "properties": [{ "name": "my-agent:built-from", "value": "recipes/".to_string() + &r.name + ".toml" }],
    });
    if let Some(cpe) = &r.cpe {
        component["cpe"] = json!(cpe);
    }
    component
}

/// The document for one RPM: `subject`, the recipes built into its prefix,
/// and the agent's crates.
pub fn document(subject: &SbomSubject, recipes: &RecipeSet, crates: &CrateGraph) -> Result<Value> {
    let evr = format!("{}-{}", subject.version, subject.release);
    let root_ref = format!("pkg:rpm/{}@{evr}?arch=x86_64", subject.name);
    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    for r in &recipes.ordered {
        components.push(c_component(r));
        let depends: Vec<String> = recipes
            .ordered
            .iter()
            .filter(|d| r.depends.contains(&d.name))
            .map(purl_of_recipe)
            .collect();
        dependencies.push(json!({ "ref": purl_of_recipe(r), "dependsOn": depends }));
    }
    let agent = &crates.crates[&crates.root];
    for (id, c) in &crates.crates {
        let mut component = json!({
            "type": if *id == crates.root { "application" } else { "library" },
            "bom-ref": purl_of_crate(c),
            "name": c.name,
            "version": c.version,
            "licenses": licenses(c.license.as_deref()),
            "purl": purl_of_crate(c),
        });
        if let Some(sum) = &c.checksum {
            component["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
        }
        components.push(component);
        let mut depends: Vec<String> = c
            .depends
            .iter()
            .map(|d| purl_of_crate(&crates.crates[d]))
            .collect();
        depends.sort();
        dependencies.push(json!({ "ref": purl_of_crate(c), "dependsOn": depends }));
    }
    // The package holds the agent and the C libraries it links.
    let mut top: Vec<String> = recipes.ordered.iter().map(purl_of_recipe).collect();
    top.push(purl_of_crate(agent));
    dependencies.insert(0, json!({ "ref": root_ref, "dependsOn": top }));

    let mut doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(subject.source_date),
            "tools": { "components": [{
                "type": "application",
                "name": "cargo xtask package",
                "version": subject.version,
            }]},
            "component": {
                "type": "application",
                "bom-ref": root_ref,
                "name": subject.name,
                "version": evr,
                "description": subject.summary,
                "licenses": licenses(Some(subject.license)),
                "purl": root_ref,
                "externalReferences": [{ "type": "website", "url": subject.homepage }],
                "properties": [{ "name": "my-agent:target", "value": subject.target }],
            },
        },
        "components": components,
        "dependencies": dependencies,
    });
    // A serial number of the content itself: the same inputs give the same
    // document, and any change gives another number.
    let digest = Sha256::digest(serde_json::to_vec(&doc)?);
    doc["serialNumber"] = json!(format!("urn:uuid:{}", uuid_from(&digest)));
    Ok(doc)
}

/// A UUID (version 5 layout, as the schema requires 1-5) from a digest.
fn uuid_from(digest: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `2023-11-14T22:13:20Z` for seconds since the epoch (Hinnant's
/// days-to-civil, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_serials() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let u = uuid_from(&[0xff; 32]);
        assert_eq!(u, "ffffffff-ffff-5fff-bfff-ffffffffffff");
    }
}
