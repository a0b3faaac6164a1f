//! Validation and normalisation of one row into an [`Event`]: every rule lives here.
//!
//! Policy per field (absent and empty are the same):
//! - ids (`customer_id`, `order_id`, `session_id`, `return_id`): required, trimmed, case
//!   kept, at most 256 bytes, no control characters.
//! - `event_time`: required, RFC 3339 (normalised to UTC) or `YYYY-MM-DD` (midnight UTC),
//!   between 1900-01-01 and 2200-01-01.
//! - `amount` + `currency`: required; exact decimal in major units, no more decimals than
//!   the currency has; never negative (returns are positive refunds); currency upper-cased.
//! - `quantity`: optional; an integer ≥ 1 when present; absent stays unknown.
//! - `channel`, `device`: optional; trimmed, lower-cased.
//! - `duration_s`: required; an integer number of seconds ≥ 0.
//! - `page_views`: optional; an integer ≥ 0; absent stays unknown.
//! - `reason`: optional free text, trimmed.
//! - `signup_date`: optional; a date or RFC 3339 time.
//! - `country`: optional; ISO 3166 alpha-2, upper-cased.
//! - customers' further columns: kept as attributes (name lower-cased, value trimmed,
//!   at most 1024 bytes); personal-data columns never get here.

use std::collections::BTreeMap;

use crate::source::Row;
use cis_core::event::{Customer, Event, Kind, Money, Order, Payload, Return, Session};
use cis_core::money;
use cis_core::time::{self, Micros};

/// Why a row was rejected: the field and the reason, for the quarantine record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub field: String,
    pub reason: String,
}

fn fail<T>(field: &str, reason: impl Into<String>) -> Result<T, RowError> {
    Err(RowError {
        field: field.into(),
        reason: reason.into(),
    })
}

pub fn required_columns(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Order => &["order_id", "customer_id", "event_time", "amount", "currency"],
        Kind::Session => &["session_id", "customer_id", "event_time", "duration_s"],
        Kind::Return => &[
            "return_id",
            "order_id",
            "customer_id",
            "event_time",
            "amount",
            "currency",
        ],
        Kind::Customer => &["customer_id", "event_time"],
    }
}

pub fn optional_columns(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Order => &["quantity", "channel"],
        Kind::Session => &["page_views", "device"],
        Kind::Return => &["reason"],
        Kind::Customer => &["signup_date", "country"],
    }
}

const MIN_TIME: Micros = -2_208_988_800_000_000; // 1900-01-01
const MAX_TIME: Micros = 7_258_118_400_000_000; // 2200-01-01

fn id(row: &Row, field: &str) -> Result<String, RowError> {
    let Some(v) = row.get(field) else {
        return fail(field, "missing");
    };
    if v.len() > 256 {
        return fail(field, format!("{} bytes; at most 256", v.len()));
    }
    if v.chars().any(char::is_control) {
        return fail(field, "contains control characters");
    }
    Ok(v.to_string())
}

pub fn timestamp(row: &Row, field: &str) -> Result<Micros, RowError> {
    let Some(v) = row.get(field) else {
        return fail(field, "missing");
    };
    let t = time::parse_timestamp(v).or_else(|e| fail(field, e))?;
    if !(MIN_TIME..MAX_TIME).contains(&t) {
        return fail(field, format!("'{v}' is outside 1900-01-01 .. 2200-01-01"));
    }
    Ok(t)
}

fn money_field(row: &Row) -> Result<Money, RowError> {
    let currency = match row.get("currency") {
        Some(c) => money::parse_currency(c).or_else(|e| fail("currency", e))?,
        None => return fail("currency", "missing"),
    };
    let Some(a) = row.get("amount") else {
        return fail("amount", "missing");
    };
    let minor = money::parse_amount(a, &currency).or_else(|e| fail("amount", e))?;
    if minor < 0 {
        return fail("amount", format!("'{a}' is negative"));
    }
    Ok(Money { minor, currency })
}

fn uint(row: &Row, field: &str, min: u32) -> Result<Option<u32>, RowError> {
    let Some(v) = row.get(field) else { return Ok(None) };
    match v.parse::<u32>() {
        Ok(n) if n >= min => Ok(Some(n)),
        Ok(n) => fail(field, format!("{n} is below {min}")),
        Err(_) => fail(field, format!("'{v}' is not a whole number")),
    }
}

fn label(row: &Row, field: &str) -> Option<String> {
    row.get(field).map(|v| v.to_lowercase())
}

fn text(row: &Row, field: &str) -> Option<String> {
    row.get(field).map(str::to_string)
}

/// Validates `row` as an event of `kind`. `reserved` names columns that are not
/// attributes (e.g. the column `--recorded-at` reads).
pub fn validate(kind: Kind, row: &Row, reserved: &[&str]) -> Result<Event, RowError> {
    let customer_id = id(row, "customer_id")?;
    let event_time = timestamp(row, "event_time")?;
    let payload = match kind {
        Kind::Order => Payload::Order(Order {
            order_id: id(row, "order_id")?,
            amount: money_field(row)?,
            quantity: uint(row, "quantity", 1)?,
            channel: label(row, "channel"),
        }),
        Kind::Session => Payload::Session(Session {
            session_id: id(row, "session_id")?,
            duration_s: uint(row, "duration_s", 0)?.ok_or_else(|| RowError {
                field: "duration_s".into(),
                reason: "missing".into(),
            })?,
            page_views: uint(row, "page_views", 0)?,
            device: label(row, "device"),
        }),
        Kind::Return => Payload::Return(Return {
            return_id: id(row, "return_id")?,
            order_id: id(row, "order_id")?,
            amount: money_field(row)?,
            reason: text(row, "reason"),
        }),
        Kind::Customer => Payload::Customer(customer(row, reserved)?),
    };
    Ok(Event {
        customer_id,
        event_time,
        payload,
    })
}

fn customer(row: &Row, reserved: &[&str]) -> Result<Customer, RowError> {
    let signup_date = match row.get("signup_date") {
        Some(_) => Some(timestamp(row, "signup_date")?),
        None => None,
    };
    let country = match row.get("country") {
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => Some(c.to_ascii_uppercase()),
        Some(c) => return fail("country", format!("'{c}' is not an ISO 3166 alpha-2 code")),
        None => None,
    };
    let mut attributes = BTreeMap::new();
    for name in row.names() {
        if ["customer_id", "event_time", "signup_date", "country"].contains(&name) || reserved.contains(&name) {
            continue;
        }
        if let Some(v) = row.get(name) {
            if v.len() > 1024 {
                return fail(name, format!("{} bytes; at most 1024", v.len()));
            }
            attributes.insert(name.to_string(), v.to_string());
        }
    }
    Ok(Customer {
        signup_date,
        country,
        attributes,
    })
}
