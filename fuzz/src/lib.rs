//! What the fuzz targets share: the aggregator's private payload keyring
//! their sealed inputs are opened with (the committed corpus holds
//! envelopes sealed to its public key, and under its bounded-topic key).

use hushmap_schema::PayloadKeyring;
use std::sync::LazyLock;

/// Key 1 is 32 bytes of 0x11, key 2 32 bytes of 0x22.
pub static KEYS: LazyLock<PayloadKeyring> = LazyLock::new(|| {
    format!("1:{},2:{}", "11".repeat(32), "22".repeat(32))
        .parse()
        .expect("valid keyring")
});
