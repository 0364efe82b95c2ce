//! Pods in one VM (docs/VM.md, "Pods in one VM"). The first VM container of a network namespace
//! given by path boots the VM (as any VM container) and registers it: a file
//! `<state root>/vm-pods/<dev>-<inode of the namespace>` naming its ID, and a pod share in its
//! state directory (`pod/`, a shared mount of its own, served by a virtiofsd to the guest as tag
//! `pod`). A later VM container naming the same namespace joins that VM instead of booting one:
//! its rootfs and bind mounts' sources are bind-mounted under `pod/<id>/` (the mounts propagate
//! into virtiofsd's namespace), it sends its `create` (with its ID) to the first one's monitor,
//! and a helper process stands for it on the host — its pid in `state`, in its own host cgroup,
//! relaying its stdio and exiting with its status — like an exec helper. When the helper is gone
//! (its process ended, `kill KILL`, `delete`), the guest deletes the container. The registry is
//! in the root-owned state root; an entry whose container is gone is ignored and removed.

use super::{binds, confine, exec, guest_config, proto, relay, OWNER_FILE, READY_TIMEOUT, VM_FILE};
use crate::container::{CreateOpts, Runtime};
use crate::error::Context;
use crate::spec::Bundle;
use crate::state::{self, Record, Status};
use crate::{bail, err, Error, Result};
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The registry's directory in the state root.
const REGISTRY: &str = "vm-pods";
/// The pod share in the first container's state directory.
pub(super) const SHARE: &str = "pod";

/// The registry key of the config's network namespace, when it is given by path.
pub(super) fn key(spec: &oci_spec::runtime::Spec) -> Result<Option<String>> {
    let Some(p) = super::net::namespace_path(spec)? else {
        return Ok(None);
    };
    let md = std::fs::metadata(&p).with_ctx(|| format!("linux.namespaces: network namespace {}", p.display()))?;
    Ok(Some(format!("{}-{}", md.dev(), md.ino())))
}

fn entry(rt: &Runtime, key: &str) -> PathBuf {
    rt.store.root().join(REGISTRY).join(key)
}

/// The running VM container that registered this namespace, if any (waits, ≤ READY_TIMEOUT,
/// while it is still being created). A stale entry is removed only by a caller that holds the
/// registry's lock (`locked`): without it, an entry whose container has no state directory yet
/// is one whose creator is between `claim` and making it, not a stale one.
pub(super) fn owner(rt: &Runtime, key: &str, locked: bool) -> Option<String> {
    let e = entry(rt, key);
    let id = std::fs::read_to_string(&e).ok()?.trim().to_string();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let alive = state::validate_id(&id).ok().and_then(|_| {
            let l = rt.store.peek(&id).ok()?;
            let is_first =
                l.dir.join(VM_FILE).exists() && l.dir.join(SHARE).is_dir() && !l.dir.join(OWNER_FILE).exists();
            let rec = l.load().ok().flatten();
            Some((is_first, l.status(rec.as_ref())))
        });
        match alive {
            Some((true, Status::Created | Status::Running | Status::Paused)) => return Some(id),
            // (its pod share is made during create)
            Some((_, Status::Creating)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                if locked {
                    let _ = std::fs::remove_file(&e);
                }
                return None;
            }
        }
    }
}

/// What a VM container that can hold a pod does with its namespace's registry entry.
pub(super) enum Claim {
    /// Join the running VM of this container.
    Join(String),
    /// Boot the VM: registered as the namespace's first container. The registry stays locked
    /// (this descriptor) until the caller's state directory exists, so that a concurrent create
    /// in the same namespace finds the entry and waits for it instead of booting a second VM.
    First(std::fs::File),
}

/// Under the registry's lock (≤ 70 s): the running VM of this namespace, or `id` registered as
/// its first container.
pub(super) fn claim(rt: &Runtime, key: &str, id: &str) -> Result<Claim> {
    let dir = rt.store.root().join(REGISTRY);
    make_registry(&dir)?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_ctx(|| format!("{}", lock_path.display()))?;
    let deadline = Instant::now() + READY_TIMEOUT + Duration::from_secs(10);
    loop {
        // SAFETY: flock on a descriptor we own; the lock goes with it.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => return Err(Error::sys(format!("lock {}", lock_path.display()), e)),
        }
    }
    if let Some(owner) = owner(rt, key, true) {
        return Ok(Claim::Join(owner));
    }
    register(rt, key, id)?;
    Ok(Claim::First(lock))
}

fn make_registry(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(root) = dir.parent() {
        // The state root, as the store makes it.
        std::fs::create_dir_all(root).with_ctx(|| format!("state root {}", root.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::sys(format!("{}", dir.display()), e)),
    }
}

/// Register `id` as the VM of this namespace (replacing a stale entry).
fn register(rt: &Runtime, key: &str, id: &str) -> Result<()> {
    let dir = rt.store.root().join(REGISTRY);
    make_registry(&dir)?;
    let tmp = dir.join(format!(".{key}.{id}"));
    std::fs::write(&tmp, id).with_ctx(|| format!("{}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(key)).with_ctx(|| format!("{}", dir.join(key).display()))
}

/// Make the pod share: `<dir>/pod`, bind-mounted on itself and made shared, so that what is
/// mounted under it later (a member's rootfs and binds) reaches virtiofsd's mount namespace.
pub(super) fn make_share(dir: &Path) -> Result<PathBuf> {
    let p = dir.join(SHARE);
    std::fs::create_dir(&p).with_ctx(|| format!("{}", p.display()))?;
    mount(Some(&p), &p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| Error::sys(format!("bind {}", p.display()), e))?;
    if let Err(e) = mount(None::<&str>, &p, None::<&str>, MsFlags::MS_SHARED, None::<&str>) {
        let _ = umount2(&p, MntFlags::MNT_DETACH);
        return Err(Error::sys(format!("make {} shared", p.display()), e));
    }
    Ok(p)
}

/// Undo `make_share` (and every member's mounts under it).
pub(super) fn remove_share(p: &Path) -> Result<()> {
    match umount2(p, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(Error::sys(format!("detach {}", p.display()), e)),
    }
}

/// Before a VM container's state directory is removed (container.rs `destroy`): the first
/// container's pod share is detached (so removing the directory never reaches into a member's
/// rootfs) and its registry entry removed; a member's mounts in the share are detached and its
/// directory there removed (never recursively).
pub fn before_destroy(root: &Path, dir: &Path, id: &str) -> Result<()> {
    let share = dir.join(SHARE);
    if share.is_dir() {
        remove_share(&share)?;
        if let Ok(rd) = std::fs::read_dir(root.join(REGISTRY)) {
            for e in rd.flatten() {
                if std::fs::read_to_string(e.path()).is_ok_and(|s| s.trim() == id) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    if let Ok(owner) = std::fs::read_to_string(dir.join(OWNER_FILE)) {
        let owner = owner.trim();
        if state::validate_id(owner).is_ok() {
            member_unmount(&root.join(owner).join(SHARE), id)?;
        }
    }
    Ok(())
}

// The guest writes in the pod share (its later containers' roots are there), so on the host
// everything below the share's root is reached through descriptors, each component opened with
// O_NOFOLLOW: a symlink or a renamed directory the guest planted cannot send a mount, an unmount
// or a removal anywhere else. The share's root itself is a mount point in the root-owned state
// directory, out of the guest's reach.

fn open_at(dir: &OwnedFd, name: &str, flags: OFlag) -> Result<OwnedFd> {
    let fd = nix::fcntl::openat(dir, name, flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::sys(format!("pod share: open {name}"), e))?;
    Ok(fd)
}

/// Detach a member's mounts in the share and remove its mount points (each one only when empty,
/// relative to descriptors).
fn member_unmount(share: &Path, id: &str) -> Result<()> {
    let share_fd = match crate::linux::fs::open_dir(share) {
        Ok(fd) => fd,
        Err(_) => return Ok(()),
    };
    let m = match open_at(&share_fd, id, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(_) => return Ok(()),
    };
    let detach = |dir: &OwnedFd, name: &str| {
        if let Ok(fd) = open_at(dir, name, OFlag::O_PATH) {
            // The magic link names exactly the mount on that descriptor's dentry.
            match umount2(Path::new(&crate::linux::fs::fd_path(&fd)), MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(e) => crate::log::warn(&format!("pod share: detach {id}/{name}: {e}")),
            }
        }
    };
    let rmdir = |dir: &OwnedFd, name: &str, is_dir: bool| {
        let fl = if is_dir {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        let _ = nix::unistd::unlinkat(dir, name, fl);
    };
    detach(&m, "rootfs");
    if let Ok(b) = open_at(&m, "binds", OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
        let names: Vec<String> = nix::dir::Dir::from_fd(b.try_clone().map_err(|e| Error::sys("dup", e))?)
            .map(|mut d| {
                d.iter()
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
                    .filter(|n| n != "." && n != "..")
                    .collect()
            })
            .unwrap_or_default();
        for n in &names {
            detach(&b, n);
            // A directory or a file mount point: whichever it is.
            rmdir(&b, n, true);
            rmdir(&b, n, false);
        }
        rmdir(&m, "binds", true);
    }
    rmdir(&m, "rootfs", true);
    rmdir(&share_fd, id, true);
    Ok(())
}

/// Mount `src` on the mount point `name` in `dir` (a bind, recursive for `rbind`; read-only when
/// asked), the target reached through a descriptor.
fn bind_at(src: &Path, dir: &OwnedFd, name: &str, rec: bool, ro: bool) -> Result<()> {
    let target = open_at(dir, name, OFlag::O_PATH)?;
    let mut fl = MsFlags::MS_BIND;
    if rec {
        fl |= MsFlags::MS_REC;
    }
    let tp = crate::linux::fs::fd_path(&target);
    mount(Some(src), Path::new(&tp), None::<&str>, fl, None::<&str>)
        .map_err(|e| Error::sys(format!("bind {} in the pod share", src.display()), e))?;
    if ro {
        // The new mount, opened again through the same (now mounted on) name.
        let mounted = open_at(dir, name, OFlag::O_PATH)?;
        mount(
            None::<&str>,
            Path::new(&crate::linux::fs::fd_path(&mounted)),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("read-only bind of {}", src.display()), e))?;
    }
    Ok(())
}

/// Undo a member's share mounts when its create fails: (share, id).
struct ShareGuard(Option<(PathBuf, String)>);

impl Drop for ShareGuard {
    fn drop(&mut self) {
        if let Some((share, id)) = self.0.take() {
            if let Err(e) = member_unmount(&share, &id) {
                crate::log::warn(&e.to_string());
            }
        }
    }
}

/// Where a VM container's requests go: its own state directory, or for a pod member the first
/// container's (and the member's ID, named in the request).
pub(crate) fn route(dir: &Path) -> (PathBuf, Option<String>) {
    match std::fs::read_to_string(dir.join(OWNER_FILE)) {
        Ok(owner) if state::validate_id(owner.trim()).is_ok() => {
            let id = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            (dir.with_file_name(owner.trim()), id)
        }
        _ => (dir.to_path_buf(), None),
    }
}

/// `create` of a later VM container of a pod: made in the running VM of `owner`.
pub(super) fn join(rt: &Runtime, id: &str, opts: &CreateOpts, bundle: Bundle, owner: &str) -> Result<Record> {
    let spec = &bundle.spec;
    if spec.process().as_ref().is_some_and(|p| p.terminal() == Some(true)) {
        bail!("process.terminal: a terminal is not supported yet for a VM container joining a pod's VM (container {owner:?})");
    }
    if opts.preserve_fds > 0 {
        bail!("--preserve-fds: not supported in VM containers");
    }
    if spec.vm().as_ref().is_some_and(|v| v.image().is_some()) {
        bail!("vm.image: a VM container joining a pod's VM (container {owner:?}) shares its root as a directory");
    }
    let owner_dir = rt.store.root().join(owner);
    let binds = binds::plan(spec, &bundle.dir)?;
    let host_cg = confine::HostCgroup::plan_member(id, spec, rt.systemd_cgroup)?;
    let owner_pid = rt
        .store
        .peek(owner)?
        .load()?
        .map(|r| r.pid)
        .ok_or_else(|| err!("VM container {owner:?} is still being created"))?;
    // The pid, ipc and uts namespaces of the first container, joined by path (the CRI's workload
    // containers join the sandbox's): the guest's container joins that container's there (the
    // host paths are taken out first, so they are not warned about as host namespaces).
    let mut guest_spec = spec.clone();
    let mut joined: Vec<&str> = Vec::new();
    if let Some(nss) = guest_spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
    {
        for n in nss.iter_mut() {
            let file = match n.typ() {
                oci_spec::runtime::LinuxNamespaceType::Pid => "pid",
                oci_spec::runtime::LinuxNamespaceType::Ipc => "ipc",
                oci_spec::runtime::LinuxNamespaceType::Uts => "uts",
                _ => continue,
            };
            if n.path().as_deref() == Some(Path::new(&format!("/proc/{owner_pid}/ns/{file}"))) {
                n.set_path(None);
                joined.push(file);
            }
        }
    }
    let mut config = guest_config(&guest_spec, &binds)?;
    if let Some(ns) = config.pointer_mut("/linux/namespaces").and_then(|v| v.as_array_mut()) {
        for g in ns.iter_mut() {
            if joined.iter().any(|t| g["type"] == *t) {
                g["path"] = format!("{}{}", proto::NS_OF_CONTAINER, proto::GUEST_ID).into();
            }
        }
    }
    let uts_joined = config
        .pointer("/linux/namespaces")
        .and_then(|v| v.as_array())
        .is_some_and(|ns| ns.iter().any(|g| g["type"] == "uts" && g.get("path").is_some()));
    if !uts_joined && config["hostname"].as_str().unwrap_or("").is_empty() {
        // A UTS namespace of the host's joined by path: a new one in the guest, named alike.
        if let Some(h) = super::guest_config::joined_hostname(spec) {
            config["hostname"] = h.into();
        }
    }
    config["root"]["path"] = format!("{}/{id}/rootfs", proto::GUEST_POD).into();
    if let Some(ms) = config.get_mut("mounts").and_then(|m| m.as_array_mut()) {
        for &(i, n) in &binds.of_mount {
            if let Some(m) = ms.get_mut(i) {
                m["source"] = format!("{}/{id}/binds/{n}", proto::GUEST_POD).into();
            }
        }
    }
    let stdin = relay::stdin_worth_reading(0, false);
    let msg = proto::CreateMsg {
        config,
        stdin,
        root_device: None,
        binds: false,
        network: None,
        id: Some(id.to_string()),
        pod: false,
    };
    let line = format!(
        "create {}",
        serde_json::to_string(&msg).map_err(|e| err!("config.json: {e}"))?
    );
    let locked = rt.store.create(id)?;
    let dir = locked.dir.clone();
    let (mut rec, mut undo) = super::lifecycle::save_first_record(locked, id, &bundle, &host_cg)?;
    std::fs::write(dir.join(OWNER_FILE), owner).with_ctx(|| format!("{}", dir.display()))?;
    std::fs::write(dir.join(VM_FILE), b"").with_ctx(|| format!("{}", dir.display()))?;
    std::fs::write(dir.join(state::EXEC_FIFO), b"").with_ctx(|| format!("{}", dir.display()))?;
    let cg = host_cg.create()?;
    if host_cg.owned {
        undo.cgroup = Some(crate::cgroups::Cgroup::open(&host_cg.path));
    }
    // The member's root and binds in the pod share (they propagate to its virtiofsd), every
    // mount point made and reached through descriptors.
    let share = owner_dir.join(SHARE);
    let share_fd = crate::linux::fs::open_dir(&share)?;
    let mkdir = |dir: &OwnedFd, name: &str| {
        nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o755))
            .map_err(|e| Error::sys(format!("pod share: mkdir {name}"), e))
    };
    mkdir(&share_fd, id)?;
    let mut guard = ShareGuard(Some((share.clone(), id.to_string())));
    let m = open_at(&share_fd, id, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    mkdir(&m, "rootfs")?;
    bind_at(&bundle.rootfs, &m, "rootfs", true, false).map_err(|e| e.context("root.path"))?;
    if !binds.shares.is_empty() {
        mkdir(&m, "binds")?;
        let b = open_at(&m, "binds", OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        for (n, s) in binds.shares.iter().enumerate() {
            let name = n.to_string();
            if s.dir {
                mkdir(&b, &name)?;
            } else {
                open_at(&b, &name, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY)?;
            }
            bind_at(&s.source, &b, &name, s.rec, s.ro).map_err(|e| e.context("mounts"))?;
        }
    }
    let mut s = super::open_stream(&owner_dir)?;
    hooks_create_runtime(spec, &rec)?;
    super::send_request(&mut s, &line)?;
    let mut buf = proto::FrameBuf::default();
    let reply = super::read_reply(&mut s, &mut buf, READY_TIMEOUT, || None)
        .map_err(|e| e.context(format!("VM container {id:?} in the VM of {owner:?}")))?;
    if proto::split(&reply).0 != "ready" {
        bail!("VM container {id:?}: unexpected reply from the guest: {reply:?}");
    }
    let gate = confine::Gate::new()?;
    let lock_fd = undo.dir.as_ref().and_then(|l| l.lock_fd());
    // SAFETY: Berth is single-threaded; the child only relays and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        if let Some(fd) = lock_fd {
            // SAFETY: the helper must not hold the state directory's lock.
            unsafe { libc::close(fd) };
        }
        // SAFETY: a session of its own, as the monitor: the caller's terminal signals are not
        // the container's.
        unsafe { libc::setsid() };
        let code = exec::helper(s, buf, None, stdin, gate);
        // SAFETY: leave without the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    drop(s);
    undo.pid = pid;
    gate.release(&cg, pid)?;
    rec.pid = pid;
    rec.pid_start = state::proc_stat(pid)
        .map(|s| s.1)
        .ok_or_else(|| err!("VM container {id:?}: its host process exited during create"))?;
    undo.dir.as_ref().expect("state dir").save(&rec)?;
    if let Some(p) = opts.pid_file {
        crate::pid_file::write_pid_file(p, pid)?;
    }
    guard.0 = None;
    undo.pid = 0;
    undo.cgroup = None;
    let _ = undo.dir.take();
    Ok(rec)
}

/// The prestart and createRuntime hooks, on the host, pid = the member's (not yet forked) helper:
/// 0 is not meaningful, so the first container's monitor is not named either.
fn hooks_create_runtime(spec: &oci_spec::runtime::Spec, rec: &Record) -> Result<()> {
    super::hooks::create_runtime(spec, rec, 0)
}
