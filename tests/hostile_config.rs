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
            while !stop.load(Ordering::Relaxed) {
                for i in 0..DEVICES {
                    let name = dir.join(format!("d{i}"));
                    if std::fs::symlink_metadata(&name).is_ok_and(|m| m.file_type().is_char_device()) {
                        let tmp = dir.join(format!(".s{i}"));
                        let _ = std::fs::remove_file(&tmp);
                        if std::os::unix::fs::symlink(&victim, &tmp).is_ok() && std::fs::rename(&tmp, &name).is_ok() {
                            swaps += 1;
                        }
                    }
                }
            }
            swaps
        })
    };
    let rt = Runtime::new();
    let mut refused = 0;
    for _ in 0..25 {
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
        "device swap race: {swaps} swaps, {refused} of 25 creates refused, host file untouched"
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
