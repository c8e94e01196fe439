//! Bytes from the submissions topic: the sealed envelope and the coarse
//! record inside it. Nothing panics; a record that decodes is canonical
//! (re-encodes to the same bytes); anything that opens re-seals (to the
//! public key) and opens to the same record.
#![no_main]

use hushmap_fuzz::KEYS;
use hushmap_schema::CoarseRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(record) = CoarseRecord::decode(bytes) {
        assert_eq!(&record.encode()[..], bytes);
    }
    if let Ok(record) = KEYS.open(bytes) {
        assert_eq!(KEYS.open(&KEYS.public_key().seal(&record)), Ok(record));
    }
});
