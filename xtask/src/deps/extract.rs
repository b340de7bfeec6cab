//! Unpacking source archives (.tar.gz, .tar.bz2, .tar.xz) without trusting
//! them: absolute paths, `..` components, device files and links that lead
//! outside the extraction root are errors, never silently skipped.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use tar::EntryType;

#[derive(Debug, thiserror::Error)]
#[error("{archive}: unsafe entry `{entry}`: {reason}")]
pub struct UnsafeEntry {
    pub archive: String,
    pub entry: String,
    pub reason: &'static str,
}

/// Extracts `archive` into `dest` (which must not exist yet). With `subdir`,
/// only entries under that directory are extracted, with it stripped.
pub fn extract(archive: &Path, subdir: Option<&str>, dest: &Path) -> Result<()> {
    let name = archive.display().to_string();
    let reader = decompressor(archive)?;
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let root = dest
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dest.display()))?;
    let strip: Option<PathBuf> = subdir.map(PathBuf::from);

    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_mtime(true);
    let mut found_subdir = strip.is_none();
    let entries = tar
        .entries()
        .with_context(|| format!("{name}: not a tar archive"))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{name}: corrupt archive"))?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            // Metadata (git archive's commit id), not a file.
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |reason| UnsafeEntry {
            archive: name.clone(),
            entry: shown.clone(),
            reason,
        };
        let path = checked_relative(&raw).map_err(unsafe_entry)?;
        let rel = match &strip {
            None => path,
            Some(prefix) => match path.strip_prefix(prefix) {
                Ok(rest) => {
                    found_subdir = true;
                    rest.to_path_buf()
                }
                Err(_) => continue,
            },
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = root.join(&rel);
        let parent = target.parent().expect("joined path has a parent");
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        // A symlinked directory earlier in the archive must not carry a
        // later write outside the root.
        let real_parent = parent
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", parent.display()))?;
        if !real_parent.starts_with(&root) {
            return Err(
                unsafe_entry("its parent directory resolves outside the extraction root").into(),
            );
        }
        match kind {
            EntryType::Directory => {
                fs::create_dir_all(&target)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                entry
                    .unpack(&target)
                    .with_context(|| format!("{name}: cannot extract `{shown}`"))?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("symlink without a target"))?
                    .into_owned();
                let link = PathBuf::from(String::from_utf8_lossy(&link).into_owned());
                if link.is_absolute() {
                    return Err(unsafe_entry("symlink to an absolute path").into());
                }
                let rel_parent = rel.parent().unwrap_or(Path::new(""));
                if normalize_within(&rel_parent.join(&link)).is_none() {
                    return Err(unsafe_entry("symlink pointing outside the extraction root").into());
                }
                let _ = fs::remove_file(&target);
                std::os::unix::fs::symlink(&link, &target)
                    .with_context(|| format!("cannot create symlink {}", target.display()))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("hard link without a target"))?
                    .into_owned();
                let link = checked_relative(&link)
                    .map_err(|_| unsafe_entry("hard link to a path outside the extraction root"))?;
                let link_rel = match &strip {
                    None => link,
                    Some(prefix) => {
                        link.strip_prefix(prefix)
                            .map(Path::to_path_buf)
                            .map_err(|_| {
                                unsafe_entry("hard link to a file outside the extracted directory")
                            })?
                    }
                };
                let source = root.join(&link_rel);
                let meta = fs::symlink_metadata(&source)
                    .map_err(|_| unsafe_entry("hard link to a file not extracted before it"))?;
                let real = source.canonicalize().ok();
                if !meta.is_file() || !real.is_some_and(|r| r.starts_with(&root)) {
                    return Err(unsafe_entry(
                        "hard link to something other than an extracted file",
                    )
                    .into());
                }
                let _ = fs::remove_file(&target);
                fs::hard_link(&source, &target)
                    .with_context(|| format!("cannot create hard link {}", target.display()))?;
            }
            _ => return Err(unsafe_entry("device, fifo or unknown entry type").into()),
        }
    }
    if !found_subdir {
        bail!("{name}: has no directory `{}`", subdir.unwrap_or_default());
    }
    Ok(())
}

/// Picks the decompressor from the file's magic bytes, not its name: files
/// in the cache are named by digest.
fn decompressor(archive: &Path) -> Result<Box<dyn Read>> {
    let mut file =
        File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut magic = [0u8; 6];
    let n = file.read(&mut magic)?;
    let file = BufReader::new(File::open(archive)?);
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(file)),
        [b'B', b'Z', b'h', ..] => Box::new(bzip2::read::MultiBzDecoder::new(file)),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => {
            Box::new(liblzma::read::XzDecoder::new_multi_decoder(file))
        }
        _ => bail!(
            "{}: not a .tar.gz, .tar.bz2 or .tar.xz archive",
            archive.display()
        ),
    })
}

/// An archive path as a relative path of normal components, or why not.
fn checked_relative(raw: &[u8]) -> Result<PathBuf, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "path is not UTF-8")?;
    let path = Path::new(text);
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(out)
}

/// Lexically resolves `..` in a relative path; None when it climbs above
/// the start.
fn normalize_within(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds a .tar.gz where entry names and link targets are written raw
    /// into the header, as an attacker would, bypassing the tar crate's own
    /// path checks.
    fn crafted(entries: &[(&str, EntryType, &str, &[u8])]) -> tempfile::NamedTempFile {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, link, data) in entries {
            let mut header = tar::Header::new_gnu();
            {
                let name = &mut header.as_old_mut().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
            }
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            if !link.is_empty() {
                let target = &mut header.as_old_mut().linkname;
                target[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        file.write_all(&gz.finish().unwrap()).unwrap();
        file
    }

    fn try_extract(entries: &[(&str, EntryType, &str, &[u8])]) -> (tempfile::TempDir, Result<()>) {
        let archive = crafted(entries);
        let dir = tempfile::tempdir().unwrap();
        let result = extract(archive.path(), None, &dir.path().join("root"));
        (dir, result)
    }

    fn reason(result: Result<()>) -> &'static str {
        result
            .unwrap_err()
            .downcast::<UnsafeEntry>()
            .unwrap()
            .reason
    }

    #[test]
    fn extracts_a_plain_archive_with_subdir() {
        let archive = crafted(&[
            ("pkg-1.0/", EntryType::Directory, "", b""),
            ("pkg-1.0/lib/a.c", EntryType::Regular, "", b"int a;"),
            ("pkg-1.0/lib/link.c", EntryType::Symlink, "a.c", b""),
            (
                "pkg-1.0/lib/hard.c",
                EntryType::Link,
                "pkg-1.0/lib/a.c",
                b"",
            ),
            ("pkg-1.0/other/b.c", EntryType::Regular, "", b"int b;"),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("src");
        extract(archive.path(), Some("pkg-1.0/lib"), &dest).unwrap();
        assert_eq!(fs::read(dest.join("a.c")).unwrap(), b"int a;");
        assert_eq!(fs::read(dest.join("link.c")).unwrap(), b"int a;");
        assert_eq!(fs::read(dest.join("hard.c")).unwrap(), b"int a;");
        assert!(!dest.join("b.c").exists() && !dest.join("other").exists());
    }

    #[test]
    fn missing_subdir_is_an_error() {
        let archive = crafted(&[("pkg/a.c", EntryType::Regular, "", b"x")]);
        let dir = tempfile::tempdir().unwrap();
        let e = extract(archive.path(), Some("pkg/nope"), &dir.path().join("s")).unwrap_err();
        assert!(e.to_string().contains("has no directory `pkg/nope`"), "{e}");
    }

    #[test]
    fn rejects_absolute_path() {
        let (dir, r) = try_extract(&[("/tmp/evil", EntryType::Regular, "", b"x")]);
        assert_eq!(reason(r), "absolute path");
        assert!(fs::read_dir(dir.path().join("root"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn rejects_parent_components() {
        let (dir, r) = try_extract(&[("a/../../evil", EntryType::Regular, "", b"x")]);
        assert_eq!(reason(r), "path contains `..`");
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn rejects_escaping_symlink() {
        let (_d, r) = try_extract(&[("a/link", EntryType::Symlink, "../../etc", b"")]);
        assert_eq!(reason(r), "symlink pointing outside the extraction root");
        let (_d, r) = try_extract(&[("link", EntryType::Symlink, "/etc/passwd", b"")]);
        assert_eq!(reason(r), "symlink to an absolute path");
    }

    #[test]
    fn rejects_write_through_symlinked_directory() {
        // `here -> .` is harmless alone; `up -> here/..` looks inside the
        // root lexically but really is the root's parent.
        let (dir, r) = try_extract(&[
            ("here", EntryType::Symlink, ".", b""),
            ("up", EntryType::Symlink, "here/..", b""),
            ("up/evil", EntryType::Regular, "", b"x"),
        ]);
        assert_eq!(
            reason(r),
            "its parent directory resolves outside the extraction root"
        );
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn rejects_escaping_hardlink() {
        let (_d, r) = try_extract(&[("passwd", EntryType::Link, "/etc/passwd", b"")]);
        assert_eq!(reason(r), "hard link to a path outside the extraction root");
        let (_d, r) = try_extract(&[("passwd", EntryType::Link, "../../etc/passwd", b"")]);
        assert_eq!(reason(r), "hard link to a path outside the extraction root");
    }

    #[test]
    fn rejects_device_files() {
        let (_d, r) = try_extract(&[("null", EntryType::Char, "", b"")]);
        assert_eq!(reason(r), "device, fifo or unknown entry type");
    }
}
