//! Every command-line flag of the xtask, parsed in one place.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::layout::{workspace_root, Layout};
use crate::product::Product;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Builds the my-agent prefix, agent and RPM"
)]
pub struct Xtask {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Product definition file [default: recipes/my-agent.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub product: Option<PathBuf>,
    /// Package, service and user name, overriding the product file
    #[arg(long, global = true)]
    pub name: Option<String>,
    /// Install prefix, overriding the product file (e.g. /opt/db-agent)
    #[arg(long, global = true, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
    /// Folder of recipes [default: recipes/ of the checkout]
    #[arg(long, global = true, value_name = "DIR")]
    pub recipes: Option<PathBuf>,
    /// Cache of sources and built components, shared between clones
    /// [default: $XDG_CACHE_HOME/my-agent or ~/.cache/my-agent]
    #[arg(long, global = true, env = "MY_AGENT_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Work directory for stage, build trees and logs [default: target/<name>]
    #[arg(long, global = true, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Parallel build jobs [default: the number of cores]
    #[arg(short, long, global = true)]
    pub jobs: Option<usize>,
}

impl Global {
    /// The product file with `--name`/`--prefix` applied, and where its
    /// recipes, work and cache directories are.
    pub fn setup(&self) -> Result<(Product, Layout)> {
        let product_file = self
            .product
            .clone()
            .unwrap_or_else(|| workspace_root().join("recipes/my-agent.toml"));
        let prefix = self
            .prefix
            .as_ref()
            .map(|p| {
                p.to_str()
                    .map(str::to_string)
                    .context("--prefix is not UTF-8")
            })
            .transpose()?;
        let product = Product::load(&product_file)?.with_overrides(self.name.clone(), prefix)?;
        let recipes = self.recipes.clone().or_else(|| {
            self.product
                .as_ref()
                .and_then(|p| p.parent().map(PathBuf::from))
        });
        let layout = Layout::new(
            &product.name,
            recipes,
            self.work_dir.clone(),
            self.cache_dir.clone(),
        )?;
        Ok((product, layout))
    }

    /// `--jobs`, else the number of cores.
    pub fn jobs(&self) -> usize {
        self.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch, verify, build and stage jemalloc, libyaml, OpenSSL and libmysqlclient
    Deps(DepsFlags),
    /// Build the prefix (cached), the agent, the service files, check the payload and write the RPM
    Package(PackageFlags),
    /// Build the prefix (cached), then the agent against it, installed in the stage
    Agent(DepsFlags),
    /// Build the prefix (cached), then run every test of the workspace against it
    Test(TestFlags),
    /// Benchmarks: the agent (1M error-log lines), slow-log parsing (200 MB), the RPM step vs rpmbuild, forward vs fluent-bit
    // Parsed here, run by the xtask-bench crate (xtask/bench), which only
    // this command compiles: the sink and the benches stay out of the rest.
    Bench(BenchFlags),
    /// Lay out target/dist's RPMs as a signed yum/dnf repository per EL release, with a .repo file and a release RPM
    Repo(RepoFlags),
}

#[derive(Debug, Args)]
pub struct RepoFlags {
    /// Sign unsigned RPMs and repomd.xml with this ASCII-armored OpenPGP secret key (no passphrase)
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// The URL hosts reach the repository at [default: file:// of --out]
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// The repository's folder [default: target/repo]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where `cargo xtask package` wrote the RPMs [default: target/dist]
    #[arg(long, value_name = "DIR")]
    pub dist_dir: Option<PathBuf>,
    /// Another folder of RPMs to include (older releases: upgrades and downgrades), repeatable
    #[arg(long, value_name = "DIR")]
    pub add: Vec<PathBuf>,
    /// Another ASCII-armored public key hosts should trust, shipped beside the signing key's (key rotation), repeatable
    #[arg(long, value_name = "FILE")]
    pub trust: Vec<PathBuf>,
    /// Timestamp of the signatures and the release RPM [default: the last commit's time]
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub source_date_epoch: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DepsFlags {
    /// Folder of pre-downloaded source archives, matched by sha256 whatever their names
    #[arg(long, value_name = "DIR")]
    pub sources_from: Option<PathBuf>,
    /// Build only this component and its dependencies (repeatable)
    #[arg(long, value_name = "COMPONENT")]
    pub only: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TestFlags {
    #[command(flatten)]
    pub deps: DepsFlags,
    /// Extra arguments for `cargo test`
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BenchFlags {
    #[command(flatten)]
    pub deps: DepsFlags,
    /// Lines in the generated MySQL error log
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: u64,
    /// Run one benchmark only: `agent`, `slowlog`, `rpm`, `targets` (the el7
    /// zig build against the host build, three rounds), `forward` (the
    /// forward output and input against fluent-bit 5.1.1 from
    /// ../shared/tools, three rounds) or `hot-text` (profile the agent
    /// under callgrind and rewrite agent/link/hot-text.txt, the functions
    /// its build lays out first); the last three are not part of the
    /// default run
    #[arg(long, value_name = "BENCH")]
    pub run: Option<String>,
    /// Also run the agent, slow-log and forward benches (those selected)
    /// with another build of the agent (a previous version's
    /// `bin/my-agent`), the two in turn for three rounds, and report this
    /// build's figures as ratios to it
    #[arg(long, value_name = "BINARY")]
    pub against: Option<std::path::PathBuf>,
    /// Also run the agent bench with fluent-bit (the binary given, else
    /// ../shared/tools/fluent-bit/fluent-bit) configured alike (tail with a
    /// DB, record_modifier, http json_lines, filesystem storage, 0.2 s
    /// flush), alternating three rounds, and report my-agent's figures as
    /// ratios to fluent-bit's
    #[arg(long, value_name = "FLUENT_BIT", num_args = 0..=1)]
    pub peer: Option<Option<std::path::PathBuf>>,
}

#[derive(Debug, Args)]
pub struct PackageFlags {
    #[command(flatten)]
    pub deps: DepsFlags,
    /// Distribution from recipes/targets.toml: el7, el8, el9 (glibc 2.17, 2.28,
    /// 2.34), host (no ceiling), or all (every EL target)
    #[arg(long, default_value = "all")]
    pub target: String,
    /// How to build: auto (host if its glibc is within the target's, else zig),
    /// host, zig, podman, docker or vagrant
    #[arg(long, value_enum, default_value_t = BuilderKind::Auto)]
    pub builder: BuilderKind,
    /// Base image for podman/docker instead of the target's (a mirror, a registry of your own)
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// vagrant: destroy the VM after the build instead of halting it
    #[arg(long)]
    pub destroy: bool,
    /// RPM release number
    #[arg(long, default_value_t = 1)]
    pub rpm_release: u32,
    /// Where the RPM and manifest go [default: target/dist]
    #[arg(long, value_name = "DIR")]
    pub dist_dir: Option<PathBuf>,
    /// Timestamp for every file and the build time [default: the last commit's time]
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub source_date_epoch: Option<u64>,
    /// Sign the RPM with this ASCII-armored OpenPGP secret key (no passphrase)
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
}

/// `--builder`: which machine and compiler build a target (`builders::plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuilderKind {
    /// host when the host's glibc is within the target's ceiling, else zig
    Auto,
    /// the host's own compiler and glibc
    Host,
    /// zig cc and cargo-zigbuild against the target's glibc: no container, no root
    Zig,
    /// a podman container of the target's distribution
    Podman,
    /// a docker container of the target's distribution
    Docker,
    /// a Vagrant box of the target's distribution
    Vagrant,
}
