//! Signals: names and numbers as `kill` takes them (`KILL`, `SIGKILL`, `9`, `RTMIN+3`), the exit
//! code of a wait status, and `SignalGuard`, with which `run`, `exec` and `restore` wait for a
//! container's process while forwarding the caller's signals to it.

use crate::{bail, Result};

const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parse a signal given by name (with or without SIG, any case) or number.
pub fn parse(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("signal {s:?}: out of range 1-64");
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|(k, _)| *k == name) {
        return Ok(n);
    }
    let rt = |base: i32, off: &str| -> Option<i32> {
        let n = if off.is_empty() {
            base
        } else {
            base.checked_add(off.parse::<i32>().ok()?)?
        };
        (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&n).then_some(n)
    };
    let found = if let Some(off) = name.strip_prefix("RTMIN") {
        rt(libc::SIGRTMIN(), off)
    } else if let Some(off) = name.strip_prefix("RTMAX") {
        rt(libc::SIGRTMAX(), off)
    } else {
        None
    };
    match found {
        Some(n) => Ok(n),
        None => bail!("unknown signal {s:?}"),
    }
}

/// The exit code a shell reports for a wait status: the process's own, or 128 + the signal that
/// killed it (1 for a status that is neither, which waitpid without WUNTRACED never returns).
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Signals `run` forwards to the container (all but the ones it cannot or must not).
const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGWINCH,
];

/// A signal set of `signals` and SIGCHLD (what a process that waits for its child and forwards
/// `signals` to it blocks and takes with sigwait).
pub(crate) fn set_and_sigchld(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: set is a local sigset_t, zeroed then initialized by sigemptyset before sigaddset
    // adds to it; the numbers are valid signals (constants of libc).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// The forwarded signals and SIGCHLD, blocked in this process (from `block` on, for good: the
/// caller exits after the wait) so that `wait_forwarding` takes them with sigwait.
pub(crate) struct SignalGuard {
    pub(crate) set: libc::sigset_t,
}

impl SignalGuard {
    /// Block the forwarded signals and SIGCHLD so they are taken with sigwait.
    pub(crate) fn block() -> SignalGuard {
        let set = set_and_sigchld(FORWARDED);
        // SAFETY: set is an initialized sigset_t; sigprocmask reads it and is given a null old set
        // (allowed).
        unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        SignalGuard { set }
    }

    /// Forward signals to `pid` until it exits; reap every child. Returns the shell-style exit code.
    pub(crate) fn wait_forwarding(&self, pid: i32) -> i32 {
        loop {
            // Reap first: the child may already have exited.
            loop {
                let mut status = 0;
                // SAFETY: status is a local i32 that waitpid may write; WNOHANG: it never blocks.
                let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if r <= 0 {
                    break;
                }
                if r == pid {
                    return exit_code(status);
                }
            }
            let mut sig = 0;
            // SAFETY: self.set is an initialized sigset_t (block) and sig a local that sigwait writes.
            if unsafe { libc::sigwait(&self.set, &mut sig) } != 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                // SAFETY: kill(2) takes integers; pid is our child, not yet reaped (it is reaped above
                // only when it is the one returned), so the pid is still its.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("KILL").unwrap(), 9);
        assert_eq!(parse("SIGTERM").unwrap(), 15);
        assert_eq!(parse("sigusr1").unwrap(), 10);
        assert_eq!(parse("9").unwrap(), 9);
        assert_eq!(parse("RTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert!(parse("NOPE").is_err());
        assert!(parse("0").is_err());
        assert!(parse("65").is_err());
    }
}
