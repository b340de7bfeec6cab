//! The package payload, laid out as installed under `target/<name>/payload`:
//! the staged prefix (minus static archives) plus the service files rendered
//! from `templates/` as `templates/payload.toml` lists them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use crate::file_tree;
use crate::layout::StagedPrefix;

/// Variables every template sees.
#[derive(Debug, Clone, Serialize)]
pub struct ProductVars {
    pub name: String,
    pub prefix: String,
    pub user: String,
    pub group: String,
    pub summary: String,
    pub homepage: String,
    pub version: String,
    pub release: String,
    pub target: String,
    /// The target's systemd version: the unit uses only keys it knows.
    pub systemd_version: u32,
    /// The agent does not link jemalloc itself: preload the prefix's copy.
    pub jemalloc_preload: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadSpec {
    /// Prefix-relative paths left out of the package.
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    file: Vec<FileSpec>,
    #[serde(default)]
    dir: Vec<DirSpec>,
    /// Files copied as they are (not rendered) and marked `%doc`.
    #[serde(default)]
    doc: Vec<DocSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocSpec {
    /// Relative to `templates/`.
    source: String,
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    template: String,
    path: String,
    mode: u32,
    user: Option<String>,
    group: Option<String>,
    #[serde(default)]
    config: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirSpec {
    path: String,
    mode: u32,
    user: Option<String>,
    group: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink(String),
}

/// One path of the package with its metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Installed path, e.g. /opt/my-agent/lib/libssl.so.3.
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub user: String,
    pub group: String,
    /// `%config(noreplace)`.
    pub config: bool,
    /// `%doc` or `%license`: what `rpm -qd` / `rpm -qL` list (and what
    /// `--excludedocs` installs leave out, licenses excepted).
    pub marker: Marker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Marker {
    #[default]
    None,
    Doc,
    License,
}

pub struct Payload {
    pub root: PathBuf,
    pub entries: Vec<Entry>,
}

impl Payload {
    /// The file on disk for an installed path.
    pub fn source(&self, installed: &str) -> PathBuf {
        self.root.join(installed.trim_start_matches('/'))
    }
}

impl PayloadSpec {
    pub fn load(templates: &Path) -> Result<PayloadSpec> {
        let path = templates.join("payload.toml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
    }

    fn excluded(&self, rel: &str) -> bool {
        self.exclude
            .iter()
            .any(|pattern| match pattern.strip_suffix('/') {
                Some(dir) => rel == dir || rel.starts_with(&format!("{dir}/")),
                None => path_matches(pattern, rel),
            })
    }
}

/// `*` matches any run of characters within one path component.
fn path_matches(pattern: &str, path: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), path.as_bytes());
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != b'/')
                .any(|i| go(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(p, t)
}

/// Copies the staged prefix into `root` (emptied first), leaving out what
/// the spec excludes and links that would dangle without it.
pub fn stage_prefix(staged: &StagedPrefix, root: &Path, spec: &PayloadSpec) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("cannot clear {}", root.display()))?;
    }
    let dest = root.join(staged.prefix.trim_start_matches('/'));
    file_tree::copy_into(&staged.path(), &dest)?;
    let entries = file_tree::list(&dest)?;
    for entry in &entries {
        let rel = entry.path();
        if spec.excluded(rel) {
            let path = dest.join(rel);
            if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)?;
            } else if path.symlink_metadata().is_ok() {
                fs::remove_file(&path)?;
            }
        }
    }
    for entry in &entries {
        if let file_tree::TreeEntry::Symlink { path, .. } = entry {
            let link = dest.join(path);
            if link.symlink_metadata().is_ok() && !link.exists() {
                fs::remove_file(&link)?;
            }
        }
    }
    Ok(())
}

/// Renders the service files into `root` and lists every entry of the
/// payload with its metadata.
pub fn render_and_list(
    root: &Path,
    templates: &Path,
    spec: &PayloadSpec,
    vars: &ProductVars,
) -> Result<Payload> {
    let render = |s: &str| crate::template::render(s, vars);

    let mut entries = Vec::new();
    // The prefix: every directory, file and link as staged, owned by root.
    let prefix_dir = root.join(vars.prefix.trim_start_matches('/'));
    entries.push(Entry {
        path: vars.prefix.clone(),
        kind: EntryKind::Dir,
        mode: 0o755,
        user: "root".into(),
        group: "root".into(),
        config: false,
        marker: Marker::None,
    });
    for e in file_tree::list(&prefix_dir)? {
        let (path, kind, mode) = match e {
            file_tree::TreeEntry::Dir { path, .. } => (path, EntryKind::Dir, 0o755),
            file_tree::TreeEntry::File { path, mode, .. } => {
                // Executables and shared objects are 0755, the rest 0644:
                // nothing group- or world-writable.
                let shared_object = path.ends_with(".so") || path.contains(".so.");
                let m = if mode & 0o111 != 0 || shared_object {
                    0o755
                } else {
                    0o644
                };
                (path, EntryKind::File, m)
            }
            file_tree::TreeEntry::Symlink { path, target } => {
                (path, EntryKind::Symlink(target), 0o777)
            }
        };
        let marker = match &kind {
            EntryKind::File if path.starts_with("LICENSES/") => Marker::License,
            EntryKind::File if path.starts_with("share/doc/") => Marker::Doc,
            _ => Marker::None,
        };
        entries.push(Entry {
            path: format!("{}/{path}", vars.prefix),
            kind,
            mode,
            user: "root".into(),
            group: "root".into(),
            config: false,
            marker,
        });
    }

    for f in &spec.file {
        let template = templates.join(&f.template);
        let body = fs::read_to_string(&template)
            .with_context(|| format!("cannot read {}", template.display()))?;
        let rendered =
            render(&body).with_context(|| format!("rendering {}", template.display()))?;
        let path = render(&f.path)?;
        let dest = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().expect("absolute path has a parent"))?;
        fs::write(&dest, rendered).with_context(|| format!("cannot write {}", dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(f.mode))?;
        entries.push(Entry {
            path,
            kind: EntryKind::File,
            mode: f.mode,
            user: f
                .user
                .as_deref()
                .map(render)
                .transpose()?
                .unwrap_or_else(|| "root".into()),
            group: f
                .group
                .as_deref()
                .map(render)
                .transpose()?
                .unwrap_or_else(|| "root".into()),
            config: f.config,
            marker: Marker::None,
        });
    }
    for d in &spec.doc {
        let source = templates.join(&d.source);
        let path = render(&d.path)?;
        let dest = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().expect("absolute path has a parent"))?;
        fs::copy(&source, &dest).with_context(|| format!("cannot copy {}", source.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644))?;
        entries.push(Entry {
            path,
            kind: EntryKind::File,
            mode: 0o644,
            user: "root".into(),
            group: "root".into(),
            config: false,
            marker: Marker::Doc,
        });
    }
    for d in &spec.dir {
        let path = render(&d.path)?;
        fs::create_dir_all(root.join(path.trim_start_matches('/')))?;
        entries.push(Entry {
            path,
            kind: EntryKind::Dir,
            mode: d.mode,
            user: d
                .user
                .as_deref()
                .map(render)
                .transpose()?
                .unwrap_or_else(|| "root".into()),
            group: d
                .group
                .as_deref()
                .map(render)
                .transpose()?
                .unwrap_or_else(|| "root".into()),
            config: false,
            marker: Marker::None,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Payload {
        root: root.to_path_buf(),
        entries,
    })
}

/// The scriptlets (`templates/scriptlets/*.sh.j2`), rendered.
pub struct Scriptlets {
    pub pre: String,
    pub post: String,
    pub preun: String,
    pub postun: String,
}

pub fn scriptlets(templates: &Path, vars: &ProductVars) -> Result<Scriptlets> {
    let one = |name: &str| -> Result<String> {
        let path = templates.join("scriptlets").join(format!("{name}.sh.j2"));
        let body =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        crate::template::render(&body, vars)
            .with_context(|| format!("rendering {}", path.display()))
    };
    Ok(Scriptlets {
        pre: one("pre")?,
        post: one("post")?,
        preun: one("preun")?,
        postun: one("postun")?,
    })
}

/// What `split_debug_info` did.
pub struct DebugSplit {
    /// Bytes the stripped ELF files lost.
    pub saved: u64,
    /// Installed paths of ELF files without a GNU build id: their debug
    /// files get no `.build-id` link, so debuggers find them only through
    /// the `.gnu_debuglink` of the installed file.
    pub without_build_id: Vec<String>,
}

/// Moves the debug information of every ELF under `root`'s prefix into
/// `debug_root/usr/lib/debug/<path>.debug` and strips the ELF to what it
/// needs to run. Each debug file gets the link rpm's own debuginfo packages
/// have, `/usr/lib/debug/.build-id/xx/yyyy.debug`, named by the ELF's build
/// id: gdb, eu-unstrip and systemd-coredump look there first, and fall back
/// to the `.gnu_debuglink` left in the stripped file.
pub fn split_debug_info(
    sh: &Shell,
    root: &Path,
    prefix: &str,
    debug_root: &Path,
) -> Result<DebugSplit> {
    if debug_root.exists() {
        fs::remove_dir_all(debug_root)?;
    }
    let prefix = prefix.trim_end_matches('/');
    let prefix_dir = root.join(prefix.trim_start_matches('/'));
    let mut split = DebugSplit {
        saved: 0,
        without_build_id: Vec::new(),
    };
    for e in file_tree::list(&prefix_dir)? {
        let file_tree::TreeEntry::File { path, .. } = e else {
            continue;
        };
        let file = prefix_dir.join(&path);
        let mut magic = [0u8; 4];
        let is_elf = fs::File::open(&file)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && magic == *b"\x7fELF";
        if !is_elf {
            continue;
        }
        let before = fs::metadata(&file)?.len();
        // Relative to /usr/lib/debug, as the .build-id links point.
        let debug_rel = format!("{}/{path}.debug", prefix.trim_start_matches('/'));
        let debug = debug_root.join("usr/lib/debug").join(&debug_rel);
        fs::create_dir_all(debug.parent().expect("has a parent"))?;
        let mode = fs::metadata(&file)?.permissions();
        // A read-only library (0444 from some installs) must be writable to strip.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755))?;
        cmd!(sh, "objcopy --only-keep-debug {file} {debug}")
            .quiet()
            .run()
            .with_context(|| format!("cannot extract the debug info of {}", file.display()))?;
        // --strip-unneeded keeps the dynamic symbols a library exports;
        // the full symbol table lives on in the .debug file.
        cmd!(
            sh,
            "objcopy --strip-unneeded --remove-section=.comment --add-gnu-debuglink={debug} {file}"
        )
        .quiet()
        .run()
        .with_context(|| format!("cannot strip {}", file.display()))?;
        fs::set_permissions(&file, mode)?;
        fs::set_permissions(&debug, fs::Permissions::from_mode(0o644))?;
        split.saved += before.saturating_sub(fs::metadata(&file)?.len());

        let bytes = fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        match build_id(&bytes) {
            Some(id) => link_build_id(debug_root, &id, &debug_rel)?,
            None => split.without_build_id.push(format!("{prefix}/{path}")),
        }
    }
    Ok(split)
}

/// The GNU build id of an ELF file (its `NT_GNU_BUILD_ID` note, what
/// `readelf -n` shows as "Build ID") in lower-case hex; None without one.
pub fn build_id(elf_bytes: &[u8]) -> Option<String> {
    let elf = goblin::elf::Elf::parse(elf_bytes).ok()?;
    let notes = elf
        .iter_note_headers(elf_bytes)
        .or_else(|| elf.iter_note_sections(elf_bytes, None))?;
    // map_while: a malformed note ends the walk instead of repeating.
    notes
        .map_while(|n| n.ok())
        .find(|n| n.n_type == goblin::elf::note::NT_GNU_BUILD_ID && n.name == "GNU")
        .filter(|n| n.desc.len() >= 2)
        .map(|n| hex::encode(n.desc))
}

/// `/usr/lib/debug/.build-id/<id[..2]>/<id[2..]>.debug`, a relative link to
/// `/usr/lib/debug/<debug_rel>`. Two files with one build id are the same
/// file linked twice: the first keeps the link.
fn link_build_id(debug_root: &Path, id: &str, debug_rel: &str) -> Result<()> {
    let (dir, rest) = id.split_at(2);
    let link = debug_root
        .join("usr/lib/debug/.build-id")
        .join(dir)
        .join(format!("{rest}.debug"));
    if link.symlink_metadata().is_ok() {
        return Ok(());
    }
    fs::create_dir_all(link.parent().expect("has a parent"))?;
    std::os::unix::fs::symlink(format!("../../{debug_rel}"), &link)
        .with_context(|| format!("cannot create {}", link.display()))
}

/// The `<name>-debuginfo` payload: every file under `debug_root`.
pub fn list_debug(debug_root: &Path) -> Result<Payload> {
    let mut entries = Vec::new();
    let top = debug_root.join("usr/lib/debug");
    for e in file_tree::list(&top)? {
        let (path, kind, mode) = match e {
            file_tree::TreeEntry::Dir { path, .. } => (path, EntryKind::Dir, 0o755),
            file_tree::TreeEntry::File { path, .. } => (path, EntryKind::File, 0o644),
            file_tree::TreeEntry::Symlink { path, target } => {
                (path, EntryKind::Symlink(target), 0o777)
            }
        };
        entries.push(Entry {
            path: format!("/usr/lib/debug/{path}"),
            kind,
            mode,
            user: "root".into(),
            group: "root".into(),
            config: false,
            marker: Marker::None,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Payload {
        root: debug_root.to_path_buf(),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions() {
        let spec: PayloadSpec =
            toml::from_str("exclude = [\"lib/*.a\", \"ssl/misc/\", \"bin/jeprof\"]").unwrap();
        assert!(spec.excluded("lib/libssl.a"));
        assert!(!spec.excluded("lib/libssl.so.3"));
        assert!(!spec.excluded("lib/sub/x.a"), "* stays within a component");
        assert!(spec.excluded("ssl/misc/CA.pl") && spec.excluded("ssl/misc"));
        assert!(!spec.excluded("ssl/openssl.cnf"));
        assert!(spec.excluded("bin/jeprof") && !spec.excluded("bin/jeprof2"));
    }

    #[test]
    fn build_id_is_what_readelf_shows() {
        // This test binary, linked by the host's cc, which writes a build id.
        let exe = std::env::current_exe().unwrap();
        let notes = std::process::Command::new("readelf")
            .arg("-n")
            .arg(&exe)
            .output()
            .unwrap();
        let notes = String::from_utf8_lossy(&notes.stdout);
        let want = notes
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .unwrap_or_else(|| panic!("no build id in readelf -n:\n{notes}"));
        assert_eq!(build_id(&fs::read(&exe).unwrap()).as_deref(), Some(want));
        assert_eq!(build_id(b"\x7fELF not really"), None);
    }
}
