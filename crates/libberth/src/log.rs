//! Runtime logging as runc does it: `--log FILE` (default stderr) and `--log-format text|json`.
//! containerd and podman read the json lines (`{"level":..,"msg":..,"time":..}`) from the log file.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        }
    }
}

struct Logger {
    file: Option<std::fs::File>,
    format: Format,
    min: Level,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Set up logging once, from the global flags. Without a file, messages go to stderr.
pub fn init(path: Option<&std::path::Path>, format: Format, debug: bool) -> crate::Result<()> {
    let file = match path {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| crate::Error::sys(format!("--log {}", p.display()), e))?,
        ),
        None => None,
    };
    let min = if debug { Level::Debug } else { Level::Warn };
    let _ = LOGGER.set(Logger { file, format, min });
    Ok(())
}

/// Whether log lines go to a file given with --log (then errors are printed to stderr as well).
pub fn has_file() -> bool {
    LOGGER.get().is_some_and(|l| l.file.is_some())
}

/// Set in a runtime process that enters a container (init, an exec child): it holds no log file
/// (it closes every descriptor it does not need) and says nothing on stderr, which is the
/// container's; its errors reach the runtime over the sync channel.
static DETACHED: AtomicBool = AtomicBool::new(false);

/// Stop logging in this process (see `DETACHED`); called right after the clone of init or an exec
/// child, before the log file's descriptor is closed.
pub fn detach() {
    DETACHED.store(true, Ordering::Relaxed);
}

pub fn log(level: Level, msg: &str) {
    if DETACHED.load(Ordering::Relaxed) {
        return;
    }
    let (file, format, min) = match LOGGER.get() {
        Some(l) => (l.file.as_ref(), l.format, l.min),
        None => (None, Format::Text, Level::Warn),
    };
    if level < min {
        return;
    }
    let line = match format {
        Format::Json => format!(
            "{{\"level\":\"{}\",\"msg\":{},\"time\":\"{}\"}}\n",
            level.name(),
            serde_json::to_string(msg).unwrap_or_default(),
            crate::time::now_rfc3339()
        ),
        Format::Text => format!(
            "time=\"{}\" level={} msg={}\n",
            crate::time::now_rfc3339(),
            level.name(),
            serde_json::to_string(msg).unwrap_or_default()
        ),
    };
    match file {
        Some(mut f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}
