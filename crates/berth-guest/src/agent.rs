//! The agent's service: frames on the control port (libberth::vm::proto), one stream per host
//! client. Requests (`create`, `start`, `kill`, `exec`) run libberth's own code; the container's
//! process (stream 0) and every exec'd process get their stdin, stdout and stderr — pipes, or a
//! pty — relayed over their stream, within the per-stream window, and their exit status sent once
//! their output is drained. One poll loop; children are reaped through a signalfd.

use crate::{mount, mount_device, open_port, R};
use libberth::container::{CreateOpts, Runtime};
use libberth::linux::exec::ExecOpts;
use libberth::vm::proto::{self, kind, CreateMsg, ExecMsg, Frame, FrameBuf, WINDOW};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// One process's stdio in the guest.
struct Stream {
    pid: i32,
    tty: Option<RawFd>,
    /// Its stdin (a pipe's write end, or the pty master).
    input: Option<OwnedFd>,
    inq: Vec<u8>,
    in_end: bool,
    /// Its stdout and stderr (pipes' read ends; the pty master as stdout).
    outs: [Option<OwnedFd>; 2],
    /// Output bytes the host can still take.
    credit: usize,
    exit: Option<i32>,
    /// The host client went away: output is dropped.
    closed: bool,
    size: Option<(u16, u16)>,
}

impl Default for Stream {
    fn default() -> Stream {
        Stream {
            pid: 0,
            tty: None,
            input: None,
            inq: Vec::new(),
            in_end: false,
            outs: [None, None],
            credit: WINDOW,
            exit: None,
            closed: false,
            size: None,
        }
    }
}

impl Stream {
    /// The process's stdio through a pty: the master is its input and its only output.
    fn attach_master(&mut self, m: OwnedFd) -> R<()> {
        set_nonblocking(m.as_raw_fd());
        self.tty = Some(m.as_raw_fd());
        self.input = Some(dup(m.as_raw_fd())?);
        self.outs = [Some(m), None];
        Ok(())
    }
}

/// A process's stdio through pipes: stdin (when the host sends any), stdout and stderr. The
/// child's ends are its stdin, stdout and stderr during the spawn (`child_fds`); `into_stream`
/// then closes them, so only the process holds them and its exit (or theirs) ends the output.
struct Piped {
    null: File,
    stdin: Option<(OwnedFd, OwnedFd)>,
    out: (OwnedFd, OwnedFd),
    err: (OwnedFd, OwnedFd),
}

impl Piped {
    fn new(stdin: bool) -> R<Piped> {
        Ok(Piped {
            null: null()?,
            stdin: if stdin { Some(pipe()?) } else { None },
            out: pipe()?,
            err: pipe()?,
        })
    }

    /// The child's stdin, stdout and stderr (stdin: /dev/null without input).
    fn child_fds(&self) -> [RawFd; 3] {
        let stdin = self
            .stdin
            .as_ref()
            .map_or(self.null.as_raw_fd(), |(r, _)| r.as_raw_fd());
        [stdin, self.out.1.as_raw_fd(), self.err.1.as_raw_fd()]
    }

    /// The agent's ends, non-blocking, as a stream of `pid`; the child's ends closed.
    fn into_stream(self, pid: i32) -> Stream {
        let input = self.stdin.map(|(_, w)| w);
        let outs = [Some(self.out.0), Some(self.err.0)];
        for fd in input.iter().chain(outs.iter().flatten()) {
            set_nonblocking(fd.as_raw_fd());
        }
        Stream {
            pid,
            input,
            outs,
            ..Stream::default()
        }
    }
}

pub struct Agent {
    ctl: OwnedFd,
    rx: FrameBuf,
    tx: Vec<u8>,
    rt: Runtime,
    /// The container's process in the guest.
    pid: i32,
    streams: BTreeMap<u32, Stream>,
    seq: u64,
    /// A pod's later containers (vm/pod.rs): the stream each was created on, and its ID. Such a
    /// container lives until its stream closes (its host process is gone): then it is deleted.
    members: BTreeMap<u32, String>,
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl flag changes on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> R<(OwnedFd, OwnedFd)> {
    let mut p = [0; 2];
    // SAFETY: pipe2 fills two descriptors, owned below.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", errno()));
    }
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

fn dup(fd: RawFd) -> R<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor, owned below.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if d < 0 {
        return Err(format!("dup: {}", errno()));
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(d) })
}

/// Run `f` with `fds` as this process's stdin, stdout and stderr (children inherit them), then
/// put the agent's own back.
fn with_stdio<T>(fds: [RawFd; 3], f: impl FnOnce() -> T) -> R<T> {
    let saved = [dup(0)?, dup(1)?, dup(2)?];
    // SAFETY: dup2 onto the standard descriptors, then back.
    unsafe {
        for (i, fd) in fds.iter().enumerate() {
            libc::dup2(*fd, i as RawFd);
        }
    }
    let r = f();
    // SAFETY: as above.
    unsafe {
        for (i, fd) in saved.iter().enumerate() {
            libc::dup2(fd.as_raw_fd(), i as RawFd);
        }
    }
    Ok(r)
}

fn null() -> R<File> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))
}

/// Receive the pty master the container's init sends to the console socket during create.
fn accept_master(l: &std::os::unix::net::UnixListener) -> R<OwnedFd> {
    let mut p = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, 10_000) } <= 0 {
        return Err("the container's terminal did not arrive".into());
    }
    let (s, _) = l.accept().map_err(|e| format!("console socket: {e}"))?;
    libberth::linux::console::recv_fd(s.as_raw_fd()).map_err(|e| e.to_string())
}

impl Agent {
    pub fn new(ctl: OwnedFd) -> Agent {
        Agent {
            ctl,
            rx: FrameBuf::default(),
            tx: Vec::new(),
            rt: Runtime::new(Path::new("/run/berth"), false),
            pid: 0,
            streams: BTreeMap::new(),
            seq: 0,
            members: BTreeMap::new(),
        }
    }

    fn send(&mut self, stream: u32, k: u8, data: impl Into<Vec<u8>>) {
        Frame::new(stream, k, data).encode_into(&mut self.tx);
    }

    /// Write what the port takes now.
    fn flush(&mut self) {
        while !self.tx.is_empty() {
            // SAFETY: writing from a valid buffer.
            let n = unsafe { libc::write(self.ctl.as_raw_fd(), self.tx.as_ptr().cast(), self.tx.len()) };
            if n <= 0 {
                return;
            }
            self.tx.drain(..n as usize);
        }
    }

    /// The pid of a container of the guest's runtime (0 when it has none).
    fn pid_of(&self, id: &str) -> R<i32> {
        let state = self.rt.state(id).map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&state).map_err(|e| e.to_string())?;
        Ok(v["pid"].as_i64().unwrap_or(0) as i32)
    }

    fn create(&mut self, msg: CreateMsg) -> R<i32> {
        if let Some(net) = &msg.network {
            // The container shares the guest's network namespace: configured as the host's.
            libberth::vm::net::configure_guest(net)?;
        }
        match &msg.root_device {
            Some(dev) => mount_device(dev, proto::GUEST_ROOTFS)?,
            None => mount(proto::FS_TAG, proto::GUEST_ROOTFS, "virtiofs", 0, "")?,
        }
        if msg.binds {
            // The host bind mounts' sources; the config names them here (vm/binds.rs).
            mount(proto::BINDS_TAG, proto::GUEST_BINDS, "virtiofs", 0, "")?;
        }
        if msg.pod {
            // The roots and bind mounts of the pod's later containers (vm/pod.rs).
            mount(proto::POD_TAG, proto::GUEST_POD, "virtiofs", 0, "")?;
        }
        std::fs::create_dir_all(proto::GUEST_BUNDLE).map_err(|e| e.to_string())?;
        let cfg = Path::new(proto::GUEST_BUNDLE).join("config.json");
        std::fs::write(&cfg, msg.config.to_string()).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let terminal = msg.config["process"]["terminal"] == true;
        // The container's stdio: stdin relayed on stream 0 (or /dev/null), the stdio port
        // (stdout), the stderr port; or a terminal relayed on stream 0.
        let io = open_port(proto::PORT_STDIO, libc::O_RDWR)?;
        let err = open_port(proto::PORT_STDERR, libc::O_WRONLY)?;
        let null = null()?;
        let (stdin_r, stdin_w) = if msg.stdin && !terminal {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let console = Path::new("/run/console.sock");
        let listener = if terminal {
            let _ = std::fs::remove_file(console);
            Some(std::os::unix::net::UnixListener::bind(console).map_err(|e| format!("console socket: {e}"))?)
        } else {
            None
        };
        let opts = CreateOpts {
            bundle: Path::new(proto::GUEST_BUNDLE),
            pid_file: None,
            console_socket: listener.as_ref().map(|_| console),
            no_pivot: false,
            no_new_keyring: false,
            preserve_fds: 0,
        };
        let stdin = stdin_r.as_ref().map_or(null.as_raw_fd(), |r| r.as_raw_fd());
        with_stdio([stdin, io.as_raw_fd(), err.as_raw_fd()], || {
            self.rt.create(proto::GUEST_ID, &opts)
        })?
        .map_err(|e| e.to_string())?;
        let st = self.streams.entry(0).or_default();
        if let Some(w) = stdin_w {
            set_nonblocking(w.as_raw_fd());
            st.input = Some(w);
        }
        if let Some(l) = &listener {
            let m = accept_master(l)?;
            if let Some((r, c)) = st.size {
                let _ = libberth::linux::console::set_size(m.as_raw_fd(), r, c);
            }
            st.attach_master(m)?;
            let _ = std::fs::remove_file(console);
        }
        self.pid_of(proto::GUEST_ID)
    }

    /// A pod's later container (vm/pod.rs), on its own stream: its root and bind mounts are in
    /// the pod share (the host adapted its config), its stdio goes over the stream as an exec'd
    /// process's does, and the guest's network (and VM) are the first container's.
    fn create_member(&mut self, stream: u32, id: &str, mut msg: CreateMsg) -> R<i32> {
        libberth::state::validate_id(id).map_err(|e| e.to_string())?;
        if id == proto::GUEST_ID || self.members.values().any(|m| m == id) || self.streams.contains_key(&stream) {
            return Err(format!("container {id:?} exists already"));
        }
        let terminal = msg.config["process"]["terminal"] == true;
        let root = msg.config["root"]["path"].as_str().unwrap_or("");
        if !root.starts_with(&format!("{}/{id}/", proto::GUEST_POD)) {
            return Err(format!("root.path {root:?} is not in the pod share"));
        }
        // A namespace of another container of the VM, named by the host: that container's, here.
        if let Some(ns) = msg
            .config
            .pointer_mut("/linux/namespaces")
            .and_then(|v| v.as_array_mut())
        {
            for n in ns.iter_mut() {
                let Some(other) = n["path"].as_str().and_then(|p| p.strip_prefix(proto::NS_OF_CONTAINER)) else {
                    continue;
                };
                let file = match n["type"].as_str() {
                    Some("pid") => "pid",
                    Some("ipc") => "ipc",
                    Some("uts") => "uts",
                    t => return Err(format!("linux.namespaces: {t:?} of another container")),
                };
                let other = self.container(Some(other))?;
                let pid = Some(self.pid_of(&other)?)
                    .filter(|&p| p > 0)
                    .ok_or(format!("container {other:?} is not running"))?;
                n["path"] = format!("/proc/{pid}/ns/{file}").into();
            }
        }
        let bundle = Path::new("/run/bundles").join(id);
        std::fs::create_dir_all(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
        let cfg = bundle.join("config.json");
        std::fs::write(&cfg, msg.config.to_string()).map_err(|e| format!("{}: {e}", cfg.display()))?;
        if terminal {
            let null = null()?;
            // Its terminal, as the first container's: the master from a console socket of its
            // own, relayed on its stream (input and output; resizes come as frames).
            let console = Path::new("/run").join(format!("console-{id}.sock"));
            let _ = std::fs::remove_file(&console);
            let listener =
                std::os::unix::net::UnixListener::bind(&console).map_err(|e| format!("console socket: {e}"))?;
            let opts = CreateOpts {
                bundle: &bundle,
                pid_file: None,
                console_socket: Some(&console),
                no_pivot: false,
                no_new_keyring: false,
                preserve_fds: 0,
            };
            let r = with_stdio([null.as_raw_fd(); 3], || self.rt.create(id, &opts))?;
            let created = r.map_err(|e| e.to_string());
            let m = created.clone().and_then(|_| accept_master(&listener));
            let _ = std::fs::remove_file(&console);
            if created.is_ok() && m.is_err() {
                let _ = self.rt.delete(id, true);
            }
            let m = m?;
            let mut st = Stream {
                pid: self.pid_of(id)?,
                ..Stream::default()
            };
            st.attach_master(m)?;
            let pid = st.pid;
            self.streams.insert(stream, st);
            self.members.insert(stream, id.to_string());
            return Ok(pid);
        }
        let piped = Piped::new(msg.stdin)?;
        let opts = CreateOpts {
            bundle: &bundle,
            pid_file: None,
            console_socket: None,
            no_pivot: false,
            no_new_keyring: false,
            preserve_fds: 0,
        };
        let r = with_stdio(piped.child_fds(), || self.rt.create(id, &opts))?;
        // (the child's ends closed before anything can fail)
        let st = piped.into_stream(0);
        r.map_err(|e| e.to_string())?;
        let pid = self.pid_of(id)?;
        self.streams.insert(stream, Stream { pid, ..st });
        self.members.insert(stream, id.to_string());
        Ok(pid)
    }

    /// The container a request names: the VM's first without an ID, else a pod member.
    fn container(&self, id: Option<&str>) -> R<String> {
        match id.filter(|s| !s.is_empty()) {
            None | Some(proto::GUEST_ID) => Ok(proto::GUEST_ID.to_string()),
            Some(id) if self.members.values().any(|m| m == id) => Ok(id.to_string()),
            Some(id) => Err(format!("no container {id:?} in this VM")),
        }
    }

    /// A pod member whose host process is gone: end it and remove it from the guest.
    fn drop_member(&mut self, stream: u32) {
        if let Some(id) = self.members.remove(&stream) {
            let _ = self.rt.delete(&id, true);
            let _ = std::fs::remove_dir_all(Path::new("/run/bundles").join(&id));
        }
    }

    fn exec(&mut self, stream: u32, arg: &str) -> R<i32> {
        let msg: ExecMsg = serde_json::from_str(arg).map_err(|e| format!("bad exec message: {e}"))?;
        let target = self.container(msg.id.as_deref())?;
        let tty = msg.process["terminal"] == true;
        self.seq += 1;
        let _ = std::fs::create_dir_all("/run/exec");
        let path = Path::new("/run/exec").join(format!("{}.json", self.seq));
        std::fs::write(&path, msg.process.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
        let opts = ExecOpts {
            process: Some(path.clone()),
            detach: true,
            ..Default::default()
        };
        let (spawned, mut st) = if tty {
            (self.rt.exec_spawn(&target, &opts), Stream::default())
        } else {
            let piped = Piped::new(msg.stdin)?;
            let r = with_stdio(piped.child_fds(), || self.rt.exec_spawn(&target, &opts))?;
            (r, piped.into_stream(0))
        };
        let _ = std::fs::remove_file(&path);
        let spawned = spawned.map_err(|e| e.to_string())?;
        st.pid = spawned.pid;
        if let Some(m) = spawned.master {
            st.attach_master(m)?;
        }
        self.streams.insert(stream, st);
        Ok(spawned.pid)
    }

    fn request(&mut self, stream: u32, line: &str) {
        let (verb, arg) = proto::split(line);
        let r: R<String> = match verb {
            "create" => match serde_json::from_str::<CreateMsg>(arg) {
                Err(e) => Err(format!("bad create message: {e}")),
                Ok(msg) => match msg.id.clone() {
                    Some(_) if self.pid == 0 => Err("a pod member before the VM's first container".into()),
                    Some(id) => self.create_member(stream, &id, msg).map(|pid| format!("ready {pid}")),
                    None if self.pid == 0 => self.create(msg).map(|pid| {
                        self.pid = pid;
                        if let Some(st) = self.streams.get_mut(&0) {
                            st.pid = pid;
                        }
                        format!("ready {pid}")
                    }),
                    None => Err("the container exists already".into()),
                },
            },
            "start" => self
                .container(Some(arg.trim()))
                .and_then(|id| self.rt.start(&id).map(|_| "ok".into()).map_err(|e| e.to_string())),
            "kill" => {
                let mut it = arg.split(' ');
                let sig = it.next().and_then(|s| s.parse().ok()).unwrap_or(libc::SIGTERM);
                let all = it.next() == Some("1");
                self.container(it.next()).and_then(|id| {
                    self.rt
                        .kill(&id, sig, all)
                        .map(|_| "ok".into())
                        .map_err(|e| e.to_string())
                })
            }
            "exec" => self.exec(stream, arg).map(|pid| format!("ok {pid}")),
            "update" => {
                let (id, json) = proto::split(arg);
                self.container(Some(id)).and_then(|id| {
                    let r: oci_spec::runtime::LinuxResources =
                        serde_json::from_str(json).map_err(|e| format!("bad update message: {e}"))?;
                    self.rt.update(&id, r).map(|_| "ok".into()).map_err(|e| e.to_string())
                })
            }
            // A pod's later container (vm/pod.rs): its processes frozen or thawed in the guest,
            // its statistics from its cgroup in the guest (its host cgroup holds only its helper).
            "pause" | "resume" => self.container(Some(arg.trim())).and_then(|id| {
                let r = if verb == "pause" {
                    self.rt.pause(&id)
                } else {
                    self.rt.resume(&id)
                };
                r.map(|_| "ok".into()).map_err(|e| e.to_string())
            }),
            "stats" => self.container(Some(arg.trim())).and_then(|id| {
                let mut doc = String::new();
                self.rt
                    .events(&id, true, Duration::ZERO, &mut |l| doc = l.to_string())
                    .map_err(|e| e.to_string())?;
                let v: serde_json::Value = serde_json::from_str(&doc).map_err(|e| e.to_string())?;
                Ok(format!("ok {}", v["data"]))
            }),
            v => Err(format!("unknown request {v:?}")),
        };
        let reply = match r {
            Ok(s) => s,
            Err(e) => format!("error {}", e.replace('\n', " ")),
        };
        self.send(stream, kind::REPLY, reply);
    }

    fn frame(&mut self, f: Frame) {
        if f.kind == kind::REQ {
            return self.request(f.stream, &f.text());
        }
        if f.kind == kind::CLOSE && self.members.contains_key(&f.stream) {
            self.streams.remove(&f.stream);
            return self.drop_member(f.stream);
        }
        // Stream 0 exists before create: stdin and the window size may come first.
        if f.stream == 0 {
            self.streams.entry(0).or_default();
        }
        let main = self.pid;
        let Some(st) = self.streams.get_mut(&f.stream) else {
            return;
        };
        match f.kind {
            kind::STDIN if !st.closed => st.inq.extend_from_slice(&f.data),
            kind::STDIN_END => st.in_end = true,
            kind::ACK => st.credit += f.number().unwrap_or(0).max(0) as usize,
            kind::SIGNAL => {
                let sig = f.number().unwrap_or(0) as i32;
                if f.stream == 0 && main > 0 {
                    let _ = self.rt.kill(proto::GUEST_ID, sig, false);
                } else if st.pid > 0 && st.exit.is_none() {
                    // SAFETY: signalling our own child, not yet reaped.
                    unsafe { libc::kill(st.pid, sig) };
                }
            }
            kind::RESIZE => {
                let mut w = f.text();
                w.push(' ');
                let mut it = w.split(' ').filter_map(|x| x.parse::<u16>().ok());
                if let (Some(r), Some(c)) = (it.next(), it.next()) {
                    st.size = Some((r, c));
                    if let Some(t) = st.tty {
                        let _ = libberth::linux::console::set_size(t, r, c);
                    }
                }
            }
            kind::CLOSE => {
                st.closed = true;
                st.inq.clear();
                st.input = None;
            }
            _ => {}
        }
    }

    /// Reap every exited child, noting the status of the streams' processes.
    fn reap(&mut self) {
        loop {
            let mut st = 0;
            // SAFETY: waitpid on any child, non-blocking.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                return;
            }
            if let Some(s) = self.streams.values_mut().find(|s| s.pid == r && s.exit.is_none()) {
                s.exit = Some(libberth::signal::exit_code(st));
            }
        }
    }

    /// Read one chunk of a stream's output into a frame; false at its end.
    fn pump(&mut self, id: u32, which: usize) -> bool {
        let st = self.streams.get_mut(&id).expect("stream");
        let Some(fd) = st.outs[which].as_ref().map(|f| f.as_raw_fd()) else {
            return false;
        };
        let room = if st.closed { 64 * 1024 } else { st.credit.min(64 * 1024) };
        if room == 0 {
            return true;
        }
        let mut buf = vec![0u8; room];
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), room) };
        if n > 0 {
            buf.truncate(n as usize);
            if !st.closed {
                st.credit -= n as usize;
                let k = if which == 0 { kind::STDOUT } else { kind::STDERR };
                self.send(id, k, buf);
            }
            return true;
        }
        let again = n < 0 && matches!(errno().raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR));
        // Once the process is gone, nothing more is waited for (a child of its may hold the pipe).
        if again && st.exit.is_none() {
            return true;
        }
        st.outs[which] = None;
        false
    }

    /// Serve until the container's process ends; returns its status.
    pub fn serve(mut self, exit_port: OwnedFd) -> R<i32> {
        // SAFETY: signal mask and signalfd setup on local structures.
        let sfd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
        };
        if sfd < 0 {
            return Err(format!("signalfd: {}", errno()));
        }
        let mut host_gone = false;
        let mut main_done: Option<(i32, Instant)> = None;
        let mut bye = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // A pod's VM stays while a later container of it is there (its stream open).
            if let Some((code, deadline)) = main_done.filter(|_| self.members.is_empty()) {
                if (bye && self.tx.is_empty()) || Instant::now() > deadline {
                    let mut f = File::from(exit_port);
                    let _ = writeln!(f, "exit {code}");
                    let _ = f.flush();
                    return Ok(code);
                }
            }
            let mut fds = vec![
                libc::pollfd {
                    fd: sfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if host_gone { -1 } else { self.ctl.as_raw_fd() },
                    events: libc::POLLIN | if self.tx.is_empty() { 0 } else { libc::POLLOUT },
                    revents: 0,
                },
            ];
            // (stream, 0/1 output or 2 input)
            let mut who = Vec::new();
            for (id, st) in &self.streams {
                for (i, o) in st.outs.iter().enumerate() {
                    if let Some(o) = o.as_ref().filter(|_| st.closed || st.credit > 0) {
                        fds.push(libc::pollfd {
                            fd: o.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        });
                        who.push((*id, i));
                    }
                }
                if let Some(i) = st.input.as_ref().filter(|_| !st.inq.is_empty()) {
                    fds.push(libc::pollfd {
                        fd: i.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    });
                    who.push((*id, 2));
                }
            }
            // While no host is connected the port reports a hang-up: look again every 20 ms; a
            // process that ended is finished at once; after the container's end, wait for BYE.
            let finishing = self.streams.values().any(|s| s.exit.is_some());
            let timeout = if host_gone || main_done.is_some() {
                20
            } else if finishing {
                5
            } else {
                -1
            };
            // SAFETY: fds is a valid array of pollfd.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            host_gone = false;
            if fds[0].revents != 0 {
                let mut info = [0u8; 128];
                // SAFETY: draining the signalfd into a buffer of its record size.
                while unsafe { libc::read(sfd, info.as_mut_ptr().cast(), info.len()) } > 0 {}
                self.reap();
            }
            if fds[1].revents & libc::POLLOUT != 0 {
                self.flush();
            }
            if fds[1].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
                // SAFETY: reading into a valid buffer.
                let r = unsafe { libc::read(self.ctl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if r > 0 {
                    self.rx.push(&buf[..r as usize]);
                    loop {
                        match self.rx.next_frame() {
                            Ok(Some(f)) => {
                                if f.kind == kind::BYE && f.stream == 0 {
                                    bye = true;
                                } else {
                                    self.frame(f);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                crate::log(&format!("berth-guest: {e}"));
                                self.rx = FrameBuf::default();
                                break;
                            }
                        }
                    }
                } else if r == 0 || fds[1].revents & libc::POLLHUP != 0 {
                    host_gone = true;
                }
            }
            for (k, &(id, which)) in who.iter().enumerate() {
                if fds[2 + k].revents == 0 {
                    continue;
                }
                if which < 2 {
                    self.pump(id, which);
                } else {
                    let st = self.streams.get_mut(&id).expect("stream");
                    let fd = st.input.as_ref().expect("input").as_raw_fd();
                    // SAFETY: writing from a valid buffer.
                    let n = unsafe { libc::write(fd, st.inq.as_ptr().cast(), st.inq.len()) };
                    if n > 0 {
                        st.inq.drain(..n as usize);
                        self.send(id, kind::ACK, n.to_string());
                    } else if n < 0 && errno().raw_os_error() != Some(libc::EAGAIN) {
                        // The process closed its stdin: drop what it will never read.
                        let n = st.inq.len();
                        st.inq.clear();
                        st.input = None;
                        self.send(id, kind::ACK, n.to_string());
                    }
                }
            }
            // Stdin ended and delivered: close it (not a terminal: that would hang it up).
            for st in self.streams.values_mut() {
                if st.in_end && st.inq.is_empty() && st.tty.is_none() {
                    st.input = None;
                }
            }
            // Processes that ended: the rest of their output, then their status.
            let ended: Vec<u32> = self
                .streams
                .iter()
                .filter(|(_, s)| s.exit.is_some())
                .map(|(id, _)| *id)
                .collect();
            for id in ended {
                while self.pump(id, 0) && self.streams[&id].credit > 0 {}
                while self.pump(id, 1) && self.streams[&id].credit > 0 {}
                let st = &self.streams[&id];
                if st.outs.iter().all(Option::is_none) {
                    let code = st.exit.unwrap_or(255);
                    let closed = st.closed;
                    self.streams.remove(&id);
                    if !closed {
                        self.send(id, kind::EXIT, code.to_string());
                    }
                    if id == 0 {
                        main_done = Some((code, Instant::now() + Duration::from_secs(2)));
                    }
                }
            }
            self.flush();
        }
    }
}
