//! Berth on the reference host (issue 15): a stock Debian 12 machine — systemd on pure cgroup v2,
//! AppArmor enabled, podman with its default configuration — built by scripts/refhost.sh and booted
//! under qemu, runs tests/refhost/smoke.sh against this build's berth.
//!
//! Booting it takes a minute and building it minutes, so a plain `cargo test` skips this (saying
//! so); `BERTH_REFHOST=1` runs it, building the image first when it is not cached (.ci/run does,
//! after the suite). It also skips where mmdebstrap or qemu are missing.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn refhost() -> Command {
    Command::new(repo().join("scripts/refhost.sh"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One reference host at a time (each is a 3 GiB qemu).
static ONE_VM: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn smoke_checks_pass_on_the_reference_host() {
    if !require_root() {
        return;
    }
    let _vm = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let cached = refhost()
        .arg("path")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if std::env::var("BERTH_REFHOST").as_deref() != Ok("1") {
        notice("SKIP smoke_checks_pass_on_the_reference_host: set BERTH_REFHOST=1 to boot the reference host (about a minute; building its image the first time takes a few)");
        return;
    }
    if !cached && (!have("mmdebstrap") || !have("mkfs.ext4")) {
        notice("SKIP smoke_checks_pass_on_the_reference_host: building the image needs mmdebstrap and e2fsprogs (apt-get install mmdebstrap)");
        return;
    }
    if !have("qemu-system-x86_64") {
        notice(
            "SKIP smoke_checks_pass_on_the_reference_host: needs qemu-system-x86_64 (apt-get install qemu-system-x86)",
        );
        return;
    }
    if !cached {
        let status = refhost()
            .arg("build")
            .stdin(Stdio::null())
            .status()
            .expect("run scripts/refhost.sh build");
        assert!(status.success(), "scripts/refhost.sh build failed: {status}");
    }
    let out = refhost()
        .arg("run")
        .arg(repo().join("tests/refhost/smoke.sh"))
        .env("BERTH_BIN", runtime())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/refhost.sh run");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    notice(&format!("reference host:\n{text}{err}"));
    assert!(
        out.status.success(),
        "the smoke checks failed on the reference host ({})",
        out.status
    );
    for line in [
        "PASS systemd-running",
        "PASS cgroup-v2-pure",
        "PASS apparmor-enabled",
        "PASS podman-default-cgroup-manager",
        "PASS berth-run-cgroupfs",
        "PASS podman-cgroupfs-driver",
        "PASS podman-cgroupfs-memory-limit",
        "PASS podman-cgroupfs-apparmor",
        // The systemd cgroup driver (issue 15 part 2).
        "PASS berth-run-systemd-driver",
        "PASS berth-systemd-run-gone",
        "PASS berth-systemd-create",
        "PASS berth-systemd-unit",
        "PASS berth-systemd-files",
        "PASS berth-systemd-devices",
        "PASS berth-systemd-update",
        "PASS berth-systemd-delete",
        "PASS berth-systemd-crash-delete",
        "PASS berth-systemd-features",
        "PASS berth-systemd-no-bus",
        "PASS podman-systemd-driver",
        "PASS podman-systemd-memory-limit",
        "PASS podman-systemd-unit",
        "PASS podman-systemd-exec",
        "PASS podman-systemd-pause",
        "PASS podman-systemd-stats",
        "PASS podman-systemd-unit-gone",
        "SMOKE passed=",
    ] {
        assert!(
            text.lines()
                .any(|l| l == line || (line.ends_with('=') && l.starts_with(line))),
            "no `{line}` from the reference host"
        );
    }
    // Both drivers measured side by side (the figures go to docs/REFHOST.md).
    for driver in ["cgroupfs", "systemd"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("MEASURE {driver}:")) && l.ends_with(", 0 of 10 failed")),
            "no clean `MEASURE {driver}` line from the reference host"
        );
    }
}

/// The test binary of tests/cgroups.rs, built in release mode (for the reference host).
fn cgroups_test_binary() -> Option<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "test",
            "--release",
            "--test",
            "cgroups",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(repo())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            (v["target"]["name"] == "cgroups")
                .then(|| v["executable"].as_str().map(std::path::PathBuf::from))
                .flatten()
        })
}

/// Berth on the reference host as its users run it (tests/refhost/systemd-host.sh): rootless
/// podman with its default (systemd) cgroup manager, dockerd on its defaults, containerd's CRI with
/// SystemdCgroup = true (when engines/run.sh built the CRI client), and tests/cgroups.rs under both
/// drivers.
#[test]
fn berth_works_with_the_engines_defaults_and_rootless_on_the_reference_host() {
    if !require_root() {
        return;
    }
    if std::env::var("BERTH_REFHOST").as_deref() != Ok("1") {
        notice("SKIP berth_works_with_the_engines_defaults_and_rootless_on_the_reference_host: set BERTH_REFHOST=1");
        return;
    }
    let _vm = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let cached = refhost()
        .arg("path")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !cached || !have("qemu-system-x86_64") {
        notice("SKIP berth_works_with_the_engines_defaults_and_rootless_on_the_reference_host: no cached image (scripts/refhost.sh build) or no qemu");
        return;
    }
    let cgroups = cgroups_test_binary().expect("build tests/cgroups.rs (cargo test --release --test cgroups --no-run)");
    let mut share = format!("{}=cgroups", cgroups.display());
    let cri = repo().join("target/cri-client/debug/cri-client");
    if cri.is_file() {
        share.push_str(&format!(" {}", cri.display()));
    }
    let tmp = TempDir::new("refhost");
    let script = tmp.join("systemd-host.sh");
    // The part of tests/cgroups.rs CI runs there (docs/REFHOST.md has the whole run).
    std::fs::write(
        &script,
        format!(
            "CGROUPS_FILTER={:?}\n. \"$REFHOST_SHARE/refhost/systemd-host.sh\"\n",
            std::env::var("BERTH_REFHOST_CGROUPS_FILTER").unwrap_or_else(|_| CGROUPS_CI.into())
        ),
    )
    .unwrap();
    let out = refhost()
        .arg("run")
        .arg(&script)
        .env("BERTH_BIN", runtime())
        .env("REFHOST_SHARE_BIN", share)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/refhost.sh run");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    notice(&format!("reference host:\n{text}{err}"));
    assert!(
        out.status.success(),
        "the checks failed on the reference host ({})",
        out.status
    );
    let mut must = vec![
        "PASS rootless-podman-default-cgroup-manager",
        "PASS rootless-podman-run",
        "PASS rootless-podman-memory",
        "PASS rootless-podman-pids",
        "PASS rootless-podman-unit",
        "PASS rootless-podman-files",
        "PASS rootless-podman-exec",
        "PASS rootless-podman-stats",
        "PASS rootless-podman-pause",
        "PASS rootless-podman-unit-gone",
        "PASS docker-default-memory",
        "PASS docker-default-exec",
        "PASS docker-default-stop",
        "PASS docker-default-rm",
        "PASS cgroups-tests-cgroupfs",
        "PASS cgroups-tests-systemd",
        "SYSTEMD-HOST passed=",
    ];
    if cri.is_file() {
        must.extend([
            "PASS cri-systemd-run_pod_sandbox",
            "PASS cri-systemd-container_stats",
            "PASS cri-systemd-update_resources",
            "PASS cri-systemd-stop_container",
            "PASS cri-systemd-remove_pod_sandbox",
        ]);
    }
    for line in must {
        assert!(
            text.lines()
                .any(|l| l == line || (line.ends_with('=') && l.starts_with(line))),
            "no `{line}` from the reference host"
        );
    }
}

/// The tests of tests/cgroups.rs that CI runs on the reference host with each driver (libtest
/// filters; `BERTH_REFHOST_CGROUPS_FILTER` to choose others, "" for all 32: docs/REFHOST.md):
/// limits read back, update, pause, stats, OOM, kill --all, devices.
const CGROUPS_CI: &str = "memory_limits_are pids_limit_stops cpu_values update_changes pause_and_resume \
     events_stats a_process_over_the_memory kill_all_and_delete device_rules_allow a_pids_limit_of_zero";
