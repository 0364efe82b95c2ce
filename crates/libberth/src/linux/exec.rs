//! `berth exec`, the command: its flags (`ExecOpts`), the process it runs — `--process FILE` (an OCI
//! `Process`, validated like config.json's) or the container's own recorded `process` with the
//! flags applied as runc applies them (env: later wins) — and the wait: unless detached, Berth
//! waits for the process, forwarding signals or relaying the terminal, and returns its exit status.
//! Starting the process inside the container is `join`'s.

use super::join::Confinement;
use crate::error::Context;
use crate::pid_file::write_pid_file;
use crate::signal::SignalGuard;
use crate::state::Record;
use crate::{bail, err, Result};
use oci_spec::runtime::{Capability, LinuxCapabilities, Process};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The flags of `berth exec`.
#[derive(Default)]
pub struct ExecOpts {
    /// `--process FILE`: the whole process as JSON (the other process flags are then ignored).
    pub process: Option<PathBuf>,
    pub args: Vec<String>,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    /// `UID[:GID]`.
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub caps: Vec<String>,
    pub no_new_privs: Option<bool>,
    pub apparmor: Option<String>,
    pub process_label: Option<String>,
    pub preserve_fds: i32,
    /// `--cgroup [CONTROLLERS:]PATH`: a sub-cgroup of the container's cgroup.
    pub cgroup: Vec<String>,
    pub ignore_paused: bool,
}

/// Parse `--process FILE`, naming the JSON path of a bad field, and validate it.
pub fn load_process(path: &Path) -> Result<Process> {
    let text = std::fs::read(path).with_ctx(|| format!("--process {}", path.display()))?;
    let origin = path.display().to_string();
    let mut value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| err!("{origin}: invalid JSON: {e}"))?;
    if !value.is_object() {
        bail!("{origin}: the process must be a JSON object");
    }
    crate::spec::drop_unknown_capabilities(&mut value, "/capabilities");
    // A process without `user` runs as root, as with runc.
    if let Some(obj) = value.as_object_mut() {
        obj.entry("user")
            .or_insert_with(|| serde_json::json!({ "uid": 0, "gid": 0 }));
    }
    let p: Process = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        err!("{origin}: {path}: {}", e.into_inner())
    })?;
    crate::spec::validate_process(&p, &origin)?;
    Ok(p)
}

fn parse_cap(name: &str) -> Result<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full)).map_err(|_| err!("--cap {name:?}: unknown capability"))
}

/// The environment with later entries overriding earlier ones of the same name (runc's rule),
/// each name kept at its first position.
fn merge_env(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for e in list {
        let key = e.split('=').next().unwrap_or("");
        match out.iter_mut().find(|o| o.split('=').next() == Some(key)) {
            Some(slot) => *slot = e,
            None => out.push(e),
        }
    }
    out
}

/// The process to exec: `--process FILE`, or the container's own process with the flags applied
/// the way runc applies them.
pub fn build_process(rec: &Record, o: &ExecOpts) -> Result<Process> {
    if let Some(path) = &o.process {
        let mut p = load_process(path)?;
        let env = merge_env(p.env().clone().unwrap_or_default());
        p.set_env(Some(env));
        return Ok(p);
    }
    if o.args.is_empty() {
        bail!("exec: no command given (pass ARGS after the container ID, or --process FILE)");
    }
    let mut p = match &rec.process {
        Some(p) => p.clone(),
        // A container created before the process was recorded: take it from the bundle.
        None => {
            let config = rec.bundle.join("config.json");
            let text = std::fs::read(&config).with_ctx(|| format!("container {:?}: {}", rec.id, config.display()))?;
            let spec = crate::spec::parse(&text, &config.display().to_string())?;
            spec.process()
                .clone()
                .ok_or_else(|| err!("{}: process: missing", config.display()))?
        }
    };
    p.set_args(Some(o.args.clone()));
    if let Some(cwd) = &o.cwd {
        if !cwd.is_absolute() {
            bail!("--cwd {:?}: must be an absolute path", cwd);
        }
        p.set_cwd(cwd.clone());
    }
    if let Some(a) = &o.apparmor {
        p.set_apparmor_profile(Some(a.clone()));
    }
    if let Some(l) = &o.process_label {
        p.set_selinux_label(Some(l.clone()));
    }
    if !o.caps.is_empty() {
        let mut c = p.capabilities().clone().unwrap_or_else(|| {
            let mut c = LinuxCapabilities::default();
            c.set_bounding(None);
            c.set_effective(None);
            c.set_permitted(None);
            c.set_inheritable(None);
            c.set_ambient(None);
            c
        });
        let add = |set: &Option<HashSet<Capability>>, cap: Capability| {
            let mut s = set.clone().unwrap_or_default();
            s.insert(cap);
            Some(s)
        };
        let mut unknown = Vec::new();
        for name in &o.caps {
            let Ok(cap) = parse_cap(name) else {
                // As runc: an unknown capability is warned about and ignored.
                unknown.push(name.as_str());
                continue;
            };
            c.set_bounding(add(c.bounding(), cap));
            c.set_effective(add(c.effective(), cap));
            c.set_permitted(add(c.permitted(), cap));
            // Ambient needs inheritable; like runc, only when the process has an inheritable set.
            if c.inheritable().is_some() {
                c.set_ambient(add(c.ambient(), cap));
            }
        }
        p.set_capabilities(Some(c));
        if !unknown.is_empty() {
            unknown.sort_unstable();
            unknown.dedup();
            crate::log::warn(&format!(
                "ignoring unknown or unavailable capabilities: [{}]",
                unknown.join(" ")
            ));
        }
    }
    let mut env = p.env().clone().unwrap_or_default();
    for (i, e) in o.env.iter().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            bail!("--env[{i}] {e:?}: not of the form KEY=VALUE");
        }
        env.push(e.clone());
    }
    p.set_env(Some(merge_env(env)));
    p.set_terminal(Some(o.tty));
    if let Some(n) = o.no_new_privs {
        p.set_no_new_privileges(Some(n));
    }
    let mut user = p.user().clone();
    if let Some(u) = &o.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        user.set_uid(
            uid.parse()
                .map_err(|_| err!("--user {u:?}: the uid must be a number (UID[:GID])"))?,
        );
        if let Some(g) = gid {
            user.set_gid(
                g.parse()
                    .map_err(|_| err!("--user {u:?}: the gid must be a number (UID[:GID])"))?,
            );
        }
    }
    if !o.additional_gids.is_empty() {
        let mut g = user.additional_gids().clone().unwrap_or_default();
        g.extend_from_slice(&o.additional_gids);
        user.set_additional_gids(Some(g));
    }
    p.set_user(user);
    crate::spec::validate_process(&p, "process")?;
    Ok(p)
}

/// Run `process` in the container of `rec`; returns the exit status (0 when detached).
pub fn exec(rec: &Record, process: &Process, o: &ExecOpts, conf: &Confinement) -> Result<i32> {
    let terminal = process.terminal() == Some(true);
    if o.detach && terminal && o.console_socket.is_none() {
        bail!("--tty: a detached exec needs --console-socket to hand the terminal to");
    }
    if o.console_socket.is_some() && !terminal {
        bail!("--console-socket: needs a terminal (--tty or process.terminal)");
    }
    let sigs = if o.detach { None } else { Some(SignalGuard::block()) };
    let spawned = super::join::spawn(rec, process, o, conf)?;
    if let Some(p) = &o.pid_file {
        write_pid_file(p, spawned.pid)?;
    }
    if o.detach {
        return Ok(0);
    }
    let sigs = sigs.expect("signals blocked");
    Ok(match spawned.master {
        Some(m) => super::tty::relay(m, spawned.pid, &sigs.set),
        None => sigs.wait_forwarding(spawned.pid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_env_entries_win_in_place() {
        let env = merge_env(vec!["A=1".into(), "B=2".into(), "A=3".into(), "C=".into()]);
        assert_eq!(env, ["A=3", "B=2", "C="]);
    }

    #[test]
    fn capability_names() {
        assert_eq!(parse_cap("CAP_SYS_ADMIN").unwrap(), Capability::SysAdmin);
        assert_eq!(parse_cap("net_raw").unwrap(), Capability::NetRaw);
        assert!(parse_cap("CAP_NOPE").is_err());
    }
}
