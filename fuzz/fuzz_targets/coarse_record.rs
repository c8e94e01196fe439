//! Bytes from the submissions topic: the sealed envelope and the coarse
//! record inside it. Nothing panics; a record that decodes is canonical
//! (re-encodes to the same bytes); anything that opens re-seals and opens
//! to the same record.
#![no_main]

use hushmap_schema::{CoarseRecord, PayloadKeyring};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static KEYS: LazyLock<PayloadKeyring> = LazyLock::new(|| {
    format!("1:{},2:{}", "11".repeat(32), "22".repeat(32))
        .parse()
        .expect("valid keyring")
});

fuzz_target!(|bytes: &[u8]| {
    if let Ok(record) = CoarseRecord::decode(bytes) {
        assert_eq!(&record.encode()[..], bytes);
    }
    if let Ok(record) = KEYS.open(bytes) {
        assert_eq!(KEYS.open(&KEYS.seal(&record)), Ok(record));
    }
});
