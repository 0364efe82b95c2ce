//! What boots a VM container's micro-VM: the [`Plan`] (hypervisor, kernel, initramfs, vCPUs, guest
//! RAM, devices), resolved and checked before anything is created, and the qemu command line made
//! from it; the KVM probe and its cache; the descriptor numbers qemu inherits.

use super::*;
use crate::spec::Bundle;
use crate::{bail, err, Result};
use oci_spec::runtime::Spec;
use std::io::Read;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Everything needed to boot the VM, resolved and checked before anything is created.
pub struct Plan {
    pub hypervisor: PathBuf,
    pub hv_params: Vec<String>,
    pub kernel: PathBuf,
    /// Berth's own kernel (BERTH_KERNEL_MACHINE, BERTH_KERNEL_CMDLINE).
    pub berth_kernel: bool,
    /// The same kernel uncompressed (image::Kernel::uncompressed), booted instead under TCG.
    pub uncompressed: Option<PathBuf>,
    pub cmdline: String,
    pub initrd: PathBuf,
    pub image: Option<(PathBuf, String)>,
    pub cpus: u32,
    pub mem_mib: u64,
    pub kvm: bool,
    pub sandbox: bool,
    pub virtiofsd: Option<PathBuf>,
    /// Host bind mounts, shared by a virtiofsd of their own (vm/binds.rs).
    pub binds: binds::Binds,
    /// The MACs of the virtio-net devices, one per interface of the container's network
    /// namespace (vm/net.rs); their taps are qemu's descriptors from QEMU_NET_FD on.
    pub nics: Vec<String>,
    /// A pod share for later containers of the pod (vm/pod.rs): a virtio-fs device, tag `pod`.
    pub pod: bool,
}

/// "512", "512M", "2G" -> MiB.
pub fn parse_mib(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, 'M' | 'm') => (&s[..i], 1),
        (i, 'G' | 'g') => (&s[..i], 1024),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().filter(|&n| n > 0).map(|n| n * mul)
}

/// Guest RAM: the annotation, else linux.resources.memory.limit, else the default.
pub fn memory_mib(spec: &Spec) -> Result<u64> {
    if let Some(v) = annotation(spec, ANN_MEMORY) {
        let m = parse_mib(v).ok_or_else(|| err!("annotations.{ANN_MEMORY}: {v:?} is not a size (MiB, or with M/G)"))?;
        return Ok(m.max(MIN_MEM_MIB));
    }
    let limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|&l| l > 0);
    Ok(match limit {
        Some(l) => (l as u64).div_ceil(1 << 20).max(MIN_MEM_MIB),
        None => DEFAULT_MEM_MIB,
    })
}

/// vCPUs: the annotation, else the CPU quota (rounded up) or the cpuset's size, else 1.
pub fn cpus(spec: &Spec) -> Result<u32> {
    if let Some(v) = annotation(spec, ANN_CPUS) {
        return v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| (1..=255).contains(&n))
            .ok_or_else(|| err!("annotations.{ANN_CPUS}: {v:?} is not a number of vCPUs (1-255)"));
    }
    let cpu = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref());
    let Some(cpu) = cpu else { return Ok(1) };
    if let (Some(q), Some(p)) = (cpu.quota(), cpu.period()) {
        if q > 0 && p > 0 {
            return Ok(((q as u64).div_ceil(p) as u32).clamp(1, 255));
        }
    }
    if let Some(set) = cpu.cpus() {
        let n: u32 = set
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|r| match r.split_once('-') {
                Some((a, b)) => {
                    b.trim()
                        .parse::<u32>()
                        .unwrap_or(0)
                        .saturating_sub(a.trim().parse().unwrap_or(0))
                        + 1
                }
                None => 1,
            })
            .sum();
        return Ok(n.clamp(1, 255));
    }
    Ok(1)
}

impl Plan {
    pub fn new(bundle: &Bundle) -> Result<Plan> {
        let spec = &bundle.spec;
        let vm = spec.vm().as_ref();
        let hv = vm.and_then(|v| v.hypervisor().as_ref());
        let hypervisor = image::hypervisor(hv.map(|h| h.path().as_path()).filter(|p| !p.as_os_str().is_empty()))?;
        let (kpath, field) = match (annotation(spec, ANN_KERNEL), vm.map(|v| v.kernel().path())) {
            (Some(a), _) => (Some(PathBuf::from(a)), format!("annotations.{ANN_KERNEL}")),
            (None, Some(p)) if !p.as_os_str().is_empty() => (Some(p.clone()), "vm.kernel.path".to_string()),
            _ => (None, String::new()),
        };
        let guest_kernel = image::kernel(kpath.as_deref(), &field)?;
        crate::log::debug(&format!(
            "VM container: guest kernel {} ({}){}",
            guest_kernel.path.display(),
            guest_kernel.why,
            guest_kernel
                .uncompressed
                .as_ref()
                .map(|v| format!("; under TCG its uncompressed image {} (PVH entry)", v.display()))
                .unwrap_or_default()
        ));
        let kernel = guest_kernel.path.clone();
        let extra = vm.and_then(|v| v.kernel().initrd().as_ref()).map(PathBuf::from);
        if let Some(x) = &extra {
            if !x.is_file() {
                bail!("vm.kernel.initrd {}: no such file", x.display());
            }
        }
        let image = match vm.and_then(|v| v.image().as_ref()) {
            Some(img) => {
                if !img.path().is_file() && !img.path().exists() {
                    bail!("vm.image.path {}: no such file", img.path().display());
                }
                let fmt = img.format().as_str();
                if !["raw", "qcow2", "vdi", "vmdk", "vhd"].contains(&fmt) {
                    bail!("vm.image.format: {fmt:?} (expected raw, qcow2, vdi, vmdk or vhd)");
                }
                Some((
                    img.path().clone(),
                    if fmt == "vhd" { "vpc".into() } else { fmt.to_string() },
                ))
            }
            None => None,
        };
        let binds = binds::plan(spec, &bundle.dir)?;
        let virtiofsd = if image.is_none() || !binds.shares.is_empty() {
            Some(image::virtiofsd()?)
        } else {
            None
        };
        let mem_mib = memory_mib(spec)?;
        let cpus = cpus(spec)?;
        let initrd = image::initramfs(&kernel, extra.as_deref())?;
        let (kvm, sandbox) = probe(&hypervisor, &kernel, &initrd);
        let mut cmdline = String::from("console=hvc0 quiet panic=-1 rdinit=/init");
        if !kvm {
            // Without these a share of TCG boots hang calibrating the TSC.
            cmdline.push_str(" tsc_early_khz=2600000 lpj=10400000");
        }
        if guest_kernel.berth {
            let tcg: &[&str] = if kvm { &[] } else { BERTH_KERNEL_CMDLINE_TCG };
            for p in BERTH_KERNEL_CMDLINE.iter().chain(tcg) {
                cmdline.push(' ');
                cmdline.push_str(p);
            }
        }
        for p in vm.and_then(|v| v.kernel().parameters().as_ref()).into_iter().flatten() {
            cmdline.push(' ');
            cmdline.push_str(p);
        }
        Ok(Plan {
            hypervisor,
            hv_params: hv.and_then(|h| h.parameters().clone()).unwrap_or_default(),
            kernel,
            berth_kernel: guest_kernel.berth,
            uncompressed: guest_kernel.uncompressed.clone(),
            cmdline,
            initrd,
            image,
            cpus,
            mem_mib,
            kvm,
            sandbox,
            virtiofsd,
            binds,
            nics: Vec::new(),
            pod: false,
        })
    }

    /// The kernel file qemu boots (and its jail holds). Under TCG Berth's kernel boots
    /// uncompressed, through its PVH entry: no decompressor (0.08 s of TCG). KVM keeps the
    /// bzImage, which its probe has booted.
    pub fn boot_kernel(&self) -> &Path {
        match &self.uncompressed {
            Some(v) if !self.kvm => v,
            _ => &self.kernel,
        }
    }

    fn common_args(&self, cmd: &mut Command) {
        cmd.args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
        if self.sandbox {
            cmd.args(["-sandbox", confine::SANDBOX]);
        }
        let mem = format!("{}M", self.mem_mib);
        let extra = if self.berth_kernel { BERTH_KERNEL_MACHINE } else { "" };
        if self.kvm {
            cmd.args([
                "-M",
                &format!("microvm,memory-backend=mem{extra}"),
                "-accel",
                "kvm",
                "-cpu",
                "host",
            ]);
        } else {
            cmd.args([
                "-M",
                // Berth's kernel keeps the PIT and PIC (BERTH_KERNEL_MACHINE).
                &format!(
                    "microvm,{}memory-backend=mem{extra}",
                    if self.berth_kernel { "" } else { "pit=off,pic=off," }
                ),
                "-accel",
                // A bounded translation cache (qemu's default grows to 1 GiB), so the host
                // cgroup's allowance beyond guest RAM holds (confine::HOST_OVERHEAD_MIB).
                "tcg,tb-size=64",
                "-cpu",
                "max",
            ]);
        }
        cmd.args(["-m", &mem, "-smp", &self.cpus.to_string()]);
        cmd.arg("-object")
            .arg(format!("memory-backend-memfd,id=mem,size={mem},share=on"));
        cmd.arg("-kernel")
            .arg(self.boot_kernel())
            .arg("-initrd")
            .arg(&self.initrd);
        cmd.args(["-device", "virtio-serial-device,max_ports=8"]);
    }

    /// The qemu command line. qemu opens no host path but the kernel, the initramfs and the
    /// `vm.image` disk: every port and the virtio-fs sockets are descriptors it inherits (the
    /// QEMU_*_FD below); `stdout`/`stderr` say whether those ports are relayed (else `null`).
    pub(super) fn command(&self, stdout: bool, stderr: bool) -> Command {
        let mut cmd = Command::new(&self.hypervisor);
        self.common_args(&mut cmd);
        cmd.arg("-append").arg(&self.cmdline);
        let port = |cmd: &mut Command, id: &str, chardev: String, name: &str| {
            cmd.arg("-chardev").arg(format!("{chardev},id={id}"));
            cmd.arg("-device")
                .arg(format!("virtserialport,chardev={id},name={name}"));
        };
        cmd.arg("-chardev").arg(format!("socket,id=con,fd={QEMU_CONSOLE_FD}"));
        cmd.args(["-device", "virtconsole,chardev=con"]);
        port(&mut cmd, "ctl", format!("socket,fd={QEMU_CTL_FD}"), proto::PORT_CTL);
        let out = |relayed: bool, fd: RawFd| {
            if relayed {
                format!("socket,fd={fd}")
            } else {
                "null".to_string()
            }
        };
        port(&mut cmd, "io", out(stdout, QEMU_STDOUT_FD), proto::PORT_STDIO);
        port(&mut cmd, "err", out(stderr, QEMU_STDERR_FD), proto::PORT_STDERR);
        port(&mut cmd, "exit", format!("socket,fd={QEMU_EXIT_FD}"), proto::PORT_EXIT);
        match &self.image {
            Some((path, fmt)) => {
                cmd.arg("-drive")
                    .arg(format!("file={},format={fmt},if=none,id=root", qemu_path(path)));
                cmd.args(["-device", "virtio-blk-device,drive=root"]);
            }
            None => {
                cmd.arg("-chardev").arg(format!("socket,id=fs,fd={QEMU_FS_FD}"));
                cmd.arg("-device")
                    .arg(format!("vhost-user-fs-device,chardev=fs,tag={}", proto::FS_TAG));
            }
        }
        if !self.binds.shares.is_empty() {
            cmd.arg("-chardev").arg(format!("socket,id=binds,fd={QEMU_BINDS_FD}"));
            cmd.arg("-device")
                .arg(format!("vhost-user-fs-device,chardev=binds,tag={}", proto::BINDS_TAG));
        }
        if self.pod {
            cmd.arg("-chardev").arg(format!("socket,id=pod,fd={QEMU_POD_FD}"));
            cmd.arg("-device")
                .arg(format!("vhost-user-fs-device,chardev=pod,tag={}", proto::POD_TAG));
        }
        for (i, mac) in self.nics.iter().enumerate() {
            cmd.arg("-netdev")
                .arg(format!("tap,id=net{i},fd={},vhost=off", QEMU_NET_FD + i as RawFd));
            cmd.arg("-device")
                .arg(format!("virtio-net-device,netdev=net{i},mac={mac}"));
        }
        cmd.args(&self.hv_params);
        cmd
    }
}

/// The descriptors qemu inherits (docs/VM.md, "The protocol"): the control port's socketpair end
/// (the monitor holds the other), the one-way ports' (vm/ports.rs), and its connections to the
/// virtiofsds (made by the monitor). Nothing else: no path of the state directory.
pub(super) const QEMU_CTL_FD: RawFd = 5;
pub(super) const QEMU_CONSOLE_FD: RawFd = 6;
pub(super) const QEMU_STDOUT_FD: RawFd = 7;
pub(super) const QEMU_STDERR_FD: RawFd = 8;
pub(super) const QEMU_EXIT_FD: RawFd = 9;
pub(super) const QEMU_FS_FD: RawFd = 10;
pub(super) const QEMU_BINDS_FD: RawFd = 11;
pub(super) const QEMU_POD_FD: RawFd = 12;
/// The taps (vm/net.rs), one per interface: QEMU_NET_FD + n.
pub(super) const QEMU_NET_FD: RawFd = 13;
/// Where the monitor keeps qemu's descriptors before the fork: above every QEMU_*_FD, so that
/// dup2 onto those never overwrites one still to be moved.
pub(super) const QEMU_FD_FLOOR: RawFd = 32;

/// qemu option values separate with commas: a comma in a path is doubled.
pub(super) fn qemu_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// Whether a standard descriptor is open on something the monitor can relay a port to.
pub(super) fn fd_usable(fd: RawFd) -> bool {
    // SAFETY: fstat into a local struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    matches!(
        st.st_mode & libc::S_IFMT,
        libc::S_IFREG | libc::S_IFIFO | libc::S_IFCHR | libc::S_IFSOCK
    )
}

/// (KVM boots the guest, qemu has `-sandbox`), probed once per hypervisor and kernel and cached.
/// `BERTH_VM_ACCEL=kvm|tcg` decides without probing.
pub(super) fn probe(qemu: &Path, kernel: &Path, initrd: &Path) -> (bool, bool) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in [qemu, kernel, Path::new("/dev/kvm")] {
        p.hash(&mut h);
        if let Ok(m) = std::fs::metadata(p) {
            use std::os::unix::fs::MetadataExt;
            (m.len(), m.mtime()).hash(&mut h);
        }
    }
    let cache = image::cache_dir().join(format!("probe-{:016x}", h.finish()));
    let forced = std::env::var("BERTH_VM_ACCEL").ok();
    if let Ok(s) = std::fs::read_to_string(&cache) {
        let mut w = s.split_whitespace();
        let kvm = w.next() == Some("kvm");
        let sandbox = w.next() == Some("sandbox");
        return (forced.as_deref().map_or(kvm, |f| f == "kvm"), sandbox);
    }
    let sandbox = Command::new(qemu)
        .arg("-help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("-sandbox"));
    let kvm_dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let kvm = kvm_dev && probe_kvm(qemu, kernel, initrd);
    if !kvm {
        crate::log::warn(if kvm_dev {
            "VM containers: KVM cannot boot the guest kernel on this host; using software emulation (TCG)"
        } else {
            "VM containers: /dev/kvm is not available; using software emulation (TCG)"
        });
    }
    let _ = std::fs::create_dir_all(image::cache_dir());
    let _ = std::fs::write(
        &cache,
        format!(
            "{} {}\n",
            if kvm { "kvm" } else { "tcg" },
            if sandbox { "sandbox" } else { "-" }
        ),
    );
    (forced.as_deref().map_or(kvm, |f| f == "kvm"), sandbox)
}

/// Boot the guest under KVM in probe mode and look for the agent's marker on the exit port.
pub(super) fn probe_kvm(qemu: &Path, kernel: &Path, initrd: &Path) -> bool {
    // A directory of our own (made here, 0700, never one that exists already: /tmp is shared).
    let mut nonce = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut nonce));
    let dir = std::env::temp_dir().join(format!(
        "berth-kvm-probe-{}-{:016x}",
        std::process::id(),
        u64::from_ne_bytes(nonce)
    ));
    {
        use std::os::unix::fs::DirBuilderExt;
        if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_err() {
            return false;
        }
    }
    let log = dir.join("console");
    let mut cmd = Command::new(qemu);
    cmd.args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    // Berth's kernel boots with its own machine options and command line (BERTH_KERNEL_MACHINE).
    let berth = image::kernel_release(kernel).is_ok_and(|r| r.ends_with("-berth"));
    let (machine, append) = if berth {
        (
            format!("microvm{BERTH_KERNEL_MACHINE}"),
            format!(" {}", BERTH_KERNEL_CMDLINE.join(" ")),
        )
    } else {
        ("microvm".to_string(), String::new())
    };
    cmd.args(["-M", &machine, "-accel", "kvm", "-cpu", "host", "-m", "128M"]);
    cmd.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
    cmd.arg("-append")
        .arg(format!("console=hvc0 quiet panic=-1 rdinit=/init berth.probe{append}"));
    cmd.args(["-device", "virtio-serial-device"]);
    cmd.arg("-chardev")
        .arg(format!("file,id=exit,path={}", qemu_path(&log)));
    cmd.arg("-device")
        .arg(format!("virtserialport,chardev=exit,name={}", proto::PORT_EXIT));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let ok = match cmd.spawn() {
        Ok(mut child) => {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut ok = false;
            while Instant::now() < deadline {
                if std::fs::read_to_string(&log).is_ok_and(|s| s.contains(proto::PROBE_MARKER)) {
                    ok = true;
                    break;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    ok = std::fs::read_to_string(&log).is_ok_and(|s| s.contains(proto::PROBE_MARKER));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            ok
        }
        Err(_) => false,
    };
    let _ = std::fs::remove_dir_all(&dir);
    ok
}
