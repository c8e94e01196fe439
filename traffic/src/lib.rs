//! Synthetic self-check traffic for demos, tests and benchmarks.
//!
//! Submissions cluster around real cities with plausible age and symptom
//! mixes; each city has its own illness rate so a heatmap shows contrast.
//! A [`Population`] decides who sends each one: signed-in people (an ID
//! token) and anonymous browsers (their contributor token), many of whom
//! come back, so contribution bounding has work to do. Generation is seeded
//! and reproducible.

use hushmap_schema::domain::{Condition, Gender, Subject, Symptom};
use hushmap_schema::submission::{Location, Submission};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A population centre traffic is drawn around.
#[derive(Debug, Clone, Copy)]
pub struct City {
    pub name: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// Relative share of submissions.
    pub weight: f64,
    /// Probability that a submitter is unwell.
    pub illness_rate: f64,
    /// Spread of submissions around the centre, in degrees.
    pub spread_deg: f64,
}

pub const CITIES: [City; 5] = [
    City {
        name: "Mumbai",
        lat: 19.0760,
        lon: 72.8777,
        weight: 0.30,
        illness_rate: 0.45,
        spread_deg: 0.18,
    },
    City {
        name: "Pune",
        lat: 18.5204,
        lon: 73.8567,
        weight: 0.15,
        illness_rate: 0.30,
        spread_deg: 0.12,
    },
    City {
        name: "Delhi",
        lat: 28.6139,
        lon: 77.2090,
        weight: 0.25,
        illness_rate: 0.35,
        spread_deg: 0.18,
    },
    City {
        name: "London",
        lat: 51.5072,
        lon: -0.1276,
        weight: 0.15,
        illness_rate: 0.20,
        spread_deg: 0.15,
    },
    City {
        name: "New York",
        lat: 40.7128,
        lon: -74.0060,
        weight: 0.15,
        illness_rate: 0.25,
        spread_deg: 0.15,
    },
];

/// Knobs of the generator.
#[derive(Debug, Clone)]
pub struct TrafficProfile {
    /// Share of submissions sending an H3 `region` instead of a location.
    pub region_share: f64,
}

impl Default for TrafficProfile {
    fn default() -> Self {
        TrafficProfile { region_share: 0.1 }
    }
}

/// A seeded stream of submissions.
pub struct SubmissionGenerator {
    rng: StdRng,
    profile: TrafficProfile,
}

impl SubmissionGenerator {
    /// ```
    /// use hushmap_traffic::SubmissionGenerator;
    /// let mut a = SubmissionGenerator::new(7);
    /// let mut b = SubmissionGenerator::new(7);
    /// assert_eq!(a.next_submission(), b.next_submission());
    /// ```
    pub fn new(seed: u64) -> SubmissionGenerator {
        SubmissionGenerator::with_profile(seed, TrafficProfile::default())
    }

    pub fn with_profile(seed: u64, profile: TrafficProfile) -> SubmissionGenerator {
        SubmissionGenerator {
            rng: StdRng::seed_from_u64(seed),
            profile,
        }
    }

    fn pick_city(&mut self) -> City {
        let total: f64 = CITIES.iter().map(|c| c.weight).sum();
        let mut x = self.rng.random::<f64>() * total;
        for c in CITIES {
            if x < c.weight {
                return c;
            }
            x -= c.weight;
        }
        CITIES[0]
    }

    fn age(&mut self) -> i64 {
        // Self-check users skew to working age; (band start, band width, weight).
        const BANDS: [(i64, i64, f64); 6] = [
            (0, 18, 0.08),
            (18, 12, 0.24),
            (30, 15, 0.27),
            (45, 15, 0.21),
            (60, 15, 0.14),
            (75, 26, 0.06),
        ];
        let mut x = self.rng.random::<f64>();
        for (start, width, w) in BANDS {
            if x < w {
                return start + self.rng.random_range(0..width);
            }
            x -= w;
        }
        40
    }

    /// The next submission.
    pub fn next_submission(&mut self) -> Submission {
        let city = self.pick_city();
        let age = self.age();
        // Older people are a little more likely to be unwell.
        let ill =
            self.rng.random::<f64>() < (city.illness_rate * (0.8 + age as f64 / 150.0)).min(0.95);
        let mut symptoms = Vec::new();
        for s in Symptom::ALL {
            let key = matches!(
                s,
                Symptom::Fever | Symptom::DryCough | Symptom::LossOfTasteOrSmell
            );
            let p = match (ill, key, s) {
                (true, _, Symptom::Breathlessness) => 0.15,
                (true, true, _) => 0.55,
                (true, false, _) => 0.3,
                (false, _, Symptom::RunnyNose | Symptom::Headache) => 0.08,
                (false, _, _) => 0.01,
            };
            if self.rng.random::<f64>() < p {
                symptoms.push(s);
            }
        }
        let mut conditions = Vec::new();
        let condition_rate = 0.02 + age as f64 / 400.0;
        for c in [
            Condition::Diabetes,
            Condition::Hypertension,
            Condition::HeartDisease,
            Condition::LungDisease,
        ] {
            if self.rng.random::<f64>() < condition_rate {
                conditions.push(c);
            }
        }
        // A triangular offset keeps most submissions near the centre.
        let offset =
            |rng: &mut StdRng| (rng.random::<f64>() + rng.random::<f64>() - 1.0) * city.spread_deg;
        let lat = city.lat + offset(&mut self.rng);
        let lon = city.lon + offset(&mut self.rng);
        let (location, region) = if self.rng.random::<f64>() < self.profile.region_share {
            let cell = h3_cell(lat, lon);
            (None, Some(cell))
        } else {
            // Round to 6 decimals, as a phone's geolocation would report.
            (
                Some(Location {
                    lat: (lat * 1e6).round() / 1e6,
                    lon: (lon * 1e6).round() / 1e6,
                }),
                None,
            )
        };
        Submission {
            subject: match self.rng.random_range(0..10) {
                0..=6 => Subject::Myself,
                7..=8 => Subject::FamilyMember,
                _ => Subject::SomeoneElse,
            },
            age,
            gender: match self.rng.random_range(0..20) {
                0..=8 => Gender::Female,
                9..=17 => Gender::Male,
                18 => Gender::Other,
                _ => Gender::Undisclosed,
            },
            symptoms,
            conditions,
            travelled_internationally_14d: self.rng.random::<f64>() < 0.05,
            contact_with_confirmed_case: self.rng.random::<f64>() < if ill { 0.3 } else { 0.05 },
            location,
            region,
            observed_at: None,
        }
    }
}

/// Who sends the next submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Signed-in person number `n` (subject `traffic-user-<n>`).
    SignedIn(u32),
    /// Anonymous browser number `n`; it sends back the token of its first
    /// answer, if it has one.
    Browser(u32),
}

/// Knobs of a [`Population`].
#[derive(Debug, Clone)]
pub struct PopulationProfile {
    /// Share of submissions from signed-in people (only when the traffic
    /// can sign ID tokens).
    pub signed_in_share: f64,
    /// How many signed-in people and anonymous browsers there are: each
    /// submission comes from one drawn at random, so most come back.
    pub people: u32,
    pub browsers: u32,
}

impl Default for PopulationProfile {
    fn default() -> Self {
        PopulationProfile {
            signed_in_share: 0.3,
            people: 2_000,
            browsers: 20_000,
        }
    }
}

/// Who submits: signed-in people and anonymous browsers, each keeping the
/// contributor token it was given.
pub struct Population {
    rng: StdRng,
    profile: PopulationProfile,
    tokens: std::collections::HashMap<u32, String>,
}

impl Population {
    /// ```
    /// use hushmap_traffic::{Population, PopulationProfile, Sender};
    /// let mut p = Population::new(1, PopulationProfile { signed_in_share: 0.0, people: 0, browsers: 3 });
    /// let who = p.next_sender();
    /// assert!(matches!(who, Sender::Browser(n) if n < 3));
    /// assert_eq!(p.contributor_token(who), None);
    /// p.remember(who, Some("c1.x"));
    /// assert_eq!(p.contributor_token(who), Some("c1.x"));
    /// ```
    pub fn new(seed: u64, profile: PopulationProfile) -> Population {
        Population {
            rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            profile,
            tokens: std::collections::HashMap::new(),
        }
    }

    /// Who sends the next submission.
    pub fn next_sender(&mut self) -> Sender {
        if self.profile.people > 0 && self.rng.random::<f64>() < self.profile.signed_in_share {
            Sender::SignedIn(self.rng.random_range(0..self.profile.people))
        } else {
            Sender::Browser(self.rng.random_range(0..self.profile.browsers.max(1)))
        }
    }

    /// The subject a signed-in person's ID token carries.
    pub fn subject(n: u32) -> String {
        format!("traffic-user-{n:06}")
    }

    /// The contributor token an anonymous browser sends back, if it has one.
    pub fn contributor_token(&self, sender: Sender) -> Option<&str> {
        match sender {
            Sender::Browser(n) => self.tokens.get(&n).map(String::as_str),
            Sender::SignedIn(_) => None,
        }
    }

    /// Keeps the contributor token an answer gave a browser; forgets it
    /// when the service refused it (the browser starts over).
    pub fn remember(&mut self, sender: Sender, token: Option<&str>) {
        if let Sender::Browser(n) = sender {
            match token {
                Some(t) => self.tokens.insert(n, t.to_string()),
                None => self.tokens.remove(&n),
            };
        }
    }
}

/// A resolution-6 H3 cell, the finest a client may usefully send (ingest
/// coarsens it to its own resolution).
fn h3_cell(lat: f64, lon: f64) -> String {
    hushmap_schema::RegionCell::from_coordinate(
        lat,
        lon,
        hushmap_schema::region::RegionResolution::new(6).expect("6 is the floor"),
    )
    .map(|c| c.to_string())
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_are_plausible_and_serialise() {
        let mut g = SubmissionGenerator::new(1);
        let mut with_symptoms = 0;
        for _ in 0..2000 {
            let s = g.next_submission();
            assert!((0..=120).contains(&s.age));
            assert!(s.location.is_some() != s.region.is_some());
            let json = serde_json::to_string(&s).unwrap();
            let back: Submission = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s);
            with_symptoms += usize::from(!s.symptoms.is_empty());
        }
        assert!((400..1600).contains(&with_symptoms), "{with_symptoms}");
    }
}
