//! Making the container's init process. The runtime clones one child straight into every new
//! namespace (one `clone`, no re-exec of the binary) when it joins no namespace but pid or time (those
//! two only take effect for children, so the runtime joins them itself just around the clone). When
//! the config joins other namespaces by path, the child first joins them (user namespace first), then
//! unshares the new ones, and forks the real init if a pid or time namespace is involved.
//! The runtime then serves the child over the sync channel: it places it in its cgroup, writes its
//! user-namespace ID maps, runs the createRuntime hooks, and waits for "ready".

use super::sync::{self, Channel};
use crate::cgroups::Cgroup;
use crate::error::Context;
use crate::{bail, err, Error, Result};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// How init waits between create and start.
pub enum Gate {
    /// The exec fifo, opened read-write: init blocks reading it until `start` writes a byte.
    Fifo(RawFd),
    /// The sync channel: the runtime itself sends `S` (used by `run`, which starts at once).
    Channel,
}

pub struct InitConfig<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub gate: Gate,
    pub console_sock: Option<RawFd>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    /// Keep the runtime's session keyring instead of joining a new one named after the container.
    pub no_new_keyring: bool,
    pub cgroup_path: &'a str,
    /// Whether the runtime writes ID maps without root: init is then dumpable while it waits for
    /// them (the runtime, or newuidmap, writes /proc/<pid>/uid_map as the owner of init).
    pub unprivileged_maps: bool,
}

impl InitConfig<'_> {
    /// The descriptors init holds after its clone (besides stdio and the preserved ones).
    fn keep(&self, chan: RawFd) -> [RawFd; 3] {
        let fifo = match self.gate {
            Gate::Fifo(fd) => fd,
            Gate::Channel => -1,
        };
        [chan, fifo, self.console_sock.unwrap_or(-1)]
    }
}

/// The bind sources of a container with a new user namespace and a new mount namespace, opened
/// (O_PATH, symlinks followed as for a path from the config; relative ones are the bundle's) by
/// the runtime as host root *inside init's mount namespace*, by mount index. Init, root of its user
/// namespace only, may not be able to reach a source inside a directory only the host's root can
/// search (0700); opened in init's own mount namespace, the source is a mount init may bind from
/// (and its locked flags stay locked), which it would not be if opened in the runtime's namespace.
/// runc does the same. Only as root.
fn open_bind_sources(pid: i32, spec: &Spec, bundle: &Path, plan: &NsPlan) -> Result<Vec<(usize, OwnedFd)>> {
    let binds: Vec<(usize, std::path::PathBuf)> = spec
        .mounts()
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, m)| {
            m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|(i, m)| m.source().as_ref().map(|s| (i, bundle.join(s))))
        .collect();
    // Rootless, the runtime can reach no more than init (and may not join its mount namespace).
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if binds.is_empty() || !root || !plan.has(libc::CLONE_NEWUSER) || !plan.has(libc::CLONE_NEWNS) {
        return Ok(Vec::new());
    }
    in_mount_ns_of(pid, || {
        binds
            .iter()
            .map(|(i, src)| {
                let fd = nix::fcntl::open(
                    src,
                    nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .with_ctx(|| format!("mounts[{i}]: source {}", src.display()))?;
                Ok((*i, fd))
            })
            .collect()
    })
}

/// Run `f` in the mount namespace of `pid`, then come back to ours (and our working directory).
/// The runtime is single-threaded here, as setns(CLONE_NEWNS) needs.
fn in_mount_ns_of<T>(pid: i32, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let own = open_ns(Path::new("/proc/self/ns/mnt"))?;
    let cwd = nix::fcntl::open(
        ".",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx("open the working directory")?;
    let theirs = open_ns(Path::new(&format!("/proc/{pid}/ns/mnt")))?;
    // SAFETY: setns on a namespace descriptor we own.
    if unsafe { libc::setns(theirs.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        return Err(Error::sys(
            "join init's mount namespace",
            std::io::Error::last_os_error(),
        ));
    }
    let r = f();
    // SAFETY: as above; back to our own namespace, then our directory.
    let back = unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNS) };
    if back != 0 {
        return Err(Error::sys(
            "return to the runtime's mount namespace",
            std::io::Error::last_os_error(),
        ));
    }
    nix::unistd::fchdir(&cwd).ctx("return to the working directory")?;
    r
}

/// The mount namespace a container's rootfs is built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountNs {
    /// A new one of its own (pivot_root).
    New,
    /// One joined by path (`linux.namespaces[].path`): shared with whatever else is in it, so the
    /// root is changed for the container's processes only (chroot).
    Joined,
    /// None given: the runtime's own (as runc: mounts are made there, under the rootfs, and the
    /// container is chrooted into it).
    Runtime,
}

/// The namespace work of a config, split the way the clone needs it.
#[derive(Debug, Default, Clone)]
pub struct NsPlan {
    /// CLONE_NEW* flags of namespaces to create (all types).
    pub new: libc::c_int,
    /// Namespaces to join by path, user first.
    pub join: Vec<(LinuxNamespaceType, std::path::PathBuf)>,
}

pub fn ns_flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }
}

impl NsPlan {
    pub fn of(spec: &Spec) -> NsPlan {
        let mut plan = NsPlan::default();
        for ns in spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
        {
            match ns.path() {
                None => plan.new |= ns_flag(ns.typ()),
                Some(p) => plan.join.push((ns.typ(), p.clone())),
            }
        }
        plan.join.sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);
        plan
    }

    pub fn has(&self, f: libc::c_int) -> bool {
        self.new & f != 0
    }

    pub fn joins(&self, t: LinuxNamespaceType) -> bool {
        self.join.iter().any(|(j, _)| *j == t)
    }

    /// Which mount namespace the container's rootfs is built in.
    pub fn mount_ns(&self) -> MountNs {
        if self.has(libc::CLONE_NEWNS) {
            MountNs::New
        } else if self.joins(LinuxNamespaceType::Mount) {
            MountNs::Joined
        } else {
            MountNs::Runtime
        }
    }

    /// Whether the container has a UTS namespace of its own, new or joined (its hostname is set
    /// there).
    pub fn uts_ns(&self) -> bool {
        self.has(libc::CLONE_NEWUTS) || self.joins(LinuxNamespaceType::Uts)
    }

    /// Whether one clone can do everything: nothing joined but pid/time (joined by the runtime).
    pub fn fast(&self) -> bool {
        self.join
            .iter()
            .all(|(t, _)| matches!(t, LinuxNamespaceType::Pid | LinuxNamespaceType::Time))
    }

    /// Whether init must fork to be in its pid or time namespace (new or joined: both apply to
    /// children only), when it makes or joins them itself (the general path).
    pub fn forks_init(&self) -> bool {
        self.has(libc::CLONE_NEWPID | libc::CLONE_NEWTIME)
            || self.joins(LinuxNamespaceType::Pid)
            || self.joins(LinuxNamespaceType::Time)
    }

    /// Whether the container gets a new pid namespace of its own (not a joined one).
    pub fn pid_ns(&self) -> bool {
        self.has(libc::CLONE_NEWPID)
    }

    pub fn user_ns(&self) -> bool {
        self.has(libc::CLONE_NEWUSER) || self.joins(LinuxNamespaceType::User)
    }
}

/// The identity of a namespace file (`/proc/<pid>/ns/<kind>` or a bind of one): its device and
/// inode, which two processes share exactly when they share the namespace.
pub(crate) fn namespace_id(path: &str) -> Option<(u64, u64)> {
    nix::sys::stat::stat(path).ok().map(|s| (s.st_dev, s.st_ino))
}

pub(crate) fn open_ns(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_ctx(|| format!("open namespace {}", path.display()))
}

pub fn setns(t: LinuxNamespaceType, path: &Path) -> Result<()> {
    let fd = open_ns(path)?;
    // SAFETY: setns on a descriptor we own.
    if unsafe { libc::setns(fd.as_raw_fd(), ns_flag(t)) } != 0 {
        return Err(Error::sys(
            format!("join {} namespace {}", t, path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Write `linux.timeOffsets` for a time namespace that has no process yet.
pub fn write_time_offsets(spec: &Spec) -> Result<()> {
    let Some(offsets) = spec.linux().as_ref().and_then(|l| l.time_offsets().as_ref()) else {
        return Ok(());
    };
    let mut text = String::new();
    for (clock, off) in offsets {
        text.push_str(&format!(
            "{} {} {}\n",
            clock,
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    if !text.is_empty() {
        std::fs::write("/proc/self/timens_offsets", text).ctx("linux.timeOffsets")?;
    }
    Ok(())
}

/// A raw clone that behaves like fork but enters new namespaces. The child gets 0.
pub(crate) fn clone_raw(flags: libc::c_int) -> Result<i32> {
    // SAFETY: without CLONE_VM the child has its own copy of memory and continues on its copy of this
    // stack, exactly like fork(2). Berth is single-threaded at this point.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(Error::sys(
            "clone the container init into its namespaces",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(pid as i32)
}

/// The descriptors of the runtime's own pid and time namespaces-for-children, to restore after a
/// clone that needed it to join the container's.
pub(crate) struct NsRestore(pub(crate) Vec<(LinuxNamespaceType, OwnedFd)>);

impl Drop for NsRestore {
    fn drop(&mut self) {
        for (t, fd) in &self.0 {
            // SAFETY: setns on a descriptor we own.
            unsafe { libc::setns(fd.as_raw_fd(), ns_flag(*t)) };
        }
    }
}

pub struct Spawned {
    pub pid: i32,
    pub chan: Channel,
    /// The pty master, when init has a terminal and no console socket (Berth relays it).
    pub master: Option<OwnedFd>,
}

/// What the runtime does at each point of the child's setup, given the child's pid.
pub trait Parent {
    /// State JSON for hooks (status creating) with this pid.
    fn hook_state(&self, pid: i32) -> Vec<u8>;
    /// Run prestart + createRuntime hooks.
    fn create_runtime_hooks(&self, pid: i32) -> Result<()>;
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    let mut text = String::new();
    for m in maps {
        text.push_str(&format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()));
    }
    text
}

fn write_id_map(pid: i32, file: &str, maps: &[LinuxIdMapping], field: &str) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, map_text(maps)).with_ctx(|| format!("{field}: write {path}"))
}

/// A helper program (newuidmap, newgidmap) along PATH and the usual directories.
fn find_helper(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Write ID maps with the setuid helper (newuidmap/newgidmap), which checks /etc/subuid and
/// /etc/subgid: how an unprivileged user maps more than its own ID.
fn id_map_helper(helper: &Path, pid: i32, maps: &[LinuxIdMapping], field: &str) -> Result<()> {
    let mut cmd = std::process::Command::new(helper);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.arg(m.container_id().to_string())
            .arg(m.host_id().to_string())
            .arg(m.size().to_string());
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_ctx(|| format!("{field}: run {}", helper.display()))?;
    if !out.status.success() {
        bail!(
            "{field}: {} failed ({}): {}",
            helper.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Write the user-namespace ID maps of `pid`: directly as root; without root, directly when the
/// only mapping is the caller's own ID (gid_map then needs setgroups denied), else with
/// newuidmap/newgidmap (package uidmap).
pub fn write_id_maps(pid: i32, uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<()> {
    // SAFETY: geteuid/getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid == 0 {
        write_id_map(pid, "uid_map", uid, "linux.uidMappings")?;
        return write_id_map(pid, "gid_map", gid, "linux.gidMappings");
    }
    let own = |maps: &[LinuxIdMapping], id: u32| maps.len() == 1 && maps[0].host_id() == id && maps[0].size() == 1;
    for (maps, own_id, file, helper, field) in [
        (uid, euid, "uid_map", "newuidmap", "linux.uidMappings"),
        (gid, egid, "gid_map", "newgidmap", "linux.gidMappings"),
    ] {
        if own(maps, own_id) {
            if file == "gid_map" {
                let p = format!("/proc/{pid}/setgroups");
                std::fs::write(&p, "deny").with_ctx(|| format!("{field}: write {p}"))?;
            }
            write_id_map(pid, file, maps, field)?;
        } else {
            let h = find_helper(helper).ok_or_else(|| {
                err!("{field}: mapping more than your own ID without root needs {helper} (package uidmap)")
            })?;
            id_map_helper(&h, pid, maps, field)?;
        }
    }
    Ok(())
}

/// Clone the init process and serve it until it is ready (or failed).
pub fn spawn(cfg: &InitConfig, cgroup: &Cgroup, parent: &dyn Parent) -> Result<Spawned> {
    let plan = NsPlan::of(cfg.spec);
    let (ours, theirs) = sync::pair()?;
    let fast = plan.fast();
    let mut restore = NsRestore(Vec::new());
    let mut flags = 0;
    if fast {
        for (t, path) in &plan.join {
            let own = if *t == LinuxNamespaceType::Pid {
                "/proc/self/ns/pid_for_children"
            } else {
                "/proc/self/ns/time_for_children"
            };
            restore.0.push((*t, open_ns(Path::new(own))?));
            setns(*t, path)?;
        }
        if plan.has(libc::CLONE_NEWTIME) {
            restore.0.push((
                LinuxNamespaceType::Time,
                open_ns(Path::new("/proc/self/ns/time_for_children"))?,
            ));
            // SAFETY: unshare with a flag; only affects children.
            if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
                return Err(Error::sys("create time namespace", std::io::Error::last_os_error()));
            }
            write_time_offsets(cfg.spec)?;
        }
        // The cgroup namespace is made by init once it is in its cgroup; time is made above.
        flags = plan.new & !(libc::CLONE_NEWCGROUP | libc::CLONE_NEWTIME);
    }
    let pid = clone_raw(flags)?;
    if pid == 0 {
        // Hidden from the container's processes (no ptrace, no /proc/<pid>/fd) until its execve,
        // and holding only what it needs: the channel, the exec fifo, the console socket and the
        // preserved descriptors (not the state lock, the runtime's namespace handles, its log).
        super::fds::hide();
        crate::log::detach();
        std::mem::forget(ours);
        std::mem::forget(restore);
        super::fds::close_from_except(3 + cfg.preserve_fds.max(0), &cfg.keep(theirs.raw()));
        super::init::child_main(cfg, &plan, theirs, fast);
    }
    drop(restore);
    drop(theirs);
    let mut spawned = Spawned {
        pid,
        chan: ours,
        master: None,
    };
    let r = serve(cfg, cgroup, parent, &plan, &mut spawned);
    if let Err(e) = r {
        // SAFETY: kill/waitpid on our own child.
        unsafe {
            libc::kill(spawned.pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            if spawned.pid != pid {
                libc::waitpid(spawned.pid, std::ptr::null_mut(), 0);
            }
        }
        return Err(e);
    }
    Ok(spawned)
}

fn serve(cfg: &InitConfig, cgroup: &Cgroup, parent: &dyn Parent, plan: &NsPlan, sp: &mut Spawned) -> Result<()> {
    let linux = cfg.spec.linux().as_ref();
    #[allow(deprecated)]
    let want_hooks = cfg.spec.hooks().as_ref().is_some_and(|h| {
        h.prestart().as_ref().is_some_and(|v| !v.is_empty())
            || h.create_runtime().as_ref().is_some_and(|v| !v.is_empty())
    });
    let mut steps = super::sync::InitSteps {
        mapped: false,
        want_pid: !plan.fast() && plan.forks_init(),
        want_hooks,
        want_master: cfg.spec.process().as_ref().is_some_and(|p| p.terminal() == Some(true))
            && cfg.console_sock.is_none(),
        want_listener: linux
            .and_then(|l| l.seccomp().as_ref())
            .is_some_and(|s| s.listener_path().is_some()),
    };
    loop {
        let Some((tag, payload, fd)) = sp.chan.recv_msg()? else {
            bail!("container init exited during setup");
        };
        steps.take(tag, fd.is_some())?;
        match tag {
            b'E' => return Err(Error::new(String::from_utf8_lossy(&payload).into_owned())),
            b'U' => {
                cgroup.add(sp.pid)?;
                if plan.has(libc::CLONE_NEWUSER) {
                    let uid = linux.and_then(|l| l.uid_mappings().as_deref()).unwrap_or(&[]);
                    let gid = linux.and_then(|l| l.gid_mappings().as_deref()).unwrap_or(&[]);
                    write_id_maps(sp.pid, uid, gid)?;
                }
                for (i, tree) in super::idmap::prepare(cfg.spec, cfg.bundle, sp.pid)? {
                    sp.chan.send_fd(b'I', i.to_string().as_bytes(), tree.as_raw_fd())?;
                }
                for (i, src) in open_bind_sources(sp.pid, cfg.spec, cfg.bundle, plan)? {
                    sp.chan.send_fd(b'B', i.to_string().as_bytes(), src.as_raw_fd())?;
                }
                sp.chan.send_blob(b'G', &parent.hook_state(sp.pid))?;
            }
            b'P' => {
                let intermediate = sp.pid;
                sp.pid = verified_child(&payload, "init")?;
                // SAFETY: reap the intermediate process, our child.
                unsafe { libc::waitpid(intermediate, std::ptr::null_mut(), 0) };
            }
            b'H' => {
                parent.create_runtime_hooks(sp.pid)?;
                sp.chan.send(b'G', &[])?;
            }
            b'N' => {
                let fd = super::console::recv_fd(sp.chan.raw())?;
                let s = linux
                    .and_then(|l| l.seccomp().as_ref())
                    .ok_or_else(|| err!("seccomp listener from init without linux.seccomp"))?;
                super::seccomp::send_to_listener(s, sp.pid, &parent.hook_state(sp.pid), &fd)?;
            }
            b'M' => sp.master = fd,
            _ => return Ok(()), // R
        }
    }
}

/// The pid in a `P` message, believed only if that process is the runtime's own child (the
/// intermediate makes it with CLONE_PARENT): a pid a container process slipped in is refused.
pub(crate) fn verified_child(payload: &[u8], who: &str) -> Result<i32> {
    let pid: i32 = std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| err!("{who}: bad pid message"))?;
    if parent_of(pid) != Some(std::process::id() as i32) {
        bail!("{who}: the reported pid {pid} is not a child of the runtime");
    }
    Ok(pid)
}

/// The parent pid of `pid` (field 4 of /proc/<pid>/stat, after the command's closing parenthesis).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_children_are_believed() {
        let child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id() as i32;
        assert_eq!(verified_child(pid.to_string().as_bytes(), "t").unwrap(), pid);
        // pid 1 and ourselves are not our children; garbage is not a pid.
        assert!(verified_child(b"1", "t").is_err());
        assert!(verified_child(std::process::id().to_string().as_bytes(), "t").is_err());
        for bad in [&b""[..], b"-5", b"0", b"12x"] {
            assert!(verified_child(bad, "t").is_err());
        }
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
