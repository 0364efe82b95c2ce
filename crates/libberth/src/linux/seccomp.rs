//! `linux.seccomp`: the filter is compiled with libseccomp into a BPF program while init still has
//! everything it needs (so every error in the profile is reported during `create`), and loaded with
//! one `seccomp(2)` call as late as possible:
//!
//! - `noNewPrivileges: false`: loading needs CAP_SYS_ADMIN, so it is loaded before the capabilities
//!   are dropped and the user switched (as runc does);
//! - a profile with SCMP_ACT_NOTIFY: before init reports ready, because the listener must have the
//!   notify descriptor when `create` returns (the runtime sends it to `listenerPath`);
//! - otherwise: immediately before `execve`, after the exec fifo, the startContainer hooks and the
//!   signal reset, so a strict profile only has to allow `execve` itself.
//!
//! Unknown syscall names are skipped (with a debug line), as runc does; unknown actions, operators,
//! architectures and flags are refused by the spec parser with the JSON path at fault; an argument
//! index above 5 is an error naming the syscall rule.

use crate::{bail, err, Error, Result};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};
use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};

// seccomp(2) operations and filter flags (linux/seccomp.h).
const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;
const FLAG_TSYNC: libc::c_uint = 1;
const FLAG_LOG: libc::c_uint = 2;
const FLAG_SPEC_ALLOW: libc::c_uint = 4;
const FLAG_NEW_LISTENER: libc::c_uint = 8;
const FLAG_TSYNC_ESRCH: libc::c_uint = 16;
const FLAG_WAIT_KILLABLE_RECV: libc::c_uint = 32;

/// The spec's filter flags, with their kernel bits.
pub const FLAGS: &[(&str, libc::c_uint)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", FLAG_TSYNC),
    ("SECCOMP_FILTER_FLAG_LOG", FLAG_LOG),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", FLAG_SPEC_ALLOW),
    ("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", FLAG_WAIT_KILLABLE_RECV),
];

/// The spec's actions, with the kernel return value each one needs (for SECCOMP_GET_ACTION_AVAIL).
pub const ACTIONS: &[(&str, u32)] = &[
    ("SCMP_ACT_KILL", 0),
    ("SCMP_ACT_KILL_PROCESS", 0x8000_0000),
    ("SCMP_ACT_KILL_THREAD", 0),
    ("SCMP_ACT_TRAP", 0x0003_0000),
    ("SCMP_ACT_ERRNO", 0x0005_0000),
    ("SCMP_ACT_TRACE", 0x7ff0_0000),
    ("SCMP_ACT_ALLOW", 0x7fff_0000),
    ("SCMP_ACT_LOG", 0x7ffc_0000),
    ("SCMP_ACT_NOTIFY", 0x7fc0_0000),
];

pub const OPERATORS: &[&str] = &[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

/// Every architecture name of the spec and the libseccomp architecture it means.
const ARCHS: &[(Arch, ScmpArch, &str)] = &[
    (Arch::ScmpArchNative, ScmpArch::Native, "SCMP_ARCH_NATIVE"),
    (Arch::ScmpArchX86, ScmpArch::X86, "SCMP_ARCH_X86"),
    (Arch::ScmpArchX86_64, ScmpArch::X8664, "SCMP_ARCH_X86_64"),
    (Arch::ScmpArchX32, ScmpArch::X32, "SCMP_ARCH_X32"),
    (Arch::ScmpArchArm, ScmpArch::Arm, "SCMP_ARCH_ARM"),
    (Arch::ScmpArchAarch64, ScmpArch::Aarch64, "SCMP_ARCH_AARCH64"),
    (Arch::ScmpArchMips, ScmpArch::Mips, "SCMP_ARCH_MIPS"),
    (Arch::ScmpArchMips64, ScmpArch::Mips64, "SCMP_ARCH_MIPS64"),
    (Arch::ScmpArchMips64n32, ScmpArch::Mips64N32, "SCMP_ARCH_MIPS64N32"),
    (Arch::ScmpArchMipsel, ScmpArch::Mipsel, "SCMP_ARCH_MIPSEL"),
    (Arch::ScmpArchMipsel64, ScmpArch::Mipsel64, "SCMP_ARCH_MIPSEL64"),
    (
        Arch::ScmpArchMipsel64n32,
        ScmpArch::Mipsel64N32,
        "SCMP_ARCH_MIPSEL64N32",
    ),
    (Arch::ScmpArchPpc, ScmpArch::Ppc, "SCMP_ARCH_PPC"),
    (Arch::ScmpArchPpc64, ScmpArch::Ppc64, "SCMP_ARCH_PPC64"),
    (Arch::ScmpArchPpc64le, ScmpArch::Ppc64Le, "SCMP_ARCH_PPC64LE"),
    (Arch::ScmpArchS390, ScmpArch::S390, "SCMP_ARCH_S390"),
    (Arch::ScmpArchS390x, ScmpArch::S390X, "SCMP_ARCH_S390X"),
    (Arch::ScmpArchParisc, ScmpArch::Parisc, "SCMP_ARCH_PARISC"),
    (Arch::ScmpArchParisc64, ScmpArch::Parisc64, "SCMP_ARCH_PARISC64"),
    (Arch::ScmpArchRiscv64, ScmpArch::Riscv64, "SCMP_ARCH_RISCV64"),
    (
        Arch::ScmpArchLoongarch64,
        ScmpArch::Loongarch64,
        "SCMP_ARCH_LOONGARCH64",
    ),
    (Arch::ScmpArchM68k, ScmpArch::M68k, "SCMP_ARCH_M68K"),
    (Arch::ScmpArchSh, ScmpArch::Sh, "SCMP_ARCH_SH"),
    (Arch::ScmpArchSheb, ScmpArch::Sheb, "SCMP_ARCH_SHEB"),
];

/// Architecture names for `features`: those the installed libseccomp can add to a filter (the
/// native alias is not an architecture).
pub fn arch_names() -> Vec<&'static str> {
    let Ok(mut ctx) = ScmpFilterContext::new(ScmpAction::Allow) else {
        return Vec::new();
    };
    ARCHS
        .iter()
        .skip(1)
        .filter(|a| ctx.is_arch_present(a.1).unwrap_or(false) || ctx.add_arch(a.1).is_ok())
        .map(|a| a.2)
        .collect()
}

/// A compiled filter, ready to load.
pub struct Filter {
    /// The BPF program (an array of `struct sock_filter`).
    bpf: Vec<u8>,
    flags: libc::c_uint,
    /// Some rule uses SCMP_ACT_NOTIFY: loading returns a listener descriptor.
    pub notify: bool,
}

fn action(a: LinuxSeccompAction, errno_ret: Option<u32>, field: &str) -> Result<ScmpAction> {
    use LinuxSeccompAction::*;
    let ret = |r: Option<u32>| -> Result<i32> {
        let v = r.unwrap_or(libc::EPERM as u32);
        i32::try_from(v)
            .ok()
            .filter(|v| *v <= 0xffff)
            .ok_or_else(|| err!("{field}: errnoRet {v} out of range"))
    };
    Ok(match a {
        ScmpActKill | ScmpActKillThread => ScmpAction::KillThread,
        ScmpActKillProcess => ScmpAction::KillProcess,
        ScmpActTrap => ScmpAction::Trap,
        ScmpActErrno => ScmpAction::Errno(ret(errno_ret)?),
        ScmpActTrace => ScmpAction::Trace(ret(errno_ret)? as u16),
        ScmpActAllow => ScmpAction::Allow,
        ScmpActLog => ScmpAction::Log,
        ScmpActNotify => ScmpAction::Notify,
    })
}

fn operator(op: LinuxSeccompOperator, value_two: Option<u64>, value: u64) -> (ScmpCompareOp, u64) {
    use LinuxSeccompOperator::*;
    match op {
        ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        ScmpCmpLt => (ScmpCompareOp::Less, value),
        ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        ScmpCmpEq => (ScmpCompareOp::Equal, value),
        ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // The spec's `value` is the mask and `valueTwo` the value compared with.
        ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    }
}

fn scmp_err(what: impl std::fmt::Display, e: libseccomp::error::SeccompError) -> Error {
    match e.errno() {
        Some(n) => Error::sys(format!("{what} (libseccomp)"), n as i32),
        None => err!("{what}: {e}"),
    }
}

/// Whether an action can let a syscall run: ALLOW, LOG, and NOTIFY (the listener decides).
/// TRACE without a tracer fails the call with ENOSYS.
fn lets_through(a: LinuxSeccompAction) -> bool {
    matches!(
        a,
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog | LinuxSeccompAction::ScmpActNotify
    )
}

/// Whether the profile may let `name` through: a rule naming it with an action that lets it
/// through (conditions or not); else not when a rule without conditions names it with another
/// action; else the default action.
fn may_allow(s: &LinuxSeccomp, name: &str) -> bool {
    let rules: Vec<_> = s
        .syscalls()
        .iter()
        .flatten()
        .filter(|r| r.names().iter().any(|n| n == name))
        .collect();
    if rules.iter().any(|r| lets_through(r.action())) {
        return true;
    }
    if rules.iter().any(|r| r.args().as_ref().is_none_or(|a| a.is_empty())) {
        return false;
    }
    lets_through(s.default_action())
}

/// A profile under which the container's process can never start is an error before anything is
/// made. The filter is loaded in init before execve (and, without noNewPrivileges, before the
/// capabilities and user are set), so a profile that refuses execve leaves init unable to exec, to
/// report why, or even to exit (exit_group refused too: the C library then crashes with SIGSEGV,
/// which looked like the container's own status 139).
pub fn check_startable(s: &LinuxSeccomp) -> Result<()> {
    if !may_allow(s, "execve") {
        bail!(
            "linux.seccomp: the profile does not allow execve (defaultAction {}, and no rule allows it): the container's process could never start",
            serde_json::to_value(s.default_action())
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Compile `linux.seccomp` into BPF. Pure computation: nothing is loaded.
pub fn compile(s: &LinuxSeccomp) -> Result<Filter> {
    check_startable(s)?;
    let default = action(
        s.default_action(),
        s.default_errno_ret(),
        "linux.seccomp.defaultErrnoRet",
    )?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| scmp_err("linux.seccomp.defaultAction", e))?;
    for (i, a) in s.architectures().iter().flatten().enumerate() {
        let arch = ARCHS
            .iter()
            .find(|(spec, _, _)| spec == a)
            .map(|x| x.1)
            .ok_or_else(|| err!("linux.seccomp.architectures[{i}]: unknown architecture {a}"))?;
        if arch == ScmpArch::Native {
            continue;
        }
        ctx.add_arch(arch)
            .map_err(|e| scmp_err(format!("linux.seccomp.architectures[{i}] {a}"), e))?;
    }
    let mut notify = s.default_action() == LinuxSeccompAction::ScmpActNotify;
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(rule.action(), rule.errno_ret(), &format!("{field}.errnoRet"))?;
        if act == default {
            // libseccomp refuses a rule that repeats the default action; it changes nothing.
            continue;
        }
        notify |= rule.action() == LinuxSeccompAction::ScmpActNotify;
        let mut conds = Vec::new();
        let mut per_index = [0u8; 6];
        for (j, a) in rule.args().iter().flatten().enumerate() {
            if a.index() > 5 {
                bail!("{field}.args[{j}].index: {} is not a syscall argument (0-5)", a.index());
            }
            per_index[a.index()] += 1;
            let (op, datum) = operator(a.op(), a.value_two(), a.value());
            conds.push(ScmpArgCompare::new(a.index() as u32, op, datum));
        }
        // Several conditions on one argument cannot be ANDed by libseccomp: like runc, each becomes
        // a rule of its own (ORed); conditions on distinct arguments are ANDed in one rule.
        let split = per_index.iter().any(|n| *n > 1);
        for name in rule.names() {
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                crate::log::debug(&format!("{field}.names: unknown syscall {name:?} skipped"));
                continue;
            };
            let r = if conds.is_empty() {
                ctx.add_rule(act, sc)
            } else if split {
                conds
                    .iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, sc, std::slice::from_ref(c)).map(|_| ()))
                    .map(|_| &mut ctx)
            } else {
                ctx.add_rule_conditional(act, sc, &conds)
            };
            r.map_err(|e| scmp_err(format!("{field} {name}"), e))?;
        }
    }
    let mut flags = 0;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => FLAG_WAIT_KILLABLE_RECV,
        };
    }
    if !notify && flags & FLAG_WAIT_KILLABLE_RECV != 0 {
        // The kernel only takes it with a listener; without one it has nothing to change.
        crate::log::debug(
            "linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV ignored: no SCMP_ACT_NOTIFY rule",
        );
        flags &= !FLAG_WAIT_KILLABLE_RECV;
    }
    if notify {
        flags |= FLAG_NEW_LISTENER;
        if flags & FLAG_TSYNC != 0 {
            // TSYNC and NEW_LISTENER only combine with TSYNC_ESRCH.
            flags |= FLAG_TSYNC_ESRCH;
        }
    } else if s.listener_path().is_some() {
        crate::log::debug("linux.seccomp.listenerPath: no rule uses SCMP_ACT_NOTIFY; no listener contacted");
    }
    if notify && s.listener_path().is_none() {
        bail!("linux.seccomp.listenerPath: SCMP_ACT_NOTIFY is used but no listener path is given");
    }
    Ok(Filter {
        bpf: export(&ctx)?,
        flags,
        notify,
    })
}

/// The BPF program libseccomp generates, read back from a memfd.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>> {
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"berth-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::sys(
            "linux.seccomp: memfd_create",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just created and is ours.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file)
        .map_err(|e| scmp_err("linux.seccomp: generate BPF", e))?;
    let mut bpf = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bpf))
        .map_err(|e| Error::sys("linux.seccomp: read BPF", e))?;
    if bpf.is_empty() || bpf.len() % 8 != 0 {
        bail!("linux.seccomp: libseccomp produced no valid program");
    }
    Ok(bpf)
}

impl Filter {
    /// Load the filter into this process. With a notify rule, returns the listener descriptor.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        let prog = libc::sock_fprog {
            len: (self.bpf.len() / 8) as u16,
            filter: self.bpf.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prog points at a valid BPF program that outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if r < 0 {
            return Err(Error::sys(
                "linux.seccomp: load the filter",
                std::io::Error::last_os_error(),
            ));
        }
        if self.notify {
            // SAFETY: with NEW_LISTENER the kernel returns a new descriptor that we own.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(r as i32) }));
        }
        Ok(None)
    }
}

/// Where in init's setup a load may happen (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Before the bounding set is dropped and the user switched (needed without noNewPrivileges).
    BeforeCapabilities,
    /// Before init reports ready (needed to hand the notify listener to the runtime during create).
    BeforeReady,
    /// Immediately before execve.
    BeforeExec,
}

/// The container's filter, compiled, waiting for its load point.
pub struct Plan {
    filter: Option<Filter>,
    no_new_privs: bool,
}

impl Plan {
    /// Compile `linux.seccomp` (if any) for the process.
    pub fn new(spec: &oci_spec::runtime::Spec, p: &oci_spec::runtime::Process) -> Result<Plan> {
        Plan::for_profile(spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()), p)
    }

    /// Compile a profile (the container's, for an exec'd process) for the process.
    pub fn for_profile(profile: Option<&LinuxSeccomp>, p: &oci_spec::runtime::Process) -> Result<Plan> {
        let filter = match profile {
            Some(s) => Some(compile(s)?),
            None => None,
        };
        Ok(Plan {
            filter,
            no_new_privs: p.no_new_privileges().unwrap_or(false),
        })
    }

    /// Load the filter if `point` is its load point; a notify listener goes to the runtime as an
    /// `N` message followed by a packet carrying the descriptor.
    pub fn load_at(&mut self, point: Point, chan: &super::sync::Channel) -> Result<()> {
        let Some(f) = &self.filter else { return Ok(()) };
        let due = match point {
            Point::BeforeCapabilities => !self.no_new_privs,
            Point::BeforeReady => self.no_new_privs && f.notify,
            Point::BeforeExec => self.no_new_privs && !f.notify,
        };
        if !due {
            return Ok(());
        }
        let listener = f.load()?;
        self.filter = None;
        if let Some(fd) = listener {
            use std::os::fd::AsRawFd;
            chan.send(b'N', &[])?;
            super::console::send_fd(chan.raw(), fd.as_raw_fd(), "seccomp")?;
        }
        Ok(())
    }
}

/// Whether the kernel knows a filter flag (an invalid flag is EINVAL; a known one fails on the
/// NULL program with EFAULT, or EACCES without privilege).
pub fn flag_supported(bit: libc::c_uint) -> bool {
    // SAFETY: a NULL program is never dereferenced once the flags are rejected or accepted.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, bit, std::ptr::null::<u8>()) };
    r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
}

/// Whether the kernel has a filter return action.
pub fn action_supported(ret: u32) -> bool {
    // SAFETY: the kernel reads one u32.
    unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &ret as *const u32) == 0 }
}

/// The seccomp part of the `features` document.
pub fn features() -> serde_json::Value {
    let actions: Vec<&str> = ACTIONS
        .iter()
        .filter(|(_, ret)| action_supported(*ret))
        .map(|a| a.0)
        .collect();
    let known: Vec<&str> = FLAGS.iter().map(|f| f.0).collect();
    let supported: Vec<&str> = FLAGS
        .iter()
        .filter(|f| {
            // WAIT_KILLABLE_RECV is only valid together with NEW_LISTENER.
            let extra = if f.1 == FLAG_WAIT_KILLABLE_RECV {
                FLAG_NEW_LISTENER
            } else {
                0
            };
            flag_supported(f.1 | extra)
        })
        .map(|f| f.0)
        .collect();
    serde_json::json!({
        "enabled": true,
        "actions": actions,
        "operators": OPERATORS,
        "archs": arch_names(),
        "knownFlags": known,
        "supportedFlags": supported,
    })
}

/// The runtime's part of SCMP_ACT_NOTIFY: connect to `listenerPath` and send the container process
/// state (runtime-spec "Container process state") with the listener descriptor as SCM_RIGHTS.
pub fn send_to_listener(s: &LinuxSeccomp, pid: i32, state: &[u8], fd: &OwnedFd) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = s
        .listener_path()
        .as_ref()
        .ok_or_else(|| err!("linux.seccomp.listenerPath: missing"))?;
    let state: serde_json::Value = serde_json::from_slice(state).unwrap_or_default();
    let mut msg = serde_json::json!({
        "ociVersion": state.get("ociVersion").cloned().unwrap_or_else(|| "1.2.1".into()),
        "fds": ["seccompFd"],
        "pid": pid,
        "state": state,
    });
    if let Some(m) = s.listener_metadata() {
        msg["metadata"] = m.clone().into();
    }
    let body = serde_json::to_vec(&msg).map_err(|e| err!("linux.seccomp: state: {e}"))?;
    let sock = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| Error::sys(format!("linux.seccomp.listenerPath {}", path.display()), e))?;
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(&body)];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, nix::sys::socket::MsgFlags::empty(), None)
        .map_err(|e| Error::sys(format!("linux.seccomp.listenerPath {}: send", path.display()), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn compiles_a_profile_with_every_operator() {
        let s = spec(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
            "syscalls":[{"names":["read","write","execve","no_such_syscall"],"action":"SCMP_ACT_ALLOW"},
            {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[
              {"index":0,"value":1,"op":"SCMP_CMP_NE"},{"index":0,"value":2,"op":"SCMP_CMP_LT"},
              {"index":0,"value":3,"op":"SCMP_CMP_LE"},{"index":0,"value":4,"op":"SCMP_CMP_EQ"},
              {"index":0,"value":5,"op":"SCMP_CMP_GE"},{"index":0,"value":6,"op":"SCMP_CMP_GT"},
              {"index":0,"value":255,"valueTwo":8,"op":"SCMP_CMP_MASKED_EQ"}]},
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
        );
        let f = compile(&s).unwrap();
        assert!(!f.notify && f.bpf.len() > 64);
    }

    #[test]
    fn a_profile_that_refuses_execve_is_an_error() {
        for json in [
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]}"#,
            r#"{"defaultAction":"SCMP_ACT_KILL"}"#,
            r#"{"defaultAction":"SCMP_ACT_TRACE","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["execve"],"action":"SCMP_ACT_ERRNO"}]}"#,
        ] {
            let e = check_startable(&spec(json)).unwrap_err().to_string();
            assert!(e.contains("linux.seccomp") && e.contains("execve"), "{json}: {e}");
        }
        for json in [
            r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["execve","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["execve"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
        ] {
            assert!(check_startable(&spec(json)).is_ok(), "{json}");
        }
    }

    #[test]
    fn argument_index_out_of_range_names_the_rule() {
        let s = spec(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO",
            "args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let e = compile(&s).err().unwrap().to_string();
        assert!(e.contains("linux.seccomp.syscalls[0].args[0].index"), "{e}");
    }

    #[test]
    fn notify_needs_a_listener_and_sets_the_flag() {
        let s =
            spec(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#);
        assert!(compile(&s).err().unwrap().to_string().contains("listenerPath"));
        let s = spec(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/x","flags":["SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        let f = compile(&s).unwrap();
        assert!(f.notify && f.flags & FLAG_NEW_LISTENER != 0 && f.flags & FLAG_TSYNC_ESRCH != 0);
    }

    #[test]
    fn every_spec_architecture_is_mapped() {
        assert_eq!(ARCHS.len(), 24);
    }
}
