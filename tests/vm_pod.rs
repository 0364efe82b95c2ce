//! Pods in one VM (docs/VM.md, "Pods in one VM"): a second VM container naming the network
//! namespace of a running one is made in that VM (same guest boot id, `localhost` between them),
//! keeps its own lifecycle (state, exec, kill, delete, exit status), and deleting the last leaves
//! nothing on the host. Each boot takes seconds under TCG: one story checking a lot.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_file(p: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A network namespace of the test's own, removed on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.0));
    }
}

/// The children of `parent` whose command name starts with `comm`.
fn children_named(parent: i32, comm: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let (name, rest) = match (stat.find('('), stat.rfind(')')) {
                (Some(a), Some(b)) => (&stat[a + 1..b], &stat[b + 1..]),
                _ => return false,
            };
            name.starts_with(comm) && rest.split_whitespace().nth(1) == Some(&parent.to_string())
        })
        .collect()
}

/// Host processes whose command line mentions `needle`.
fn procs_mentioning(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<i32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn two_vm_containers_of_one_network_namespace_share_one_vm() {
    if skip_vm("two_vm_containers_of_one_network_namespace_share_one_vm") {
        return;
    }
    let ns = Netns(format!("bpod-{}", std::process::id()));
    sh(&format!("ip netns add {}", ns.0));
    let path = format!("/run/netns/{}", ns.0);
    let rt = Runtime::new();
    let mut a = Bundle::default();
    vm(&mut a).writable_root();
    a.set_namespace("network", Some(&path));
    std::fs::create_dir_all(a.rootfs().join("www")).unwrap();
    std::fs::write(a.rootfs().join("www/index.html"), "hello-from-first\n").unwrap();
    a.set_sh(
        "trap 'exit 0' TERM; busybox httpd -p 8080 -h /www; \
         cat /proc/sys/kernel/random/boot_id > /boot_id; sleep 1000 & wait",
    );
    let mut b = Bundle::default();
    vm(&mut b).writable_root();
    b.set_namespace("network", Some(&path));
    b.set_sh(
        "trap 'exit 7' TERM; echo out-of-second; \
         { cat /proc/sys/kernel/random/boot_id; \
           printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc 127.0.0.1 8080; } > /result.tmp 2>&1; \
         mv /result.tmp /result; sleep 1000 & wait",
    );
    let (ia, ib) = (unique_id(), unique_id());
    let pa = rt.create_and_start(&a, &ia);
    let boot_a = wait_file(&a.rootfs().join("boot_id"), Duration::from_secs(90));
    let qemu = children_named(pa, "qemu-system");
    assert_eq!(qemu.len(), 1, "the first container's monitor runs qemu");
    // The second joins the first's VM: no second qemu.
    let pb = rt.create_and_start(&b, &ib);
    assert_ne!(pa, pb, "each container has its own host process");
    let result = wait_file(&b.rootfs().join("result"), Duration::from_secs(90));
    assert!(
        children_named(pb, "").is_empty(),
        "the second's host process runs nothing (no second VM)"
    );
    let cg_b = std::fs::read_to_string(format!("/proc/{pb}/cgroup")).unwrap();
    assert!(
        cg_b.contains(&ib),
        "the second's host process is in its own cgroup: {cg_b}"
    );
    assert!(
        result.starts_with(boot_a.trim()),
        "same guest kernel (boot id): {boot_a} vs {result}"
    );
    assert!(
        result.contains("hello-from-first"),
        "the second reaches the first on localhost: {result}"
    );
    assert_eq!(rt.state(&ia)["status"], "running");
    assert_eq!(rt.state(&ib)["status"], "running");
    // exec names the container: the second's rootfs has /result, the first's does not.
    let out = rt.cmd(&["exec", &ib, "cat", "/result"]);
    out.ok("exec in the second");
    let out = rt.cmd(&["exec", &ia, "sh", "-c", "test -e /result && echo has || echo none"]);
    assert_eq!(out.ok("exec in the first").out().trim(), "none");
    // Stopping and deleting the second leaves the first running.
    rt.kill(&ib, "TERM").ok("kill TERM the second");
    rt.wait_for_status(&ib, "stopped");
    assert_eq!(rt.state(&ia)["status"], "running");
    rt.delete(&ib).ok("delete the second");
    assert_eq!(rt.state(&ia)["status"], "running");
    let out = rt.cmd(&["exec", &ia, "cat", "/boot_id"]);
    assert_eq!(out.ok("exec in the first after").out(), boot_a);
    // A third joins the same VM again and is removed by force while running.
    let mut c = Bundle::default();
    vm(&mut c).writable_root();
    c.set_namespace("network", Some(&path));
    c.set_sh("cat /proc/sys/kernel/random/boot_id > /boot_id; sleep 1000");
    let ic = unique_id();
    rt.create_and_start(&c, &ic);
    assert_eq!(wait_file(&c.rootfs().join("boot_id"), Duration::from_secs(60)), boot_a);
    rt.delete_force(&ic).ok("delete --force the third");
    assert_eq!(rt.state(&ia)["status"], "running");
    // The last one: nothing left on the host.
    let dir_a = rt.root.join(&ia);
    rt.delete_force(&ia).ok("delete --force the first");
    assert_eq!(procs_mentioning(&dir_a.to_string_lossy()), 0, "virtiofsd left");
    assert!(qemu.iter().all(|&q| process_gone(q)), "qemu left");
    assert!(process_gone(pa) && process_gone(pb), "host processes left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&rt.root.to_string_lossy().to_string()),
        "mounts left: {mounts}"
    );
    let reg: Vec<_> = std::fs::read_dir(rt.root.join("vm-pods"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(reg.is_empty(), "registry entries left: {reg:?}");
    let links = sh(&format!("ip -n {} -o link", ns.0));
    assert!(!links.contains("berth-tap"), "taps left: {links}");
}
