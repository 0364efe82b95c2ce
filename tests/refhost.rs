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

#[test]
fn smoke_checks_pass_on_the_reference_host() {
    if !require_root() {
        return;
    }
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

/// Whether a reference-host test named `name` can run here (else it says why it skips); builds the
/// image when it is not cached.
fn criu_refhost_ready(name: &str) -> bool {
    if !require_root() {
        return false;
    }
    if std::env::var("BERTH_REFHOST").as_deref() != Ok("1") {
        notice(&format!("SKIP {name}: set BERTH_REFHOST=1 to boot the reference host"));
        return false;
    }
    let cached = refhost()
        .arg("path")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have("qemu-system-x86_64") || (!cached && !have("mmdebstrap")) {
        notice(&format!(
            "SKIP {name}: needs qemu-system-x86_64 (and mmdebstrap to build the image)"
        ));
        return false;
    }
    if !cached {
        let status = refhost()
            .arg("build")
            .stdin(Stdio::null())
            .status()
            .expect("run scripts/refhost.sh build");
        assert!(status.success(), "scripts/refhost.sh build failed: {status}");
    }
    true
}

/// Checkpoint/restore (issue 18): tests/refhost/criu.sh runs every case with Berth and with runc;
/// Berth must pass each (the matrix is in docs/CHECKPOINT.md).
#[test]
fn criu_checkpoint_restore_on_the_reference_host() {
    if !criu_refhost_ready("criu_checkpoint_restore_on_the_reference_host") {
        return;
    }
    // Berth's side only (runc's is the same script with CRIU_RUNTIMES=runc; docs/CHECKPOINT.md has
    // both), and the cases that cover the others, to keep CI short (~9 min for all eight at load 13
    // under TCG): pre-dump also checks a dump that leaves the container running, podman-export a
    // checkpoint and restore by podman; tcp fails for runc too on this host (docs/CHECKPOINT.md).
    const CASES: &[&str] = &["counter", "pre-dump", "terminal", "new-id", "podman-export"];
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
    let out = refhost()
        .arg("run")
        .arg(&wrapper)
        .env("BERTH_BIN", runtime())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/refhost.sh run");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    notice(&format!("reference host (criu):\n{text}{err}"));
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
    assert!(
        out.status.success(),
        "criu.sh failed on the reference host ({})",
        out.status
    );
}
