//! The container lifecycle as the command line sees it: creating -> created -> running -> stopped,
//! with every operation checking the state it needs. `Runtime` loads the bundle or the container's
//! record, takes the container's lock, and hands what differs per backend (create, start, kill,
//! exec, run) to the container's `backend::Backend` (Linux or VM); `state`, `list` and `delete` are
//! the same for every backend and live here. (`Runtime` is extended by criu.rs with checkpoint and
//! restore, and by cgroups/ops.rs with update, pause, resume, ps and events.)

use crate::cgroups::{self, Cgroup};
use crate::linux::exec::ExecOpts;
use crate::state::{self, Locked, Record, Status, Store};
use crate::{backend, bail, err, hooks, spec, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The runtime as one command uses it: the state store (`--root`) and the cgroup driver
/// (`--systemd-cgroup`).
pub struct Runtime {
    pub store: Store,
    pub systemd_cgroup: bool,
}

/// The flags of `create` and `run` that reach the backend.
pub struct CreateOpts<'a> {
    pub bundle: &'a Path,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
}

impl Runtime {
    pub fn new(root: &Path, systemd_cgroup: bool) -> Runtime {
        Runtime {
            store: Store::new(root),
            systemd_cgroup,
        }
    }

    /// `create`: the container waits in its init (or its VM) for `start`.
    pub fn create(&self, id: &str, opts: &CreateOpts) -> Result<()> {
        state::validate_id(id)?;
        let bundle = spec::load_bundle(opts.bundle)?;
        backend::for_bundle(&bundle.spec).create(self, id, opts, bundle)
    }

    /// `start`: let a created container run the user's program.
    pub fn start(&self, id: &str) -> Result<()> {
        let locked = self.store.open(id)?;
        let rec = locked
            .load()?
            .ok_or_else(|| err!("container {id:?} is still being created"))?;
        backend::of(&locked).start(locked, &rec)
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
        backend::of(&locked).kill(&locked, &rec, status, sig, all)
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
        if backend::of(&locked).park(self, &locked, rec)? {
            // The container's process was ended; what serves others stays (vm/pod.rs, `park`).
            run_poststop(rec);
            return Ok(());
        }
        let cg = Cgroup::open(&rec.cgroup_path);
        if rec.cgroup_owned {
            // Frozen (paused) or forking processes: freeze, SIGKILL all, thaw (so they can die).
            cgroups::freeze::signal_all(&cg, libc::SIGKILL);
        }
        if state::process_alive(rec.pid, rec.pid_start) {
            // SAFETY: kill(2) takes integers and touches no memory of ours; the pid is the recorded
            // init's, checked alive with its recorded start time (not a reused pid) just above.
            unsafe { libc::kill(rec.pid, libc::SIGKILL) };
            wait_gone(rec.pid, rec.pid_start);
        }
        if rec.cgroup_owned {
            // Processes outside a pid namespace of their own survive their init: end them too.
            cgroups::freeze::signal_all(&cg, libc::SIGKILL);
            if rec.systemd_scope {
                cgroups::systemd::stop_scope(&rec.cgroup_path, Path::new(cgroups::CGROUP_ROOT))?;
            }
            cg.remove()?;
        }
        backend::of(&locked).before_destroy(self, &locked, rec)?;
        if rec.mounts_in_runtime_ns {
            // No mount namespace of its own: its mounts are in ours, under its rootfs.
            if let Err(e) = crate::linux::rootfs::detach_mounts_under(&rec.rootfs) {
                crate::log::warn(&e.to_string());
            }
        }
        run_poststop(rec);
        locked.destroy()
    }

    /// `exec`: run another process in a created or running container (a paused one only with
    /// `ignore_paused`); returns its exit status, or 0 when detached.
    pub fn exec(&self, id: &str, opts: &ExecOpts) -> Result<i32> {
        let locked = self.store.peek(id)?;
        backend::of(&locked).exec(locked, opts)
    }

    /// `exec` in a Linux container without the wait: the process's pid (and pty master); for the VM
    /// guest agent.
    pub fn exec_spawn(&self, id: &str, opts: &ExecOpts) -> Result<crate::linux::join::Joined> {
        crate::linux::backend::exec_spawn(self.store.peek(id)?, opts)
    }

    /// `run`: create, start, and (unless detached) wait, forwarding signals; returns the exit code.
    pub fn run(&self, id: &str, opts: &CreateOpts, detach: bool, keep: bool) -> Result<i32> {
        state::validate_id(id)?;
        let bundle = spec::load_bundle(opts.bundle)?;
        backend::for_bundle(&bundle.spec).run(self, id, opts, bundle, detach, keep)
    }
}

/// The poststop hooks of a deleted container (failures are warnings).
fn run_poststop(rec: &Record) {
    if !rec.poststop.is_empty() {
        let st = hooks::state_json(rec, 0, Status::Stopped);
        if let Err(e) = hooks::run_all("poststop", &rec.poststop, &st) {
            crate::log::warn(&e.to_string());
        }
    }
}

/// Wait (up to 10 s) for a process that is not our child to be gone.
fn wait_gone(pid: i32, start: u64) {
    // SAFETY: pidfd_open takes integers and touches no memory of ours; a descriptor it returns is
    // new and owned by nobody else (taken over below).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd >= 0 {
        // SAFETY: fd was just returned by pidfd_open: open, and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: p is one initialized pollfd, alive for the call (nfds 1); fd stays open until after it.
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

pub fn default_root() -> PathBuf {
    PathBuf::from(state::DEFAULT_ROOT)
}
