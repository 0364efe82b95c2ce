//! A host client's side of the monitor's socket (`mux.sock`): opening a stream, sending a request,
//! reading its reply (create, start, kill, exec use these), and the console's last lines for
//! errors when the VM ended instead of answering.

use super::*;
use crate::error::Context;
use crate::{bail, Error, Result};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A short path for a socket in `dir`: the path itself, or one through /proc/self/fd when it is
/// too long (the returned descriptor must stay open while the path is used).
pub(super) fn sock_path(dir: &Path, name: &str) -> Result<(PathBuf, Option<std::os::fd::OwnedFd>)> {
    let p = dir.join(name);
    if p.as_os_str().len() < 100 {
        return Ok((p, None));
    }
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_ctx(|| format!("{}", dir.display()))?;
    Ok((
        PathBuf::from(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd())),
        Some(fd),
    ))
}

pub(super) fn connect(dir: &Path, name: &str) -> std::io::Result<UnixStream> {
    let (p, _fd) = sock_path(dir, name).map_err(|e| std::io::Error::other(e.to_string()))?;
    UnixStream::connect(p)
}

/// A new stream to the guest: a connection to the monitor's socket.
pub(crate) fn open_stream(dir: &Path) -> Result<UnixStream> {
    let sock = dir.join(MUX_SOCK);
    connect(dir, MUX_SOCK).with_ctx(|| format!("VM container socket {}", sock.display()))
}

pub(crate) fn send_request(s: &mut UnixStream, line: &str) -> Result<()> {
    s.write_all(&proto::Frame::new(0, proto::kind::REQ, line).encode())
        .ctx("VM container socket")
}

/// A request on a stream of its own: one request, one reply.
/// A pod member's requests go to the first container's monitor, naming the member (vm/pod.rs).
pub(super) fn request(dir: &Path, line: &str, timeout: Duration) -> Result<String> {
    let (mux, member) = pod::route(dir);
    let line = match member {
        Some(id) => format!("{line} {id}"),
        None => line.to_string(),
    };
    let mut s = open_stream(&mux)?;
    send_request(&mut s, &line)?;
    read_reply(&mut s, &mut proto::FrameBuf::default(), timeout, || None)
}

/// Read frames until the stream's reply (what follows it stays in `buf`); `gone` is asked
/// periodically whether the VM ended (with why).
pub(crate) fn read_reply(
    s: &mut UnixStream,
    buf: &mut proto::FrameBuf,
    timeout: Duration,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<String> {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(f) = buf.next_frame().map_err(Error::new)? {
            if f.kind != proto::kind::REPLY {
                continue;
            }
            let line = f.text();
            return match proto::split(&line) {
                ("error", msg) => Err(Error::new(msg.to_string())),
                _ => Ok(line),
            };
        }
        match s.read(&mut chunk) {
            Ok(0) => bail!(
                "the VM went away{}",
                gone().map(|w| format!(": {w}")).unwrap_or_default()
            ),
            Ok(n) => buf.push(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            // The monitor closed the connection: the VM is gone, say why.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => bail!(
                "the VM went away{}",
                gone().map(|w| format!(": {w}")).unwrap_or_default()
            ),
            Err(e) => return Err(Error::sys("VM container socket", e)),
        }
        if let Some(why) = gone() {
            bail!("the VM ended before the container was ready: {why}");
        }
        if Instant::now() > deadline {
            bail!("the VM did not answer within {} s", timeout.as_secs());
        }
    }
}

/// The last lines of the guest console, for error messages.
pub(super) fn console_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join(CONSOLE_LOG)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "no guest console output".into()
    } else {
        format!("guest console: {tail}")
    }
}
