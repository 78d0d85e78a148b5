//! Memory allocator settings. The binary uses mimalloc (see `main.rs`):
//! glibc's malloc spent about a third of the request path's CPU in the
//! benchmark profile (tests/bench/BENCHMARKS.md), on short-lived JSON
//! allocations freed on other worker threads.
//!
//! mimalloc's defaults trade memory for speed: with 1,000,000 remembered
//! event ids the process held ~106 MiB, against ~98 MiB with the two
//! settings below applied at start-up, at the same throughput (~85 MiB when
//! the same settings come from the environment, which mimalloc reads before
//! its first arena exists). They are what `MIMALLOC_ARENA_EAGER_COMMIT=0`
//! and `MIMALLOC_PURGE_DELAY=0` set, applied in code so that no deployment
//! can forget them; an operator's own `MIMALLOC_*` variables still win.

use std::ffi::{c_int, c_long};

use libmimalloc_sys::mi_option_set;

// Positions in mimalloc v3's `mi_option_e` (include/mimalloc.h); the Rust
// bindings do not name these two. `defaults_match_the_header` guards them.
const ARENA_EAGER_COMMIT: c_int = 4;
const PURGE_DELAY: c_int = 15;

/// Applies the settings unless the operator set the matching variable.
pub fn tune() {
    for (option, env, value) in [
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 0),
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: setting a mimalloc option is a plain store into its
            // option table; any value is valid for these two options.
            unsafe { mi_option_set(option, value as c_long) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(option: c_int) -> c_long {
        // SAFETY: reads mimalloc's option table; `option` is below its length.
        unsafe { libmimalloc_sys::mi_option_get(option) }
    }

    // Fails if a mimalloc upgrade renumbers the options: the positions
    // above must still hold v3's defaults (2, and 1000 ms in src/options.c).
    #[test]
    fn defaults_match_the_header() {
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(get(ARENA_EAGER_COMMIT), 2);
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(PURGE_DELAY), 1000);
        }
    }
}
