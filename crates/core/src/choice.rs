//! Values chosen by name — on the command line, in a config file — with their names in one
//! place and a refusal that lists them. The binary builds its argument parsers from this, so
//! no library crate needs a command-line crate.

/// A closed set of values, each with the name a user types.
pub trait Choice: Copy + Send + Sync + 'static {
    /// Every value, in the order a listing shows them.
    const CHOICES: &'static [Self];

    /// The name a user types for this value.
    fn choice_name(self) -> &'static str;

    /// The value named `name` (exactly, as listed).
    fn from_choice(name: &str) -> Result<Self, UnknownChoice> {
        Self::CHOICES
            .iter()
            .copied()
            .find(|c| c.choice_name() == name)
            .ok_or_else(|| UnknownChoice {
                given: name.to_string(),
                expected: Self::CHOICES.iter().map(|c| c.choice_name()).collect(),
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{given}' is not one of: {}", expected.join(", "))]
pub struct UnknownChoice {
    pub given: String,
    pub expected: Vec<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;

    #[test]
    fn every_choice_parses_back_and_a_wrong_one_lists_them() {
        for &k in Kind::CHOICES {
            assert_eq!(Kind::from_choice(k.choice_name()), Ok(k));
        }
        let e = Kind::from_choice("order").expect_err("singular is not a choice");
        assert_eq!(
            e.to_string(),
            "'order' is not one of: orders, sessions, returns, customers"
        );
    }
}
