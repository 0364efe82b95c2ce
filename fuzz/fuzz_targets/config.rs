//! config.json loading: parse (with the unknown-capability filter) and validate against a bundle
//! that has a rootfs. Any input must give Ok or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn bundle() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("berth-fuzz-bundle-{}", std::process::id()));
        let _ = std::fs::create_dir_all(d.join("rootfs"));
        d
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = libberth::spec::parse(data, "config.json") {
        let _ = libberth::spec::validate(&spec, bundle());
        if let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            let _ = libberth::linux::seccomp::compile(s);
        }
    }
});
