//! VM containers: the same bundle run as a Linux container and inside a micro-VM (annotation
//! `run.berth.isolation=vm`), compared; the VM lifecycle; a clear error for a missing kernel.
//! Each boot takes a few seconds under TCG, so the stories are few and each checks a lot.
//! They need qemu-system-x86_64, a /boot/vmlinuz-*-cloud-amd64 kernel, virtiofsd and the static
//! guest agent (see docs/VM.md); without them they print SKIP.

mod common;
use common::*;
use std::path::Path;

/// Why VM tests cannot run here, if they cannot.
fn vm_missing() -> Option<String> {
    if is_runc() {
        return Some("runc has no VM containers".into());
    }
    let in_path = |n: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(n).is_file()))
            .unwrap_or(false)
    };
    if !in_path("qemu-system-x86_64") {
        return Some("qemu-system-x86_64 not installed (Debian package qemu-system-x86)".into());
    }
    if !in_path("virtiofsd") && !Path::new("/usr/libexec/virtiofsd").is_file() {
        return Some("virtiofsd not installed (cargo install virtiofsd)".into());
    }
    let kernel = std::fs::read_dir("/boot").into_iter().flatten().flatten().any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64")
    });
    if !kernel {
        return Some("no /boot/vmlinuz-*-cloud-amd64 (Debian package linux-image-cloud-amd64)".into());
    }
    let bin = runtime();
    let target = bin
        .parent()
        .and_then(|d| d.parent())
        .map(|t| t.join("x86_64-unknown-linux-gnu"));
    let agent = std::env::var_os("BERTH_GUEST").is_some()
        || bin.parent().is_some_and(|d| d.join("berth-guest").is_file())
        || target.is_some_and(|t| t.join("release/berth-guest").is_file() || t.join("debug/berth-guest").is_file());
    if !agent {
        return Some("the static guest agent is not built (see docs/VM.md)".into());
    }
    None
}

fn skip(test: &str) -> bool {
    if !require_root() {
        return true;
    }
    if let Some(why) = vm_missing() {
        notice(&format!("SKIP {test}: {why}"));
        return true;
    }
    false
}

fn vm(b: &mut Bundle) -> &mut Bundle {
    b.config["annotations"] = json!({ "run.berth.isolation": "vm" });
    b
}

#[test]
fn same_bundle_same_results_in_a_vm() {
    if skip("same_bundle_same_results_in_a_vm") {
        return;
    }
    let script = "echo host=$(hostname) cwd=$(pwd) uid=$(id -u) x=$X; echo oops >&2; \
                  echo written > /tmp/out-$MODE; exit 7";
    let mut outs = Vec::new();
    for mode in ["linux", "vm"] {
        let mut b = Bundle::sh(script);
        b.writable_root();
        b.config["process"]["env"].as_array_mut().unwrap().push(json!("X=42"));
        b.config["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!(format!("MODE={mode}")));
        b.config["process"]["cwd"] = json!("/tmp");
        b.config["hostname"] = json!("guesthost");
        if mode == "vm" {
            vm(&mut b);
        }
        let rt = Runtime::new();
        let out = rt.run(&b, &unique_id());
        assert_eq!(out.code(), 7, "{mode}: {}", out.describe());
        // The file written in the container's rootfs is on the host afterwards.
        let written = std::fs::read_to_string(b.rootfs().join(format!("tmp/out-{mode}"))).unwrap_or_default();
        assert_eq!(written, "written\n", "{mode}: file in the rootfs");
        assert!(out.err().contains("oops"), "{mode}: stderr {}", out.describe());
        outs.push(out.out());
    }
    assert_eq!(outs[0], "host=guesthost cwd=/tmp uid=0 x=42\n");
    assert_eq!(outs[0], outs[1], "the VM container printed something else");
}

#[test]
fn vm_lifecycle_create_start_state_kill_delete() {
    if skip("vm_lifecycle_create_start_state_kill_delete") {
        return;
    }
    let mut b = Bundle::new(&["sleep", "600"]);
    vm(&mut b);
    let rt = Runtime::new();
    let id = unique_id();
    rt.create(&b, &id).ok("create");
    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    let pid = st["pid"].as_i64().unwrap() as i32;
    assert!(pid > 0 && !process_gone(pid), "state reports the live host pid: {st}");
    rt.start(&id).ok("start");
    assert_eq!(rt.state(&id)["status"], "running");
    rt.delete(&id).fails("delete of a running VM container");
    rt.kill(&id, "KILL").ok("kill");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rt.state(&id)["status"] != "stopped" {
        assert!(
            std::time::Instant::now() < deadline,
            "the VM container did not stop after kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    rt.delete(&id).ok("delete");
    rt.assert_no_state(&id);
    assert!(process_gone(pid), "the monitor is gone after delete");
}

#[test]
fn vm_with_a_missing_kernel_says_so() {
    if skip("vm_with_a_missing_kernel_says_so") {
        return;
    }
    let mut b = Bundle::default();
    b.config["annotations"] = json!({ "run.berth.isolation": "vm", "run.berth.vm.kernel": "/nonexistent/vmlinuz" });
    let rt = Runtime::new();
    let id = unique_id();
    let out = rt.run(&b, &id).fails("run with a missing kernel");
    assert_err_mentions(&out, "/nonexistent/vmlinuz", "the missing kernel");
    assert_err_mentions(&out, "run.berth.vm.kernel", "the annotation at fault");
    rt.assert_no_state(&id);
}
