//! `process.terminal: true` with `--console-socket`: the runtime sends the
//! pty master over a unix socket (SCM_RIGHTS); the container's process has
//! the pty slave as its controlling terminal.

mod common;

use common::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A listening unix socket for `--console-socket`.
struct ConsoleSocket {
    _dir: TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn new() -> ConsoleSocket {
        let dir = TempDir::new("console");
        let path = dir.join("console.sock");
        let listener = UnixListener::bind(&path).expect("bind console socket");
        listener.set_nonblocking(true).unwrap();
        ConsoleSocket {
            _dir: dir,
            path,
            listener,
        }
    }

    fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Accepts the runtime's connection and receives the pty master fd.
    fn recv_master(&self) -> OwnedFd {
        let deadline = Instant::now() + POLL_TIMEOUT;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "runtime never connected to the console socket"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept on console socket: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(POLL_TIMEOUT)).unwrap();
        recv_fd(stream.as_raw_fd()).expect("no fd received over the console socket (SCM_RIGHTS)")
    }
}

/// Receives one file descriptor passed with SCM_RIGHTS on `sock`.
fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    let mut data = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space * 4];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    let mut received = None;
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
                received = Some(OwnedFd::from_raw_fd(fd));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    received
}

/// Reads the pty master until the slave side is closed (EIO) or the
/// deadline passes; returns the text with `\r\n` turned into `\n`.
fn read_until_closed(master: &OwnedFd) -> String {
    let deadline = Instant::now() + POLL_TIMEOUT;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "pty not closed in time; read so far: {:?}",
            String::from_utf8_lossy(&out)
        );
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if rc <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break; // EIO: every slave fd is closed
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

#[test]
fn terminal_via_console_socket() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let console = ConsoleSocket::new();
    let mut b = Bundle::sh(
        "tty; stty size; (: < /dev/tty) 2>/dev/null && echo ctty-ok; \
         echo tty_nr=$(cut -d' ' -f7 /proc/self/stat)",
    );
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({ "height": 30, "width": 100 });
    let id = unique_id();

    rt.create_with(&b, &id, &["--console-socket", console.path_str()])
        .ok("create --console-socket");
    let master = console.recv_master();
    rt.start(&id).ok("start");
    let out = read_until_closed(&master);
    rt.wait_for_status(&id, "stopped");

    let l = lines(&out);
    assert!(l.len() >= 4, "output: {out:?}");
    assert!(l[0].starts_with("/dev/pts/") || l[0] == "/dev/console", "tty: {out:?}");
    assert_eq!(l[1], "30 100", "consoleSize: {out:?}");
    assert_eq!(l[2], "ctty-ok", "pty must be the controlling terminal: {out:?}");
    let tty_nr: i64 = l[3].trim_start_matches("tty_nr=").parse().unwrap();
    assert_ne!(tty_nr, 0, "process has no controlling tty: {out:?}");
}

#[test]
fn terminal_stdin_is_the_pty() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let console = ConsoleSocket::new();
    // Reads one line from the terminal and echoes it back transformed.
    let mut b = Bundle::sh("read line; echo got:$line | tr a-z A-Z");
    b.config["process"]["terminal"] = json!(true);
    let id = unique_id();
    rt.run_with(&b, &id, &["--detach", "--console-socket", console.path_str()])
        .ok("run -d --console-socket");
    let master = console.recv_master();
    let input = b"hello\n";
    let n = unsafe { libc::write(master.as_raw_fd(), input.as_ptr().cast(), input.len()) };
    assert_eq!(n, input.len() as isize);
    let out = read_until_closed(&master);
    // The pty echoes the input line, then the process prints its reply.
    assert!(lines(&out).contains(&"GOT:HELLO".to_string()), "output: {out:?}");
}
