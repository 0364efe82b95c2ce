//! The host end of a VM container process's stdio: the descriptors a Linux container's process
//! would have had (Berth's stdin/stdout/stderr, or the host side of a pty), relayed to and from
//! its stream on the control port (docs/VM.md). Used by the monitor for the container's process
//! (stream 0) and by the host process that stands for an exec'd one.
//!
//! Inherited descriptors are shared with whoever gave them to us (a shell's terminal, an engine's
//! pipes), so they are never switched to non-blocking mode: they are read only when poll says so,
//! and written in chunks of at most PIPE_BUF once poll says there is room.

use super::proto::{kind, Frame, WINDOW};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A write that poll(POLLOUT) allows never blocks when it is at most this long.
const CHUNK: usize = 4096;

/// The local side of one stream.
pub struct Local {
    pub stream: u32,
    /// The process's stdin comes from here (None: nothing to relay, or it ended).
    input: Option<RawFd>,
    /// Bytes of stdin the guest can still take.
    credit: usize,
    out: Option<RawFd>,
    err: Option<RawFd>,
    outq: Vec<u8>,
    errq: Vec<u8>,
    /// The host side of the pty (a terminal: input = out = tty, in raw mode, no stderr).
    tty: Option<OwnedFd>,
    /// Descriptors kept open for the life of the relay.
    _keep: Vec<OwnedFd>,
}

/// Whether a descriptor holds something to relay as stdin: a pipe, socket or file — or a
/// terminal, when `tty_ok` (not for a process that outlives Berth: it would read the user's
/// terminal behind the shell's back). Not /dev/null, not a closed descriptor.
pub fn stdin_worth_reading(fd: RawFd, tty_ok: bool) -> bool {
    // SAFETY: fstat into a local struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFREG => true,
        // SAFETY: isatty on a descriptor number.
        libc::S_IFCHR => tty_ok && unsafe { libc::isatty(fd) } == 1,
        _ => false,
    }
}

/// A host pty pair (master, peer) for a process with a terminal; the peer in raw mode (the line
/// discipline that counts is the guest's).
pub fn host_pty() -> crate::Result<(OwnedFd, OwnedFd)> {
    let (m, p) = crate::linux::console::open_pty()?;
    // SAFETY: termios calls on a descriptor we own, with a valid buffer.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(p.as_raw_fd(), &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(p.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
    Ok((m, p))
}

/// The host side of a VM container's terminal (`process.terminal`): (the master, for the console
/// socket; the side relayed to the guest; the console socket, connected). With `run`'s own pty
/// (`run_tty`) there is no master to hand over; without a terminal, nothing.
pub(super) type HostTerminal = (Option<OwnedFd>, Option<OwnedFd>, Option<std::os::unix::net::UnixStream>);

pub(super) fn host_terminal(
    terminal: bool,
    run_tty: Option<OwnedFd>,
    console_socket: Option<&std::path::Path>,
) -> crate::Result<HostTerminal> {
    use crate::error::Context;
    let (master, peer) = match (terminal, run_tty) {
        (false, _) => (None, None),
        (true, Some(t)) => (None, Some(t)),
        (true, None) => {
            let (m, p) = host_pty()?;
            (Some(m), Some(p))
        }
    };
    let console = match (&master, console_socket) {
        (Some(_), Some(p)) => {
            Some(std::os::unix::net::UnixStream::connect(p).with_ctx(|| format!("--console-socket {}", p.display()))?)
        }
        _ => None,
    };
    Ok((master, peer, console))
}

/// Hand the terminal's master to the console socket (once the guest's side is ready).
pub(super) fn send_master(
    master: Option<&OwnedFd>,
    console: Option<&std::os::unix::net::UnixStream>,
) -> crate::Result<()> {
    if let (Some(m), Some(c)) = (master, console) {
        let name = format!("/dev/pts/{}", crate::linux::console::pty_number(m)?);
        crate::linux::console::send_fd(c.as_raw_fd(), m.as_raw_fd(), &name)?;
    }
    Ok(())
}

/// The window size of a terminal, if it has one.
pub fn win_size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
        Some((ws.ws_row, ws.ws_col))
    } else {
        None
    }
}

/// Make the pty peer the controlling terminal of this process (a session leader of its own), so
/// it gets SIGWINCH when the master's size changes and SIGHUP when the master is closed.
pub fn control_terminal(peer: RawFd) {
    // SAFETY: setsid and TIOCSCTTY with integer arguments.
    unsafe {
        libc::setsid();
        libc::ioctl(peer, libc::TIOCSCTTY, 0);
    }
}

/// Read once: Some(n) (0 = end, also EIO of a pty whose other side is closed), None = nothing now.
pub(crate) use crate::linux::tty::read_some;

/// One chunk from the front of `q` to `fd` (poll said it has room); bytes written, None on error.
fn write_chunk(fd: RawFd, q: &mut Vec<u8>) -> Option<usize> {
    let n = q.len().min(CHUNK);
    // SAFETY: q is valid for n bytes.
    let w = unsafe { libc::write(fd, q.as_ptr().cast(), n) };
    if w < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Some(0),
            _ => None,
        };
    }
    q.drain(..w as usize);
    Some(w as usize)
}

fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// Where a Local's descriptors are in a pollfd array.
#[derive(Default, Clone, Copy)]
pub struct Slots {
    input: Option<usize>,
    out: Option<usize>,
    err: Option<usize>,
}

impl Local {
    /// Plain stdio: `input` (None: the process gets /dev/null), `out`, `err` (borrowed numbers,
    /// kept open by the caller).
    pub fn pipes(stream: u32, input: Option<RawFd>, out: Option<RawFd>, err: Option<RawFd>) -> Local {
        Local {
            stream,
            input,
            credit: WINDOW,
            out,
            err,
            outq: Vec::new(),
            errq: Vec::new(),
            tty: None,
            _keep: Vec::new(),
        }
    }

    /// A terminal: the host side of a pty (owned from now on).
    pub fn terminal(stream: u32, peer: OwnedFd) -> Local {
        let fd = peer.as_raw_fd();
        Local {
            input: Some(fd),
            out: Some(fd),
            tty: Some(peer),
            ..Local::pipes(stream, None, None, None)
        }
    }

    pub fn is_tty(&self) -> bool {
        self.tty.is_some()
    }

    /// The window size frame for the guest, when this is a terminal with a size.
    pub fn resize(&self) -> Option<Frame> {
        let (r, c) = win_size(self.tty.as_ref()?.as_raw_fd())?;
        Some(Frame::new(self.stream, kind::RESIZE, format!("{r} {c}")))
    }

    /// Add this side's descriptors to a poll set.
    pub fn register(&self, fds: &mut Vec<libc::pollfd>) -> Slots {
        let mut s = Slots::default();
        if let Some(fd) = self.input.filter(|_| self.credit > 0) {
            s.input = Some(fds.len());
            fds.push(pollfd(fd, libc::POLLIN));
        }
        for (fd, q, slot) in [(self.out, &self.outq, &mut s.out), (self.err, &self.errq, &mut s.err)] {
            if let Some(fd) = fd.filter(|_| !q.is_empty()) {
                *slot = Some(fds.len());
                fds.push(pollfd(fd, libc::POLLOUT));
            }
        }
        s
    }

    /// Act on what poll found: read stdin into frames, write queued output (acknowledged).
    pub fn handle(&mut self, fds: &[libc::pollfd], s: Slots, send: &mut impl FnMut(Frame)) {
        if let Some(i) = s.input {
            if fds[i].revents != 0 {
                let fd = self.input.expect("polled input");
                let mut buf = vec![0u8; self.credit.min(32 * 1024)];
                match read_some(fd, &mut buf) {
                    Some(0) => {
                        self.input = None;
                        if self.tty.is_none() {
                            send(Frame::new(self.stream, kind::STDIN_END, Vec::new()));
                        }
                    }
                    Some(n) => {
                        self.credit -= n;
                        buf.truncate(n);
                        send(Frame::new(self.stream, kind::STDIN, buf));
                    }
                    None => {}
                }
            }
        }
        for (slot, which) in [(s.out, 0), (s.err, 1)] {
            let Some(i) = slot else { continue };
            if fds[i].revents == 0 {
                continue;
            }
            let (fd, q) = if which == 0 {
                (self.out, &mut self.outq)
            } else {
                (self.err, &mut self.errq)
            };
            match write_chunk(fd.expect("polled output"), q) {
                Some(0) => {}
                Some(n) => send(Frame::new(self.stream, kind::ACK, n.to_string())),
                None => {
                    // The reader is gone: drop what comes, but keep the guest sending.
                    let n = q.len();
                    q.clear();
                    if which == 0 {
                        self.out = None;
                    } else {
                        self.err = None;
                    }
                    send(Frame::new(self.stream, kind::ACK, n.to_string()));
                }
            }
        }
    }

    /// A frame from the guest for this stream; Some(code) once the process ended. Err when the
    /// guest sent more output than the window allows (nothing is queued beyond it: the caller
    /// drops the guest or the stream).
    pub fn deliver(&mut self, f: Frame, send: &mut impl FnMut(Frame)) -> Result<Option<i32>, String> {
        match f.kind {
            kind::STDOUT | kind::STDERR => {
                if self.outq.len() + self.errq.len() + f.data.len() > WINDOW {
                    return Err(format!(
                        "stream {}: {} bytes of output beyond the window of {WINDOW}",
                        self.stream,
                        self.outq.len() + self.errq.len() + f.data.len()
                    ));
                }
                let to_err = f.kind == kind::STDERR && self.err.is_some();
                let (fd, q) = if to_err {
                    (self.err, &mut self.errq)
                } else {
                    (self.out, &mut self.outq)
                };
                if fd.is_some() {
                    q.extend_from_slice(&f.data);
                } else {
                    send(Frame::new(self.stream, kind::ACK, f.data.len().to_string()));
                }
            }
            kind::ACK => {
                // Never more credit than the window: an ack for bytes never sent is ignored.
                let n = f.number().unwrap_or(0).clamp(0, WINDOW as i64) as usize;
                self.credit = (self.credit + n).min(WINDOW);
            }
            kind::EXIT => return Ok(Some(f.number().unwrap_or(255).clamp(0, 255) as i32)),
            _ => {}
        }
        Ok(None)
    }

    /// Write out what is queued (the process ended); gives up after `timeout` without progress.
    pub fn flush(&mut self, timeout: std::time::Duration) {
        for (fd, q) in [(self.out, &mut self.outq), (self.err, &mut self.errq)] {
            let Some(fd) = fd else { continue };
            while !q.is_empty() {
                let mut p = pollfd(fd, libc::POLLOUT);
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) } <= 0 {
                    break;
                }
                if write_chunk(fd, q).is_none() {
                    break;
                }
            }
        }
    }
}

/// A signalfd for `sigs` (blocked here first); SIGCHLD included when `chld`.
pub fn signalfd(sigs: &[i32]) -> crate::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local set; signalfd returns a new descriptor.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(crate::Error::sys("signalfd", std::io::Error::last_os_error()));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The signals waiting on a signalfd.
pub fn take_signals(sfd: RawFd) -> Vec<i32> {
    let mut out = Vec::new();
    // SAFETY: reading signalfd records into a zeroed struct of the right size.
    let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: si is valid for `size` bytes.
    while unsafe { libc::read(sfd, (&mut si as *mut libc::signalfd_siginfo).cast(), size) } == size as isize {
        out.push(si.ssi_signo as i32);
    }
    out
}

/// Signals relayed to the guest's process by the host process that stands for it (the monitor for
/// the container's process, the exec helper for an exec'd one), as a Linux process would get them
/// (so a stop signal never stops the stand-in itself; in the guest the kernel drops it for a
/// process of an orphaned process group, as exec'd processes are). Not SIGPIPE: a stand-in writing
/// to a reader that went away would raise it itself.
pub const RELAYED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut p = [0; 2];
        // SAFETY: pipe2 fills two descriptors, owned below.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors.
        unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
    }

    /// One poll round over the local side's descriptors; the frames it sends.
    fn round(l: &mut Local) -> Vec<Frame> {
        let mut fds = Vec::new();
        let slots = l.register(&mut fds);
        // SAFETY: fds is a valid array of pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        let mut out = Vec::new();
        l.handle(&fds, slots, &mut |f| out.push(f));
        out
    }

    #[test]
    fn stdin_within_the_window_output_acknowledged() {
        let (in_r, in_w) = pipe();
        let (out_r, out_w) = pipe();
        // SAFETY: fcntl flag change on our pipe (a full pipe must not block the test).
        unsafe { libc::fcntl(in_w.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let mut l = Local::pipes(3, Some(in_r.as_raw_fd()), Some(out_w.as_raw_fd()), None);
        // Stdin becomes frames, until the window is used up.
        let chunk = vec![b'x'; 40 * 1024];
        let mut sent = 0;
        for _ in 0..8 {
            // SAFETY: writing a valid buffer to our pipe.
            unsafe { libc::write(in_w.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) };
            for f in round(&mut l) {
                assert_eq!((f.stream, f.kind), (3, kind::STDIN));
                sent += f.data.len();
            }
        }
        assert_eq!(sent, WINDOW, "no more than the window before an ack");
        let mut noop = |_: Frame| {};
        l.deliver(Frame::new(3, kind::ACK, "1000"), &mut noop).unwrap();
        let more: usize = round(&mut l).iter().map(|f| f.data.len()).sum();
        assert_eq!(more, 1000);
        // Output is written out and acknowledged; stderr without a descriptor goes to stdout.
        let mut acks = Vec::new();
        l.deliver(Frame::new(3, kind::STDOUT, "hello "), &mut |f| acks.push(f))
            .unwrap();
        l.deliver(Frame::new(3, kind::STDERR, "world"), &mut |f| acks.push(f))
            .unwrap();
        assert!(acks.is_empty(), "acknowledged only once written");
        let acked: i64 = round(&mut l)
            .iter()
            .filter(|f| f.kind == kind::ACK)
            .map(|f| f.number().unwrap())
            .sum();
        assert_eq!(acked, 11);
        let mut buf = [0u8; 64];
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(out_r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(&buf[..n as usize], b"hello world");
        // The end of stdin is passed on; the exit status ends the stream.
        drop(in_w);
        let mut rest = Vec::new();
        for _ in 0..20 {
            rest.extend(round(&mut l));
            l.deliver(Frame::new(3, kind::ACK, WINDOW.to_string()), &mut noop)
                .unwrap();
            if rest.iter().any(|f| f.kind == kind::STDIN_END) {
                break;
            }
        }
        assert!(rest.iter().any(|f| f.kind == kind::STDIN_END), "EOF sent");
        assert_eq!(l.deliver(Frame::new(3, kind::EXIT, "137"), &mut noop), Ok(Some(137)));
    }

    #[test]
    fn output_beyond_the_window_is_refused_not_queued() {
        let (_out_r, out_w) = pipe();
        let mut l = Local::pipes(5, None, Some(out_w.as_raw_fd()), None);
        let mut noop = |_: Frame| {};
        // Nobody reads the pipe: a window is queued, not a byte more.
        let chunk = vec![b'o'; 64 * 1024];
        for _ in 0..WINDOW / chunk.len() {
            assert_eq!(
                l.deliver(Frame::new(5, kind::STDOUT, chunk.clone()), &mut noop),
                Ok(None)
            );
        }
        assert!(l.deliver(Frame::new(5, kind::STDOUT, "x"), &mut noop).is_err());
        assert!(l.outq.len() <= WINDOW);
        // Credit never grows past the window, whatever the guest acknowledges.
        l.deliver(Frame::new(5, kind::ACK, "99999999999"), &mut noop).unwrap();
        assert_eq!(l.credit, WINDOW);
    }
}
