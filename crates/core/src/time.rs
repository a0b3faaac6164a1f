//! Timestamps: i64 microseconds since the Unix epoch, UTC, everywhere in cis.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

pub type Micros = i64;

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The text (trimmed) is in neither accepted form.
    #[error("'{0}' is neither RFC 3339 (2024-03-05T14:07:31Z) nor a date (2024-03-05)")]
    Unrecognised(String),
}

/// Accepts RFC 3339 (any offset, normalised to UTC) or a plain `YYYY-MM-DD` (midnight UTC).
pub fn parse_timestamp(s: &str) -> Result<Micros, TimeError> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc).timestamp_micros());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(date_micros(d));
    }
    Err(TimeError::Unrecognised(s.to_string()))
}

pub fn date_micros(d: NaiveDate) -> Micros {
    d.and_hms_opt(0, 0, 0).map_or(0, |dt| dt.and_utc().timestamp_micros())
}

pub fn now() -> Micros {
    Utc::now().timestamp_micros()
}

pub fn format(t: Micros) -> String {
    DateTime::<Utc>::from_timestamp_micros(t).map_or_else(
        || format!("{t}µs"),
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
}
