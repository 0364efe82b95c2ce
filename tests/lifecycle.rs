//! Container lifecycle: create / start / state / kill / delete / run / list.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// A bundle whose process (pid 1 of its namespace) handles SIGTERM by exiting
/// 3 and signals readiness by creating /tmp/ready (rootfs/tmp/ready on the
/// host), so a signal is never sent before the handler exists.
fn trapping_bundle() -> Bundle {
    let mut b = Bundle::sh("trap 'exit 3' TERM; touch /tmp/ready; sleep 30 & wait");
    b.writable_root();
    b
}

fn wait_ready(b: &Bundle) {
    let marker = b.rootfs().join("tmp/ready");
    poll("container readiness marker", || marker.exists());
}

/// Starts a `sleep 30` container; returns its id.
fn start_sleeper(rt: &Runtime, b: &Bundle) -> String {
    let id = unique_id();
    rt.create_and_start(b, &id);
    id
}

#[test]
fn create_reports_created_state_and_writes_pid_file() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = unique_id();
    let pid_file = b.dir.join("container.pid");
    rt.create_with(&b, &id, &["--pid-file", pid_file.to_str().unwrap()])
        .ok("create");

    let st = rt.state(&id);
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], id.as_str(), "{st}");
    let pid = st["pid"].as_i64().unwrap_or(0);
    assert!(pid > 0, "pid must be > 0 in created state: {st}");
    assert!(
        st["ociVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "ociVersion: {st}"
    );
    let bundle = Path::new(st["bundle"].as_str().expect("bundle in state"));
    assert_eq!(
        fs::canonicalize(bundle).unwrap(),
        fs::canonicalize(&b.dir).unwrap(),
        "{st}"
    );

    let written = fs::read_to_string(&pid_file).expect("pid file written");
    assert_eq!(written.trim().parse::<i64>().expect("pid file holds a number"), pid);
    assert!(
        !process_gone(pid as i32),
        "created container's process {pid} must exist"
    );
}

#[test]
fn start_returns_at_once_and_container_runs() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    let t0 = Instant::now();
    rt.start(&id).ok("start");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "start must not wait for the process: took {took:?}"
    );
    assert_eq!(rt.state(&id)["status"], "running");
}

#[test]
fn kill_stops_a_running_container() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = start_sleeper(&rt, &b);
    assert_eq!(rt.state(&id)["status"], "running");
    rt.kill(&id, "KILL").ok("kill");
    rt.wait_for_status(&id, "stopped");
}

#[test]
fn container_exiting_by_itself_is_seen_stopped() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    let id = unique_id();
    rt.create_and_start(&b, &id);
    // Both runtime processes have exited; nothing but the state on disk and
    // the kernel knows about the container now.
    rt.wait_for_status(&id, "stopped");
}

#[test]
fn start_twice_fails() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = start_sleeper(&rt, &b);
    rt.start(&id).fails("second start");
    assert_eq!(
        rt.state(&id)["status"],
        "running",
        "a failed start must not disturb the container"
    );
}

#[test]
fn delete_running_container_requires_force() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = start_sleeper(&rt, &b);
    let pid = rt.state(&id)["pid"].as_i64().unwrap() as i32;

    rt.delete(&id).fails("delete without --force");
    assert_eq!(rt.state(&id)["status"], "running");

    rt.delete_force(&id).ok("delete --force");
    rt.cmd(&["state", &id]).fails("state after delete");
    rt.assert_no_state(&id);
    poll("container process to die", || process_gone(pid));
}

fn kill_with_signal_stops(signal: &str) {
    let rt = Runtime::new();
    let b = trapping_bundle();
    let id = start_sleeper(&rt, &b);
    wait_ready(&b);
    rt.kill(&id, signal).ok(&format!("kill {signal}"));
    rt.wait_for_status(&id, "stopped");
}

#[test]
fn kill_accepts_bare_signal_name() {
    if !require_root() {
        return;
    }
    kill_with_signal_stops("KILL");
}

#[test]
fn kill_accepts_sig_prefixed_name() {
    if !require_root() {
        return;
    }
    kill_with_signal_stops("SIGTERM");
}

#[test]
fn kill_accepts_signal_number() {
    if !require_root() {
        return;
    }
    kill_with_signal_stops("9");
}

#[test]
fn kill_of_stopped_container_fails() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    let id = unique_id();
    rt.create_and_start(&b, &id);
    rt.wait_for_status(&id, "stopped");
    rt.kill(&id, "KILL").fails("kill of a stopped container");
}

#[test]
fn run_exits_with_container_status() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("exit 7");
    let id = unique_id();
    let out = rt.run(&b, &id);
    assert_eq!(out.code(), 7, "{}", out.describe());
    rt.cmd(&["state", &id])
        .fails("run without --keep deletes the container");
}

#[test]
fn run_of_signalled_process_exits_128_plus_signal() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    // Outside a pid namespace the shell is not an init process, so it can
    // SIGKILL itself.
    let mut b = Bundle::sh("kill -9 $$; sleep 5");
    b.remove_namespace("pid");
    let id = unique_id();
    let out = rt.run(&b, &id);
    assert_eq!(out.code(), 128 + libc::SIGKILL, "{}", out.describe());
}

#[test]
fn run_detach_returns_while_container_runs() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = unique_id();
    let t0 = Instant::now();
    rt.run_with(&b, &id, &["--detach"]).ok("run --detach");
    assert!(t0.elapsed() < Duration::from_secs(10), "run --detach must not wait");
    let st = rt.state(&id);
    assert_eq!(st["status"], "running", "{st}");
    assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{st}");
}

#[test]
fn run_keep_leaves_stopped_container_listed() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    let id = unique_id();
    rt.run_with(&b, &id, &["--keep"]).ok("run --keep");
    assert_eq!(rt.state(&id)["status"], "stopped");
    let ids = lines(&rt.list(&["-q"]).ok("list -q").out());
    assert!(ids.contains(&id), "{id} not listed: {ids:?}");
    rt.delete(&id).ok("delete of a stopped container");
    rt.assert_no_state(&id);
}

#[test]
fn list_prints_table_with_header() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = start_sleeper(&rt, &b);
    let out = rt.list(&[]).ok("list").out();
    let rows = lines(&out);
    let header: Vec<&str> = rows[0].split_whitespace().collect();
    for col in ["ID", "PID", "STATUS", "BUNDLE"] {
        assert!(header.contains(&col), "header lacks {col}: {out}");
    }
    let row = rows.iter().find(|r| r.split_whitespace().next() == Some(id.as_str()));
    let row = row.unwrap_or_else(|| panic!("no row for {id}: {out}"));
    assert!(row.contains("running"), "row: {row}");
}

#[test]
fn list_json_has_id_pid_status_bundle() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = start_sleeper(&rt, &b);
    let out = rt.list(&["--format", "json"]).ok("list --format json");
    let list: Value = serde_json::from_slice(&out.stdout).expect("list json");
    let arr = list.as_array().unwrap_or_else(|| panic!("not an array: {list}"));
    assert_eq!(arr.len(), 1, "{list}");
    let c = &arr[0];
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["status"], "running");
    assert!(c["pid"].as_i64().unwrap_or(0) > 0, "{c}");
    let bundle = c["bundle"].as_str().expect("bundle");
    assert_eq!(fs::canonicalize(bundle).unwrap(), fs::canonicalize(&b.dir).unwrap());
}

#[test]
fn list_quiet_prints_ids_only() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b1 = Bundle::new(&["sleep", "30"]);
    let b2 = Bundle::new(&["sleep", "30"]);
    let mut ids = vec![start_sleeper(&rt, &b1), start_sleeper(&rt, &b2)];
    ids.sort();
    let mut listed = lines(&rt.list(&["-q"]).ok("list -q").out());
    listed.sort();
    assert_eq!(listed, ids);
}

#[test]
fn annotations_appear_in_state() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "30"]);
    b.config["annotations"] = json!({ "org.example.key": "value-1", "com.berth.test": "yes" });
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    let st = rt.state(&id);
    assert_eq!(st["annotations"]["org.example.key"], "value-1", "{st}");
    assert_eq!(st["annotations"]["com.berth.test"], "yes", "{st}");
}

#[test]
fn stdout_and_stderr_are_inherited() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::sh("echo to-stdout; echo to-stderr >&2");
    let out = rt.run(&b, &unique_id()).ok("run");
    assert_eq!(out.out().trim(), "to-stdout");
    assert!(out.err().contains("to-stderr"), "{}", out.describe());
    assert!(!out.out().contains("to-stderr"), "{}", out.describe());
}

#[test]
fn delete_of_created_container_removes_waiting_process() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    let pid = rt.state(&id)["pid"].as_i64().unwrap() as i32;
    assert!(!process_gone(pid));
    rt.delete(&id).ok("delete of a created container");
    rt.cmd(&["state", &id]).fails("state after delete");
    rt.assert_no_state(&id);
    poll("the created container's process to be gone", || process_gone(pid));
}
