//! What the container's init process does, from the clone to the exec of the user's program:
//! join/unshare namespaces, wait to be placed in the cgroup and mapped, set the hostname, build the
//! rootfs (with the createRuntime and createContainer hooks at their points), enter it, open the
//! terminal, apply limits and identity, report ready, wait for start, run the startContainer hooks
//! and exec. Any failure is sent to the runtime as an `E` message and init exits.

use super::process::{setns, write_time_offsets, Gate, InitConfig, NsPlan};
use super::rootfs;
use super::seccomp;
use super::security;
use super::sync::Channel;
use crate::error::Context;
use crate::{bail, err, Error, Result};
use oci_spec::runtime::Process;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Entry point in the cloned child; never returns.
pub fn child_main(cfg: &InitConfig, plan: &NsPlan, chan: Channel, fast: bool) -> ! {
    let r = run(cfg, plan, &chan, fast);
    let msg = match r {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    };
    let _ = chan.send(b'E', msg.as_bytes());
    // SAFETY: leave without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(1) }
}

fn run(cfg: &InitConfig, plan: &NsPlan, chan: &Channel, fast: bool) -> Result<std::convert::Infallible> {
    let spec = cfg.spec;
    // If the runtime dies before the container is recorded, nothing must be left running.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let process = spec.process().as_ref().ok_or_else(|| err!("process: missing"))?;
    if process.terminal() != Some(true) {
        detach_from_terminal();
    }
    if !fast {
        for (t, path) in &plan.join {
            setns(*t, path)?;
        }
        let now = plan.new & !(libc::CLONE_NEWPID | libc::CLONE_NEWTIME | libc::CLONE_NEWCGROUP);
        // SAFETY: unshare with namespace flags.
        if now != 0 && unsafe { libc::unshare(now) } != 0 {
            return Err(Error::sys("create namespaces", std::io::Error::last_os_error()));
        }
    }
    // An unprivileged runtime (or newuidmap) writes our ID maps as our owner: only for that moment,
    // while the container has no process but this one, may we be dumpable.
    let open_for_maps = cfg.unprivileged_maps && plan.has(libc::CLONE_NEWUSER);
    if open_for_maps {
        super::fds::set_dumpable(true);
    }
    chan.send(b'U', &[])?;
    // The ID-mapped trees of mounts, if any, come before the go-ahead.
    let mut idmapped = Vec::new();
    let mut bind_sources = Vec::new();
    let hook_state = loop {
        match chan.recv_msg()? {
            Some((tag @ (b'I' | b'B'), idx, Some(fd))) => {
                let i = std::str::from_utf8(&idx).ok().and_then(|s| s.parse().ok());
                let i = i.ok_or_else(|| err!("sync channel: bad mount index"))?;
                if tag == b'I' {
                    idmapped.push((i, fd));
                } else {
                    bind_sources.push((i, fd));
                }
            }
            Some((b'G', payload, fd)) => {
                if open_for_maps {
                    super::fds::hide();
                }
                break super::sync::blob(payload, fd)?;
            }
            Some((b'E', p, _)) => return Err(Error::new(String::from_utf8_lossy(&p).into_owned())),
            _ => bail!("container init: the runtime went away during setup"),
        }
    };
    if plan.has(libc::CLONE_NEWUSER) {
        // SAFETY: plain system calls; root in the new namespace must be mapped.
        unsafe {
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                return Err(Error::sys(
                    "become root in the user namespace (map container ID 0)",
                    std::io::Error::last_os_error(),
                ));
            }
        }
    }
    if !fast && plan.forks_init() {
        fork_real_init(spec, plan, chan)?;
    }
    if plan.has(libc::CLONE_NEWCGROUP) {
        // SAFETY: unshare with a namespace flag.
        if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
            return Err(Error::sys("create cgroup namespace", std::io::Error::last_os_error()));
        }
    }
    if !cfg.no_new_keyring {
        join_session_keyring(cfg.id)?;
    }
    if plan.uts_ns() {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).with_ctx(|| format!("hostname {h:?}"))?;
        }
        if let Some(d) = spec.domainname() {
            // SAFETY: d is valid for its length.
            if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
                return Err(Error::sys(format!("domainname {d:?}"), std::io::Error::last_os_error()));
            }
        }
    } else if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) {
        bail!("hostname: setting it needs a new uts namespace in linux.namespaces");
    }
    let plan_fs = rootfs::Plan {
        spec,
        rootfs: cfg.rootfs,
        bundle: cfg.bundle,
        // A user namespace of the container's own, or the runtime's (rootless podman runs it as
        // root in one): either way mknod is refused and devices are bind mounts, as runc does.
        in_userns: plan.user_ns() || crate::cgroups::systemd::rootless(),
        cgroup_path: cfg.cgroup_path,
        new_cgroupns: plan.has(libc::CLONE_NEWCGROUP),
        idmapped: &idmapped,
        bind_sources: &bind_sources,
        mount_ns: plan.mount_ns(),
    };
    rootfs::prepare(&plan_fs)?;
    let hooks = spec.hooks().as_ref();
    #[allow(deprecated)]
    let runtime_hooks = hooks.is_some_and(|h| {
        h.prestart().as_ref().is_some_and(|v| !v.is_empty())
            || h.create_runtime().as_ref().is_some_and(|v| !v.is_empty())
    });
    if runtime_hooks {
        chan.send(b'H', &[])?;
        chan.expect(b'G')?;
    }
    if let Some(list) = hooks.and_then(|h| h.create_container().as_ref()) {
        // In the container's namespaces, before pivot_root, in the container's root (as runc).
        let ctx = crate::hooks::Context {
            cwd: Some(cfg.rootfs),
            ..Default::default()
        };
        crate::hooks::run_all_in("createContainer", list, &hook_state, ctx)?;
    }
    rootfs::enter(cfg.rootfs, cfg.no_pivot, plan.mount_ns())?;
    rootfs::finish(spec)?;
    if plan.mount_ns() != super::process::MountNs::Runtime {
        reopen_dev_null()?;
    }
    if process.terminal().unwrap_or(false) {
        let size = process.console_size().map(|b| (b.height() as u16, b.width() as u16));
        match cfg.console_sock {
            Some(sock) => super::console::setup(size, true, process.user().uid(), |fd, name| {
                super::console::send_fd(sock, fd, name)
            })?,
            // No console socket: `run` relays the terminal itself and gets the master over the channel.
            None => super::console::setup(size, true, process.user().uid(), |fd, _| chan.send_fd(b'M', &[], fd))?,
        }
    }
    super::tuning::apply(spec, process)?;
    let mut filter = seccomp::Plan::new(spec, process)?;
    // Init keeps the exec fifo (held until its execve) and the channel; the console socket has
    // served and is closed with the rest.
    let fifo = match cfg.gate {
        Gate::Fifo(fd) => fd,
        Gate::Channel => -1,
    };
    let program = apply_process(
        process,
        environment(process),
        cfg.preserve_fds,
        &[fifo],
        &mut filter,
        chan,
    )?;
    chan.send(b'R', &[])?;
    // Wait until the runtime has recorded the container; until then, die with it.
    chan.expect(b'G')?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    chan.send(b'A', &[])?;
    match cfg.gate {
        Gate::Fifo(fd) => {
            let mut b = [0u8; 1];
            loop {
                // SAFETY: reading one byte into a valid buffer.
                let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
                if n == 1 {
                    break;
                }
                if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                bail!("exec fifo closed before start");
            }
            // The fifo stays open (close-on-exec) until the exec: `start` waits for its last reader
            // to go, so that it returns only once the program runs (poststart comes after).
        }
        Gate::Channel => {
            chan.expect(b'S')?;
        }
    }
    if let Some(list) = hooks
        .and_then(|h| h.start_container().as_ref())
        .filter(|l| !l.is_empty())
    {
        // The hooks run in the container: under its seccomp filter, as runc runs them.
        filter.load_now(chan)?;
        // A hook without an `env` of its own gets the process's (runc's de facto behaviour).
        let env = process.env().as_deref().unwrap_or_default();
        let ctx = crate::hooks::Context {
            default_env: Some(env),
            ..Default::default()
        };
        crate::hooks::run_all_in("startContainer", list, &hook_state, ctx)?;
    }
    Err(program.exec(|| filter.load_at(seccomp::Point::BeforeExec, chan)))
}

/// A session of our own without a controlling terminal, as runc's init and exec have: a
/// container that shares the caller's terminal as stdio (no `process.terminal`) cannot push input
/// into it with TIOCSTI (allowed only on one's controlling terminal). With a terminal, the console
/// setup makes the session and takes the pty as its controlling terminal.
pub(crate) fn detach_from_terminal() {
    // SAFETY: setsid takes no arguments; it fails only for a process group leader, which a freshly
    // cloned child is not.
    unsafe { libc::setsid() };
}

/// Stdio that is the host's /dev/null (an engine's conmon gives it) becomes the container's own
/// /dev/null, as runc's init does: a descriptor of a mount outside the container's mount namespace
/// is one CRIU cannot dump ("Can't lookup mount=N for fd=0 path=/dev/null"). Only a descriptor that
/// is /dev/null (char 1:3) is replaced, and only by a char 1:3 node opened without following a
/// symlink.
fn reopen_dev_null() -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let is_null = |st: &libc::stat| st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3);
    let mut stdio_null = [false; 3];
    for (fd, null) in stdio_null.iter_mut().enumerate() {
        // SAFETY: a zeroed stat is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat into a local struct.
        *null = unsafe { libc::fstat(fd as i32, &mut st) } == 0 && is_null(&st);
    }
    if !stdio_null.contains(&true) {
        return Ok(());
    }
    // SAFETY: open a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW) };
    if fd < 0 {
        // No /dev/null in the container: the host's stays (as before).
        return Ok(());
    }
    // SAFETY: a fresh descriptor.
    let null = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of our descriptor into a local struct.
    if unsafe { libc::fstat(null.as_raw_fd(), &mut st) } != 0 || !is_null(&st) {
        return Ok(());
    }
    for (fd, null_now) in stdio_null.iter().enumerate() {
        // SAFETY: dup3 of our descriptor onto a stdio descriptor that is /dev/null.
        if *null_now && unsafe { libc::dup3(null.as_raw_fd(), fd as i32, 0) } < 0 {
            return Err(Error::sys(
                "reopen /dev/null inside the container",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// With a pid or time namespace in the general path: unshare it (a joined one was entered with
/// setns above) and fork the real init; this intermediate process reports the init's pid and leaves.
fn fork_real_init(spec: &oci_spec::runtime::Spec, plan: &NsPlan, chan: &Channel) -> Result<()> {
    let mut f = 0;
    if plan.has(libc::CLONE_NEWPID) {
        f |= libc::CLONE_NEWPID;
    }
    if plan.has(libc::CLONE_NEWTIME) {
        f |= libc::CLONE_NEWTIME;
    }
    // SAFETY: unshare with namespace flags (they apply to children).
    if f != 0 && unsafe { libc::unshare(f) } != 0 {
        return Err(Error::sys("create pid/time namespace", std::io::Error::last_os_error()));
    }
    if plan.has(libc::CLONE_NEWTIME) {
        write_time_offsets(spec)?;
    }
    // The real init is made the runtime's own child (CLONE_PARENT): the runtime believes the pid in
    // `P` only for its child, and init dies with the runtime again (the death signal of the
    // intermediate's clone is not inherited).
    match super::process::clone_raw(libc::CLONE_PARENT) {
        Err(e) => Err(e.context("fork init")),
        Ok(0) => {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            // The real init leads a session of its own, in its own pid namespace (as runc's
            // init): the intermediate's session would have its leader outside, which CRIU
            // refuses to dump ("A session leader ... is outside of its pid namespace").
            if spec.process().as_ref().and_then(|p| p.terminal()) != Some(true) {
                detach_from_terminal();
            }
            Ok(())
        }
        Ok(child) => {
            let _ = chan.send(b'P', child.to_string().as_bytes());
            // SAFETY: the intermediate leaves at once.
            unsafe { libc::_exit(0) }
        }
    }
}

/// A session keyring of the container's own, so it cannot read the runtime's keys.
fn join_session_keyring(id: &str) -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;
    let name = cstring(id)?;
    // SAFETY: keyctl with a NUL-terminated name.
    if unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) } < 0 {
        let e = std::io::Error::last_os_error();
        // Kernels without keys, or keyrings refused in this user namespace: carry on, as runc does.
        if !matches!(
            e.raw_os_error(),
            Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EACCES)
        ) {
            return Err(Error::sys("join a new session keyring (--no-new-keyring to skip)", e));
        }
    }
    Ok(())
}

/// The user's program, resolved inside the container and ready to exec.
pub(crate) struct Program {
    exe: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// The NULL-ended array of pointers execve takes for `strings` (which must outlive it).
pub(crate) fn c_array(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

impl Program {
    /// Reset the signal state, run `last` (the late seccomp load) and exec; returns only on failure.
    pub(crate) fn exec(&self, last: impl FnOnce() -> Result<()>) -> Error {
        reset_signals();
        let argv_p = c_array(&self.argv);
        let envp_p = c_array(&self.envp);
        if let Err(e) = last() {
            return e;
        }
        // SAFETY: argv and envp are NUL-terminated arrays of NUL-terminated strings that outlive the call.
        unsafe { libc::execve(self.exe.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
        Error::sys(
            format!(
                "exec {:?}",
                self.argv.first().map(|a| a.to_string_lossy()).unwrap_or_default()
            ),
            std::io::Error::last_os_error(),
        )
    }
}

/// What the container's init and an exec'd process share once they see the container's filesystem:
/// oom_score_adj, rlimits, every descriptor closed but stdio, the preserved ones, the channel and
/// `keep` (before the working directory is entered, so that it cannot be reached through a
/// descriptor: CVE-2024-21626), the program looked up, cwd (checked to be inside the root), bounding
/// set, user and groups, capabilities, no_new_privs, umask. The seccomp filter is loaded at its point
/// on the way (see `seccomp::Point`).
pub(crate) fn apply_process(
    process: &Process,
    env: Vec<String>,
    preserve_fds: i32,
    keep: &[std::os::fd::RawFd],
    filter: &mut seccomp::Plan,
    chan: &Channel,
) -> Result<Program> {
    security::set_oom_score_adj(process)?;
    security::set_rlimits(process)?;
    super::procfs::release();
    let mut held = keep.to_vec();
    held.push(chan.raw());
    super::fds::close_from_except(3 + preserve_fds.max(0), &held);
    let exe = find_executable(process, &env)?;
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).with_ctx(|| format!("process.cwd {}", cwd.display()))?;
    check_cwd_inside_root(cwd)?;
    let caps = process.capabilities().as_ref();
    filter.load_at(seccomp::Point::BeforeCapabilities, chan)?;
    security::drop_bounding(caps)?;
    security::set_user(process)?;
    security::set_capabilities(caps)?;
    security::set_no_new_privs(process)?;
    security::set_umask(process);
    let argv: Vec<CString> = process
        .args()
        .iter()
        .flatten()
        .map(|a| cstring(a))
        .collect::<Result<_>>()?;
    let envp: Vec<CString> = env.iter().map(|e| cstring(e)).collect::<Result<_>>()?;
    filter.load_at(seccomp::Point::BeforeReady, chan)?;
    Ok(Program { exe, argv, envp })
}

/// The working directory must be inside the process's root: the kernel's getcwd says
/// "(unreachable)" for one outside it (a host directory reached through a magic link).
fn check_cwd_inside_root(cwd: &Path) -> Result<()> {
    let mut buf = [0u8; 4096];
    // SAFETY: getcwd writes at most buf.len() bytes into buf.
    let n = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if n > 0 && buf[0] == b'/' {
        return Ok(());
    }
    bail!("process.cwd {}: outside the container's root", cwd.display())
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| err!("{s:?}: contains a NUL byte"))
}

/// The process environment, with HOME added from the container's /etc/passwd when missing.
pub(crate) fn environment(p: &Process) -> Vec<String> {
    let mut env: Vec<String> = p.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!(
            "HOME={}",
            home_of(p.user().uid()).unwrap_or_else(|| "/".into())
        ));
    }
    env
}

fn home_of(uid: u32) -> Option<String> {
    let passwd = read_image_file(Path::new("/etc/passwd"), 1 << 20)?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
    })
}

/// A small file of the image, read without blocking on a FIFO or a device planted in its place:
/// opened non-blocking, read only if it is a regular file, at most `max` bytes.
fn read_image_file(path: &Path, max: u64) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(max).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Find args[0] in the container: as a path, or along PATH from the process's environment.
fn find_executable(p: &Process, env: &[String]) -> Result<CString> {
    let arg0 = p
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .ok_or_else(|| err!("process.args: empty"))?;
    let is_exec = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| {
            m.is_file() && {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o111 != 0
            }
        })
    };
    if arg0.contains('/') {
        let path = if arg0.starts_with('/') {
            PathBuf::from(arg0)
        } else {
            p.cwd().join(arg0)
        };
        if !is_exec(&path) {
            bail!("process.args[0]: {arg0:?}: no such executable in the container");
        }
        return CString::new(path.as_os_str().as_bytes()).map_err(|_| err!("process.args[0]: NUL byte"));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(arg0);
        if is_exec(&cand) {
            return CString::new(cand.as_os_str().as_bytes()).map_err(|_| err!("process.args[0]: NUL byte"));
        }
    }
    bail!("process.args[0]: {arg0:?}: executable file not found in $PATH ({path_var})")
}

/// Restore default signal handling for the program: empty mask, default dispositions.
pub fn reset_signals() {
    // SAFETY: plain signal-state system calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for s in 1..32 {
            if s != libc::SIGKILL && s != libc::SIGSTOP {
                libc::signal(s, libc::SIG_DFL);
            }
        }
    }
}
