//! The channel between the runtime and the container's init process (or an `exec` child): a
//! SOCK_SEQPACKET socket pair, one message per packet, each a tag byte followed by an optional
//! payload, and the protocol's order, which the runtime enforces ([`InitSteps`], [`ExecSteps`]):
//! a message the runtime did not ask for ends the operation.
//!
//! child -> parent: `U` (namespaces made: place me in the cgroup, write my ID maps), `H` (mounts done:
//! run the createRuntime hooks), `P<pid>` (the real init's pid, when an intermediate process had to
//! fork it; believed only for the runtime's own child), `N` (a seccomp notify listener follows, in the
//! next packet, as SCM_RIGHTS), `R` (ready: waiting for start), `E<message>` (failed).
//! `M` carries a pty master (SCM_RIGHTS) when Berth relays the terminal itself; parent -> child
//! `I<index>` carries the detached ID-mapped tree of mounts[index], `B<index>` the source of the
//! bind mounts[index] opened in init's mount namespace (SCM_RIGHTS).
//! parent -> child: `G<payload>` (go on; the payload is the state JSON for the hooks run by init), `S` (start now, when no fifo is used).

use crate::error::Context;
use crate::{bail, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A received message: tag, payload and the descriptor that came with it, if any.
pub type Message = (u8, Vec<u8>, Option<OwnedFd>);

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

    /// The length of the next message, waiting for it (the message stays queued); None when the
    /// other side closed the channel. Buffers are then made to measure: init's memory (charged to
    /// the container's cgroup) is not spent on a large receive buffer.
    fn next_len(&self) -> Result<Option<usize>> {
        let mut reset = false;
        loop {
            // SAFETY: a zero-length peek writes nothing; MSG_TRUNC makes it return the real length.
            let n = unsafe { libc::recv(self.raw(), std::ptr::null_mut(), 0, libc::MSG_PEEK | libc::MSG_TRUNC) };
            if n > 0 {
                return Ok(Some(n as usize));
            }
            if n == 0 {
                return Ok(None);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                // The peer closed with a message of ours unread: the error comes once, before
                // what it sent last (an `E` message, say); read on.
                Some(libc::ECONNRESET) if !reset => reset = true,
                Some(libc::ECONNRESET) => return Ok(None),
                _ => return Err(e).ctx("sync channel receive"),
            }
        }
    }

    /// Receive one message; None when the other side closed the channel.
    pub fn recv(&self) -> Result<Option<(u8, Vec<u8>)>> {
        Ok(self.recv_msg()?.map(|(tag, payload, _)| (tag, payload)))
    }

    /// Send a message carrying a descriptor (SCM_RIGHTS).
    pub fn send_fd(&self, tag: u8, payload: &[u8], fd: RawFd) -> Result<()> {
        let fds = [fd];
        let mut body = Vec::with_capacity(1 + payload.len());
        body.push(tag);
        body.extend_from_slice(payload);
        let iov = [std::io::IoSlice::new(&body)];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        nix::sys::socket::sendmsg::<()>(self.raw(), &iov, &cmsg, nix::sys::socket::MsgFlags::MSG_NOSIGNAL, None)
            .ctx("sync channel send")?;
        Ok(())
    }

    /// Send `tag` with a payload of any size: inline when small, else in a sealed memfd carried as
    /// the message's descriptor (a datagram is limited by the socket buffer: a state JSON with large
    /// annotations would not fit). The receiver reads it with [`blob`].
    pub fn send_blob(&self, tag: u8, payload: &[u8]) -> Result<()> {
        if payload.len() <= INLINE_MAX {
            return self.send(tag, payload);
        }
        let memfd = nix::sys::memfd::memfd_create(
            c"berth-blob",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
        )
        .ctx("sync channel: memfd")?;
        let mut f = std::fs::File::from(memfd);
        use std::io::Write;
        f.write_all(payload).ctx("sync channel: memfd")?;
        // SAFETY: fcntl on a descriptor we own; the seals only restrict later changes.
        unsafe {
            libc::fcntl(
                f.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE,
            )
        };
        self.send_fd(tag, &[], f.as_raw_fd())
    }

    /// Like `recv`, also taking a descriptor that came with the message (see `send_fd`).
    pub fn recv_msg(&self) -> Result<Option<Message>> {
        let Some(len) = self.next_len()? else { return Ok(None) };
        let mut buf = vec![0u8; len];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut reset = false;
        loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let r = nix::sys::socket::recvmsg::<()>(
                self.raw(),
                &mut iov,
                Some(&mut space),
                nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let msg = match r {
                Ok(m) => m,
                Err(nix::Error::EINTR) => continue,
                // The peer closed with a message of ours unread: the error comes once, before
                // what it sent last (an `E` message, say); read on.
                Err(nix::Error::ECONNRESET) if !reset => {
                    reset = true;
                    continue;
                }
                Err(nix::Error::ECONNRESET) => return Ok(None),
                Err(e) => return Err(e).ctx("sync channel receive"),
            };
            let n = msg.bytes;
            let mut fd = None;
            for c in msg.cmsgs().ctx("sync channel receive")? {
                if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                    for f in fds {
                        // SAFETY: the kernel installed this descriptor for us.
                        let owned = unsafe { OwnedFd::from_raw_fd(f) };
                        fd.get_or_insert(owned);
                    }
                }
            }
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            let tag = buf.remove(0);
            return Ok(Some((tag, buf, fd)));
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

/// Where init's setup stands, as the runtime sees it: each message is taken only at its step and
/// once (`U` first; `P` only when init forks, right after the go-ahead; `H` only with
/// createRuntime/prestart hooks; `N` only with a seccomp listener; `M` only, with its descriptor,
/// for a terminal Berth relays; `R` last, after `H`); anything else ends the create. `E` is taken
/// anywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct InitSteps {
    pub mapped: bool,
    pub want_pid: bool,
    pub want_hooks: bool,
    pub want_master: bool,
    pub want_listener: bool,
}

impl InitSteps {
    /// Check that `tag` (with or without a descriptor) may come now and record it.
    pub fn take(&mut self, tag: u8, has_fd: bool) -> Result<()> {
        let ok = match tag {
            b'E' => true,
            b'U' => {
                !self.mapped && {
                    self.mapped = true;
                    true
                }
            }
            _ if !self.mapped => false,
            b'P' => std::mem::take(&mut self.want_pid),
            _ if self.want_pid => false,
            b'H' => std::mem::take(&mut self.want_hooks),
            b'N' => std::mem::take(&mut self.want_listener),
            b'M' => has_fd && std::mem::take(&mut self.want_master),
            b'R' => !self.want_hooks,
            _ => false,
        };
        if !ok {
            bail!("sync channel: unexpected message {:?} from init", tag as char);
        }
        Ok(())
    }
}

/// The messages the runtime takes from an `exec` child, fixed before the clone; each is taken once.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecSteps {
    /// `P`, before anything else: the child forks into the pid namespace and reports the pid.
    pub pid: bool,
    /// `M` with its descriptor: a terminal without a console socket, relayed by Berth.
    pub master: bool,
    /// `N`: a seccomp profile with a listener.
    pub listener: bool,
}

impl ExecSteps {
    pub fn take(&mut self, tag: u8, has_fd: bool) -> Result<()> {
        let ok = match tag {
            b'E' => true,
            b'P' => std::mem::take(&mut self.pid),
            _ if self.pid => false,
            b'M' => has_fd && std::mem::take(&mut self.master),
            b'N' => std::mem::take(&mut self.listener),
            _ => false,
        };
        if !ok {
            bail!("exec: unexpected message {:?} from the process", tag as char);
        }
        Ok(())
    }
}

/// Payloads up to this size go inline; larger ones in a memfd (see `Channel::send_blob`).
const INLINE_MAX: usize = 32 * 1024;

/// The payload of a message sent with `Channel::send_blob`: inline, or read from its memfd.
pub fn blob(payload: Vec<u8>, fd: Option<OwnedFd>) -> Result<Vec<u8>> {
    let Some(fd) = fd else { return Ok(payload) };
    let mut f = std::fs::File::from(fd);
    use std::io::{Read, Seek};
    f.seek(std::io::SeekFrom::Start(0)).ctx("sync channel: memfd")?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).ctx("sync channel: memfd")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(want_pid: bool, want_hooks: bool, want_master: bool, want_listener: bool) -> InitSteps {
        InitSteps {
            mapped: false,
            want_pid,
            want_hooks,
            want_master,
            want_listener,
        }
    }

    fn run(mut s: InitSteps, msgs: &[(u8, bool)]) -> Result<()> {
        msgs.iter().try_for_each(|&(t, fd)| s.take(t, fd))
    }

    #[test]
    fn init_messages_only_at_their_step_and_once() {
        let all = steps(true, true, true, true);
        let good = [
            (b'U', false),
            (b'P', false),
            (b'H', false),
            (b'M', true),
            (b'N', false),
            (b'R', false),
        ];
        run(all, &good).unwrap();
        run(steps(false, false, false, false), &[(b'U', false), (b'R', false)]).unwrap();
        // Nothing before U, U once.
        for bad in [&[(b'P', false)][..], &[(b'R', false)], &[(b'U', false), (b'U', false)]] {
            assert!(run(all, bad).is_err(), "{bad:?}");
        }
        // P only when init forks, right after U, once.
        assert!(run(steps(false, false, false, false), &[(b'U', false), (b'P', false)]).is_err());
        assert!(run(all, &[(b'U', false), (b'H', false)]).is_err());
        assert!(run(all, &[(b'U', false), (b'P', false), (b'P', false)]).is_err());
        // H, M, N only when asked for; M with its descriptor; R not before the hooks.
        let none = steps(false, false, false, false);
        for t in [b'H', b'M', b'N', b'G', b'S', b'A', b'I', 0] {
            assert!(run(none, &[(b'U', false), (t, true)]).is_err(), "{:?}", t as char);
        }
        assert!(run(steps(false, false, true, false), &[(b'U', false), (b'M', false)]).is_err());
        assert!(run(steps(false, true, false, false), &[(b'U', false), (b'R', false)]).is_err());
        // E anywhere.
        run(all, &[(b'E', false)]).unwrap();
        run(all, &[(b'U', false), (b'E', false)]).unwrap();
    }

    #[test]
    fn exec_messages_only_when_expected_and_once() {
        let all = ExecSteps {
            pid: true,
            master: true,
            listener: true,
        };
        let none = ExecSteps {
            pid: false,
            master: false,
            listener: false,
        };
        let run = |mut e: ExecSteps, msgs: &[(u8, bool)]| msgs.iter().try_for_each(|&(t, fd)| e.take(t, fd));
        run(all, &[(b'P', false), (b'M', true), (b'N', false)]).unwrap();
        run(none, &[(b'E', false)]).unwrap();
        for bad in [
            &[(b'P', false)][..],
            &[(b'M', true)],
            &[(b'N', false)],
            &[(b'G', false)],
            &[(b'U', false)],
        ] {
            assert!(run(none, bad).is_err(), "{bad:?}");
        }
        // P first and once; M with its descriptor.
        assert!(run(all, &[(b'M', true)]).is_err());
        assert!(run(all, &[(b'P', false), (b'P', false)]).is_err());
        assert!(run(all, &[(b'P', false), (b'M', false)]).is_err());
    }

    #[test]
    fn large_payloads_travel_in_a_memfd() {
        let (a, b) = pair().unwrap();
        for len in [0, 10, INLINE_MAX, INLINE_MAX + 1, 1 << 20] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            a.send_blob(b'G', &data).unwrap();
            let (tag, payload, fd) = b.recv_msg().unwrap().unwrap();
            assert_eq!(tag, b'G');
            assert_eq!(blob(payload, fd).unwrap(), data, "{len} bytes");
        }
    }

    #[test]
    fn last_message_of_a_peer_that_left_with_unread_input_is_kept() {
        let (a, b) = pair().unwrap();
        a.send(b'G', &[]).unwrap();
        b.send(b'E', b"failed").unwrap();
        drop(b);
        let (tag, payload, _) = a.recv_msg().unwrap().expect("the E message");
        assert_eq!((tag, payload.as_slice()), (b'E', &b"failed"[..]));
        assert!(a.recv_msg().unwrap().is_none());
        let (c, d) = pair().unwrap();
        c.send(b'G', &[]).unwrap();
        d.send(b'E', b"x").unwrap();
        drop(d);
        assert_eq!(c.recv().unwrap().map(|m| m.0), Some(b'E'));
    }
}
