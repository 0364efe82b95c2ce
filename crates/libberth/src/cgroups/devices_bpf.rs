//! Device rules on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program built from the rules and
//! attached to the container's cgroup. The program checks the rules last-to-first and the first
//! that matches decides (so later rules override earlier ones, as successive devices.allow/deny
//! writes do on v1); a request no rule matches is allowed, as in a fresh v1 cgroup (the usual
//! first rule, "deny all", always matches).

use crate::error::Context;
use crate::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One device rule: type ('a', 'c', 'b'), major/minor (None = any), access bits, allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub typ: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// BPF_DEVCG_ACC_*: mknod 1, read 2, write 4.
    pub access: u32,
    pub allow: bool,
}

/// Parse a v1-style rule text ("c 1:3 rwm", "a *:* rwm") with its verdict.
pub fn parse_rule(text: &str, allow: bool) -> Option<Rule> {
    let mut it = text.split_whitespace();
    let typ = it.next()?.chars().next()?;
    let (maj, min) = it.next().unwrap_or("*:*").split_once(':')?;
    let num = |s: &str| if s == "*" { Ok(None) } else { s.parse().map(Some) };
    let mut access = 0;
    for c in it.next().unwrap_or("rwm").chars() {
        access |= match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => return None,
        };
    }
    Some(Rule {
        typ,
        major: num(maj).ok()?,
        minor: num(min).ok()?,
        access,
        allow,
    })
}

/// A raw BPF instruction: opcode, registers, offset, immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const JA: u8 = 0x05; // BPF_JMP | BPF_JA
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The program: r2 = device type, r3 = access bits, r4 = major, r5 = minor (from
/// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }), then one block per rule.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        i(LDX_W, 2, 1, 0, 0),
        i(AND_K, 2, 0, 0, 0xffff),
        i(LDX_W, 3, 1, 0, 0),
        i(RSH_K, 3, 0, 0, 16),
        i(LDX_W, 4, 1, 4, 0),
        i(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Jumps to the block's end are patched once its length is known (marked off = -1).
        let mut b: Vec<Insn> = Vec::new();
        let wildcard = r.typ == 'a';
        if !wildcard {
            let t = if r.typ == 'b' { 1 } else { 2 }; // BPF_DEVCG_DEV_BLOCK / _CHAR
            b.push(i(JNE_K, 2, 0, -1, t));
        }
        if let Some(m) = r.major {
            b.push(i(JNE_K, 4, 0, -1, m as i32));
        }
        if let Some(m) = r.minor {
            b.push(i(JNE_K, 5, 0, -1, m as i32));
        }
        if !wildcard && r.access != 7 {
            if r.allow {
                // Allowed only if every requested bit is in the rule.
                b.push(i(JSET_K, 3, 0, -1, (!r.access & 7) as i32));
            } else {
                // Denied if any requested bit is in the rule.
                b.push(i(JSET_K, 3, 0, 1, r.access as i32));
                b.push(i(JA, 0, 0, -1, 0));
            }
        }
        b.push(i(MOV_K, 0, 0, 0, i32::from(r.allow)));
        b.push(i(EXIT, 0, 0, 0, 0));
        let len = b.len();
        let mut conditional = false;
        for (k, ins) in b.iter_mut().enumerate() {
            if ins.off == -1 {
                ins.off = (len - k - 1) as i16;
                conditional = true;
            }
        }
        p.extend(b);
        if !conditional {
            // This rule matches everything: the rules before it can never be reached (and the
            // verifier refuses unreachable code).
            return p;
        }
    }
    p.push(i(MOV_K, 0, 0, 0, 1));
    p.push(i(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 12],
}

#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _rest: [u32; 11],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Load the program for `rules` and attach it to the cgroup directory `dir`.
pub fn attach(dir: &Path, rules: &[Rule]) -> Result<()> {
    let prog = program(rules);
    let raw: Vec<u64> = prog
        .iter()
        .map(|x| {
            u64::from(x.code) | u64::from(x.regs) << 8 | u64::from(x.off as u16) << 16 | u64::from(x.imm as u32) << 32
        })
        .collect();
    let license = b"Apache-2.0\0";
    // Loaded without the verifier's log first: before Linux 6.4 a log that does not fit its
    // buffer fails the load with ENOSPC (a long rule list on a 6.1 kernel did). Only a refused
    // program is loaded again, with a log big enough to say why.
    let load = |log: &mut [u8]| {
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: raw.len() as u32,
            insns: raw.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
            expected_attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        attr.prog_name[..6].copy_from_slice(b"berth\0");
        // SAFETY: bpf(2) with a properly sized, initialised attribute block whose pointers
        // (instructions, license, log buffer) outlive the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &mut attr as *mut ProgLoad,
                std::mem::size_of::<ProgLoad>(),
            )
        };
        (fd, std::io::Error::last_os_error())
    };
    let (mut fd, _) = load(&mut []);
    if fd < 0 {
        let mut log = vec![0u8; 1 << 20];
        let e;
        (fd, e) = load(&mut log);
        if fd < 0 {
            let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned();
            // The log's last lines say why (the whole log is a trace of every instruction).
            let tail: Vec<&str> = text.trim().lines().rev().take(3).collect();
            let why: Vec<&str> = tail.into_iter().rev().collect();
            return Err(Error::sys(
                format!(
                    "linux.resources.devices: load the cgroup v2 device program ({})",
                    why.join("; ")
                ),
                e,
            ));
        }
    }
    // SAFETY: fd is a fresh descriptor from bpf(2).
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cg = std::fs::File::open(dir).with_ctx(|| format!("open cgroup {}", dir.display()))?;
    let mut at = ProgAttach {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: bpf(2) with a properly sized attribute block.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &mut at as *mut ProgAttach,
            std::mem::size_of::<ProgAttach>(),
        )
    };
    if r < 0 {
        return Err(Error::sys(
            format!(
                "linux.resources.devices: attach the device program to {}",
                dir.display()
            ),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the program in a tiny interpreter of the few instructions it uses.
    fn eval(p: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let x = p[pc];
            let (dst, src) = ((x.regs & 0xf) as usize, (x.regs >> 4) as usize);
            let _ = src;
            let imm = x.imm as u32 as u64;
            let mut next = pc + 1;
            match x.code {
                LDX_W => r[dst] = u64::from(ctx[x.off as usize / 4]),
                AND_K => r[dst] &= imm,
                RSH_K => r[dst] >>= imm,
                MOV_K => r[dst] = imm,
                JNE_K if r[dst] != imm => next = pc + 1 + x.off as usize,
                JSET_K if r[dst] & imm != 0 => next = pc + 1 + x.off as usize,
                JA => next = pc + 1 + x.off as usize,
                EXIT => return r[0],
                JNE_K | JSET_K => {}
                c => panic!("unknown opcode {c:#x}"),
            }
            pc = next;
        }
    }

    #[test]
    fn rules_parse() {
        assert_eq!(
            parse_rule("c 136:* rw", true),
            Some(Rule {
                typ: 'c',
                major: Some(136),
                minor: None,
                access: 6,
                allow: true
            })
        );
        assert!(parse_rule("c 1:3 rwx", true).is_none());
    }

    #[test]
    fn later_rules_win_and_access_is_checked() {
        let rules: Vec<Rule> = [
            ("a *:* rwm", false),
            ("c 1:3 rwm", true),
            ("c 136:* rw", true),
            ("c 5:1 r", true),
            ("c 1:3 w", false),
        ]
        .iter()
        .map(|(t, a)| parse_rule(t, *a).unwrap())
        .collect();
        let p = program(&rules);
        let (chr, blk) = (2, 1);
        let (m, r, w) = (1, 2, 4);
        assert_eq!(eval(&p, chr, r, 1, 3), 1, "read /dev/null");
        assert_eq!(eval(&p, chr, w, 1, 3), 0, "write denied by the last rule");
        assert_eq!(eval(&p, chr, r | w, 136, 7), 1, "pts");
        assert_eq!(eval(&p, chr, m, 136, 7), 0, "no mknod of pts");
        assert_eq!(eval(&p, chr, r, 5, 1), 1);
        assert_eq!(eval(&p, chr, w, 5, 1), 0);
        assert_eq!(eval(&p, blk, r, 1, 3), 0, "a block device 1:3 is not /dev/null");
        assert_eq!(eval(&p, chr, r, 1, 11), 0, "kmsg denied by deny-all");
        assert_eq!(eval(&program(&[]), chr, r, 1, 11), 1, "no rules: allowed");
        // Nothing after an unconditional rule: the verifier rejects unreachable instructions.
        assert_eq!(p.last().unwrap().code, EXIT);
        assert_eq!(p[p.len() - 2], i(MOV_K, 0, 0, 0, 0), "deny-all is the last verdict");
    }
}
