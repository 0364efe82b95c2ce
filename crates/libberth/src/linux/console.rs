//! Terminals for `process.terminal`: init opens a pty from the container's own /dev/ptmx, gets the
//! peer with TIOCGPTPEER (no path lookup that could be redirected), binds it onto /dev/console, hands
//! the master to the engine over `--console-socket` with SCM_RIGHTS (runc's protocol), and makes the
//! pty its controlling terminal and stdio.

use crate::error::Context;
use crate::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Send one descriptor over a unix socket, with `name` as the message body (runc sends the pty path).
pub fn send_fd(sock: RawFd, fd: RawFd, name: &str) -> Result<()> {
    let fds = [fd];
    let iov = [std::io::IoSlice::new(name.as_bytes())];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(sock, &iov, &cmsg, nix::sys::socket::MsgFlags::empty(), None)
        .ctx("send the pty master over --console-socket")?;
    Ok(())
}

/// Receive one descriptor sent by `send_fd`.
pub fn recv_fd(sock: RawFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ctx("receive a descriptor")?;
    for c in msg.cmsgs().ctx("control message")? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(crate::err!("no descriptor received"))
}

/// A new pty inside the container: (master, peer).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    // SAFETY: NUL-terminated literal path.
    let m = unsafe { libc::open(c"/dev/ptmx".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if m < 0 {
        return Err(Error::sys("open /dev/ptmx", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to int; TIOCGPTPEER returns a new descriptor.
    let peer = unsafe {
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(Error::sys("unlock pty", std::io::Error::last_os_error()));
        }
        libc::ioctl(
            m,
            libc::TIOCGPTPEER as _,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if peer < 0 {
        return Err(Error::sys("open pty peer", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor.
    Ok((master, unsafe { OwnedFd::from_raw_fd(peer) }))
}

/// The pty's number, for its /dev/pts path.
pub fn pty_number(master: &OwnedFd) -> Result<u32> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } != 0 {
        return Err(Error::sys("pty number", std::io::Error::last_os_error()));
    }
    Ok(n)
}

pub fn set_size(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(Error::sys("process.consoleSize", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Make `peer` the controlling terminal and stdin/stdout/stderr of a new session.
pub fn become_controlled_by(peer: &OwnedFd) -> Result<()> {
    nix::unistd::setsid().ctx("setsid")?;
    // SAFETY: plain ioctl/dup2 on descriptors we own.
    unsafe {
        if libc::ioctl(peer.as_raw_fd(), libc::TIOCSCTTY, 0) != 0 {
            return Err(Error::sys(
                "make the pty the controlling terminal",
                std::io::Error::last_os_error(),
            ));
        }
        for target in 0..3 {
            if libc::dup2(peer.as_raw_fd(), target) < 0 {
                return Err(Error::sys("dup2 the pty onto stdio", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// Bind the pty onto /dev/console (CVE-2025-52565 class): the source is the peer descriptor itself
/// and the target is resolved without following symlinks and must be a plain file or a character
/// device, and the mount goes from one descriptor to the other, so a /dev/console planted as a symlink (say to /proc/sys/kernel/core_pattern) is replaced,
/// never followed.
fn bind_console_to(peer: &OwnedFd) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let path = std::path::Path::new("/dev/console");
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() || m.file_type().is_char_device() => {}
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::remove_file(path).ctx("remove the /dev/console symlink")?;
        }
        Ok(_) => return Err(crate::err!("/dev/console: not a file or a character device")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::sys("/dev/console", e)),
    }
    // Create it if missing (O_NOFOLLOW: a symlink raced in meanwhile is refused), then take an
    // O_PATH descriptor of exactly that file.
    // SAFETY: NUL-terminated literal path.
    let c = unsafe {
        libc::open(
            c"/dev/console".as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
            0o600,
        )
    };
    if c >= 0 {
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(c) };
    }
    // SAFETY: as above.
    let fd = unsafe {
        libc::open(
            c"/dev/console".as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::sys("/dev/console", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor.
    let target = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = super::fs::fstat(target.as_raw_fd())?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFCHR {
        return Err(crate::err!("/dev/console: not a file or a character device"));
    }
    // Descriptor to descriptor with the mount API: no "/proc/self/fd/N" path, which would be
    // resolved through the container's /proc (an image can make that a fake one, CVE-2019-19921).
    let tree = super::fs::open_tree(
        peer.as_raw_fd(),
        c"",
        super::fs::OPEN_TREE_CLONE | libc::AT_EMPTY_PATH as libc::c_uint,
    )
    .map_err(|e| Error::sys("clone the pty for /dev/console", e))?;
    super::idmap::move_mount_onto(&tree, &target).map_err(|e| Error::sys("bind the pty onto /dev/console", e))
}

/// Give the pty to the process's user, as runc does for its stdio: only the owner changes (the
/// group stays what devpts gave it, the `gid=5` (tty) of the usual mount). Not possible when the
/// uid is not mapped (EINVAL), the runtime lacks the right (EPERM) or /dev is read-only (EROFS):
/// then the pty stays as it is, as with runc.
fn give_to(peer: &OwnedFd, uid: u32) -> Result<()> {
    // SAFETY: fchown on a descriptor we own; (gid_t)-1 leaves the group unchanged.
    if unsafe { libc::fchown(peer.as_raw_fd(), uid, libc::gid_t::MAX) } != 0 {
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM | libc::EROFS)) {
            return Err(Error::sys(format!("give the pty to process.user.uid {uid}"), e));
        }
    }
    Ok(())
}

/// Set up a terminal inside the container (after pivot_root, or after joining its mount namespace
/// for exec): a new pty from the container's /dev/ptmx, owned by `uid` when the process runs as a
/// non-root user, sized, bound onto /dev/console when `bind_console` (init only), the master handed
/// to `send` (with the pty's path), and the peer made the controlling terminal and stdio of a new
/// session.
pub fn setup(
    size: Option<(u16, u16)>,
    bind_console: bool,
    uid: u32,
    send: impl FnOnce(RawFd, &str) -> Result<()>,
) -> Result<()> {
    let (master, peer) = open_pty()?;
    if uid != 0 {
        give_to(&peer, uid)?;
    }
    let n = pty_number(&master)?;
    let pts = format!("/dev/pts/{n}");
    if bind_console {
        bind_console_to(&peer)?;
    }
    if let Some((rows, cols)) = size {
        set_size(master.as_raw_fd(), rows, cols)?;
    }
    send(master.as_raw_fd(), &pts)?;
    drop(master);
    become_controlled_by(&peer)
}
