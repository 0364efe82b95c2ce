//! berth-guest: PID 1 inside a Berth VM container.
//!
//! It loads the kernel modules the host packed into the initramfs (none with Berth's own guest
//! kernel, which has its drivers built in), moves itself onto a tmpfs root
//! (so containers can pivot_root), mounts /proc, /sys, /dev and cgroup2, finds its virtio-serial
//! ports, mounts the container's root (virtio-fs or a block device), and then serves the host's
//! requests (docs/VM.md, agent.rs): `create` makes the container with libberth's Linux backend,
//! exactly as `berth create` does on a host, `start`, `kill` and `exec` are libberth's too. When
//! the container's process ends it writes `exit <code>` on the exit port and powers the VM off.

mod agent;

use libberth::vm::proto;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

fn main() {
    if std::process::id() != 1 {
        eprintln!("berth-guest: this is the init of a Berth VM container; it only runs as PID 1 in the guest");
        std::process::exit(2);
    }
    let code = match boot() {
        Ok(code) => code,
        Err(e) => {
            log(&format!("berth-guest: {e}"));
            255
        }
    };
    power_off(code);
}

pub(crate) type R<T> = Result<T, String>;

/// To the kernel log (and so the console, hvc0, which the host keeps in console.log).
pub(crate) fn log(msg: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        // One write: each write to /dev/kmsg is one record (writeln! may split it, and the
        // message would lose its level).
        let _ = f.write_all(format!("<2>{msg}\n").as_bytes());
    }
}

pub(crate) fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

pub(crate) fn mount(src: &str, dst: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> R<()> {
    let _ = std::fs::create_dir_all(dst);
    let (s, d, t, o) = (cstr(src), cstr(dst), cstr(fstype), cstr(data));
    // SAFETY: NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            t.as_ptr(),
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                o.as_ptr().cast()
            },
        )
    };
    if r != 0 {
        return Err(format!("mount {fstype} on {dst}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Load the modules listed (in dependency order) in /etc/berth/modules, with their parameters from
/// the kernel command line (`name.param=value`, as modprobe does).
fn load_modules(cmdline: &str) -> R<()> {
    let Ok(list) = std::fs::read_to_string("/etc/berth/modules") else {
        return Ok(());
    };
    for path in list.lines().filter(|l| !l.is_empty()) {
        let file = Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or("");
        let name = file.split('.').next().unwrap_or("").replace('-', "_");
        let params: Vec<&str> = cmdline
            .split_whitespace()
            .filter_map(|w| w.strip_prefix(&format!("{name}.")))
            .collect();
        let params = cstr(&params.join(" "));
        let f = File::open(path).map_err(|e| format!("module {path}: {e}"))?;
        let flags = if file.ends_with(".ko") {
            0
        } else {
            4 /* MODULE_INIT_COMPRESSED_FILE */
        };
        // SAFETY: finit_module on an open file with a NUL-terminated parameter string.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), flags) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("load module {path}: {e}"));
            }
        }
    }
    Ok(())
}

/// Move onto a tmpfs root: pivot_root (which containers use) refuses the initramfs root.
fn switch_to_tmpfs() -> R<()> {
    mount("tmpfs", "/newroot", "tmpfs", 0, "mode=755")?;
    let chk = |r: i32, what: &str| {
        if r != 0 {
            Err(format!("{what}: {}", std::io::Error::last_os_error()))
        } else {
            Ok(())
        }
    };
    let (nr, dot, root) = (cstr("/newroot"), cstr("."), cstr("/"));
    // SAFETY: plain system calls with NUL-terminated paths.
    unsafe {
        chk(libc::chdir(nr.as_ptr()), "chdir /newroot")?;
        chk(
            libc::mount(
                dot.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            ),
            "move the new root",
        )?;
        chk(libc::chroot(dot.as_ptr()), "chroot")?;
        chk(libc::chdir(root.as_ptr()), "chdir /")?;
    }
    Ok(())
}

/// The virtio-serial ports by name: /sys/class/virtio-ports/vportNpM/name -> /dev/vportNpM.
fn find_port(name: &str) -> Option<PathBuf> {
    for _ in 0..200 {
        if let Ok(rd) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in rd.flatten() {
                let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if n.trim() == name {
                    let dev = Path::new("/dev").join(e.file_name());
                    if dev.exists() {
                        return Some(dev);
                    }
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

pub(crate) fn open_port(name: &str, flags: i32) -> R<OwnedFd> {
    let dev = find_port(name).ok_or_else(|| format!("virtio port {name}: not found"))?;
    let p = cstr(&dev.to_string_lossy());
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("open {}: {}", dev.display(), std::io::Error::last_os_error()));
    }
    // SAFETY: fd is fresh and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn boot() -> R<i32> {
    mount("proc", "/proc", "proc", 0, "")?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    load_modules(&cmdline)?;
    // SAFETY: umount with a NUL-terminated path.
    unsafe { libc::umount2(cstr("/proc").as_ptr(), libc::MNT_DETACH) };
    switch_to_tmpfs()?;
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("proc", "/proc", "proc", nosuid, "")?;
    mount("sysfs", "/sys", "sysfs", nosuid, "")?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=755")?;
    // Standard descriptors on /dev/null, whatever the kernel gave us: none with the cloud kernel
    // (hvc0 comes with a module, after init started), the console (hvc0) with a kernel that has
    // virtio_console built in. So the ports opened below never land on 0-2 and nothing the agent
    // starts inherits the console, with either kernel.
    let null = cstr("/dev/null");
    // SAFETY: open and dup2 with a NUL-terminated path and descriptors of ours; 0-2 stay open for
    // the agent's life.
    unsafe {
        let fd = libc::open(null.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for std in 0..3 {
                if std != fd {
                    libc::dup2(fd, std);
                }
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, "")?;
    mount("tmpfs", "/tmp", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=1777")?;
    let _ = std::fs::create_dir_all("/run");
    let exit_port = open_port(proto::PORT_EXIT, libc::O_WRONLY)?;
    if cmdline.split_whitespace().any(|w| w == "berth.probe") {
        // Written on the exit port: virtio-serial writes are synchronous, the console is not.
        let _ = writeln!(File::from(exit_port), "{}", proto::PROBE_MARKER);
        return Ok(0);
    }
    let ctl = open_port(proto::PORT_CTL, libc::O_RDWR | libc::O_NONBLOCK)?;
    agent::Agent::new(ctl).serve(exit_port)
}

/// Mount a block device (vm.image) trying the file systems the guest kernel knows.
pub(crate) fn mount_device(dev: &str, at: &str) -> R<()> {
    let types = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let mut last = String::from("no block file system known to the guest kernel");
    for t in types.lines().filter(|l| !l.starts_with("nodev")).map(|l| l.trim()) {
        match mount(dev, at, t, 0, "") {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(format!("vm.image {dev}: {last}"))
}

/// Before the VM ends: write back what the guest holds dirty, with syncfs on each of the agent's
/// mounts but the virtio-fs ones (a block device's file system: `vm.image`). virtio-fs holds
/// nothing dirty here: without a writeback cache (virtiofsd runs without `--writeback`) a write
/// goes to the host as it is made, and a shared mapping's pages are written when it is unmapped
/// (the processes are gone). A sync() would also send virtio-fs's SYNCFS, on which virtiofsd
/// syncs the host's whole file system under the shared directory: 20-40 ms of the exit here, and
/// a flush of every tenant's writes that a container's end on a host does not do. (A file system
/// mounted only in a container's own mount namespace was written back when that namespace went
/// with the container's last process; unlike sync(), this does not reach one kept by a process
/// that outlives the container's init — no pid namespace —, which the reset ends anyway.)
fn write_back() {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        // SAFETY: sync is a plain system call.
        unsafe { libc::sync() };
        return;
    };
    for line in info.lines() {
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        if fs.split(' ').next() == Some("virtiofs") {
            continue;
        }
        // The mount point (field 5), with mountinfo's octal escapes (\040 for a space).
        let Some(point) = mount.split(' ').nth(4) else {
            continue;
        };
        let mut path = Vec::new();
        let b = point.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b.get(i..i + 4).and_then(|e| std::str::from_utf8(&e[1..]).ok()) {
                Some(oct) if b[i] == b'\\' => match u8::from_str_radix(oct, 8) {
                    Ok(c) => {
                        path.push(c);
                        i += 4;
                    }
                    Err(_) => {
                        path.push(b[i]);
                        i += 1;
                    }
                },
                _ => {
                    path.push(b[i]);
                    i += 1;
                }
            }
        }
        let Ok(p) = CString::new(path) else { continue };
        // SAFETY: open of a NUL-terminated path, syncfs and close of the descriptor it gave.
        unsafe {
            let fd = libc::open(
                p.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::syncfs(fd);
                libc::close(fd);
            }
        }
    }
}

fn power_off(code: i32) -> ! {
    if code == 255 {
        // Give the host a moment to read the console before the VM disappears.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Berth's own kernel runs without ACPI (vm/mod.rs, BERTH_KERNEL_MACHINE): there a power-off
    // only halts, and a reset (`reboot=t`) is what ends qemu (`-no-reboot`).
    let reset = std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.split_whitespace().any(|w| w == "reboot=t"));
    write_back();
    // SAFETY: reboot is a plain system call; PID 1 powering the machine off.
    unsafe {
        libc::reboot(if reset { libc::RB_AUTOBOOT } else { libc::RB_POWER_OFF });
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
