//! `berth exec`: a new process inside a running container, with runc's semantics.
//!
//! The process is described by `--process FILE` (an OCI `Process`) or built from the container's own
//! `process` with the command-line overrides. Berth takes a pidfd of the container's init (checked
//! against its recorded start time, so a reused pid cannot be joined), then:
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
//! exec; an `E` message carries a failure. Unless detached, Berth then waits for the process,
//! forwarding signals or relaying the terminal, and returns its exit status.

use super::init::{apply_process, environment};
use super::process::{clone_raw, NsRestore};
use super::sync::{self, Channel, ExecSteps};
use crate::container::SignalGuard;
use crate::error::Context;
use crate::state::Record;
use crate::{bail, err, Error, Result};
use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxNamespaceType, Process};
use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// The flags of `berth exec`.
#[derive(Default)]
pub struct ExecOpts {
    /// `--process FILE`: the whole process as JSON (the other process flags are then ignored).
    pub process: Option<PathBuf>,
    pub args: Vec<String>,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    /// `UID[:GID]`.
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: Option<bool>,
    pub apparmor: Option<String>,
    pub process_label: Option<String>,
    pub preserve_fds: i32,
    /// `--cgroup [CONTROLLERS:]PATH`: a sub-cgroup of the container's cgroup.
    pub cgroup: Vec<String>,
    pub ignore_paused: bool,
}

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

/// Parse `--process FILE`, naming the JSON path of a bad field, and validate it.
pub fn load_process(path: &Path) -> Result<Process> {
    let text = std::fs::read(path).with_ctx(|| format!("--process {}", path.display()))?;
    let origin = path.display().to_string();
    let mut value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| err!("{origin}: invalid JSON: {e}"))?;
    if !value.is_object() {
        bail!("{origin}: the process must be a JSON object");
    }
    crate::spec::drop_unknown_capabilities(&mut value, "/capabilities");
    // A process without `user` runs as root, as with runc.
    if let Some(obj) = value.as_object_mut() {
        obj.entry("user")
            .or_insert_with(|| serde_json::json!({ "uid": 0, "gid": 0 }));
    }
    let p: Process = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        err!("{origin}: {path}: {}", e.into_inner())
    })?;
    crate::spec::validate_process(&p, &origin)?;
    Ok(p)
}

fn parse_cap(name: &str) -> Result<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full)).map_err(|_| err!("--cap {name:?}: unknown capability"))
}

/// The environment with later entries overriding earlier ones of the same name (runc's rule),
/// each name kept at its first position.
fn merge_env(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for e in list {
        let key = e.split('=').next().unwrap_or("");
        match out.iter_mut().find(|o| o.split('=').next() == Some(key)) {
            Some(slot) => *slot = e,
            None => out.push(e),
        }
    }
    out
}

/// The process to exec: `--process FILE`, or the container's own process with the flags applied
/// the way runc applies them.
pub fn build_process(rec: &Record, o: &ExecOpts) -> Result<Process> {
    if let Some(path) = &o.process {
        let mut p = load_process(path)?;
        let env = merge_env(p.env().clone().unwrap_or_default());
        p.set_env(Some(env));
        return Ok(p);
    }
    if o.args.is_empty() {
        bail!("exec: no command given (pass ARGS after the container ID, or --process FILE)");
    }
    let mut p = match &rec.process {
        Some(p) => p.clone(),
        // A container created before the process was recorded: take it from the bundle.
        None => {
            let config = rec.bundle.join("config.json");
            let text = std::fs::read(&config).with_ctx(|| format!("container {:?}: {}", rec.id, config.display()))?;
            let spec = crate::spec::parse(&text, &config.display().to_string())?;
            spec.process()
                .clone()
                .ok_or_else(|| err!("{}: process: missing", config.display()))?
        }
    };
    p.set_args(Some(o.args.clone()));
    if let Some(cwd) = &o.cwd {
        if !cwd.is_absolute() {
            bail!("--cwd {:?}: must be an absolute path", cwd);
        }
        p.set_cwd(cwd.clone());
    }
    if let Some(a) = &o.apparmor {
        p.set_apparmor_profile(Some(a.clone()));
    }
    if let Some(l) = &o.process_label {
        p.set_selinux_label(Some(l.clone()));
    }
    if !o.caps.is_empty() {
        let mut c = p.capabilities().clone().unwrap_or_else(|| {
            let mut c = LinuxCapabilities::default();
            c.set_bounding(None);
            c.set_effective(None);
            c.set_permitted(None);
            c.set_inheritable(None);
            c.set_ambient(None);
            c
        });
        let add = |set: &Option<HashSet<Capability>>, cap: Capability| {
            let mut s = set.clone().unwrap_or_default();
            s.insert(cap);
            Some(s)
        };
        let mut unknown = Vec::new();
        for name in &o.caps {
            let Ok(cap) = parse_cap(name) else {
                // As runc: an unknown capability is warned about and ignored.
                unknown.push(name.as_str());
                continue;
            };
            c.set_bounding(add(c.bounding(), cap));
            c.set_effective(add(c.effective(), cap));
            c.set_permitted(add(c.permitted(), cap));
            // Ambient needs inheritable; like runc, only when the process has an inheritable set.
            if c.inheritable().is_some() {
                c.set_ambient(add(c.ambient(), cap));
            }
        }
        p.set_capabilities(Some(c));
        if !unknown.is_empty() {
            unknown.sort_unstable();
            unknown.dedup();
            crate::log::warn(&format!(
                "ignoring unknown or unavailable capabilities: [{}]",
                unknown.join(" ")
            ));
        }
    }
    let mut env = p.env().clone().unwrap_or_default();
    for (i, e) in o.env.iter().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            bail!("--env[{i}] {e:?}: not of the form KEY=VALUE");
        }
        env.push(e.clone());
    }
    p.set_env(Some(merge_env(env)));
    p.set_terminal(Some(o.tty));
    if let Some(n) = o.no_new_privs {
        p.set_no_new_privileges(Some(n));
    }
    let mut user = p.user().clone();
    if let Some(u) = &o.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        user.set_uid(
            uid.parse()
                .map_err(|_| err!("--user {u:?}: the uid must be a number (UID[:GID])"))?,
        );
        if let Some(g) = gid {
            user.set_gid(
                g.parse()
                    .map_err(|_| err!("--user {u:?}: the gid must be a number (UID[:GID])"))?,
            );
        }
    }
    if !o.additional_gids.is_empty() {
        let mut g = user.additional_gids().clone().unwrap_or_default();
        g.extend_from_slice(&o.additional_gids);
        user.set_additional_gids(Some(g));
    }
    p.set_user(user);
    crate::spec::validate_process(&p, "process")?;
    Ok(p)
}

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
    // SAFETY: pidfd_open with a pid and no flags; returns a new close-on-exec descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::sys(
            format!("open the container's init (pid {pid})"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh descriptor.
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
    // SAFETY: setns on a pidfd with namespace flags.
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
/// `container::SECCOMP_FILE`) and the state JSON its notify listener is sent with.
pub struct Confinement<'a> {
    pub seccomp: Option<&'a oci_spec::runtime::LinuxSeccomp>,
    /// The container's `linux.personality` (kept by create, see `container::PERSONALITY_FILE`).
    pub personality: Option<&'a oci_spec::runtime::LinuxPersonality>,
    pub state_json: Vec<u8>,
}

/// Run `process` in the container of `rec`; returns the exit status (0 when detached).
pub fn exec(rec: &Record, process: &Process, o: &ExecOpts, conf: &Confinement) -> Result<i32> {
    let terminal = process.terminal() == Some(true);
    if o.detach && terminal && o.console_socket.is_none() {
        bail!("--tty: a detached exec needs --console-socket to hand the terminal to");
    }
    if o.console_socket.is_some() && !terminal {
        bail!("--console-socket: needs a terminal (--tty or process.terminal)");
    }
    let sigs = if o.detach { None } else { Some(SignalGuard::block()) };
    let spawned = spawn(rec, process, o, conf)?;
    if let Some(p) = &o.pid_file {
        crate::container::write_pid_file(p, spawned.pid)?;
    }
    if o.detach {
        return Ok(0);
    }
    let sigs = sigs.expect("signals blocked");
    Ok(match spawned.master {
        Some(m) => super::tty::relay(m, spawned.pid, &sigs.set),
        None => sigs.wait_forwarding(spawned.pid),
    })
}

/// A process started by [`spawn`].
pub struct Spawned {
    pub pid: i32,
    /// The pty master of a process with a terminal and no `--console-socket`.
    pub master: Option<OwnedFd>,
}

/// Start `process` in the container of `rec` and return at once (the pieces of `exec` before the
/// wait; the VM guest agent waits itself). The process inherits the caller's stdio.
pub fn spawn(rec: &Record, process: &Process, o: &ExecOpts, conf: &Confinement) -> Result<Spawned> {
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
            // SAFETY: kill and reap our own child: the first one, or, once it reported the process
            // it made (our child too, CLONE_PARENT), that one (the first is already reaped).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e);
        }
    };
    Ok(Spawned { pid, master })
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
                // SAFETY: reap the intermediate process, our child.
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
    // SAFETY: leave without running the parent's destructors.
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
                // SAFETY: the intermediate leaves at once.
                unsafe { libc::_exit(0) }
            }
        }
    }
    // SAFETY: closing the init's pidfd, needed only for setns above (nothing else owns it here).
    unsafe { libc::close(plan.pidfd) };
    if let Some(root) = plan.root {
        let here = nix::sys::stat::stat("/").ok().map(|s| (s.st_dev, s.st_ino));
        let there = nix::sys::stat::fstat(root).ok().map(|s| (s.st_dev, s.st_ino));
        if here != there {
            nix::unistd::fchdir(root).ctx("enter the container's root")?;
            nix::unistd::chroot(".").ctx("enter the container's root")?;
        }
        // SAFETY: as above, the root's descriptor has served.
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
        // SAFETY: the console socket has served (or was never needed).
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

    #[test]
    fn later_env_entries_win_in_place() {
        let env = merge_env(vec!["A=1".into(), "B=2".into(), "A=3".into(), "C=".into()]);
        assert_eq!(env, ["A=3", "B=2", "C="]);
    }

    #[test]
    fn capability_names() {
        assert_eq!(parse_cap("CAP_SYS_ADMIN").unwrap(), Capability::SysAdmin);
        assert_eq!(parse_cap("net_raw").unwrap(), Capability::NetRaw);
        assert!(parse_cap("CAP_NOPE").is_err());
    }
}
