//! `process.terminal: true` with `--console-socket`: the runtime sends the
//! pty master over a unix socket (SCM_RIGHTS); the container's process has
//! the pty slave as its controlling terminal.

mod common;

use common::*;
use std::os::fd::AsRawFd;

#[test]
fn terminal_via_console_socket() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let console = ConsoleSocket::new();
    let mut b = Bundle::sh(
        "tty; stty size; (: < /dev/tty) 2>/dev/null && echo ctty-ok; \
         echo tty_nr=$(cut -d' ' -f7 /proc/self/stat)",
    );
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({ "height": 30, "width": 100 });
    let id = unique_id();

    rt.create_with(&b, &id, &["--console-socket", console.path_str()])
        .ok("create --console-socket");
    let master = console.recv_master();
    rt.start(&id).ok("start");
    let out = read_until_closed(&master);
    rt.wait_for_status(&id, "stopped");

    let l = lines(&out);
    assert!(l.len() >= 4, "output: {out:?}");
    assert!(l[0].starts_with("/dev/pts/") || l[0] == "/dev/console", "tty: {out:?}");
    assert_eq!(l[1], "30 100", "consoleSize: {out:?}");
    assert_eq!(l[2], "ctty-ok", "pty must be the controlling terminal: {out:?}");
    let tty_nr: i64 = l[3].trim_start_matches("tty_nr=").parse().unwrap();
    assert_ne!(tty_nr, 0, "process has no controlling tty: {out:?}");
}

#[test]
fn terminal_stdin_is_the_pty() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let console = ConsoleSocket::new();
    // Reads one line from the terminal and echoes it back transformed.
    let mut b = Bundle::sh("read line; echo got:$line | tr a-z A-Z");
    b.config["process"]["terminal"] = json!(true);
    let id = unique_id();
    rt.run_with(&b, &id, &["--detach", "--console-socket", console.path_str()])
        .ok("run -d --console-socket");
    let master = console.recv_master();
    let input = b"hello\n";
    let n = unsafe { libc::write(master.as_raw_fd(), input.as_ptr().cast(), input.len()) };
    assert_eq!(n, input.len() as isize);
    let out = read_until_closed(&master);
    // The pty echoes the input line, then the process prints its reply.
    assert!(lines(&out).contains(&"GOT:HELLO".to_string()), "output: {out:?}");
}

/// A process running as a non-root user owns its pty (as runc makes it), so it can reopen its
/// terminal (`/dev/tty`, `$(tty)`); the group stays devpts's `gid=5` (tty). Checked for the
/// container's process and for an exec'd one.
#[test]
fn pty_belongs_to_a_non_root_process_user() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let console = ConsoleSocket::new();
    let script = "stat -L -c 'owner=%u:%g' /proc/self/fd/0; echo reopened > $(tty) && echo reopen-ok; id -u";
    let mut b = Bundle::sh(&format!("{script}; sleep 100"));
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    let id = unique_id();
    rt.create_with(&b, &id, &["--console-socket", console.path_str()])
        .ok("create --console-socket");
    let master = console.recv_master();
    rt.start(&id).ok("start");
    let mut out = String::new();
    poll("the process's report", || {
        out.push_str(&read_available(&master));
        out.contains("1000\r\n") || out.contains("1000\n")
    });
    let l = lines(&out.replace('\r', ""));
    assert!(l.contains(&"owner=1000:5".to_string()), "pty owner: {out:?}");
    assert!(l.contains(&"reopen-ok".to_string()), "{out:?}");

    let console = ConsoleSocket::new();
    rt.cmd(&[
        "exec",
        "--detach",
        "--tty",
        "--user",
        "1000:1000",
        "--console-socket",
        console.path_str(),
        &id,
        "sh",
        "-c",
        script,
    ])
    .ok("exec --tty --user 1000");
    let exec_out = read_until_closed(&console.recv_master()).replace('\r', "");
    assert!(
        lines(&exec_out).contains(&"owner=1000:5".to_string()),
        "exec pty owner: {exec_out:?}"
    );
    rt.kill(&id, "KILL").ok("kill");
}

/// What can be read from the master now, without waiting.
fn read_available(master: &std::os::fd::OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut p = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut p, 1, 100) } <= 0 || p.revents & libc::POLLIN == 0 {
            break;
        }
        let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&out).into_owned()
}
