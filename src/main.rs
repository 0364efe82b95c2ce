//! `berth`: the command line, runc's. It parses flags, calls libberth, prints results, and turns
//! errors into one line on stderr (and the --log file) with exit status 1. No container logic here.

#![no_main]

use clap::{Args, Parser, Subcommand, ValueEnum};
use libberth::container::{CreateOpts, Runtime};
use std::io::Write;
use std::path::{Path, PathBuf};

mod generate;

/// The runtime-spec version Berth implements.
const SPEC_VERSION: &str = "1.2.1";

/// `-v`/`--version`, in runc's layout (`runc version X`, `commit:`, `spec:`, `libseccomp:`; runc's
/// `go:` line has no counterpart), which scripts and engines parse line by line. The commit is
/// `BERTH_COMMIT` at build time when the build sets it.
fn version_text() -> String {
    format!(
        "berth version {}\ncommit: {}\nspec: {SPEC_VERSION}\nlibseccomp: {}",
        env!("CARGO_PKG_VERSION"),
        option_env!("BERTH_COMMIT").unwrap_or("unknown"),
        libberth::linux::seccomp::library_version(),
    )
}

#[derive(Parser)]
#[command(
    name = "berth",
    disable_version_flag = true,
    about = "Berth: an OCI container runtime (runc-compatible command line)"
)]
struct Cli {
    /// Print the version (runc's -v/--version)
    #[arg(short = 'v', long = "version")]
    version: bool,
    /// Directory for container state
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Write log lines to this file instead of stderr
    #[arg(long, global = true, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Log format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log debug messages
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd for cgroups (needs a running systemd)
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility (rootless mode is detected)
    #[arg(long, value_name = "true|false|auto", num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct CreateArgs {
    /// Path to the bundle directory (holding config.json)
    #[arg(long, short = 'b', default_value = ".")]
    bundle: PathBuf,
    /// Write the container's init pid to this file
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to (process.terminal)
    #[arg(long, value_name = "PATH")]
    console_socket: Option<PathBuf>,
    /// Use a move and chroot instead of pivot_root
    #[arg(long)]
    no_pivot: bool,
    /// Do not create a new session keyring
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass N extra descriptors (3 .. 3+N-1) to the container
    #[arg(long, default_value_t = 0, value_name = "N")]
    preserve_fds: i32,
    /// Container ID
    id: String,
}

#[derive(Args)]
struct ExecArgs {
    /// An OCI process JSON file to run (instead of ARGS and the process flags)
    #[arg(long, short = 'p', value_name = "FILE")]
    process: Option<PathBuf>,
    /// Allocate a terminal
    #[arg(long, short = 't')]
    tty: bool,
    /// Unix socket to send the pty master to
    #[arg(long, value_name = "PATH")]
    console_socket: Option<PathBuf>,
    /// Return once the process has started
    #[arg(long, short = 'd')]
    detach: bool,
    /// Write the process's pid to this file
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Working directory in the container
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Set an environment variable (repeatable)
    #[arg(long, short = 'e', value_name = "K=V")]
    env: Vec<String>,
    /// UID[:GID] to run as
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    user: Option<String>,
    /// Additional group (repeatable)
    #[arg(long, short = 'g', value_name = "GID")]
    additional_gids: Vec<u32>,
    /// Add a capability (repeatable)
    #[arg(long, short = 'c', value_name = "CAP")]
    cap: Vec<String>,
    /// Set no_new_privs for the process
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    no_new_privs: Option<bool>,
    /// AppArmor profile for the process
    #[arg(long, value_name = "PROFILE")]
    apparmor: Option<String>,
    /// SELinux label for the process
    #[arg(long, value_name = "LABEL")]
    process_label: Option<String>,
    /// Pass N extra descriptors (3 .. 3+N-1) to the process
    #[arg(long, default_value_t = 0, value_name = "N")]
    preserve_fds: i32,
    /// Run in a sub-cgroup of the container: [CONTROLLERS:]PATH (repeatable)
    #[arg(long, value_name = "PATH")]
    cgroup: Vec<String>,
    /// Exec even if the container is paused
    #[arg(long)]
    ignore_paused: bool,
    /// Container ID
    id: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container (its process waits for `start`)
    Create(CreateArgs),
    /// Start a created container
    Start { id: String },
    /// Create and start a container, wait for it and delete it
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container has started
        #[arg(long, short = 'd')]
        detach: bool,
        /// Keep the container after it exits
        #[arg(long)]
        keep: bool,
    },
    /// Run a new process inside a container
    Exec(Box<ExecArgs>),
    /// Print the state of a container as JSON
    State { id: String },
    /// Send a signal to a container (default SIGTERM)
    Kill {
        /// Signal every process in the container
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container and everything Berth made for it
    Delete {
        /// Kill a running container first
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// List containers
    List {
        #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Print only IDs
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Write a default config.json
    Spec {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        /// A config for an unprivileged user (user namespace, no cgroup writes)
        #[arg(long)]
        rootless: bool,
    },
    /// Print what this runtime supports (runtime-spec features document)
    Features,
    /// Change a running container's resource limits
    Update(Box<UpdateArgs>),
    /// Freeze every process of a container
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// List a container's processes
    Ps {
        #[arg(long, short = 'f', value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        id: String,
        /// Options for ps(1) (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Checkpoint a running container with CRIU
    Checkpoint(Box<CheckpointArgs>),
    /// Restore a container from a CRIU checkpoint
    Restore(Box<RestoreArgs>),
    /// Print resource statistics and OOM events of a container as JSON lines
    Events {
        /// Print one stats document and exit
        #[arg(long)]
        stats: bool,
        /// Time between stats documents
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Write the manual pages or a shell completion (scripts/install.sh uses it)
    #[command(hide = true)]
    Generate {
        what: generate::Generated,
        /// Directory for the manual pages
        dir: Option<PathBuf>,
    },
}

/// The CRIU options `checkpoint` and `restore` share (runc's flags).
#[derive(Args)]
struct CriuArgs {
    /// Path for CRIU's image files (default: ./checkpoint)
    #[arg(long, value_name = "DIR")]
    image_path: Option<PathBuf>,
    /// Path for CRIU's work files and logs (default: the image path)
    #[arg(long, value_name = "DIR")]
    work_path: Option<PathBuf>,
    /// Allow open TCP connections
    #[arg(long)]
    tcp_established: bool,
    /// Allow external unix sockets
    #[arg(long)]
    ext_unix_sk: bool,
    /// Allow shell jobs
    #[arg(long)]
    shell_job: bool,
    /// Handle file locks
    #[arg(long)]
    file_locks: bool,
    /// cgroups mode: soft|full|strict|ignore (default: soft)
    #[arg(long, value_name = "MODE", default_value = "")]
    manage_cgroups_mode: String,
    /// Create a namespace, but do not restore its properties (network)
    #[arg(long, value_name = "NS")]
    empty_ns: Vec<String>,
    /// Enable auto deduplication of memory images
    #[arg(long)]
    auto_dedup: bool,
    /// Use userfaultfd to restore memory pages lazily
    #[arg(long)]
    lazy_pages: bool,
}

#[derive(Args)]
struct CheckpointArgs {
    #[command(flatten)]
    criu: CriuArgs,
    /// Path of the previous (pre-dump) images, relative to --image-path
    #[arg(long, value_name = "DIR")]
    parent_path: Option<PathBuf>,
    /// Leave the container running after the checkpoint
    #[arg(long)]
    leave_running: bool,
    /// Skip in-flight TCP connections
    #[arg(long)]
    tcp_skip_in_flight: bool,
    /// Link unlinked files back when possible
    #[arg(long)]
    link_remap: bool,
    /// Dump the memory only and leave the container running (for a later dump with --parent-path)
    #[arg(long)]
    pre_dump: bool,
    /// CRIU writes \0 to this descriptor once the lazy-pages server is ready
    #[arg(long, value_name = "FD", default_value_t = -1, allow_negative_numbers = true)]
    status_fd: i32,
    /// ADDRESS:PORT of the page server
    #[arg(long, value_name = "ADDRESS:PORT")]
    page_server: Option<String>,
    /// Container ID
    id: String,
}

#[derive(Args)]
struct RestoreArgs {
    #[command(flatten)]
    criu: CriuArgs,
    /// Path to the bundle directory (holding config.json)
    #[arg(long, short = 'b', default_value = ".")]
    bundle: PathBuf,
    /// Return once the container is restored
    #[arg(long, short = 'd')]
    detach: bool,
    /// Write the restored init's pid to this file
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Unix socket to send the restored terminal's pty master to
    #[arg(long, value_name = "PATH")]
    console_socket: Option<PathBuf>,
    /// Do not become a subreaper for the restored processes
    #[arg(long)]
    no_subreaper: bool,
    /// Accepted for runc compatibility (CRIU restores the mount namespace itself)
    #[arg(long)]
    no_pivot: bool,
    /// LSM profile to restore with (TYPE:NAME)
    #[arg(long, value_name = "TYPE:NAME")]
    lsm_profile: Option<String>,
    /// LSM mount context to restore with
    #[arg(long, value_name = "CONTEXT")]
    lsm_mount_context: Option<String>,
    /// Container ID
    id: String,
}

/// runc's flags -> CRIU options, validated.
fn criu_opts(a: &CriuArgs, parent: Option<&Path>) -> libberth::Result<libberth::criu::CriuOpts> {
    let (image_path, parent_path) = libberth::criu::prepare_image_paths(a.image_path.as_deref(), parent)?;
    Ok(libberth::criu::CriuOpts {
        image_path,
        work_path: a.work_path.clone().filter(|p| !p.as_os_str().is_empty()),
        parent_path,
        tcp_established: a.tcp_established,
        ext_unix_sk: a.ext_unix_sk,
        shell_job: a.shell_job,
        file_locks: a.file_locks,
        auto_dedup: a.auto_dedup,
        lazy_pages: a.lazy_pages,
        manage_cgroups_mode: libberth::criu::CgroupsMode::parse(&a.manage_cgroups_mode)?,
        empty_ns: libberth::criu::empty_ns_mask(&a.empty_ns)?,
        ..Default::default()
    })
}

#[derive(Args)]
struct UpdateArgs {
    /// LinuxResources JSON from a file, or - for stdin
    #[arg(long, short = 'r', value_name = "FILE|-")]
    resources: Option<PathBuf>,
    #[arg(long, allow_hyphen_values = true)]
    memory: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// CPU shares (runc's flag is --cpu-share; --cpu-shares is accepted too)
    #[arg(long = "cpu-share", visible_alias = "cpu-shares")]
    cpu_shares: Option<String>,
    #[arg(long)]
    cpu_period: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    cpu_quota: Option<String>,
    #[arg(long)]
    cpu_rt_period: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    cpu_rt_runtime: Option<String>,
    #[arg(long)]
    cpuset_cpus: Option<String>,
    #[arg(long)]
    cpuset_mems: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<String>,
    #[arg(long)]
    blkio_weight: Option<String>,
    id: String,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum ListFormat {
    Table,
    Json,
}

fn default_root() -> PathBuf {
    // $XDG_RUNTIME_DIR/berth for a rootless caller, as runc: not root, or root only in a user
    // namespace (rootless podman runs the runtime so) unless $USER says root.
    // SAFETY: geteuid cannot fail.
    let rootless = unsafe { libc::geteuid() } != 0
        || (libberth::cgroups::systemd::rootless() && std::env::var("USER").map_or(true, |u| u != "root"));
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if rootless && !dir.is_empty() => Path::new(&dir).join("berth"),
        _ => libberth::container::default_root(),
    }
}

/// The largest `--preserve-fds` (the kernel's default limit of open descriptors, nr_open).
const MAX_PRESERVE_FDS: i32 = 1 << 20;

/// The C entry point: Berth skips the Rust runtime's start-up (it reads /proc/self/maps to find the
/// main thread's stack guard and installs stack-overflow handlers), work repeated on every
/// create and exec otherwise. Arguments and environment still come through `std::env`.
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // The Rust runtime's start-up (skipped) would ignore SIGPIPE: a hook that exits without
    // reading its state, a closed console or log pipe must give EPIPE, never kill Berth
    // mid-operation. Blocked signals are still queued, so `run` keeps forwarding SIGPIPE; children
    // get the default back (std's Command, init's and exec's reset_signals).
    // SAFETY: setting a signal disposition at start-up, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = berth_main();
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code as libc::c_int
}

/// Print an error as runc's command line does for tools that read stderr: the line carries the
/// word "error" (runc writes `level=error msg=...`).
fn print_error(msg: &str) {
    eprintln!("berth: error: {msg}");
}

fn berth_main() -> u8 {
    // Run as `berth-vm`: VM containers by default (a containerd runtime handler of their own).
    if let Some(argv0) = std::env::args_os().next() {
        libberth::vm::select_by_program_name(&argv0);
    }
    let cli = Cli::parse();
    if cli.version {
        print(&version_text());
        return 0;
    }
    let Some(cmd) = cli.cmd else {
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return 0;
    };
    if let Cmd::Generate { what, dir } = &cmd {
        return match generate::generate(*what, dir.as_deref()) {
            Ok(()) => 0,
            Err(e) => {
                print_error(&e);
                1
            }
        };
    }
    let preserve_fds = match &cmd {
        Cmd::Create(a) | Cmd::Run { create: a, .. } => a.preserve_fds,
        Cmd::Exec(a) => a.preserve_fds,
        _ => 0,
    };
    if !(0..=MAX_PRESERVE_FDS).contains(&preserve_fds) {
        print_error(&format!(
            "--preserve-fds {preserve_fds}: must be between 0 and {MAX_PRESERVE_FDS}"
        ));
        return 1;
    }
    // Before the runtime opens anything (its log file first): no descriptor of its own may land in
    // the range that is passed on to the container.
    libberth::linux::fds::claim_preserved(preserve_fds);
    let format = match cli.log_format {
        LogFormat::Text => libberth::log::Format::Text,
        LogFormat::Json => libberth::log::Format::Json,
    };
    if let Err(e) = libberth::log::init(cli.log.as_deref(), format, cli.debug) {
        print_error(&e.to_string());
        return 1;
    }
    if matches!(cmd, Cmd::Create(_) | Cmd::Run { .. } | Cmd::Exec(_)) {
        // Containers are made, and joined, from a read-only mount of this binary (CVE-2019-5736).
        libberth::linux::exeseal::reexec_sealed();
    }
    let root = cli.root.clone().unwrap_or_else(default_root);
    let rt = Runtime::new(&root, cli.systemd_cgroup);
    // runc: an exec that fails (as opposed to a process that exits non-zero) exits 255.
    let (prefix, code) = match cmd {
        Cmd::Exec(_) => ("exec failed: ", 255),
        _ => ("", 1),
    };
    match dispatch(&rt, cmd) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{prefix}{e}");
            if libberth::log::has_file() {
                libberth::log::log(libberth::log::Level::Error, &msg);
            }
            print_error(&msg);
            code
        }
    }
}

fn opts(a: &CreateArgs) -> CreateOpts<'_> {
    CreateOpts {
        bundle: &a.bundle,
        pid_file: a.pid_file.as_deref(),
        console_socket: a.console_socket.as_deref(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
    }
}

fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.write_all(b"\n");
}

fn dispatch(rt: &Runtime, cmd: Cmd) -> libberth::Result<u8> {
    match cmd {
        Cmd::Create(a) => rt.create(&a.id, &opts(&a)).map(|_| 0),
        Cmd::Start { id } => rt.start(&id).map(|_| 0),
        Cmd::Run { create, detach, keep } => {
            let code = rt.run(&create.id, &opts(&create), detach, keep)?;
            Ok(code.clamp(0, 255) as u8)
        }
        Cmd::Exec(a) => {
            let a = *a;
            let id = a.id.clone();
            let o = libberth::linux::exec::ExecOpts {
                process: a.process,
                args: a.args,
                tty: a.tty,
                console_socket: a.console_socket,
                detach: a.detach,
                pid_file: a.pid_file,
                cwd: a.cwd,
                env: a.env,
                user: a.user,
                additional_gids: a.additional_gids,
                caps: a.cap,
                no_new_privs: a.no_new_privs,
                apparmor: a.apparmor,
                process_label: a.process_label,
                preserve_fds: a.preserve_fds,
                cgroup: a.cgroup,
                ignore_paused: a.ignore_paused,
            };
            let code = rt.exec(&id, &o)?;
            Ok(code.clamp(0, 255) as u8)
        }
        Cmd::State { id } => {
            print(&rt.state(&id)?);
            Ok(0)
        }
        Cmd::Kill { all, id, signal } => {
            // Signal 0 (runc accepts it): only checks that the container's init exists.
            let sig = if signal == "0" {
                0
            } else {
                libberth::signal::parse(&signal)?
            };
            rt.kill(&id, sig, all).map(|_| 0)
        }
        Cmd::Delete { force, id } => rt.delete(&id, force).map(|_| 0),
        Cmd::Checkpoint(a) => {
            let mut o = criu_opts(&a.criu, a.parent_path.as_deref())?;
            o.leave_running = a.leave_running;
            o.tcp_skip_in_flight = a.tcp_skip_in_flight;
            o.link_remap = a.link_remap;
            o.pre_dump = a.pre_dump;
            o.status_fd = (a.status_fd >= 0).then_some(a.status_fd);
            o.page_server = a
                .page_server
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(libberth::criu::parse_page_server)
                .transpose()?;
            rt.checkpoint(&a.id, &o).map(|_| 0)
        }
        Cmd::Restore(a) => {
            let mut criu = criu_opts(&a.criu, None)?;
            criu.lsm_profile = a.lsm_profile.clone().filter(|s| !s.is_empty());
            criu.lsm_mount_context = a.lsm_mount_context.clone().filter(|s| !s.is_empty());
            let o = libberth::criu::RestoreOpts {
                criu,
                bundle: &a.bundle,
                detach: a.detach,
                pid_file: a.pid_file.as_deref(),
                console_socket: a.console_socket.as_deref(),
                no_subreaper: a.no_subreaper,
                no_pivot: a.no_pivot,
            };
            let code = rt.restore(&a.id, &o)?;
            Ok(code.clamp(0, 255) as u8)
        }
        Cmd::List { format, quiet } => {
            let list = rt.list()?;
            if quiet {
                for (r, _) in &list {
                    print(&r.id);
                }
            } else if format == ListFormat::Json {
                let docs: Vec<_> = list.iter().map(|(r, s)| r.doc(*s)).collect();
                print(&serde_json::to_string(&docs).unwrap_or_else(|_| "[]".into()));
            } else {
                print(&table(&list));
            }
            Ok(0)
        }
        Cmd::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                libberth::bail!("{}: exists; remove it first", path.display());
            }
            // SAFETY: getuid/getgid cannot fail.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            let doc = libberth::default_spec::document(rootless, uid, gid);
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            std::fs::write(&path, text + "\n").map_err(|e| libberth::Error::sys(path.display(), e))?;
            Ok(0)
        }
        Cmd::Update(a) => {
            use libberth::cgroups::ops;
            let a = *a;
            let json = match a.resources.as_deref() {
                None => None,
                Some(p) if p == Path::new("-") => {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                        .map_err(|e| libberth::Error::sys("--resources: read stdin", e))?;
                    Some(buf)
                }
                Some(p) => Some(
                    std::fs::read(p).map_err(|e| libberth::Error::sys(format!("--resources {}", p.display()), e))?,
                ),
            };
            let flags = ops::UpdateFlags {
                memory: a.memory,
                memory_swap: a.memory_swap,
                memory_reservation: a.memory_reservation,
                cpu_shares: a.cpu_shares,
                cpu_period: a.cpu_period,
                cpu_quota: a.cpu_quota,
                cpu_rt_period: a.cpu_rt_period,
                cpu_rt_runtime: a.cpu_rt_runtime,
                cpuset_cpus: a.cpuset_cpus,
                cpuset_mems: a.cpuset_mems,
                pids_limit: a.pids_limit,
                blkio_weight: a.blkio_weight,
            };
            let r = ops::update_resources(json.as_deref(), &flags)?;
            rt.update(&a.id, r).map(|_| 0)
        }
        Cmd::Pause { id } => rt.pause(&id).map(|_| 0),
        Cmd::Resume { id } => rt.resume(&id).map(|_| 0),
        Cmd::Ps { format, id, ps_args } => {
            if container_status(rt, &id)? == "stopped" {
                // As runc: a stopped container has no processes; table: ps's header only.
                if format == ListFormat::Json {
                    print("null");
                } else {
                    print(&ps_header(&ps_args)?);
                }
                return Ok(0);
            }
            if format == ListFormat::Json {
                let pids = rt.pids(&id)?;
                print(&serde_json::to_string(&pids).unwrap_or_else(|_| "[]".into()));
            } else {
                print(&rt.ps_table(&id, &ps_args)?);
            }
            Ok(0)
        }
        Cmd::Events { stats, interval, id } => {
            let d = libberth::cgroups::ops::parse_duration(&interval)
                .ok_or_else(|| libberth::err!("--interval: {interval:?} is not a positive duration like 5s"))?;
            rt.events(&id, stats, d, &mut |line| print(line)).map(|_| 0)
        }
        Cmd::Features => {
            print(&serde_json::to_string_pretty(&libberth::features::document()).unwrap_or_default());
            Ok(0)
        }
        // Handled in berth_main before the runtime is set up.
        Cmd::Generate { .. } => Ok(0),
    }
}

/// The container's status as `state` reports it.
fn container_status(rt: &Runtime, id: &str) -> libberth::Result<String> {
    let doc: serde_json::Value = serde_json::from_str(&rt.state(id)?).unwrap_or_default();
    Ok(doc["status"].as_str().unwrap_or_default().to_string())
}

/// The first line of `ps ARGS` (default `-ef`), the header of an empty `ps` table.
fn ps_header(args: &[String]) -> libberth::Result<String> {
    let args: Vec<&str> = if args.is_empty() {
        vec!["-ef"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| libberth::Error::sys("ps", e))?;
    if !out.status.success() {
        libberth::bail!("ps {}: {}", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// runc's `list` table: columns padded to their widest cell.
fn table(list: &[(libberth::state::Record, libberth::state::Status)]) -> String {
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
        .map(String::from)
        .to_vec()];
    for (r, s) in list {
        let pid = if *s == libberth::state::Status::Stopped {
            0
        } else {
            r.pid
        };
        rows.push(vec![
            r.id.clone(),
            pid.to_string(),
            s.as_str().to_string(),
            r.bundle.display().to_string(),
            r.created.clone(),
            if r.owner.is_empty() {
                "root".into()
            } else {
                r.owner.clone()
            },
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 5 {
                        c.clone()
                    } else {
                        format!("{c:<w$}   ", w = widths[i])
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
