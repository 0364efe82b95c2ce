//! libberth: the Berth OCI runtime as a library.
//!
//! The `berth` binary is a thin command-line layer over this crate. Each module owns one concern:
//! `spec` loads and validates config.json, `state` is the on-disk state store, `container` drives the
//! lifecycle (create/start/state/kill/delete/run) through the `backend` trait, implemented by `linux`
//! (the Linux-container backend: process, rootfs, security, console) and `vm` (VM containers);
//! `undo`, `pid_file` and `signal` hold what backends and `criu` share; `cgroups` places containers
//! in control groups, `hooks` runs the OCI hooks, `features` and `default_spec` produce the
//! documents of `berth features` and `berth spec`.

pub(crate) mod backend;
pub mod cgroups;
pub mod container;
pub mod criu;
pub mod default_spec;
pub mod error;
pub mod features;
pub mod hooks;
pub mod linux;
pub mod log;
pub mod netlink;
pub(crate) mod pid_file;
pub mod signal;
pub mod spec;
pub mod state;
pub mod time;
pub(crate) mod undo;

pub use error::{Error, Result};
pub mod vm;
