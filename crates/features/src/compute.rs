//! Materialising every feature for every customer as of (T, K), in one scan of the log.
//!
//! Everything is accumulated in integers (micro-units of money, seconds, counts, day
//! numbers), so the result does not depend on the order the log is scanned in; floats
//! appear only in the final per-customer formulas.
//!
//! Every sum is checked and wide enough never to be reached: money in i128 micro-units,
//! counts, seconds and page views in u64. With the bounds ingest enforces (an amount of at
//! most 10^12 major units is 10^18 micro-units; a session at most 604,800 s and 10^6 page
//! views) a sum would need more than 10^20 orders or 10^13 sessions of one customer to
//! overflow; even an out-of-bound event stored before those bounds existed (any i64 amount,
//! any u32 duration) needs more than 10^13 orders or 4·10^9 sessions. Should it ever happen,
//! the snapshot fails with [`ComputeError::Overflow`] instead of a wrapped total.

use std::sync::atomic::{AtomicU16, Ordering};

use cis_storage::block::BUCKETS;
use cis_storage::{EventId, PrefixMap, StorageError, Store};

use crate::defs::{definitions, Calc, WINDOWS};
use cis_core::event::{measures, DecodeError, Kind};
use cis_core::time::{Timestamp, MICROS_PER_DAY};
use cis_core::AsOf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComputeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("stored event has unknown kind {0}")]
    UnknownKind(u8),
    #[error("a feature worker thread panicked")]
    Panicked,
    #[error("the {0} of one customer overflows its accumulator")]
    Overflow(&'static str),
    #[error("feature {feature} of customer {customer} is not finite ({value})")]
    NotFinite {
        customer: String,
        feature: String,
        value: f64,
    },
}

/// Per-customer running totals. Index `wi` follows [`WINDOWS`].
#[derive(Debug, Clone, Default)]
pub struct Acc {
    orders: [u64; 3],
    gross: [i128; 3],
    returns: [u64; 3],
    returned: [i128; 3],
    sessions: [u64; 3],
    session_secs: [u64; 3],
    page_views: [u64; 3],
    /// Bit d set: an activity on the UTC date d days before T's date, inside the window.
    active: [u128; 3],
    first_event: Option<Timestamp>,
    last_order: Option<Timestamp>,
    last_session: Option<Timestamp>,
    lifetime_orders: u64,
    lifetime_gross: i128,
    orders_prev30: u64,
    gross_prev30: i128,
    sessions_prev30: u64,
    /// The signup date from the latest customer row carrying one, keyed by that row's
    /// (event_time, id) so the choice does not depend on scan order.
    signup: Option<(Timestamp, [u8; 32], Timestamp)>,
    /// (UTC day number, amount) of every order, for the RFM summary.
    order_days: Vec<(i64, i128)>,
}

fn day_of(t: Timestamp) -> i64 {
    t.day()
}

/// Adds `v` to the running total `sum` of `what`, refusing to wrap.
fn add_to<T: CheckedAdd>(sum: &mut T, v: T, what: &'static str) -> Result<(), ComputeError> {
    *sum = sum.checked_add(v).ok_or(ComputeError::Overflow(what))?;
    Ok(())
}

/// The accumulators' integer types: just `checked_add`, which std has on each but no trait for.
trait CheckedAdd: Copy {
    fn checked_add(self, v: Self) -> Option<Self>;
}

impl CheckedAdd for u64 {
    fn checked_add(self, v: u64) -> Option<u64> {
        u64::checked_add(self, v)
    }
}

impl CheckedAdd for i128 {
    fn checked_add(self, v: i128) -> Option<i128> {
        i128::checked_add(self, v)
    }
}

impl Acc {
    /// Folds one visible event (`event_time <= t`) into the totals.
    pub fn add(
        &mut self,
        t: Timestamp,
        kind: Kind,
        event_time: Timestamp,
        id: &[u8; 32],
        body: &[u8],
    ) -> Result<(), ComputeError> {
        let m = measures(kind, body)?;
        self.first_event = Some(self.first_event.map_or(event_time, |f| f.min(event_time)));
        let age = t - event_time;
        let in_window = |wi: usize| age < i64::from(WINDOWS[wi]) * MICROS_PER_DAY;
        let in_prev30 = (30 * MICROS_PER_DAY..60 * MICROS_PER_DAY).contains(&age);
        let day_bit = 1u128 << (day_of(t) - day_of(event_time)).min(127);
        if kind != Kind::Customer {
            for wi in 0..WINDOWS.len() {
                if in_window(wi) {
                    self.active[wi] |= day_bit;
                }
            }
        }
        match kind {
            Kind::Order => {
                let a = m.amount_micros;
                for wi in (0..WINDOWS.len()).filter(|&wi| in_window(wi)) {
                    add_to(&mut self.orders[wi], 1, "order count")?;
                    add_to(&mut self.gross[wi], a, "gross revenue")?;
                }
                if in_prev30 {
                    add_to(&mut self.orders_prev30, 1, "order count")?;
                    add_to(&mut self.gross_prev30, a, "gross revenue")?;
                }
                self.last_order = Some(self.last_order.map_or(event_time, |l| l.max(event_time)));
                add_to(&mut self.lifetime_orders, 1, "order count")?;
                add_to(&mut self.lifetime_gross, a, "gross revenue")?;
                self.order_days.push((day_of(event_time), a));
            }
            Kind::Return => {
                for wi in (0..WINDOWS.len()).filter(|&wi| in_window(wi)) {
                    add_to(&mut self.returns[wi], 1, "return count")?;
                    add_to(&mut self.returned[wi], m.amount_micros, "returned amount")?;
                }
            }
            Kind::Session => {
                for wi in (0..WINDOWS.len()).filter(|&wi| in_window(wi)) {
                    add_to(&mut self.sessions[wi], 1, "session count")?;
                    add_to(&mut self.session_secs[wi], u64::from(m.duration_s), "session seconds")?;
                    add_to(&mut self.page_views[wi], u64::from(m.page_views), "page views")?;
                }
                if in_prev30 {
                    add_to(&mut self.sessions_prev30, 1, "session count")?;
                }
                self.last_session = Some(self.last_session.map_or(event_time, |l| l.max(event_time)));
            }
            Kind::Customer => {
                if let Some(s) = m.signup_date {
                    if self.signup.is_none_or(|(et, eid, _)| (event_time, *id) > (et, eid)) {
                        self.signup = Some((event_time, *id, s));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every feature in definition order.
    pub fn finish(mut self, t: Timestamp) -> Result<Vec<f64>, ComputeError> {
        let days = |micros: i64| micros as f64 / MICROS_PER_DAY as f64;
        let money = |micros: i128| micros as f64 / 1e6;
        let count = |n: u64| n as f64;
        let start = match (self.first_event, self.signup.map(|s| s.2)) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(t),
        };
        let tenure = days(t - start);
        // RFM over purchase dates: same-day orders are one purchase.
        self.order_days.sort_unstable();
        let mut purchase_days: Vec<(i64, i128)> = Vec::new();
        for &(d, amount) in &self.order_days {
            match purchase_days.last_mut() {
                Some((last, total)) if *last == d => add_to(total, amount, "gross revenue")?,
                _ => purchase_days.push((d, amount)),
            }
        }
        let (frequency, recency, age, monetary) = match (purchase_days.first(), purchase_days.last()) {
            (Some(&(first, _)), Some(&(last, _))) => {
                let repeats = &purchase_days[1..];
                let monetary = if repeats.is_empty() {
                    0.0
                } else {
                    let mut total = 0i128;
                    for r in repeats {
                        add_to(&mut total, r.1, "gross revenue")?;
                    }
                    money(total) / repeats.len() as f64
                };
                (
                    repeats.len() as f64,
                    (last - first) as f64,
                    days(t - Timestamp::from_day(first)),
                    monetary,
                )
            }
            _ => (0.0, 0.0, 0.0, 0.0),
        };
        let ratio = |num: f64, den: f64| (num + 1.0) / (den + 1.0);
        definitions()
            .iter()
            .map(|d| {
                Ok(match d.calc {
                    Calc::Orders(w) => count(self.orders[w]),
                    Calc::GrossRevenue(w) => money(self.gross[w]),
                    Calc::NetRevenue(w) => money(
                        self.gross[w]
                            .checked_sub(self.returned[w])
                            .ok_or(ComputeError::Overflow("net revenue"))?,
                    ),
                    Calc::AvgOrderValue(w) if self.orders[w] > 0 => money(self.gross[w]) / count(self.orders[w]),
                    Calc::ReturnRate(w) if self.orders[w] > 0 => count(self.returns[w]) / count(self.orders[w]),
                    Calc::AvgOrderValue(_) | Calc::ReturnRate(_) => 0.0,
                    Calc::Returns(w) => count(self.returns[w]),
                    Calc::Sessions(w) => count(self.sessions[w]),
                    Calc::SessionMinutes(w) => count(self.session_secs[w]) / 60.0,
                    Calc::PageViews(w) => count(self.page_views[w]),
                    Calc::ActiveDays(w) => f64::from(self.active[w].count_ones()),
                    Calc::TenureDays => tenure,
                    Calc::DaysSinceLastOrder => self.last_order.map_or(tenure, |l| days(t - l)),
                    Calc::DaysSinceLastSession => self.last_session.map_or(tenure, |l| days(t - l)),
                    Calc::LifetimeOrders => count(self.lifetime_orders),
                    Calc::LifetimeRevenue => money(self.lifetime_gross),
                    Calc::OrderTrend30 => ratio(count(self.orders[1]), count(self.orders_prev30)),
                    Calc::RevenueTrend30 => ratio(money(self.gross[1]), money(self.gross_prev30)),
                    Calc::SessionTrend30 => ratio(count(self.sessions[1]), count(self.sessions_prev30)),
                    Calc::RfmFrequency => frequency,
                    Calc::RfmRecencyDays => recency,
                    Calc::RfmAgeDays => age,
                    Calc::RfmMonetary => monetary,
                })
            })
            .collect()
    }
}

/// The materialised features: rows sorted by customer id, columns in definition order.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub customers: Vec<String>,
    pub values: Vec<f64>,
    /// How many events were visible, and an order-independent digest of their ids.
    pub visible_events: u64,
    pub visible_digest: u128,
}

impl Matrix {
    pub fn width() -> usize {
        definitions().len()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        let w = Self::width();
        &self.values[i * w..(i + 1) * w]
    }
}

/// What one thread accumulates over the bucket ranges it takes.
#[derive(Default)]
struct Partial {
    /// By subject handle (a hash prefix, hashed by identity), as the log itself tells customers
    /// apart (their keys, their per-customer reads): the customer id and its totals.
    accs: PrefixMap<(String, Acc)>,
    visible_events: u64,
    digest: u128,
}

/// An event's term in a snapshot's order-independent digest of visible ids (a wrapping sum,
/// so erasure can take an erased customer's events back out of a stored snapshot).
pub fn digest_term(id: &EventId) -> u128 {
    let mut prefix = [0u8; 16];
    prefix.copy_from_slice(&id[..16]);
    u128::from_be_bytes(prefix)
}

/// How many customer buckets a thread scans before it takes the next ones: small enough that
/// a thread the machine's other work slows down leaves the rest to the others, large enough
/// that starting a range scan is noise.
const CHUNK: u16 = 64;

/// Customers' rows: `(id, the row or why it failed)`.
type Rows = Vec<(String, Result<Vec<f64>, ComputeError>)>;

/// Scans bucket ranges taken from `next` until none is left, then finishes every customer's
/// row; returns the rows sorted by id, the visible event count and their digest.
fn accumulate(store: &Store, at: AsOf, next: &AtomicU16) -> Result<(Rows, u64, u128), ComputeError> {
    let mut part = Partial::default();
    loop {
        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
        if start >= BUCKETS {
            break;
        }
        store
            .log()
            .scan_buckets(at.visibility(), start..start.saturating_add(CHUNK).min(BUCKETS), |e| {
                let kind = Kind::from_u8(e.kind).ok_or(ComputeError::UnknownKind(e.kind))?;
                part.visible_events += 1;
                part.digest = part.digest.wrapping_add(digest_term(e.id));
                let (_, acc) = part
                    .accs
                    .entry(e.handle)
                    .or_insert_with(|| (e.subject.to_string(), Acc::default()));
                acc.add(at.as_of, kind, Timestamp::from_micros(e.event_time), e.id, e.body)
            })?;
    }
    // Finished here, in parallel; an error stays with its customer, so the caller reports the
    // first in customer order whatever thread met it.
    let mut rows: Rows = part
        .accs
        .into_values()
        .map(|(id, acc)| (id, acc.finish(at.as_of)))
        .collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok((rows, part.visible_events, part.digest))
}

/// Scans the log once and materialises every feature for every customer with a visible
/// event (of any kind, metadata included) at (T, K). The bucket space is shared out across the
/// machine's cores [`CHUNK`] buckets at a time; customers never span buckets, so the parts merge
/// without conflict.
pub fn materialise(store: &Store, at: AsOf) -> Result<Matrix, ComputeError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    let next = AtomicU16::new(0);
    let parts: Vec<Result<(Rows, u64, u128), ComputeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| accumulate(store, at, &next)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(ComputeError::Panicked)))
            .collect()
    });
    let mut customers: Rows = Vec::new();
    let (mut visible_events, mut digest) = (0u64, 0u128);
    for part in parts {
        let (rows, events, part_digest) = part?;
        visible_events += events;
        digest = digest.wrapping_add(part_digest);
        customers.extend(rows);
    }
    // A stable sort finds the threads' sorted runs and merges them.
    customers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut values = Vec::with_capacity(customers.len() * Matrix::width());
    let mut ids = Vec::with_capacity(customers.len());
    for (id, row) in customers {
        let row = row?;
        if let Some((j, v)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ComputeError::NotFinite {
                customer: id,
                feature: definitions()[j].name.clone(),
                value: *v,
            });
        }
        values.extend(row);
        ids.push(id);
    }
    Ok(Matrix {
        customers: ids,
        values,
        visible_events,
        visible_digest: digest,
    })
}

/// One customer's features at (T, K), by the same accumulator as [`materialise`] over a
/// per-customer range scan of the log as it was after batch `through` (`u64::MAX`: every
/// committed batch). `None` when the customer has no visible event.
pub fn customer_row(store: &Store, customer: &str, at: AsOf, through: u64) -> Result<Option<Vec<f64>>, ComputeError> {
    let mut acc = Acc::default();
    let mut seen = false;
    for entry in store.log().subject_events_through(customer, at.visibility(), through)? {
        if let cis_storage::Entry::Live(e) = entry {
            let kind = Kind::from_u8(e.kind).ok_or(ComputeError::UnknownKind(e.kind))?;
            acc.add(at.as_of, kind, Timestamp::from_micros(e.event_time), &e.id, &e.body)?;
            seen = true;
        }
    }
    seen.then(|| acc.finish(at.as_of)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cis_core::event::{encode_body, Money, Order, Payload, Session};

    const T: Timestamp = Timestamp::from_day(100);
    const ID: [u8; 32] = [7; 32];

    fn order(minor: i64) -> Vec<u8> {
        encode_body(&Payload::Order(Order {
            order_id: "o".into(),
            amount: Money {
                minor,
                currency: "JPY".into(),
            },
            quantity: None,
            channel: None,
        }))
    }

    fn session(duration_s: u32, page_views: u32) -> Vec<u8> {
        encode_body(&Payload::Session(Session {
            session_id: "s".into(),
            duration_s,
            page_views: Some(page_views),
            device: None,
        }))
    }

    fn overflow(r: Result<impl std::fmt::Debug, ComputeError>) -> &'static str {
        match r {
            Err(ComputeError::Overflow(what)) => what,
            other => panic!("expected an overflow error, got {other:?}"),
        }
    }

    /// Two i64::MAX yen orders: 2 · 9.2·10^24 micro-units, far past i64, exact in i128.
    #[test]
    fn amounts_beyond_i64_sum_exactly() {
        let mut acc = Acc::default();
        for _ in 0..2 {
            acc.add(T, Kind::Order, T, &ID, &order(i64::MAX)).expect("adds");
        }
        assert_eq!(acc.lifetime_gross, 2 * i128::from(i64::MAX) * 1_000_000);
        assert_eq!(acc.gross, [acc.lifetime_gross; 3]);
        assert_eq!(acc.lifetime_orders, 2);
    }

    #[test]
    fn a_sum_that_would_wrap_is_an_error() {
        let mut acc = Acc {
            lifetime_gross: i128::MAX - 1,
            ..Acc::default()
        };
        assert_eq!(overflow(acc.add(T, Kind::Order, T, &ID, &order(1))), "gross revenue");

        let mut acc = Acc {
            orders: [u64::MAX; 3],
            ..Acc::default()
        };
        assert_eq!(overflow(acc.add(T, Kind::Order, T, &ID, &order(1))), "order count");

        let mut acc = Acc {
            session_secs: [u64::MAX - 10; 3],
            ..Acc::default()
        };
        assert_eq!(
            overflow(acc.add(T, Kind::Session, T, &ID, &session(11, 0))),
            "session seconds"
        );

        let mut acc = Acc {
            page_views: [u64::MAX; 3],
            ..Acc::default()
        };
        assert_eq!(
            overflow(acc.add(T, Kind::Session, T, &ID, &session(0, 1))),
            "page views"
        );
    }

    /// Failures inside the scan's visitor come back as the computation's own errors, not as
    /// a storage error: an unknown kind, and a body its kind cannot decode.
    #[test]
    fn a_visitor_failure_is_a_compute_error() {
        let materialised = |kind: u8, body: Vec<u8>| {
            let store = Store::in_memory().expect("store");
            let event = cis_storage::NewEvent {
                kind,
                subject: "c1".into(),
                event_time: T.micros() - 1,
                recorded_at: T.micros() - 1,
                body,
            };
            store.log().append(vec![event], 1, 0).expect("append");
            materialise(&store, AsOf::new(Some(T), None))
        };
        assert!(matches!(materialised(9, order(1)), Err(ComputeError::UnknownKind(9))));
        assert!(matches!(
            materialised(Kind::Order as u8, b"not an order".to_vec()),
            Err(ComputeError::Decode(_))
        ));
    }

    #[test]
    fn totals_formed_at_the_end_are_checked_too() {
        let acc = Acc {
            order_days: vec![(99, i128::MAX), (99, 1)],
            ..Acc::default()
        };
        assert_eq!(overflow(acc.finish(T)), "gross revenue");
        let acc = Acc {
            gross: [i128::MAX; 3],
            returned: [-1; 3],
            ..Acc::default()
        };
        assert_eq!(overflow(acc.finish(T)), "net revenue");
    }
}
