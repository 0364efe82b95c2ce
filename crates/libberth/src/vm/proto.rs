//! The host<->guest protocol of VM containers (documented in docs/VM.md). Everything is a line of
//! UTF-8 text ending in `\n`, a verb and its argument separated by one space.
//!
//! On the control port (`berth.ctl`), host -> guest requests and guest -> host replies:
//!   `create <json>`   -> `ready <pid>` | `error <message>`   (json: a [`CreateMsg`])
//!   `start`           -> `ok` | `error <message>`
//!   `kill <sig> <0|1>`-> `ok` | `error <message>`            (1: every process of the container)
//! On the exit port (`berth.exit`), guest -> host, once, just before the guest powers off:
//!   `exit <code>`     (the shell-style status: 128+n for a signal)

use serde::{Deserialize, Serialize};

/// Virtio-serial port names (the guest finds its ports by these names in sysfs).
pub const PORT_CTL: &str = "berth.ctl";
pub const PORT_STDIO: &str = "berth.stdio";
pub const PORT_STDERR: &str = "berth.stderr";
pub const PORT_EXIT: &str = "berth.exit";
/// The virtio-fs tag of the shared rootfs.
pub const FS_TAG: &str = "rootfs";
/// Where the guest mounts the container's root and writes the guest bundle.
pub const GUEST_ROOTFS: &str = "/run/rootfs";
pub const GUEST_BUNDLE: &str = "/run/bundle";
/// The container's ID inside the guest (one container per VM).
pub const GUEST_ID: &str = "ctr";
/// Written on the exit port by the agent in probe mode (`berth.probe` on the kernel command line).
pub const PROBE_MARKER: &str = "berth-guest-probe-ok";

/// The argument of `create`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct CreateMsg {
    /// The container's config.json as the guest must see it (root.path, hooks, namespace paths
    /// already adapted by the host).
    pub config: serde_json::Value,
    /// Whether the host's stdin is worth reading (false: /dev/null for the process).
    pub stdin: bool,
    /// A block device to mount as the root (from `vm.image`) instead of the shared directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<String>,
}

/// Split a protocol line into its verb and argument.
pub fn split(line: &str) -> (&str, &str) {
    let line = line.trim_end_matches('\n');
    match line.split_once(' ') {
        Some((v, a)) => (v, a),
        None => (line, ""),
    }
}

/// Accumulates bytes and yields whole lines.
#[derive(Default)]
pub struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn next_line(&mut self) -> Option<String> {
        let nl = self.buf.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=nl).collect();
        Some(String::from_utf8_lossy(&line[..nl]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_reads() {
        let mut b = LineBuf::default();
        b.push(b"kill 9");
        assert_eq!(b.next_line(), None);
        b.push(b" 0\nstart\npart");
        assert_eq!(b.next_line().as_deref(), Some("kill 9 0"));
        assert_eq!(split("kill 9 0"), ("kill", "9 0"));
        assert_eq!(b.next_line().as_deref(), Some("start"));
        assert_eq!(split("start"), ("start", ""));
        assert_eq!(b.next_line(), None);
    }
}
