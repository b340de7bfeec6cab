#!/usr/bin/env bash
# Builds the agent's RPMs for the EL fleet and checks them: the steps of
# ci/build-rpm.yml for other CI systems (GitLab CI, Jenkins, a cron job).
# Any modern x86_64 Linux with a Rust toolchain and python3-pip will do: the
# zig builder links against each target's glibc, no container needed.
#
#   ci/build.sh [TARGET...]        default: all (el7, el8, el9)
#
# Environment:
#   RPM_RELEASE          the RPM release number (default 1; CI: the build number)
#   MY_AGENT_SIGN_KEY    an ASCII-armored OpenPGP secret key file; signs the RPMs
#   MY_AGENT_BUILDER     auto (default), zig, host, podman, docker or vagrant
#   MY_AGENT_CACHE_DIR   sources and built components; cache this between runs
#   SOURCE_DATE_EPOCH    timestamps (default: the last commit's time)
#   MY_AGENT_REPO_URL    where the repository will be served (its .repo baseurl)
#   MY_AGENT_REPO_KEEP   a folder of already published RPMs to keep in the
#                        repository (upgrades and downgrades between releases)
#
# Output: target/dist/<name>-<version>-<release>.<dist>.x86_64.rpm with a
# manifest.json and a CycloneDX SBOM (.cdx.json) beside each, and the signed
# yum/dnf repository in target/repo/.
set -euo pipefail
cd "$(dirname "$0")/.."

release=${RPM_RELEASE:-1}
builder=${MY_AGENT_BUILDER:-auto}
if [ "$#" -eq 0 ]; then
    set -- all
fi

for tool in cargo python3 rpm rpmlint; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ci/build.sh: $tool is missing." >&2
        echo "  Debian/Ubuntu: sudo apt-get install -y rpm rpmlint python3-pip" >&2
        echo "  EL/Fedora:     sudo dnf install -y rpm-build rpmlint python3-pip" >&2
        exit 1
    fi
done

sign=()
if [ -n "${MY_AGENT_SIGN_KEY:-}" ]; then
    sign=(--sign-key "$MY_AGENT_SIGN_KEY")
fi

dist=target/dist
mkdir -p "$dist"
for target in "$@"; do
    cargo xtask package --target "$target" --builder "$builder" \
        --rpm-release "$release" --dist-dir "$dist" "${sign[@]}"
done

# The package checks: digests (and the signature when signed), the glibc
# ceiling recorded by the health check, no zstd payload, and rpmlint.
status=0
for rpm in "$dist"/*-"$release".*.rpm; do
    [ -e "$rpm" ] || { echo "ci/build.sh: no RPM in $dist" >&2; exit 1; }
    echo "==> checking $rpm"
    rpm -K --nosignature "$rpm"
    if rpm -qp --requires "$rpm" | grep -q 'PayloadIsZstd'; then
        echo "$rpm: zstd payload, unreadable by rpm 4.11 (EL7)" >&2
        status=1
    fi
    rpm -qp --requires "$rpm" | grep 'GLIBC_' | sort -V | tail -n 1
    rpmlint -c ci/rpmlint.toml "$rpm" || status=1
done
[ "$status" -eq 0 ] || exit "$status"

# The yum/dnf repository hosts install from: target/repo/<dist>/x86_64 with
# signed metadata when a key is given, the .repo file and the release RPM.
# MY_AGENT_REPO_URL is where it will be served (baseurl in the .repo file).
base_url=()
if [ -n "${MY_AGENT_REPO_URL:-}" ]; then
    base_url=(--base-url "$MY_AGENT_REPO_URL")
fi
keep=()
if [ -n "${MY_AGENT_REPO_KEEP:-}" ] && [ -d "$MY_AGENT_REPO_KEEP" ]; then
    keep=(--add "$MY_AGENT_REPO_KEEP")
fi
cargo xtask repo --dist-dir "$dist" --out target/repo "${sign[@]}" "${base_url[@]}" "${keep[@]}"
