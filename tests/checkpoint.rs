//! `checkpoint` and `restore` on this machine (issue 18). Real dumps need a kernel CRIU accepts:
//! this machine's is not one (`criu check` fails on its vDSO, for runc too), so here the tests
//! check what must hold whatever CRIU does: a failed dump is a clear error naming CRIU's log and
//! leaves the container running as it was; a missing criu, bad flags, a container in the wrong
//! state, a VM bundle are clear errors that leave nothing behind. The dumps and restores
//! themselves are tested on the reference host (tests/refhost/criu.sh, tests/refhost.rs).

mod common;

use common::*;
use std::process::{Command, Stdio};

fn criu_installed() -> bool {
    Command::new("sh")
        .args(["-c", "command -v criu"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn criu_works_here() -> bool {
    Command::new("criu")
        .arg("check")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn count(b: &Bundle) -> u64 {
    std::fs::read_to_string(b.rootfs().join("count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn counter() -> Bundle {
    let mut b = Bundle::sh("i=0; while :; do i=$((i+1)); echo $i > /count; sleep 0.05; done");
    b.writable_root();
    b
}

#[test]
fn failed_checkpoint_is_a_clear_error_and_leaves_the_container_running() {
    if !require_root() || is_runc() {
        return;
    }
    if !criu_installed() {
        notice("SKIP failed_checkpoint_is_a_clear_error...: criu is not installed (apt-get install criu)");
        return;
    }
    if criu_works_here() {
        notice(
            "SKIP failed_checkpoint_is_a_clear_error...: criu works on this kernel (the reference host tests dumps)",
        );
        return;
    }
    let rt = Runtime::new();
    let b = counter();
    let id = unique_id();
    let pid = rt.create_and_start(&b, &id);
    poll("the counter", || count(&b) >= 3);
    let images = TempDir::new("images");
    let img = images.join("img");
    let out = rt.cmd(&["checkpoint", "--image-path", img.to_str().unwrap(), &id]);
    assert_err_mentions(&out, "checkpoint of container", "checkpoint where criu fails");
    assert_err_mentions(&out, "the container is left as it was", "checkpoint where criu fails");
    assert_err_mentions(&out, "criu failed: type DUMP", "checkpoint where criu fails");
    assert_err_mentions(
        &out,
        &format!("{}/dump.log", img.display()),
        "checkpoint where criu fails",
    );
    assert!(img.join("dump.log").exists(), "CRIU's log is kept");
    // The container is untouched: same init, running, still counting (not frozen).
    let st = rt.state(&id);
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["pid"].as_i64(), Some(pid as i64), "{st}");
    let at = count(&b);
    poll("the counter after the failed checkpoint", || count(&b) >= at + 3);
    // --leave-running and --pre-dump fail the same way and leave it running too.
    for extra in [["--leave-running"], ["--pre-dump"]] {
        let out = rt.cmd(
            &[
                &["checkpoint", "--image-path", img.to_str().unwrap()][..],
                &extra[..],
                &[id.as_str()][..],
            ]
            .concat(),
        );
        assert!(!out.status.success(), "{}", out.describe());
        assert_eq!(rt.state(&id)["status"], "running");
    }
    // Without criu at all: the error says what is needed.
    let mut c = rt.command(&["checkpoint", "--image-path", img.to_str().unwrap(), &id]);
    c.env("PATH", "/nonexistent");
    let out = rt.exec(c);
    assert_err_mentions(
        &out,
        "needs CRIU 3.0.0 or newer: no criu in PATH",
        "checkpoint without criu",
    );
    assert_eq!(rt.state(&id)["status"], "running");
    rt.delete_force(&id).ok("delete");
}

#[test]
fn checkpoint_and_restore_refuse_bad_flags_and_states() {
    if !require_root() || is_runc() {
        return;
    }
    let rt = Runtime::new();
    let images = TempDir::new("images");
    let img = images.join("img");
    let img_s = img.to_str().unwrap();
    // A container that is only created cannot be checkpointed (runc: "cannot be checkpointed in created state").
    let b = counter();
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    let out = rt.cmd(&["checkpoint", "--image-path", img_s, &id]);
    assert_err_mentions(
        &out,
        "cannot be checkpointed in created state",
        "checkpoint of a created container",
    );
    assert_eq!(rt.state(&id)["status"], "created");
    for (args, needle) in [
        (
            vec!["--manage-cgroups-mode", "bogus"],
            "--manage-cgroups-mode: invalid value",
        ),
        (
            vec!["--empty-ns", "pid"],
            "--empty-ns: namespace \"pid\" is not supported",
        ),
        (vec!["--parent-path", "/abs"], "--parent-path must be relative"),
        (vec!["--parent-path", "missing"], "invalid --parent-path"),
        (vec!["--page-server", "nohost"], "--page-server: use ADDRESS:PORT"),
    ] {
        let out = rt.cmd(
            &[
                &["checkpoint", "--image-path", img_s][..],
                &args[..],
                &[id.as_str()][..],
            ]
            .concat(),
        );
        assert_err_mentions(&out, needle, &format!("checkpoint {args:?}"));
    }
    let out = rt.cmd(&["checkpoint", "--image-path", img_s, "no-such-container"]);
    assert!(!out.status.success());
    rt.delete_force(&id).ok("delete");

    // Restore from a directory without a checkpoint: clear error, nothing left under --root.
    if criu_installed() {
        let id = unique_id();
        let out = rt.cmd(&[
            "restore",
            "--detach",
            "--bundle",
            b.dir.to_str().unwrap(),
            "--image-path",
            img_s,
            &id,
        ]);
        assert_err_mentions(&out, "descriptors.json", "restore without images");
        rt.assert_no_state(&id);
    }
    // A VM bundle: refused before anything is made.
    let mut vm = counter();
    vm.config["annotations"] = serde_json::json!({"run.berth.isolation": "vm"});
    vm.save();
    let id = unique_id();
    let out = rt.cmd(&[
        "restore",
        "--detach",
        "--bundle",
        vm.dir.to_str().unwrap(),
        "--image-path",
        img_s,
        &id,
    ]);
    assert_err_mentions(&out, "VM containers is not supported", "restore of a VM bundle");
    rt.assert_no_state(&id);
}

#[test]
fn help_and_features_say_checkpoint_is_there() {
    let rt = Runtime::new();
    // podman decides whether a runtime can checkpoint by `<runtime> checkpoint --help` exiting 0.
    for cmd in ["checkpoint", "restore"] {
        let out = rt.cmd(&[cmd, "--help"]);
        assert!(out.status.success(), "{}", out.describe());
    }
    let help = rt.cmd(&["--help"]).out();
    assert!(help.contains("checkpoint") && help.contains("restore"), "{help}");
    if is_runc() {
        return;
    }
    let f: serde_json::Value = serde_json::from_str(&rt.cmd(&["features"]).out()).unwrap();
    assert!(
        f["annotations"]["run.berth.checkpoint"]
            .as_str()
            .is_some_and(|s| s.contains("criu")),
        "{f}"
    );
}

/// CRIU dumps only a container whose init leads its own session inside its pid namespace (else:
/// "A session leader of N(1) is outside of its pid namespace"). The general path of create (a
/// namespace joined by path) forks the real init from an intermediate process: the init must
/// still be the leader of a session of its own, as runc's is.
#[test]
fn init_leads_its_own_session_when_a_namespace_is_joined() {
    if !require_root() {
        return;
    }
    let ns = format!("berth-criu-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        notice("SKIP init_leads_its_own_session...: `ip netns add` failed");
        return;
    }
    let mut b = Bundle::sh("cut -d' ' -f6 /proc/1/stat; cut -d' ' -f6 /proc/self/stat");
    b.set_namespace("network", Some(&format!("/var/run/netns/{ns}")));
    let out = run_ok(&b);
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let l = lines(&out);
    assert_eq!(l.first().map(String::as_str), Some("1"), "init's session: {out}");
}

/// A container whose stdio is the host's /dev/null (as conmon gives it) gets the container's own
/// /dev/null instead, as runc's init does: CRIU cannot dump a descriptor of a mount outside the
/// container ("Can't lookup mount=N for fd=0 path=/dev/null"; podman checkpoint failed so).
#[test]
fn stdio_on_the_host_dev_null_is_reopened_inside() {
    if !require_root() {
        return;
    }
    // The harness runs the runtime with stdin /dev/null (the host's).
    let out = run_default(
        "a=$(grep mnt_id /proc/1/fdinfo/0); exec 3</dev/null; b=$(grep mnt_id /proc/1/fdinfo/3); \
         if [ \"$a\" = \"$b\" ]; then echo same; else echo \"differ: $a / $b\"; fi",
    );
    assert_eq!(out.trim(), "same", "stdin is not the container's /dev/null: {out}");
}
