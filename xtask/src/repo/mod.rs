//! `cargo xtask repo`: the RPMs of `target/dist/` (and of older releases,
//! `--add DIR`) as a yum/dnf repository per EL release, the way fleets
//! install: `<out>/<dist>/x86_64/` with createrepo_c metadata every
//! target's yum or dnf reads (gzip, sha256: EL7's yum reads no zstd), the
//! RPMs signed, `repomd.xml.asc` beside `repomd.xml` (for
//! `repo_gpgcheck`), a `.repo` file, the public key, and a
//! `<name>-release` RPM that installs both.
//!
//! The key is held to every target's rules first (see `package::rpm_rules`): one
//! key signs everything, so it must be one all of them verify.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::package::rpm_rules;
use crate::product::Product;
use crate::targets::TargetTable;
use crate::tools::ToolTable;

pub struct RepoOptions {
    /// Where `cargo xtask package` wrote the RPMs.
    pub dist: PathBuf,
    /// Older releases' RPMs, so that upgrades and downgrades exist.
    pub add: Vec<PathBuf>,
    /// More public keys to ship (the next or the previous key: rotation).
    pub trust: Vec<PathBuf>,
    pub out: PathBuf,
    pub sign_key: Option<PathBuf>,
    /// What hosts reach `out` as (`file:///...` by default).
    pub base_url: Option<String>,
    /// The release package's version and the signatures' time.
    pub version: String,
    pub source_date: u64,
}

/// The releasevers an EL host may report for a dist tag: RHEL 7 says
/// `7Server` (or `7Workstation`, `7Client`), CentOS 7 and EL8/9 the major.
fn releasevers(dist: &str) -> Vec<String> {
    let major = dist.trim_start_matches("el");
    let mut v = vec![major.to_string()];
    if major == "7" {
        for variant in ["Server", "Workstation", "Client", "ComputeNode"] {
            v.push(format!("7{variant}"));
        }
    }
    v
}

pub fn run(
    sh: &Shell,
    product: &Product,
    table: &TargetTable,
    tools: (&ToolTable, &Path),
    opts: &RepoOptions,
) -> Result<()> {
    let targets = table.select("all")?;
    crate::tools::ensure(sh, tools.0, &["createrepo_c".to_string()], tools.1)?;
    if let Some(key) = &opts.sign_key {
        rpm_rules::check_sign_key(key, &targets)?;
    }
    // RPMs by dist tag, from the name cargo xtask package gives them:
    // <name>-<version>-<release>.<dist>.<arch>.rpm.
    let mut by_dist: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for dir in std::iter::once(&opts.dist).chain(&opts.add) {
        let entries =
            fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for e in entries {
            let path = e?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".rpm") else {
                continue;
            };
            let mut parts = stem.rsplitn(3, '.');
            let (_arch, dist) = (parts.next(), parts.next());
            match dist.filter(|d| targets.iter().any(|t| t.dist.as_deref() == Some(*d))) {
                Some(d) => by_dist.entry(d.to_string()).or_default().push(path),
                None => eprintln!("==> repo: skipping {name}: no dist tag of el7, el8 or el9"),
            }
        }
    }
    if by_dist.is_empty() {
        bail!(
            "no RPMs for el7, el8 or el9 in {}: run `cargo xtask package` first",
            opts.dist.display()
        );
    }
    let signer = match &opts.sign_key {
        Some(key) => Some(
            rpm::signature::pgp::Signer::from_asc_file(key)
                .with_context(|| format!("cannot load the signing key {}", key.display()))?,
        ),
        None => None,
    };
    fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let out = fs::canonicalize(&opts.out)?;
    let base_url = opts
        .base_url
        .clone()
        .unwrap_or_else(|| format!("file://{}", out.display()));
    let key_name = format!("RPM-GPG-KEY-{}", product.name);
    let mut public = match &opts.sign_key {
        Some(key) => Some(public_key(key)?),
        None => None,
    };
    for extra in &opts.trust {
        let text = fs::read_to_string(extra)
            .with_context(|| format!("cannot read --trust {}", extra.display()))?;
        if !text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            bail!(
                "--trust {}: not an ASCII-armored public key (gpg --armor --export KEYID)",
                extra.display()
            );
        }
        public.get_or_insert_with(String::new).push_str(&text);
    }
    if let Some(p) = &public {
        fs::write(out.join(&key_name), p)?;
    }
    let repo_file = repo_file(
        product,
        &base_url,
        // Checks on only when what they check is signed.
        opts.sign_key.as_ref().map(|_| key_name.as_str()),
    );
    fs::write(out.join(format!("{}.repo", product.name)), &repo_file)?;
    // The release package is the same for every EL release: noarch, at
    // the top (where a host first fetches it) and in each repository.
    let release = release_rpm(
        product,
        opts,
        &out,
        &repo_file,
        public.as_deref(),
        &key_name,
    )?;
    for (dist, rpms) in &by_dist {
        let dir = out.join(dist).join("x86_64");
        fs::create_dir_all(&dir)?;
        for rpm_path in rpms.iter().chain(std::iter::once(&release)) {
            let dest = dir.join(rpm_path.file_name().expect("a file"));
            fs::copy(rpm_path, &dest).with_context(|| {
                format!("cannot copy {} to {}", rpm_path.display(), dest.display())
            })?;
            // The package's SBOM (`cargo xtask package` writes it beside
            // the RPM), published beside it.
            let sbom = rpm_path.with_extension("cdx.json");
            if sbom.is_file() {
                fs::copy(&sbom, dest.with_extension("cdx.json"))
                    .with_context(|| format!("cannot copy {}", sbom.display()))?;
            }
            let pkg = rpm::Package::open(&dest)
                .with_context(|| format!("{}: not an RPM", rpm_path.display()))?;
            if let Some(signer) = &signer {
                if pkg.raw_signatures()?.is_empty() {
                    eprintln!("==> repo: signing {}", dest.display());
                    let mut pkg = pkg;
                    pkg.sign(signer)
                        .with_context(|| format!("signing {}", dest.display()))?;
                    pkg.write_file(&dest)?;
                }
            }
        }
        eprintln!("==> repo: createrepo_c {}", dir.display());
        // gzip metadata (EL7's yum reads no zstd), sha256, reuse what is
        // unchanged, keep the two previous generations for hosts that
        // fetched repomd.xml just before.
        cmd!(
            sh,
            "createrepo_c --update --checksum sha256 --general-compress-type gz --retain-old-md 2 {dir}"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .context("createrepo_c (Debian: apt-get install createrepo-c)")?;
        if let Some(signer) = &signer {
            let repomd = dir.join("repodata/repomd.xml");
            let data = fs::read(&repomd)?;
            let sig = detached_signature(signer, &data)?;
            fs::write(dir.join("repodata/repomd.xml.asc"), sig)?;
        }
        for rv in releasevers(dist) {
            let link = out.join(&rv);
            if fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(dist, &link)?;
            }
        }
    }
    eprintln!(
        "==> repo: {} ({}), {}, {}",
        out.display(),
        by_dist.keys().cloned().collect::<Vec<_>>().join(", "),
        format_args!("{}.repo", product.name),
        release.display()
    );
    Ok(())
}

/// The `.repo` file: one repository per EL release through `$releasever`,
/// with packages and metadata checked against the key.
pub fn repo_file(product: &Product, base_url: &str, key: Option<&str>) -> String {
    let base = base_url.trim_end_matches('/');
    let (gpgcheck, gpgkey) = match key {
        Some(k) => (1, format!("gpgkey=file:///etc/pki/rpm-gpg/{k}\n")),
        None => (0, String::new()),
    };
    format!(
        "[{name}]\nname={name} for EL $releasever\nbaseurl={base}/$releasever/$basearch/\nenabled=1\ngpgcheck={gpgcheck}\nrepo_gpgcheck={gpgcheck}\n{gpgkey}metadata_expire=6h\n",
        name = product.name,
    )
}

/// The `<name>-release` package: the `.repo` file and the public key as
/// `%config(noreplace)` (a host's edits survive, and a new key is shipped
/// beside the old one for a rotation).
fn release_rpm(
    product: &Product,
    opts: &RepoOptions,
    out: &Path,
    repo_file: &str,
    public: Option<&str>,
    key_name: &str,
) -> Result<PathBuf> {
    let tmp = tempfile::tempdir()?;
    let name = format!("{}-release", product.name);
    let mut b = rpm::PackageBuilder::new(
        &name,
        &opts.version,
        &product.license,
        "noarch",
        &format!("{} yum/dnf repository and its signing key", product.name),
    );
    b.using_config(
        rpm::BuildConfig::v4()
            .compression(rpm::CompressionWithLevel::Gzip(9))
            .source_date(opts.source_date as u32),
    )
    .release("1")
    .description(format!(
        "Installs /etc/yum.repos.d/{}.repo and the key its packages and metadata are signed with.",
        product.name
    ))
    .url(&product.homepage)
    .vendor(&product.maintainer)
    .build_host("my-agent-xtask");
    let repo_path = tmp.path().join("repo");
    fs::write(&repo_path, repo_file)?;
    b.with_file(
        &repo_path,
        rpm::FileOptions::new(format!("/etc/yum.repos.d/{}.repo", product.name))
            .permissions(0o644)
            .config()
            .noreplace(),
    )?;
    if let Some(p) = public {
        let key_path = tmp.path().join("key");
        fs::write(&key_path, p)?;
        b.with_file(
            &key_path,
            rpm::FileOptions::new(format!("/etc/pki/rpm-gpg/{key_name}"))
                .permissions(0o644)
                .config()
                .noreplace(),
        )?;
    }
    let pkg = match &opts.sign_key {
        Some(key) => b.build_and_sign(rpm::signature::pgp::Signer::from_asc_file(key)?)?,
        None => b.build()?,
    };
    let path = out.join(format!("{name}-{}-1.noarch.rpm", opts.version));
    pkg.write_file(&path)?;
    Ok(path)
}

/// The armored public key of the secret key file.
fn public_key(secret: &Path) -> Result<String> {
    use pgp::composed::{Deserializable as _, SignedSecretKey};
    let text = fs::read_to_string(secret)?;
    let (keys, _) = SignedSecretKey::from_string_many(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", secret.display()))?;
    let mut out = String::new();
    for key in keys.filter_map(|k| k.ok()) {
        out.push_str(
            &key.to_public_key()
                .to_armored_string(pgp::composed::ArmorOptions::default())
                .map_err(|e| anyhow::anyhow!("exporting the public key: {e}"))?,
        );
    }
    Ok(out)
}

/// An ASCII-armored detached OpenPGP signature of `data` (what
/// `gpg --detach-sign --armor` writes and dnf's `repo_gpgcheck` reads),
/// made now: gpgme refuses a signature older than its key, and
/// SOURCE_DATE_EPOCH (the commit's time) may be.
fn detached_signature(signer: &rpm::signature::pgp::Signer, data: &[u8]) -> Result<String> {
    use rpm::signature::Signing as _;
    let packet = signer.sign(data, rpm::Timestamp::now())?;
    Ok(armor(&packet))
}

fn armor(packet: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = String::from("-----BEGIN PGP SIGNATURE-----\n\n");
    let body = b64.encode(packet);
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64"));
        out.push('\n');
    }
    let crc = crc24(packet);
    out.push('=');
    out.push_str(&b64.encode([(crc >> 16) as u8, (crc >> 8) as u8, crc as u8]));
    out.push_str("\n-----END PGP SIGNATURE-----\n");
    out
}

/// RFC 4880's CRC-24 for the armor checksum.
fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xB7_04CE;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x100_0000 != 0 {
                crc ^= 0x186_4CFB;
            }
        }
    }
    crc & 0xFF_FFFF
}
