//! Terminals beyond create/run with a console socket: `exec --tty` with `--console-socket`, and
//! `run`/`exec` with a terminal and no console socket, where the runtime relays the user's terminal
//! itself (raw mode, window size, restored on exit). The relay is driven for real under tmux.

mod common;

use common::*;
use std::time::Duration;

/// Force-deletes a container started inside tmux (not tracked by `Runtime`) when the test ends,
/// passed or failed.
struct ForceDelete<'a>(&'a Runtime, String);

impl Drop for ForceDelete<'_> {
    fn drop(&mut self) {
        let _ = self.0.delete_force(&self.1);
    }
}

/// The tmux command line: the runtime, then its exit status and the terminal's modes after it.
fn session_command(rt: &Runtime, args: &str) -> String {
    format!(
        "{} --root {} {args}; echo EXIT=$?; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo; sleep 600",
        rt.bin.display(),
        rt.root.display()
    )
}

#[test]
fn run_relays_the_users_terminal_under_tmux() {
    if !require_root() {
        return;
    }
    let Some(tmux) = Tmux::new() else { return };
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh"]);
    b.config["process"]["terminal"] = json!(true);
    b.save();
    let id = unique_id();
    let _cleanup = ForceDelete(&rt, id.clone());
    tmux.start(
        80,
        24,
        &session_command(&rt, &format!("run --bundle {} {id}", b.dir.display())),
    );
    tmux.keys("echo hi-$((40+2)); tty; stty size; echo done");
    let screen = tmux.wait_line("the shell's replies", |l| l == "done");
    assert!(screen.lines().any(|l| l.trim_end() == "hi-42"), "echo:\n{screen}");
    assert!(
        screen.lines().any(|l| l.trim_end() == "/dev/pts/0"),
        "tty inside:\n{screen}"
    );
    assert!(
        screen.lines().any(|l| l.trim_end() == "24 80"),
        "window size:\n{screen}"
    );
    tmux.keys("exit 3");
    let screen = tmux.wait_line("the exit status", |l| l.starts_with("EXIT="));
    assert!(
        screen.lines().any(|l| l.trim_end() == "EXIT=3"),
        "run's status:\n{screen}"
    );
    // The terminal is back in cooked mode with echo.
    tmux.wait_line("the terminal restored to cooked mode with echo", |l| l == "icanon echo");
    poll("container deleted", || rt.list(&["-q"]).out().trim().is_empty());
}

#[test]
fn exec_tty_relays_the_terminal_and_window_size_under_tmux() {
    if !require_root() {
        return;
    }
    let Some(tmux) = Tmux::new() else { return };
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = unique_id();
    rt.create_and_start(&b, &id);
    tmux.start(100, 30, &session_command(&rt, &format!("exec --tty {id} sh")));
    tmux.keys("stty size; echo ready");
    let screen = tmux.wait_line("the shell", |l| l == "ready");
    assert!(
        screen.lines().any(|l| l.trim_end() == "30 100"),
        "initial size:\n{screen}"
    );
    // A window change reaches the pty (SIGWINCH -> TIOCSWINSZ).
    tmux.tmux(&["resize-window", "-t", "t", "-x", "120", "-y", "40"])
        .ok("tmux resize-window");
    std::thread::sleep(Duration::from_millis(200));
    tmux.keys("stty size");
    tmux.wait_line("the new size", |l| l == "40 120");
    tmux.keys("exit 5");
    let screen = tmux.wait_line("the exit status", |l| l.starts_with("EXIT="));
    assert!(
        screen.lines().any(|l| l.trim_end() == "EXIT=5"),
        "exec's status:\n{screen}"
    );
    tmux.wait_line("the terminal restored to cooked mode with echo", |l| l == "icanon echo");
    assert_eq!(rt.state(&id)["status"], "running");
}

#[test]
fn exec_tty_with_piped_input_relays_both_ways() {
    if !require_root() || runc_gap("runc exec --tty insists on a terminal on its stdin (/dev/tty)") {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = unique_id();
    rt.create_and_start(&b, &id);
    let out = rt.cmd_input(&["exec", "--tty", &id, "sh"], b"tty; echo piped-$((6*7)); exit 4\n");
    assert_eq!(out.code(), 4, "{}", out.describe());
    let text = out.out().replace("\r\n", "\n");
    assert!(lines(&text).iter().any(|l| l == "piped-42"), "{text:?}");
    assert!(lines(&text).iter().any(|l| l.starts_with("/dev/pts/")), "{text:?}");
}

#[test]
fn exec_tty_via_console_socket() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let id = unique_id();
    rt.create_and_start(&b, &id);
    let console = ConsoleSocket::new();
    rt.cmd(&[
        "exec",
        "--detach",
        "--tty",
        "--console-socket",
        console.path_str(),
        &id,
        "sh",
        "-c",
        "tty; (: < /dev/tty) 2>/dev/null && echo ctty-ok; echo sid=$(cut -d' ' -f6 /proc/self/stat) pid=$$",
    ])
    .ok("exec --detach --tty --console-socket");
    let master = console.recv_master();
    let out = read_until_closed(&master);
    let l = lines(&out);
    assert!(l[0].starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(l[1], "ctty-ok", "the pty is the controlling terminal: {out:?}");
    let (sid, pid) = l[2].split_once(' ').unwrap();
    assert_eq!(
        sid.trim_start_matches("sid="),
        pid.trim_start_matches("pid="),
        "a session leader"
    );
}

#[test]
fn detached_terminal_without_console_socket_fails_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sh"]);
    b.config["process"]["terminal"] = json!(true);
    let id = unique_id();
    let out = rt.run_with(&b, &id, &["--detach"]);
    assert_err_mentions(&out, "console", "run --detach with a terminal and no socket");
    rt.assert_no_state(&id);
    let out = rt.create(&b, &id);
    assert_err_mentions(&out, "console", "create with a terminal and no socket");
    rt.assert_no_state(&id);
}
