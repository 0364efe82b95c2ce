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
//! in the root-owned state root; an entry whose VM is gone is ignored and removed.
//!
//! The VM lives until the pod's last container is deleted: the first container's host process
//! is a stand-in told its status by the monitor (`fork_stand_in`), and its `delete` while later
//! containers run parks the VM (`park`: only the first container ends, in the guest; its state
//! directory, the VM's, moves to `vm-pods/<key>.vm`, out of the store), which the last later
//! container's `delete` ends (`end_parked`).

use super::{binds, confine, exec, guest_config, proto, relay, OWNER_FILE, READY_TIMEOUT, VM_FILE};
use crate::container::{CreateOpts, Runtime};
use crate::error::Context;
use crate::spec::Bundle;
use crate::state::{self, Locked, Record, Status};
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
/// In the first container's state directory: the monitor's pid and start time ("PID START"),
/// as the first container's recorded pid is its stand-in's (`fork_stand_in`).
pub(crate) const MONITOR_FILE: &str = "monitor";
/// A parked VM (the first container deleted while later ones run) is named in the registry and in
/// its members' owner files as `@<key>`; its state directory is `vm-pods/<key>.vm`.
const PARKED: &str = "@";

/// The VM's monitor (pid, start time) of a first container's (or a parked VM's) directory: from
/// the monitor file, else the record's.
pub(crate) fn monitor_of(dir: &Path, rec: &Record) -> (i32, u64) {
    std::fs::read_to_string(dir.join(MONITOR_FILE))
        .ok()
        .and_then(|s| {
            let (p, t) = s.trim().split_once(' ')?;
            Some((p.parse().ok()?, t.parse().ok()?))
        })
        .unwrap_or((rec.pid, rec.pid_start))
}

/// The host process of a pod's first VM container (its pid in `state`): not the monitor, so that
/// the VM can outlive the container (a stopped first container, `kill`, `delete`: "parking").
/// Forked by `create`, in the container's host cgroup and network namespace (as the monitor: the
/// CRI names the pod's network namespace as `/proc/<the sandbox's pid>/ns/net`), holding nothing
/// but /dev/null and its end of a socket pair whose other end the monitor holds: it exits with
/// the status the monitor writes there when the container's process ended ("CODE\n"), or 255
/// when the monitor is gone without one. Returns its pid.
pub(super) fn fork_stand_in(
    end: std::os::unix::net::UnixStream,
    cg: &crate::cgroups::Cgroup,
    netns: Option<&OwnedFd>,
) -> Result<i32> {
    use std::os::fd::AsRawFd;
    let fd = end.as_raw_fd();
    // SAFETY: Berth is single-threaded; the child only makes system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        if let Some(ns) = netns {
            if super::net::enter(ns).is_err() {
                // SAFETY: leave without the parent's destructors.
                unsafe { libc::_exit(255) }
            }
        }
        // SAFETY: system calls on descriptor numbers and locals; the child leaves by _exit.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            for std in 0..3 {
                libc::dup2(null, std);
            }
            libc::dup2(fd, 3);
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            libc::setsid();
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            let mut buf = [0u8; 16];
            let mut len = 0usize;
            let code = loop {
                let n = libc::read(3, buf[len..].as_mut_ptr().cast(), buf.len() - len);
                if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                if n <= 0 {
                    break 255;
                }
                len += n as usize;
                if let Some(nl) = buf[..len].iter().position(|&b| b == b'\n') {
                    break std::str::from_utf8(&buf[..nl])
                        .ok()
                        .and_then(|s| s.parse::<i32>().ok())
                        .filter(|c| (0..=255).contains(c))
                        .unwrap_or(255);
                }
                if len == buf.len() {
                    break 255;
                }
            };
            libc::_exit(code)
        }
    }
    drop(end);
    if let Err(e) = cg.add(pid) {
        // SAFETY: our own child, just forked.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(e);
    }
    Ok(pid)
}

/// A registry key as `key` makes it: `<dev>-<inode>`, digits only.
fn valid_key(k: &str) -> bool {
    k.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
    })
}

fn parked_dir(root: &Path, key: &str) -> PathBuf {
    root.join(REGISTRY).join(format!("{key}.vm"))
}

/// The state directory of the VM that a registry entry or a member's owner file names: a first
/// container's (its ID) or a parked VM's (`@<key>`); None for anything else.
pub(crate) fn vm_dir(root: &Path, owner: &str) -> Option<PathBuf> {
    match owner.strip_prefix(PARKED) {
        Some(key) => valid_key(key).then(|| parked_dir(root, key)),
        None => state::validate_id(owner).is_ok().then(|| root.join(owner)),
    }
}

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

/// The running VM that registered this namespace (its first container's ID, or `@<key>` for a
/// parked VM), if any (waits, ≤ READY_TIMEOUT, while its first container is still being
/// created). The VM runs while its monitor does, whatever the first container's status. A stale
/// entry is removed only by a caller that holds the registry's lock (`locked`): without it, an
/// entry whose container has no state directory yet is one whose creator is between `claim` and
/// making it, not a stale one.
pub(super) fn owner(rt: &Runtime, key: &str, locked: bool) -> Option<String> {
    let e = entry(rt, key);
    let token = std::fs::read_to_string(&e).ok()?.trim().to_string();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let alive = vm_dir(rt.store.root(), &token).filter(|d| d.is_dir()).map(|d| {
            let l = rt.store.peek_dir(&d, &token);
            let is_first =
                l.dir.join(VM_FILE).exists() && l.dir.join(SHARE).is_dir() && !l.dir.join(OWNER_FILE).exists();
            match l.load().ok().flatten().filter(|r| r.pid != 0) {
                Some(r) => {
                    let (pid, start) = monitor_of(&l.dir, &r);
                    (is_first && state::process_alive(pid, start), false)
                }
                None => (false, l.status(None) == Status::Creating),
            }
        });
        match alive {
            Some((true, _)) => return Some(token),
            // (its pod share is made during create)
            Some((_, true)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
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
    /// Join the running VM of this namespace.
    Join,
    /// Boot the VM: registered as the namespace's first container. The registry stays locked
    /// (this descriptor) until the caller's state directory exists, so that a concurrent create
    /// in the same namespace finds the entry and waits for it instead of booting a second VM.
    First(std::fs::File),
}

/// Under the registry's lock (≤ 70 s): the running VM of this namespace, or `id` registered as
/// its first container.
pub(super) fn claim(rt: &Runtime, key: &str, id: &str) -> Result<Claim> {
    let lock = lock_registry(rt.store.root())?;
    if owner(rt, key, true).is_some() {
        return Ok(Claim::Join);
    }
    register(rt, key, id)?;
    Ok(Claim::First(lock))
}

/// The registry's lock (flock on `vm-pods/.lock`, waited for ≤ 70 s): who registers a VM, joins
/// one, parks one or ends a parked one holds it.
fn lock_registry(root: &Path) -> Result<std::fs::File> {
    let dir = root.join(REGISTRY);
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
    Ok(lock)
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

/// Register `id` (a first container's ID, or a parked VM's `@<key>`) as the VM of this namespace
/// (replacing a stale entry).
fn register(rt: &Runtime, key: &str, id: &str) -> Result<()> {
    let dir = rt.store.root().join(REGISTRY);
    make_registry(&dir)?;
    write_replacing(&dir, key, id)
}

/// Write `dir/name` through a temporary file and a rename.
fn write_replacing(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_ctx(|| format!("{}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_ctx(|| format!("{}", dir.join(name).display()))
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

/// Before a VM container's state directory is removed (container.rs `destroy`; `id` is the
/// directory's: a container's ID, or `@<key>` for a parked VM): a first container's (or a parked
/// VM's) pod share is detached (so removing the directory never reaches into a member's rootfs)
/// and its registry entry removed; a member's mounts in the share are detached and its directory
/// there removed (never recursively), and the last member of a parked VM ends that VM.
pub fn before_destroy(rt: &Runtime, dir: &Path, id: &str) -> Result<()> {
    let root = rt.store.root();
    let share = dir.join(SHARE);
    if share.is_dir() {
        remove_share(&share)?;
        if let Ok(rd) = std::fs::read_dir(root.join(REGISTRY)) {
            for e in rd.flatten() {
                if e.path().is_file() && std::fs::read_to_string(e.path()).is_ok_and(|s| s.trim() == id) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    if let Ok(owner) = std::fs::read_to_string(dir.join(OWNER_FILE)) {
        let owner = owner.trim();
        // Under the registry's lock: a parking first container rewrites this owner file.
        let lock = lock_registry(root);
        let owner = std::fs::read_to_string(dir.join(OWNER_FILE)).map_or(owner.to_string(), |o| o.trim().to_string());
        if let Some(vm) = vm_dir(root, &owner) {
            member_unmount(&vm.join(SHARE), id)?;
        }
        if let (Ok(_), Some(key)) = (&lock, owner.strip_prefix(PARKED).filter(|k| valid_key(k))) {
            if members_of(&rt.store, &owner).iter().all(|m| m.id == id) {
                end_parked(rt, key)?;
            }
        }
    }
    Ok(())
}

/// A later VM container of a pod's VM.
struct Member {
    id: String,
    dir: PathBuf,
    /// Its helper (the container's host process) runs.
    live: bool,
}

/// The containers whose owner file names `owner` (a first container's ID or `@<key>`).
fn members_of(store: &state::Store, owner: &str) -> Vec<Member> {
    let ids = store.ids().unwrap_or_default();
    ids.into_iter()
        .filter_map(|id| {
            let l = store.peek(&id).ok()?;
            let o = std::fs::read_to_string(l.dir.join(OWNER_FILE)).ok()?;
            (o.trim() == owner).then(|| {
                let live = l
                    .load()
                    .ok()
                    .flatten()
                    .is_some_and(|r| state::process_alive(r.pid, r.pid_start));
                Member { id, dir: l.dir, live }
            })
        })
        .collect()
}

/// `delete` of a pod's first VM container while later containers of its VM run: the VM lives on
/// ("parked"). Only the first container is ended in the guest; its state directory (the VM's:
/// mux.sock, the pod share, the console, the record naming the monitor and the host cgroup) is
/// renamed to `vm-pods/<key>.vm`, out of the store's namespace of IDs (`state` and `list` no
/// longer show the ID, which may be used again), and the registry entry and the members' owner
/// files then name `@<key>`. The monitor keeps its directory through a descriptor, and the
/// mounts below it follow the rename. The last member's `delete` ends the VM (`end_parked`).
/// Returns whether it parked (false: nothing to keep the VM for; delete as usual).
pub fn park(rt: &Runtime, locked: &Locked, rec: &Record) -> Result<bool> {
    let dir = &locked.dir;
    let root = rt.store.root();
    let (monitor, monitor_start) = monitor_of(dir, rec);
    if !dir.join(SHARE).is_dir()
        || dir.join(OWNER_FILE).exists()
        || dir.parent() != Some(root)
        || !state::process_alive(monitor, monitor_start)
    {
        return Ok(false);
    }
    let _lock = lock_registry(root)?;
    let members = members_of(&rt.store, &rec.id);
    if !members.iter().any(|m| m.live) {
        return Ok(false);
    }
    let Some(key) = std::fs::read_dir(root.join(REGISTRY)).ok().and_then(|rd| {
        rd.flatten()
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .find(|k| valid_key(k) && std::fs::read_to_string(entry(rt, k)).is_ok_and(|s| s.trim() == rec.id))
    }) else {
        crate::log::warn(&format!(
            "container {:?}: its pod's registry entry is gone; its VM ends with it",
            rec.id
        ));
        return Ok(false);
    };
    end_first_in_guest(dir, &rec.id);
    let parked = parked_dir(root, &key);
    if parked.exists() {
        // What a VM of this namespace that ended left (its last delete did not finish).
        end_parked(rt, &key)?;
    }
    end_stand_in(dir, rec);
    // The parked VM's record names its monitor; the first container's poststop hooks run now,
    // not at the VM's end.
    let vm_rec = Record {
        pid: monitor,
        pid_start: monitor_start,
        poststop: Vec::new(),
        ..rec.clone()
    };
    locked.save(&vm_rec)?;
    std::fs::rename(dir, &parked).with_ctx(|| format!("rename {} to {}", dir.display(), parked.display()))?;
    let token = format!("{PARKED}{key}");
    if let Err(e) = register(rt, &key, &token) {
        // The members still name the first container: give its directory back.
        let _ = std::fs::rename(&parked, dir);
        return Err(e);
    }
    for m in members_of(&rt.store, &rec.id) {
        if let Err(e) = write_replacing(&m.dir, OWNER_FILE, &token) {
            crate::log::warn(&format!("container {:?}: {e}", m.id));
        }
    }
    crate::log::debug(&format!(
        "container {:?}: its VM is parked at {} for {} later container(s)",
        rec.id,
        parked.display(),
        members.len()
    ));
    Ok(true)
}

/// Whether later containers of the pod whose first VM container is in `dir` run (their helpers).
pub(super) fn has_live_members(dir: &Path, id: &str) -> bool {
    let Some(root) = dir.parent() else { return false };
    dir.join(SHARE).is_dir() && members_of(&state::Store::new(root), id).iter().any(|m| m.live)
}

/// The first container's stand-in ends with its process (if it has not yet): SIGKILL to the
/// recorded pid, checked against its recorded start time, when it is not the monitor.
pub(super) fn end_stand_in(dir: &Path, rec: &Record) {
    if monitor_of(dir, rec) != (rec.pid, rec.pid_start) && state::process_alive(rec.pid, rec.pid_start) {
        // SAFETY: SIGKILL to the recorded pid, checked against its start time just above.
        unsafe { libc::kill(rec.pid, libc::SIGKILL) };
    }
}

/// End a pod's first container in the guest, not its VM: SIGKILL to its processes, then wait
/// (≤ KILL_TIMEOUT) until the guest says it is stopped.
pub(super) fn end_first_in_guest(dir: &Path, id: &str) {
    use super::client::request;
    use super::lifecycle::KILL_TIMEOUT;
    if let Err(e) = request(dir, &format!("kill {} 1", libc::SIGKILL), KILL_TIMEOUT) {
        crate::log::debug(&format!("container {id:?}: kill in the guest: {e}"));
    }
    let deadline = Instant::now() + KILL_TIMEOUT;
    // Signal 0 to a stopped container is an error.
    while Instant::now() < deadline && request(dir, "kill 0 0", Duration::from_secs(2)).is_ok() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// End a parked VM and remove what it holds (under the registry's lock): its monitor, qemu and
/// virtiofsds (its host cgroup's processes, and the recorded monitor checked against its start
/// time), that cgroup, the pod share, its registry entry and its directory.
fn end_parked(rt: &Runtime, key: &str) -> Result<()> {
    let d = parked_dir(rt.store.root(), key);
    let token = format!("{PARKED}{key}");
    if !d.is_dir() {
        return Ok(());
    }
    let locked = rt.store.open_dir(&d, &token)?;
    match locked.load() {
        Ok(Some(rec)) => rt.destroy(locked, &rec),
        _ => {
            before_destroy(rt, &d, &token)?;
            locked.destroy()
        }
    }
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
    let owner = std::fs::read_to_string(dir.join(OWNER_FILE)).ok();
    match owner.and_then(|o| vm_dir(dir.parent()?, o.trim())) {
        Some(vm) => (vm, dir.file_name().map(|n| n.to_string_lossy().into_owned())),
        None => (dir.to_path_buf(), None),
    }
}

/// `pause` (`freeze`) or `resume` of a pod's later container: its processes in the guest, by the
/// guest's freezer (its host cgroup, which `state` reads, holds only its helper; the caller
/// freezes that too). Nothing for any other container (false).
pub(crate) fn member_freeze(dir: &Path, freeze: bool) -> Result<bool> {
    if !matches!(route(dir), (_, Some(_))) {
        return Ok(false);
    }
    let verb = if freeze { "pause" } else { "resume" };
    let reply = super::client::request(dir, verb, Duration::from_secs(30))?;
    if !reply.starts_with("ok") {
        bail!("{verb} in the VM: {reply}");
    }
    Ok(true)
}

/// The statistics of a pod's later container: its cgroup's in the guest (the same document
/// `events --stats` gives of a cgroup). None for any other container.
pub(crate) fn member_stats(dir: &Path) -> Option<Result<serde_json::Value>> {
    if !matches!(route(dir), (_, Some(_))) {
        return None;
    }
    Some((|| {
        let reply = super::client::request(dir, "stats", Duration::from_secs(10))?;
        let json = reply
            .strip_prefix("ok ")
            .ok_or_else(|| err!("statistics from the VM: {reply}"))?;
        serde_json::from_str(json).map_err(|e| err!("statistics from the VM: {e}"))
    })())
}

/// `create` of a later VM container of a pod: made in the running VM of the namespace `key`
/// (looked up again under the registry's lock, held until the container's record names its
/// helper, so that its VM is not parked or ended meanwhile).
pub(super) fn join(
    rt: &Runtime,
    id: &str,
    opts: &CreateOpts,
    bundle: Bundle,
    key: &str,
    att: super::Attach,
) -> Result<Record> {
    let spec = &bundle.spec;
    // A terminal: the host side of a pty relayed by the helper to the guest's (its master goes
    // to the console socket, or `run` relays it), as for `exec -t`.
    let terminal = spec.process().as_ref().is_some_and(|p| p.terminal() == Some(true));
    if terminal && att.tty.is_none() && opts.console_socket.is_none() {
        bail!("process.terminal: true needs --console-socket when the container is detached (create, run --detach)");
    }
    let registry_lock = lock_registry(rt.store.root())?;
    let owner = &owner(rt, key, true).ok_or_else(|| err!("VM container {id:?}: the pod's VM ended meanwhile"))?;
    if opts.preserve_fds > 0 {
        bail!("--preserve-fds: not supported in VM containers");
    }
    if spec.vm().as_ref().is_some_and(|v| v.image().is_some()) {
        bail!("vm.image: a VM container joining a pod's VM (container {owner:?}) shares its root as a directory");
    }
    let owner_dir = vm_dir(rt.store.root(), owner).ok_or_else(|| err!("pod registry: bad entry {owner:?}"))?;
    let binds = binds::plan(spec, &bundle.dir)?;
    let host_cg = confine::HostCgroup::plan_member(id, spec, rt.systemd_cgroup)?;
    let owner_pid = rt
        .store
        .peek_dir(&owner_dir, owner)
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
    let (master, peer, console) = relay::host_terminal(terminal, att.tty, opts.console_socket)?;
    if let Some((rows, cols)) = peer
        .as_ref()
        .and_then(|t| relay::win_size(std::os::fd::AsRawFd::as_raw_fd(t)))
    {
        config["process"]["consoleSize"] = serde_json::json!({"height": rows, "width": cols});
    }
    let stdin = !terminal && relay::stdin_worth_reading(0, false);
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
    relay::send_master(master.as_ref(), console.as_ref())?;
    drop(console);
    drop(master);
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
        // SAFETY: nor the registry's.
        unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(&registry_lock)) };
        // SAFETY: a session of its own, as the monitor: the caller's terminal signals are not
        // the container's.
        unsafe { libc::setsid() };
        // (it closes every other descriptor: the locks, Berth's own pty master in `run`)
        let code = exec::helper(s, buf, peer, stdin, gate);
        // SAFETY: leave without the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    drop(s);
    drop(peer);
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
    drop(registry_lock);
    Ok(rec)
}

/// The prestart and createRuntime hooks, on the host, pid = the member's (not yet forked) helper:
/// 0 is not meaningful, so the first container's monitor is not named either.
fn hooks_create_runtime(spec: &oci_spec::runtime::Spec, rec: &Record) -> Result<()> {
    super::hooks::create_runtime(spec, rec, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_names_a_container_or_a_parked_vm_and_nothing_else() {
        let root = Path::new("/run/berth");
        assert_eq!(vm_dir(root, "web"), Some(root.join("web")));
        assert_eq!(
            vm_dir(root, "@2049-4026532178"),
            Some(root.join("vm-pods/2049-4026532178.vm"))
        );
        for bad in ["@", "@1-", "@-2", "@1-2/..", "@../x", "@1-2-3", "../x", "", "a/b"] {
            assert_eq!(vm_dir(root, bad), None, "{bad:?}");
        }
    }
}
