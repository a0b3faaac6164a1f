//! Validation and normalisation of one row into an [`Event`]: every rule lives here.
//!
//! Policy per field (absent and empty are the same):
//! - ids (`customer_id`, `order_id`, `session_id`, `return_id`): required, trimmed, case
//!   kept, at most 256 bytes, no control characters.
//! - `event_time`: required, RFC 3339 (normalised to UTC) or `YYYY-MM-DD` (midnight UTC),
//!   between 1900-01-01 and 2200-01-01.
//! - `amount` + `currency`: required; exact decimal in major units, no more decimals than
//!   the currency has; never negative (returns are positive refunds), at most
//!   [`MAX_AMOUNT`] major units; currency upper-cased.
//! - `quantity`: optional; an integer 1 ..= [`MAX_QUANTITY`] when present; absent stays unknown.
//! - `channel`, `device`: optional; trimmed, lower-cased.
//! - `duration_s`: required; an integer number of seconds 0 ..= [`MAX_DURATION_S`].
//! - `page_views`: optional; an integer 0 ..= [`MAX_PAGE_VIEWS`]; absent stays unknown.
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

// Numeric bounds. Features sum amounts in i128 micro-units and durations, page views and
// counts in u64 (`features::compute`); within these bounds no such sum can overflow over
// any history: 10^12 major units are 10^18 micro-units in every currency and an i128 holds
// more than 10^20 of them, more orders than a u64 can count; a u64 holds over 10^13 maximal
// sessions. Each bound sits far above anything real, so no genuine row is refused, while
// typos and hostile values are quarantined.

/// Largest order or return amount, in major units of its currency. 10^12, not less:
/// the bound is per currency, and 10^9 would be only about USD 11,000 in Lebanese pounds
/// or USD 40,000 in dong, the price of a car; 10^12 is about USD 11 million there.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;
/// Largest quantity of one order: a million units, a wholesale order.
pub const MAX_QUANTITY: u32 = 1_000_000;
/// Longest session: a week (604,800 s); a session open longer is a stuck client or a bot.
pub const MAX_DURATION_S: u32 = 604_800;
/// Most page views in one session: a million, more than one a second for a whole week.
pub const MAX_PAGE_VIEWS: u32 = 1_000_000;

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
    let t = time::parse_timestamp(v).or_else(|e| fail(field, e.to_string()))?;
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
    // Cannot overflow: 10^12 · 10^3 (the largest exponent) is far inside i64.
    if minor > MAX_AMOUNT * 10i64.pow(money::exponent(&currency)) {
        return fail(
            "amount",
            format!("'{a}' is above the bound for amount ({MAX_AMOUNT} {currency})"),
        );
    }
    Ok(Money { minor, currency })
}

fn uint(row: &Row, field: &str, min: u32, max: u32) -> Result<Option<u32>, RowError> {
    let Some(v) = row.get(field) else { return Ok(None) };
    let above = || fail(field, format!("'{v}' is above the bound for {field} ({max})"));
    match v.parse::<u32>() {
        Ok(n) if n < min => fail(field, format!("{n} is below {min}")),
        Ok(n) if n > max => above(),
        Ok(n) => Ok(Some(n)),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => above(),
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
            quantity: uint(row, "quantity", 1, MAX_QUANTITY)?,
            channel: label(row, "channel"),
        }),
        Kind::Session => Payload::Session(Session {
            session_id: id(row, "session_id")?,
            duration_s: uint(row, "duration_s", 0, MAX_DURATION_S)?.ok_or_else(|| RowError {
                field: "duration_s".into(),
                reason: "missing".into(),
            })?,
            page_views: uint(row, "page_views", 0, MAX_PAGE_VIEWS)?,
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
