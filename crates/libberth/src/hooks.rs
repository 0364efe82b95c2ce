//! The six OCI hooks. A hook is run with its `args` (args[0] is argv[0]), exactly its `env` (a
//! startContainer hook without one gets the process's, as runc gives it), the container's state JSON
//! on stdin and, when `timeout` is given, killed after that many seconds. A hook that fails or times
//! out fails the operation, except poststart and poststop: there every hook of the kind still runs
//! (the spec's "warn and continue") and the failures are returned together for the caller to warn.
//! Errors name the hook by its phase, index and path.
//!
//! The whole run of a hook is bounded by its timeout: the state is written to its stdin, and its
//! stdout and stderr are drained, by one poll loop that also waits for its exit (a pidfd), so a hook
//! that never reads a large state, or writes more than a pipe holds, cannot block the runtime. The
//! first `OUTPUT_CAP` bytes of each stream are kept for the error message; the rest is read and
//! dropped. `state_json` is the state a hook of a recorded container gets.

use crate::state::{Record, Status};
use crate::{err, Error, Result};
use oci_spec::runtime::Hook;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The state JSON a hook of the container of `rec` gets on stdin: its state document with `pid` and
/// `status` as the hook's phase has them.
pub(crate) fn state_json(rec: &Record, pid: i32, status: Status) -> Vec<u8> {
    let mut doc = rec.doc(status);
    doc.pid = pid;
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// How much of each of a hook's stdout and stderr is kept for the error message.
const OUTPUT_CAP: usize = 16 * 1024;

/// What a phase adds to every hook of it.
#[derive(Default, Clone, Copy)]
pub struct Context<'a> {
    /// The environment of a hook whose `env` is absent or empty (startContainer: `process.env`).
    pub default_env: Option<&'a [String]>,
    /// The working directory of the hook (createContainer: the container's root, as runc).
    pub cwd: Option<&'a Path>,
}

/// Phases whose failures only warn: every hook of them runs.
fn continues_after_failure(phase: &str) -> bool {
    matches!(phase, "poststart" | "poststop")
}

/// Run every hook of one phase in order (see the module documentation for what a failure does).
pub fn run_all(phase: &str, hooks: &[Hook], state_json: &[u8]) -> Result<()> {
    run_all_in(phase, hooks, state_json, Context::default())
}

/// `run_all` with what the phase adds to each hook.
pub fn run_all_in(phase: &str, hooks: &[Hook], state_json: &[u8], ctx: Context<'_>) -> Result<()> {
    let mut failures = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        if let Err(e) = run_one(h, state_json, ctx) {
            let e = e.context(format!("hooks.{phase}[{i}] {}", h.path().display()));
            if !continues_after_failure(phase) {
                return Err(e);
            }
            failures.push(e.to_string());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::new(failures.join("; ")))
    }
}

fn run_one(h: &Hook, state_json: &[u8], ctx: Context<'_>) -> Result<()> {
    let mut cmd = Command::new(h.path());
    if let Some(args) = h.args() {
        if let Some((first, rest)) = args.split_first() {
            cmd.arg0(first).args(rest);
        }
    }
    cmd.env_clear();
    let env = match h.env() {
        Some(e) if !e.is_empty() => Some(e.as_slice()),
        _ => ctx.default_env,
    };
    for kv in env.into_iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    if let Some(dir) = ctx.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::sys("start", e))?;
    let deadline = h
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(0) as u64));
    let mut io = HookIo {
        state: state_json,
        written: 0,
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout: Output::new(child.stdout.take().map(OwnedFd::from)),
        stderr: Output::new(child.stderr.take().map(OwnedFd::from)),
    };
    let status = match io.pump_until_exit(&mut child, deadline) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err!("timed out after {} s", h.timeout().unwrap_or(0)));
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "failed".to_string(),
    };
    let mut out = String::new();
    for (name, o) in [("stdout", &io.stdout), ("stderr", &io.stderr)] {
        let text = String::from_utf8_lossy(&o.kept);
        let text = text.trim();
        if !text.is_empty() {
            out.push_str(&format!(", {name}: {text}"));
        }
    }
    Err(err!("{how}{out}"))
}

/// One of a hook's output pipes and what was kept of it.
struct Output {
    pipe: Option<std::fs::File>,
    kept: Vec<u8>,
}

impl Output {
    fn new(fd: Option<OwnedFd>) -> Output {
        Output {
            pipe: fd.map(std::fs::File::from),
            kept: Vec::new(),
        }
    }

    /// Read what is available, keeping up to OUTPUT_CAP bytes; at end of file the pipe is closed.
    /// At most 64 reads per call, so that a writer as fast as the reader (a descendant of the hook
    /// still holding the pipe) cannot keep the runtime here past the deadline.
    fn drain(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else { return };
        let mut buf = [0u8; 8192];
        for _ in 0..64 {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    let room = OUTPUT_CAP.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.pipe = None;
                    return;
                }
            }
        }
    }
}

/// The pipes of a running hook: the state still to write to its stdin, its stdout and stderr.
struct HookIo<'a> {
    state: &'a [u8],
    written: usize,
    stdin: Option<OwnedFd>,
    stdout: Output,
    stderr: Output,
}

impl HookIo<'_> {
    /// Feed stdin, drain stdout/stderr and wait for the exit, all in one poll loop; None if the
    /// deadline came first.
    fn pump_until_exit(&mut self, child: &mut Child, deadline: Option<Instant>) -> Result<Option<ExitStatus>> {
        for fd in [
            self.stdin.as_ref().map(|f| f.as_raw_fd()),
            self.stdout.pipe.as_ref().map(|f| f.as_raw_fd()),
            self.stderr.pipe.as_ref().map(|f| f.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            set_nonblocking(fd)?;
        }
        let pidfd = pidfd_open(child.id() as libc::pid_t);
        loop {
            self.feed_stdin();
            self.stdout.drain();
            self.stderr.drain();
            if let Some(status) = child.try_wait().map_err(|e| Error::sys("wait", e))? {
                // Whatever the hook wrote before it exited is in the pipes now: take it, without
                // waiting for a descendant that may still hold them open.
                self.stdout.drain();
                self.stderr.drain();
                return Ok(Some(status));
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    Some(left)
                }
                None => None,
            };
            // Without a pidfd (an old kernel), look at the child every 20 ms.
            let tick = if pidfd.is_some() {
                left
            } else {
                Some(left.map_or(Duration::from_millis(20), |l| l.min(Duration::from_millis(20))))
            };
            let ms = tick.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
            let mut fds = Vec::with_capacity(4);
            for (fd, events) in [
                (pidfd.as_ref().map(|f| f.as_raw_fd()), libc::POLLIN),
                (self.stdin.as_ref().map(|f| f.as_raw_fd()), libc::POLLOUT),
                (self.stdout.pipe.as_ref().map(|f| f.as_raw_fd()), libc::POLLIN),
                (self.stderr.pipe.as_ref().map(|f| f.as_raw_fd()), libc::POLLIN),
            ] {
                if let Some(fd) = fd {
                    fds.push(libc::pollfd { fd, events, revents: 0 });
                }
            }
            // SAFETY: fds is a valid array of pollfd of the given length.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    return Err(Error::sys("poll the hook's pipes", e));
                }
            }
        }
    }

    /// Write what the pipe takes of the state; close stdin once all is written, or when the hook
    /// closed its end (a hook need not read its state: EPIPE is not an error).
    fn feed_stdin(&mut self) {
        let Some(fd) = self.stdin.as_ref() else { return };
        while self.written < self.state.len() {
            let rest = &self.state[self.written..];
            // SAFETY: writing from a valid buffer of the given length to a descriptor we own.
            let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                self.written += n as usize;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                ErrorKind::Interrupted => continue,
                ErrorKind::WouldBlock => return,
                // EPIPE or anything else: the hook does not take (more of) its state.
                _ => break,
            }
        }
        self.stdin = None;
    }
}

fn set_nonblocking(fd: RawFd) -> Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    let ok = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) >= 0
    };
    if ok {
        Ok(())
    } else {
        Err(Error::sys("hook pipe: O_NONBLOCK", std::io::Error::last_os_error()))
    }
}

/// A pidfd for our own child (None on a kernel without pidfd_open).
fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open on our own child's pid, which is not reaped before we are done with it.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a new descriptor that we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
