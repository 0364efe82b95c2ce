//! The process attributes init sets last, while it still holds its capabilities: `process.scheduler`
//! (sched_setattr), `process.ioPriority` (ioprio_set), `linux.personality` (personality),
//! `linux.memoryPolicy` (set_mempolicy), and the LSM labels (`process.apparmorProfile`,
//! `process.selinuxLabel`, `linux.mountLabel`), which are refused when the host has no such LSM, as
//! runc does, rather than silently ignored.

use crate::{bail, err, Error, Result};
use oci_spec::runtime::{
    IOPriorityClass, LinuxMemoryPolicy, LinuxPersonality, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, MemoryPolicyFlagType, MemoryPolicyModeType, Process, Scheduler, Spec,
};

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Refuse LSM labels the host cannot apply (checked before anything is created).
pub fn check_lsm(spec: &Spec) -> Result<()> {
    let p = spec.process().as_ref();
    if let Some(profile) = p.and_then(|p| non_empty(p.apparmor_profile())) {
        if !apparmor_enabled() {
            bail!("process.apparmorProfile: {profile:?} requested but AppArmor is not enabled on this host");
        }
    }
    if let Some(label) = p.and_then(|p| non_empty(p.selinux_label())) {
        if !selinux_enabled() {
            bail!("process.selinuxLabel: {label:?} requested but SELinux is not enabled on this host");
        }
    }
    if let Some(label) = spec.linux().as_ref().and_then(|l| non_empty(l.mount_label())) {
        if !selinux_enabled() {
            bail!("linux.mountLabel: {label:?} requested but SELinux is not enabled on this host");
        }
        bail!("linux.mountLabel: SELinux mount labels are not supported by Berth yet");
    }
    Ok(())
}

/// Apply everything of this module that the config asks for.
pub fn apply(spec: &Spec, p: &Process) -> Result<()> {
    if let Some(s) = p.scheduler() {
        set_scheduler(s)?;
    }
    if let Some(io) = p.io_priority() {
        let class = match io.class() {
            IOPriorityClass::IoprioClassRt => 1,
            IOPriorityClass::IoprioClassBe => 2,
            IOPriorityClass::IoprioClassIdle => 3,
        };
        if !(0..=7).contains(&io.priority()) {
            bail!("process.ioPriority.priority: {} is out of range (0-7)", io.priority());
        }
        let prio = (class << 13) | io.priority() as libc::c_int;
        // SAFETY: integer arguments; IOPRIO_WHO_PROCESS (1), this process (0).
        if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, prio) } != 0 {
            return Err(Error::sys("process.ioPriority", std::io::Error::last_os_error()));
        }
    }
    if let Some(linux) = spec.linux() {
        if let Some(per) = linux.personality() {
            set_personality(per)?;
        }
        if let Some(mp) = linux.memory_policy() {
            set_memory_policy(mp)?;
        }
    }
    set_exec_labels(p)
}

/// The LSM labels of the next execve (AppArmor profile, SELinux label), written through the
/// private procfs (never the container's /proc).
pub(crate) fn set_exec_labels(p: &Process) -> Result<()> {
    if let Some(profile) = non_empty(p.apparmor_profile()) {
        // Takes effect at the next execve (libapparmor's aa_change_onexec). The AppArmor directory
        // of attr/ is there since Linux 5.8 (LSM stacking); before it, attr/exec, as runc falls back.
        let attr = match super::procfs::exists("self/attr/apparmor/exec") {
            Ok(false) => "self/attr/exec",
            _ => "self/attr/apparmor/exec",
        };
        super::procfs::write(attr, format!("exec {profile}").as_bytes()).map_err(|e| {
            let hint = if e.errno() == Some(libc::ENOENT) {
                " (is the profile loaded? apparmor_parser -r FILE)"
            } else {
                ""
            };
            e.context(format!("process.apparmorProfile {profile:?}{hint}"))
        })?;
    }
    if let Some(label) = non_empty(p.selinux_label()) {
        super::procfs::write("self/attr/exec", label.as_bytes())
            .map_err(|e| e.context(format!("process.selinuxLabel {label:?}")))?;
    }
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

fn set_scheduler(s: &Scheduler) -> Result<()> {
    use LinuxSchedulerFlag::*;
    use LinuxSchedulerPolicy::*;
    let policy = match s.policy() {
        SchedOther => 0,
        SchedFifo => 1,
        SchedRr => 2,
        SchedBatch => 3,
        SchedIso => bail!("process.scheduler.policy: SCHED_ISO is not implemented by Linux"),
        SchedIdle => 5,
        SchedDeadline => 6,
    };
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            SchedResetOnFork => 0x01,
            SchedFlagReclaim => 0x02,
            SchedFlagDLOverrun => 0x04,
            SchedFlagKeepPolicy => 0x08,
            SchedFlagKeepParams => 0x10,
            SchedFlagUtilClampMin => 0x20,
            SchedFlagUtilClampMax => 0x40,
        };
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
        ..Default::default()
    };
    // SAFETY: attr is a valid sched_attr of the size it declares.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } != 0 {
        return Err(Error::sys(
            format!("process.scheduler (policy {})", s.policy()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn personality_flag(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "UNAME26" => 0x0020000,
        "ADDR_NO_RANDOMIZE" => 0x0040000,
        "FDPIC_FUNCPTRS" => 0x0080000,
        "MMAP_PAGE_ZERO" => 0x0100000,
        "ADDR_COMPAT_LAYOUT" => 0x0200000,
        "READ_IMPLIES_EXEC" => 0x0400000,
        "ADDR_LIMIT_32BIT" => 0x0800000,
        "SHORT_INODE" => 0x1000000,
        "WHOLE_SECONDS" => 0x2000000,
        "STICKY_TIMEOUTS" => 0x4000000,
        "ADDR_LIMIT_3GB" => 0x8000000,
        _ => return None,
    })
}

pub(crate) fn set_personality(p: &LinuxPersonality) -> Result<()> {
    let mut persona: libc::c_ulong = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    for (i, f) in p.flags().iter().flatten().enumerate() {
        persona |= personality_flag(f).ok_or_else(|| err!("linux.personality.flags[{i}]: unknown flag {f:?}"))?;
    }
    // SAFETY: integer argument.
    if unsafe { libc::personality(persona) } == -1 {
        return Err(Error::sys("linux.personality", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Parse a node list such as "0-3,7" into a bitmask of 1024 nodes.
pub fn parse_nodes(s: &str) -> Result<[u64; 16]> {
    parse_list(s, "linux.memoryPolicy.nodes")
}

/// Parse a CPU or node list such as "0-3,7" into a 1024-bit mask (the layout of cpu_set_t);
/// errors name `field`.
pub fn parse_list(s: &str, field: &str) -> Result<[u64; 16]> {
    let mut mask = [0u64; 16];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let bad = || err!("{field}: invalid range {part:?}");
        let a: usize = a.trim().parse().map_err(|_| bad())?;
        let b: usize = b.trim().parse().map_err(|_| bad())?;
        if a > b || b >= 1024 {
            return Err(bad());
        }
        for n in a..=b {
            mask[n / 64] |= 1 << (n % 64);
        }
    }
    Ok(mask)
}

/// Pin process `pid` (0: the caller) to a CPU list, for `process.execCPUAffinity`.
pub fn set_cpu_affinity(pid: libc::pid_t, list: &str, field: &str) -> Result<()> {
    let mask = parse_list(list, field)?;
    // SAFETY: the mask has the size and layout of cpu_set_t (1024 bits).
    let r = unsafe { libc::sched_setaffinity(pid, std::mem::size_of_val(&mask), mask.as_ptr().cast()) };
    if r != 0 {
        return Err(crate::Error::sys(
            format!("{field} {list:?}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Log the CPU affinity of `pid` at debug level the way runc's nsexec does for an exec'd process
/// (`nsexec[PID]: affinity: 0xMASK`, the first 64 CPUs), which runc's own tests and engines' look for
/// to see `execCPUAffinity.initial` at work.
pub fn log_cpu_affinity(pid: libc::pid_t) {
    if !crate::log::enabled(crate::log::Level::Debug) {
        return;
    }
    let mut set = [0u64; 16];
    // SAFETY: the buffer has the size and layout of cpu_set_t (1024 bits).
    if unsafe { libc::sched_getaffinity(pid, std::mem::size_of_val(&set), set.as_mut_ptr().cast()) } != 0 {
        crate::log::warn(&format!("sched_getaffinity: {}", std::io::Error::last_os_error()));
        return;
    }
    crate::log::debug(&format!("nsexec[{pid}]: affinity: {:#x}", set[0]));
}

fn set_memory_policy(mp: &LinuxMemoryPolicy) -> Result<()> {
    use MemoryPolicyModeType::*;
    let mut mode: libc::c_int = match mp.mode() {
        MpolDefault => 0,
        MpolPreferred => 1,
        MpolBind => 2,
        MpolInterleave => 3,
        MpolLocal => 4,
        MpolPreferredMany => 5,
        MpolWeightedInterleave => 6,
    };
    for f in mp.flags().iter().flatten() {
        mode |= match f {
            MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
            MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
            MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
        };
    }
    let mask = parse_nodes(mp.nodes().as_deref().unwrap_or(""))?;
    let empty = mask.iter().all(|w| *w == 0);
    let (ptr, maxnode) = if empty {
        (std::ptr::null(), 0)
    } else {
        (mask.as_ptr(), 1025usize)
    };
    // SAFETY: the mask holds 1024 bits, as maxnode says.
    if unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, maxnode) } != 0 {
        return Err(Error::sys(
            format!("linux.memoryPolicy (mode {}, nodes {:?})", mp.mode(), mp.nodes()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists() {
        let m = parse_nodes("0-2,5, 64").unwrap();
        assert_eq!(m[0], 0b100111);
        assert_eq!(m[1], 1);
        assert!(parse_nodes("3-1").is_err());
        assert!(parse_nodes("x").is_err());
        assert!(parse_nodes("1024").is_err());
        assert_eq!(parse_nodes("").unwrap(), [0; 16]);
    }
}
