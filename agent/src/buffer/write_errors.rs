//! A buffer's failing writes (a full disk, most often), made visible
//! without flooding the log: the first failure is logged at once, then at
//! most one line a minute says it goes on, and one line says when writes
//! work again. Every failure is counted; `/status` shows the current one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::log;

const REPEAT_EVERY: Duration = Duration::from_secs(60);

struct Trouble {
    since: Instant,
    message: String,
    failures: u64,
    logged: Instant,
}

pub struct WriteErrors {
    /// What fails ("buffer DIR: cannot write a chunk"), for the log lines.
    what: String,
    /// What the failure means for the records, said once.
    consequence: &'static str,
    failing: AtomicBool,
    trouble: Mutex<Option<Trouble>>,
}

impl WriteErrors {
    pub fn new(what: String, consequence: &'static str) -> WriteErrors {
        WriteErrors {
            what,
            consequence,
            failing: AtomicBool::new(false),
            trouble: Mutex::new(None),
        }
    }

    /// One failed write; `counter` counts it in `/metrics`.
    pub fn failed(&self, message: String, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut trouble = self.trouble.lock().unwrap();
        let now = Instant::now();
        match trouble.as_mut() {
            None => {
                log::error(&format!("{}: {message}; {}", self.what, self.consequence));
                *trouble = Some(Trouble {
                    since: now,
                    message,
                    failures: 1,
                    logged: now,
                });
                self.failing.store(true, Ordering::Relaxed);
            }
            Some(t) => {
                t.failures += 1;
                t.message = message;
                if now.duration_since(t.logged) >= REPEAT_EVERY {
                    t.logged = now;
                    log::error(&format!(
                        "{}: still failing, {} times in {:.0?}: {}",
                        self.what,
                        t.failures,
                        t.since.elapsed(),
                        t.message
                    ));
                }
            }
        }
    }

    /// A write worked: the trouble, if any, is over.
    pub fn succeeded(&self) {
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        if let Some(t) = self.trouble.lock().unwrap().take() {
            log::info(&format!(
                "{}: works again after {} failures over {:.1?}",
                self.what,
                t.failures,
                t.since.elapsed()
            ));
        }
        self.failing.store(false, Ordering::Relaxed);
    }

    /// The current failure, for `/status`.
    pub fn current(&self) -> Option<String> {
        if !self.failing.load(Ordering::Relaxed) {
            return None;
        }
        self.trouble
            .lock()
            .unwrap()
            .as_ref()
            .map(|t| format!("{}: {}", self.what, t.message))
    }
}
