//! Protection of the runtime binary against being overwritten from a container (CVE-2019-5736
//! class). The container's init is a clone of the `berth create`/`run` process, so until it execs
//! the user's program `/proc/<init>/exe` is the Berth binary; a process in the container that gets
//! hold of that file (for instance by making init exec `#!/proc/self/exe`) could reopen it for
//! writing once the runtime has exited.
//!
//! Before it makes a container, the runtime therefore re-executes itself from a private read-only
//! bind mount of its own binary: `open_tree(OPEN_TREE_CLONE)` of `/proc/self/exe` gives a detached
//! mount no namespace can see, `mount_setattr(MOUNT_ATTR_RDONLY)` makes it read-only, and
//! `execveat(AT_EMPTY_PATH)` runs it. Every later reopen of the binary through `/proc/*/exe` or a
//! descriptor then lands on that mount and fails with EROFS, and nobody in the container can make
//! it writable (the mount belongs to the host's mount namespace). Unlike a copy into a sealed
//! memfd, nothing is duplicated: the pages are the page cache of the installed binary, so no
//! container memory cgroup is charged for it. The cost is one execve.
//!
//! If the binary already lives on a read-only mount there is nothing to do. Without the mount API
//! (kernel < 5.12) or the privilege to use it (rootless: the binary is then often the user's own,
//! and a container whose root is that user could rewrite it), Berth copies itself into a memfd,
//! seals it against any write and runs that, as runc does; the copy costs the binary's size in
//! memory for as long as the runtime (or the container's init before its exec) runs. Only when
//! both ways fail (a kernel refusing executable memfds) does Berth carry on unprotected, and says
//! so at debug level.

use super::fs::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, OPEN_TREE_CLONE};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

/// The environment variable in which a sealed re-exec learns the installed binary's path.
const EXE_VAR: &str = "BERTH_INSTALLED_EXE";

/// Where the running runtime binary is installed (its own path, or, in a sealed re-exec, the path
/// it was re-executed from): things installed next to it are found from there.
pub fn installed_exe() -> std::io::Result<std::path::PathBuf> {
    match std::env::var_os(EXE_VAR) {
        Some(p) if !p.is_empty() => Ok(p.into()),
        _ => std::env::current_exe(),
    }
}

/// Whether the running binary cannot be opened for writing: it is on a read-only mount, or it is
/// a memfd sealed against writes.
pub fn exe_is_sealed() -> bool {
    // SAFETY: statvfs is plain C data (integers only): all zeroes is a valid value of it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path, st is a valid out-parameter.
    if unsafe { libc::statvfs(c"/proc/self/exe".as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0 } {
        return true;
    }
    // SAFETY: open and F_GET_SEALS on a descriptor closed right after (regular files: EINVAL).
    unsafe {
        let fd = libc::open(c"/proc/self/exe".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let seals = libc::fcntl(fd, libc::F_GET_SEALS);
        libc::close(fd);
        seals >= 0 && seals & libc::F_SEAL_WRITE != 0
    }
}

/// Re-execute the running binary from a read-only private mount of itself (or, without the right
/// to make one, from a sealed memfd copy), with the same arguments and environment. Returns only
/// when that is unnecessary or impossible.
pub fn reexec_sealed() {
    if exe_is_sealed() {
        return;
    }
    let by_mount = read_only_mount().and_then(|tree| reexec_from(&tree));
    let Err(mount_err) = by_mount else { return };
    let by_copy = sealed_copy().and_then(|copy| reexec_from(&copy));
    if let Err(copy_err) = by_copy {
        crate::log::debug(&format!(
            "runtime binary not sealed (it stays writable through /proc/<pid>/exe): \
             read-only mount: {mount_err}; sealed copy: {copy_err}"
        ));
    }
}

/// A detached read-only bind mount of the running binary.
fn read_only_mount() -> std::io::Result<OwnedFd> {
    let tree = fs::open_tree(libc::AT_FDCWD, c"/proc/self/exe", OPEN_TREE_CLONE)?;
    fs::mount_setattr(
        tree.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        None,
    )?;
    Ok(tree)
}

/// A copy of the running binary in a memfd sealed against every change, reopened read-only (an
/// execve refuses a file that is open for writing).
fn sealed_copy() -> std::io::Result<OwnedFd> {
    const MFD_EXEC: libc::c_uint = 0x10;
    let name = c"berth";
    // SAFETY: memfd_create with a NUL-terminated name; the result is a new descriptor we own.
    let raw = unsafe {
        let fd = libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | MFD_EXEC);
        if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // Kernels before 6.3 do not know MFD_EXEC (their memfds are executable anyway).
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        } else {
            fd
        }
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just created, ours.
    let mut copy = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    let mut exe = std::fs::File::open("/proc/self/exe")?;
    std::io::copy(&mut exe, &mut copy)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS on our memfd.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
    let read_only = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok(read_only.into())
}

/// execveat the sealed image `image` with this process's arguments and environment; returns only
/// on failure.
fn reexec_from(image: &OwnedFd) -> std::io::Result<()> {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    // The sealed image does not know where it was installed (it is "/" of a detached mount, or a
    // memfd): pass that on.
    let installed = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != EXE_VAR)
        .chain(std::iter::once((EXE_VAR.into(), installed.into_os_string())))
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.as_bytes()).unwrap_or_default()
        })
        .collect();
    let argv = super::init::c_array(&args);
    let envp = super::init::c_array(&env);
    // SAFETY: execveat of our sealed image with NUL-terminated, NULL-ended argv and envp.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            image.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(std::io::Error::last_os_error())
}
