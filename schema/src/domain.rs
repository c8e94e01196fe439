//! The coarse vocabulary of Hushmap: what survives ingest.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Who a self-check is about.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    #[serde(rename = "self")]
    Myself,
    FamilyMember,
    SomeoneElse,
}

/// Self-reported gender. Used for nothing downstream; accepted because the
/// public form asks it, dropped at ingest.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gender {
    Female,
    Male,
    Other,
    Undisclosed,
}

/// Age bands of every release. Exact ages never leave ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AgeBand {
    #[serde(rename = "0-17")]
    Under18,
    #[serde(rename = "18-29")]
    From18To29,
    #[serde(rename = "30-44")]
    From30To44,
    #[serde(rename = "45-59")]
    From45To59,
    #[serde(rename = "60-74")]
    From60To74,
    #[serde(rename = "75+")]
    From75,
}

impl AgeBand {
    /// Every band, youngest first (the order of release rows).
    pub const ALL: [AgeBand; 6] = [
        AgeBand::Under18,
        AgeBand::From18To29,
        AgeBand::From30To44,
        AgeBand::From45To59,
        AgeBand::From60To74,
        AgeBand::From75,
    ];

    /// The band an age in years falls into.
    ///
    /// ```
    /// use hushmap_schema::AgeBand;
    /// assert_eq!(AgeBand::from_age(17), AgeBand::Under18);
    /// assert_eq!(AgeBand::from_age(18), AgeBand::From18To29);
    /// assert_eq!(AgeBand::from_age(120), AgeBand::From75);
    /// ```
    pub fn from_age(age: u8) -> AgeBand {
        match age {
            0..=17 => AgeBand::Under18,
            18..=29 => AgeBand::From18To29,
            30..=44 => AgeBand::From30To44,
            45..=59 => AgeBand::From45To59,
            60..=74 => AgeBand::From60To74,
            _ => AgeBand::From75,
        }
    }

    /// The label used in releases and the API, e.g. `"30-44"`.
    pub fn label(self) -> &'static str {
        match self {
            AgeBand::Under18 => "0-17",
            AgeBand::From18To29 => "18-29",
            AgeBand::From30To44 => "30-44",
            AgeBand::From45To59 => "45-59",
            AgeBand::From60To74 => "60-74",
            AgeBand::From75 => "75+",
        }
    }

    /// Parses a label produced by [`AgeBand::label`].
    pub fn from_label(label: &str) -> Option<AgeBand> {
        AgeBand::ALL.into_iter().find(|b| b.label() == label)
    }

    /// Compact code used by the binary record encoding.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`AgeBand::code`].
    pub fn from_code(code: u8) -> Option<AgeBand> {
        AgeBand::ALL.get(usize::from(code)).copied()
    }
}

impl fmt::Display for AgeBand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The triage outcome returned to the person and counted in releases.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Moderate,
    High,
}

impl RiskLevel {
    pub const ALL: [RiskLevel; 3] = [RiskLevel::Low, RiskLevel::Moderate, RiskLevel::High];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<RiskLevel> {
        RiskLevel::ALL.get(usize::from(code)).copied()
    }

    pub fn label(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Moderate => "moderate",
            RiskLevel::High => "high",
        }
    }
}

/// Symptoms the form asks about. The declaration order is the bit order of
/// [`SymptomSet`] and the column order of the `sym_*` release columns.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Symptom {
    Fever,
    DryCough,
    SoreThroat,
    Breathlessness,
    LossOfTasteOrSmell,
    Fatigue,
    BodyAche,
    Diarrhoea,
    Headache,
    RunnyNose,
}

impl Symptom {
    pub const ALL: [Symptom; 10] = [
        Symptom::Fever,
        Symptom::DryCough,
        Symptom::SoreThroat,
        Symptom::Breathlessness,
        Symptom::LossOfTasteOrSmell,
        Symptom::Fatigue,
        Symptom::BodyAche,
        Symptom::Diarrhoea,
        Symptom::Headache,
        Symptom::RunnyNose,
    ];

    /// The wire name, e.g. `"dry_cough"`.
    pub fn name(self) -> &'static str {
        match self {
            Symptom::Fever => "fever",
            Symptom::DryCough => "dry_cough",
            Symptom::SoreThroat => "sore_throat",
            Symptom::Breathlessness => "breathlessness",
            Symptom::LossOfTasteOrSmell => "loss_of_taste_or_smell",
            Symptom::Fatigue => "fatigue",
            Symptom::BodyAche => "body_ache",
            Symptom::Diarrhoea => "diarrhoea",
            Symptom::Headache => "headache",
            Symptom::RunnyNose => "runny_nose",
        }
    }

    /// The release column holding this symptom's noisy count.
    pub fn column(self) -> String {
        format!("sym_{}", self.name())
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of symptoms as a bit mask (bit i = `Symptom::ALL[i]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SymptomSet(u16);

impl SymptomSet {
    const VALID: u16 = (1 << Symptom::ALL.len()) - 1;

    pub fn contains(self, s: Symptom) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn insert(&mut self, s: Symptom) {
        self.0 |= s.bit();
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn bits(self) -> u16 {
        self.0
    }

    /// Rejects masks with bits beyond the known symptoms.
    pub fn from_bits(bits: u16) -> Option<SymptomSet> {
        (bits & !Self::VALID == 0).then_some(SymptomSet(bits))
    }

    pub fn iter(self) -> impl Iterator<Item = Symptom> {
        Symptom::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Symptom> for SymptomSet {
    fn from_iter<I: IntoIterator<Item = Symptom>>(iter: I) -> Self {
        let mut set = SymptomSet::default();
        for s in iter {
            set.insert(s);
        }
        set
    }
}

/// Pre-existing conditions the form asks about. They raise the triage level
/// and are then dropped: no condition leaves ingest.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Diabetes,
    Hypertension,
    HeartDisease,
    LungDisease,
    KidneyDisease,
    Immunocompromised,
    Pregnancy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_band_edges() {
        let cases = [
            (0, "0-17"),
            (17, "0-17"),
            (18, "18-29"),
            (29, "18-29"),
            (30, "30-44"),
            (44, "30-44"),
            (45, "45-59"),
            (59, "45-59"),
            (60, "60-74"),
            (74, "60-74"),
            (75, "75+"),
            (120, "75+"),
        ];
        for (age, label) in cases {
            assert_eq!(AgeBand::from_age(age).label(), label, "age {age}");
        }
    }

    #[test]
    fn age_band_codes_and_labels_round_trip() {
        for band in AgeBand::ALL {
            assert_eq!(AgeBand::from_code(band.code()), Some(band));
            assert_eq!(AgeBand::from_label(band.label()), Some(band));
            let json = serde_json::to_string(&band).unwrap();
            assert_eq!(json, format!("\"{}\"", band.label()));
        }
        assert_eq!(AgeBand::from_code(6), None);
        assert_eq!(AgeBand::from_label("18-30"), None);
    }

    #[test]
    fn symptom_set_bits() {
        let set: SymptomSet = [Symptom::Fever, Symptom::RunnyNose].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set.contains(Symptom::Fever) && !set.contains(Symptom::DryCough));
        assert_eq!(SymptomSet::from_bits(set.bits()), Some(set));
        assert_eq!(SymptomSet::from_bits(1 << 10), None);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![Symptom::Fever, Symptom::RunnyNose]
        );
    }

    #[test]
    fn symptom_wire_names_match_serde() {
        for s in Symptom::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.name())
            );
        }
    }
}
