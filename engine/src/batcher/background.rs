//! Shadow work runs at the lowest CPU priority, so on a busy core the
//! primary requests' instance threads win. An instance thread lowers its own
//! nice value (19) for a batch made only of background jobs and restores it
//! afterwards. Restoring needs RLIMIT_NICE room (or CAP_SYS_NICE); where the
//! process has none, a probe at first use finds out and priorities are left
//! alone rather than leaving a thread stuck low.
#[cfg(target_os = "linux")]
mod imp {
    use std::sync::OnceLock;

    fn tid() -> libc::id_t {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as libc::id_t }
    }

    fn set(tid: libc::id_t, nice: i32) -> bool {
        // SAFETY: setpriority on this thread's id; no memory is passed.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) == 0 }
    }

    fn get(tid: libc::id_t) -> i32 {
        // SAFETY: as above. -1 is also a valid nice value; callers treat a
        // wrong reading as "restore to -1", which a probe ruled safe.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
    }

    /// Whether a thread may lower its priority and raise it back.
    fn can_restore() -> bool {
        static PROBE: OnceLock<bool> = OnceLock::new();
        *PROBE.get_or_init(|| {
            std::thread::spawn(|| {
                let t = tid();
                let before = get(t);
                set(t, (before + 1).min(19)) && set(t, before)
            })
            .join()
            .unwrap_or(false)
        })
    }

    pub struct Lowered {
        tid: libc::id_t,
        before: i32,
    }

    impl Lowered {
        pub fn enter() -> Option<Lowered> {
            if !can_restore() {
                return None;
            }
            let t = tid();
            let before = get(t);
            set(t, 19).then_some(Lowered { tid: t, before })
        }
    }

    impl Drop for Lowered {
        fn drop(&mut self) {
            set(self.tid, self.before);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub struct Lowered;

    impl Lowered {
        pub fn enter() -> Option<Lowered> {
            None
        }
    }
}

pub use imp::Lowered;
