//! Pausing and resuming: the v1 freezer (`freezer.state`) where the host binds it, otherwise the
//! unified hierarchy's `cgroup.freeze` (waiting for `frozen 1` in `cgroup.events`); and signalling
//! every process of a cgroup with the cgroup frozen meanwhile (`kill --all`, `delete`).

use super::Cgroup;
use crate::error::Context;
use crate::{bail, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

enum Freezer {
    V1(PathBuf),
    V2(PathBuf),
}

fn freezer(cg: &Cgroup) -> Option<Freezer> {
    if let Some((h, d)) = cg
        .dirs
        .iter()
        .find(|(h, _)| !h.v2 && h.name.split(',').any(|c| c == "freezer"))
    {
        let _ = h;
        return Some(Freezer::V1(d.clone()));
    }
    let d = cg.unified()?;
    d.join("cgroup.freeze").exists().then(|| Freezer::V2(d.to_path_buf()))
}

fn wait_for(what: &str, path: &Path, mut done: impl FnMut(&str) -> bool, mut again: impl FnMut()) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_micros(100);
    loop {
        let s = std::fs::read_to_string(path).with_ctx(|| format!("read {}", path.display()))?;
        if done(&s) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: {} did not settle within 10 s", path.display());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
        again();
    }
}

/// Freeze every process of the cgroup; returns once they are all frozen.
pub fn freeze(cg: &Cgroup) -> Result<()> {
    match freezer(cg) {
        Some(Freezer::V1(d)) => {
            let f = d.join("freezer.state");
            std::fs::write(&f, "FROZEN").with_ctx(|| format!("freeze {}", f.display()))?;
            // A process forking while the cgroup freezes leaves it FREEZING: write again.
            wait_for(
                "freeze",
                &f,
                |s| s.trim() == "FROZEN",
                || {
                    let _ = std::fs::write(&f, "FROZEN");
                },
            )
        }
        Some(Freezer::V2(d)) => {
            let f = d.join("cgroup.freeze");
            std::fs::write(&f, "1").with_ctx(|| format!("freeze {}", f.display()))?;
            wait_for(
                "freeze",
                &d.join("cgroup.events"),
                |s| s.lines().any(|l| l == "frozen 1"),
                || {},
            )
        }
        None => bail!("pause: no freezer cgroup on this host"),
    }
}

/// Thaw the cgroup.
pub fn thaw(cg: &Cgroup) -> Result<()> {
    match freezer(cg) {
        Some(Freezer::V1(d)) => {
            let f = d.join("freezer.state");
            std::fs::write(&f, "THAWED").with_ctx(|| format!("thaw {}", f.display()))?;
            wait_for("thaw", &f, |s| s.trim() == "THAWED", || {})
        }
        Some(Freezer::V2(d)) => {
            let f = d.join("cgroup.freeze");
            std::fs::write(&f, "0").with_ctx(|| format!("thaw {}", f.display()))?;
            wait_for(
                "thaw",
                &d.join("cgroup.events"),
                |s| s.lines().any(|l| l == "frozen 0"),
                || {},
            )
        }
        None => bail!("resume: no freezer cgroup on this host"),
    }
}

/// Whether the host can freeze this cgroup.
pub fn can_freeze(cg: &Cgroup) -> bool {
    freezer(cg).is_some()
}

/// Signal every process of a cgroup Berth made, sub-cgroups included. The cgroup is frozen
/// meanwhile (where the host can), so a process forking at that moment cannot leave a child
/// unsignalled.
pub(crate) fn signal_all(cg: &Cgroup, sig: i32) {
    let pids = cg.all_procs();
    if pids.is_empty() {
        return;
    }
    let frozen = can_freeze(cg) && freeze(cg).is_ok();
    let pids = if frozen { cg.all_procs() } else { pids };
    for pid in pids {
        // SAFETY: kill(2) takes integers and touches no memory of ours. The pids are the cgroup's
        // members (read again once it is frozen, when none can exit and have its pid reused).
        unsafe { libc::kill(pid, sig) };
    }
    if frozen {
        let _ = thaw(cg);
    }
}
