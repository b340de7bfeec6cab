//! Downloads through the real xtask binary from a loopback HTTP server: a
//! pinned digest that does not match, and a connection cut short, must both
//! fail loudly and leave nothing in the source cache.

mod common;

use std::fs;

use common::*;

fn recipe(url: &str, sha: &str) -> String {
    format!(
        r#"name = "widget"
version = "1.0"
license = "MIT"
license_files = ["LICENSE"]
homepage = "https://example.invalid/"

[[sources]]
sha256 = "{sha}"
file = "widget-1.0.tar.gz"
urls = ["{url}/widget-1.0.tar.gz"]
subdir = "widget-1.0"

[[steps]]
name = "install"
run = ["true"]
"#
    )
}

fn sources_in_cache(tmp: &std::path::Path) -> Vec<String> {
    match fs::read_dir(tmp.join("cache/sources")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn checksum_mismatch_names_recipe_url_and_both_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let body = tarball("widget-1.0", &[("LICENSE", "MIT")]);
    let actual = sha256(&body);
    let expected = "0".repeat(64);
    let url = serve(http_ok(&body, body.len()));
    let dir = recipes_dir(tmp.path(), &["widget"]);
    fs::write(dir.join("widget.toml"), recipe(&url, &expected)).unwrap();

    let mut args = product_args(&dir);
    args.push("deps".into());
    let out = xtask(
        tmp.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("recipe `widget`"), "{err}");
    assert!(err.contains(&format!("{url}/widget-1.0.tar.gz")), "{err}");
    assert!(
        err.contains(&format!("expected sha256 {expected}")),
        "{err}"
    );
    assert!(err.contains(&format!("got {actual}")), "{err}");
    assert_eq!(sources_in_cache(tmp.path()), Vec::<String>::new());
}

#[test]
fn truncated_download_fails_and_caches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let body = tarball("widget-1.0", &[("LICENSE", "MIT")]);
    let sha = sha256(&body);
    // Promise the whole body, send half of it, close.
    let url = serve(http_ok(&body[..body.len() / 2], body.len()));
    let dir = recipes_dir(tmp.path(), &["widget"]);
    fs::write(dir.join("widget.toml"), recipe(&url, &sha)).unwrap();

    let mut args = product_args(&dir);
    args.push("deps".into());
    let out = xtask(
        tmp.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("truncated download"), "{err}");
    assert!(err.contains("no source could be fetched. Tried:"), "{err}");
    assert!(
        err.contains("--sources-from"),
        "the error says what to do next: {err}"
    );
    assert_eq!(sources_in_cache(tmp.path()), Vec::<String>::new());
}

#[test]
fn sources_from_matches_by_checksum_whatever_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let body = tarball("widget-1.0", &[("LICENSE", "MIT")]);
    let sha = sha256(&body);
    // Nothing listens on port 9 of loopback (discard): connection refused.
    let dir = recipes_dir(tmp.path(), &["widget"]);
    fs::write(dir.join("widget.toml"), recipe("http://127.0.0.1:9", &sha)).unwrap();
    let downloads = tmp.path().join("downloads");
    fs::create_dir(&downloads).unwrap();
    fs::write(downloads.join("any-name.bin"), &body).unwrap();

    let mut args = product_args(&dir);
    args.extend([
        "deps".into(),
        "--sources-from".into(),
        downloads.display().to_string(),
    ]);
    let out = xtask(
        tmp.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // The recipe installs nothing, so the build fails after the fetch, which
    // is the part under test.
    let err = stderr(&out);
    assert!(err.contains("using"), "{err}");
    assert_eq!(sources_in_cache(tmp.path()), vec![sha]);
}
