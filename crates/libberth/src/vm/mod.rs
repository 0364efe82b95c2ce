//! VM containers: the same bundle run inside a micro-VM with its own guest kernel (docs/VM.md).
//!
//! Selected by the spec's `vm` object or the annotation `run.berth.isolation=vm`. `create` forks a
//! small monitor (the container's host pid) that starts virtiofsd (sharing the rootfs live) and
//! qemu, then asks the guest agent (berth-guest, PID 1 in the VM) over the control port to create
//! the container there with libberth's Linux backend. `start` and `kill` are requests on the same
//! port. When the container's process ends the guest writes its status to the exit port (a file in
//! the state directory) and powers off; qemu exits, and the monitor exits with that status.

pub(crate) mod backend;
pub mod binds;
pub mod confine;
pub mod exec;
pub mod hooks;
pub mod image;
mod mux;
pub mod net;
pub mod ports;
pub mod proto;
pub mod relay;

use crate::container::{CreateOpts, Runtime, Undo};
use crate::error::Context;
use crate::spec::Bundle;
use crate::state::{self, Locked, Record, Status};
use crate::{bail, err, Error, Result};
use oci_spec::runtime::Spec;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const ANN_ISOLATION: &str = "run.berth.isolation";
pub const ANN_CPUS: &str = "run.berth.vm.cpus";
pub const ANN_MEMORY: &str = "run.berth.vm.memory";
pub const ANN_KERNEL: &str = "run.berth.vm.kernel";

/// What Berth's own guest kernel (vm/kernel/berth-guest.config) gets on its command line beyond
/// the common part (docs/VM.md, "The guest kernel": a parameter goes here only when measured to
/// help; kept apart from the rest of the command line).
/// `reboot=t`: see BERTH_KERNEL_MACHINE.
pub const BERTH_KERNEL_CMDLINE: &[&str] = &["reboot=t"];

/// The microvm options for Berth's own kernel: without ACPI (its ACPI tables fail to load in a
/// kernel without PCI), qemu then names the virtio-mmio devices on the command line
/// (`virtio_mmio.device=`), and the agent ends the VM with a reset (`reboot=t`: a triple fault,
/// which `-no-reboot` turns into qemu's exit) instead of an ACPI power-off. Under TCG it also keeps
/// microvm's PIT and PIC: without ACPI the kernel cannot tell the PIT is absent and checks the
/// local APIC timer against it, and with no PIT ticking it disables the APIC timer, leaving the
/// guest without timers (no sleep, no timeout ends: the agent never answered). Under KVM the
/// TSC-deadline timer needs no PIT (and microvm's defaults are kept there for both kernels).
pub const BERTH_KERNEL_MACHINE: &str = ",acpi=off";

/// Marker (and record of the hypervisor command line) in a VM container's state directory.
pub(crate) const VM_FILE: &str = "vm";
/// The monitor's socket: every host client's way to the guest (vm/mux.rs).
const MUX_SOCK: &str = "mux.sock";
const FS_SOCK: &str = "fs.sock";
/// The socket of the virtiofsd sharing the bind mounts' sources (vm/binds.rs).
const BINDS_SOCK: &str = "binds.sock";
const EXIT_FILE: &str = "exit";
const CONSOLE_LOG: &str = ports::CONSOLE_LOG;

const DEFAULT_MEM_MIB: u64 = 256;
const MIN_MEM_MIB: u64 = 128;
/// How long a guest may take to boot and create the container (TCG on a busy host is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    spec.annotations().as_ref()?.get(key).map(String::as_str)
}

/// The CRI's mark of a pod's sandbox (pause) container.
const ANN_CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// Whether this bundle asks for a VM. A CRI pod's sandbox (pause) container stays a Linux
/// container even when the pod's annotation asks for VMs (containerd gives the pod's annotations
/// to the sandbox too): it only holds the pod's namespaces, and its workload container boots the
/// VM attached to the pod's network namespace (docs/VM.md, "Kubernetes").
pub fn wanted(spec: &Spec) -> bool {
    if spec.vm().is_none() && annotation(spec, ANN_CRI_CONTAINER_TYPE) == Some("sandbox") {
        return false;
    }
    spec.vm().is_some()
        || annotation(spec, ANN_ISOLATION) == Some("vm")
        || VM_BY_NAME.load(std::sync::atomic::Ordering::Relaxed)
}

/// Berth run under this program name (a link to it) makes every container a VM container: a
/// second runtime handler for containerd (a Kubernetes RuntimeClass) with stock configuration,
/// `BinaryName = ".../berth-vm"` (docs/VM.md, "Kubernetes").
pub const VM_PROGRAM: &str = "berth-vm";
static VM_BY_NAME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called with argv[0] at start-up.
pub fn select_by_program_name(argv0: &std::ffi::OsStr) {
    if Path::new(argv0).file_name() == Some(std::ffi::OsStr::new(VM_PROGRAM)) {
        VM_BY_NAME.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether the container in this state directory is a VM container.
pub fn is_vm(locked: &Locked) -> bool {
    locked.dir.join(VM_FILE).exists()
}

/// Everything needed to boot the VM, resolved and checked before anything is created.
pub struct Plan {
    pub hypervisor: PathBuf,
    pub hv_params: Vec<String>,
    pub kernel: PathBuf,
    /// Berth's own kernel (BERTH_KERNEL_MACHINE, BERTH_KERNEL_CMDLINE).
    pub berth_kernel: bool,
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
            "VM container: guest kernel {} ({})",
            guest_kernel.path.display(),
            guest_kernel.why
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
            for p in BERTH_KERNEL_CMDLINE {
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
        })
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
        cmd.arg("-kernel").arg(&self.kernel).arg("-initrd").arg(&self.initrd);
        cmd.args(["-device", "virtio-serial-device,max_ports=8"]);
    }

    /// The qemu command line. qemu opens no host path but the kernel, the initramfs and the
    /// `vm.image` disk: every port and the virtio-fs sockets are descriptors it inherits (the
    /// QEMU_*_FD below); `stdout`/`stderr` say whether those ports are relayed (else `null`).
    fn command(&self, stdout: bool, stderr: bool) -> Command {
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
const QEMU_CTL_FD: RawFd = 5;
const QEMU_CONSOLE_FD: RawFd = 6;
const QEMU_STDOUT_FD: RawFd = 7;
const QEMU_STDERR_FD: RawFd = 8;
const QEMU_EXIT_FD: RawFd = 9;
const QEMU_FS_FD: RawFd = 10;
const QEMU_BINDS_FD: RawFd = 11;
/// The taps (vm/net.rs), one per interface: QEMU_NET_FD + n.
const QEMU_NET_FD: RawFd = 12;
/// Where the monitor keeps qemu's descriptors before the fork: above every QEMU_*_FD, so that
/// dup2 onto those never overwrites one still to be moved.
const QEMU_FD_FLOOR: RawFd = 32;

/// A short path for a socket in `dir`: the path itself, or one through /proc/self/fd when it is
/// too long (the returned descriptor must stay open while the path is used).
fn sock_path(dir: &Path, name: &str) -> Result<(PathBuf, Option<std::os::fd::OwnedFd>)> {
    let p = dir.join(name);
    if p.as_os_str().len() < 100 {
        return Ok((p, None));
    }
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_ctx(|| format!("{}", dir.display()))?;
    Ok((
        PathBuf::from(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd())),
        Some(fd),
    ))
}

fn connect(dir: &Path, name: &str) -> std::io::Result<UnixStream> {
    let (p, _fd) = sock_path(dir, name).map_err(|e| std::io::Error::other(e.to_string()))?;
    UnixStream::connect(p)
}

/// qemu option values separate with commas: a comma in a path is doubled.
fn qemu_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// Whether a standard descriptor is open on something the monitor can relay a port to.
fn fd_usable(fd: RawFd) -> bool {
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
fn probe(qemu: &Path, kernel: &Path, initrd: &Path) -> (bool, bool) {
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
fn probe_kvm(qemu: &Path, kernel: &Path, initrd: &Path) -> bool {
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

/// The config.json the guest sees: the root where the agent mounts it, only the hooks that run in
/// the container (hooks.rs), no host CPU/device limits (confine.rs), no host namespace paths, and
/// bind mounts whose sources are their shares in the guest (binds.rs).
pub fn guest_config(spec: &Spec, binds: &binds::Binds) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(spec).map_err(|e| err!("config.json: {e}"))?;
    v["root"]["path"] = proto::GUEST_ROOTFS.into();
    hooks::adapt_guest_hooks(&mut v);
    confine::adapt_guest_resources(&mut v);
    if let Some(o) = v.as_object_mut() {
        o.remove("vm");
        // Inside the guest the container is a Linux container.
        if let Some(a) = o.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            a.remove(ANN_ISOLATION);
        }
    }
    if let Some(ns) = v.pointer_mut("/linux/namespaces").and_then(|n| n.as_array_mut()) {
        // The container uses the guest's network namespace, which the agent configures as the
        // host's (vm/net.rs).
        ns.retain(|n| n["type"] != "network");
        // A host namespace joined by path cannot be joined from the guest: the container gets a
        // new one of that type there (not the guest's own: the agent's pid, ipc, mount, uts and
        // cgroup namespaces stay out of the container's reach); a user namespace by path is
        // dropped (its mappings are the host's).
        ns.retain(|n| n.get("path").is_none() || n["type"] != "user");
        for n in ns.iter_mut() {
            if let Some(o) = n.as_object_mut() {
                if o.remove("path").is_some() {
                    crate::log::warn(&format!(
                        "linux.namespaces: the {} namespace path is a host namespace; a new one in the VM",
                        o.get("type").and_then(|t| t.as_str()).unwrap_or("?")
                    ));
                }
            }
        }
    }
    binds::adapt_guest_mounts(&mut v, binds);
    Ok(v)
}

/// The host name of the UTS namespace the config joins by path, if it does (read in a thread of
/// its own that enters it; the caller's namespace is not changed).
fn joined_hostname(spec: &Spec) -> Option<String> {
    let path = spec
        .linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Uts)?
        .path()
        .clone()?;
    let ns = std::fs::File::open(&path).ok()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns of this thread's UTS namespace; uname into a local struct.
            unsafe {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS) != 0 {
                    return None;
                }
                let mut u: libc::utsname = std::mem::zeroed();
                if libc::uname(&mut u) != 0 {
                    return None;
                }
                let name = std::ffi::CStr::from_ptr(u.nodename.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                Some(name).filter(|n| !n.is_empty() && n.len() <= 64)
            }
        })
        .join()
        .ok()
        .flatten()
    })
}

/// A new stream to the guest: a connection to the monitor's socket.
pub(crate) fn open_stream(dir: &Path) -> Result<UnixStream> {
    let sock = dir.join(MUX_SOCK);
    connect(dir, MUX_SOCK).with_ctx(|| format!("VM container socket {}", sock.display()))
}

pub(crate) fn send_request(s: &mut UnixStream, line: &str) -> Result<()> {
    s.write_all(&proto::Frame::new(0, proto::kind::REQ, line).encode())
        .ctx("VM container socket")
}

/// A request on a stream of its own: one request, one reply.
fn request(dir: &Path, line: &str, timeout: Duration) -> Result<String> {
    let mut s = open_stream(dir)?;
    send_request(&mut s, line)?;
    read_reply(&mut s, &mut proto::FrameBuf::default(), timeout, || None)
}

/// Read frames until the stream's reply (what follows it stays in `buf`); `gone` is asked
/// periodically whether the VM ended (with why).
pub(crate) fn read_reply(
    s: &mut UnixStream,
    buf: &mut proto::FrameBuf,
    timeout: Duration,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<String> {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(f) = buf.next_frame().map_err(Error::new)? {
            if f.kind != proto::kind::REPLY {
                continue;
            }
            let line = f.text();
            return match proto::split(&line) {
                ("error", msg) => Err(Error::new(msg.to_string())),
                _ => Ok(line),
            };
        }
        match s.read(&mut chunk) {
            Ok(0) => bail!(
                "the VM went away{}",
                gone().map(|w| format!(": {w}")).unwrap_or_default()
            ),
            Ok(n) => buf.push(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            // The monitor closed the connection: the VM is gone, say why.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => bail!(
                "the VM went away{}",
                gone().map(|w| format!(": {w}")).unwrap_or_default()
            ),
            Err(e) => return Err(Error::sys("VM container socket", e)),
        }
        if let Some(why) = gone() {
            bail!("the VM ended before the container was ready: {why}");
        }
        if Instant::now() > deadline {
            bail!("the VM did not answer within {} s", timeout.as_secs());
        }
    }
}

/// The last lines of the guest console, for error messages.
fn console_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join(CONSOLE_LOG)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "no guest console output".into()
    } else {
        format!("guest console: {tail}")
    }
}

/// Mark every descriptor from `first` to `last` close-on-exec (between fork and exec: whatever
/// the caller of Berth leaked into it, e.g. a make jobserver's pipe, does not reach qemu or
/// virtiofsd; Rust's own exec-error pipe keeps working until the exec).
fn cloexec_range(first: u32, last: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with integer arguments.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, CLOSE_RANGE_CLOEXEC) };
}

/// Close what the monitor inherited without close-on-exec (Berth opens everything with it):
/// nothing but the standard descriptors is meant for a VM container (`--preserve-fds` is refused).
fn close_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        // SAFETY: fcntl/close on descriptor numbers of this process; a closed one gives EBADF.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFD);
            if fl >= 0 && fl & libc::FD_CLOEXEC == 0 {
                libc::close(fd);
            }
        }
    }
}

fn clear_cloexec_to(fd: RawFd, target: RawFd) -> std::io::Result<()> {
    // SAFETY: dup2/fcntl on descriptors we own, between fork and exec.
    unsafe {
        if fd < 0 {
        } else if fd == target {
            let fl = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
        } else if libc::dup2(fd, target) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // A process group of its own: a terminal the monitor controls signals the monitor only.
        libc::setpgid(0, 0);
    }
    Ok(())
}

/// The monitor: the container's host process. Starts virtiofsd and qemu as its children (they die
/// with it), waits for qemu, and exits with the container's status from the exit port.
fn monitor(plan: &Plan, dir: &Path, rootfs: &Path, fs: Option<&UnixListener>, mux: Mon, net: &net::Attached) -> i32 {
    // SAFETY: a new session, so terminal signals meant for `berth run` do not reach qemu; not
    // dumpable: no core file or /proc access to what it holds (every guest-facing descriptor);
    // SIGPIPE ignored: Berth's stdout whose reader went away is an EPIPE for the port relay,
    // which then drops what comes (as qemu did when it wrote there itself), not the VM's end.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    close_inherited();
    // The monitor, and so qemu, live in the container's network namespace (vm/net.rs): qemu
    // joins nothing else of the host's network.
    if let Some(ns) = &net.netns {
        if let Err(e) = net::enter(ns) {
            eprintln!("berth: VM container: enter the container's network namespace: {e}");
            return 255;
        }
    }
    if let Some(t) = &mux.tty {
        // The container's terminal: resizes come as SIGWINCH, a closed master as SIGHUP.
        relay::control_terminal(t.as_raw_fd());
    }
    let mut fsd = Vec::new();
    let bin = plan.virtiofsd.as_deref().unwrap_or(Path::new("virtiofsd"));
    if let Some(l) = fs {
        match spawn_virtiofsd(bin, l, rootfs, None) {
            Ok(ch) => fsd.push(ch),
            Err(e) => {
                eprintln!("berth: VM container: start {}: {e}", bin.display());
                return 255;
            }
        }
    }
    if let Some((l, staging, stage)) = &mux.binds {
        match spawn_virtiofsd(bin, l, staging, Some(stage.clone())) {
            Ok(ch) => fsd.push(ch),
            Err(e) => {
                eprintln!("berth: VM container: bind mounts: start {}: {e}", bin.display());
                for mut f in fsd {
                    let _ = f.kill();
                    let _ = f.wait();
                }
                return 255;
            }
        }
    }
    let stop_fsd = |fsd: Vec<std::process::Child>| {
        for mut f in fsd {
            let _ = f.kill();
            let _ = f.wait();
        }
    };
    let (ports, ends) = match ports::Ports::new(dir, fd_usable(1), fd_usable(2)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berth: VM container: socketpair: {e}");
            stop_fsd(fsd);
            return 255;
        }
    };
    // qemu's connections to the virtiofsds, made here: qemu gets descriptors, not the sockets'
    // paths, and nobody else can connect once the names are gone.
    let mut fs_conns = Vec::new();
    for (name, wanted) in [(FS_SOCK, fs.is_some()), (BINDS_SOCK, mux.binds.is_some())] {
        if !wanted {
            fs_conns.push(None);
            continue;
        }
        match connect(dir, name) {
            Ok(c) => fs_conns.push(Some(OwnedFd::from(c))),
            Err(e) => {
                eprintln!("berth: VM container: {}: {e}", dir.join(name).display());
                stop_fsd(fsd);
                return 255;
            }
        }
        let _ = std::fs::remove_file(dir.join(name));
    }
    let image = plan.image.as_ref().map(|(p, _)| p.as_path());
    let jail = match confine::qemu_jail(dir, &plan.kernel, &plan.initrd, image, plan.kvm) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("berth: {e}");
            stop_fsd(fsd);
            return 255;
        }
    };
    let (ctl, qemu_ctl) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berth: VM container: socketpair: {e}");
            stop_fsd(fsd);
            return 255;
        }
    };
    let mut q = plan.command(ends.stdout.is_some(), ends.stderr.is_some());
    // (target, source) for qemu's descriptors; the sources moved above every target first.
    let mut wanted: Vec<(RawFd, Option<OwnedFd>)> = vec![
        (QEMU_CTL_FD, Some(OwnedFd::from(qemu_ctl))),
        (QEMU_CONSOLE_FD, Some(ends.console)),
        (QEMU_STDOUT_FD, ends.stdout),
        (QEMU_STDERR_FD, ends.stderr),
        (QEMU_EXIT_FD, Some(ends.exit)),
        (QEMU_FS_FD, fs_conns[0].take()),
        (QEMU_BINDS_FD, fs_conns[1].take()),
    ];
    for (i, tap) in net.taps.iter().enumerate() {
        match tap.try_clone() {
            Ok(t) => wanted.push((QEMU_NET_FD + i as RawFd, Some(t))),
            Err(e) => {
                eprintln!("berth: VM container: dup: {e}");
                stop_fsd(fsd);
                return 255;
            }
        }
    }
    let last_fd = QEMU_NET_FD + net.taps.len() as RawFd;
    let mut moved: Vec<(RawFd, OwnedFd)> = Vec::new();
    for (target, src) in wanted {
        let Some(src) = src else { continue };
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor, owned below.
        let high = unsafe { libc::fcntl(src.as_raw_fd(), libc::F_DUPFD_CLOEXEC, QEMU_FD_FLOOR) };
        if high < 0 {
            eprintln!("berth: VM container: dup: {}", std::io::Error::last_os_error());
            stop_fsd(fsd);
            return 255;
        }
        // SAFETY: a fresh descriptor.
        moved.push((target, unsafe { OwnedFd::from_raw_fd(high) }));
    }
    let plan_fds: Vec<(RawFd, RawFd)> = moved.iter().map(|(t, f)| (*t, f.as_raw_fd())).collect();
    q.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    // SAFETY: async-signal-safe calls between fork and exec.
    unsafe {
        q.pre_exec(move || {
            for &(target, src) in &plan_fds {
                clear_cloexec_to(src, target)?;
            }
            cloexec_range(3, (QEMU_CTL_FD - 1) as u32);
            cloexec_range(last_fd as u32, u32::MAX);
            jail.enter()
        })
    };
    let _ = std::fs::write(dir.join(VM_FILE), format!("{q:?}\n"));
    crate::log::debug(&format!("VM container: {q:?}"));
    // qemu in a pid namespace of its own (its first process): an escaped qemu cannot address
    // another container's qemu (same uid, no capabilities either: ptrace would be allowed).
    // SAFETY: unshare with a flag; it changes only where this process's next child is born.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        crate::log::debug(&format!(
            "VM container: no pid namespace for qemu: {}",
            std::io::Error::last_os_error()
        ));
    }
    let spawned = q.spawn();
    drop(moved);
    let mut ports = ports;
    let code = match spawned {
        Ok(mut ch) => {
            let local = match mux.tty {
                Some(t) => relay::Local::terminal(0, t),
                None => relay::Local::pipes(0, mux.stdin.then_some(0), None, None),
            };
            mux::serve(&mut ch, dir, ctl, mux.listener, local, &mut ports).1
        }
        Err(e) => {
            eprintln!("berth: VM container: start {}: {e}", plan.hypervisor.display());
            None
        }
    };
    stop_fsd(fsd);
    // The interfaces get their own traffic back (the taps went with qemu).
    net.uncouple_here();
    // The status the guest wrote on the exit port (the monitor keeps the file for those who
    // look after it is gone), else the one it sent on stream 0; none (the guest crashed, or
    // qemu failed to start): 255, as for a lost process.
    let code = match ports.exit_code() {
        Some(c) => {
            let _ = std::fs::write(dir.join(EXIT_FILE), format!("exit {c}\n"));
            Some(c)
        }
        None => code,
    };
    code.unwrap_or(255)
}

/// virtiofsd runs as host root and writes the host's files for the guest, whose root is hostile:
/// what it must not make there (docs/SECURITY.md, "VM containers"). No device nodes and no file
/// capabilities (those capabilities dropped); the guest's `security.*` and `trusted.*` xattrs are
/// stored as `user.virtiofs.security.*`/`user.virtiofs.trusted.*` (which grant nothing on the
/// host), the host's own are hidden from it, and the guest may not name `user.virtiofs.*` itself.
const VIRTIOFSD_MODCAPS: &str = "--modcaps=-mknod:-setfcap";
const VIRTIOFSD_XATTRMAP: &str = "--xattrmap=\
:prefix:all:security.:user.virtiofs.:\
:prefix:all:trusted.:user.virtiofs.:\
:bad:client:user.virtiofs.::\
:bad:server::security.:\
:bad:server::trusted.:\
:ok:all:::";

/// And no set-user-ID or set-group-ID bit: a seccomp filter under virtiofsd's own refuses (EPERM)
/// every chmod and every file creation whose mode has S_ISUID or S_ISGID, so guest root cannot
/// leave a setuid-root program in the host's rootfs. (A set-group-ID directory cannot be made
/// from the guest either; one inherited from its parent still is.)
fn virtiofsd_filter() -> Result<crate::linux::seccomp::Filter> {
    let mut rules = Vec::new();
    for bit in [libc::S_ISUID, libc::S_ISGID] {
        let mode =
            |index: u32| serde_json::json!({"index": index, "value": bit, "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ"});
        let creat = |index: u32| serde_json::json!({"index": index, "value": libc::O_CREAT, "valueTwo": libc::O_CREAT, "op": "SCMP_CMP_MASKED_EQ"});
        let rule = |names: &[&str], args: Vec<serde_json::Value>| serde_json::json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM, "args": args});
        rules.push(rule(&["chmod", "fchmod", "creat", "mknod"], vec![mode(1)]));
        rules.push(rule(&["fchmodat", "fchmodat2", "mknodat"], vec![mode(2)]));
        rules.push(rule(&["open"], vec![creat(1), mode(2)]));
        rules.push(rule(&["openat"], vec![creat(2), mode(3)]));
    }
    // openat2's mode is in a structure a filter cannot read: refused as unknown (ENOSYS), so a
    // caller falls back to openat.
    rules.push(serde_json::json!({"names": ["openat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    let spec: oci_spec::runtime::LinuxSeccomp =
        serde_json::from_value(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}))
            .map_err(|e| err!("virtiofsd's seccomp filter: {e}"))?;
    crate::linux::seccomp::compile(&spec)
}

/// Start a virtiofsd serving `shared` on the listening socket `l` (its descriptor 3), with its
/// own namespace sandbox, no_new_privs, fewer capabilities, mapped xattrs and the filter above;
/// `stage` makes the bind mounts' staging tree first, in a mount namespace of its own (binds.rs).
fn spawn_virtiofsd(
    bin: &Path,
    l: &UnixListener,
    shared: &Path,
    stage: Option<binds::Stage>,
) -> std::io::Result<std::process::Child> {
    let fd = l.as_raw_fd();
    let filter = virtiofsd_filter().map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut c = Command::new(bin);
    c.arg("--fd=3").arg("--shared-dir").arg(shared).args([
        "--cache=auto",
        "--sandbox=namespace",
        "--log-level=error",
        "--xattr",
        // O_PATH descriptors, not file handles: virtiofsd then keeps no CAP_DAC_READ_SEARCH,
        // without which open_by_handle_at cannot reach a host file outside its shared directory.
        "--inode-file-handles=never",
        VIRTIOFSD_MODCAPS,
        VIRTIOFSD_XATTRMAP,
    ]);
    c.stdin(std::process::Stdio::null());
    // SAFETY: system calls between fork and exec (the stage and the filter are prepared
    // beforehand; the monitor is single-threaded).
    unsafe {
        c.pre_exec(move || {
            clear_cloexec_to(fd, 3)?;
            cloexec_range(4, u32::MAX);
            if let Some(s) = &stage {
                s.enter()?;
            }
            confine::no_new_privs()?;
            filter
                .load()
                .map(drop)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
    };
    c.spawn()
}

/// What the monitor serves besides qemu: host clients, and the container process's stdio.
struct Mon {
    listener: UnixListener,
    /// The host side of the container's terminal (its controlling terminal).
    tty: Option<OwnedFd>,
    /// Whether the monitor's stdin (inherited from Berth) is relayed to the container's process.
    stdin: bool,
    /// The bind mounts' virtiofsd: its socket, the staging directory it shares, what it mounts.
    binds: Option<(UnixListener, PathBuf, binds::Stage)>,
}

/// How the container's process is attached to Berth's caller.
#[derive(Default)]
pub struct Attach {
    /// The host side of a pty whose master `run` relays to its own terminal.
    pub tty: Option<OwnedFd>,
    /// Whether a terminal on stdin is relayed (Berth stays attached: `run` in the foreground).
    pub stdin_tty: bool,
    /// A descriptor of Berth's the monitor must not keep (the pty master `run` relays).
    pub master: Option<RawFd>,
}

/// `create` of a VM container: boot it and have the guest create the container, waiting to start.
/// Returns the record (pid = the monitor, our child).
pub fn create(rt: &Runtime, id: &str, opts: &CreateOpts, bundle: Bundle) -> Result<Record> {
    create_attached(rt, id, opts, bundle, Attach::default())
}

fn create_attached(rt: &Runtime, id: &str, opts: &CreateOpts, bundle: Bundle, att: Attach) -> Result<Record> {
    let process = bundle.spec.process().as_ref();
    let terminal = process.is_some_and(|p| p.terminal().unwrap_or(false));
    if terminal && att.tty.is_none() && opts.console_socket.is_none() {
        bail!("process.terminal: true needs --console-socket when the container is detached (create, run --detach)");
    }
    if opts.preserve_fds > 0 {
        bail!("--preserve-fds: not supported in VM containers");
    }
    let mut plan = Plan::new(&bundle)?;
    let host_cg = confine::HostCgroup::plan(id, &bundle.spec, rt.systemd_cgroup, plan.mem_mib)?;
    // The terminal: the host side of a pty (its master goes to the console socket, or to `run`).
    let (master, tty) = match (terminal, att.tty) {
        (false, _) => (None, None),
        (true, Some(t)) => (None, Some(t)),
        (true, None) => {
            let (m, p) = relay::host_pty()?;
            (Some(m), Some(p))
        }
    };
    let console = match (&master, opts.console_socket) {
        (Some(_), Some(p)) => Some(UnixStream::connect(p).with_ctx(|| format!("--console-socket {}", p.display()))?),
        _ => None,
    };
    let stdin = !terminal && relay::stdin_worth_reading(0, att.stdin_tty);
    // The container's network namespace, a tap coupled to each interface (undone if create fails).
    let net = net::attach(&bundle.spec)?;
    plan.nics = net.macs();
    let mut config = guest_config(&bundle.spec, &plan.binds)?;
    if config["hostname"].as_str().unwrap_or("").is_empty() {
        // A UTS namespace joined by path (a CRI pod's, a podman pod's) is the host's: the guest
        // gets a new one, named as the joined one is.
        if let Some(h) = joined_hostname(&bundle.spec) {
            config["hostname"] = h.into();
        }
    }
    if let Some((rows, cols)) = tty.as_ref().and_then(|t| relay::win_size(t.as_raw_fd())) {
        config["process"]["consoleSize"] = serde_json::json!({"height": rows, "width": cols});
    }
    let msg = proto::CreateMsg {
        config,
        stdin,
        root_device: plan.image.as_ref().map(|_| "/dev/vda".to_string()),
        binds: !plan.binds.shares.is_empty(),
        network: Some(net.network.clone()),
    };
    let line = format!(
        "create {}",
        serde_json::to_string(&msg).map_err(|e| err!("config.json: {e}"))?
    );
    let locked = rt.store.create(id)?;
    let dir = locked.dir.clone();
    let lock_fd = locked.lock_fd();
    // Recorded first, so that `delete --force` after a crash finds the cgroup.
    let mut rec = Record {
        cgroup_path: host_cg.path.clone(),
        cgroup_owned: host_cg.owned,
        own_pid_ns: true,
        ..Record::from_bundle(id, &bundle)
    };
    let mut undo = Undo {
        dir: Some(locked),
        cgroup: None,
        scope: None,
        pid: 0,
    };
    undo.dir.as_ref().expect("state dir").save(&rec)?;
    let cg = host_cg.create()?;
    if host_cg.owned {
        undo.cgroup = Some(crate::cgroups::Cgroup::open(&host_cg.path));
    }
    let bind_sock = |name: &str| -> Result<UnixListener> {
        let (p, _fd) = sock_path(&dir, name)?;
        UnixListener::bind(p).with_ctx(|| format!("{}", dir.join(name).display()))
    };
    let fs = match plan.image {
        None => Some(bind_sock(FS_SOCK)?),
        Some(_) => None,
    };
    let binds_fs = match plan.binds.shares.is_empty() {
        false => {
            let staging = dir.join(binds::STAGING);
            std::fs::create_dir(&staging).with_ctx(|| format!("{}", staging.display()))?;
            let stage = binds::Stage::new(&staging, &plan.binds).ctx("mounts")?;
            Some((bind_sock(BINDS_SOCK)?, staging, stage))
        }
        true => None,
    };
    let listener = {
        let (p, _fd) = sock_path(&dir, MUX_SOCK)?;
        UnixListener::bind(p).with_ctx(|| format!("{}", dir.join(MUX_SOCK).display()))?
    };
    // Our connection waits in the listener's backlog until the monitor serves it.
    let mut s = open_stream(&dir)?;
    std::fs::write(dir.join(VM_FILE), b"").with_ctx(|| format!("{}", dir.join(VM_FILE).display()))?;
    // The status marker `created` is read from (a plain file here; there is no fifo in a VM).
    std::fs::write(dir.join(state::EXEC_FIFO), b"").with_ctx(|| format!("{}", dir.display()))?;
    let gate = confine::Gate::new()?;
    let mon = Mon {
        listener,
        tty,
        stdin,
        binds: binds_fs,
    };
    // SAFETY: Berth is single-threaded; the child only runs the monitor and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork the VM monitor", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        if let Some(fd) = lock_fd {
            // SAFETY: the monitor must not hold the state directory's lock.
            unsafe { libc::close(fd) };
        }
        drop(s);
        drop(master);
        drop(console);
        if let Some(fd) = att.master {
            // SAFETY: Berth's pty master, not the monitor's to hold.
            unsafe { libc::close(fd) };
        }
        // Nothing starts before the monitor is in the container's cgroup.
        if !gate.wait() {
            // SAFETY: leave without the parent's destructors.
            unsafe { libc::_exit(255) }
        }
        let code = monitor(&plan, &dir, &bundle.rootfs, fs.as_ref(), mon, &net);
        // SAFETY: leave without the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    undo.pid = pid;
    gate.release(&cg, pid)?;
    drop(fs);
    drop(mon);
    hooks::create_runtime(&bundle.spec, &rec, pid)?;
    send_request(&mut s, &line)?;
    let mut reaped = false;
    let reply = read_reply(&mut s, &mut proto::FrameBuf::default(), READY_TIMEOUT, || {
        let mut st = 0;
        // SAFETY: non-blocking wait for our own child.
        reaped = reaped || unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid;
        reaped.then(|| console_tail(&dir))
    });
    if reaped {
        undo.pid = 0;
    }
    let reply = reply.map_err(|e| e.context(format!("VM container {id:?}")))?;
    if proto::split(&reply).0 != "ready" {
        bail!("VM container {id:?}: unexpected reply from the guest: {reply:?}");
    }
    if let (Some(m), Some(c)) = (&master, &console) {
        let name = format!("/dev/pts/{}", crate::linux::console::pty_number(m)?);
        crate::linux::console::send_fd(c.as_raw_fd(), m.as_raw_fd(), &name)?;
    }
    rec.pid = pid;
    rec.pid_start = state::proc_stat(pid)
        .map(|s| s.1)
        .ok_or_else(|| err!("VM container {id:?}: its monitor exited during create"))?;
    let locked = undo.dir.as_ref().expect("state dir");
    locked.save(&rec)?;
    if let Some(p) = opts.pid_file {
        crate::container::write_pid_file(p, pid)?;
    }
    undo.pid = 0;
    undo.cgroup = None;
    let _ = undo.dir.take();
    net.keep();
    Ok(rec)
}

/// `start`: ask the guest to run the process.
pub fn start(locked: &Locked, rec: &Record) -> Result<()> {
    let id = &rec.id;
    match locked.status(Some(rec)) {
        Status::Created => {}
        Status::Stopped => bail!("container {id:?} cannot be started: it is stopped"),
        s => bail!("container {id:?} cannot be started: it is already {}", s.as_str()),
    }
    request(&locked.dir, "start", READY_TIMEOUT).map_err(|e| e.context(format!("start container {id:?}")))?;
    let marker = locked.fifo_path();
    std::fs::remove_file(&marker).with_ctx(|| format!("remove {}", marker.display()))?;
    hooks::poststart(&rec.poststart, rec);
    Ok(())
}

/// How long `kill` waits for the guest's answer (`--all`: then the VM is ended from the host).
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// `kill`: deliver the signal to the guest's process (or every process of the container).
/// SIGKILL does not ask the guest: the VM is ended from the host at once (end_from_host), as a
/// Linux container's init dies whatever it does; `--all` with another signal asks the guest and,
/// without an answer within KILL_TIMEOUT, ends the VM from the host too.
pub fn kill(locked: &Locked, rec: &Record, sig: i32, all: bool) -> Result<()> {
    let id = &rec.id;
    if locked.status(Some(rec)) == Status::Stopped {
        if all {
            return Ok(());
        }
        bail!("container {id:?} is not running (stopped)");
    }
    if sig == libc::SIGKILL {
        end_from_host(rec);
        return Ok(());
    }
    match request(&locked.dir, &format!("kill {sig} {}", all as u8), KILL_TIMEOUT) {
        Ok(_) => Ok(()),
        Err(e) if all => {
            crate::log::warn(&format!("kill container {id:?}: {e}; ending the VM from the host"));
            end_from_host(rec);
            Ok(())
        }
        Err(e) => Err(e.context(format!("kill container {id:?}"))),
    }
}

/// End a VM container without its guest: SIGKILL to every process of the container's host cgroup
/// when Berth made it (the monitor, qemu, virtiofsd and the exec helpers, frozen first so that
/// they all die of it, as a Linux container's processes do: an exec's caller gets 137), then to
/// the monitor (the recorded pid, checked through a pidfd against its recorded start time; qemu
/// and virtiofsd die with it, exec helpers see their stream close). Waits (≤ 10 s) until the
/// monitor is gone.
fn end_from_host(rec: &Record) {
    use crate::cgroups::freeze;
    if rec.cgroup_owned {
        let cg = crate::cgroups::Cgroup::open(&rec.cgroup_path);
        let frozen = freeze::can_freeze(&cg) && freeze::freeze(&cg).is_ok();
        for pid in cg.procs() {
            // SAFETY: SIGKILL to a process of the container's own host cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if frozen {
            let _ = freeze::thaw(&cg);
        }
    }
    // SAFETY: pidfd_open on a pid; the descriptor is owned below.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, rec.pid, 0) } as RawFd;
    if raw < 0 {
        return;
    }
    // SAFETY: a fresh descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    // The pidfd names one process for good: checked once, it cannot be another's later.
    if !state::process_alive(rec.pid, rec.pid_start) {
        return;
    }
    // SAFETY: pidfd_send_signal on our pidfd with no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 10_000) };
}

/// Give a pty the size of Berth's own terminal (stdin, else stdout), if it has one.
pub(crate) fn copy_win_size(master: RawFd) {
    if let Some((r, c)) = relay::win_size(0).or_else(|| relay::win_size(1)) {
        let _ = crate::linux::console::set_size(master, r, c);
    }
}

/// Signals `run` forwards to the guest's process.
const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGWINCH,
];

/// `run` of a VM container: create, start, and unless detached wait for the monitor (our child),
/// forwarding signals to the guest. Returns the container's exit status.
pub fn run(rt: &Runtime, id: &str, opts: &CreateOpts, bundle: Bundle, detach: bool, keep: bool) -> Result<i32> {
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .is_some_and(|p| p.terminal() == Some(true));
    // A terminal and no console socket: Berth relays its own terminal to a host pty whose other
    // side the monitor relays to the guest's, as for a Linux container (linux/tty.rs).
    let (master, att) = if terminal && opts.console_socket.is_none() && !detach {
        let (m, p) = relay::host_pty()?;
        copy_win_size(m.as_raw_fd());
        let fd = m.as_raw_fd();
        (
            Some(m),
            Attach {
                tty: Some(p),
                stdin_tty: true,
                master: Some(fd),
            },
        )
    } else {
        (
            None,
            Attach {
                stdin_tty: !detach,
                ..Attach::default()
            },
        )
    };
    // SAFETY: sigset manipulation on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        if !detach {
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        set
    };
    let poststart = hooks::poststart_list(&bundle.spec);
    let rec = create_attached(rt, id, opts, bundle, att)?;
    let dir = rt.store.root().join(id);
    if let Err(e) = request(&dir, "start", READY_TIMEOUT) {
        if !keep {
            let _ = rt.delete(id, true);
        }
        return Err(e);
    }
    let _ = std::fs::remove_file(dir.join(state::EXEC_FIFO));
    hooks::poststart(&poststart, &rec);
    if detach {
        return Ok(0);
    }
    let code = if let Some(m) = master {
        crate::linux::tty::relay(m, rec.pid, &set)
    } else {
        loop {
            let mut st = 0;
            // SAFETY: non-blocking wait for the monitor, our child.
            let r = unsafe { libc::waitpid(rec.pid, &mut st, libc::WNOHANG) };
            if r == rec.pid {
                break crate::signal::exit_code(st);
            }
            let mut sig = 0;
            // SAFETY: sigwait on the blocked set.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 || sig == libc::SIGCHLD {
                continue;
            }
            let _ = request(&dir, &format!("kill {sig} 0"), Duration::from_secs(5));
        }
    };
    if !keep {
        rt.delete(id, true)?;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn sizes_and_vcpus() {
        assert_eq!(parse_mib("512"), Some(512));
        assert_eq!(parse_mib("2G"), Some(2048));
        assert_eq!(parse_mib("x"), None);
        let s = spec(serde_json::json!({"ociVersion": "1.2.0",
            "annotations": {"run.berth.isolation": "vm"},
            "linux": {"resources": {"memory": {"limit": 300 * 1024 * 1024 + 1}, "cpu": {"quota": 150000, "period": 100000}}}}));
        assert!(wanted(&s));
        assert_eq!(memory_mib(&s).unwrap(), 301);
        assert_eq!(cpus(&s).unwrap(), 2);
        let s = spec(serde_json::json!({"ociVersion": "1.2.0", "linux": {"resources": {"cpu": {"cpus": "0-2,5"}}}}));
        assert!(!wanted(&s));
        assert_eq!(cpus(&s).unwrap(), 4);
        assert_eq!(memory_mib(&s).unwrap(), DEFAULT_MEM_MIB);
        let s = spec(serde_json::json!({"ociVersion": "1.2.0",
            "annotations": {"run.berth.isolation": "vm", "io.kubernetes.cri.container-type": "sandbox"}}));
        assert!(!wanted(&s), "a CRI sandbox stays a Linux container");
        let s = spec(serde_json::json!({"ociVersion": "1.2.0", "annotations": {"run.berth.vm.cpus": "0"}}));
        assert!(cpus(&s).unwrap_err().to_string().contains(ANN_CPUS));
    }

    #[test]
    fn guest_config_drops_host_things() {
        let s = spec(serde_json::json!({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
            "hooks": {"poststop": [{"path": "/bin/true"}]},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/x", "type": "bind", "source": "/tmp", "options": ["rbind"]}],
            "linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}, {"type": "network", "path": "/proc/1/ns/net"},
                {"type": "user", "path": "/proc/1/ns/user"}]}}));
        let binds = binds::Binds {
            shares: Vec::new(),
            of_mount: vec![(1, 0)],
        };
        let g = guest_config(&s, &binds).unwrap();
        assert_eq!(g["root"]["path"], proto::GUEST_ROOTFS);
        assert!(g.get("hooks").is_none(), "poststop runs on the host");
        assert_eq!(
            g["mounts"][1]["source"], "/run/binds/0",
            "the bind's share in the guest"
        );
        assert_eq!(
            g["linux"]["namespaces"],
            serde_json::json!([{"type": "pid"}]),
            "the network namespace is the guest's, configured as the host's (net.rs)"
        );
    }
}
