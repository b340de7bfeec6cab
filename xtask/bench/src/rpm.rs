//! `cargo xtask bench --run rpm`: the RPM-writing step against `rpmbuild -bb`
//! on a spec for the same payload, scriptlets and compression, in one run.
//! rpmbuild's post-install steps (strip, build-id links, debuginfo,
//! dependency generation) are switched off so both do the same work:
//! archive, compress, digest, write.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use xtask::package::payload::EntryKind;
use xtask::package::rpm_package::RpmSpec;

const RUNS: usize = 3;

fn spec_file(spec: &RpmSpec, payload_root: &Path) -> String {
    let mut s = String::new();
    let p = spec.product;
    let _ = writeln!(
        s,
        "Name: {}\nVersion: {}\nRelease: {}",
        p.name, spec.version, spec.release
    );
    let _ = writeln!(
        s,
        "Summary: {}\nLicense: {}\nURL: {}",
        p.summary, spec.license, p.homepage
    );
    let _ = writeln!(s, "AutoReqProv: no\n%define __os_install_post %{{nil}}\n%define debug_package %{{nil}}\n%define _build_id_links none");
    for r in spec.requires {
        let _ = writeln!(s, "Requires: {r}");
    }
    let _ = writeln!(s, "\n%description\n{}\n", spec.description);
    let _ = writeln!(
        s,
        "%install\nmkdir -p %{{buildroot}}\ncp -a {}/. %{{buildroot}}/\n",
        payload_root.display()
    );
    if let Some(sc) = spec.scriptlets {
        for (tag, body) in [
            ("pre", &sc.pre),
            ("post", &sc.post),
            ("preun", &sc.preun),
            ("postun", &sc.postun),
        ] {
            let _ = writeln!(s, "%{tag}\n{body}\n");
        }
    }
    let _ = writeln!(s, "%files");
    for e in &spec.payload.entries {
        let attr = match &e.kind {
            EntryKind::Symlink(_) => format!("%attr(-,{},{})", e.user, e.group),
            _ => format!("%attr({:04o},{},{})", e.mode, e.user, e.group),
        };
        let dir = if e.kind == EntryKind::Dir {
            "%dir "
        } else {
            ""
        };
        let config = if e.config { "%config(noreplace) " } else { "" };
        let _ = writeln!(s, "{attr} {dir}{config}{}", e.path);
    }
    s
}

pub fn run(spec: &RpmSpec, payload_root: &Path, work: &Path) -> Result<()> {
    if xtask::tools::find_on_path("rpmbuild").is_none() {
        bail!("rpmbuild is not installed (apt-get install rpm, or dnf install rpm-build)");
    }
    if work.exists() {
        fs::remove_dir_all(work)?;
    }
    let ours = work.join("rpm-crate");
    let mut crate_times = Vec::new();
    let mut crate_size = 0;
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let path = spec.write(&ours)?;
        crate_times.push(t0.elapsed());
        crate_size = fs::metadata(&path)?.len();
    }

    let topdir = work.join("rpmbuild");
    fs::create_dir_all(topdir.join("SPECS"))?;
    let spec_path = topdir.join("SPECS/bench.spec");
    fs::write(&spec_path, spec_file(spec, payload_root))?;
    let sh = Shell::new()?;
    let topdir_def = format!("_topdir {}", topdir.display());
    let payload_def = format!("_binary_payload {}", spec.rpmbuild_payload());
    let mut rpmbuild_times = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        cmd!(
            sh,
            "rpmbuild -bb --quiet --define {topdir_def} --define {payload_def} {spec_path}"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .context("rpmbuild failed")?;
        rpmbuild_times.push(t0.elapsed());
    }
    let built = fs::read_dir(topdir.join("RPMS/x86_64"))?
        .next()
        .context("rpmbuild wrote no RPM")??
        .path();
    let rpmbuild_size = fs::metadata(&built)?.len();

    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (ours_t, theirs_t) = (median(&mut crate_times), median(&mut rpmbuild_times));
    println!(
        "rpm bench: {} entries, payload {}, median of {RUNS} runs",
        spec.payload.entries.len(),
        spec.rpmbuild_payload()
    );
    println!(
        "  rpm crate     {:>8.2} s  {:>6.1} MiB",
        ours_t.as_secs_f64(),
        crate_size as f64 / (1 << 20) as f64
    );
    println!(
        "  rpmbuild -bb  {:>8.2} s  {:>6.1} MiB",
        theirs_t.as_secs_f64(),
        rpmbuild_size as f64 / (1 << 20) as f64
    );
    println!(
        "  rpmbuild / rpm crate = {:.2}x",
        theirs_t.as_secs_f64() / ours_t.as_secs_f64()
    );
    Ok(())
}
