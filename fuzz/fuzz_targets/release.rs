//! Bytes from the releases topic (what the dashboard and the aggregator's
//! ledger recovery read): an Arrow IPC stream in the release schema.
//! Nothing panics; a release that decodes re-encodes and decodes the same.
#![no_main]

use hushmap_schema::Release;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: {
    // `Release::from_ipc` turns a panic inside arrow-ipc's reader into an
    // error (see its comment); libfuzzer-sys's hook would abort on that
    // caught panic, so the hook is quiet here. A panic anywhere else still
    // unwinds into libfuzzer-sys, which reports it as a crash.
    std::panic::set_hook(Box::new(|_| {}));
}, |bytes: &[u8]| {
    if let Ok(release) = Release::from_ipc(bytes) {
        let again = release.to_ipc().expect("a decoded release encodes");
        let back = Release::from_ipc(&again).expect("and decodes again");
        assert_eq!(back.rows.len(), release.rows.len());
        assert_eq!(back.meta.window_start, release.meta.window_start);
    }
});
