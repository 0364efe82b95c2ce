//! Reliability: nothing leaks and nothing lies, under load, crashes, races and bad input.
//! The tests in this file share the host's mount table and process list, so they take turns
//! (`exclusive()`); counts can be raised with BERTH_SOAK_COUNT.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Mutex;

static HOST: Mutex<()> = Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    HOST.lock().unwrap_or_else(|e| e.into_inner())
}

fn soak_count() -> usize {
    std::env::var("BERTH_SOAK_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// What the host looks like, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct HostSnapshot {
    /// Host mounts below /tmp and /run, where bundles and state live: a mount that leaked out of a
    /// container would show there (the whole table also changes with unrelated host activity).
    mounts: usize,
    fds: usize,
    zombie_children: usize,
}

fn snapshot() -> HostSnapshot {
    let me = std::process::id().to_string();
    let zombie_children = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            rest.first() == Some(&"Z") && rest.get(1) == Some(&me.as_str())
        })
        .count();
    HostSnapshot {
        mounts: std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| {
                let point = l.split(' ').nth(4).unwrap_or("");
                point.starts_with("/tmp/") || point.starts_with("/run/berth")
            })
            .count(),
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
        zombie_children,
    }
}

/// Every cgroup directory below `/<parent>` in the hierarchies Berth uses.
fn cgroups_below(parent: &str) -> Vec<String> {
    let mut left = Vec::new();
    for ctrl in ["pids", "memory", "cpu", "freezer", "unified", "systemd"] {
        let dir = Path::new("/sys/fs/cgroup").join(ctrl).join(parent);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                left.push(e.path().display().to_string());
            }
        }
    }
    left
}

fn remove_cgroup_parent(parent: &str) {
    for ctrl in [
        "blkio",
        "cpu",
        "cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "memory",
        "pids",
        "systemd",
        "unified",
        "hugetlb",
        "net_cls",
        "perf_event",
    ] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(ctrl).join(parent));
    }
}

fn state_dirs(rt: &Runtime) -> Vec<String> {
    std::fs::read_dir(&rt.root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn soak_sequential_and_parallel_lifecycles_leak_nothing() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    let n = soak_count();
    let parent = format!("berth-soak-{}", std::process::id());
    // Removed however the test ends (a failed lifecycle panics before the count below).
    struct Parent<'a>(&'a str);
    impl Drop for Parent<'_> {
        fn drop(&mut self) {
            remove_cgroup_parent(self.0);
        }
    }
    let _parent = Parent(&parent);
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["cgroupsPath"] = json!(format!("/{parent}/c"));
    let before = snapshot();
    let started = std::time::Instant::now();
    // Sequential: run (create + start + wait + delete in one call).
    let bundle = b.dir.to_str().unwrap().to_string();
    for i in 0..n {
        b.config["linux"]["cgroupsPath"] = json!(format!("/{parent}/s{i}"));
        b.save();
        let out = rt.cmd(&["run", "--bundle", &bundle, &format!("soak-s{i}")]);
        assert_eq!(out.code(), 0, "lifecycle {i}: {}", out.describe());
    }
    let sequential = started.elapsed();
    // Parallel: 8 workers, each its own config file (cgroup path per container).
    let workers = 8;
    let per = n / workers;
    std::thread::scope(|s| {
        for w in 0..workers {
            let rt = &rt;
            let base = &b;
            let parent = &parent;
            s.spawn(move || {
                let dir = base.dir.join(format!("w{w}"));
                std::fs::create_dir_all(&dir).unwrap();
                for i in 0..per {
                    let mut c = base.config.clone();
                    // The shared rootfs by its absolute path (a symlinked root.path is refused).
                    c["root"]["path"] = json!(base.dir.join("rootfs"));
                    c["linux"]["cgroupsPath"] = json!(format!("/{parent}/p{w}-{i}"));
                    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
                    let out = rt.cmd(&["run", "--bundle", dir.to_str().unwrap(), &format!("soak-p{w}-{i}")]);
                    assert_eq!(out.code(), 0, "worker {w} lifecycle {i}: {}", out.describe());
                }
            });
        }
    });
    let after = snapshot();
    let leaked_cgroups = cgroups_below(&parent);
    let leaked_state = state_dirs(&rt);
    remove_cgroup_parent(&parent);
    notice(&format!(
        "soak: {n} sequential lifecycles in {:.1} s, {} parallel (8 workers) in {:.1} s; leaks: mounts {}, fds {}, zombies {}, cgroups {}, state dirs {}",
        sequential.as_secs_f64(),
        per * workers,
        (started.elapsed() - sequential).as_secs_f64(),
        after.mounts as i64 - before.mounts as i64,
        after.fds as i64 - before.fds as i64,
        after.zombie_children,
        leaked_cgroups.len(),
        leaked_state.len()
    ));
    assert_eq!(after, before, "host state changed across the soak");
    assert!(leaked_cgroups.is_empty(), "cgroups left: {leaked_cgroups:?}");
    assert!(leaked_state.is_empty(), "state left: {leaked_state:?}");
}

#[test]
fn concurrent_creates_of_one_id_exactly_one_wins() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    b.save();
    let id = unique_id();
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|_| s.spawn(|| rt.cmd(&["create", "--bundle", b.dir.to_str().unwrap(), &id])))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(winners, 1, "exactly one create must win");
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(o.err().contains("already exists"), "loser's error: {}", o.describe());
    }
    assert_eq!(rt.state(&id)["status"], "created");
    // Concurrent state/kill/delete on the one container: it ends deleted, never corrupt.
    rt.start(&id).ok("start");
    std::thread::scope(|s| {
        for i in 0..12 {
            let (rt, id) = (&rt, &id);
            s.spawn(move || match i % 3 {
                0 => drop(rt.cmd(&["state", id])),
                1 => drop(rt.cmd(&["kill", id, "KILL"])),
                _ => drop(rt.cmd(&["delete", "--force", id])),
            });
        }
    });
    rt.cmd(&["delete", "--force", &id]);
    rt.assert_no_state(&id);
}

/// Every step at which create can be killed (BERTH_TEST_CRASH_AT, see libberth's undo.rs).
const CRASH_STEPS: &[&str] = &["state-dir", "recorded", "cgroup", "fifo", "spawned", "saved"];

#[test]
fn crash_at_every_create_step_is_cleaned_by_delete_force() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    let parent = format!("berth-crash-{}", std::process::id());
    for step in CRASH_STEPS {
        let rt = Runtime::new();
        let id = format!("crash-{step}");
        let mut b = Bundle::new(&["sleep", "30"]);
        b.config["linux"]["cgroupsPath"] = json!(format!("/{parent}/{step}"));
        b.save();
        let mut c = rt.command(&["create", "--bundle", b.dir.to_str().unwrap(), &id]);
        c.env("BERTH_TEST_CRASH_AT", step);
        let out = rt.exec(c);
        assert_eq!(
            out.status.signal(),
            Some(9),
            "create must die at {step}: {}",
            out.describe()
        );
        // Meanwhile the truth: nothing runs, and nothing claims to.
        let procs = Path::new("/sys/fs/cgroup/pids")
            .join(&parent)
            .join(step)
            .join("cgroup.procs");
        poll(&format!("the init of a create killed at {step} to go"), || {
            std::fs::read_to_string(&procs).map_or(true, |p| p.trim().is_empty())
        });
        let st = rt.cmd(&["state", &id]);
        if st.status.success() {
            let status = serde_json::from_slice::<serde_json::Value>(&st.stdout).unwrap()["status"].clone();
            assert_eq!(status, "stopped", "state after a crash at {step}");
        }
        let listed: serde_json::Value = serde_json::from_str(&rt.list(&["--format", "json"]).out()).unwrap();
        for c in listed.as_array().unwrap() {
            assert_eq!(c["status"], "stopped", "list after a crash at {step}: {c}");
        }
        rt.cmd(&["delete", "--force", &id])
            .ok(&format!("delete --force after a crash at {step}"));
        rt.assert_no_state(&id);
        let left = cgroups_below(&parent);
        assert!(left.is_empty(), "cgroups left after a crash at {step}: {left:?}");
    }
    remove_cgroup_parent(&parent);
    notice(&format!(
        "crash injection: {} steps, all cleaned by delete --force",
        CRASH_STEPS.len()
    ));
}

#[test]
fn init_dying_between_create_and_start_is_reported_stopped() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    let pid = rt.state(&id)["pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    poll("init to die", || process_gone(pid));
    assert_eq!(rt.state(&id)["status"], "stopped");
    let out = rt.start(&id).fails("start after init died");
    assert_err_mentions(&out, &id, "the container");
    rt.delete(&id).ok("delete of a stopped container");
    rt.assert_no_state(&id);
}

#[test]
fn lost_state_root_after_reboot_lists_nothing() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    let rt = Runtime::new();
    // /run is a tmpfs: after a reboot the root is simply gone.
    let out = rt.list(&["-q"]).ok("list with no state root");
    assert_eq!(out.out().trim(), "");
    rt.cmd(&["state", "gone"])
        .fails("state of a container lost with the root");
}

#[test]
fn full_state_disk_fails_cleanly() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    let rt = Runtime::new();
    std::fs::create_dir_all(&rt.root).unwrap();
    let root = rt.root.to_str().unwrap().to_string();
    // A tmpfs too small for any file: creating the state fails.
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4k,nr_inodes=3", "tmpfs", &root])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount a tiny tmpfs");
    let b = Bundle::new(&["true"]);
    let mut outs = Vec::new();
    for i in 0..4 {
        outs.push(rt.run(&b, &format!("full{i}")));
    }
    let failed: Vec<_> = outs.iter().filter(|o| !o.status.success()).collect();
    assert!(!failed.is_empty(), "a full state disk must make some create fail");
    for o in &failed {
        assert!(
            !o.err().trim().is_empty(),
            "failure must be explained: {}",
            o.describe()
        );
    }
    let leftovers = state_dirs(&rt);
    std::process::Command::new("umount").arg(&root).status().unwrap();
    assert!(leftovers.is_empty(), "half state left on a full disk: {leftovers:?}");
}

#[test]
fn low_fd_limit_fails_cleanly() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    b.save();
    let id = unique_id();
    let mut c = rt.command(&["run", "--bundle", b.dir.to_str().unwrap(), &id]);
    // SAFETY: only setrlimit in the child before exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, || {
            let lim = libc::rlimit {
                rlim_cur: 5,
                rlim_max: 5,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let out = rt.exec(c).fails("run with 5 descriptors");
    assert!(
        out.err().to_lowercase().contains("too many open files"),
        "{}",
        out.describe()
    );
    rt.assert_no_state(&id);
}

#[test]
fn sigterm_to_run_is_forwarded_to_the_container() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    let rt = Runtime::new();
    let mut b = Bundle::sh("trap 'echo got TERM; exit 42' TERM; touch /tmp/ready; while :; do sleep 0.05; done");
    b.writable_root();
    b.save();
    let id = unique_id();
    let mut c = rt.command(&["run", "--bundle", b.dir.to_str().unwrap(), &id]);
    c.stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null());
    let child = c.spawn().unwrap();
    let marker = b.rootfs().join("tmp/ready");
    poll("the container to be ready", || marker.exists());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(42), "run's exit status is the container's");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "got TERM");
    rt.assert_no_state(&id);
}

#[test]
fn run_reaps_orphans_it_adopts() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    // Without a pid namespace the container's orphans are re-parented to `run` (a subreaper),
    // which must reap them: no zombie outlives the run.
    let mut b = Bundle::sh("sh -c 'sleep 0.2 &' ; sleep 0.5; echo done");
    b.remove_namespace("pid");
    let out = run_ok(&b);
    assert_eq!(out.trim(), "done");
    assert_eq!(snapshot().zombie_children, 0);
}

#[test]
fn broken_bundles_give_their_exact_errors_and_leave_nothing() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_bundles");
    let mut cases: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    cases.sort();
    let rt = Runtime::new();
    let mut tried = 0;
    for case in &cases {
        let name = case.file_stem().unwrap().to_string_lossy().into_owned();
        let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case).unwrap()).unwrap();
        let mut b = Bundle::new(&["true"]);
        if let Some(patch) = spec.get("patch") {
            merge_patch(&mut b.config, patch);
        }
        if let Some(raw) = spec["raw"].as_str() {
            b.raw_config = Some(raw.to_string());
        }
        b.save();
        match spec["setup"].as_str() {
            Some("rootfs-file") => {
                std::fs::remove_dir_all(b.rootfs()).unwrap();
                std::fs::write(b.rootfs(), "not a directory").unwrap();
            }
            Some("rootfs-loop") => {
                std::fs::remove_dir_all(b.rootfs()).unwrap();
                std::os::unix::fs::symlink("rootfs", b.rootfs()).unwrap();
            }
            Some("rootfs-missing") => std::fs::remove_dir_all(b.rootfs()).unwrap(),
            Some("config-dir") => {
                std::fs::remove_file(b.config_path()).unwrap();
                std::fs::create_dir(b.config_path()).unwrap();
            }
            _ => {}
        }
        let id = format!("bad-{name}");
        let out = rt.cmd(&["run", "--bundle", b.dir.to_str().unwrap(), &id]);
        let want = spec["expect"].as_str().unwrap();
        assert!(!out.status.success(), "{name}: must fail: {}", out.describe());
        assert!(
            out.err().contains(want),
            "{name}: error must mention {want:?}: {}",
            out.describe()
        );
        assert_eq!(out.err().trim().lines().count(), 1, "{name}: one line: {}", out.err());
        rt.assert_no_state(&id);
        assert!(
            cgroups_below(&id).is_empty() && !Path::new("/sys/fs/cgroup/pids").join(&id).exists(),
            "{name}: cgroup left"
        );
        tried += 1;
    }
    notice(&format!(
        "bad input corpus: {tried} broken bundles, each with its error, nothing left"
    ));
}

/// RFC 7386 JSON merge patch: objects merge, null removes, anything else replaces.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match patch {
        serde_json::Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[test]
fn a_reused_pid_is_never_reported_as_the_container() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    // The container's init is gone and its pid now belongs to an unrelated process: the
    // recorded start time tells them apart, so the container is stopped, not running.
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "30"]);
    let id = unique_id();
    let pid = rt.create_and_start(&b, &id);
    unsafe { libc::kill(pid, libc::SIGKILL) };
    poll("init to die", || process_gone(pid));
    let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let state_file = rt.root.join(&id).join("state.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    rec["pid"] = json!(other.id());
    std::fs::write(&state_file, rec.to_string()).unwrap();
    let st = rt.state(&id);
    assert_eq!(st["status"], "stopped", "a process that is not the init: {st}");
    assert_eq!(st["pid"], 0);
    rt.cmd(&["kill", &id, "KILL"]).fails("kill of a stopped container");
    rt.delete(&id).ok("delete");
    assert!(
        other.try_wait().unwrap().is_none(),
        "the unrelated process must not have been signalled"
    );
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn reaching_the_pids_limit_inside_fails_cleanly() {
    if !require_root() {
        return;
    }
    let _x = exclusive();
    // Forks beyond the pids limit fail inside the container; the runtime still controls it and
    // deletes it completely.
    let rt = Runtime::new();
    let id = unique_id();
    let b = {
        let mut b = Bundle::new(&["sleep", "30"]);
        b.config["linux"]["resources"] = json!({ "pids": { "limit": 4 } });
        b
    };
    let pid = rt.create_and_start(&b, &id);
    // A shell in the container forks until the limit stops it (busybox sh gives up at the first
    // refused fork).
    let out = rt.cmd(&[
        "exec",
        &id,
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done",
    ]);
    assert!(
        out.err().to_lowercase().contains("fork") || out.err().contains("Resource temporarily unavailable"),
        "the refused fork must be reported: {}",
        out.describe()
    );
    let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/{id}/cgroup.procs")).unwrap_or_default();
    assert!(procs.lines().count() <= 4, "pids limit exceeded: {procs}");
    assert_eq!(rt.state(&id)["status"], "running");
    rt.delete_force(&id).ok("delete --force at the pids limit");
    assert!(process_gone(pid));
    rt.assert_no_state(&id);
    assert!(!Path::new("/sys/fs/cgroup/pids").join(&id).exists(), "cgroup left");
}
