//! The undo of a half-made container, shared by the backends and restore: `Undo` records what a
//! create (Linux or VM) or a restore has made so far — the state directory, the cgroup or systemd
//! scope, the process — and removes it in reverse order when dropped armed. Also the test-only
//! crash points of create (`BERTH_TEST_CRASH_AT`, tests/reliability.rs).

use crate::cgroups::{self, Cgroup};
use crate::state::Locked;
use crate::Result;
use std::path::Path;

/// Undoes a half-made container (Linux or VM) unless disarmed: kills and reaps the process it
/// made (init, or a VM's monitor), removes the cgroup it made, removes the state directory.
#[derive(Default)]
pub(crate) struct Undo {
    pub(crate) dir: Option<Locked>,
    pub(crate) cgroup: Option<Cgroup>,
    /// The cgroup path of a systemd scope this create starts, and whether systemd accepted it
    /// (then it is stopped on failure).
    pub(crate) scope: Option<(String, std::rc::Rc<std::cell::Cell<bool>>)>,
    pub(crate) pid: i32,
}

impl Undo {
    /// The container is made and recorded: nothing is undone any more (the state directory, when
    /// taken back for the final save, is given up by the caller).
    pub(crate) fn disarm(&mut self) {
        self.cgroup = None;
        self.scope = None;
        self.pid = 0;
    }

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
            // SAFETY: kill(2) and waitpid(2) take integers (waitpid a null status, allowed); the pid is
            // this create's own child, unreaped until here, so it cannot name another process.
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
                // SAFETY: kill(2) takes integers and touches no memory of ours; the pids are members of
                // the cgroup this create made (or systemd made for it).
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

/// Test-only fault injection: with BERTH_TEST_CRASH_AT=<step>, the runtime kills itself with SIGKILL
/// at that step of create, as a crash or an impatient engine would (steps: state-dir, recorded, cgroup,
/// fifo, spawned, saved).
pub(crate) fn crash_point(step: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("BERTH_TEST_CRASH_AT").ok());
    if at.as_deref() == Some(step) {
        // SAFETY: kill(2) and getpid(2) take and return integers; the signal is for this process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
