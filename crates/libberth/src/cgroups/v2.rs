//! cgroup v2: `linux.resources` as the files of the unified hierarchy, with runc's conversions from
//! the v1-shaped spec values (cpu shares -> cpu.weight, blkio weight -> io.weight, memory+swap ->
//! memory.swap.max). Pure translation; `resources` writes them.

use super::resources::W;
use super::v1;
use crate::{bail, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory};

const F: &str = "linux.resources";

/// cpu.shares (2..262144, default 1024) -> cpu.weight (1..10000, default 100).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// blkio weight (10..1000) -> io.weight (1..10000).
pub fn blkio_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w).clamp(10, 1000) - 10) * 9999 / 990
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// memory.swap.max from the spec's memory+swap total (runc's rules): -1 is max, 0 is unset.
pub fn swap_max(swap: i64, limit: Option<i64>) -> Result<Option<String>> {
    let limit = limit.unwrap_or(0);
    if limit == -1 && swap == 0 {
        return Ok(Some("max".into()));
    }
    match swap {
        -1 => return Ok(Some("max".into())),
        0 => return Ok(None),
        _ => {}
    }
    if limit <= 0 {
        bail!("{F}.memory.swap: a swap limit needs a memory limit (linux.resources.memory.limit)");
    }
    if swap < limit {
        bail!("{F}.memory.swap: {swap} is below memory.limit {limit} (swap is memory+swap)");
    }
    Ok(Some((swap - limit).to_string()))
}

pub fn memory(m: &LinuxMemory) -> Result<Vec<W>> {
    let mut w = Vec::new();
    if let Some(v) = m.limit() {
        w.push(W::new("memory.max", max_or(v), format!("{F}.memory.limit")));
    }
    // No swap given with an unlimited memory: both unlimited (runc, as on cgroup v1).
    if let Some(s) = m.swap().or((m.limit() == Some(-1)).then_some(0)) {
        if let Some(v) = swap_max(s, m.limit())? {
            w.push(W::new("memory.swap.max", v, format!("{F}.memory.swap")));
        }
    }
    if let Some(v) = m.reservation() {
        w.push(W::new("memory.low", max_or(v), format!("{F}.memory.reservation")));
    }
    if m.swappiness().is_some() {
        bail!("{F}.memory.swappiness: not supported on cgroup v2");
    }
    if m.disable_oom_killer() == Some(true) {
        bail!("{F}.memory.disableOOMKiller: not supported on cgroup v2");
    }
    Ok(w)
}

pub fn cpu(c: &LinuxCpu) -> Result<Vec<W>> {
    let mut w = Vec::new();
    if let Some(s) = c.shares().filter(|&s| s != 0) {
        w.push(W::new("cpu.weight", shares_to_weight(s), format!("{F}.cpu.shares")));
    }
    let (quota, period) = (c.quota(), c.period());
    if quota.is_some_and(|q| q != 0) || period.is_some_and(|p| p != 0) {
        let mut v = match quota {
            Some(q) if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        if let Some(p) = period.filter(|&p| p != 0) {
            v.push_str(&format!(" {p}"));
        }
        let field = if quota.is_some() { "quota" } else { "period" };
        w.push(W::new("cpu.max", v, format!("{F}.cpu.{field}")));
    }
    if let Some(b) = c.burst() {
        w.push(W::new("cpu.max.burst", b, format!("{F}.cpu.burst")));
    }
    if c.realtime_runtime().is_some_and(|v| v != 0) {
        bail!("{F}.cpu.realtimeRuntime: not supported on cgroup v2");
    }
    if c.realtime_period().is_some_and(|v| v != 0) {
        bail!("{F}.cpu.realtimePeriod: not supported on cgroup v2");
    }
    if let Some(v) = c.idle() {
        w.push(W::new("cpu.idle", v, format!("{F}.cpu.idle")));
    }
    Ok(w)
}

/// io. Weights go to io.bfq.weight (the spec's scale) where it exists, as runc does, otherwise to
/// io.weight (converted).
pub fn io(b: &LinuxBlockIo) -> Result<Vec<W>> {
    let mut w = Vec::new();
    // 0 means unset, as runc reads it (docker sends "weight": 0 by default).
    if let Some(v) = b.weight().filter(|&v| v != 0) {
        if !(10..=1000).contains(&v) {
            bail!("{F}.blockIO.weight: {v} is out of range (10-1000)");
        }
        w.push(W::new("io.bfq.weight", v, format!("{F}.blockIO.weight")).alt("io.weight", blkio_to_io_weight(v)));
    }
    if b.leaf_weight().is_some_and(|v| v != 0) {
        bail!("{F}.blockIO.leafWeight: not supported on cgroup v2");
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        if d.leaf_weight().is_some() {
            bail!("{F}.blockIO.weightDevice[{i}].leafWeight: not supported on cgroup v2");
        }
        if let Some(v) = d.weight() {
            let dev = format!("{}:{}", d.major(), d.minor());
            w.push(
                W::new(
                    "io.bfq.weight",
                    format!("{dev} {v}"),
                    format!("{F}.blockIO.weightDevice[{i}].weight"),
                )
                .alt("io.weight", format!("{dev} {}", blkio_to_io_weight(v))),
            );
        }
    }
    for (name, key, list) in [
        ("throttleReadBpsDevice", "rbps", b.throttle_read_bps_device()),
        ("throttleWriteBpsDevice", "wbps", b.throttle_write_bps_device()),
        ("throttleReadIOPSDevice", "riops", b.throttle_read_iops_device()),
        ("throttleWriteIOPSDevice", "wiops", b.throttle_write_iops_device()),
    ] {
        for (i, d) in list.iter().flatten().enumerate() {
            let rate = if d.rate() == 0 {
                "max".to_string()
            } else {
                d.rate().to_string()
            };
            w.push(W::new(
                "io.max",
                format!("{}:{} {key}={rate}", d.major(), d.minor()),
                format!("{F}.blockIO.{name}[{i}]"),
            ));
        }
    }
    Ok(w)
}

pub fn hugetlb(list: &[LinuxHugepageLimit]) -> Result<Vec<W>> {
    let mut w = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let size = h.page_size();
        if v1::page_size_bytes(size).is_none() {
            bail!("{F}.hugepageLimits[{i}].pageSize: {size:?} is not a size like 2MB or 1GB");
        }
        let field = format!("{F}.hugepageLimits[{i}]");
        w.push(W::new(format!("hugetlb.{size}.max"), max_or(h.limit()), field.clone()));
        w.push(W::new(format!("hugetlb.{size}.rsvd.max"), max_or(h.limit()), field).if_exists());
    }
    Ok(w)
}

/// A `linux.resources.unified` key must name a file of the cgroup itself.
pub fn check_unified_key(k: &str) -> Result<()> {
    if k.is_empty() || k.contains('/') || k.starts_with('.') || !k.contains('.') {
        bail!("{F}.unified: {k:?} is not a cgroup v2 file name like \"memory.high\"");
    }
    if k.starts_with("cgroup.") && k != "cgroup.max.depth" && k != "cgroup.max.descendants" {
        bail!("{F}.unified.{k}: cgroup core files cannot be set");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(w: &[W]) -> Vec<(String, String)> {
        w.iter().map(|w| (w.file.clone(), w.value.clone())).collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn conversions_as_runc() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 4950);
        assert_eq!(swap_max(-1, Some(100)).unwrap().as_deref(), Some("max"));
        assert_eq!(swap_max(0, Some(-1)).unwrap().as_deref(), Some("max"));
        assert_eq!(swap_max(0, Some(100)).unwrap(), None);
        assert_eq!(swap_max(300, Some(100)).unwrap().as_deref(), Some("200"));
        assert!(swap_max(50, Some(100)).unwrap_err().to_string().contains("memory.swap"));
        assert!(swap_max(50, None).is_err());
    }

    #[test]
    fn memory_cpu_io() {
        let m: LinuxMemory =
            serde_json::from_str(r#"{"limit": 1048576, "swap": 2097152, "reservation": 4096}"#).unwrap();
        assert_eq!(
            files(&memory(&m).unwrap()),
            pairs(&[
                ("memory.max", "1048576"),
                ("memory.swap.max", "1048576"),
                ("memory.low", "4096")
            ])
        );
        let m: LinuxMemory = serde_json::from_str(r#"{"disableOOMKiller": true}"#).unwrap();
        assert!(memory(&m).unwrap_err().to_string().contains("memory.disableOOMKiller"));
        let c: LinuxCpu = serde_json::from_str(r#"{"shares": 1024, "quota": 50000, "period": 100000}"#).unwrap();
        assert_eq!(
            files(&cpu(&c).unwrap()),
            pairs(&[("cpu.weight", "39"), ("cpu.max", "50000 100000")])
        );
        let c: LinuxCpu = serde_json::from_str(r#"{"quota": -1}"#).unwrap();
        assert_eq!(files(&cpu(&c).unwrap()), pairs(&[("cpu.max", "max")]));
        let c: LinuxCpu = serde_json::from_str(r#"{"realtimeRuntime": 1000}"#).unwrap();
        assert!(cpu(&c).unwrap_err().to_string().contains("cpu.realtimeRuntime"));
        let b: LinuxBlockIo = serde_json::from_str(
            r#"{"weight": 1000, "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 300}]}"#,
        )
        .unwrap();
        let w = io(&b).unwrap();
        assert_eq!(
            files(&w),
            pairs(&[("io.bfq.weight", "1000"), ("io.max", "8:16 wiops=300")])
        );
        assert_eq!(w[0].alt, Some(("io.weight".into(), "10000".into())));
        let b: LinuxBlockIo = serde_json::from_str(r#"{"leafWeight": 100}"#).unwrap();
        assert!(io(&b).unwrap_err().to_string().contains("blockIO.leafWeight"));
    }

    #[test]
    fn hugetlb_and_unified_keys() {
        let l: Vec<LinuxHugepageLimit> = serde_json::from_str(r#"[{"pageSize": "2MB", "limit": 4194304}]"#).unwrap();
        assert_eq!(
            files(&hugetlb(&l).unwrap()),
            pairs(&[("hugetlb.2MB.max", "4194304"), ("hugetlb.2MB.rsvd.max", "4194304")])
        );
        assert!(check_unified_key("memory.high").is_ok());
        assert!(check_unified_key("../x.y").is_err());
        assert!(check_unified_key("cgroup.procs").is_err());
        assert!(check_unified_key("nodot").is_err());
    }
}
