//! The container process: args, env, cwd, user, umask, rlimits,
//! capabilities, noNewPrivileges, oomScoreAdj, hostname, domainname.

mod common;

use common::*;

/// Capability bit numbers (linux/capability.h).
const CAP_CHOWN: u32 = 0;
const CAP_KILL: u32 = 5;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_AUDIT_WRITE: u32 = 29;

fn mask(bits: &[u32]) -> u64 {
    bits.iter().fold(0, |m, b| m | (1u64 << b))
}

/// The Cap* lines of the container's /proc/self/status, parsed.
struct Caps {
    inh: u64,
    prm: u64,
    eff: u64,
    bnd: u64,
    amb: u64,
}

fn caps_of(b: &mut Bundle) -> Caps {
    let status = run_script(b, "cat /proc/self/status");
    let field = |k: &str| u64::from_str_radix(status_field(&status, k), 16).unwrap();
    Caps {
        inh: field("CapInh"),
        prm: field("CapPrm"),
        eff: field("CapEff"),
        bnd: field("CapBnd"),
        amb: field("CapAmb"),
    }
}

#[test]
fn args_are_passed_verbatim() {
    if !require_root() {
        return;
    }
    let b = Bundle::new(&["sh", "-c", "printf '[%s]' \"$0\" \"$@\"", "zero", "a b", "", "*"]);
    assert_eq!(run_ok(&b), "[zero][a b][][*]");
}

#[test]
fn env_is_the_configured_one() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::new(&["env"]);
    b.config["process"]["env"] = json!(["PATH=/bin", "FOO=bar baz", "EMPTY=", "HOME=/home/x"]);
    let mut env = lines(&run_ok(&b));
    env.sort();
    assert_eq!(env, ["EMPTY=", "FOO=bar baz", "HOME=/home/x", "PATH=/bin"]);
}

#[test]
fn env_gets_home_from_passwd_when_unset() {
    if !require_root() {
        return;
    }
    // runc behaviour: HOME is the user's home from the rootfs /etc/passwd
    // when process.env does not set it.
    let mut b = Bundle::new(&["env"]);
    b.config["process"]["env"] = json!(["PATH=/bin"]);
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    let mut env = lines(&run_ok(&b));
    env.sort();
    assert_eq!(env, ["HOME=/home/user", "PATH=/bin"]);
}

#[test]
fn cwd_is_applied() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::new(&["pwd"]);
    b.config["process"]["cwd"] = json!("/home/user");
    assert_eq!(run_ok(&b).trim(), "/home/user");
}

#[test]
fn cwd_missing_in_rootfs_is_created() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::new(&["pwd"]);
    b.config["process"]["cwd"] = json!("/work/dir");
    assert_eq!(run_ok(&b).trim(), "/work/dir");
}

#[test]
fn user_uid_gid_and_additional_gids() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000, "additionalGids": [2000, 5] });
    let out = run_script(&mut b, "id -u; id -g; id -G");
    let l = lines(&out);
    assert_eq!(l[0], "1000", "{out}");
    assert_eq!(l[1], "1000", "{out}");
    let mut groups: Vec<&str> = l[2].split_whitespace().collect();
    groups.sort();
    groups.dedup();
    assert_eq!(groups, ["1000", "2000", "5"], "{out}");
}

#[test]
fn user_without_additional_gids_has_only_primary_group() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    let out = run_script(&mut b, "id -G");
    assert_eq!(out.trim(), "1000", "supplementary groups of the runtime must not leak");
}

#[test]
fn umask_is_applied() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.config["process"]["user"]["umask"] = json!(0o027);
    assert_eq!(run_script(&mut b, "umask").trim(), "0027");
}

#[test]
fn rlimit_nofile_soft_and_hard() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    // Below the host's hard limit: the runtime cannot raise hard limits here.
    b.config["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "soft": 123, "hard": 456 }]);
    assert_eq!(lines(&run_script(&mut b, "ulimit -n; ulimit -Hn")), ["123", "456"]);
}

#[test]
fn capabilities_small_set_in_every_set() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    let set = json!(["CAP_KILL", "CAP_CHOWN"]);
    b.config["process"]["capabilities"] = json!({
        "bounding": set, "effective": set, "permitted": set, "inheritable": set, "ambient": set
    });
    let caps = caps_of(&mut b);
    let want = mask(&[CAP_KILL, CAP_CHOWN]);
    assert_eq!(caps.bnd, want, "CapBnd {:016x}", caps.bnd);
    assert_eq!(caps.eff, want, "CapEff {:016x}", caps.eff);
    assert_eq!(caps.prm, want, "CapPrm {:016x}", caps.prm);
    assert_eq!(caps.inh, want, "CapInh {:016x}", caps.inh);
    assert_eq!(caps.amb, want, "CapAmb {:016x}", caps.amb);
}

#[test]
fn capabilities_default_set() {
    if !require_root() {
        return;
    }
    let caps = caps_of(&mut Bundle::default());
    let want = mask(&[CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE]);
    assert_eq!(want, 0x2000_0420);
    assert_eq!(caps.bnd, want, "CapBnd {:016x}", caps.bnd);
    assert_eq!(caps.eff, want, "CapEff {:016x}", caps.eff);
    assert_eq!(caps.prm, want, "CapPrm {:016x}", caps.prm);
    assert_eq!(caps.inh, 0, "CapInh {:016x}", caps.inh);
    // The default spec lists ambient caps but no inheritable ones; the kernel
    // only raises an ambient cap that is also inheritable.
    assert_eq!(caps.amb, 0, "CapAmb {:016x}", caps.amb);
}

#[test]
fn capabilities_are_kept_by_non_root_user() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    let set = json!(["CAP_CHOWN"]);
    b.config["process"]["capabilities"] = json!({
        "bounding": set, "effective": set, "permitted": set, "inheritable": set, "ambient": set
    });
    let caps = caps_of(&mut b);
    assert_eq!(caps.eff, mask(&[CAP_CHOWN]), "CapEff {:016x}", caps.eff);
    assert_eq!(caps.amb, mask(&[CAP_CHOWN]), "CapAmb {:016x}", caps.amb);
}

fn no_new_privs_with(value: bool) -> String {
    let mut b = Bundle::default();
    b.config["process"]["noNewPrivileges"] = json!(value);
    let status = run_script(&mut b, "cat /proc/self/status");
    status_field(&status, "NoNewPrivs").to_string()
}

#[test]
fn no_new_privileges_true() {
    if !require_root() {
        return;
    }
    assert_eq!(no_new_privs_with(true), "1");
}

#[test]
fn no_new_privileges_false() {
    if !require_root() {
        return;
    }
    assert_eq!(no_new_privs_with(false), "0");
}

#[test]
fn oom_score_adj_is_applied() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.config["process"]["oomScoreAdj"] = json!(500);
    assert_eq!(run_script(&mut b, "cat /proc/self/oom_score_adj").trim(), "500");
}

#[test]
fn hostname_is_set() {
    if !require_root() {
        return;
    }
    let mut b = Bundle::default();
    b.config["hostname"] = json!("berth-box");
    assert_eq!(run_script(&mut b, "hostname").trim(), "berth-box");
}

#[test]
fn domainname_is_set() {
    if !require_root() {
        return;
    }
    // RUNC GAP: runc 1.1.5 ignores `domainname` (support came in runc 1.2);
    // the OCI runtime spec (config.md, "Domainname") requires it be set in
    // the container's UTS namespace.
    if runc_gap("runc 1.1 ignores the domainname field") {
        return;
    }
    let mut b = Bundle::default();
    b.config["hostname"] = json!("berth-box");
    b.config["domainname"] = json!("example.org");
    let out = run_script(&mut b, "hostname; cat /proc/sys/kernel/domainname");
    assert_eq!(lines(&out), ["berth-box", "example.org"]);
}

#[test]
fn preserve_fds_passes_extra_descriptors() {
    if !require_root() {
        return;
    }
    // Descriptor 3 is a file the caller opened; --preserve-fds 1 hands it to the container,
    // and nothing else above stdio gets through.
    let b = Bundle::sh("cat <&3; ls /proc/self/fd | sort -n | tr '\\n' ' '");
    let rt = Runtime::new();
    let secret = b.dir.join("fd3.txt");
    std::fs::write(&secret, "through fd 3\n").unwrap();
    let f = std::fs::File::open(&secret).unwrap();
    b.save();
    let mut c = rt.command(&["run", "--preserve-fds", "1", "--bundle"]);
    c.arg(&b.dir).arg(unique_id());
    let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: in the child before exec, only dup2/fcntl are called.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
            // dup2 onto itself keeps close-on-exec: clear it explicitly then.
            let r = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = rt.exec(c).ok("run --preserve-fds 1");
    let got = lines(&out.out());
    assert_eq!(got[0], "through fd 3");
    // 0-2, the preserved 3, and the descriptor `ls` opens to read the directory.
    assert_eq!(got[1].split_whitespace().collect::<Vec<_>>(), ["0", "1", "2", "3", "4"]);
}

#[test]
fn container_gets_its_own_session_keyring() {
    if !require_root() {
        return;
    }
    // A keyring named after the container is the container's session keyring; with
    // --no-new-keyring there is none.
    for (extra, want) in [(&[][..], "1"), (&["--no-new-keyring"][..], "0")] {
        let mut b = Bundle::default();
        b.config["linux"]["maskedPaths"] = json!([]);
        let id = unique_id();
        b.set_sh("grep ' keyring ' /proc/keys | grep -c \" $KEYNAME: \"");
        b.config["process"]["env"] = json!(["PATH=/bin", format!("KEYNAME={id}")]);
        let rt = Runtime::new();
        let out = rt.run_with(&b, &id, extra).out();
        assert_eq!(out.trim(), want, "with {extra:?}");
    }
}
