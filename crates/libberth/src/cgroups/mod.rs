//! Control groups: finding the host's layout (cgroup v1, v2, or the hybrid of v1 controllers plus a v2
//! mount at /sys/fs/cgroup/unified), making a container's cgroup in every hierarchy, moving processes
//! into it, listing and signalling its processes, and removing it. The container's cgroup path comes
//! from `linux.cgroupsPath`: absolute paths are taken from each hierarchy's root, relative ones from the
//! runtime's own cgroup, and an empty one means `/<id>`.
//!
//! `resources` turns `linux.resources` into file writes, routing each controller to where the host
//! mounts it (a v1 hierarchy, or the unified one); `v1` and `v2` hold the per-layout translations;
//! `freeze` pauses and resumes; `stats` reads the numbers for `events`.

pub mod devices_bpf;
pub mod freeze;
pub mod ops;
pub mod resources;
pub mod stats;
pub mod systemd;
pub mod v1;
pub mod v2;

use crate::error::Context;
use crate::{bail, Error, Result};
use std::path::{Path, PathBuf};

pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// One mounted hierarchy: its name (a v1 controller list like `cpu,cpuacct`, `name=systemd`, or
/// empty for v2) and where it is mounted.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub name: String,
    pub mount: PathBuf,
    pub v2: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    V1,
    V2,
    Hybrid,
}

fn fs_magic(path: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(path).ok().map(|s| s.filesystem_type().0)
}

/// The hierarchies mounted under /sys/fs/cgroup, v1 first (in directory order), v2 last.
pub fn hierarchies() -> (Layout, Vec<Hierarchy>) {
    // The mounts do not change while the runtime runs: look once.
    static FOUND: std::sync::OnceLock<(Layout, Vec<Hierarchy>)> = std::sync::OnceLock::new();
    FOUND.get_or_init(discover).clone()
}

fn discover() -> (Layout, Vec<Hierarchy>) {
    let root = Path::new(CGROUP_ROOT);
    if fs_magic(root) == Some(CGROUP2_SUPER_MAGIC) {
        return (
            Layout::V2,
            vec![Hierarchy {
                name: String::new(),
                mount: root.into(),
                v2: true,
            }],
        );
    }
    let mut v1 = Vec::new();
    let mut v2 = None;
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            // Symlinks such as cpu -> cpu,cpuacct name a hierarchy twice: skip them.
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            match fs_magic(&path) {
                Some(CGROUP_SUPER_MAGIC) => {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let name = if name == "systemd" {
                        "name=systemd".to_string()
                    } else {
                        name
                    };
                    v1.push(Hierarchy {
                        name,
                        mount: path,
                        v2: false,
                    })
                }
                Some(CGROUP2_SUPER_MAGIC) => {
                    v2 = Some(Hierarchy {
                        name: String::new(),
                        mount: path,
                        v2: true,
                    })
                }
                _ => {}
            }
        }
    }
    v1.sort_by(|a, b| a.name.cmp(&b.name));
    let layout = if v2.is_some() { Layout::Hybrid } else { Layout::V1 };
    v1.extend(v2);
    (layout, v1)
}

/// The runtime's own cgroup path in a hierarchy, from /proc/self/cgroup.
pub(crate) fn own_path(h: &Hierarchy, proc_self_cgroup: &str) -> String {
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let matches = if h.v2 {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| h.name.split(',').any(|n| n == c))
        };
        if matches {
            return path.to_string();
        }
    }
    "/".to_string()
}

/// Where the container's cgroup is, relative to each hierarchy's root.
pub fn container_path(cgroups_path: Option<&Path>, id: &str, systemd: bool) -> Result<String> {
    if systemd {
        if !systemd::booted() {
            bail!(
                "--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); use the cgroupfs driver"
            );
        }
        if hierarchies().0 != Layout::V2 {
            bail!("--systemd-cgroup: Berth's systemd driver needs a pure cgroup v2 host (this one mounts cgroup v1); use the cgroupfs driver");
        }
        let p = cgroups_path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if systemd::rootless() {
            // The scope is the user manager's: under its cgroup, through the user's bus.
            systemd::cgroup_path(&p, id)?; // the path's own errors first
            return systemd::user_cgroup_path(&p, id, &systemd::user_manager_cgroup()?);
        }
        return systemd::cgroup_path(&p, id);
    }
    let p = match cgroups_path {
        None => return Ok(format!("/{id}")),
        Some(p) => p.to_string_lossy().into_owned(),
    };
    if p.split('/').any(|c| c == "..") {
        bail!("linux.cgroupsPath: {p:?} must not contain '..'");
    }
    if p.is_empty() {
        return Ok(format!("/{id}"));
    }
    // "/", "//", "/." name a hierarchy's root (every process of the host); ".", "./" the runtime's
    // own cgroup (its caller's processes). Neither is the container's to limit, signal or remove.
    if p.split('/').all(|c| c.is_empty() || c == ".") {
        bail!(
            "linux.cgroupsPath: {p:?} names {}, not a cgroup of the container's own",
            if p.starts_with('/') {
                "the root cgroup"
            } else {
                "the runtime's own cgroup"
            }
        );
    }
    if p.starts_with('/') {
        return Ok(p);
    }
    // Relative: below the runtime's own cgroup (resolved per hierarchy at creation; recorded with a
    // leading '@' so that later calls find the same place).
    Ok(format!("@{p}"))
}

/// Each hierarchy with the container's directory in it.
pub type Dirs = Vec<(Hierarchy, PathBuf)>;

/// A container's cgroup across every hierarchy.
pub struct Cgroup {
    pub dirs: Dirs,
    /// With the systemd driver, the scope to start when the init is added (`add`).
    pub systemd: Option<systemd::Placement>,
}

impl Cgroup {
    /// Find (not create) the directories of a recorded cgroup path.
    pub fn open(path: &str) -> Cgroup {
        // A relative path is resolved once per process and remembered: the container's init (a
        // clone of the runtime, already moved into the cgroup) must find the same directories.
        static RESOLVED: std::sync::Mutex<Option<(String, Dirs)>> = std::sync::Mutex::new(None);
        if path.starts_with('@') {
            if let Ok(mut g) = RESOLVED.lock() {
                if let Some((_, dirs)) = g.as_ref().filter(|(p, _)| p == path) {
                    return Cgroup {
                        dirs: dirs.clone(),
                        systemd: None,
                    };
                }
                let cg = Cgroup::resolve(path);
                *g = Some((path.to_string(), cg.dirs.clone()));
                return cg;
            }
        }
        Cgroup::resolve(path)
    }

    fn resolve(path: &str) -> Cgroup {
        let (_, hs) = hierarchies();
        let own = if path.starts_with('@') {
            std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default()
        } else {
            String::new()
        };
        let dirs = hs
            .into_iter()
            .map(|h| {
                let rel = match path.strip_prefix('@') {
                    Some(r) => format!("{}/{}", own_path(&h, &own).trim_end_matches('/'), r),
                    None => path.to_string(),
                };
                let dir = h.mount.join(rel.trim_start_matches('/'));
                (h, dir)
            })
            .collect();
        Cgroup { dirs, systemd: None }
    }

    /// Whether the cgroup exists already (in the first hierarchy).
    pub fn exists(&self) -> bool {
        self.dirs.first().is_some_and(|(_, d)| d.exists())
    }

    /// Make the cgroup in every hierarchy. Returns whether Berth made it (false: it existed, joined).
    /// Without root, hierarchies Berth may not write (not delegated) are skipped with a debug log.
    pub fn create(&self) -> Result<bool> {
        // Joining a cgroup is only for an empty one (as runc 1.2): processes already there are not
        // the container's, and would be limited, frozen and signalled with it.
        if self.exists() {
            let n = self.all_procs().len();
            if n > 0 {
                bail!(
                    "linux.cgroupsPath: the cgroup {} is not empty ({n} process(es) in it); a container's cgroup must be new or empty",
                    self.dirs[0].1.display()
                );
            }
        }
        let mut made = false;
        for (h, dir) in &self.dirs {
            let cpuset = h.name.split(',').any(|c| c == "cpuset");
            if dir.exists() {
                if cpuset {
                    // A pre-made (joined) cpuset cgroup may still have empty cpus/mems.
                    if let Err(e) = create_cpuset_dirs(&h.mount, dir) {
                        if !not_delegated(e.errno()) {
                            return Err(e);
                        }
                    }
                }
                continue;
            }
            let r = if cpuset {
                create_cpuset_dirs(&h.mount, dir)
            } else {
                std::fs::create_dir_all(dir).with_ctx(|| format!("cgroup {}", dir.display()))
            };
            match r {
                Ok(()) => made = true,
                Err(e) if not_delegated(e.errno()) => {
                    crate::log::debug(&format!("rootless: {e}: cgroup skipped"));
                }
                Err(e) => return Err(e),
            }
        }
        if made && self.pure_v2() {
            // Give the container every controller the host offers (for limits set later, and stats).
            let (h, _) = &self.dirs[0];
            let all = std::fs::read_to_string(h.mount.join("cgroup.controllers")).unwrap_or_default();
            // Best effort: a parent holding processes cannot delegate (a limit that needs a
            // controller then fails, naming its field).
            let list: Vec<&str> = all.split_whitespace().collect();
            if self.enable_v2(&list).is_err() {
                for c in list {
                    if let Err(e) = self.enable_v2(&[c]) {
                        crate::log::debug(&e.to_string());
                    }
                }
            }
        }
        Ok(made)
    }

    /// The directory of the container's cgroup for a controller, and whether it is the unified
    /// (v2) hierarchy. A controller bound to v1 wins; otherwise the unified hierarchy if its root
    /// lists the controller in cgroup.controllers.
    pub fn controller(&self, ctrl: &str) -> Option<(&Hierarchy, &Path)> {
        if let Some((h, d)) = self
            .dirs
            .iter()
            .find(|(h, _)| !h.v2 && h.name.split(',').any(|c| c == ctrl))
        {
            return Some((h, d));
        }
        let (h, d) = self.dirs.iter().find(|(h, _)| h.v2)?;
        let avail = std::fs::read_to_string(h.mount.join("cgroup.controllers")).unwrap_or_default();
        avail.split_whitespace().any(|c| c == ctrl).then_some((h, d.as_path()))
    }

    /// The unified (v2) directory, if the host has a v2 hierarchy.
    pub fn unified(&self) -> Option<&Path> {
        self.dirs.iter().find(|(h, _)| h.v2).map(|(_, d)| d.as_path())
    }

    /// Whether every controller lives in the unified hierarchy (pure cgroup v2).
    pub fn pure_v2(&self) -> bool {
        self.dirs.len() == 1 && self.dirs[0].0.v2
    }

    /// Enable controllers in `cgroup.subtree_control` of every ancestor of the v2 directory, so that
    /// the container's cgroup gets their files.
    pub fn enable_v2(&self, ctrls: &[&str]) -> Result<()> {
        let Some((h, dir)) = self.dirs.iter().find(|(h, _)| h.v2) else {
            return Ok(());
        };
        if ctrls.is_empty() {
            return Ok(());
        }
        let line = ctrls.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
        let rel = dir.strip_prefix(&h.mount).unwrap_or(Path::new(""));
        let mut cur = h.mount.clone();
        for comp in rel.components() {
            let f = cur.join("cgroup.subtree_control");
            let have = std::fs::read_to_string(&f).unwrap_or_default();
            let missing: Vec<&str> = ctrls
                .iter()
                .copied()
                .filter(|c| !have.split_whitespace().any(|x| x == *c))
                .collect();
            // On a hybrid host the unified root's subtree_control is the host's own setting
            // (the v1 hierarchies hold the controllers; crun refuses to run once one is moved):
            // never changed by a container's creation. The controller must be enabled there by
            // the host's administrator.
            if !missing.is_empty() && cur == h.mount && !self.pure_v2() {
                bail!(
                    "the {} controller is not enabled in {} (a host-wide setting Berth does not change; on this hybrid host enable it there first)",
                    missing.join(", "),
                    f.display()
                );
            }
            if !missing.is_empty() {
                std::fs::write(&f, &line).with_ctx(|| format!("enable {line} in {}", f.display()))?;
            }
            cur.push(comp);
        }
        Ok(())
    }

    /// Move a process into the cgroup in every hierarchy (without root: every one it may write).
    pub fn add(&self, pid: i32) -> Result<()> {
        if let Some(p) = &self.systemd {
            return p.place(self, pid);
        }
        let s = pid.to_string();
        for (_, dir) in &self.dirs {
            let f = dir.join("cgroup.procs");
            match std::fs::write(&f, &s) {
                Ok(()) => {}
                Err(e) if not_delegated(e.raw_os_error()) => {
                    crate::log::debug(&format!("rootless: add pid {pid} to {}: {e}: skipped", f.display()));
                }
                Err(e) => return Err(Error::sys(format!("add pid {pid} to {}", f.display()), e)),
            }
        }
        // Frozen since `create` looked (or by someone racing it): the process just added would stop
        // there, and whoever waits on it would wait for ever. Refused, as at creation.
        if let Some(dir) = frozen_on_the_way(self) {
            bail!(
                "linux.cgroupsPath: the container's cgroup is frozen ({} is frozen); thaw it before creating a container in it",
                dir.display()
            );
        }
        Ok(())
    }

    /// The hierarchy directory that lists every process: the pids controller (v1) or the
    /// unified hierarchy, else the first.
    fn procs_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(h, _)| h.name == "pids")
            .or_else(|| self.dirs.iter().find(|(h, _)| h.v2))
            .or_else(|| self.dirs.first())
            .map(|(_, d)| d.as_path())
    }

    /// Every process in the cgroup itself.
    pub fn procs(&self) -> Vec<i32> {
        self.procs_dir().map(read_procs).unwrap_or_default()
    }

    /// Every process in the cgroup and in the sub-cgroups below it (which the container may have
    /// made).
    pub fn all_procs(&self) -> Vec<i32> {
        let mut out = Vec::new();
        if let Some(dir) = self.procs_dir() {
            walk_tree(dir, 0, &mut |d| out.extend(read_procs(d)));
        }
        out
    }

    /// Remove the cgroup directories with every sub-cgroup in them, deepest first, killing what
    /// is still inside (only for a cgroup Berth made; parents stay as other containers may use them).
    pub fn remove(&self) -> Result<()> {
        let mut first_err = None;
        for (_, dir) in &self.dirs {
            let mut subtree = Vec::new();
            walk_tree(dir, 0, &mut |d| subtree.push(d.to_path_buf()));
            // walk_tree lists a directory before its children: the reverse is deepest first.
            for d in subtree.iter().rev() {
                if let Err(e) = remove_one(d) {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The pids in a cgroup directory's cgroup.procs.
fn read_procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Call `f` on `dir` and then on every cgroup below it (directories only; cgroupfs has no
/// symlinks), parents before children. Depth is bounded as the kernel's own nesting is not.
fn walk_tree(dir: &Path, depth: u32, f: &mut dyn FnMut(&Path)) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else { return };
    if depth > 64 || !meta.is_dir() {
        return;
    }
    f(dir);
    // cgroupfs (kernfs) counts a directory's sub-directories in its link count: a leaf (the usual
    // container cgroup) needs no listing.
    if meta.nlink() <= 2 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk_tree(&e.path(), depth + 1, f);
        }
    }
}

/// rmdir one (leaf) cgroup, killing what is in it and waiting for the dying to leave.
fn remove_one(dir: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // Processes that were just killed may still be leaving the cgroup.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                if tries % 50 == 0 {
                    for pid in read_procs(dir) {
                        // SAFETY: signal a process of a cgroup this runtime made and is removing.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(Error::sys(format!("remove cgroup {}", dir.display()), e)),
        }
    }
}

/// Whether an error means a non-root caller may not write this cgroup (then it is skipped).
pub(crate) fn not_delegated(errno: Option<i32>) -> bool {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    euid != 0
        && matches!(
            errno,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) | Some(libc::ENOENT)
        )
}

/// cpuset cgroups start with empty cpus/mems, and a process cannot join one: every cgroup on the
/// way (made here, or made beforehand by someone else and left empty) gets its parent's, as runc
/// does. A value already set is kept.
fn create_cpuset_dirs(mount: &Path, dir: &Path) -> Result<()> {
    let rel = dir.strip_prefix(mount).unwrap_or(dir);
    let mut cur = mount.to_path_buf();
    for comp in rel.components() {
        let parent = cur.clone();
        cur.push(comp);
        if !cur.exists() {
            std::fs::create_dir(&cur).with_ctx(|| format!("cgroup {}", cur.display()))?;
        }
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let own = std::fs::read_to_string(cur.join(f)).unwrap_or_default();
            if !own.trim().is_empty() {
                continue;
            }
            let v = std::fs::read_to_string(parent.join(f)).unwrap_or_default();
            if !v.trim().is_empty() {
                std::fs::write(cur.join(f), v.trim()).with_ctx(|| format!("{}", cur.join(f).display()))?;
            }
        }
    }
    Ok(())
}

/// Check `exec --cgroup` arguments as runc does: `[controller[,controller...]:]path`, a path without
/// a controller only as the one argument, and every controller named one this host mounts (a v1
/// controller or `name=` hierarchy, or `unified` for the v2 one). An unknown controller is an
/// error, never an argument quietly left unused.
pub fn check_sub_cgroup_args(args: &[String]) -> Result<()> {
    let (_, hs) = hierarchies();
    for a in args {
        let parts: Vec<&str> = a.splitn(3, ':').collect();
        match parts.as_slice() {
            [_] if args.len() != 1 => {
                bail!("--cgroup {a:?}: invalid --cgroup argument (missing <controller>: prefix)")
            }
            [_] => {}
            [ctrls, _] => {
                for c in ctrls.split(',') {
                    let known = hs.iter().any(|h| {
                        if h.v2 {
                            c == "unified" || c.is_empty()
                        } else {
                            h.name.split(',').any(|n| n == c)
                        }
                    });
                    if !known {
                        bail!("--cgroup {a:?}: unknown controller {c:?} (not mounted on this host)");
                    }
                }
            }
            _ => bail!("--cgroup {a:?}: invalid --cgroup argument"),
        }
    }
    Ok(())
}

/// Whether the cgroup a container is about to use is frozen, or is inside a frozen one: the
/// container's init would stop as soon as it joined it, and create would wait for it for ever.
/// Looks at the nearest existing directory on the way to `dirs` in the freezer hierarchy (v1) and
/// at the unified one (v2: its own or an ancestor's freeze).
pub fn frozen_on_the_way(cg: &Cgroup) -> Option<PathBuf> {
    for (h, dir) in &cg.dirs {
        let v1 = !h.v2 && h.name.split(',').any(|c| c == "freezer");
        if !v1 && !h.v2 {
            continue;
        }
        let mut cur = dir.as_path();
        loop {
            if cur.is_dir() {
                let frozen = if v1 {
                    // FREEZING too: a cgroup on its way to frozen.
                    std::fs::read_to_string(cur.join("freezer.state")).is_ok_and(|s| s.trim() != "THAWED")
                } else {
                    std::fs::read_to_string(cur.join("cgroup.events"))
                        .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
                        || std::fs::read_to_string(cur.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
                };
                if frozen {
                    return Some(cur.to_path_buf());
                }
                // An existing directory tells for everything above it (v1: its state includes
                // its parents'; v2: cgroup.events "frozen" counts the ancestors' freeze).
                break;
            }
            match cur.parent() {
                Some(p) if p.starts_with(&h.mount) => cur = p,
                _ => break,
            }
        }
    }
    None
}

/// Whether the container's cgroup is frozen (paused).
pub fn is_frozen(path: &str) -> bool {
    if path.is_empty() {
        return false;
    }
    if path.starts_with('@') {
        // Relative to the runtime's own cgroup: resolve it (rare; costs a read of /proc/self/cgroup).
        let cg = Cgroup::open(path);
        if let Some((_, d)) = cg
            .dirs
            .iter()
            .find(|(h, _)| !h.v2 && h.name.split(',').any(|c| c == "freezer"))
        {
            return std::fs::read_to_string(d.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN");
        }
        return cg
            .unified()
            .is_some_and(|d| std::fs::read_to_string(d.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1"));
    }
    let rel = path.trim_start_matches('/');
    let v1 = Path::new(CGROUP_ROOT).join("freezer").join(rel).join("freezer.state");
    if let Ok(s) = std::fs::read_to_string(&v1) {
        return s.trim() == "FROZEN";
    }
    let v2 = Path::new(CGROUP_ROOT).join(rel).join("cgroup.freeze");
    std::fs::read_to_string(v2).is_ok_and(|s| s.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths() {
        assert_eq!(container_path(None, "c1", false).unwrap(), "/c1");
        assert_eq!(container_path(Some(Path::new("/a/b")), "c1", false).unwrap(), "/a/b");
        assert_eq!(container_path(Some(Path::new("a/b")), "c1", false).unwrap(), "@a/b");
        assert!(container_path(Some(Path::new("/a/../b")), "c1", false).is_err());
        for root in ["/", "//", "/.", ".", "./"] {
            let e = container_path(Some(Path::new(root)), "c1", false)
                .unwrap_err()
                .to_string();
            assert!(e.contains("linux.cgroupsPath"), "{root}: {e}");
        }
        assert!(container_path(None, "c1", true)
            .unwrap_err()
            .to_string()
            .contains("systemd"));
    }

    #[test]
    fn own_path_matches_controllers() {
        let pc = "12:pids:/p\n4:cpu,cpuacct:/c\n1:name=systemd:/s\n0::/u\n";
        let h = |name: &str, v2| Hierarchy {
            name: name.into(),
            mount: "/x".into(),
            v2,
        };
        assert_eq!(own_path(&h("pids", false), pc), "/p");
        assert_eq!(own_path(&h("cpu", false), pc), "/c");
        assert_eq!(own_path(&h("name=systemd", false), pc), "/s");
        assert_eq!(own_path(&h("", true), pc), "/u");
    }
}
