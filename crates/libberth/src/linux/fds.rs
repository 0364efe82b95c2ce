//! Descriptor hygiene and visibility of the runtime processes a container can see (init before its
//! exec, the `exec` child). Such a process is made non-dumpable right after its clone, so that a
//! process of the container can neither ptrace it nor open `/proc/<pid>/fd/*`, and it closes every
//! descriptor it does not need at once — closed, not merely marked close-on-exec — so that nothing
//! of the host (the caller's descriptors, the runtime's namespace handles, its private procfs) is
//! held while the process runs inside the container. `--preserve-fds` numbers are claimed at
//! start-up so that no descriptor the runtime opens itself can land in the preserved range.

use std::os::fd::RawFd;

/// Make this process non-dumpable (until its execve resets it): only a tracer with CAP_SYS_PTRACE
/// in the initial user namespace can ptrace it or open its /proc/<pid>/fd, mem, environ, ...
pub fn hide() {
    set_dumpable(false);
}

/// Make this process dumpable again for a moment: an unprivileged runtime writes the ID maps of its
/// child through /proc/<pid>/uid_map (or has newuidmap do it), which a non-dumpable child's
/// root-owned /proc entries refuse.
pub fn set_dumpable(on: bool) {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, on as libc::c_ulong, 0, 0, 0) };
}

/// Close every descriptor from `first` up, except those in `keep` (in any order, duplicates and
/// numbers below `first` allowed). Uses close_range over the gaps, without allocating (it also
/// runs in forked children); on kernels without close_range, walks /proc/self/fd.
pub fn close_from_except(first: RawFd, keep: &[RawFd]) {
    let mut lo = first.max(0) as u32;
    loop {
        // The smallest kept descriptor at or above `lo`.
        let next = keep
            .iter()
            .filter(|&&k| k >= 0)
            .map(|&k| k as u32)
            .filter(|&k| k >= lo)
            .min();
        match next {
            Some(k) => {
                if k > lo {
                    close_range(lo, k - 1);
                }
                lo = k + 1;
            }
            None => return close_range(lo, u32::MAX),
        }
    }
}

fn close_range(lo: u32, hi: u32) {
    // SAFETY: close_range closes descriptors this process owns; the caller keeps no handle on any
    // descriptor in the range (its owners are never used again: see `close_from_except` callers).
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
    if r == 0 {
        return;
    }
    // Old kernels: list /proc/self/fd first (the directory's own descriptor is in the range).
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd: &i32| fd as u32 >= lo && fd as u32 <= hi)
        .collect();
    for fd in fds {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}

/// `--preserve-fds N`: make sure descriptors 3..3+N are all open before the runtime opens anything
/// itself (a log file, the state lock, the sync socket), so that a gap the caller left is filled
/// with /dev/null rather than with one of the runtime's own descriptors, which would then be
/// passed on into the container.
pub fn claim_preserved(n: i32) {
    for fd in 3..3 + n.clamp(0, 1 << 20) {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        // SAFETY: open a fresh descriptor of /dev/null; it is moved to `fd` (free, just checked) and
        // the original closed.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 && null != fd {
                libc::dup2(null, fd);
                libc::close(null);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    #[test]
    fn closes_all_but_the_kept_ones() {
        // In a forked child, so the test harness's own descriptors are not touched.
        // SAFETY: fork in a test; the child only makes system calls and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut fds = [0; 6];
            for f in fds.iter_mut() {
                // SAFETY: open /dev/null.
                *f = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
            }
            close_from_except(3, &[fds[4], fds[1]]);
            let ok = is_open(0)
                && is_open(fds[1])
                && is_open(fds[4])
                && !is_open(fds[0])
                && !is_open(fds[2])
                && !is_open(fds[3])
                && !is_open(fds[5]);
            // SAFETY: leave the forked child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: reap our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0, "descriptors left open or kept ones closed");
    }
}
