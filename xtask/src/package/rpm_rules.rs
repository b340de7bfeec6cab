//! What each target's rpm accepts (`[target.NAME.rpm]` in
//! `recipes/targets.toml`), and the checks that hold a package and a
//! signing key to it. A package that breaks them installs on the build
//! machine's rpm 4.18 and fails on the fleet (rpm 4.11 on EL7 refuses an
//! unknown `rpmlib()` feature; it shows a subkey's signature as NOKEY; EL8
//! cannot verify EdDSA; EL9 refuses SHA-1 self-signatures): the package
//! step says so at build time instead, naming the target and what to use.

use std::path::Path;

use crate::targets::Target;
use anyhow::{bail, Context, Result};

/// Holds the RPM at `path` to its target's rules: every `rpmlib()` feature
/// it requires, its payload compressor and its file digests.
pub fn check_package(path: &Path, target: &Target) -> Result<()> {
    let Some(rules) = &target.rpm else {
        return Ok(());
    };
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let meta = rpm::PackageMetadata::open(path)
        .with_context(|| format!("cannot read the header of {}", path.display()))?;
    let mut problems = Vec::new();
    for dep in meta.get_requires().context("reading Requires")? {
        let Some(feature) = dep
            .name
            .strip_prefix("rpmlib(")
            .and_then(|f| f.strip_suffix(')'))
        else {
            continue;
        };
        if !rules.rpmlib.iter().any(|f| f == feature) {
            problems.push(format!(
                "it requires rpmlib({feature}), which rpm {} does not provide{}",
                rules.version,
                match feature {
                    "LargeFiles" => " (a file of 4 GiB or more is in the payload: leave it out)",
                    "RichDependencies" => " (a `(a or b)` dependency: use plain ones)",
                    "PayloadIsZstd" => " (set compression = \"xz\" or \"gzip\")",
                    "CaretInVersions" => " (a `^` in a version: use `~` or a plain one)",
                    _ => "",
                }
            ));
        }
    }
    let compressor = match meta.get_payload_compressor() {
        Ok(rpm::CompressionType::Gzip) => "gzip",
        Ok(rpm::CompressionType::Xz) => "xz",
        Ok(rpm::CompressionType::Bzip2) => "bzip2",
        Ok(rpm::CompressionType::Zstd) => "zstd",
        Ok(rpm::CompressionType::None) | Err(_) => "none",
    };
    if compressor != "none" && !rules.payload_compressors.iter().any(|c| c == compressor) {
        problems.push(format!(
            "its payload is {compressor}, which rpm {} cannot read (it reads {})",
            rules.version,
            rules.payload_compressors.join(", ")
        ));
    }
    if let Ok(digest) = meta.get_file_digest_algorithm() {
        let name = match digest {
            rpm::DigestAlgorithm::Md5 => "md5",
            rpm::DigestAlgorithm::Sha2_256 => "sha256",
            rpm::DigestAlgorithm::Sha2_384 => "sha384",
            rpm::DigestAlgorithm::Sha2_512 => "sha512",
            rpm::DigestAlgorithm::Sha2_224 => "sha224",
            rpm::DigestAlgorithm::Sha3_256 => "sha3-256",
            rpm::DigestAlgorithm::Sha3_512 => "sha3-512",
        };
        if !rules.file_digests.iter().any(|d| d == name) {
            problems.push(format!(
                "its file digests are {name}, which rpm {} does not verify (it does {})",
                rules.version,
                rules.file_digests.join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{file}: {} cannot install it: {}",
            rules.name(target),
            problems.join("; ")
        );
    }
    Ok(())
}

/// The key rpm-rs signs with: its first signing subkey, else the primary
/// (`Signer::from_asc`), of the first certificate in the file.
struct SigningKey {
    algorithm: pgp::crypto::public_key::PublicKeyAlgorithm,
    subkey: bool,
    /// Hash algorithms of the certificate's self-signatures.
    sha1_self_signature: bool,
}

fn signing_key(path: &Path) -> Result<SigningKey> {
    use pgp::composed::{Deserializable as _, SignedSecretKey};
    use pgp::crypto::hash::HashAlgorithm;
    use pgp::types::KeyDetails as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    let (keys, _) = SignedSecretKey::from_string_many(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not an ASCII-armored OpenPGP secret key ({e}); export one with `gpg --armor --export-secret-keys KEYID`",
            path.display()
        )
    })?;
    let cert = keys.filter_map(|k| k.ok()).next().with_context(|| {
        format!(
            "{}: no OpenPGP secret key in it; export one with `gpg --armor --export-secret-keys KEYID`",
            path.display()
        )
    })?;
    let self_sigs = cert
        .details
        .users
        .iter()
        .flat_map(|u| u.signatures.iter())
        .chain(cert.details.direct_signatures.iter())
        .chain(cert.secret_subkeys.iter().flat_map(|s| s.signatures.iter()));
    let sha1_self_signature = self_sigs
        .into_iter()
        .any(|s| s.hash_alg() == Some(HashAlgorithm::Sha1));
    let subkey = cert
        .secret_subkeys
        .iter()
        .find(|sk| sk.signatures.iter().any(|sig| sig.key_flags().sign()));
    Ok(match subkey {
        Some(sk) => SigningKey {
            algorithm: sk.key.algorithm(),
            subkey: true,
            sha1_self_signature,
        },
        None => SigningKey {
            algorithm: cert.primary_key.algorithm(),
            subkey: false,
            sha1_self_signature,
        },
    })
}

/// Holds a `--sign-key` to each target's rules before anything is built.
pub fn check_sign_key(path: &Path, targets: &[Target]) -> Result<()> {
    use pgp::crypto::public_key::PublicKeyAlgorithm as A;
    let key = signing_key(path)?;
    let algorithm = match key.algorithm {
        A::RSA | A::RSASign => "rsa",
        A::DSA => "dsa",
        A::EdDSALegacy | A::Ed25519 => "eddsa",
        A::ECDSA => "ecdsa",
        _ => "other",
    };
    let which = if key.subkey {
        "its signing subkey"
    } else {
        "its primary key"
    };
    const MAKE_RSA: &str = "make an RSA key without a signing subkey for the fleet: `gpg --batch --quick-generate-key 'NAME <EMAIL>' rsa4096 sign never`";
    let mut problems = Vec::new();
    for target in targets {
        let Some(rules) = &target.rpm else { continue };
        let who = rules.name(target);
        if !rules.signature_algorithms.iter().any(|a| a == algorithm) {
            problems.push(format!(
                "{who} cannot verify {algorithm} signatures ({which} is {algorithm}; it verifies {}): {MAKE_RSA}",
                rules.signature_algorithms.join(", ")
            ));
        } else if key.subkey && !rules.signing_subkeys {
            problems.push(format!(
                "{who} verifies only signatures made by a primary key, and rpm-rs would sign with {which} (rpm shows NOKEY): {MAKE_RSA}"
            ));
        }
        if key.sha1_self_signature && !rules.sha1_self_signatures {
            problems.push(format!(
                "{who} refuses keys with SHA-1 self-signatures, and this key has one: a key made by gpg 2.1 or later signs itself with SHA-256: {MAKE_RSA}"
            ));
        }
    }
    if !problems.is_empty() {
        bail!("--sign-key {}: {}", path.display(), problems.join("\n  "));
    }
    Ok(())
}
