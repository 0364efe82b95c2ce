//! VM containers: the same bundle run inside a micro-VM with its own guest kernel (docs/VM.md).
//!
//! Selected by the spec's `vm` object or the annotation `run.berth.isolation=vm`. `create` forks a
//! small monitor (the container's host pid) that starts virtiofsd (sharing the rootfs live) and
//! qemu, then asks the guest agent (berth-guest, PID 1 in the VM) over the control port to create
//! the container there with libberth's Linux backend. `start` and `kill` are requests on the same
//! port. When the container's process ends the guest writes its status to the exit port (a file in
//! the state directory) and powers off; qemu exits, and the monitor exits with that status.

pub(crate) mod backend;
pub mod binds;
mod boot;
mod client;
pub mod confine;
pub mod exec;
mod guest_config;
pub mod hooks;
pub mod image;
mod lifecycle;
mod monitor;
mod mux;
pub mod net;
pub mod pod;
pub mod ports;
pub mod proto;
pub mod relay;

pub use boot::{cpus, memory_mib, parse_mib, Plan};
pub(crate) use client::{open_stream, read_reply, send_request};
pub use guest_config::guest_config;
pub(crate) use lifecycle::copy_win_size;
pub use lifecycle::{create, kill, run, start, Attach};

use crate::state::Locked;
use oci_spec::runtime::Spec;
use std::path::Path;
use std::time::Duration;

pub const ANN_ISOLATION: &str = "run.berth.isolation";
pub const ANN_CPUS: &str = "run.berth.vm.cpus";
pub const ANN_MEMORY: &str = "run.berth.vm.memory";
pub const ANN_KERNEL: &str = "run.berth.vm.kernel";

/// What Berth's own guest kernel (vm/kernel/berth-guest.config) gets on its command line beyond
/// the common part (docs/VM.md, "The guest kernel": a parameter goes here only when measured to
/// help; kept apart from the rest of the command line).
/// `reboot=t`: see BERTH_KERNEL_MACHINE.
pub const BERTH_KERNEL_CMDLINE: &[&str] = &["reboot=t"];

/// What Berth's own kernel gets beyond BERTH_KERNEL_CMDLINE under TCG only (docs/VM.md, "Where the
/// boot time goes"). `nolapic_timer`: no local APIC timer, so no calibration of it against the PIT
/// (two 100 ms busy loops of guest time: TCG has no TSC-deadline timer, and 6.1 no other way to
/// learn the APIC timer's rate); the PIT (which Berth's kernel keeps under TCG, see
/// BERTH_KERNEL_MACHINE) is the tick, and a second vCPU gets its ticks from it by IPI (the
/// kernel's tick broadcast). `no_timer_check`: no check that the PIT's interrupt arrives through
/// the IO-APIC (a busy wait of 4 ticks; microvm's wiring is fixed). Under KVM the TSC-deadline
/// timer is used and neither applies.
pub const BERTH_KERNEL_CMDLINE_TCG: &[&str] = &["nolapic_timer", "no_timer_check"];

/// The microvm options for Berth's own kernel: without ACPI (its ACPI tables fail to load in a
/// kernel without PCI), qemu then names the virtio-mmio devices on the command line
/// (`virtio_mmio.device=`), and the agent ends the VM with a reset (`reboot=t`: a triple fault,
/// which `-no-reboot` turns into qemu's exit) instead of an ACPI power-off. Under TCG it also keeps
/// microvm's PIT and PIC: without ACPI the kernel cannot tell the PIT is absent and checks the
/// local APIC timer against it, and with no PIT ticking it disables the APIC timer, leaving the
/// guest without timers (no sleep, no timeout ends: the agent never answered). Under KVM the
/// TSC-deadline timer needs no PIT (and microvm's defaults are kept there for both kernels).
pub const BERTH_KERNEL_MACHINE: &str = ",acpi=off";

/// Marker (and record of the hypervisor command line) in a VM container's state directory.
pub(crate) const VM_FILE: &str = "vm";
/// The monitor's socket: every host client's way to the guest (vm/mux.rs).
const MUX_SOCK: &str = "mux.sock";
const FS_SOCK: &str = "fs.sock";
/// The socket of the virtiofsd sharing the bind mounts' sources (vm/binds.rs).
const BINDS_SOCK: &str = "binds.sock";
/// The socket of the virtiofsd sharing a pod's later containers' roots and binds (vm/pod.rs).
const POD_SOCK: &str = "pod.sock";
/// In a pod member's state directory: the ID of the VM container whose VM it joined (vm/pod.rs).
pub(crate) const OWNER_FILE: &str = "pod-owner";
const EXIT_FILE: &str = "exit";
const CONSOLE_LOG: &str = ports::CONSOLE_LOG;

const DEFAULT_MEM_MIB: u64 = 256;
const MIN_MEM_MIB: u64 = 128;
/// How long a guest may take to boot and create the container (TCG on a busy host is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    spec.annotations().as_ref()?.get(key).map(String::as_str)
}

/// Whether this bundle asks for a VM. A CRI pod's sandbox (pause) container asking for one (the
/// pod's annotation, which containerd gives the sandbox too, or the `berth-vm` handler) boots the
/// pod's VM, and the pod's workload containers join it (vm/pod.rs; docs/VM.md, "Kubernetes").
pub fn wanted(spec: &Spec) -> bool {
    spec.vm().is_some()
        || annotation(spec, ANN_ISOLATION) == Some("vm")
        || VM_BY_NAME.load(std::sync::atomic::Ordering::Relaxed)
}

/// Berth run under this program name (a link to it) makes every container a VM container: a
/// second runtime handler for containerd (a Kubernetes RuntimeClass) with stock configuration,
/// `BinaryName = ".../berth-vm"` (docs/VM.md, "Kubernetes").
pub const VM_PROGRAM: &str = "berth-vm";
static VM_BY_NAME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called with argv[0] at start-up.
pub fn select_by_program_name(argv0: &std::ffi::OsStr) {
    if Path::new(argv0).file_name() == Some(std::ffi::OsStr::new(VM_PROGRAM)) {
        VM_BY_NAME.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether the container in this state directory is a VM container.
pub fn is_vm(locked: &Locked) -> bool {
    locked.dir.join(VM_FILE).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn sizes_and_vcpus() {
        assert_eq!(parse_mib("512"), Some(512));
        assert_eq!(parse_mib("2G"), Some(2048));
        assert_eq!(parse_mib("x"), None);
        let s = spec(serde_json::json!({"ociVersion": "1.2.0",
            "annotations": {"run.berth.isolation": "vm"},
            "linux": {"resources": {"memory": {"limit": 300 * 1024 * 1024 + 1}, "cpu": {"quota": 150000, "period": 100000}}}}));
        assert!(wanted(&s));
        assert_eq!(memory_mib(&s).unwrap(), 301);
        assert_eq!(cpus(&s).unwrap(), 2);
        let s = spec(serde_json::json!({"ociVersion": "1.2.0", "linux": {"resources": {"cpu": {"cpus": "0-2,5"}}}}));
        assert!(!wanted(&s));
        assert_eq!(cpus(&s).unwrap(), 4);
        assert_eq!(memory_mib(&s).unwrap(), DEFAULT_MEM_MIB);
        let s = spec(serde_json::json!({"ociVersion": "1.2.0",
            "annotations": {"run.berth.isolation": "vm", "io.kubernetes.cri.container-type": "sandbox"}}));
        assert!(wanted(&s), "a CRI sandbox asking for a VM boots the pod's VM");
        let s = spec(serde_json::json!({"ociVersion": "1.2.0", "annotations": {"run.berth.vm.cpus": "0"}}));
        assert!(cpus(&s).unwrap_err().to_string().contains(ANN_CPUS));
    }

    #[test]
    fn guest_config_drops_host_things() {
        let s = spec(serde_json::json!({"ociVersion": "1.2.0", "root": {"path": "rootfs"},
            "hooks": {"poststop": [{"path": "/bin/true"}]},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/x", "type": "bind", "source": "/tmp", "options": ["rbind"]}],
            "linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}, {"type": "network", "path": "/proc/1/ns/net"},
                {"type": "user", "path": "/proc/1/ns/user"}]}}));
        let binds = binds::Binds {
            shares: Vec::new(),
            of_mount: vec![(1, 0)],
        };
        let g = guest_config(&s, &binds).unwrap();
        assert_eq!(g["root"]["path"], proto::GUEST_ROOTFS);
        assert!(g.get("hooks").is_none(), "poststop runs on the host");
        assert_eq!(
            g["mounts"][1]["source"], "/run/binds/0",
            "the bind's share in the guest"
        );
        assert_eq!(
            g["linux"]["namespaces"],
            serde_json::json!([{"type": "pid"}]),
            "the network namespace is the guest's, configured as the host's (net.rs)"
        );
    }
}
