//! Loading and validating a bundle's config.json. Every error names the field (as a JSON path such as
//! `mounts[2].destination`) or the file at fault. Unknown capability names are dropped with a warning,
//! as the runtime spec asks; everything else that is malformed is an error.

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
    let process = spec.process().as_ref().ok_or_else(|| err!("process: missing"))?;
    validate_process(process, "process")?;
    crate::linux::tuning::check_lsm(spec)?;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let d = m.destination();
        if d.as_os_str().is_empty() {
            bail!("mounts[{i}].destination: empty");
        }
        if !d.is_absolute() {
            // runtime-spec 1.1 allows relative destinations on Linux, taken from "/".
            crate::log::debug(&format!(
                "mounts[{i}].destination: {:?} is relative; taken from /",
                d.display()
            ));
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
        if let Some(offsets) = linux.time_offsets() {
            if !offsets.is_empty() && !seen.contains(&LinuxNamespaceType::Time) {
                bail!("linux.timeOffsets: offsets given but no time namespace in linux.namespaces");
            }
            for k in offsets.keys() {
                if k != "monotonic" && k != "boottime" {
                    bail!("linux.timeOffsets: unknown clock {k:?} (monotonic or boottime)");
                }
            }
        }
        if let Some(p) = linux.rootfs_propagation() {
            crate::linux::rootfs::propagation_flags(p)
                .ok_or_else(|| err!("linux.rootfsPropagation: unknown value {p:?}"))?;
        }
        for (k, _) in linux.sysctl().iter().flatten() {
            if k.is_empty() || k.contains("..") || k.starts_with('/') {
                bail!("linux.sysctl: invalid key {k:?}");
            }
        }
    }
    Ok(rootfs)
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
}
