//! The container filesystem: root, mounts, masked/readonly paths, devices,
//! sysctls, propagation, --no-pivot.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::symlink;

/// Prints "yes" if `touch path` works in the container, else "no".
fn can_touch(path: &str) -> String {
    format!("touch {path} 2>/dev/null && echo yes || echo no")
}

#[test]
fn readonly_root_rejects_writes() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    assert_eq!(b.config["root"]["readonly"], true);
    assert_eq!(run_script(&mut b, &can_touch("/newfile")).trim(), "no");
    assert!(!b.rootfs().join("newfile").exists());
}

#[test]
fn writable_root_accepts_writes() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.writable_root();
    assert_eq!(run_script(&mut b, &can_touch("/newfile")).trim(), "yes");
    assert!(
        b.rootfs().join("newfile").exists(),
        "write must land in the bundle's rootfs"
    );
}

/// Moves the rootfs to `new_name` under the bundle, leaves a marker in it
/// and points root.path at `path_value(new location)`.
fn relocated_root_marker(b: &mut Bundle, path_value: impl Fn(&std::path::Path) -> String) -> String {
    let moved = b.dir.join("custom-root");
    fs::rename(b.rootfs(), &moved).unwrap();
    fs::write(moved.join("marker"), "moved-root\n").unwrap();
    b.config["root"]["path"] = json!(path_value(&moved));
    run_script(b, "cat /marker")
}

#[test]
fn root_path_relative_to_bundle() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    let out = relocated_root_marker(&mut b, |_| "custom-root".to_string());
    assert_eq!(out.trim(), "moved-root");
}

#[test]
fn root_path_absolute() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    let out = relocated_root_marker(&mut b, |p| p.to_str().unwrap().to_string());
    assert_eq!(out.trim(), "moved-root");
}

/// A host directory holding `file` with "host-data".
fn host_data_dir() -> TempDir {
    let d = TempDir::new("hostdata");
    fs::write(d.join("file"), "host-data\n").unwrap();
    d
}

#[test]
fn bind_mount_read_only() {
    if !require_root() {
        return;
    }
    let src = host_data_dir();
    let mut b = Bundle::default();
    b.bind(src.path(), "/mnt/ro", &["ro"]);
    let out = run_script(&mut b, &format!("cat /mnt/ro/file; {}", can_touch("/mnt/ro/new")));
    assert_eq!(lines(&out), ["host-data", "no"]);
    assert!(!src.join("new").exists());
}

#[test]
fn bind_mount_read_write() {
    if !require_root() {
        return;
    }
    let src = host_data_dir();
    let mut b = Bundle::default();
    b.bind(src.path(), "/mnt/rw", &["rw"]);
    let out = run_script(&mut b, "cat /mnt/rw/file; echo from-container > /mnt/rw/new && echo ok");
    assert_eq!(lines(&out), ["host-data", "ok"]);
    assert_eq!(fs::read_to_string(src.join("new")).unwrap(), "from-container\n");
}

#[test]
fn bind_mount_of_a_file() {
    if !require_root() {
        return;
    }
    let src = host_data_dir();
    let mut b = Bundle::default();
    // The destination does not exist in the (read-only) rootfs.
    b.bind(&src.join("file"), "/etc/from-host.conf", &["ro"]);
    let out = run_script(&mut b, "test -f /etc/from-host.conf && cat /etc/from-host.conf");
    assert_eq!(out.trim(), "host-data");
}

/// Host dir `top/` with a tmpfs mounted on `top/sub` holding `sub-marker`.
fn dir_with_submount() -> (TempDir, HostTmpfs) {
    let top = TempDir::new("rbind");
    fs::write(top.join("top-marker"), "top").unwrap();
    let sub = HostTmpfs::mount(&top.join("sub"));
    fs::write(sub.0.join("sub-marker"), "sub").unwrap();
    (top, sub)
}

#[test]
fn rbind_includes_submounts() {
    if !require_root() {
        return;
    }
    let (top, _sub) = dir_with_submount();
    let mut b = Bundle::default();
    b.add_mount(json!({
        "destination": "/mnt/r", "type": "bind", "source": top.path(), "options": ["rbind", "ro"]
    }));
    let out = run_script(&mut b, "cat /mnt/r/top-marker; echo; cat /mnt/r/sub/sub-marker");
    assert_eq!(lines(&out), ["top", "sub"]);
}

#[test]
fn plain_bind_excludes_submounts() {
    if !require_root() {
        return;
    }
    let (top, _sub) = dir_with_submount();
    let mut b = Bundle::default();
    b.bind(top.path(), "/mnt/b", &[]);
    let out = run_script(&mut b, "cat /mnt/b/top-marker; echo; ls -A /mnt/b/sub; echo end");
    assert_eq!(
        lines(&out),
        ["top", "end"],
        "a non-recursive bind must not carry the submount"
    );
}

#[test]
fn tmpfs_with_size_and_mode() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.add_mount(json!({
        "destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
        "options": ["size=1m", "mode=1770"]
    }));
    let out = run_script(&mut b, "stat -c %a /mnt/t; cat /proc/self/mountinfo");
    let (mode, mountinfo) = out.split_once('\n').unwrap();
    assert_eq!(mode, "1770");
    let m = parse_mountinfo(mountinfo);
    let t = mount_at(&m, "/mnt/t");
    assert_eq!(t.fstype, "tmpfs");
    assert!(t.has_super_option("size=1024k"), "{t:?}");
    assert!(t.has_super_option("mode=1770"), "{t:?}");
}

#[test]
fn special_filesystems_are_mounted() {
    if !require_root() {
        return;
    }
    let m = container_mounts(&mut Bundle::default());
    for (at, fstype) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
    ] {
        assert_eq!(mount_at(&m, at).fstype, fstype, "type of {at}");
    }
    // cgroup: a cgroup2 mount at /sys/fs/cgroup, or (v1/hybrid) cgroup
    // hierarchies below it.
    let cgroup_mounts: Vec<_> = m
        .iter()
        .filter(|x| x.mount_point.starts_with("/sys/fs/cgroup"))
        .filter(|x| x.fstype == "cgroup" || x.fstype == "cgroup2")
        .collect();
    assert!(
        !cgroup_mounts.is_empty(),
        "no cgroup filesystem under /sys/fs/cgroup: {m:#?}"
    );
    let sys = mount_at(&m, "/sys");
    assert!(sys.has_option("ro"), "/sys is mounted ro in the config: {sys:?}");
}

#[test]
fn mount_flags_nosuid_nodev_noexec() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.add_mount(json!({
        "destination": "/mnt/flags", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "noexec", "mode=755"]
    }));
    let out = run_script(
        &mut b,
        "cp /bin/busybox /mnt/flags/bb; /mnt/flags/bb true 2>/dev/null && echo exec || echo noexec; \
         cat /proc/self/mountinfo",
    );
    let (exec, mountinfo) = out.split_once('\n').unwrap();
    assert_eq!(exec, "noexec");
    let m = parse_mountinfo(mountinfo);
    let f = mount_at(&m, "/mnt/flags");
    for opt in ["nosuid", "nodev", "noexec"] {
        assert!(f.has_option(opt), "{opt} missing: {f:?}");
    }
}

#[test]
fn bind_mount_flags_are_applied() {
    if !require_root() {
        return;
    }
    let src = host_data_dir();
    let mut b = Bundle::default();
    b.bind(src.path(), "/mnt/flagged", &["nosuid", "nodev", "noexec", "ro"]);
    let m = container_mounts(&mut b);
    let f = mount_at(&m, "/mnt/flagged");
    for opt in ["nosuid", "nodev", "noexec", "ro"] {
        assert!(f.has_option(opt), "{opt} missing: {f:?}");
    }
}

#[test]
fn missing_destination_is_created() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default(); // read-only root: created before remount
    b.add_mount(json!({ "destination": "/new/deep/dir", "type": "tmpfs", "source": "tmpfs" }));
    let out = run_script(&mut b, "test -d /new/deep/dir && echo dir; cat /proc/self/mountinfo");
    let (dir, mountinfo) = out.split_once('\n').unwrap();
    assert_eq!(dir, "dir");
    assert_eq!(mount_at(&parse_mountinfo(mountinfo), "/new/deep/dir").fstype, "tmpfs");
}

#[test]
fn symlinked_destination_stays_inside_rootfs() {
    if !require_root() {
        return;
    }
    // A host directory that an absolute symlink in the rootfs points at.
    let host_target = TempDir::new("host-target");
    fs::write(host_target.join("untouched"), "host").unwrap();
    let mut b = Bundle::default();
    b.writable_root();
    symlink(host_target.path(), b.rootfs().join("evil")).unwrap();
    b.add_mount(json!({ "destination": "/evil", "type": "tmpfs", "source": "tmpfs" }));
    let target = host_target.path().to_str().unwrap().to_string();
    let out = run_script(
        &mut b,
        "echo inside > /evil/written; ls -A /evil; echo ---; cat /proc/self/mountinfo",
    );
    let (listing, mountinfo) = out.split_once("---\n").unwrap();
    // The tmpfs is what /evil shows: only the file written in the container.
    assert_eq!(lines(listing), ["written"], "{out}");
    // It is mounted at the symlink's target resolved inside the rootfs.
    let m = parse_mountinfo(mountinfo);
    assert_eq!(
        mount_at(&m, &target).fstype,
        "tmpfs",
        "mount must land at {target} inside the rootfs"
    );
    // The host directory was neither mounted over nor written to.
    let mut host_files: Vec<_> = fs::read_dir(host_target.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    host_files.sort();
    assert_eq!(host_files, ["untouched"]);
    let host_mounts = parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap());
    assert!(
        find_mount(&host_mounts, &target).is_none(),
        "host path {target} was mounted over"
    );
}

#[test]
fn masked_paths_hide_files_and_dirs() {
    if !require_root() {
        return;
    }
    // /proc/kcore is the usual example but this kernel may lack it; any
    // masked /proc file of the default config that exists will do.
    let proc_file = ["/proc/kcore", "/proc/timer_list", "/proc/keys"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("no maskable /proc file on this host");
    let mut b = Bundle::default();
    fs::create_dir_all(b.rootfs().join("secret-dir")).unwrap();
    fs::write(b.rootfs().join("secret-dir/key"), "s3cret").unwrap();
    fs::write(b.rootfs().join("secret-file"), "s3cret").unwrap();
    b.config["linux"]["maskedPaths"]
        .as_array_mut()
        .unwrap()
        .extend([json!("/secret-dir"), json!("/secret-file")]);
    let out = run_script(
        &mut b,
        &format!("wc -c < {proc_file}; ls -A /secret-dir | wc -l; wc -c < /secret-file"),
    );
    assert_eq!(lines(&out), ["0", "0", "0"], "{proc_file}, /secret-dir, /secret-file");
}

#[test]
fn unmasked_paths_stay_visible() {
    if !require_root() {
        return;
    }
    // Control for the test above: without masking the same paths show data.
    let mut b = Bundle::default();
    fs::create_dir_all(b.rootfs().join("secret-dir")).unwrap();
    fs::write(b.rootfs().join("secret-dir/key"), "s3cret").unwrap();
    let out = run_script(&mut b, "ls -A /secret-dir | wc -l");
    assert_eq!(out.trim(), "1");
}

#[test]
fn readonly_paths_reject_writes() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.writable_root();
    fs::create_dir_all(b.rootfs().join("data")).unwrap();
    b.config["linux"]["readonlyPaths"]
        .as_array_mut()
        .unwrap()
        .push(json!("/data"));
    let script = format!(
        "echo changed > /proc/sys/kernel/hostname 2>/dev/null && echo proc-writable || echo proc-ro; \
         hostname; {}; {}",
        can_touch("/data/x"),
        can_touch("/elsewhere")
    );
    let out = run_script(&mut b, &script);
    assert_eq!(lines(&out), ["proc-ro", "runc", "no", "yes"]);
}

#[test]
fn default_devices_exist_with_right_numbers() {
    if !require_root() {
        return;
    }
    let devices = [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ];
    let script: String = devices
        .iter()
        .map(|(p, _, _)| format!("stat -c '%n %F %t:%T' {p};"))
        .collect();
    let out = run_default(&script);
    let want: Vec<String> = devices
        .iter()
        .map(|(p, maj, min)| format!("{p} character special file {maj:x}:{min:x}"))
        .collect();
    assert_eq!(lines(&out), want);
}

#[test]
fn dev_links_and_pseudo_filesystems() {
    if !require_root() {
        return;
    }
    let out = run_default(
        "for l in fd stdin stdout stderr; do echo $l=$(readlink /dev/$l); done; \
         test -e /dev/ptmx && echo ptmx; test -d /dev/pts && echo pts; test -d /dev/shm && echo shm",
    );
    assert_eq!(
        lines(&out),
        [
            "fd=/proc/self/fd",
            "stdin=/proc/self/fd/0",
            "stdout=/proc/self/fd/1",
            "stderr=/proc/self/fd/2",
            "ptmx",
            "pts",
            "shm",
        ]
    );
}

#[test]
fn linux_devices_are_created() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.config["linux"]["devices"] = json!([{
        "path": "/dev/myloop", "type": "c", "major": 10, "minor": 237,
        "fileMode": 0o640, "uid": 1000, "gid": 2000
    }]);
    let out = run_script(&mut b, "stat -c '%F %t:%T %a %u %g' /dev/myloop");
    assert_eq!(
        out.trim(),
        format!("character special file {:x}:{:x} 640 1000 2000", 10, 237)
    );
}

#[test]
fn sysctl_in_new_network_namespace() {
    if !require_root() {
        return;
    }
    let host_before = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let mut b = Bundle::default();
    b.config["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1" });
    assert_eq!(run_script(&mut b, "cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_before
    );
}

#[test]
fn sysctl_in_new_ipc_namespace() {
    if !require_root() {
        return;
    }
    let host_before = fs::read_to_string("/proc/sys/kernel/msgmax").unwrap();
    let mut b = Bundle::default();
    b.config["linux"]["sysctl"] = json!({ "kernel.msgmax": "16384" });
    assert_eq!(run_script(&mut b, "cat /proc/sys/kernel/msgmax").trim(), "16384");
    assert_eq!(fs::read_to_string("/proc/sys/kernel/msgmax").unwrap(), host_before);
}

/// The container's root mount with `rootfsPropagation` set to `prop`.
fn root_mount_with_propagation(prop: &str) -> MountInfo {
    let mut b = Bundle::default();
    b.config["linux"]["rootfsPropagation"] = json!(prop);
    mount_at(&container_mounts(&mut b), "/").clone()
}

#[test]
fn rootfs_propagation_private() {
    if !require_root() {
        return;
    }
    let root = root_mount_with_propagation("private");
    assert!(
        !root
            .tags
            .iter()
            .any(|t| t.starts_with("shared:") || t.starts_with("master:")),
        "private root must not propagate: {root:?}"
    );
}

#[test]
fn rootfs_propagation_shared() {
    if !require_root() {
        return;
    }
    // RUNC GAP: runc 1.1.5 makes the rootfs' parent mount private before
    // bind-mounting it and never re-applies rootfsPropagation after
    // pivot_root, so "/" ends up private. The OCI spec says
    // rootfsPropagation "sets the rootfs's mount propagation".
    if runc_gap("runc 1.1 does not apply rootfsPropagation=shared to /") {
        return;
    }
    let root = root_mount_with_propagation("shared");
    assert!(
        root.tags.iter().any(|t| t.starts_with("shared:")),
        "root must be shared: {root:?}"
    );
}

#[test]
fn create_no_pivot_runs_in_rootfs() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::default();
    b.writable_root();
    fs::write(b.rootfs().join("marker"), "in-rootfs\n").unwrap();
    // The bundle's config.json is reachable only if the process escaped the
    // rootfs.
    let host_config = b.config_path();
    b.set_sh(&format!(
        "cat /marker > /result; test -e {} && echo escaped >> /result || echo confined >> /result",
        host_config.display()
    ));
    let id = unique_id();
    rt.create_with(&b, &id, &["--no-pivot"]).ok("create --no-pivot");
    rt.start(&id).ok("start");
    rt.wait_for_status(&id, "stopped");
    assert_eq!(
        fs::read_to_string(b.rootfs().join("result")).unwrap(),
        "in-rootfs\nconfined\n"
    );
}

#[test]
fn recursive_mount_options_reach_every_submount() {
    if !require_root() {
        return;
    }
    let (top, _sub) = dir_with_submount();
    let mut b = Bundle::default();
    b.add_mount(json!({
        "destination": "/mnt/r", "type": "bind", "source": top.path(),
        "options": ["rbind", "rro", "rnosuid", "rnodev", "rnoexec", "rnoatime", "rnosymfollow"]
    }));
    let mounts = container_mounts(&mut b);
    for point in ["/mnt/r", "/mnt/r/sub"] {
        let m = mount_at(&mounts, point);
        for opt in ["ro", "nosuid", "nodev", "noexec", "noatime", "nosymfollow"] {
            assert!(m.has_option(opt), "{point}: {opt} missing in {:?}", m.options);
        }
    }
    // The clearing ones undo what the source has, below too.
    let (top, sub) = dir_with_submount();
    let ro = std::ffi::CString::new(sub.0.to_str().unwrap()).unwrap();
    // SAFETY: remount the test's own tmpfs read-only and nosuid.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            ro.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let mut b = Bundle::default();
    b.add_mount(json!({
        "destination": "/mnt/r", "type": "bind", "source": top.path(),
        "options": ["rbind", "rrw", "rsuid", "rstrictatime"]
    }));
    let mounts = container_mounts(&mut b);
    let m = mount_at(&mounts, "/mnt/r/sub");
    assert!(m.has_option("rw") && !m.has_option("nosuid"), "{:?}", m.options);
    assert!(!m.has_option("relatime") && !m.has_option("noatime"), "{:?}", m.options);
}

#[test]
fn an_unknown_mount_option_is_an_error_naming_the_mount() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let dir = host_data_dir();
    for mount in [
        // runc passes an option it does not know to mount(2) as data, which a bind ignores: runc
        // runs this one (a deliberate difference, docs/COMPATIBILITY.md).
        json!({"destination": "/mnt/b", "type": "bind", "source": dir.path(), "options": ["rbind", "rnosuchthing"]}),
        json!({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nosuchthing"]}),
    ] {
        let id = unique_id();
        let mut b = Bundle::sh("echo ran");
        b.add_mount(mount.clone());
        let out = rt.run(&b, &id);
        if is_runc() && mount["type"] == "bind" {
            rt.delete_force(&id);
            continue;
        }
        assert!(
            !out.status.success() && !out.out().contains("ran"),
            "{mount}: {}",
            out.describe()
        );
        if !is_runc() {
            assert_err_mentions(&out, "options", "the mount's options");
            assert_err_mentions(&out, "nosuchthing", "the unknown option");
        }
        rt.delete_force(&id);
    }
}

#[test]
fn features_list_the_recursive_mount_options() {
    let out = Runtime::new().cmd(&["features"]).ok("features");
    let doc: Value = serde_json::from_str(&out.out()).unwrap();
    let opts: Vec<&str> = doc["mountOptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for o in [
        "rro",
        "rrw",
        "rnosuid",
        "rsuid",
        "rnodev",
        "rdev",
        "rnoexec",
        "rexec",
        "rnoatime",
        "ratime",
        "rnodiratime",
        "rdiratime",
        "rrelatime",
        "rnorelatime",
        "rstrictatime",
        "rnostrictatime",
        "rnosymfollow",
        "rsymfollow",
    ] {
        assert!(opts.contains(&o), "{o} not in {opts:?}");
    }
}

#[test]
fn proc_or_sys_on_a_symlink_is_refused() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    for (dest, typ) in [("proc", "proc"), ("sys", "sysfs")] {
        let id = unique_id();
        let mut b = Bundle::sh("echo ran");
        let target = b.rootfs().join("elsewhere");
        fs::create_dir_all(&target).unwrap();
        let _ = fs::remove_dir(b.rootfs().join(dest));
        symlink("/elsewhere", b.rootfs().join(dest)).unwrap();
        if typ == "sysfs"
            && !b.config["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["type"] == "sysfs")
        {
            b.add_mount(json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}));
        }
        let out = rt.run(&b, &id);
        assert!(
            !out.status.success() && !out.out().contains("ran"),
            "{dest}: {}",
            out.describe()
        );
        assert_err_mentions(&out, "ordinary directory", "a symlinked mount point");
        assert!(
            fs::read_dir(&target).unwrap().next().is_none(),
            "{dest}: mounted through the symlink"
        );
        rt.delete_force(&id);
    }
}

#[test]
fn a_read_only_dev_is_made_read_only_after_its_contents() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    let dev = mounts
        .iter_mut()
        .find(|m| m["destination"] == "/dev")
        .expect("a /dev mount in the default config");
    dev["options"].as_array_mut().unwrap().push(json!("ro"));
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/extra-null", "type": "c", "major": 1, "minor": 3, "fileMode": 438}]);
    let out = run_script(
        &mut b,
        "grep ' /dev ' /proc/self/mountinfo | cut -d' ' -f6; test -c /dev/null && test -c /dev/extra-null && echo nodes; \
         grep -q ' /dev/pts ' /proc/self/mountinfo && echo pts; touch /dev/x 2>/dev/null && echo writable || echo readonly",
    );
    let l = lines(&out);
    assert!(l[0].split(',').any(|o| o == "ro"), "{out}");
    assert!(
        l.contains(&"nodes".to_string()) && l.contains(&"pts".to_string()),
        "{out}"
    );
    assert!(l.contains(&"readonly".to_string()), "{out}");
}

#[test]
fn rootfs_propagation_unbindable_works() {
    if !require_root() {
        return;
    }
    if runc_gap("runc 1.1 sets unbindable on / before binding the rootfs, and the bind fails (EINVAL)") {
        return;
    }
    let mut b = Bundle::default();
    b.config["linux"]["rootfsPropagation"] = json!("unbindable");
    let mounts = container_mounts(&mut b);
    let root = mount_at(&mounts, "/");
    assert!(root.tags.iter().any(|t| t == "unbindable"), "{:?}", root.tags);
}

#[test]
fn no_pivot_leaves_no_host_procfs_for_a_nested_user_namespace() {
    if !require_root() {
        return;
    }
    if fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|s| s.trim() == "0") {
        notice(&format!("SKIP {}: user namespaces disabled", test_name()));
        return;
    }
    let rt = Runtime::new();
    let id = unique_id();
    let mut b = Bundle::sh(
        "unshare -mrpf sh -c 'echo in-userns; mkdir -p /tmp/p; mount -t proc proc /tmp/p && echo MOUNTED; \
         mount -t sysfs sysfs /tmp/p && echo SYS-MOUNTED; true'",
    );
    b.writable_root();
    // Mapping uid 0 of the container needs CAP_SETFCAP (Linux 5.12); docker's default set has it.
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETFCAP"]);
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set] = caps.clone();
    }
    symlink("busybox", b.rootfs().join("bin/unshare")).unwrap();
    let out = rt.run_with(&b, &id, &["--no-pivot"]);
    rt.delete_force(&id);
    let text = out.out();
    assert!(
        text.contains("in-userns"),
        "the nested user namespace was not made: {}",
        out.describe()
    );
    assert!(
        !text.contains("MOUNTED"),
        "a fresh procfs/sysfs was mounted: {}",
        out.describe()
    );
}
