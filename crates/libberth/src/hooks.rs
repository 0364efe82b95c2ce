//! The six OCI hooks. A hook is run with its `args` (args[0] is argv[0]), exactly its `env`, the
//! container's state JSON on stdin and, when `timeout` is given, killed after that many seconds. A hook
//! that fails or times out fails the operation (except poststart and poststop, which only warn), and the
//! error names the hook by its phase, index and path.

use crate::{err, Error, Result};
use oci_spec::runtime::Hook;
use std::io::{Read, Write};
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
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::sys("start", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state_json);
    }
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
    let mut out = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
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
