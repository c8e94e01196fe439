//! Bytes from the bounded topic (what stage 2 of partitioned aggregation
//! reads, docs/SCALE.md): the aggregator's sealed envelope, and the message
//! inside it (a tag byte, then a record or a watermark). Nothing panics; a
//! message that decodes re-encodes to the same bytes; anything that opens
//! re-seals and opens to the same message.
#![no_main]

use hushmap_fuzz::KEYS;
use hushmap_schema::bounded::BoundedMessage;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static BOUNDED: LazyLock<hushmap_schema::BoundedKeyring> =
    LazyLock::new(|| KEYS.bounded_keyring());

fuzz_target!(|bytes: &[u8]| {
    if let Ok(message) = BoundedMessage::decode(bytes) {
        assert_eq!(message.encode(), bytes);
    }
    if let Ok((message, _)) = BOUNDED.open(bytes) {
        assert_eq!(BOUNDED.open(&BOUNDED.seal(&message)).unwrap().0, message);
    }
});
