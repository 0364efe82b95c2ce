//! The OCI hooks of a VM container (docs/VM.md, "Hooks").
//!
//! - prestart and createRuntime run on the host during `create`, once the VM is up and before the
//!   guest makes the container (so before its pivot_root), with the state on stdin: status
//!   `creating`, pid = the monitor (the pid `state` reports). A failure fails `create`.
//! - createContainer and startContainer belong to the container's namespaces, which are in the
//!   guest: the guest's libberth runs them at their usual points. startContainer's path is looked
//!   up in the container (as the spec says). createContainer's path is meant for the runtime's
//!   namespace, the host's, which the guest cannot see: it is looked up in the container's rootfs
//!   instead (Berth prefixes it with the guest's mount point of the rootfs, /run/rootfs), and
//!   runs before pivot_root, in the guest's root, where that rootfs is at /run/rootfs.
//! - poststart runs on the host after the guest started the process, before `start` returns.
//! - poststop runs on the host at `delete` (shared with Linux containers, from the record).

use crate::state::{Record, Status};
use crate::Result;
use oci_spec::runtime::{Hook, Spec};

/// The state JSON a host hook gets on stdin.
pub fn state_json(rec: &Record, pid: i32, status: Status) -> Vec<u8> {
    let mut doc = rec.doc(status);
    doc.pid = pid;
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// prestart then createRuntime, on the host.
pub fn create_runtime(spec: &Spec, rec: &Record, pid: i32) -> Result<()> {
    let Some(h) = spec.hooks() else { return Ok(()) };
    let st = state_json(rec, pid, Status::Creating);
    #[allow(deprecated)]
    if let Some(list) = h.prestart() {
        crate::hooks::run_all("prestart", list, &st)?;
    }
    if let Some(list) = h.create_runtime() {
        crate::hooks::run_all("createRuntime", list, &st)?;
    }
    Ok(())
}

/// The poststart hooks of a spec (kept by `run`, which gives the bundle away to create).
pub fn poststart_list(spec: &Spec) -> Vec<Hook> {
    spec.hooks()
        .as_ref()
        .and_then(|h| h.poststart().clone())
        .unwrap_or_default()
}

/// poststart, on the host: a failure is a warning (the process runs already).
pub fn poststart(list: &[Hook], rec: &Record) {
    if list.is_empty() {
        return;
    }
    if let Err(e) = crate::hooks::run_all("poststart", list, &state_json(rec, rec.pid, Status::Running)) {
        crate::log::warn(&e.to_string());
    }
}

/// The hooks the guest runs: createContainer (path looked up in the rootfs) and startContainer.
pub fn adapt_guest_hooks(v: &mut serde_json::Value) {
    let Some(o) = v.as_object_mut() else { return };
    let Some(h) = o.remove("hooks") else { return };
    let mut keep = serde_json::Map::new();
    if let Some(mut list) = h.get("createContainer").cloned() {
        for hook in list.as_array_mut().into_iter().flatten() {
            if let Some(p) = hook["path"].as_str() {
                hook["path"] = format!("{}/{}", super::proto::GUEST_ROOTFS, p.trim_start_matches('/')).into();
            }
        }
        keep.insert("createContainer".into(), list);
    }
    if let Some(list) = h.get("startContainer").cloned() {
        keep.insert("startContainer".into(), list);
    }
    if !keep.is_empty() {
        o.insert("hooks".into(), keep.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_keeps_container_hooks_with_create_container_in_the_rootfs() {
        let mut v = serde_json::json!({"hooks": {
            "prestart": [{"path": "/p"}], "createRuntime": [{"path": "/r"}],
            "createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "true"]}],
            "startContainer": [{"path": "/hooks/s.sh"}],
            "poststart": [{"path": "/ps"}], "poststop": [{"path": "/pp"}]}});
        adapt_guest_hooks(&mut v);
        let h = v["hooks"].as_object().unwrap();
        assert_eq!(h.len(), 2, "{v}");
        assert_eq!(h["createContainer"][0]["path"], "/run/rootfs/bin/sh");
        assert_eq!(h["createContainer"][0]["args"][0], "sh");
        assert_eq!(h["startContainer"][0]["path"], "/hooks/s.sh");
        let mut none = serde_json::json!({"hooks": {"poststop": [{"path": "/pp"}]}});
        adapt_guest_hooks(&mut none);
        assert!(none.get("hooks").is_none());
    }
}
