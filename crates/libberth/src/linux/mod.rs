//! The Linux-container backend: the init process cloned into new namespaces (`process`), the code
//! it runs to become the container (`init`), and the pieces init uses: the root filesystem (`rootfs`),
//! credentials, capabilities and limits (`security`), the terminal (`console`), the parent/child
//! channel (`sync`) and low-level path resolution inside the rootfs (`fs`).

pub mod console;
pub mod exec;
pub mod fs;
pub mod idmap;
pub mod init;
pub mod process;
pub mod rootfs;
pub mod security;
pub mod sync;
pub mod tty;
