//! Writing the RPM with the `rpm` crate: v4 format (rpm 4.11 on EL7 reads
//! it), gzip or xz payload, sha256 digests, a fixed build time and host so
//! two builds of one commit are byte-identical.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::package::payload::{EntryKind, Marker, Payload, Scriptlets};
use crate::product::Product;
use crate::targets::{Compression, Target};

pub struct RpmSpec<'a> {
    pub product: &'a Product,
    /// The package's name: the product's, or `<name>-debuginfo`.
    pub name: String,
    pub summary: String,
    pub version: &'a str,
    pub release: String,
    pub license: String,
    pub description: String,
    pub target: &'a Target,
    pub payload: &'a Payload,
    /// None for the debuginfo package, which only adds files.
    pub scriptlets: Option<&'a Scriptlets>,
    pub requires: &'a BTreeSet<String>,
    /// The package this one belongs to, required at exactly this version
    /// and release (`Requires: <name> = <version>-<release>`): the
    /// debuginfo's agent, whose files its debug files describe.
    pub belongs_to: Option<&'a str>,
    pub source_date: u64,
    /// ASCII-armored OpenPGP secret key to sign with.
    pub sign_key: Option<PathBuf>,
}

impl RpmSpec<'_> {
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.x86_64.rpm", self.name, self.version, self.release)
    }

    /// rpm 4.11 (EL7) reads gzip and xz, not zstd; xz level 6 is rpmbuild's
    /// `w6.xzdio`, a fraction of level 9's time for nearly its size.
    pub fn compression(&self) -> rpm::CompressionWithLevel {
        match self.target.compression {
            Compression::Gzip(level) => rpm::CompressionWithLevel::Gzip(level),
            Compression::Xz(level) => rpm::CompressionWithLevel::Xz(level),
        }
    }

    /// The same choice as rpmbuild's `_binary_payload` macro.
    pub fn rpmbuild_payload(&self) -> String {
        match self.target.compression {
            Compression::Gzip(level) => format!("w{level}.gzdio"),
            Compression::Xz(level) => format!("w{level}.xzdio"),
        }
    }

    pub fn write(&self, dist: &Path) -> Result<PathBuf> {
        let compression = self.compression();
        let config = rpm::BuildConfig::v4()
            .compression(compression)
            .source_date(self.source_date as u32);
        // The header's Name, and so the Provides the builder adds for it
        // (`<name> = EVR`, `<name>(x86-64) = EVR`): the debuginfo package
        // must not carry the agent's, or rpm takes it for the agent.
        let mut b = rpm::PackageBuilder::new(
            &self.name,
            self.version,
            &self.license,
            "x86_64",
            &self.summary,
        );
        b.using_config(config)
            .release(&self.release)
            .description(&self.description)
            .url(&self.product.homepage)
            .vendor(&self.product.maintainer)
            .packager(&self.product.maintainer)
            .build_host("my-agent-xtask")
            .group("System Environment/Daemons")
            .add_changelog_entry(
                format!(
                    "{} - {}-{}",
                    self.product.maintainer, self.version, self.release
                ),
                format!("- Built by cargo xtask package for {}", self.target.name),
                self.source_date as u32,
            );
        for e in &self.payload.entries {
            let opts = match &e.kind {
                EntryKind::Dir => rpm::FileOptions::dir(&e.path),
                EntryKind::Symlink(target) => rpm::FileOptions::symlink(&e.path, target),
                EntryKind::File => rpm::FileOptions::new(&e.path),
            };
            let mut opts = opts.user(&e.user).group(&e.group);
            if !matches!(e.kind, EntryKind::Symlink(_)) {
                opts = opts.permissions(e.mode as u16);
            }
            if e.config {
                opts = opts.config().noreplace();
            }
            opts = match e.marker {
                Marker::None => opts,
                Marker::Doc => opts.doc(),
                Marker::License => opts.license(),
            };
            match &e.kind {
                EntryKind::Dir => b.with_dir_entry(opts),
                EntryKind::Symlink(_) => b.with_symlink(opts),
                EntryKind::File => b.with_file(self.payload.source(&e.path), opts),
            }
            .with_context(|| format!("adding {} to the package", e.path))?;
        }
        if let Some(scriptlets) = self.scriptlets {
            b.pre_install_script(scriptlets.pre.as_str())
                .post_install_script(scriptlets.post.as_str())
                .pre_uninstall_script(scriptlets.preun.as_str())
                .post_uninstall_script(scriptlets.postun.as_str());
            for tool in [
                "/usr/bin/getent",
                "/usr/sbin/groupadd",
                "/usr/sbin/useradd",
                "/usr/sbin/usermod",
            ] {
                b.requires(rpm::Dependency::script_pre(tool));
            }
            b.requires(rpm::Dependency::any("/bin/sh"));
        }
        for r in self.requires {
            b.requires(rpm::Dependency::any(r.as_str()));
        }
        // rpmbuild declares the payload's compressor when it is not gzip;
        // rpm-rs declares only zstd's.
        if let Compression::Xz(_) = self.target.compression {
            b.requires(rpm::Dependency::rpmlib("PayloadIsXz", "5.2-1"));
        }
        if let Some(package) = self.belongs_to {
            b.requires(rpm::Dependency::eq(
                package,
                format!("{}-{}", self.version, self.release),
            ));
        }
        let pkg = match &self.sign_key {
            None => b.build().context("building the RPM")?,
            Some(key) => {
                let signer = rpm::signature::pgp::Signer::from_asc_file(key)
                    .with_context(|| format!("cannot load the signing key {}", key.display()))?;
                b.build_and_sign(signer)
                    .context("building and signing the RPM")?
            }
        };
        std::fs::create_dir_all(dist)?;
        let path = dist.join(self.file_name());
        pkg.write_file(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::payload::Entry;

    #[test]
    fn debuginfo_header_has_its_own_name_and_requires_the_agent_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let debug = "/usr/lib/debug/opt/x/bin/x.debug";
        let file = tmp.path().join(debug.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"debug").unwrap();
        let payload = Payload {
            root: tmp.path().to_path_buf(),
            entries: vec![Entry {
                path: debug.into(),
                kind: EntryKind::File,
                mode: 0o644,
                user: "root".into(),
                group: "root".into(),
                config: false,
                marker: Marker::None,
            }],
        };
        let product = Product {
            name: "x".into(),
            prefix: "/opt/x".into(),
            summary: "s".into(),
            maintainer: "m".into(),
            license: "MIT".into(),
            homepage: "h".into(),
            components: Vec::new(),
            user: None,
            group: None,
        };
        let target = Target::host();
        let requires = BTreeSet::new();
        let spec = RpmSpec {
            product: &product,
            name: "x-debuginfo".into(),
            summary: "s".into(),
            version: "1.2.3",
            release: "4.el7".into(),
            license: "MIT".into(),
            description: "d".into(),
            target: &target,
            payload: &payload,
            scriptlets: None,
            requires: &requires,
            belongs_to: Some("x"),
            source_date: 1_700_000_000,
            sign_key: None,
        };
        let path = spec.write(&tmp.path().join("dist")).unwrap();
        assert!(path.ends_with("x-debuginfo-1.2.3-4.el7.x86_64.rpm"));
        let header = rpm::Package::open(&path).unwrap().metadata;
        assert_eq!(header.get_name().unwrap(), "x-debuginfo");
        let deps = |deps: Vec<rpm::Dependency>| -> Vec<String> {
            deps.iter()
                .map(|d| format!("{} {:?} {}", d.name, d.flags, d.version))
                .collect()
        };
        let provides = deps(header.get_provides().unwrap());
        assert!(
            provides.iter().all(|p| p.starts_with("x-debuginfo")),
            "{provides:?}"
        );
        let requires = deps(header.get_requires().unwrap());
        assert!(
            requires.contains(&format!("x {:?} 1.2.3-4.el7", rpm::DependencyFlags::EQUAL)),
            "{requires:?}"
        );
    }
}
