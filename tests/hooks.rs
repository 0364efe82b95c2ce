//! OCI hooks: each kind runs, in order, with the state on stdin, with its
//! args/env, in the right namespace; failures and timeouts fail the operation.

mod common;

use common::*;
use std::fs;
use std::time::{Duration, Instant};

/// Hooks that append `<name> <state JSON>` lines to `rootfs/hooks.log`.
/// Host hooks live in a temp dir outside the rootfs; container-side hooks
/// (startContainer) live in the rootfs and write `/hooks.log`.
struct Hooks {
    scripts: TempDir,
}

impl Hooks {
    fn new() -> Hooks {
        Hooks {
            scripts: TempDir::new("hooks"),
        }
    }

    /// A host script logging `name` and its stdin to `b`'s hook log.
    fn host_hook(&self, b: &Bundle, name: &str) -> Value {
        let path = self.scripts.join(format!("{name}.sh"));
        let log = b.rootfs().join("hooks.log");
        write_script(
            &path,
            &format!("printf '%s %s\\n' {name} \"$(cat)\" >> {}", log.display()),
        );
        json!({ "path": path })
    }

    /// A host script running `body`.
    fn host_script(&self, name: &str, body: &str) -> Value {
        let path = self.scripts.join(format!("{name}.sh"));
        write_script(&path, body);
        json!({ "path": path })
    }
}

/// A script inside the rootfs (container path `/hooks/<name>.sh`) that logs
/// like `Hooks::host_hook`, using the container's busybox.
fn container_hook(b: &Bundle, name: &str, extra: &str) -> Value {
    write_script(
        &b.rootfs().join(format!("hooks/{name}.sh")),
        &format!("printf '%s %s\\n' {name} \"$(cat)\" >> /hooks.log\n{extra}"),
    );
    json!({ "path": format!("/hooks/{name}.sh") })
}

/// (hook name, parsed stdin state) for each line of the hook log.
fn hook_log(b: &Bundle) -> Vec<(String, Value)> {
    let text = fs::read_to_string(b.rootfs().join("hooks.log")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let (name, state) = l.split_once(' ').unwrap_or((l, ""));
            let state = serde_json::from_str(state)
                .unwrap_or_else(|e| panic!("hook {name} got invalid state JSON ({e}): {state:?}"));
            (name.to_string(), state)
        })
        .collect()
}

fn hook_names(b: &Bundle) -> Vec<String> {
    hook_log(b).into_iter().map(|(n, _)| n).collect()
}

/// A writable-root bundle running `args`, with every hook kind logging.
fn bundle_with_all_hooks(hooks: &Hooks, args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.writable_root();
    let mut all = serde_json::Map::new();
    for name in ["prestart", "createRuntime", "createContainer", "poststart", "poststop"] {
        all.insert(name.to_string(), json!([hooks.host_hook(&b, name)]));
    }
    all.insert(
        "startContainer".to_string(),
        json!([container_hook(&b, "startContainer", "")]),
    );
    b.config["hooks"] = Value::Object(all);
    b
}

const ALL_HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn all_hooks_run_with_state_on_stdin() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let b = bundle_with_all_hooks(&hooks, &["true"]);
    let id = unique_id();

    rt.create(&b, &id).ok("create");
    let after_create = hook_names(&b);
    for name in ["prestart", "createRuntime", "createContainer"] {
        assert!(
            after_create.iter().any(|n| n == name),
            "{name} did not run at create: {after_create:?}"
        );
    }
    for name in ["startContainer", "poststop"] {
        assert!(
            !after_create.iter().any(|n| n == name),
            "{name} ran at create: {after_create:?}"
        );
    }
    rt.start(&id).ok("start");
    rt.wait_for_status(&id, "stopped");
    rt.delete(&id).ok("delete");

    let log = hook_log(&b);
    let names = log.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        sorted(names),
        sorted(ALL_HOOKS.map(String::from).to_vec()),
        "each hook runs once"
    );
    assert_eq!(log.last().unwrap().0, "poststop");
    let bundle = fs::canonicalize(&b.dir).unwrap();
    for (name, state) in &log {
        assert_eq!(state["id"], id.as_str(), "{name}: {state}");
        assert!(state["ociVersion"].is_string(), "{name}: {state}");
        let sb = state["bundle"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no bundle: {state}"));
        assert_eq!(fs::canonicalize(sb).unwrap(), bundle, "{name}: {state}");
        let status = state["status"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no status: {state}"));
        assert!(
            ["creating", "created", "running", "stopped"].contains(&status),
            "{name}: status {status:?}"
        );
        if name != "poststop" {
            assert!(state["pid"].as_i64().unwrap_or(0) > 0, "{name}: pid: {state}");
        }
    }
}

#[test]
fn hooks_run_in_spec_order() {
    if !require_root() {
        return;
    }
    // RUNC GAP: runc 1.1.5 runs poststart hooks during `create` (before the
    // user process is started, and before startContainer). The OCI spec
    // (runtime.md, lifecycle steps 6-11) requires: prestart/createRuntime
    // and createContainer at create; startContainer then the user process
    // at start; poststart after it starts, before `start` returns;
    // poststop at delete.
    if runc_gap("runc 1.1 runs poststart hooks at create time") {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let b = bundle_with_all_hooks(&hooks, &["true"]);
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    assert_eq!(hook_names(&b), ALL_HOOKS[..3]);
    rt.start(&id).ok("start");
    assert_eq!(
        hook_names(&b),
        ALL_HOOKS[..5],
        "poststart must have run when start returns"
    );
    rt.wait_for_status(&id, "stopped");
    rt.delete(&id).ok("delete");
    assert_eq!(hook_names(&b), ALL_HOOKS);
}

#[test]
fn hooks_run_during_foreground_run() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let b = bundle_with_all_hooks(&hooks, &["true"]);
    rt.run(&b, &unique_id()).ok("run");
    let names = hook_names(&b);
    assert_eq!(
        sorted(names.clone()),
        sorted(ALL_HOOKS.map(String::from).to_vec()),
        "{names:?}"
    );
    assert_eq!(names.last().unwrap(), "poststop");
}

#[test]
fn hook_args_and_env_are_passed() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let out = b.dir.join("hook-args.txt");
    let mut hook = hooks.host_script(
        "args",
        &format!(
            "cat >/dev/null; printf '%s|' \"$#\" \"$1\" \"$2\" > {0}; echo >> {0}; /usr/bin/env >> {0}",
            out.display()
        ),
    );
    hook["args"] = json!(["my-hook-argv0", "first", "second arg"]);
    hook["env"] = json!(["HOOK_VAR=hook value"]);
    b.config["hooks"] = json!({ "createRuntime": [hook] });
    rt.run(&b, &unique_id()).ok("run");
    let got = fs::read_to_string(&out).expect("hook ran");
    // args[0] becomes argv[0], which a #! script does not see ($0 is the
    // script path), so only args[1..] are checked. The env is exactly the
    // configured one (/usr/bin/env sees what the hook's shell got, less
    // variables the shell itself adds: PWD and, for dash, nothing else).
    let (args, env) = got.split_once("|\n").unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(args, "2|first|second arg", "{got}");
    let env: Vec<String> = lines(env).into_iter().filter(|l| !l.starts_with("PWD=")).collect();
    assert_eq!(env, ["HOOK_VAR=hook value"], "{got}");
}

#[test]
fn failing_create_runtime_hook_fails_create() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "30"]);
    b.config["hooks"] = json!({ "createRuntime": [hooks.host_script("fail", "cat >/dev/null; exit 3")] });
    let id = unique_id();
    let out = rt.create(&b, &id).fails("create with a failing hook");
    assert!(!out.err().trim().is_empty(), "failure must be reported on stderr");
    rt.cmd(&["state", &id])
        .fails("state of a container whose create failed");
    rt.assert_no_state(&id);
}

#[test]
fn hook_exceeding_timeout_is_killed_and_fails() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "30"]);
    // The hook process itself is the sleeper (`exec`), recording its pid.
    let pid_file = b.dir.join("hook.pid");
    let mut hook = hooks.host_script("slow", &format!("echo $$ > {}; exec sleep 20", pid_file.display()));
    hook["timeout"] = json!(1);
    b.config["hooks"] = json!({ "createRuntime": [hook] });
    let id = unique_id();
    let t0 = Instant::now();
    rt.create(&b, &id).fails("create with a hook past its timeout");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "hook timeout not enforced: create took {took:?}"
    );
    rt.assert_no_state(&id);
    let pid: i32 = fs::read_to_string(&pid_file).expect("hook ran").trim().parse().unwrap();
    poll("the timed-out hook to be killed", || process_gone(pid));
}

#[test]
fn poststop_runs_on_delete() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.config["hooks"] = json!({ "poststop": [hooks.host_hook(&b, "poststop")] });
    let id = unique_id();
    rt.create_and_start(&b, &id);
    rt.wait_for_status(&id, "stopped");
    assert!(hook_names(&b).is_empty(), "poststop ran before delete");
    rt.delete(&id).ok("delete");
    assert_eq!(hook_names(&b), ["poststop"]);
}

#[test]
fn start_container_hook_runs_inside_container() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.writable_root();
    b.config["hostname"] = json!("hook-box");
    // The script exists only inside the rootfs; it records the UTS and
    // mount namespace it runs in.
    let hook = container_hook(
        &b,
        "startContainer",
        "hostname > /hook-ns; readlink /proc/self/ns/mnt >> /hook-ns",
    );
    b.config["hooks"] = json!({ "startContainer": [hook] });
    rt.run(&b, &unique_id()).ok("run");
    let got = fs::read_to_string(b.rootfs().join("hook-ns")).expect("startContainer hook ran");
    let l = lines(&got);
    assert_eq!(l[0], "hook-box");
    assert_ne!(l[1], ns_link("self", "mnt"), "hook ran in the host mount namespace");
}

#[test]
fn create_container_hook_path_resolves_on_host() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    // The script's path exists on the host only, not in the rootfs.
    let hook = hooks.host_hook(&b, "createContainer");
    assert!(!b
        .rootfs()
        .join(hook["path"].as_str().unwrap().trim_start_matches('/'))
        .exists());
    b.config["hooks"] = json!({ "createContainer": [hook] });
    rt.run(&b, &unique_id()).ok("run");
    assert_eq!(hook_names(&b), ["createContainer"]);
}

/// A hook that exits without reading its state (here larger than a pipe's buffer, so the write is
/// sure to meet a closed pipe) must not kill the runtime with SIGPIPE: create, start and delete
/// succeed and leave nothing behind.
#[test]
fn hook_that_does_not_read_its_state_does_not_kill_the_runtime() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.config["annotations"] = json!({ "big": "x".repeat(256 * 1024) });
    let quick = hooks.host_script("quick", "exit 0");
    b.config["hooks"] = json!({
        "createRuntime": [quick.clone()], "poststart": [quick.clone()], "poststop": [quick]
    });
    for _ in 0..3 {
        let id = unique_id();
        rt.create(&b, &id).ok("create");
        rt.start(&id).ok("start");
        rt.wait_for_status(&id, "stopped");
        rt.delete(&id).ok("delete");
        rt.assert_no_state(&id);
    }
}

/// The spec: a failing poststart or poststop hook is warned about and the remaining hooks of that
/// kind still run. runc 1.1 stops at the first failure (and fails `start` on a poststart one).
#[test]
fn failing_poststart_and_poststop_hooks_do_not_stop_the_next_ones() {
    if !require_root() || runc_gap("runc 1.1 stops at the first failing poststart/poststop hook") {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let fail = hooks.host_script("fail", "cat >/dev/null; echo hook-said-no >&2; exit 1");
    b.config["hooks"] = json!({
        "poststart": [fail.clone(), hooks.host_hook(&b, "poststart")],
        "poststop": [fail, hooks.host_hook(&b, "poststop")],
    });
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    rt.start(&id).ok("start (a poststart failure only warns)");
    rt.wait_for_status(&id, "stopped");
    let out = rt.delete(&id).ok("delete (a poststop failure only warns)");
    assert_eq!(hook_names(&b), ["poststart", "poststop"], "{}", out.describe());
    rt.assert_no_state(&id);
}

/// A startContainer hook without an `env` of its own runs with the process's environment (runc's
/// behaviour); one with its own `env` gets exactly that.
#[test]
fn start_container_hook_without_env_gets_the_process_env() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.writable_root();
    b.config["process"]["env"] = json!(["PATH=/bin:/sbin", "FROM_PROCESS=yes"]);
    write_script(&b.rootfs().join("hooks/noenv.sh"), "cat >/dev/null; env > /hook-noenv");
    write_script(
        &b.rootfs().join("hooks/ownenv.sh"),
        "cat >/dev/null; /bin/env > /hook-ownenv",
    );
    b.config["hooks"] = json!({ "startContainer": [
        { "path": "/hooks/noenv.sh" },
        { "path": "/hooks/ownenv.sh", "env": ["OWN=1"] },
    ]});
    rt.run(&b, &unique_id()).ok("run");
    let noenv = fs::read_to_string(b.rootfs().join("hook-noenv")).expect("first hook ran");
    assert!(lines(&noenv).iter().any(|l| l == "FROM_PROCESS=yes"), "{noenv}");
    let own = fs::read_to_string(b.rootfs().join("hook-ownenv")).expect("second hook ran");
    assert!(lines(&own).iter().any(|l| l == "OWN=1"), "{own}");
    assert!(!own.contains("FROM_PROCESS"), "{own}");
}

/// createContainer hooks run with the container's root as their working directory (runc chdirs
/// there before running them).
#[test]
fn create_container_hook_runs_in_the_container_root() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let out = b.dir.join("hook-cwd");
    let hook = hooks.host_script("cwd", &format!("cat >/dev/null; pwd -P > {}", out.display()));
    b.config["hooks"] = json!({ "createContainer": [hook] });
    rt.run(&b, &unique_id()).ok("run");
    let cwd = fs::read_to_string(&out).expect("hook ran");
    assert_eq!(
        cwd.trim(),
        fs::canonicalize(b.rootfs()).unwrap().to_str().unwrap(),
        "createContainer hook's working directory"
    );
}

/// startContainer hooks run in the container, so under its seccomp filter, also with
/// noNewPrivileges (where the filter is otherwise loaded just before the program's execve).
#[test]
fn start_container_hook_runs_under_the_seccomp_filter() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.writable_root();
    b.config["process"]["noNewPrivileges"] = json!(true);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }]
    });
    write_script(
        &b.rootfs().join("hooks/mk.sh"),
        "cat >/dev/null; mkdir /made-by-hook; echo $? > /hook-mkdir",
    );
    b.config["hooks"] = json!({ "startContainer": [{ "path": "/hooks/mk.sh" }] });
    rt.run(&b, &unique_id()).ok("run");
    let status = fs::read_to_string(b.rootfs().join("hook-mkdir")).expect("hook ran");
    assert_ne!(status.trim(), "0", "mkdir succeeded in the startContainer hook");
    assert!(
        !b.rootfs().join("made-by-hook").exists(),
        "the startContainer hook ran unconfined by the container's seccomp filter"
    );
}

/// A hook that never reads its (large) state is still bounded by its timeout: the runtime must not
/// block writing the state to it.
#[test]
fn hook_that_never_reads_a_large_state_is_bounded_by_its_timeout() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.config["annotations"] = json!({ "big": "x".repeat(512 * 1024) });
    let pid_file = b.dir.join("hook.pid");
    let mut hook = hooks.host_script("stuck", &format!("echo $$ > {}; exec sleep 25", pid_file.display()));
    hook["timeout"] = json!(1);
    b.config["hooks"] = json!({ "createRuntime": [hook] });
    let id = unique_id();
    let t0 = Instant::now();
    rt.create(&b, &id).fails("create with a hook past its timeout");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "hook timeout not enforced: create took {took:?}"
    );
    rt.assert_no_state(&id);
    if let Some(pid) = fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse().ok()) {
        poll("the timed-out hook to be killed", || process_gone(pid));
    }
}

/// A hook writing more than a pipe holds to stdout and stderr must not deadlock the runtime; a
/// failing one's output shows in the error (capped).
#[test]
fn hook_with_a_lot_of_output_does_not_deadlock() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let chatty = hooks.host_script(
        "chatty",
        "cat >/dev/null; head -c 1000000 /dev/zero | tr '\\0' o; head -c 1000000 /dev/zero | tr '\\0' e >&2",
    );
    b.config["hooks"] = json!({ "createRuntime": [chatty] });
    let id = unique_id();
    rt.create(&b, &id).ok("create with a chatty hook");
    rt.delete_force(&id).ok("delete");

    let failing = hooks.host_script(
        "chatty-fail",
        "cat >/dev/null; echo HOOK-SAYS-NO >&2; head -c 1000000 /dev/zero | tr '\\0' e >&2; exit 7",
    );
    b.config["hooks"] = json!({ "createRuntime": [failing] });
    let id = unique_id();
    let out = rt.create(&b, &id).fails("create with a failing chatty hook");
    assert!(out.err().contains("HOOK-SAYS-NO"), "hook output missing from the error");
    if !is_runc() {
        assert!(
            out.err().len() < 100_000,
            "hook output not capped: {} bytes",
            out.err().len()
        );
    }
    rt.assert_no_state(&id);
}

/// A container with a writable bind of its own bundle rewrites config.json between create and
/// start to add a poststart hook: `start` must run the hooks recorded at create, never the file's
/// new ones (they would run as host root).
#[test]
fn poststart_hooks_come_from_create_not_from_a_rewritten_bundle() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let planted = hooks.scripts.join("planted-ran");
    let evil = hooks.host_script("evil", &format!("touch {}", planted.display()));
    b.config["hooks"] = json!({ "poststart": [hooks.host_hook(&b, "poststart")] });
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    // What the container would write through its bind of the bundle directory.
    let mut rewritten = b.config.clone();
    rewritten["hooks"] = json!({ "poststart": [evil] });
    fs::write(b.config_path(), serde_json::to_string(&rewritten).unwrap()).unwrap();
    rt.start(&id).ok("start");
    rt.wait_for_status(&id, "stopped");
    assert!(
        !planted.exists(),
        "a poststart hook planted in the bundle after create ran on the host"
    );
    assert_eq!(hook_names(&b), ["poststart"]);
    rt.delete(&id).ok("delete");
}

/// A hook that writes more than a pipe holds, or does not read a state larger than a pipe holds,
/// does not block the runtime: it runs to its end, and its timeout still applies. A failing hook's
/// error shows the start of what it wrote.
#[test]
fn hook_with_large_output_or_unread_large_state_does_not_block() {
    if !require_root() {
        return;
    }
    let hooks = Hooks::new();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    // A state of about 300 KiB (an engine's large annotation).
    b.config["annotations"] = json!({ "big": "x".repeat(300 * 1024) });
    b.config["hooks"] = json!({ "createRuntime": [
        hooks.host_script("loud", "head -c 300000 /dev/zero | tr '\\0' o; head -c 300000 /dev/zero | tr '\\0' e >&2"),
        hooks.host_script("deaf", "sleep 0.2"),
    ] });
    let started = Instant::now();
    rt.run(&b, &unique_id())
        .ok("run with a loud hook and a hook that ignores its state");
    assert!(started.elapsed() < Duration::from_secs(20));
    b.config["hooks"] = json!({ "createRuntime": [
        { "path": "/bin/sh", "args": ["sh", "-c", "sleep 30"], "timeout": 1 },
    ] });
    let started = Instant::now();
    rt.run(&b, &unique_id())
        .fails("a hook past its timeout, its state unread");
    assert!(started.elapsed() < Duration::from_secs(15), "the timeout held");
    b.config["hooks"] = json!({ "createRuntime": [
        hooks.host_script("fail", "echo first words; head -c 300000 /dev/zero; exit 3"),
    ] });
    let out = rt.run(&b, &unique_id()).fails("a failing hook with a lot of output");
    assert!(out.err().contains("first words"), "{}", out.describe());
}
