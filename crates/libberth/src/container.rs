//! The container lifecycle: creating -> created -> running -> stopped, with every operation checking
//! the state it needs. `create` loads the bundle, claims the ID, makes the cgroup and the init process
//! and records the result; any failure undoes all of that in reverse order. `start` releases init
//! through the exec fifo. `run` is create + start + wait (+ delete), forwarding signals to the
//! container and releasing init over the sync channel instead of a fifo.

use crate::cgroups::{self, Cgroup};
use crate::error::Context;
use crate::linux::process::{self, Gate, InitConfig, NsPlan};
use crate::state::{self, Locked, Record, Status, Store};
use crate::{bail, err, hooks, spec, Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The container's seccomp profile, kept in its state directory for exec.
const SECCOMP_FILE: &str = "seccomp.json";
/// `linux.personality`, kept like the seccomp profile: exec'd processes get it too (as runc's).
const PERSONALITY_FILE: &str = "personality.json";

pub struct Runtime {
    pub store: Store,
    pub systemd_cgroup: bool,
}

pub struct CreateOpts<'a> {
    pub bundle: &'a Path,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
}

/// The state JSON hooks get on stdin.
fn hook_state(rec: &Record, pid: i32, status: Status) -> Vec<u8> {
    let mut doc = rec.doc(status);
    doc.pid = pid;
    serde_json::to_vec(&doc).unwrap_or_default()
}

struct HookRunner<'a> {
    rec: &'a Record,
    spec: &'a oci_spec::runtime::Spec,
}

impl process::Parent for HookRunner<'_> {
    fn hook_state(&self, pid: i32) -> Vec<u8> {
        hook_state(self.rec, pid, Status::Creating)
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

/// Undoes a half-made container (Linux or VM) unless disarmed: kills and reaps the process it
/// made (init, or a VM's monitor), removes the cgroup it made, removes the state directory.
pub(crate) struct Undo {
    pub(crate) dir: Option<Locked>,
    pub(crate) cgroup: Option<Cgroup>,
    /// The cgroup path of a systemd scope this create starts, and whether systemd accepted it
    /// (then it is stopped on failure).
    pub(crate) scope: Option<(String, std::rc::Rc<std::cell::Cell<bool>>)>,
    pub(crate) pid: i32,
}

impl Undo {
    /// Puts the container's cgroup in place, recorded here for undo (create and restore): with the
    /// systemd driver a scope that systemd makes when it starts the unit with init in it (`add`, at
    /// init's `U`; the rest of the limits are written to it then); else the cgroup made now (ours
    /// to remove when `owned`) with its limits in place before init joins it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn place_cgroup(
        &mut self,
        cgroup: &mut Cgroup,
        cg_path: &str,
        id: &str,
        systemd: bool,
        owned: bool,
        linux: Option<&oci_spec::runtime::Linux>,
        settings: cgroups::resources::Plan,
    ) -> Result<()> {
        if systemd {
            let started = std::rc::Rc::new(std::cell::Cell::new(false));
            self.cgroup = Some(Cgroup::open(cg_path));
            self.scope = Some((cg_path.to_string(), started.clone()));
            cgroup.systemd = Some(cgroups::systemd::Placement {
                cgroup_path: cg_path.to_string(),
                id: id.to_string(),
                resources: linux.and_then(|l| l.resources().clone()),
                plan: settings,
                started,
            });
            crash_point("cgroup");
        } else {
            cgroup.create()?;
            if owned {
                self.cgroup = Some(Cgroup::open(cg_path));
            }
            crash_point("cgroup");
            cgroups::resources::apply(cgroup, &settings)?;
        }
        Ok(())
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
        if self.scope.as_ref().is_some_and(|(_, started)| !started.get()) {
            // systemd did not take this create's scope: the cgroup of that name is not ours.
            self.cgroup = None;
        }
        if let Some(cg) = self.cgroup.take() {
            // Whatever else the container started (a VM's hypervisor) goes too.
            for pid in cg.procs() {
                // SAFETY: signal processes of the cgroup this create made.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if let Some((path, _)) = self.scope.take().filter(|(_, started)| started.get()) {
                if let Err(e) = cgroups::systemd::stop_scope(&path, Path::new(cgroups::CGROUP_ROOT)) {
                    crate::log::warn(&e.to_string());
                }
            }
            let _ = cg.remove();
        }
        if let Some(d) = self.dir.take() {
            let _ = d.destroy();
        }
    }
}

fn connect_console(path: &Path) -> Result<OwnedFd> {
    let s =
        std::os::unix::net::UnixStream::connect(path).with_ctx(|| format!("--console-socket {}", path.display()))?;
    Ok(OwnedFd::from(s))
}

pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, pid.to_string()).with_ctx(|| format!("--pid-file {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_ctx(|| format!("--pid-file {}", path.display()))
}

/// A container just made: its locked directory, record and the channel to its init.
struct Made {
    locked: Locked,
    rec: Record,
    chan: crate::linux::sync::Channel,
    master: Option<OwnedFd>,
}

impl Runtime {
    pub fn new(root: &Path, systemd_cgroup: bool) -> Runtime {
        Runtime {
            store: Store::new(root),
            systemd_cgroup,
        }
    }

    /// `relay_tty`: Berth stays attached and relays a terminal itself when there is no console socket.
    fn make(&self, id: &str, opts: &CreateOpts, use_fifo: bool, relay_tty: bool, bundle: spec::Bundle) -> Result<Made> {
        let terminal = bundle
            .spec
            .process()
            .as_ref()
            .is_some_and(|p| p.terminal() == Some(true));
        if terminal && opts.console_socket.is_none() && !relay_tty {
            bail!(
                "process.terminal: true needs --console-socket when the container is detached (create, run --detach)"
            );
        }
        let linux = bundle.spec.linux().as_ref();
        let cg_path =
            cgroups::container_path(linux.and_then(|l| l.cgroups_path().as_deref()), id, self.systemd_cgroup)?;
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
                        bail!("{field}: restricting paths needs a mount namespace of the container's own (linux.namespaces)");
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
        let systemd = self.systemd_cgroup;
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
        let locked = self.store.create(id)?;
        let mut undo = Undo {
            dir: None,
            cgroup: None,
            scope: None,
            pid: 0,
        };
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
        locked.save(&rec)?;
        // Exec'd processes get the container's seccomp profile: keep it beside the state (only when
        // there is one, so `state` never parses it).
        if let Some(profile) = linux.and_then(|l| l.seccomp().as_ref()) {
            let text = serde_json::to_vec(profile).map_err(|e| err!("linux.seccomp: {e}"))?;
            let path = dir.join(SECCOMP_FILE);
            if let Err(e) = std::fs::write(&path, text) {
                undo.dir = Some(locked);
                return Err(Error::sys(path.display(), e));
            }
        }
        if let Some(per) = linux.and_then(|l| l.personality().as_ref()) {
            let text = serde_json::to_vec(per).map_err(|e| err!("linux.personality: {e}"))?;
            let path = dir.join(PERSONALITY_FILE);
            if let Err(e) = std::fs::write(&path, text) {
                undo.dir = Some(locked);
                return Err(Error::sys(path.display(), e));
            }
        }
        // Checkpoint reads the config as it was at create (crate::criu).
        if let Err(e) = crate::criu::save_config(&dir, &bundle.spec) {
            undo.dir = Some(locked);
            return Err(e);
        }
        undo.dir = Some(locked);
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
            // SAFETY: geteuid cannot fail.
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
        undo.cgroup = None;
        undo.scope = None;
        undo.pid = 0;
        Ok(Made {
            locked,
            rec,
            chan: spawned.chan,
            master: spawned.master,
        })
    }

    /// `create`: the container waits in its init for `start`.
    pub fn create(&self, id: &str, opts: &CreateOpts) -> Result<()> {
        state::validate_id(id)?;
        let bundle = spec::load_bundle(opts.bundle)?;
        if crate::vm::wanted(&bundle.spec) {
            return crate::vm::create(self, id, opts, bundle).map(|_| ());
        }
        self.make(id, opts, true, false, bundle).map(|_| ())
    }

    /// `start`: let a created container's init exec the user's program.
    pub fn start(&self, id: &str) -> Result<()> {
        let locked = self.store.open(id)?;
        let rec = locked
            .load()?
            .ok_or_else(|| err!("container {id:?} is still being created"))?;
        if crate::vm::is_vm(&locked) {
            return crate::vm::start(&locked, &rec);
        }
        match locked.status(Some(&rec)) {
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
        // SAFETY: p is a valid pollfd for a descriptor we own.
        while unsafe { libc::poll(&mut p, 1, -1) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        drop(locked);
        run_poststart(&rec);
        Ok(())
    }

    /// The OCI state document of a container.
    pub fn state(&self, id: &str) -> Result<String> {
        let locked = self.store.peek(id)?;
        let rec = locked.load()?;
        let status = locked.status(rec.as_ref());
        match rec {
            Some(rec) => serde_json::to_string_pretty(&rec.doc(status)).map_err(|e| err!("{e}")),
            None => Ok(format!(
                "{{\n  \"ociVersion\": \"{}\",\n  \"id\": {},\n  \"pid\": 0,\n  \"status\": \"{}\",\n  \"bundle\": \"\"\n}}",
                crate::features::OCI_VERSION_MAX,
                serde_json::to_string(id).unwrap_or_default(),
                status.as_str()
            )),
        }
    }

    /// Every container with its status.
    pub fn list(&self) -> Result<Vec<(Record, Status)>> {
        let mut out = Vec::new();
        for id in self.store.ids()? {
            let Ok(locked) = self.store.peek(&id) else { continue };
            if let Ok(Some(rec)) = locked.load() {
                let st = locked.status(Some(&rec));
                out.push((rec, st));
            }
        }
        Ok(out)
    }

    pub fn kill(&self, id: &str, sig: i32, all: bool) -> Result<()> {
        let locked = self.store.open(id)?;
        let rec = locked
            .load()?
            .ok_or_else(|| err!("container {id:?} is still being created"))?;
        let status = locked.status(Some(&rec));
        if crate::vm::is_vm(&locked) {
            if sig == 0 && status != Status::Stopped {
                // Signal 0 only asks whether the container is alive: its monitor is.
                return Ok(());
            }
            return crate::vm::kill(&locked, &rec, sig, all);
        }
        if status == Status::Stopped && !all {
            bail!("container {id:?} is not running (stopped)");
        }
        if all {
            let cg = Cgroup::open(&rec.cgroup_path);
            if rec.cgroup_owned {
                signal_all(&cg, sig);
            } else {
                // A cgroup the container only joined may hold processes that are not its own.
                signal_own_members(&cg, &rec, sig);
            }
            return Ok(());
        }
        // SAFETY: sending a signal to the recorded, still-alive init.
        if unsafe { libc::kill(rec.pid, sig) } != 0 {
            return Err(Error::sys(
                format!("kill container {id:?} (pid {})", rec.pid),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let locked = match self.store.open(id) {
            Ok(l) => l,
            // runc: `delete --force` of a container that does not exist succeeds.
            Err(_) if force && state::validate_id(id).is_ok() && self.store.peek(id).is_err() => return Ok(()),
            Err(e) => return Err(e),
        };
        let rec = match locked.load() {
            Ok(rec) => rec,
            // A state file that cannot be read is still removed by force.
            Err(e) if force => {
                crate::log::warn(&e.to_string());
                None
            }
            Err(e) => return Err(e),
        };
        let Some(rec) = rec else {
            if !force {
                bail!("container {id:?} is still being created (use --force to remove what is left of it)");
            }
            return locked.destroy();
        };
        match locked.status(Some(&rec)) {
            Status::Stopped | Status::Created => {}
            s if !force => bail!(
                "cannot delete container {id:?} that is not stopped: {} (use --force)",
                s.as_str()
            ),
            _ => {}
        }
        self.destroy(locked, &rec)
    }

    /// Kill whatever is left, remove the cgroup, run poststop hooks, remove the state.
    pub(crate) fn destroy(&self, locked: Locked, rec: &Record) -> Result<()> {
        let cg = Cgroup::open(&rec.cgroup_path);
        if rec.cgroup_owned {
            // Frozen (paused) or forking processes: freeze, SIGKILL all, thaw (so they can die).
            signal_all(&cg, libc::SIGKILL);
        }
        if state::process_alive(rec.pid, rec.pid_start) {
            // SAFETY: signal the recorded init, alive with the recorded start time.
            unsafe { libc::kill(rec.pid, libc::SIGKILL) };
            wait_gone(rec.pid, rec.pid_start);
        }
        if rec.cgroup_owned {
            // Processes outside a pid namespace of their own survive their init: end them too.
            signal_all(&cg, libc::SIGKILL);
            if rec.systemd_scope {
                cgroups::systemd::stop_scope(&rec.cgroup_path, Path::new(cgroups::CGROUP_ROOT))?;
            }
            cg.remove()?;
        }
        if crate::vm::is_vm(&locked) {
            // A pod's VM: its share's mounts go before the state directory (vm/pod.rs).
            crate::vm::pod::before_destroy(self.store.root(), &locked.dir, &rec.id)?;
        }
        if rec.mounts_in_runtime_ns {
            // No mount namespace of its own: its mounts are in ours, under its rootfs.
            if let Err(e) = crate::linux::rootfs::detach_mounts_under(&rec.rootfs) {
                crate::log::warn(&e.to_string());
            }
        }
        if !rec.poststop.is_empty() {
            let st = hook_state(rec, 0, Status::Stopped);
            if let Err(e) = hooks::run_all("poststop", &rec.poststop, &st) {
                crate::log::warn(&e.to_string());
            }
        }
        locked.destroy()
    }

    /// `exec`: run another process in a created or running container (a paused one only with
    /// `ignore_paused`); returns its exit status, or 0 when detached.
    pub fn exec(&self, id: &str, opts: &crate::linux::exec::ExecOpts) -> Result<i32> {
        let locked = self.store.peek(id)?;
        if crate::vm::is_vm(&locked) {
            return crate::vm::exec::exec(&locked, opts);
        }
        self.exec_in(locked, opts, crate::linux::exec::exec)
    }

    /// `exec` without the wait: the process's pid (and pty master); for the VM guest agent.
    pub fn exec_spawn(&self, id: &str, opts: &crate::linux::exec::ExecOpts) -> Result<crate::linux::exec::Spawned> {
        self.exec_in(self.store.peek(id)?, opts, crate::linux::exec::spawn)
    }

    fn exec_in<T>(
        &self,
        locked: Locked,
        opts: &crate::linux::exec::ExecOpts,
        run: fn(
            &Record,
            &oci_spec::runtime::Process,
            &crate::linux::exec::ExecOpts,
            &crate::linux::exec::Confinement,
        ) -> Result<T>,
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
        let process = crate::linux::exec::build_process(&rec, opts)?;
        let seccomp = match std::fs::read(locked.dir.join(SECCOMP_FILE)) {
            Ok(b) => Some(
                serde_json::from_slice::<oci_spec::runtime::LinuxSeccomp>(&b)
                    .map_err(|e| err!("{}: {e}", locked.dir.join(SECCOMP_FILE).display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::sys(locked.dir.join(SECCOMP_FILE).display(), e)),
        };
        let personality = match std::fs::read(locked.dir.join(PERSONALITY_FILE)) {
            Ok(b) => Some(
                serde_json::from_slice::<oci_spec::runtime::LinuxPersonality>(&b)
                    .map_err(|e| err!("{}: {e}", locked.dir.join(PERSONALITY_FILE).display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::sys(locked.dir.join(PERSONALITY_FILE).display(), e)),
        };
        let conf = crate::linux::exec::Confinement {
            seccomp: seccomp.as_ref(),
            personality: personality.as_ref(),
            state_json: serde_json::to_vec(&rec.doc(Status::Running)).unwrap_or_default(),
        };
        run(&rec, &process, opts, &conf)
    }

    /// `run`: create, start, and (unless detached) wait, forwarding signals; returns the exit code.
    pub fn run(&self, id: &str, opts: &CreateOpts, detach: bool, keep: bool) -> Result<i32> {
        state::validate_id(id)?;
        let bundle = spec::load_bundle(opts.bundle)?;
        if crate::vm::wanted(&bundle.spec) {
            return crate::vm::run(self, id, opts, bundle, detach, keep);
        }
        let sigs = if detach { None } else { Some(SignalGuard::block()) };
        if !detach {
            // Orphans of the container (and an init forked by an intermediate process) come to us.
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        }
        let made = self.make(id, opts, false, !detach, bundle)?;
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
                let _ = self.delete(id, true);
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
            self.delete(id, true)?;
        }
        Ok(code)
    }
}

/// Test-only fault injection: with BERTH_TEST_CRASH_AT=<step>, the runtime kills itself with SIGKILL
/// at that step of create, as a crash or an impatient engine would (steps: state-dir, recorded, cgroup,
/// fifo, spawned, saved).
fn crash_point(step: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("BERTH_TEST_CRASH_AT").ok());
    if at.as_deref() == Some(step) {
        // SAFETY: sending SIGKILL to ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// Signal every process of a cgroup Berth made, sub-cgroups included. The cgroup is frozen
/// meanwhile (where the host can), so a process forking at that moment cannot leave a child
/// unsignalled.
fn signal_all(cg: &Cgroup, sig: i32) {
    let pids = cg.all_procs();
    if pids.is_empty() {
        return;
    }
    let frozen = cgroups::freeze::can_freeze(cg) && cgroups::freeze::freeze(cg).is_ok();
    let pids = if frozen { cg.all_procs() } else { pids };
    for pid in pids {
        // SAFETY: signal processes of the container's cgroup.
        unsafe { libc::kill(pid, sig) };
    }
    if frozen {
        let _ = cgroups::freeze::thaw(cg);
    }
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
        // SAFETY: pidfd_open with integer arguments; the descriptor is owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        if fd < 0 {
            continue;
        }
        // SAFETY: fd is a fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let member =
            namespace_of(pid, "mnt") == init_mnt || (init_pid.is_some() && namespace_of(pid, "pid") == init_pid);
        if member {
            // SAFETY: signal through the pidfd of a process checked to be the container's.
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
        if let Err(e) = hooks::run_all("poststart", list, &hook_state(rec, rec.pid, Status::Running)) {
            crate::log::warn(&e.to_string());
        }
    }
}

/// Wait (up to 10 s) for a process that is not our child to be gone.
fn wait_gone(pid: i32, start: u64) {
    // SAFETY: pidfd_open on a pid; the descriptor is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd >= 0 {
        // SAFETY: fd is a fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: p is a valid pollfd.
        unsafe { libc::poll(&mut p, 1, 10_000) };
        return;
    }
    for _ in 0..2000 {
        if !state::process_alive(pid, start) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
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

pub(crate) struct SignalGuard {
    pub(crate) set: libc::sigset_t,
}

impl SignalGuard {
    /// Block the forwarded signals and SIGCHLD so they are taken with sigwait.
    pub(crate) fn block() -> SignalGuard {
        // SAFETY: sigset manipulation on a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in FORWARDED {
                libc::sigaddset(&mut set, s);
            }
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            SignalGuard { set }
        }
    }

    /// Forward signals to `pid` until it exits; reap every child. Returns the shell-style exit code.
    pub(crate) fn wait_forwarding(&self, pid: i32) -> i32 {
        loop {
            // Reap first: the child may already have exited.
            loop {
                let mut status = 0;
                // SAFETY: waitpid on any child, non-blocking.
                let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if r <= 0 {
                    break;
                }
                if r == pid {
                    return crate::signal::exit_code(status);
                }
            }
            let mut sig = 0;
            // SAFETY: sigwait on our blocked set.
            if unsafe { libc::sigwait(&self.set, &mut sig) } != 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                // SAFETY: forwarding a signal to the container's init.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }
}

pub fn default_root() -> PathBuf {
    PathBuf::from(state::DEFAULT_ROOT)
}
