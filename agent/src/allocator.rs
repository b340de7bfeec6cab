//! jemalloc, tuned for a small steady footprint.
//!
//! The settings (one arena, pages returned after a second, thread caches
//! only for objects up to a page) are compiled into the prefix's jemalloc
//! with `--with-malloc-conf` (recipes/jemalloc.toml); the test below
//! checks they reach it.

// The prefix's jemalloc (JEMALLOC_OVERRIDE): low fragmentation under bursts.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The value of a read-only mallctl of type `T` (`unsigned`, `size_t`),
/// for tests.
#[cfg(test)]
fn read<T: Default>(name: &std::ffi::CStr) -> T {
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>();
    // SAFETY: a documented mallctl name whose value has `T`'s size (a size
    // that does not match is refused with EINVAL, leaving `v` alone).
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            &mut v as *mut T as *mut _,
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
        assert_eq!(super::read::<u32>(c"opt.narenas"), 1);
        assert_eq!(super::read::<usize>(c"opt.tcache_max"), 4096);
    }
}
