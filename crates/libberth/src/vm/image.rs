//! The guest's boot files: finding the hypervisor and the kernel, building (once, cached) the
//! initramfs that holds the guest agent and the kernel modules it needs, and probing whether KVM
//! can boot the guest here (cached too).

use crate::error::Context;
use crate::{bail, err, Error, Result};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Modules the guest needs (with their dependencies from modules.dep): the virtio-mmio transport,
/// the serial ports, virtio-fs for the shared rootfs and virtio-blk for `vm.image`.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_console",
    "virtiofs",
    "virtio_blk",
    // The container's network (vm/net.rs); with its dependencies (net_failover, failover).
    "virtio_net",
];

/// An initramfs of another agent for the same kernel is removed once unused for this long.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Bump when the initramfs layout changes, so cached images are rebuilt.
const LAYOUT: u32 = 2;

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn hypervisor(path: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = path {
        if !p.is_file() {
            bail!("vm.hypervisor.path {}: no such file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    find_in_path("qemu-system-x86_64").ok_or_else(|| {
        err!("VM container: qemu-system-x86_64 not found in PATH (install the Debian package qemu-system-x86)")
    })
}

pub fn virtiofsd() -> Result<PathBuf> {
    // (Not qemu's old C virtiofsd in /usr/lib/qemu: its options differ.)
    find_in_path("virtiofsd").or_else(|| Some(PathBuf::from("/usr/libexec/virtiofsd")).filter(|p| p.is_file())).ok_or_else(|| {
        err!("VM container: virtiofsd not found (needed to share the rootfs; `cargo install virtiofsd` or the Debian package virtiofsd)")
    })
}

/// Which guest kernel a VM container boots, and why (`--debug` logs it, `features` shows the default).
#[derive(Debug, Clone)]
pub struct Kernel {
    pub path: PathBuf,
    /// Berth's own guest kernel (vm/kernel/berth-guest.config: everything built in, no modules).
    pub berth: bool,
    pub why: String,
    /// Berth's kernel uncompressed: the ELF `vmlinux` that scripts/guest-kernel.sh keeps beside
    /// the bzImage (the same build), which qemu boots through its PVH entry.
    pub uncompressed: Option<PathBuf>,
}

impl Kernel {
    fn new(path: PathBuf, berth: bool, why: String) -> Kernel {
        let uncompressed = if berth { uncompressed_beside(&path) } else { None };
        Kernel {
            path,
            berth,
            why,
            uncompressed,
        }
    }
}

/// `vmlinux` in the directory of Berth's kernel, when it is an ELF file (its PVH note is the
/// kernel's: CONFIG_PVH).
fn uncompressed_beside(kernel: &Path) -> Option<PathBuf> {
    let v = kernel.parent()?.join("vmlinux");
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(&v).ok()?;
    std::io::Read::read_exact(&mut f, &mut magic).ok()?;
    (magic == *b"\x7fELF" && f.metadata().ok()?.is_file()).then_some(v)
}

/// Where Berth's guest kernel is looked for, in order: installed beside an installed agent
/// (`/usr/local/lib/berth`, `/usr/lib/berth`), then the cache of scripts/guest-kernel.sh.
pub fn berth_kernel_paths() -> Vec<PathBuf> {
    let mut v = vec![
        PathBuf::from("/usr/local/lib/berth/vmlinuz"),
        PathBuf::from("/usr/lib/berth/vmlinuz"),
        cache_dir().join("kernel/current/bzImage"),
    ];
    let machine = PathBuf::from("/var/cache/berth/kernel/current/bzImage");
    if !v.contains(&machine) {
        v.push(machine);
    }
    v
}

/// The environment variable that picks the default guest kernel: `berth` (Berth's, required),
/// `cloud` (the Debian cloud kernel), or a path.
pub const ENV_KERNEL: &str = "BERTH_VM_KERNEL";

/// The guest kernel: the given path (annotation or `vm.kernel.path`), else `$BERTH_VM_KERNEL`,
/// else Berth's own guest kernel when built or installed, else the newest
/// /boot/vmlinuz-*-cloud-amd64.
pub fn kernel(path: Option<&Path>, field: &str) -> Result<Kernel> {
    if let Some(p) = path {
        if !p.is_file() {
            bail!("{field} {}: no such file", p.display());
        }
        return Ok(Kernel::new(
            p.to_path_buf(),
            is_berth_kernel(p),
            format!("set by {field}"),
        ));
    }
    let env = std::env::var(ENV_KERNEL).ok().filter(|v| !v.is_empty());
    match env.as_deref() {
        Some("cloud") => return cloud_kernel().map(|path| Kernel::new(path, false, format!("{ENV_KERNEL}=cloud"))),
        Some("berth") => {
            return berth_kernel_paths()
                .into_iter()
                .find(|p| p.is_file())
                .map(|path| Kernel::new(path, true, format!("{ENV_KERNEL}=berth")))
                .ok_or_else(|| {
                    err!(
                    "{ENV_KERNEL}=berth: Berth's guest kernel is not in {} (build it: scripts/guest-kernel.sh build)",
                    berth_kernel_paths()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                })
        }
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!(
                    "{ENV_KERNEL} {}: no such file (expected berth, cloud or a kernel's path)",
                    p.display()
                );
            }
            return Ok(Kernel::new(
                p.clone(),
                is_berth_kernel(&p),
                format!("set by {ENV_KERNEL}"),
            ));
        }
        None => {}
    }
    // Berth's own kernel when built or installed (docs/VM.md, "The guest kernel"), else the cloud
    // kernel.
    if let Some(path) = berth_kernel_paths().into_iter().find(|p| p.is_file()) {
        return Ok(Kernel::new(
            path,
            true,
            format!("the default: Berth's guest kernel; {ENV_KERNEL}=cloud chooses the cloud kernel"),
        ));
    }
    cloud_kernel().map(|path| {
        Kernel::new(
            path,
            false,
            "the default: Berth's guest kernel is not built (scripts/guest-kernel.sh build)".to_string(),
        )
    })
}

/// Whether a kernel is one of Berth's (its release ends in `-berth`): everything built in.
fn is_berth_kernel(p: &Path) -> bool {
    kernel_release(p).is_ok_and(|r| r.ends_with("-berth"))
}

/// The newest /boot/vmlinuz-*-cloud-amd64.
fn cloud_kernel() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().ok_or_else(|| {
        err!("VM container: no guest kernel: neither Berth's (scripts/guest-kernel.sh build) nor /boot/vmlinuz-*-cloud-amd64 (install the Debian package linux-image-cloud-amd64, or set vm.kernel.path or the annotation run.berth.vm.kernel)")
    })
}

/// The release string of a bzImage (from its setup header), e.g. "6.1.0-56-cloud-amd64".
pub fn kernel_release(kernel: &Path) -> Result<String> {
    let mut f = std::fs::File::open(kernel).with_ctx(|| format!("guest kernel {}", kernel.display()))?;
    let mut head = vec![0u8; 0x8000];
    let n = std::io::Read::read(&mut f, &mut head).with_ctx(|| format!("guest kernel {}", kernel.display()))?;
    head.truncate(n);
    if head.len() < 0x210 || &head[0x202..0x206] != b"HdrS" {
        bail!("guest kernel {}: not a bzImage", kernel.display());
    }
    let off = u16::from_le_bytes([head[0x20e], head[0x20f]]) as usize + 0x200;
    let s = head.get(off..).unwrap_or_default();
    let end = s.iter().position(|&b| b == 0 || b == b' ').unwrap_or(s.len());
    let rel = String::from_utf8_lossy(&s[..end]).into_owned();
    if rel.is_empty() {
        bail!("guest kernel {}: no version string", kernel.display());
    }
    Ok(rel)
}

/// Where an installed agent lives, after the places relative to the berth binary
/// (scripts/install.sh: `<prefix>/lib/berth/berth-guest`, prefix /usr/local or /usr).
pub const SYSTEM_AGENT_PATHS: [&str; 2] = ["/usr/local/lib/berth/berth-guest", "/usr/lib/berth/berth-guest"];

/// The static guest agent: $BERTH_GUEST, next to the berth binary, in the cargo target dir, in
/// `../lib/berth/` of the berth binary (an install under any prefix), or in the system paths.
pub fn agent() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_GUEST") {
        return Ok(PathBuf::from(p));
    }
    let exe = crate::linux::exeseal::installed_exe().map_err(|e| Error::sys("current executable", e))?;
    let cands = agent_candidates(&exe);
    cands.iter().find(|p| p.is_file() && is_static(p)).cloned().ok_or_else(|| {
        let searched: Vec<String> = cands.iter().map(|p| p.display().to_string()).collect();
        err!("VM container: the static guest agent berth-guest was not found (searched $BERTH_GUEST, {}; install it with scripts/install.sh, or build it: LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p berth-guest --target x86_64-unknown-linux-gnu)", searched.join(", "))
    })
}

/// The places `agent` looks, in order, for the berth binary at `exe`.
fn agent_candidates(exe: &Path) -> Vec<PathBuf> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let mut cands = vec![dir.join("berth-guest")];
    // target/<profile>/berth -> target/x86_64-unknown-linux-gnu/{release,debug}/berth-guest
    if let Some(target) = dir.parent() {
        for prof in ["release", "debug"] {
            cands.push(target.join("x86_64-unknown-linux-gnu").join(prof).join("berth-guest"));
        }
    }
    if let Some(target) = dir.parent().and_then(|d| d.parent()) {
        for prof in ["release", "debug"] {
            cands.push(target.join("x86_64-unknown-linux-gnu").join(prof).join("berth-guest"));
        }
    }
    // <prefix>/bin/berth -> <prefix>/lib/berth/berth-guest
    if let Some(prefix) = dir.parent() {
        cands.push(prefix.join("lib/berth/berth-guest"));
    }
    for p in SYSTEM_AGENT_PATHS {
        if !cands.iter().any(|c| c == Path::new(p)) {
            cands.push(PathBuf::from(p));
        }
    }
    cands
}

/// A static ELF has no PT_INTERP program header.
fn is_static(p: &Path) -> bool {
    let Ok(data) = std::fs::read(p) else { return false };
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return false;
    }
    let u64at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap()) as usize;
    let u16at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let (phoff, phsz, phn) = (u64at(0x20), u16at(0x36), u16at(0x38));
    (0..phn).all(|i| {
        let o = phoff + i * phsz;
        o + 4 > data.len() || u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) != 3
    })
}

/// Where Berth caches built images and probe results.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_CACHE_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/berth");
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("berth")
}

fn stamp(h: &mut DefaultHasher, p: &Path) {
    p.hash(h);
    if let Ok(m) = std::fs::metadata(p) {
        (m.len(), m.mtime(), m.mtime_nsec(), m.ino()).hash(h);
    }
}

/// Modules to load, dependencies first, as paths relative to /lib/modules/<release>.
pub fn resolve_modules(dep_text: &str, wanted: &[&str]) -> Vec<String> {
    let mut deps = std::collections::HashMap::new();
    let mut by_name = std::collections::HashMap::new();
    for line in dep_text.lines() {
        let Some((m, rest)) = line.split_once(':') else {
            continue;
        };
        let name = Path::new(m)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .unwrap_or("")
            .replace('-', "_");
        by_name.insert(name, m.to_string());
        deps.insert(
            m.to_string(),
            rest.split_whitespace().map(str::to_string).collect::<Vec<_>>(),
        );
    }
    fn visit(m: &str, deps: &std::collections::HashMap<String, Vec<String>>, out: &mut Vec<String>) {
        if out.iter().any(|o| o == m) {
            return;
        }
        // modules.dep lists every (transitive) dependency; the last ones are needed first.
        for d in deps.get(m).into_iter().flatten().rev() {
            visit(d, deps, out);
        }
        out.push(m.to_string());
    }
    let mut out = Vec::new();
    for w in wanted {
        if let Some(m) = by_name.get(*w) {
            visit(m, &deps, &mut out);
        }
    }
    out
}

/// A newc cpio archive writer.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(hdr.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

/// The initramfs for this kernel (and the optional `vm.kernel.initrd`, unpacked first): built on
/// first use and cached, keyed by the agent, the kernel's modules and the extra initrd. Berth's own
/// kernel (release `*-berth`) has every driver built in: its initramfs holds no modules.
pub fn initramfs(kernel: &Path, extra: Option<&Path>) -> Result<PathBuf> {
    let agent = agent()?;
    let release = kernel_release(kernel)?;
    let builtin = release.ends_with("-berth");
    let moddir = Path::new("/lib/modules").join(&release);
    let dep_path = moddir.join("modules.dep");
    let mut h = DefaultHasher::new();
    LAYOUT.hash(&mut h);
    stamp(&mut h, &agent);
    builtin.hash(&mut h);
    if !builtin {
        stamp(&mut h, &dep_path);
    }
    release.hash(&mut h);
    if let Some(x) = extra {
        stamp(&mut h, x);
    }
    let dir = cache_dir();
    let path = dir.join(format!("initramfs-{release}-{:016x}.cpio", h.finish()));
    if let Ok(f) = std::fs::File::open(&path) {
        // In use: its time says so to other agents' builds (below), at most once a minute.
        let now = std::time::SystemTime::now();
        if f.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > std::time::Duration::from_secs(60))
        {
            let _ = f.set_modified(now);
        }
        return Ok(path);
    }
    let mods = if builtin {
        Vec::new()
    } else {
        let dep_text = std::fs::read_to_string(&dep_path).map_err(|e| {
            Error::sys(
                format!(
                    "modules of guest kernel {release}: {} (install the modules with the kernel's package)",
                    dep_path.display()
                ),
                e,
            )
        })?;
        resolve_modules(&dep_text, GUEST_MODULES)
    };
    let mut c = Cpio {
        out: Vec::new(),
        ino: 0,
    };
    if let Some(x) = extra {
        c.out = std::fs::read(x).with_ctx(|| format!("vm.kernel.initrd {}", x.display()))?;
        c.pad();
    }
    for d in ["dev", "proc", "sys", "run", "tmp", "newroot", "etc"] {
        c.entry(d, 0o040755, &[], (0, 0));
    }
    if !builtin {
        for d in ["etc/berth", "lib", "lib/modules"] {
            c.entry(d, 0o040755, &[], (0, 0));
        }
    }
    c.entry("dev/console", 0o020600, &[], (5, 1));
    // Rust's start-up code opens /dev/null for missing standard descriptors (and aborts without it).
    c.entry("dev/null", 0o020666, &[], (1, 3));
    let bin = std::fs::read(&agent).with_ctx(|| format!("guest agent {}", agent.display()))?;
    c.entry("init", 0o100755, &bin, (0, 0));
    let mut list = String::new();
    for (i, m) in mods.iter().enumerate() {
        let data = std::fs::read(moddir.join(m)).with_ctx(|| format!("module {}", moddir.join(m).display()))?;
        let ext = if m.ends_with(".ko") {
            "ko".to_string()
        } else {
            m.rsplit_once(".ko.").map(|x| format!("ko.{}", x.1)).unwrap_or_default()
        };
        let name = format!("lib/modules/{i:02}.{ext}");
        c.entry(&name, 0o100644, &data, (0, 0));
        list.push_str(&format!("/{name}\n"));
    }
    if !builtin {
        c.entry("etc/berth/modules", 0o100644, list.as_bytes(), (0, 0));
    }
    c.entry("TRAILER!!!", 0, &[], (0, 0));
    std::fs::create_dir_all(&dir).with_ctx(|| format!("cache directory {}", dir.display()))?;
    let tmp = dir.join(format!(".initramfs.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_ctx(|| format!("{}", tmp.display()))?;
    f.write_all(&c.out).with_ctx(|| format!("{}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, &path).with_ctx(|| format!("{}", path.display()))?;
    // Images of older agents for this kernel are stale now — unless another agent (another
    // checkout's, on a shared cache) used its image within STALE_AFTER: removing it between that
    // berth's choice of it and qemu's open made its VM fail.
    let prefix = format!("initramfs-{release}-");
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        let idle = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > STALE_AFTER);
        if n.starts_with(&prefix) && e.path() != path && idle {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_looked_for_beside_then_in_the_target_dir_then_where_an_install_puts_it() {
        let got = agent_candidates(Path::new("/usr/local/bin/berth"));
        let got: Vec<_> = got.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            got,
            [
                "/usr/local/bin/berth-guest",
                "/usr/local/x86_64-unknown-linux-gnu/release/berth-guest",
                "/usr/local/x86_64-unknown-linux-gnu/debug/berth-guest",
                "/usr/x86_64-unknown-linux-gnu/release/berth-guest",
                "/usr/x86_64-unknown-linux-gnu/debug/berth-guest",
                "/usr/local/lib/berth/berth-guest",
                "/usr/lib/berth/berth-guest",
            ]
        );
        let got = agent_candidates(Path::new("/opt/b/bin/berth"));
        assert_eq!(got[5], Path::new("/opt/b/lib/berth/berth-guest"));
        assert_eq!(
            got[6..],
            [
                PathBuf::from(SYSTEM_AGENT_PATHS[0]),
                PathBuf::from(SYSTEM_AGENT_PATHS[1])
            ]
        );
    }

    #[test]
    fn modules_come_after_their_dependencies() {
        let dep = "kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio_ring.ko\n\
                   kernel/fs/fuse/fuse.ko:\n\
                   kernel/drivers/virtio/virtio_ring.ko:\n\
                   kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko\n";
        let got = resolve_modules(dep, &["virtio_mmio", "virtiofs", "absent"]);
        assert_eq!(
            got,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio_mmio.ko",
                "kernel/fs/fuse/fuse.ko",
                "kernel/fs/fuse/virtiofs.ko"
            ]
        );
    }

    #[test]
    fn the_uncompressed_image_is_the_elf_vmlinux_beside_berths_kernel_only() {
        let dir = std::env::temp_dir().join(format!("berth-uncompressed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let bz = dir.join("bzImage");
        std::fs::write(&bz, b"not read here").unwrap();
        let k = |berth| Kernel::new(bz.clone(), berth, String::new()).uncompressed;
        assert_eq!(k(true), None, "no vmlinux beside it");
        std::fs::write(dir.join("vmlinux"), b"MZ: not an ELF").unwrap();
        assert_eq!(k(true), None, "a vmlinux that is not an ELF file");
        std::fs::write(dir.join("vmlinux"), b"\x7fELF\x02\x01\x01").unwrap();
        assert_eq!(k(true), Some(dir.join("vmlinux")));
        assert_eq!(k(false), None, "another kernel (the cloud kernel) is booted as it is");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut c = Cpio {
            out: Vec::new(),
            ino: 0,
        };
        c.entry("init", 0o100755, b"abc", (0, 0));
        assert!(c.out.len().is_multiple_of(4));
        assert!(c.out.starts_with(b"070701"));
    }
}
