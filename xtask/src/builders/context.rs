//! What every builder is given: the shell, the product, where things go,
//! and the global flags a container's or VM's own `cargo xtask` needs; and
//! the `cargo xtask package` arguments it runs there.

use anyhow::Result;
use xshell::Shell;

use crate::flags::PackageFlags;
use crate::layout::Layout;
use crate::product::Product;
use crate::targets::Target;

/// Everything `package` needs besides the flags.
pub struct Context<'a> {
    pub sh: &'a Shell,
    pub product: &'a Product,
    pub layout: &'a Layout,
    pub jobs: usize,
    /// The global flags as given (`--name`, `--prefix`, ...), passed on to
    /// the xtask inside a container or VM.
    pub global_args: Vec<String>,
}

/// The `cargo xtask package` arguments that reproduce `flags` for one
/// target inside a container or VM, with the host builder.
pub fn inner_args(flags: &PackageFlags, target: &Target, dist_dir: &str) -> Vec<String> {
    let mut args = vec![
        "package".to_string(),
        "--builder".into(),
        "host".into(),
        "--target".into(),
        target.name.clone(),
        "--rpm-release".into(),
        flags.rpm_release.to_string(),
        "--dist-dir".into(),
        dist_dir.to_string(),
    ];
    for only in &flags.deps.only {
        args.push("--only".into());
        args.push(only.clone());
    }
    args
}

/// A path's UTF-8 form, for command lines.
pub fn utf8(path: &std::path::Path) -> Result<String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", path.display()))
}
