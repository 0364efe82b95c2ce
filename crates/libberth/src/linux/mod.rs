//! The Linux-container backend: its lifecycle behind `backend::Backend` (`backend`), the init process
//! cloned into new namespaces (`process`), the code it runs to become the container (`init`),
//! `berth exec`'s process and wait (`exec`) and starting it inside a running container (`join`),
//! and the pieces both use: the root filesystem (`rootfs`, `idmap` for ID-mapped mounts),
//! credentials, capabilities and limits (`security`), scheduling and memory policy (`tuning`),
//! `seccomp`, the terminal (`console`, and `tty` for relaying the user's own), the parent/child
//! channel (`sync`), path resolution inside the rootfs (`fs`), verified /proc writes (`procfs`) and
//! the sealed re-execution of the runtime binary (`exeseal`).

pub(crate) mod backend;
pub mod console;
pub mod exec;
pub mod exeseal;
pub mod fds;
pub mod fs;
pub mod idmap;
pub mod init;
pub mod join;
pub mod process;
pub mod procfs;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod sync;
pub mod tty;
pub mod tuning;
