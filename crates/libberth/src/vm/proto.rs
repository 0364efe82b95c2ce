//! The host<->guest protocol of VM containers (documented in docs/VM.md).
//!
//! The control port (`berth.ctl`) carries frames ([`Frame`]): a stream id, a kind and a payload.
//! The container's monitor owns the port for the VM's life and gives every host client (create,
//! start, kill, exec) a stream of its own; stream 0 is the container's own process. A stream
//! starts with a request (`Q`), answered by one reply (`R`), both a line of text, a verb and its
//! argument:
//!   `create <json>`   -> `ready <pid>` | `error <message>`   (json: a [`CreateMsg`])
//!   `start [<id>]`    -> `ok` | `error <message>`
//!   `kill <sig> <0|1> [<id>]` -> `ok` | `error <message>`    (1: every process of the container)
//!   `exec <json>`     -> `ok <pid>` | `error <message>`      (json: an [`ExecMsg`])
//!   `update <id> <json>` -> `ok` | `error <message>`         (json: linux.resources, a pod member's)
//! then, for stream 0 and an exec, the process's stdio, signals, window size and exit status.
//! A VM holds one container ([`GUEST_ID`], stream 0) or, for a pod, more: a later container of the
//! pod is created on a stream of its own (`"id"` in its [`CreateMsg`]; its stdio, signals and
//! status go on that stream), and `start`, `kill` and `exec` name it; when its stream closes, the
//! guest kills and deletes it (its host process, the stream's client, is the authority).
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
/// The virtio-fs tag of the host bind mounts' sources (vm/binds.rs), and where the guest mounts it.
pub const BINDS_TAG: &str = "binds";
pub const GUEST_BINDS: &str = "/run/binds";
/// Where the guest mounts the container's root and writes the guest bundle.
pub const GUEST_ROOTFS: &str = "/run/rootfs";
pub const GUEST_BUNDLE: &str = "/run/bundle";
/// The ID inside the guest of the container that booted the VM (stream 0).
pub const GUEST_ID: &str = "ctr";
/// The virtio-fs tag of a pod VM's share of its later containers' roots and bind mounts
/// (vm/pod.rs), and where the guest mounts it: `<GUEST_POD>/<id>/rootfs`, `<GUEST_POD>/<id>/binds/<n>`.
pub const POD_TAG: &str = "pod";
pub const GUEST_POD: &str = "/run/pod";
/// In a pod member's config, a namespace `path` naming another container of the VM (the member
/// joins that container's namespace in the guest): `berth:container/<id>`.
pub const NS_OF_CONTAINER: &str = "berth:container/";
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
    /// The bind mounts' sources are shared (tag [`BINDS_TAG`]): mount them at [`GUEST_BINDS`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binds: bool,
    /// The container's network (vm/net.rs): the guest configures it before making the container,
    /// which then shares the guest's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// A later container of a pod (vm/pod.rs): its ID in the guest (its root and binds are in the
    /// pod share; nothing of the VM is set up again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The VM's first container: mount the pod share (tag [`POD_TAG`]) at [`GUEST_POD`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pod: bool,
}

/// The network of the container's namespace as the host read it (vm/net.rs): each interface is a
/// virtio-net device of the VM with the same MAC; `lo` is always brought up.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
pub struct Network {
    pub interfaces: Vec<NetInterface>,
    pub routes: Vec<NetRoute>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NetInterface {
    /// The name in the container's namespace (the guest renames its device to it).
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`: the virtio-net device's MAC, by which the guest finds it.
    pub mac: String,
    pub mtu: u32,
    /// `address/prefix`, IPv4 or IPv6.
    pub addresses: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NetRoute {
    /// `address/prefix` (`0.0.0.0/0`, `::/0` for a default route).
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The interface's name.
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// RT_SCOPE_*: 0 (universe) or 253 (link).
    pub scope: u8,
}

/// The argument of `exec`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ExecMsg {
    /// The OCI process to run (built on the host from the container's process and the flags).
    pub process: serde_json::Value,
    /// Whether the host relays a stdin (false: /dev/null for the process).
    pub stdin: bool,
    /// The container (a pod's later one); none: the VM's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Frame kinds. `h->g`: host to guest; `g->h`: guest to host.
pub mod kind {
    /// h->g: a request, one line of text.
    pub const REQ: u8 = b'Q';
    /// g->h: the reply to the stream's request.
    pub const REPLY: u8 = b'R';
    /// h->g: bytes for the process's stdin (or its terminal).
    pub const STDIN: u8 = b'I';
    /// h->g: end of stdin.
    pub const STDIN_END: u8 = b'D';
    /// g->h: bytes the process wrote to stdout (or its terminal).
    pub const STDOUT: u8 = b'O';
    /// g->h: bytes the process wrote to stderr.
    pub const STDERR: u8 = b'E';
    /// both: `<n>`: n bytes of data frames were delivered; the sender may send n more.
    pub const ACK: u8 = b'A';
    /// h->g: `<signal number>` for the stream's process.
    pub const SIGNAL: u8 = b'S';
    /// h->g: `<rows> <cols>`: the terminal's window size.
    pub const RESIZE: u8 = b'W';
    /// g->h: `<code>`: the process ended (shell-style status); its output is all sent.
    pub const EXIT: u8 = b'X';
    /// monitor->g: the stream's host client is gone (stdin ends, output is dropped).
    pub const CLOSE: u8 = b'C';
    /// monitor->g (stream 0): the container's exit is taken and its output delivered.
    pub const BYE: u8 = b'B';
}

/// Unacknowledged data bytes a sender may have in flight per stream and direction.
pub const WINDOW: usize = 256 * 1024;
/// The largest payload of one frame.
pub const MAX_PAYLOAD: usize = 1 << 20;
const HEADER: usize = 9;

/// One frame: `stream` (u32 LE), `kind` (u8), payload length (u32 LE), payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub stream: u32,
    pub kind: u8,
    pub data: Vec<u8>,
}

impl Frame {
    pub fn new(stream: u32, kind: u8, data: impl Into<Vec<u8>>) -> Frame {
        Frame {
            stream,
            kind,
            data: data.into(),
        }
    }

    /// The payload as text (requests, replies, control values).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The payload's first number (ACK, SIGNAL, EXIT), if any.
    pub fn number(&self) -> Option<i64> {
        self.text().split_whitespace().next()?.parse().ok()
    }

    /// Append the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.to_le_bytes());
        out.push(self.kind);
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.data);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + self.data.len());
        self.encode_into(&mut v);
        v
    }
}

/// Accumulates bytes and yields whole frames.
#[derive(Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame; Err for a frame too large to be ours (the stream is garbage).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[5..9].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            return Err(format!("protocol error: a frame of {len} bytes"));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let stream = u32::from_le_bytes(self.buf[0..4].try_into().expect("4 bytes"));
        let kind = self.buf[4];
        let data = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some(Frame { stream, kind, data }))
    }
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

    #[test]
    fn frames_split_across_reads() {
        let mut wire = Frame::new(7, kind::REQ, "kill 9 0").encode();
        Frame::new(0, kind::STDIN, vec![0u8, 255, 10]).encode_into(&mut wire);
        let mut b = FrameBuf::default();
        b.push(&wire[..5]);
        assert_eq!(b.next_frame(), Ok(None));
        b.push(&wire[5..12]);
        assert_eq!(b.next_frame(), Ok(None));
        b.push(&wire[12..]);
        let f = b.next_frame().unwrap().unwrap();
        assert_eq!((f.stream, f.kind, f.text().as_str()), (7, kind::REQ, "kill 9 0"));
        assert_eq!(
            b.next_frame().unwrap().unwrap(),
            Frame::new(0, kind::STDIN, vec![0u8, 255, 10])
        );
        assert_eq!(b.next_frame(), Ok(None));
        assert_eq!(Frame::new(1, kind::ACK, "4096").number(), Some(4096));
        let mut bad = FrameBuf::default();
        bad.push(&[0, 0, 0, 0, b'O', 255, 255, 255, 255]);
        assert!(bad.next_frame().is_err());
    }
}
