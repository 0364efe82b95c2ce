//! The VM control protocol as the host reads it from a hostile guest (vm/proto.rs, vm/relay.rs,
//! vm/ports.rs): the bytes arrive split at arbitrary points (the first byte picks the read size),
//! are cut into frames, and every frame is delivered to a stream's host side as the monitor and
//! the exec helper do. Any input must give frames or a protocol error, never a panic, a hang, a
//! frame over the limit or output queued beyond the window; the exit port's line and the
//! requests' JSON parse or fail.
#![no_main]

use libberth::vm::ports::parse_exit;
use libberth::vm::proto::{self, kind, CreateMsg, ExecMsg, Frame, FrameBuf, LineBuf, MAX_PAYLOAD};
use libberth::vm::relay::Local;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let step = usize::from(split).max(1);
    let mut frames = FrameBuf::default();
    // A stream's host side with an output descriptor that is never written here (deliver only
    // queues): what it queues is bounded by the window, or deliver refuses.
    let mut local = Local::pipes(0, None, Some(-1), Some(-1));
    let mut lines = LineBuf::default();
    'read: for chunk in bytes.chunks(step) {
        frames.push(chunk);
        lines.push(chunk);
        while lines.next_line().is_some() {}
        loop {
            match frames.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.data.len() <= MAX_PAYLOAD);
                    // Encoding gives the bytes back.
                    let mut again = FrameBuf::default();
                    again.push(&f.encode());
                    assert_eq!(again.next_frame(), Ok(Some(Frame::new(f.stream, f.kind, f.data.clone()))));
                    let _ = f.number();
                    let text = f.text();
                    let (_, arg) = proto::split(&text);
                    if f.kind == kind::REPLY || f.kind == kind::REQ {
                        let _ = serde_json::from_str::<CreateMsg>(arg);
                        let _ = serde_json::from_str::<ExecMsg>(arg);
                    }
                    if local.deliver(f, &mut |_| {}).is_err() {
                        // The guest broke the window: the host drops it.
                        break 'read;
                    }
                }
                Ok(None) => break,
                // A frame over the limit: the host drops the guest.
                Err(_) => break 'read,
            }
        }
    }
    let _ = parse_exit(bytes);
});
