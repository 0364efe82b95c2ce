//! `exec`: a new process in a running container joins every namespace and the cgroup of its init,
//! gets the process settings of the container or of the flags / `--process` file, and the runtime
//! exits with its status; detached execs return at once; many execs at once all succeed.

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::Command;

const NAMESPACES: &[&str] = &["user", "mnt", "pid", "net", "ipc", "uts", "cgroup", "time"];

/// A running container whose init sleeps; returns its init pid.
fn sleeper(rt: &Runtime, b: &mut Bundle, id: &str) -> i32 {
    b.args(&["sleep", "1000"]);
    rt.create_and_start(b, id)
}

/// `exec [flags...] ID cmd...`.
fn exec(rt: &Runtime, id: &str, flags: &[&str], cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["exec"];
    args.extend_from_slice(flags);
    args.push(id);
    args.extend_from_slice(cmd);
    rt.cmd(&args)
}

/// A failed command; its one-line error names `needle` (runc's wording differs: only the failure is
/// checked against it).
fn fails_naming(out: &std::process::Output, needle: &str, what: &str) {
    if is_runc() {
        out.clone().fails(what);
    } else {
        assert_err_mentions(out, needle, what);
    }
}

/// Runs a detached exec with a pid file; returns the process's pid.
fn exec_detached(rt: &Runtime, id: &str, flags: &[&str], cmd: &[&str]) -> i32 {
    let dir = TempDir::new("pidfile");
    let pid_file = dir.join("exec.pid");
    let mut f = vec!["--detach", "--pid-file", pid_file.to_str().unwrap()];
    f.extend_from_slice(flags);
    exec(rt, id, &f, cmd).ok("exec --detach");
    std::fs::read_to_string(&pid_file)
        .expect("pid file written")
        .trim()
        .parse()
        .expect("pid in pid file")
}

#[test]
fn exec_joins_every_namespace_of_the_init() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::default();
    b.set_namespace("cgroup", None);
    // runc 1.1 does not know time namespaces.
    if !is_runc() {
        b.set_namespace("time", None);
    }
    let id = unique_id();
    let init = sleeper(&rt, &mut b, &id).to_string();
    let pid = exec_detached(&rt, &id, &[], &["sleep", "100"]).to_string();
    for ns in NAMESPACES {
        assert_eq!(
            ns_link(&pid, ns),
            ns_link(&init, ns),
            "{ns} namespace of the exec'd process"
        );
    }
    // Seen from inside, it is a process of the container's pid namespace.
    let ps = exec(
        &rt,
        &id,
        &[],
        &["sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"],
    )
    .ok("exec ps");
    let l = lines(&ps.out());
    assert_ne!(l[0], "1", "the exec'd shell is not the container's pid 1");
    assert_eq!(l[1], "sleep 1000", "pid 1 inside is the container's init");
}

#[test]
fn exec_joins_the_cgroup_of_the_init() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    let init = sleeper(&rt, &mut b, &id);
    let pid = exec_detached(&rt, &id, &[], &["sleep", "100"]);
    let cg = |p: i32| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(cg(pid), cg(init));
}

#[test]
fn exec_exits_with_the_process_status() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    sleeper(&rt, &mut b, &id);
    let out = exec(&rt, &id, &[], &["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.code(), 7, "{}", out.describe());
    assert_eq!(out.out(), "out\n");
    assert_eq!(out.err(), "err\n");
    let out = exec(&rt, &id, &[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(out.code(), 128 + 9, "{}", out.describe());
}

#[test]
fn exec_applies_the_containers_process_and_the_flags() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::default();
    b.config["process"]["env"] = json!(["PATH=/bin", "FROM_CONFIG=yes", "OVER=config"]);
    b.config["process"]["noNewPrivileges"] = json!(false);
    let id = unique_id();
    sleeper(&rt, &mut b, &id);
    // The container's own settings: env, rlimits, capabilities.
    let out = exec(
        &rt,
        &id,
        &[],
        &[
            "sh",
            "-c",
            "echo $FROM_CONFIG; ulimit -n; grep CapEff /proc/self/status",
        ],
    )
    .ok("exec");
    let l = lines(&out.out());
    assert_eq!(l[0], "yes");
    assert_eq!(l[1], "1024", "rlimits of the process apply");
    assert_eq!(l[2], "CapEff:\t0000000020000420", "KILL, NET_BIND_SERVICE, AUDIT_WRITE");
    // The flags: user, groups, cwd, env (later wins), an added capability, no_new_privs.
    let out = exec(
        &rt,
        &id,
        &[
            "--user",
            "1000:1000",
            "-g",
            "2000",
            "--cwd",
            "/tmp",
            "-e",
            "OVER=flag",
            "-e",
            "NEW=1",
            "--cap",
            "CAP_SYS_ADMIN",
            "--no-new-privs",
        ],
        &[
            "sh",
            "-c",
            "id; pwd; echo $OVER $NEW; grep -E 'CapBnd|NoNewPrivs' /proc/self/status",
        ],
    )
    .ok("exec with flags");
    let l = lines(&out.out());
    assert_eq!(l[0], "uid=1000(user) gid=1000(user) groups=2000(extra)");
    assert_eq!(l[1], "/tmp");
    assert_eq!(l[2], "flag 1");
    assert_eq!(
        l[3], "CapBnd:\t0000000020200420",
        "CAP_SYS_ADMIN added to the bounding set"
    );
    assert_eq!(l[4], "NoNewPrivs:\t1");
}

#[test]
fn exec_runs_a_process_json_file() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    sleeper(&rt, &mut b, &id);
    let dir = TempDir::new("process");
    let file = dir.join("process.json");
    std::fs::write(
        &file,
        json!({
            "args": ["sh", "-c", "id -u; pwd; echo $GREETING"],
            "env": ["PATH=/bin", "GREETING=hello"],
            "cwd": "/home/user",
            "user": { "uid": 1000, "gid": 1000 }
        })
        .to_string(),
    )
    .unwrap();
    let out = exec(&rt, &id, &["--process", file.to_str().unwrap()], &[]).ok("exec --process");
    assert_eq!(lines(&out.out()), ["1000", "/home/user", "hello"]);
    // A bad field is named.
    std::fs::write(&file, r#"{"args":["true"],"cwd":"/","user":{"uid":"root","gid":0}}"#).unwrap();
    let out = exec(&rt, &id, &["--process", file.to_str().unwrap()], &[]);
    assert_err_mentions(&out, "user.uid", "process.json with a string uid");
    std::fs::write(&file, r#"{"args":["true"],"cwd":"relative","user":{"uid":0,"gid":0}}"#).unwrap();
    let out = exec(&rt, &id, &["--process", file.to_str().unwrap()], &[]);
    assert_err_mentions(&out, "cwd", "process.json with a relative cwd");
}

#[test]
fn exec_detached_returns_at_once_and_writes_the_pid_file() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    sleeper(&rt, &mut b, &id);
    let start = std::time::Instant::now();
    let pid = exec_detached(&rt, &id, &[], &["sleep", "30"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert!(!process_gone(pid), "the detached process runs");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(stat, "sleep\x0030\x00");
}

#[test]
fn exec_passes_preserved_descriptors() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    sleeper(&rt, &mut b, &id);
    let dir = TempDir::new("fds");
    let data = dir.join("data");
    std::fs::write(&data, "through fd 3\n").unwrap();
    let file = std::fs::File::open(&data).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut c = Command::new(&rt.bin);
    c.arg("--root").arg(&rt.root).args([
        "exec",
        "--preserve-fds",
        "1",
        &id,
        "sh",
        "-c",
        "cat <&3; ls /proc/self/fd | wc -l",
    ]);
    // SAFETY: dup2 in the forked child before exec.
    unsafe {
        c.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear the flag instead.
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = rt.exec(c).ok("exec --preserve-fds 1");
    let l = lines(&out.out());
    assert_eq!(l[0], "through fd 3");
    // 0, 1, 2, 3 and the one ls opens for /proc/self/fd: nothing of Berth's leaks in.
    assert_eq!(l[1], "5");
}

#[test]
fn exec_into_a_sub_cgroup() {
    if !require_root() {
        return;
    }
    let pids = std::path::Path::new("/sys/fs/cgroup/pids");
    if !pids.join("cgroup.procs").exists() {
        notice(&format!("SKIP {}: no cgroup v1 pids hierarchy", test_name()));
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    sleeper(&rt, &mut b, &id);
    let sub = pids.join(&id).join("sub");
    std::fs::create_dir(&sub).unwrap();
    let pid = exec_detached(&rt, &id, &["--cgroup", "pids:sub"], &["sleep", "100"]);
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cg.lines().any(|l| l.ends_with(&format!(":pids:/{id}/sub"))), "{cg}");
    // The other hierarchies: the container's own cgroup.
    assert!(cg.lines().any(|l| l.ends_with(&format!(":freezer:/{id}"))), "{cg}");
    let out = exec(&rt, &id, &["--cgroup", "nope"], &["true"]);
    fails_naming(&out, "--cgroup", "a sub-cgroup that does not exist");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    poll("exec'd process gone", || process_gone(pid));
    poll("sub-cgroup removed", || std::fs::remove_dir(&sub).is_ok());
}

#[test]
fn exec_into_a_stopped_container_fails() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let b = Bundle::new(&["true"]);
    rt.create_and_start(&b, &id);
    rt.wait_for_status(&id, "stopped");
    let out = exec(&rt, &id, &[], &["true"]);
    assert_err_mentions(&out, "stopped", "exec into a stopped container");
    let out = exec(&rt, "no-such-container", &[], &["true"]);
    fails_naming(&out, "no-such-container", "exec into a missing container");
}

#[test]
fn exec_into_a_created_container_works() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let b = Bundle::new(&["sleep", "100"]);
    rt.create(&b, &id).ok("create");
    let out = exec(&rt, &id, &[], &["sh", "-c", "echo $$"]).ok("exec into a created container");
    assert_ne!(out.out().trim(), "1");
    assert_eq!(rt.state(&id)["status"], "created");
}

#[test]
fn exec_into_a_paused_container_needs_ignore_paused() {
    if !require_root() {
        return;
    }
    let freezer = std::path::Path::new("/sys/fs/cgroup/freezer");
    if !freezer.join("cgroup.procs").exists() {
        notice(&format!("SKIP {}: no cgroup v1 freezer hierarchy", test_name()));
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    sleeper(&rt, &mut b, &id);
    let state = freezer.join(&id).join("freezer.state");
    std::fs::write(&state, "FROZEN").unwrap();
    rt.wait_for_status(&id, "paused");
    let out = exec(&rt, &id, &[], &["true"]);
    assert_err_mentions(&out, "paused", "exec into a paused container");
    // With --ignore-paused the process is made; it runs once the container is thawed.
    let bin = rt.bin.clone();
    let root = rt.root.clone();
    let id2 = id.clone();
    let waiter = std::thread::spawn(move || {
        Command::new(bin)
            .arg("--root")
            .arg(root)
            .args(["exec", "--ignore-paused", &id2, "echo", "thawed"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(&state, "THAWED").unwrap();
    let out = waiter.join().unwrap().ok("exec --ignore-paused");
    assert_eq!(out.out(), "thawed\n");
}

#[test]
fn exec_bad_input_is_named_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    let init = sleeper(&rt, &mut b, &id);
    let cases: &[(&[&str], &[&str], &str)] = &[
        (&[], &[], "no command"),
        (&["--user", "root"], &["true"], "--user"),
        (&["--cwd", "tmp"], &["true"], "--cwd"),
        (&["-e", "NOEQUALS"], &["true"], "--env"),
        (&["--detach", "--tty"], &["sh"], "--console-socket"),
        (&["--console-socket", "/nonexistent.sock"], &["sh"], "--console-socket"),
        (&["--apparmor", "unconfined"], &["true"], "apparmor"),
        (&[], &["/no/such/program"], "/no/such/program"),
    ];
    for (flags, cmd, needle) in cases {
        let out = exec(&rt, &id, flags, cmd);
        fails_naming(&out, needle, &format!("exec {flags:?} {cmd:?}"));
        assert_eq!(out.err().trim().lines().count(), 1, "one line: {}", out.describe());
    }
    // Nothing is left running in the container but its init.
    let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/{id}/cgroup.procs")).unwrap_or_default();
    if !procs.is_empty() {
        assert_eq!(lines(&procs), [init.to_string()]);
    }
}

#[test]
fn fifty_concurrent_execs_all_succeed() {
    if !require_root() {
        return;
    }
    let rt = std::sync::Arc::new(Runtime::new());
    let id = unique_id();
    let mut b = Bundle::default();
    let init = sleeper(&rt, &mut b, &id);
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let rt = rt.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let out = exec(&rt, &id, &[], &["sh", "-c", &format!("echo {i}")]);
                (i, out)
            })
        })
        .collect();
    for t in threads {
        let (i, out) = t.join().unwrap();
        let out = out.ok(&format!("concurrent exec {i}"));
        assert_eq!(out.out().trim(), i.to_string());
    }
    // No exec'd process is left, and no zombie in the container.
    let ps = exec(&rt, &id, &[], &["ps", "-o", "pid,stat"]).ok("ps");
    let rows: Vec<String> = lines(&ps.out()).into_iter().skip(1).collect();
    assert!(
        rows.iter().all(|r| !r.contains('Z')),
        "zombies in the container: {rows:?}"
    );
    assert_eq!(rows.len(), 2, "only init and ps: {rows:?}");
    let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/{id}/cgroup.procs")).unwrap_or_default();
    if !procs.is_empty() {
        assert_eq!(lines(&procs), [init.to_string()]);
    }
}

#[test]
fn exec_into_a_no_pivot_container_enters_its_root() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "1000"]);
    std::fs::write(b.rootfs().join("etc/marker"), "inside\n").unwrap();
    let id = unique_id();
    rt.create_with(&b, &id, &["--no-pivot"]).ok("create --no-pivot");
    rt.start(&id).ok("start");
    let out = exec(
        &rt,
        &id,
        &[],
        &["sh", "-c", "cat /etc/marker; test -e /work && echo host-visible; true"],
    )
    .ok("exec");
    assert_eq!(out.out(), "inside\n");
}

#[test]
fn exec_gets_the_containers_seccomp_profile() {
    if !require_root() {
        return;
    }
    // The container's profile refuses mkdir with EPERM (1) and allows the rest; an exec'd process
    // must be held to it as the init is.
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    b.writable_root();
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }]
    });
    sleeper(&rt, &mut b, &id);
    let out = exec(&rt, &id, &[], &["sh", "-c", "mkdir /tmp/made 2>&1; echo status=$?"]);
    let text = out.out();
    assert!(
        text.contains("status=1"),
        "mkdir must be refused inside exec: {}",
        out.describe()
    );
    assert!(text.to_lowercase().contains("not permitted"), "EPERM expected: {text}");
    assert!(!b.rootfs().join("tmp/made").exists());
    // Without the profile the same exec works (the check above is the filter, not the rootfs).
    let id2 = unique_id();
    let mut b2 = Bundle::default();
    b2.writable_root();
    sleeper(&rt, &mut b2, &id2);
    exec(&rt, &id2, &[], &["mkdir", "/tmp/made"]).ok("mkdir without a profile");
}

#[test]
fn exec_cpu_affinity_final_applies_inside_the_cgroup() {
    if !require_root() {
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        notice("SKIP exec_cpu_affinity_final_applies_inside_the_cgroup: needs 2 CPUs");
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    sleeper(&rt, &mut b, &id);
    let dir = TempDir::new("process");
    let file = dir.join("process.json");
    let process = |affinity: serde_json::Value| {
        json!({
            "args": ["sh", "-c", "grep Cpus_allowed_list /proc/self/status | cut -f2"],
            "env": ["PATH=/bin"], "cwd": "/", "user": { "uid": 0, "gid": 0 },
            "execCPUAffinity": affinity
        })
        .to_string()
    };
    std::fs::write(&file, process(json!({ "initial": "0", "final": "1" }))).unwrap();
    let out = exec(&rt, &id, &["--process", file.to_str().unwrap()], &[]).ok("exec with execCPUAffinity");
    assert_eq!(out.out().trim(), "1");
    std::fs::write(&file, process(json!({ "initial": "0" }))).unwrap();
    let out = exec(&rt, &id, &["--process", file.to_str().unwrap()], &[]).ok("exec with an initial affinity only");
    assert_eq!(
        out.out().trim(),
        "0",
        "the initial affinity is inherited when there is no final"
    );
    std::fs::write(&file, process(json!({ "final": "0-x" }))).unwrap();
    let out = exec(&rt, &id, &["--process", file.to_str().unwrap()], &[]);
    assert_err_mentions(&out, "execCPUAffinity.final", "a bad CPU list");
}

/// `linux.personality` applies to an exec'd process as to the container's own (runc 1.2).
#[test]
fn exec_gets_the_containers_personality() {
    if !require_root() || runc_gap("runc 1.1 predates linux.personality") {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    b.config["linux"]["personality"] = json!({ "domain": "LINUX32" });
    sleeper(&rt, &mut b, &id);
    let out = exec(&rt, &id, &[], &["uname", "-m"]).ok("exec uname -m");
    assert_eq!(out.out().trim(), "i686", "exec'd process's personality");
}

/// `--debug exec` logs the exec'd process's initial CPU affinity as runc's nsexec does
/// (`nsexec[PID]: affinity: 0xMASK`), which runc's tests and engines look for.
#[test]
fn exec_debug_logs_the_initial_cpu_affinity() {
    if !require_root() || runc_gap("runc 1.1 predates execCPUAffinity") {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    sleeper(&rt, &mut b, &id);
    let dir = TempDir::new("process");
    let file = dir.join("process.json");
    let process = json!({
        "args": ["true"], "env": ["PATH=/bin"], "cwd": "/", "user": { "uid": 0, "gid": 0 },
        "execCPUAffinity": { "initial": "0" }
    });
    std::fs::write(&file, process.to_string()).unwrap();
    let out = rt
        .cmd(&["--debug", "exec", "--process", file.to_str().unwrap(), &id])
        .ok("--debug exec with execCPUAffinity.initial");
    let err = out.err();
    assert!(
        err.lines()
            .any(|l| l.contains("nsexec") && l.contains(": affinity: 0x1") && l.contains("debug")),
        "{err}"
    );
}

/// An exec that fails (not a process that exits non-zero) exits 255, as runc, with an error.
#[test]
fn failed_exec_exits_255() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    sleeper(&rt, &mut b, &id);
    let out = exec(&rt, &id, &[], &["/no/such/program"]);
    assert_eq!(out.code(), 255, "{}", out.describe());
    assert!(out.err().contains("exec failed"), "{}", out.describe());
    let out = exec(&rt, &id, &[], &["sh", "-c", "exit 3"]);
    assert_eq!(out.code(), 3, "the process's own status");
}

/// A `--process` file without `user` runs the process as root (runc).
#[test]
fn process_json_without_user_runs_as_root() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::default();
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    sleeper(&rt, &mut b, &id);
    let dir = TempDir::new("process");
    let file = dir.join("process.json");
    std::fs::write(
        &file,
        json!({ "args": ["id", "-u"], "cwd": "/", "env": ["PATH=/bin"] }).to_string(),
    )
    .unwrap();
    let out = exec(&rt, &id, &["--process", file.to_str().unwrap()], &[]).ok("exec --process without user");
    assert_eq!(out.out().trim(), "0");
}
