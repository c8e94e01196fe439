//! Which address a request came from, when proxies may stand in between.
//!
//! `X-Forwarded-For` is client text: anyone can send one. It says something
//! only when the hop that delivered the request is a proxy we run, and then
//! only its right-hand part, the entries our own proxies appended. So the
//! client is found by walking the list from the right, across every header
//! line (a client may send its own line first), skipping addresses of
//! trusted proxies, and stopping at the first address that is not one: the
//! right-most untrusted address. A peer outside the trusted networks is the
//! client itself, whatever it sends.
//!
//! The address is used as a rate-limit key and nothing else; it is never
//! logged.
//!
//! ```
//! use hushmap_service::client_address::TrustedProxies;
//! let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
//! let mut headers = http::HeaderMap::new();
//! headers.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
//! headers.append("x-forwarded-for", "198.51.100.7, 10.1.2.3".parse().unwrap());
//! // Delivered by our proxy 10.9.9.9: the right-most untrusted entry.
//! let client = proxies.client("10.9.9.9".parse().unwrap(), &headers);
//! assert_eq!(client, "198.51.100.7".parse::<std::net::IpAddr>().unwrap());
//! // Delivered by anyone else: the peer, whatever the header says.
//! let client = proxies.client("192.0.2.1".parse().unwrap(), &headers);
//! assert_eq!(client, "192.0.2.1".parse::<std::net::IpAddr>().unwrap());
//! ```

use http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The networks whose `X-Forwarded-For` entries are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { networks }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request delivered by `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        let lines: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        for entry in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
            // An entry a trusted proxy wrote is an address; anything else
            // means the hop before it is not to be believed.
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, IPv6 possibly in brackets.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    bare.parse().ok()
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket
/// reports for IPv4 peers) as the IPv4 address they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The key a client is rate-limited under: an IPv4 address, or the IPv6
/// network of `v6_prefix_len` bits it is in (one subscriber usually holds a
/// whole /64 and can use any address in it).
pub fn rate_key(ip: IpAddr, v6_prefix_len: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix_len.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ])
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", l.parse().unwrap());
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&["198.51.100.1"]);
        assert_eq!(proxies().client(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_client_cannot_pick_its_address_by_prepending_entries() {
        // The client sent "1.1.1.1, 2.2.2.2"; our proxy appended what it saw.
        let h = headers(&["1.1.1.1, 2.2.2.2, 198.51.100.1"]);
        assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("198.51.100.1"));
    }

    #[test]
    fn every_header_line_is_read_right_to_left() {
        // A client's own line first, then the proxies' line.
        let h = headers(&["1.1.1.1", "198.51.100.1, 10.0.0.7"]);
        assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("198.51.100.1"));
        // The first line alone (what was read before) would be 1.1.1.1.
        let h = headers(&["1.1.1.1", "10.0.0.7"]);
        assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("1.1.1.1"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_believed_hop() {
        let h = headers(&["not-an-ip, 10.0.0.7"]);
        assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("10.0.0.7"));
        let h = headers(&["[2001:db8::1], 10.0.0.7"]);
        assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("2001:db8::1"));
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let h = headers(&["198.51.100.1"]);
        assert_eq!(
            proxies().client(ip("::ffff:10.0.0.1"), &h),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn ipv6_clients_share_a_key_per_prefix() {
        let a = rate_key(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = rate_key(ip("2001:db8:1:2:ffff::9"), 64);
        let c = rate_key(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_eq!(rate_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(rate_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(rate_key(ip("192.0.2.1"), 64), ip("192.0.2.1"));
    }
}
