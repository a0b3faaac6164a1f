//! The bitemporal point every read is made at.

use cis_storage::Visibility;

use crate::time::{self, Timestamp};

/// The bitemporal point a read is made at: events that happened by `as_of` (T) and
/// that the system had recorded by `known_at` (K).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf {
    pub as_of: Timestamp,
    pub known_at: Timestamp,
}

impl AsOf {
    /// K defaults to T; T defaults to now.
    pub fn new(as_of: Option<Timestamp>, known_at: Option<Timestamp>) -> AsOf {
        let as_of = as_of.unwrap_or_else(time::now);
        AsOf {
            as_of,
            known_at: known_at.unwrap_or(as_of),
        }
    }

    pub fn visibility(self) -> Visibility {
        Visibility {
            event_time_max: self.as_of.micros(),
            recorded_max: self.known_at.micros(),
        }
    }
}
