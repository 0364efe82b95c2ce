//! Relaying the user's terminal when `run` or `exec` has a terminal and no `--console-socket`: the
//! pty is made inside the container as usual and its master comes back to the Berth process over the
//! sync channel. Berth puts its own terminal in raw mode (restored on every way out), copies bytes
//! both ways with poll(2), turns SIGWINCH into TIOCSWINSZ on the master, forwards other signals to
//! the process, and returns the process's exit status once it is gone and its output is drained.
//! No threads, no async runtime: one poll loop over stdin, the master and a signalfd.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The user's terminal in raw mode; the saved attributes are put back on drop.
struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Raw mode on `fd` if it is a terminal.
    fn enter(fd: RawFd) -> Option<RawMode> {
        // SAFETY: isatty/tcgetattr/tcsetattr on a descriptor number with a valid termios buffer.
        unsafe {
            if libc::isatty(fd) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode { fd, saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring attributes saved from the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Copy the size of the user's terminal (stdin, else stdout) to the pty.
fn copy_size(master: RawFd) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [0, 1] {
        // SAFETY: TIOCGWINSZ writes a winsize; TIOCSWINSZ reads one.
        unsafe {
            if libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 {
                libc::ioctl(master, libc::TIOCSWINSZ, &ws);
                return;
            }
        }
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: data is valid for its length.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if e.raw_os_error() == Some(libc::EAGAIN) {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 1000) };
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}

/// Read once from `fd` into `buf`: Some(n) (0 = end), None = nothing now (EAGAIN/EINTR).
pub(crate) fn read_some(fd: RawFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        return Some(n as usize);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => None,
        // EIO: every peer of the pty is closed.
        _ => Some(0),
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl flag changes on a descriptor number.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

/// Relay between the user's terminal (fds 0 and 1) and `master` until `pid` (our child) exits;
/// `set` is the blocked signal set (SIGCHLD, SIGWINCH and the forwarded ones). Returns the
/// shell-style exit code.
pub fn relay(master: OwnedFd, pid: i32, set: &libc::sigset_t) -> i32 {
    let m = master.as_raw_fd();
    // SAFETY: signalfd over an initialised set.
    let sfd = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if sfd < 0 {
        crate::log::warn(&format!(
            "terminal relay: signalfd: {}",
            std::io::Error::last_os_error()
        ));
        return 1;
    }
    // SAFETY: fresh descriptor.
    let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
    copy_size(m);
    set_nonblocking(m);
    let raw = RawMode::enter(0);
    let mut stdin_open = true;
    let mut master_open = true;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let mut code = None;
    while code.is_none() {
        let mut fds = [
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if master_open { m } else { -1 },
                events: libc::POLLIN | if pending.is_empty() { 0 } else { libc::POLLOUT },
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open && pending.len() < 64 * 1024 { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            // SAFETY: reading signalfd records into a zeroed struct of the right size.
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: si is valid for `size` bytes.
            while unsafe { libc::read(sfd.as_raw_fd(), (&mut si as *mut libc::signalfd_siginfo).cast(), size) }
                == size as isize
            {
                match si.ssi_signo as i32 {
                    libc::SIGCHLD => loop {
                        let mut status = 0;
                        // SAFETY: non-blocking reap of any child.
                        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                        if r <= 0 {
                            break;
                        }
                        if r == pid {
                            code = Some(crate::signal::exit_code(status));
                        }
                    },
                    libc::SIGWINCH => copy_size(m),
                    // SAFETY: forwarding a signal to our child.
                    s => unsafe {
                        libc::kill(pid, s);
                    },
                }
            }
        }
        if master_open && fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match read_some(m, &mut buf) {
                Some(0) => master_open = false,
                Some(k) => write_all(1, &buf[..k]),
                None => {}
            }
        }
        if master_open && !pending.is_empty() && fds[1].revents & libc::POLLOUT != 0 {
            // SAFETY: pending is valid for its length.
            let w = unsafe { libc::write(m, pending.as_ptr().cast(), pending.len()) };
            if w > 0 {
                pending.drain(..w as usize);
            }
        }
        if fds[2].revents != 0 {
            match read_some(0, &mut buf) {
                Some(0) => stdin_open = false,
                Some(k) => pending.extend_from_slice(&buf[..k]),
                None => {}
            }
        }
    }
    // The process is gone: pass on what it wrote last.
    if master_open {
        while let Some(k @ 1..) = read_some(m, &mut buf) {
            write_all(1, &buf[..k]);
        }
    }
    drop(raw);
    code.unwrap_or(1)
}
