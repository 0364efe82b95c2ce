//! Numbers for `berth events`: runc's stats document (cpu, memory, pids, blkio, hugetlb) read from
//! whichever hierarchy holds each controller, and OOM notification (v1: an eventfd registered on
//! memory.oom_control; v2: the oom_kill counter of memory.events).

use super::Cgroup;
use serde_json::{json, Map, Value};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

fn num(dir: &Path, file: &str) -> u64 {
    read(dir, file).and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// "key value" lines (memory.stat, cpu.stat) as a map.
fn kv(dir: &Path, file: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for l in read(dir, file).unwrap_or_default().lines() {
        let mut it = l.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
            m.insert(k.to_string(), v.into());
        }
    }
    m
}

fn get(m: &Map<String, Value>, k: &str) -> u64 {
    m.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn limit(dir: &Path, file: &str) -> u64 {
    match read(dir, file).as_deref().map(str::trim) {
        Some("max") | None => u64::MAX,
        Some(v) => v.parse().unwrap_or(u64::MAX),
    }
}

fn cpu(cg: &Cgroup) -> Value {
    let Some((h, d)) = cg.controller("cpu") else {
        return json!({});
    };
    if h.v2 {
        let s = kv(d, "cpu.stat");
        return json!({
            "usage": {"total": get(&s, "usage_usec") * 1000, "kernel": get(&s, "system_usec") * 1000,
                      "user": get(&s, "user_usec") * 1000},
            "throttling": {"periods": get(&s, "nr_periods"), "throttledPeriods": get(&s, "nr_throttled"),
                           "throttledTime": get(&s, "throttled_usec") * 1000},
        });
    }
    let s = kv(d, "cpu.stat");
    let mut usage = json!({});
    if let Some((_, a)) = cg.controller("cpuacct") {
        // SAFETY: sysconf with a constant.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let st = kv(a, "cpuacct.stat");
        let percpu: Vec<u64> = read(a, "cpuacct.usage_percpu")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        usage = json!({"total": num(a, "cpuacct.usage"), "percpu": percpu,
                       "kernel": get(&st, "system") * 1_000_000_000 / tick,
                       "user": get(&st, "user") * 1_000_000_000 / tick});
    }
    json!({
        "usage": usage,
        "throttling": {"periods": get(&s, "nr_periods"), "throttledPeriods": get(&s, "nr_throttled"),
                       "throttledTime": get(&s, "throttled_time")},
    })
}

fn memory(cg: &Cgroup) -> Value {
    let Some((h, d)) = cg.controller("memory") else {
        return json!({});
    };
    let raw = kv(d, "memory.stat");
    if h.v2 {
        let events = kv(d, "memory.events");
        return json!({
            "cache": get(&raw, "file"),
            "usage": {"usage": num(d, "memory.current"), "limit": limit(d, "memory.max"),
                      "max": num(d, "memory.peak"), "failcnt": get(&events, "max")},
            "swap": {"usage": num(d, "memory.swap.current"), "limit": limit(d, "memory.swap.max"),
                     "max": num(d, "memory.swap.peak")},
            "raw": raw,
        });
    }
    let entry = |p: &str| {
        json!({"usage": num(d, &format!("{p}.usage_in_bytes")), "limit": limit(d, &format!("{p}.limit_in_bytes")),
               "max": num(d, &format!("{p}.max_usage_in_bytes")), "failcnt": num(d, &format!("{p}.failcnt"))})
    };
    json!({
        "cache": get(&raw, "cache"),
        "usage": entry("memory"),
        "swap": entry("memory.memsw"),
        "kernel": entry("memory.kmem"),
        "kernelTCP": entry("memory.kmem.tcp"),
        "raw": raw,
    })
}

fn pids(cg: &Cgroup) -> Value {
    let Some((_, d)) = cg.controller("pids") else {
        return json!({});
    };
    let lim = limit(d, "pids.max");
    json!({"current": num(d, "pids.current"), "limit": if lim == u64::MAX { 0 } else { lim }})
}

fn blkio(cg: &Cgroup) -> Value {
    if let Some((_, d)) = cg.controller("blkio").filter(|(h, _)| !h.v2) {
        let entries = |file: &str| -> Vec<Value> {
            read(d, file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    let (dev, op, v) = (it.next()?, it.next()?, it.next()?.parse::<u64>().ok()?);
                    let (maj, min) = dev.split_once(':')?;
                    Some(json!({"major": maj.parse::<u64>().ok()?, "minor": min.parse::<u64>().ok()?, "op": op, "value": v}))
                })
                .collect()
        };
        return json!({
            "ioServiceBytesRecursive": entries("blkio.throttle.io_service_bytes_recursive"),
            "ioServicedRecursive": entries("blkio.throttle.io_serviced_recursive"),
        });
    }
    let Some((_, d)) = cg.controller("io") else {
        return json!({});
    };
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for l in read(d, "io.stat").unwrap_or_default().lines() {
        let mut it = l.split_whitespace();
        let Some((maj, min)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(maj), Ok(min)) = (maj.parse::<u64>(), min.parse::<u64>()) else {
            continue;
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let v: u64 = v.parse().unwrap_or(0);
            let e = |op: &str| json!({"major": maj, "minor": min, "op": op, "value": v});
            match k {
                "rbytes" => bytes.push(e("Read")),
                "wbytes" => bytes.push(e("Write")),
                "rios" => ios.push(e("Read")),
                "wios" => ios.push(e("Write")),
                _ => {}
            }
        }
    }
    json!({"ioServiceBytesRecursive": bytes, "ioServicedRecursive": ios})
}

fn hugetlb(cg: &Cgroup) -> Value {
    let Some((h, d)) = cg.controller("hugetlb") else {
        return json!({});
    };
    let mut out = Map::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(size) = n.strip_prefix("hugetlb.") else {
            continue;
        };
        if h.v2 {
            if let Some(size) = size.strip_suffix(".current").filter(|s| !s.contains('.')) {
                let ev = kv(d, &format!("hugetlb.{size}.events"));
                out.insert(
                    size.into(),
                    json!({"usage": num(d, &n), "max": limit(d, &format!("hugetlb.{size}.max")), "failcnt": get(&ev, "max")}),
                );
            }
        } else if let Some(size) = size.strip_suffix(".usage_in_bytes").filter(|s| !s.contains('.')) {
            out.insert(
                size.into(),
                json!({"usage": num(d, &n), "max": num(d, &format!("hugetlb.{size}.max_usage_in_bytes")),
                       "failcnt": num(d, &format!("hugetlb.{size}.failcnt"))}),
            );
        }
    }
    Value::Object(out)
}

/// runc's stats document for a cgroup.
pub fn stats(cg: &Cgroup) -> Value {
    json!({
        "cpu": cpu(cg),
        "memory": memory(cg),
        "pids": pids(cg),
        "blkio": blkio(cg),
        "hugetlb": hugetlb(cg),
    })
}

/// Notification of OOM kills in a cgroup.
pub enum OomWatch {
    /// v1: an eventfd the kernel signals on each OOM (registered through cgroup.event_control).
    V1(OwnedFd),
    /// v2: the memory.events file and the oom_kill count last seen.
    V2(std::path::PathBuf, u64),
}

impl OomWatch {
    pub fn new(cg: &Cgroup) -> Option<OomWatch> {
        let (h, d) = cg.controller("memory")?;
        if h.v2 {
            let p = d.join("memory.events");
            let n = get(&kv(d, "memory.events"), "oom_kill");
            return p.exists().then_some(OomWatch::V2(p, n));
        }
        // SAFETY: eventfd with flags; the descriptor is owned right away.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return None;
        }
        // SAFETY: efd is a fresh descriptor.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        let oc = std::fs::File::open(d.join("memory.oom_control")).ok()?;
        let line = format!("{} {}", efd.as_raw_fd(), oc.as_raw_fd());
        std::fs::write(d.join("cgroup.event_control"), line).ok()?;
        Some(OomWatch::V1(efd))
    }

    /// The descriptor to poll (v1), if any.
    pub fn fd(&self) -> Option<i32> {
        match self {
            OomWatch::V1(fd) => Some(fd.as_raw_fd()),
            OomWatch::V2(..) => None,
        }
    }

    /// How many OOM kills happened since the last call.
    pub fn take(&mut self) -> u64 {
        match self {
            OomWatch::V1(fd) => {
                let mut buf = [0u8; 8];
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: p is a valid pollfd; zero timeout.
                if unsafe { libc::poll(&mut p, 1, 0) } <= 0 {
                    return 0;
                }
                // SAFETY: reading 8 bytes into an 8-byte buffer.
                if unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) } != 8 {
                    return 0;
                }
                u64::from_ne_bytes(buf)
            }
            OomWatch::V2(p, last) => {
                let n = p.parent().map_or(0, |d| get(&kv(d, "memory.events"), "oom_kill"));
                let d = n.saturating_sub(*last);
                *last = n;
                d
            }
        }
    }
}
