//! The state store: one directory per container under the runtime root (`--root`, default
//! `/run/berth`). `<root>/<id>/state.json` is written atomically (write to a temporary file, then
//! rename), the directory itself is created with `mkdir` so two creates of one ID cannot both win, and
//! every operation holds an exclusive `flock` on the directory while it reads or changes the container.
//! The status is derived, never stored: the init process alive (same pid *and* start time, so a reused
//! pid is not mistaken for ours) and the exec fifo present means `created`, alive without it `running`,
//! gone `stopped`.

use crate::error::Context;
use crate::{bail, err, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub const DEFAULT_ROOT: &str = "/run/berth";
const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What Berth remembers about a container between calls.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    /// Start time of the init process in clock ticks since boot (field 22 of /proc/PID/stat).
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// The container's cgroup path relative to each hierarchy's root, and whether Berth made it.
    #[serde(default)]
    pub cgroup_path: String,
    #[serde(default)]
    pub cgroup_owned: bool,
    /// The cgroup is a transient systemd scope Berth started (`--systemd-cgroup`): delete stops it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub systemd_scope: bool,
    /// Whether the init process is in a new pid namespace (killing it ends every process).
    #[serde(default)]
    pub own_pid_ns: bool,
    /// The poststart hooks, run by `start` as the config said at create: never read again from the
    /// bundle, which a container (or a VM's guest) with a writable bind of it could rewrite.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststart: Vec<oci_spec::runtime::Hook>,
    /// The container has no mount namespace of its own: its mounts (under the rootfs) are in the
    /// runtime's namespace, and delete detaches them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mounts_in_runtime_ns: bool,
    /// The poststop hooks, run at delete when the bundle may be gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststop: Vec<oci_spec::runtime::Hook>,
    /// The container's process, the base of `exec` (which must work when the bundle is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<oci_spec::runtime::Process>,
}

impl Record {
    /// The record of a container about to be made from `bundle`: no process and no cgroup yet
    /// (the backend fills those in).
    pub fn from_bundle(id: &str, bundle: &crate::spec::Bundle) -> Record {
        Record {
            oci_version: bundle.spec.version().clone(),
            id: id.to_string(),
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: crate::time::now_rfc3339(),
            annotations: bundle.spec.annotations().clone().unwrap_or_default(),
            poststart: bundle
                .spec
                .hooks()
                .as_ref()
                .and_then(|h| h.poststart().clone())
                .unwrap_or_default(),
            poststop: bundle
                .spec
                .hooks()
                .as_ref()
                .and_then(|h| h.poststop().clone())
                .unwrap_or_default(),
            process: bundle.spec.process().clone(),
            ..Record::default()
        }
    }
}

/// The OCI state document, as `berth state` prints it (runc's fields and order).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDoc<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: &'a str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
}

impl Record {
    pub fn doc(&self, status: Status) -> StateDoc<'_> {
        StateDoc {
            oci_version: &self.oci_version,
            id: &self.id,
            pid: if status == Status::Stopped { 0 } else { self.pid },
            status: status.as_str(),
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            owner: &self.owner,
            annotations: &self.annotations,
        }
    }
}

/// A container ID must be a single, sane path component.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        bail!("container ID: empty");
    }
    if id.len() > 1024 {
        bail!("container ID {:?}...: longer than 1024 bytes", prefix_within(id, 32));
    }
    if id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        bail!("container ID {id:?}: invalid (must not be '.', '..', or contain '/')");
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+-.@:".contains(&b)) {
        bail!("container ID {id:?}: invalid (allowed: letters, digits and _ + - . @ :)");
    }
    Ok(())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix_within(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub struct Store {
    root: PathBuf,
}

/// A container's directory, locked for the lifetime of this value.
#[derive(Debug)]
pub struct Locked {
    pub id: String,
    pub dir: PathBuf,
    _lock: Option<OwnedFd>,
}

fn lock_dir(dir: &Path) -> Result<OwnedFd> {
    lock_dir_with(dir, libc::LOCK_EX)
}

fn lock_dir_nb(dir: &Path) -> Result<OwnedFd> {
    lock_dir_with(dir, libc::LOCK_EX | libc::LOCK_NB)
}

fn lock_dir_with(dir: &Path, how: libc::c_int) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_ctx(|| format!("{}", dir.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(fd.as_raw_fd(), how) } != 0 {
        return Err(Error::sys(
            format!("lock {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Make the directory of a new container; fails if the ID is taken.
    pub fn create(&self, id: &str) -> Result<Locked> {
        validate_id(id)?;
        if let Err(e) = std::fs::create_dir_all(&self.root) {
            return Err(Error::sys(format!("state root {}", self.root.display()), e));
        }
        let dir = self.root.join(id);
        match nix::unistd::mkdir(&dir, nix::sys::stat::Mode::from_bits_truncate(0o711)) {
            Ok(()) => {}
            Err(nix::Error::EEXIST) => bail!("container {id:?} already exists"),
            Err(e) => return Err(Error::sys(format!("state directory {}", dir.display()), e)),
        }
        let lock = lock_dir(&dir)?;
        Ok(Locked {
            id: id.to_string(),
            dir,
            _lock: Some(lock),
        })
    }

    /// Lock an existing container's directory.
    pub fn open(&self, id: &str) -> Result<Locked> {
        validate_id(id)?;
        let dir = self.root.join(id);
        match lock_dir(&dir) {
            Ok(lock) => {
                // A concurrent delete may have removed it while we waited for the lock.
                if !dir.exists() {
                    bail!("container {id:?} does not exist");
                }
                Ok(Locked {
                    id: id.to_string(),
                    dir,
                    _lock: Some(lock),
                })
            }
            Err(e) if e.errno() == Some(libc::ENOENT) => bail!("container {id:?} does not exist"),
            Err(e) => Err(e),
        }
    }

    /// A container's directory without taking its lock: for read-only looks (state, list), which
    /// must not wait behind a long create. The state file is replaced atomically, so a reader sees
    /// a whole old or a whole new one.
    pub fn peek(&self, id: &str) -> Result<Locked> {
        validate_id(id)?;
        let dir = self.root.join(id);
        if !dir.is_dir() {
            bail!("container {id:?} does not exist");
        }
        Ok(Locked {
            id: id.to_string(),
            dir,
            _lock: None,
        })
    }

    /// A VM container's directory outside the store's namespace of IDs (a pod's parked VM,
    /// vm/pod.rs), locked like a container's.
    pub fn open_dir(&self, dir: &Path, id: &str) -> Result<Locked> {
        let lock = lock_dir(dir)?;
        if !dir.exists() {
            bail!("{} does not exist", dir.display());
        }
        Ok(Locked {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// The same without its lock: a read-only look.
    pub fn peek_dir(&self, dir: &Path, id: &str) -> Locked {
        Locked {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            _lock: None,
        }
    }

    /// IDs of every container in the store, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::sys(self.root.display(), e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

impl Locked {
    /// The lock descriptor (a forked init must close its copy).
    pub fn lock_fd(&self) -> Option<std::os::fd::RawFd> {
        self._lock.as_ref().map(|f| f.as_raw_fd())
    }

    /// The saved record, or None while the container is still being created (or a create crashed).
    pub fn load(&self) -> Result<Option<Record>> {
        let path = self.dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| err!("{}: corrupt state: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::sys(path.display(), e)),
        }
    }

    /// Write the record atomically.
    pub fn save(&self, rec: &Record) -> Result<()> {
        let tmp = self.dir.join(".state.json.tmp");
        let path = self.dir.join(STATE_FILE);
        let data = serde_json::to_vec(rec).map_err(|e| err!("encode state: {e}"))?;
        std::fs::write(&tmp, data).with_ctx(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_ctx(|| format!("rename to {}", path.display()))
    }

    pub fn fifo_path(&self) -> PathBuf {
        self.dir.join(EXEC_FIFO)
    }

    /// The container's status, derived from its init process and exec fifo.
    pub fn status(&self, rec: Option<&Record>) -> Status {
        let Some(rec) = rec.filter(|r| r.pid != 0) else {
            // No init recorded yet: being created while the creator holds the lock; if the lock
            // is free the creator died and nothing runs.
            return if self.creator_alive() {
                Status::Creating
            } else {
                Status::Stopped
            };
        };
        if !process_alive(rec.pid, rec.pid_start) {
            return Status::Stopped;
        }
        if crate::cgroups::is_frozen(&rec.cgroup_path) {
            return Status::Paused;
        }
        if self.fifo_path().exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// Whether another process holds this container's lock (only asked of unlocked looks).
    fn creator_alive(&self) -> bool {
        if self._lock.is_some() {
            return false;
        }
        match lock_dir_nb(&self.dir) {
            Ok(_) => false,
            Err(e) => e.errno() == Some(libc::EWOULDBLOCK),
        }
    }

    /// Remove the container's directory (the lock goes with it).
    pub fn destroy(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).with_ctx(|| format!("remove {}", self.dir.display()))
    }
}

/// (state letter, start time) of a process from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(u8, u64)> {
    let mut buf = [0u8; 512];
    let path = format!("/proc/{pid}/stat\0");
    // SAFETY: path is NUL-terminated; buf is a valid buffer of the given length.
    let n = unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return None;
    }
    parse_stat(&buf[..n as usize])
}

fn parse_stat(stat: &[u8]) -> Option<(u8, u64)> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 2..]).ok()?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.as_bytes().first().copied()?;
    // rest starts at field 3 (state); start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether `pid` is still the process that was started at `start` and has not exited.
pub fn process_alive(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match proc_stat(pid) {
        Some((state, s)) => s == start && state != b'Z' && state != b'X',
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["abc", "my-container_1", "k8s.io:pod@1+x"] {
            assert!(validate_id(good).is_ok(), "{good:?}");
        }
        assert!(validate_id(&"x".repeat(2000)).is_err());
    }

    #[test]
    fn a_long_id_with_a_multibyte_char_at_byte_32_is_an_error_not_a_panic() {
        let id = format!("{}é{}", "a".repeat(31), "b".repeat(1000));
        let e = validate_id(&id).unwrap_err().to_string();
        assert!(
            e.contains(&"a".repeat(31)) && e.contains("longer than 1024 bytes"),
            "{e}"
        );
        assert_eq!(prefix_within("aé", 2), "a");
        assert_eq!(prefix_within("abc", 32), "abc");
    }

    #[test]
    fn parses_stat_with_odd_names() {
        let line = b"42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_stat(line), Some((b'S', 123456)));
    }

    #[test]
    fn own_process_is_alive_and_reused_pid_is_not() {
        let me = std::process::id() as i32;
        let (_, start) = proc_stat(me).unwrap();
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1));
        assert!(!process_alive(0, 0));
    }

    #[test]
    fn store_refuses_a_taken_id() {
        let root = std::env::temp_dir().join(format!("berth-store-test-{}", std::process::id()));
        let store = Store::new(&root);
        let first = store.create("c1").unwrap();
        assert!(store.create("c1").unwrap_err().to_string().contains("already exists"));
        first.destroy().unwrap();
        assert!(store.open("c1").unwrap_err().to_string().contains("does not exist"));
        std::fs::remove_dir_all(root).unwrap();
    }
}
