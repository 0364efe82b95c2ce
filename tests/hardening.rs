//! Escape-proofing: each test is named after the attack it stops and runs a real container.

mod common;
use common::*;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::process::Command;

fn open_raw(path: &str, flags: i32) -> std::io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just opened, ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// CVE-2019-5736: a process that gets hold of the runtime binary through /proc/<init>/exe (before
/// init execs the user's program) must not be able to reopen it for writing once the runtime has
/// exited. The test process plays the container process: it keeps an O_PATH handle on the created
/// container's /proc/<pid>/exe, lets the container run to the end, then tries to reopen it for
/// writing (without truncating: nothing is written even if the protection were missing).
#[test]
fn cve_2019_5736_runtime_binary_cannot_be_reopened_for_writing() {
    if !require_root() {
        return;
    }
    if runc_gap("runc 1.1 protects with a memfd copy whose /proc/<pid>/exe is a different file") {
        return;
    }
    let b = Bundle::new(&["true"]);
    // A private copy of the runtime: no other test executes it, so once this container is gone
    // nothing holds it busy (ETXTBSY) and only the protection can refuse the write.
    let private = TempDir::new("runtime-copy");
    let mut rt = Runtime::new();
    rt.bin = private.join("runtime");
    // Copied by `cp`, not here: a writable descriptor of the copy in this multi-threaded test
    // process would be inherited by children other tests fork meanwhile, and executing the copy
    // would fail with ETXTBSY until they exec.
    let cp = Command::new("cp").arg(runtime()).arg(&rt.bin).status().unwrap();
    assert!(cp.success(), "cp the runtime");
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let exe = open_raw(&format!("/proc/{pid}/exe"), libc::O_PATH).expect("O_PATH on init's exe");
    rt.start(&id).ok("start");
    rt.wait_for_status(&id, "stopped");
    rt.delete(&id).ok("delete");
    let reopened = open_raw(&format!("/proc/self/fd/{}", exe.as_raw_fd()), libc::O_WRONLY);
    match reopened {
        Ok(_) => panic!("the runtime binary was reopened for writing through /proc/<init>/exe"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}"),
    }
}

/// Host descriptors the runtime inherits must not reach the container (only stdio and the ones
/// passed with --preserve-fds).
#[test]
fn host_fd_leak_none_but_stdio_and_preserved() {
    if !require_root() {
        return;
    }
    let host_dir = TempDir::new("leak");
    // pid 1 is the shell, waiting for ls (no pipe of its own open): list its descriptors.
    let b = Bundle::sh("ls /proc/1/fd; true");
    for (preserve, want) in [(0, vec![0, 1, 2]), (1, vec![0, 1, 2, 3])] {
        let rt = Runtime::new();
        let id = unique_id();
        b.save();
        let dir = fs::File::open(host_dir.path()).unwrap();
        // Above the fds it is copied to, so that dup2 always makes a fresh inheritable copy.
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own.
        let high = unsafe { OwnedFd::from_raw_fd(libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 50)) };
        let raw = high.as_raw_fd();
        let mut c = Command::new(&rt.bin);
        c.arg("--root").arg(&rt.root).arg("run").arg("--bundle").arg(&b.dir);
        c.arg("--preserve-fds").arg(preserve.to_string()).arg(&id);
        // SAFETY: only dup2 between fork and exec. fds 3 and 7 are host directories left open
        // (not close-on-exec) in the runtime, as a careless engine might.
        unsafe {
            c.pre_exec(move || {
                libc::dup2(raw, 3);
                libc::dup2(raw, 7);
                Ok(())
            });
        }
        let out = rt.exec(c).ok("run");
        let mut fds: Vec<u32> = out.out().split_whitespace().map(|f| f.parse().unwrap()).collect();
        fds.sort();
        assert_eq!(fds, want, "preserve-fds {preserve}");
    }
}

/// CVE-2024-21626: process.cwd naming a descriptor of the runtime (/proc/self/fd/N) must never
/// leave the process in a host directory.
#[test]
fn cve_2024_21626_cwd_cannot_be_a_leaked_host_directory() {
    if !require_root() {
        return;
    }
    for n in 3..=12 {
        let mut b = Bundle::sh("pwd; ls ..");
        b.writable_root();
        b.config["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        let rt = Runtime::new();
        let id = unique_id();
        let out = rt.run(&b, &id);
        if !is_runc() {
            // Berth resolves process.cwd inside the rootfs, where /proc/self/fd/N is a magic link
            // it refuses: the create must fail, naming the field, whatever N is.
            assert_err_mentions(&out, "process.cwd", &format!("fd {n}"));
            rt.assert_no_state(&id);
            continue;
        }
        if out.status.success() {
            // Allowed only if it resolved to a directory inside the container.
            assert!(
                !out.out().contains("(unreachable)") && out.out().contains("bin"),
                "fd {n}: {}",
                out.describe()
            );
        } else {
            assert_err_mentions(&out, if is_runc() { "" } else { "process.cwd" }, &format!("fd {n}"));
            rt.assert_no_state(&id);
        }
    }
}

/// CVE-2021-30465: a mount destination that is a relative symlink climbing out of the rootfs is
/// resolved inside the rootfs: the mount never lands on the host.
#[test]
fn cve_2021_30465_mount_destination_symlink_cannot_reach_the_host() {
    if !require_root() {
        return;
    }
    let host_target = TempDir::new("swap-target");
    let mut b = Bundle::default();
    b.writable_root();
    let climb = format!("../../../../../../../../..{}", host_target.path().display());
    symlink(&climb, b.rootfs().join("swapped")).unwrap();
    b.add_mount(json!({ "destination": "/swapped", "type": "tmpfs", "source": "tmpfs" }));
    let out = run_script(&mut b, "echo inside > /swapped/written && cat /swapped/written");
    assert_eq!(lines(&out), ["inside"]);
    assert!(
        fs::read_dir(host_target.path()).unwrap().next().is_none(),
        "the host directory was written to"
    );
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(find_mount(&parse_mountinfo(&host_mounts), host_target.path().to_str().unwrap()).is_none());
}

/// CVE-2025-31133: masking binds /dev/null over files; if /dev/null was swapped (here by a
/// createContainer hook, standing in for a racing container process) for a symlink to a writable
/// procfs file, masking must refuse rather than expose that file.
#[test]
fn cve_2025_31133_fake_dev_null_is_refused_for_masking() {
    if !require_root() {
        return;
    }
    if runc_gap("runc 1.1 predates the /dev/null check") {
        return;
    }
    let mut b = Bundle::default();
    let rootfs = b.rootfs();
    b.config["hooks"] = json!({ "createContainer": [ { "path": "/bin/sh", "args": ["sh", "-c",
        format!("rm -f {0}/dev/null && ln -s /proc/sys/kernel/core_pattern {0}/dev/null", rootfs.display())] } ] });
    let rt = Runtime::new();
    let id = unique_id();
    let out = rt.run(&b, &id);
    assert_err_mentions(&out, "/dev/null", "fake /dev/null");
    rt.assert_no_state(&id);
}

/// CVE-2022-29162: the inheritable set stays empty unless the config asks for it, so file
/// capabilities of a program cannot add to what the container was given.
#[test]
fn cve_2022_29162_inheritable_capabilities_not_granted_unless_asked() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::sh("grep -E '^Cap(Inh|Amb):' /proc/self/status");
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    let out = run_ok(&b);
    assert_eq!(lines(&out), ["CapInh:\t0000000000000000", "CapAmb:\t0000000000000000"]);
    b.config["process"]["capabilities"]["inheritable"] = json!(["CAP_KILL"]);
    let out = run_ok(&b);
    assert_eq!(lines(&out), ["CapInh:\t0000000000000020", "CapAmb:\t0000000000000020"]);
}

/// A default container cannot see or signal host processes, read the host's /proc/kcore, load
/// kernel modules or mount anything.
#[test]
fn default_container_cannot_reach_host_processes_kcore_modules_or_mounts() {
    if !require_root() {
        return;
    }
    let me = std::process::id();
    let out = run_default(&format!(
        "ls /proc | grep -c '^[0-9]'; \
         kill -0 {me} 2>/dev/null && echo signalled-host || echo no-host-pid; \
         echo kcore-bytes=$(head -c 16 /proc/kcore | wc -c); \
         busybox insmod /bin/busybox 2>/dev/null && echo module-loaded || echo insmod-refused; \
         grep CapBnd: /proc/self/status; \
         mount -t tmpfs t /mnt 2>/dev/null && echo mounted || echo mount-refused; \
         grep -c ' /mnt ' /proc/self/mountinfo; true"
    ));
    let l = lines(&out);
    let pids: usize = l[0].parse().unwrap();
    assert!(pids <= 3, "container sees {pids} processes: {out}");
    // Neither CAP_SYS_MODULE (16) nor CAP_SYS_ADMIN (21) is even in the bounding set.
    assert_eq!(
        &l[1..],
        [
            "no-host-pid",
            "kcore-bytes=0",
            "insmod-refused",
            "CapBnd:\t0000000020000420",
            "mount-refused",
            "0"
        ],
        "{out}"
    );
}

/// process.scheduler, process.ioPriority, linux.personality and linux.memoryPolicy, each seen from
/// inside the container.
#[test]
fn scheduler_io_priority_personality_and_memory_policy_apply() {
    if !require_root() || runc_gap("runc 1.1 predates scheduler, ioPriority and memoryPolicy") {
        return;
    }
    let mut b = Bundle::sh(
        "busybox ionice -p $$; cut -d' ' -f19,41 /proc/self/stat; uname -m; \
         grep -m1 -o 'interleave:0' /proc/self/numa_maps",
    );
    b.config["process"]["scheduler"] = json!({ "policy": "SCHED_BATCH", "nice": 5 });
    b.config["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_BE", "priority": 6 });
    b.config["linux"]["personality"] = json!({ "domain": "LINUX32" });
    b.config["linux"]["memoryPolicy"] = json!({ "mode": "MPOL_INTERLEAVE", "nodes": "0" });
    let out = run_ok(&b);
    // nice 5, policy 3 (SCHED_BATCH); a 32-bit uname; interleaving over node 0.
    assert_eq!(
        lines(&out),
        ["best-effort: prio 6", "5 3", "i686", "interleave:0"],
        "{out}"
    );
}

#[test]
fn bad_scheduler_io_priority_and_personality_are_errors_naming_the_field() {
    if !require_root() || runc_gap("runc 1.1 predates scheduler, ioPriority and memoryPolicy") {
        return;
    }
    let cases = [
        (
            "process",
            "ioPriority",
            json!({ "class": "IOPRIO_CLASS_BE", "priority": 9 }),
            "process.ioPriority",
        ),
        (
            "linux",
            "personality",
            json!({ "domain": "LINUX", "flags": ["NOPE"] }),
            "linux.personality.flags[0]",
        ),
        (
            "linux",
            "memoryPolicy",
            json!({ "mode": "MPOL_BIND", "nodes": "9-1" }),
            "linux.memoryPolicy.nodes",
        ),
        (
            "process",
            "scheduler",
            json!({ "policy": "SCHED_ISO" }),
            "process.scheduler",
        ),
    ];
    for (section, key, value, field) in cases {
        let mut b = Bundle::default();
        b.config[section][key] = value;
        let rt = Runtime::new();
        let id = unique_id();
        assert_err_mentions(&rt.run(&b, &id), field, field);
        rt.assert_no_state(&id);
    }
}

/// Neither AppArmor nor SELinux runs here: a requested label is an error (as with runc), never
/// silently dropped, and `features` says they are disabled.
#[test]
fn lsm_labels_without_the_lsm_are_refused() {
    if !require_root() {
        return;
    }
    if std::path::Path::new("/sys/module/apparmor/parameters/enabled").exists()
        || std::path::Path::new("/sys/fs/selinux/enforce").exists()
    {
        notice(&format!("SKIP {}: this host has AppArmor or SELinux", test_name()));
        return;
    }
    let cases = [
        ("process", "apparmorProfile", "process.apparmorProfile"),
        ("process", "selinuxLabel", "process.selinuxLabel"),
        ("linux", "mountLabel", "linux.mountLabel"),
    ];
    for (section, key, field) in cases {
        let mut b = Bundle::default();
        b.config[section][key] = json!("system_u:object_r:container_file_t:s0");
        let rt = Runtime::new();
        let id = unique_id();
        let out = rt.create(&b, &id);
        if !is_runc() {
            // runc 1.1 refuses too, in its own words.
            assert_err_mentions(&out, field, field);
            assert_err_mentions(&out, "not enabled", field);
        }
        out.fails(field);
        rt.assert_no_state(&id);
    }
    let mut b = Bundle::default();
    b.config["process"]["apparmorProfile"] = json!("");
    run_ok(&b);
    if runc_gap("runc's features says whether AppArmor support is compiled in, not whether the host has it") {
        return;
    }
    let out = std::process::Command::new(runtime()).arg("features").output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["linux"]["apparmor"]["enabled"], false);
    assert_eq!(doc["linux"]["selinux"]["enabled"], false);
}

/// CVE-2025-52881: init's writes to /proc files (oom_score_adj, sysctls) go to the real procfs,
/// never to whatever the container's /proc path leads to. Here the rootfs brings a fake /proc
/// (no proc mount) whose files are ordinary files: they stay untouched and the real settings are
/// made.
#[test]
fn cve_2025_52881_proc_writes_cannot_be_redirected_by_a_fake_proc() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::new(&["sleep", "10"]);
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["destination"] != "/proc");
    b.config["linux"]["maskedPaths"] = json!([]);
    b.config["linux"]["readonlyPaths"] = json!([]);
    b.config["process"]["oomScoreAdj"] = json!(321);
    b.config["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1" });
    let fake = b.rootfs().join("proc");
    for (rel, content) in [
        ("self/oom_score_adj", "0\n"),
        ("1/oom_score_adj", "0\n"),
        ("sys/net/ipv4/ip_forward", "0\n"),
    ] {
        fs::create_dir_all(fake.join(rel).parent().unwrap()).unwrap();
        fs::write(fake.join(rel), content).unwrap();
    }
    let rt = Runtime::new();
    let id = unique_id();
    let pid = rt.create_and_start(&b, &id);
    let real_adj = fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["cat", "/proc/sys/net/ipv4/ip_forward"])
        .output();
    rt.kill(&id, "KILL");
    assert_eq!(real_adj.trim(), "321");
    if let Some(o) = out.ok().filter(|o| o.status.success()) {
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "1",
            "sysctl in the container's netns"
        );
    } else {
        notice(&format!("SKIP part of {}: nsenter unavailable", test_name()));
    }
    for rel in ["self/oom_score_adj", "1/oom_score_adj", "sys/net/ipv4/ip_forward"] {
        assert_eq!(
            fs::read_to_string(fake.join(rel)).unwrap(),
            "0\n",
            "fake /proc/{rel} was written"
        );
    }
}

/// CVE-2025-52565: a /dev/console planted as a symlink (here to the container's
/// /proc/sys/kernel/core_pattern) must not redirect the bind of the pty: the symlink is replaced by
/// the console itself, and nothing is mounted over the procfs file.
#[test]
fn cve_2025_52565_console_bind_cannot_be_redirected() {
    if !require_root() {
        return;
    }
    if runc_gap("runc 1.1 predates the /dev/console check") {
        return;
    }
    let rt = Runtime::new();
    let console = ConsoleSocket::new();
    let mut b = Bundle::sh(
        "ls -l /dev/console | cut -c1; grep -c core_pattern /proc/self/mountinfo; cat /proc/sys/kernel/core_pattern >/dev/null && echo readable",
    );
    b.config["process"]["terminal"] = json!(true);
    let rootfs = b.rootfs();
    b.config["hooks"] = json!({ "createContainer": [ { "path": "/bin/sh", "args": ["sh", "-c",
        format!("ln -sf /proc/sys/kernel/core_pattern {}/dev/console", rootfs.display())] } ] });
    let id = unique_id();
    rt.create_with(&b, &id, &["--console-socket", console.path_str()])
        .ok("create with a planted /dev/console symlink");
    let master = console.recv_master();
    rt.start(&id).ok("start");
    let out = read_until_closed(&master);
    rt.wait_for_status(&id, "stopped");
    // 'c': the console is the pty (a character device), not a link; no mount on core_pattern.
    assert_eq!(lines(&out), ["c", "0", "readable"], "output: {out:?}");
}

/// A hostile image puts a FIFO where /etc/passwd should be (read for HOME when the process has
/// none): neither create nor exec may block on it.
#[test]
fn fifo_planted_as_etc_passwd_does_not_hang_create_or_exec() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::sh("echo home=$HOME; sleep 10");
    let passwd = b.rootfs().join("etc/passwd");
    fs::remove_file(&passwd).unwrap();
    nix_mkfifo(&passwd);
    b.config["process"]["env"] = json!(["PATH=/bin"]);
    b.writable_root();
    let rt = Runtime::new();
    let id = unique_id();
    // Runtime::exec fails the test if a call takes longer than its timeout.
    rt.create_and_start(&b, &id);
    let out = rt.cmd(&["exec", &id, "sh", "-c", "echo exec-home=$HOME"]);
    assert!(out.out().contains("exec-home=/"), "{}", out.describe());
    rt.delete_force(&id).ok("delete");
}

fn nix_mkfifo(p: &std::path::Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}
