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
