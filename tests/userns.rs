//! User namespaces: ID maps of several ranges (written by the runtime as root, or by
//! newuidmap/newgidmap for an unprivileged user), and rootless containers: a real unprivileged user
//! runs `spec --rootless` and `run`, with state under $XDG_RUNTIME_DIR/berth and no cgroup writes.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

const USER: &str = "berth-rootless";
/// Subordinate IDs given to the test user in /etc/subuid and /etc/subgid when useradd did not.
const SUB_START: u32 = 400000;
const SUB_COUNT: u32 = 65536;

/// The test user's first subordinate range in `file` (/etc/subuid or /etc/subgid).
fn sub_range(file: &str) -> (u32, u32) {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{USER}:")))
        .unwrap_or_else(|| panic!("{USER} has no range in {file}"));
    let f: Vec<&str> = line.split(':').collect();
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

/// Host uid/gid of the test user; made (with subordinate IDs) on first use.
fn test_user() -> (u32, u32) {
    static USER_IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *USER_IDS.get_or_init(|| {
        let lookup = || {
            let out = Command::new("getent").args(["passwd", USER]).output().unwrap();
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            let f: Vec<&str> = line.trim().split(':').collect();
            (f.len() > 3).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        };
        if lookup().is_none() {
            let out = Command::new("useradd")
                .args(["--no-create-home", "--user-group", USER])
                .output()
                .unwrap();
            assert!(out.status.success(), "useradd {USER}: {}", out.describe());
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if !text.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
                let line = format!("{USER}:{SUB_START}:{SUB_COUNT}\n");
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                    .unwrap();
                std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
            }
        }
        lookup().expect("test user exists")
    })
}

fn chown_r(path: &Path, uid: u32, gid: u32) {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "chown: {}", out.describe());
}

/// A rootless set-up: a bundle and a runtime dir owned by the test user.
struct Rootless {
    uid: u32,
    gid: u32,
    bundle: Bundle,
    runtime_dir: TempDir,
}

impl Rootless {
    fn new() -> Option<Rootless> {
        if !require_root() {
            return None;
        }
        let (uid, gid) = test_user();
        let bundle = Bundle::default();
        let _ = std::fs::remove_file(bundle.config_path());
        let runtime_dir = TempDir::new("xdg");
        std::fs::set_permissions(runtime_dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        chown_r(&bundle.dir, uid, gid);
        chown_r(runtime_dir.path(), uid, gid);
        Some(Rootless {
            uid,
            gid,
            bundle,
            runtime_dir,
        })
    }

    /// Runs the runtime as the test user, in the bundle, with only XDG_RUNTIME_DIR and PATH set
    /// (output captured through files: a detached container keeps its stdio open).
    fn berth(&self, args: &[&str]) -> Output {
        let logs = TempDir::new("rootless-out");
        let (out_path, err_path) = (logs.join("out"), logs.join("err"));
        let mut c = Command::new(runtime());
        c.args(args)
            .current_dir(&self.bundle.dir)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("XDG_RUNTIME_DIR", self.runtime_dir.path())
            .uid(self.uid)
            .gid(self.gid)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap());
        let mut child = c.spawn().expect("run the runtime");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{c:?} did not finish within 30 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
    }

    /// Where the runtime keeps its state for the user: $XDG_RUNTIME_DIR/berth (runc: .../runc).
    fn state_dir(&self) -> std::path::PathBuf {
        self.runtime_dir.join(if is_runc() { "runc" } else { "berth" })
    }

    /// Edits the config.json written by `spec --rootless` (as root; ownership kept).
    fn edit_config(&self, f: impl FnOnce(&mut Value)) {
        let path = self.bundle.config_path();
        let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        // Anything left running is removed the way the user would.
        let list = self.berth(&["list", "-q"]);
        for id in lines(&list.out()) {
            let _ = self.berth(&["delete", "--force", &id]);
        }
    }
}

#[test]
fn root_writes_id_maps_of_several_ranges() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.set_namespace("user", None);
    // containerd's MultipleMap case: two ranges for each of uid and gid.
    b.config["linux"]["uidMappings"] = json!([
        { "containerID": 0, "hostID": 100000, "size": 1000 },
        { "containerID": 1000, "hostID": 300000, "size": 1000 }
    ]);
    b.config["linux"]["gidMappings"] = json!([
        { "containerID": 0, "hostID": 200000, "size": 1000 },
        { "containerID": 1000, "hostID": 500000, "size": 1000 }
    ]);
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    let id = unique_id();
    let pid = rt.create_and_start(&b, &id);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(status_field(&status, "Uid").split_whitespace().next(), Some("300000"));
    assert_eq!(status_field(&status, "Gid").split_whitespace().next(), Some("500000"));
    // exec joins the user namespace: the same maps, and a uid of the first range.
    let out = rt
        .cmd(&[
            "exec",
            "--user",
            "1:1",
            &id,
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; id -u",
        ])
        .ok("exec into the user namespace");
    let got: Vec<String> = lines(&out.out())
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        got,
        [
            "0 100000 1000",
            "1000 300000 1000",
            "0 200000 1000",
            "1000 500000 1000",
            "1"
        ]
    );
}

#[test]
fn rootless_user_runs_spec_rootless_and_run() {
    let Some(r) = Rootless::new() else { return };
    r.berth(&["spec", "--rootless"]).ok("spec --rootless as the user");
    r.edit_config(|v| {
        v["process"]["terminal"] = json!(false);
        v["process"]["args"] = json!(["sh", "-c", "id -u; cat /proc/self/uid_map; echo $$"]);
    });
    let id = unique_id();
    let out = r.berth(&["run", &id]).ok("run as an unprivileged user");
    let l: Vec<String> = lines(&out.out())
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(l, ["0".to_string(), format!("0 {} 1", r.uid), "1".to_string()]);
    // No cgroup was made (this host does not delegate cgroups to the user), and nothing is left.
    for h in ["pids", "memory", "unified"] {
        assert!(
            !Path::new("/sys/fs/cgroup").join(h).join(&id).exists(),
            "cgroup {h}/{id} made"
        );
    }
    assert!(!r.state_dir().join(&id).exists(), "state left behind");
}

#[test]
fn rootless_container_keeps_state_under_xdg_runtime_dir_and_takes_exec() {
    let Some(r) = Rootless::new() else { return };
    r.berth(&["spec", "--rootless"]).ok("spec --rootless");
    r.edit_config(|v| {
        v["process"]["terminal"] = json!(false);
        v["process"]["args"] = json!(["sleep", "1000"]);
    });
    let id = unique_id();
    r.berth(&["run", "--detach", &id]).ok("run --detach as the user");
    assert!(r.state_dir().join(&id).join("state.json").is_file());
    let st: Value = serde_json::from_slice(&r.berth(&["state", &id]).ok("state").stdout).unwrap();
    assert_eq!(st["status"], "running");
    let pid = st["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        status_field(&status, "Uid").split_whitespace().next(),
        Some(r.uid.to_string().as_str())
    );
    // exec as the user: joins the user namespace first, then the rest (pid needs a fork).
    let out = r
        .berth(&["exec", &id, "sh", "-c", "id -u; cat /proc/1/cmdline | tr '\\0' ' '"])
        .ok("rootless exec");
    assert_eq!(lines(&out.out()), ["0", "sleep 1000"]);
    let out = r.berth(&["exec", &id, "sh", "-c", "exit 6"]);
    assert_eq!(out.code(), 6, "{}", out.describe());
    r.berth(&["delete", "--force", &id]).ok("delete as the user");
    assert!(!r.state_dir().join(&id).exists());
    poll("container init gone", || process_gone(pid as i32));
}

#[test]
fn rootless_maps_several_ranges_with_newuidmap() {
    let Some(r) = Rootless::new() else { return };
    if !Path::new("/usr/bin/newuidmap").exists() {
        notice(&format!(
            "SKIP {}: newuidmap is missing (apt-get install uidmap)",
            test_name()
        ));
        return;
    }
    r.berth(&["spec", "--rootless"]).ok("spec --rootless");
    let (uid, gid) = (r.uid, r.gid);
    let (su, su_n) = sub_range("/etc/subuid");
    let (sg, sg_n) = sub_range("/etc/subgid");
    r.edit_config(|v| {
        v["process"]["terminal"] = json!(false);
        v["process"]["args"] = json!(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map"]);
        v["linux"]["uidMappings"] = json!([
            { "containerID": 0, "hostID": uid, "size": 1 },
            { "containerID": 1, "hostID": su, "size": su_n }
        ]);
        v["linux"]["gidMappings"] = json!([
            { "containerID": 0, "hostID": gid, "size": 1 },
            { "containerID": 1, "hostID": sg, "size": sg_n }
        ]);
    });
    let id = unique_id();
    let out = r.berth(&["run", &id]).ok("run with subordinate ID ranges");
    let got: Vec<String> = lines(&out.out())
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        got,
        [
            format!("0 {uid} 1"),
            format!("1 {su} {su_n}"),
            format!("0 {gid} 1"),
            format!("1 {sg} {sg_n}"),
        ]
    );
    // A range the user was not given is refused by newuidmap, and nothing is left behind.
    r.edit_config(|v| {
        v["linux"]["uidMappings"][1]["hostID"] = json!(su + su_n);
    });
    let id = unique_id();
    let out = r.berth(&["run", &id]);
    if is_runc() {
        out.fails("a subordinate range the user does not own");
    } else {
        assert_err_mentions(&out, "linux.uidMappings", "a subordinate range the user does not own");
    }
    assert!(!r.state_dir().join(&id).exists(), "state left behind");
}

#[test]
fn id_mapped_bind_mounts() {
    if !require_root() {
        return;
    }
    let features: Value = serde_json::from_slice(&Runtime::new().cmd(&["features"]).ok("features").stdout).unwrap();
    if features["linux"]["mountExtensions"]["idmap"]["enabled"] != true {
        notice(&format!(
            "SKIP {}: the runtime reports no ID-mapped mounts here",
            test_name()
        ));
        return;
    }
    let src = TempDir::new("idmap-src");
    for (name, owner) in [("root-file", 0), ("user-file", 1000)] {
        let p = src.join(name);
        std::fs::write(&p, "x").unwrap();
        std::os::unix::fs::chown(&p, Some(owner), Some(owner)).unwrap();
    }
    let rt = Runtime::new();
    let mut b = Bundle::default();
    b.set_namespace("user", None);
    b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    b.config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    // Plain: host-owned files are unmapped in the container. idmap (no mappings): the container's
    // mapping, so they look as on the host. Own mappings: host 101000.. shows as container 1000..
    for d in ["plain", "same", "own"] {
        std::fs::create_dir(b.rootfs().join(d)).unwrap();
    }
    b.bind(src.path(), "/plain", &[]);
    b.bind(src.path(), "/same", &["idmap"]);
    b.add_mount(json!({
        "destination": "/own", "type": "bind", "source": src.path(), "options": ["bind", "ridmap"],
        "uidMappings": [{ "containerID": 0, "hostID": 101000, "size": 10 }],
        "gidMappings": [{ "containerID": 0, "hostID": 101000, "size": 10 }]
    }));
    let out = run_script(
        &mut b,
        "for d in plain same own; do stat -c \"$d %u:%g\" /$d/root-file /$d/user-file; done",
    );
    assert_eq!(
        lines(&out),
        [
            "plain 65534:65534",
            "plain 65534:65534",
            "same 0:0",
            "same 1000:1000",
            "own 1000:1000",
            "own 65534:65534"
        ]
    );
    // An ID-mapped mount that is not a bind mount is refused before anything is made.
    let mut b = Bundle::default();
    b.add_mount(json!({ "destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"] }));
    let id = unique_id();
    let out = rt.run(&b, &id);
    assert_err_mentions(&out, "mounts[7]", "idmap on a tmpfs");
    rt.assert_no_state(&id);
}
