//! A small Kubernetes CRI client for engines/run.sh: it does to containerd's CRI plugin what the
//! kubelet does for one pod (a sandbox plus one workload container) on the runtime handler it is
//! given, and prints one line per step: `<step> pass|fail <detail>`. Exit status 0 when every
//! step passed.
//!
//! Usage: cri-client --socket PATH --handler NAME --image REF --cgroup-parent /PATH --log-dir DIR
//!                   [--runtime-root DIR]
//!
//! `--runtime-root` is the handler's `Root` option: the client then also checks that the sandbox
//! and the container really are run by that handler's binary (its state dir is there) and that
//! nothing is left there after the pod is removed.

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

type Res = Result<String, String>;

struct Args {
    socket: String,
    handler: String,
    image: String,
    cgroup_parent: String,
    log_dir: PathBuf,
    runtime_root: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut m = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k}: missing value"))?;
        m.insert(k, v);
    }
    let mut take = |k: &str| m.remove(k).ok_or(format!("{k} is required"));
    Ok(Args {
        socket: take("--socket")?,
        handler: take("--handler")?,
        image: take("--image")?,
        cgroup_parent: take("--cgroup-parent")?,
        log_dir: take("--log-dir")?.into(),
        runtime_root: take("--runtime-root").ok().map(PathBuf::from),
    })
}

/// Prints each step's result; remembers whether all passed.
struct Report {
    all_ok: bool,
}

impl Report {
    fn step(&mut self, name: &str, r: Res) -> bool {
        match r {
            Ok(detail) => println!("cri_{name} pass {detail}"),
            Err(why) => {
                self.all_ok = false;
                println!("cri_{name} fail {}", why.replace('\n', " | "));
            }
        }
        self.all_ok
    }
    fn not_reached(&mut self, names: &[&str], after: &str) {
        for n in names {
            self.step(n, Err(format!("not reached ({after} failed)")));
        }
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

/// A value from a v1 cgroup file of the container, read on the host: `ctrl` is the controller's
/// mount dir name, `cg` the container's /proc/self/cgroup line for that controller.
fn host_cgroup_value(cg: &str, ctrl: &str, file: &str) -> Result<String, String> {
    let path = format!("/sys/fs/cgroup/{ctrl}{cg}/{file}");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("{path}: {e}"))
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
    /// stdout of a command that must exit 0
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
    async fn sandbox_state(&mut self, id: &str) -> Result<PodSandboxState, String> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        let r = self
            .rt
            .pod_sandbox_status(req)
            .await
            .map_err(grpc("PodSandboxStatus"))?;
        let st = r.into_inner().status.ok_or("PodSandboxStatus: no status")?;
        Ok(st.state())
    }
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

async fn pod(a: &Args, c: &mut Cri, rep: &mut Report) {
    // Version
    let r =
        c.rt.version(VersionRequest { version: "v1".into() })
            .await
            .map_err(grpc("Version"));
    let ok = rep.step(
        "version",
        r.map(|v| {
            let v = v.into_inner();
            format!("{} {} ({})", v.runtime_name, v.runtime_version, v.runtime_api_version)
        }),
    );
    let after_sandbox = [
        "image_status",
        "create_container",
        "start_container",
        "container_status",
        "container_logs",
        "exec_sync",
        "container_stats",
        "update_resources",
        "stop_container",
        "remove_container",
        "stop_pod_sandbox",
        "remove_pod_sandbox",
    ];
    if !ok {
        rep.not_reached(&["run_pod_sandbox"], "version");
        rep.not_reached(&after_sandbox, "version");
        return;
    }

    // RunPodSandbox: host network (no CNI; so, as the kubelet does, no hostname: the node's UTS
    // namespace is shared), pid and ipc namespaces of the pod that its containers join (as with
    // shareProcessNamespace: true), a cgroup parent as the kubelet's cgroupfs driver gives one
    // (/kubepods/<qos>/pod<uid>).
    let uid = format!("{}-{}", a.handler, std::process::id());
    let sandbox_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("pod-{}", a.handler),
            uid: uid.clone(),
            namespace: "berth-engines".into(),
            attempt: 0,
        }),
        log_directory: a.log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod{uid}", a.cgroup_parent),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Pod as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let req = RunPodSandboxRequest {
        config: Some(sandbox_config.clone()),
        runtime_handler: a.handler.clone(),
    };
    let sandbox = match c.rt.run_pod_sandbox(req).await.map_err(grpc("RunPodSandbox")) {
        Ok(r) => r.into_inner().pod_sandbox_id,
        Err(e) => {
            rep.step("run_pod_sandbox", Err(e));
            rep.not_reached(&after_sandbox, "run_pod_sandbox");
            return;
        }
    };
    let r = async {
        let st = c.sandbox_state(&sandbox).await?;
        check(st == PodSandboxState::SandboxReady, || format!("sandbox state {st:?}"))?;
        run_by_handler(a, &sandbox)?;
        Ok(format!("{} ready", &sandbox[..12]))
    }
    .await;
    let sandbox_ok = rep.step("run_pod_sandbox", r);

    let ctr = if sandbox_ok {
        workload(a, c, rep, &sandbox, &sandbox_config).await
    } else {
        None
    };
    if !sandbox_ok {
        rep.not_reached(&after_sandbox[..after_sandbox.len() - 2], "run_pod_sandbox");
    }

    // StopPodSandbox stops whatever is left in the pod; RemovePodSandbox removes it all.
    let r = async {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        };
        c.rt.stop_pod_sandbox(req).await.map_err(grpc("StopPodSandbox"))?;
        let st = c.sandbox_state(&sandbox).await?;
        check(st == PodSandboxState::SandboxNotready, || {
            format!("sandbox state {st:?} after stop")
        })?;
        Ok("not ready".to_string())
    }
    .await;
    rep.step("stop_pod_sandbox", r);
    let r = async {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        };
        c.rt.remove_pod_sandbox(req).await.map_err(grpc("RemovePodSandbox"))?;
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: false,
        };
        let gone = matches!(c.rt.pod_sandbox_status(req).await, Err(s) if s.code() == tonic::Code::NotFound);
        check(gone, || "the sandbox is still listed".into())?;
        gone_from_handler(a, &sandbox)?;
        if let Some(id) = &ctr {
            gone_from_handler(a, id)?;
        }
        Ok("gone".to_string())
    }
    .await;
    rep.step("remove_pod_sandbox", r);
}

/// The workload container's steps, up to RemoveContainer. Returns its id once created.
async fn workload(
    a: &Args,
    c: &mut Cri,
    rep: &mut Report,
    sandbox: &str,
    sandbox_config: &PodSandboxConfig,
) -> Option<String> {
    let later = [
        "create_container",
        "start_container",
        "container_status",
        "container_logs",
        "exec_sync",
        "container_stats",
        "update_resources",
        "stop_container",
        "remove_container",
    ];
    // ImageStatus: the image was imported into the k8s.io namespace; pulling is a fallback that
    // only works with a registry.
    let r = async {
        let spec = ImageSpec {
            image: a.image.clone(),
            ..Default::default()
        };
        let st =
            c.im.image_status(ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
            .map_err(grpc("ImageStatus"))?;
        if let Some(img) = st.into_inner().image {
            return Ok(format!("{} present", img.id.get(..19).unwrap_or(&img.id)));
        }
        let req = PullImageRequest {
            image: Some(spec),
            auth: None,
            sandbox_config: Some(sandbox_config.clone()),
        };
        let r = c.im.pull_image(req).await.map_err(grpc("PullImage"))?;
        Ok(format!("pulled {}", r.into_inner().image_ref))
    }
    .await;
    if !rep.step("image_status", r) {
        rep.not_reached(&later, "image_status");
        return None;
    }

    // CreateContainer: a long-running shell that says it started, burns a little CPU, and exits 0 on
    // SIGTERM (so StopContainer shows the signal got there); a 256 MiB memory limit.
    let script = "echo started; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; trap 'echo stopping; exit 0' TERM; while :; do sleep 0.1; done";
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
            // The pod's namespaces, the runtime's default seccomp profile, no new privileges
            // (allowPrivilegeEscalation: false).
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Pod as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
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
        pod_sandbox_id: sandbox.into(),
        config: Some(config),
        sandbox_config: Some(sandbox_config.clone()),
    };
    let id = match c.rt.create_container(req).await.map_err(grpc("CreateContainer")) {
        Ok(r) => r.into_inner().container_id,
        Err(e) => {
            rep.step("create_container", Err(e));
            rep.not_reached(&later[1..], "create_container");
            return None;
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
    let created = rep.step("create_container", r);

    let r = async {
        check(created, || "not created".into())?;
        // (containerd creates the runtime's container, the task, only now)
        c.rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .map_err(grpc("StartContainer"))?;
        run_by_handler(a, &id)?;
        Ok("started".to_string())
    }
    .await;
    let started = rep.step("start_container", r);
    if !started {
        rep.not_reached(&later[2..7], "start_container");
    } else {
        running_steps(a, c, rep, &id).await;
    }

    // StopContainer: SIGTERM, the shell's trap exits 0 well inside the grace period.
    let r = async {
        let t0 = Instant::now();
        c.rt.stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await
        .map_err(grpc("StopContainer"))?;
        let st = c.container_status(&id).await?;
        if started {
            check(st.state() == ContainerState::ContainerExited, || {
                format!("state {:?} after stop", st.state())
            })?;
            check(st.exit_code == 0, || {
                format!(
                    "exit code {} (want 0: SIGTERM trapped), reason {}",
                    st.exit_code, st.reason
                )
            })?;
        }
        Ok(format!("exited {} in {:.1}s", st.exit_code, t0.elapsed().as_secs_f64()))
    }
    .await;
    rep.step("stop_container", r);

    let r = async {
        c.rt.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .map_err(grpc("RemoveContainer"))?;
        let gone = matches!(c.container_status(&id).await, Err(e) if e.contains("NotFound"));
        check(gone, || "the container is still listed".into())?;
        gone_from_handler(a, &id)?;
        Ok("gone".to_string())
    }
    .await;
    rep.step("remove_container", r);
    Some(id)
}

/// The steps that need the workload running: status, logs, exec, stats, update.
async fn running_steps(a: &Args, c: &mut Cri, rep: &mut Report, id: &str) {
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

    // ExecSync: stdout, stderr and the exit code come back; the process sees the container's env.
    let r = async {
        let r = c
            .exec(id, &["sh", "-c", "echo out-$((6*7)) $GREETING; echo err >&2; exit 3"])
            .await?;
        let (out, err) = (String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
        check(
            out == "out-42 hello-cri\n" && err == "err\n" && r.exit_code == 3,
            || format!("stdout {out:?} stderr {err:?} exit {}", r.exit_code),
        )?;
        // In the pod's pid and ipc namespaces: pid 1 is the sandbox's pause process.
        let pid1 = c
            .exec_out(
                id,
                &[
                    "sh",
                    "-c",
                    "tr '\\0' ' ' < /proc/1/cmdline; echo; readlink /proc/1/ns/ipc; readlink /proc/self/ns/ipc",
                ],
            )
            .await?;
        let l: Vec<&str> = pid1.lines().map(str::trim).collect();
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
            let r =
                c.rt.container_stats(ContainerStatsRequest {
                    container_id: id.into(),
                })
                .await
                .map_err(grpc("ContainerStats"))?;
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
        let cgroups = c.exec_out(id, &["cat", "/proc/self/cgroup"]).await?;
        let path = |ctrl: &str| {
            cgroups.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, p) = (f.next()?, f.next()?, f.next()?);
                ctrls.split(',').any(|c| c == ctrl).then(|| p.to_string())
            })
        };
        let (mem_cg, cpu_cg) = (
            path("memory").ok_or("no memory cgroup")?,
            path("cpu").ok_or("no cpu cgroup")?,
        );
        let before = host_cgroup_value(&mem_cg, "memory", "memory.limit_in_bytes")?;
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
        c.rt.update_container_resources(req)
            .await
            .map_err(grpc("UpdateContainerResources"))?;
        let inside = c
            .exec_out(id, &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
            .await?;
        check(inside == (128 * MIB).to_string(), || {
            format!("memory limit inside after the update: {inside}")
        })?;
        let host = host_cgroup_value(&mem_cg, "memory", "memory.limit_in_bytes")?;
        check(host == (128 * MIB).to_string(), || {
            format!("memory limit on the host after the update: {host}")
        })?;
        let quota = host_cgroup_value(&cpu_cg, "cpu", "cpu.cfs_quota_us")?;
        check(quota == "50000", || {
            format!("cpu.cfs_quota_us after the update: {quota}")
        })?;
        let st = c.container_status(id).await?;
        let reported = st
            .resources
            .and_then(|r| r.linux)
            .map_or(0, |l| l.memory_limit_in_bytes);
        check(reported == 0 || reported == 128 * MIB, || {
            format!("ContainerStatus reports memory limit {reported}")
        })?;
        Ok("memory 256->128 MiB, cpu quota 50000 (inside and host)".to_string())
    }
    .await;
    rep.step("update_resources", r);
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
    let ok = rt.block_on(async {
        let mut rep = Report { all_ok: true };
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
        rep.all_ok
    });
    std::process::exit(if ok { 0 } else { 1 });
}
