//! The monitor's multiplexer. qemu's socket chardev serves one client, so the monitor owns the
//! guest's control port for the VM's whole life (a socketpair handed to qemu) and lets any number
//! of host clients (create, start, kill, exec) talk to the guest through its own unix socket
//! `mux.sock` in the state directory. Each client connection is a stream: the monitor stamps the
//! client's frames with the stream's id on the way in and routes the guest's frames back by id.
//! Stream 0 is the container's own process, whose stdin (or terminal) the monitor relays itself.
//! One poll loop, no threads; the monitor never blocks on a peer: it buffers, and the per-stream
//! windows (proto::WINDOW, acknowledged end to end) bound what it buffers — enforced here, not
//! trusted: a guest that sends a frame over the limit or more than a window a client has not
//! taken is cut off (qemu is killed, the container ends with 255; docs/VM.md, "The protocol"),
//! and a stream whose client queue overflows is closed. The one-way ports (stdout, stderr, exit,
//! console) are served in the same loop (vm/ports.rs).

use super::ports::Ports;
use super::proto::{kind, Frame, FrameBuf, WINDOW};
use super::relay::{self, Local};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::Duration;

struct Client {
    sock: UnixStream,
    rx: FrameBuf,
    tx: Vec<u8>,
}

/// What may wait for a client: a window of output and its few control frames. More means the
/// guest ignored the window (the client acknowledges only what it wrote out).
const CLIENT_TX_MAX: usize = WINDOW + 64 * 1024;
/// What may wait for the guest before clients are no longer read (a stopped guest must not make
/// the monitor buffer what host clients keep sending).
const GUEST_TX_MAX: usize = 4 << 20;

/// Write what the socket takes now; false when the peer is gone.
fn flush_nb(sock: &mut UnixStream, tx: &mut Vec<u8>) -> bool {
    while !tx.is_empty() {
        match sock.write(tx) {
            Ok(0) => return false,
            Ok(n) => {
                tx.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

fn pfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// Serve until qemu (`child`) exits; returns its status and the container's exit code if the
/// guest reported it on stream 0. `local` is stream 0's host side.
pub fn serve(
    child: &mut Child,
    dir: &Path,
    first_exit: Option<&UnixStream>,
    mut guest: UnixStream,
    listener: UnixListener,
    mut local: Local,
    ports: &mut Ports,
) -> (Option<ExitStatus>, Option<i32>) {
    let mut sigs = relay::RELAYED.to_vec();
    sigs.push(libc::SIGWINCH);
    let sfd = relay::signalfd(&sigs).ok();
    let _ = guest.set_nonblocking(true);
    let _ = listener.set_nonblocking(true);
    // SAFETY: pidfd_open on our child's pid; the descriptor is owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as i32, 0) } as RawFd;
    // SAFETY: a fresh descriptor (or -1, then qemu is looked at every 100 ms).
    let _pidfd = (pidfd >= 0).then(|| unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd) });
    let mut gtx: Vec<u8> = Vec::new();
    let mut grx = FrameBuf::default();
    let mut guest_open = true;
    let mut clients: BTreeMap<u32, Client> = BTreeMap::new();
    let mut next_id: u32 = 1;
    let mut code = None;
    // When the container's process ended (a pod's first: its stand-in is told its status when
    // the VM ends, or after FIRST_EXIT_GRACE if the VM stays for later containers).
    let mut code_at: Option<std::time::Instant> = None;
    if let Some(f) = local.resize() {
        f.encode_into(&mut gtx);
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![
            pfd(pidfd, libc::POLLIN),
            pfd(sfd.as_ref().map_or(-1, |s| s.as_raw_fd()), libc::POLLIN),
            pfd(listener.as_raw_fd(), libc::POLLIN),
            pfd(
                if guest_open { guest.as_raw_fd() } else { -1 },
                libc::POLLIN | if gtx.is_empty() { 0 } else { libc::POLLOUT },
            ),
        ];
        let slots = local.register(&mut fds);
        let port_slots = ports.register(&mut fds);
        let first_client = fds.len();
        let ids: Vec<u32> = clients.keys().copied().collect();
        let read_clients = gtx.len() < GUEST_TX_MAX;
        for id in &ids {
            let c = &clients[id];
            fds.push(pfd(
                c.sock.as_raw_fd(),
                if read_clients { libc::POLLIN } else { 0 } | if c.tx.is_empty() { 0 } else { libc::POLLOUT },
            ));
        }
        let timeout = if pidfd >= 0 { 500 } else { 100 };
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue;
        }
        // Signals for the container's process: resize its terminal, or pass them on.
        if fds[1].revents != 0 {
            for s in relay::take_signals(fds[1].fd) {
                let f = if s == libc::SIGWINCH {
                    local.resize()
                } else {
                    Some(Frame::new(0, kind::SIGNAL, s.to_string()))
                };
                if let Some(f) = f {
                    f.encode_into(&mut gtx);
                }
            }
        }
        if fds[2].revents != 0 {
            while let Ok((sock, _)) = listener.accept() {
                let _ = sock.set_nonblocking(true);
                clients.insert(
                    next_id,
                    Client {
                        sock,
                        rx: FrameBuf::default(),
                        tx: Vec::new(),
                    },
                );
                next_id = next_id.wrapping_add(1).max(1);
            }
        }
        // From the guest: stream 0 to the local side, the others to their clients.
        if guest_open && fds[3].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match guest.read(&mut buf) {
                Ok(0) => guest_open = false,
                Ok(k) => grx.push(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => guest_open = false,
            }
            let had_code = code.is_some();
            if let Err(why) = route_from_guest(&mut grx, &mut local, &mut clients, &mut gtx, &mut code) {
                cut_off(child, &why);
                guest_open = false;
            }
            if !had_code && code.is_some() {
                code_at = Some(std::time::Instant::now());
            }
        }
        ports.handle(&fds, &port_slots);
        if guest_open && !gtx.is_empty() && fds[3].revents & libc::POLLOUT != 0 && !flush_nb(&mut guest, &mut gtx) {
            guest_open = false;
        }
        local.handle(&fds, slots, &mut |f: Frame| f.encode_into(&mut gtx));
        for (i, id) in ids.iter().enumerate() {
            let re = fds[first_client + i].revents;
            if re == 0 {
                continue;
            }
            let c = clients.get_mut(id).expect("client");
            let mut gone = false;
            if re & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match c.sock.read(&mut buf) {
                    Ok(0) => gone = true,
                    Ok(k) => c.rx.push(&buf[..k]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => gone = true,
                }
                loop {
                    match c.rx.next_frame() {
                        Ok(Some(mut f)) => {
                            f.stream = *id;
                            f.encode_into(&mut gtx);
                        }
                        Ok(None) => break,
                        Err(_) => {
                            gone = true;
                            break;
                        }
                    }
                }
            }
            if !gone && re & libc::POLLOUT != 0 {
                gone = !flush_nb(&mut c.sock, &mut c.tx);
            }
            if gone {
                clients.remove(id);
                Frame::new(*id, kind::CLOSE, Vec::new()).encode_into(&mut gtx);
            }
        }
        // qemu is gone (the guest powered off, or it died): what it passed on is in the socket.
        let exited = (pidfd < 0 || fds[0].revents != 0) && matches!(child.try_wait(), Ok(Some(_)));
        if exited {
            // What is left in the socket is bounded (qemu is gone); a broken frame ends it.
            while guest_open {
                match guest.read(&mut buf) {
                    Ok(k) if k > 0 => grx.push(&buf[..k]),
                    _ => guest_open = false,
                }
                if route_from_guest(&mut grx, &mut local, &mut clients, &mut gtx, &mut code).is_err() {
                    guest_open = false;
                }
            }
            ports.drain(Duration::from_secs(5));
            local.flush(Duration::from_secs(1));
            for c in clients.values_mut() {
                let _ = c.sock.set_nonblocking(false);
                let _ = c.sock.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = c.sock.write_all(&c.tx);
            }
            return (child.try_wait().ok().flatten(), code);
        }
        if let (Some(t), Some(mut s), Some(c)) = (code_at, first_exit, code) {
            if t.elapsed() > FIRST_EXIT_GRACE {
                // The VM stays (later containers of the pod): the first container's stand-in
                // exits with its status now (vm/pod.rs).
                let _ = s.write_all(format!("{c}\n").as_bytes());
                code_at = None;
            }
        }
        // A state directory removed under us (its creator killed mid-create, or the directory
        // deleted by hand): nobody can reach this VM any more, so end it. (`dir` names it through
        // the monitor's descriptor, which follows a rename: a removed directory has no links.)
        if n == 0 && std::fs::metadata(dir).map_or(true, |m| std::os::unix::fs::MetadataExt::nlink(&m) == 0) {
            let _ = child.kill();
            return (child.wait().ok(), code);
        }
    }
}

/// How long after a pod's first container's process ended the VM may take to power off (the
/// agent waits ≤ 2 s for the host's BYE) before the monitor takes it that the VM stays for later
/// containers and lets the first's stand-in exit; otherwise the stand-in exits when the monitor
/// has finished (its taps uncoupled), so `stopped` means the host side is done, as for any VM
/// container.
const FIRST_EXIT_GRACE: Duration = Duration::from_secs(5);

/// The guest broke the protocol: stop it (the container ends; its status is 255).
fn cut_off(child: &mut Child, why: &str) {
    eprintln!("berth: VM container: the guest broke the control protocol ({why}); stopping it");
    let _ = child.kill();
}

/// Pass the guest's whole frames on; Err when the guest broke the protocol (a frame over the
/// limit, output beyond the window on stream 0).
fn route_from_guest(
    grx: &mut FrameBuf,
    local: &mut Local,
    clients: &mut BTreeMap<u32, Client>,
    gtx: &mut Vec<u8>,
    code: &mut Option<i32>,
) -> Result<(), String> {
    while let Some(f) = grx.next_frame()? {
        if f.stream == 0 {
            if let Some(c) = local.deliver(f, &mut |a: Frame| a.encode_into(gtx))? {
                // The container's process ended: its output out first, then let the guest go.
                local.flush(Duration::from_secs(1));
                *code = Some(c);
                Frame::new(0, kind::BYE, Vec::new()).encode_into(gtx);
            }
        } else if let Some(c) = clients.get_mut(&f.stream) {
            f.encode_into(&mut c.tx);
            if !flush_nb(&mut c.sock, &mut c.tx) {
                c.tx.clear();
            }
            if c.tx.len() > CLIENT_TX_MAX {
                // More than a window the client has not taken: the guest ignored its window.
                let id = f.stream;
                clients.remove(&id);
                Frame::new(id, kind::CLOSE, Vec::new()).encode_into(gtx);
            }
        }
    }
    Ok(())
}
