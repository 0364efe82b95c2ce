//! Verified writes to procfs (CVE-2025-52881 class). Init writes a few /proc files after it has
//! entered the container's root (oom_score_adj, sysctls, LSM attributes); going through the
//! container's `/proc` path would let a crafted rootfs (a fake /proc directory, symlinks, a bind
//! mount over a proc file) redirect those writes to another file. Instead init opens a private
//! procfs of its own (`fsopen("proc")` + `fsmount`, a detached mount nobody else can touch; or,
//! where a new procfs may not be mounted, a detached clone of the /proc mount that is checked to
//! really be procfs), and every write opens its file beneath that handle with `openat2`
//! (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV) and checks
//! that the opened file is on procfs. The handle is made once, only when something is written, and
//! closed ([`release`]) before the process enters the container's working directory.

use super::fs::OPEN_TREE_CLONE;
use crate::{bail, Error, Result};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

fn is_procfs(fd: RawFd) -> bool {
    // SAFETY: statfs is plain C data (integers only): all zeroes is a valid value of it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid out-parameter.
    unsafe { libc::fstatfs(fd, &mut st) == 0 && st.f_type as i64 == PROC_SUPER_MAGIC }
}

fn fresh_procfs() -> std::io::Result<OwnedFd> {
    use super::fs::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID};
    super::fs::fresh_mount(c"proc", &[], MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)
}

fn cloned_proc() -> std::io::Result<OwnedFd> {
    super::fs::open_tree(libc::AT_FDCWD, c"/proc", OPEN_TREE_CLONE)
}

/// This process's private procfs handle, made on first use and dropped by [`release`].
static HANDLE: Mutex<Option<OwnedFd>> = Mutex::new(None);

fn handle() -> Result<RawFd> {
    let mut h = HANDLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(fd) = h.as_ref() {
        return Ok(fd.as_raw_fd());
    }
    let fd = match fresh_procfs() {
        Ok(fd) => fd,
        Err(first) => {
            cloned_proc().map_err(|e| Error::sys(format!("open a private procfs ({first}; clone /proc)"), e))?
        }
    };
    if !is_procfs(fd.as_raw_fd()) {
        bail!("/proc is not procfs");
    }
    Ok(h.insert(fd).as_raw_fd())
}

/// Close the private procfs handle: it is an unmasked, writable procfs of the host's kernel
/// (host sysctls included), so init and exec children drop it before they enter the container's
/// working directory and drop privileges. A later write opens a new one.
pub fn release() {
    HANDLE.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// Open the procfs file `rel` (see [`write`] for its form) beneath the private handle, without
/// following any symlink, and check that it is on procfs.
fn open(rel: &str, flags: libc::c_int) -> Result<(std::fs::File, String)> {
    let root = handle()?;
    let rel = match rel.strip_prefix("self/") {
        Some(rest) => format!("{}/{rest}", std::process::id()),
        None => rel.to_string(),
    };
    let path = std::ffi::CString::new(rel.as_str()).map_err(|_| crate::err!("{rel:?}: NUL byte"))?;
    use super::fs::{openat2, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV};
    let resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    let file = std::fs::File::from(
        openat2(root, &path, flags | libc::O_CLOEXEC, resolve).map_err(|e| Error::sys(format!("/proc/{rel}"), e))?,
    );
    if !is_procfs(file.as_raw_fd()) {
        bail!("/proc/{rel}: not a procfs file");
    }
    Ok((file, rel))
}

/// Whether the procfs file `rel` exists (looked up as [`open`] does, through the private procfs).
pub fn exists(rel: &str) -> Result<bool> {
    match open(rel, libc::O_PATH) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Read the procfs file `rel` (a small one: at most 64 KiB) through the private procfs, never the
/// container's /proc (which a hostile image or mount could fake).
pub fn read(rel: &str) -> Result<String> {
    let (file, rel) = open(rel, libc::O_RDONLY)?;
    let mut text = String::new();
    use std::io::Read;
    (&file)
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| Error::sys(format!("read /proc/{rel}"), e))?;
    Ok(text)
}

/// Write `data` to the procfs file `rel` (relative to the procfs root, e.g. "sys/net/ipv4/ip_forward"
/// or "self/oom_score_adj", where "self" is replaced by this process's pid since symlinks are not
/// followed).
pub fn write(rel: &str, data: &[u8]) -> Result<()> {
    let (file, rel) = open(rel, libc::O_WRONLY)?;
    use std::io::Write;
    (&file)
        .write_all(data)
        .map_err(|e| Error::sys(format!("write /proc/{rel}"), e))
}
