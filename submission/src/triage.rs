//! Risk triage: the rule table behind the answer a person gets.
//!
//! Version `triage-v1`. Key symptoms are fever, dry cough, breathlessness and
//! loss of taste or smell. Rules are checked top to bottom; the first match
//! decides:
//!
//! | # | condition                                                              | level    |
//! |---|------------------------------------------------------------------------|----------|
//! | 1 | breathlessness                                                         | high     |
//! | 2 | ≥ 2 key symptoms and (contact with a confirmed case or travel)         | high     |
//! | 3 | ≥ 1 key symptom and (age ≥ 60 or any listed condition)                 | high     |
//! | 4 | any symptom                                                            | moderate |
//! | 5 | contact with a confirmed case or international travel                  | moderate |
//! | 6 | otherwise                                                              | low      |
//!
//! This table is not medical advice; it is a stand-in a health authority
//! replaces with its own. It is deliberately simple so every row is tested.

use hushmap_schema::{RiskLevel, Symptom, SymptomSet};

pub const TRIAGE_VERSION: &str = "triage-v1";

const KEY_SYMPTOMS: [Symptom; 4] = [
    Symptom::Fever,
    Symptom::DryCough,
    Symptom::Breathlessness,
    Symptom::LossOfTasteOrSmell,
];

/// The facts triage looks at; exact age is used here and dropped after.
#[derive(Debug, Clone, Copy)]
pub struct TriageInput {
    pub age: u8,
    pub symptoms: SymptomSet,
    pub has_condition: bool,
    pub contact: bool,
    pub travelled: bool,
}

/// Applies the rule table.
pub fn assess(input: &TriageInput) -> RiskLevel {
    let key = KEY_SYMPTOMS
        .iter()
        .filter(|s| input.symptoms.contains(**s))
        .count();
    let exposed = input.contact || input.travelled;
    if input.symptoms.contains(Symptom::Breathlessness)
        || (key >= 2 && exposed)
        || (key >= 1 && (input.age >= 60 || input.has_condition))
    {
        RiskLevel::High
    } else if !input.symptoms.is_empty() || exposed {
        RiskLevel::Moderate
    } else {
        RiskLevel::Low
    }
}

/// Plain advice for each level (the English of the self-check page's
/// `advice_*` strings, which a test keeps equal).
pub fn advice(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::High => {
            "Your answers suggest a high risk. Call your doctor or the health helpline today, and stay \
             at home, away from others, until you have spoken to them. If you find it hard to breathe, \
             call emergency services."
        }
        RiskLevel::Moderate => {
            "Your answers suggest a medium risk. Stay at home if you can, watch your symptoms, and get \
             tested if you can. See a doctor if you feel worse."
        }
        RiskLevel::Low => {
            "Your answers suggest a low risk. Keep following local health advice and check again if \
             anything changes."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Symptom::*;

    fn input(
        age: u8,
        symptoms: &[Symptom],
        has_condition: bool,
        contact: bool,
        travelled: bool,
    ) -> TriageInput {
        TriageInput {
            age,
            symptoms: symptoms.iter().copied().collect(),
            has_condition,
            contact,
            travelled,
        }
    }

    #[test]
    fn every_row_of_the_table() {
        let cases = [
            // row 1: breathlessness alone
            (
                input(30, &[Breathlessness], false, false, false),
                RiskLevel::High,
            ),
            // row 2: two key symptoms with contact, or with travel
            (
                input(30, &[Fever, DryCough], false, true, false),
                RiskLevel::High,
            ),
            (
                input(30, &[Fever, LossOfTasteOrSmell], false, false, true),
                RiskLevel::High,
            ),
            // ... but not without exposure
            (
                input(30, &[Fever, DryCough], false, false, false),
                RiskLevel::Moderate,
            ),
            // row 3: one key symptom and age >= 60, or a condition
            (input(60, &[Fever], false, false, false), RiskLevel::High),
            (
                input(59, &[Fever], false, false, false),
                RiskLevel::Moderate,
            ),
            (input(25, &[DryCough], true, false, false), RiskLevel::High),
            // a non-key symptom does not trigger row 3
            (
                input(80, &[Headache], true, false, false),
                RiskLevel::Moderate,
            ),
            // row 4: any symptom
            (
                input(40, &[RunnyNose], false, false, false),
                RiskLevel::Moderate,
            ),
            // row 5: exposure alone
            (input(40, &[], false, true, false), RiskLevel::Moderate),
            (input(40, &[], false, false, true), RiskLevel::Moderate),
            // row 6: nothing
            (input(40, &[], true, false, false), RiskLevel::Low),
            (input(90, &[], false, false, false), RiskLevel::Low),
        ];
        for (i, (inp, expected)) in cases.iter().enumerate() {
            assert_eq!(assess(inp), *expected, "case {i}: {inp:?}");
        }
    }

    #[test]
    fn advice_differs_by_level() {
        assert_ne!(advice(RiskLevel::Low), advice(RiskLevel::High));
        assert_ne!(advice(RiskLevel::Low), advice(RiskLevel::Moderate));
    }
}
