//! Starting a process inside a running container (the mechanism of `berth exec`, and of the VM guest
//! agent's exec). Berth takes a pidfd of the container's init (checked against its recorded start
//! time, so a reused pid cannot be joined), then:
//!
//! * as root, joins the init's pid and time namespaces itself with `setns(pidfd, ...)` (they take
//!   effect for children only), clones one child, and restores its own; the child joins every other
//!   namespace that differs from Berth's (user first: one `setns(pidfd, flags)` does them all);
//! * without that right (rootless), the child joins all of them, user first, and forks the process
//!   into the pid namespace, reporting its pid (`P`) before leaving.
//!
//! Meanwhile Berth places the child in the container's cgroup (or the sub-cgroup of `--cgroup`) and
//! says `G`. The child enters the container's root when its init is chrooted (`--no-pivot`), sets up
//! the terminal (to `--console-socket`, or back to Berth over the channel: `M`), applies the LSM
//! labels and the shared process setup of `init::apply_process` (rlimits, cwd, bounding set,
//! user/groups, capabilities, no_new_privs, umask, descriptors) and execs. The channel closes on
//! exec; an `E` message carries a failure.

use super::exec::ExecOpts;
use super::init::{apply_process, environment};
use super::process::{clone_raw, NsRestore};
use super::sync::{self, Channel, ExecSteps};
use crate::error::Context;
use crate::state::Record;
use crate::{bail, err, Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, Process};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Namespace types in /proc/PID/ns, with their clone flags; user first.
const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("pid", libc::CLONE_NEWPID),
    ("net", libc::CLONE_NEWNET),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("time", libc::CLONE_NEWTIME),
];

/// LSM labels for the next exec, checked in the runtime before anything is made.
fn check_lsm(p: &Process) -> Result<()> {
    if p.apparmor_profile().as_ref().is_some_and(|a| !a.is_empty())
        && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").map_or(true, |s| !s.starts_with('Y'))
    {
        bail!("process.apparmorProfile (--apparmor): AppArmor is not enabled on this host");
    }
    if p.selinux_label().as_ref().is_some_and(|l| !l.is_empty()) && !Path::new("/sys/fs/selinux/enforce").exists() {
        bail!("process.selinuxLabel (--process-label): SELinux is not enabled on this host");
    }
    Ok(())
}

fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and touches no memory of ours; it returns a new
    // close-on-exec descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::sys(
            format!("open the container's init (pid {pid})"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by pidfd_open (checked not negative): open, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The namespaces of `pid` that differ from ours, as clone flags.
fn differing_namespaces(pid: i32) -> libc::c_int {
    let mut flags = 0;
    for (name, flag) in NAMESPACES {
        let Some(ours) = super::process::namespace_id(&format!("/proc/self/ns/{name}")) else {
            continue;
        };
        match super::process::namespace_id(&format!("/proc/{pid}/ns/{name}")) {
            Some(theirs) if theirs != ours => flags |= flag,
            _ => {}
        }
    }
    flags
}

fn setns_pidfd(pidfd: RawFd, flags: libc::c_int) -> std::io::Result<()> {
    if flags == 0 {
        return Ok(());
    }
    // SAFETY: setns takes integers and touches no memory of ours; it changes only this process's
    // namespaces (or this thread's: Berth is single-threaded here).
    if unsafe { libc::setns(pidfd, flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The cgroup directories the process joins: those of the container's init in every hierarchy
/// (read from /proc/PID/cgroup, so they are right whoever made them), with `--cgroup` sub-paths.
fn cgroup_targets(rec: &Record, subs: &[String]) -> Result<Vec<PathBuf>> {
    crate::cgroups::check_sub_cgroup_args(subs)?;
    let path = format!("/proc/{}/cgroup", rec.pid);
    let text = std::fs::read_to_string(&path).with_ctx(|| format!("container {:?}: {path}", rec.id))?;
    let (_, hierarchies) = crate::cgroups::hierarchies();
    let mut out = Vec::with_capacity(hierarchies.len());
    for h in hierarchies {
        let own = crate::cgroups::own_path(&h, &text);
        let mut target = h.mount.join(own.trim_start_matches('/'));
        for s in subs {
            let (ctrls, sub) = match s.split_once(':') {
                Some((c, p)) => (Some(c), p),
                None => (None, s.as_str()),
            };
            if sub.split('/').any(|c| c == "..") {
                bail!("--cgroup {s:?}: must not contain '..'");
            }
            let applies = match ctrls {
                None => true,
                Some(c) => c
                    .split(',')
                    .any(|c| h.name.split(',').any(|n| n == c) || (h.v2 && (c == "unified" || c.is_empty()))),
            };
            if applies {
                target = target.join(sub.trim_start_matches('/'));
                if !target.is_dir() {
                    bail!("--cgroup {s:?}: no such sub-cgroup {}", target.display());
                }
            }
        }
        out.push(target);
    }
    Ok(out)
}

/// Put `pid` into every target cgroup. Without root, cgroups it may not write are skipped (debug log).
fn join_cgroups(targets: &[PathBuf], pid: i32) -> Result<()> {
    let s = pid.to_string();
    for dir in targets {
        let f = dir.join("cgroup.procs");
        if let Err(e) = std::fs::write(&f, &s) {
            if crate::cgroups::not_delegated(e.raw_os_error()) {
                crate::log::debug(&format!("exec: cgroup {} skipped: {e}", f.display()));
                continue;
            }
            return Err(Error::sys(format!("add pid {pid} to {}", f.display()), e));
        }
    }
    Ok(())
}

/// What the child needs, fixed before the clone.
struct ChildPlan<'a> {
    process: &'a Process,
    pidfd: RawFd,
    /// Namespaces the child joins itself.
    join: libc::c_int,
    /// Fork again after joining (the pid/time namespaces were not joined by the runtime).
    fork: bool,
    /// The init's root, to enter when it is not the mount namespace's root (a --no-pivot container).
    root: Option<&'a OwnedFd>,
    console: Option<RawFd>,
    preserve_fds: i32,
    personality: Option<&'a oci_spec::runtime::LinuxPersonality>,
}

impl ChildPlan<'_> {
    /// What the child holds after its clone: the channel, the init's pidfd and root, the console
    /// socket (each closed as soon as it has served).
    fn keep(&self, chan: RawFd) -> [RawFd; 4] {
        [
            chan,
            self.pidfd,
            self.root.map_or(-1, |r| r.as_raw_fd()),
            self.console.unwrap_or(-1),
        ]
    }
}

/// The container's seccomp profile (kept by create in the state directory, see
/// `linux::backend`'s `SECCOMP_FILE`) and the state JSON its notify listener is sent with.
pub struct Confinement<'a> {
    pub seccomp: Option<&'a oci_spec::runtime::LinuxSeccomp>,
    /// The container's `linux.personality` (kept by create, see `PERSONALITY_FILE` there).
    pub personality: Option<&'a oci_spec::runtime::LinuxPersonality>,
    pub state_json: Vec<u8>,
}

/// A process started in a container by [`spawn`].
pub struct Joined {
    pub pid: i32,
    /// The pty master of a process with a terminal and no `--console-socket`.
    pub master: Option<OwnedFd>,
}

/// Start `process` in the container of `rec` and return at once (`berth exec` waits for it; the VM
/// guest agent waits itself). The process inherits the caller's stdio.
pub fn spawn(rec: &Record, process: &Process, o: &ExecOpts, conf: &Confinement) -> Result<Joined> {
    check_lsm(process)?;
    let targets = cgroup_targets(rec, &o.cgroup)?;
    let console = match &o.console_socket {
        Some(p) => Some(OwnedFd::from(
            std::os::unix::net::UnixStream::connect(p).with_ctx(|| format!("--console-socket {}", p.display()))?,
        )),
        None => None,
    };
    let pidfd = pidfd_open(rec.pid)?;
    if !crate::state::process_alive(rec.pid, rec.pid_start) {
        bail!("cannot exec in container {:?}: it is stopped", rec.id);
    }
    let differ = differing_namespaces(rec.pid);
    let root = nix::fcntl::open(
        format!("/proc/{}/root", rec.pid).as_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok();
    // Join pid and time (they apply to children) here, so that one clone lands in them.
    let for_children = differ & (libc::CLONE_NEWPID | libc::CLONE_NEWTIME);
    let mut restore = NsRestore(Vec::new());
    let mut fork = false;
    if for_children != 0 {
        for (name, t) in [("pid", LinuxNamespaceType::Pid), ("time", LinuxNamespaceType::Time)] {
            if for_children & super::process::ns_flag(t) != 0 {
                restore
                    .0
                    .push((t, super::process::open_ns(Path::new(&format!("/proc/self/ns/{name}")))?));
            }
        }
        match setns_pidfd(pidfd.as_raw_fd(), for_children) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                restore.0.clear();
                fork = true;
            }
            Err(e) => return Err(Error::sys("join the container's pid namespace", e)),
        }
    }
    let plan = ChildPlan {
        process,
        pidfd: pidfd.as_raw_fd(),
        join: if fork { differ } else { differ & !for_children },
        fork,
        root: root.as_ref(),
        console: console.as_ref().map(|c| c.as_raw_fd()),
        preserve_fds: o.preserve_fds,
        personality: conf.personality,
    };
    // Compiled here, once: the child only loads it.
    let filter = super::seccomp::Plan::for_profile(conf.seccomp, process)?;
    let (ours, theirs) = sync::pair()?;
    let child = clone_raw(0);
    if let Ok(0) = child {
        // Born in the container's pid namespace: hidden from its processes (no ptrace, no
        // /proc/<pid>/fd) and holding nothing but what it needs, from the first instruction.
        super::fds::hide();
        crate::log::detach();
        std::mem::forget(ours);
        std::mem::forget(restore);
        super::fds::close_from_except(3 + o.preserve_fds.max(0), &plan.keep(theirs.raw()));
        child_main(&plan, theirs, filter);
    }
    drop(restore);
    drop(theirs);
    let child = child?;
    let mut pid = child;
    // execCPUAffinity.initial holds until the process is in the container's cgroup.
    let initial = process.exec_cpu_affinity().as_ref().and_then(|a| a.initial().clone());
    let r = match initial {
        Some(list) => super::tuning::set_cpu_affinity(child, &list, "process.execCPUAffinity.initial"),
        None => Ok(()),
    }
    .and_then(|_| {
        super::tuning::log_cpu_affinity(child);
        let expect = ExecSteps {
            pid: fork,
            master: process.terminal() == Some(true) && o.console_socket.is_none(),
            listener: conf.seccomp.is_some_and(|s| s.listener_path().is_some()),
        };
        serve(&ours, &targets, child, &mut pid, conf, expect)
    });
    let master = match r {
        Ok(m) => m,
        Err(e) => {
            // SAFETY: kill(2) and waitpid(2) take integers (a null status is allowed). pid is our own
            // unreaped child: the first one, or, once it reported the process it made (our child
            // too, CLONE_PARENT, verified), that one (the first is already reaped); so it names no
            // other process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e);
        }
    };
    Ok(Joined { pid, master })
}

/// The runtime's side: place the child in the cgroup, let it go on, and follow it to its exec.
/// Each message is taken only where the protocol has it, once (see `ExecSteps`); the pid in `P` is
/// believed only for the runtime's own child.
fn serve(
    chan: &Channel,
    targets: &[PathBuf],
    child: i32,
    pid: &mut i32,
    conf: &Confinement,
    expect: ExecSteps,
) -> Result<Option<OwnedFd>> {
    join_cgroups(targets, child)?;
    // The child may already have failed and closed its end; its message tells why.
    let _ = chan.send(b'G', &[]);
    let mut master = None;
    let mut expect = expect;
    loop {
        let msg = chan.recv_msg()?;
        let Some((tag, payload, fd)) = msg else {
            if expect.pid {
                bail!("exec: the intermediate process left without reporting the pid");
            }
            return Ok(master);
        };
        expect.take(tag, fd.is_some())?;
        match tag {
            b'E' => return Err(Error::new(String::from_utf8_lossy(&payload).into_owned())),
            b'P' => {
                *pid = super::process::verified_child(&payload, "exec")?;
                // SAFETY: waitpid(2) takes integers and a null status (allowed); child is our own
                // child (the intermediate process), not reaped before.
                unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            }
            b'M' => master = fd,
            _ => {
                // N
                let fd = super::console::recv_fd(chan.raw())?;
                let s = conf
                    .seccomp
                    .ok_or_else(|| err!("exec: a seccomp listener without a profile"))?;
                super::seccomp::send_to_listener(s, *pid, &conf.state_json, &fd)?;
            }
        }
    }
}

/// In the cloned child; never returns.
fn child_main(plan: &ChildPlan, chan: Channel, mut filter: super::seccomp::Plan) -> ! {
    let r = child_run(plan, &chan, &mut filter);
    let msg = match r {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    };
    let _ = chan.send(b'E', msg.as_bytes());
    // SAFETY: _exit ends this cloned child at once; nothing of the parent's (its destructors, stdio
    // buffers) runs in it.
    unsafe { libc::_exit(1) }
}

fn child_run(plan: &ChildPlan, chan: &Channel, filter: &mut super::seccomp::Plan) -> Result<std::convert::Infallible> {
    if plan.process.terminal() != Some(true) {
        super::init::detach_from_terminal();
    }
    setns_pidfd(plan.pidfd, plan.join).ctx("join the container's namespaces")?;
    if plan.fork {
        // Wait to be in the cgroup so that the process made below is born there.
        chan.expect(b'G')?;
        // The process is made the runtime's own child (CLONE_PARENT): the runtime checks that the
        // pid reported in `P` is its child before it believes it.
        match super::process::clone_raw(libc::CLONE_PARENT) {
            Err(e) => return Err(e.context("fork into the container's pid namespace")),
            Ok(0) => {}
            Ok(grandchild) => {
                let _ = chan.send(b'P', grandchild.to_string().as_bytes());
                // SAFETY: _exit ends the intermediate process at once, running no destructors of the
                // parent's state it shares.
                unsafe { libc::_exit(0) }
            }
        }
    }
    // SAFETY: plan.pidfd is open (the parent's `pidfd`, inherited by the clone) and used no more
    // here; its OwnedFd is never dropped in this child (it execs or _exits), so no double close.
    unsafe { libc::close(plan.pidfd) };
    if let Some(root) = plan.root {
        let here = nix::sys::stat::stat("/").ok().map(|s| (s.st_dev, s.st_ino));
        let there = nix::sys::stat::fstat(root).ok().map(|s| (s.st_dev, s.st_ino));
        if here != there {
            nix::unistd::fchdir(root).ctx("enter the container's root")?;
            nix::unistd::chroot(".").ctx("enter the container's root")?;
        }
        // SAFETY: as above: the root's descriptor is open, used no more, and its OwnedFd is never
        // dropped in this child.
        unsafe { libc::close(root.as_raw_fd()) };
    }
    let p = plan.process;
    if p.terminal() == Some(true) {
        let size = p.console_size().map(|b| (b.height() as u16, b.width() as u16));
        match plan.console {
            Some(sock) => super::console::setup(size, false, p.user().uid(), |fd, name| {
                super::console::send_fd(sock, fd, name)
            })?,
            None => super::console::setup(size, false, p.user().uid(), |fd, _| chan.send_fd(b'M', &[], fd))?,
        }
    }
    if let Some(sock) = plan.console {
        // SAFETY: the console socket is open, used no more (the pty is set up), and its OwnedFd is
        // never dropped in this child.
        unsafe { libc::close(sock) };
    }
    super::tuning::set_exec_labels(p)?;
    if let Some(per) = plan.personality {
        super::tuning::set_personality(per)?;
    }
    let program = apply_process(p, environment(p), plan.preserve_fds, &[], filter, chan)?;
    if !plan.fork {
        chan.expect(b'G')?;
    }
    // In the cgroup now (G): the final affinity, which the cgroup's cpuset may narrow.
    if let Some(list) = p
        .exec_cpu_affinity()
        .as_ref()
        .and_then(|a| a.cpu_affinity_final().clone())
    {
        super::tuning::set_cpu_affinity(0, &list, "process.execCPUAffinity.final")?;
    }
    Err(program.exec(|| filter.load_at(super::seccomp::Point::BeforeExec, chan)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile process holding the child's end of the channel reports a pid that is not the
    /// runtime's child: the runtime refuses it and never takes it for the process.
    #[test]
    fn a_reported_pid_that_is_not_our_child_is_refused() {
        let (ours, theirs) = sync::pair().unwrap();
        theirs.send(b'P', b"1").unwrap();
        let mut pid = 12345;
        let conf = Confinement {
            seccomp: None,
            personality: None,
            state_json: Vec::new(),
        };
        let expect = ExecSteps {
            pid: true,
            master: false,
            listener: false,
        };
        let e = serve(&ours, &[], 12345, &mut pid, &conf, expect).unwrap_err();
        assert!(e.to_string().contains("not a child of the runtime"), "{e}");
        assert_eq!(pid, 12345);
        // Unsolicited: a P when none is expected.
        theirs.send(b'P', b"1").unwrap();
        let expect = ExecSteps { pid: false, ..expect };
        assert!(serve(&ours, &[], 12345, &mut pid, &conf, expect).is_err());
        assert_eq!(pid, 12345);
    }
}
