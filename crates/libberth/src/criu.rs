//! Checkpoint and restore with CRIU: `berth checkpoint` and `berth restore`, as runc has them.
//! This module owns the CRIU RPC session (`criu swrk` over a SOCK_SEQPACKET pair, with the
//! protobuf messages of the `rust-criu` crate), the mapping of runc's flags to CRIU's options and
//! their validation, what a dump tells CRIU about the container (external bind mounts, masked
//! paths, devices, namespaces joined by path, the freezer cgroup, the stdio descriptors kept in
//! `descriptors.json`), and the restore of a container from images: its state directory, cgroup
//! (cgroupfs or a systemd scope) made first and given to CRIU as the cgroup root, the rootfs bind
//! at `<state>/criu-root`, namespaces joined by path (`join_ns`, or `inherit_fd` for net/pid), the
//! terminal (CRIU's orphan pts master sent to `--console-socket`), the hooks runc runs at restore,
//! and the state file and pid file of the restored init.

use crate::cgroups::{self, Cgroup};
use crate::container::Runtime;
use crate::error::Context;
use crate::state::{self, Record, Status};
use crate::undo::Undo;
use crate::{bail, err, hooks, spec, Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use protobuf::Message;
use rust_criu::rust_criu_protobuf::rpc;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CRIU's VERSION request came with 3.0; runc requires it too.
pub const MIN_VERSION: u32 = 30000;
/// The stdio descriptors of the init at dump, for restore's `inherit_fd` of pipes (runc's file).
const DESCRIPTORS_FILE: &str = "descriptors.json";
/// The copy of the container's config kept in its state directory at create, read by checkpoint
/// (never the bundle's config.json of now, which the container may be able to rewrite).
pub const CONFIG_FILE: &str = "config.json";
/// runc's default CRIU configuration file (unless the `org.criu.config` annotation names another).
const DEFAULT_CONFIG_FILE: &str = "/etc/criu/runc.conf";
/// The bound of one wait on CRIU: a dump or restore of a large container takes long, one that
/// never answers is killed.
const CRIU_REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// `--manage-cgroups-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CgroupsMode {
    #[default]
    Default,
    Soft,
    Full,
    Strict,
    Ignore,
}

impl CgroupsMode {
    pub fn parse(s: &str) -> Result<CgroupsMode> {
        Ok(match s {
            "" => CgroupsMode::Default,
            "soft" => CgroupsMode::Soft,
            "full" => CgroupsMode::Full,
            "strict" => CgroupsMode::Strict,
            "ignore" => CgroupsMode::Ignore,
            _ => bail!("--manage-cgroups-mode: invalid value {s:?} (soft, full, strict or ignore)"),
        })
    }

    fn rpc(self) -> rpc::Criu_cg_mode {
        match self {
            CgroupsMode::Default => rpc::Criu_cg_mode::DEFAULT,
            CgroupsMode::Soft => rpc::Criu_cg_mode::SOFT,
            CgroupsMode::Full => rpc::Criu_cg_mode::FULL,
            CgroupsMode::Strict => rpc::Criu_cg_mode::STRICT,
            CgroupsMode::Ignore => rpc::Criu_cg_mode::IGNORE,
        }
    }
}

/// The CRIU options of `checkpoint` and `restore` (runc's flags).
#[derive(Clone, Debug, Default)]
pub struct CriuOpts {
    pub image_path: PathBuf,
    pub work_path: Option<PathBuf>,
    /// Relative to `image_path` (checked by `prepare_image_paths`).
    pub parent_path: Option<PathBuf>,
    pub leave_running: bool,
    pub tcp_established: bool,
    pub tcp_skip_in_flight: bool,
    pub link_remap: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub pre_dump: bool,
    pub auto_dedup: bool,
    pub lazy_pages: bool,
    pub status_fd: Option<RawFd>,
    pub page_server: Option<(String, i32)>,
    pub manage_cgroups_mode: CgroupsMode,
    /// CLONE_NEW* flags of namespaces CRIU makes empty (always the network one, as runc).
    pub empty_ns: u32,
    pub lsm_profile: Option<String>,
    pub lsm_mount_context: Option<String>,
}

/// `--empty-ns` values -> CRIU's mask. runc does not manage network devices: the network namespace
/// is always in it.
pub fn empty_ns_mask(list: &[String]) -> Result<u32> {
    let mut mask = libc::CLONE_NEWNET as u32;
    for ns in list {
        match ns.as_str() {
            "network" => mask |= libc::CLONE_NEWNET as u32,
            _ => bail!("--empty-ns: namespace {ns:?} is not supported (only \"network\")"),
        }
    }
    Ok(mask)
}

/// `--page-server ADDRESS:PORT`.
pub fn parse_page_server(s: &str) -> Result<(String, i32)> {
    let (addr, port) = s
        .rsplit_once(':')
        .ok_or_else(|| err!("--page-server: use ADDRESS:PORT (got {s:?})"))?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    if addr.is_empty() || port.is_empty() {
        bail!("--page-server: use ADDRESS:PORT (got {s:?})");
    }
    let port: u16 = port
        .parse()
        .map_err(|_| err!("--page-server: invalid port {port:?} (1-65535)"))?;
    if port == 0 {
        bail!("--page-server: invalid port 0 (1-65535)");
    }
    Ok((addr.to_string(), i32::from(port)))
}

/// runc's `prepareImagePaths`: the image directory defaults to `./checkpoint` and is made; the
/// parent path must be relative (CRIU takes it relative to the image directory) and name a directory.
pub fn prepare_image_paths(image: Option<&Path>, parent: Option<&Path>) -> Result<(PathBuf, Option<PathBuf>)> {
    let image = match image {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::env::current_dir().ctx("current directory")?.join("checkpoint"),
    };
    let parent = parent.filter(|p| !p.as_os_str().is_empty());
    if let Some(p) = parent {
        if p.is_absolute() {
            bail!("--parent-path must be relative (to --image-path): {}", p.display());
        }
    }
    std::fs::create_dir_all(&image).with_ctx(|| format!("--image-path {}", image.display()))?;
    if let Some(p) = parent {
        let real = image.join(p);
        match std::fs::metadata(&real) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("invalid --parent-path: {}: not a directory", real.display()),
            Err(e) => return Err(Error::sys(format!("invalid --parent-path: {}", real.display()), e)),
        }
    }
    Ok((image, parent.map(Path::to_path_buf)))
}

/// The status fd of `--lazy-pages` must be open for writing (runc's check).
pub fn check_status_fd(fd: RawFd) -> Result<()> {
    // SAFETY: fcntl F_GETFL on an integer descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Error::sys(
            format!("invalid --status-fd argument {fd}"),
            std::io::Error::last_os_error(),
        ));
    }
    if flags & (libc::O_WRONLY | libc::O_RDWR) == 0 {
        bail!("invalid --status-fd argument {fd}: not writable");
    }
    Ok(())
}

/// CRIU's version number as runc computes it: major*10000 + minor*100 + sublevel, a git build
/// counting as the next minor.
fn version_number(v: &rpc::Criu_version) -> u32 {
    let mut n =
        (v.major_number().max(0) as u32) * 10000 + (v.minor_number().max(0) as u32) * 100 + v.sublevel().max(0) as u32;
    if v.has_gitid() {
        n -= n % 100;
        n += 100;
    }
    n
}

/// The criu binary: `$PATH`'s, as runc runs it.
fn criu_binary() -> Result<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let p = dir.join("criu");
        if nix::unistd::access(&p, nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(p);
        }
    }
    bail!(
        "checkpoint/restore needs CRIU {} or newer: no criu in PATH (install the criu package)",
        fmt_version(MIN_VERSION)
    )
}

fn fmt_version(n: u32) -> String {
    format!("{}.{}.{}", n / 10000, n / 100 % 100, n % 100)
}

/// One `criu swrk` process and our end of its RPC socket.
struct Session {
    sock: OwnedFd,
    child: std::process::Child,
}

/// The stdio of CRIU: the caller's (restore: the restored process inherits pipes from it), or
/// /dev/null (dump, version).
#[derive(Clone, Copy, PartialEq, Eq)]
enum CriuStdio {
    Inherit,
    Null,
}

impl Session {
    /// Start `criu swrk 3` with the socket at fd 3 and `extra` at 4, 5, ...
    fn start(extra: &[RawFd], stdio: CriuStdio) -> Result<Session> {
        let bin = criu_binary()?;
        let mut sv = [0 as RawFd; 2];
        // SAFETY: socketpair into a local array.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        } != 0
        {
            return Err(Error::sys("criu: socketpair", std::io::Error::last_os_error()));
        }
        // SAFETY: fresh descriptors from socketpair, owned from here on.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg("swrk").arg("3");
        if stdio == CriuStdio::Null {
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        let mut sources: Vec<RawFd> = vec![theirs.as_raw_fd()];
        sources.extend_from_slice(extra);
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) on descriptors
        // this process holds. Every source is first copied above the targets so that no dup2 onto
        // 3.. overwrites a source not yet placed; dup2 leaves the copies without close-on-exec,
        // and the high copies are close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut high = [0 as RawFd; 16];
                if sources.len() > high.len() {
                    return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
                }
                let base = 3 + sources.len() as RawFd + 16;
                for (i, &fd) in sources.iter().enumerate() {
                    let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base);
                    if h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    high[i] = h;
                }
                for (i, &h) in high[..sources.len()].iter().enumerate() {
                    if libc::dup2(h, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::sys(format!("start {} swrk", bin.display()), e))?;
        drop(theirs);
        Ok(Session { sock: ours, child })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn send(&self, req: &rpc::Criu_req) -> Result<()> {
        let data = req.write_to_bytes().map_err(|e| err!("criu: encode request: {e}"))?;
        // SAFETY: write from a valid buffer to our socket.
        let n = unsafe {
            libc::send(
                self.sock.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(Error::sys("criu: send request", std::io::Error::last_os_error()));
        }
        if n as usize != data.len() {
            bail!("criu: short write of a request");
        }
        Ok(())
    }

    /// One message from CRIU (within the bound), with a descriptor if it sent one.
    fn recv(&self) -> Result<(rpc::Criu_resp, Option<OwnedFd>)> {
        let mut p = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let deadline = std::time::Instant::now() + CRIU_REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                bail!("criu: no answer within {} s", CRIU_REPLY_TIMEOUT.as_secs());
            }
            // SAFETY: p is a valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if r > 0 {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(Error::sys("criu: poll", std::io::Error::last_os_error()));
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ctx("criu: receive")?;
        let mut fd = None;
        for c in msg.cmsgs().ctx("criu: receive")? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    // SAFETY: descriptors just received, owned by us from here on.
                    let f = unsafe { OwnedFd::from_raw_fd(f) };
                    fd.get_or_insert(f);
                }
            }
        }
        if msg.flags.contains(nix::sys::socket::MsgFlags::MSG_TRUNC) {
            bail!("criu: a message larger than {} bytes", buf.len());
        }
        let n = msg.bytes;
        if n == 0 {
            bail!("criu: the RPC socket closed without an answer (criu exited: see its log)");
        }
        let resp = rpc::Criu_resp::parse_from_bytes(&buf[..n]).map_err(|e| err!("criu: decode an answer: {e}"))?;
        Ok((resp, fd))
    }

    /// Send `req` and answer CRIU's notifications with `notify` until the reply of `req`'s type.
    fn call(
        &mut self,
        req: &rpc::Criu_req,
        notify: &mut dyn FnMut(&rpc::Criu_notify, Option<OwnedFd>) -> Result<()>,
    ) -> Result<rpc::Criu_resp> {
        self.send(req)?;
        let want = req.type_();
        loop {
            let (resp, fd) = self.recv()?;
            if !resp.success() {
                let msg = if resp.has_cr_errmsg() {
                    format!(": {}", resp.cr_errmsg())
                } else {
                    String::new()
                };
                bail!("criu failed: type {:?} errno {}{msg}", resp.type_(), resp.cr_errno());
            }
            match resp.type_() {
                rpc::Criu_req_type::NOTIFY => {
                    let n = resp.notify.get_or_default();
                    notify(n, fd)?;
                    let mut ack = rpc::Criu_req::new();
                    ack.set_type(rpc::Criu_req_type::NOTIFY);
                    ack.set_notify_success(true);
                    self.send(&ack)?;
                }
                t if t == want => return Ok(resp),
                t => bail!("criu: unexpected answer {t:?} to {want:?}"),
            }
        }
    }

    /// Close the socket and wait (bounded) for criu to exit; its status. A pre-dump's criu waits
    /// for more requests: it is ended, as runc's is.
    fn finish(mut self, kill: bool) -> Option<std::process::ExitStatus> {
        drop(self.sock);
        if kill {
            let _ = self.child.kill();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return None;
                }
            }
        }
    }
}

/// CRIU's version through its VERSION request; a missing or too old criu is an error naming it.
pub fn version() -> Result<u32> {
    let mut s = Session::start(&[], CriuStdio::Null)?;
    let mut req = rpc::Criu_req::new();
    req.set_type(rpc::Criu_req_type::VERSION);
    let r = s.call(&req, &mut |_, _| Ok(()));
    s.finish(false);
    let resp = r.map_err(|e| {
        e.context(format!(
            "criu VERSION request (checkpoint/restore needs CRIU {} or newer)",
            fmt_version(MIN_VERSION)
        ))
    })?;
    if !resp.version.is_some() {
        bail!(
            "criu gave no version: checkpoint/restore needs CRIU {} or newer",
            fmt_version(MIN_VERSION)
        );
    }
    Ok(version_number(&resp.version))
}

/// `version() >= min`, else an error saying what needs what.
fn require(have: u32, min: u32, what: &str) -> Result<()> {
    if have < min {
        bail!(
            "{what} needs CRIU {} or newer (this criu is {})",
            fmt_version(min),
            fmt_version(have)
        );
    }
    Ok(())
}

/// Ask CRIU whether it supports memory tracking (pre-dump) or lazy pages.
fn check_features(mem_track: bool, lazy_pages: bool) -> Result<()> {
    let mut s = Session::start(&[], CriuStdio::Null)?;
    let mut req = rpc::Criu_req::new();
    req.set_type(rpc::Criu_req_type::FEATURE_CHECK);
    let mut f = rpc::Criu_features::new();
    if mem_track {
        f.set_mem_track(true);
    }
    if lazy_pages {
        f.set_lazy_pages(true);
    }
    req.features = protobuf::MessageField::some(f);
    let r = s.call(&req, &mut |_, _| Ok(()));
    s.finish(false);
    let resp = r?;
    let got = resp.features.get_or_default();
    if mem_track && !got.mem_track() {
        bail!("--pre-dump: this criu or kernel cannot track memory changes (CRIU feature mem_track)");
    }
    if lazy_pages && !got.lazy_pages() {
        bail!("--lazy-pages: this criu or kernel has no lazy pages (CRIU feature lazy_pages, userfaultfd)");
    }
    Ok(())
}

/// Tell the caller of `--lazy-pages` that the page server is ready: `\0` on `--status-fd`, closed.
fn status_ready(fd: RawFd) {
    let zero = [0u8; 1];
    // SAFETY: write one byte from a local buffer to the caller's descriptor, then close it (it is
    // used once).
    unsafe {
        libc::write(fd, zero.as_ptr().cast(), 1);
        libc::close(fd);
    }
}

/// The namespace's name as CRIU and runc spell it.
fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
    }
}

/// runc's key of an external namespace: "extRoot" + Name + "NS" ("extRootNetNS").
pub fn ns_key(t: LinuxNamespaceType) -> String {
    let n = ns_name(t);
    let mut c = n.chars();
    let first = c.next().map(|f| f.to_ascii_uppercase()).unwrap_or_default();
    format!("extRoot{first}{}NS", c.as_str())
}

/// A namespace of the config joined by path.
fn ns_path(spec: &Spec, t: LinuxNamespaceType) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == t)?
        .path()
        .clone()
}

fn has_ns(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|v| v.iter().any(|n| n.typ() == t))
}

/// A mount destination cleaned as runc's securejoin would (inside the root, no `..` above it).
fn clean_dest(p: &Path) -> String {
    crate::linux::fs::normalize(p).to_string_lossy().into_owned()
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

/// The devices every container has (runc's list, which it gives CRIU as external mounts: bound
/// from the host in a user namespace, ignored by CRIU where they are nodes).
const DEFAULT_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/random",
    "/dev/urandom",
];

fn device_paths(spec: &Spec) -> Vec<String> {
    let mut out: Vec<String> = DEFAULT_DEVICES.iter().map(|s| s.to_string()).collect();
    if let Some(devs) = spec.linux().as_ref().and_then(|l| l.devices().as_ref()) {
        for d in devs {
            let p = clean_dest(d.path());
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// What a cgroup mount is for CRIU: on a pure v2 host with a cgroup namespace, a real cgroup2
/// mount (nothing to say); without one, Berth binds the container's own cgroup directory there;
/// on v1/hybrid, a tmpfs with a bind of the container's cgroup of every hierarchy. Returns
/// (mount point inside the container, host directory) of each such bind.
fn cgroup_binds(spec: &Spec, dest: &Path, cgroup_path: &str) -> Vec<(String, PathBuf)> {
    let (layout, _) = cgroups::hierarchies();
    let cg = Cgroup::open(cgroup_path);
    if layout == cgroups::Layout::V2 {
        if has_ns(spec, LinuxNamespaceType::Cgroup) {
            return Vec::new();
        }
        return cg
            .dirs
            .first()
            .map(|(_, d)| (clean_dest(dest), d.clone()))
            .into_iter()
            .collect();
    }
    cg.dirs
        .iter()
        .map(|(h, d)| {
            let name = if h.v2 {
                "unified".to_string()
            } else {
                h.name.trim_start_matches("name=").to_string()
            };
            (clean_dest(&dest.join(name)), d.clone())
        })
        .collect()
}

/// (key, value) pairs of CRIU's ext_mnt for a dump.
fn dump_ext_mounts(spec: &Spec, rec: &Record, masked_files: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or_default() {
        if m.typ().as_deref() == Some("cgroup") {
            for (inside, _) in cgroup_binds(spec, m.destination(), &rec.cgroup_path) {
                out.push((inside.clone(), inside));
            }
        } else if is_bind(m) {
            let d = clean_dest(m.destination());
            out.push((d.clone(), d));
        }
    }
    for p in masked_files {
        out.push((p.clone(), "/dev/null".to_string()));
    }
    for d in device_paths(spec) {
        out.push((d.clone(), d));
    }
    out
}

/// (key, value) pairs of CRIU's ext_mnt for a restore: each key as at dump, the value the host's
/// source now.
fn restore_ext_mounts(spec: &Spec, bundle: &Path, cgroup_path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or_default() {
        if m.typ().as_deref() == Some("cgroup") {
            for (inside, host) in cgroup_binds(spec, m.destination(), cgroup_path) {
                out.push((inside, host.to_string_lossy().into_owned()));
            }
        } else if is_bind(m) {
            let src = m.source().clone().unwrap_or_default();
            let src = if src.is_relative() { bundle.join(src) } else { src };
            out.push((clean_dest(m.destination()), src.to_string_lossy().into_owned()));
        }
    }
    let masked = spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().as_ref())
        .is_some_and(|v| !v.is_empty());
    if masked {
        out.push(("/dev/null".to_string(), "/dev/null".to_string()));
    }
    for d in device_paths(spec) {
        out.push((d.clone(), d));
    }
    out
}

fn ext_mnt(pairs: Vec<(String, String)>) -> Vec<rpc::Ext_mount_map> {
    let mut seen = std::collections::HashSet::new();
    pairs
        .into_iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .map(|(k, v)| {
            let mut m = rpc::Ext_mount_map::new();
            m.set_key(k);
            m.set_val(v);
            m
        })
        .collect()
}

/// `--work-path` (made when missing) as CRIU's work directory, held open for the session; and
/// where CRIU writes its log: the work directory, else the image directory.
fn work_dir(o: &CriuOpts, r: &mut rpc::Criu_opts) -> Result<(Option<OwnedFd>, PathBuf)> {
    match &o.work_path {
        Some(w) => {
            let fd = open_dir_created(w, "--work-path")?;
            r.set_work_dir_fd(fd.as_raw_fd());
            Ok((Some(fd), w.clone()))
        }
        None => Ok((None, o.image_path.clone())),
    }
}

/// The options common to dump and restore.
fn base_opts(o: &CriuOpts, images: &OwnedFd, log_file: &str, spec: &Spec) -> rpc::Criu_opts {
    let mut r = rpc::Criu_opts::new();
    r.set_images_dir_fd(images.as_raw_fd());
    r.set_log_level(4);
    r.set_log_file(log_file.to_string());
    r.set_manage_cgroups(true);
    r.set_manage_cgroups_mode(o.manage_cgroups_mode.rpc());
    r.set_notify_scripts(true);
    r.set_shell_job(o.shell_job);
    r.set_ext_unix_sk(o.ext_unix_sk);
    r.set_tcp_established(o.tcp_established);
    r.set_file_locks(o.file_locks);
    r.set_empty_ns(o.empty_ns);
    r.set_orphan_pts_master(true);
    r.set_auto_dedup(o.auto_dedup);
    r.set_lazy_pages(o.lazy_pages);
    // runc's CRIU configuration file, unless the annotation names another ("" for none).
    match spec.annotations().as_ref().and_then(|a| a.get("org.criu.config")) {
        Some(f) if f.is_empty() => {}
        Some(f) => r.set_config_file(f.clone()),
        None => r.set_config_file(DEFAULT_CONFIG_FILE.to_string()),
    }
    r
}

fn open_dir_created(p: &Path, what: &str) -> Result<OwnedFd> {
    match std::fs::create_dir(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::sys(format!("{what} {}", p.display()), e)),
    }
    crate::linux::fs::open_dir(p).map_err(|e| e.context(format!("{what} {}", p.display())))
}

/// The lines of CRIU's log with "Error" (and the ones just before), for the error message.
fn log_errors(dir: &Path, file: &str) -> String {
    let path = dir.join(file);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return format!("(no log at {})", path.display());
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut picked = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("Error") {
            picked.push(format!("{}:{}", i + 1, l));
        }
    }
    let shown: Vec<String> = picked.into_iter().take(5).collect();
    format!(
        "log file {}{}{}",
        path.display(),
        if shown.is_empty() { "" } else { ":\n" },
        shown.join("\n")
    )
}

/// Load the config kept at create (or the bundle's, for a container made by an older Berth).
fn kept_config(dir: &Path, rec: &Record) -> Result<Spec> {
    let p = dir.join(CONFIG_FILE);
    match std::fs::read(&p) {
        Ok(b) => spec::parse(&b, &p.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let b = std::fs::read(rec.bundle.join("config.json"))
                .with_ctx(|| format!("{}", rec.bundle.join("config.json").display()))?;
            spec::parse(&b, "config.json")
        }
        Err(e) => Err(Error::sys(p.display(), e)),
    }
}

/// The freezer cgroup CRIU stops the container with (v1 freezer, or the unified directory with
/// CRIU >= 3.14); without it CRIU uses ptrace.
fn freeze_cgroup(cg: &Cgroup, ver: u32) -> Option<String> {
    if let Some((_, d)) = cg
        .dirs
        .iter()
        .find(|(h, _)| !h.v2 && h.name.split(',').any(|c| c == "freezer"))
    {
        return Some(d.to_string_lossy().into_owned());
    }
    if ver < 31400 {
        return None;
    }
    let d = cg.unified()?;
    d.join("cgroup.freeze")
        .exists()
        .then(|| d.to_string_lossy().into_owned())
}

impl Runtime {
    /// `checkpoint`: dump a running (or paused) container with CRIU into `o.image_path`; the
    /// container is destroyed after a full dump unless `leave_running`, as runc does.
    pub fn checkpoint(&self, id: &str, o: &CriuOpts) -> Result<()> {
        let locked = self.store.open(id)?;
        let rec = locked
            .load()?
            .ok_or_else(|| err!("container {id:?} is still being created"))?;
        if crate::vm::is_vm(&locked) {
            bail!("checkpoint: container {id:?} is a VM container; checkpoint/restore of VM containers is not supported (docs/VM.md, \"Checkpoint and restore\")");
        }
        match locked.status(Some(&rec)) {
            Status::Running | Status::Paused => {}
            s => bail!("container {id:?} cannot be checkpointed in {} state", s.as_str()),
        }
        let ver = version()?;
        require(ver, MIN_VERSION, "checkpoint")?;
        if o.pre_dump || o.lazy_pages {
            check_features(o.pre_dump, o.lazy_pages)?;
        }
        if let Some(fd) = o.status_fd {
            check_status_fd(fd)?;
        }
        let spec = kept_config(&locked.dir, &rec)?;
        let images = open_dir_created(&o.image_path, "--image-path")?;
        let mut r = base_opts(o, &images, "dump.log", &spec);
        r.set_root(rec.rootfs.to_string_lossy().into_owned());
        r.set_pid(rec.pid);
        r.set_leave_running(o.leave_running);
        r.set_tcp_skip_in_flight(o.tcp_skip_in_flight);
        r.set_link_remap(o.link_remap);
        let (work, log_dir) = work_dir(o, &mut r)?;
        // Namespaces joined by path stay outside the dump: CRIU records them as external by inode.
        for t in [LinuxNamespaceType::Network, LinuxNamespaceType::Pid] {
            if let Some(p) = ns_path(&spec, t) {
                let need = if t == LinuxNamespaceType::Network { 31100 } else { 31500 };
                require(ver, need, &format!("an external {} namespace", ns_name(t)))?;
                let st = nix::sys::stat::stat(&p).with_ctx(|| format!("namespace {}", p.display()))?;
                r.external.push(format!("{}[{}]:{}", ns_name(t), st.st_ino, ns_key(t)));
            }
        }
        let cg = Cgroup::open(&rec.cgroup_path);
        if let Some(f) = freeze_cgroup(&cg, ver) {
            r.set_freeze_cgroup(f);
        }
        if let Some((addr, port)) = &o.page_server {
            let mut ps = rpc::Criu_page_server_info::new();
            ps.set_address(addr.clone());
            ps.set_port(*port);
            r.ps = protobuf::MessageField::some(ps);
        }
        if let Some(p) = &o.parent_path {
            r.set_parent_img(p.to_string_lossy().into_owned());
            r.set_track_mem(true);
        }
        if let Some(fd) = o.status_fd.filter(|_| o.lazy_pages) {
            if ver < 31500 {
                r.set_status_fd(fd);
            }
        }
        if !o.pre_dump {
            let masked = masked_files(&spec, rec.pid);
            r.ext_mnt = ext_mnt(dump_ext_mounts(&spec, &rec, &masked));
            // The init's stdio, for restore's inherit_fd of pipes.
            let fds: Vec<String> = (0..3)
                .map(|i| {
                    std::fs::read_link(format!("/proc/{}/fd/{i}", rec.pid))
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| "/dev/null".to_string())
                })
                .collect();
            let text = serde_json::to_vec(&fds).map_err(|e| err!("{e}"))?;
            let p = o.image_path.join(DESCRIPTORS_FILE);
            std::fs::write(&p, text).with_ctx(|| format!("{}", p.display()))?;
        }
        // The init must still be the recorded one when CRIU is pointed at its pid.
        if !state::process_alive(rec.pid, rec.pid_start) {
            bail!("container {id:?}: its init process is gone");
        }
        let mut req = rpc::Criu_req::new();
        req.set_type(if o.pre_dump {
            rpc::Criu_req_type::PRE_DUMP
        } else {
            rpc::Criu_req_type::DUMP
        });
        req.opts = protobuf::MessageField::some(r);
        crate::log::debug(&format!(
            "criu {}: {:?} of pid {}",
            fmt_version(ver),
            req.type_(),
            rec.pid
        ));
        let mut status_fd = o.status_fd.filter(|_| o.lazy_pages);
        let mut s = Session::start(&[], CriuStdio::Null)?;
        let res = s.call(&req, &mut |n, _fd| {
            crate::log::debug(&format!("criu notify: {}", n.script()));
            if n.script() == "status-ready" {
                if let Some(fd) = status_fd.take() {
                    status_ready(fd);
                }
            }
            Ok(())
        });
        let st = s.finish(o.pre_dump && res.is_ok());
        drop(work);
        drop(images);
        if let Err(e) = res {
            bail!(
                "checkpoint of container {id:?} failed (the container is left as it was): {e}; {}",
                log_errors(&log_dir, "dump.log")
            );
        }
        if !o.pre_dump && st.is_some_and(|s| !s.success()) {
            bail!("criu exited with {:?}; {}", st, log_errors(&log_dir, "dump.log"));
        }
        if !o.leave_running && !o.pre_dump {
            // Destroy the container, as runc does after a dump that stopped it.
            if let Err(e) = self.destroy(locked, &rec) {
                crate::log::warn(&e.to_string());
            }
        }
        Ok(())
    }
}

/// Masked paths that are files in the container (bound over with /dev/null): runc gives CRIU
/// each as an external mount of /dev/null. Directories (a read-only tmpfs) are dumped as mounts.
fn masked_files(spec: &Spec, pid: i32) -> Vec<String> {
    let mut out = Vec::new();
    let Some(list) = spec.linux().as_ref().and_then(|l| l.masked_paths().clone()) else {
        return out;
    };
    let Ok(root) = crate::linux::fs::open_dir(Path::new(&format!("/proc/{pid}/root"))) else {
        return out;
    };
    for p in list {
        // Looked up inside the container's root, without leaving it.
        let Ok(fd) = crate::linux::fs::open_in_root(root.as_raw_fd(), Path::new(&p)) else {
            continue;
        };
        match crate::linux::fs::fstat(fd.as_raw_fd()) {
            Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => out.push(clean_dest(Path::new(&p))),
            _ => {}
        }
    }
    out
}

/// `restore`'s own options (besides CRIU's).
pub struct RestoreOpts<'a> {
    pub criu: CriuOpts,
    pub bundle: &'a Path,
    pub detach: bool,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub no_subreaper: bool,
    pub no_pivot: bool,
}

/// The bind of the rootfs CRIU restores into (it must be a mount point whose parent is not
/// overmounted), unmounted and removed when dropped.
struct CriuRoot(PathBuf);

impl CriuRoot {
    fn make(state_dir: &Path, rootfs: &Path) -> Result<CriuRoot> {
        let root = state_dir.join("criu-root");
        std::fs::create_dir(&root).with_ctx(|| format!("{}", root.display()))?;
        let r = CriuRoot(root);
        nix::mount::mount(
            Some(rootfs),
            &r.0,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
            None::<&str>,
        )
        .with_ctx(|| format!("bind {} at {}", rootfs.display(), r.0.display()))?;
        Ok(r)
    }
}

impl Drop for CriuRoot {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Make the mount points of the config's mounts in the rootfs, as create would (a restore into a
/// fresh rootfs has none); those on a tmpfs CRIU restores with the tmpfs's contents.
fn prepare_mountpoints(spec: &Spec, rootfs: &Path, bundle: &Path) -> Result<()> {
    use crate::linux::fs::Make;
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let root = crate::linux::fs::open_dir(rootfs)?;
    for m in mounts {
        if m.typ().as_deref() == Some("cgroup") {
            continue;
        }
        let dest = m.destination();
        let on_tmpfs = mounts.iter().any(|t| {
            t.typ().as_deref() == Some("tmpfs") && dest.starts_with(t.destination()) && dest != t.destination()
        });
        if on_tmpfs {
            continue;
        }
        let file = is_bind(m)
            && m.source().as_ref().is_some_and(|s| {
                let s = if s.is_relative() { bundle.join(s) } else { s.clone() };
                std::fs::metadata(s).is_ok_and(|md| !md.is_dir())
            });
        crate::linux::fs::mkpath_in_root(root.as_raw_fd(), dest, if file { Make::File } else { Make::Dir })
            .map_err(|e| e.context(format!("restore: mount point {}", dest.display())))?;
    }
    Ok(())
}

/// Whether `pid` is a child of this process (the restored init, a sibling of criu).
fn is_our_child(pid: i32) -> bool {
    // SAFETY: waitid on a pid without reaping it (WNOWAIT, WNOHANG); siginfo is local.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
    }
}

impl Runtime {
    /// `restore`: make container `id` from the bundle and CRIU's images; returns the exit status
    /// of the restored container (0 when detached).
    pub fn restore(&self, id: &str, o: &RestoreOpts) -> Result<i32> {
        state::validate_id(id)?;
        let bundle = spec::load_bundle(o.bundle)?;
        if crate::vm::wanted(&bundle.spec) {
            bail!("restore: the bundle asks for a VM container; checkpoint/restore of VM containers is not supported (docs/VM.md, \"Checkpoint and restore\")");
        }
        let terminal = bundle
            .spec
            .process()
            .as_ref()
            .is_some_and(|p| p.terminal() == Some(true));
        if terminal && o.console_socket.is_none() {
            bail!("process.terminal: true needs --console-socket at restore (the restored pty master is sent there)");
        }
        if let Some(fd) = o.criu.status_fd {
            check_status_fd(fd)?;
        }
        let ver = version()?;
        require(ver, MIN_VERSION, "restore")?;
        if o.criu.lsm_profile.is_some() || o.criu.lsm_mount_context.is_some() {
            require(ver, 31600, "--lsm-profile/--lsm-mount-context")?;
        }
        if o.criu.lazy_pages {
            check_features(false, true)?;
        }
        if has_ns(&bundle.spec, LinuxNamespaceType::Cgroup)
            && ns_path(&bundle.spec, LinuxNamespaceType::Cgroup).is_some()
        {
            bail!("linux.namespaces: a cgroup namespace joined by path cannot be restored (CRIU cannot join one)");
        }
        let descriptors: Vec<String> = {
            let p = o.criu.image_path.join(DESCRIPTORS_FILE);
            let b = std::fs::read(&p).with_ctx(|| format!("restore: {}", p.display()))?;
            serde_json::from_slice(&b).map_err(|e| err!("restore: {}: {e}", p.display()))?
        };
        let images = crate::linux::fs::open_dir(&o.criu.image_path).map_err(|e| e.context("--image-path"))?;
        let linux = bundle.spec.linux().as_ref();
        let cg_path =
            cgroups::container_path(linux.and_then(|l| l.cgroups_path().as_deref()), id, self.systemd_cgroup)?;
        let mut cgroup = Cgroup::open(&cg_path);
        let settings = match linux {
            Some(l) => cgroups::resources::plan(&cgroup, l, cgroups::resources::Mode::Create)?,
            None => Default::default(),
        };
        if self.systemd_cgroup {
            if let Some(r) = linux.and_then(|l| l.resources().as_ref()) {
                cgroups::systemd::resource_props(r)?;
            }
            if cgroup.exists() {
                bail!(
                    "linux.cgroupsPath: the systemd scope {} exists already",
                    cgroups::systemd::unit_of(&cg_path)
                );
            }
        }
        let console = o
            .console_socket
            .map(|p| {
                std::os::unix::net::UnixStream::connect(p).with_ctx(|| format!("--console-socket {}", p.display()))
            })
            .transpose()?;
        // Namespaces joined by path: net and pid handed to CRIU as inherited descriptors (keyed as
        // at dump), the others joined by CRIU itself.
        let mut extra: Vec<OwnedFd> = Vec::new();
        let mut inherit: Vec<(String, i32)> = Vec::new();
        let mut join: Vec<(String, String)> = Vec::new();
        for n in linux
            .and_then(|l| l.namespaces().as_ref())
            .map(|v| v.as_slice())
            .unwrap_or_default()
        {
            let Some(p) = n.path() else { continue };
            match n.typ() {
                LinuxNamespaceType::Network | LinuxNamespaceType::Pid => {
                    let need = if n.typ() == LinuxNamespaceType::Network {
                        31100
                    } else {
                        31500
                    };
                    require(ver, need, &format!("an external {} namespace", ns_name(n.typ())))?;
                    let fd = crate::linux::process::open_ns(p).map_err(|e| {
                        e.context(format!("the {} namespace to restore into must exist", ns_name(n.typ())))
                    })?;
                    inherit.push((ns_key(n.typ()), 4 + extra.len() as i32));
                    extra.push(fd);
                }
                t => join.push((ns_name(t).to_string(), p.to_string_lossy().into_owned())),
            }
        }
        let sigs = if o.detach {
            None
        } else {
            Some(crate::signal::SignalGuard::block())
        };
        if !o.detach && !o.no_subreaper {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        }

        let locked = self.store.create(id)?;
        let mut undo = Undo {
            dir: None,
            cgroup: None,
            scope: None,
            pid: 0,
        };
        let dir = locked.dir.clone();
        let owned = !cgroup.exists();
        let plan = crate::linux::process::NsPlan::of(&bundle.spec);
        let mut rec = Record {
            cgroup_path: cg_path.clone(),
            cgroup_owned: owned,
            systemd_scope: self.systemd_cgroup,
            own_pid_ns: plan.pid_ns(),
            mounts_in_runtime_ns: plan.mount_ns() == crate::linux::process::MountNs::Runtime,
            ..Record::from_bundle(id, &bundle)
        };
        let saved = locked.save(&rec).and_then(|_| save_config(&dir, &bundle.spec));
        undo.dir = Some(locked);
        saved?;
        undo.place_cgroup(&mut cgroup, &cg_path, id, self.systemd_cgroup, owned, linux, settings)?;

        let root = CriuRoot::make(&dir, &bundle.rootfs)?;
        prepare_mountpoints(&bundle.spec, &bundle.rootfs, &bundle.dir)?;
        let mut r = base_opts(&o.criu, &images, "restore.log", &bundle.spec);
        r.set_evasive_devices(true);
        r.set_rst_sibling(true);
        r.set_root(root.0.to_string_lossy().into_owned());
        if let Some(p) = &o.criu.lsm_profile {
            r.set_lsm_profile(p.clone());
        }
        if let Some(c) = &o.criu.lsm_mount_context {
            r.set_lsm_mount_context(c.clone());
        }
        let (work, log_dir) = work_dir(&o.criu, &mut r)?;
        for (key, fd) in inherit {
            let mut i = rpc::Inherit_fd::new();
            i.set_key(key);
            i.set_fd(fd);
            r.inherit_fd.push(i);
        }
        for (ns, file) in join {
            let mut j = rpc::Join_namespace::new();
            j.set_ns(ns);
            j.set_ns_file(file);
            r.join_ns.push(j);
        }
        r.ext_mnt = ext_mnt(restore_ext_mounts(&bundle.spec, &bundle.dir, &cg_path));
        // The restored process's pipes at 0-2 are ours (runc passes its stdio the same way).
        for (i, d) in descriptors.iter().enumerate().take(3) {
            if d.contains("pipe:") {
                let mut f = rpc::Inherit_fd::new();
                f.set_key(d.clone());
                f.set_fd(i as i32);
                r.inherit_fd.push(f);
            }
        }
        let extra_raw: Vec<RawFd> = extra.iter().map(|f| f.as_raw_fd()).collect();
        let mut s = Session::start(&extra_raw, CriuStdio::Inherit)?;
        drop(extra);
        // criu joins the container's cgroup first (with systemd, the scope starts with it), and
        // restores the container's cgroups below where it is.
        let placed = cgroup.add(s.pid());
        if let Err(e) = placed {
            s.finish(true);
            return Err(e);
        }
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", s.pid())).unwrap_or_default();
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            for c in ctrls.split(',') {
                let mut root = rpc::Cgroup_root::new();
                root.set_ctrl(c.to_string());
                root.set_path(path.to_string());
                r.cg_root.push(root);
            }
        }
        let mut req = rpc::Criu_req::new();
        req.set_type(rpc::Criu_req_type::RESTORE);
        req.opts = protobuf::MessageField::some(r);

        let hooks = bundle.spec.hooks().clone();
        let mut restored: Option<i32> = None;
        let mut status_fd = o.criu.status_fd.filter(|_| o.criu.lazy_pages);
        let res = s.call(&req, &mut |n, fd| {
            crate::log::debug(&format!("criu notify: {} (pid {})", n.script(), n.pid()));
            match n.script() {
                "setup-namespaces" => {
                    if let Some(h) = &hooks {
                        let mut doc = rec.doc(Status::Creating);
                        doc.pid = n.pid();
                        let st = serde_json::to_vec(&doc).unwrap_or_default();
                        #[allow(deprecated)]
                        if let Some(list) = h.prestart() {
                            hooks::run_all("prestart", list, &st)?;
                        }
                        if let Some(list) = h.create_runtime() {
                            hooks::run_all("createRuntime", list, &st)?;
                        }
                    }
                }
                "orphan-pts-master" => {
                    let fd = fd.ok_or_else(|| err!("criu: orphan-pts-master without a descriptor"))?;
                    let sock = console
                        .as_ref()
                        .ok_or_else(|| err!("the restored container has a terminal: --console-socket is needed"))?;
                    crate::linux::console::send_fd(sock.as_raw_fd(), fd.as_raw_fd(), "/dev/ptmx")?;
                }
                "post-restore" => {
                    let pid = n.pid();
                    // The restored init is criu's sibling: our child. Anything else is refused.
                    if pid <= 0 || !is_our_child(pid) {
                        bail!("criu reported pid {pid} as the restored init, which is not a child of this process");
                    }
                    restored = Some(pid);
                }
                "status-ready" => {
                    if let Some(fd) = status_fd.take() {
                        status_ready(fd);
                    }
                }
                // `network-lock`/`network-unlock` (and the rest) are only acknowledged, as runc's
                // loopback network strategy does: CRIU locks and unlocks the namespace itself
                // (docs/CHECKPOINT.md, "TCP connections").
                _ => {}
            }
            Ok(())
        });
        let failed = res.is_err() || restored.is_none();
        let st = s.finish(failed);
        drop(work);
        drop(root);
        if let Some(pid) = restored {
            undo.pid = pid;
        }
        if let Err(e) = res {
            bail!(
                "restore of container {id:?} failed: {e}; {}",
                log_errors(&log_dir, "restore.log")
            );
        }
        let Some(pid) = restored else {
            bail!(
                "restore of container {id:?}: criu reported no restored process; {}",
                log_errors(&log_dir, "restore.log")
            );
        };
        if st.is_some_and(|s| !s.success()) {
            bail!(
                "restore: criu exited with {:?}; {}",
                st,
                log_errors(&log_dir, "restore.log")
            );
        }
        rec.pid = pid;
        rec.pid_start = state::proc_stat(pid)
            .map(|s| s.1)
            .ok_or_else(|| err!("the restored init (pid {pid}) exited during restore"))?;
        rec.created = crate::time::now_rfc3339();
        let locked = undo.dir.take().expect("state dir");
        let committed = locked
            .save(&rec)
            .and_then(|_| o.pid_file.map_or(Ok(()), |p| crate::pid_file::write_pid_file(p, pid)));
        if let Err(e) = committed {
            undo.dir = Some(locked);
            return Err(e);
        }
        undo.cgroup = None;
        undo.scope = None;
        undo.pid = 0;
        drop(locked);
        if o.detach {
            return Ok(0);
        }
        let sigs = sigs.expect("signals blocked");
        let code = sigs.wait_forwarding(pid);
        self.delete(id, true)?;
        Ok(code)
    }
}

/// Keep the container's config beside its state (read by checkpoint).
pub(crate) fn save_config(dir: &Path, spec: &Spec) -> Result<()> {
    let text = serde_json::to_vec(spec).map_err(|e| err!("config: {e}"))?;
    let p = dir.join(CONFIG_FILE);
    std::fs::write(&p, text).with_ctx(|| format!("{}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_mode_values() {
        assert_eq!(CgroupsMode::parse("").unwrap(), CgroupsMode::Default);
        assert_eq!(CgroupsMode::parse("soft").unwrap().rpc(), rpc::Criu_cg_mode::SOFT);
        assert_eq!(CgroupsMode::parse("full").unwrap().rpc(), rpc::Criu_cg_mode::FULL);
        assert_eq!(CgroupsMode::parse("strict").unwrap().rpc(), rpc::Criu_cg_mode::STRICT);
        assert_eq!(CgroupsMode::parse("ignore").unwrap().rpc(), rpc::Criu_cg_mode::IGNORE);
        assert_eq!(CgroupsMode::Default.rpc(), rpc::Criu_cg_mode::DEFAULT);
        let e = CgroupsMode::parse("props").unwrap_err().to_string();
        assert!(e.contains("--manage-cgroups-mode") && e.contains("props"), "{e}");
    }

    #[test]
    fn empty_ns_always_has_network() {
        assert_eq!(empty_ns_mask(&[]).unwrap(), libc::CLONE_NEWNET as u32);
        assert_eq!(empty_ns_mask(&["network".into()]).unwrap(), libc::CLONE_NEWNET as u32);
        let e = empty_ns_mask(&["pid".into()]).unwrap_err().to_string();
        assert!(e.contains("--empty-ns") && e.contains("pid"), "{e}");
    }

    #[test]
    fn page_server_parsing() {
        assert_eq!(parse_page_server("10.0.0.1:27").unwrap(), ("10.0.0.1".into(), 27));
        assert_eq!(parse_page_server("[::1]:1234").unwrap(), ("::1".into(), 1234));
        for bad in ["10.0.0.1", ":27", "host:", "host:0", "host:70000", "host:x"] {
            let e = parse_page_server(bad).unwrap_err().to_string();
            assert!(e.contains("--page-server"), "{bad}: {e}");
        }
    }

    #[test]
    fn image_paths() {
        let t = std::env::temp_dir().join(format!("berth-criu-unit-{}", std::process::id()));
        let img = t.join("img");
        let (i, p) = prepare_image_paths(Some(&img), None).unwrap();
        assert_eq!(i, img);
        assert!(p.is_none() && img.is_dir());
        let e = prepare_image_paths(Some(&img), Some(Path::new("/abs")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--parent-path must be relative"), "{e}");
        let e = prepare_image_paths(Some(&img), Some(Path::new("../pre")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid --parent-path"), "{e}");
        std::fs::create_dir(t.join("pre")).unwrap();
        let (_, p) = prepare_image_paths(Some(&img), Some(Path::new("../pre"))).unwrap();
        assert_eq!(p.unwrap(), Path::new("../pre"));
        std::fs::write(t.join("file"), "").unwrap();
        let e = prepare_image_paths(Some(&img), Some(Path::new("../file")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn version_numbers() {
        let mut v = rpc::Criu_version::new();
        v.set_major_number(3);
        v.set_minor_number(17);
        v.set_sublevel(1);
        assert_eq!(version_number(&v), 31701);
        v.set_gitid("abc".into());
        assert_eq!(version_number(&v), 31800);
        assert_eq!(fmt_version(31701), "3.17.1");
        assert!(require(21200, MIN_VERSION, "checkpoint")
            .unwrap_err()
            .to_string()
            .contains("needs CRIU 3.0.0 or newer (this criu is 2.12.0)"));
        assert!(require(31701, MIN_VERSION, "checkpoint").is_ok());
    }

    #[test]
    fn namespace_keys() {
        assert_eq!(ns_key(LinuxNamespaceType::Network), "extRootNetNS");
        assert_eq!(ns_key(LinuxNamespaceType::Pid), "extRootPidNS");
    }

    fn spec_of(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn external_mounts() {
        let s = spec_of(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                      {"destination":"/data/../vol","type":"bind","source":"rel/src","options":["rbind"]},
                      {"destination":"/etc/hosts","source":"/etc/hosts","options":["bind","ro"]}],
            "linux":{"maskedPaths":["/proc/kcore"],"devices":[{"path":"/dev/fuse","type":"c","major":10,"minor":229}]}}"#,
        );
        let rec = Record::default();
        let d = dump_ext_mounts(&s, &rec, &["/proc/kcore".to_string()]);
        assert!(d.contains(&("/vol".into(), "/vol".into())), "{d:?}");
        assert!(d.contains(&("/etc/hosts".into(), "/etc/hosts".into())), "{d:?}");
        assert!(d.contains(&("/proc/kcore".into(), "/dev/null".into())), "{d:?}");
        assert!(d.contains(&("/dev/fuse".into(), "/dev/fuse".into())), "{d:?}");
        assert!(d.contains(&("/dev/null".into(), "/dev/null".into())), "{d:?}");
        assert!(!d.iter().any(|(k, _)| k == "/proc"), "{d:?}");
        let r = restore_ext_mounts(&s, Path::new("/b"), "");
        assert!(r.contains(&("/vol".into(), "/b/rel/src".into())), "{r:?}");
        assert!(r.contains(&("/etc/hosts".into(), "/etc/hosts".into())), "{r:?}");
        assert!(r.contains(&("/dev/null".into(), "/dev/null".into())), "{r:?}");
        let m = ext_mnt(r.clone());
        assert_eq!(
            m.len(),
            r.iter().map(|(k, _)| k).collect::<std::collections::HashSet<_>>().len()
        );
    }

    #[test]
    fn config_file_annotation() {
        let img = crate::linux::fs::open_dir(Path::new("/")).unwrap();
        let o = CriuOpts::default();
        let plain = spec_of(r#"{"ociVersion":"1.0.2"}"#);
        assert_eq!(
            base_opts(&o, &img, "dump.log", &plain).config_file(),
            DEFAULT_CONFIG_FILE
        );
        let named = spec_of(r#"{"ociVersion":"1.0.2","annotations":{"org.criu.config":"/x.conf"}}"#);
        assert_eq!(base_opts(&o, &img, "dump.log", &named).config_file(), "/x.conf");
        let none = spec_of(r#"{"ociVersion":"1.0.2","annotations":{"org.criu.config":""}}"#);
        assert!(!base_opts(&o, &img, "dump.log", &none).has_config_file());
        let o = CriuOpts {
            tcp_established: true,
            shell_job: true,
            empty_ns: empty_ns_mask(&[]).unwrap(),
            manage_cgroups_mode: CgroupsMode::Ignore,
            ..CriuOpts::default()
        };
        let r = base_opts(&o, &img, "dump.log", &plain);
        assert!(r.tcp_established() && r.shell_job() && r.orphan_pts_master() && r.notify_scripts());
        assert_eq!(r.empty_ns(), libc::CLONE_NEWNET as u32);
        assert_eq!(r.manage_cgroups_mode(), rpc::Criu_cg_mode::IGNORE);
        assert_eq!(r.log_level(), 4);
    }
}
