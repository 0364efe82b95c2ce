//! linux.seccomp: real filters loaded into real containers, checked from inside.

mod common;
use common::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Syscalls a Docker/podman-style default profile allows (our own list, in the same spirit: the
/// calls ordinary programs need, nothing that reconfigures the host).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "kill",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "membarrier",
    "memfd_create",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socket",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
    "arch_prctl",
    "modify_ldt",
    "clone",
    "clone3",
    "not_a_syscall_anywhere",
];

/// A default-deny profile of the size engines use, denying with `errno` (EOPNOTSUPP by default so a
/// refusal by the filter cannot be mistaken for a missing capability).
fn default_profile(errno: u32) -> Value {
    let mut allowed: Vec<&str> = ALLOWED.iter().copied().filter(|s| *s != "clone3").collect();
    allowed.sort();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            { "names": allowed, "action": "SCMP_ACT_ALLOW" },
            // As engines do: clone3 is refused with ENOSYS so libc falls back to clone.
            { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }
        ]
    })
}

fn with_seccomp(script: &str, seccomp: Value) -> Bundle {
    let mut b = Bundle::sh(script);
    b.config["linux"]["seccomp"] = seccomp;
    b
}

#[test]
fn engine_sized_default_profile_runs_ordinary_programs_and_refuses_the_rest() {
    if !require_root() {
        return;
    }
    assert!(ALLOWED.len() > 250, "profile should be engine-sized");
    let b = with_seccomp(
        "echo hi > /tmp/f && cat /tmp/f && ls / >/dev/null && echo listed; \
         mount -t tmpfs t /mnt 2>&1 | grep -q 'not supported' && echo mount-refused-by-filter; \
         grep Seccomp: /proc/self/status",
        default_profile(95),
    );
    let mut b = b;
    b.writable_root();
    let out = run_ok(&b);
    assert_eq!(
        lines(&out),
        ["hi", "listed", "mount-refused-by-filter", "Seccomp:\t2"],
        "{out}"
    );
}

#[test]
fn profile_loads_before_capabilities_are_dropped_without_no_new_privileges() {
    if !require_root() {
        return;
    }
    // Without noNewPrivileges the load needs CAP_SYS_ADMIN, which the process does not keep.
    let mut b = with_seccomp(
        "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status",
        default_profile(95),
    );
    b.config["process"]["noNewPrivileges"] = json!(false);
    let out = run_ok(&b);
    assert_eq!(
        lines(&out),
        ["CapEff:\t0000000020000420", "NoNewPrivs:\t0", "Seccomp:\t2"],
        "{out}"
    );
}

#[test]
fn errno_rule_with_errno_ret_and_unknown_names_skipped() {
    if !require_root() {
        return;
    }
    let mut b = with_seccomp(
        "mkdir /tmp/d 2>&1; test -d /tmp/d && echo made || echo not-made",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                { "names": ["mkdir", "mkdirat", "no_such_syscall_at_all"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28 }
            ]
        }),
    );
    b.writable_root();
    let out = run_ok(&b);
    assert!(
        out.contains("No space left on device") && out.contains("not-made"),
        "{out}"
    );
}

/// `kill -0 $$` (signal 0) and `kill -CONT $$` (signal 18) under an ERRNO rule on kill's second
/// argument with `op`: which of the two the filter refuses.
fn refused_signals(op: &str, value: u64, value_two: Option<u64>) -> String {
    let mut arg = json!({ "index": 1, "value": value, "op": op });
    if let Some(v2) = value_two {
        arg["valueTwo"] = json!(v2);
    }
    let b = with_seccomp(
        "kill -0 $$ 2>/dev/null || echo refused-0; kill -CONT $$ 2>/dev/null || echo refused-18",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [ { "names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [arg] } ]
        }),
    );
    lines(&run_ok(&b)).join(",")
}

#[test]
fn all_seven_argument_operators() {
    if !require_root() {
        return;
    }
    let cases: Vec<(&str, u64, Option<u64>, &str)> = vec![
        ("SCMP_CMP_NE", 0, None, "refused-18"),
        ("SCMP_CMP_LT", 1, None, "refused-0"),
        ("SCMP_CMP_LE", 0, None, "refused-0"),
        ("SCMP_CMP_EQ", 18, None, "refused-18"),
        ("SCMP_CMP_GE", 18, None, "refused-18"),
        ("SCMP_CMP_GT", 17, None, "refused-18"),
        // (arg & 0x10) == 0x10: 18 matches, 0 does not.
        ("SCMP_CMP_MASKED_EQ", 0x10, Some(0x10), "refused-18"),
    ];
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(op, v, v2, want)| {
            std::thread::Builder::new()
                .name(format!("all_seven_argument_operators_{op}"))
                .spawn(move || (op, refused_signals(op, v, v2), want))
                .unwrap()
        })
        .collect();
    for h in handles {
        let (op, got, want) = h.join().unwrap();
        assert_eq!(got, want, "{op}");
    }
}

#[test]
fn two_conditions_on_one_argument_are_alternatives() {
    if !require_root() {
        return;
    }
    // Like runc: conditions on the same argument become separate rules (either one matches).
    let b = with_seccomp(
        "kill -0 $$ 2>/dev/null || echo refused-0; kill -CONT $$ 2>/dev/null || echo refused-18; \
         kill -URG $$ 2>/dev/null || echo refused-23",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [ { "names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [
                { "index": 1, "value": 0, "op": "SCMP_CMP_EQ" },
                { "index": 1, "value": 18, "op": "SCMP_CMP_EQ" }
            ] } ]
        }),
    );
    assert_eq!(lines(&run_ok(&b)), ["refused-0", "refused-18"]);
}

/// Runs `mkdir` under a rule with `action`; returns (container exit code, output).
fn mkdir_under(action: &str) -> (i32, String) {
    let mut b = with_seccomp(
        "mkdir /tmp/d 2>/dev/null; echo rc=$?; test -d /tmp/d && echo made; exit 0",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [ { "names": ["mkdir", "mkdirat"], "action": action } ]
        }),
    );
    b.writable_root();
    let rt = Runtime::new();
    let out = rt.run(&b, &unique_id());
    (out.code(), out.out())
}

#[test]
fn every_action_does_what_it_says() {
    if !require_root() {
        return;
    }
    // SIGSYS (31) kills either the mkdir child (rc=159) or the shell running it as a builtin.
    let killed = |(code, out): (i32, String)| code == 159 || out.contains("rc=159");
    for a in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_TRAP",
    ] {
        let r = mkdir_under(a);
        assert!(killed(r.clone()), "{a}: {r:?}");
    }
    let (code, out) = mkdir_under("SCMP_ACT_ERRNO");
    assert_eq!((code, lines(&out)), (0, vec!["rc=1".to_string()]), "ERRNO");
    // No tracer: the kernel fails the call with ENOSYS.
    let (code, out) = mkdir_under("SCMP_ACT_TRACE");
    assert_eq!((code, lines(&out)), (0, vec!["rc=1".to_string()]), "TRACE");
    for a in ["SCMP_ACT_LOG", "SCMP_ACT_ALLOW"] {
        let (code, out) = mkdir_under(a);
        assert_eq!(
            (code, lines(&out)),
            (0, vec!["rc=0".to_string(), "made".to_string()]),
            "{a}"
        );
    }
}

#[test]
fn filter_flags_are_accepted() {
    if !require_root() {
        return;
    }
    let mut p = default_profile(1);
    p["flags"] = json!([
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
    ]);
    if runc_gap("runc 1.1 refuses every seccomp flag") {
        return;
    }
    let b = with_seccomp("grep Seccomp_filters: /proc/self/status", p);
    assert_eq!(lines(&run_ok(&b)), ["Seccomp_filters:\t1"]);
}

#[test]
fn unknown_action_operator_and_arch_are_errors_naming_them() {
    if !require_root() {
        return;
    }
    let cases = [
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_EXPLODE"}]}),
            "SCMP_ACT_EXPLODE",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                   "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ROUGHLY"}]}]}),
            "SCMP_CMP_ROUGHLY",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}),
            "SCMP_ARCH_Z80",
        ),
        (json!({"defaultAction": "SCMP_ACT_SOMETIMES"}), "SCMP_ACT_SOMETIMES"),
    ];
    for (seccomp, name) in cases {
        let b = with_seccomp("true", seccomp);
        let rt = Runtime::new();
        let id = unique_id();
        let out = rt.create(&b, &id);
        assert_err_mentions(&out, name, name);
        if !is_runc() {
            // runc 1.1 names the value but not where it is.
            assert_err_mentions(&out, "linux.seccomp", name);
        }
        rt.assert_no_state(&id);
    }
}

/// Receives the container process state and the notify descriptor from the runtime.
fn accept_state(listener: &std::os::unix::net::UnixListener) -> (Value, OwnedFd) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (conn, _) = listener.accept().expect("runtime connects to listenerPath");
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            fd = fds.first().copied();
        }
    }
    let n = msg.bytes;
    let state: Value = serde_json::from_slice(&buf[..n]).expect("state JSON");
    // SAFETY: the kernel installed this descriptor for us.
    (state, unsafe {
        OwnedFd::from_raw_fd(fd.expect("seccomp fd in SCM_RIGHTS"))
    })
}

#[test]
fn notify_listener_gets_the_state_and_answers_the_syscalls() {
    if !require_root() {
        return;
    }
    use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, ScmpSyscall};
    let dir = TempDir::new("listener");
    let sock = dir.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut b = with_seccomp(
        "mkdir /tmp/faked && echo mkdir-ok; test -d /tmp/faked || echo not-really-made; \
         rmdir /tmp 2>&1 | grep -q 'resource busy' && echo rmdir-busy; echo done",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock,
            "listenerMetadata": "answer=mkdir",
            "syscalls": [ { "names": ["mkdir", "mkdirat", "rmdir"], "action": "SCMP_ACT_NOTIFY" } ]
        }),
    );
    b.writable_root();
    let agent = std::thread::spawn(move || {
        let (state, fd) = accept_state(&listener);
        let mkdirs = [
            ScmpSyscall::from_name("mkdir").unwrap(),
            ScmpSyscall::from_name("mkdirat").unwrap(),
        ];
        let mut answered = 0;
        // Answer until the container exits (receive fails once no process can use the filter).
        while let Ok(req) = ScmpNotifReq::receive(fd.as_raw_fd()) {
            let resp = if mkdirs.contains(&req.data.syscall) {
                // Pretend success without making anything.
                ScmpNotifResp::new_val(req.id, 0, ScmpNotifRespFlags::empty())
            } else {
                ScmpNotifResp::new_error(req.id, -libc::EBUSY, ScmpNotifRespFlags::empty())
            };
            let _ = resp.respond(fd.as_raw_fd());
            answered += 1;
        }
        (state, answered)
    });
    let rt = Runtime::new();
    let id = unique_id();
    let out = rt.run(&b, &id).ok("run with a seccomp agent");
    assert_eq!(
        lines(&out.out()),
        ["mkdir-ok", "not-really-made", "rmdir-busy", "done"],
        "{}",
        out.describe()
    );
    let (state, answered) = agent.join().unwrap();
    assert!(answered >= 2, "agent answered {answered} calls");
    assert_eq!(state["fds"], json!(["seccompFd"]), "{state}");
    assert_eq!(state["metadata"], "answer=mkdir", "{state}");
    assert_eq!(state["state"]["id"], id.as_str(), "{state}");
    assert_eq!(state["state"]["status"], "creating", "{state}");
    assert!(
        state["pid"].as_i64().unwrap() > 0 && state["pid"] == state["state"]["pid"],
        "{state}"
    );
}

#[test]
fn features_report_seccomp_truthfully() {
    if runc_gap("runc 1.1's features has no supportedFlags") {
        return;
    }
    let out = std::process::Command::new(runtime()).arg("features").output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &doc["linux"]["seccomp"];
    assert_eq!(s["enabled"], true, "{s}");
    for a in [
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_NOTIFY",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_LOG",
    ] {
        assert!(s["actions"].as_array().unwrap().contains(&json!(a)), "{a}: {s}");
    }
    assert_eq!(s["operators"].as_array().unwrap().len(), 7, "{s}");
    assert!(
        s["archs"].as_array().unwrap().contains(&json!("SCMP_ARCH_X86_64")),
        "{s}"
    );
    assert!(
        s["supportedFlags"]
            .as_array()
            .unwrap()
            .contains(&json!("SECCOMP_FILTER_FLAG_TSYNC")),
        "{s}"
    );
}

/// The filter is loaded after everything Berth itself does: a profile that kills the process on
/// the calls Berth needs to set the container up (but the program does not) still runs it, both
/// with `run` and with `create` + `start` (where init waits on the exec fifo first).
#[test]
fn filter_is_loaded_after_berths_own_setup_calls() {
    if !require_root() {
        return;
    }
    if runc_gap("runc 1.1 loads the filter before its last setup calls") {
        return;
    }
    let berths_own = [
        "capset",
        "setgroups",
        "setresuid",
        "setresgid",
        "close_range",
        "pivot_root",
        "mount",
        "umount2",
        "sethostname",
        "umask",
        "sendto",
        "sendmsg",
        "setrlimit",
        "chdir",
    ];
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [ { "names": berths_own, "action": "SCMP_ACT_KILL_PROCESS" } ]
    });
    let mut b = with_seccomp("echo fine > /tmp/out; echo fine", profile);
    b.writable_root();
    assert_eq!(lines(&run_ok(&b)), ["fine"]);
    let rt = Runtime::new();
    let id = unique_id();
    rt.create_and_start(&b, &id);
    rt.wait_for_status(&id, "stopped");
    assert_eq!(std::fs::read_to_string(b.rootfs().join("tmp/out")).unwrap(), "fine\n");
}

/// In a user namespace, with and without noNewPrivileges (the early load then relies on
/// CAP_SYS_ADMIN in the container's own user namespace).
#[test]
fn profile_in_a_user_namespace() {
    if !require_root() {
        return;
    }
    for nnp in [true, false] {
        let mut b = with_seccomp(
            "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status",
            default_profile(95),
        );
        b.set_namespace("user", None);
        b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
        b.config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
        b.config["process"]["noNewPrivileges"] = json!(nnp);
        let out = run_ok(&b);
        assert_eq!(
            lines(&out),
            [format!("NoNewPrivs:\t{}", nnp as u8), "Seccomp:\t2".to_string()],
            "noNewPrivileges {nnp}"
        );
    }
}

/// A syscall numbered above every syscall the profile names (one newer than the profile, clone3,
/// or one no kernel has) fails with ENOSYS, not the default action's errno, so that the C library
/// falls back (clone3 → clone) — what runc does by patching the filter. A syscall the profile's
/// range covers keeps the default errno.
#[test]
fn syscalls_newer_than_the_profile_get_enosys() {
    if !require_root() {
        return;
    }
    // The engine-sized allow list without anything numbered from clone3 (435) on.
    let allowed: Vec<&str> = ALLOWED
        .iter()
        .copied()
        .filter(|n| libseccomp::ScmpSyscall::from_name(n).is_ok_and(|s| (0..435).contains(&i32::from(s))))
        .collect();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 95,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{ "names": allowed, "action": "SCMP_ACT_ALLOW" }]
    });
    let mut b = with_seccomp(
        "seccomp_enosys; mount -t tmpfs t /mnt 2>&1 | grep -q 'not supported' && echo mount-eopnotsupp",
        profile,
    );
    b.config["process"]["noNewPrivileges"] = json!(true);
    install_attack(&b, "seccomp_enosys");
    let out = run_ok(&b);
    assert_eq!(lines(&out), ["clone3=-1/38 nr1000=-1/38", "mount-eopnotsupp"], "{out}");
}

/// A notify rule on `write` (runc's own refusal) or on the calls Berth's init uses to hand the
/// listener over is refused at create, naming the field, and leaves nothing behind: loaded, it
/// would make init wait for an answer from a listener nobody holds yet.
#[test]
fn notify_on_a_syscall_the_runtime_needs_after_the_load_is_refused() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let dir = TempDir::new("listener");
    let listener = dir.join("agent.sock");
    let _sock = std::os::unix::net::UnixListener::bind(&listener).unwrap();
    for name in ["write", "sendmsg"] {
        if name != "write" && is_runc() {
            continue;
        }
        let mut b = Bundle::new(&["true"]);
        b.config["process"]["noNewPrivileges"] = json!(true);
        b.config["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": listener,
            "syscalls": [
                { "names": ["mkdir"], "action": "SCMP_ACT_NOTIFY" },
                { "names": ["getppid", name], "action": "SCMP_ACT_NOTIFY" }
            ]
        });
        let id = unique_id();
        let out = rt
            .create(&b, &id)
            .fails(&format!("create with a notify rule on {name}"));
        assert_err_mentions(&out, name, "the refused syscall");
        if !is_runc() {
            assert_err_mentions(&out, "linux.seccomp.syscalls[1]", "the field");
        }
        rt.assert_no_state(&id);
    }
}
