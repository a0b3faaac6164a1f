//! Timestamps: microseconds since the Unix epoch, UTC, everywhere in cis.
//!
//! [`Timestamp`] is a newtype, not an `i64` alias, so an instant cannot be passed where a
//! count, an amount or a duration is meant (or the other way round) without saying so.
//! Durations stay plain `i64` microseconds ([`MICROS_PER_DAY`] and friends): an instant plus
//! a duration is an instant, an instant minus an instant is a duration, and nothing else
//! mixes them. The storage layer below speaks raw `i64` microseconds; the conversion happens
//! where cis-core meets it ([`crate::AsOf::visibility`], [`crate::event`]).

use std::fmt;
use std::ops::{Add, Sub};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// An instant: microseconds since 1970-01-01T00:00:00Z. Serialises as the bare integer, so
/// every encoding (and hence every artifact hash) is what it was when this was an `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    pub const MAX: Timestamp = Timestamp(i64::MAX);
    pub const EPOCH: Timestamp = Timestamp(0);

    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Midnight UTC of day `day` since the epoch (negative before 1970).
    pub const fn from_day(day: i64) -> Timestamp {
        Timestamp(day.saturating_mul(MICROS_PER_DAY))
    }

    /// The day since the epoch this instant falls in (midnight belongs to its own day).
    pub const fn day(self) -> i64 {
        self.0.div_euclid(MICROS_PER_DAY)
    }

    /// `days` whole days later (earlier if negative), saturating like `+`.
    pub const fn plus_days(self, days: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(days.saturating_mul(MICROS_PER_DAY)))
    }
}

/// Instant + duration (microseconds) = instant, saturating at the ends of time: a bound such
/// as `Timestamp::MAX` can be moved without overflow.
impl Add<i64> for Timestamp {
    type Output = Timestamp;

    fn add(self, micros: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(micros))
    }
}

impl Sub<i64> for Timestamp {
    type Output = Timestamp;

    fn sub(self, micros: i64) -> Timestamp {
        Timestamp(self.0.saturating_sub(micros))
    }
}

/// Instant − instant = the duration between them, in microseconds (saturating).
impl Sub for Timestamp {
    type Output = i64;

    fn sub(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC (`2024-03-05T14:07:31Z`), as every command and report prints time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(*self))
    }
}

/// `#[serde(with = "cis_core::time::rfc3339")]`: a `Timestamp` as RFC 3339 text, for records
/// people read (JSON output, the access log). Hashed encodings keep the bare integer.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{format, parse_timestamp, Timestamp};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        parse_timestamp(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The text (trimmed) is in neither accepted form.
    #[error("'{0}' is neither RFC 3339 (2024-03-05T14:07:31Z) nor a date (2024-03-05)")]
    Unrecognised(String),
}

impl std::str::FromStr for Timestamp {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Timestamp, TimeError> {
        parse_timestamp(s)
    }
}

/// Accepts RFC 3339 (any offset, normalised to UTC) or a plain `YYYY-MM-DD` (midnight UTC).
pub fn parse_timestamp(s: &str) -> Result<Timestamp, TimeError> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(Timestamp(dt.with_timezone(&Utc).timestamp_micros()));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(date_micros(d));
    }
    Err(TimeError::Unrecognised(s.to_string()))
}

pub fn date_micros(d: NaiveDate) -> Timestamp {
    Timestamp(d.and_hms_opt(0, 0, 0).map_or(0, |dt| dt.and_utc().timestamp_micros()))
}

pub fn now() -> Timestamp {
    Timestamp(Utc::now().timestamp_micros())
}

pub fn format(t: Timestamp) -> String {
    DateTime::<Utc>::from_timestamp_micros(t.0).map_or_else(
        || format!("{}µs", t.0),
        |dt| dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_normalise_to_utc_and_dates_are_midnight() {
        let a = parse_timestamp("2024-03-05T15:07:31+01:00").expect("rfc3339");
        let b = parse_timestamp("2024-03-05T14:07:31Z").expect("rfc3339");
        assert_eq!(a, b);
        assert_eq!(format(b), "2024-03-05T14:07:31Z");
        let d = parse_timestamp("2024-03-05").expect("date");
        assert_eq!(format(d), "2024-03-05T00:00:00Z");
        assert_eq!(
            parse_timestamp(" 05/03/2024 ").map_err(|e| e.to_string()),
            Err("'05/03/2024' is neither RFC 3339 (2024-03-05T14:07:31Z) nor a date (2024-03-05)".into())
        );
        assert!(parse_timestamp("2024-02-30").is_err());
    }

    #[test]
    fn instants_and_durations_do_not_mix_and_bounds_saturate() {
        let t = parse_timestamp("2024-03-05T14:07:31Z").expect("rfc3339");
        let midnight = parse_timestamp("2024-03-05").expect("date");
        assert_eq!(Timestamp::from_day(t.day()), midnight);
        assert_eq!(t - midnight, (14 * 3600 + 7 * 60 + 31) * 1_000_000);
        assert_eq!(midnight.plus_days(1) - midnight, MICROS_PER_DAY);
        assert_eq!(
            Timestamp::from_micros(-1).day(),
            -1,
            "a microsecond before 1970 is day -1"
        );
        assert_eq!(Timestamp::MAX + 1, Timestamp::MAX);
        assert_eq!(Timestamp::MIN - 1, Timestamp::MIN);
        assert_eq!(Timestamp::MIN - Timestamp::MAX, i64::MIN);
        assert_eq!(t.to_string(), "2024-03-05T14:07:31Z");
        assert_eq!("2024-03-05".parse::<Timestamp>(), Ok(midnight));
    }

    /// Artifact hashes cover serialised instants: the newtype must encode as the bare integer.
    #[test]
    fn a_timestamp_serialises_as_its_micros() {
        let t = Timestamp::from_micros(1_709_647_651_000_000);
        let config = bincode::config::standard();
        assert_eq!(
            bincode::serde::encode_to_vec(t, config).expect("bincode"),
            bincode::serde::encode_to_vec(t.micros(), config).expect("bincode")
        );
        assert_eq!(serde_json::to_string(&t).expect("json"), "1709647651000000");
    }
}
