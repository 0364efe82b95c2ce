//! The VM backend behind `backend::Backend`: each operation is the vm module's own entry point
//! (`create`, `start`, `kill`, `exec::exec`, `run`, and `pod::park` and `pod::before_destroy` for `delete`).

use crate::backend::Backend;
use crate::container::{CreateOpts, Runtime};
use crate::linux::exec::ExecOpts;
use crate::spec::Bundle;
use crate::state::{Locked, Record, Status};
use crate::Result;

/// The VM backend (docs/VM.md).
pub(crate) struct Vm;

impl Backend for Vm {
    fn create(&self, rt: &Runtime, id: &str, opts: &CreateOpts, bundle: Bundle) -> Result<()> {
        super::create(rt, id, opts, bundle).map(|_| ())
    }

    fn start(&self, locked: Locked, rec: &Record) -> Result<()> {
        super::start(&locked, rec)
    }

    fn kill(&self, locked: &Locked, rec: &Record, status: Status, sig: i32, all: bool) -> Result<()> {
        if sig == 0 && status != Status::Stopped {
            // Signal 0 only asks whether the container is alive: its monitor is.
            return Ok(());
        }
        super::kill(locked, rec, sig, all)
    }

    fn exec(&self, locked: Locked, opts: &ExecOpts) -> Result<i32> {
        super::exec::exec(&locked, opts)
    }

    fn run(&self, rt: &Runtime, id: &str, opts: &CreateOpts, bundle: Bundle, detach: bool, keep: bool) -> Result<i32> {
        super::run(rt, id, opts, bundle, detach, keep)
    }

    fn park(&self, rt: &Runtime, locked: &Locked, rec: &Record) -> Result<bool> {
        // A pod's first VM container with later ones running: its VM stays (vm/pod.rs).
        super::pod::park(rt, locked, rec)
    }

    fn before_destroy(&self, rt: &Runtime, locked: &Locked, _rec: &Record) -> Result<()> {
        // A pod's VM: its share's mounts go before the state directory (vm/pod.rs).
        super::pod::before_destroy(rt, &locked.dir, &locked.id)
    }
}
