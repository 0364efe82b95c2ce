//! Linux namespaces: new ones of each type, joining existing ones by path,
//! and sharing the host's when not listed.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;

/// `readlink /proc/self/ns/<ns>` for each of `names`, from inside the
/// container (`b`'s process is replaced) and from the host.
fn ns_links(b: &mut Bundle, names: &[&str]) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let script: String = names
        .iter()
        .map(|n| format!("echo {n}=$(readlink /proc/self/ns/{n});"))
        .collect();
    let out = run_script(b, &script);
    let inside = lines(&out)
        .into_iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let host = names.iter().map(|n| (n.to_string(), ns_link("self", n))).collect();
    (inside, host)
}

/// Asserts the container gets its own namespace of kind `ns` (proc name).
fn assert_new_namespace(b: &mut Bundle, ns: &str) {
    let (inside, host) = ns_links(b, &[ns]);
    assert!(!inside[ns].is_empty(), "no {ns} link inside");
    assert_ne!(inside[ns], host[ns], "{ns} namespace is the host's");
}

#[test]
fn pid_namespace_makes_process_pid_1() {
    if !require_root() {
        return;
    }
    assert_eq!(run_default("echo $$").trim(), "1");
    assert_new_namespace(&mut Bundle::default(), "pid");
}

#[test]
fn network_namespace_has_only_loopback() {
    if !require_root() {
        return;
    }
    let out = run_default("tail -n +3 /proc/net/dev | cut -d: -f1");
    assert_eq!(lines(&out), ["lo"]);
    assert_new_namespace(&mut Bundle::default(), "net");
}

#[test]
fn ipc_namespace_is_new() {
    if !require_root() {
        return;
    }
    assert_new_namespace(&mut Bundle::default(), "ipc");
}

#[test]
fn uts_namespace_isolates_hostname() {
    if !require_root() {
        return;
    }
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut b = Bundle::default();
    b.config["hostname"] = json!("isolated-uts");
    assert_eq!(run_script(&mut b, "hostname").trim(), "isolated-uts");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_before
    );
    assert_new_namespace(&mut Bundle::default(), "uts");
}

#[test]
fn mount_namespace_is_new() {
    if !require_root() {
        return;
    }
    assert_new_namespace(&mut Bundle::default(), "mnt");
}

#[test]
fn cgroup_namespace_roots_cgroup_paths() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.set_namespace("cgroup", None);
    let out = run_script(&mut b, "cat /proc/self/cgroup");
    let cg = lines(&out);
    assert!(!cg.is_empty());
    for line in &cg {
        // hierarchy-ID:controllers:path
        let path = line.splitn(3, ':').nth(2).unwrap();
        assert_eq!(path, "/", "cgroup path not rooted in {line:?}:\n{out}");
    }
    assert_new_namespace(&mut b, "cgroup");
}

#[test]
fn user_namespace_with_id_mappings() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.set_namespace("user", None);
    b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    b.config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 200000, "size": 65536 }]);
    let out = run_script(&mut b, "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g");
    let got: Vec<String> = lines(&out)
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(got, ["0 100000 65536", "0 200000 65536", "0", "0"]);
    assert_new_namespace(&mut b, "user");
}

#[test]
fn time_namespace_with_offsets() {
    if !require_root() {
        return;
    }
    // RUNC GAP: runc 1.1.5 rejects the "time" namespace type (support came
    // in runc 1.2). The OCI spec (config-linux.md) defines it together with
    // linux.timeOffsets.
    if runc_gap("runc 1.1 does not support time namespaces") {
        return;
    }
    let mut b = Bundle::default();
    b.set_namespace("time", None);
    b.config["linux"]["timeOffsets"] = json!({
        "monotonic": { "secs": 3600, "nanosecs": 0 },
        "boottime": { "secs": 7200, "nanosecs": 0 }
    });
    let out = run_script(&mut b, "cat /proc/self/timens_offsets; cut -d' ' -f1 /proc/uptime");
    let l = lines(&out);
    let offsets: BTreeMap<String, String> = l[..2]
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f[0].to_string(), format!("{} {}", f[1], f[2]))
        })
        .collect();
    assert_eq!(offsets["monotonic"], "3600 0", "{out}");
    assert_eq!(offsets["boottime"], "7200 0", "{out}");
    let host_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let uptime: f64 = l[2].parse().unwrap();
    assert!(uptime >= host_uptime + 7000.0, "uptime {uptime} vs host {host_uptime}");
    assert_new_namespace(&mut b, "time");
}

#[test]
fn joining_existing_namespaces_by_path() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut first = Bundle::new(&["sleep", "30"]);
    first.config["hostname"] = json!("first-host");
    let pid = rt.create_and_start(&first, &unique_id()).to_string();

    let mut second = Bundle::default();
    second.set_namespace("network", Some(&format!("/proc/{pid}/ns/net")));
    second.set_namespace("uts", Some(&format!("/proc/{pid}/ns/uts")));
    // Joining a UTS namespace: setting a hostname would change the first
    // container's.
    second.config.as_object_mut().unwrap().remove("hostname");
    let out = run_script(
        &mut second,
        "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/uts",
    );
    assert_eq!(
        lines(&out),
        ["first-host".to_string(), ns_link(&pid, "net"), ns_link(&pid, "uts")]
    );
    assert_ne!(ns_link(&pid, "net"), ns_link("self", "net"));
}

#[test]
fn unlisted_namespaces_are_shared_with_host() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.remove_namespace("network")
        .remove_namespace("ipc")
        .remove_namespace("uts");
    b.config.as_object_mut().unwrap().remove("hostname");
    let shared = ["net", "ipc", "uts", "user", "cgroup"];
    let (inside, host) = ns_links(&mut b, &shared);
    assert_eq!(inside, host);
}

#[test]
fn joining_a_pid_namespace_by_path() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let first = Bundle::new(&["sleep", "30"]);
    let pid = rt.create_and_start(&first, &unique_id()).to_string();

    // The second container's processes live in the first one's pid namespace: the first
    // container's init (pid 1 there) is visible, and our shell is not pid 1.
    let mut second = Bundle::default();
    second.set_namespace("pid", Some(&format!("/proc/{pid}/ns/pid")));
    let out = run_script(
        &mut second,
        "readlink /proc/self/ns/pid; echo $$; cat /proc/1/cmdline | tr '\\0' ' '",
    );
    let got = lines(&out);
    assert_eq!(got[0], ns_link(&pid, "pid"));
    assert_ne!(got[1], "1", "the joining process must not be pid 1");
    assert_eq!(got[2].trim(), "sleep 30");
}

#[test]
fn new_user_namespace_while_joining_another_namespace() {
    if !require_root() {
        return;
    }
    // A new user namespace together with a namespace joined by path takes the runtime's
    // general path: join first, then unshare, then fork the pid-namespace init.
    let rt = Runtime::new();
    let first = Bundle::new(&["sleep", "30"]);
    let pid = rt.create_and_start(&first, &unique_id()).to_string();
    let mut b = Bundle::default();
    b.set_namespace("uts", Some(&format!("/proc/{pid}/ns/uts")));
    b.config.as_object_mut().unwrap().remove("hostname");
    b.set_namespace("user", None);
    b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    b.config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    let out = run_script(
        &mut b,
        "readlink /proc/self/ns/uts; echo $$; id -u; cat /proc/self/uid_map",
    );
    let got: Vec<String> = lines(&out)
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        got,
        [ns_link(&pid, "uts"), "1".into(), "0".into(), "0 100000 65536".into()]
    );
}

#[test]
fn joining_pid_and_ipc_namespaces_by_path_like_a_kubernetes_pod() {
    if !require_root() {
        return;
    }
    // A pod container that shares the sandbox's pid namespace (shareProcessNamespace) and ipc
    // namespace: joining more than pid takes the runtime's general path, where init joins the
    // pid namespace itself and must then fork to be in it (found by containerd's CRI).
    let rt = Runtime::new();
    let sandbox = Bundle::new(&["sleep", "30"]);
    let pid = rt.create_and_start(&sandbox, &unique_id()).to_string();
    let mut b = Bundle::default();
    b.set_namespace("pid", Some(&format!("/proc/{pid}/ns/pid")));
    b.set_namespace("ipc", Some(&format!("/proc/{pid}/ns/ipc")));
    let out = run_script(
        &mut b,
        "readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc; echo $$; cat /proc/1/cmdline | tr '\\0' ' '",
    );
    let got = lines(&out);
    assert_eq!(got[0], ns_link(&pid, "pid"));
    assert_eq!(got[1], ns_link(&pid, "ipc"));
    assert_ne!(got[2], "1", "the joining process must not be pid 1");
    assert_eq!(got[3].trim(), "sleep 30", "pid 1 must be the sandbox's process");
}

#[test]
fn hostname_is_set_in_a_joined_uts_namespace() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let first_id = unique_id();
    let mut first = Bundle::new(&["sleep", "30"]);
    first.config["hostname"] = json!("first-host");
    let pid = rt.create_and_start(&first, &first_id).to_string();
    let mut second = Bundle::sh("hostname");
    second.set_namespace("uts", Some(&format!("/proc/{pid}/ns/uts")));
    second.config["hostname"] = json!("second-host");
    let out = run_ok(&second);
    assert_eq!(lines(&out), ["second-host"]);
    // The namespace is shared: the first container sees the name too (as with runc).
    let seen = rt.cmd(&["exec", &first_id, "hostname"]).ok("exec hostname").out();
    assert_eq!(seen.trim(), "second-host");
}

/// A process of the test's own in a new mount namespace (host paths still reachable), killed on drop.
struct MountNsHolder(std::process::Child);

impl MountNsHolder {
    fn new() -> MountNsHolder {
        let child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "60"])
            .spawn()
            .expect("unshare");
        let pid = child.id().to_string();
        poll("the holder in its namespace", || {
            ns_link(&pid, "mnt") != ns_link("self", "mnt")
        });
        MountNsHolder(child)
    }
}

impl Drop for MountNsHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn joining_a_mount_namespace_by_path() {
    if !require_root() {
        return;
    }
    let holder = MountNsHolder::new();
    let pid = holder.0.id().to_string();
    let mut b = Bundle::default();
    b.set_namespace("mount", Some(&format!("/proc/{pid}/ns/mnt")));
    let out = run_script(
        &mut b,
        "readlink /proc/self/ns/mnt; grep -c ' /proc ' /proc/self/mountinfo",
    );
    let l = lines(&out);
    assert_eq!(l[0], ns_link(&pid, "mnt"), "{out}");
    // The container's mounts were made in the joined namespace, not the host's.
    let rootfs = b.rootfs().to_string_lossy().into_owned();
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host.contains(&rootfs),
        "container mounts in the host's namespace:\n{host}"
    );
}

#[test]
fn a_config_without_any_namespace_runs_in_the_runtimes_namespaces() {
    if !require_root() {
        return;
    }
    let host_root = || {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .map(String::from)
    };
    let before = host_root();
    let mut b = Bundle::sh("echo ran; echo pid=$$; ls /dev/null; readlink /proc/self/ns/mnt");
    b.config["linux"]["namespaces"] = json!([]);
    // runc needs /proc in the rootfs (it reads /proc/self/fd after the chroot).
    b.config["mounts"] = json!([{"destination": "/proc", "type": "proc", "source": "proc"}]);
    b.config["root"]["readonly"] = json!(false);
    let linux = b.config["linux"].as_object_mut().unwrap();
    linux.remove("maskedPaths");
    linux.remove("readonlyPaths");
    b.config.as_object_mut().unwrap().remove("hostname");
    let rt = Runtime::new();
    let id = unique_id();
    let out = rt.run(&b, &id).ok("run").out();
    let l = lines(&out);
    assert_eq!(l[0], "ran", "{out}");
    assert_ne!(l[1], "pid=1", "{out}");
    assert_eq!(l[2], "/dev/null", "{out}");
    assert_eq!(l[3], ns_link("self", "mnt"), "{out}");
    assert_eq!(host_root(), before, "the host's / mount changed");
    // `run` deleted the container.
    let rootfs = b.rootfs().to_string_lossy().into_owned();
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = host.lines().filter(|l| l.contains(&rootfs)).collect();
    if is_runc() && !left.is_empty() {
        // runc leaves them: detach them for the machine's sake.
        notice(&format!(
            "{}: runc left {} mount(s) under the rootfs",
            test_name(),
            left.len()
        ));
        for p in [format!("{rootfs}/proc"), rootfs.clone()] {
            let _ = std::process::Command::new("umount").args(["-l", &p]).status();
        }
        return;
    }
    assert!(left.is_empty(), "mounts left in the host's namespace: {left:?}");
}

#[test]
fn without_a_mount_namespace_masked_paths_are_refused() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::sh("echo ran");
    b.config["linux"]["namespaces"] = json!([]);
    b.config["mounts"] = json!([]);
    b.config.as_object_mut().unwrap().remove("hostname");
    let out = rt.run(&b, &id);
    assert!(
        !out.status.success() && !out.out().contains("ran"),
        "{}",
        out.describe()
    );
    rt.delete_force(&id);
    rt.assert_no_state(&id);
}

#[test]
fn exec_enters_the_root_of_a_container_without_a_mount_namespace() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::new(&["sleep", "30"]);
    b.config["linux"]["namespaces"] = json!([]);
    b.config["mounts"] = json!([{"destination": "/proc", "type": "proc", "source": "proc"}]);
    b.config["root"]["readonly"] = json!(false);
    let linux = b.config["linux"].as_object_mut().unwrap();
    linux.remove("maskedPaths");
    linux.remove("readonlyPaths");
    b.config.as_object_mut().unwrap().remove("hostname");
    fs::write(b.rootfs().join("marker"), "inside").unwrap();
    rt.create_and_start(&b, &id);
    let out = rt.cmd(&["exec", &id, "cat", "/marker"]);
    // runc 1.1's exec has no namespace to join ("nsexec: ns paths are empty").
    if !is_runc() {
        assert_eq!(out.ok("exec").out().trim(), "inside");
    }
    rt.delete_force(&id).ok("delete --force");
    let rootfs = b.rootfs().to_string_lossy().into_owned();
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = host.lines().filter(|l| l.contains(&rootfs)).collect();
    if is_runc() && !left.is_empty() {
        notice(&format!(
            "{}: runc left {} mount(s) under the rootfs",
            test_name(),
            left.len()
        ));
        for p in [format!("{rootfs}/proc"), rootfs.clone()] {
            let _ = std::process::Command::new("umount").args(["-l", &p]).status();
        }
        return;
    }
    assert!(left.is_empty(), "mounts left in the host's namespace: {left:?}");
}

/// A bind source inside a directory only the host's root may search (0700): the container's
/// mapped root could not reach it, so the runtime opens it before the user namespace exists (runc's
/// behaviour).
#[test]
fn user_namespace_bind_source_behind_a_root_only_directory() {
    if !require_root() {
        return;
    }
    let private = TempDir::new("root-only");
    let vol = private.join("vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("marker"), "x").unwrap();
    fs::set_permissions(private.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    fs::set_permissions(&vol, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut b = Bundle::default();
    b.set_namespace("user", None);
    b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    b.config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    // onto a directory the image has (the mapped root cannot make one in a root-owned rootfs)
    b.bind(&vol, "/mnt", &["ro"]);
    let out = run_script(&mut b, "ls /mnt");
    assert_eq!(lines(&out), ["marker"]);
}
