//! VM containers on the network (docs/VM.md, "Networking"), with real traffic on this machine's
//! own addresses: a network namespace made here with a veth pair (both ways, IPv4 and IPv6, the
//! MTU), a new namespace (a working `lo` only), host networking refused; podman's default bridge
//! (podman's IP in the guest, the bridge's host side reached, `-p` from the host, two VM containers
//! reaching each other). Each boot takes seconds under TCG: few stories, each checking a lot.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

fn sh_ok(cmd: &str) {
    let o = sh(cmd);
    assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A network namespace and a veth pair of the test's own (host side `host`, `eth0` inside),
/// removed on drop.
struct Veth {
    ns: String,
    host: String,
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "ip link del {} 2>/dev/null; ip netns del {}",
            self.host, self.ns
        ));
    }
}

/// A TCP server of the test's: answers every connection with `reply`, counts them; stops when
/// dropped (bounded: it polls a flag).
struct Server {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn new(addr: &str, reply: &'static str) -> Server {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, h) = (stop.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = c.write_all(reply.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Server {
            port,
            stop,
            hits,
            thread: Some(thread),
        }
    }
    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_file(p: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn vm_container_in_a_veth_namespace_talks_both_ways() {
    if skip_vm("vm_container_in_a_veth_namespace_talks_both_ways") {
        return;
    }
    let n = std::process::id() % 200 + 20;
    let v = Veth {
        ns: format!("bnt-{}", std::process::id()),
        host: format!("bnh{}", std::process::id()),
    };
    let (h4, g4) = (format!("10.217.{n}.1"), format!("10.217.{n}.2"));
    let (h6, g6) = (format!("fd00:bee:{n:x}::1"), format!("fd00:bee:{n:x}::2"));
    // A second interface made first: the guest's first virtio-net device (its eth0) is net1's,
    // so the guest must rename its devices around.
    sh_ok(&format!(
        "ip netns add {ns} && ip link add {h}b type veth peer name net1 netns {ns} && \
         ip -n {ns} addr add 10.218.{n}.2/24 dev net1 && ip -n {ns} link set net1 up && \
         ip link add {h} type veth peer name eth0 netns {ns} && \
         ip link set {h} mtu 1400 up && ip addr add {h4}/24 dev {h} && ip addr add {h6}/64 dev {h} nodad && \
         ip -n {ns} link set eth0 mtu 1400 up && ip -n {ns} addr add {g4}/24 dev eth0 && \
         ip -n {ns} addr add {g6}/64 dev eth0 nodad && ip -n {ns} route add default via {h4} && \
         ip -n {ns} route add fd00:cafe::/48 via {h6}",
        ns = v.ns,
        h = v.host
    ));
    let s4 = Server::new(&format!("{h4}:0"), "hello-v4-from-host\n");
    let s6 = Server::new(&format!("[{h6}]:0"), "hello-v6-from-host\n");
    let mut b = Bundle::default();
    vm(&mut b).writable_root();
    b.set_namespace("network", Some(&format!("/run/netns/{}", v.ns)));
    std::fs::create_dir_all(b.rootfs().join("www")).unwrap();
    std::fs::write(b.rootfs().join("www/index.html"), "hello-from-vm\n").unwrap();
    b.set_sh(&format!(
        "trap 'exit 0' TERM; busybox httpd -p 8080 -h /www; \
         {{ ip -o link show eth0; ip -o link show lo; ip -o addr show; ip route; ip -6 route; \
            echo v4=$(busybox nc -w 10 {h4} {p4} </dev/null); \
            echo v6=$(busybox nc -w 10 {h6} {p6} </dev/null); }} > /result.tmp 2>&1; mv /result.tmp /result; \
         sleep 100 & wait",
        p4 = s4.port,
        p6 = s6.port
    ));
    let rt = Runtime::new();
    let id = unique_id();
    rt.create_and_start(&b, &id);
    // The taps and their coupling, while the VM runs.
    let tc = sh(&format!("tc -n {} filter show dev eth0 ingress", v.ns));
    let tc = String::from_utf8_lossy(&tc.stdout).to_string();
    assert!(
        tc.contains("mirred") && tc.contains("Redirect to device berth-tap"),
        "eth0's ingress: {tc}"
    );
    let result = wait_file(&b.rootfs().join("result"), Duration::from_secs(90));
    assert!(result.contains("mtu 1400"), "the interface's MTU: {result}");
    assert!(
        result.contains(&format!("inet {g4}/24")),
        "podman-style IPv4 address: {result}"
    );
    assert!(result.contains(&format!("inet6 {g6}/64")), "IPv6 address: {result}");
    assert!(
        result.contains(&format!("default via {h4} dev eth0")),
        "default route: {result}"
    );
    assert!(
        result.contains(&format!("fd00:cafe::/48 via {h6} dev eth0")),
        "IPv6 route: {result}"
    );
    assert!(result.contains("lo: <LOOPBACK,UP"), "lo is up: {result}");
    assert!(
        result.contains("v4=hello-v4-from-host"),
        "the guest reaches the host (v4): {result}"
    );
    assert!(
        result.contains("v6=hello-v6-from-host"),
        "the guest reaches the host (v6): {result}"
    );
    assert_eq!((s4.hits(), s6.hits()), (1, 1));
    // The host reaches a server in the VM.
    let body = http_get(&format!("{g4}:8080"), Duration::from_secs(30));
    assert_eq!(body, "hello-from-vm\n");
    let body = http_get(&format!("[{g6}]:8080"), Duration::from_secs(30));
    assert_eq!(body, "hello-from-vm\n");
    rt.kill(&id, "TERM").ok("kill TERM");
    rt.wait_for_status(&id, "stopped");
    // The monitor has removed the coupling; the tap went with qemu.
    let qd = sh(&format!("tc -n {} qdisc show dev eth0; ip -n {} -o link", v.ns, v.ns));
    let qd = String::from_utf8_lossy(&qd.stdout).to_string();
    assert!(
        !qd.contains("ingress") && !qd.contains("berth-tap"),
        "left in the namespace: {qd}"
    );
    rt.delete(&id).ok("delete");
}

#[test]
fn vm_container_without_a_network_namespace_is_refused_and_a_new_one_has_lo() {
    if skip_vm("vm_container_without_a_network_namespace_is_refused_and_a_new_one_has_lo") {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::default();
    vm(&mut b).remove_namespace("network");
    let id = unique_id();
    let out = rt.create(&b, &id);
    assert_err_mentions(&out, "linux.namespaces", "host networking for a VM container");
    rt.assert_no_state(&id);
    // A new namespace (`--network none`): lo only, and working.
    let mut b = Bundle::default();
    vm(&mut b).set_namespace("network", None);
    b.set_sh(
        "ip -o link; busybox nc -l -p 7777 -e echo lo-works & sleep 0.5; busybox nc -w 5 127.0.0.1 7777 </dev/null",
    );
    let out = rt.run(&b, &unique_id()).ok("run").out();
    let links: Vec<&str> = out.lines().filter(|l| l.contains(": <")).collect();
    assert_eq!(links.len(), 1, "only lo: {out}");
    assert!(links[0].contains("lo: <LOOPBACK,UP"), "{out}");
    assert!(out.contains("lo-works"), "{out}");
}

#[test]
fn podman_bridge_network_reaches_vm_containers() {
    if skip_vm("podman_bridge_network_reaches_vm_containers") {
        return;
    }
    let Some(p) = Podman::if_installed("podman_bridge_network_reaches_vm_containers", "bvn") else {
        return;
    };
    let b = Bundle::default();
    std::fs::create_dir_all(b.rootfs().join("www")).unwrap();
    std::fs::write(b.rootfs().join("www/index.html"), "hello-from-vm-web\n").unwrap();
    p.import(&b, "localhost/berth-vmnet-test:latest");
    // A web server in a VM container, published on the host's port 18080.
    p.ok(&[
        "run",
        "-d",
        "--name",
        "vmweb",
        "--annotation",
        "run.berth.isolation=vm",
        "-p",
        "18080:80",
        "localhost/berth-vmnet-test:latest",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let web_ip = p.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "vmweb"]);
    let web_ip = web_ip.trim();
    let gw = p.ok(&["inspect", "-f", "{{.NetworkSettings.Gateway}}", "vmweb"]);
    let gw = gw.trim().to_string();
    assert!(
        !web_ip.is_empty() && !gw.is_empty(),
        "podman gave the container no address"
    );
    // The host reaches it through podman's port forwarding.
    let body = http_get("127.0.0.1:18080", Duration::from_secs(90));
    assert_eq!(body, "hello-from-vm-web\n");
    // A second VM container on the same network: podman's address, the first one and the bridge's
    // host side reached.
    let host = Server::new(&format!("{gw}:0"), "hello-from-the-bridge\n");
    let out = p.ok(&[
        "run",
        "--rm",
        "--annotation",
        "run.berth.isolation=vm",
        "localhost/berth-vmnet-test:latest",
        "sh",
        "-c",
        &format!(
            "ip -o -4 addr show eth0; echo host=$(busybox nc -w 10 {gw} {} </dev/null); \
             printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 10 {web_ip} 80 | tail -1",
            host.port
        ),
    ]);
    assert!(
        out.contains("host=hello-from-the-bridge"),
        "the bridge's host side: {out}"
    );
    assert!(out.contains("hello-from-vm-web"), "the other VM container: {out}");
    // The address podman gave the first one is the guest's (exec in the VM).
    let addr = p.ok(&["exec", "vmweb", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(
        addr.contains(&format!("inet {web_ip}/")),
        "podman's address {web_ip} in the guest: {addr}"
    );
    assert_eq!(host.hits(), 1);
}

/// An unprivileged caller cannot make a network namespace: a VM container asking for a new one
/// still runs, its guest with a working `lo` only (nothing else of the host's reaches it).
#[test]
fn rootless_vm_container_with_a_new_network_namespace_has_lo() {
    if skip_vm("rootless_vm_container_with_a_new_network_namespace_has_lo") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const USER: &str = "berth-rootless";
    let ids = || {
        let out = Command::new("getent").args(["passwd", USER]).output().unwrap();
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let f: Vec<&str> = line.trim().split(':').collect();
        (f.len() > 3).then(|| (f[2].parse::<u32>().unwrap(), f[3].parse::<u32>().unwrap()))
    };
    if ids().is_none() {
        let out = Command::new("useradd")
            .args(["--no-create-home", "--user-group", USER])
            .output()
            .unwrap();
        assert!(
            out.status.success() || ids().is_some(),
            "useradd {USER}: {}",
            out.describe()
        );
    }
    let (uid, gid) = ids().expect("the test user");
    let b = Bundle::default();
    let _ = std::fs::remove_file(b.config_path());
    let home = TempDir::new("rootless-vm");
    for d in ["xdg", "cache"] {
        std::fs::create_dir(home.join(d)).unwrap();
        std::fs::set_permissions(home.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for d in ["proc", "dev", "sys", "tmp"] {
        let _ = std::fs::create_dir(b.dir.join("rootfs").join(d));
    }
    for p in [b.dir.as_path(), home.path()] {
        let out = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(p)
            .output()
            .unwrap();
        assert!(out.status.success(), "chown: {}", out.describe());
    }
    let berth = |args: &[&str]| {
        Command::new(runtime())
            .args(args)
            .current_dir(&b.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("XDG_RUNTIME_DIR", home.join("xdg"))
            .env("BERTH_CACHE_DIR", home.join("cache"))
            // The kernel the VM tests are run with (once per kernel).
            .envs(std::env::var_os("BERTH_VM_KERNEL").map(|k| ("BERTH_VM_KERNEL", k)))
            .uid(uid)
            .gid(gid)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = berth(&["spec", "--rootless"]);
    assert!(out.status.success(), "spec --rootless: {}", out.describe());
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(b.config_path()).unwrap()).unwrap();
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(["sh", "-c", "ip -o link"]);
    c["annotations"] = serde_json::json!({"run.berth.isolation": "vm"});
    // Bind mounts need root in a VM container (docs/VM.md); the rest of spec --rootless stays.
    c["mounts"].as_array_mut().unwrap().retain(|m| {
        !m["options"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
    });
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "network"}));
    std::fs::write(b.config_path(), serde_json::to_vec(&c).unwrap()).unwrap();
    let id = unique_id();
    let out = berth(&["run", &id]);
    let _ = berth(&["delete", "--force", &id]);
    assert!(out.status.success(), "rootless VM run: {}", out.describe());
    let text = String::from_utf8_lossy(&out.stdout);
    let links: Vec<&str> = text.lines().filter(|l| l.contains(": <")).collect();
    assert_eq!(links.len(), 1, "only lo: {text}");
    assert!(links[0].contains("lo: <LOOPBACK,UP"), "{text}");
}
