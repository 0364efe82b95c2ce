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

impl Netns {
    /// A new network namespace `<tag>-<pid>`, deleted with the value.
    fn new(tag: &str) -> Netns {
        let ns = Netns(format!("{tag}-{}", std::process::id()));
        sh(&format!("ip netns add {}", ns.0));
        ns
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

/// A VM container's bundle (writable root) in the network namespace at `path`.
fn pod_bundle(path: &str) -> Bundle {
    let mut b = Bundle::default();
    vm(&mut b).writable_root();
    b.set_namespace("network", Some(path));
    b
}

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

/// The VM's monitor of a pod's first VM container (its `state` pid is a stand-in's): from its
/// state directory.
fn monitor_pid(rt: &Runtime, id: &str) -> i32 {
    let s = std::fs::read_to_string(rt.root.join(id).join("monitor")).expect("the first's monitor file");
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// The process whose command line mentions `needle` and which runs a qemu (a VM's monitor: a
/// fork of `berth create`, whose command line it keeps).
fn monitor_mentioning(needle: &str) -> i32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .find(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                && !children_named(pid, "qemu-system").is_empty()
        })
        .unwrap_or_else(|| panic!("no VM monitor mentions {needle}"))
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
    let ns = Netns::new("bpod");
    let path = ns.path();
    let rt = Runtime::new();
    let mut a = pod_bundle(&path);
    std::fs::create_dir_all(a.rootfs().join("www")).unwrap();
    std::fs::write(a.rootfs().join("www/index.html"), "hello-from-first\n").unwrap();
    a.set_sh(
        "trap 'exit 0' TERM; busybox httpd -p 8080 -h /www; \
         cat /proc/sys/kernel/random/boot_id > /boot_id; sleep 1000 & wait",
    );
    let mut b = pod_bundle(&path);
    b.set_sh(
        "trap 'exit 7' TERM; echo out-of-second; \
         { cat /proc/sys/kernel/random/boot_id; \
           printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc 127.0.0.1 8080; } > /result.tmp 2>&1; \
         mv /result.tmp /result; sleep 1000 & wait",
    );
    let (ia, ib) = (unique_id(), unique_id());
    let pa = rt.create_and_start(&a, &ia);
    let boot_a = wait_file(&a.rootfs().join("boot_id"), Duration::from_secs(90));
    let ma = monitor_pid(&rt, &ia);
    let qemu = children_named(ma, "qemu-system");
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
    let mut c = pod_bundle(&path);
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
    assert!(
        process_gone(pa) && process_gone(ma) && process_gone(pb),
        "host processes left"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&rt.root.to_string_lossy().to_string()),
        "mounts left: {mounts}"
    );
    let reg: Vec<_> = std::fs::read_dir(rt.root.join("vm-pods"))
        .map(|d| d.flatten().map(|e| e.file_name()).filter(|n| n != ".lock").collect())
        .unwrap_or_default();
    assert!(reg.is_empty(), "registry entries left (besides its lock file): {reg:?}");
    let links = sh(&format!("ip -n {} -o link", ns.0));
    assert!(!links.contains("berth-tap"), "taps left: {links}");
}

/// For a podman test (None: skipped): an image whose `/www/index.html` holds `page`, imported
/// as `image`, and a pod `pod` publishing `ports` (`host:container`).
fn podman_pod(test: &str, prefix: &str, page: &str, image: &str, pod: &str, ports: &str) -> Option<Podman> {
    if skip_vm(test) {
        return None;
    }
    let p = Podman::if_installed(test, prefix)?;
    let b = Bundle::default();
    std::fs::create_dir_all(b.rootfs().join("www")).unwrap();
    std::fs::write(b.rootfs().join("www/index.html"), page).unwrap();
    p.import(&b, image);
    p.ok(&["pod", "create", "--name", pod, "-p", ports]);
    Some(p)
}

#[test]
fn podman_pod_of_two_vm_containers_is_one_vm() {
    let Some(p) = podman_pod(
        "podman_pod_of_two_vm_containers_is_one_vm",
        "bvp",
        "hello-from-the-pod\n",
        "localhost/berth-vmpod-test:latest",
        "vmpod",
        "18081:80",
    ) else {
        return;
    };
    p.ok(&[
        "run",
        "-d",
        "--pod",
        "vmpod",
        "--name",
        "web",
        "--annotation",
        "run.berth.isolation=vm",
        "localhost/berth-vmpod-test:latest",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let boot = p.ok(&["exec", "web", "cat", "/proc/sys/kernel/random/boot_id"]);
    let out = p.ok(&[
        "run",
        "--rm",
        "--pod",
        "vmpod",
        "--annotation",
        "run.berth.isolation=vm",
        "localhost/berth-vmpod-test:latest",
        "sh",
        "-c",
        "cat /proc/sys/kernel/random/boot_id; \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 10 127.0.0.1 80 | tail -1",
    ]);
    assert!(out.starts_with(boot.trim()), "the same VM (boot id {boot}): {out}");
    assert!(out.contains("hello-from-the-pod"), "localhost between them: {out}");
    // The second is gone, the first still serves; the host reaches it through the pod's port.
    let st = p.ok(&["inspect", "-f", "{{.State.Status}}", "web"]);
    assert_eq!(st.trim(), "running");
    assert_eq!(
        http_get("127.0.0.1:18081", Duration::from_secs(60)),
        "hello-from-the-pod\n"
    );
    p.ok(&["pod", "rm", "-f", "-t", "0", "vmpod"]);
}

/// The guest writes in the pod share (a later container's root is there): a hostile guest root
/// that swaps a running later container's directory there for a symlink to a host directory
/// cannot make `delete` unmount or remove anything through it (every step on the host goes
/// through O_NOFOLLOW descriptors).
#[test]
fn a_guest_symlink_in_the_pod_share_redirects_nothing_on_the_host() {
    if skip_vm("a_guest_symlink_in_the_pod_share_redirects_nothing_on_the_host") {
        return;
    }
    let ns = Netns::new("bpoh");
    let path = ns.path();
    let victim = TempDir::new("pod-victim");
    std::fs::create_dir(victim.join("rootfs")).unwrap();
    std::fs::write(victim.join("keep"), "host file\n").unwrap();
    let rt = Runtime::new();
    let ib = unique_id();
    // The first container: guest root (the agent's pid namespace, every capability it needs to
    // reach the agent's /run/pod through /proc/1/root).
    let mut a = pod_bundle(&path);
    a.remove_namespace("pid");
    let caps = serde_json::json!([
        "CAP_SYS_ADMIN",
        "CAP_SYS_PTRACE",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER"
    ]);
    a.config["process"]["capabilities"] = serde_json::json!({"bounding": caps, "effective": caps, "permitted": caps});
    a.set_sh(&format!(
        "trap 'exit 0' TERM; P=/proc/1/root/run/pod; \
         while [ ! -d $P/{ib}/rootfs ]; do sleep 0.2; done; echo seen > /seen; \
         while [ ! -e /go ]; do sleep 0.2; done; \
         mv $P/{ib} $P/moved && ln -s {v} $P/{ib} && ls -la $P > /swapped 2>&1; \
         sleep 1000 & wait",
        v = victim.path().display()
    ));
    let mut b = pod_bundle(&path);
    b.set_sh("sleep 1000");
    let ia = unique_id();
    rt.create_and_start(&a, &ia);
    rt.create_and_start(&b, &ib);
    wait_file(&a.rootfs().join("seen"), Duration::from_secs(90));
    std::fs::write(a.rootfs().join("go"), "").unwrap();
    let swapped = wait_file(&a.rootfs().join("swapped"), Duration::from_secs(30));
    assert!(
        swapped.contains(&format!("{ib} -> ")),
        "the guest planted its symlink: {swapped}"
    );
    rt.delete_force(&ib).ok("delete --force the second");
    assert!(
        victim.join("rootfs").is_dir(),
        "the host directory's rootfs was removed through the symlink"
    );
    assert_eq!(std::fs::read_to_string(victim.join("keep")).unwrap(), "host file\n");
    assert_eq!(rt.state(&ia)["status"], "running");
    rt.delete_force(&ia).ok("delete --force the first");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&rt.root.to_string_lossy().to_string()),
        "mounts left: {mounts}"
    );
    assert!(victim.join("rootfs").is_dir() && victim.join("keep").is_file());
}

/// Two VM containers of one network namespace created at the same moment: the registry's lock
/// makes the second wait for the first's VM and join it (one VM, one boot id).
#[test]
fn concurrent_creates_in_one_network_namespace_make_one_vm() {
    if skip_vm("concurrent_creates_in_one_network_namespace_make_one_vm") {
        return;
    }
    let ns = Netns::new("bpoc");
    let path = ns.path();
    let rt = Runtime::new();
    // The second create starts at the same moment, then while the first is between registering
    // and making its state directory (its network and guest config are being set up): a look at
    // the registry then must not take the first's entry for a stale one.
    for delay_ms in [0u64, 3, 6, 9, 12, 15, 20, 25, 30, 40] {
        let bundles: Vec<Bundle> = (0..2)
            .map(|_| {
                let mut b = pod_bundle(&path);
                b.set_sh("cat /proc/sys/kernel/random/boot_id > /boot_id; sleep 1000");
                b.save();
                b
            })
            .collect();
        let ids = [unique_id(), unique_id()];
        std::thread::scope(|s| {
            let hs: Vec<_> = bundles
                .iter()
                .zip(&ids)
                .enumerate()
                .map(|(n, (b, id))| {
                    let rt = &rt;
                    s.spawn(move || {
                        if n == 1 {
                            std::thread::sleep(Duration::from_millis(delay_ms));
                        }
                        rt.create(b, id)
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap().ok("create");
            }
        });
        for id in &ids {
            rt.start(id).ok("start");
        }
        let boots: Vec<String> = bundles
            .iter()
            .map(|b| wait_file(&b.rootfs().join("boot_id"), Duration::from_secs(90)))
            .collect();
        for id in ids.iter().rev() {
            rt.delete_force(id).ok("delete --force");
        }
        assert_eq!(
            boots[0], boots[1],
            "one VM for both (second create {delay_ms} ms after the first)"
        );
    }
}

/// The VM lives until its last container is deleted: the first VM container (a server) deleted
/// while a second runs leaves the second running in the same VM (its host process alive, `exec`
/// working, its exit status still reported) while the first's ID is gone from `state` and `list`;
/// the second's delete then ends the VM and leaves nothing.
#[test]
fn deleting_the_first_vm_container_keeps_the_vm_for_the_others() {
    if skip_vm("deleting_the_first_vm_container_keeps_the_vm_for_the_others") {
        return;
    }
    let ns = Netns::new("bpark");
    let path = ns.path();
    let rt = Runtime::new();
    let mut a = pod_bundle(&path);
    std::fs::create_dir_all(a.rootfs().join("www")).unwrap();
    std::fs::write(a.rootfs().join("www/index.html"), "hello-from-first\n").unwrap();
    a.set_sh("busybox httpd -p 8080 -h /www; cat /proc/sys/kernel/random/boot_id > /boot_id; sleep 1000 & wait");
    let mut b = pod_bundle(&path);
    b.set_sh(
        "{ cat /proc/sys/kernel/random/boot_id; \
           printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc 127.0.0.1 8080; } > /result.tmp 2>&1; \
         mv /result.tmp /result; while [ ! -e /stop ]; do sleep 0.2; done; echo second-done; exit 7",
    );
    let (ia, ib) = (unique_id(), unique_id());
    let pa = rt.create_and_start(&a, &ia);
    let boot_a = wait_file(&a.rootfs().join("boot_id"), Duration::from_secs(90));
    let ma = monitor_pid(&rt, &ia);
    let qemu = children_named(ma, "qemu-system");
    assert_eq!(qemu.len(), 1, "the first container's monitor runs qemu");
    // The second in the foreground (`run`): its exit status is `run`'s.
    b.save();
    let out_dir = TempDir::new("second-out");
    let out_b = out_dir.join("out");
    let mut run_b = rt
        .command(&["run", "--bundle", b.dir.to_str().unwrap(), &ib])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_b).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("run the second");
    let result = wait_file(&b.rootfs().join("result"), Duration::from_secs(90));
    assert!(result.starts_with(boot_a.trim()), "one VM: {boot_a} vs {result}");
    assert!(result.contains("hello-from-first"), "the first serves: {result}");
    let pb = rt.state(&ib)["pid"].as_i64().unwrap() as i32;
    let cg_a = format!("/sys/fs/cgroup/unified/{}", container_cgroup(&ia));
    let dir_a = rt.root.join(&ia);

    // The first is deleted (by force: it runs) while the second runs.
    rt.delete_force(&ia).ok("delete --force the first");
    assert!(!rt.cmd(&["state", &ia]).status.success(), "state of the deleted first");
    assert!(!dir_a.exists(), "the first's state directory left the store");
    let list = rt.list(&["-q"]).ok("list");
    assert!(
        !list.out().contains(&ia),
        "list shows the deleted first: {}",
        list.out()
    );
    assert!(list.out().contains(&ib), "list shows the second: {}", list.out());
    assert_eq!(rt.state(&ib)["status"], "running");
    assert!(!process_gone(pb), "the second's host process ended with the first");
    assert!(qemu.iter().all(|&q| !process_gone(q)), "the VM ended with the first");
    let out = rt.cmd(&["exec", &ib, "cat", "/proc/sys/kernel/random/boot_id"]);
    assert_eq!(out.ok("exec in the second").out(), boot_a, "the same VM");
    let out = rt.cmd(&["exec", &ib, "sh", "-c", "pidof httpd || echo none"]);
    assert_eq!(
        out.ok("exec in the second").out().trim(),
        "none",
        "the first's processes ended"
    );
    // The ID is free again: a Linux container of that name runs (its own cgroup path).
    let mut l = Bundle::sh("echo reused");
    l.config["linux"]["cgroupsPath"] = format!("/{ia}-linux").into();
    assert_eq!(
        rt.run(&l, &ia).ok("run a container with the first's ID").out().trim(),
        "reused"
    );

    // The second ends: its status reaches `run`, whose delete is the VM's last.
    std::fs::write(b.rootfs().join("stop"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        if let Some(st) = run_b.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the second did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st.code(), Some(7), "the second's exit status");
    assert!(std::fs::read_to_string(&out_b).unwrap().contains("second-done"));
    assert!(!rt.cmd(&["state", &ib]).status.success(), "run deleted the second");
    poll("the VM's end", || {
        qemu.iter().all(|&q| process_gone(q)) && process_gone(pa) && process_gone(ma)
    });
    assert_eq!(procs_mentioning(&rt.root.to_string_lossy()), 0, "virtiofsd left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&rt.root.to_string_lossy().to_string()),
        "mounts left: {mounts}"
    );
    let reg: Vec<_> = std::fs::read_dir(rt.root.join("vm-pods"))
        .map(|d| d.flatten().map(|e| e.file_name()).filter(|n| n != ".lock").collect())
        .unwrap_or_default();
    assert!(reg.is_empty(), "registry entries or a parked VM left: {reg:?}");
    for cg in [cg_a, format!("/sys/fs/cgroup/memory/{}", container_cgroup(&ia))] {
        assert!(!Path::new(&cg).exists(), "the first's host cgroup left: {cg}");
    }
    let links = sh(&format!("ip -n {} -o link", ns.0));
    assert!(!links.contains("berth-tap"), "taps left: {links}");
}

/// `kill KILL` of the first VM container while a second runs ends only the first (its status
/// `stopped`, the VM kept), so its plain `delete` parks the VM; when the second's host process
/// is then killed from outside, the VM ends by itself, and the second's `delete` still removes
/// everything the parked VM held.
#[test]
fn a_parked_vm_whose_last_helper_was_killed_is_cleaned_by_its_delete() {
    if skip_vm("a_parked_vm_whose_last_helper_was_killed_is_cleaned_by_its_delete") {
        return;
    }
    let ns = Netns::new("bpark2");
    let path = ns.path();
    let rt = Runtime::new();
    let mut a = pod_bundle(&path);
    a.set_sh("cat /proc/sys/kernel/random/boot_id > /boot_id; sleep 1000");
    let mut b = pod_bundle(&path);
    b.set_sh("cat /proc/sys/kernel/random/boot_id > /boot_id; sleep 1000");
    let (ia, ib) = (unique_id(), unique_id());
    let pa = rt.create_and_start(&a, &ia);
    let boot_a = wait_file(&a.rootfs().join("boot_id"), Duration::from_secs(90));
    let ma = monitor_pid(&rt, &ia);
    let qemu = children_named(ma, "qemu-system");
    assert_eq!(qemu.len(), 1);
    let pb = rt.create_and_start(&b, &ib);
    assert_eq!(wait_file(&b.rootfs().join("boot_id"), Duration::from_secs(90)), boot_a);
    rt.kill(&ia, "KILL").ok("kill KILL the first");
    rt.wait_for_status(&ia, "stopped");
    assert_eq!(rt.state(&ib)["status"], "running");
    assert!(
        qemu.iter().all(|&q| !process_gone(q)),
        "the VM ended with the first's kill"
    );
    rt.delete(&ia).ok("delete the stopped first");
    assert!(!rt.cmd(&["state", &ia]).status.success());
    let out = rt.cmd(&["exec", &ib, "cat", "/boot_id"]);
    assert_eq!(out.ok("exec in the second").out(), boot_a);
    // The second's host process killed from outside: the guest drops it, and with no container
    // left the VM ends.
    // SAFETY: SIGKILL to the second's helper, a process this test had made.
    unsafe { libc::kill(pb, libc::SIGKILL) };
    poll("the VM's end", || {
        qemu.iter().all(|&q| process_gone(q)) && process_gone(pa) && process_gone(ma)
    });
    rt.wait_for_status(&ib, "stopped");
    rt.delete(&ib).ok("delete the second");
    assert_eq!(procs_mentioning(&rt.root.to_string_lossy()), 0, "virtiofsd left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&rt.root.to_string_lossy().to_string()),
        "mounts left: {mounts}"
    );
    let reg: Vec<_> = std::fs::read_dir(rt.root.join("vm-pods"))
        .map(|d| d.flatten().map(|e| e.file_name()).filter(|n| n != ".lock").collect())
        .unwrap_or_default();
    assert!(reg.is_empty(), "registry entries or a parked VM left: {reg:?}");
    for cg in [&ia, &ib] {
        let p = format!("/sys/fs/cgroup/unified/{}", container_cgroup(cg));
        assert!(!Path::new(&p).exists(), "host cgroup left: {p}");
    }
}

/// A podman pod whose infra container is a plain Linux container: the first VM container
/// (`web`) boots the pod's VM, a second joins it; `podman rm -f web` removes the first while the
/// second keeps running in the same VM and then serves the pod's port itself; its removal ends
/// the VM.
#[test]
fn podman_rm_of_the_first_vm_container_keeps_the_pod_vm() {
    let Some(p) = podman_pod(
        "podman_rm_of_the_first_vm_container_keeps_the_pod_vm",
        "bvr",
        "hello-from-web\n",
        "localhost/berth-vmpod-rm:latest",
        "vmpodrm",
        "18082:80",
    ) else {
        return;
    };
    let vm_run = |name: &str, cmd: &[&str]| {
        let mut args = vec![
            "run",
            "-d",
            "--pod",
            "vmpodrm",
            "--name",
            name,
            "--annotation",
            "run.berth.isolation=vm",
            "localhost/berth-vmpod-rm:latest",
        ];
        args.extend_from_slice(cmd);
        p.ok(&args);
    };
    vm_run("web", &["busybox", "httpd", "-f", "-p", "80", "-h", "/www"]);
    let web = p.ok(&["inspect", "-f", "{{.Id}}", "web"]);
    let monitor = monitor_mentioning(web.trim());
    let qemu = children_named(monitor, "qemu-system");
    assert_eq!(qemu.len(), 1, "web's monitor runs the pod's qemu");
    let boot = p.ok(&["exec", "web", "cat", "/proc/sys/kernel/random/boot_id"]);
    vm_run(
        "second",
        &[
            "sh",
            "-c",
            "mkdir -p /w2; echo hello-from-second > /w2/index.html; \
             until busybox httpd -f -p 80 -h /w2; do sleep 0.5; done",
        ],
    );
    assert_eq!(
        p.ok(&["exec", "second", "cat", "/proc/sys/kernel/random/boot_id"]),
        boot
    );
    assert_eq!(http_get("127.0.0.1:18082", Duration::from_secs(60)), "hello-from-web\n");
    p.ok(&["rm", "-f", "-t", "0", "web"]);
    assert!(qemu.iter().all(|&q| !process_gone(q)), "the pod's VM ended with web");
    let st = p.ok(&["inspect", "-f", "{{.State.Status}}", "second"]);
    assert_eq!(st.trim(), "running");
    assert_eq!(
        p.ok(&["exec", "second", "cat", "/proc/sys/kernel/random/boot_id"]),
        boot
    );
    // The second's httpd gets the port once web's is gone; the host reaches it.
    assert_eq!(
        http_get("127.0.0.1:18082", Duration::from_secs(60)),
        "hello-from-second\n"
    );
    p.ok(&["rm", "-f", "-t", "0", "second"]);
    poll("the pod's VM's end", || {
        qemu.iter().all(|&q| process_gone(q)) && process_gone(monitor)
    });
    p.ok(&["pod", "rm", "-f", "-t", "0", "vmpodrm"]);
}

/// A later VM container of a pod may have a terminal, as the first may: its pty master goes to
/// the console socket; the engine's size, its input and output and its exit status cross the
/// pod's VM on its own stream.
#[test]
fn a_later_vm_container_of_a_pod_has_a_terminal() {
    if skip_vm("a_later_vm_container_of_a_pod_has_a_terminal") {
        return;
    }
    let ns = Netns::new("bptty");
    let path = ns.path();
    let rt = Runtime::new();
    let mut a = pod_bundle(&path);
    a.set_sh("cat /proc/sys/kernel/random/boot_id > /boot_id; sleep 1000");
    let mut b = Bundle::sh("read x; stty size; tty; cat /proc/sys/kernel/random/boot_id; echo got=$x; exit 5");
    vm(&mut b);
    b.set_namespace("network", Some(&path));
    b.config["process"]["terminal"] = serde_json::json!(true);
    let (ia, ib) = (unique_id(), unique_id());
    rt.create_and_start(&a, &ia);
    let boot_a = wait_file(&a.rootfs().join("boot_id"), Duration::from_secs(90));
    let ma = monitor_pid(&rt, &ia);
    let qemu = children_named(ma, "qemu-system");
    // Detached without a console socket: refused, naming the field.
    let out = rt.create(&b, &ib);
    assert_err_mentions(&out, "process.terminal", "a terminal without --console-socket");
    let console = ConsoleSocket::new();
    rt.create_with(&b, &ib, &["--console-socket", console.path_str()])
        .ok("create --console-socket");
    let master = console.recv_master();
    set_size(&master, 30, 100);
    rt.start(&ib).ok("start");
    write_pty(&master, "yes\n");
    let text = read_until(&master, "the process's answer", |t| t.contains("got="));
    assert!(
        text.contains(&format!("30 100\n/dev/pts/0\n{}got=yes", boot_a)),
        "size, its own pty, the pod's VM: {text:?}"
    );
    rt.wait_for_status(&ib, "stopped");
    // `run` in the foreground on a terminal (script(1) gives it one): Berth relays its own.
    let mut c = Bundle::sh("tty; cat /proc/sys/kernel/random/boot_id; exit 3");
    vm(&mut c);
    c.set_namespace("network", Some(&path));
    c.config["process"]["terminal"] = serde_json::json!(true);
    c.save();
    let ic = unique_id();
    let cmd = format!(
        "{} --root {} run --bundle {} {ic}",
        rt.bin.display(),
        rt.root.display(),
        c.dir.display()
    );
    let out = Command::new("timeout")
        .args(["120", "script", "-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(
        text.contains(&format!("/dev/pts/0\n{boot_a}")),
        "run on a terminal in the pod's VM: {text:?}"
    );
    assert_eq!(out.status.code(), Some(3), "run's status: {text:?}");
    assert_eq!(children_named(ma, "qemu-system"), qemu, "one VM");
    assert_eq!(rt.state(&ia)["status"], "running");
    rt.delete(&ib).ok("delete the second");
    rt.delete_force(&ia).ok("delete the first");
}

/// `pause`, `resume` and `events --stats` of a later VM container act on that container in the
/// guest (its host cgroup holds only its helper): paused, its processes stop while the first
/// container's go on; resumed, they go on again; its statistics are its guest cgroup's (the
/// memory it holds), not its helper's.
#[test]
fn pause_resume_and_stats_of_a_later_vm_container_are_its_own() {
    if skip_vm("pause_resume_and_stats_of_a_later_vm_container_are_its_own") {
        return;
    }
    let ns = Netns::new("bpps");
    let path = ns.path();
    let rt = Runtime::new();
    let counter = "i=0; while true; do i=$((i+1)); echo $i > /cnt.tmp; mv /cnt.tmp /cnt; sleep 0.1; done";
    let mut a = pod_bundle(&path);
    a.set_sh(counter);
    let mut b = pod_bundle(&path);
    // 48 MB in its /dev/shm (tmpfs: charged to its cgroup in the guest), then the counter.
    b.set_sh(&format!("head -c 48000000 /dev/zero > /dev/shm/hold; {counter}"));
    let (ia, ib) = (unique_id(), unique_id());
    rt.create_and_start(&a, &ia);
    wait_file(&a.rootfs().join("cnt"), Duration::from_secs(90));
    rt.create_and_start(&b, &ib);
    wait_file(&b.rootfs().join("cnt"), Duration::from_secs(90));
    let count = |bundle: &Bundle| -> u64 {
        std::fs::read_to_string(bundle.rootfs().join("cnt"))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let advances = |bundle: &Bundle| {
        let c0 = count(bundle);
        std::thread::sleep(Duration::from_millis(1500));
        count(bundle) > c0
    };
    // Its statistics: the guest cgroup's memory (the 48 MB it holds), not its helper's.
    let out = rt.cmd(&["events", "--stats", &ib]).ok("events --stats").out();
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("stats JSON");
    let usage = v["data"]["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
    assert!(usage >= 40_000_000, "the later container's memory in the guest: {out}");
    let helper_cg = std::fs::read_to_string(format!("/proc/{}/cgroup", rt.state(&ib)["pid"])).unwrap();
    assert!(
        helper_cg.contains(&ib),
        "its helper has its own host cgroup: {helper_cg}"
    );
    // Paused: its processes stop in the guest, the first's go on.
    rt.cmd(&["pause", &ib]).ok("pause");
    assert_eq!(rt.state(&ib)["status"], "paused");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!advances(&b), "a paused later container's processes stopped");
    assert!(
        advances(&a),
        "the first container runs on while the later one is paused"
    );
    assert_eq!(rt.state(&ia)["status"], "running");
    rt.cmd(&["resume", &ib]).ok("resume");
    assert_eq!(rt.state(&ib)["status"], "running");
    assert!(advances(&b), "resumed, its processes go on");
    rt.cmd(&["delete", "--force", &ib]).ok("delete --force later");
    rt.cmd(&["delete", "--force", &ia]).ok("delete --force first");
}
