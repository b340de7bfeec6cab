//! The signals the agent handles (SIGHUP, SIGTERM, SIGINT, SIGUSR1) are
//! held back from the start of the service until their handlers exist.
//!
//! Their default action is to end the process, and the handlers can only
//! be installed once the async runtime runs: a SIGHUP from logrotate or a
//! SIGTERM from systemd in between would kill the agent mid-start, with
//! buffers half opened. Blocked, such a signal stays pending and reaches
//! its handler as soon as `release` unblocks it; it is then acted on once
//! the pipeline has started.

const HANDLED: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGTERM, libc::SIGINT, libc::SIGUSR1];

fn set_mask(how: libc::c_int) {
    // SAFETY: the set is initialised by sigemptyset before use, and
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in HANDLED {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Holds the handled signals pending. Call on the main thread before any
/// other thread exists (threads inherit the mask).
pub fn hold() {
    set_mask(libc::SIG_BLOCK);
}

/// Lets them through, once their handlers are installed.
pub fn release() {
    set_mask(libc::SIG_UNBLOCK);
}
