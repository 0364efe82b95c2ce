//! The order of the sync protocol: any sequence of messages from a (hostile) child. Each message
//! the runtime acts on is taken at most once, `P` only when asked for, nothing before `U` (init),
//! and `R` never before the createRuntime hooks; no input panics.
#![no_main]

use libberth::linux::sync::{ExecSteps, InitSteps};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&wants, msgs)) = data.split_first() else {
        return;
    };
    let mut init = InitSteps {
        mapped: false,
        want_pid: wants & 1 != 0,
        want_hooks: wants & 2 != 0,
        want_master: wants & 4 != 0,
        want_listener: wants & 8 != 0,
    };
    let mut exec = ExecSteps {
        pid: wants & 1 != 0,
        master: wants & 4 != 0,
        listener: wants & 8 != 0,
    };
    let mut taken = [0u32; 256];
    let mut exec_taken = [0u32; 256];
    let mut hooks_done = wants & 2 == 0;
    for &b in msgs {
        let has_fd = b & 0x80 != 0;
        let tag = b & 0x7f;
        if init.take(tag, has_fd).is_ok() {
            taken[tag as usize] += 1;
            assert!(
                tag == b'U' || tag == b'E' || taken[b'U' as usize] == 1,
                "{tag} before U"
            );
            if tag == b'H' {
                hooks_done = true;
            }
            assert!(tag != b'R' || hooks_done, "R before the hooks");
            if tag == b'P' {
                assert!(wants & 1 != 0, "P not asked for");
            }
            if tag == b'M' {
                assert!(has_fd, "M without its descriptor");
            }
        }
        if exec.take(tag, has_fd).is_ok() {
            if tag == b'P' {
                assert!(wants & 1 != 0, "exec: P not asked for");
                assert!(
                    exec_taken[b'M' as usize] + exec_taken[b'N' as usize] == 0,
                    "exec: P after M/N"
                );
            }
            exec_taken[tag as usize] += 1;
        }
    }
    for t in [b'U', b'P', b'H', b'M', b'N'] {
        assert!(taken[t as usize] <= 1, "init: {} taken twice", t as char);
        assert!(exec_taken[t as usize] <= 1, "exec: {} taken twice", t as char);
    }
});
