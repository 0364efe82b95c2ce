//! cgroup v1: `linux.resources` as the files of the v1 controllers (memory, cpu, cpuset, pids,
//! blkio, hugetlb, net_cls, net_prio, rdma, devices). Pure translation; `resources` writes them.

use super::resources::W;
use crate::{bail, Result};
use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxHugepageLimit, LinuxMemory, LinuxNetwork,
};

const F: &str = "linux.resources";

pub fn memory(m: &LinuxMemory) -> Result<Vec<W>> {
    let mut w = Vec::new();
    if let Some(v) = m.limit() {
        w.push(W::new("memory.limit_in_bytes", v, format!("{F}.memory.limit")));
    }
    match m.swap() {
        Some(v) => w.push(W::new("memory.memsw.limit_in_bytes", v, format!("{F}.memory.swap"))),
        // An unlimited memory without a swap value makes both unlimited, as runc does (else a swap
        // limit set before would still hold, and update --memory -1 would fail or do nothing);
        // only where the kernel accounts swap.
        None if m.limit() == Some(-1) => {
            w.push(W::new("memory.memsw.limit_in_bytes", -1, format!("{F}.memory.limit")).if_exists())
        }
        None => {}
    }
    if let Some(v) = m.reservation() {
        w.push(W::new(
            "memory.soft_limit_in_bytes",
            v,
            format!("{F}.memory.reservation"),
        ));
    }
    if let Some(v) = m.kernel() {
        w.push(W::new("memory.kmem.limit_in_bytes", v, format!("{F}.memory.kernel")).soft());
    }
    if let Some(v) = m.kernel_tcp() {
        w.push(W::new("memory.kmem.tcp.limit_in_bytes", v, format!("{F}.memory.kernelTCP")).soft());
    }
    if let Some(v) = m.swappiness() {
        if v > 100 {
            bail!("{F}.memory.swappiness: {v} is out of range (0-100)");
        }
        w.push(W::new("memory.swappiness", v, format!("{F}.memory.swappiness")));
    }
    if m.disable_oom_killer() == Some(true) {
        w.push(W::new("memory.oom_control", 1, format!("{F}.memory.disableOOMKiller")));
    }
    Ok(w)
}

pub fn cpu(c: &LinuxCpu) -> Result<Vec<W>> {
    let mut w = Vec::new();
    if let Some(v) = c.shares() {
        w.push(W::new("cpu.shares", v, format!("{F}.cpu.shares")));
    }
    if let Some(v) = c.period() {
        w.push(W::new("cpu.cfs_period_us", v, format!("{F}.cpu.period")));
    }
    if let Some(v) = c.quota() {
        w.push(W::new(
            "cpu.cfs_quota_us",
            if v <= 0 { -1 } else { v },
            format!("{F}.cpu.quota"),
        ));
    }
    if let Some(v) = c.burst() {
        w.push(W::new("cpu.cfs_burst_us", v, format!("{F}.cpu.burst")));
    }
    if let Some(v) = c.realtime_period() {
        w.push(W::new("cpu.rt_period_us", v, format!("{F}.cpu.realtimePeriod")));
    }
    if let Some(v) = c.realtime_runtime() {
        w.push(W::new("cpu.rt_runtime_us", v, format!("{F}.cpu.realtimeRuntime")));
    }
    if let Some(v) = c.idle() {
        w.push(W::new("cpu.idle", v, format!("{F}.cpu.idle")));
    }
    Ok(w)
}

/// cpuset.cpus and cpuset.mems (the same files in v1 and v2).
pub fn cpuset(c: &LinuxCpu) -> Vec<W> {
    let mut w = Vec::new();
    if let Some(v) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        w.push(W::new("cpuset.cpus", v, format!("{F}.cpu.cpus")));
    }
    if let Some(v) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        w.push(W::new("cpuset.mems", v, format!("{F}.cpu.mems")));
    }
    w
}

/// pids.max: a negative limit is "max". (A limit of 0 is "no limit set", as in runc 1.1: nothing
/// is written for it; see `resources`.)
pub fn pids_value(limit: i64) -> String {
    if limit < 0 {
        "max".into()
    } else {
        limit.to_string()
    }
}

/// blkio. Weights go to the CFQ files (blkio.weight) or, on kernels without CFQ, the BFQ ones
/// (blkio.bfq.weight), whichever exists.
pub fn blkio(b: &LinuxBlockIo) -> Result<Vec<W>> {
    let mut w = Vec::new();
    // 0 means unset, as runc reads it (docker sends "weight": 0 by default).
    if let Some(v) = b.weight().filter(|&v| v != 0) {
        check_weight(v, "weight")?;
        w.push(W::new("blkio.weight", v, format!("{F}.blockIO.weight")).alt("blkio.bfq.weight", v));
    }
    if let Some(v) = b.leaf_weight().filter(|&v| v != 0) {
        check_weight(v, "leafWeight")?;
        w.push(W::new("blkio.leaf_weight", v, format!("{F}.blockIO.leafWeight")));
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        if let Some(v) = d.weight() {
            let field = format!("{F}.blockIO.weightDevice[{i}].weight");
            check_weight(v, &format!("weightDevice[{i}].weight"))?;
            let dev = format!("{}:{} {v}", d.major(), d.minor());
            w.push(W::new("blkio.weight_device", &dev, field).alt("blkio.bfq.weight_device", &dev));
        }
        if let Some(v) = d.leaf_weight() {
            check_weight(v, &format!("weightDevice[{i}].leafWeight"))?;
            w.push(W::new(
                "blkio.leaf_weight_device",
                format!("{}:{} {v}", d.major(), d.minor()),
                format!("{F}.blockIO.weightDevice[{i}].leafWeight"),
            ));
        }
    }
    for (name, file, list) in [
        (
            "throttleReadBpsDevice",
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "throttleWriteBpsDevice",
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "throttleReadIOPSDevice",
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "throttleWriteIOPSDevice",
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ] {
        for (i, d) in list.iter().flatten().enumerate() {
            w.push(W::new(
                file,
                format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                format!("{F}.blockIO.{name}[{i}]"),
            ));
        }
    }
    Ok(w)
}

fn check_weight(v: u16, name: &str) -> Result<()> {
    if !(10..=1000).contains(&v) {
        bail!("{F}.blockIO.{name}: {v} is out of range (10-1000)");
    }
    Ok(())
}

/// Validate a hugepage size such as "2MB" and return its byte count.
pub fn page_size_bytes(size: &str) -> Option<u64> {
    let (num, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let mul = match unit {
        "KB" | "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    Some(n * mul)
}

/// hugetlb limits, and the same for reservations where the kernel has the .rsvd files.
pub fn hugetlb(list: &[LinuxHugepageLimit]) -> Result<Vec<W>> {
    let mut w = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let size = h.page_size();
        if page_size_bytes(size).is_none() {
            bail!("{F}.hugepageLimits[{i}].pageSize: {size:?} is not a size like 2MB or 1GB");
        }
        let field = format!("{F}.hugepageLimits[{i}]");
        w.push(W::new(
            format!("hugetlb.{size}.limit_in_bytes"),
            h.limit(),
            field.clone(),
        ));
        w.push(W::new(format!("hugetlb.{size}.rsvd.limit_in_bytes"), h.limit(), field).if_exists());
    }
    Ok(w)
}

pub fn net_cls(n: &LinuxNetwork) -> Vec<W> {
    n.class_id()
        .map(|c| W::new("net_cls.classid", c, format!("{F}.network.classID")))
        .into_iter()
        .collect()
}

pub fn net_prio(n: &LinuxNetwork) -> Vec<W> {
    n.priorities()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            W::new(
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
                format!("{F}.network.priorities[{i}]"),
            )
        })
        .collect()
}

/// One device rule as the text devices.allow/devices.deny take: "c 1:3 rwm", "a *:* rwm".
pub fn device_rule(d: &LinuxDeviceCgroup, i: usize) -> Result<String> {
    let t = match d.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => 'a',
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::P => bail!("{F}.devices[{i}].type: \"p\" (fifo) cannot be a cgroup device rule"),
    };
    let num = |n: Option<i64>| n.filter(|&n| n >= 0).map_or("*".to_string(), |n| n.to_string());
    let given = d.access().as_deref().unwrap_or("rwm");
    // Letters other than r, w, m are dropped, as runc does ("rwa" is "rw"); each counts once.
    let access: String = ['r', 'w', 'm'].into_iter().filter(|c| given.contains(*c)).collect();
    if access.is_empty() {
        bail!("{F}.devices[{i}].access: {given:?} has none of the letters r, w, m");
    }
    Ok(format!("{t} {}:{} {access}", num(d.major()), num(d.minor())))
}

/// The devices every container may use (runc's list), allowed after the spec's own rules.
pub const DEFAULT_ALLOWED: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:8 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:5 rwm",
    "c 1:9 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
];

/// devices.allow / devices.deny writes: the spec's rules, then the default devices.
pub fn devices(rules: &[LinuxDeviceCgroup]) -> Result<Vec<W>> {
    let mut w = Vec::new();
    for (i, d) in rules.iter().enumerate() {
        let file = if d.allow() { "devices.allow" } else { "devices.deny" };
        w.push(W::new(file, device_rule(d, i)?, format!("{F}.devices[{i}]")));
    }
    for r in DEFAULT_ALLOWED {
        w.push(W::new("devices.allow", r, format!("{F}.devices (default devices)")));
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(w: &[W]) -> Vec<(String, String)> {
        w.iter().map(|w| (w.file.clone(), w.value.clone())).collect()
    }

    #[test]
    fn memory_files() {
        let m: LinuxMemory = serde_json::from_str(
            r#"{"limit": 67108864, "swap": 134217728, "reservation": 1024, "swappiness": 10, "disableOOMKiller": true}"#,
        )
        .unwrap();
        let w = memory(&m).unwrap();
        assert_eq!(
            files(&w),
            [
                ("memory.limit_in_bytes", "67108864"),
                ("memory.memsw.limit_in_bytes", "134217728"),
                ("memory.soft_limit_in_bytes", "1024"),
                ("memory.swappiness", "10"),
                ("memory.oom_control", "1"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let m: LinuxMemory = serde_json::from_str(r#"{"swappiness": 101}"#).unwrap();
        assert!(memory(&m).unwrap_err().to_string().contains("memory.swappiness"));
    }

    #[test]
    fn cpu_and_pids() {
        let c: LinuxCpu =
            serde_json::from_str(r#"{"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": ""}"#)
                .unwrap();
        assert_eq!(
            files(&cpu(&c).unwrap()),
            [
                ("cpu.shares", "512"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(files(&cpuset(&c)), [("cpuset.cpus".to_string(), "0".to_string())]);
        assert_eq!(pids_value(-1), "max");
        assert_eq!(pids_value(0), "0");
        assert_eq!(pids_value(20), "20");
    }

    #[test]
    fn blkio_and_devices() {
        let b: LinuxBlockIo = serde_json::from_str(
            r#"{"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]}"#,
        )
        .unwrap();
        assert_eq!(
            files(&blkio(&b).unwrap()),
            [
                ("blkio.weight", "500"),
                ("blkio.throttle.read_bps_device", "8:0 1048576")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let b: LinuxBlockIo = serde_json::from_str(r#"{"weight": 5}"#).unwrap();
        assert!(blkio(&b).unwrap_err().to_string().contains("blockIO.weight"));
        // docker's default: weight 0 is "unset", as in runc.
        let b: LinuxBlockIo = serde_json::from_str(r#"{"weight": 0, "leafWeight": 0}"#).unwrap();
        assert!(blkio(&b).unwrap().is_empty());
        let rules: Vec<LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwa"}]"#,
        )
        .unwrap();
        let w = devices(&rules).unwrap();
        assert_eq!(w[0].file, "devices.deny");
        assert_eq!(w[0].value, "a *:* rwm");
        // Unknown letters dropped, as runc does.
        assert_eq!(w[1].value, "c 10:229 rw");
        assert_eq!(w.len(), 2 + DEFAULT_ALLOWED.len());
    }

    #[test]
    fn network() {
        let n: LinuxNetwork = serde_json::from_str(
            r#"{"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}, {"name": "lo", "priority": 2}]}"#,
        )
        .unwrap();
        assert_eq!(
            files(&net_cls(&n)),
            [("net_cls.classid".to_string(), "1048577".to_string())]
        );
        let p = net_prio(&n);
        assert_eq!(p[1].value, "lo 2");
        assert_eq!(p[1].field, "linux.resources.network.priorities[1]");
    }

    #[test]
    fn hugepages() {
        assert_eq!(page_size_bytes("2MB"), Some(2 << 20));
        assert_eq!(page_size_bytes("1GB"), Some(1 << 30));
        assert_eq!(page_size_bytes("2M"), None);
        let l: Vec<LinuxHugepageLimit> = serde_json::from_str(r#"[{"pageSize": "2XB", "limit": 1}]"#).unwrap();
        assert!(hugetlb(&l)
            .unwrap_err()
            .to_string()
            .contains("hugepageLimits[0].pageSize"));
    }
}
