//! The config.json the guest sees: what of the host's config stays on the host (hooks, CPU and
//! device limits, namespace paths, bind mount sources) and what the guest's container gets instead.

use super::*;
use crate::{err, Result};
use oci_spec::runtime::Spec;
use std::os::fd::AsRawFd;

/// The config.json the guest sees: the root where the agent mounts it, only the hooks that run in
/// the container (hooks.rs), no host CPU/device limits (confine.rs), no host namespace paths, and
/// bind mounts whose sources are their shares in the guest (binds.rs).
pub fn guest_config(spec: &Spec, binds: &binds::Binds) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(spec).map_err(|e| err!("config.json: {e}"))?;
    v["root"]["path"] = proto::GUEST_ROOTFS.into();
    hooks::adapt_guest_hooks(&mut v);
    confine::adapt_guest_resources(&mut v);
    if let Some(o) = v.as_object_mut() {
        o.remove("vm");
        // Inside the guest the container is a Linux container.
        if let Some(a) = o.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            a.remove(ANN_ISOLATION);
        }
    }
    if let Some(ns) = v.pointer_mut("/linux/namespaces").and_then(|n| n.as_array_mut()) {
        // The container uses the guest's network namespace, which the agent configures as the
        // host's (vm/net.rs).
        ns.retain(|n| n["type"] != "network");
        // A host namespace joined by path cannot be joined from the guest: the container gets a
        // new one of that type there (not the guest's own: the agent's pid, ipc, mount, uts and
        // cgroup namespaces stay out of the container's reach); a user namespace by path is
        // dropped (its mappings are the host's).
        ns.retain(|n| n.get("path").is_none() || n["type"] != "user");
        for n in ns.iter_mut() {
            if let Some(o) = n.as_object_mut() {
                if o.remove("path").is_some() {
                    crate::log::warn(&format!(
                        "linux.namespaces: the {} namespace path is a host namespace; a new one in the VM",
                        o.get("type").and_then(|t| t.as_str()).unwrap_or("?")
                    ));
                }
            }
        }
    }
    binds::adapt_guest_mounts(&mut v, binds);
    Ok(v)
}

/// The host name of the UTS namespace the config joins by path, if it does (read in a thread of
/// its own that enters it; the caller's namespace is not changed).
pub(super) fn joined_hostname(spec: &Spec) -> Option<String> {
    let path = spec
        .linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Uts)?
        .path()
        .clone()?;
    let ns = std::fs::File::open(&path).ok()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns of this thread's UTS namespace; uname into a local struct.
            unsafe {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS) != 0 {
                    return None;
                }
                let mut u: libc::utsname = std::mem::zeroed();
                if libc::uname(&mut u) != 0 {
                    return None;
                }
                let name = std::ffi::CStr::from_ptr(u.nodename.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                Some(name).filter(|n| !n.is_empty() && n.len() <= 64)
            }
        })
        .join()
        .ok()
        .flatten()
    })
}
