//! Whatever the bytes, the Renovate log parser returns findings or an error; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fluxup_operator::renovate::parse_log(data);
});
