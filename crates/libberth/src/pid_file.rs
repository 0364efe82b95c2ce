//! `--pid-file`: the pid of a container's init (create, run, restore) or of an exec'd process,
//! written for the caller atomically (a temporary file beside it, renamed over it).

use crate::error::Context;
use crate::Result;
use std::path::Path;

/// Write `pid` to `path` atomically: whoever reads the file sees no pid or the whole pid.
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, pid.to_string()).with_ctx(|| format!("--pid-file {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_ctx(|| format!("--pid-file {}", path.display()))
}
