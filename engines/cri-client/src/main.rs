//! A small Kubernetes CRI client for engines/run.sh: it does to containerd's CRI plugin what the
//! kubelet does for one pod (a pause sandbox, a workload container, a second container) on the
//! runtime handler it is given, and prints one line per step (see STEPS), in that order:
//! `<step> pass|fail <detail>`. Exit status 0 when every step passed.
//!
//! Usage: cri-client --socket PATH --handler NAME --image REF --cgroup-parent /PATH|NAME.slice --log-dir DIR
//!                   [--runtime-root DIR] [--pod-gateway IP] [--pod-annotation KEY=VALUE]
//!
//! `--runtime-root` is the handler's `Root` option: the client then also checks that the pod's
//! containers really are run by that handler's binary (their state dirs are there) and that nothing
//! is left there once the pod is removed. `--pod-gateway` gives the pod a network of its own (the
//! CNI network containerd is configured with; IP is its gateway); without it the pod uses the
//! host's network.

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// The steps, as the matrix rows `cri_<step>`.
const STEPS: &[&str] = &[
    "version",
    "run_pod_sandbox",
    "image_status",
    "create_container",
    "start_container",
    "container_status",
    "network",
    "container_logs",
    "exec_sync",
    "container_stats",
    "update_resources",
    "second_container",
    "pod_shared",
    "stop_container",
    "remove_container",
    "stop_pod_sandbox",
    "remove_pod_sandbox",
];

type Res = Result<String, String>;

struct Args {
    socket: String,
    handler: String,
    image: String,
    cgroup_parent: String,
    log_dir: PathBuf,
    runtime_root: Option<PathBuf>,
    pod_gateway: Option<String>,
    /// An annotation of the pod (e.g. `run.berth.isolation=vm`, which containerd passes to the
    /// runtime when the handler's `pod_annotations` lists it).
    pod_annotation: Option<(String, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut m = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k}: missing value"))?;
        m.insert(k, v);
    }
    let mut take = |k: &str| m.remove(k).ok_or(format!("{k} is required"));
    let a = Args {
        socket: take("--socket")?,
        handler: take("--handler")?,
        image: take("--image")?,
        cgroup_parent: take("--cgroup-parent")?,
        log_dir: take("--log-dir")?.into(),
        runtime_root: take("--runtime-root").ok().map(PathBuf::from),
        pod_gateway: take("--pod-gateway").ok(),
        pod_annotation: match take("--pod-annotation") {
            Ok(kv) => Some(
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or("--pod-annotation: KEY=VALUE")?,
            ),
            Err(_) => None,
        },
    };
    match m.keys().next() {
        Some(k) => Err(format!("{k}: unknown option")),
        None => Ok(a),
    }
}

/// Each step's result; printed in STEPS order at the end, steps never reached as failed.
#[derive(Default)]
struct Report {
    results: HashMap<&'static str, Res>,
    first_failure: Option<&'static str>,
}

impl Report {
    fn step(&mut self, name: &'static str, r: Res) -> bool {
        debug_assert!(STEPS.contains(&name));
        let ok = r.is_ok();
        if !ok && self.first_failure.is_none() {
            self.first_failure = Some(name);
        }
        self.results.insert(name, r);
        ok
    }
    fn print(&self) -> bool {
        let mut all_ok = true;
        for s in STEPS {
            match self.results.get(s) {
                Some(Ok(detail)) => println!("cri_{s} pass {detail}"),
                Some(Err(why)) => {
                    all_ok = false;
                    println!("cri_{s} fail {}", why.replace('\n', " | "));
                }
                None => {
                    all_ok = false;
                    println!(
                        "cri_{s} fail not reached ({} failed)",
                        self.first_failure.unwrap_or("?")
                    );
                }
            }
        }
        all_ok
    }
}

fn grpc(what: &str) -> impl Fn(tonic::Status) -> String + '_ {
    move |s| format!("{what}: {:?}: {}", s.code(), s.message())
}

fn check(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// The container's cgroup directory on the host, found by its name: `<id>` (containerd's cgroupfs
/// driver) or `<prefix>-<id>.scope` (the systemd driver), in the v2 hierarchy when the host mounts
/// one at /sys/fs/cgroup (pure v2), else in the v1 memory hierarchy. Also whether it is v2.
fn host_cgroup_dir(id: &str) -> Result<(bool, PathBuf), String> {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let root = PathBuf::from(if v2 { "/sys/fs/cgroup" } else { "/sys/fs/cgroup/memory" });
    let scope = format!("-{id}.scope");
    let mut todo = vec![(root.clone(), 0)];
    while let Some((dir, depth)) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name == id || name.ends_with(&scope) {
                return Ok((v2, e.path()));
            }
            if depth < 6 {
                todo.push((e.path(), depth + 1));
            }
        }
    }
    Err(format!("no cgroup named after {id} under {}", root.display()))
}

/// A value from one of the container's cgroup files, read on the host: the v1 file in controller
/// `ctrl`'s hierarchy, or the v2 file in the unified one (its first field for cpu.max).
fn host_cgroup_value(id: &str, ctrl: &str, v1_file: &str, v2_file: &str) -> Result<String, String> {
    let (v2, dir) = host_cgroup_dir(id)?;
    let path = if v2 {
        dir.join(v2_file)
    } else {
        let rel = dir.strip_prefix("/sys/fs/cgroup/memory").map_err(|e| e.to_string())?;
        PathBuf::from(format!("/sys/fs/cgroup/{ctrl}")).join(rel).join(v1_file)
    };
    std::fs::read_to_string(&path)
        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        .map_err(|e| format!("{}: {e}", path.display()))
}

struct Cri {
    rt: RuntimeServiceClient<Channel>,
    im: ImageServiceClient<Channel>,
}

impl Cri {
    async fn exec(&mut self, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, String> {
        let req = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        self.rt
            .exec_sync(req)
            .await
            .map(|r| r.into_inner())
            .map_err(grpc("ExecSync"))
    }
    /// stdout of a command that must exit 0, trimmed
    async fn exec_out(&mut self, id: &str, cmd: &[&str]) -> Result<String, String> {
        let r = self.exec(id, cmd).await?;
        check(r.exit_code == 0, || {
            format!(
                "{cmd:?} exited {}: {}",
                r.exit_code,
                String::from_utf8_lossy(&r.stderr).trim()
            )
        })?;
        Ok(String::from_utf8_lossy(&r.stdout).trim().to_string())
    }
    async fn container_status(&mut self, id: &str) -> Result<ContainerStatus, String> {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let r = self.rt.container_status(req).await.map_err(grpc("ContainerStatus"))?;
        r.into_inner().status.ok_or_else(|| "ContainerStatus: no status".into())
    }
    async fn sandbox_status(&mut self, id: &str) -> Result<PodSandboxStatus, String> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        let r = self
            .rt
            .pod_sandbox_status(req)
            .await
            .map_err(grpc("PodSandboxStatus"))?;
        r.into_inner()
            .status
            .ok_or_else(|| "PodSandboxStatus: no status".into())
    }
    /// CreateContainer then StartContainer; the id once created.
    async fn create_start(&mut self, sandbox: &Sandbox, config: ContainerConfig) -> (Option<String>, Res) {
        let req = CreateContainerRequest {
            pod_sandbox_id: sandbox.id.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox.config.clone()),
        };
        let id = match self.rt.create_container(req).await.map_err(grpc("CreateContainer")) {
            Ok(r) => r.into_inner().container_id,
            Err(e) => return (None, Err(e)),
        };
        let r = self
            .rt
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map(|_| "started".to_string())
            .map_err(grpc("StartContainer"));
        (Some(id), r)
    }
    /// StopContainer (timeout 0: SIGKILL at once), RemoveContainer.
    async fn stop_remove(&mut self, id: &str, timeout: i64) -> Result<ContainerStatus, String> {
        let req = StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        self.rt.stop_container(req).await.map_err(grpc("StopContainer"))?;
        let st = self.container_status(id).await?;
        let req = RemoveContainerRequest {
            container_id: id.into(),
        };
        self.rt.remove_container(req).await.map_err(grpc("RemoveContainer"))?;
        Ok(st)
    }
}

/// The pod sandbox: its id and the config the kubelet passes along with each container.
struct Sandbox {
    id: String,
    config: PodSandboxConfig,
}

/// The handler's state dir for a container (the runc shim adds the namespace to `Root`).
fn state_dir(a: &Args, id: &str) -> Option<PathBuf> {
    a.runtime_root.as_ref().map(|r| r.join("k8s.io").join(id))
}

fn run_by_handler(a: &Args, id: &str) -> Result<(), String> {
    match state_dir(a, id) {
        Some(d) if !d.is_dir() => Err(format!("{} missing: not run by the {} handler", d.display(), a.handler)),
        _ => Ok(()),
    }
}

fn gone_from_handler(a: &Args, id: &str) -> Result<(), String> {
    match state_dir(a, id) {
        Some(d) if d.exists() => Err(format!("{} left behind", d.display())),
        _ => Ok(()),
    }
}

async fn wait_for<F: FnMut() -> bool>(mut f: F, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const MIB: i64 = 1 << 20;

/// The namespaces of a container in the pod: the pod's network and ipc; pid of the pod's or of its
/// own (the kubelet's default unless shareProcessNamespace).
fn container_namespaces(a: &Args, pid: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        network: if a.pod_gateway.is_some() {
            NamespaceMode::Pod
        } else {
            NamespaceMode::Node
        } as i32,
        pid: pid as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

async fn pod(a: &Args, c: &mut Cri, rep: &mut Report) {
    let r = c.rt.version(VersionRequest { version: "v1".into() }).await;
    let r = r.map_err(grpc("Version")).map(|v| {
        let v = v.into_inner();
        format!("{} {} ({})", v.runtime_name, v.runtime_version, v.runtime_api_version)
    });
    if !rep.step("version", r) {
        return;
    }

    // RunPodSandbox: pid and ipc namespaces of the pod that its first container joins (as with
    // shareProcessNamespace: true), a cgroup parent as the kubelet's cgroupfs driver gives one
    // (/kubepods/<qos>/pod<uid>). A network of its own from CNI with a hostname, or the host's
    // network and so (as the kubelet does) no hostname: the node's UTS namespace is shared.
    let uid = format!("{}-{}", a.handler, std::process::id());
    // With the systemd driver (a parent named `*.slice`) the kubelet names the pod's slice
    // `<parent>-pod<uid>.slice`, the uid's dashes made underscores (a dash nests slices).
    let cgroup_parent = match a.cgroup_parent.strip_suffix(".slice") {
        Some(parent) => format!("{parent}-pod{}.slice", uid.replace('-', "_")),
        None => format!("{}/pod{uid}", a.cgroup_parent),
    };
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("pod-{}", a.handler),
            uid: uid.clone(),
            namespace: "berth-engines".into(),
            attempt: 0,
        }),
        hostname: if a.pod_gateway.is_some() {
            "berthpod".into()
        } else {
            String::new()
        },
        log_directory: a.log_dir.display().to_string(),
        annotations: a.pod_annotation.iter().cloned().collect(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent,
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(container_namespaces(a, NamespaceMode::Pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let req = RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: a.handler.clone(),
    };
    let id = match c.rt.run_pod_sandbox(req).await.map_err(grpc("RunPodSandbox")) {
        Ok(r) => r.into_inner().pod_sandbox_id,
        Err(e) => {
            rep.step("run_pod_sandbox", Err(e));
            return;
        }
    };
    let sandbox = Sandbox { id, config };
    let r = async {
        let st = c.sandbox_status(&sandbox.id).await?;
        check(st.state() == PodSandboxState::SandboxReady, || {
            format!("sandbox state {:?}", st.state())
        })?;
        run_by_handler(a, &sandbox.id)?;
        Ok(format!("{} ready", &sandbox.id[..12]))
    }
    .await;
    if rep.step("run_pod_sandbox", r) {
        workload(a, c, rep, &sandbox).await;
    }

    // StopPodSandbox stops whatever is left in the pod; RemovePodSandbox removes it all.
    let r = async {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: sandbox.id.clone(),
        };
        c.rt.stop_pod_sandbox(req).await.map_err(grpc("StopPodSandbox"))?;
        let st = c.sandbox_status(&sandbox.id).await?;
        check(st.state() == PodSandboxState::SandboxNotready, || {
            format!("sandbox state {:?} after stop", st.state())
        })?;
        Ok("not ready".to_string())
    }
    .await;
    rep.step("stop_pod_sandbox", r);
    let r = async {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.id.clone(),
        };
        c.rt.remove_pod_sandbox(req).await.map_err(grpc("RemovePodSandbox"))?;
        let gone = matches!(c.sandbox_status(&sandbox.id).await, Err(e) if e.contains("NotFound"));
        check(gone, || "the sandbox is still listed".into())?;
        gone_from_handler(a, &sandbox.id)?;
        Ok("gone".to_string())
    }
    .await;
    rep.step("remove_pod_sandbox", r);
}

/// The workload container's steps, from ImageStatus to RemoveContainer.
async fn workload(a: &Args, c: &mut Cri, rep: &mut Report, sandbox: &Sandbox) {
    // ImageStatus: the image was imported into the k8s.io namespace; pulling is a fallback that
    // only works with a registry.
    let r = async {
        let spec = ImageSpec {
            image: a.image.clone(),
            ..Default::default()
        };
        let req = ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        };
        let st = c.im.image_status(req).await.map_err(grpc("ImageStatus"))?;
        if let Some(img) = st.into_inner().image {
            return Ok(format!("{} present", img.id.get(..19).unwrap_or(&img.id)));
        }
        let req = PullImageRequest {
            image: Some(spec),
            auth: None,
            sandbox_config: Some(sandbox.config.clone()),
        };
        let r = c.im.pull_image(req).await.map_err(grpc("PullImage"))?;
        Ok(format!("pulled {}", r.into_inner().image_ref))
    }
    .await;
    if !rep.step("image_status", r) {
        return;
    }

    // CreateContainer: a long-running shell that says it started, burns a little CPU, leaves a
    // process in the background, and exits 0 on SIGTERM (so StopContainer shows the signal got
    // there); a 256 MiB memory limit, the runtime's default seccomp profile, no new privileges
    // (allowPrivilegeEscalation: false).
    let script = "echo started; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 999 & \
                  trap 'echo stopping; exit 0' TERM; while :; do sleep 0.1; done";
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "work".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: a.image.clone(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        envs: vec![KeyValue {
            key: "GREETING".into(),
            value: "hello-cri".into(),
        }],
        log_path: "work.log".into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 256 * MIB,
                cpu_shares: 512,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(container_namespaces(a, NamespaceMode::Pod)),
                seccomp: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                no_new_privs: true,
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let req = CreateContainerRequest {
        pod_sandbox_id: sandbox.id.clone(),
        config: Some(config),
        sandbox_config: Some(sandbox.config.clone()),
    };
    let id = match c.rt.create_container(req).await.map_err(grpc("CreateContainer")) {
        Ok(r) => r.into_inner().container_id,
        Err(e) => {
            rep.step("create_container", Err(e));
            return;
        }
    };
    let r = async {
        let st = c.container_status(&id).await?;
        check(st.state() == ContainerState::ContainerCreated, || {
            format!("state {:?}", st.state())
        })?;
        Ok(format!("{} created", &id[..12]))
    }
    .await;
    if rep.step("create_container", r) {
        let r = async {
            // (containerd has the runtime create the container, its task, only now)
            let req = StartContainerRequest {
                container_id: id.clone(),
            };
            c.rt.start_container(req).await.map_err(grpc("StartContainer"))?;
            run_by_handler(a, &id)?;
            Ok("started".to_string())
        }
        .await;
        if rep.step("start_container", r) {
            running_steps(a, c, rep, sandbox, &id).await;
        }
    }

    // StopContainer: SIGTERM, the shell's trap exits 0 well inside the grace period. In the pod's
    // pid namespace the background sleep outlives it; the shim then has the runtime kill every
    // process left in the container's cgroup (`kill --all`): none may be left.
    let procs = host_cgroup_dir(&id).map(|(_, d)| d.join("cgroup.procs"));
    let r = async {
        let procs = procs?;
        let t0 = Instant::now();
        let req = StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        };
        c.rt.stop_container(req).await.map_err(grpc("StopContainer"))?;
        let st = c.container_status(&id).await?;
        check(st.state() == ContainerState::ContainerExited, || {
            format!("state {:?} after stop", st.state())
        })?;
        check(st.exit_code == 0, || {
            format!(
                "exit code {} (want 0: SIGTERM trapped), reason {}",
                st.exit_code, st.reason
            )
        })?;
        let empty = || std::fs::read_to_string(&procs).map_or(true, |p| p.trim().is_empty());
        check(wait_for(empty, 5).await, || format!("processes left in {}", procs.display()))?;
        Ok(format!(
            "exited {} in {:.1}s, nothing left in its cgroup",
            st.exit_code,
            t0.elapsed().as_secs_f64()
        ))
    }
    .await;
    rep.step("stop_container", r);

    let r = async {
        let req = RemoveContainerRequest {
            container_id: id.clone(),
        };
        c.rt.remove_container(req).await.map_err(grpc("RemoveContainer"))?;
        let gone = matches!(c.container_status(&id).await, Err(e) if e.contains("NotFound"));
        check(gone, || "the container is still listed".into())?;
        gone_from_handler(a, &id)?;
        Ok("gone".to_string())
    }
    .await;
    rep.step("remove_container", r);
}

/// The steps that need the workload running.
async fn running_steps(a: &Args, c: &mut Cri, rep: &mut Report, sandbox: &Sandbox, id: &str) {
    let r = async {
        let st = c.container_status(id).await?;
        check(st.state() == ContainerState::ContainerRunning, || {
            format!("state {:?} ({} {})", st.state(), st.reason, st.message)
        })?;
        check(st.started_at > 0, || "no start time".into())?;
        Ok("running".to_string())
    }
    .await;
    rep.step("container_status", r);

    // The network: the pod's own (its IP on eth0, the hostname, the gateway answers), or the host's.
    let r = async {
        let Some(gw) = &a.pod_gateway else {
            let inside = c.exec_out(id, &["readlink", "/proc/self/ns/net"]).await?;
            let host = std::fs::read_link("/proc/self/ns/net").map_err(|e| e.to_string())?;
            check(inside == host.to_string_lossy(), || {
                format!("net namespace {inside}, host's {host:?}")
            })?;
            return Ok("host network".to_string());
        };
        let st = c.sandbox_status(&sandbox.id).await?;
        let ip = st.network.map(|n| n.ip).unwrap_or_default();
        check(!ip.is_empty(), || "PodSandboxStatus: no pod IP".into())?;
        let addr = c.exec_out(id, &["ip", "-4", "-o", "addr", "show", "eth0"]).await?;
        check(addr.contains(&format!("inet {ip}/")), || {
            format!("pod IP {ip}, eth0: {addr}")
        })?;
        let host = c.exec_out(id, &["hostname"]).await?;
        check(host == "berthpod", || format!("hostname {host:?}"))?;
        c.exec_out(id, &["ping", "-c", "1", "-W", "3", gw]).await?;
        Ok(format!("pod IP {ip}, hostname, gateway {gw} answers"))
    }
    .await;
    rep.step("network", r);

    // The container's stdout reaches the CRI log file (kubectl logs reads it).
    let log = a.log_dir.join("work.log");
    let found = wait_for(
        || std::fs::read_to_string(&log).is_ok_and(|s| s.contains(" stdout F started")),
        10,
    )
    .await;
    let r = check(found, || format!("{}: no 'stdout F started' line", log.display()))
        .map(|_| "stdout in the CRI log".to_string());
    rep.step("container_logs", r);

    // ExecSync: stdout, stderr and the exit code come back; the process sees the container's env,
    // the pod's pid and ipc namespaces (pid 1 is the pause process) and the container's security.
    let r = async {
        let r = c
            .exec(id, &["sh", "-c", "echo out-$((6*7)) $GREETING; echo err >&2; exit 3"])
            .await?;
        let (out, err) = (String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
        check(
            out == "out-42 hello-cri\n" && err == "err\n" && r.exit_code == 3,
            || format!("stdout {out:?} stderr {err:?} exit {}", r.exit_code),
        )?;
        let script = "tr '\\0' ' ' < /proc/1/cmdline; echo; readlink /proc/1/ns/ipc; readlink /proc/self/ns/ipc";
        let ns = c.exec_out(id, &["sh", "-c", script]).await?;
        let l: Vec<&str> = ns.lines().map(str::trim).collect();
        check(l.len() == 3 && l[0] == "/bin/sleep infinity" && l[1] == l[2], || {
            format!("pid 1 and ipc namespaces: {l:?}")
        })?;
        let sec = c
            .exec_out(id, &["grep", "-E", "^(Seccomp|NoNewPrivs):", "/proc/self/status"])
            .await?;
        let sec: Vec<&str> = sec.lines().map(|l| l.split_whitespace().nth(1).unwrap_or("")).collect();
        check(sec == ["1", "2"], || {
            format!("NoNewPrivs, Seccomp = {sec:?}, want 1, 2")
        })?;
        Ok("stdout, stderr, exit 3; pod pid/ipc ns; seccomp, no_new_privs".to_string())
    }
    .await;
    rep.step("exec_sync", r);

    // ContainerStats: containerd reads the container's cgroup; it must hold the workload.
    let r = async {
        let mut last = String::new();
        for _ in 0..30 {
            let req = ContainerStatsRequest {
                container_id: id.into(),
            };
            let r = c.rt.container_stats(req).await.map_err(grpc("ContainerStats"))?;
            let s = r.into_inner().stats.ok_or("no stats")?;
            let cpu = s.cpu.and_then(|c| c.usage_core_nano_seconds).map_or(0, |v| v.value);
            let mem = s.memory.and_then(|m| m.working_set_bytes).map_or(0, |v| v.value);
            if cpu > 0 && mem > 0 {
                return Ok(format!("cpu {cpu} ns, memory {} KiB", mem / 1024));
            }
            last = format!("cpu {cpu} ns, working set {mem} bytes");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last)
    }
    .await;
    rep.step("container_stats", r);

    // UpdateContainerResources: the new memory limit and CPU quota must reach the container's
    // cgroup, seen from inside (its /sys/fs/cgroup) and from the host.
    let r = async {
        let before = host_cgroup_value(id, "memory", "memory.limit_in_bytes", "memory.max")?;
        check(before == (256 * MIB).to_string(), || {
            format!("memory limit before the update: {before}, want 256 MiB")
        })?;
        let res = LinuxContainerResources {
            memory_limit_in_bytes: 128 * MIB,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            ..Default::default()
        };
        let req = UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(res),
            ..Default::default()
        };
        let r = c.rt.update_container_resources(req).await;
        r.map_err(grpc("UpdateContainerResources"))?;
        let inside = c
            .exec_out(
                id,
                &[
                    "sh",
                    "-c",
                    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
                ],
            )
            .await?;
        check(inside == (128 * MIB).to_string(), || {
            format!("memory limit inside after the update: {inside}")
        })?;
        let host = host_cgroup_value(id, "memory", "memory.limit_in_bytes", "memory.max")?;
        check(host == (128 * MIB).to_string(), || {
            format!("memory limit on the host after the update: {host}")
        })?;
        let quota = host_cgroup_value(id, "cpu", "cpu.cfs_quota_us", "cpu.max")?;
        check(quota == "50000", || {
            format!("cpu.cfs_quota_us after the update: {quota}")
        })?;
        Ok("memory 256->128 MiB, cpu quota 50000 (inside and host)".to_string())
    }
    .await;
    rep.step("update_resources", r);

    // A second container as the kubelet makes it by default: a pid namespace of its own (its
    // command is pid 1), the pod's network; stopped with timeout 0 (SIGKILL) and removed.
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "second".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: a.image.clone(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "1000".into()],
        log_path: "second.log".into(),
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(container_namespaces(a, NamespaceMode::Container)),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let (second, r) = c.create_start(sandbox, config).await;
    // The pod's containers share one kernel (for VM containers: one VM) and the pod's network:
    // the same boot id, the second reaches a server of the first on localhost, and the host
    // reaches it on the pod IP.
    let shared = async {
        let second = second.as_deref().ok_or("no second container")?;
        let boot1 = c.exec_out(id, &["cat", "/proc/sys/kernel/random/boot_id"]).await?;
        let boot2 = c.exec_out(second, &["cat", "/proc/sys/kernel/random/boot_id"]).await?;
        check(boot1 == boot2, || format!("boot ids {boot1} and {boot2}"))?;
        c.exec_out(
            id,
            &["sh", "-c", "busybox nc -ll -p 7070 -e echo pod-local </dev/null >/dev/null 2>&1 &"],
        )
        .await?;
        let mut got = String::new();
        for _ in 0..50 {
            let r = c.exec(second, &["busybox", "nc", "-w", "3", "127.0.0.1", "7070"]).await?;
            got = String::from_utf8_lossy(&r.stdout).trim().to_string();
            if got == "pod-local" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        check(got == "pod-local", || format!("localhost from the second: {got:?}"))?;
        let mut detail = "same boot id, localhost between containers".to_string();
        if a.pod_gateway.is_some() {
            let st = c.sandbox_status(&sandbox.id).await?;
            let ip = st.network.map(|n| n.ip).unwrap_or_default();
            let addr: std::net::SocketAddr = format!("{ip}:7070").parse().map_err(|e| format!("pod IP {ip:?}: {e}"))?;
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .map_err(|e| format!("the host to {addr}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
            let mut from = String::new();
            let _ = std::io::Read::read_to_string(&mut &s, &mut from);
            check(from.trim() == "pod-local", || format!("the host on {addr}: {from:?}"))?;
            detail.push_str(&format!(", the host reaches {addr}"));
        }
        Ok(detail)
    }
    .await;
    let r = async {
        let second = second.as_deref().ok_or("not created")?;
        r?;
        run_by_handler(a, second)?;
        let pid1 = c
            .exec_out(second, &["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"])
            .await?;
        check(pid1.trim() == "sleep 1000", || {
            format!("pid 1 is {pid1:?}, want its own sleep")
        })?;
        let net = c.exec_out(second, &["readlink", "/proc/self/ns/net"]).await?;
        let first = c.exec_out(id, &["readlink", "/proc/self/ns/net"]).await?;
        check(net == first, || {
            format!("net namespace {net}, the first container's {first}")
        })?;
        Ok("own pid namespace, the pod's network".to_string())
    }
    .await;
    let r = match &second {
        Some(s) => {
            let stopped = c.stop_remove(s, 0).await;
            r.and_then(|d| {
                let st = stopped?;
                check(st.exit_code == 137, || {
                    format!("exit code {} after SIGKILL", st.exit_code)
                })?;
                gone_from_handler(a, s)?;
                Ok(format!("{d}; killed (137), removed"))
            })
        }
        None => r,
    };
    rep.step("second_container", r);
    rep.step("pod_shared", shared);
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cri-client: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut rep = Report::default();
    rt.block_on(async {
        let ep = Endpoint::from_shared(format!("unix://{}", a.socket))
            .expect("socket uri")
            .timeout(Duration::from_secs(60));
        match ep.connect().await {
            Ok(ch) => {
                let mut c = Cri {
                    rt: RuntimeServiceClient::new(ch.clone()),
                    im: ImageServiceClient::new(ch),
                };
                pod(&a, &mut c, &mut rep).await;
            }
            Err(e) => {
                rep.step("version", Err(format!("connect {}: {e}", a.socket)));
            }
        }
    });
    std::process::exit(if rep.print() { 0 } else { 1 });
}
