//! SIGTERM/SIGINT end `serve` with exit status 0. As PID 1 of a container the
//! default action would be ignored, so a handler is installed explicitly.

#[cfg(unix)]
mod imp {
    use std::os::raw::c_int;

    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;

    extern "C" {
        fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
        fn _exit(status: c_int) -> !;
    }

    extern "C" fn exit_zero(_: c_int) {
        // SAFETY: `_exit` is async-signal-safe and takes no pointers.
        unsafe { _exit(0) }
    }

    pub fn exit_zero_on_term() {
        for sig in [SIGINT, SIGTERM] {
            // SAFETY: installs a handler that only calls an async-signal-safe function.
            unsafe { signal(sig, exit_zero) };
        }
    }
}

#[cfg(not(unix))]
mod imp {
    pub fn exit_zero_on_term() {}
}

pub use imp::exit_zero_on_term;
