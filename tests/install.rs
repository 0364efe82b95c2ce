//! scripts/install.sh as a user runs it (issue 15 part 5), into a scratch DESTDIR that holds an
//! engine configuration of its own: the binaries, the generated manual pages and completions and
//! the engine registrations land where they should, the installed berth runs a Linux container and
//! a VM container with no agent path given (it finds its agent in `../lib/berth/`), and
//! `--uninstall` leaves the tree exactly as it was (the engine files with only Berth's keys gone).
//! The VM part needs what tests/vm.rs needs (qemu, a cloud kernel, virtiofsd, the static agent
//! built); without it that part prints SKIP.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The static agent built for this checkout, if it is.
fn built_agent() -> Option<PathBuf> {
    let bin = runtime();
    let target = bin.parent()?.parent()?;
    ["release", "debug"]
        .iter()
        .map(|p| target.join("x86_64-unknown-linux-gnu").join(p).join("berth-guest"))
        .find(|p| p.is_file())
}

/// Every file and directory under `root`, with the files' contents (directories: None).
fn tree(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                todo.push(p);
            } else {
                out.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn install(args: &[&str]) -> std::process::Output {
    let out = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .args(args)
        .env_remove("DESTDIR")
        .env_remove("PREFIX")
        .output()
        .expect("run scripts/install.sh");
    assert!(
        out.status.success(),
        "scripts/install.sh {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const DAEMON_JSON: &str = r#"{"log-driver": "journald", "runtimes": {"other": {"path": "/opt/other"}}}"#;
// Debian 12's /etc/containerd/config.toml.
const CONTAINERD_TOML: &str = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      conf_dir = \"/etc/cni/net.d\"\n";

#[test]
fn installed_berth_runs_containers_finds_its_agent_and_uninstalls_to_the_tree_it_found() {
    if !require_root() || runc_gap("scripts/install.sh installs Berth") {
        return;
    }
    let dest = TempDir::new("install");
    fs::create_dir_all(dest.join("etc/docker")).unwrap();
    fs::create_dir_all(dest.join("etc/containerd")).unwrap();
    fs::write(dest.join("etc/docker/daemon.json"), DAEMON_JSON).unwrap();
    fs::write(dest.join("etc/containerd/config.toml"), CONTAINERD_TOML).unwrap();
    let before = tree(dest.path());

    let bin = runtime();
    let from = bin.parent().unwrap().to_str().unwrap().to_string();
    let agent = built_agent();
    let mut args = vec!["--destdir", dest.path().to_str().unwrap(), "--from", &from];
    let agent_arg;
    match &agent {
        Some(a) => {
            agent_arg = a.to_str().unwrap().to_string();
            args.extend(["--agent", &agent_arg]);
        }
        None => args.push("--no-agent"),
    }
    args.extend(["--podman", "--docker", "--containerd-imports"]);
    install(&args);

    // The files, where a user's tools look for them.
    let usr = dest.join("usr/local");
    let installed = usr.join("bin/berth");
    assert_eq!(fs::read(&installed).unwrap(), fs::read(&bin).unwrap(), "bin/berth");
    if let Some(a) = &agent {
        assert_eq!(
            fs::read(usr.join("lib/berth/berth-guest")).unwrap(),
            fs::read(a).unwrap()
        );
    }
    let page = fs::read_to_string(usr.join("share/man/man8/berth.8")).unwrap();
    assert!(page.contains(".TH berth 8"), "berth.8: {page}");
    for cmd in ["create", "run", "exec", "delete", "update", "features"] {
        let page = fs::read_to_string(usr.join(format!("share/man/man8/berth-{cmd}.8"))).unwrap();
        assert!(page.contains(&format!(".TH berth-{cmd} 8")), "berth-{cmd}.8");
    }
    let man = Command::new("man")
        .arg("-l")
        .arg(usr.join("share/man/man8/berth-exec.8"))
        .env("MANWIDTH", "100")
        .output();
    if let Some(man) = man.ok().filter(|m| m.status.success()) {
        let text = String::from_utf8_lossy(&man.stdout);
        assert!(text.contains("--preserve-fds"), "man berth-exec:\n{text}");
    }
    // bash completes the subcommands and an option from the installed file; the hidden
    // `generate` is not offered.
    let bash = usr.join("share/bash-completion/completions/berth");
    let complete = |words: &str| {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _berth berth \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[@]}}\"",
            bash.display()
        );
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("berth ex"), "exec");
    assert_eq!(complete("berth g"), "");
    assert!(complete("berth exec --pre").contains("--preserve-fds"));
    let zsh = fs::read_to_string(usr.join("share/zsh/site-functions/_berth")).unwrap();
    assert!(zsh.starts_with("#compdef berth") && zsh.contains("'exec:") && !zsh.contains("'generate:"));
    let fish = fs::read_to_string(usr.join("share/fish/vendor_completions.d/berth.fish")).unwrap();
    assert!(fish.contains("complete -c berth") && !fish.contains("\"generate\""));

    // The engine registrations: added, nothing else of the engines' own files touched.
    let conf = fs::read_to_string(dest.join("etc/containers/containers.conf.d/berth.conf")).unwrap();
    assert!(
        conf.contains("[engine.runtimes]\nberth = [\"/usr/local/bin/berth\"]"),
        "{conf}"
    );
    assert!(
        !conf.contains("runtime = "),
        "podman's default runtime is left alone: {conf}"
    );
    let daemon: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dest.join("etc/docker/daemon.json")).unwrap()).unwrap();
    let mut want: serde_json::Value = serde_json::from_str(DAEMON_JSON).unwrap();
    want["runtimes"]["berth"] = json!({ "path": "/usr/local/bin/berth" });
    assert_eq!(daemon, want, "daemon.json merged");
    let toml = fs::read_to_string(dest.join("etc/containerd/config.toml")).unwrap();
    assert_eq!(
        toml,
        CONTAINERD_TOML.replacen(
            "version = 2\n",
            "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
            1
        )
    );
    let handler = fs::read_to_string(dest.join("etc/containerd/conf.d/berth.toml")).unwrap();
    for want in [
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.berth]",
        "runtime_type = \"io.containerd.runc.v2\"",
        "BinaryName = \"/usr/local/bin/berth\"",
        "SystemdCgroup = true",
    ] {
        assert!(handler.contains(want), "conf.d/berth.toml has no {want}:\n{handler}");
    }
    // A second install (an upgrade) changes nothing and refuses nothing.
    install(&args);

    // The installed binary runs a container; and a VM container, finding its agent by itself.
    let mut rt = Runtime::new();
    rt.bin = installed.clone();
    let out = rt.run(&Bundle::sh("echo installed-ok"), &unique_id());
    assert_eq!(out.out(), "installed-ok\n", "{}", out.describe());
    let vm_missing = vm_host_missing().or_else(|| {
        std::env::var_os("BERTH_GUEST")
            .is_some()
            .then_some("BERTH_GUEST is set (this test is about finding the agent without it)")
    });
    match (vm_missing, &agent) {
        (Some(why), _) => notice(&format!("SKIP the VM part: {why}")),
        (None, None) => notice("SKIP the VM part: the static guest agent is not built (see docs/VM.md)"),
        (None, Some(_)) => {
            let mut b = Bundle::sh("echo vm-ok $(uname -r)");
            b.config["annotations"] = json!({ "run.berth.isolation": "vm" });
            let out = rt.run(&b, &unique_id());
            let host = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            assert!(
                out.out().starts_with("vm-ok "),
                "installed VM container: {}",
                out.describe()
            );
            assert_ne!(
                out.out().trim_start_matches("vm-ok ").trim(),
                host.trim(),
                "the VM runs its own kernel"
            );
        }
    }
    drop(rt);

    // Uninstall: exactly the tree that was there before.
    install(&["--uninstall", "--destdir", dest.path().to_str().unwrap()]);
    let mut after = tree(dest.path());
    let daemon_after: serde_json::Value = serde_json::from_slice(
        after
            .remove(Path::new("etc/docker/daemon.json"))
            .unwrap()
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        daemon_after,
        serde_json::from_str::<serde_json::Value>(DAEMON_JSON).unwrap()
    );
    let mut before = before;
    before.remove(Path::new("etc/docker/daemon.json"));
    let listed = |t: &BTreeMap<PathBuf, Option<Vec<u8>>>| t.keys().map(|k| k.display().to_string()).collect::<Vec<_>>();
    assert_eq!(listed(&after), listed(&before), "files left or lost by --uninstall");
    assert!(after == before, "a file's contents differ after --uninstall");
}
