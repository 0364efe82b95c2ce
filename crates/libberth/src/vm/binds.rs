//! Host bind mounts of a VM container (docs/VM.md, "Bind mounts").
//!
//! Every distinct host source of a bind in `mounts` (directory or single file) is bind-mounted
//! into a private staging directory, `<state dir>/binds/<n>`, and that directory is shared into
//! the guest by a second virtiofsd (virtio-fs tag `binds`). The staging mounts are made in a mount
//! namespace of the virtiofsd's own (unshared in its `pre_exec`, `/` made a slave first), so the
//! host's mount table never holds them and they vanish with virtiofsd: nothing to undo at delete
//! or after a failed create. The staging root is a small tmpfs, read-only once populated, holding
//! only the mount points, so nothing of the host but the sources is exposed (a file source is a
//! file mount point, not its parent directory). A source every mount of which is `ro` is
//! read-only on the host side too (recursively for `rbind`).
//!
//! In the guest the agent mounts the share at `/run/binds`, and the guest's config names
//! `/run/binds/<n>` as the bind's source, so libberth's Linux backend in the guest makes the bind
//! itself with its options (ro, rbind, propagation, nosuid...).

use crate::vm::proto;
use crate::{bail, Result};
use oci_spec::runtime::Spec;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The staging directory in the state directory (empty on the host).
pub const STAGING: &str = "binds";

/// One host source shared into the guest.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub source: PathBuf,
    pub dir: bool,
    /// Every mount of this source is `ro`: read-only on the host side too.
    pub ro: bool,
    /// Some mount of it is `rbind`: its submounts come along.
    pub rec: bool,
}

/// The bind mounts of a spec: the sources to share, and which share each `mounts[i]` uses.
#[derive(Debug, Default)]
pub struct Binds {
    pub shares: Vec<Share>,
    /// (index in `mounts`, index in `shares`).
    pub of_mount: Vec<(usize, usize)>,
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
}

/// Find the bind mounts and check their sources (relative ones are relative to the bundle, as
/// for a Linux container). A missing source is an error naming `mounts[i].source`.
pub fn plan(spec: &Spec, bundle_dir: &Path) -> Result<Binds> {
    let mut b = Binds::default();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !is_bind(m) {
            continue;
        }
        let Some(src) = m.source() else {
            bail!("mounts[{i}].source: a bind mount needs a source");
        };
        let src = if src.is_relative() {
            bundle_dir.join(src)
        } else {
            src.clone()
        };
        let md = std::fs::metadata(&src).map_err(|e| crate::err!("mounts[{i}].source {}: {e}", src.display()))?;
        let opts = m.options().as_deref().unwrap_or(&[]);
        let ro = opts.iter().any(|o| o == "ro");
        let rec = opts.iter().any(|o| o == "rbind");
        let n = match b.shares.iter().position(|s| s.source == src) {
            Some(n) => {
                b.shares[n].ro &= ro;
                b.shares[n].rec |= rec;
                n
            }
            None => {
                b.shares.push(Share {
                    source: src,
                    dir: md.is_dir(),
                    ro,
                    rec,
                });
                b.shares.len() - 1
            }
        };
        b.of_mount.push((i, n));
    }
    if !b.shares.is_empty() && nix::unistd::geteuid().as_raw() != 0 {
        bail!(
            "mounts[{}]: bind mounts in VM containers need root (they are staged with mounts on the host)",
            b.of_mount[0].0
        );
    }
    Ok(b)
}

/// Point the guest config's bind mounts at their shares in the guest.
pub fn adapt_guest_mounts(v: &mut serde_json::Value, binds: &Binds) {
    let Some(ms) = v.get_mut("mounts").and_then(|m| m.as_array_mut()) else {
        return;
    };
    for &(i, n) in &binds.of_mount {
        if let Some(m) = ms.get_mut(i) {
            m["source"] = format!("{}/{n}", proto::GUEST_BINDS).into();
        }
    }
}

/// What virtiofsd's `pre_exec` mounts, prepared beforehand (no allocation after fork).
#[derive(Clone)]
pub struct Stage {
    root: CString,
    entries: Vec<(CString, CString, Share)>,
}

impl Stage {
    pub fn new(staging: &Path, binds: &Binds) -> std::io::Result<Stage> {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
        let mut entries = Vec::with_capacity(binds.shares.len());
        for (n, s) in binds.shares.iter().enumerate() {
            entries.push((c(&s.source)?, c(&staging.join(n.to_string()))?, s.clone()));
        }
        Ok(Stage {
            root: c(staging)?,
            entries,
        })
    }

    /// In the child, before exec: a mount namespace of its own (nothing propagates back to the
    /// host), a tmpfs on the staging directory, each source bound on a mount point of its kind,
    /// the ro ones made read-only, then the tmpfs itself.
    pub fn enter(&self) -> std::io::Result<()> {
        use crate::error::check_rc;
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: syscalls with NUL-terminated strings that outlive them.
        unsafe {
            check_rc(libc::unshare(libc::CLONE_NEWNS))?;
            check_rc(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            check_rc(libc::mount(
                c"tmpfs".as_ptr(),
                self.root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"mode=755,size=64k".as_ptr().cast(),
            ))?;
            for (src, dst, s) in &self.entries {
                if s.dir {
                    check_rc(libc::mkdir(dst.as_ptr(), 0o755))?;
                } else {
                    let fd = libc::open(dst.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC, 0o644);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                let rec = if s.rec { libc::MS_REC } else { 0 };
                check_rc(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND | rec,
                    std::ptr::null(),
                ))?;
                if s.ro {
                    read_only(dst, s.rec)?;
                }
            }
            check_rc(libc::mount(
                null,
                self.root.as_ptr(),
                null,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ))
        }
    }
}

/// Make a bind mount read-only: the whole tree with mount_setattr(AT_RECURSIVE) when `rec`,
/// else (or on a kernel without it) the top mount by a remount.
fn read_only(dst: &CString, rec: bool) -> std::io::Result<()> {
    if rec
        && crate::linux::fs::mount_setattr(
            libc::AT_FDCWD,
            dst,
            libc::AT_RECURSIVE,
            crate::linux::fs::MOUNT_ATTR_RDONLY,
            None,
        )
        .is_ok()
    {
        return Ok(());
    }
    // SAFETY: a remount of the bind at a NUL-terminated path.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_deduplicated_and_mounts_pointed_at_them() {
        let d = std::env::temp_dir().join(format!("berth-binds-{}", std::process::id()));
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join("hosts"), "x").unwrap();
        let spec: Spec = serde_json::from_value(serde_json::json!({"ociVersion": "1.2.0",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/a", "type": "bind", "source": d.join("data"), "options": ["rbind", "ro"]},
                {"destination": "/etc/hosts", "source": "hosts", "options": ["bind"]},
                {"destination": "/b", "type": "bind", "source": d.join("data"), "options": ["bind"]}]}))
        .unwrap();
        if nix::unistd::geteuid().as_raw() != 0 {
            assert!(plan(&spec, &d).unwrap_err().to_string().contains("mounts[1]"));
            return;
        }
        let b = plan(&spec, &d).unwrap();
        assert_eq!(b.of_mount, vec![(1, 0), (2, 1), (3, 0)]);
        assert_eq!(
            b.shares[0],
            Share {
                source: d.join("data"),
                dir: true,
                ro: false,
                rec: true
            }
        );
        assert_eq!(b.shares[1].source, d.join("hosts"), "relative to the bundle");
        assert!(!b.shares[1].dir);
        let mut v = serde_json::to_value(&spec).unwrap();
        adapt_guest_mounts(&mut v, &b);
        assert_eq!(v["mounts"][0]["source"], "proc");
        assert_eq!(v["mounts"][1]["source"], "/run/binds/0");
        assert_eq!(v["mounts"][2]["source"], "/run/binds/1");
        assert_eq!(v["mounts"][3]["source"], "/run/binds/0");
        let bad: Spec = serde_json::from_value(serde_json::json!({"ociVersion": "1.2.0",
            "mounts": [{"destination": "/a", "type": "bind", "source": "/nonexistent/src"}]}))
        .unwrap();
        let e = plan(&bad, &d).unwrap_err().to_string();
        assert!(e.contains("mounts[0].source /nonexistent/src"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
