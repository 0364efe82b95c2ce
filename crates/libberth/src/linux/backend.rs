//! The Linux backend: a container made on this host of namespaces, a cgroup and an init process
//! cloned into them (`process`, `init`), driven through `backend::Backend` by container.rs. It owns
//! what is Linux-only in the lifecycle: create's steps in order (validate, claim the ID and record
//! it, keep the seccomp profile and personality for exec, place the cgroup, make the exec fifo,
//! spawn init, save, write the pid file) with `Undo` armed until the end; `start` through the fifo;
//! `kill` (of init, or of every process of the container's cgroup); `run` (create + start over the
//! sync channel + wait); and `exec`, which reads what create kept and starts the process with
//! `join`.

use super::exec::{build_process, ExecOpts};
use super::join::Confinement;
use super::process::{self, Gate, InitConfig, NsPlan};
use crate::backend::Backend;
use crate::cgroups::{self, Cgroup};
use crate::container::{CreateOpts, Runtime};
use crate::error::Context;
use crate::pid_file::write_pid_file;
use crate::signal::SignalGuard;
use crate::state::{self, Locked, Record, Status};
use crate::undo::{crash_point, Undo};
use crate::{bail, err, hooks, spec, Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The container's seccomp profile, kept in its state directory for exec.
const SECCOMP_FILE: &str = "seccomp.json";
/// `linux.personality`, kept like the seccomp profile: exec'd processes get it too (as runc's).
const PERSONALITY_FILE: &str = "personality.json";

/// The Linux backend (see the module's documentation).
pub(crate) struct Linux;

impl Backend for Linux {
    fn create(&self, rt: &Runtime, id: &str, opts: &CreateOpts, bundle: spec::Bundle) -> Result<()> {
        make_container(rt, id, opts, true, false, bundle).map(|_| ())
    }

    /// Let a created container's init exec the user's program.
    fn start(&self, locked: Locked, rec: &Record) -> Result<()> {
        let id = &rec.id;
        match locked.status(Some(rec)) {
            Status::Created => {}
            Status::Stopped => bail!("container {id:?} cannot be started: it is stopped"),
            s => bail!("container {id:?} cannot be started: it is already {}", s.as_str()),
        }
        let fifo = locked.fifo_path();
        let fd = nix::fcntl::open(
            &fifo,
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| {
            if e == nix::Error::ENXIO {
                err!("container {id:?}: its init process is gone")
            } else {
                Error::sys(format!("exec fifo {}", fifo.display()), e)
            }
        })?;
        nix::unistd::write(&fd, b"0").with_ctx(|| format!("exec fifo {}", fifo.display()))?;
        std::fs::remove_file(&fifo).with_ctx(|| format!("remove {}", fifo.display()))?;
        // Init holds the fifo's read side until it execs the program (or dies): the write side then
        // reports POLLERR. Waiting for it orders startContainer hooks and the exec before poststart.
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: p is one initialized pollfd, alive for the call (nfds 1), of fd, open until after it.
        while unsafe { libc::poll(&mut p, 1, -1) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        drop(locked);
        run_poststart(rec);
        Ok(())
    }

    fn kill(&self, _locked: &Locked, rec: &Record, status: Status, sig: i32, all: bool) -> Result<()> {
        let id = &rec.id;
        if status == Status::Stopped && !all {
            bail!("container {id:?} is not running (stopped)");
        }
        if all {
            let cg = Cgroup::open(&rec.cgroup_path);
            if rec.cgroup_owned {
                cgroups::freeze::signal_all(&cg, sig);
            } else {
                // A cgroup the container only joined may hold processes that are not its own.
                signal_own_members(&cg, rec, sig);
            }
            return Ok(());
        }
        // SAFETY: kill(2) takes integers and touches no memory of ours; rec.pid is the recorded init,
        // found alive with its recorded start time (`status`, under the container's lock).
        if unsafe { libc::kill(rec.pid, sig) } != 0 {
            return Err(Error::sys(
                format!("kill container {id:?} (pid {})", rec.pid),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn exec(&self, locked: Locked, opts: &ExecOpts) -> Result<i32> {
        exec_in(locked, opts, super::exec::exec)
    }

    /// Create, start, and (unless detached) wait, forwarding signals; returns the exit code.
    fn run(
        &self,
        rt: &Runtime,
        id: &str,
        opts: &CreateOpts,
        bundle: spec::Bundle,
        detach: bool,
        keep: bool,
    ) -> Result<i32> {
        let sigs = if detach { None } else { Some(SignalGuard::block()) };
        if !detach {
            // Orphans of the container (and an init forked by an intermediate process) come to us.
            // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integers and touches no memory of ours.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        }
        let made = make_container(rt, id, opts, false, !detach, bundle)?;
        let Made {
            locked,
            rec,
            chan,
            master,
        } = made;
        drop(locked);
        chan.send(b'S', &[])?;
        // The channel closes on exec (close-on-exec); an `E` message means the exec failed.
        if let Some((b'E', msg)) = chan.recv()? {
            let msg = String::from_utf8_lossy(&msg).into_owned();
            if !keep {
                let _ = rt.delete(id, true);
            }
            return Err(Error::new(msg));
        }
        drop(chan);
        run_poststart(&rec);
        if detach {
            return Ok(0);
        }
        let sigs = sigs.expect("signals blocked");
        let code = match master {
            Some(m) => crate::linux::tty::relay(m, rec.pid, &sigs.set),
            None => sigs.wait_forwarding(rec.pid),
        };
        if !keep {
            rt.delete(id, true)?;
        }
        Ok(code)
    }
}

/// `exec` without the wait: the process's pid (and pty master); for the VM guest agent.
pub(crate) fn exec_spawn(locked: Locked, opts: &ExecOpts) -> Result<super::join::Joined> {
    exec_in(locked, opts, super::join::spawn)
}

struct HookRunner<'a> {
    rec: &'a Record,
    spec: &'a oci_spec::runtime::Spec,
}

impl process::Parent for HookRunner<'_> {
    fn hook_state(&self, pid: i32) -> Vec<u8> {
        hooks::state_json(self.rec, pid, Status::Creating)
    }

    fn create_runtime_hooks(&self, pid: i32) -> Result<()> {
        let Some(h) = self.spec.hooks() else { return Ok(()) };
        let st = self.hook_state(pid);
        #[allow(deprecated)]
        if let Some(list) = h.prestart() {
            hooks::run_all("prestart", list, &st)?;
        }
        if let Some(list) = h.create_runtime() {
            hooks::run_all("createRuntime", list, &st)?;
        }
        Ok(())
    }
}

fn connect_console(path: &Path) -> Result<OwnedFd> {
    let s =
        std::os::unix::net::UnixStream::connect(path).with_ctx(|| format!("--console-socket {}", path.display()))?;
    Ok(OwnedFd::from(s))
}

/// A container just made: its locked directory, record and the channel to its init.
struct Made {
    locked: Locked,
    rec: Record,
    chan: crate::linux::sync::Channel,
    master: Option<OwnedFd>,
}

/// Create's steps, for `create` and `run`: validate, claim the ID and record it, place the cgroup,
/// make the exec fifo (`use_fifo`; `run` releases init over the channel instead), spawn init, save
/// and write the pid file, all undone on failure; init then waits at its gate. `relay_tty`: Berth
/// stays attached and relays a terminal itself when there is no console socket.
fn make_container(
    rt: &Runtime,
    id: &str,
    opts: &CreateOpts,
    use_fifo: bool,
    relay_tty: bool,
    bundle: spec::Bundle,
) -> Result<Made> {
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .is_some_and(|p| p.terminal() == Some(true));
    if terminal && opts.console_socket.is_none() && !relay_tty {
        bail!("process.terminal: true needs --console-socket when the container is detached (create, run --detach)");
    }
    let linux = bundle.spec.linux().as_ref();
    let cg_path = cgroups::container_path(linux.and_then(|l| l.cgroups_path().as_deref()), id, rt.systemd_cgroup)?;
    let plan = NsPlan::of(&bundle.spec);
    if plan.mount_ns() == crate::linux::process::MountNs::Runtime {
        // Without a mount namespace the container's mounts would be the host's: paths cannot
        // be masked or made read-only for the container alone (runc refuses these too).
        if let Some(l) = linux {
            for (field, list) in [
                ("linux.maskedPaths", l.masked_paths()),
                ("linux.readonlyPaths", l.readonly_paths()),
            ] {
                if list.as_ref().is_some_and(|v| !v.is_empty()) {
                    bail!(
                        "{field}: restricting paths needs a mount namespace of the container's own (linux.namespaces)"
                    );
                }
            }
        }
        // A read-only root is a remount of the rootfs's own mount, which only a mount
        // namespace of the container's own has (else it would be the host's mount).
        if bundle.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
            bail!("root.readonly: needs a mount namespace of the container's own (linux.namespaces)");
        }
        if linux.and_then(|l| l.rootfs_propagation().as_deref()).is_some() {
            bail!("linux.rootfsPropagation: needs a mount namespace of the container's own (linux.namespaces)");
        }
        if opts.no_pivot {
            bail!("--no-pivot: needs a mount namespace of the container's own (linux.namespaces)");
        }
    }
    crate::linux::idmap::validate(&bundle.spec, plan.user_ns())?;
    // Every linux.resources value is checked and placed before anything is created.
    let mut cgroup = Cgroup::open(&cg_path);
    let settings = match linux {
        Some(l) => cgroups::resources::plan(&cgroup, l, cgroups::resources::Mode::Create)?,
        None => Default::default(),
    };
    let systemd = rt.systemd_cgroup;
    if systemd {
        let resources = linux.and_then(|l| l.resources().clone());
        // Checked now: a value systemd would refuse fails before anything is made.
        if let Some(r) = &resources {
            cgroups::systemd::resource_props(r)?;
        }
        if cgroup.exists() {
            bail!(
                "linux.cgroupsPath: the systemd scope {} exists already",
                cgroups::systemd::unit_of(&cg_path)
            );
        }
    }
    // A frozen cgroup would stop init as it joins, and create would wait on it for ever (runc
    // refuses too: "container's cgroup unexpectedly frozen").
    if let Some(dir) = cgroups::frozen_on_the_way(&cgroup) {
        bail!(
            "linux.cgroupsPath: the container's cgroup is frozen ({} is frozen); thaw it before creating a container in it",
            dir.display()
        );
    }
    let console = opts.console_socket.map(connect_console).transpose()?;
    let locked = rt.store.create(id)?;
    let mut undo = Undo::default();
    crash_point("state-dir");
    let dir = locked.dir.clone();
    // Recorded before anything else is made, so that `delete --force` after a crash at any later
    // step knows the cgroup (and whether it is ours to remove).
    let owned = !cgroup.exists();
    let mut rec = Record {
        cgroup_path: cg_path.clone(),
        cgroup_owned: owned,
        systemd_scope: systemd,
        own_pid_ns: plan.pid_ns(),
        mounts_in_runtime_ns: plan.mount_ns() == crate::linux::process::MountNs::Runtime,
        ..Record::from_bundle(id, &bundle)
    };
    // Exec'd processes get the container's seccomp profile and personality: kept beside the state;
    // checkpoint reads the config as it was at create (crate::criu).
    let recorded = locked
        .save(&rec)
        .and_then(|_| keep_for_exec(&dir, linux))
        .and_then(|_| crate::criu::save_config(&dir, &bundle.spec));
    undo.dir = Some(locked);
    recorded?;
    crash_point("recorded");
    undo.place_cgroup(&mut cgroup, &cg_path, id, systemd, owned, linux, settings)?;
    let fifo = if use_fifo {
        let p = dir.join(state::EXEC_FIFO);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .with_ctx(|| format!("exec fifo {}", p.display()))?;
        Some(
            nix::fcntl::open(
                &p,
                nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .with_ctx(|| format!("exec fifo {}", p.display()))?,
        )
    } else {
        None
    };
    crash_point("fifo");
    let cfg = InitConfig {
        id,
        spec: &bundle.spec,
        bundle: &bundle.dir,
        rootfs: &bundle.rootfs,
        gate: match &fifo {
            Some(f) => Gate::Fifo(f.as_raw_fd()),
            None => Gate::Channel,
        },
        console_sock: console.as_ref().map(|c| c.as_raw_fd()),
        no_pivot: opts.no_pivot,
        preserve_fds: opts.preserve_fds,
        no_new_keyring: opts.no_new_keyring,
        cgroup_path: &cg_path,
        // SAFETY: geteuid takes nothing, cannot fail and touches no memory.
        unprivileged_maps: unsafe { libc::geteuid() } != 0,
    };
    let runner = HookRunner {
        rec: &rec,
        spec: &bundle.spec,
    };
    // runc's debug lines of a create (its nsexec and init log them; engines' and runc's own
    // tests look for them), logged here at the same steps of the protocol.
    let me = std::process::id();
    crate::log::debug(&format!("nsexec[{me}]: => nsexec container setup"));
    let spawned = process::spawn(&cfg, &cgroup, &runner)?;
    crate::log::debug(&format!("nsexec[{}]: <= nsexec container setup", spawned.pid));
    crate::log::debug("child process in init()");
    crate::log::debug("init: closing the pipe to signal completion");
    crash_point("spawned");
    undo.pid = spawned.pid;
    rec.pid = spawned.pid;
    rec.pid_start = state::proc_stat(spawned.pid)
        .map(|s| s.1)
        .ok_or_else(|| err!("container init exited during create"))?;
    let locked = undo.dir.take().expect("state dir");
    let committed = locked
        .save(&rec)
        .and_then(|_| {
            crash_point("saved");
            opts.pid_file.map_or(Ok(()), |p| write_pid_file(p, rec.pid))
        })
        // Init dies with the runtime until it hears that the container is recorded.
        .and_then(|_| spawned.chan.send(b'G', &[]))
        .and_then(|_| spawned.chan.expect(b'A').map(|_| ()));
    if let Err(e) = committed {
        undo.dir = Some(locked);
        return Err(e);
    }
    undo.disarm();
    Ok(Made {
        locked,
        rec,
        chan: spawned.chan,
        master: spawned.master,
    })
}

/// Keeps what exec needs of the config beside the state: the seccomp profile and the personality,
/// each only when there is one (so `state` never parses it).
fn keep_for_exec(dir: &Path, linux: Option<&oci_spec::runtime::Linux>) -> Result<()> {
    if let Some(profile) = linux.and_then(|l| l.seccomp().as_ref()) {
        write_kept(dir, SECCOMP_FILE, "linux.seccomp", profile)?;
    }
    if let Some(per) = linux.and_then(|l| l.personality().as_ref()) {
        write_kept(dir, PERSONALITY_FILE, "linux.personality", per)?;
    }
    Ok(())
}

/// Writes `value` (the config's `field`) as JSON to `dir/name`.
fn write_kept<T: serde::Serialize>(dir: &Path, name: &str, field: &str, value: &T) -> Result<()> {
    let text = serde_json::to_vec(value).map_err(|e| err!("{field}: {e}"))?;
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| Error::sys(path.display(), e))
}

/// Reads what `write_kept` kept as `dir/name`: None when create kept nothing there.
fn read_kept<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| err!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::sys(path.display(), e)),
    }
}

/// What exec and exec_spawn share: the record loaded and its status checked, the process built,
/// the seccomp profile and personality that create kept read; then `start` (`exec::exec`, which
/// waits, or `join::spawn`) with them.
fn exec_in<T>(
    locked: Locked,
    opts: &ExecOpts,
    start: fn(&Record, &oci_spec::runtime::Process, &ExecOpts, &Confinement) -> Result<T>,
) -> Result<T> {
    let id = &locked.id;
    let rec = locked
        .load()?
        .ok_or_else(|| err!("container {id:?} is still being created"))?;
    match locked.status(Some(&rec)) {
        Status::Stopped => bail!("cannot exec in container {id:?}: it is stopped"),
        Status::Paused if !opts.ignore_paused => {
            bail!("cannot exec in container {id:?}: it is paused (--ignore-paused to exec anyway)")
        }
        _ => {}
    }
    let process = build_process(&rec, opts)?;
    let seccomp = read_kept::<oci_spec::runtime::LinuxSeccomp>(&locked.dir, SECCOMP_FILE)?;
    let personality = read_kept::<oci_spec::runtime::LinuxPersonality>(&locked.dir, PERSONALITY_FILE)?;
    let conf = Confinement {
        seccomp: seccomp.as_ref(),
        personality: personality.as_ref(),
        state_json: serde_json::to_vec(&rec.doc(Status::Running)).unwrap_or_default(),
    };
    start(&rec, &process, opts, &conf)
}

/// The identity of a process's namespace of `kind`.
fn namespace_of(pid: i32, kind: &str) -> Option<(u64, u64)> {
    crate::linux::process::namespace_id(&format!("/proc/{pid}/ns/{kind}"))
}

/// `kill --all` in a cgroup the container joined: signal only the container's own processes,
/// those in its init's mount namespace (every container has one of its own) or, when it has one,
/// its pid namespace. Each process is held by a pidfd while it is checked and signalled, so a pid
/// reused by a host process between the listing and the signal is never hit. Without a live init
/// there is nothing to tell the container's processes by (with a pid namespace of its own, none
/// are left): nothing is signalled.
fn signal_own_members(cg: &Cgroup, rec: &Record, sig: i32) {
    if !state::process_alive(rec.pid, rec.pid_start) {
        return;
    }
    let init_mnt = namespace_of(rec.pid, "mnt");
    let init_pid = if rec.own_pid_ns {
        namespace_of(rec.pid, "pid")
    } else {
        None
    };
    // The namespaces read are the recorded init's only if it is still that process.
    if !state::process_alive(rec.pid, rec.pid_start) || init_mnt.is_none() {
        return;
    }
    for pid in cg.all_procs() {
        // SAFETY: pidfd_open takes integers and touches no memory of ours; a descriptor it returns
        // is new and owned by nobody else (taken over below).
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        if fd < 0 {
            continue;
        }
        // SAFETY: fd was just returned by pidfd_open: open, and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let member =
            namespace_of(pid, "mnt") == init_mnt || (init_pid.is_some() && namespace_of(pid, "pid") == init_pid);
        if member {
            // SAFETY: pidfd_send_signal gets an open pidfd (held by `fd` across the call), a null
            // siginfo (allowed: as kill) and no flags; the pidfd names the process checked above, so
            // a reused pid cannot be hit.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }
}

/// The poststart hooks recorded at create (never the bundle's config.json of now).
fn run_poststart(rec: &Record) {
    let list = &rec.poststart;
    if !list.is_empty() {
        if let Err(e) = hooks::run_all("poststart", list, &hooks::state_json(rec, rec.pid, Status::Running)) {
            crate::log::warn(&e.to_string());
        }
    }
}
