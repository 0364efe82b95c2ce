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

/// One reference host at a time: the tests of this file run in parallel, and two TCG guests on our
/// two cores would each take twice as long.
static ONE_REFHOST: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn smoke_checks_pass_on_the_reference_host() {
    let Some((text, ok)) = run_on_refhost(
        "smoke_checks_pass_on_the_reference_host",
        "tests/refhost/smoke.sh",
        // refhost.sh's own bound: the smoke run needs no more.
        &[(
            "REFHOST_TIMEOUT",
            std::env::var("REFHOST_TIMEOUT").unwrap_or_else(|_| "900".into()),
        )],
    ) else {
        return;
    };
    assert!(ok, "the smoke checks failed on the reference host");
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

/// Boots the reference host for `script` (tests/refhost/...) when BERTH_REFHOST=1 and the tools are
/// there (building the image if it is not cached); its output and whether it succeeded, or None
/// (skipped, saying why).
fn run_on_refhost(test: &str, script: &str, env: &[(&str, String)]) -> Option<(String, bool)> {
    if !require_root() {
        return None;
    }
    if std::env::var("BERTH_REFHOST").as_deref() != Ok("1") {
        notice(&format!("SKIP {test}: set BERTH_REFHOST=1 to boot the reference host"));
        return None;
    }
    let cached = refhost()
        .arg("path")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !cached && (!have("mmdebstrap") || !have("mkfs.ext4")) {
        notice(&format!(
            "SKIP {test}: building the image needs mmdebstrap and e2fsprogs"
        ));
        return None;
    }
    if !have("qemu-system-x86_64") {
        notice(&format!("SKIP {test}: needs qemu-system-x86_64"));
        return None;
    }
    let _one_at_a_time = ONE_REFHOST.lock().unwrap_or_else(|e| e.into_inner());
    // The other test may have built it meanwhile.
    let cached = cached
        || refhost()
            .arg("path")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
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
        .arg(repo().join(script))
        .env("BERTH_BIN", runtime())
        // docker's first start and three engines under TCG: minutes; 891 s measured at a load of 15
        // (the default bound is 900 s). A caller's `env` comes after, and may set its own.
        .env(
            "REFHOST_TIMEOUT",
            std::env::var("REFHOST_TIMEOUT").unwrap_or_else(|_| "1500".into()),
        )
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/refhost.sh run");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    notice(&format!(
        "reference host ({script}):\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    ));
    Some((text, out.status.success()))
}

/// Issue 15 part 5 and the AppArmor part of part 4: tests/refhost/install.sh installs this build
/// with scripts/install.sh, registers it with podman, docker and containerd, runs containers
/// through each engine with the runtime chosen by name, checks AppArmor (tests/refhost/apparmor.sh)
/// and uninstalls.
#[test]
fn install_and_apparmor_on_the_reference_host() {
    let Some((text, ok)) = run_on_refhost(
        "install_and_apparmor_on_the_reference_host",
        "tests/refhost/install.sh",
        &[],
    ) else {
        return;
    };
    assert!(ok, "tests/refhost/install.sh failed on the reference host");
    for name in [
        "install",
        "install-path",
        "install-agent",
        "install-man",
        "install-bash-completion",
        "install-zsh-fish-completion",
        // AppArmor (part 4)
        "berth-features-apparmor",
        "apparmor-load-test-profile",
        "apparmor-without-profile-reads",
        "apparmor-profile-denies",
        "apparmor-denial-logged",
        "apparmor-init-label",
        "apparmor-exec-inherits",
        "apparmor-exec-flag",
        "apparmor-missing-profile",
        "apparmor-missing-profile-nothing-left",
        // The engines, by name, through the installed registrations.
        "podman-runtime-by-name",
        "podman-runtime-is-berth",
        "podman-conmon-runs-berth",
        "podman-by-name-apparmor",
        "podman-by-name-memory",
        "docker-runtime-registered",
        "docker-runtime-is-berth",
        "docker-default-apparmor-profile",
        "docker-exec",
        "containerd-handler",
        "containerd-handler-systemd",
        "containerd-ctr-berth",
        "uninstall",
        "podman-runtime-gone",
        "uninstall-leaves-host-as-it-was",
    ] {
        let line = format!("PASS {name}");
        assert!(text.lines().any(|l| l == line), "no `{line}` from the reference host");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("INSTALL passed=") && l.ends_with(" failed=0")),
        "no clean INSTALL summary"
    );
}

/// Checkpoint/restore (issue 18): tests/refhost/criu.sh runs every case with Berth and with runc;
/// Berth must pass each (the matrix is in docs/CHECKPOINT.md).
#[test]
fn criu_checkpoint_restore_on_the_reference_host() {
    // Berth's side only (runc's is the same script with CRIU_RUNTIMES=runc; docs/CHECKPOINT.md has
    // both), and the cases that cover the others, to keep CI short: pre-dump also checks a dump
    // that leaves the container running, podman-export a checkpoint and restore by podman.
    const CASES: &[&str] = &["counter", "pre-dump", "terminal", "tcp", "new-id", "podman-export"];
    let dir = TempDir::new("criu-refhost");
    let wrapper = dir.join("criu-berth.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nexport CRIU_RUNTIMES=berth CRIU_CASES='{}'\nexec bash \"$REFHOST_SHARE/refhost/criu.sh\"\n",
            CASES.join(" ")
        ),
    )
    .expect("write the wrapper script");
    let Some((text, ok)) = run_on_refhost(
        "criu_checkpoint_restore_on_the_reference_host",
        wrapper.to_str().expect("a UTF-8 temporary path"),
        &[],
    ) else {
        return;
    };
    for case in CASES {
        let pass = format!("PASS {case}/berth ");
        assert!(
            text.lines().any(|l| l.starts_with(&pass)),
            "no `{pass}` from the reference host"
        );
    }
    assert!(
        text.lines().any(|l| l == "CRIU berth-failed=0"),
        "criu.sh did not finish"
    );
    assert!(ok, "criu.sh failed on the reference host");
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
    // The release build of tests/cgroups.rs only where the reference host will boot.
    if !require_root() || std::env::var("BERTH_REFHOST").as_deref() != Ok("1") {
        notice("SKIP berth_works_with_the_engines_defaults_and_rootless_on_the_reference_host: set BERTH_REFHOST=1");
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
    let test = "berth_works_with_the_engines_defaults_and_rootless_on_the_reference_host";
    let Some((text, ok)) = run_on_refhost(
        test,
        script.to_str().expect("a UTF-8 temporary path"),
        &[("REFHOST_SHARE_BIN", share)],
    ) else {
        return;
    };
    assert!(ok, "the checks failed on the reference host");
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
