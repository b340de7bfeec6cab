//! The package step, after deps: the agent built against the stage
//! (`agent_build.rs`) -> the payload staged (`payload.rs`) -> health check
//! (`health.rs`) -> service files rendered -> RPM (`rpm_package.rs`), held
//! to the target's rules (`rpm_rules.rs`) -> manifest, then a summary.
//! `cargo xtask package` runs it through a builder (`builders/`), which
//! chooses where; nothing here knows which builder called.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;
use xshell::{cmd, Shell};

use crate::deps::recipe::RecipeSet;
use crate::deps::DepsReport;
use crate::file_tree::sha256_file;
use crate::layout::{workspace_root, Layout};
use crate::package::payload::ProductVars;
use crate::package::rpm_package::RpmSpec;
use crate::product::Product;
use crate::targets::Target;
use crate::tools::ToolTable;

pub mod agent_build;
pub mod health;
pub mod payload;
pub mod rpm_package;
pub mod rpm_rules;
pub mod sbom;

pub struct PackageOptions {
    pub target: Target,
    pub rpm_release: u32,
    pub dist: PathBuf,
    pub source_date: Option<u64>,
    pub sign_key: Option<PathBuf>,
}

pub struct PackageResult {
    pub rpm: PathBuf,
    pub manifest: PathBuf,
}

/// The agent's version, from agent/Cargo.toml.
pub fn agent_version() -> Result<String> {
    let path = workspace_root().join("agent/Cargo.toml");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: toml::Value = toml::from_str(&text)?;
    doc.get("package")
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .map(String::from)
        .with_context(|| format!("{}: no [package] version", path.display()))
}

/// SOURCE_DATE_EPOCH, else the last commit's time, so rebuilding a commit
/// gives the same bytes.
pub fn source_date(sh: &Shell, explicit: Option<u64>) -> Result<u64> {
    if let Some(t) = explicit {
        return Ok(t);
    }
    let _dir = sh.push_dir(workspace_root());
    let out = cmd!(sh, "git log -1 --format=%ct")
        .quiet()
        .ignore_stderr()
        .read();
    match out.ok().and_then(|s| s.trim().parse().ok()) {
        Some(t) => Ok(t),
        None => bail!("cannot read the last commit's time; set SOURCE_DATE_EPOCH"),
    }
}

/// What the earlier steps produced and where: the inputs of packaging.
#[derive(Clone, Copy)]
pub struct Built<'a> {
    pub sh: &'a Shell,
    pub product: &'a Product,
    pub layout: &'a Layout,
    pub deps: &'a DepsReport,
    /// The release agent, installed in the stage.
    pub agent: &'a Path,
}

/// Everything the RPM is made of, ready to write.
pub struct Prepared {
    pub version: String,
    pub release: String,
    pub license: String,
    pub description: String,
    pub payload: payload::Payload,
    /// Debug info split off the payload's ELF files: `<name>-debuginfo`.
    pub debug_payload: payload::Payload,
    pub scriptlets: payload::Scriptlets,
    pub requires: std::collections::BTreeSet<String>,
    pub report: health::HealthReport,
    pub recipes: RecipeSet,
    pub components: Vec<String>,
    pub source_date: u64,
    /// The CycloneDX SBOM, shipped in the payload and written beside the RPM.
    pub sbom: Vec<u8>,
}

impl Prepared {
    /// The `<name>-debuginfo` package: the debug files of this very build,
    /// so it requires the agent of exactly this version and release.
    pub fn debuginfo_spec<'a>(
        &'a self,
        product: &'a Product,
        target: &'a Target,
        sign_key: Option<PathBuf>,
    ) -> RpmSpec<'a> {
        // Only the agent's EVR-exact Requires: the debug files need nothing.
        static NO_REQUIRES: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        RpmSpec {
            name: format!("{}-debuginfo", product.name),
            summary: format!("Debug information for package {}", product.name),
            description: format!(
                "Debug information for the ELF files of {} {}-{}, split off when it was \
                 built: gdb, perf and eu-stack find it by build id under \
                 /usr/lib/debug/.build-id or through each file's .gnu_debuglink.",
                product.name, self.version, self.release
            ),
            payload: &self.debug_payload,
            scriptlets: None,
            requires: &NO_REQUIRES,
            belongs_to: Some(&product.name),
            ..self.spec(product, target, sign_key)
        }
    }

    pub fn spec<'a>(
        &'a self,
        product: &'a Product,
        target: &'a Target,
        sign_key: Option<PathBuf>,
    ) -> RpmSpec<'a> {
        RpmSpec {
            product,
            name: product.name.clone(),
            summary: product.summary.clone(),
            version: &self.version,
            release: self.release.clone(),
            license: self.license.clone(),
            description: self.description.clone(),
            target,
            payload: &self.payload,
            scriptlets: Some(&self.scriptlets),
            requires: &self.requires,
            belongs_to: None,
            source_date: self.source_date,
            sign_key,
        }
    }
}

/// Stages the payload, checks its health and renders the service files.
pub fn prepare(build: &Built, opts: &PackageOptions) -> Result<Prepared> {
    let Built {
        sh,
        product,
        layout,
        deps,
        agent,
    } = *build;
    let version = agent_version()?;
    let release = match &opts.target.dist {
        None => format!("{}", opts.rpm_release),
        Some(dist) => format!("{}.{dist}", opts.rpm_release),
    };
    let root = layout.work.join("payload");
    let agent_path = format!("{}/bin/{}", product.prefix, product.name);
    if !agent.is_file() {
        bail!("the agent was not built: {} is missing", agent.display());
    }

    eprintln!("==> package: staging the payload in {}", root.display());
    let templates = layout.root.join("templates");
    let spec = payload::PayloadSpec::load(&templates)?;
    payload::stage_prefix(&deps.staged, &root, &spec)?;
    let tools = ToolTable::load(&layout.recipes.join("tools.toml"))?;
    crate::tools::ensure(
        sh,
        &tools,
        &["objcopy".to_string()],
        &layout.cache.join("tools/pip"),
    )?;
    let debug_root = layout.work.join("payload-debuginfo");
    let split = payload::split_debug_info(sh, &root, &product.prefix, &debug_root)?;
    eprintln!(
        "==> package: split {:.1} MiB of debug info into the debuginfo package",
        split.saved as f64 / (1 << 20) as f64
    );
    if !split.without_build_id.is_empty() {
        eprintln!(
            "==> package: no build id, so no /usr/lib/debug/.build-id link (gdb finds their \
             debug files through .gnu_debuglink only): {}",
            split.without_build_id.join(", ")
        );
    }
    let debug_payload = payload::list_debug(&debug_root)?;

    eprintln!("==> package: health check for {}", opts.target.name);
    let report = health::check(&root, &product.prefix, &agent_path, &opts.target)?;
    if !report.problems.is_empty() {
        let mut msg = format!("health check failed ({} problems):", report.problems.len());
        for p in &report.problems {
            msg.push_str(&format!("\n  - {p}"));
        }
        bail!(msg);
    }

    let vars = ProductVars {
        name: product.name.clone(),
        prefix: product.prefix.clone(),
        user: product.user().to_string(),
        group: product.group().to_string(),
        summary: product.summary.clone(),
        homepage: product.homepage.clone(),
        version: version.clone(),
        release: release.clone(),
        target: opts.target.name.clone(),
        systemd_version: opts.target.systemd,
        jemalloc_preload: !report.agent_links_jemalloc,
    };
    let recipes = RecipeSet::load(&layout.recipes, &product.components, &tools)?;
    let mut licenses = vec![product.license.clone()];
    for r in &recipes.ordered {
        if !licenses.contains(&r.license) {
            licenses.push(r.license.clone());
        }
    }
    let license = licenses.join(" AND ");
    let source_date = source_date(sh, opts.source_date)?;

    // The SBOM goes into the payload before it is listed: the package
    // carries the list of what it is made of.
    eprintln!("==> package: SBOM of the C components and the agent's crates");
    let crates = sbom::CrateGraph::load(sh, &layout.root, &layout.root.join("agent/Cargo.toml"))?;
    let subject = sbom::SbomSubject {
        name: &product.name,
        version: &version,
        release: &release,
        license: &license,
        summary: &product.summary,
        homepage: &product.homepage,
        target: &opts.target.name,
        source_date,
    };
    let mut sbom = serde_json::to_vec_pretty(&sbom::document(&subject, &recipes, &crates)?)?;
    sbom.push(b'\n');
    let sbom_path = root
        .join(product.prefix.trim_start_matches('/'))
        .join(sbom::PAYLOAD_PATH);
    fs::create_dir_all(sbom_path.parent().expect("a folder"))?;
    fs::write(&sbom_path, &sbom)
        .with_context(|| format!("cannot write {}", sbom_path.display()))?;

    let payload = payload::render_and_list(&root, &templates, &spec, &vars)?;
    let scriptlets = payload::scriptlets(&templates, &vars)?;

    let components: Vec<String> = recipes
        .ordered
        .iter()
        .map(|r| format!("{} {}", r.name, r.version))
        .collect();
    let description = format!(
        "{}.\n\nA self-contained agent under {} with its own libraries:\n{}.",
        product.summary,
        product.prefix,
        components.join(",\n")
    );
    let requires = report.requires();
    Ok(Prepared {
        version,
        release,
        license,
        description,
        payload,
        debug_payload,
        scriptlets,
        requires,
        report,
        recipes,
        components,
        source_date,
        sbom,
    })
}

pub fn run(build: &Built, opts: &PackageOptions) -> Result<PackageResult> {
    let product = build.product;
    let prepared = prepare(build, opts)?;
    let spec = prepared.spec(product, &opts.target, opts.sign_key.clone());
    eprintln!("==> package: writing {}", spec.file_name());
    let rpm = spec.write(&opts.dist)?;
    crate::package::rpm_rules::check_package(&rpm, &opts.target)?;
    let debug_spec = prepared.debuginfo_spec(product, &opts.target, opts.sign_key.clone());
    eprintln!("==> package: writing {}", debug_spec.file_name());
    let debug_rpm = debug_spec.write(&opts.dist)?;
    crate::package::rpm_rules::check_package(&debug_rpm, &opts.target)?;
    let (version, release, payload, report, recipes, components, requires) = (
        &prepared.version,
        &prepared.release,
        &prepared.payload,
        &prepared.report,
        &prepared.recipes,
        &prepared.components,
        &prepared.requires,
    );

    // Beside the RPM, under its name: `cargo xtask repo` publishes it there.
    let sbom_path = rpm.with_extension("cdx.json");
    fs::write(&sbom_path, &prepared.sbom)
        .with_context(|| format!("cannot write {}", sbom_path.display()))?;
    let manifest_path = opts.dist.join(format!(
        "{}-{version}-{release}.manifest.json",
        product.name
    ));
    let manifest = json!({
        "name": product.name,
        "version": version,
        "release": release,
        "target": opts.target.name,
        "prefix": product.prefix,
        "rpm": rpm.file_name().map(|n| n.to_string_lossy().into_owned()),
        "rpm_sha256": sha256_file(&rpm)?,
        "debuginfo_rpm": debug_rpm.file_name().map(|n| n.to_string_lossy().into_owned()),
        "debuginfo_rpm_sha256": sha256_file(&debug_rpm)?,
        "sbom": sbom_path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "files": payload.entries.len(),
        "max_glibc": report.max_glibc.as_ref().map(|v| v.to_string()),
        "max_glibcxx": report.max_glibcxx.as_ref().map(|v| v.to_string()),
        "max_openssl": report.max_openssl.as_ref().map(|v| v.to_string()),
        // The health report: what each ELF needs of the target's glibc.
        "elves": report.elves.iter().map(|e| json!({
            "path": e.path,
            "max_glibc": e.max_glibc().map(|v| v.to_string()),
        })).collect::<Vec<_>>(),
        "requires": requires,
        "components": recipes.ordered.iter().map(|r| json!({
            "name": r.name,
            "version": r.version,
            "license": r.license,
            "homepage": r.homepage,
            "sources": r.sources.iter().map(|s| json!({
                "sha256": s.sha256,
                "urls": s.urls,
                "debian": s.debian.as_ref().map(|d| format!("{}={}", d.package, d.version)),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;

    let size = fs::metadata(&rpm)?.len();
    println!(
        "health report ({} ELF files, target {}):",
        report.elves.len(),
        opts.target.name
    );
    for e in &report.elves {
        println!(
            "  GLIBC_{:<6} {}",
            e.max_glibc().map_or("-".into(), |v| v.to_string()),
            e.path
        );
    }
    println!("package   {}", rpm.display());
    println!(
        "size      {:.1} MiB, {} files",
        size as f64 / (1 << 20) as f64,
        payload.entries.len()
    );
    println!("manifest  {}", manifest_path.display());
    println!("sbom      {}", sbom_path.display());
    println!("contents  {}", components.join(", "));
    println!(
        "needs     GLIBC {}  GLIBCXX {}  ({} target)",
        report
            .max_glibc
            .as_ref()
            .map_or("-".into(), |v| v.to_string()),
        report
            .max_glibcxx
            .as_ref()
            .map_or("-".into(), |v| v.to_string()),
        opts.target.name
    );
    Ok(PackageResult {
        rpm,
        manifest: manifest_path,
    })
}
