//! Path resolution inside a container's root filesystem that cannot be redirected out of it.
//! Every lookup goes through `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to a
//! descriptor of the rootfs, so an absolute or `..` symlink planted in the rootfs resolves inside it.
//! Missing components are created one at a time under the descriptor of their resolved parent.
//! Callers mount onto the resolved descriptor through `/proc/self/fd/N`, never onto a path string.

use crate::error::Context;
use crate::{bail, Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path};

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub(crate) const RESOLVE_NO_XDEV: u64 = 0x01;
pub(crate) const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub(crate) const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub(crate) const RESOLVE_BENEATH: u64 = 0x08;
pub(crate) const RESOLVE_IN_ROOT: u64 = 0x10;

/// open_tree(2): a detached copy of the mount (a bind mount no namespace can see yet).
pub(crate) const OPEN_TREE_CLONE: libc::c_uint = 1;
/// mount_setattr(2) attributes.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub(crate) const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
pub(crate) const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub(crate) const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub(crate) const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub(crate) const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub(crate) const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub(crate) const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// open_tree(2) of `path` under `dir` with `flags` (OPEN_TREE_CLONE, AT_RECURSIVE, ...); the
/// descriptor is always close-on-exec.
pub(crate) fn open_tree(dir: RawFd, path: &std::ffi::CStr, flags: libc::c_uint) -> std::io::Result<OwnedFd> {
    // SAFETY: path is NUL-terminated; the result is a new descriptor we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir,
            path.as_ptr(),
            flags | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just created.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A new, detached mount of filesystem `fstype` (fsopen + fsconfig + fsmount) with the string
/// options `opts` and the MOUNT_ATTR_* bits `attrs`: a mount no path leads to until it is moved
/// with `move_mount_onto`, so nothing in the container's tree can redirect it.
pub(crate) fn fresh_mount(
    fstype: &std::ffi::CStr,
    opts: &[(&std::ffi::CStr, &std::ffi::CStr)],
    attrs: u64,
) -> std::io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let last = || std::io::Error::last_os_error();
    // SAFETY: fsopen with a NUL-terminated name; the result is a new descriptor we own.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(last());
    }
    // SAFETY: fresh descriptor.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    for (k, v) in opts {
        // SAFETY: fsconfig on our fs context with NUL-terminated key and value.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if r != 0 {
            return Err(last());
        }
    }
    // SAFETY: fsconfig CMD_CREATE takes no key or value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    if r != 0 {
        return Err(last());
    }
    // SAFETY: fsmount of our configured context; the result is a new descriptor we own.
    let m = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    };
    if m < 0 {
        return Err(last());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2): set the MOUNT_ATTR_* bits `set` on the mount at `path` under `dir` (`at`:
/// AT_EMPTY_PATH, AT_RECURSIVE), with the ID mapping of `userns` for MOUNT_ATTR_IDMAP. No
/// allocation: usable between fork and exec.
pub(crate) fn mount_setattr(
    dir: RawFd,
    path: &std::ffi::CStr,
    at: libc::c_int,
    set: u64,
    userns: Option<RawFd>,
) -> std::io::Result<()> {
    mount_setattr_clear(dir, path, at, set, 0, userns)
}

/// mount_setattr(2) setting the MOUNT_ATTR_* bits `set` and clearing `clear` (an access-time
/// setting needs MOUNT_ATTR__ATIME in `clear`).
pub(crate) fn mount_setattr_clear(
    dir: RawFd,
    path: &std::ffi::CStr,
    at: libc::c_int,
    set: u64,
    clear: u64,
    userns: Option<RawFd>,
) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.map_or(0, |fd| fd as u64),
    };
    // SAFETY: path is NUL-terminated, attr is a valid mount_attr of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir,
            path.as_ptr(),
            at,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// openat2(2) of `path` under `dir` with open `flags` and `resolve` restrictions, retried on
/// EAGAIN/EINTR.
pub(crate) fn openat2(dir: RawFd, path: &std::ffi::CStr, flags: libc::c_int, resolve: u64) -> std::io::Result<OwnedFd> {
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve,
    };
    loop {
        // SAFETY: path is NUL-terminated, how is a valid open_how of the size we pass.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just gave us this descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) && e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn cstr(p: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| crate::err!("{}: path contains a NUL byte", p.display()))
}

/// Open `path` (taken as relative to `root`, even if absolute) as an O_PATH descriptor.
pub fn open_in_root(root: RawFd, path: &Path) -> std::io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = cstr(rel).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    openat2(
        root,
        &c,
        libc::O_PATH | libc::O_CLOEXEC,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
}

/// What to create when the last component of a path is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Make {
    Dir,
    File,
}

/// Resolve `path` inside `root`, creating missing components (directories, and the last one as
/// `last`). Returns an O_PATH descriptor of the result.
pub fn mkpath_in_root(root: RawFd, path: &Path, last: Make) -> Result<OwnedFd> {
    mkpath_depth(root, path, last, 0)
}

fn mkpath_depth(root: RawFd, path: &Path, last: Make, depth: u32) -> Result<OwnedFd> {
    if depth > 40 {
        bail!("{}: too many levels of symbolic links", path.display());
    }
    if let Ok(fd) = open_in_root(root, path) {
        return Ok(fd);
    }
    let path = &normalize(path);
    let comps: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut cur = open_in_root(root, Path::new("/")).ctx("rootfs")?;
    let mut so_far = std::path::PathBuf::from("/");
    for (i, name) in comps.iter().enumerate() {
        so_far.push(name);
        match open_in_root(root, &so_far) {
            Ok(fd) => {
                cur = fd;
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::sys(so_far.display(), e)),
        }
        let c = cstr(Path::new(name))?;
        let is_last = i + 1 == comps.len();
        // SAFETY: cur is a directory descriptor (O_PATH works as a dirfd); c is NUL-terminated.
        let r = unsafe {
            if is_last && last == Make::File {
                let fd = libc::openat(
                    cur.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd.min(0)
            } else {
                libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), 0o755)
            }
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(Error::sys(format!("create {}", so_far.display()), e));
            }
            // A dangling symlink: create what it points to, taken inside the root.
            if let Some(target) = readlinkat(cur.as_raw_fd(), &c) {
                let base = so_far.parent().unwrap_or(Path::new("/"));
                let mut next = if target.is_absolute() {
                    target
                } else {
                    base.join(target)
                };
                for rest in &comps[i + 1..] {
                    next.push(rest);
                }
                return mkpath_depth(root, &normalize(&next), last, depth + 1);
            }
        }
        cur = open_in_root(root, &so_far).with_ctx(|| format!("{}", so_far.display()))?;
    }
    Ok(cur)
}

fn readlinkat(dir: RawFd, name: &CString) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = [0u8; 4096];
    // SAFETY: buf is valid for its length; name is NUL-terminated.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n > 0).then(|| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&buf[..n as usize])))
}

/// Lexically clean a path taken inside a root: `..` at the root stays at the root.
pub fn normalize(p: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The magic-link path through which a descriptor can be used as a mount source or target.
pub fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Open a directory as a plain O_PATH descriptor (the container's root).
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: c is NUL-terminated.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::sys(path.display(), std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// fstat a descriptor.
pub fn fstat(fd: RawFd) -> Result<libc::stat> {
    // SAFETY: st is written by the kernel on success.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(Error::sys("fstat", std::io::Error::last_os_error()));
        }
        Ok(st)
    }
}

pub fn cpath(p: &str) -> CString {
    CString::new(p).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_leave_the_root() {
        let base = std::env::temp_dir().join(format!("berth-fs-test-{}", std::process::id()));
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        let rfd = open_dir(&root).unwrap();
        // Creating through the absolute symlink lands inside the root.
        mkpath_in_root(rfd.as_raw_fd(), Path::new("/evil/sub"), Make::Dir).unwrap();
        assert!(root.join(outside.strip_prefix("/").unwrap()).join("sub").is_dir());
        let _ = mkpath_in_root(rfd.as_raw_fd(), Path::new("/up/x"), Make::File);
        assert!(!outside.join("sub").exists());
        assert!(root.join("x").exists(), "'..' symlink resolved at the root");
        assert!(!base.join("x").exists());
        mkpath_in_root(rfd.as_raw_fd(), Path::new("/a/b/c"), Make::Dir).unwrap();
        assert!(root.join("a/b/c").is_dir());
        std::fs::remove_dir_all(base).unwrap();
    }
}
