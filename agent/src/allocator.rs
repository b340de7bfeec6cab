//! jemalloc, tuned for a small steady footprint.
//!
//! The settings are jemalloc's compile-time `malloc_conf` string, which the
//! library reads at its first allocation, before any thread exists: one
//! arena for every thread (the agent has a handful, and automatic per-CPU
//! arenas each keep their own metadata and dirty pages), and freed pages go
//! back to the system after a second instead of ten. A `MALLOC_CONF` in the
//! environment still wins for anything it sets.

use std::ffi::{c_char, CStr};

// The prefix's jemalloc (JEMALLOC_OVERRIDE): low fragmentation under bursts.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const CONF: &CStr = c"narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0";

/// `const char *malloc_conf` as jemalloc declares it.
#[repr(transparent)]
pub struct MallocConf(*const c_char);

// SAFETY: a pointer to an immutable, 'static C string.
unsafe impl Sync for MallocConf {}

/// The unprefixed library's weak `malloc_conf` is interposed by this
/// definition (build.rs exports it from the executable's dynamic symbols).
#[unsafe(no_mangle)]
#[used]
pub static malloc_conf: MallocConf = MallocConf(CONF.as_ptr());

/// The value of a read-only `size_t`/`unsigned` mallctl, for tests.
#[cfg(test)]
fn read_u32(name: &CStr) -> u32 {
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>();
    // SAFETY: a documented mallctl name with an unsigned value.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            &mut v as *mut u32 as *mut _,
            &mut len,
            std::ptr::null_mut(),
            0,
        );
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn malloc_conf_reaches_jemalloc() {
        if std::env::var_os("MALLOC_CONF").is_some() {
            return;
        }
        assert_eq!(super::read_u32(c"opt.narenas"), 1);
    }
}
