//! Attacks on the runtime's own processes that a container can see: the init waiting in `created`,
//! an `exec` child between its clone and its execve, a co-tenant's init in a shared pid namespace.
//! The hostile program (tests/attack/runtime_procs.c) scans /proc for any process whose command
//! line names the runtime and tries to list and open its descriptors (a leaked private procfs would
//! hand it the host's sysctls: it only ever opens core_pattern for reading), ptrace it and take its
//! descriptors with pidfd_getfd. Every success is a `LEAK` line; the tests also check that the
//! attacker really saw a runtime process, so a pass is not a race that never ran.

mod common;
use common::*;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A bundle running the attacker in the background for at most `secs` seconds (until /tmp/stop
/// exists), then waiting for it. Its report is /tmp/report in the rootfs.
fn attacker_bundle(secs: u32) -> Bundle {
    let mut b = Bundle::sh(&format!(
        "/bin/runtime_procs /tmp/report {secs} /tmp/stop & echo started > /tmp/up; wait"
    ));
    b.writable_root();
    // The CRI sets oomScoreAdj for every container: init and exec children write it through the
    // runtime's private procfs, the handle the attack looks for.
    b.config["process"]["oomScoreAdj"] = json!(100);
    install_attack(&b, "runtime_procs");
    b
}

fn report(b: &Bundle) -> String {
    fs::read_to_string(b.rootfs().join("tmp/report")).unwrap_or_default()
}

fn seen(report: &str) -> usize {
    report.lines().filter(|l| l.starts_with("SEEN ")).count()
}

/// Stop the attacker and return its final report.
fn stop(b: &Bundle) -> String {
    fs::write(b.rootfs().join("tmp/stop"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = report(b);
        if r.contains("SCANNED") || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_no_leak(r: &str, what: &str) {
    let leaks: Vec<&str> = r.lines().filter(|l| l.starts_with("LEAK")).collect();
    assert!(
        leaks.is_empty(),
        "{what}: the container reached a runtime process:\n{}",
        leaks.join("\n")
    );
}

fn wait_for_file(p: &Path) {
    poll(&format!("{} to appear", p.display()), || p.exists());
}

/// `exec` into a created container: its init waits for `start`, having written oom_score_adj
/// through its private procfs. The exec'd attacker must not reach it.
#[test]
fn created_init_cannot_be_reached_from_an_exec() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::new(&["true"]);
    b.writable_root();
    b.config["process"]["oomScoreAdj"] = json!(100);
    install_attack(&b, "runtime_procs");
    let rt = Runtime::new();
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    let out = rt.cmd(&["exec", &id, "/bin/runtime_procs", "/tmp/report", "1"]);
    assert!(out.status.success(), "exec the attacker: {}", out.describe());
    let r = report(&b);
    assert!(seen(&r) >= 1, "the attacker never saw the created init:\n{r}");
    assert_no_leak(&r, "created init");
    rt.delete_force(&id).ok("delete");
}

/// A container process racing `berth exec`: each exec child lives a few milliseconds between its
/// clone into the container's pid namespace and its execve. Repeated until the attacker has seen
/// several of them.
#[test]
fn exec_children_cannot_be_reached_by_a_racing_container_process() {
    if !require_root() {
        return;
    }
    let b = attacker_bundle(60);
    let rt = Runtime::new();
    let id = unique_id();
    rt.create_and_start(&b, &id);
    wait_for_file(&b.rootfs().join("tmp/up"));
    let mut execs = 0;
    while execs < 400 && seen(&report(&b)) < 5 {
        let out = rt.cmd(&["exec", &id, "true"]);
        assert!(out.status.success(), "exec: {}", out.describe());
        execs += 1;
    }
    let r = stop(&b);
    assert!(seen(&r) >= 1, "the attacker saw no exec child in {execs} execs:\n{r}");
    assert_no_leak(&r, "exec child");
    rt.delete_force(&id).ok("delete");
}

/// A co-tenant sharing the pid namespace (a pod): container B joins A's pid namespace and waits in
/// `created`; A's attacker must not reach B's init.
#[test]
fn co_tenant_in_a_shared_pid_namespace_cannot_reach_a_created_init() {
    if !require_root() {
        return;
    }
    let a = attacker_bundle(30);
    let rt = Runtime::new();
    let id_a = unique_id();
    let pid_a = rt.create_and_start(&a, &id_a);
    wait_for_file(&a.rootfs().join("tmp/up"));
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["oomScoreAdj"] = json!(200);
    b.set_namespace("pid", Some(&format!("/proc/{pid_a}/ns/pid")));
    let id_b = unique_id();
    rt.create(&b, &id_b).ok("create the co-tenant");
    poll("the attacker to see the co-tenant's init", || seen(&report(&a)) >= 1);
    // Let it try for a while.
    std::thread::sleep(Duration::from_millis(500));
    let r = stop(&a);
    assert_no_leak(&r, "co-tenant init");
    rt.delete_force(&id_b).ok("delete B");
    rt.delete_force(&id_a).ok("delete A");
}

/// A descriptor of `path` at number `fd` in the child (inheritable), set up before exec.
fn inherit_at(c: &mut Command, path: &Path, fd: i32) -> OwnedFd {
    let f = fs::File::open(path).unwrap();
    let owned = OwnedFd::from(f);
    let raw = owned.as_raw_fd();
    // SAFETY: dup2 in the forked child before exec; async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            if libc::dup2(raw, fd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    owned
}

/// CVE-2024-21626 through `exec`: a working directory naming a descriptor the caller left open
/// (`--cwd /proc/self/fd/N`, or a configured cwd the tenant turned into a symlink to it) must never
/// put the process in the host directory.
#[test]
fn exec_cwd_cannot_reach_a_descriptor_the_caller_left_open() {
    if !require_root() {
        return;
    }
    let host = TempDir::new("hostdir");
    fs::write(host.join("host-secret-marker"), "x").unwrap();
    let mut b = Bundle::sh("ln -s /proc/self/fd/7 /tmp/w; sleep 30");
    b.writable_root();
    let rt = Runtime::new();
    let id = unique_id();
    rt.create_and_start(&b, &id);
    poll("the symlink", || fs::symlink_metadata(b.rootfs().join("tmp/w")).is_ok());
    for cwd in ["/proc/self/fd/7", "/tmp/w"] {
        let mut c = rt.command(&["exec", "--cwd", cwd, &id, "ls"]);
        let _held = inherit_at(&mut c, host.path(), 7);
        let out = rt.exec(c);
        assert!(
            !out.out().contains("host-secret-marker"),
            "--cwd {cwd}: the process listed the host directory: {}",
            out.describe()
        );
        assert!(!out.status.success(), "--cwd {cwd}: must fail: {}", out.describe());
    }
    rt.delete_force(&id).ok("delete");
}

/// `--preserve-fds 2` with descriptor 4 not open in the caller: the runtime's own descriptors (its
/// --log file first) must not fill the gap and so reach the container.
#[test]
fn preserved_descriptor_gap_is_not_filled_with_a_runtime_descriptor() {
    if !require_root() {
        return;
    }
    let host = TempDir::new("logdir");
    let log = host.join("runtime.log");
    let b = Bundle::sh("readlink /proc/self/fd/3; readlink /proc/self/fd/4; true");
    b.save();
    let rt = Runtime::new();
    let id = unique_id();
    let mut c = Command::new(&rt.bin);
    c.arg("--root")
        .arg(&rt.root)
        .arg("--log")
        .arg(&log)
        .args(["run", "--preserve-fds", "2", "--bundle"])
        .arg(&b.dir)
        .arg(&id);
    let _held = inherit_at(&mut c, Path::new("/etc/hostname"), 3);
    // SAFETY: close(4) in the forked child before exec.
    unsafe {
        c.pre_exec(|| {
            libc::close(4);
            Ok(())
        });
    }
    let out = rt.exec(c);
    assert!(out.status.success(), "run: {}", out.describe());
    let text = out.out();
    assert!(
        !text.contains("runtime.log"),
        "the runtime's log reached the container: {text}"
    );
    assert!(
        text.lines().nth(1).is_some_and(|l| l == "/dev/null"),
        "fd 4 should be /dev/null: {text}"
    );
}

/// `--preserve-fds` out of range is refused before anything is made.
#[test]
fn preserve_fds_out_of_range_is_refused() {
    if !require_root() {
        return;
    }
    let b = Bundle::new(&["true"]);
    b.save();
    let rt = Runtime::new();
    let id = unique_id();
    let out = rt.cmd(&[
        "run",
        "--preserve-fds",
        "2000000000",
        "--bundle",
        b.dir.to_str().unwrap(),
        &id,
    ]);
    assert_err_mentions(&out, "--preserve-fds", "huge --preserve-fds");
    rt.assert_no_state(&id);
}
