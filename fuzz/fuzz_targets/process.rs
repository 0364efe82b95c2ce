//! The process.json of `exec`: parse a Process and validate it as exec does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<oci_spec::runtime::Process>(data) {
        let _ = libberth::spec::validate_process(&p, "process");
    }
});
