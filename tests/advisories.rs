//! The advisories of other runtimes (runc, crun, youki, containerd, Kata), replayed against Berth
//! as an attacker would: each test is named after the advisory whose class it stops, runs real
//! containers and judges the attack by its effect on the host, on files and cgroups of its own.
//! The classes and where each is handled are listed in docs/SECURITY.md ("Advisory classes
//! checked").

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

/// A rootfs whose `/proc` is a symlink to `/data`, where the config binds a volume after the proc
/// mount (as engines order their mounts): the real procfs ends up hidden under the volume, and the
/// volume's content (the image's, or left there by an earlier run or a co-tenant) stands in for
/// /proc in the container. `self/fd/N` of the fake leads every mount the runtime makes "through
/// /proc/self/fd/N" to a decoy directory, so masking and read-only paths still succeed.
fn fake_proc_through_a_volume(b: &mut Bundle, volume: &Path) {
    let rootfs = b.rootfs();
    fs::remove_dir(rootfs.join("proc")).unwrap();
    symlink("/data", rootfs.join("proc")).unwrap();
    fs::create_dir_all(rootfs.join("data")).unwrap();
    fs::create_dir_all(rootfs.join("tmp/decoy")).unwrap();
    fs::create_dir_all(volume.join("self/fd")).unwrap();
    for n in 3..64 {
        symlink("/tmp/decoy", volume.join(format!("self/fd/{n}"))).unwrap();
    }
    b.bind(volume, "/data", &["rw"]);
}

/// CVE-2019-19921 (runc; and the CVE-2023-27561/28642 regressions): the proc mount follows a
/// `/proc` symlink of the image onto a path that a volume covers, so what the runtime reads from
/// the container's /proc afterwards is the attacker's. A runtime that reads
/// `/proc/sys/kernel/cap_last_cap` there to know how far to drop the bounding set (Berth did until
/// `security::last_cap` asked the kernel) takes a fake "0", leaves capabilities 1..40 in it, and a
/// root process without no_new_privs (Docker's default) gains all of them at its execve. The
/// effect judged: a file of the volume with mode 000 (the container has no CAP_DAC_OVERRIDE) is
/// written.
#[test]
fn cve_2019_19921_fake_proc_cannot_keep_capabilities_in_the_bounding_set() {
    if !require_root() {
        return;
    }
    let volume = TempDir::new("adv-volume");
    fs::create_dir_all(volume.join("sys/kernel")).unwrap();
    fs::write(volume.join("sys/kernel/cap_last_cap"), "0\n").unwrap();
    let secret = volume.join("secret");
    fs::write(&secret, "untouched\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let mut b = Bundle::sh("echo escaped > /data/secret");
    fake_proc_through_a_volume(&mut b, volume.path());
    b.config["process"]["noNewPrivileges"] = json!(false);
    let rt = Runtime::new();
    let id = unique_id();
    let out = rt.run(&b, &id);
    assert_eq!(
        fs::read_to_string(&secret).unwrap(),
        "untouched\n",
        "the container wrote a mode-000 file: it kept capabilities it was not given ({})",
        out.describe()
    );
}

/// Runs `b` with the runtime (and so the container's init) in the supplementary group 4242, as a
/// host daemon may be; returns the run's output.
fn run_in_group_4242(rt: &Runtime, b: &Bundle, id: &str) -> std::process::Output {
    b.save();
    let mut c = rt.command(&["run", "--bundle", b.dir.to_str().unwrap(), id]);
    // SAFETY: only setgroups between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let groups: [libc::gid_t; 1] = [4242];
            if libc::setgroups(1, groups.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    rt.exec(c)
}

/// CVE-2023-25173 (containerd; moby CVE-2022-36109): supplementary groups must be exactly the
/// configured ones. The runtime's own groups (here 4242, as a daemon in a `docker`-like group)
/// must not reach the container's process, which would then pass group permission checks on host
/// files it shares. The effect judged: a file of group 4242, mode 0060, bound into the container.
#[test]
fn cve_2023_25173_runtime_supplementary_groups_do_not_reach_the_container() {
    if !require_root() {
        return;
    }
    let shared = TempDir::new("adv-groups");
    let file = shared.join("group-only");
    fs::write(&file, "untouched\n").unwrap();
    std::os::unix::fs::chown(&file, Some(0), Some(4242)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o060)).unwrap();
    let mut b = Bundle::sh("grep '^Groups:' /proc/self/status; echo escaped > /shared/group-only");
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    b.bind(shared.path(), "/shared", &["rw"]);
    let rt = Runtime::new();
    let out = run_in_group_4242(&rt, &b, &unique_id());
    assert_eq!(fs::read_to_string(&file).unwrap(), "untouched\n", "{}", out.describe());
    assert_eq!(status_field(&out.out(), "Groups"), "", "{}", out.describe());
    // With additionalGids, exactly those.
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000, "additionalGids": [2000] });
    let out = run_in_group_4242(&rt, &b, &unique_id());
    assert_eq!(status_field(&out.out(), "Groups"), "2000", "{}", out.describe());
    assert_eq!(fs::read_to_string(&file).unwrap(), "untouched\n");
}

/// CVE-2023-25173 through a fake /proc (the CVE-2019-19921 class): a runtime that asks the
/// container's `/proc/self/setgroups` whether it may call setgroups (Berth did until
/// `security::set_user` took the answer from setgroups itself) skips the call on a fake "deny",
/// and its own supplementary groups stay with the container's process.
#[test]
fn cve_2023_25173_fake_proc_setgroups_cannot_keep_the_runtime_groups() {
    if !require_root() {
        return;
    }
    let volume = TempDir::new("adv-volume");
    fs::create_dir_all(volume.join("self")).unwrap();
    fs::write(volume.join("self/setgroups"), "deny\n").unwrap();
    let file = volume.join("group-only");
    fs::write(&file, "untouched\n").unwrap();
    std::os::unix::fs::chown(&file, Some(0), Some(4242)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o060)).unwrap();
    let mut b = Bundle::sh("echo escaped > /data/group-only");
    fake_proc_through_a_volume(&mut b, volume.path());
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    let rt = Runtime::new();
    let out = run_in_group_4242(&rt, &b, &unique_id());
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "untouched\n",
        "the container's process kept the runtime's group 4242 ({})",
        out.describe()
    );
}

/// CVE-2023-25809 (runc, GHSA-m8cg-xc2p-r3fc): the config `spec --rootless` writes binds the
/// host's /sys with `rbind,ro`, which makes only the top mount read-only: the cgroup filesystems
/// below it stay writable, and the container (root mapped to its owner) can write every cgroup its
/// host user owns (a user's delegated `user.slice/...`). Here a cgroup of the test's own owned by
/// the mapped host uid stands for it; the attack is a mkdir in it.
#[test]
fn cve_2023_25809_rootless_spec_does_not_expose_host_cgroups_writable() {
    if !require_root() {
        return;
    }
    const HOST_ID: u32 = 100000;
    // The cgroup2 hierarchy (hybrid hosts have it at unified/), as the container sees it too.
    let Some(rel) = ["unified", ""]
        .into_iter()
        .find(|r| Path::new("/sys/fs/cgroup").join(r).join("cgroup.procs").exists())
    else {
        notice(&format!("SKIP {}: no cgroup2 hierarchy", test_name()));
        return;
    };
    let layout_dir = Path::new("/sys/fs/cgroup").join(rel);
    let name = format!("berth-adv-{}", unique_id());
    let cg = layout_dir.join(&name);
    fs::create_dir(&cg).unwrap();
    struct RemoveCgroup(std::path::PathBuf);
    impl Drop for RemoveCgroup {
        fn drop(&mut self) {
            let _ = fs::remove_dir(self.0.join("escaped"));
            let _ = fs::remove_dir(&self.0);
        }
    }
    let _cleanup = RemoveCgroup(cg.clone());
    std::os::unix::fs::chown(&cg, Some(HOST_ID), Some(HOST_ID)).unwrap();

    let rt = Runtime::new();
    let mut b = Bundle::default();
    rt.cmd(&["spec", "--rootless", "--bundle", b.dir.to_str().unwrap()])
        .ok("spec --rootless");
    b.config = serde_json::from_str(&fs::read_to_string(b.config_path()).unwrap()).unwrap();
    b.config["process"]["terminal"] = json!(false);
    b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": HOST_ID, "size": 1 }]);
    b.config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": HOST_ID, "size": 1 }]);
    let inside = Path::new("/sys/fs/cgroup").join(rel).join(&name);
    b.set_sh(&format!("mkdir {}/escaped 2>&1; true", inside.display()));
    let id = unique_id();
    let out = rt.run(&b, &id);
    assert!(
        !cg.join("escaped").exists(),
        "the container made a cgroup in a host cgroup its mapped root owns ({})",
        out.describe()
    );
    assert!(out.status.success(), "{}", out.describe());
}

/// Session keyrings (runc's `--no-new-keyring` default, the class of keyring leaks between
/// containers and host): a key in the runtime's session keyring cannot be found from the container.
/// The same program finds it when the container is allowed to keep the session keyring, which
/// shows the attack itself works.
#[test]
fn keyring_of_the_runtime_is_not_reachable_from_the_container() {
    if !require_root() {
        return;
    }
    let desc = format!("berth-adv-{}", unique_id());
    let mut b = Bundle::new(&["adv_keyring", &desc]);
    install_attack(&b, "adv_keyring");
    b.writable_root();
    let rt = Runtime::new();
    let mut outcome = Vec::new();
    for extra in [None, Some("--no-new-keyring")] {
        b.save();
        let id = unique_id();
        let mut args = vec!["run", "--bundle", b.dir.to_str().unwrap()];
        args.extend(extra);
        args.push(&id);
        let mut c = rt.command(&args);
        let d = std::ffi::CString::new(desc.clone()).unwrap();
        // SAFETY: only system calls between fork and exec: the child joins an anonymous session
        // keyring of its own (so no shared keyring is touched) and adds the key to it.
        unsafe {
            c.pre_exec(move || {
                const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
                const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
                if libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0usize) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let payload = b"host-secret";
                if libc::syscall(
                    libc::SYS_add_key,
                    c"user".as_ptr(),
                    d.as_ptr(),
                    payload.as_ptr(),
                    payload.len(),
                    KEY_SPEC_SESSION_KEYRING,
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = rt.exec(c).ok("run the keyring probe");
        outcome.push(out.out().trim().to_string());
    }
    assert!(outcome[0].starts_with("absent"), "default: {}", outcome[0]);
    assert_eq!(
        outcome[1], "found host-secret",
        "with --no-new-keyring the probe must work"
    );
}

/// CVE-2025-52565 (runc) through a fake /proc (the CVE-2019-19921 class): the pty is bound onto
/// /dev/console from descriptor to descriptor, so a fake `/proc/self/fd/N` cannot make the bind
/// land elsewhere (here on a decoy, leaving /dev/console an ordinary file the container controls).
#[test]
fn cve_2025_52565_fake_proc_cannot_redirect_the_console_bind() {
    if !require_root() {
        return;
    }
    let volume = TempDir::new("adv-volume");
    let mut b = Bundle::sh("ls -l /dev/console | cut -c1; ls /tmp/decoy | wc -l");
    fake_proc_through_a_volume(&mut b, volume.path());
    b.config["process"]["terminal"] = json!(true);
    let rt = Runtime::new();
    let console = ConsoleSocket::new();
    let id = unique_id();
    let out = rt.create_with(&b, &id, &["--console-socket", console.path_str()]);
    if !out.status.success() {
        // Refusing proc on a symlinked /proc (runc's rule) stops the attack earlier still.
        assert_err_mentions(&out, "/proc", "proc mounted on a symlink");
        rt.assert_no_state(&id);
        return;
    }
    let master = console.recv_master();
    rt.start(&id).ok("start");
    let out = read_until_closed(&master);
    rt.wait_for_status(&id, "stopped");
    // 'c': the console is the pty; nothing was bound onto the decoy.
    assert_eq!(lines(&out), ["c", "0"], "output: {out:?}");
}

/// CVE-2025-31133 (runc) through a fake /proc (the CVE-2019-19921 class): masking mounts over the
/// masked path "through /proc/self/fd/N" of the container's /proc after pivot_root; with a fake
/// /proc the masks land on a decoy and `/sys/firmware` (here: any masked directory that exists)
/// stays readable.
#[test]
fn cve_2025_31133_fake_proc_cannot_defeat_masked_paths() {
    if !require_root() {
        return;
    }
    let volume = TempDir::new("adv-volume");
    let mut b = Bundle::sh("ls /sys/kernel | wc -l");
    fake_proc_through_a_volume(&mut b, volume.path());
    b.config["linux"]["maskedPaths"] = json!(["/sys/kernel"]);
    let rt = Runtime::new();
    let out = rt.run(&b, &unique_id());
    assert!(
        !out.status.success() || out.out().trim() == "0",
        "/sys/kernel is not masked: {}",
        out.describe()
    );
}

/// A pty pair of the test's own standing for the terminal an administrator runs the runtime from:
/// (master, slave).
fn open_test_pty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two descriptors; no name, termios or size is passed.
    let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptors, ours.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(m),
            std::os::fd::OwnedFd::from_raw_fd(s),
        )
    }
}

/// TIOCSTI injection into the caller's terminal (the class of CVE-2017-5226 in bubblewrap and
/// CVE-2016-7545; runc's init always calls setsid, so a container process never has the caller's
/// terminal as its controlling terminal): a container without `process.terminal`, run from an
/// administrator's shell, pushes "echo INJECTED" into that terminal's input, which the shell runs as
/// host root once the container is gone. Judged on the test's own pty: nothing may be queued.
#[test]
fn tiocsti_container_cannot_type_into_the_callers_terminal() {
    use std::os::fd::AsRawFd;
    if !require_root() {
        return;
    }
    let mut b = Bundle::new(&["adv_tiocsti"]);
    install_attack(&b, "adv_tiocsti");
    b.writable_root();
    b.config["process"]["terminal"] = json!(false);
    b.save();
    let (master, slave) = open_test_pty();
    let rt = Runtime::new();
    let id = unique_id();
    let mut c = rt.command(&["run", "--bundle", b.dir.to_str().unwrap(), &id]);
    let slave_fd = slave.as_raw_fd();
    // SAFETY: only system calls between fork and exec: the runtime starts as a shell's child would,
    // in a session whose controlling terminal is the pty, with the pty as stdin.
    unsafe {
        c.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) != 0 || libc::dup2(slave_fd, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = rt.exec(c);
    // What the "shell" would read next from its terminal.
    // SAFETY: F_SETFL on our descriptor; read into a valid buffer.
    let queued = unsafe {
        libc::fcntl(slave.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
        let mut buf = [0u8; 256];
        let n = libc::read(slave.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
        String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned()
    };
    drop(master);
    eprintln!("attack program: {}", out.out().trim());
    assert!(
        !queued.contains("INJECTED"),
        "the container typed {queued:?} into the caller's terminal ({})",
        out.describe()
    );
}

/// The unprivileged user of the rootless tests (tests/userns.rs makes it too): (uid, gid).
fn rootless_user() -> (u32, u32) {
    const USER: &str = "berth-rootless";
    let lookup = || {
        let out = std::process::Command::new("getent")
            .args(["passwd", USER])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let f: Vec<&str> = line.trim().split(':').collect();
        (f.len() > 3).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
    };
    if let Some(ids) = lookup() {
        return ids;
    }
    let out = std::process::Command::new("useradd")
        .args(["--no-create-home", "--user-group", USER])
        .output()
        .unwrap();
    assert!(
        out.status.success() || lookup().is_some(),
        "useradd: {}",
        out.describe()
    );
    lookup().expect("the rootless test user")
}

/// CVE-2019-5736 (runc) for a rootless runtime: an unprivileged user's own copy of the runtime
/// (say ~/bin/berth), and a container whose root is that user. The runtime cannot make a read-only
/// mount of itself without privilege; it must still never let the container's handle on
/// `/proc/<init>/exe` reach the installed file. The test plays the container process: it keeps an
/// O_PATH handle on the created init's exe and, once the runtime has exited, reopens it for
/// writing and writes; the installed copy (the test's own) must be unchanged.
#[test]
fn cve_2019_5736_rootless_runtime_binary_cannot_be_rewritten() {
    use std::os::unix::fs::{chown, FileExt, OpenOptionsExt};
    if !require_root() {
        return;
    }
    let (uid, gid) = rootless_user();
    let as_user = |c: &mut std::process::Command| {
        c.uid(uid).gid(gid);
    };
    let home = TempDir::new("adv-rootless-bin");
    let bin = home.join("berth");
    let cp = std::process::Command::new("cp")
        .arg(runtime())
        .arg(&bin)
        .status()
        .unwrap();
    assert!(cp.success(), "cp the runtime");
    chown(&bin, Some(uid), Some(gid)).unwrap();
    let xdg = TempDir::new("adv-rootless-xdg");
    fs::set_permissions(xdg.path(), fs::Permissions::from_mode(0o700)).unwrap();
    chown(xdg.path(), Some(uid), Some(gid)).unwrap();
    let mut b = Bundle::default();
    let logs = TempDir::new("adv-rootless-out");
    // Output through files: a created container's init keeps its stdio open.
    let berth = |args: &[&str]| {
        let (out, err) = (logs.join("out"), logs.join("err"));
        let mut c = std::process::Command::new(&bin);
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("XDG_RUNTIME_DIR", xdg.path())
            .stdin(std::process::Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap());
        as_user(&mut c);
        let status = c.status().expect("run the user's runtime");
        std::process::Output {
            status,
            stdout: fs::read(&out).unwrap_or_default(),
            stderr: fs::read(&err).unwrap_or_default(),
        }
    };
    b.config["process"]["args"] = json!(["true"]);
    b.remove_namespace("network");
    b.set_namespace("user", None);
    b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": uid, "size": 1 }]);
    b.config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": gid, "size": 1 }]);
    b.config["linux"].as_object_mut().unwrap().remove("resources");
    for m in b.config["mounts"].as_array_mut().unwrap() {
        if m["destination"] == "/sys" {
            *m = json!({ "destination": "/sys", "type": "none", "source": "/sys",
                         "options": ["rbind", "nosuid", "noexec", "nodev", "ro"] });
        }
        if m["destination"] == "/dev/pts" {
            m["options"] = json!(["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]);
        }
    }
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["destination"] != "/sys/fs/cgroup");
    b.save();
    let own = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(&b.dir)
        .status()
        .unwrap();
    assert!(own.success());
    let before = fs::read(&bin).unwrap();
    let id = unique_id();
    let bundle = b.dir.to_str().unwrap().to_string();
    let out = berth(&["create", "--bundle", &bundle, &id]);
    // Whatever happens below, the container goes.
    struct DeleteForce<F: Fn(&[&str]) -> std::process::Output>(F, String);
    impl<F: Fn(&[&str]) -> std::process::Output> Drop for DeleteForce<F> {
        fn drop(&mut self) {
            (self.0)(&["delete", "--force", &self.1]);
        }
    }
    let _cleanup = DeleteForce(&berth, id.clone());
    assert!(out.status.success(), "rootless create: {}", out.describe());
    let state: Value = serde_json::from_slice(&berth(&["state", &id]).stdout).unwrap();
    let pid = state["pid"].as_i64().unwrap();
    let exe = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/exe"))
        .expect("O_PATH on init's exe");
    let started = berth(&["start", &id]);
    poll("the container to stop", || {
        let s: Value = serde_json::from_slice(&berth(&["state", &id]).stdout).unwrap_or_default();
        s["status"] == "stopped"
    });
    let deleted = berth(&["delete", &id]);
    assert!(
        started.status.success() && deleted.status.success(),
        "{}",
        deleted.describe()
    );
    use std::os::fd::AsRawFd;
    let reopened = fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    if let Ok(f) = reopened {
        let _ = f.write_at(b"PWNED", 0);
    }
    assert!(
        fs::read(&bin).unwrap() == before,
        "the user's runtime binary was rewritten through /proc/<init>/exe"
    );
}

/// CVE-2025-31133 class without a /proc mount at all: the config mounts no procfs, and the image
/// ships a fake `/proc/self/fd/N` tree of symlinks to a decoy. Masked and read-only paths must still
/// land on their targets (they are mounted from descriptor to descriptor, never through /proc).
#[test]
fn masked_and_readonly_paths_hold_without_a_procfs_and_with_a_fake_proc_tree() {
    if !require_root() || runc_gap("runc needs /proc to mask paths") {
        return;
    }
    let mut b =
        Bundle::sh("ls /sys/kernel | wc -l; ls /decoy | wc -l; touch /data/x 2>/dev/null && echo writable || echo ro");
    b.writable_root();
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["destination"] != "/proc");
    let fd_dir = b.rootfs().join("proc/self/fd");
    fs::create_dir_all(&fd_dir).unwrap();
    fs::create_dir_all(b.rootfs().join("decoy")).unwrap();
    fs::create_dir_all(b.rootfs().join("data")).unwrap();
    for n in 0..256 {
        std::os::unix::fs::symlink("/decoy", fd_dir.join(n.to_string())).unwrap();
    }
    b.config["linux"]["maskedPaths"] = json!(["/sys/kernel"]);
    b.config["linux"]["readonlyPaths"] = json!(["/data"]);
    let out = run_ok(&b);
    assert_eq!(lines(&out), ["0", "0", "ro"], "masks went astray: {out}");
}
