//! The systemd cgroup driver (`--systemd-cgroup`), as runc does it: `linux.cgroupsPath` is
//! `slice:prefix:name`, the container's cgroup is the transient scope unit `<prefix>-<name>.scope`
//! in that slice, started through systemd's D-Bus API with the container's init in it
//! (`Delegate=yes`) and the resources systemd knows as unit properties. The rest of
//! `linux.resources` is written to the scope's cgroup files by the cgroupfs code.
//!
//! Root talks to the system manager on the system bus. A rootless caller (not root, or root only
//! in a user namespace of its own, as under rootless podman) talks to its user manager
//! (`systemd --user`) on the user's bus, as runc does: its scopes are under the manager's own
//! cgroup (`/user.slice/user-<uid>.slice/user@<uid>.service`), `user.slice` by default.
//!
//! The D-Bus client is a minimal synchronous one written here (docs/ARCHITECTURE.md says why):
//! one Unix socket, SASL EXTERNAL, and marshalling for the five calls Berth makes (Hello,
//! AddMatch, StartTransientUnit, SetUnitProperties, StopUnit/ResetFailedUnit). It starts no
//! thread: the runtime calls it between its raw clone of init and the `setns` into init's mount
//! namespace, both of which need a single-threaded process.

use crate::{bail, err, Error, Result};
use oci_spec::runtime::LinuxResources;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Berth's scope prefix when `linux.cgroupsPath` is empty (runc uses `runc`).
pub const DEFAULT_PREFIX: &str = "berth";
/// The parent slice when the path names none (runc's default for root).
pub const DEFAULT_SLICE: &str = "system.slice";
/// The same for a rootless caller, in its user manager (runc's default too).
pub const DEFAULT_USER_SLICE: &str = "user.slice";
/// How long a unit's start or stop may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(25);
/// The longest message read from the bus (Berth's replies and signals are a few hundred bytes).
const MAX_MESSAGE: usize = 1 << 20;

/// Whether systemd runs this host (as sd_booted(3) tells).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Whether this caller is rootless for the driver: not root, or root only in a user namespace
/// (its uid map is not the initial namespace's `0 0 4294967295`). Such a caller cannot use the
/// system manager (the system bus sees its real uid) and talks to its user manager instead.
pub fn rootless() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return true;
    }
    // Root whose map cannot be read is taken for root (as before user namespaces existed).
    let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") else {
        return false;
    };
    map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"]
}

/// The uid the bus sees for this process: the effective uid mapped out of its user namespace
/// (one level; the bus daemon and the user manager run in the parent namespace).
fn bus_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    host_uid(euid, &map).unwrap_or(euid)
}

/// `uid` (inside) through the lines of a uid_map (`inside outside count`).
fn host_uid(uid: u32, uid_map: &str) -> Option<u32> {
    uid_map.lines().find_map(|l| {
        let v: Vec<u64> = l.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        let [inside, outside, count] = v[..] else { return None };
        let u = u64::from(uid);
        (u >= inside && u < inside + count).then(|| u32::try_from(outside + (u - inside)).ok())?
    })
}

/// `slice:prefix:name` (runc's format; empty means `system.slice:berth:<id>`) to the cgroup path
/// of the scope, relative to the hierarchy's root: `/<expanded slice>/<prefix>-<name>.scope`.
pub fn cgroup_path(cgroups_path: &str, id: &str) -> Result<String> {
    cgroup_path_in(cgroups_path, id, DEFAULT_SLICE)
}

/// The same for a rootless caller: the scope in its user manager, whose own cgroup is `manager`
/// (`/user.slice/user-<uid>.slice/user@<uid>.service`); `user.slice` when no slice is named.
pub fn user_cgroup_path(cgroups_path: &str, id: &str, manager: &str) -> Result<String> {
    let path = cgroup_path_in(cgroups_path, id, DEFAULT_USER_SLICE)?;
    Ok(format!("{}{path}", manager.trim_end_matches('/')))
}

fn cgroup_path_in(cgroups_path: &str, id: &str, default_slice: &str) -> Result<String> {
    let (slice, prefix, name) = if cgroups_path.is_empty() {
        (default_slice, DEFAULT_PREFIX, id)
    } else {
        let parts: Vec<&str> = cgroups_path.split(':').collect();
        let [s, p, n] = parts.as_slice() else {
            bail!(
                "linux.cgroupsPath: expected \"slice:prefix:name\" for systemd cgroups, got {cgroups_path:?} instead"
            );
        };
        (if s.is_empty() { default_slice } else { *s }, *p, *n)
    };
    let slice_dir = expand_slice(slice)?;
    if name.is_empty() {
        bail!("linux.cgroupsPath: {cgroups_path:?}: the name part is empty");
    }
    if name.ends_with(".slice") {
        bail!("linux.cgroupsPath: {cgroups_path:?}: a container in a slice unit of its own is not supported (only a scope)");
    }
    for (what, v) in [("prefix", prefix), ("name", name)] {
        if !v.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-\\".contains(c)) || v.contains(':') {
            bail!("linux.cgroupsPath: {cgroups_path:?}: the {what} {v:?} is not valid in a systemd unit name");
        }
    }
    let unit = if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    if unit.len() > 255 {
        bail!("linux.cgroupsPath: {cgroups_path:?}: the unit name {unit:?} is longer than 255 characters");
    }
    Ok(format!("{}/{unit}", slice_dir.trim_end_matches('/')))
}

/// `a-b.slice` to `/a.slice/a-b.slice` (systemd's nesting of slices; `-.slice` is the root).
pub fn expand_slice(slice: &str) -> Result<String> {
    let bad = || err!("linux.cgroupsPath: invalid slice name {slice:?}");
    let Some(base) = slice.strip_suffix(".slice") else {
        return Err(bad());
    };
    if slice.contains('/') || !slice.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-\\".contains(c)) {
        return Err(bad());
    }
    if base == "-" {
        return Ok("/".into());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for comp in base.split('-') {
        if comp.is_empty() {
            return Err(bad());
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(comp);
        path.push_str(".slice");
        prefix.push_str(comp);
        prefix.push('-');
    }
    Ok(path)
}

/// The unit of a systemd-driver cgroup path (its last component).
pub fn unit_of(cgroup_path: &str) -> &str {
    cgroup_path.rsplit('/').next().unwrap_or(cgroup_path)
}

/// The slice unit a cgroup path is in.
fn slice_of(cgroup_path: &str) -> String {
    let parent = cgroup_path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    match parent.rsplit('/').next() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "-.slice".into(),
    }
}

/// A D-Bus value of a unit property.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    U64(u64),
    U32Array(Vec<u32>),
    Bytes(Vec<u8>),
    /// a(ss): DeviceAllow's (device, permissions) pairs.
    Pairs(Vec<(String, String)>),
}

impl Value {
    fn signature(&self) -> &'static str {
        match self {
            Value::Str(_) => "s",
            Value::Bool(_) => "b",
            Value::U64(_) => "t",
            Value::U32Array(_) => "au",
            Value::Bytes(_) => "ay",
            Value::Pairs(_) => "a(ss)",
        }
    }
}

pub type Props = Vec<(&'static str, Value)>;

/// A cpu list ("0-3,6") as systemd's bit mask (byte i, bit j: cpu 8i+j).
pub fn cpu_mask(list: &str, field: &str) -> Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = match (a.trim().parse(), b.trim().parse()) {
            (Ok(a), Ok(b)) if a <= b && b < 8192 => (a, b),
            _ => bail!("{field}: {list:?} is not a valid list"),
        };
        for c in a..=b {
            let i = (c / 8) as usize;
            if out.len() <= i {
                out.resize(i + 1, 0);
            }
            out[i] |= 1 << (c % 8);
        }
    }
    Ok(out)
}

/// The unit properties for `linux.resources` that systemd knows (as runc's cgroup v2 driver sets
/// them). Values are checked again by the cgroupfs plan, which writes the files as well.
pub fn resource_props(r: &LinuxResources) -> Result<Props> {
    let mut p: Props = Vec::new();
    let inf = |v: i64| if v < 0 { u64::MAX } else { v as u64 };
    if let Some(m) = r.memory() {
        let limit = m.limit().unwrap_or(0);
        if limit != 0 {
            p.push(("MemoryMax", Value::U64(inf(limit))));
        }
        if let Some(res) = m.reservation().filter(|&v| v != 0) {
            p.push(("MemoryLow", Value::U64(inf(res))));
        }
        if let Some(swap) = m.swap().filter(|&v| v != 0) {
            let v2 = if swap == -1 {
                -1
            } else if limit <= 0 {
                bail!("linux.resources.memory.swap: a swap limit needs a memory limit");
            } else if swap < limit {
                bail!("linux.resources.memory.swap: {swap} is below linux.resources.memory.limit {limit}");
            } else {
                swap - limit
            };
            p.push(("MemorySwapMax", Value::U64(inf(v2))));
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares().filter(|&s| s != 0) {
            let s = shares.clamp(2, 262_144);
            p.push(("CPUWeight", Value::U64(1 + ((s - 2) * 9999) / 262_142)));
        }
        let quota = c.quota().unwrap_or(0);
        let period = c.period().unwrap_or(0);
        if quota != 0 || period != 0 {
            let period = if period == 0 { 100_000 } else { period };
            p.push(("CPUQuotaPeriodUSec", Value::U64(period)));
            if quota > 0 {
                // Per second, rounded up to systemd's 10 ms granularity (as runc).
                let mut per_sec = (quota as u64).saturating_mul(1_000_000) / period;
                if !per_sec.is_multiple_of(10_000) {
                    per_sec = (per_sec / 10_000 + 1) * 10_000;
                }
                p.push(("CPUQuotaPerSecUSec", Value::U64(per_sec)));
            } else if quota < 0 {
                p.push(("CPUQuotaPerSecUSec", Value::U64(u64::MAX)));
            }
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.trim().is_empty()) {
            p.push(("AllowedCPUs", Value::Bytes(cpu_mask(cpus, "linux.resources.cpu.cpus")?)));
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.trim().is_empty()) {
            p.push((
                "AllowedMemoryNodes",
                Value::Bytes(cpu_mask(mems, "linux.resources.cpu.mems")?),
            ));
        }
    }
    if let Some(pids) = r.pids() {
        let l = pids.limit();
        if l > 0 || l == -1 {
            p.push(("TasksMax", Value::U64(inf(l))));
        }
    }
    if let Some(w) = r.block_io().as_ref().and_then(|b| b.weight()).filter(|&w| w != 0) {
        let w = u64::from(w.clamp(10, 1000));
        p.push(("IOWeight", Value::U64(1 + (w - 10) * 9999 / 990)));
    }
    Ok(p)
}

/// The device group name of a major number in /proc/devices (`char-<name>` in DeviceAllow).
fn device_group(kind: char, major: u32, proc_devices: &str) -> Option<String> {
    let section = if kind == 'c' {
        "Character devices:"
    } else {
        "Block devices:"
    };
    let mut inside = false;
    for line in proc_devices.lines() {
        if line.ends_with(':') {
            inside = line == section;
            continue;
        }
        let mut it = line.split_whitespace();
        if inside && it.next().and_then(|m| m.parse::<u32>().ok()) == Some(major) {
            return it.next().map(String::from);
        }
    }
    None
}

/// DevicePolicy and DeviceAllow for `linux.resources.devices`, as runc: the rules are played in
/// order (an `a` rule resets to allow-all or deny-all) and an allow-list becomes
/// `DevicePolicy=strict` with one DeviceAllow entry per rule (`char-*`, `char-<group>` for a
/// major with any minor, `/dev/char/M:m`). systemd has no deny-lists: an allow-all is
/// `DevicePolicy=auto`; other deny-lists get no properties (Berth's own device program on the
/// scope enforces every rule either way).
pub fn device_props(rules: &[oci_spec::runtime::LinuxDeviceCgroup], proc_devices: &str) -> Result<Props> {
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let mut default_allow = false;
    // (type, major, minor) -> permissions, in first-seen order (None: any).
    type Device = (char, Option<u32>, Option<u32>);
    let mut list: Vec<(Device, String)> = Vec::new();
    for w in super::v1::devices(rules)? {
        let allow = w.file == "devices.allow";
        let mut parts = w.value.split_whitespace();
        let (Some(t), Some(mm), perms) = (parts.next(), parts.next(), parts.next().unwrap_or("rwm")) else {
            bail!("{}: bad device rule {:?}", w.field, w.value);
        };
        let kind = t.chars().next().unwrap_or('a');
        if kind == 'a' {
            default_allow = allow;
            list.clear();
            continue;
        }
        let num = |s: &str| if s == "*" { Ok(None) } else { s.parse::<u32>().map(Some) };
        let (maj, min) = mm.split_once(':').unwrap_or((mm, "*"));
        let (Ok(maj), Ok(min)) = (num(maj), num(min)) else {
            bail!("{}: bad device rule {:?}", w.field, w.value);
        };
        let key = (kind, maj, min);
        let pos = list.iter().position(|(k, _)| *k == key);
        if allow != default_allow {
            // An exception to the default: add the permissions.
            match pos {
                Some(i) => {
                    for c in perms.chars() {
                        if !list[i].1.contains(c) {
                            list[i].1.push(c);
                        }
                    }
                }
                None => list.push((key, perms.to_string())),
            }
        } else if let Some(i) = pos {
            list[i].1.retain(|c| !perms.contains(c));
            if list[i].1.is_empty() {
                list.remove(i);
            }
        }
    }
    if default_allow {
        if list.is_empty() {
            return Ok(vec![
                ("DevicePolicy", Value::Str("auto".into())),
                ("DeviceAllow", Value::Pairs(Vec::new())),
            ]);
        }
        return Ok(Vec::new());
    }
    let mut allow = Vec::new();
    for ((kind, maj, min), perms) in list {
        let prefix = if kind == 'c' { "char" } else { "block" };
        let perms: String = "rwm".chars().filter(|c| perms.contains(*c)).collect();
        let dev = match (maj, min) {
            (None, _) => format!("{prefix}-*"),
            (Some(m), None) => match device_group(kind, m, proc_devices) {
                Some(g) => format!("{prefix}-{g}"),
                // Not in /proc/devices (no driver): nothing to allow (runc skips it too).
                None => continue,
            },
            (Some(m), Some(n)) => format!("/dev/{prefix}/{m}:{n}"),
        };
        allow.push((dev, perms));
    }
    Ok(vec![
        ("DevicePolicy", Value::Str("strict".into())),
        ("DeviceAllow", Value::Pairs(allow)),
    ])
}

/// The properties of a new scope for `pid` (runc's, with Berth's description).
pub fn scope_props(cgroup_path: &str, id: &str, pid: u32, resources: Option<&LinuxResources>) -> Result<Props> {
    let mut p: Props = vec![
        ("Description", Value::Str(format!("berth container {id}"))),
        ("Slice", Value::Str(slice_of(cgroup_path))),
        ("Delegate", Value::Bool(true)),
        ("PIDs", Value::U32Array(vec![pid])),
        ("DefaultDependencies", Value::Bool(false)),
        ("MemoryAccounting", Value::Bool(true)),
        ("CPUAccounting", Value::Bool(true)),
        ("IOAccounting", Value::Bool(true)),
        ("TasksAccounting", Value::Bool(true)),
    ];
    if let Some(r) = resources {
        p.extend(resource_props(r)?);
        // A user manager cannot enforce device rules (no bpf(2) there): none for a rootless caller.
        if let Some(d) = r.devices().as_deref().filter(|_| !rootless()) {
            let proc_devices = std::fs::read_to_string("/proc/devices").unwrap_or_default();
            p.extend(device_props(d, &proc_devices)?);
        }
    }
    Ok(p)
}

// ---- The D-Bus wire format (little-endian only, as this client writes it). ----

struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    fn pad(&mut self, n: usize) {
        while !self.buf.len().is_multiple_of(n) {
            self.buf.push(0);
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.pad(8);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    fn sig(&mut self, s: &str) {
        self.u8(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    /// An array: its length, then padding to the elements' alignment, then `f`'s elements.
    fn array(&mut self, elem_align: usize, f: impl FnOnce(&mut Enc)) {
        self.u32(0);
        let len_at = self.buf.len() - 4;
        self.pad(elem_align);
        let start = self.buf.len();
        f(self);
        let n = (self.buf.len() - start) as u32;
        self.buf[len_at..len_at + 4].copy_from_slice(&n.to_le_bytes());
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Str(s) => self.str(s),
            Value::Bool(b) => self.u32(u32::from(*b)),
            Value::U64(n) => self.u64(*n),
            Value::U32Array(a) => self.array(4, |e| a.iter().for_each(|x| e.u32(*x))),
            Value::Bytes(b) => self.array(1, |e| e.buf.extend_from_slice(b)),
            Value::Pairs(v) => self.array(8, |e| {
                for (a, b) in v {
                    e.pad(8);
                    e.str(a);
                    e.str(b);
                }
            }),
        }
    }
    /// a(sv)
    fn props(&mut self, props: &Props) {
        self.array(8, |e| {
            for (k, v) in props {
                e.pad(8);
                e.str(k);
                e.sig(v.signature());
                e.value(v);
            }
        });
    }
}

/// An argument of a method call.
enum Arg<'a> {
    Str(&'a str),
    Bool(bool),
    Props(&'a Props),
    /// a(sa(sv)), always empty here (auxiliary units).
    NoAux,
}

impl Arg<'_> {
    fn signature(&self) -> &'static str {
        match self {
            Arg::Str(_) => "s",
            Arg::Bool(_) => "b",
            Arg::Props(_) => "a(sv)",
            Arg::NoAux => "a(sa(sv))",
        }
    }
}

/// A method call message.
fn method_call(serial: u32, dest: &str, path: &str, iface: &str, member: &str, args: &[Arg]) -> Vec<u8> {
    let mut body = Enc { buf: Vec::new() };
    for a in args {
        match a {
            Arg::Str(s) => body.str(s),
            Arg::Bool(b) => body.u32(u32::from(*b)),
            Arg::Props(p) => body.props(p),
            Arg::NoAux => body.array(8, |_| {}),
        }
    }
    let signature: String = args.iter().map(|a| a.signature()).collect();
    let mut m = Enc { buf: Vec::new() };
    m.buf.extend_from_slice(&[b'l', 1, 0, 1]);
    m.u32(body.buf.len() as u32);
    m.u32(serial);
    m.array(8, |e| {
        let mut field = |code: u8, sig: &str, v: &str| {
            e.pad(8);
            e.u8(code);
            e.sig(sig);
            if sig == "g" {
                e.sig(v)
            } else {
                e.str(v)
            }
        };
        field(1, "o", path);
        field(2, "s", iface);
        field(3, "s", member);
        field(6, "s", dest);
        if !signature.is_empty() {
            field(8, "g", &signature);
        }
    });
    m.pad(8);
    m.buf.extend_from_slice(&body.buf);
    m.buf
}

/// A message read from the bus: what Berth needs of it.
#[derive(Debug, Default)]
struct Msg {
    kind: u8,
    reply_serial: Option<u32>,
    member: String,
    error_name: String,
    signature: String,
    body: Vec<u8>,
}

struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Dec<'_> {
    fn align(&mut self, n: usize) -> Result<()> {
        self.pos = self.pos.div_ceil(n) * n;
        if self.pos > self.b.len() {
            bail!("D-Bus: truncated message");
        }
        Ok(())
    }
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            bail!("D-Bus: truncated message")
        };
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        self.align(4)?;
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let s = String::from_utf8_lossy(self.take(n)?).into_owned();
        self.take(1)?;
        Ok(s)
    }
    fn sig(&mut self) -> Result<String> {
        let n = self.u8()? as usize;
        let s = String::from_utf8_lossy(self.take(n)?).into_owned();
        self.take(1)?;
        Ok(s)
    }
}

/// Parse one whole message (the caller has read exactly its length).
fn parse(buf: &[u8]) -> Result<Msg> {
    if buf.first() != Some(&b'l') {
        bail!("D-Bus: a big-endian message (not supported)");
    }
    let mut d = Dec { b: buf, pos: 1 };
    let mut m = Msg {
        kind: d.u8()?,
        ..Default::default()
    };
    d.take(2)?;
    let body_len = d.u32()? as usize;
    d.u32()?;
    let fields_len = d.u32()? as usize;
    let end = d.pos + fields_len;
    while d.pos < end {
        d.align(8)?;
        let code = d.u8()?;
        let sig = d.sig()?;
        match sig.as_str() {
            "s" | "o" => {
                let v = d.str()?;
                match code {
                    3 => m.member = v,
                    4 => m.error_name = v,
                    _ => {}
                }
            }
            "g" => {
                let v = d.sig()?;
                if code == 8 {
                    m.signature = v;
                }
            }
            "u" => {
                let v = d.u32()?;
                if code == 5 {
                    m.reply_serial = Some(v);
                }
            }
            other => bail!("D-Bus: unexpected header field type {other:?}"),
        }
    }
    d.align(8)?;
    m.body = d.take(body_len)?.to_vec();
    Ok(m)
}

/// The length of the message whose first 16 bytes are `head`.
fn message_len(head: &[u8; 16]) -> Result<usize> {
    if head[0] != b'l' {
        bail!("D-Bus: a big-endian message (not supported)");
    }
    let body = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let fields = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize;
    let len = (16 + fields).div_ceil(8) * 8 + body;
    if len > MAX_MESSAGE {
        bail!("D-Bus: message too long ({len} bytes)");
    }
    Ok(len)
}

/// A connection to the system bus (root) or the user's bus (rootless).
pub struct Bus {
    sock: UnixStream,
    serial: u32,
    /// Jobs finished (JobRemoved signals seen): job path and result.
    removed: Vec<(String, String)>,
}

fn system_bus_path() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .ok()
        .and_then(|a| {
            a.split(';').find_map(|t| {
                t.strip_prefix("unix:path=")
                    .map(|p| p.split(',').next().unwrap_or(p).to_string())
            })
        })
        .unwrap_or_else(|| "/run/dbus/system_bus_socket".into())
}

/// The user's bus: `$DBUS_SESSION_BUS_ADDRESS` (its `unix:path=`) or `$XDG_RUNTIME_DIR/bus`.
fn user_bus_path() -> Result<String> {
    let from_address = std::env::var("DBUS_SESSION_BUS_ADDRESS").ok().and_then(|a| {
        a.split(';').find_map(|t| {
            t.strip_prefix("unix:path=")
                .map(|p| p.split(',').next().unwrap_or(p).to_string())
        })
    });
    if let Some(p) = from_address {
        return Ok(p);
    }
    match std::env::var("XDG_RUNTIME_DIR") {
        Ok(d) if !d.is_empty() => Ok(format!("{}/bus", d.trim_end_matches('/'))),
        _ => bail!(
            "systemd: rootless --systemd-cgroup needs the user's bus: neither DBUS_SESSION_BUS_ADDRESS (unix:path=) nor XDG_RUNTIME_DIR is set (a systemd user session: loginctl enable-linger)"
        ),
    }
}

impl Bus {
    /// The bus of the manager this caller's scopes belong to: the user's when rootless.
    pub fn for_caller() -> Result<Bus> {
        if rootless() {
            Bus::connect(&user_bus_path()?, "the user's bus")
        } else {
            Bus::connect(&system_bus_path(), "the system bus")
        }
    }

    /// Connect, authenticate as our uid, say Hello and listen for finished jobs.
    fn connect(path: &str, what: &str) -> Result<Bus> {
        let sock =
            UnixStream::connect(path).map_err(|e| Error::sys(format!("systemd: connect to {what} at {path}"), e))?;
        sock.set_read_timeout(Some(CALL_TIMEOUT)).ok();
        sock.set_write_timeout(Some(CALL_TIMEOUT)).ok();
        let mut bus = Bus {
            sock,
            serial: 0,
            removed: Vec::new(),
        };
        let uid = bus_uid().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        let auth = format!("\0AUTH EXTERNAL {hex}\r\n");
        bus.sock
            .write_all(auth.as_bytes())
            .map_err(|e| Error::sys("systemd: D-Bus authentication", e))?;
        let line = bus.read_line()?;
        if !line.starts_with("OK ") {
            bail!("systemd: D-Bus authentication refused: {line:?}");
        }
        bus.sock
            .write_all(b"BEGIN\r\n")
            .map_err(|e| Error::sys("systemd: D-Bus authentication", e))?;
        bus.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "Hello",
            &[],
        )?;
        bus.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "AddMatch",
            &[Arg::Str(
                "type='signal',sender='org.freedesktop.systemd1',interface='org.freedesktop.systemd1.Manager',member='JobRemoved'",
            )],
        )?;
        Ok(bus)
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            match self.sock.read(&mut b) {
                Ok(1) => line.push(b[0]),
                Ok(_) => bail!("systemd: the system bus closed the connection during authentication"),
                Err(e) => return Err(Error::sys("systemd: D-Bus authentication", e)),
            }
            if line.len() > 4096 {
                bail!("systemd: D-Bus authentication: answer too long");
            }
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    }

    /// Read one message, waiting at most `timeout` (None when the time is up).
    fn read_msg(&mut self, timeout: Duration) -> Result<Option<Msg>> {
        let mut p = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: p is a valid pollfd for the socket we own.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(Error::sys("systemd: D-Bus poll", e));
        }
        if n == 0 {
            return Ok(None);
        }
        let mut head = [0u8; 16];
        self.sock
            .read_exact(&mut head)
            .map_err(|e| Error::sys("systemd: D-Bus read", e))?;
        let len = message_len(&head)?;
        let mut buf = head.to_vec();
        buf.resize(len, 0);
        self.sock
            .read_exact(&mut buf[16..])
            .map_err(|e| Error::sys("systemd: D-Bus read", e))?;
        let m = parse(&buf)?;
        if m.kind == 4 && m.member == "JobRemoved" && m.signature == "uoss" {
            let mut d = Dec { b: &m.body, pos: 0 };
            d.u32()?;
            let job = d.str()?;
            d.str()?;
            let result = d.str()?;
            self.removed.push((job, result));
        }
        Ok(Some(m))
    }

    /// Call a method and wait for its reply; an error reply is an error naming the call.
    fn call(&mut self, dest: &str, path: &str, iface: &str, member: &str, args: &[Arg]) -> Result<Msg> {
        self.serial += 1;
        let serial = self.serial;
        let msg = method_call(serial, dest, path, iface, member, args);
        self.sock
            .write_all(&msg)
            .map_err(|e| Error::sys(format!("systemd: D-Bus call {member}"), e))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("systemd: D-Bus call {member}: no reply in {} s", CALL_TIMEOUT.as_secs());
            }
            let Some(m) = self.read_msg(left)? else { continue };
            if m.reply_serial != Some(serial) {
                continue;
            }
            if m.kind == 3 {
                let text = if m.signature.starts_with('s') {
                    Dec { b: &m.body, pos: 0 }.str().unwrap_or_default()
                } else {
                    String::new()
                };
                return Err(Error::new(format!(
                    "systemd: D-Bus call {member} failed: {}: {text}",
                    m.error_name
                )));
            }
            return Ok(m);
        }
    }

    fn manager(&mut self, member: &str, args: &[Arg]) -> Result<Msg> {
        self.call(
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            member,
            args,
        )
    }

    /// The job path of a reply (signature "o").
    fn job_of(m: &Msg) -> String {
        Dec { b: &m.body, pos: 0 }.str().unwrap_or_default()
    }

    /// Wait until the job is removed (its result, `done` on success) or `ready` says so.
    fn wait_job(&mut self, what: &str, job: &str, ready: &dyn Fn() -> bool) -> Result<()> {
        let start = Instant::now();
        let deadline = start + JOB_TIMEOUT;
        loop {
            if let Some((_, result)) = self.removed.iter().find(|(j, _)| j == job) {
                if result == "done" {
                    crate::log::debug(&format!("systemd: {what}: job done in {:?}", start.elapsed()));
                    return Ok(());
                }
                bail!("systemd: {what}: the job {job} ended with {result:?}");
            }
            if ready() {
                crate::log::debug(&format!(
                    "systemd: {what}: done in {:?} (seen in the cgroup)",
                    start.elapsed()
                ));
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "systemd: {what}: the job {job} did not finish in {} s",
                    JOB_TIMEOUT.as_secs()
                );
            }
            self.read_msg(left.min(Duration::from_millis(5)))?;
        }
    }
}

/// Start the scope of `cgroup_path` with `props` (which put the init in it) and wait until it is
/// active with the init in its cgroup.
pub fn start_scope(cgroup_path: &str, pid: i32, props: &Props, started: &std::cell::Cell<bool>) -> Result<()> {
    let unit = unit_of(cgroup_path);
    let mut bus = Bus::for_caller().map_err(|e| e.context(format!("StartTransientUnit {unit}")))?;
    let reply = bus
        .manager(
            "StartTransientUnit",
            &[Arg::Str(unit), Arg::Str("replace"), Arg::Props(props), Arg::NoAux],
        )
        .map_err(|e| e.context(format!("start the scope {unit}")))?;
    started.set(true);
    let job = Bus::job_of(&reply);
    let want = format!("0::{cgroup_path}");
    let in_scope =
        || std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|s| s.lines().any(|l| l == want));
    bus.wait_job(&format!("start the scope {unit}"), &job, &in_scope)?;
    // The job may be reported done a moment before the pid is seen in the cgroup (or without it
    // when init died): check.
    let until = Instant::now() + Duration::from_secs(2);
    while !in_scope() {
        if Instant::now() > until {
            bail!("systemd: start the scope {unit}: the container's init (pid {pid}) is not in {cgroup_path}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// What `Cgroup::add` does with the systemd driver: start the scope with the init in it, then
/// write the rest of `linux.resources` to its cgroup files.
pub struct Placement {
    pub cgroup_path: String,
    pub id: String,
    pub resources: Option<LinuxResources>,
    pub plan: super::resources::Plan,
    /// Set once systemd accepted the unit: only then is it this create's to stop on failure (a
    /// unit of the same name started by someone else meanwhile is not).
    pub started: std::rc::Rc<std::cell::Cell<bool>>,
}

impl Placement {
    pub fn place(&self, cg: &super::Cgroup, pid: i32) -> Result<()> {
        let props = scope_props(&self.cgroup_path, &self.id, pid as u32, self.resources.as_ref())?;
        start_scope(&self.cgroup_path, pid, &props, &self.started)?;
        super::resources::apply(cg, &self.plan)
    }
}

/// Set unit properties of a running scope (`update`).
pub fn set_props(cgroup_path: &str, props: &Props) -> Result<()> {
    if props.is_empty() {
        return Ok(());
    }
    let unit = unit_of(cgroup_path);
    let mut bus = Bus::for_caller().map_err(|e| e.context(format!("SetUnitProperties {unit}")))?;
    bus.manager(
        "SetUnitProperties",
        &[Arg::Str(unit), Arg::Bool(true), Arg::Props(props)],
    )
    .map_err(|e| e.context(format!("update the scope {unit}")))?;
    Ok(())
}

/// Stop the scope (if it is still there) and wait until its cgroup is gone; forget it if failed.
pub fn stop_scope(cgroup_path: &str, mount: &Path) -> Result<()> {
    let unit = unit_of(cgroup_path);
    let mut bus = Bus::for_caller().map_err(|e| e.context(format!("StopUnit {unit}")))?;
    let dir = mount.join(cgroup_path.trim_start_matches('/'));
    match bus.manager("StopUnit", &[Arg::Str(unit), Arg::Str("replace")]) {
        Ok(reply) => {
            let job = Bus::job_of(&reply);
            let gone = || !dir.exists();
            bus.wait_job(&format!("stop the scope {unit}"), &job, &gone)
                .map_err(|e| e.context(format!("stop the scope {unit}")))?;
        }
        Err(e) if e.to_string().contains("org.freedesktop.systemd1.NoSuchUnit") => {}
        Err(e) => return Err(e.context(format!("stop the scope {unit}"))),
    }
    // A scope whose processes were killed may be left "failed" (its name then stays taken).
    let _ = bus.manager("ResetFailedUnit", &[Arg::Str(unit)]);
    Ok(())
}

/// The cgroup of the caller's user manager (its `ControlGroup` property), under which its scopes
/// are: `/user.slice/user-<uid>.slice/user@<uid>.service`.
pub fn user_manager_cgroup() -> Result<String> {
    let mut bus = Bus::for_caller().map_err(|e| e.context("Get ControlGroup of the user manager"))?;
    let reply = bus
        .call(
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.DBus.Properties",
            "Get",
            &[Arg::Str("org.freedesktop.systemd1.Manager"), Arg::Str("ControlGroup")],
        )
        .map_err(|e| e.context("the user manager's cgroup"))?;
    let mut d = Dec { b: &reply.body, pos: 0 };
    let (sig, cg) = (d.sig()?, d.str()?);
    if sig != "s" || !cg.starts_with('/') || cg.split('/').any(|c| c == "..") {
        bail!("systemd: the user manager's ControlGroup is {cg:?} (type {sig:?}), not a cgroup path");
    }
    Ok(cg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(cgroup_path("", "c1").unwrap(), "/system.slice/berth-c1.scope");
        assert_eq!(
            cgroup_path("machine.slice:libpod:abc", "x").unwrap(),
            "/machine.slice/libpod-abc.scope"
        );
        assert_eq!(cgroup_path(":runc:abc", "x").unwrap(), "/system.slice/runc-abc.scope");
        assert_eq!(
            cgroup_path("a-b-c.slice::n", "x").unwrap(),
            "/a.slice/a-b.slice/a-b-c.slice/n.scope"
        );
        assert_eq!(cgroup_path("-.slice:p:n", "x").unwrap(), "/p-n.scope");
        for bad in [
            "/a/b",
            "a:b",
            "a.slice:p:n:x",
            "a--b.slice:p:n",
            "-a.slice:p:n",
            "a-.slice:p:n",
            "a:p:n",
            "a/b.slice:p:n",
            "m.slice:p:",
            "m.slice:p/q:n",
            "m.slice:p:n.slice",
        ] {
            let e = cgroup_path(bad, "x").unwrap_err().to_string();
            assert!(e.contains("linux.cgroupsPath"), "{bad}: {e}");
        }
        assert_eq!(unit_of("/machine.slice/libpod-abc.scope"), "libpod-abc.scope");
        assert_eq!(slice_of("/machine.slice/libpod-abc.scope"), "machine.slice");
        assert_eq!(slice_of("/a.slice/a-b.slice/n.scope"), "a-b.slice");
        assert_eq!(slice_of("/n.scope"), "-.slice");
    }

    #[test]
    fn rootless_paths_are_under_the_user_manager() {
        let m = "/user.slice/user-1000.slice/user@1000.service";
        assert_eq!(
            user_cgroup_path("", "c1", m).unwrap(),
            format!("{m}/user.slice/berth-c1.scope")
        );
        assert_eq!(
            user_cgroup_path("user.slice:libpod:abc", "x", m).unwrap(),
            format!("{m}/user.slice/libpod-abc.scope")
        );
        assert_eq!(
            user_cgroup_path(":p:n", "x", &format!("{m}/")).unwrap(),
            format!("{m}/user.slice/p-n.scope")
        );
        let path = user_cgroup_path("a-b.slice:p:n", "x", m).unwrap();
        assert_eq!(unit_of(&path), "p-n.scope");
        assert_eq!(slice_of(&path), "a-b.slice");
        assert!(user_cgroup_path("a:b", "x", m).is_err());
    }

    #[test]
    fn the_bus_sees_the_uid_outside_the_user_namespace() {
        let podman = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(host_uid(0, podman), Some(1000));
        assert_eq!(host_uid(1, podman), Some(100000));
        assert_eq!(host_uid(65536, podman), Some(165535));
        assert_eq!(host_uid(65537, podman), None);
        assert_eq!(host_uid(1000, "0 0 4294967295"), Some(1000));
        assert_eq!(host_uid(0, ""), None);
    }

    #[test]
    fn devices() {
        let rules: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
                {"allow":true,"type":"c","major":136,"access":"rwm"},{"allow":true,"type":"c","access":"m"},
                {"allow":true,"type":"b","major":8,"minor":0,"access":"r"},{"allow":false,"type":"c","major":1,"minor":3,"access":"w"}]"#,
        )
        .unwrap();
        let pd = "Character devices:\n  1 mem\n136 pts\n\nBlock devices:\n  8 sd\n";
        let p = device_props(&rules, pd).unwrap();
        assert_eq!(p[0], ("DevicePolicy", Value::Str("strict".into())));
        let Value::Pairs(list) = &p[1].1 else { panic!("{p:?}") };
        let got: Vec<(&str, &str)> = list.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        // The spec's rules, then runc's default devices merged in (1:3 gets its w back from them).
        assert_eq!(
            got,
            [
                ("/dev/char/1:3", "rwm"),
                ("char-pts", "rwm"),
                ("char-*", "m"),
                ("/dev/block/8:0", "r"),
                ("block-*", "m"),
                ("/dev/char/1:8", "rwm"),
                ("/dev/char/1:7", "rwm"),
                ("/dev/char/5:0", "rwm"),
                ("/dev/char/1:5", "rwm"),
                ("/dev/char/1:9", "rwm"),
                ("/dev/char/5:2", "rwm"),
                ("/dev/char/10:200", "rwm"),
            ]
        );
        assert_eq!(p[1].0, "DeviceAllow");
        let all: Vec<oci_spec::runtime::LinuxDeviceCgroup> =
            serde_json::from_str(r#"[{"allow":false,"access":"rwm"},{"allow":true,"access":"rwm"}]"#).unwrap();
        assert_eq!(
            device_props(&all, pd).unwrap()[0],
            ("DevicePolicy", Value::Str("auto".into()))
        );
        let deny_list: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":true,"access":"rwm"},{"allow":false,"type":"c","major":1,"minor":1,"access":"rwm"}]"#,
        )
        .unwrap();
        assert!(device_props(&deny_list, pd).unwrap().is_empty());
    }

    #[test]
    fn masks() {
        assert_eq!(cpu_mask("0-3,9", "f").unwrap(), vec![0x0f, 0x02]);
        assert_eq!(cpu_mask("1", "f").unwrap(), vec![0x02]);
        assert!(cpu_mask("3-1", "f").is_err());
        assert!(cpu_mask("x", "f").is_err());
    }

    #[test]
    fn resources() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":67108864,"swap":134217728},"pids":{"limit":-1},
                "cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0-1"},"blockIO":{"weight":500}}"#,
        )
        .unwrap();
        let p = resource_props(&r).unwrap();
        let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("MemoryMax"), Some(Value::U64(67108864)));
        assert_eq!(get("MemorySwapMax"), Some(Value::U64(67108864)));
        assert_eq!(get("TasksMax"), Some(Value::U64(u64::MAX)));
        assert_eq!(get("CPUWeight"), Some(Value::U64(39)));
        assert_eq!(get("CPUQuotaPerSecUSec"), Some(Value::U64(500_000)));
        assert_eq!(get("CPUQuotaPeriodUSec"), Some(Value::U64(100_000)));
        assert_eq!(get("AllowedCPUs"), Some(Value::Bytes(vec![3])));
        assert_eq!(get("IOWeight"), Some(Value::U64(4950)));
        let r: LinuxResources = serde_json::from_str(r#"{"cpu":{"quota":33333}}"#).unwrap();
        let p = resource_props(&r).unwrap();
        assert!(p.contains(&("CPUQuotaPerSecUSec", Value::U64(340_000))));
    }

    #[test]
    fn wire_format() {
        // A known encoding: a(sv) with one string property, then the header's fields.
        let props: Props = vec![("Delegate", Value::Bool(true)), ("PIDs", Value::U32Array(vec![7]))];
        let m = method_call(
            5,
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "StartTransientUnit",
            &[Arg::Str("a.scope"), Arg::Str("replace"), Arg::Props(&props), Arg::NoAux],
        );
        let head: [u8; 16] = m[..16].try_into().unwrap();
        assert_eq!(message_len(&head).unwrap(), m.len());
        let parsed = parse(&m).unwrap();
        assert_eq!(parsed.kind, 1);
        assert_eq!(parsed.member, "StartTransientUnit");
        assert_eq!(parsed.signature, "ssa(sv)a(sa(sv))");
        let b = &parsed.body;
        // "a.scope": len 7, bytes, nul
        assert_eq!(&b[..12], b"\x07\0\0\0a.scope\0");
        // "replace" at 12
        assert_eq!(&b[12..24], b"\x07\0\0\0replace\0");
        // array length at 24, elements from 32 (8-aligned): ("Delegate", b true)
        let n = u32::from_le_bytes(b[24..28].try_into().unwrap()) as usize;
        assert_eq!(&b[32..48], b"\x08\0\0\0Delegate\0\x01b\0");
        assert_eq!(&b[48..52], &1u32.to_le_bytes());
        // next struct at 56: "PIDs", "au", array of one u32
        assert_eq!(&b[56..65], b"\x04\0\0\0PIDs\0");
        assert_eq!(&b[65..69], b"\x02au\0");
        assert_eq!(&b[72..80], &[4, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(n, 80 - 32);
        // The empty a(sa(sv)): length 0, padded to 8.
        assert_eq!(&b[80..84], &[0, 0, 0, 0]);
        assert_eq!(b.len(), 88);
    }
}
