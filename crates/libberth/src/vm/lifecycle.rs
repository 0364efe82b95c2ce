//! The commands on a VM container: `create` (plan, state directory, host cgroup, the monitor, the
//! guest's `create`), `start`, `kill` (and ending the VM from the host), and `run`.

use super::client::{console_tail, request, sock_path};
use super::guest_config::joined_hostname;
use super::monitor::Mon;
use super::*;
use crate::container::{CreateOpts, Runtime};
use crate::error::Context;
use crate::spec::Bundle;
use crate::state::{self, Locked, Record, Status};
use crate::undo::Undo;
use crate::{bail, err, Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

/// How the container's process is attached to Berth's caller.
#[derive(Default)]
pub struct Attach {
    /// The host side of a pty whose master `run` relays to its own terminal.
    pub tty: Option<OwnedFd>,
    /// Whether a terminal on stdin is relayed (Berth stays attached: `run` in the foreground).
    pub stdin_tty: bool,
    /// A descriptor of Berth's the monitor must not keep (the pty master `run` relays).
    pub master: Option<RawFd>,
}

/// A VM container's first record in its new state directory (a VM's or a pod member's), saved
/// before anything else is made, so that `delete --force` after a crash finds its host cgroup;
/// the `Undo` that removes the directory (and what the caller adds to it) unless disarmed.
pub(super) fn save_first_record(
    locked: Locked,
    id: &str,
    bundle: &Bundle,
    host_cg: &confine::HostCgroup,
) -> Result<(Record, Undo)> {
    let rec = Record {
        cgroup_path: host_cg.path.clone(),
        cgroup_owned: host_cg.owned,
        own_pid_ns: true,
        ..Record::from_bundle(id, bundle)
    };
    let mut undo = Undo::default();
    undo.dir = Some(locked);
    undo.dir.as_ref().expect("state dir").save(&rec)?;
    Ok((rec, undo))
}

/// `create` of a VM container: boot it and have the guest create the container, waiting to start.
/// Returns the record (pid = the monitor, our child).
pub fn create(rt: &Runtime, id: &str, opts: &CreateOpts, bundle: Bundle) -> Result<Record> {
    create_attached(rt, id, opts, bundle, Attach::default())
}

pub(super) fn create_attached(
    rt: &Runtime,
    id: &str,
    opts: &CreateOpts,
    bundle: Bundle,
    att: Attach,
) -> Result<Record> {
    let process = bundle.spec.process().as_ref();
    let terminal = process.is_some_and(|p| p.terminal().unwrap_or(false));
    if terminal && att.tty.is_none() && opts.console_socket.is_none() {
        bail!("process.terminal: true needs --console-socket when the container is detached (create, run --detach)");
    }
    if opts.preserve_fds > 0 {
        bail!("--preserve-fds: not supported in VM containers");
    }
    // A later VM container of a pod whose VM runs joins it (vm/pod.rs). A first look without the
    // registry's lock; `claim` below looks again under it.
    let pod_key = pod::key(&bundle.spec)?;
    if let Some(k) = pod_key.as_deref().filter(|k| pod::owner(rt, k, false).is_some()) {
        return pod::join(rt, id, opts, bundle, k, att);
    }
    let mut plan = Plan::new(&bundle)?;
    plan.pod = pod_key.is_some() && plan.virtiofsd.is_some();
    // Registered before it boots, under the registry's lock (held until the state directory
    // exists): a concurrent container of the same namespace waits for this VM and joins it.
    let mut registry_lock = None;
    if let Some(k) = pod_key.as_deref().filter(|_| plan.pod) {
        match pod::claim(rt, k, id)? {
            pod::Claim::Join => return pod::join(rt, id, opts, bundle, k, att),
            pod::Claim::First(lock) => registry_lock = Some(lock),
        }
    }
    let host_cg = confine::HostCgroup::plan(id, &bundle.spec, rt.systemd_cgroup, plan.mem_mib)?;
    // The terminal: the host side of a pty (its master goes to the console socket, or to `run`).
    let (master, tty, console) = relay::host_terminal(terminal, att.tty, opts.console_socket)?;
    let stdin = !terminal && relay::stdin_worth_reading(0, att.stdin_tty);
    // The container's network namespace, a tap coupled to each interface (undone if create fails).
    let net = net::attach(&bundle.spec)?;
    plan.nics = net.macs();
    let mut config = guest_config(&bundle.spec, &plan.binds)?;
    if config["hostname"].as_str().unwrap_or("").is_empty() {
        // A UTS namespace joined by path (a CRI pod's, a podman pod's) is the host's: the guest
        // gets a new one, named as the joined one is.
        if let Some(h) = joined_hostname(&bundle.spec) {
            config["hostname"] = h.into();
        }
    }
    if let Some((rows, cols)) = tty.as_ref().and_then(|t| relay::win_size(t.as_raw_fd())) {
        config["process"]["consoleSize"] = serde_json::json!({"height": rows, "width": cols});
    }
    let msg = proto::CreateMsg {
        config,
        stdin,
        root_device: plan.image.as_ref().map(|_| "/dev/vda".to_string()),
        binds: !plan.binds.shares.is_empty(),
        network: Some(net.network.clone()),
        id: None,
        pod: plan.pod,
    };
    let line = format!(
        "create {}",
        serde_json::to_string(&msg).map_err(|e| err!("config.json: {e}"))?
    );
    let locked = rt.store.create(id)?;
    drop(registry_lock);
    let dir = locked.dir.clone();
    let lock_fd = locked.lock_fd();
    let (mut rec, mut undo) = save_first_record(locked, id, &bundle, &host_cg)?;
    let cg = host_cg.create()?;
    if host_cg.owned {
        undo.cgroup = Some(crate::cgroups::Cgroup::open(&host_cg.path));
    }
    let bind_sock = |name: &str| -> Result<UnixListener> {
        let (p, _fd) = sock_path(&dir, name)?;
        UnixListener::bind(p).with_ctx(|| format!("{}", dir.join(name).display()))
    };
    let fs = match plan.image {
        None => Some(bind_sock(FS_SOCK)?),
        Some(_) => None,
    };
    let binds_fs = match plan.binds.shares.is_empty() {
        false => {
            let staging = dir.join(binds::STAGING);
            std::fs::create_dir(&staging).with_ctx(|| format!("{}", staging.display()))?;
            let stage = binds::Stage::new(&staging, &plan.binds).ctx("mounts")?;
            Some((bind_sock(BINDS_SOCK)?, staging, stage))
        }
        true => None,
    };
    // The pod share (vm/pod.rs), detached again if create fails.
    let pod_share = match plan.pod {
        true => Some(ShareMount(Some(pod::make_share(&dir)?))),
        false => None,
    };
    let pod_fs = match plan.pod {
        true => Some(bind_sock(POD_SOCK)?),
        false => None,
    };
    let listener = {
        let (p, _fd) = sock_path(&dir, MUX_SOCK)?;
        UnixListener::bind(p).with_ctx(|| format!("{}", dir.join(MUX_SOCK).display()))?
    };
    // Our connection waits in the listener's backlog until the monitor serves it.
    let mut s = open_stream(&dir)?;
    std::fs::write(dir.join(VM_FILE), b"").with_ctx(|| format!("{}", dir.join(VM_FILE).display()))?;
    // The status marker `created` is read from (a plain file here; there is no fifo in a VM).
    std::fs::write(dir.join(state::EXEC_FIFO), b"").with_ctx(|| format!("{}", dir.display()))?;
    // A pod's first container: its host process is a stand-in the monitor tells its status, so
    // that the VM can outlive it (vm/pod.rs, `fork_stand_in`).
    let (first_exit, stand_in_end) = match plan.pod {
        true => {
            let (m, s) = UnixStream::pair().ctx("socketpair")?;
            (Some(m), Some(s))
        }
        false => (None, None),
    };
    let gate = confine::Gate::new()?;
    let mon = Mon {
        listener,
        tty,
        stdin,
        binds: binds_fs,
        pod: pod_fs,
        first_exit,
    };
    // SAFETY: Berth is single-threaded; the child only runs the monitor and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork the VM monitor", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        if let Some(fd) = lock_fd {
            // SAFETY: the monitor must not hold the state directory's lock.
            unsafe { libc::close(fd) };
        }
        drop(s);
        drop(master);
        drop(console);
        drop(stand_in_end);
        if let Some(fd) = att.master {
            // SAFETY: Berth's pty master, not the monitor's to hold.
            unsafe { libc::close(fd) };
        }
        // Nothing starts before the monitor is in the container's cgroup.
        if !gate.wait() {
            // SAFETY: leave without the parent's destructors.
            unsafe { libc::_exit(255) }
        }
        let code = super::monitor::monitor(&plan, &dir, &bundle.rootfs, fs.as_ref(), mon, &net);
        // SAFETY: leave without the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    undo.pid = pid;
    gate.release(&cg, pid)?;
    drop(fs);
    drop(mon);
    hooks::create_runtime(&bundle.spec, &rec, pid)?;
    send_request(&mut s, &line)?;
    let mut reaped = false;
    let reply = read_reply(&mut s, &mut proto::FrameBuf::default(), READY_TIMEOUT, || {
        let mut st = 0;
        // SAFETY: non-blocking wait for our own child.
        reaped = reaped || unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid;
        reaped.then(|| console_tail(&dir))
    });
    if reaped {
        undo.pid = 0;
    }
    let reply = reply.map_err(|e| e.context(format!("VM container {id:?}")))?;
    if proto::split(&reply).0 != "ready" {
        bail!("VM container {id:?}: unexpected reply from the guest: {reply:?}");
    }
    relay::send_master(master.as_ref(), console.as_ref())?;
    let monitor_start = state::proc_stat(pid)
        .map(|s| s.1)
        .ok_or_else(|| err!("VM container {id:?}: its monitor exited during create"))?;
    let host_pid = match stand_in_end {
        Some(end) => {
            std::fs::write(dir.join(pod::MONITOR_FILE), format!("{pid} {monitor_start}\n"))
                .with_ctx(|| format!("{}", dir.display()))?;
            pod::fork_stand_in(end, &cg, net.netns.as_ref())?
        }
        None => pid,
    };
    rec.pid = host_pid;
    rec.pid_start = match host_pid == pid {
        true => monitor_start,
        false => state::proc_stat(host_pid)
            .map(|s| s.1)
            .ok_or_else(|| err!("VM container {id:?}: its host process exited during create"))?,
    };
    let locked = undo.dir.as_ref().expect("state dir");
    locked.save(&rec)?;
    if let Some(p) = opts.pid_file {
        crate::pid_file::write_pid_file(p, host_pid)?;
    }
    if let Some(s) = pod_share {
        s.keep();
    }
    undo.pid = 0;
    undo.cgroup = None;
    let _ = undo.dir.take();
    net.keep();
    Ok(rec)
}

/// `start`: ask the guest to run the process.
pub fn start(locked: &Locked, rec: &Record) -> Result<()> {
    let id = &rec.id;
    match locked.status(Some(rec)) {
        Status::Created => {}
        Status::Stopped => bail!("container {id:?} cannot be started: it is stopped"),
        s => bail!("container {id:?} cannot be started: it is already {}", s.as_str()),
    }
    request(&locked.dir, "start", READY_TIMEOUT).map_err(|e| e.context(format!("start container {id:?}")))?;
    let marker = locked.fifo_path();
    std::fs::remove_file(&marker).with_ctx(|| format!("remove {}", marker.display()))?;
    hooks::poststart(&rec.poststart, rec);
    Ok(())
}

/// How long `kill` waits for the guest's answer (`--all`: then the VM is ended from the host).
pub(super) const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// `kill`: deliver the signal to the guest's process (or every process of the container).
/// SIGKILL does not ask the guest: the VM is ended from the host at once (end_from_host), as a
/// Linux container's init dies whatever it does (but for a pod's first container whose VM later
/// containers use: then only it is killed, in the guest); `--all` with another signal asks the guest and,
/// without an answer within KILL_TIMEOUT, ends the VM from the host too.
pub fn kill(locked: &Locked, rec: &Record, sig: i32, all: bool) -> Result<()> {
    let id = &rec.id;
    if locked.status(Some(rec)) == Status::Stopped {
        if all {
            return Ok(());
        }
        bail!("container {id:?} is not running (stopped)");
    }
    if sig == libc::SIGKILL && pod::has_live_members(&locked.dir, id) {
        // A pod's first container whose VM later containers of the pod use: only it ends, in the
        // guest (vm/pod.rs; its status is then `stopped`, its VM stays until its last container
        // is deleted).
        pod::end_first_in_guest(&locked.dir, id);
        pod::end_stand_in(&locked.dir, rec);
        return Ok(());
    }
    if sig == libc::SIGKILL {
        end_from_host(rec);
        return Ok(());
    }
    match request(&locked.dir, &format!("kill {sig} {}", all as u8), KILL_TIMEOUT) {
        Ok(_) => Ok(()),
        Err(e) if all => {
            crate::log::warn(&format!("kill container {id:?}: {e}; ending the VM from the host"));
            end_from_host(rec);
            Ok(())
        }
        Err(e) => Err(e.context(format!("kill container {id:?}"))),
    }
}

/// End a VM container without its guest: SIGKILL to every process of the container's host cgroup
/// when Berth made it (the monitor, qemu, virtiofsd and the exec helpers, frozen first so that
/// they all die of it, as a Linux container's processes do: an exec's caller gets 137), then to
/// the monitor (the recorded pid, checked through a pidfd against its recorded start time; qemu
/// and virtiofsd die with it, exec helpers see their stream close). Waits (≤ 10 s) until the
/// monitor is gone.
pub(super) fn end_from_host(rec: &Record) {
    use crate::cgroups::freeze;
    if rec.cgroup_owned {
        let cg = crate::cgroups::Cgroup::open(&rec.cgroup_path);
        let frozen = freeze::can_freeze(&cg) && freeze::freeze(&cg).is_ok();
        for pid in cg.procs() {
            // SAFETY: SIGKILL to a process of the container's own host cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if frozen {
            let _ = freeze::thaw(&cg);
        }
    }
    // SAFETY: pidfd_open on a pid; the descriptor is owned below.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, rec.pid, 0) } as RawFd;
    if raw < 0 {
        return;
    }
    // SAFETY: a fresh descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    // The pidfd names one process for good: checked once, it cannot be another's later.
    if !state::process_alive(rec.pid, rec.pid_start) {
        return;
    }
    // SAFETY: pidfd_send_signal on our pidfd with no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 10_000) };
}

/// Give a pty the size of Berth's own terminal (stdin, else stdout), if it has one.
pub(crate) fn copy_win_size(master: RawFd) {
    if let Some((r, c)) = relay::win_size(0).or_else(|| relay::win_size(1)) {
        let _ = crate::linux::console::set_size(master, r, c);
    }
}

/// Signals `run` forwards to the guest's process.
pub(super) const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGWINCH,
];

/// `run` of a VM container: create, start, and unless detached wait for the monitor (our child),
/// forwarding signals to the guest. Returns the container's exit status.
pub fn run(rt: &Runtime, id: &str, opts: &CreateOpts, bundle: Bundle, detach: bool, keep: bool) -> Result<i32> {
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .is_some_and(|p| p.terminal() == Some(true));
    // A terminal and no console socket: Berth relays its own terminal to a host pty whose other
    // side the monitor relays to the guest's, as for a Linux container (linux/tty.rs).
    let (master, att) = if terminal && opts.console_socket.is_none() && !detach {
        let (m, p) = relay::host_pty()?;
        copy_win_size(m.as_raw_fd());
        let fd = m.as_raw_fd();
        (
            Some(m),
            Attach {
                tty: Some(p),
                stdin_tty: true,
                master: Some(fd),
            },
        )
    } else {
        (
            None,
            Attach {
                stdin_tty: !detach,
                ..Attach::default()
            },
        )
    };
    let set = crate::signal::set_and_sigchld(FORWARDED);
    if !detach {
        // SAFETY: set is an initialized sigset_t; sigprocmask reads it and is given a null old
        // set (allowed).
        unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    }
    let poststart = hooks::poststart_list(&bundle.spec);
    let rec = create_attached(rt, id, opts, bundle, att)?;
    let dir = rt.store.root().join(id);
    if let Err(e) = request(&dir, "start", READY_TIMEOUT) {
        if !keep {
            let _ = rt.delete(id, true);
        }
        return Err(e);
    }
    let _ = std::fs::remove_file(dir.join(state::EXEC_FIFO));
    hooks::poststart(&poststart, &rec);
    if detach {
        return Ok(0);
    }
    let code = if let Some(m) = master {
        crate::linux::tty::relay(m, rec.pid, &set)
    } else {
        loop {
            let mut st = 0;
            // SAFETY: non-blocking wait for the monitor, our child.
            let r = unsafe { libc::waitpid(rec.pid, &mut st, libc::WNOHANG) };
            if r == rec.pid {
                break crate::signal::exit_code(st);
            }
            let mut sig = 0;
            // SAFETY: sigwait on the blocked set.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 || sig == libc::SIGCHLD {
                continue;
            }
            let _ = request(&dir, &format!("kill {sig} 0"), Duration::from_secs(5));
        }
    };
    if !keep {
        rt.delete(id, true)?;
    }
    Ok(code)
}

/// The pod share while `create` may still fail: detached on drop, unless kept.
struct ShareMount(Option<std::path::PathBuf>);

impl ShareMount {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for ShareMount {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = pod::remove_share(&p);
        }
    }
}
