//! `linux.resources` -> cgroup file writes. Each resource group goes to wherever the host mounts its
//! controller: a v1 hierarchy (translated by `v1`) or the unified hierarchy (translated by `v2`), so
//! one code path serves v1, v2 and hybrid hosts. Planning is done before anything is created (a bad
//! value leaves nothing behind); every write names the spec field it came from, and a value that
//! cannot be set is an error naming that field, never silently dropped.

use super::{v1, v2, Cgroup};
use crate::{bail, err, Result};
use oci_spec::runtime::{Linux, LinuxResources};
use std::path::{Path, PathBuf};

/// One file write: file name, value, and the spec field it implements.
#[derive(Debug, Clone)]
pub struct W {
    pub file: String,
    pub value: String,
    pub field: String,
    /// Warn instead of failing when the kernel lacks the file or refuses it (kernel memory).
    pub soft: bool,
    /// Skip quietly when the file does not exist (hugetlb .rsvd files, on kernels that have them).
    pub if_exists: bool,
    /// Another (file, value) to write when `file` does not exist (blkio.weight vs the BFQ file).
    pub alt: Option<(String, String)>,
}

impl W {
    pub fn new(file: impl Into<String>, value: impl ToString, field: String) -> W {
        W {
            file: file.into(),
            value: value.to_string(),
            field,
            soft: false,
            if_exists: false,
            alt: None,
        }
    }

    pub fn soft(mut self) -> W {
        self.soft = true;
        self
    }

    pub fn if_exists(mut self) -> W {
        self.if_exists = true;
        self
    }

    pub fn alt(mut self, file: impl Into<String>, value: impl ToString) -> W {
        self.alt = Some((file.into(), value.to_string()));
        self
    }
}

/// A write placed in a directory; `v2` names the unified controller it needs enabled.
#[derive(Debug)]
pub struct Setting {
    pub dir: PathBuf,
    pub v2: Option<String>,
    pub w: W,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Create,
    Update,
}

/// Everything to apply: file writes in order, and (cgroup v2) a device program to attach.
#[derive(Debug, Default)]
pub struct Plan {
    pub settings: Vec<Setting>,
    pub devices_bpf: Option<(PathBuf, Vec<super::devices_bpf::Rule>)>,
}

struct Planner<'a> {
    cg: &'a Cgroup,
    out: Vec<Setting>,
    bpf: Option<(PathBuf, Vec<super::devices_bpf::Rule>)>,
}

impl Planner<'_> {
    /// Where a controller lives: (directory, is v2). `v1name`/`v2name` differ only for blkio/io.
    fn route(&self, v1name: &str, v2name: &str, field: &str) -> Result<(PathBuf, bool)> {
        if let Some((h, d)) = self.cg.controller(v1name).filter(|(h, _)| !h.v2) {
            return Ok((d.to_path_buf(), h.v2));
        }
        if let Some((_, d)) = self.cg.controller(v2name).filter(|(h, _)| h.v2) {
            return Ok((d.to_path_buf(), true));
        }
        bail!("{field}: the {v1name} controller is not available on this host")
    }

    fn push(&mut self, dir: &Path, v2: Option<&str>, ws: Vec<W>) {
        for w in ws {
            self.out.push(Setting {
                dir: dir.to_path_buf(),
                v2: v2.map(String::from),
                w,
            });
        }
    }
}

/// The kernel's hugepage sizes ("2MB", "1GB") from /sys/kernel/mm/hugepages.
fn hugepage_sizes() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(kb) = n.strip_prefix("hugepages-").and_then(|s| s.strip_suffix("kB")) {
            if let Ok(kb) = kb.parse::<u64>() {
                out.push(if kb >= 1 << 20 {
                    format!("{}GB", kb >> 20)
                } else if kb >= 1 << 10 {
                    format!("{}MB", kb >> 10)
                } else {
                    format!("{kb}KB")
                });
            }
        }
    }
    out
}

/// Plan the writes for `linux.resources` (device rules at creation only). Fails, naming the field, on any value this host cannot apply.
pub fn plan(cg: &Cgroup, linux: &Linux, mode: Mode) -> Result<Plan> {
    let Some(r) = linux.resources() else {
        return Ok(Plan::default());
    };
    let mut p = Planner {
        cg,
        out: Vec::new(),
        bpf: None,
    };
    plan_resources(&mut p, r, mode)?;
    if mode == Mode::Create {
        plan_devices(&mut p, linux)?;
    }
    Ok(Plan {
        settings: p.out,
        devices_bpf: p.bpf,
    })
}

fn plan_resources(p: &mut Planner, r: &LinuxResources, mode: Mode) -> Result<()> {
    const F: &str = "linux.resources";
    if let Some(m) = r.memory() {
        // -1 is "unlimited"; any other negative number is not a size (v2 would take it as "max").
        for (name, v) in [
            ("limit", m.limit()),
            ("swap", m.swap()),
            ("reservation", m.reservation()),
            ("kernel", m.kernel()),
            ("kernelTCP", m.kernel_tcp()),
        ] {
            if let Some(v) = v.filter(|&v| v < -1) {
                bail!("{F}.memory.{name}: {v} is not a size (bytes, or -1 for unlimited)");
            }
        }
        let any = m.limit().is_some()
            || m.swap().is_some()
            || m.reservation().is_some()
            || m.kernel().is_some()
            || m.kernel_tcp().is_some()
            || m.swappiness().is_some()
            || m.disable_oom_killer() == Some(true);
        if any {
            let (dir, is2) = p.route("memory", "memory", &format!("{F}.memory"))?;
            if is2 {
                if m.kernel().is_some() || m.kernel_tcp().is_some() {
                    crate::log::warn(&format!(
                        "{F}.memory.kernel/kernelTCP: kernel memory limits do not exist on cgroup v2; ignored"
                    ));
                }
                let ws = v2::memory(m)?;
                p.push(&dir, Some("memory"), ws);
            } else {
                p.push(&dir, None, v1::memory(m)?);
            }
        }
        if m.check_before_update() == Some(true) && mode == Mode::Update {
            check_memory_usage(p.cg, m.limit())?;
        }
    }
    if let Some(c) = r.cpu() {
        let set = v1::cpuset(c);
        if !set.is_empty() {
            let (dir, is2) = p.route("cpuset", "cpuset", &format!("{F}.cpu.cpus"))?;
            p.push(&dir, is2.then_some("cpuset"), set);
        }
        let any = c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.burst().is_some()
            || c.realtime_runtime().is_some()
            || c.realtime_period().is_some()
            || c.idle().is_some();
        if any {
            let (dir, is2) = p.route("cpu", "cpu", &format!("{F}.cpu"))?;
            let ws = if is2 { v2::cpu(c)? } else { v1::cpu(c)? };
            p.push(&dir, is2.then_some("cpu"), ws);
        }
    }
    // 0 is "no limit" (runc 1.1 writes nothing for it; docker sends it when no limit is asked).
    if let Some(pids) = r.pids().filter(|p| p.limit() != 0) {
        let (dir, is2) = p.route("pids", "pids", &format!("{F}.pids.limit"))?;
        let w = W::new("pids.max", v1::pids_value(pids.limit()), format!("{F}.pids.limit"));
        p.push(&dir, is2.then_some("pids"), vec![w]);
    }
    if let Some(b) = r.block_io() {
        let any = b.weight().is_some_and(|v| v != 0)
            || b.leaf_weight().is_some_and(|v| v != 0)
            || b.weight_device().as_ref().is_some_and(|l| !l.is_empty())
            || b.throttle_read_bps_device().as_ref().is_some_and(|l| !l.is_empty())
            || b.throttle_write_bps_device().as_ref().is_some_and(|l| !l.is_empty())
            || b.throttle_read_iops_device().as_ref().is_some_and(|l| !l.is_empty())
            || b.throttle_write_iops_device().as_ref().is_some_and(|l| !l.is_empty());
        if any {
            let (dir, is2) = p.route("blkio", "io", &format!("{F}.blockIO"))?;
            let ws = if is2 { v2::io(b)? } else { v1::blkio(b)? };
            p.push(&dir, is2.then_some("io"), ws);
        }
    }
    if let Some(list) = r.hugepage_limits().as_ref().filter(|l| !l.is_empty()) {
        let (dir, is2) = p.route("hugetlb", "hugetlb", &format!("{F}.hugepageLimits"))?;
        let sizes = hugepage_sizes();
        for (i, h) in list.iter().enumerate() {
            if !sizes.iter().any(|s| s == h.page_size()) {
                bail!(
                    "{F}.hugepageLimits[{i}].pageSize: {:?} is not a hugepage size of this kernel ({})",
                    h.page_size(),
                    sizes.join(", ")
                );
            }
        }
        let ws = if is2 { v2::hugetlb(list)? } else { v1::hugetlb(list)? };
        p.push(&dir, is2.then_some("hugetlb"), ws);
    }
    if let Some(n) = r.network() {
        let cls = v1::net_cls(n);
        if !cls.is_empty() {
            let (dir, is2) = p.route("net_cls", "", &format!("{F}.network.classID"))?;
            if is2 {
                bail!("{F}.network.classID: not supported on cgroup v2");
            }
            p.push(&dir, None, cls);
        }
        let prio = v1::net_prio(n);
        if !prio.is_empty() {
            let (dir, _) = p.route("net_prio", "", &format!("{F}.network.priorities"))?;
            p.push(&dir, None, prio);
        }
    }
    if let Some(rdma) = r.rdma().as_ref().filter(|m| !m.is_empty()) {
        let (dir, is2) = p.route("rdma", "rdma", &format!("{F}.rdma"))?;
        let mut names: Vec<_> = rdma.keys().collect();
        names.sort();
        for name in names {
            let l = &rdma[name];
            let mut parts = Vec::new();
            if let Some(h) = l.hca_handles() {
                parts.push(format!("hca_handle={h}"));
            }
            if let Some(o) = l.hca_objects() {
                parts.push(format!("hca_object={o}"));
            }
            if !parts.is_empty() {
                let w = W::new(
                    "rdma.max",
                    format!("{name} {}", parts.join(" ")),
                    format!("{F}.rdma.{name}"),
                );
                p.push(&dir, is2.then_some("rdma"), vec![w]);
            }
        }
    }
    if let Some(u) = r.unified().as_ref().filter(|m| !m.is_empty()) {
        let Some(dir) = p.cg.unified().map(Path::to_path_buf) else {
            bail!("{F}.unified: needs cgroup v2, and this host has only cgroup v1");
        };
        let mut keys: Vec<_> = u.keys().collect();
        keys.sort();
        let root =
            p.cg.dirs
                .iter()
                .find(|(h, _)| h.v2)
                .map(|(h, _)| h.mount.join("cgroup.controllers"));
        let avail = root.and_then(|f| std::fs::read_to_string(f).ok()).unwrap_or_default();
        for k in keys {
            v2::check_unified_key(k)?;
            let ctrl = k.split('.').next().unwrap_or_default();
            // Files of the core (cgroup.*) and of always-on interfaces need no controller.
            let need = match ctrl {
                "cgroup" | "memory" | "cpu" | "io" | "pids" | "cpuset" | "hugetlb" | "rdma" | "misc" => {
                    let always = ctrl == "cgroup"
                        || matches!(
                            k.as_str(),
                            "cpu.stat" | "cpu.pressure" | "memory.pressure" | "io.pressure"
                        );
                    if !always && !avail.split_whitespace().any(|c| c == ctrl) {
                        bail!("{F}.unified.{k}: the {ctrl} controller is not available in the unified hierarchy");
                    }
                    (!always).then_some(ctrl)
                }
                _ => None,
            };
            let w = W::new(k.as_str(), &u[k], format!("{F}.unified.{k}"));
            p.push(&dir, need, vec![w]);
        }
    }
    Ok(())
}

fn plan_devices(p: &mut Planner, linux: &Linux) -> Result<()> {
    let rules = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().as_deref())
        .unwrap_or(&[]);
    if rules.is_empty() {
        return Ok(());
    }
    // Only linux.resources.devices (and the default devices) decide what the cgroup allows: a
    // node made from linux.devices is not allowed on its own account (runc), so an explicit
    // deny-all stays deny-all.
    let ws = v1::devices(rules)?;
    match p.cg.controller("devices") {
        Some((h, d)) if !h.v2 => {
            let d = d.to_path_buf();
            p.push(&d, None, ws);
        }
        // No v1 devices controller: an eBPF program on the unified cgroup enforces the same rules.
        _ => {
            if let Some(dir) = p.cg.unified().map(Path::to_path_buf) {
                let parsed = ws
                    .iter()
                    .map(|w| {
                        super::devices_bpf::parse_rule(&w.value, w.file == "devices.allow")
                            .ok_or_else(|| err!("{}: bad device rule {:?}", w.field, w.value))
                    })
                    .collect::<Result<Vec<_>>>()?;
                p.bpf = Some((dir, parsed));
            }
        }
    }
    Ok(())
}

/// memory.checkBeforeUpdate: refuse a limit below the current usage.
fn check_memory_usage(cg: &Cgroup, limit: Option<i64>) -> Result<()> {
    let Some(limit) = limit.filter(|&l| l > 0) else {
        return Ok(());
    };
    let Some((h, dir)) = cg.controller("memory") else {
        return Ok(());
    };
    let file = if h.v2 {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    };
    let usage: i64 = std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if usage > limit {
        bail!("linux.resources.memory.limit: {limit} is below the current usage {usage} (checkBeforeUpdate)");
    }
    Ok(())
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    // Open without O_CREAT: a missing file means the kernel lacks the feature.
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
}

fn write(s: &Setting) -> Result<()> {
    let mut path = s.dir.join(&s.w.file);
    let mut value = s.w.value.as_str();
    let mut r = write_file(&path, value);
    if let (Err(e), Some((f, v))) = (&r, &s.w.alt) {
        if e.kind() == std::io::ErrorKind::NotFound {
            path = s.dir.join(f);
            value = v;
            r = write_file(&path, value);
        }
    }
    r.or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            if s.w.if_exists {
                return Ok(());
            }
            Err(err!(
                "{}: not supported by this kernel ({} does not exist)",
                s.w.field,
                path.display()
            ))
        } else {
            Err(crate::Error::sys(
                format!("{}: cannot write {value:?} to {}", s.w.field, path.display()),
                e,
            ))
        }
    })
}

/// Apply planned writes: enable the unified controllers they need, then write each file in order.
pub fn apply(cg: &Cgroup, plan: &Plan) -> Result<()> {
    let settings = &plan.settings;
    let mut ctrls: Vec<&str> = settings.iter().filter_map(|s| s.v2.as_deref()).collect();
    ctrls.sort_unstable();
    ctrls.dedup();
    for c in ctrls {
        cg.enable_v2(&[c]).map_err(|e| {
            let field = settings
                .iter()
                .find(|s| s.v2.as_deref() == Some(c))
                .map(|s| s.w.field.as_str());
            e.context(field.unwrap_or("linux.resources"))
        })?;
    }
    let mut done = vec![false; settings.len()];
    for i in 0..settings.len() {
        if done[i] {
            continue;
        }
        let s = &settings[i];
        match write(s) {
            // Kernel memory limits: Linux 5.16+ still has the file but ignores what is written.
            Ok(()) if s.w.soft => {
                let got = std::fs::read_to_string(s.dir.join(&s.w.file)).unwrap_or_default();
                let (got, want) = (got.trim().parse::<i64>(), s.w.value.parse::<i64>());
                if let (Ok(g), Ok(w)) = (got, want) {
                    if w >= 0 && (g - w).abs() >= 4096 {
                        crate::log::warn(&format!("{}: not supported by this kernel; ignored", s.w.field));
                    }
                }
            }
            Ok(()) => {}
            // v1 needs memory <= memory+swap at every step: when raising both, swap goes first.
            Err(e) if e.errno() == Some(libc::EINVAL) && s.w.file == "memory.limit_in_bytes" => {
                let Some(j) = (i + 1..settings.len()).find(|&j| settings[j].w.file == "memory.memsw.limit_in_bytes")
                else {
                    return Err(e);
                };
                write(&settings[j])?;
                done[j] = true;
                write(s)?;
            }
            Err(e) if s.w.soft => crate::log::warn(&format!("{e}; ignored")),
            Err(e) => return Err(e),
        }
        done[i] = true;
    }
    if let Some((dir, rules)) = &plan.devices_bpf {
        match super::devices_bpf::attach(dir, rules) {
            // In a user namespace bpf(2) is refused (it needs privilege in the initial one): the
            // rules cannot be enforced there, and a process that is root only in its own user
            // namespace can neither make device nodes nor open the host's (runc skips it too).
            Err(e) if e.errno() == Some(libc::EPERM) && super::systemd::rootless() => {
                crate::log::debug(&format!("{e}; skipped in a user namespace"));
            }
            r => r?,
        }
    }
    Ok(())
}
