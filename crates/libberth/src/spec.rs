//! Loading and validating a bundle's config.json. Every error names the field (as a JSON path such as
//! `mounts[2].destination`) or the file at fault. Unknown capability names are dropped with a warning,
//! as the runtime spec asks; everything else that is malformed is an error.

use crate::error::Context;
use crate::{bail, err, Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::{Path, PathBuf};

/// A loaded bundle: the parsed config and the resolved paths.
pub struct Bundle {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub spec: Spec,
}

/// Capability names the running kernel and our spec library know.
fn known_capability(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    serde_json::from_value::<oci_spec::runtime::Capability>(serde_json::Value::String(bare.into())).is_ok()
}

/// Drop capability names we do not know from every set, warning about each one.
pub(crate) fn drop_unknown_capabilities(v: &mut serde_json::Value, where_: &str) {
    let Some(caps) = v.pointer_mut(where_).and_then(|c| c.as_object_mut()) else {
        return;
    };
    for (set, list) in caps.iter_mut() {
        if let Some(arr) = list.as_array_mut() {
            arr.retain(|c| match c.as_str() {
                Some(name) if !known_capability(name) => {
                    crate::log::warn(&format!(
                        "process.capabilities.{set}: unknown capability {name:?} ignored"
                    ));
                    false
                }
                _ => true,
            });
        }
    }
}

/// Parse config.json text, naming the JSON path of the first bad field.
pub fn parse(text: &[u8], origin: &str) -> Result<Spec> {
    let mut value: serde_json::Value = serde_json::from_slice(text).map_err(|e| err!("{origin}: invalid JSON: {e}"))?;
    if !value.is_object() {
        bail!("{origin}: the configuration must be a JSON object");
    }
    drop_unknown_capabilities(&mut value, "/process/capabilities");
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        err!("{origin}: {path}: {}", e.into_inner())
    })
}

/// Load and validate `<bundle>/config.json`.
pub fn load_bundle(bundle: &Path) -> Result<Bundle> {
    let dir = if bundle.is_absolute() {
        clean(bundle)
    } else {
        clean(
            &std::env::current_dir()
                .map_err(|e| Error::sys("current directory", e))?
                .join(bundle),
        )
    };
    let config = dir.join("config.json");
    let text = std::fs::read(&config).map_err(|e| Error::sys(config.display(), e))?;
    let spec = parse(&text, &config.display().to_string())?;
    let rootfs = validate(&spec, &dir)?;
    Ok(Bundle { dir, rootfs, spec })
}

/// Lexically clean an absolute path (drop `.`, fold `..`), as runc records bundle paths.
fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Check what the runtime needs before it creates anything. Returns the absolute rootfs path.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| err!("root: missing (root.path is required)"))?;
    if root.path().as_os_str().is_empty() {
        bail!("root.path: empty");
    }
    let rootfs = bundle.join(root.path());
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("root.path: {} is not a directory", rootfs.display()),
        Err(e) => return Err(Error::sys(format!("root.path: {}", rootfs.display()), e)),
    }
    check_rootfs_not_symlink(bundle, &rootfs)?;
    let process = spec.process().as_ref().ok_or_else(|| err!("process: missing"))?;
    validate_process(process, "process")?;
    crate::linux::tuning::check_lsm(spec)?;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let d = m.destination();
        if d.as_os_str().is_empty() {
            bail!("mounts[{i}].destination: empty");
        }
        if !d.is_absolute() {
            bail!("mounts[{i}].destination: {:?} is not an absolute path", d.display());
        }
        if d.components().any(|c| c == std::path::Component::ParentDir) {
            bail!("mounts[{i}].destination: {:?} contains \"..\"", d.display());
        }
        for (name, maps) in [("uidMappings", m.uid_mappings()), ("gidMappings", m.gid_mappings())] {
            for (j, map) in maps.iter().flatten().enumerate() {
                check_id_mapping(
                    &format!("mounts[{i}].{name}[{j}]"),
                    map.container_id(),
                    map.host_id(),
                    map.size(),
                )?;
            }
        }
    }
    if let Some(hooks) = spec.hooks() {
        #[allow(deprecated)]
        let all = [
            ("prestart", hooks.prestart()),
            ("createRuntime", hooks.create_runtime()),
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
            ("poststart", hooks.poststart()),
            ("poststop", hooks.poststop()),
        ];
        for (name, list) in all {
            for (i, h) in list.iter().flatten().enumerate() {
                if !h.path().is_absolute() {
                    bail!("hooks.{name}[{i}].path: {:?} is not an absolute path", h.path());
                }
                if h.timeout().is_some_and(|t| t <= 0) {
                    bail!("hooks.{name}[{i}].timeout: must be greater than zero");
                }
            }
        }
    }
    if let Some(linux) = spec.linux() {
        let mut seen = Vec::new();
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            if seen.contains(&ns.typ()) {
                bail!(
                    "linux.namespaces[{i}].type: namespace {:?} listed twice",
                    ns.typ().to_string()
                );
            }
            seen.push(ns.typ());
            if let Some(p) = ns.path() {
                if !p.is_absolute() {
                    bail!("linux.namespaces[{i}].path: {:?} is not an absolute path", p);
                }
                if let Err(e) = std::fs::metadata(p) {
                    return Err(Error::sys(format!("linux.namespaces[{i}].path: {}", p.display()), e));
                }
            }
        }
        let new_userns = linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
        let has_maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if has_maps && !seen.contains(&LinuxNamespaceType::User) {
            bail!("linux.uidMappings: mappings given but no user namespace in linux.namespaces");
        }
        if new_userns && !has_maps {
            bail!("linux.uidMappings: a new user namespace needs uidMappings and gidMappings");
        }
        for (name, maps) in [
            ("uidMappings", linux.uid_mappings()),
            ("gidMappings", linux.gid_mappings()),
        ] {
            for (i, m) in maps.iter().flatten().enumerate() {
                check_id_mapping(&format!("linux.{name}[{i}]"), m.container_id(), m.host_id(), m.size())?;
            }
        }
        for (i, d) in linux.devices().iter().flatten().enumerate() {
            check_device_numbers(&format!("linux.devices[{i}]"), d.major(), d.minor())?;
            if let Some(uid) = d.uid() {
                check_id(&format!("linux.devices[{i}].uid"), uid)?;
            }
            if let Some(gid) = d.gid() {
                check_id(&format!("linux.devices[{i}].gid"), gid)?;
            }
        }
        if let Some(offsets) = linux.time_offsets() {
            if !offsets.is_empty() && !seen.contains(&LinuxNamespaceType::Time) {
                bail!("linux.timeOffsets: offsets given but no time namespace in linux.namespaces");
            }
            for (k, o) in offsets {
                if k != "monotonic" && k != "boottime" {
                    bail!("linux.timeOffsets: unknown clock {k:?} (monotonic or boottime)");
                }
                if o.nanosecs().is_some_and(|n| n >= 1_000_000_000) {
                    bail!("linux.timeOffsets.{k}.nanosecs: must be below 1000000000");
                }
            }
        }
        if let Some(profile) = linux.seccomp() {
            crate::linux::seccomp::check_startable(profile)?;
        }
        if let Some(p) = linux.rootfs_propagation() {
            crate::linux::rootfs::propagation_flags(p)
                .ok_or_else(|| err!("linux.rootfsPropagation: unknown value {p:?}"))?;
        }
        for (k, _) in linux.sysctl().iter().flatten() {
            if k.is_empty() || k.contains("..") || k.starts_with('/') {
                bail!("linux.sysctl: invalid key {k:?}");
            }
            check_sysctl_namespaced(k, linux.namespaces().as_deref().unwrap_or(&[]))?;
        }
    }
    Ok(rootfs)
}

/// The highest user or group ID the runtime passes on: IDs are 32-bit unsigned in the kernel, but
/// (uid_t)-1 means "no change" to setresuid/setresgid/chown, and runc refuses everything above 2^31-1.
pub const MAX_ID: u32 = i32::MAX as u32;

/// A user or group ID from the config (or an exec flag) must be 0..=2^31-1: 4294967295 is -1 to
/// setresuid ("leave unchanged"), which would leave the process root.
pub fn check_id(field: &str, id: u32) -> Result<()> {
    if id > MAX_ID {
        bail!("{field}: {id} is out of range (0-{MAX_ID})");
    }
    Ok(())
}

/// A uid/gid mapping must be non-empty and both its ranges must fit in 32 bits without reaching
/// 4294967295 (the kernel's own rule for /proc/PID/uid_map).
fn check_id_mapping(field: &str, container_id: u32, host_id: u32, size: u32) -> Result<()> {
    if size == 0 {
        bail!("{field}.size: must be at least 1");
    }
    let end = |start: u32| u64::from(start) + u64::from(size);
    if end(container_id) > u64::from(u32::MAX) {
        bail!("{field}: containerID {container_id} + size {size} is past the last ID (4294967294)");
    }
    if end(host_id) > u64::from(u32::MAX) {
        bail!("{field}: hostID {host_id} + size {size} is past the last ID (4294967294)");
    }
    Ok(())
}

/// A device number must fit the kernel's dev_t encoding (12-bit major, 20-bit minor), or mknod
/// would make a different device than the one the config (and the device cgroup) names.
fn check_device_numbers(field: &str, major: i64, minor: i64) -> Result<()> {
    if !(0..=0xfff).contains(&major) {
        bail!("{field}.major: {major} is out of range (0-4095)");
    }
    if !(0..=0xf_ffff).contains(&minor) {
        bail!("{field}.minor: {minor} is out of range (0-1048575)");
    }
    Ok(())
}

/// Sysctls in an IPC namespace (runc's list).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Whether the container gets its own namespace of `typ`: a new one, or a joined one (path) that
/// is not the runtime's own (comparing the namespace files' device and inode, as runc does for
/// the network namespace).
fn own_namespace(
    namespaces: &[oci_spec::runtime::LinuxNamespace],
    typ: LinuxNamespaceType,
    proc_name: &str,
) -> Result<bool> {
    let Some(ns) = namespaces.iter().find(|n| n.typ() == typ) else {
        return Ok(false);
    };
    let Some(path) = ns.path() else {
        return Ok(true);
    };
    use std::os::unix::fs::MetadataExt;
    let joined = std::fs::metadata(path).with_ctx(|| format!("linux.namespaces ({proc_name}): {}", path.display()))?;
    let ours =
        std::fs::metadata(format!("/proc/self/ns/{proc_name}")).with_ctx(|| format!("/proc/self/ns/{proc_name}"))?;
    Ok((joined.dev(), joined.ino()) != (ours.dev(), ours.ino()))
}

/// A sysctl is only written when it belongs to a namespace the container has of its own: the
/// IPC ones with an IPC namespace, `net.*` with a network namespace, `kernel.domainname` with a UTS
/// namespace. Everything else (kernel.core_pattern, vm.*, ...) would change the host: refused.
fn check_sysctl_namespaced(key: &str, namespaces: &[oci_spec::runtime::LinuxNamespace]) -> Result<()> {
    // Keys may use '/' as the separator, as under /proc/sys.
    let k = key.replace('/', ".");
    if IPC_SYSCTLS.contains(&k.as_str()) || k.starts_with("fs.mqueue.") {
        if own_namespace(namespaces, LinuxNamespaceType::Ipc, "ipc")? {
            return Ok(());
        }
        bail!("linux.sysctl: {key:?} is not allowed without an IPC namespace of the container's own");
    }
    if k.starts_with("net.") {
        if own_namespace(namespaces, LinuxNamespaceType::Network, "net")? {
            return Ok(());
        }
        bail!("linux.sysctl: {key:?} is not allowed in the host's network namespace");
    }
    if k == "kernel.hostname" {
        bail!("linux.sysctl: {key:?} is not allowed; use the hostname field instead");
    }
    if k == "kernel.domainname" {
        if own_namespace(namespaces, LinuxNamespaceType::Uts, "uts")? {
            return Ok(());
        }
        bail!("linux.sysctl: {key:?} is not allowed without a UTS namespace of the container's own");
    }
    bail!("linux.sysctl: {key:?} is not in a namespace of the container's own (it would change the host)")
}

/// root.path must not be (or pass through) a symlink: the image decides where such a link points.
fn check_rootfs_not_symlink(bundle: &Path, rootfs: &Path) -> Result<()> {
    let real = std::fs::canonicalize(rootfs).with_ctx(|| format!("root.path: {}", rootfs.display()))?;
    let base = std::fs::canonicalize(bundle).with_ctx(|| format!("bundle {}", bundle.display()))?;
    // root.path is lexically cleaned and taken from the resolved bundle (an absolute root.path
    // replaces it), so only a symlink within root.path itself makes the two differ.
    if real != clean(&base.join(rootfs.strip_prefix(bundle).unwrap_or(rootfs))) {
        bail!(
            "root.path: {} is a symlink or passes through one (to {}); refused",
            rootfs.display(),
            real.display()
        );
    }
    Ok(())
}

/// Checks shared by a container's process and an exec'd one.
pub fn validate_process(p: &oci_spec::runtime::Process, field: &str) -> Result<()> {
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        bail!("{field}.args: must name the program to run");
    }
    if !p.cwd().is_absolute() {
        bail!("{field}.cwd: {:?} is not an absolute path", p.cwd());
    }
    for (i, e) in p.env().iter().flatten().enumerate() {
        if !e.contains('=') {
            bail!("{field}.env[{i}]: {e:?} is not of the form KEY=VALUE");
        }
    }
    let user = p.user();
    check_id(&format!("{field}.user.uid"), user.uid())?;
    check_id(&format!("{field}.user.gid"), user.gid())?;
    for (i, g) in user.additional_gids().iter().flatten().enumerate() {
        check_id(&format!("{field}.user.additionalGids[{i}]"), *g)?;
    }
    if let Some(adj) = p.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            bail!("{field}.oomScoreAdj: {adj} is out of range (-1000 to 1000)");
        }
    }
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        if r.soft() > r.hard() {
            bail!(
                "{field}.rlimits[{i}]: soft limit {} is above the hard limit {}",
                r.soft(),
                r.hard()
            );
        }
    }
    if let Some(size) = p.console_size() {
        if size.height() > u64::from(u16::MAX) || size.width() > u64::from(u16::MAX) {
            bail!(
                "{field}.consoleSize: {}x{} is out of range (at most 65535 each)",
                size.width(),
                size.height()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_of_a_type_error() {
        let e = parse(
            br#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":"x","gid":0}}}"#,
            "c",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("process.user.uid"), "{e}");
    }

    #[test]
    fn names_an_unknown_namespace() {
        let e = parse(br#"{"linux":{"namespaces":[{"type":"pid"},{"type":"bogus"}]}}"#, "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux.namespaces[1].type") && e.contains("bogus"), "{e}");
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(parse(b"{", "c").unwrap_err().to_string().contains("invalid JSON"));
        assert!(parse(b"[]", "c").is_err());
    }

    #[test]
    fn unknown_capabilities_are_dropped() {
        let s = parse(
            br#"{"process":{"cwd":"/","user":{"uid":0,"gid":0},"capabilities":{"bounding":["CAP_KILL","CAP_NOPE"]}}}"#,
            "c",
        )
        .unwrap();
        let caps = s.process().as_ref().unwrap().capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 1);
    }

    fn spec_with(json: &str) -> Spec {
        parse(json.as_bytes(), "c").unwrap()
    }

    #[test]
    fn rejects_empty_mount_destination_and_missing_rootfs() {
        let dir = std::env::temp_dir().join(format!("berth-spec-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let base = r#""root":{"path":"rootfs"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}"#;
        let s = spec_with(&format!(r#"{{{base},"mounts":[{{"destination":"","type":"tmpfs"}}]}}"#));
        assert!(validate(&s, &dir)
            .unwrap_err()
            .to_string()
            .contains("mounts[0].destination"));
        let s = spec_with(&format!(r#"{{{base}}}"#));
        assert!(validate(&s, &dir).is_ok());
        let s = spec_with(r#"{"root":{"path":"nope"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#);
        assert!(validate(&s, &dir).unwrap_err().to_string().contains("root.path"));
        let s = spec_with(r#"{"root":{"path":"rootfs"},"process":{"cwd":"/","args":[],"user":{"uid":0,"gid":0}}}"#);
        assert!(validate(&s, &dir).unwrap_err().to_string().contains("process.args"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn process_error(user: &str, extra: &str) -> Option<String> {
        let s = spec_with(&format!(
            r#"{{"process":{{"cwd":"/","args":["sh"],"user":{user}{extra}}}}}"#
        ));
        validate_process(s.process().as_ref().unwrap(), "process")
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn ids_above_2_31_minus_1_are_refused_naming_the_field() {
        for (user, field) in [
            (r#"{"uid":4294967295,"gid":0}"#, "process.user.uid"),
            (r#"{"uid":0,"gid":4294967295}"#, "process.user.gid"),
            (r#"{"uid":2147483648,"gid":0}"#, "process.user.uid"),
            (
                r#"{"uid":0,"gid":0,"additionalGids":[1,4294967295]}"#,
                "process.user.additionalGids[1]",
            ),
        ] {
            let e = process_error(user, "").unwrap_or_default();
            assert!(e.contains(field) && e.contains("out of range"), "{user}: {e}");
        }
        assert_eq!(process_error(r#"{"uid":2147483647,"gid":2147483647}"#, ""), None);
    }

    #[test]
    fn process_numbers_are_range_checked() {
        let u = r#"{"uid":0,"gid":0}"#;
        assert!(process_error(u, r#","oomScoreAdj":1001"#)
            .unwrap()
            .contains("process.oomScoreAdj"));
        assert!(process_error(u, r#","oomScoreAdj":-1001"#)
            .unwrap()
            .contains("process.oomScoreAdj"));
        assert_eq!(process_error(u, r#","oomScoreAdj":-1000"#), None);
        assert!(process_error(u, r#","consoleSize":{"height":65536,"width":80}"#)
            .unwrap()
            .contains("process.consoleSize"));
        assert!(
            process_error(u, r#","rlimits":[{"type":"RLIMIT_NOFILE","soft":2,"hard":1}]"#)
                .unwrap()
                .contains("process.rlimits[0]")
        );
    }

    #[test]
    fn id_mappings_must_not_overflow() {
        assert!(check_id_mapping("m", 0, 100000, 65536).is_ok());
        assert!(check_id_mapping("m", 0, 0, u32::MAX).is_ok());
        assert!(check_id_mapping("m", 1, 0, u32::MAX)
            .unwrap_err()
            .to_string()
            .contains("containerID"));
        assert!(check_id_mapping("m", 0, 4294967295, 1)
            .unwrap_err()
            .to_string()
            .contains("hostID"));
        assert!(check_id_mapping("m", 0, 0, 0)
            .unwrap_err()
            .to_string()
            .contains("m.size"));
    }

    #[test]
    fn device_numbers_fit_dev_t() {
        assert!(check_device_numbers("d", 4095, 1048575).is_ok());
        assert!(check_device_numbers("d", 4096, 0)
            .unwrap_err()
            .to_string()
            .contains("d.major"));
        assert!(check_device_numbers("d", -1, 0)
            .unwrap_err()
            .to_string()
            .contains("d.major"));
        assert!(check_device_numbers("d", 1, 1 << 20)
            .unwrap_err()
            .to_string()
            .contains("d.minor"));
    }

    #[test]
    fn only_namespaced_sysctls_are_allowed() {
        let ns = |list: &str| -> Vec<oci_spec::runtime::LinuxNamespace> { serde_json::from_str(list).unwrap() };
        let all = ns(r#"[{"type":"ipc"},{"type":"network"},{"type":"uts"},{"type":"mount"}]"#);
        let none = ns(r#"[{"type":"mount"}]"#);
        let host_net = ns(r#"[{"type":"network","path":"/proc/self/ns/net"}]"#);
        for k in [
            "kernel.shmmax",
            "fs.mqueue.msg_max",
            "net.ipv4.ip_forward",
            "kernel.domainname",
            "net/ipv4/ip_forward",
        ] {
            assert!(check_sysctl_namespaced(k, &all).is_ok(), "{k}");
            let e = check_sysctl_namespaced(k, &none).unwrap_err().to_string();
            assert!(e.contains("linux.sysctl") && e.contains(k), "{k}: {e}");
        }
        assert!(check_sysctl_namespaced("net.ipv4.ip_forward", &host_net).is_err());
        for k in [
            "kernel.core_pattern",
            "kernel/core_pattern",
            "vm.overcommit_memory",
            "kernel.hostname",
        ] {
            let e = check_sysctl_namespaced(k, &all).unwrap_err().to_string();
            assert!(e.contains(k), "{k}: {e}");
        }
    }

    #[test]
    fn relative_and_dotdot_mount_destinations_and_a_symlinked_rootfs_are_refused() {
        let dir = std::env::temp_dir().join(format!("berth-spec-test-dest-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        let base = r#""root":{"path":"real"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}"#;
        for d in ["mnt/rel", "/mnt/../../etc"] {
            let s = spec_with(&format!(
                r#"{{{base},"mounts":[{{"destination":"/ok","type":"tmpfs"}},{{"destination":"{d}","type":"tmpfs"}}]}}"#
            ));
            let e = validate(&s, &dir).unwrap_err().to_string();
            assert!(e.contains("mounts[1].destination"), "{d}: {e}");
        }
        std::os::unix::fs::symlink("real", dir.join("link")).unwrap();
        let s = spec_with(r#"{"root":{"path":"link"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#);
        let e = validate(&s, &dir).unwrap_err().to_string();
        assert!(e.contains("root.path") && e.contains("symlink"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
