//! What the other builders and the users' CI are made of, judged by real
//! tools where their images and VMs cannot run here: the rendered
//! Containerfiles for each EL image, the Vagrantfile (`vagrant validate -p`),
//! the GitHub workflow (actionlint) and ci/build.sh (shellcheck).

mod common;

use std::fs;
use std::process::Command;

use common::{ok, repo_root};
use xtask::builders::{container, vagrant};
use xtask::targets::TargetTable;

fn table() -> TargetTable {
    TargetTable::load(&repo_root().join("recipes/targets.toml")).unwrap()
}

#[test]
fn containerfiles_for_each_el_image() {
    let root = repo_root();
    let table = table();
    for (name, image, pm) in [
        ("el7", "centos:7", "yum"),
        ("el8", "rockylinux:8", "dnf"),
        ("el9", "rockylinux:9", "dnf"),
    ] {
        let target = table.select(name).unwrap().remove(0);
        let file = container::render(
            &root.join("templates"),
            &root.join("recipes"),
            "podman",
            &target,
            None,
        )
        .unwrap();
        assert!(file.starts_with("# Builder image for"), "{file}");
        assert!(
            file.contains(&format!("\nFROM {image}\n")),
            "{name}:\n{file}"
        );
        // The recipes' tools come from the distribution's own repositories.
        for package in ["gcc", "gcc-c++", "make", "perl-core", "cmake", "libtool"] {
            assert!(
                file.contains(&format!(" {package} ")) || file.contains(&format!(" {package}\n")),
                "{name}: {package} in\n{file}"
            );
        }
        assert!(
            file.contains(&format!("RUN {pm} install -y")),
            "{name}:\n{file}"
        );
        // Nothing is downloaded outside the package manager, whose packages
        // are signature-checked: no curl, wget or piped installers.
        for bad in [
            "curl ",
            "wget ",
            "| sh",
            "|sh",
            "gpgcheck=0",
            "--nogpgcheck",
        ] {
            assert!(!file.contains(bad), "{name}: `{bad}` in\n{file}");
        }
        assert!(file.ends_with('\n'), "{name}: final newline");
        // The tag is a hash of the rendered file.
        let tag = container::image_tag("my-agent", name, &file);
        assert!(tag.starts_with(&format!("localhost/my-agent-builder-{name}:")));
        assert_ne!(
            tag,
            container::image_tag("my-agent", name, &format!("{file}#"))
        );
        if name == "el7" {
            // CentOS 7's mirrorlist is gone: yum goes to the vault.
            assert!(file.contains("vault.centos.org"), "{file}");
            assert!(file.contains("#mirrorlist="), "{file}");
        }
    }
    // --image overrides the base (a mirror, a registry of one's own).
    let el9 = table.select("el9").unwrap().remove(0);
    let file = container::render(
        &root.join("templates"),
        &root.join("recipes"),
        "docker",
        &el9,
        Some("registry.example.net/rocky:9"),
    )
    .unwrap();
    assert!(
        file.contains("\nFROM registry.example.net/rocky:9\n"),
        "{file}"
    );
}

#[test]
fn vagrantfile_validates() {
    let root = repo_root();
    let tmp = tempfile::tempdir().unwrap();
    for name in ["el7", "el8", "el9"] {
        let target = table().select(name).unwrap().remove(0);
        let file = vagrant::render(
            &root.join("templates"),
            &root.join("recipes"),
            "my-agent",
            &target,
            &root,
            2,
            "1.95.0",
        )
        .unwrap();
        // rustup-init is fetched only with its pinned digest checked.
        assert!(file.contains("sha256sum -c -"), "{file}");
        assert!(
            !file.contains("passwd") && !file.contains("sshd_config"),
            "{file}"
        );
        let dir = tmp.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("Vagrantfile"), &file).unwrap();
        let out = ok(Command::new("vagrant")
            .args(["validate", "-p"])
            .current_dir(&dir)
            .env("VAGRANT_HOME", tmp.path().join("vagrant.d"))
            .env("VAGRANT_CHECKPOINT_DISABLE", "1"));
        assert!(
            out.contains("Vagrantfile validated successfully"),
            "{name}: {out}"
        );
    }
}

#[test]
fn users_ci_passes_actionlint_and_shellcheck() {
    let root = repo_root();
    let out = Command::new("actionlint")
        .arg("-no-color")
        .arg(root.join("ci/build-rpm.yml"))
        .output()
        .expect("actionlint is installed by `cargo xtask test`");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let workflow = fs::read_to_string(root.join("ci/build-rpm.yml")).unwrap();
    // No job runs inside an old container (JavaScript actions cannot start
    // there), and the RPMs come from the zig builder.
    assert!(!workflow.contains("container:"), "{workflow}");
    assert!(workflow.contains("MY_AGENT_BUILDER: zig"), "{workflow}");
    ok(Command::new("shellcheck").arg(root.join("ci/build.sh")));
    ok(Command::new("shellcheck").arg(root.join(".ci/run")));
}
