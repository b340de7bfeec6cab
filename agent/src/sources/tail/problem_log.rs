//! Which of a source's problems are current, and when each was last
//! logged: a problem that lasts is logged again only every
//! PROBLEM_LOG_INTERVAL (and counted every time), one that goes away is
//! logged as resolved.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::config::TailConfig;
use crate::log;
use crate::sources::file_discovery;

/// How often the same problem (path and reason) is logged again while it
/// lasts; every occurrence is counted in `/metrics`.
const PROBLEM_LOG_INTERVAL: Duration = Duration::from_secs(600);

/// The current problems (by path and reason) and when each was last
/// logged; problems that went away are logged as resolved.
#[derive(Default)]
pub(super) struct ProblemLog {
    current: HashMap<(PathBuf, &'static str), (Instant, file_discovery::Problem)>,
    seen_this_round: Vec<(PathBuf, &'static str)>,
}

impl ProblemLog {
    /// Notes `p` as current; true when it is to be logged now.
    pub(super) fn should_log(&mut self, p: &file_discovery::Problem) -> bool {
        let key = (p.path.clone(), p.reason.as_str());
        self.seen_this_round.push(key.clone());
        match self.current.get_mut(&key) {
            Some((logged, known)) if logged.elapsed() < PROBLEM_LOG_INTERVAL => {
                // The system's words may change (ENOENT for another part).
                *known = p.clone();
                false
            }
            _ => {
                self.current.insert(key, (Instant::now(), p.clone()));
                true
            }
        }
    }

    /// Before a full refresh: it decides alone which problems remain.
    pub(super) fn begin_round(&mut self) {
        self.seen_this_round.clear();
    }

    pub(super) fn current(&self) -> impl Iterator<Item = &file_discovery::Problem> {
        self.current.values().map(|(_, p)| p)
    }

    /// After a full refresh: problems not seen again are over.
    pub(super) fn settle(&mut self, cfg: &TailConfig) {
        let seen = std::mem::take(&mut self.seen_this_round);
        self.current.retain(|key, _| {
            let still = seen.contains(key);
            if !still {
                log::info(&format!(
                    "{} {}: {} is readable now",
                    cfg.kind,
                    cfg.tag,
                    key.0.display()
                ));
            }
            still
        });
    }
}
