//! A system shared memory object mapped into the server, and the SIGBUS
//! guard that keeps a client from crashing the server with it.
//!
//! The danger: a client registers a region, then shrinks its object with
//! `ftruncate` (by mistake or on purpose). Pages past the new end are gone,
//! and the next access to them, from a model's thread or ours, raises SIGBUS,
//! whose default action kills the server. The guard catches SIGBUS; when the
//! faulting address lies in a mapped region it maps private zero pages over
//! the whole region, so the access completes, and marks the region poisoned.
//! Every request that used the region checks the mark when it is done and
//! fails with a clear error; later requests naming the region are refused.
//! The zero pages belong to this process alone, so no client can see another
//! one's data through them. A fault anywhere else goes to the handler that
//! was there before (Rust's stack-overflow report) or the default action.
use std::ffi::{CString, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};

/// Regions mapped at once, at most (the guard scans them on a fault).
pub const MAX_MAPPINGS: usize = 4096;

struct Slot {
    /// The mapping's first address; 0 while the slot is free.
    start: AtomicUsize,
    len: AtomicUsize,
    poisoned: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    poisoned: AtomicBool::new(false),
};

static SLOTS: [Slot; MAX_MAPPINGS] = [FREE; MAX_MAPPINGS];
/// Which slots are taken (set up and torn down under this lock; the signal
/// handler reads the atomics only).
static TAKEN: Mutex<Vec<bool>> = Mutex::new(Vec::new());
static GUARD: Once = Once::new();
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// One mapped region of a shared memory object.
pub struct Mapping {
    /// The page-aligned start of the mapping and its length.
    base: *mut u8,
    mapped: usize,
    /// Where the region starts inside the mapping (its offset's remainder
    /// below a page) and its size.
    skip: usize,
    size: usize,
    slot: usize,
}

// SAFETY: the mapping is plain memory owned by this value until `drop`;
// reads and writes go through raw pointers with bounds checked by callers.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `byte_size` bytes at `offset` of the POSIX shared memory object
    /// `key` (as `shm_open` names it), read and write. The object must be a
    /// regular object at least `offset + byte_size` long now.
    pub fn open(key: &str, offset: u64, byte_size: u64) -> Result<Mapping, String> {
        if byte_size == 0 {
            return Err("byte_size must be positive".into());
        }
        let end = offset
            .checked_add(byte_size)
            .ok_or_else(|| format!("offset {offset} + byte_size {byte_size} overflows"))?;
        let name = CString::new(key).map_err(|_| "the key contains a NUL byte".to_string())?;
        // SAFETY: a valid C string; the descriptor is closed below.
        let fd = unsafe { libc::shm_open(name.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("cannot open shared memory object '{key}': {e}"));
        }
        let mapped = map(fd, key, offset, end);
        // SAFETY: our descriptor; the mapping (if any) does not need it.
        unsafe { libc::close(fd) };
        let (base, mapped, skip) = mapped?;
        let size = byte_size as usize;
        let slot = match take_slot(base as usize, mapped) {
            Some(s) => s,
            None => {
                // SAFETY: the mapping made above, used by nothing yet.
                unsafe { libc::munmap(base.cast(), mapped) };
                return Err(format!(
                    "{MAX_MAPPINGS} regions are registered already; unregister some"
                ));
            }
        };
        GUARD.call_once(install_guard);
        Ok(Mapping {
            base,
            mapped,
            skip,
            size,
            slot,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the object shrank under the mapping since it was registered:
    /// what was read from it or written to it is lost.
    pub fn poisoned(&self) -> bool {
        SLOTS[self.slot].poisoned.load(Ordering::Acquire)
    }

    /// The region's bytes. Another process may write them at any time: the
    /// client owns the region, as with every shared memory protocol.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `skip + size <= mapped`, mapped for as long as `self` lives;
        // a truncation turns the pages into zero pages, never unmaps them.
        unsafe { std::slice::from_raw_parts(self.base.add(self.skip), self.size) }
    }

    /// Copies `data` to `at` in the region.
    ///
    /// # Panics
    /// If `at + data.len()` is past the region's end (callers check first).
    pub fn write(&self, at: usize, data: &[u8]) {
        assert!(at.checked_add(data.len()).is_some_and(|end| end <= self.size));
        // SAFETY: in bounds (checked above) of a writable shared mapping;
        // raw pointers, never a `&mut` that other readers could alias.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(self.skip + at), data.len()) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let slot = &SLOTS[self.slot];
        // Out of the guard's sight first, then unmapped: nothing can fault in
        // it any more (nobody holds it).
        slot.start.store(0, Ordering::Release);
        // SAFETY: our mapping, no longer referenced.
        unsafe { libc::munmap(self.base.cast(), self.mapped) };
        lock_taken()[self.slot] = false;
    }
}

/// Maps `[offset, end)` of `fd`: the mapping, its length and where the
/// region starts in it.
fn map(fd: c_int, key: &str, offset: u64, end: u64) -> Result<(*mut u8, usize, usize), String> {
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(format!("cannot stat '{key}': {}", std::io::Error::last_os_error()));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(format!("'{key}' is not a shared memory object"));
    }
    let object = st.st_size as u64;
    if end > object {
        return Err(format!(
            "the region (offset {offset}, byte_size {}) ends at byte {end}, past the end of '{key}' ({object} bytes)",
            end - offset
        ));
    }
    let page = page_size() as u64;
    let start = offset / page * page;
    let skip = (offset - start) as usize;
    let mapped = usize::try_from(end - start).map_err(|_| "the region is too large to map".to_string())?;
    // SAFETY: a fresh shared mapping of a range checked to be in the object.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mapped,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            start as libc::off_t,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(format!("cannot map '{key}': {}", std::io::Error::last_os_error()));
    }
    Ok((base.cast(), mapped, skip))
}

fn page_size() -> usize {
    // SAFETY: no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

fn lock_taken() -> std::sync::MutexGuard<'static, Vec<bool>> {
    TAKEN.lock().unwrap_or_else(|p| p.into_inner())
}

fn take_slot(start: usize, len: usize) -> Option<usize> {
    let mut taken = lock_taken();
    if taken.is_empty() {
        taken.resize(MAX_MAPPINGS, false);
    }
    let i = taken.iter().position(|t| !t)?;
    taken[i] = true;
    let slot = &SLOTS[i];
    slot.poisoned.store(false, Ordering::Relaxed);
    slot.len.store(len, Ordering::Relaxed);
    slot.start.store(start, Ordering::Release);
    Some(i)
}

fn install_guard() {
    // SAFETY: a handler that does async-signal-safe work only (atomics, mmap,
    // sigaction); the previous action is kept to hand other faults to.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &action, &mut previous) == 0 {
            let _ = PREVIOUS.set(previous);
        }
    }
}

extern "C" fn on_sigbus(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &SLOTS {
        let start = slot.start.load(Ordering::Acquire);
        let len = slot.len.load(Ordering::Acquire);
        if start != 0 && addr >= start && addr - start < len {
            // SAFETY: replaces our own mapping, in place, by zero pages.
            let zeroed = unsafe {
                libc::mmap(
                    start as *mut c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if zeroed != libc::MAP_FAILED {
                slot.poisoned.store(true, Ordering::Release);
                return;
            }
            break;
        }
    }
    // Not a region's fault: what would have happened without the guard.
    match PREVIOUS.get() {
        Some(prev) if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN => {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous SA_SIGINFO handler, called as the kernel would.
                let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(signal, info, context);
            } else {
                // SAFETY: the previous plain handler.
                let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(signal);
            }
        }
        _ => {
            // The default action: returning re-runs the access, which faults
            // again and ends the process as it would have.
            // SAFETY: resets SIGBUS to its default disposition.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Object(CString);

    impl Object {
        fn new(name: &str, len: usize) -> Object {
            let c = CString::new(name).unwrap();
            unsafe {
                let fd = libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o600);
                assert!(fd >= 0);
                assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
                libc::close(fd);
            }
            Object(c)
        }
        fn truncate(&self, len: usize) {
            unsafe {
                let fd = libc::shm_open(self.0.as_ptr(), libc::O_RDWR, 0);
                assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
                libc::close(fd);
            }
        }
    }

    impl Drop for Object {
        fn drop(&mut self) {
            unsafe { libc::shm_unlink(self.0.as_ptr()) };
        }
    }

    #[test]
    fn bounds_are_checked_against_the_object() {
        let name = format!("/quiver-map-test-{}", std::process::id());
        let _o = Object::new(&name, 10_000);
        let m = Mapping::open(&name, 5000, 5000).unwrap();
        assert_eq!(m.size(), 5000);
        m.write(4990, &[7; 10]);
        assert_eq!(&m.bytes()[4990..], &[7; 10]);
        let past = Mapping::open(&name, 5000, 5001).err().unwrap();
        assert!(past.contains("past the end"), "{past}");
        assert!(Mapping::open(&name, u64::MAX, 2).err().unwrap().contains("overflows"));
        assert!(Mapping::open(&name, 0, 0).is_err());
        assert!(
            Mapping::open("/quiver-no-such-object", 0, 1)
                .err()
                .unwrap()
                .contains("cannot open")
        );
    }

    #[test]
    fn a_truncated_object_poisons_its_mapping_instead_of_killing_the_process() {
        let name = format!("/quiver-map-trunc-{}", std::process::id());
        let o = Object::new(&name, 3 * 4096);
        let m = Mapping::open(&name, 0, 3 * 4096).unwrap();
        m.write(0, &[1; 3 * 4096]);
        assert!(!m.poisoned());
        o.truncate(4096);
        // The page past the new end faults; the guard zeroes the region.
        let sum: u64 = m.bytes().iter().map(|&b| b as u64).sum();
        std::hint::black_box(sum);
        assert!(m.poisoned());
        assert!(
            m.bytes().iter().all(|&b| b == 0),
            "the region reads as zero pages after the fault"
        );
        m.write(2 * 4096, &[9; 16]);
        drop(m);
        // A fresh registration of what is left works and is clean.
        let again = Mapping::open(&name, 0, 4096).unwrap();
        assert!(!again.poisoned());
    }
}
