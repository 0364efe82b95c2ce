//! The backends a container runs on, behind one trait that container.rs drives: the Linux backend
//! (`linux::backend::Linux`: namespaces, a cgroup and an init process on this host) and the VM
//! backend (`vm::backend::Vm`: the container inside a VM of its own, docs/VM.md). `create` and `run`
//! pick the backend from the bundle (`for_bundle`), every later operation from the container's state
//! directory (`of`: the `vm` marker). What the backends share stays out of them: `state`, `list` and
//! `delete` in container.rs, and the helpers in `undo`, `pid_file` and `signal`.

use crate::container::{CreateOpts, Runtime};
use crate::linux::exec::ExecOpts;
use crate::spec::Bundle;
use crate::state::{Locked, Record, Status};
use crate::Result;
use oci_spec::runtime::Spec;

/// The operations whose work differs per backend. The caller (container.rs) has validated the ID,
/// loaded the bundle or the container's record and holds the container's lock where the operation
/// needs one (all but exec).
pub(crate) trait Backend {
    /// `create`: make the container, recorded in `rt.store`; its process waits for `start`.
    fn create(&self, rt: &Runtime, id: &str, opts: &CreateOpts, bundle: Bundle) -> Result<()>;

    /// `start`: run the created container's process. `locked` is given up before the poststart
    /// hooks run.
    fn start(&self, locked: Locked, rec: &Record) -> Result<()>;

    /// `kill`: send `sig` to the container's process (`all`: to every process of the container);
    /// `status` is the container's, read under the lock.
    fn kill(&self, locked: &Locked, rec: &Record, status: Status, sig: i32, all: bool) -> Result<()>;

    /// `exec`: run another process in the container (`locked` is a peek: no lock is held); its exit
    /// status, or 0 when detached.
    fn exec(&self, locked: Locked, opts: &ExecOpts) -> Result<i32>;

    /// `run`: create, start and, unless `detach`, wait (then delete, unless `keep`); the exit code.
    fn run(&self, rt: &Runtime, id: &str, opts: &CreateOpts, bundle: Bundle, detach: bool, keep: bool) -> Result<i32>;

    /// `delete`, before anything is killed: whether the backend keeps what the container's
    /// processes serve beyond it and took the state directory out of the store (a pod's VM while
    /// later containers of it run, vm/pod.rs); then only the poststop hooks are left to run.
    fn park(&self, _rt: &Runtime, _locked: &Locked, _rec: &Record) -> Result<bool> {
        Ok(false)
    }

    /// `delete`: what the backend undoes of its own after the container's processes and cgroup are
    /// gone and before its state directory is removed (nothing by default).
    fn before_destroy(&self, _rt: &Runtime, _locked: &Locked, _rec: &Record) -> Result<()> {
        Ok(())
    }
}

/// The backend a bundle asks for.
pub(crate) fn for_bundle(spec: &Spec) -> &'static dyn Backend {
    if crate::vm::wanted(spec) {
        &crate::vm::backend::Vm
    } else {
        &crate::linux::backend::Linux
    }
}

/// The backend of an existing container.
pub(crate) fn of(locked: &Locked) -> &'static dyn Backend {
    if crate::vm::is_vm(locked) {
        &crate::vm::backend::Vm
    } else {
        &crate::linux::backend::Linux
    }
}
