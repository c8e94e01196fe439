//! Per-client rate limiting without remembering clients.
//!
//! Clients are keyed by a SipHash of their address under a random key drawn
//! at start-up, held only in memory: the limiter can tell two requests from
//! the same address apart from others, but never holds the address itself,
//! and the keys mean nothing after a restart. Idle entries are dropped
//! periodically ([`ClientRateLimiter::forget_idle`]).
//!
//! An IPv6 client is limited per network (`/64` by default): one
//! subscriber can use any of the 2⁶⁴ addresses of its prefix, so a per-address
//! limit would not limit it at all.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hushmap_service::client_address::rate_key;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

pub struct ClientRateLimiter {
    limiter: DefaultKeyedRateLimiter<u64>,
    hasher: RandomState,
    clock: DefaultClock,
    ipv6_prefix_len: u8,
}

impl ClientRateLimiter {
    /// `per_minute` sustained requests per client, bursts up to `burst`;
    /// IPv6 clients keyed by their `ipv6_prefix_len`-bit network.
    pub fn new(
        per_minute: NonZeroU32,
        burst: NonZeroU32,
        ipv6_prefix_len: u8,
    ) -> ClientRateLimiter {
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        ClientRateLimiter {
            limiter: RateLimiter::keyed(quota),
            hasher: RandomState::new(),
            clock: DefaultClock::default(),
            ipv6_prefix_len,
        }
    }

    /// `Ok` if the client may proceed, else how long it should wait.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let key = self.hasher.hash_one(rate_key(client, self.ipv6_prefix_len));
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops state of clients whose buckets are full again.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_client_separately() {
        let l = ClientRateLimiter::new(
            NonZeroU32::new(60).unwrap(),
            NonZeroU32::new(3).unwrap(),
            64,
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
        }
        let wait = l.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(l.check(b).is_ok(), "another client is not affected");
        assert_eq!(l.tracked_clients(), 2);
    }

    #[test]
    fn an_ipv6_client_cannot_escape_its_limit_by_changing_address() {
        let l = ClientRateLimiter::new(
            NonZeroU32::new(60).unwrap(),
            NonZeroU32::new(3).unwrap(),
            64,
        );
        for i in 0..3u16 {
            let ip: IpAddr = format!("2001:db8:7:7::{i:x}").parse().unwrap();
            assert!(l.check(ip).is_ok());
        }
        let fresh: IpAddr = "2001:db8:7:7:dead:beef:0:1".parse().unwrap();
        assert!(l.check(fresh).is_err(), "same /64, same bucket");
        let other: IpAddr = "2001:db8:7:8::1".parse().unwrap();
        assert!(l.check(other).is_ok(), "another /64 is another client");
    }
}
