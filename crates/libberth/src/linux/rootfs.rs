//! The container's root filesystem, built by init inside its new mount namespace: the host's mounts
//! made slave (or `linux.rootfsPropagation`), the rootfs bound onto itself, every entry of `mounts`
//! mounted onto a destination resolved inside the rootfs, the default and configured devices, the
//! /dev symlinks, then pivot_root (or, with `--no-pivot`, a move and chroot), and last the masked
//! and read-only paths, the read-only root and sysctls.

use super::fs::{self, Make};
use super::process::MountNs;
use crate::error::Context;
use crate::{bail, err, Error, Result};
use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Mount propagation by name, as in `linux.rootfsPropagation` and mount options.
pub fn propagation_flags(name: &str) -> Option<MsFlags> {
    Some(match name {
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// A mount's options split into flags to set, flags to clear, propagation changes and fs data.
#[derive(Debug, PartialEq)]
pub struct MountOptions {
    pub set: MsFlags,
    pub clear: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    pub bind: bool,
    /// MOUNT_ATTR_* bits to set and clear on the mount and every mount below it (the `r*`
    /// options), with mount_setattr(AT_RECURSIVE).
    pub rec_set: u64,
    pub rec_clear: u64,
}

/// The recursive mount options (as runc): name, whether it clears, the MOUNT_ATTR_* bit.
pub const RECURSIVE_OPTIONS: &[(&str, bool, u64)] = &[
    ("rro", false, fs::MOUNT_ATTR_RDONLY),
    ("rrw", true, fs::MOUNT_ATTR_RDONLY),
    ("rnosuid", false, fs::MOUNT_ATTR_NOSUID),
    ("rsuid", true, fs::MOUNT_ATTR_NOSUID),
    ("rnodev", false, fs::MOUNT_ATTR_NODEV),
    ("rdev", true, fs::MOUNT_ATTR_NODEV),
    ("rnoexec", false, fs::MOUNT_ATTR_NOEXEC),
    ("rexec", true, fs::MOUNT_ATTR_NOEXEC),
    ("rnodiratime", false, fs::MOUNT_ATTR_NODIRATIME),
    ("rdiratime", true, fs::MOUNT_ATTR_NODIRATIME),
    ("rrelatime", false, fs::MOUNT_ATTR_RELATIME),
    ("rnorelatime", true, fs::MOUNT_ATTR_RELATIME),
    ("rnoatime", false, fs::MOUNT_ATTR_NOATIME),
    ("ratime", true, fs::MOUNT_ATTR_NOATIME),
    ("rstrictatime", false, fs::MOUNT_ATTR_STRICTATIME),
    ("rnostrictatime", true, fs::MOUNT_ATTR_STRICTATIME),
    ("rnosymfollow", false, fs::MOUNT_ATTR_NOSYMFOLLOW),
    ("rsymfollow", true, fs::MOUNT_ATTR_NOSYMFOLLOW),
];

/// Options that are neither flags nor filesystem data: handled elsewhere (ID mapping) or
/// annotations for other tools (`x-*`, `defaults`, crun's `tmpcopyup`).
fn not_data(opt: &str) -> bool {
    opt.starts_with("x-") || matches!(opt, "defaults" | "tmpcopyup" | "idmap" | "ridmap")
}

pub fn parse_options(opts: &[String]) -> MountOptions {
    let mut o = MountOptions {
        set: MsFlags::empty(),
        clear: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
        bind: false,
        rec_set: 0,
        rec_clear: 0,
    };
    for opt in opts {
        if let Some(&(_, clears, bit)) = RECURSIVE_OPTIONS.iter().find(|(n, _, _)| n == opt) {
            if bit & fs::MOUNT_ATTR_ATIME_MASK == bit {
                // One access-time setting replaces another, and mount_setattr(2) takes one only
                // with the whole MOUNT_ATTR__ATIME mask cleared: "rnorelatime" is strictatime,
                // "ratime" and "rnostrictatime" the kernel's default (relatime).
                let mode = match opt.as_str() {
                    "rnorelatime" => fs::MOUNT_ATTR_STRICTATIME,
                    _ if clears => fs::MOUNT_ATTR_RELATIME,
                    _ => bit,
                };
                o.rec_set = (o.rec_set & !fs::MOUNT_ATTR_ATIME_MASK) | mode;
                o.rec_clear |= fs::MOUNT_ATTR_ATIME_MASK;
            } else if clears {
                o.rec_clear |= bit;
                o.rec_set &= !bit;
            } else {
                o.rec_set |= bit;
                o.rec_clear &= !bit;
            }
            continue;
        }
        let (flag, on) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, true),
            "rw" => (MsFlags::MS_RDONLY, false),
            "nosuid" => (MsFlags::MS_NOSUID, true),
            "suid" => (MsFlags::MS_NOSUID, false),
            "nodev" => (MsFlags::MS_NODEV, true),
            "dev" => (MsFlags::MS_NODEV, false),
            "noexec" => (MsFlags::MS_NOEXEC, true),
            "exec" => (MsFlags::MS_NOEXEC, false),
            "sync" => (MsFlags::MS_SYNCHRONOUS, true),
            "async" => (MsFlags::MS_SYNCHRONOUS, false),
            "dirsync" => (MsFlags::MS_DIRSYNC, true),
            "remount" => (MsFlags::MS_REMOUNT, true),
            "mand" => (MsFlags::MS_MANDLOCK, true),
            "nomand" => (MsFlags::MS_MANDLOCK, false),
            "atime" => (MsFlags::MS_NOATIME, false),
            "noatime" => (MsFlags::MS_NOATIME, true),
            "diratime" => (MsFlags::MS_NODIRATIME, false),
            "nodiratime" => (MsFlags::MS_NODIRATIME, true),
            "relatime" => (MsFlags::MS_RELATIME, true),
            "norelatime" => (MsFlags::MS_RELATIME, false),
            "strictatime" => (MsFlags::MS_STRICTATIME, true),
            "nostrictatime" => (MsFlags::MS_STRICTATIME, false),
            "lazytime" => (MsFlags::MS_LAZYTIME, true),
            "nolazytime" => (MsFlags::MS_LAZYTIME, false),
            "silent" => (MsFlags::MS_SILENT, true),
            "loud" => (MsFlags::MS_SILENT, false),
            "bind" => {
                o.bind = true;
                (MsFlags::MS_BIND, true)
            }
            "rbind" => {
                o.bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, true)
            }
            other => {
                if let Some(p) = propagation_flags(other) {
                    o.propagation.push(p);
                } else if !not_data(other) {
                    o.data.push(other.to_string());
                }
                continue;
            }
        };
        if on {
            o.set |= flag;
            o.clear &= !flag;
        } else {
            o.clear |= flag;
            o.set &= !flag;
        }
    }
    o
}

fn sys_mount(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    nix::mount::mount(src, target, fstype, flags, data)
}

/// The flags a mount already has that a bind remount must keep (locked flags in a user namespace).
fn current_flags(target: &str) -> MsFlags {
    match nix::sys::statvfs::statvfs(target) {
        Ok(s) => {
            use nix::sys::statvfs::FsFlags;
            let f = s.flags();
            let mut m = MsFlags::empty();
            for (a, b) in [
                (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if f.contains(a) {
                    m |= b;
                }
            }
            m
        }
        Err(_) => MsFlags::empty(),
    }
}

/// Remount a bind mount with extra flags, keeping the ones it has.
fn remount_bind(target: &str, add: MsFlags, clear: MsFlags) -> nix::Result<()> {
    let flags = (current_flags(target) | add) & !clear;
    sys_mount(None, target, None, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags, None)
}

/// Everything init needs to know to build the rootfs.
pub struct Plan<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub in_userns: bool,
    pub cgroup_path: &'a str,
    pub new_cgroupns: bool,
    /// Detached ID-mapped trees made by the runtime, by mount index (see `idmap`).
    pub idmapped: &'a [(usize, std::os::fd::OwnedFd)],
    /// Bind sources the runtime opened in init's mount namespace, by mount index (with a new user
    /// namespace: see `process::open_bind_sources`).
    pub bind_sources: &'a [(usize, std::os::fd::OwnedFd)],
    pub mount_ns: MountNs,
}

/// Before pivot_root: propagation, the rootfs as a mount point, the mounts, devices and /dev links.
pub fn prepare(plan: &Plan) -> Result<()> {
    let linux = plan.spec.linux().as_ref();
    let prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation_flags)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    // Shared and unbindable propagation for the root come at the end, after pivot_root (an
    // unbindable / could not be bound, nor the rootfs on it); first cut our mounts off from the
    // host's.
    let first = if prop.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        prop
    };
    let rootfs = plan.rootfs.to_str().ok_or_else(|| err!("root.path: not valid UTF-8"))?;
    // Without a mount namespace of the container's own, the mounts are the runtime's: its
    // propagation is left alone (runc would make the host's / rslave), and the rootfs needs no
    // mount of its own (it is chrooted into, not pivoted to).
    if plan.mount_ns != MountNs::Runtime {
        sys_mount(None, "/", None, first, None).ctx("make / private to the container (rootfsPropagation)")?;
        sys_mount(Some(rootfs), rootfs, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
            .with_ctx(|| format!("bind root.path {rootfs} onto itself"))?;
    }
    let root = fs::open_dir(plan.rootfs)?;
    let mut dev_is_bound = false;
    for (i, m) in plan.spec.mounts().iter().flatten().enumerate() {
        mount_one(plan, root.as_raw_fd(), i, m)
            .map_err(|e| e.context(format!("mounts[{i}] ({})", m.destination().display())))?;
        if m.destination() == Path::new("/dev") && is_bind(m) {
            dev_is_bound = true;
        }
    }
    if !dev_is_bound {
        create_default_devices(root.as_raw_fd(), plan.in_userns)?;
        create_dev_links(root.as_raw_fd())?;
    }
    create_devices(plan, root.as_raw_fd())?;
    // The working directory is made when missing, as runc does.
    if let Some(p) = plan.spec.process() {
        fs::mkpath_in_root(root.as_raw_fd(), p.cwd(), Make::Dir).map_err(|e| e.context("process.cwd"))?;
    }
    Ok(())
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
}

/// Whether a mount is made writable first and read-only (and given its recursive attributes)
/// only at the end, in `finish`, once everything under it is in place (runc: tmpfs mounts, and
/// /dev which gets the device nodes and /dev/pts, /dev/shm...).
fn read_only_later(m: &Mount) -> bool {
    m.typ().as_deref() == Some("tmpfs") || fs::normalize(m.destination()) == Path::new("/dev")
}

/// procfs and sysfs go onto an ordinary directory only: never through a symlink (a symlink in
/// the image pointing them elsewhere in the rootfs, as runc refuses too).
fn check_ordinary_dir(root: RawFd, typ: &str, dest: &Path) -> Result<()> {
    let rel = fs::normalize(dest);
    let rel = rel.strip_prefix("/").unwrap_or(&rel);
    if rel.as_os_str().is_empty() {
        bail!("filesystem {typ:?} cannot be mounted on the root");
    }
    let c = fs::cpath(&rel.to_string_lossy());
    match fs::openat2(
        root,
        &c,
        libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        fs::RESOLVE_IN_ROOT | fs::RESOLVE_NO_SYMLINKS,
    ) {
        Ok(fd) if fs::fstat(fd.as_raw_fd())?.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(()),
        Ok(_) => bail!("filesystem {typ:?} must be mounted on an ordinary directory (not a directory)"),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!("filesystem {typ:?} must be mounted on an ordinary directory (the path has a symlink)")
        }
        Err(e) => Err(Error::sys(dest.display(), e)),
    }
}

/// The recursive attributes (`rro`, `rnosuid`, ...) on the mount at `dest` and every mount below it.
fn set_recursive_attrs(root: RawFd, dest: &Path, opts: &MountOptions) -> Result<()> {
    if opts.rec_set == 0 && opts.rec_clear == 0 {
        return Ok(());
    }
    let target = fs::open_in_root(root, dest).ctx("reopen")?;
    fs::mount_setattr_clear(
        target.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
        opts.rec_set,
        opts.rec_clear,
        None,
    )
    .map_err(|e| Error::sys("recursive mount options (mount_setattr)", e))
}

fn mount_one(plan: &Plan, root: RawFd, index: usize, m: &Mount) -> Result<()> {
    let mut opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let bind = opts.bind || typ == "bind";
    let dest = m.destination();
    // What is not a flag is filesystem data; a bind takes none (the kernel would ignore it): an
    // option nothing understands is an error, never dropped.
    if bind && !opts.data.is_empty() {
        bail!(
            "mounts[{index}].options: unknown option(s) {} (a bind mount takes no filesystem options)",
            opts.data.join(", ")
        );
    }
    if matches!(typ, "proc" | "sysfs") {
        check_ordinary_dir(root, typ, dest)?;
    }
    let later = read_only_later(m);
    if later {
        opts.set &= !MsFlags::MS_RDONLY;
    }
    if typ == "cgroup" {
        mount_cgroup_v1(plan, root, dest, &opts)?;
        return set_recursive_attrs(root, dest, &opts);
    }
    let source = m.source().as_ref().map(|s| {
        if bind && s.is_relative() {
            plan.bundle.join(s)
        } else {
            s.clone()
        }
    });
    // A bind's source is opened once (following symlinks, as a path from the config does) and
    // mounted through that descriptor: what was looked at is what gets mounted, even if a
    // co-tenant renames or swaps the path in between.
    let source_fd = match (&source, bind) {
        (Some(s), true) => Some(match plan.bind_sources.iter().find(|(i, _)| *i == index) {
            Some((_, fd)) => fd.try_clone().with_ctx(|| format!("source {}", s.display()))?,
            None => open_path(s).with_ctx(|| format!("source {}", s.display()))?,
        }),
        _ => None,
    };
    let make = match &source_fd {
        Some(fd) if fs::fstat(fd.as_raw_fd())?.st_mode & libc::S_IFMT != libc::S_IFDIR => Make::File,
        _ => Make::Dir,
    };
    let target = fs::mkpath_in_root(root, dest, make)?;
    let tpath = fs::fd_path(&target);
    let src = source.as_ref().map(|s| s.to_string_lossy().into_owned());
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if bind {
        // The bind is made as a detached tree whose flags are set before it is attached (no
        // re-resolution of `dest` afterwards, which a co-tenant racing symlinks in a shared volume
        // could point at another mount, leaving this one writable); the tree's descriptor then
        // is the attached mount, for the recursive options and propagation.
        let owned;
        let tree = match plan.idmapped.iter().find(|(i, _)| *i == index) {
            Some((_, tree)) => tree,
            None => {
                let sfd = source_fd.as_ref().expect("a bind has a source");
                let mut flags = fs::OPEN_TREE_CLONE | libc::AT_EMPTY_PATH as libc::c_uint;
                if opts.set.contains(MsFlags::MS_REC) {
                    flags |= libc::AT_RECURSIVE as libc::c_uint;
                }
                owned = fs::open_tree(sfd.as_raw_fd(), c"", flags)
                    .map_err(|e| Error::sys(format!("bind {}", src.as_deref().unwrap_or("")), e))?;
                &owned
            }
        };
        let (set, clear) = bind_attrs(
            opts.set & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT),
            opts.clear,
        );
        if set != 0 || clear != 0 {
            fs::mount_setattr_clear(tree.as_raw_fd(), c"", libc::AT_EMPTY_PATH, set, clear, None)
                .map_err(|e| Error::sys("bind mount options (mount_setattr)", e))?;
        }
        if !later && (opts.rec_set != 0 || opts.rec_clear != 0) {
            fs::mount_setattr_clear(
                tree.as_raw_fd(),
                c"",
                libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
                opts.rec_set,
                opts.rec_clear,
                None,
            )
            .map_err(|e| Error::sys("recursive mount options (mount_setattr)", e))?;
        }
        super::idmap::move_mount_onto(tree, &target)
            .map_err(|e| Error::sys(format!("bind {}", src.as_deref().unwrap_or("")), e))?;
        for p in &opts.propagation {
            sys_mount(None, &fs::fd_path(tree), None, *p, None).ctx("set propagation")?;
        }
        return Ok(());
    } else {
        let fstype = if typ.is_empty() { None } else { Some(typ) };
        let flags = opts.set & !MsFlags::MS_REC;
        match sys_mount(src.as_deref(), &tpath, fstype, flags, data) {
            Ok(()) => {}
            // sysfs cannot be mounted in a user namespace that does not own the network namespace:
            // bind the host's instead, as runc does.
            Err(nix::Error::EPERM) if typ == "sysfs" => {
                sys_mount(Some("/sys"), &tpath, None, MsFlags::MS_BIND | MsFlags::MS_REC, None).ctx("bind /sys")?;
                let target = fs::open_in_root(root, dest).ctx("reopen")?;
                remount_bind(&fs::fd_path(&target), flags, MsFlags::empty()).ctx("remount /sys")?;
            }
            Err(e) if data.is_some() => {
                return Err(Error::sys(
                    format!("mount {typ} with mounts[{index}].options {:?}", opts.data.join(",")),
                    e,
                ))
            }
            Err(e) => return Err(Error::sys(format!("mount {typ}"), e)),
        }
    }
    if !later {
        set_recursive_attrs(root, dest, &opts)?;
    }
    if !opts.propagation.is_empty() {
        let target = fs::open_in_root(root, dest).ctx("reopen")?;
        for p in &opts.propagation {
            sys_mount(None, &fs::fd_path(&target), None, *p, None).ctx("set propagation")?;
        }
    }
    Ok(())
}

/// The MOUNT_ATTR_* bits to set and clear for a bind's flags (a bind takes its per-mount flags
/// only; an access-time mode replaces the whole MOUNT_ATTR__ATIME field).
fn bind_attrs(set: MsFlags, clear: MsFlags) -> (u64, u64) {
    let bits = |f: MsFlags| {
        let mut a = 0;
        for (m, attr) in [
            (MsFlags::MS_RDONLY, fs::MOUNT_ATTR_RDONLY),
            (MsFlags::MS_NOSUID, fs::MOUNT_ATTR_NOSUID),
            (MsFlags::MS_NODEV, fs::MOUNT_ATTR_NODEV),
            (MsFlags::MS_NOEXEC, fs::MOUNT_ATTR_NOEXEC),
            (MsFlags::MS_NODIRATIME, fs::MOUNT_ATTR_NODIRATIME),
        ] {
            if f.contains(m) {
                a |= attr;
            }
        }
        a
    };
    let (mut s, mut c) = (bits(set), bits(clear));
    let atime = if set.contains(MsFlags::MS_NOATIME) {
        Some(fs::MOUNT_ATTR_NOATIME)
    } else if set.contains(MsFlags::MS_STRICTATIME) {
        Some(fs::MOUNT_ATTR_STRICTATIME)
    } else if set.contains(MsFlags::MS_RELATIME) {
        Some(fs::MOUNT_ATTR_RELATIME)
    } else {
        None
    };
    if let Some(mode) = atime {
        s |= mode;
        c |= fs::MOUNT_ATTR_ATIME_MASK;
    }
    (s, c)
}

/// After everything is mounted: tmpfs mounts and /dev asked read-only are made so, and get their
/// recursive attributes (see `read_only_later`).
fn finish_delayed_mounts(spec: &Spec, root: RawFd) -> Result<()> {
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !read_only_later(m) {
            continue;
        }
        let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
        let dest = m.destination();
        let ctx = || format!("mounts[{i}] ({})", dest.display());
        if opts.set.contains(MsFlags::MS_RDONLY) {
            let target = fs::open_in_root(root, dest).with_ctx(ctx)?;
            remount_bind(&fs::fd_path(&target), MsFlags::MS_RDONLY, MsFlags::empty())
                .with_ctx(|| format!("{}: remount read-only", ctx()))?;
        }
        set_recursive_attrs(root, dest, &opts).map_err(|e| e.context(ctx()))?;
    }
    Ok(())
}

/// An O_PATH descriptor of `path` (symlinks followed).
fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
}

/// A `cgroup` mount on a v1 or hybrid host: a tmpfs holding a bind of the container's own cgroup of
/// every hierarchy (so the container sees its cgroup as in a cgroup namespace, even without one). On a pure v2 host the
/// cgroup2 filesystem itself is mounted.
fn mount_cgroup_v1(plan: &Plan, root: RawFd, dest: &Path, opts: &MountOptions) -> Result<()> {
    let (layout, _) = crate::cgroups::hierarchies();
    let target = fs::mkpath_in_root(root, dest, Make::Dir)?;
    let flags = opts.set & !(MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC);
    if layout == crate::cgroups::Layout::V2 && !plan.new_cgroupns {
        // Without a cgroup namespace a fresh cgroup2 mount would show the host's root: bind the
        // container's own cgroup instead, as runc does.
        let cg = crate::cgroups::Cgroup::open(plan.cgroup_path);
        let (_, dir) = cg.dirs.first().ok_or_else(|| crate::err!("no cgroup2 hierarchy"))?;
        let tpath = fs::fd_path(&target);
        sys_mount(
            Some(&*dir.to_string_lossy()),
            &tpath,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .with_ctx(|| format!("bind cgroup {}", dir.display()))?;
        return remount_bind(
            &fs::fd_path(&fs::open_in_root(root, dest).ctx("reopen")?),
            flags | (opts.set & MsFlags::MS_RDONLY),
            MsFlags::empty(),
        )
        .ctx("remount cgroup");
    }
    if layout == crate::cgroups::Layout::V2 {
        return sys_mount(
            Some("cgroup2"),
            &fs::fd_path(&target),
            Some("cgroup2"),
            opts.set & !MsFlags::MS_REC,
            None,
        )
        .ctx("mount cgroup2");
    }
    sys_mount(
        Some("tmpfs"),
        &fs::fd_path(&target),
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )
    .ctx("mount tmpfs for cgroup")?;
    let cg = crate::cgroups::Cgroup::open(plan.cgroup_path);
    for (h, dir) in &cg.dirs {
        let name = if h.v2 {
            "unified".to_string()
        } else {
            h.name.trim_start_matches("name=").to_string()
        };
        let sub = fs::mkpath_in_root(root, &dest.join(&name), Make::Dir)?;
        // The container's own cgroup, with or without a cgroup namespace (as runc does): engines
        // such as podman share the host's cgroup namespace on v1 and expect /sys/fs/cgroup/<ctrl>
        // inside to show the container's limits, not the host's root.
        let src = dir.clone();
        sys_mount(
            Some(&*src.to_string_lossy()),
            &fs::fd_path(&sub),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .with_ctx(|| format!("bind cgroup {}", src.display()))?;
        let sub = fs::open_in_root(root, &dest.join(&name)).ctx("reopen")?;
        remount_bind(
            &fs::fd_path(&sub),
            flags | (opts.set & MsFlags::MS_RDONLY),
            MsFlags::empty(),
        )
        .ctx("remount cgroup")?;
        // Comounted controllers (cpu,cpuacct) are also reachable by each name.
        if h.name.contains(',') {
            for part in h.name.split(',') {
                let link = fs::cpath(part);
                let to = fs::cpath(&name);
                // SAFETY: target is a directory descriptor; both strings are NUL-terminated.
                unsafe {
                    libc::symlinkat(
                        to.as_ptr(),
                        fs::open_in_root(root, dest).ctx("reopen")?.as_raw_fd(),
                        link.as_ptr(),
                    )
                };
            }
        }
    }
    if opts.set.contains(MsFlags::MS_RDONLY) {
        let target = fs::open_in_root(root, dest).ctx("reopen")?;
        remount_bind(&fs::fd_path(&target), MsFlags::MS_RDONLY, MsFlags::empty())
            .ctx("remount cgroup tmpfs read-only")?;
    }
    Ok(())
}

/// The devices every container gets: (name, major, minor).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn create_default_devices(root: RawFd, in_userns: bool) -> Result<()> {
    let dev = fs::mkpath_in_root(root, Path::new("/dev"), Make::Dir)?;
    for &(name, major, minor) in DEFAULT_DEVICES {
        make_device(&dev, name, libc::S_IFCHR, major, minor, 0o666, 0, 0, in_userns)
            .map_err(|e| e.context(format!("/dev/{name}")))?;
    }
    Ok(())
}

/// mknod a device in `dir`, or, where mknod is not allowed (user namespace), bind the host's.
///
/// `dir` may be a directory others can write (a bind-mounted shared volume): every step after the
/// name is made goes through a descriptor of the node itself, opened without following symlinks
/// and checked to be what was made, so a concurrent swap of the name for a symlink cannot redirect
/// the chmod, chown or bind mount to another file.
#[allow(clippy::too_many_arguments)]
fn make_device(
    dir: &OwnedFd,
    name: &str,
    kind: libc::mode_t,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    in_userns: bool,
) -> Result<()> {
    let c = fs::cpath(name);
    // SAFETY: dir is a directory descriptor, c NUL-terminated; unlinkat does not follow symlinks.
    unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    if in_userns {
        // O_EXCL (which implies not following a final symlink): the bind target is a new, empty
        // regular file of our own, and the mount goes onto that descriptor.
        // SAFETY: as above.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_RDONLY | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            return Err(Error::sys("create bind target", std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just opened and is owned by nothing else.
        let target = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let host = format!("/dev/{name}");
        return sys_mount(Some(&host), &fs::fd_path(&target), None, MsFlags::MS_BIND, None).ctx("bind from host");
    }
    let dev = libc::makedev(major as u32, minor as u32);
    // SAFETY: as above; mknodat never follows a symlink at the final component (EEXIST).
    let r = unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), kind | (mode & 0o7777), dev) };
    if r != 0 {
        return Err(Error::sys("mknod", std::io::Error::last_os_error()));
    }
    let node = open_node_nofollow(dir, &c)?;
    let st = fs::fstat(node.as_raw_fd())?;
    let rdev_matters = kind != libc::S_IFIFO;
    // A node just made has one link: another one swapped in under the name might be a hard link
    // to a node elsewhere.
    if st.st_mode & libc::S_IFMT != kind || (rdev_matters && st.st_rdev != dev) || st.st_nlink != 1 {
        bail!("{name}: replaced by something else while being created (a concurrent change to the directory)");
    }
    // mknod is subject to the umask: set the mode and owner explicitly, on the node we made.
    set_mode_and_owner(&node, mode & 0o7777, uid, gid)
}

/// Open `name` in `dir` as an O_PATH descriptor of the entry itself, never a symlink's target.
fn open_node_nofollow(dir: &OwnedFd, name: &std::ffi::CStr) -> Result<OwnedFd> {
    // SAFETY: dir is a directory descriptor, name NUL-terminated.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::sys("open the new node", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// chmod and chown the inode an O_PATH descriptor refers to. fchmod does not take O_PATH
/// descriptors; fchmodat2(AT_EMPTY_PATH) does (Linux 6.6), else chmod of the descriptor's
/// /proc/self/fd magic link, which resolves to that very inode (not to any path), and a node
/// checked not to be a symlink. fchownat(AT_EMPTY_PATH) takes O_PATH descriptors everywhere.
fn set_mode_and_owner(node: &OwnedFd, mode: u32, uid: u32, gid: u32) -> Result<()> {
    let empty = fs::cpath("");
    // SAFETY: integer arguments and a NUL-terminated empty path; AT_EMPTY_PATH acts on the fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            node.as_raw_fd(),
            empty.as_ptr(),
            mode as libc::c_uint,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
            return Err(Error::sys("chmod", e));
        }
        let link = fs::cpath(&fs::fd_path(node));
        // SAFETY: NUL-terminated path; the magic link names the descriptor's inode.
        if unsafe { libc::chmod(link.as_ptr(), mode) } != 0 {
            return Err(Error::sys("chmod", std::io::Error::last_os_error()));
        }
    }
    // SAFETY: as above.
    if unsafe { libc::fchownat(node.as_raw_fd(), empty.as_ptr(), uid, gid, libc::AT_EMPTY_PATH) } != 0 {
        return Err(Error::sys("chown", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn create_dev_links(root: RawFd) -> Result<()> {
    let dev = fs::mkpath_in_root(root, Path::new("/dev"), Make::Dir)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (to, name) in links {
        let (t, n) = (fs::cpath(to), fs::cpath(name));
        // SAFETY: dev is a directory descriptor; strings are NUL-terminated.
        unsafe {
            if name == "ptmx" {
                libc::unlinkat(dev.as_raw_fd(), n.as_ptr(), 0);
            }
            if libc::symlinkat(t.as_ptr(), dev.as_raw_fd(), n.as_ptr()) != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(Error::sys(format!("symlink /dev/{name}"), e));
                }
            }
        }
    }
    Ok(())
}

fn create_devices(plan: &Plan, root: RawFd) -> Result<()> {
    let Some(devices) = plan.spec.linux().as_ref().and_then(|l| l.devices().as_ref()) else {
        return Ok(());
    };
    for (i, d) in devices.iter().enumerate() {
        let path = d.path();
        let ctx = || format!("linux.devices[{i}] ({})", path.display());
        if !path.starts_with("/dev") {
            bail!("{}: device paths must be under /dev", ctx());
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => bail!("{}: type 'a' is not a device node", ctx()),
        };
        let parent = path.parent().unwrap_or(Path::new("/dev"));
        let name = path
            .file_name()
            .ok_or_else(|| err!("{}: no file name", ctx()))?
            .to_string_lossy();
        let dir = fs::mkpath_in_root(root, parent, Make::Dir).map_err(|e| e.context(ctx()))?;
        make_device(
            &dir,
            &name,
            kind,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
            plan.in_userns,
        )
        .map_err(|e| e.context(ctx()))?;
    }
    Ok(())
}

/// Make the prepared rootfs the root: pivot_root, or with `no_pivot` move it over / and chroot;
/// in a mount namespace that is not the container's own (joined, or the runtime's), a chroot
/// only: a pivot_root there would move every other process of that namespace too.
pub fn enter(rootfs: &Path, no_pivot: bool, mount_ns: MountNs) -> Result<()> {
    if mount_ns != MountNs::New {
        nix::unistd::chdir(rootfs).ctx("chdir to rootfs")?;
        nix::unistd::chroot(".").ctx("chroot")?;
        nix::unistd::chdir("/").ctx("chdir /")?;
        return Ok(());
    }
    if no_pivot {
        hide_host_procfs_and_sysfs(rootfs)?;
        nix::unistd::chdir(rootfs).ctx("chdir to rootfs")?;
        sys_mount(Some("."), "/", None, MsFlags::MS_MOVE, None).ctx("move rootfs to / (--no-pivot)")?;
        nix::unistd::chroot(".").ctx("chroot")?;
        nix::unistd::chdir("/").ctx("chdir /")?;
        return Ok(());
    }
    let new_root = fs::open_dir(rootfs)?;
    let old_root = fs::open_dir(Path::new("/"))?;
    nix::unistd::fchdir(&new_root).ctx("chdir to rootfs")?;
    nix::unistd::pivot_root(".", ".").ctx("pivot_root")?;
    // The old root is now stacked under the new one at "/": detach it without propagating.
    nix::unistd::fchdir(&old_root).ctx("chdir to old root")?;
    sys_mount(None, ".", None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None).ctx("make old root slave")?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).ctx("detach old root")?;
    nix::unistd::chdir("/").ctx("chdir /")?;
    Ok(())
}

/// With `--no-pivot` the host's mounts stay in the container's mount namespace, under the moved
/// root: a full procfs or sysfs mount there, even unreachable by path, lets a process of the
/// container mount a fresh, unmasked procfs or sysfs from a nested user namespace (the kernel
/// allows it when a full one is already in the namespace). As runc does, every full procfs and
/// sysfs mount outside the rootfs is detached from this namespace first (made slave so nothing
/// propagates to the host), or covered with a tmpfs where it cannot be detached.
fn hide_host_procfs_and_sysfs(rootfs: &Path) -> Result<()> {
    // The rootfs as mountinfo names it (the container's own /proc and /sys are under it).
    let rootfs = &std::fs::canonicalize(rootfs).with_ctx(|| format!("root.path {}", rootfs.display()))?;
    let text = std::fs::read_to_string("/proc/self/mountinfo").ctx("/proc/self/mountinfo")?;
    let mut targets: Vec<std::path::PathBuf> = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = pre.split(' ').collect();
        let fstype = post.split(' ').next().unwrap_or("");
        if f.len() < 5 || f[3] != "/" || !matches!(fstype, "proc" | "sysfs") {
            continue;
        }
        let mount_point = std::path::PathBuf::from(unescape_mountinfo(f[4]));
        if mount_point.starts_with(rootfs) {
            continue;
        }
        targets.push(mount_point);
    }
    // Deepest first, so that a mount under another is handled before it is hidden.
    targets.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in targets {
        let ps = p.to_string_lossy();
        match sys_mount(None, &ps, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None) {
            Ok(()) => {}
            Err(nix::Error::ENOENT) => continue,
            Err(e) => return Err(Error::sys(format!("--no-pivot: make {ps} slave"), e)),
        }
        match nix::mount::umount2(&*ps, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::Error::EINVAL) | Err(nix::Error::EPERM) => {
                sys_mount(Some("tmpfs"), &ps, Some("tmpfs"), MsFlags::empty(), None)
                    .with_ctx(|| format!("--no-pivot: cover {ps}"))?;
            }
            Err(e) => return Err(Error::sys(format!("--no-pivot: detach {ps}"), e)),
        }
    }
    Ok(())
}

/// Detach every mount strictly below `rootfs` in the runtime's own mount namespace, deepest
/// first: what a container without a mount namespace of its own mounted there (the rootfs itself,
/// which may be an engine's mount, stays).
pub fn detach_mounts_under(rootfs: &Path) -> Result<()> {
    let rootfs = std::fs::canonicalize(rootfs).unwrap_or_else(|_| rootfs.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").ctx("/proc/self/mountinfo")?;
    let mut below: Vec<std::path::PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| std::path::PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&rootfs) && *p != rootfs)
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    below.dedup();
    for p in below {
        match nix::mount::umount2(
            &p,
            nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW,
        ) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(Error::sys(format!("detach {}", p.display()), e)),
        }
    }
    Ok(())
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// After entering the root: sysctls, masked and read-only paths, the read-only root, propagation.
pub fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        for (k, v) in sysctl {
            let path = format!("sys/{}", k.replace('.', "/"));
            super::procfs::write(&path, v.as_bytes()).map_err(|e| e.context(format!("linux.sysctl {k}={v}")))?;
        }
    }
    let root = fs::open_dir(Path::new("/"))?;
    for p in linux.and_then(|l| l.masked_paths().as_ref()).into_iter().flatten() {
        mask_path(root.as_raw_fd(), p).map_err(|e| e.context(format!("linux.maskedPaths {p}")))?;
    }
    for p in linux.and_then(|l| l.readonly_paths().as_ref()).into_iter().flatten() {
        readonly_path(root.as_raw_fd(), p).map_err(|e| e.context(format!("linux.readonlyPaths {p}")))?;
    }
    finish_delayed_mounts(spec, root.as_raw_fd())?;
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        remount_bind("/", MsFlags::MS_RDONLY, MsFlags::empty()).ctx("root.readonly: remount / read-only")?;
    }
    if let Some(p) = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(propagation_flags)
    {
        if p.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
            sys_mount(None, "/", None, p, None).ctx("linux.rootfsPropagation")?;
        }
    }
    Ok(())
}

/// Masked and read-only paths are mounted from descriptor to descriptor (a detached mount moved
/// onto the target's O_PATH handle): no "/proc/self/fd/N" path, which would be resolved through
/// the container's /proc after pivot_root (a fake one could send the mount to a decoy).
fn mask_path(root: RawFd, p: &str) -> Result<()> {
    let target = match fs::open_in_root(root, Path::new(p)) {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(Error::sys("resolve", e)),
    };
    let st = fs::fstat(target.as_raw_fd())?;
    let cover = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        fs::fresh_mount(c"tmpfs", &[(c"size", c"0k"), (c"mode", c"755")], fs::MOUNT_ATTR_RDONLY)
            .map_err(|e| Error::sys("make a read-only tmpfs", e))?
    } else {
        // Only the real null device may hide a file (it could have been swapped for something else).
        let null = fs::open_in_root(root, Path::new("/dev/null")).ctx("/dev/null")?;
        let nst = fs::fstat(null.as_raw_fd())?;
        if nst.st_mode & libc::S_IFMT != libc::S_IFCHR || nst.st_rdev != libc::makedev(1, 3) {
            bail!("/dev/null is not the null device (1:3)");
        }
        fs::open_tree(
            null.as_raw_fd(),
            c"",
            fs::OPEN_TREE_CLONE | libc::AT_EMPTY_PATH as libc::c_uint,
        )
        .map_err(|e| Error::sys("clone /dev/null", e))?
    };
    super::idmap::move_mount_onto(&cover, &target).map_err(|e| Error::sys("mount over", e))
}

fn readonly_path(root: RawFd, p: &str) -> Result<()> {
    let target = match fs::open_in_root(root, Path::new(p)) {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(Error::sys("resolve", e)),
    };
    // A recursive copy of what is there, made read-only while detached, then moved over it.
    let copy = fs::open_tree(
        target.as_raw_fd(),
        c"",
        fs::OPEN_TREE_CLONE | (libc::AT_RECURSIVE | libc::AT_EMPTY_PATH) as libc::c_uint,
    )
    .map_err(|e| Error::sys("bind onto itself", e))?;
    fs::mount_setattr(
        copy.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
        fs::MOUNT_ATTR_RDONLY,
        None,
    )
    .map_err(|e| Error::sys("remount read-only", e))?;
    super::idmap::move_mount_onto(&copy, &target).map_err(|e| Error::sys("mount over", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        parse_options(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let o = opts(&["nosuid", "noexec", "mode=755", "size=65536k", "rprivate"]);
        assert_eq!(o.set, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        let o = opts(&["rbind", "ro"]);
        assert!(o.bind && o.set.contains(MsFlags::MS_REC | MsFlags::MS_RDONLY));
        let o = opts(&["ro", "rw"]);
        assert!(!o.set.contains(MsFlags::MS_RDONLY) && o.clear.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn recursive_options_are_attributes_not_data() {
        let o = opts(&["rbind", "rro", "rnosuid", "rnoatime", "rnosymfollow", "idmap", "x-foo"]);
        assert!(o.data.is_empty(), "{:?}", o.data);
        assert_eq!(
            o.rec_set,
            fs::MOUNT_ATTR_RDONLY | fs::MOUNT_ATTR_NOSUID | fs::MOUNT_ATTR_NOATIME | fs::MOUNT_ATTR_NOSYMFOLLOW
        );
        assert_eq!(o.rec_clear, fs::MOUNT_ATTR_ATIME_MASK);
        let o = opts(&["rro", "rrw", "rnorelatime"]);
        assert_eq!(o.rec_set, fs::MOUNT_ATTR_STRICTATIME);
        assert_eq!(o.rec_clear, fs::MOUNT_ATTR_RDONLY | fs::MOUNT_ATTR_ATIME_MASK);
        assert_eq!(opts(&["rbind", "bogus"]).data, vec!["bogus"]);
        for (name, _, _) in RECURSIVE_OPTIONS {
            assert!(crate::features::MOUNT_OPTIONS.contains(name), "{name} not in features");
        }
    }

    #[test]
    fn propagation_names() {
        assert_eq!(propagation_flags("rslave"), Some(MsFlags::MS_SLAVE | MsFlags::MS_REC));
        assert_eq!(propagation_flags("bogus"), None);
    }
}
