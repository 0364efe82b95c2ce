//! The monitor: a VM container's host process. It starts virtiofsd (the rootfs and the bind
//! mounts' shares, confined) and qemu (jailed, with its ports as inherited descriptors), serves
//! `mux.sock` for the VM's life (vm/mux.rs) and exits with the container's status.

use super::boot::*;
use super::client::connect;
use super::*;
use crate::{err, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Mark every descriptor from `first` to `last` close-on-exec (between fork and exec: whatever
/// the caller of Berth leaked into it, e.g. a make jobserver's pipe, does not reach qemu or
/// virtiofsd; Rust's own exec-error pipe keeps working until the exec).
pub(super) fn cloexec_range(first: u32, last: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with integer arguments.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, CLOSE_RANGE_CLOEXEC) };
}

/// Close what the monitor inherited without close-on-exec (Berth opens everything with it):
/// nothing but the standard descriptors is meant for a VM container (`--preserve-fds` is refused).
pub(super) fn close_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        // SAFETY: fcntl/close on descriptor numbers of this process; a closed one gives EBADF.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFD);
            if fl >= 0 && fl & libc::FD_CLOEXEC == 0 {
                libc::close(fd);
            }
        }
    }
}

pub(super) fn clear_cloexec_to(fd: RawFd, target: RawFd) -> std::io::Result<()> {
    // SAFETY: dup2/fcntl on descriptors we own, between fork and exec.
    unsafe {
        if fd < 0 {
        } else if fd == target {
            let fl = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
        } else if libc::dup2(fd, target) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // A process group of its own: a terminal the monitor controls signals the monitor only.
        libc::setpgid(0, 0);
    }
    Ok(())
}

/// The monitor: the container's host process. Starts virtiofsd and qemu as its children (they die
/// with it), waits for qemu, and exits with the container's status from the exit port.
pub(super) fn monitor(
    plan: &Plan,
    dir: &Path,
    rootfs: &Path,
    fs: Option<&UnixListener>,
    mux: Mon,
    net: &net::Attached,
) -> i32 {
    // SAFETY: a new session, so terminal signals meant for `berth run` do not reach qemu; not
    // dumpable: no core file or /proc access to what it holds (every guest-facing descriptor);
    // SIGPIPE ignored: Berth's stdout whose reader went away is an EPIPE for the port relay,
    // which then drops what comes (as qemu did when it wrote there itself), not the VM's end.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    close_inherited();
    // The monitor, and so qemu, live in the container's network namespace (vm/net.rs): qemu
    // joins nothing else of the host's network.
    if let Some(ns) = &net.netns {
        if let Err(e) = net::enter(ns) {
            eprintln!("berth: VM container: enter the container's network namespace: {e}");
            return 255;
        }
    }
    if let Some(t) = &mux.tty {
        // The container's terminal: resizes come as SIGWINCH, a closed master as SIGHUP.
        relay::control_terminal(t.as_raw_fd());
    }
    // The state directory as a descriptor, for what the monitor writes there after the boot (the
    // console log, the exit status): a pod's parked VM (vm/pod.rs) has its directory renamed
    // under the monitor, and a descriptor follows it.
    let live_dir = match crate::linux::fs::open_dir(dir) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("berth: VM container: {e}");
            return 255;
        }
    };
    let live = PathBuf::from(format!("/proc/self/fd/{}", live_dir.as_raw_fd()));
    let mut fsd = Vec::new();
    let bin = plan.virtiofsd.as_deref().unwrap_or(Path::new("virtiofsd"));
    if let Some(l) = fs {
        match spawn_virtiofsd(bin, l, rootfs, None) {
            Ok(ch) => fsd.push(ch),
            Err(e) => {
                eprintln!("berth: VM container: start {}: {e}", bin.display());
                return 255;
            }
        }
    }
    if let Some((l, staging, stage)) = &mux.binds {
        match spawn_virtiofsd(bin, l, staging, Some(stage.clone())) {
            Ok(ch) => fsd.push(ch),
            Err(e) => {
                eprintln!("berth: VM container: bind mounts: start {}: {e}", bin.display());
                for mut f in fsd {
                    let _ = f.kill();
                    let _ = f.wait();
                }
                return 255;
            }
        }
    }
    if let Some(l) = &mux.pod {
        match spawn_virtiofsd(bin, l, &dir.join(pod::SHARE), None) {
            Ok(ch) => fsd.push(ch),
            Err(e) => {
                eprintln!("berth: VM container: pod share: start {}: {e}", bin.display());
                for mut f in fsd {
                    let _ = f.kill();
                    let _ = f.wait();
                }
                return 255;
            }
        }
    }
    let stop_fsd = |fsd: Vec<std::process::Child>| {
        for mut f in fsd {
            let _ = f.kill();
            let _ = f.wait();
        }
    };
    let (ports, ends) = match ports::Ports::new(&live, fd_usable(1), fd_usable(2)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berth: VM container: socketpair: {e}");
            stop_fsd(fsd);
            return 255;
        }
    };
    // qemu's connections to the virtiofsds, made here: qemu gets descriptors, not the sockets'
    // paths, and nobody else can connect once the names are gone.
    let mut fs_conns = Vec::new();
    for (name, wanted) in [
        (FS_SOCK, fs.is_some()),
        (BINDS_SOCK, mux.binds.is_some()),
        (POD_SOCK, mux.pod.is_some()),
    ] {
        if !wanted {
            fs_conns.push(None);
            continue;
        }
        match connect(dir, name) {
            Ok(c) => fs_conns.push(Some(OwnedFd::from(c))),
            Err(e) => {
                eprintln!("berth: VM container: {}: {e}", dir.join(name).display());
                stop_fsd(fsd);
                return 255;
            }
        }
        let _ = std::fs::remove_file(dir.join(name));
    }
    let image = plan.image.as_ref().map(|(p, _)| p.as_path());
    let jail = match confine::qemu_jail(dir, plan.boot_kernel(), &plan.initrd, image, plan.kvm) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("berth: {e}");
            stop_fsd(fsd);
            return 255;
        }
    };
    let (ctl, qemu_ctl) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berth: VM container: socketpair: {e}");
            stop_fsd(fsd);
            return 255;
        }
    };
    let mut q = plan.command(ends.stdout.is_some(), ends.stderr.is_some());
    // (target, source) for qemu's descriptors; the sources moved above every target first.
    let mut wanted: Vec<(RawFd, Option<OwnedFd>)> = vec![
        (QEMU_CTL_FD, Some(OwnedFd::from(qemu_ctl))),
        (QEMU_CONSOLE_FD, Some(ends.console)),
        (QEMU_STDOUT_FD, ends.stdout),
        (QEMU_STDERR_FD, ends.stderr),
        (QEMU_EXIT_FD, Some(ends.exit)),
        (QEMU_FS_FD, fs_conns[0].take()),
        (QEMU_BINDS_FD, fs_conns[1].take()),
        (QEMU_POD_FD, fs_conns[2].take()),
    ];
    for (i, tap) in net.taps.iter().enumerate() {
        match tap.try_clone() {
            Ok(t) => wanted.push((QEMU_NET_FD + i as RawFd, Some(t))),
            Err(e) => {
                eprintln!("berth: VM container: dup: {e}");
                stop_fsd(fsd);
                return 255;
            }
        }
    }
    let last_fd = QEMU_NET_FD + net.taps.len() as RawFd;
    let mut moved: Vec<(RawFd, OwnedFd)> = Vec::new();
    for (target, src) in wanted {
        let Some(src) = src else { continue };
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor, owned below.
        let high = unsafe { libc::fcntl(src.as_raw_fd(), libc::F_DUPFD_CLOEXEC, QEMU_FD_FLOOR) };
        if high < 0 {
            eprintln!("berth: VM container: dup: {}", std::io::Error::last_os_error());
            stop_fsd(fsd);
            return 255;
        }
        // SAFETY: a fresh descriptor.
        moved.push((target, unsafe { OwnedFd::from_raw_fd(high) }));
    }
    let plan_fds: Vec<(RawFd, RawFd)> = moved.iter().map(|(t, f)| (*t, f.as_raw_fd())).collect();
    q.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    // SAFETY: async-signal-safe calls between fork and exec.
    unsafe {
        q.pre_exec(move || {
            for &(target, src) in &plan_fds {
                clear_cloexec_to(src, target)?;
            }
            cloexec_range(3, (QEMU_CTL_FD - 1) as u32);
            cloexec_range(last_fd as u32, u32::MAX);
            jail.enter()
        })
    };
    let _ = std::fs::write(dir.join(VM_FILE), format!("{q:?}\n"));
    crate::log::debug(&format!("VM container: {q:?}"));
    // qemu in a pid namespace of its own (its first process): an escaped qemu cannot address
    // another container's qemu (same uid, no capabilities either: ptrace would be allowed).
    // SAFETY: unshare with a flag; it changes only where this process's next child is born.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        crate::log::debug(&format!(
            "VM container: no pid namespace for qemu: {}",
            std::io::Error::last_os_error()
        ));
    }
    let spawned = q.spawn();
    drop(moved);
    let mut ports = ports;
    let code = match spawned {
        Ok(mut ch) => {
            let local = match mux.tty {
                Some(t) => relay::Local::terminal(0, t),
                None => relay::Local::pipes(0, mux.stdin.then_some(0), None, None),
            };
            mux::serve(
                &mut ch,
                &live,
                mux.first_exit.as_ref(),
                ctl,
                mux.listener,
                local,
                &mut ports,
            )
            .1
        }
        Err(e) => {
            eprintln!("berth: VM container: start {}: {e}", plan.hypervisor.display());
            None
        }
    };
    stop_fsd(fsd);
    // The interfaces get their own traffic back (the taps went with qemu).
    net.uncouple_here();
    // The status the guest wrote on the exit port (the monitor keeps the file for those who
    // look after it is gone), else the one it sent on stream 0; none (the guest crashed, or
    // qemu failed to start): 255, as for a lost process.
    let code = match ports.exit_code() {
        Some(c) => {
            let _ = std::fs::write(live.join(EXIT_FILE), format!("exit {c}\n"));
            Some(c)
        }
        None => code,
    };
    let code = code.unwrap_or(255);
    if let Some(mut s) = mux.first_exit.as_ref() {
        // The stand-in (if it did not get the status yet) exits when the host side is done: the
        // taps go now (qemu's went with it; these are the monitor's own).
        for t in &net.taps {
            // SAFETY: the monitor's descriptors of the taps, used no more: it returns to _exit,
            // which runs no destructor that could close them again.
            unsafe { libc::close(t.as_raw_fd()) };
        }
        let _ = std::io::Write::write_all(&mut s, format!("{code}\n").as_bytes());
    }
    code
}

/// virtiofsd runs as host root and writes the host's files for the guest, whose root is hostile:
/// what it must not make there (docs/SECURITY.md, "VM containers"). No device nodes and no file
/// capabilities (those capabilities dropped); the guest's `security.*` and `trusted.*` xattrs are
/// stored as `user.virtiofs.security.*`/`user.virtiofs.trusted.*` (which grant nothing on the
/// host), the host's own are hidden from it, and the guest may not name `user.virtiofs.*` itself.
pub(super) const VIRTIOFSD_MODCAPS: &str = "--modcaps=-mknod:-setfcap";
pub(super) const VIRTIOFSD_XATTRMAP: &str = "--xattrmap=\
:prefix:all:security.:user.virtiofs.:\
:prefix:all:trusted.:user.virtiofs.:\
:bad:client:user.virtiofs.::\
:bad:server::security.:\
:bad:server::trusted.:\
:ok:all:::";

/// And no set-user-ID or set-group-ID bit: a seccomp filter under virtiofsd's own refuses (EPERM)
/// every chmod and every file creation whose mode has S_ISUID or S_ISGID, so guest root cannot
/// leave a setuid-root program in the host's rootfs. (A set-group-ID directory cannot be made
/// from the guest either; one inherited from its parent still is.)
pub(super) fn virtiofsd_filter() -> Result<crate::linux::seccomp::Filter> {
    let mut rules = Vec::new();
    for bit in [libc::S_ISUID, libc::S_ISGID] {
        let mode =
            |index: u32| serde_json::json!({"index": index, "value": bit, "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ"});
        let creat = |index: u32| serde_json::json!({"index": index, "value": libc::O_CREAT, "valueTwo": libc::O_CREAT, "op": "SCMP_CMP_MASKED_EQ"});
        let rule = |names: &[&str], args: Vec<serde_json::Value>| serde_json::json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM, "args": args});
        rules.push(rule(&["chmod", "fchmod", "creat", "mknod"], vec![mode(1)]));
        rules.push(rule(&["fchmodat", "fchmodat2", "mknodat"], vec![mode(2)]));
        rules.push(rule(&["open"], vec![creat(1), mode(2)]));
        rules.push(rule(&["openat"], vec![creat(2), mode(3)]));
    }
    // openat2's mode is in a structure a filter cannot read: refused as unknown (ENOSYS), so a
    // caller falls back to openat.
    rules.push(serde_json::json!({"names": ["openat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    let spec: oci_spec::runtime::LinuxSeccomp =
        serde_json::from_value(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}))
            .map_err(|e| err!("virtiofsd's seccomp filter: {e}"))?;
    crate::linux::seccomp::compile(&spec)
}

/// Start a virtiofsd serving `shared` on the listening socket `l` (its descriptor 3), with its
/// own namespace sandbox, no_new_privs, fewer capabilities, mapped xattrs and the filter above;
/// `stage` makes the bind mounts' staging tree first, in a mount namespace of its own (binds.rs).
pub(super) fn spawn_virtiofsd(
    bin: &Path,
    l: &UnixListener,
    shared: &Path,
    stage: Option<binds::Stage>,
) -> std::io::Result<std::process::Child> {
    let fd = l.as_raw_fd();
    let filter = virtiofsd_filter().map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut c = Command::new(bin);
    c.arg("--fd=3").arg("--shared-dir").arg(shared).args([
        "--cache=auto",
        "--sandbox=namespace",
        "--log-level=error",
        "--xattr",
        // O_PATH descriptors, not file handles: virtiofsd then keeps no CAP_DAC_READ_SEARCH,
        // without which open_by_handle_at cannot reach a host file outside its shared directory.
        "--inode-file-handles=never",
        VIRTIOFSD_MODCAPS,
        VIRTIOFSD_XATTRMAP,
    ]);
    c.stdin(std::process::Stdio::null());
    // SAFETY: system calls between fork and exec (the stage and the filter are prepared
    // beforehand; the monitor is single-threaded).
    unsafe {
        c.pre_exec(move || {
            clear_cloexec_to(fd, 3)?;
            cloexec_range(4, u32::MAX);
            if let Some(s) = &stage {
                s.enter()?;
            }
            confine::no_new_privs()?;
            filter
                .load()
                .map(drop)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
    };
    c.spawn()
}

/// What the monitor serves besides qemu: host clients, and the container process's stdio.
pub(super) struct Mon {
    pub(super) listener: UnixListener,
    /// The host side of the container's terminal (its controlling terminal).
    pub(super) tty: Option<OwnedFd>,
    /// Whether the monitor's stdin (inherited from Berth) is relayed to the container's process.
    pub(super) stdin: bool,
    /// The bind mounts' virtiofsd: its socket, the staging directory it shares, what it mounts.
    pub(super) binds: Option<(UnixListener, PathBuf, binds::Stage)>,
    /// The pod share's virtiofsd socket (vm/pod.rs).
    pub(super) pod: Option<UnixListener>,
    /// A pod's first container: where its stand-in waits for its status (vm/pod.rs).
    pub(super) first_exit: Option<UnixStream>,
}
