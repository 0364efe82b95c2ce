//! The channel between the runtime and the container's init process: a SOCK_SEQPACKET socket pair,
//! one message per packet, each a tag byte followed by an optional payload.
//!
//! child -> parent: `U` (namespaces made: place me in the cgroup, write my ID maps), `H` (mounts done:
//! run the createRuntime hooks), `P<pid>` (the real init's pid, when an intermediate process had to
//! fork it), `N` (a seccomp notify listener follows, in the next packet, as SCM_RIGHTS), `R` (ready: waiting for start), `E<message>` (failed).
//! parent -> child: `G<payload>` (go on; the payload is the state JSON for the hooks run by init), `S` (start now, when no fifo is used).

use crate::error::Context;
use crate::Result;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> Result<(Channel, Channel)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(crate::Error::sys("socketpair", std::io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe {
        Ok((
            Channel {
                fd: OwnedFd::from_raw_fd(fds[0]),
            },
            Channel {
                fd: OwnedFd::from_raw_fd(fds[1]),
            },
        ))
    }
}

impl Channel {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn send(&self, tag: u8, payload: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(1 + payload.len());
        buf.push(tag);
        buf.extend_from_slice(payload);
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::send(self.raw(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e).ctx("sync channel send");
            }
        }
    }

    /// Receive one message; None when the other side closed the channel.
    pub fn recv(&self) -> Result<Option<(u8, Vec<u8>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(self.raw(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                buf.truncate(n as usize);
                let tag = buf.remove(0);
                return Ok(Some((tag, buf)));
            }
            if n == 0 {
                return Ok(None);
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e).ctx("sync channel receive");
            }
        }
    }

    /// Wait for one specific tag; an `E` message or a closed channel becomes an error.
    pub fn expect(&self, want: u8) -> Result<Vec<u8>> {
        match self.recv()? {
            Some((t, p)) if t == want => Ok(p),
            Some((b'E', p)) => Err(crate::Error::new(String::from_utf8_lossy(&p).into_owned())),
            Some((t, _)) => Err(crate::err!(
                "sync channel: expected {:?}, got {:?}",
                want as char,
                t as char
            )),
            None => Err(crate::err!("container init exited before it was ready")),
        }
    }
}
