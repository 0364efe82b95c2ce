//! The `berth features` document (runtime-spec features.md): what this build really supports.
//! Keep it true: a feature appears here only when the runtime implements it.

use serde_json::{json, Value};

pub const OCI_VERSION_MIN: &str = "1.0.0";
pub const OCI_VERSION_MAX: &str = "1.2.1";

/// Mount options `mounts[].options` understands (flags, propagation, bind, the recursive `r*`
/// ones applied with mount_setattr).
pub const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "idmap",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "ridmap",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

pub fn document() -> Value {
    let caps: Vec<String> = caps::all()
        .iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": true, "systemdUser": true, "rdma": false },
            "seccomp": crate::linux::seccomp::features(),
            "apparmor": { "enabled": crate::linux::tuning::apparmor_enabled() },
            "selinux": { "enabled": crate::linux::tuning::selinux_enabled() },
            "intelRdt": { "enabled": false },
            "memoryPolicy": {
                "modes": ["MPOL_DEFAULT", "MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_WEIGHTED_INTERLEAVE",
                          "MPOL_PREFERRED", "MPOL_PREFERRED_MANY", "MPOL_LOCAL"],
                "flags": ["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"]
            },
            "mountExtensions": { "idmap": { "enabled": crate::linux::idmap::supported() } }
        },
        "annotations": {
            "run.berth.version": env!("CARGO_PKG_VERSION"),
            crate::vm::ANN_ISOLATION: "vm: run the bundle in a micro-VM with its own kernel (docs/VM.md)",
            "run.berth.checkpoint": "criu: checkpoint and restore of Linux containers through CRIU's RPC (criu >= 3.0 in PATH; not VM containers)",
            crate::vm::ANN_CPUS: "vCPUs of a VM container (default: from linux.resources.cpu, else 1)",
            crate::vm::ANN_MEMORY: "guest RAM of a VM container in MiB, or with M/G (default: linux.resources.memory.limit, else 256)",
            crate::vm::ANN_KERNEL: "guest kernel of a VM container (default: $BERTH_VM_KERNEL, else Berth's guest kernel when built (scripts/guest-kernel.sh), else /boot/vmlinuz-*-cloud-amd64; see run.berth.vm.kernel.default)",
            "run.berth.vm.kernel.default": default_vm_kernel()
        }
    })
}

/// The guest kernel a VM container boots here without `run.berth.vm.kernel` or `vm.kernel.path`,
/// and why (informational, as runc's `io.github.seccomp.libseccomp.version`).
fn default_vm_kernel() -> String {
    match crate::vm::image::kernel(None, "") {
        Ok(k) => {
            let rel = crate::vm::image::kernel_release(&k.path).unwrap_or_else(|_| "?".into());
            format!("{} ({rel}; {})", k.path.display(), k.why)
        }
        Err(e) => format!("none: {e}"),
    }
}
