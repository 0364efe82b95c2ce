//! The process's identity and limits, applied by init (and later exec) just before the user's
//! program runs: rlimits, oom_score_adj, supplementary groups, uid/gid, the five capability sets in
//! the order the kernel needs (bounding dropped while CAP_SETPCAP is still held, then the user
//! switch keeping permitted caps, then effective/permitted/inheritable at once, ambient last),
//! no_new_privs and the umask.

use crate::{bail, Error, Result};
use oci_spec::runtime::{Capability, LinuxCapabilities, PosixRlimitType, Process};

fn rlimit_resource(t: PosixRlimitType) -> Option<libc::__rlimit_resource_t> {
    use PosixRlimitType::*;
    Some(match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

pub fn set_rlimits(p: &Process) -> Result<()> {
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let res = rlimit_resource(r.typ())
            .ok_or_else(|| crate::err!("process.rlimits[{i}].type: unsupported {:?}", r.typ()))?;
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: lim is a valid rlimit.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::sys(
                format!("process.rlimits[{i}] {:?} soft={} hard={}", r.typ(), r.soft(), r.hard()),
                e,
            ));
        }
    }
    Ok(())
}

pub fn set_oom_score_adj(p: &Process) -> Result<()> {
    if let Some(v) = p.oom_score_adj() {
        super::procfs::write("self/oom_score_adj", v.to_string().as_bytes())
            .map_err(|e| e.context(format!("process.oomScoreAdj {v}")))?;
    }
    Ok(())
}

/// Capability number from its spec name.
fn cap_number(c: &Capability) -> Option<u32> {
    let name = format!("CAP_{c}");
    name.parse::<caps::Capability>().ok().map(|c| c.index() as u32)
}

fn mask(list: &Option<std::collections::HashSet<Capability>>) -> u64 {
    list.iter()
        .flatten()
        .filter_map(cap_number)
        .fold(0u64, |m, n| m | (1u64 << n))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capset(eff: u64, perm: u64, inh: u64) -> Result<()> {
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [
        CapData {
            effective: eff as u32,
            permitted: perm as u32,
            inheritable: inh as u32,
        },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (perm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: header and two data words as capset(2) wants for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) } != 0 {
        return Err(Error::sys(
            "process.capabilities: capset",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The highest capability the kernel knows, asked of the kernel itself (PR_CAPBSET_READ fails with
/// EINVAL past it), not of a /proc file the container's rootfs could fake.
fn last_cap() -> u32 {
    // SAFETY: prctl with integer arguments only reads.
    let known = |n: u32| unsafe { libc::prctl(libc::PR_CAPBSET_READ, n as libc::c_ulong, 0, 0, 0) } >= 0;
    // Binary search for the last known number (capability 0 always exists).
    let (mut lo, mut hi) = (0u32, 64u32);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if known(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Drop from the bounding set every capability not listed (needs CAP_SETPCAP: do it first).
pub fn drop_bounding(caps: Option<&LinuxCapabilities>) -> Result<()> {
    let Some(c) = caps else { return Ok(()) };
    let keep = mask(c.bounding());
    for n in 0..=last_cap() {
        if keep & (1 << n) == 0 {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(Error::sys(format!("process.capabilities.bounding: drop cap {n}"), e));
                }
            }
        }
    }
    Ok(())
}

/// Switch to the process's user and groups, keeping capabilities across the switch. Where the user
/// namespace denies setgroups (rootless, /proc/<pid>/setgroups "deny"), setgroups fails with EPERM:
/// fine without additional groups, an error naming the field with them (the kernel is asked, not
/// a /proc file the image could fake).
pub fn set_user(p: &Process) -> Result<()> {
    let u = p.user();
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<libc::gid_t> = u.additional_gids().iter().flatten().copied().collect();
    // SAFETY: groups is a valid slice.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EPERM) if groups.is_empty() => {}
            Some(libc::EPERM) => bail!("process.user.additionalGids: setgroups is denied in this user namespace"),
            _ => return Err(Error::sys("process.user.additionalGids: setgroups", e)),
        }
    }
    // SAFETY: plain system calls with integer arguments.
    unsafe {
        if libc::setresgid(u.gid(), u.gid(), u.gid()) != 0 {
            return Err(Error::sys(
                format!("process.user.gid {}", u.gid()),
                std::io::Error::last_os_error(),
            ));
        }
        if libc::setresuid(u.uid(), u.uid(), u.uid()) != 0 {
            return Err(Error::sys(
                format!("process.user.uid {}", u.uid()),
                std::io::Error::last_os_error(),
            ));
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    Ok(())
}

/// Set effective, permitted and inheritable sets, then raise the ambient ones.
pub fn set_capabilities(caps: Option<&LinuxCapabilities>) -> Result<()> {
    let Some(c) = caps else { return Ok(()) };
    capset(mask(c.effective()), mask(c.permitted()), mask(c.inheritable()))?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    // The kernel only allows ambient capabilities that are both permitted and inheritable; like runc,
    // others listed are skipped (runc's own default config lists ambient caps with no inheritable set).
    let allowed = mask(c.permitted()) & mask(c.inheritable());
    for n in c.ambient().iter().flatten().filter_map(cap_number) {
        if allowed & (1 << n) == 0 {
            crate::log::debug(&format!(
                "process.capabilities.ambient: cap {n} skipped: not permitted and inheritable"
            ));
            continue;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                n as libc::c_ulong,
                0,
                0,
            )
        } != 0
        {
            let e = std::io::Error::last_os_error();
            return Err(Error::sys(format!("process.capabilities.ambient: raise cap {n}"), e));
        }
    }
    Ok(())
}

pub fn set_no_new_privs(p: &Process) -> Result<()> {
    if p.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(Error::sys("process.noNewPrivileges", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

pub fn set_umask(p: &Process) {
    let m = p.user().umask().unwrap_or(0o022);
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(m as libc::mode_t) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_cap_is_the_kernels() {
        let from_proc: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(last_cap(), from_proc);
    }

    #[test]
    fn capability_masks() {
        let set: std::collections::HashSet<Capability> = [Capability::Kill, Capability::Chown].into_iter().collect();
        assert_eq!(mask(&Some(set)), (1 << 5) | (1 << 0));
        assert_eq!(mask(&None), 0);
    }
}
