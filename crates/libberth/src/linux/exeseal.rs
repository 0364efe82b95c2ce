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
//! (kernel < 5.12) or the privilege to use it (rootless), Berth carries on unprotected and says so
//! at debug level.

use super::fs::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, OPEN_TREE_CLONE};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

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

/// Whether the running binary is on a read-only mount (so it cannot be opened for writing).
pub fn exe_is_sealed() -> bool {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path, st is a valid out-parameter.
    unsafe { libc::statvfs(c"/proc/self/exe".as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0 }
}

/// Re-execute the running binary from a read-only private mount of itself, with the same
/// arguments and environment. Returns only when that is unnecessary or impossible.
pub fn reexec_sealed() {
    if exe_is_sealed() {
        return;
    }
    if let Err(e) = try_reexec() {
        crate::log::debug(&format!(
            "runtime binary not sealed (it stays writable through /proc/<pid>/exe): {e}"
        ));
    }
}

fn try_reexec() -> std::io::Result<()> {
    let tree = fs::open_tree(libc::AT_FDCWD, c"/proc/self/exe", OPEN_TREE_CLONE)?;
    fs::mount_setattr(
        tree.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        None,
    )?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    // The sealed image sees itself as "/" of a detached mount: pass on where it was installed.
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
    // SAFETY: execveat of our sealed tree with NUL-terminated, NULL-ended argv and envp.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            tree.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(std::io::Error::last_os_error())
}
