//! The `kwk-cni` binary: reads `CNI_*` from the environment and the network config from stdin,
//! prints the result (or the error JSON) on stdout, exits non-zero on error. The config's `type`
//! picks the network: `loopback` (installed as a `loopback` link to this binary) or the bridge.
//! With `KWK_CNI_REAP_LINK` set it is DEL's background reaper instead (see `plugin::del`).
//!
//! The process starts at [`sys`]'s C `main`, not through Rust's runtime entry: that entry's
//! setup (the main thread's stack guard, found by parsing `/proc/self/maps`, an alternate signal
//! stack and handlers for stack-overflow messages) costs ~0.13 ms of every call here, and the
//! runtime waits for each call. `sys` keeps the parts that matter to a CLI: fds 0-2 open, and
//! `SIGPIPE` ignored so a closed stdout is an error, not a kill. `sys` also holds the process's
//! allocator, an arena that never frees (see [`sys::Arena`]).

#![no_main]

use std::io::{Read as _, Write as _};

/// One invocation; returns the exit status.
fn run() -> i32 {
    // Started by DEL to finish deleting a retired veth pair in the background.
    if let Some(link) = std::env::var_os(kwk_cni::plugin::REAP_ENV) {
        return match kwk_cni::plugin::reap_link(&link.to_string_lossy()) {
            Ok(()) => 0,
            Err(_) => 1,
        };
    }
    // Room for a typical network config, so it arrives in one read (plus the one seeing EOF).
    let mut stdin = Vec::with_capacity(16 * 1024);
    if let Err(err) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("kwk-cni: reading stdin: {err}");
        return 1;
    }
    let outcome = kwk_cni::run(|key| std::env::var(key).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    if outcome.success { 0 } else { 1 }
}

/// The process entry point, and the two pieces of Rust's runtime setup this binary keeps.
mod sys {
    #![allow(
        unsafe_code,
        reason = "the C entry point, two libc calls at start-up, and the global allocator"
    )]

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::UnsafeCell;
    use std::os::fd::IntoRawFd as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nix::libc;

    /// The arena's size: an ADD allocates a few hundred KiB (netlink buffers included); only
    /// the pages touched are ever backed by memory.
    const ARENA_SIZE: usize = 8 << 20;

    /// The global allocator: hands out consecutive slices of one static arena and never reuses
    /// them (only the newest block grows, shrinks or is given back in place), which suits a
    /// process that lives for milliseconds. It costs no system calls: the C library's allocator
    /// maps and unmaps pages as the plugin's buffers come and go (musl's: ~25 `mmap`/`munmap`
    /// per ADD). What does not fit goes to the system allocator (a GC over a huge store).
    pub(crate) struct Arena {
        memory: UnsafeCell<[u8; ARENA_SIZE]>,
        /// Offset of the first free byte.
        next: AtomicUsize,
    }

    // SAFETY: the arena's bytes are only reached through blocks handed out by `alloc`, and
    // `next` (an atomic) makes every block disjoint from every other, across threads too.
    unsafe impl Sync for Arena {}

    #[global_allocator]
    static ALLOCATOR: Arena = Arena {
        memory: UnsafeCell::new([0; ARENA_SIZE]),
        next: AtomicUsize::new(0),
    };

    impl Arena {
        fn base(&self) -> usize {
            self.memory.get() as usize
        }

        /// The block's offset, if it lies in the arena.
        fn offset_of(&self, ptr: *mut u8) -> Option<usize> {
            (ptr as usize)
                .checked_sub(self.base())
                .filter(|offset| *offset < ARENA_SIZE)
        }

        /// Reserves `size` bytes aligned to `align`; `None` when the arena is full.
        fn bump(&self, size: usize, align: usize) -> Option<*mut u8> {
            let base = self.base();
            let mut next = self.next.load(Ordering::Relaxed);
            loop {
                let start = (base + next).checked_next_multiple_of(align)? - base;
                let end = start.checked_add(size).filter(|end| *end <= ARENA_SIZE)?;
                match self.next.compare_exchange_weak(
                    next,
                    end,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(self.memory.get().cast::<u8>().wrapping_add(start)),
                    Err(seen) => next = seen,
                }
            }
        }
    }

    // SAFETY: blocks from `bump` are in bounds, aligned as asked and never handed out twice
    // (`next` only moves back over the newest block, when its owner frees or resizes it);
    // blocks outside the arena are the system allocator's and go back to it.
    unsafe impl GlobalAlloc for Arena {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            match self.bump(layout.size(), layout.align()) {
                Some(ptr) => ptr,
                // SAFETY: the caller's layout contract is passed on unchanged.
                None => unsafe { System.alloc(layout) },
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            match self.offset_of(ptr) {
                // The newest block: give its bytes back (if nothing was allocated since).
                Some(offset) => {
                    let _ = self.next.compare_exchange(
                        offset + layout.size(),
                        offset,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                // SAFETY: not ours, so `System` allocated it with this layout.
                None => unsafe { System.dealloc(ptr, layout) },
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if let Some(offset) = self.offset_of(ptr)
                && let Some(new_end) = offset
                    .checked_add(new_size)
                    .filter(|end| *end <= ARENA_SIZE)
                && self
                    .next
                    .compare_exchange(
                        offset + layout.size(),
                        new_end,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                // The newest block grew or shrank in place.
                return ptr;
            }
            // SAFETY: `new_size` with the old alignment is a valid layout (the caller's
            // contract); the new block does not overlap the old one, both are at least
            // `min(old, new)` bytes long, and the old block is freed exactly once.
            unsafe {
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }

    /// Called by the C runtime. `std::env` finds the arguments and environment on its own.
    // SAFETY: `#![no_main]` removes Rust's `main` symbol, so this is the only one, and it has
    // the signature the C runtime calls it with.
    #[unsafe(no_mangle)]
    extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
        keep_standard_fds_open();
        ignore_sigpipe();
        super::run()
    }

    /// Points any of fds 0-2 that is closed at `/dev/null` (as Rust's runtime does), so no file
    /// or socket opened later becomes stdout by accident.
    fn keep_standard_fds_open() {
        let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        });
        // SAFETY: `fds` is a valid array of three pollfds for the duration of the call; a zero
        // timeout never blocks.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
            return;
        }
        for pollfd in fds {
            if pollfd.revents & libc::POLLNVAL != 0 {
                // The lowest free descriptor is the closed one; it stays open for the process.
                if let Ok(null) = std::fs::File::options()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                {
                    let _ = null.into_raw_fd();
                }
            }
        }
    }

    /// Writing to a closed pipe then fails with `EPIPE` instead of killing the process.
    fn ignore_sigpipe() {
        // SAFETY: installs no handler function (`SIG_IGN`); the process is single-threaded here.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
}
