//! Configurations and neighbours that try to make the runtime change the host: IDs that setresuid
//! takes for "no change", sysctls outside the container's namespaces, a co-tenant racing device
//! creation in a shared directory, cgroups the container only joined, numbers that overflow. Each
//! attack is judged by its effect on the host, on a file, process or cgroup of the test's own.

mod common;

use common::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `create` of `b` fails naming `culprit`, and leaves no state.
fn create_refused(b: &Bundle, culprit: &str) {
    let rt = Runtime::new();
    let id = unique_id();
    let out = rt.create(b, &id);
    assert_err_mentions(&out, culprit, "create with a hostile config");
    rt.cmd(&["state", &id]).fails("state of a refused container");
    rt.assert_no_state(&id);
}

#[test]
fn uid_and_gid_minus_one_are_refused_not_taken_as_no_change() {
    if !require_root() {
        return;
    }
    // 4294967295 is (uid_t)-1: setresuid(-1, -1, -1) leaves the process root.
    for (field, patch) in [
        ("process.user.uid", json!({ "uid": 4294967295u32, "gid": 0 })),
        ("process.user.gid", json!({ "uid": 1000, "gid": 4294967295u32 })),
        ("process.user.uid", json!({ "uid": 2147483648u32, "gid": 0 })),
        (
            "process.user.additionalGids[0]",
            json!({ "uid": 1000, "gid": 1000, "additionalGids": [4294967295u32] }),
        ),
    ] {
        let mut b = Bundle::new(&["id"]);
        b.config["process"]["user"] = patch;
        create_refused(&b, field);
    }
}

#[test]
fn exec_user_minus_one_is_refused() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::new(&["sleep", "30"]);
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    rt.create_and_start(&b, &id);
    for args in [
        vec!["exec", "--user", "4294967295", &id, "id", "-u"],
        vec!["exec", "--user", "1000:4294967295", &id, "id", "-u"],
        vec!["exec", "--user", "1000:1000", "-g", "4294967295", &id, "id", "-u"],
    ] {
        let out = rt.cmd(&args);
        assert_err_mentions(&out, "out of range", "exec with ID -1");
        assert!(!out.out().contains('0'), "the exec ran: {}", out.describe());
    }
    let dir = TempDir::new("process");
    let p = dir.join("process.json");
    let mut process = b.config["process"].clone();
    process["args"] = json!(["id", "-u"]);
    process["user"] = json!({ "uid": 4294967295u32, "gid": 0 });
    std::fs::write(&p, process.to_string()).unwrap();
    let out = rt.cmd(&["exec", "--process", p.to_str().unwrap(), &id]);
    assert_err_mentions(&out, "user.uid", "exec --process with uid -1");
    rt.delete_force(&id).ok("delete");
}

#[test]
fn host_sysctls_are_refused_before_anything_is_made() {
    if !require_root() {
        return;
    }
    // Never the real core_pattern: the config is refused before anything runs, and the test
    // checks the value is unchanged in case it was not.
    let before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["sysctl"] = json!({ "kernel.core_pattern": before.trim() });
    create_refused(&b, "kernel.core_pattern");
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["sysctl"] = json!({ "kernel/core_pattern": before.trim() });
    create_refused(&b, "kernel/core_pattern");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        before
    );

    // net.* without a network namespace of the container's own (none, or the host's joined).
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let mut b = Bundle::new(&["true"]);
    b.remove_namespace("network");
    b.config["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": forward.trim() });
    create_refused(&b, "net.ipv4.ip_forward");
    let own_net = format!("/proc/{}/ns/net", std::process::id());
    b.set_namespace("network", Some(&own_net));
    create_refused(&b, "net.ipv4.ip_forward");
    // IPC sysctls without an IPC namespace.
    let mut b = Bundle::new(&["true"]);
    b.remove_namespace("ipc");
    b.config["linux"]["sysctl"] = json!({ "kernel.shmmni": "4096" });
    create_refused(&b, "kernel.shmmni");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        forward
    );
}

#[test]
fn namespaced_sysctls_are_set_inside() {
    if !require_root() {
        return;
    }
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let want = if host.trim() == "1" { "0" } else { "1" };
    let mut b = Bundle::sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni");
    b.config["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": want, "kernel.shmmni": "1234" });
    let out = run_ok(&b);
    assert_eq!(lines(&out), vec![want.to_string(), "1234".to_string()]);
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(), host);
}

/// A co-tenant of a shared directory swaps each device node the runtime makes there for a symlink
/// to a host file, between mknod and the chmod that follows; the runtime must never change the file.
#[test]
fn device_symlink_swap_in_a_shared_directory_never_reaches_a_host_file() {
    if !require_root() {
        return;
    }
    let shared = TempDir::new("shared");
    let host = TempDir::new("victim");
    let victim = host.join("victim");
    std::fs::write(&victim, "host file").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    const DEVICES: usize = 48;
    const CREATES: usize = 20;
    let mut b = Bundle::new(&["true"]);
    b.bind(shared.path(), "/dev/shared", &["rw"]);
    let devices: Vec<_> = (0..DEVICES)
        .map(
            |i| json!({ "path": format!("/dev/shared/d{i}"), "type": "c", "major": 1, "minor": 3, "fileMode": 0o4777 }),
        )
        .collect();
    b.config["linux"]["devices"] = json!(devices);

    // The co-tenant: as soon as a node shows up, rename a symlink to the victim over it.
    let stop = Arc::new(AtomicBool::new(false));
    let tenant = {
        let (stop, dir, victim) = (stop.clone(), shared.path().to_path_buf(), victim.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            // The symlinks wait ready beside the nodes: a swap is one rename once a node shows up.
            let ready = |i: usize| {
                let tmp = dir.join(format!(".s{i}"));
                let _ = std::os::unix::fs::symlink(&victim, &tmp);
                tmp
            };
            let links: Vec<_> = (0..DEVICES).map(ready).collect();
            while !stop.load(Ordering::Relaxed) {
                for (i, link) in links.iter().enumerate() {
                    let name = dir.join(format!("d{i}"));
                    if std::fs::symlink_metadata(&name).is_ok_and(|m| m.file_type().is_char_device())
                        && std::fs::rename(link, &name).is_ok()
                    {
                        swaps += 1;
                        ready(i);
                    }
                }
            }
            swaps
        })
    };
    let rt = Runtime::new();
    let mut refused = 0;
    for _ in 0..CREATES {
        let id = unique_id();
        if !rt.create(&b, &id).status.success() {
            refused += 1;
        }
        rt.delete_force(&id);
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
        if mode != 0o600 {
            stop.store(true, Ordering::Relaxed);
            tenant.join().unwrap();
            panic!("the runtime changed a host file through the swapped node: mode {mode:o}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = tenant.join().unwrap();
    notice(&format!(
        "device swap race: {swaps} swaps, {refused} of {CREATES} creates refused, host file untouched"
    ));
    assert!(swaps > 0, "the co-tenant never got to swap a node");
}

/// The same shared directory without a co-tenant: the nodes are made with their mode and owner.
#[test]
fn devices_in_a_bound_directory_get_their_mode_and_owner() {
    if !require_root() {
        return;
    }
    let shared = TempDir::new("shared");
    let mut b = Bundle::sh("stat -c '%a %u %g %t %T' /dev/shared/null1");
    b.bind(shared.path(), "/dev/shared", &["rw"]);
    b.config["linux"]["devices"] = json!([{ "path": "/dev/shared/null1", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 1000, "gid": 2000 }]);
    assert_eq!(run_ok(&b).trim(), "640 1000 2000 1 3");
}

/// Every cgroup hierarchy mounted under /sys/fs/cgroup (symlinks such as cpu,cpuacct skipped).
fn hierarchies() -> Vec<std::path::PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.procs").exists() {
        return vec![root.to_path_buf()];
    }
    let mut out: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    out.sort();
    out
}

/// A cgroup of the test's own in every hierarchy (what an engine or a co-tenant may share),
/// removed on drop with whatever the test put in it.
struct SharedCgroup {
    name: String,
    host_sleep: Option<std::process::Child>,
}

impl SharedCgroup {
    fn new() -> SharedCgroup {
        let name = format!("berth-shared-{}", unique_id());
        for h in hierarchies() {
            let dir = h.join(&name);
            std::fs::create_dir(&dir).unwrap();
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(h.join(f)) {
                    std::fs::write(dir.join(f), v.trim()).unwrap();
                }
            }
        }
        SharedCgroup { name, host_sleep: None }
    }

    /// A host process of the test's own, moved into the cgroup in every hierarchy.
    fn add_host_sleep(&mut self) -> i32 {
        let child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let pid = child.id() as i32;
        for h in hierarchies() {
            std::fs::write(h.join(&self.name).join("cgroup.procs"), pid.to_string()).unwrap();
        }
        self.host_sleep = Some(child);
        pid
    }

    fn host_sleep_alive(&mut self) -> bool {
        self.host_sleep
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for SharedCgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.host_sleep.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in hierarchies() {
            let dir = h.join(&self.name);
            for _ in 0..200 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

#[test]
fn the_root_cgroup_and_the_runtimes_own_are_refused() {
    if !require_root() {
        return;
    }
    for path in ["/", "//", "/.", ".", "./"] {
        let mut b = Bundle::new(&["true"]);
        b.config["linux"]["cgroupsPath"] = json!(path);
        create_refused(&b, "linux.cgroupsPath");
    }
}

#[test]
fn a_non_empty_cgroup_cannot_be_joined() {
    if !require_root() {
        return;
    }
    let mut shared = SharedCgroup::new();
    shared.add_host_sleep();
    let mut b = Bundle::new(&["sleep", "30"]);
    b.config["linux"]["cgroupsPath"] = json!(format!("/{}", shared.name));
    create_refused(&b, "linux.cgroupsPath");
    assert!(shared.host_sleep_alive(), "the host process in the cgroup was killed");
}

/// A host process enters the cgroup the container joined after the container was made: `kill
/// --all` ends the container's processes and not it.
#[test]
fn kill_all_in_a_joined_cgroup_spares_processes_not_the_containers() {
    if !require_root() {
        return;
    }
    for own_pid_ns in [true, false] {
        let mut shared = SharedCgroup::new();
        let rt = Runtime::new();
        let id = unique_id();
        let mut b = Bundle::sh("sleep 30 & sleep 30 & wait");
        if !own_pid_ns {
            b.remove_namespace("pid");
        }
        b.config["linux"]["cgroupsPath"] = json!(format!("/{}", shared.name));
        let init = rt.create_and_start(&b, &id);
        let host = shared.add_host_sleep();
        let procs =
            std::fs::read_to_string(hierarchies().last().unwrap().join(&shared.name).join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l.trim() == host.to_string()), "{procs}");
        rt.cmd(&["kill", "--all", &id, "KILL"]).ok("kill --all");
        poll("the container's init gone", || process_gone(init));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            shared.host_sleep_alive(),
            "kill --all killed a host process (own pid ns: {own_pid_ns})"
        );
        rt.delete_force(&id).ok("delete --force");
        assert!(
            shared.host_sleep_alive(),
            "delete --force killed a host process (own pid ns: {own_pid_ns})"
        );
        assert!(
            hierarchies()[0].join(&shared.name).exists(),
            "a joined cgroup was removed"
        );
    }
}

/// The container made sub-cgroups (and moved processes into them): `delete --force` removes the
/// whole tree, as runc does, instead of failing for ever on the non-empty directory.
#[test]
fn delete_force_removes_sub_cgroups_the_container_made() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let cg = format!("berth-test-{id}");
    let mut b = Bundle::sh("sleep 30 & sleep 30 & wait");
    b.config["linux"]["cgroupsPath"] = json!(format!("/{cg}"));
    let init = rt.create_and_start(&b, &id);
    let mut children = Vec::new();
    poll("the sleeps", || {
        children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        children.len() == 2
    });
    for h in hierarchies() {
        let deeper = h.join(&cg).join("sub/deeper");
        std::fs::create_dir_all(&deeper).unwrap();
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(h.join(f)) {
                std::fs::write(h.join(&cg).join("sub").join(f), v.trim()).unwrap();
                std::fs::write(deeper.join(f), v.trim()).unwrap();
            }
        }
        std::fs::write(deeper.join("cgroup.procs"), &children[0]).unwrap();
        std::fs::create_dir(h.join(&cg).join("empty")).unwrap();
    }
    rt.delete_force(&id).ok("delete --force with sub-cgroups");
    rt.assert_no_state(&id);
    for h in hierarchies() {
        assert!(!h.join(&cg).exists(), "{} left behind", h.join(&cg).display());
    }
    assert!(
        process_gone(children[0].parse().unwrap()),
        "a process in a sub-cgroup survived"
    );
}

#[test]
fn a_long_id_with_a_multibyte_char_at_byte_32_is_refused_not_a_crash() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = format!("{}é{}", "a".repeat(31), "b".repeat(1000));
    let out = rt.create(&Bundle::new(&["true"]), &id);
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert_err_mentions(&out, "longer than 1024 bytes", "a too long ID");
}

#[test]
fn a_symlinked_rootfs_is_refused() {
    if !require_root() {
        return;
    }
    let b = Bundle::new(&["true"]);
    std::fs::rename(b.rootfs(), b.dir.join("real")).unwrap();
    std::os::unix::fs::symlink("real", b.rootfs()).unwrap();
    create_refused(&b, "root.path");
}

#[test]
fn relative_and_dotdot_mount_destinations_are_refused() {
    if !require_root() {
        return;
    }
    for dest in ["mnt/rel", "/mnt/../../../etc"] {
        let mut b = Bundle::new(&["true"]);
        b.add_mount(json!({ "destination": dest, "type": "tmpfs", "source": "tmpfs" }));
        let n = b.config["mounts"].as_array().unwrap().len() - 1;
        create_refused(&b, &format!("mounts[{n}].destination"));
    }
}

#[test]
fn a_seccomp_profile_that_denies_everything_fails_with_a_message() {
    if !require_root() {
        return;
    }
    for (default, nnp) in [
        ("SCMP_ACT_ERRNO", true),
        ("SCMP_ACT_KILL", true),
        ("SCMP_ACT_ERRNO", false),
        ("SCMP_ACT_KILL_PROCESS", false),
    ] {
        let mut b = Bundle::new(&["true"]);
        b.config["process"]["noNewPrivileges"] = json!(nnp);
        b.config["linux"]["seccomp"] = json!({ "defaultAction": default, "syscalls": [] });
        let rt = Runtime::new();
        let id = unique_id();
        let out = rt.run(&b, &id);
        eprintln!("{default} nnp={nnp}: {}", out.describe());
        assert!(!out.status.success(), "{default}: {}", out.describe());
        assert_ne!(
            out.status.code(),
            Some(139),
            "{default}: a crash without a message: {}",
            out.describe()
        );
        assert_err_mentions(&out, "linux.seccomp", "a profile that denies everything");
        rt.assert_no_state(&id);
    }
}

/// The container's memory limit in bytes, as the host's cgroup has it.
fn memory_limit(rt: &Runtime, id: &str) -> String {
    let pid = rt.state(id)["pid"].as_i64().unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if ctrls.split(',').any(|c| c == "memory") {
            let f = Path::new("/sys/fs/cgroup/memory")
                .join(path.trim_start_matches('/'))
                .join("memory.limit_in_bytes");
            return std::fs::read_to_string(f).unwrap().trim().to_string();
        }
        if ctrls.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let f = Path::new("/sys/fs/cgroup")
                .join(path.trim_start_matches('/'))
                .join("memory.max");
            return std::fs::read_to_string(f).unwrap().trim().to_string();
        }
    }
    panic!("no memory cgroup in {cg}");
}

#[test]
fn update_numbers_that_overflow_are_refused_not_taken_as_no_limit() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::new(&["sleep", "30"]);
    b.config["linux"]["resources"] = json!({ "memory": { "limit": 67108864 } });
    rt.create_and_start(&b, &id);
    assert_eq!(memory_limit(&rt, &id), "67108864");
    for (flag, value) in [
        ("--memory", "99999999999999999999999"),
        ("--memory", "9223372036854775808"),
        ("--memory", "8589934592g"),
        ("--memory", "99999999999999999999.5"),
        ("--memory-swap", "99999999999999999999999"),
        ("--memory-reservation", "8192p"),
        ("--pids-limit", "99999999999999999999999"),
        ("--cpu-quota", "99999999999999999999999"),
        ("--cpu-shares", "99999999999999999999999"),
    ] {
        let out = rt.cmd(&["update", flag, value, &id]);
        assert_err_mentions(&out, flag, "update with a number that does not fit");
        assert_eq!(memory_limit(&rt, &id), "67108864", "{flag} {value} changed the limit");
    }
    let dir = TempDir::new("resources");
    for (json, field) in [
        (r#"{"memory": {"limit": 99999999999999999999999}}"#, "memory.limit"),
        (r#"{"memory": {"limit": 18446744073709551615}}"#, "memory.limit"),
        (r#"{"memory": {"limit": -5}}"#, "memory.limit"),
    ] {
        let f = dir.join("r.json");
        std::fs::write(&f, json).unwrap();
        let out = rt.cmd(&["update", "--resources", f.to_str().unwrap(), &id]);
        assert_err_mentions(&out, field, "update --resources with a number that does not fit");
        assert_eq!(memory_limit(&rt, &id), "67108864", "{json} changed the limit");
    }
    rt.cmd(&["update", "--memory", "32m", &id]).ok("a sane update");
    assert_eq!(memory_limit(&rt, &id), "33554432");
    rt.delete_force(&id).ok("delete");
}

/// A co-tenant of a shared volume exchanges the directory a read-only bind was just mounted on for
/// a symlink to the volume's root (renameat2 RENAME_EXCHANGE): the bind's read-only flag must still
/// land on that bind (it is set on the detached tree before the mount is attached), never on
/// whatever the path names afterwards. Judged by whether the container can write into the host
/// directory the bind shows read-only.
#[test]
fn read_only_bind_in_a_shared_volume_stays_read_only_under_an_exchange_race() {
    if !require_root() {
        return;
    }
    let shared = TempDir::new("shared-vol");
    let host = TempDir::new("ro-source");
    const CREATES: usize = 40;
    let mut b = Bundle::sh("for d in /vol/*; do touch $d/pwned 2>/dev/null; done; true");
    b.bind(shared.path(), "/vol", &["rw"]);
    b.bind(host.path(), "/vol/ro", &["ro"]);
    let stop = Arc::new(AtomicBool::new(false));
    let tenant = {
        let (stop, dir) = (stop.clone(), shared.path().to_path_buf());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            let name = std::ffi::CString::new(dir.join("ro").into_os_string().into_encoded_bytes()).unwrap();
            let link_path = dir.join("link");
            let link = std::ffi::CString::new(link_path.clone().into_os_string().into_encoded_bytes()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if std::fs::symlink_metadata(&link_path).is_err() {
                    let _ = std::os::unix::fs::symlink("/vol", &link_path);
                }
                if std::fs::symlink_metadata(dir.join("ro")).is_ok_and(|m| m.is_dir()) {
                    // SAFETY: NUL-terminated paths; renameat2 only renames.
                    let r = unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            name.as_ptr(),
                            libc::AT_FDCWD,
                            link.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                    if r == 0 {
                        swaps += 1;
                    }
                }
            }
            swaps
        })
    };
    let rt = Runtime::new();
    let mut written = false;
    let mut refused = 0;
    for _ in 0..CREATES {
        let id = unique_id();
        if !rt.run(&b, &id).status.success() {
            refused += 1;
        }
        rt.delete_force(&id);
        if host.join("pwned").exists() {
            written = true;
            break;
        }
        // The next round starts from an empty volume.
        for e in std::fs::read_dir(shared.path()).unwrap().flatten() {
            let p = e.path();
            let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = tenant.join().unwrap();
    notice(&format!(
        "read-only bind race: {swaps} exchanges, {refused} of {CREATES} runs refused"
    ));
    assert!(
        !written,
        "a read-only bind stayed writable: the container wrote into the host directory"
    );
    assert!(swaps > 0, "the co-tenant never got to exchange a bind target");
}
