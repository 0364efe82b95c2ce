//! Shared harness for the runtime integration tests.
//!
//! The tests drive a real OCI runtime binary (Berth, or runc for validating
//! the tests themselves) as root against bundles whose rootfs is built from
//! busybox-static. Select the runtime with `BERTH_TEST_RUNTIME=/path/to/bin`;
//! by default the `berth` binary built by this package is used.
//!
//! Every helper here is used by several test files; each test file only uses
//! a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// Host path of the static busybox copied into every rootfs.
pub const BUSYBOX: &str = "/bin/busybox";

/// How long a single runtime invocation may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Default deadline for `wait_for_status` and other polling helpers.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// busybox applets linked into `rootfs/bin`.
const APPLETS: &[&str] = &[
    "sh", "true", "false", "echo", "cat", "ls", "id", "hostname", "sleep", "stat", "mount", "umount", "grep", "test",
    "[", "readlink", "touch", "mkdir", "env", "pwd", "ps", "kill", "head", "tail", "wc", "tr", "cut", "sort", "uniq",
    "tty", "stty", "printf", "uname", "rm", "ln", "dd", "od", "chmod", "chown", "mknod", "sed", "seq", "cp", "mv",
    "ip", "sysctl", "date", "uptime", "whoami", "xargs", "basename", "dirname", "nproc",
];

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Process-wide unique number (combined with the pid it is unique across the
/// parallel test binaries too).
fn next_serial() -> usize {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// Name of the running test (libtest names each test thread after its test).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .rsplit("::")
        .next()
        .unwrap_or("unnamed")
        .to_string()
}

/// `s` reduced to `[a-z0-9-]`, at most `max` characters.
fn sanitize(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(max);
    out
}

/// A container ID unique to this test, process and call.
pub fn unique_id() -> String {
    format!(
        "{}-{}-{}",
        sanitize(&test_name(), 32),
        std::process::id(),
        next_serial()
    )
}

/// A fresh, empty directory under /tmp whose name carries pid, a counter and
/// the test name. The caller owns its removal.
fn unique_tmp_dir(kind: &str) -> PathBuf {
    let dir = PathBuf::from(format!(
        "/tmp/berth-{}-{}-{}-{}",
        kind,
        std::process::id(),
        next_serial(),
        sanitize(&test_name(), 40)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A directory removed (recursively) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(kind: &str) -> TempDir {
        TempDir(unique_tmp_dir(kind))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join<P: AsRef<Path>>(&self, p: P) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The runtime binary under test.
pub fn runtime() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_TEST_RUNTIME") {
        return PathBuf::from(p);
    }
    match option_env!("CARGO_BIN_EXE_berth") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "no runtime under test: set BERTH_TEST_RUNTIME=/path/to/runtime \
             (e.g. /usr/sbin/runc) or run these tests from the berth package, \
             which provides CARGO_BIN_EXE_berth"
        ),
    }
}

/// `BERTH_TEST_SYSTEMD_CGROUP=1`: every runtime command gets the global `--systemd-cgroup` (the
/// systemd cgroup driver; for the reference host, docs/REFHOST.md). A bundle without
/// `linux.cgroupsPath` then lives in the scope `/system.slice/berth-<id>.scope` (see
/// `container_cgroup`); tests that set a cgroupfs-style path skip themselves.
pub fn systemd_cgroup() -> bool {
    std::env::var_os("BERTH_TEST_SYSTEMD_CGROUP").is_some_and(|v| v == "1")
}

/// A container's cgroup path, relative to a hierarchy's root, when its bundle sets no
/// `linux.cgroupsPath`: `/<id>` with the cgroupfs driver, the default scope
/// (`system.slice:berth:<id>`) with the systemd driver.
pub fn container_cgroup(id: &str) -> String {
    if systemd_cgroup() {
        format!("system.slice/berth-{id}.scope")
    } else {
        id.to_string()
    }
}

/// Output of `runtime --version`, cached.
pub fn runtime_version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        Command::new(runtime())
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    })
}

/// True when the runtime under test is runc itself (used only to relax
/// checks that runc 1.1 is known to fail; see `runc_gap`). Setting
/// `BERTH_TEST_STRICT=1` turns the relaxations off, to see runc's gaps.
pub fn is_runc() -> bool {
    if std::env::var_os("BERTH_TEST_STRICT").is_some_and(|v| v == "1") {
        return false;
    }
    let name = runtime()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let version = runtime_version();
    name.starts_with("runc") || (version.starts_with("runc version") && !version.to_lowercase().contains("berth"))
}

/// For a check that runc (the reference used to validate this suite) cannot
/// pass on this machine while the OCI spec requires it: with runc the test
/// is skipped loudly; with any other runtime it runs. Returns true when the
/// test must stop.
pub fn runc_gap(reason: &str) -> bool {
    if is_runc() {
        notice(&format!("SKIP {} with runc: {}", test_name(), reason));
        true
    } else {
        false
    }
}

/// Writes a notice straight to the process's stderr: libtest captures
/// `eprintln!` of passing tests, and a skip must never be silent.
pub fn notice(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// Tests need root and busybox. Prints `SKIP <test>: <reason>` and returns
/// false when they are not available.
pub fn require_root() -> bool {
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root (euid != 0)".to_string())
    } else if !Path::new(BUSYBOX).is_file() {
        Some(format!("{BUSYBOX} is missing (install busybox-static)"))
    } else {
        None
    };
    match reason {
        Some(r) => {
            notice(&format!("SKIP {}: {}", test_name(), r));
            false
        }
        None => true,
    }
}

// ---------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------

pub trait OutputExt {
    fn out(&self) -> String;
    fn err(&self) -> String;
    /// Exit code; panics (with the output) when killed by a signal.
    fn code(&self) -> i32;
    /// Panics with stdout/stderr unless the command succeeded.
    fn ok(self, what: &str) -> Self;
    /// Panics with stdout/stderr if the command succeeded.
    fn fails(self, what: &str) -> Self;
    fn describe(&self) -> String;
}

impl OutputExt for Output {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("runtime killed by a signal: {}", self.describe()))
    }
    fn ok(self, what: &str) -> Self {
        assert!(
            self.status.success(),
            "{what}: expected success, got {}",
            self.describe()
        );
        self
    }
    fn fails(self, what: &str) -> Self {
        assert!(
            !self.status.success(),
            "{what}: expected failure, got {}",
            self.describe()
        );
        self
    }
    fn describe(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.out(),
            self.err()
        )
    }
}

/// Asserts that the failed command's stderr is non-empty and mentions
/// `needle` (case-insensitive).
pub fn assert_err_mentions(out: &Output, needle: &str, what: &str) {
    assert!(
        !out.status.success(),
        "{what}: expected failure, got {}",
        out.describe()
    );
    let err = out.err();
    assert!(!err.trim().is_empty(), "{what}: stderr is empty: {}", out.describe());
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: stderr does not mention {needle:?}: {}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// Bundle
// ---------------------------------------------------------------------------

/// An OCI bundle in a temp dir: `rootfs/` with busybox, `config.json`
/// written from `config` whenever the runtime is invoked on it.
pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
    /// When set, written verbatim as config.json instead of `config`.
    pub raw_config: Option<String>,
}

impl Bundle {
    /// A bundle whose process runs `args`.
    pub fn new(args: &[&str]) -> Bundle {
        let dir = unique_tmp_dir("bundle");
        build_rootfs(&dir.join("rootfs"));
        let mut b = Bundle {
            dir,
            config: default_config(),
            raw_config: None,
        };
        b.args(args);
        b
    }

    /// A bundle whose process runs `sh -c script`.
    pub fn sh(script: &str) -> Bundle {
        Bundle::new(&["sh", "-c", script])
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    pub fn set_sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// `root.readonly`.
    pub fn writable_root(&mut self) -> &mut Self {
        self.config["root"]["readonly"] = json!(false);
        self
    }

    pub fn add_mount(&mut self, mount: Value) -> &mut Self {
        self.config["mounts"].as_array_mut().unwrap().push(mount);
        self
    }

    /// Adds a bind mount of host `src` at `dest` with extra options.
    pub fn bind(&mut self, src: &Path, dest: &str, opts: &[&str]) -> &mut Self {
        let mut options = vec!["bind"];
        options.extend_from_slice(opts);
        self.add_mount(json!({
            "destination": dest, "type": "bind", "source": src, "options": options
        }))
    }

    /// Replaces or adds the namespace entry of `ns_type` (with `path` when given).
    pub fn set_namespace(&mut self, ns_type: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(ns_type);
        let mut ns = json!({ "type": ns_type });
        if let Some(p) = path {
            ns["path"] = json!(p);
        }
        self.config["linux"]["namespaces"].as_array_mut().unwrap().push(ns);
        self
    }

    pub fn remove_namespace(&mut self, ns_type: &str) -> &mut Self {
        self.config["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != ns_type);
        self
    }

    /// Writes config.json (from `raw_config` if set).
    pub fn save(&self) {
        let text = match &self.raw_config {
            Some(raw) => raw.clone(),
            None => serde_json::to_string_pretty(&self.config).unwrap(),
        };
        fs::write(self.config_path(), text).expect("write config.json");
    }
}

impl Default for Bundle {
    /// A default bundle running `true` (tests usually replace the args).
    fn default() -> Self {
        Bundle::new(&["true"])
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Writes an executable `#!/bin/sh` script.
pub fn write_script(path: &Path, body: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn build_rootfs(rootfs: &Path) {
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root", "home/user", "mnt"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n\
         nobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\ntty:x:5:\nuser:x:1000:\nextra:x:2000:\nnogroup:x:65534:\n",
    )
    .unwrap();
}

/// The equivalent of `runc spec` (runc 1.1), with `terminal: false`.
pub fn default_config() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "runc",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

// ---------------------------------------------------------------------------
// Runtime
// ---------------------------------------------------------------------------

/// The runtime binary with a private `--root` state directory. On drop it
/// force-deletes every container it created and removes its directories.
pub struct Runtime {
    pub bin: PathBuf,
    pub root: PathBuf,
    /// Where each invocation's stdout/stderr are captured (files, not pipes:
    /// a created or detached container inherits them and may hold them open).
    logs: TempDir,
    ids: Mutex<Vec<String>>,
}

impl Runtime {
    pub fn new() -> Runtime {
        let root = unique_tmp_dir("root");
        // The runtime must create its own state dir layout; start empty.
        fs::remove_dir_all(&root).unwrap();
        Runtime {
            bin: runtime(),
            root,
            logs: TempDir::new("logs"),
            ids: Mutex::new(Vec::new()),
        }
    }

    /// Runs `runtime --root ROOT args...` with stdin null, capturing output.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.exec(self.command(args))
    }

    /// A `runtime --root ROOT [--systemd-cgroup] args...` command to adjust before `exec`.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        if systemd_cgroup() {
            c.arg("--systemd-cgroup");
        }
        c.args(args);
        c
    }

    /// Runs a prepared command with stdin null, stdout/stderr to files, and a
    /// timeout; panics if it cannot run or times out.
    pub fn exec(&self, c: Command) -> Output {
        self.try_exec(c).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `exec` without panicking (for use in `Drop`).
    fn try_exec(&self, mut c: Command) -> Result<Output, String> {
        let n = next_serial();
        let out_path = self.logs.join(format!("{n}.out"));
        let err_path = self.logs.join(format!("{n}.err"));
        let file = |p: &Path| fs::File::create(p).map_err(|e| format!("create {}: {e}", p.display()));
        c.stdin(Stdio::null()).stdout(file(&out_path)?).stderr(file(&err_path)?);
        let mut child = c.spawn().map_err(|e| format!("cannot run {c:?}: {e}"))?;
        let read = |p: &Path| fs::read(p).unwrap_or_default();
        match wait_timeout(&mut child, COMMAND_TIMEOUT) {
            Some(status) => Ok(Output {
                status,
                stdout: read(&out_path),
                stderr: read(&err_path),
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "{c:?} did not finish within {COMMAND_TIMEOUT:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&read(&out_path)),
                    String::from_utf8_lossy(&read(&err_path))
                ))
            }
        }
    }

    fn track(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }

    /// Asserts nothing named after `id` is left anywhere under `--root`.
    pub fn assert_no_state(&self, id: &str) {
        fn walk(dir: &Path, id: &str, found: &mut Vec<PathBuf>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if e.file_name().to_string_lossy().contains(id) {
                    found.push(p.clone());
                }
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&p, id, found);
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.root, id, &mut found);
        assert!(found.is_empty(), "state left behind for {id} under --root: {found:?}");
    }

    /// `run --bundle B ID` (foreground), plus `extra` flags before the ID.
    pub fn run_with(&self, b: &Bundle, id: &str, extra: &[&str]) -> Output {
        b.save();
        self.track(id);
        let mut args: Vec<&OsStr> = vec!["run".as_ref(), "--bundle".as_ref(), b.dir.as_os_str()];
        args.extend(extra.iter().map(|s| OsStr::new(*s)));
        args.push(id.as_ref());
        self.cmd(&args)
    }

    pub fn run(&self, b: &Bundle, id: &str) -> Output {
        self.run_with(b, id, &[])
    }

    /// `create --bundle B [extra...] ID`.
    pub fn create_with(&self, b: &Bundle, id: &str, extra: &[&str]) -> Output {
        b.save();
        self.track(id);
        let mut args: Vec<&OsStr> = vec!["create".as_ref(), "--bundle".as_ref(), b.dir.as_os_str()];
        args.extend(extra.iter().map(|s| OsStr::new(*s)));
        args.push(id.as_ref());
        self.cmd(&args)
    }

    pub fn create(&self, b: &Bundle, id: &str) -> Output {
        self.create_with(b, id, &[])
    }

    pub fn start(&self, id: &str) -> Output {
        self.cmd(&["start", id])
    }

    /// `state ID`, which must succeed, parsed.
    pub fn state(&self, id: &str) -> Value {
        let out = self.cmd(&["state", id]).ok(&format!("state {id}"));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("state {id}: invalid JSON ({e}): {}", out.describe()))
    }

    pub fn kill(&self, id: &str, signal: &str) -> Output {
        self.cmd(&["kill", id, signal])
    }

    pub fn delete(&self, id: &str) -> Output {
        self.cmd(&["delete", id])
    }

    pub fn delete_force(&self, id: &str) -> Output {
        self.cmd(&["delete", "--force", id])
    }

    pub fn list(&self, extra: &[&str]) -> Output {
        let mut args = vec!["list"];
        args.extend_from_slice(extra);
        self.cmd(&args)
    }

    /// Polls `state` until its status is `status`; returns that state.
    pub fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + POLL_TIMEOUT;
        loop {
            let st = self.state(id);
            if st["status"] == status {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not reach status {status:?} within {POLL_TIMEOUT:?}; last state: {st}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// create + start, asserting both succeed; returns the container's pid.
    pub fn create_and_start(&self, b: &Bundle, id: &str) -> i32 {
        self.create(b, id).ok("create");
        self.start(id).ok("start");
        self.state(id)["pid"].as_i64().expect("pid in state") as i32
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.ids.lock().unwrap());
        for id in ids {
            let _ = self.try_exec(self.command(&["delete", "--force", &id]));
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Waits for `child` up to `timeout`; None on timeout.
fn wait_timeout(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Runs `b` to completion under a fresh runtime and ID, asserting exit 0;
/// returns the container's stdout.
pub fn run_ok(b: &Bundle) -> String {
    let rt = Runtime::new();
    let id = unique_id();
    rt.run(b, &id).ok(&format!("run {id}")).out()
}

/// Like `run_ok` with the process set to `sh -c script`.
pub fn run_script(b: &mut Bundle, script: &str) -> String {
    b.set_sh(script);
    run_ok(b)
}

/// Runs `sh -c script` in a fresh default bundle; returns stdout.
pub fn run_default(script: &str) -> String {
    run_ok(&Bundle::sh(script))
}

// ---------------------------------------------------------------------------
// Host-side helpers
// ---------------------------------------------------------------------------

/// True once `pid` no longer runs (absent from /proc or a zombie, since the
/// machine's init may be slow to reap re-parented processes).
pub fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
            matches!(state, Some('Z') | Some('X'))
        }
    }
}

/// Polls `cond` every 10 ms up to `POLL_TIMEOUT`.
pub fn poll(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + POLL_TIMEOUT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {POLL_TIMEOUT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `readlink /proc/<pid>/ns/<ns>` on the host, e.g. `net:[4026531840]`.
pub fn ns_link(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// Value of a `Key:\tvalue` line of /proc/<pid>/status-style text.
pub fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} line in:\n{status}"))
}

/// Lines of `text` as trimmed strings (drops empty ones).
pub fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// One line of /proc/<pid>/mountinfo.
#[derive(Debug, Clone)]
pub struct MountInfo {
    /// Path of the mount's root within its filesystem (field 4).
    pub root: String,
    pub mount_point: String,
    /// Per-mount options (rw, nosuid, ...).
    pub options: Vec<String>,
    /// Optional fields (shared:N, master:N, ...).
    pub tags: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_options: Vec<String>,
}

impl MountInfo {
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.iter().any(|o| o == opt)
    }
    pub fn has_super_option(&self, opt: &str) -> bool {
        self.super_options.iter().any(|o| o == opt)
    }
}

/// Parses mountinfo text (as printed by `cat /proc/self/mountinfo`).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let split = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (pre, post) = l
                .split_once(" - ")
                .unwrap_or_else(|| panic!("bad mountinfo line {l:?}"));
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            MountInfo {
                root: unescape_octal(pre[3]),
                mount_point: unescape_octal(pre[4]),
                options: split(pre[5]),
                tags: pre[6..].iter().map(|s| s.to_string()).collect(),
                fstype: post[0].to_string(),
                source: post.get(1).map(|s| unescape_octal(s)).unwrap_or_default(),
                super_options: post.get(2).map(|s| split(s)).unwrap_or_default(),
            }
        })
        .collect()
}

/// The last (topmost) mount at `mount_point`, if any.
pub fn find_mount<'a>(mounts: &'a [MountInfo], mount_point: &str) -> Option<&'a MountInfo> {
    mounts.iter().rev().find(|m| m.mount_point == mount_point)
}

/// Like `find_mount` but panics with the table when absent.
pub fn mount_at<'a>(mounts: &'a [MountInfo], mount_point: &str) -> &'a MountInfo {
    find_mount(mounts, mount_point).unwrap_or_else(|| {
        let points: Vec<_> = mounts
            .iter()
            .map(|m| format!("{} ({})", m.mount_point, m.fstype))
            .collect();
        panic!("nothing mounted at {mount_point}; mounts: {points:#?}")
    })
}

/// Undoes the `\040`-style escapes of mountinfo paths.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts inside a container whose process printed its mountinfo.
pub fn container_mounts(b: &mut Bundle) -> Vec<MountInfo> {
    parse_mountinfo(&run_script(b, "cat /proc/self/mountinfo"))
}

/// A tmpfs mounted in the host (test) mount namespace; lazily unmounted on drop.
pub struct HostTmpfs(pub PathBuf);

impl HostTmpfs {
    pub fn mount(at: &Path) -> HostTmpfs {
        use std::ffi::CString;
        fs::create_dir_all(at).unwrap();
        let target = CString::new(at.to_str().unwrap()).unwrap();
        let fstype = CString::new("tmpfs").unwrap();
        let data = CString::new("size=1m").unwrap();
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tmpfs at {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
        HostTmpfs(at.to_path_buf())
    }
}

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

// ---------------------------------------------------------------------------
// Terminals (console socket)
// ---------------------------------------------------------------------------

/// A listening unix socket for `--console-socket`.
pub struct ConsoleSocket {
    _dir: TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> ConsoleSocket {
        let dir = TempDir::new("console");
        let path = dir.join("console.sock");
        let listener = UnixListener::bind(&path).expect("bind console socket");
        listener.set_nonblocking(true).unwrap();
        ConsoleSocket {
            _dir: dir,
            path,
            listener,
        }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Accepts the runtime's connection and receives the pty master fd.
    pub fn recv_master(&self) -> OwnedFd {
        let deadline = Instant::now() + POLL_TIMEOUT;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "runtime never connected to the console socket"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept on console socket: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(POLL_TIMEOUT)).unwrap();
        recv_fd(stream.as_raw_fd()).expect("no fd received over the console socket (SCM_RIGHTS)")
    }
}

/// Receives one file descriptor passed with SCM_RIGHTS on `sock`.
pub fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    let mut data = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space * 4];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    let mut received = None;
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
                received = Some(OwnedFd::from_raw_fd(fd));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    received
}

/// Reads the pty master until the slave side is closed (EIO) or the
/// deadline passes; returns the text with `\r\n` turned into `\n`.
pub fn read_until_closed(master: &OwnedFd) -> String {
    let deadline = Instant::now() + POLL_TIMEOUT;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "pty not closed in time; read so far: {:?}",
            String::from_utf8_lossy(&out)
        );
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if rc <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break; // EIO: every slave fd is closed
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

impl Runtime {
    /// Like `cmd`, with `input` written to the runtime's stdin (a pipe) instead of /dev/null.
    pub fn cmd_input<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Output {
        use std::io::Write;
        let n = next_serial();
        let (out_path, err_path) = (self.logs.join(format!("{n}.out")), self.logs.join(format!("{n}.err")));
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root).args(args);
        c.stdin(Stdio::piped())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap());
        let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
        drop(stdin);
        let status = wait_timeout(&mut child, COMMAND_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} did not finish within {COMMAND_TIMEOUT:?}")
        });
        Output {
            status,
            stdout: fs::read(&out_path).unwrap_or_default(),
            stderr: fs::read(&err_path).unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------------------
// Terminals (tmux)
// ---------------------------------------------------------------------------

/// A tmux server of its own (`-L`), killed on drop.
pub struct Tmux {
    sock: String,
}

impl Tmux {
    /// None (with a SKIP notice) when tmux is not installed.
    pub fn new() -> Option<Tmux> {
        if !Path::new("/usr/bin/tmux").exists() {
            notice(&format!(
                "SKIP {}: tmux is not installed (apt-get install tmux)",
                test_name()
            ));
            return None;
        }
        Some(Tmux {
            sock: format!("berth-{}", unique_id()),
        })
    }

    pub fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.sock)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux")
    }

    /// A detached session of `cols`x`rows` running `command` (through sh).
    pub fn start(&self, cols: u16, rows: u16, command: &str) {
        let out = self.tmux(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            command,
        ]);
        assert!(out.status.success(), "tmux new-session: {}", out.describe());
    }

    pub fn keys(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]).ok("tmux send-keys");
        self.tmux(&["send-keys", "-t", "t", "Enter"]).ok("tmux send-keys Enter");
    }

    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"]).out()
    }

    /// Waits until a line of the screen satisfies `pred`; returns the screen.
    pub fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if s.lines().any(|l| pred(l.trim_end())) {
                return s;
            }
            assert!(Instant::now() < deadline, "screen never showed {what}:\n{s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// A static attack program built from `tests/attack/<name>.c` (cached per test process) and copied
/// into the bundle's rootfs as `/bin/<name>`: the hostile code inside the container of the
/// adversarial tests. Needs a C compiler with static glibc (build-essential).
pub fn install_attack(b: &Bundle, name: &str) {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/attack")
        .join(format!("{name}.c"));
    let out = std::env::temp_dir().join(format!("berth-attack-{}-{name}", std::process::id()));
    {
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if !built.iter().any(|n| n == name) {
            let st = Command::new("cc")
                .args(["-static", "-O2", "-Wall", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .expect("run cc (build-essential)");
            assert!(st.success(), "compile {}", src.display());
            built.push(name.to_string());
        }
    }
    let dest = b.rootfs().join("bin").join(name);
    fs::copy(&out, &dest).expect("copy the attack program into the rootfs");
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Why this host cannot boot a VM container (the agent aside), if it cannot: qemu, virtiofsd and a
/// cloud kernel (docs/VM.md).
pub fn vm_host_missing() -> Option<&'static str> {
    let in_path =
        |n: &str| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(n).is_file()));
    if !in_path("qemu-system-x86_64") {
        return Some("qemu-system-x86_64 not installed (Debian package qemu-system-x86)");
    }
    if !in_path("virtiofsd") && !Path::new("/usr/libexec/virtiofsd").is_file() {
        return Some("virtiofsd not installed (cargo install virtiofsd)");
    }
    let kernel = fs::read_dir("/boot").into_iter().flatten().flatten().any(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64")
    });
    if !kernel {
        return Some("no /boot/vmlinuz-*-cloud-amd64 (Debian package linux-image-cloud-amd64)");
    }
    None
}

/// Why VM tests cannot run here, if they cannot: runc, the host (`vm_host_missing`) or the static
/// guest agent beside the binary under test.
pub fn vm_missing() -> Option<String> {
    if is_runc() {
        return Some("runc has no VM containers".into());
    }
    if let Some(why) = vm_host_missing() {
        return Some(why.into());
    }
    let bin = runtime();
    let target = bin
        .parent()
        .and_then(|d| d.parent())
        .map(|t| t.join("x86_64-unknown-linux-gnu"));
    let agent = std::env::var_os("BERTH_GUEST").is_some()
        || bin.parent().is_some_and(|d| d.join("berth-guest").is_file())
        || target.is_some_and(|t| t.join("release/berth-guest").is_file() || t.join("debug/berth-guest").is_file());
    if !agent {
        return Some("the static guest agent is not built (see docs/VM.md)".into());
    }
    None
}

/// True (after saying why) when `test`, a VM test, cannot run here.
pub fn skip_vm(test: &str) -> bool {
    if !require_root() {
        return true;
    }
    if let Some(why) = vm_missing() {
        notice(&format!("SKIP {test}: {why}"));
        return true;
    }
    false
}

/// The bundle as a VM container (annotation `run.berth.isolation=vm`).
pub fn vm(b: &mut Bundle) -> &mut Bundle {
    b.config["annotations"] = json!({ "run.berth.isolation": "vm" });
    b
}

/// podman with all its state in a temp dir of its own (as engines/podman.sh sets it up), running
/// containers with the runtime under test (`runtime()`). A pod's infra container, a Linux
/// container, gets engines/podman.sh's nofile and nproc limits: podman's 1048576 are refused on
/// our hosts. `prefix` names the directory (`/tmp/<prefix>-<pid>`: short, as podman 4.3 wants).
pub struct Podman {
    pub dir: TempDir,
}

impl Podman {
    pub fn new(prefix: &str) -> Podman {
        let dir = TempDir(PathBuf::from(format!("/tmp/{prefix}-{}", std::process::id())));
        std::fs::create_dir_all(dir.path()).unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{0}/events.log\"\n\
                 tmp_dir = \"{0}/tmp\"\nvolume_path = \"{0}/volumes\"\n[network]\nnetwork_config_dir = \"{0}/net\"\n\
                 [containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("registries.conf"), "unqualified-search-registries = []\n").unwrap();
        Podman { dir }
    }
    /// A Podman for `test`, or None (after saying SKIP) when podman or conmon is not installed.
    pub fn if_installed(test: &str, prefix: &str) -> Option<Podman> {
        let in_path =
            |n: &str| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(n).is_file()));
        if !in_path("podman") || !in_path("conmon") {
            notice(&format!("SKIP {test}: podman not installed"));
            return None;
        }
        Some(Podman::new(prefix))
    }
    /// Import the bundle's rootfs as the local image `image`.
    pub fn import(&self, b: &Bundle, image: &str) {
        let tar = self.dir.join("rootfs.tar");
        let o = std::process::Command::new("tar")
            .arg("-C")
            .arg(b.rootfs())
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .unwrap();
        assert!(o.status.success(), "tar of {}: {o:?}", b.rootfs().display());
        self.ok(&["import", tar.to_str().unwrap(), image]);
    }
    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        let mut c = std::process::Command::new("timeout");
        c.arg("180")
            .arg("podman")
            .arg("--runtime")
            .arg(runtime())
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.dir.join("registries.conf"))
            .args(args)
            .stdin(std::process::Stdio::null());
        c.output().expect("podman")
    }
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["pod", "rm", "-f", "-a", "-t", "0"]);
        let _ = self.cmd(&["rm", "-f", "-a", "-t", "0"]);
        let _ = self.cmd(&["system", "reset", "-f"]);
    }
}

/// GET / from an HTTP server (`addr`: "ip:port"), retried for up to `timeout`; the response's body.
pub fn http_get(addr: &str, timeout: Duration) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.contains("200") {
                    return out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
                }
                last = out;
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("GET http://{addr}/ did not answer within {timeout:?}: {last}");
}

/// Read a pty master until `done` holds of what came (≤ 30 s), or it hangs up.
pub fn read_until(master: &std::os::fd::OwnedFd, what: &str, done: impl Fn(&str) -> bool) -> String {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !done(&text) {
        assert!(Instant::now() < deadline, "the terminal never showed {what}: {text:?}");
        let mut p = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
            continue;
        }
        // SAFETY: reading into a local buffer of its length.
        let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n as usize]).replace("\r\n", "\n"));
    }
    text
}

/// Set a pty's window size.
pub fn set_size(master: &std::os::fd::OwnedFd, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize.
    assert_eq!(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
}

/// Write all of `text` to a pty master.
pub fn write_pty(master: &std::os::fd::OwnedFd, text: &str) {
    use std::os::fd::AsRawFd;
    // SAFETY: writing from a valid buffer of its length.
    let n = unsafe { libc::write(master.as_raw_fd(), text.as_ptr().cast(), text.len()) };
    assert_eq!(n, text.len() as isize);
}
