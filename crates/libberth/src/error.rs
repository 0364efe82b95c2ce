//! The one error type of libberth: a message that names the container, field or path at fault,
//! optionally carrying the operating-system error that caused it.

use std::fmt;

#[derive(Debug)]
pub struct Error {
    msg: String,
    errno: Option<i32>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A libc call's return value as an io::Result: negative is the thread's errno. No allocation, so
/// usable between fork and exec.
pub(crate) fn check_rc(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error {
            msg: msg.into(),
            errno: None,
        }
    }

    /// An error from a system call, with what was being done.
    pub fn sys(ctx: impl fmt::Display, err: impl Into<SysErr>) -> Self {
        let e = err.into().0;
        Error {
            msg: format!("{ctx}: {}", std::io::Error::from_raw_os_error(e)),
            errno: Some(e),
        }
    }

    /// The errno behind this error, if it came from a system call.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// Prefix the message with more context.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// Anything that carries an errno.
pub struct SysErr(pub i32);

impl From<std::io::Error> for SysErr {
    fn from(e: std::io::Error) -> Self {
        SysErr(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<nix::Error> for SysErr {
    fn from(e: nix::Error) -> Self {
        SysErr(e as i32)
    }
}

impl From<i32> for SysErr {
    fn from(e: i32) -> Self {
        SysErr(e)
    }
}

/// `.ctx("doing what")` on results of system calls.
pub trait Context<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
    fn with_ctx<F: FnOnce() -> String>(self, what: F) -> Result<T>;
}

impl<T, E: Into<SysErr>> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::sys(what, e))
    }
    fn with_ctx<F: FnOnce() -> String>(self, what: F) -> Result<T> {
        self.map_err(|e| Error::sys(what(), e))
    }
}

/// Build an error with `format!` syntax.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::error::Error::new(format!($($arg)*)) };
}

/// Return early with an error built with `format!` syntax.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::err!($($arg)*)) };
}
