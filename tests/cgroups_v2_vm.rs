//! The cgroup tests (tests/cgroups.rs) once more on a pure cgroup v2 host. This machine's
//! controllers are bound to cgroup v1, so scripts/cgroup-v2-test.sh boots the Debian cloud kernel
//! under qemu with `cgroup_no_v1=all` and runs the cgroups test binary there against this build's
//! berth. It skips (saying why) where qemu or that kernel are not installed.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// The cgroups test binary cargo built next to this one (target/<profile>/deps/cgroups-<hash>).
fn cgroups_test_binary() -> Option<PathBuf> {
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    std::fs::read_dir(deps)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with("cgroups-") && p.extension().is_none() && !name.contains("v2_vm")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

#[test]
fn cgroup_tests_pass_on_a_pure_cgroup_v2_kernel() {
    if !require_root() {
        return;
    }
    let kernel = std::fs::read_dir("/boot")
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("-cloud-amd64"))
        })
        .unwrap_or(false);
    if !kernel || !Path::new("/usr/bin/qemu-system-x86_64").exists() {
        notice("SKIP cgroup_tests_pass_on_a_pure_cgroup_v2_kernel: needs qemu-system-x86 and linux-image-cloud-amd64");
        return;
    }
    let Some(test_bin) = cgroups_test_binary() else {
        notice("SKIP cgroup_tests_pass_on_a_pure_cgroup_v2_kernel: the cgroups test binary was not built");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cgroup-v2-test.sh");
    let out = std::process::Command::new(script)
        .env("BERTH_BIN", runtime())
        .env("TEST_BIN", &test_bin)
        .output()
        .expect("run scripts/cgroup-v2-test.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("test result") || l.contains("BERTH-V2"))
        .collect();
    notice(&format!("pure cgroup v2 guest: {}", summary.join(" | ")));
    assert!(
        out.status.success(),
        "cgroup tests failed on cgroup v2:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("test result: ok"),
        "no test result from the guest:\n{text}"
    );
}
