//! The agent's limit on open files (RLIMIT_NOFILE).
//!
//! Each file source may hold up to its `max_open_files` descriptors, beside
//! the buffers' chunks, the collectors' connections and the listeners. When
//! the soft limit is lower, opens fail with EMFILE, and the `/metrics`
//! listener cannot accept a scrape either. systemd (since 240) starts
//! services with soft 1024 and a much higher hard limit, and asks programs
//! that do not use select() to raise the soft limit themselves; the agent
//! does not (tokio uses epoll, libmariadb poll), so it takes the hard limit.

use crate::config::Config;
use crate::log;

/// Descriptors the agent needs besides its followed files: stdio and its
/// log, the runtime's epoll, the listeners, each output's open chunk and
/// connections, MySQL connections, and short-lived ones (pos file writes,
/// directory listings, rotated copies looked into). Several times what an
/// ordinary configuration holds.
const RESERVED: u64 = 64;

/// Far more than any configuration needs, and the kernel's usual ceiling
/// (`fs.nr_open`) for an unlimited hard limit.
const CEILING: u64 = 1 << 20;

/// Raises the soft limit on open files to the hard limit, and warns (in
/// the journal too) when the result is still below what `config` may
/// need.
pub fn raise_nofile_limit(config: &Config) {
    let files: u64 = config.sources.iter().map(|s| s.max_open_files()).sum();
    let need = files + RESERVED;
    let Some((mut soft, hard)) = get() else {
        return;
    };
    let target = hard.min(CEILING);
    if soft < target {
        match set(target, hard) {
            Ok(()) => {
                log::info(&format!(
                    "open files limit raised from {soft} to the hard limit {target}"
                ));
                soft = target;
            }
            Err(e) => log::warn(&format!(
                "cannot raise the open files limit from {soft} to {target}: {e}"
            )),
        }
    }
    if soft < need {
        log::warn(&format!(
            "the open files limit is {soft} (hard {}), below the {need} this configuration may need ({files} for the sources' max_open_files, {RESERVED} for buffers, connections and listeners); lower max_open_files or raise the limit (LimitNOFILE= in the service, ulimit -n)",
            show(hard)
        ));
    }
}

fn show(limit: u64) -> String {
    if limit == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        limit.to_string()
    }
}

fn get() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `r`.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0)
        .then_some((r.rlim_cur, r.rlim_max))
}

fn set(soft: u64, hard: u64) -> std::io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads `r`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
