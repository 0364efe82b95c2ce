//! `berth exec` into a VM container. The process is built on the host exactly as for a Linux
//! container (`--process`, or the container's process with the flags applied) and sent to the
//! guest agent, which runs it with libberth's own exec inside the VM. On the host a small helper
//! process stands for it: forked by `berth exec`, it relays the caller's stdin, stdout and stderr
//! (or a terminal) to and from the guest process over a stream of the monitor, passes signals on,
//! and exits with the guest process's status (128+n for a signal). So `--pid-file` names a host
//! process that lives exactly as long as the guest's, and an engine that waits for it (conmon, a
//! subreaper) gets the status; without `--detach`, Berth waits for it as it waits for a Linux
//! exec'd process, forwarding signals or relaying its own terminal (linux/tty.rs).

use super::proto::{kind, ExecMsg, Frame, FrameBuf};
use super::relay::{self, Local};
use crate::error::Context;
use crate::linux::exec::ExecOpts;
use crate::signal::SignalGuard;
use crate::state::{Locked, Status};
use crate::{bail, err, Error, Result};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub fn exec(locked: &Locked, o: &ExecOpts) -> Result<i32> {
    let id = &locked.id;
    let rec = locked
        .load()?
        .ok_or_else(|| err!("container {id:?} is still being created"))?;
    if locked.status(Some(&rec)) == Status::Stopped {
        bail!("cannot exec in container {id:?}: it is stopped");
    }
    if o.preserve_fds > 0 {
        bail!("--preserve-fds: not supported in VM containers");
    }
    if !o.cgroup.is_empty() {
        bail!("--cgroup: not supported in VM containers (the guest's cgroups are its own)");
    }
    let process = crate::linux::exec::build_process(&rec, o)?;
    let terminal = process.terminal() == Some(true);
    if o.detach && terminal && o.console_socket.is_none() {
        bail!("--tty: a detached exec needs --console-socket to hand the terminal to");
    }
    if o.console_socket.is_some() && !terminal {
        bail!("--console-socket: needs a terminal (--tty or process.terminal)");
    }
    let console = match &o.console_socket {
        Some(p) => Some(UnixStream::connect(p).with_ctx(|| format!("--console-socket {}", p.display()))?),
        None => None,
    };
    let (master, peer) = if terminal {
        let (m, p) = relay::host_pty()?;
        if console.is_none() {
            super::copy_win_size(m.as_raw_fd());
        }
        (Some(m), Some(p))
    } else {
        (None, None)
    };
    let mut pv = serde_json::to_value(&process).map_err(|e| err!("process: {e}"))?;
    if pv.get("consoleSize").is_none() {
        if let Some((rows, cols)) = peer.as_ref().and_then(|p| relay::win_size(p.as_raw_fd())) {
            pv["consoleSize"] = serde_json::json!({"height": rows, "width": cols});
        }
    }
    let (mux, member) = super::pod::route(&locked.dir);
    let msg = ExecMsg {
        process: pv,
        stdin: !terminal && relay::stdin_worth_reading(0, !o.detach),
        id: member,
    };
    let sigs = if o.detach { None } else { Some(SignalGuard::block()) };
    let mut s = super::open_stream(&mux)?;
    let line = format!(
        "exec {}",
        serde_json::to_string(&msg).map_err(|e| err!("process: {e}"))?
    );
    super::send_request(&mut s, &line)?;
    let mut buf = FrameBuf::default();
    super::read_reply(&mut s, &mut buf, Duration::from_secs(60), || None)
        .map_err(|e| e.context(format!("exec in container {id:?}")))?;
    if let (Some(m), Some(c)) = (&master, &console) {
        let name = format!("/dev/pts/{}", crate::linux::console::pty_number(m)?);
        crate::linux::console::send_fd(c.as_raw_fd(), m.as_raw_fd(), &name)?;
    }
    drop(console);
    // The helper is accounted to the container's host cgroup (so `delete` ends it with the VM,
    // and what it costs is the container's), and waits there before it relays anything.
    let gate = super::confine::Gate::new()?;
    // SAFETY: Berth is single-threaded; the child only relays and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(master);
        let code = helper(s, buf, peer, msg.stdin, gate);
        // SAFETY: leave without the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    drop(peer);
    drop(s);
    if let Err(e) = gate.release(&crate::cgroups::Cgroup::open(&rec.cgroup_path), pid) {
        // SAFETY: our child, which has not started relaying.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(e.context(format!("exec in container {id:?}: the container's cgroup")));
    }
    if let Some(p) = &o.pid_file {
        crate::pid_file::write_pid_file(p, pid)?;
    }
    if o.detach {
        return Ok(0);
    }
    let sigs = sigs.expect("signals blocked");
    Ok(match master {
        Some(m) if o.console_socket.is_none() => crate::linux::tty::relay(m, pid, &sigs.set),
        _ => sigs.wait_forwarding(pid),
    })
}

/// Close every descriptor but the standard ones and `keep`.
fn close_all_but(keep: &[i32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let open: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: a descriptor this process does not use (the directory's own is closed
            // already: EBADF, harmless).
            unsafe { libc::close(fd) };
        }
    }
}

/// The host process standing for the guest's: relay until the guest reports the exit status.
/// It holds only its stream, its stdio (or terminal) and its signalfd, is not dumpable, and
/// queues at most a window of the guest's output: a guest that sends more is cut off (255).
/// It gives up what it does not need before it waits at `gate` (until the creator has put it in
/// the container's host cgroup and, after that, written its pid file): so by the time its pid is
/// known it holds nothing else.
pub(super) fn helper(
    mut s: UnixStream,
    mut rx: FrameBuf,
    peer: Option<OwnedFd>,
    stdin: bool,
    gate: super::confine::Gate,
) -> i32 {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let [gate_r, gate_w] = gate.fds();
    close_all_but(&[
        s.as_raw_fd(),
        peer.as_ref().map_or(-1, |p| p.as_raw_fd()),
        gate_r,
        gate_w,
    ]);
    if !gate.wait() {
        return 255;
    }
    let mut local = match peer {
        Some(p) => {
            relay::control_terminal(p.as_raw_fd());
            Local::terminal(0, p)
        }
        None => Local::pipes(0, stdin.then_some(0), Some(1), Some(2)),
    };
    let mut sigs = relay::RELAYED.to_vec();
    sigs.push(libc::SIGWINCH);
    let Ok(sfd) = relay::signalfd(&sigs) else { return 255 };
    let _ = s.set_read_timeout(None);
    let send = |f: Frame, s: &mut UnixStream| {
        let _ = s.write_all(&f.encode());
    };
    if let Some(f) = local.resize() {
        send(f, &mut s);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = true;
    loop {
        // What came with the reply, then what comes.
        let mut out = Vec::new();
        loop {
            let f = match rx.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("berth: exec: {e}");
                    return 255;
                }
            };
            match local.deliver(f, &mut |a: Frame| out.push(a)) {
                Ok(None) => {}
                Ok(Some(code)) => {
                    local.flush(Duration::from_secs(5));
                    return code;
                }
                Err(e) => {
                    // The guest ignored the window: drop the stream rather than queue it.
                    eprintln!("berth: exec: the guest broke the protocol ({e})");
                    return 255;
                }
            }
        }
        for f in out {
            send(f, &mut s);
        }
        if !open {
            // The VM went away without a status (the container ended, or the VM died).
            local.flush(Duration::from_secs(1));
            return 255;
        }
        let mut fds = vec![
            libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let slots = local.register(&mut fds);
        // SAFETY: fds is a valid array of pollfd.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            for sig in relay::take_signals(sfd.as_raw_fd()) {
                let f = if sig == libc::SIGWINCH {
                    local.resize()
                } else {
                    Some(Frame::new(0, kind::SIGNAL, sig.to_string()))
                };
                if let Some(f) = f {
                    send(f, &mut s);
                }
            }
        }
        if fds[0].revents != 0 {
            match s.read(&mut buf) {
                Ok(0) => open = false,
                Ok(n) => rx.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => open = false,
            }
        }
        let mut out = Vec::new();
        local.handle(&fds, slots, &mut |f: Frame| out.push(f));
        for f in out {
            send(f, &mut s);
        }
    }
}
