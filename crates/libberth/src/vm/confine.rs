//! The host side of a VM container, confined (docs/VM.md, "Confinement"):
//!
//! - the monitor, qemu and virtiofsd live in the container's host cgroup (`linux.cgroupsPath`, made
//!   and removed as for a Linux container), which gets the CPU limits (quota, shares, cpuset), the
//!   block I/O limits (virtiofsd and qemu do the container's disk I/O) and, when the bundle sets a
//!   memory limit, guest RAM plus a fixed allowance for the hypervisor's own memory;
//! - the limits that name host CPUs or devices (cpu.cpus/mems, blockIO) are taken out of the
//!   guest's config; the rest (memory, pids, quota/shares, hugepages, devices, unified) apply in
//!   the guest as they would on a host;
//! - qemu runs with its seccomp sandbox, no_new_privs, no capabilities, and in a mount namespace
//!   of its own whose root holds only what it needs: /usr (read-only), the kernel, the initramfs,
//!   the `vm.image` disk, a few /dev nodes and a /proc that shows it only itself (its own pid
//!   namespace) — not the state directory: its ports are descriptors (vm/ports.rs); virtiofsd runs with no_new_privs in its own namespace sandbox,
//!   which sees only the rootfs.

use crate::cgroups::{self, resources, Cgroup};
use crate::{err, Error, Result};
use oci_spec::runtime::{Linux, LinuxMemory, LinuxResources, Spec};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Host memory allowed beyond guest RAM, for qemu itself (code, TCG translation buffers, device
/// state), virtiofsd and the page cache of the shared rootfs (reclaimable). Measured with
/// bench/vm.sh: qemu+virtiofsd use 60-75 MiB beyond the guest RAM they touch under TCG, the page
/// cache comes on top and is reclaimed at the limit. See docs/VM.md.
pub const HOST_OVERHEAD_MIB: u64 = 160;

/// The container's host cgroup, planned (every value checked) before anything is made.
pub struct HostCgroup {
    pub path: String,
    pub owned: bool,
    plan: resources::Plan,
}

/// What of `linux.resources` the host cgroup gets: the CPU limits (qemu's vCPU threads do the
/// guest's work), block I/O, and guest RAM + the allowance when a memory limit is set.
pub fn host_resources(spec: &Spec, guest_mib: u64) -> Option<LinuxResources> {
    let r = spec.linux().as_ref()?.resources().as_ref()?;
    let mut out = LinuxResources::default();
    out.set_cpu(r.cpu().clone());
    out.set_block_io(r.block_io().clone());
    if r.memory().as_ref().and_then(|m| m.limit()).is_some_and(|l| l > 0) {
        let mut m = LinuxMemory::default();
        m.set_limit(Some(((guest_mib + HOST_OVERHEAD_MIB) << 20) as i64));
        out.set_memory(Some(m));
    }
    (out.cpu().is_some() || out.block_io().is_some() || out.memory().is_some()).then_some(out)
}

/// Take out of the guest's config what names host CPUs, memory nodes or devices.
pub fn adapt_guest_resources(v: &mut serde_json::Value) {
    if let Some(r) = v.pointer_mut("/linux/resources").and_then(|r| r.as_object_mut()) {
        r.remove("blockIO");
        if let Some(c) = r.get_mut("cpu").and_then(|c| c.as_object_mut()) {
            c.remove("cpus");
            c.remove("mems");
        }
    }
}

impl HostCgroup {
    /// The VM's host cgroup (qemu, virtiofsd, the monitor): `host_resources` of the config.
    pub fn plan(id: &str, spec: &Spec, systemd: bool, guest_mib: u64) -> Result<HostCgroup> {
        Self::with(id, spec, systemd, host_resources(spec, guest_mib))
    }

    /// A pod member's host cgroup (vm/pod.rs): it holds only the member's helper process, and
    /// takes the config's CPU, memory, pids and block I/O limits as a Linux container's would
    /// (what engines read back from it); the guest applies them to the container.
    pub fn plan_member(id: &str, spec: &Spec, systemd: bool) -> Result<HostCgroup> {
        let wanted = spec.linux().as_ref().and_then(|l| l.resources().as_ref()).map(|r| {
            let mut out = LinuxResources::default();
            out.set_cpu(r.cpu().clone());
            out.set_block_io(r.block_io().clone());
            out.set_memory(*r.memory());
            out.set_pids(*r.pids());
            out
        });
        Self::with(id, spec, systemd, wanted)
    }

    /// The container's host cgroup (config's `cgroupsPath`, or the default for `id`) planned with
    /// `limits`.
    fn with(id: &str, spec: &Spec, systemd: bool, limits: Option<LinuxResources>) -> Result<HostCgroup> {
        if systemd && cgroups::systemd::booted() {
            crate::bail!("--systemd-cgroup: the systemd cgroup driver is not supported for VM containers yet; use the cgroupfs driver");
        }
        let linux = spec.linux().as_ref();
        let path = cgroups::container_path(linux.and_then(|l| l.cgroups_path().as_deref()), id, systemd)?;
        let cg = Cgroup::open(&path);
        let plan = match limits {
            Some(r) => {
                let mut l = Linux::default();
                l.set_resources(Some(r));
                resources::plan(&cg, &l, resources::Mode::Create)?
            }
            None => Default::default(),
        };
        Ok(HostCgroup {
            owned: !cg.exists(),
            path,
            plan,
        })
    }

    /// Make the cgroup (unless it exists: then it is joined, and left at delete) and apply the
    /// limits. On error a cgroup made here is removed.
    pub fn create(&self) -> Result<Cgroup> {
        let cg = Cgroup::open(&self.path);
        cg.create()?;
        if let Err(e) = resources::apply(&cg, &self.plan) {
            if self.owned {
                let _ = cg.remove();
            }
            return Err(e);
        }
        Ok(cg)
    }
}

/// `update` of a VM container: what its host cgroup can take (CPU, block I/O). Guest RAM is fixed
/// when the VM boots, and pids and the other limits live in the guest: asking to change them is an
/// error naming the field (rather than a host memory limit below guest RAM, which would kill qemu).
pub fn host_update(state_dir: &Path, r: LinuxResources) -> Result<LinuxResources> {
    if !state_dir.join(super::VM_FILE).exists() {
        return Ok(r);
    }
    if let (mux, Some(id)) = super::pod::route(state_dir) {
        // A pod member: the guest updates its container's cgroup; its host cgroup (its helper)
        // takes the same values, as a Linux container's would.
        let json = serde_json::to_string(&r).map_err(|e| err!("linux.resources: {e}"))?;
        let mut s = super::open_stream(&mux)?;
        super::send_request(&mut s, &format!("update {id} {json}"))?;
        super::read_reply(
            &mut s,
            &mut super::proto::FrameBuf::default(),
            std::time::Duration::from_secs(30),
            || None,
        )
        .map_err(|e| e.context(format!("update container {id:?} in its VM")))?;
        return Ok(r);
    }
    const F: &str = "linux.resources";
    let m = r.memory().as_ref();
    if m.is_some_and(|m| {
        [m.limit(), m.reservation(), m.swap(), m.kernel(), m.kernel_tcp()]
            .iter()
            .any(|v| v.is_some_and(|v| v != 0))
    }) {
        return Err(err!(
            "{F}.memory: the memory of a VM container is its guest RAM, fixed when it boots"
        ));
    }
    if r.pids().is_some_and(|p| p.limit() > 0) {
        return Err(err!("{F}.pids: applies inside the VM; cannot be updated yet"));
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty())
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
    {
        return Err(err!("{F}: only cpu and blockIO can be updated in a VM container"));
    }
    let mut out = LinuxResources::default();
    out.set_cpu(r.cpu().clone());
    out.set_block_io(r.block_io().clone());
    Ok(out)
}

/// Holds a process that create or exec forked (the VM monitor, a container's or an exec's
/// helper) until it is in the container's host cgroup. A socket pair: the child says it is ready
/// (one byte, sent once it has given up what it must not hold), the creator waits for that
/// (bounded), puts it in the cgroup and lets it go on (one byte back).
pub struct Gate {
    parent: OwnedFd,
    child: OwnedFd,
}

/// How long the creator waits for a child it has just forked to say it is ready.
const GATE_READY_TIMEOUT_MS: i32 = 10_000;

impl Gate {
    pub fn new() -> Result<Gate> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into a local array of two.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        } != 0
        {
            return Err(Error::sys("socketpair", std::io::Error::last_os_error()));
        }
        // SAFETY: fresh descriptors, owned here and nowhere else.
        unsafe {
            Ok(Gate {
                parent: OwnedFd::from_raw_fd(fds[0]),
                child: OwnedFd::from_raw_fd(fds[1]),
            })
        }
    }

    /// Its two descriptors (for a child that closes all others before it waits).
    pub fn fds(&self) -> [i32; 2] {
        [self.parent.as_raw_fd(), self.child.as_raw_fd()]
    }

    /// In the child: say it is ready, then wait to be let through; false if the creator gave up
    /// (closed its end).
    pub fn wait(self) -> bool {
        drop(self.parent);
        let fd = self.child.as_raw_fd();
        if !send_byte(fd, b'r') {
            return false;
        }
        let mut b = 0u8;
        loop {
            // SAFETY: reading one byte into a local.
            let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
            if n == 1 {
                return true;
            }
            if n == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
    }

    /// In the creator: wait (≤ 10 s) until the child `pid` is ready, put it in the cgroup, then
    /// let it go on.
    pub fn release(self, cg: &Cgroup, pid: i32) -> Result<()> {
        drop(self.child);
        let fd = self.parent.as_raw_fd();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(GATE_READY_TIMEOUT_MS as u64);
        loop {
            let left = deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_millis() as i32;
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on the stack.
            let r = unsafe { libc::poll(&mut p, 1, left) };
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) && left > 0 {
                continue;
            }
            let mut b = 0u8;
            // SAFETY: reading one byte into a local, only when poll reported the socket readable
            // (a byte, or the child's end closed), so the read does not block.
            let n = if r == 1 {
                unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) }
            } else {
                -1
            };
            if n == 1 && b == b'r' {
                break;
            }
            return Err(err!(
                "process {pid} forked for the VM container ended or did not get ready within 10 s"
            ));
        }
        cg.add(pid)?;
        if !send_byte(fd, b'g') {
            return Err(Error::sys("release the VM monitor", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Send one byte on a socket without raising SIGPIPE if the peer is gone.
fn send_byte(fd: i32, b: u8) -> bool {
    // SAFETY: sending one byte from a local; MSG_NOSIGNAL: a closed peer is an error, not a signal.
    unsafe { libc::send(fd, (&b as *const u8).cast(), 1, libc::MSG_NOSIGNAL) == 1 }
}

/// qemu's seccomp sandbox: everything qemu offers to deny that a micro-VM does not need
/// (obsolete system calls, set*uid, fork/exec, scheduler and affinity changes).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// One entry of qemu's root.
enum Entry {
    Dir(CString),
    /// Bind mount of the host path (same path inside), read-only or not, directory or file.
    Bind {
        src: CString,
        dst: CString,
        ro: bool,
        dir: bool,
    },
    Symlink {
        target: CString,
        at: CString,
    },
    Proc(CString),
    Tmpfs(CString),
}

/// qemu's private root, prepared before the fork (no allocation happens in the child).
pub struct Jail {
    root: CString,
    entries: Vec<Entry>,
}

fn cs(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

impl Jail {
    /// `root`: an empty directory (in the state directory) the new root is mounted on; `paths`:
    /// host paths qemu must see at the same place (read-only or not as `ro` says).
    pub fn new(root: &Path, paths: &[(&Path, bool)], kvm: bool) -> Jail {
        let mut entries = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        let mut mkdirs = |p: &Path, entries: &mut Vec<Entry>| {
            let mut cur = PathBuf::from("/");
            for c in p.components().skip(1) {
                cur.push(c);
                if !dirs.contains(&cur) {
                    dirs.push(cur.clone());
                    entries.push(Entry::Dir(cs(&inside(&cur))));
                }
            }
        };
        // The libraries: /usr, and the top-level links (or directories) that lead into it.
        mkdirs(Path::new("/usr"), &mut entries);
        entries.push(Entry::Bind {
            src: cs(Path::new("/usr")),
            dst: cs(&inside(Path::new("/usr"))),
            ro: true,
            dir: true,
        });
        for top in ["lib", "lib64", "lib32", "libx32", "bin", "sbin"] {
            let host = Path::new("/").join(top);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(t) = std::fs::read_link(&host) {
                        entries.push(Entry::Symlink {
                            target: cs(&t),
                            at: cs(&inside(&host)),
                        });
                    }
                }
                Ok(m) if m.is_dir() => {
                    mkdirs(&host, &mut entries);
                    entries.push(Entry::Bind {
                        src: cs(&host),
                        dst: cs(&inside(&host)),
                        ro: true,
                        dir: true,
                    });
                }
                _ => {}
            }
        }
        let mut binds: Vec<(PathBuf, bool)> = vec![(PathBuf::from("/etc/ld.so.cache"), true)];
        for dev in ["null", "zero", "urandom", "random"] {
            binds.push((Path::new("/dev").join(dev), false));
        }
        if kvm {
            binds.push((PathBuf::from("/dev/kvm"), false));
        }
        binds.extend(paths.iter().map(|(p, ro)| (p.to_path_buf(), *ro)));
        mkdirs(Path::new("/dev"), &mut entries);
        entries.push(Entry::Tmpfs(cs(&inside(Path::new("/dev")))));
        for (p, ro) in binds {
            let Ok(m) = std::fs::metadata(&p) else { continue };
            let dir = m.is_dir();
            if dir {
                mkdirs(&p, &mut entries);
            } else if let Some(parent) = p.parent() {
                mkdirs(parent, &mut entries);
            }
            entries.push(Entry::Bind {
                src: cs(&p),
                dst: cs(&inside(&p)),
                ro,
                dir,
            });
        }
        mkdirs(Path::new("/proc"), &mut entries);
        entries.push(Entry::Proc(cs(&inside(Path::new("/proc")))));
        Jail {
            root: cs(root),
            entries,
        }
    }

    /// In the child, between fork and exec: a new mount namespace, the new root, pivot into it,
    /// no capabilities, no_new_privs. Only system calls.
    pub fn enter(&self) -> std::io::Result<()> {
        use crate::error::check_rc;
        if self.entries.is_empty() {
            // Without root (no mount namespace to make): capabilities and no_new_privs only.
            return drop_privileges();
        }
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY: system calls with NUL-terminated strings prepared before the fork.
        unsafe {
            check_rc(libc::unshare(libc::CLONE_NEWNS))?;
            check_rc(libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check_rc(libc::mount(
                c"tmpfs".as_ptr(),
                self.root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=755,size=64k".as_ptr().cast(),
            ))?;
            for e in &self.entries {
                match e {
                    Entry::Dir(p) => {
                        let r = libc::mkdir(p.as_ptr(), 0o755);
                        if r < 0 && *libc::__errno_location() != libc::EEXIST {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Entry::Symlink { target, at } => check_rc(libc::symlink(target.as_ptr(), at.as_ptr()))?,
                    Entry::Tmpfs(p) => check_rc(libc::mount(
                        c"tmpfs".as_ptr(),
                        p.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NOEXEC,
                        c"mode=755,size=64k".as_ptr().cast(),
                    ))?,
                    Entry::Proc(p) => check_rc(libc::mount(
                        c"proc".as_ptr(),
                        p.as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"hidepid=invisible".as_ptr().cast(),
                    ))?,
                    Entry::Bind { src, dst, ro, dir } => {
                        if !dir {
                            let fd = libc::open(dst.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o600);
                            // (It may exist already in a read-only bind: a kernel under /usr.)
                            if fd < 0 && libc::access(dst.as_ptr(), libc::F_OK) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            if fd >= 0 {
                                libc::close(fd);
                            }
                        }
                        check_rc(libc::mount(
                            src.as_ptr(),
                            dst.as_ptr(),
                            none,
                            libc::MS_BIND | libc::MS_REC,
                            std::ptr::null(),
                        ))?;
                        let mut fl = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID;
                        if *ro {
                            fl |= libc::MS_RDONLY;
                        }
                        // Device nodes keep their devices; everything else loses them.
                        if !src.as_bytes().starts_with(b"/dev/") {
                            fl |= libc::MS_NODEV;
                        }
                        check_rc(libc::mount(none, dst.as_ptr(), none, fl, std::ptr::null()))?;
                    }
                }
            }
            check_rc(libc::chdir(self.root.as_ptr()))?;
            check_rc(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)?;
            check_rc(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check_rc(libc::chdir(c"/".as_ptr()))?;
        }
        drop_privileges()
    }
}

/// No capabilities in any set (bounding and ambient too), and no_new_privs.
pub fn drop_privileges() -> std::io::Result<()> {
    // SAFETY: prctl and capset with local structures.
    unsafe {
        for cap in 0..=63 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && *libc::__errno_location() == libc::EINVAL {
                break;
            }
        }
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        let hdr = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [0u32; 6];
        if libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        no_new_privs()
    }
}

pub fn no_new_privs() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The directory qemu's root is mounted on, inside the state directory.
pub const JAIL_DIR: &str = "qemu-root";

/// Prepare qemu's jail for a container whose state directory is `dir` (made here).
pub fn qemu_jail(dir: &Path, kernel: &Path, initrd: &Path, image: Option<&Path>, kvm: bool) -> Result<Jail> {
    let root = dir.join(JAIL_DIR);
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Jail {
            root: cs(&root),
            entries: Vec::new(),
        });
    }
    std::fs::create_dir_all(&root).map_err(|e| Error::sys(root.display(), e))?;
    // Not the state directory: qemu gets its ports and sockets as descriptors (vm/ports.rs), so
    // nothing it can write decides what the host runs or signals (state.json, hooks, markers).
    let mut paths: Vec<(&Path, bool)> = vec![(kernel, true), (initrd, true)];
    if let Some(i) = image {
        paths.push((i, false));
    }
    let j = Jail::new(&root, &paths, kvm);
    if j.entries.is_empty() {
        return Err(err!("VM container: cannot prepare the hypervisor's root"));
    }
    Ok(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn host_gets_cpu_blkio_and_memory_with_allowance() {
        let s = spec(serde_json::json!({"ociVersion": "1.2.0", "linux": {"resources": {
            "memory": {"limit": 268435456}, "pids": {"limit": 10},
            "cpu": {"quota": 50000, "period": 100000, "cpus": "0"},
            "blockIO": {"weight": 300}}}}));
        let r = host_resources(&s, 256).unwrap();
        assert_eq!(
            r.memory().as_ref().unwrap().limit(),
            Some(((256 + HOST_OVERHEAD_MIB) << 20) as i64)
        );
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50000));
        assert_eq!(r.cpu().as_ref().unwrap().cpus().as_deref(), Some("0"));
        assert!(r.pids().is_none(), "pids apply in the guest");
        assert!(r.block_io().is_some());
        let none = spec(serde_json::json!({"ociVersion": "1.2.0", "linux": {"resources": {"pids": {"limit": 10}}}}));
        assert!(host_resources(&none, 256).is_none());

        let mut v = serde_json::to_value(&s).unwrap();
        adapt_guest_resources(&mut v);
        assert!(v["linux"]["resources"].get("blockIO").is_none());
        assert!(v["linux"]["resources"]["cpu"].get("cpus").is_none());
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50000);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 10);
    }
}
