//! The guest's one-way ports (docs/VM.md, "The protocol"): the container's stdout and stderr, the
//! exit port and the kernel console. qemu gets each as one end of a socketpair (a chardev
//! `socket,fd=N`), never a path: it opens no file of the host, and the state directory is not in
//! its root. The monitor holds the other ends and is the only writer of what they carry:
//!
//! - stdout and stderr go to the monitor's own descriptors 1 and 2, which are Berth's (the very
//!   open files `create` inherited: same offset, same append mode, so container output and the
//!   caller's never overwrite each other);
//! - the exit port: its first line is kept (`exit <code>`, at most [`EXIT_MAX`] bytes), the rest
//!   read and dropped; the monitor writes the file `exit` itself;
//! - the console goes to `console.log`, at most [`CONSOLE_MAX`] bytes on disk: when the file
//!   reaches half of it, it becomes `console.log.1` (replacing the one before) and a new one starts.
//!
//! What the monitor queues is bounded ([`QUEUE_MAX`] per port): it reads a port only when there is
//! room, so a guest that writes faster than the reader takes is held back by qemu (its port's
//! writes block), never buffered on the host.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The console log's size on disk, both generations together.
pub const CONSOLE_MAX: u64 = 1 << 20;
/// What is kept of the exit port: its first line, at most this long.
pub const EXIT_MAX: usize = 64;
/// Bytes read from a port and not yet written, at most.
pub const QUEUE_MAX: usize = 64 * 1024;
/// A write that poll(POLLOUT) allows never blocks when it is at most this long (PIPE_BUF).
const CHUNK: usize = 4096;

pub const CONSOLE_LOG: &str = "console.log";
pub const CONSOLE_OLD: &str = "console.log.1";

/// Where one port's bytes go.
enum Sink {
    /// A descriptor of the monitor's (1 or 2: Berth's stdout, stderr), shared, left blocking:
    /// written in chunks of at most PIPE_BUF once poll says there is room.
    Fd(RawFd),
    /// The console log in the state directory, rotated at half of CONSOLE_MAX.
    Console {
        dir: PathBuf,
        file: Option<std::fs::File>,
        size: u64,
    },
    /// The exit port: the first line, bounded.
    Exit(Vec<u8>),
    /// Nowhere (the reader went away): the port is still read, so the guest never stalls on it.
    Discard,
}

struct Port {
    sock: Option<UnixStream>,
    queue: Vec<u8>,
    sink: Sink,
}

/// The monitor's ends of the one-way ports.
pub struct Ports {
    ports: Vec<Port>,
}

/// qemu's ends, to be handed to it as descriptors (None: the port is `null` in qemu).
pub struct QemuEnds {
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub exit: OwnedFd,
    pub console: OwnedFd,
}

/// Where a port's descriptors are in a pollfd array.
#[derive(Default)]
pub struct Slots(Vec<(usize, usize, i16)>);

fn pair() -> std::io::Result<(UnixStream, OwnedFd)> {
    let (mine, theirs) = UnixStream::pair()?;
    mine.set_nonblocking(true)?;
    Ok((mine, theirs.into()))
}

/// Open (create) the console log for appending, without following a link.
fn open_log(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()
}

impl Ports {
    /// The socketpairs: `stdout`/`stderr` say whether the monitor's descriptor 1/2 is worth
    /// relaying to.
    pub fn new(dir: &Path, stdout: bool, stderr: bool) -> std::io::Result<(Ports, QemuEnds)> {
        let mut ports = Vec::new();
        let std_end = |fd: RawFd, wanted: bool, ports: &mut Vec<Port>| -> std::io::Result<Option<OwnedFd>> {
            if !wanted {
                return Ok(None);
            }
            let (mine, theirs) = pair()?;
            ports.push(Port {
                sock: Some(mine),
                queue: Vec::new(),
                sink: Sink::Fd(fd),
            });
            Ok(Some(theirs))
        };
        let stdout = std_end(1, stdout, &mut ports)?;
        let stderr = std_end(2, stderr, &mut ports)?;
        let (mine, exit) = pair()?;
        ports.push(Port {
            sock: Some(mine),
            queue: Vec::new(),
            sink: Sink::Exit(Vec::new()),
        });
        let (mine, console) = pair()?;
        let path = dir.join(CONSOLE_LOG);
        let file = open_log(&path);
        let size = file.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
        ports.push(Port {
            sock: Some(mine),
            queue: Vec::new(),
            sink: Sink::Console {
                dir: dir.to_path_buf(),
                file,
                size,
            },
        });
        Ok((
            Ports { ports },
            QemuEnds {
                stdout,
                stderr,
                exit,
                console,
            },
        ))
    }

    /// Add the ports' descriptors to a poll set: a socket when its queue has room, a descriptor
    /// sink when something is queued for it.
    pub fn register(&self, fds: &mut Vec<libc::pollfd>) -> Slots {
        let mut s = Slots::default();
        for (i, p) in self.ports.iter().enumerate() {
            if let Some(sock) = p.sock.as_ref().filter(|_| p.queue.len() < QUEUE_MAX) {
                s.0.push((i, fds.len(), libc::POLLIN));
                fds.push(libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            if let Sink::Fd(fd) = p.sink {
                if !p.queue.is_empty() {
                    s.0.push((i, fds.len(), libc::POLLOUT));
                    fds.push(libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    });
                }
            }
        }
        s
    }

    /// Act on what poll found.
    pub fn handle(&mut self, fds: &[libc::pollfd], s: &Slots) {
        for &(i, slot, ev) in &s.0 {
            if fds[slot].revents == 0 {
                continue;
            }
            let p = &mut self.ports[i];
            if ev == libc::POLLIN {
                p.read_once();
            } else {
                p.write_once();
            }
        }
    }

    /// qemu is gone: read what is left in the sockets (their peer is closed, so this ends) and
    /// write it out, giving up on a sink that makes no progress for `timeout`.
    pub fn drain(&mut self, timeout: Duration) {
        for p in &mut self.ports {
            loop {
                let got = p.read_once();
                if p.queue.is_empty() {
                    if got {
                        continue;
                    }
                    break;
                }
                let Sink::Fd(fd) = p.sink else { break };
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) } <= 0 || !p.write_once() {
                    p.queue.clear();
                    p.sink = Sink::Discard;
                }
            }
        }
    }

    /// The status the guest wrote on the exit port (`exit <code>`), if it did.
    pub fn exit_code(&self) -> Option<i32> {
        self.ports.iter().find_map(|p| match &p.sink {
            Sink::Exit(line) => parse_exit(line),
            _ => None,
        })
    }
}

/// `exit <code>` -> code (0-255).
pub fn parse_exit(line: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(line).ok()?;
    let code: i32 = text.lines().next()?.strip_prefix("exit ")?.trim().parse().ok()?;
    (0..=255).contains(&code).then_some(code)
}

impl Port {
    /// One read from the socket into the queue (or straight to a file sink); false when nothing
    /// was read (none now, or the end: then the socket is closed).
    fn read_once(&mut self) -> bool {
        let Some(sock) = &self.sock else { return false };
        let mut buf = [0u8; 16 * 1024];
        let room = QUEUE_MAX.saturating_sub(self.queue.len()).min(buf.len());
        if room == 0 {
            return false;
        }
        let n = match crate::linux::tty::read_some(sock.as_raw_fd(), &mut buf[..room]) {
            None => return false,
            Some(0) => {
                self.sock = None;
                return false;
            }
            Some(n) => n,
        };
        let data = &buf[..n];
        match &mut self.sink {
            Sink::Fd(_) => self.queue.extend_from_slice(data),
            Sink::Discard => {}
            Sink::Exit(line) => {
                let keep = EXIT_MAX.saturating_sub(line.len()).min(data.len());
                line.extend_from_slice(&data[..keep]);
            }
            Sink::Console { dir, file, size } => {
                use std::io::Write;
                if *size + n as u64 > CONSOLE_MAX / 2 {
                    // The current generation is full: it becomes the old one.
                    let _ = std::fs::rename(dir.join(CONSOLE_LOG), dir.join(CONSOLE_OLD));
                    *file = open_log(&dir.join(CONSOLE_LOG));
                    *size = 0;
                }
                if let Some(f) = file {
                    let keep = (CONSOLE_MAX / 2) as usize;
                    let data = &data[data.len().saturating_sub(keep)..];
                    if f.write_all(data).is_ok() {
                        *size += data.len() as u64;
                    }
                }
            }
        }
        true
    }

    /// One chunk of the queue to the descriptor sink (poll said it has room); false on an error
    /// (the reader is gone: what comes is dropped from now on).
    fn write_once(&mut self) -> bool {
        let Sink::Fd(fd) = self.sink else { return true };
        let n = self.queue.len().min(CHUNK);
        // SAFETY: the queue is valid for n bytes.
        let w = unsafe { libc::write(fd, self.queue.as_ptr().cast(), n) };
        if w < 0 {
            return match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => true,
                _ => {
                    self.queue.clear();
                    self.sink = Sink::Discard;
                    false
                }
            };
        }
        self.queue.drain(..w as usize);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn exit_line_parsed_and_bounded() {
        assert_eq!(parse_exit(b"exit 7\n"), Some(7));
        assert_eq!(parse_exit(b"exit 137\nexit 3\n"), Some(137));
        assert_eq!(parse_exit(b"exit 99999\n"), None);
        assert_eq!(parse_exit(b"garbage"), None);
        let dir = std::env::temp_dir().join(format!("berth-ports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut ports, ends) = Ports::new(&dir, false, false).unwrap();
        let mut exit = UnixStream::from(ends.exit);
        let mut console = UnixStream::from(ends.console);
        exit.write_all(b"exit 3\n").unwrap();
        exit.write_all(&vec![b'x'; 100_000]).unwrap_or(());
        drop(exit);
        // The console: 3 MiB written, at most CONSOLE_MAX kept on disk, the newest bytes last.
        let chunk = vec![b'c'; 64 * 1024];
        for i in 0..48 {
            console.write_all(&chunk).unwrap();
            if i == 47 {
                console.write_all(b"the end\n").unwrap();
            }
            ports.drain(Duration::from_millis(100));
        }
        drop(console);
        ports.drain(Duration::from_millis(100));
        assert_eq!(ports.exit_code(), Some(3));
        let size = |n: &str| std::fs::metadata(dir.join(n)).map_or(0, |m| m.len());
        assert!(size(CONSOLE_LOG) + size(CONSOLE_OLD) <= CONSOLE_MAX);
        assert!(size(CONSOLE_OLD) > 0, "rotated");
        assert!(std::fs::read_to_string(dir.join(CONSOLE_LOG))
            .unwrap()
            .ends_with("the end\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
