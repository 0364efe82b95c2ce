//! The six OCI hooks. A hook is run with its `args` (args[0] is argv[0]), exactly its `env`, the
//! container's state JSON on stdin (a memory file, as its stdout and stderr are) and, when
//! `timeout` is given, killed after that many seconds. A hook that fails or times out fails the
//! operation (except poststart and poststop, which only warn), and the error names the hook by its
//! phase, index and path, with the start of what it wrote.

use crate::{err, Error, Result};
use oci_spec::runtime::Hook;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run every hook of one phase in order; stop at the first failure.
pub fn run_all(phase: &str, hooks: &[Hook], state_json: &[u8]) -> Result<()> {
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, state_json).map_err(|e| e.context(format!("hooks.{phase}[{i}] {}", h.path().display())))?;
    }
    Ok(())
}

fn run_one(h: &Hook, state_json: &[u8]) -> Result<()> {
    let mut cmd = Command::new(h.path());
    if let Some(args) = h.args() {
        if let Some((first, rest)) = args.split_first() {
            cmd.arg0(first).args(rest);
        }
    }
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    // The state is read from a memory file and the output written to one, not through pipes: a
    // hook that does not read a large state, or writes more than a pipe holds before it exits,
    // must not block the runtime (nor escape its timeout while the runtime is stuck writing).
    let mut input = memory_file(c"hook-state")?;
    input
        .write_all(state_json)
        .map_err(|e| Error::sys("write the state for the hook", e))?;
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::sys("rewind the hook's state", e))?;
    let mut output = memory_file(c"hook-output")?;
    let dup = |f: &std::fs::File| f.try_clone().map_err(|e| Error::sys("hook output", e));
    cmd.stdin(Stdio::from(input))
        .stdout(Stdio::from(dup(&output)?))
        .stderr(Stdio::from(dup(&output)?));
    let mut child = cmd.spawn().map_err(|e| Error::sys("start", e))?;
    // The runtime's copies of the hook's stdio would otherwise stay open in `cmd` until it drops.
    drop(cmd);
    let deadline = h.timeout().map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = wait_with_deadline(&mut child, deadline)?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err!("timed out after {} s", h.timeout().unwrap_or(0)));
    };
    if status.success() {
        return Ok(());
    }
    // What it wrote (stderr and stdout as they came), at most the first 64 KiB.
    let mut bytes = Vec::new();
    if output.seek(SeekFrom::Start(0)).is_ok() {
        let _ = (&mut output).take(64 * 1024).read_to_end(&mut bytes);
    }
    let out = String::from_utf8_lossy(&bytes);
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "failed".to_string(),
    };
    let out = out.trim();
    if out.is_empty() {
        Err(err!("{how}"))
    } else {
        Err(err!("{how}: {out}"))
    }
}

/// An anonymous memory file (memfd), close-on-exec.
fn memory_file(name: &std::ffi::CStr) -> Result<std::fs::File> {
    // SAFETY: memfd_create with a NUL-terminated name; the result is a new descriptor we own.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::sys("memfd for a hook", std::io::Error::last_os_error()));
    }
    // SAFETY: just created, ours.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Wait for the child; None if the deadline passed first. Uses a pidfd so no polling loop is needed.
fn wait_with_deadline(
    child: &mut std::process::Child,
    deadline: Option<Instant>,
) -> Result<Option<std::process::ExitStatus>> {
    if let Some(deadline) = deadline {
        // SAFETY: pidfd_open on our own child's pid.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) } as i32;
        if pidfd >= 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: pfd is a valid pollfd; pidfd is closed right after.
            let r = unsafe {
                let r = loop {
                    let r = libc::poll(&mut pfd, 1, ms);
                    if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                        break r;
                    }
                };
                libc::close(pidfd);
                r
            };
            if r == 0 {
                return Ok(None);
            }
        }
    }
    child.wait().map(Some).map_err(|e| Error::sys("wait", e))
}
