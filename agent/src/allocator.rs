//! jemalloc, tuned for a small steady footprint.
//!
//! The settings (one arena, pages returned after a second, thread caches
//! only for objects up to a page) are compiled
//! into the prefix's jemalloc with `--with-malloc-conf`
//! (recipes/jemalloc.toml); the test below checks they reach it.

// The prefix's jemalloc (JEMALLOC_OVERRIDE): low fragmentation under bursts.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The value of a read-only `size_t`/`unsigned` mallctl, for tests.
#[cfg(test)]
fn read_u32(name: &std::ffi::CStr) -> u32 {
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

/// The value of a read-only `size_t` mallctl, for tests.
#[cfg(test)]
fn read_usize(name: &std::ffi::CStr) -> usize {
    let mut v: usize = 0;
    let mut len = std::mem::size_of::<usize>();
    // SAFETY: a documented mallctl name with a size_t value.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            &mut v as *mut usize as *mut _,
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
        assert_eq!(super::read_usize(c"opt.tcache_max"), 4096);
    }
}
