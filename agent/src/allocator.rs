//! jemalloc, tuned for a small steady footprint: every thread allocates
//! from one arena (the agent has a handful of threads, and per-thread arenas
//! each keep their own dirty pages), and freed pages go back to the system
//! after a second instead of ten.

use std::ffi::CStr;

// The prefix's jemalloc (JEMALLOC_OVERRIDE): low fragmentation under bursts.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's MALLCTL_ARENAS_ALL: "every arena" in `arena.<i>.*` names.
const ALL_ARENAS: &CStr = c"arena.4096.dirty_decay_ms";
const ALL_ARENAS_MUZZY: &CStr = c"arena.4096.muzzy_decay_ms";

fn set_isize(name: &CStr, value: isize) {
    let mut v = value;
    // SAFETY: a documented mallctl name with an ssize_t value.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut v as *mut isize as *mut _,
            std::mem::size_of::<isize>(),
        );
    }
}

/// Called once at start-up. A MALLOC_CONF in the environment still wins
/// for anything it sets, since it applies before this runs.
pub fn tune() {
    if std::env::var_os("MALLOC_CONF").is_some() {
        return;
    }
    set_isize(c"arenas.dirty_decay_ms", 1000);
    set_isize(c"arenas.muzzy_decay_ms", 0);
    set_isize(ALL_ARENAS, 1000);
    set_isize(ALL_ARENAS_MUZZY, 0);
    bind_thread();
}

/// Puts the calling thread on arena 0 (called at every thread's start).
pub fn bind_thread() {
    if std::env::var_os("MALLOC_CONF").is_some() {
        return;
    }
    let mut arena: u32 = 0;
    // SAFETY: `thread.arena` takes an unsigned.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.arena".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut arena as *mut u32 as *mut _,
            std::mem::size_of::<u32>(),
        );
    }
}
