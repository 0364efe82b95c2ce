//! Commands that need no container: --version, spec, features, logging.

mod common;

use common::*;
use std::fs;

/// Runs `spec` (with `extra` flags) in a fresh dir; returns the parsed config.
fn spec_with(extra: &[&str]) -> Value {
    let rt = Runtime::new();
    let dir = TempDir::new("spec");
    let mut args = vec!["spec", "--bundle", dir.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    rt.cmd(&args).ok("spec");
    let text = fs::read_to_string(dir.join("config.json")).expect("spec writes config.json in the bundle");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("spec wrote invalid JSON ({e}):\n{text}"))
}

fn namespace_types(config: &Value) -> Vec<String> {
    config["linux"]["namespaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no linux.namespaces array: {config}"))
        .iter()
        .map(|n| n["type"].as_str().expect("namespace type").to_string())
        .collect()
}

#[test]
fn version_prints_a_version() {
    let out = Runtime::new().cmd(&["--version"]).ok("--version");
    let text = out.out();
    let has_version = text.split(|c: char| !(c.is_ascii_digit() || c == '.')).any(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() >= 2 && parts.iter().all(|p| !p.is_empty())
    });
    assert!(has_version, "no x.y version in --version output: {text:?}");
}

#[test]
fn spec_writes_default_config() {
    let c = spec_with(&[]);
    assert!(c["ociVersion"].as_str().is_some_and(|v| !v.is_empty()), "{c}");
    assert!(c["process"]["args"].is_array(), "{c}");
    assert!(c["process"]["cwd"].is_string(), "{c}");
    assert_eq!(c["root"]["path"], "rootfs", "{c}");
    let ns = namespace_types(&c);
    for t in ["pid", "network", "ipc", "uts", "mount"] {
        assert!(ns.iter().any(|n| n == t), "{t} missing from {ns:?}");
    }
    assert!(!ns.iter().any(|n| n == "user"), "default spec is not rootless: {ns:?}");
}

#[test]
fn spec_refuses_to_overwrite_config() {
    let rt = Runtime::new();
    let dir = TempDir::new("spec");
    fs::write(dir.join("config.json"), "keep me").unwrap();
    let out = rt.cmd(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    assert_err_mentions(&out, "config.json", "spec over an existing config.json");
    assert_eq!(fs::read_to_string(dir.join("config.json")).unwrap(), "keep me");
}

#[test]
fn spec_rootless_has_user_namespace_and_mappings() {
    let c = spec_with(&["--rootless"]);
    let ns = namespace_types(&c);
    assert!(ns.iter().any(|n| n == "user"), "no user namespace: {ns:?}");
    let euid = unsafe { libc::geteuid() } as i64;
    for key in ["uidMappings", "gidMappings"] {
        let maps = c["linux"][key].as_array().unwrap_or_else(|| panic!("no {key}: {c}"));
        assert!(!maps.is_empty(), "{key} empty");
        assert_eq!(maps[0]["containerID"], 0, "{key}: {c}");
        assert!(maps[0]["size"].as_i64().unwrap_or(0) >= 1, "{key}: {c}");
    }
    assert_eq!(c["linux"]["uidMappings"][0]["hostID"].as_i64(), Some(euid), "{c}");
}

#[test]
fn features_prints_json() {
    let out = Runtime::new().cmd(&["features"]).ok("features");
    let f: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("features is not JSON ({e}): {}", out.describe()));
    for key in ["ociVersionMin", "ociVersionMax"] {
        assert!(f[key].as_str().is_some_and(|v| v.starts_with("1.")), "{key}: {f}");
    }
    let hooks: Vec<&str> = f["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for h in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.contains(&h), "hook {h} missing: {hooks:?}");
    }
    let opts: Vec<&str> = f["mountOptions"]
        .as_array()
        .expect("mountOptions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for o in ["ro", "rw", "bind", "rbind", "nosuid", "nodev", "noexec"] {
        assert!(opts.contains(&o), "mount option {o} missing: {opts:?}");
    }
    let ns: Vec<&str> = f["linux"]["namespaces"]
        .as_array()
        .expect("linux.namespaces")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for n in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
        assert!(ns.contains(&n), "namespace {n} missing: {ns:?}");
    }
}

#[test]
fn json_log_of_a_failing_command() {
    let rt = Runtime::new();
    let dir = TempDir::new("log");
    let log = dir.join("runtime.log");
    let id = unique_id();
    let out = rt.cmd(&["--log", log.to_str().unwrap(), "--log-format", "json", "state", &id]);
    out.fails("state of a nonexistent container");
    let text = fs::read_to_string(&log).expect("log file written");
    let entries: Vec<Value> = lines(&text)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}")))
        .collect();
    assert!(!entries.is_empty(), "log file is empty");
    for e in &entries {
        assert!(
            e["level"].is_string() && e["msg"].is_string(),
            "log entry lacks level/msg: {e}"
        );
    }
    assert!(entries.iter().any(|e| e["level"] == "error"), "no error entry: {text}");
}

#[test]
fn systemd_cgroup_without_systemd_is_a_clear_error() {
    if !require_root() {
        return;
    }
    if std::path::Path::new("/run/systemd/system").exists() {
        notice("SKIP systemd_cgroup_without_systemd_is_a_clear_error: systemd is running here");
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let b = Bundle::new(&["true"]);
    b.save();
    let mut c = rt.command(&["--systemd-cgroup", "create", "--bundle"]);
    c.arg(&b.dir).arg(&id);
    let out = rt.exec(c).fails("create --systemd-cgroup");
    assert_err_mentions(&out, "systemd", "the flag at fault");
    rt.assert_no_state(&id);
}

/// `-v` and `--version` print runc's layout: `NAME version X`, then `commit:`, `spec:` and
/// `libseccomp:` lines (scripts read them line by line).
#[test]
fn version_has_runcs_layout() {
    let rt = Runtime::new();
    for flag in ["-v", "--version"] {
        let out = rt.cmd(&[flag]).ok(flag);
        let text = out.out();
        let l = lines(&text);
        assert!(l[0].contains(" version "), "{flag}: {text}");
        for key in ["commit: ", "spec: 1.", "libseccomp: "] {
            assert!(l.iter().any(|x| x.starts_with(key)), "{flag}: no {key:?} line: {text}");
        }
    }
}

/// A failing command's stderr carries the word "error" (tools grep for it, as runc writes
/// `level=error`), with the message.
#[test]
fn errors_on_stderr_carry_the_word_error() {
    let rt = Runtime::new();
    let out = rt
        .cmd(&["state", "no-such-container"])
        .fails("state of a missing container");
    assert_eq!(out.code(), 1);
    assert!(out.err().contains("error"), "{}", out.describe());
    assert!(out.err().contains("does not exist"), "{}", out.describe());
}

/// `delete --force` of a container that does not exist succeeds (runc); without --force it fails.
#[test]
fn delete_force_of_a_missing_container_succeeds() {
    let rt = Runtime::new();
    rt.cmd(&["delete", "--force", "no-such-container"])
        .ok("delete --force of a missing container");
    rt.cmd(&["delete", "no-such-container"])
        .fails("delete of a missing container");
}

/// `update --cpu-share` (runc's spelling) is accepted: it reaches the container lookup.
#[test]
fn update_accepts_cpu_share() {
    let rt = Runtime::new();
    let out = rt.cmd(&["update", "--cpu-share", "512", "no-such-container"]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert!(
        out.err().contains("not exist"),
        "flag refused instead: {}",
        out.describe()
    );
}

/// `kill ID 0` checks that the container's init exists: success while it runs, failure once
/// it has stopped.
#[test]
fn kill_with_signal_0_checks_that_init_exists() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "100"]);
    let id = unique_id();
    rt.create_and_start(&b, &id);
    rt.kill(&id, "0").ok("kill 0 of a running container");
    assert_eq!(rt.state(&id)["status"], "running", "signal 0 must not kill");
    rt.kill(&id, "KILL").ok("kill KILL");
    rt.wait_for_status(&id, "stopped");
    rt.kill(&id, "0").fails("kill 0 of a stopped container");
    rt.delete(&id).ok("delete");
}

/// `ps` of a stopped container succeeds with no processes: the table is ps's header alone, the
/// JSON is runc's `null`.
#[test]
fn ps_of_a_stopped_container_lists_nothing() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    let id = unique_id();
    rt.create_and_start(&b, &id);
    rt.wait_for_status(&id, "stopped");
    let table = rt.cmd(&["ps", &id]).ok("ps of a stopped container");
    let l = lines(&table.out());
    assert_eq!(l.len(), 1, "{}", table.describe());
    assert!(l[0].contains("PID"), "{}", table.describe());
    let json = rt
        .cmd(&["ps", "--format", "json", &id])
        .ok("ps --format json of a stopped container");
    assert_eq!(json.out().trim(), "null", "{}", json.describe());
    rt.delete(&id).ok("delete");
}

/// `--debug` writes runc's debug lines of a run (what runc's own tests and engines look for) to
/// stderr, or to the `--log` file when given (then not to stderr).
#[test]
fn debug_writes_runcs_debug_lines() {
    if !require_root() {
        return;
    }
    let check = |text: &str| {
        for line in [
            "nsexec container setup",
            "child process in init()",
            "init: closing the pipe to signal completion",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
    };
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    b.save();
    let id = unique_id();
    let out = rt
        .cmd(&["--debug", "run", "--bundle", b.dir.to_str().unwrap(), &id])
        .ok("--debug run");
    assert!(out.err().contains("level=debug"), "{}", out.describe());
    check(&out.err());

    let dir = TempDir::new("log");
    let log = dir.join("log.out");
    let id = unique_id();
    let out = rt
        .cmd(&[
            "--log",
            log.to_str().unwrap(),
            "--debug",
            "run",
            "--bundle",
            b.dir.to_str().unwrap(),
            &id,
        ])
        .ok("--log --debug run");
    assert!(!out.err().contains("level=debug"), "{}", out.describe());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("level=debug"), "{text}");
    check(&text);
}

/// Unknown capabilities are dropped with runc's warning: `ignoring unknown or unavailable
/// capabilities: [CAP_A CAP_B]`.
#[test]
fn unknown_capabilities_are_warned_in_runcs_words() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["capabilities"]["bounding"] = json!(["CAP_CHOWN", "CAP_NO_SUCH_B", "CAP_NO_SUCH_A"]);
    let out = rt.run(&b, &unique_id()).ok("run with unknown capabilities");
    assert!(
        out.err()
            .contains("ignoring unknown or unavailable capabilities: [CAP_NO_SUCH_A CAP_NO_SUCH_B]"),
        "{}",
        out.describe()
    );
    // exec --cap: the same words, and the exec goes on.
    let id = unique_id();
    let sleeper = Bundle::new(&["sleep", "100"]);
    rt.create_and_start(&sleeper, &id);
    let out = rt
        .cmd(&["exec", "--cap", "CAP_NO_SUCH_C", &id, "true"])
        .ok("exec --cap with an unknown capability");
    assert!(
        out.err()
            .contains("ignoring unknown or unavailable capabilities: [CAP_NO_SUCH_C]"),
        "{}",
        out.describe()
    );
    rt.kill(&id, "KILL").ok("kill");
}
