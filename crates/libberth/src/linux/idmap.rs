//! ID-mapped bind mounts (`mounts[].uidMappings`/`gidMappings`, options `idmap` and `ridmap`).
//!
//! Setting MOUNT_ATTR_IDMAP needs privilege over the source filesystem, i.e. in the host's user
//! namespace, so the runtime does it: `open_tree(OPEN_TREE_CLONE)` makes a detached copy of the
//! source, `mount_setattr(MOUNT_ATTR_IDMAP)` gives it the mapping of a user namespace (one made for
//! the mount's own mappings, or the container's when the mount lists none), and the descriptor goes
//! to init over the sync channel (`I<index>` + SCM_RIGHTS), which attaches it at the destination
//! with `move_mount` in place of the bind mount. `ridmap` maps every mount of an `rbind` tree.

use super::fs::{self, MOUNT_ATTR_IDMAP, OPEN_TREE_CLONE};
use crate::error::Context;
use crate::{bail, Error, Result};
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Whether the mount asks for an ID mapping; Some(recursive) if so.
pub fn wanted(m: &Mount) -> Option<bool> {
    let opts = m.options().as_deref().unwrap_or(&[]);
    let ridmap = opts.iter().any(|o| o == "ridmap");
    let idmap = ridmap || opts.iter().any(|o| o == "idmap");
    (idmap || m.uid_mappings().is_some() || m.gid_mappings().is_some()).then_some(ridmap)
}

/// Whether the kernel has mount_setattr (5.12+), probed with an invalid descriptor.
pub fn supported() -> bool {
    // SAFETY: an invalid descriptor and a NULL attribute: the kernel only validates and fails.
    let r = unsafe { libc::syscall(libc::SYS_mount_setattr, -1, c"".as_ptr(), 0, std::ptr::null::<u8>(), 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// A user namespace with these maps: a child is cloned into a new one, mapped, its namespace
/// opened, and the child killed.
fn userns_with(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping], field: &str) -> Result<OwnedFd> {
    let child = super::process::clone_raw(libc::CLONE_NEWUSER)?;
    if child == 0 {
        // SAFETY: the child only waits to be killed.
        unsafe {
            loop {
                libc::pause();
            }
        }
    }
    let r = (|| {
        std::fs::write(format!("/proc/{child}/uid_map"), map_text(uid)).with_ctx(|| format!("{field}.uidMappings"))?;
        std::fs::write(format!("/proc/{child}/gid_map"), map_text(gid)).with_ctx(|| format!("{field}.gidMappings"))?;
        super::process::open_ns(Path::new(&format!("/proc/{child}/ns/user")))
    })();
    // SAFETY: kill and reap our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    r
}

/// Check the ID-mapped mounts of a config before anything is made.
pub fn validate(spec: &Spec, has_userns: bool) -> Result<()> {
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if wanted(m).is_none() {
            continue;
        }
        let bind =
            m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind");
        if !bind {
            bail!("mounts[{i}]: ID-mapped mounts must be bind mounts");
        }
        if m.uid_mappings().is_some() != m.gid_mappings().is_some() {
            bail!("mounts[{i}]: uidMappings and gidMappings go together");
        }
        if m.uid_mappings().is_none() && !has_userns {
            bail!(
                "mounts[{i}].options: idmap without uidMappings/gidMappings needs a user namespace to take them from"
            );
        }
        if !supported() {
            bail!("mounts[{i}]: ID-mapped mounts need mount_setattr (Linux 5.12 or later)");
        }
    }
    Ok(())
}

/// Make the detached, ID-mapped copy of each such mount's source; `init` is the container's init
/// (its user namespace gives the mapping of mounts that list none).
pub fn prepare(spec: &Spec, bundle: &Path, init: i32) -> Result<Vec<(usize, OwnedFd)>> {
    let mut out = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let Some(ridmap) = wanted(m) else { continue };
        let field = format!("mounts[{i}]");
        let userns = match (m.uid_mappings(), m.gid_mappings()) {
            (Some(u), Some(g)) => userns_with(u, g, &field)?,
            _ => super::process::open_ns(Path::new(&format!("/proc/{init}/ns/user")))?,
        };
        let src = m.source().as_deref().unwrap_or(Path::new(""));
        let src = if src.is_relative() {
            bundle.join(src)
        } else {
            src.to_path_buf()
        };
        let csrc = std::ffi::CString::new(src.as_os_str().as_encoded_bytes())
            .map_err(|_| crate::err!("{field}.source: NUL byte"))?;
        let rbind = m.options().iter().flatten().any(|o| o == "rbind");
        let flags = OPEN_TREE_CLONE | if rbind { libc::AT_RECURSIVE as libc::c_uint } else { 0 };
        let tree = fs::open_tree(libc::AT_FDCWD, &csrc, flags)
            .map_err(|e| Error::sys(format!("{field}.source {}", src.display()), e))?;
        let at = libc::AT_EMPTY_PATH | if ridmap { libc::AT_RECURSIVE } else { 0 };
        fs::mount_setattr(tree.as_raw_fd(), c"", at, MOUNT_ATTR_IDMAP, Some(userns.as_raw_fd())).map_err(|e| {
            Error::sys(
                format!(
                    "{field}: ID-map {} (does its filesystem support ID-mapped mounts?)",
                    src.display()
                ),
                e,
            )
        })?;
        out.push((i, tree));
    }
    Ok(out)
}

/// Attach a detached tree (from `open_tree`) onto the file or directory `target` refers to, from
/// descriptor to descriptor: no path is resolved, so nothing in the container's /proc or rootfs can
/// redirect it.
pub(crate) fn move_mount_onto(tree: &OwnedFd, target: &OwnedFd) -> std::io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: move_mount between two descriptors we own, with empty NUL-terminated paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
