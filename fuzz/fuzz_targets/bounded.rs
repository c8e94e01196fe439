//! Bytes from the bounded topic (what stage 2 of partitioned aggregation
//! reads, docs/SCALE.md): a tag byte, then a sealed record or a watermark.
//! Nothing panics; a message that decodes re-encodes to the same bytes; a
//! forwarded record that opens re-seals and opens to the same record.
#![no_main]

use hushmap_schema::bounded::BoundedMessage;
use hushmap_fuzz::KEYS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match BoundedMessage::decode(bytes) {
        Ok(BoundedMessage::Sealed(sealed)) => {
            assert_eq!(BoundedMessage::Sealed(sealed.clone()).encode(), bytes);
            if let Ok(record) = KEYS.open(&sealed) {
                assert_eq!(KEYS.open(&KEYS.seal(&record)), Ok(record));
            }
        }
        Ok(message) => assert_eq!(message.encode(), bytes),
        Err(_) => {}
    }
});
