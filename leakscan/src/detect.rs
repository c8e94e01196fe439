//! What counts as a leak, and how it is recognised in raw bytes.
//!
//! Two kinds of detector run over every chunk of bytes a source yields:
//!
//! * **patterns**, which need no prior knowledge: a latitude/longitude named
//!   as such (`"lat": 19.0760`, `lon=72.8777`) or written as a pair
//!   (`[19.0760, 72.8777]`) with at least three decimals, an exact age named
//!   as such (`"age": 34`, `age=34`; a band such as `"age_band":"30-44"` is
//!   fine), a profile id named as such, a routable IPv4 address, a browser or
//!   HTTP-client user agent, an e-mail address, a phone number (E.164
//!   `+CC…`, or an Indian mobile number: ten digits starting 6–9, the seed
//!   tool's users);
//! * **needles** ([`Needles`]), values known to have been submitted: each
//!   is looked for as text and, for coordinates, as its binary `f64`
//!   encodings; profile ids also as their unsalted MD5, SHA-1 and SHA-256
//!   digests (hex and raw). A soak test plants distinctive values in every
//!   field and hands them to the scanner as needles.
//!
//! A [`Finding`] never carries the matched value itself, only its kind,
//! where it was and a masked hint, so the scanner's own report leaks nothing.

use regex::bytes::Regex;
use sha2::Digest;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::LazyLock;

/// The kinds of personal data the scanner looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    Coordinate,
    ExactAge,
    Profile,
    ProfileHash,
    ClientIp,
    UserAgent,
    /// An ID token or contributor token, or its signature alone.
    Token,
    Email,
    Phone,
}

impl fmt::Display for LeakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeakKind::Coordinate => "coordinate",
            LeakKind::ExactAge => "exact_age",
            LeakKind::Profile => "profile",
            LeakKind::ProfileHash => "profile_hash",
            LeakKind::ClientIp => "client_ip",
            LeakKind::UserAgent => "user_agent",
            LeakKind::Token => "token",
            LeakKind::Email => "email",
            LeakKind::Phone => "phone",
        })
    }
}

/// One leak: what, where, and a masked hint (never the value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub kind: LeakKind,
    /// The source and the position in it (file:line, topic/partition@offset, ...).
    pub location: String,
    /// How it was recognised: the pattern or needle kind.
    pub rule: &'static str,
    /// The first two characters of the match and its length.
    pub hint: String,
}

static COORDINATE_KEYED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(?:lat|lon|lng|latitude|longitude)["']?\s*[:=]\s*["']?(-?\d{1,3}\.\d{3,})"#)
        .expect("valid regex")
});
static COORDINATE_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[\[(]\s*(-?\d{1,3}\.\d{3,})\s*[,;]\s*(-?\d{1,3}\.\d{3,})\s*[\])]")
        .expect("valid regex")
});
static AGE_KEYED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\bage["']?\s*[:=]\s*["']?(\d{1,3})\b"#).expect("valid regex")
});
static PROFILE_KEYED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(?:profile|profile_id|user_id)["']?\s*[:=]\s*"([^"\s]{1,128})""#)
        .expect("valid regex")
});
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^\d.])((?:\d{1,3}\.){3}\d{1,3})(?:$|[^\d.])").expect("valid regex")
});
static USER_AGENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:mozilla/\d|applewebkit/|gecko/\d|chrome/\d|safari/\d|curl/\d|wget/\d|python-requests/|okhttp/|user[-_]agent)",
    )
    .expect("valid regex")
});

// A local part and a domain of two labels or more. Bounded lengths and a
// letters-only top-level domain followed by a non-word byte keep chance
// matches in ciphertext and compressed pages rare (about one in 10⁹
// random bytes).
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?-u:\b)[A-Za-z0-9._%+-]{2,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}(?-u:\b)",
    )
    .expect("valid regex")
});
// E.164 with its plus and a country code (1-9 first), standing alone
// (not an exponent such as `1e+00000000000000000`), spaces or dashes
// allowed between groups; or an Indian mobile number (ten digits, first
// 6-9) standing alone: not inside a word, so not a run of digits in a hex
// string (a partition key, a digest).
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:(?:^|[^\w.+])(\+[1-9]\d{0,2}[ -]?(?:\d[ -]?){6,13}\d)(?:$|[^\d])|(?:^|[^\w.+])([6-9]\d{4}[ -]?\d{5})(?:$|[^\w.]|\.(?:$|[^\d])))")
        .expect("valid regex")
});

fn is_coordinate_pair(lat: f64, lon: f64) -> bool {
    // Shares, intervals and noise scales come in pairs too; a pair where both
    // are within ±1 is far likelier one of those than a place.
    (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
        && lat.abs().max(lon.abs()) > 1.0
}

fn parse_f64(b: &[u8]) -> Option<f64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Runs the pattern detectors over `bytes`, calling `found` for each leak.
pub fn scan_patterns(bytes: &[u8], mut found: impl FnMut(LeakKind, &'static str, &[u8])) {
    for c in COORDINATE_KEYED.captures_iter(bytes) {
        let m = c.get(1).expect("group 1");
        if parse_f64(m.as_bytes()).is_some_and(|v| v.abs() <= 180.0) {
            found(LeakKind::Coordinate, "keyed coordinate", m.as_bytes());
        }
    }
    for c in COORDINATE_PAIR.captures_iter(bytes) {
        let (a, b) = (c.get(1).expect("group 1"), c.get(2).expect("group 2"));
        if let (Some(x), Some(y)) = (parse_f64(a.as_bytes()), parse_f64(b.as_bytes())) {
            // Either order: GeoJSON writes [lon, lat].
            if is_coordinate_pair(x, y) || is_coordinate_pair(y, x) {
                found(
                    LeakKind::Coordinate,
                    "coordinate pair",
                    c.get(0).expect("match").as_bytes(),
                );
            }
        }
    }
    for c in AGE_KEYED.captures_iter(bytes) {
        let m = c.get(1).expect("group 1");
        found(LeakKind::ExactAge, "keyed age", m.as_bytes());
    }
    for c in PROFILE_KEYED.captures_iter(bytes) {
        found(
            LeakKind::Profile,
            "keyed profile",
            c.get(1).expect("group 1").as_bytes(),
        );
    }
    for c in IPV4.captures_iter(bytes) {
        let m = c.get(1).expect("group 1");
        let Some(ip) = std::str::from_utf8(m.as_bytes())
            .ok()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        if !(ip.is_loopback() || ip.is_unspecified() || ip.is_broadcast()) {
            found(LeakKind::ClientIp, "ipv4 address", m.as_bytes());
        }
    }
    for m in USER_AGENT.find_iter(bytes) {
        found(LeakKind::UserAgent, "user agent", m.as_bytes());
    }
    for m in EMAIL.find_iter(bytes) {
        found(LeakKind::Email, "e-mail address", m.as_bytes());
    }
    for c in PHONE.captures_iter(bytes) {
        let m = c.get(1).or_else(|| c.get(2)).expect("one of the two forms");
        found(LeakKind::Phone, "phone number", m.as_bytes());
    }
}

/// Known submitted values to look for, each in every encoding that could
/// carry it. Tens of thousands of needles are searched in one pass
/// (Aho-Corasick), so a soak's worth costs no more than a handful.
#[derive(Debug, Default, Clone)]
pub struct Needles {
    patterns: Vec<(LeakKind, &'static str, Vec<u8>)>,
    /// Built on first use, after the last needle was added.
    automaton: std::sync::OnceLock<aho_corasick::AhoCorasick>,
}

impl Needles {
    /// A coordinate as submitted (`"19.07601"`): its text, its text cut to
    /// four decimals (still a house), and its binary `f64` encodings. (Not
    /// `f32`: four bytes turn up by chance in megabytes of ciphertext and
    /// compressed pages; a soak's 24,000 coordinates gave 40 such false
    /// findings in 46 MB.)
    pub fn add_coordinate(&mut self, text: &str) {
        self.push(
            LeakKind::Coordinate,
            "submitted coordinate",
            text.as_bytes(),
        );
        if let Some((int, frac)) = text.split_once('.')
            && frac.len() > 4
        {
            let cut = format!("{int}.{}", &frac[..4]);
            self.push(
                LeakKind::Coordinate,
                "submitted coordinate, 4 decimals",
                cut.as_bytes(),
            );
        }
        if let Ok(v) = text.parse::<f64>() {
            for bytes in [v.to_le_bytes(), v.to_be_bytes()] {
                self.push(LeakKind::Coordinate, "submitted coordinate, binary", &bytes);
            }
        }
    }

    /// A profile id: itself and its unsalted digests.
    pub fn add_profile(&mut self, profile: &str) {
        self.push(LeakKind::Profile, "submitted profile", profile.as_bytes());
        let digests: [(&'static str, Vec<u8>); 3] = [
            (
                "unsalted sha-256 of a profile",
                sha2::Sha256::digest(profile).to_vec(),
            ),
            (
                "unsalted sha-1 of a profile",
                sha1::Sha1::digest(profile).to_vec(),
            ),
            (
                "unsalted md5 of a profile",
                md5::Md5::digest(profile).to_vec(),
            ),
        ];
        for (rule, digest) in digests {
            self.push(LeakKind::ProfileHash, rule, hex::encode(&digest).as_bytes());
            self.push(
                LeakKind::ProfileHash,
                rule,
                hex::encode_upper(&digest).as_bytes(),
            );
            // A truncated raw digest is what a careless "pseudonym" would store.
            self.push(LeakKind::ProfileHash, rule, &digest[..16]);
        }
    }

    /// A bearer or contributor token: itself, and each dot-separated part
    /// of 16 characters or more (a JWT's signature alone still proves who
    /// it was; its header alone is shared by every token and says nothing).
    pub fn add_token(&mut self, token: &str) {
        self.push(LeakKind::Token, "submitted token", token.as_bytes());
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() > 1 {
            for part in parts.iter().skip(1).filter(|p| p.len() >= 16) {
                self.push(
                    LeakKind::Token,
                    "part of a submitted token",
                    part.as_bytes(),
                );
            }
        }
    }

    /// Any other distinctive value (an IP, a user agent): looked for as text.
    pub fn add_text(&mut self, kind: LeakKind, text: &str) {
        self.push(kind, "submitted value", text.as_bytes());
    }

    fn push(&mut self, kind: LeakKind, rule: &'static str, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.patterns.push((kind, rule, bytes.to_vec()));
            self.automaton = std::sync::OnceLock::new();
        }
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Parses a needles file: one `KIND VALUE` per line (`coordinate`,
    /// `profile` (a user id: a profile or an ID token's subject),
    /// `client_ip`, `user_agent`, `token`, `email`, `phone`); `#` starts a
    /// comment.
    pub fn parse(text: &str) -> Result<Needles, crate::ScanError> {
        let mut needles = Needles::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || crate::ScanError::Needles { line: i + 1 };
            let (kind, value) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
            let value = value.trim();
            match kind {
                "coordinate" => needles.add_coordinate(value),
                "profile" => needles.add_profile(value),
                "client_ip" => needles.add_text(LeakKind::ClientIp, value),
                "user_agent" => needles.add_text(LeakKind::UserAgent, value),
                "token" => needles.add_token(value),
                "email" => needles.add_text(LeakKind::Email, value),
                "phone" => needles.add_text(LeakKind::Phone, value),
                _ => return Err(bad()),
            }
        }
        Ok(needles)
    }

    /// Looks for every needle in `bytes`; each needle found is reported
    /// once per call.
    pub fn scan(&self, bytes: &[u8], mut found: impl FnMut(LeakKind, &'static str, &[u8])) {
        if self.patterns.is_empty() {
            return;
        }
        let automaton = self.automaton.get_or_init(|| {
            aho_corasick::AhoCorasick::new(self.patterns.iter().map(|(_, _, n)| n))
                .expect("needles of bounded size build an automaton")
        });
        let mut seen = std::collections::BTreeSet::new();
        for m in automaton.find_overlapping_iter(bytes) {
            if seen.insert(m.pattern()) {
                let (kind, rule, needle) = &self.patterns[m.pattern().as_usize()];
                found(*kind, rule, needle);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(bytes: &[u8]) -> Vec<LeakKind> {
        let mut out = Vec::new();
        scan_patterns(bytes, |k, _, _| out.push(k));
        out
    }

    #[test]
    fn planted_leaks_are_found() {
        let cases: [(&str, LeakKind); 18] = [
            (
                r#"{"location":{"lat":19.0760,"lon":72.8777}}"#,
                LeakKind::Coordinate,
            ),
            ("user at lat=51.5072 lng=-0.1276", LeakKind::Coordinate),
            ("home [72.8777, 19.0760] geojson", LeakKind::Coordinate),
            ("pos (-33.8688; 151.2093)", LeakKind::Coordinate),
            (r#"{"for":"self","age":34}"#, LeakKind::ExactAge),
            ("request age=71 accepted", LeakKind::ExactAge),
            (r#"{"profile":"user-8c1f"}"#, LeakKind::Profile),
            ("client=203.0.113.77:5531 POST", LeakKind::ClientIp),
            ("x-forwarded-for: 198.51.100.4", LeakKind::ClientIp),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                LeakKind::UserAgent,
            ),
            ("curl/8.5.0", LeakKind::UserAgent),
            ("user_agent=\"x\"", LeakKind::UserAgent),
            ("unknown field priya.k@example.co.in", LeakKind::Email),
            (r#"{"contact":"a.b+tag@mail.example.org"}"#, LeakKind::Email),
            ("call +91 98200 12345 now", LeakKind::Phone),
            ("phone=+44-20-7946-0958", LeakKind::Phone),
            ("mobile 9820012345.", LeakKind::Phone),
            (r#"{"m":"70450 98765"}"#, LeakKind::Phone),
        ];
        for (text, kind) in cases {
            assert!(
                kinds(text.as_bytes()).contains(&kind),
                "{kind} missed in {text:?}"
            );
        }
    }

    #[test]
    fn what_hushmap_writes_is_clean() {
        let clean = [
            // Release JSON, metrics, logs and bands.
            r#"{"region":"85608b0bfffffff","age_band":"30-44","n_total":12,"high_share":0.4167,"high_share_ci_low":0.1521,"high_share_ci_high":0.7233,"noise_scale":1.2345}"#,
            "hushmap_ingest_submissions_accepted_total 2005\nhushmap_aggregate_records_dropped_total{reason=\"tampered\"} 0",
            r#"{"timestamp":"2026-11-29T08:12:34.123456Z","level":"INFO","fields":{"message":"serving","addr":"127.0.0.1:8080"}}"#,
            "listening on 0.0.0.0:8081 and [::1]:8815",
            "ci [0.1234, 0.5678] share (0.25, 0.75)",
            "version 0.16.1 window 2026-11-29",
            // Offsets, epochs in ms and s, byte counts, versions, timezones.
            "offset 1796127336000 window_start=1796127336 bytes 7340032000000",
            "2026-12-01T12:15:36+00:00 kafka_2.13-4.1.0 org.apache.kafka@4",
            "request_id=8123456789012 partition 0@98765",
            // Exponents and signed zeros in numbers (a release's metadata).
            "rho 1e+00000000000000000 sd +0 0 0 0 0 0 0 0 0 0 x+0000000000",
            // Runs of digits in hex (partition keys, digests).
            "key 9482736451abcdef0123 f9482736451e 3f2a9482736451",
        ];
        for text in clean {
            assert_eq!(kinds(text.as_bytes()), [], "false finding in {text:?}");
        }
    }

    #[test]
    fn needles_match_every_encoding() {
        let mut n = Needles::default();
        n.add_coordinate("19.076091");
        n.add_profile("soak-profile-0001");
        let hits = |bytes: &[u8]| {
            let mut out = Vec::new();
            n.scan(bytes, |k, r, _| out.push((k, r)));
            out
        };
        assert_eq!(hits(b"x 19.0760 y").len(), 1, "four decimals");
        assert_eq!(hits(&19.076091f64.to_le_bytes()).len(), 1);
        assert_eq!(hits(&19.076091f64.to_be_bytes()).len(), 1);
        let sha = hex::encode(sha2::Sha256::digest("soak-profile-0001"));
        assert_eq!(hits(sha.as_bytes())[0].0, LeakKind::ProfileHash);
        let md5 = hex::encode(md5::Md5::digest("soak-profile-0001"));
        assert_eq!(hits(md5.as_bytes())[0].0, LeakKind::ProfileHash);
        assert!(hits(b"nothing to see").is_empty());
    }

    #[test]
    fn needles_file() {
        let n = Needles::parse("# soak\ncoordinate 12.34567\nprofile p-1\nclient_ip 203.0.113.9\nuser_agent Soak/1.0\nemail a@b.example\nphone +919820012345\n").unwrap();
        assert!(n.len() > 6);
        assert!(matches!(
            Needles::parse("age 34"),
            Err(crate::ScanError::Needles { line: 1 })
        ));
    }
}
