//! Materialising every feature for every customer as of (T, K), in one scan of the log.
//!
//! Everything is accumulated in integers (micro-units of money, seconds, counts, day
//! numbers), so the result does not depend on the order the log is scanned in; floats
//! appear only in the final per-customer formulas.

use std::collections::HashMap;

use cis_storage::block::BUCKETS;
use cis_storage::{EventId, StorageError, Store};

use crate::defs::{definitions, Calc, WINDOWS};
use cis_core::event::{measures, DecodeError, Kind};
use cis_core::time::{Micros, MICROS_PER_DAY};
use cis_core::AsOf;

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("stored event has unknown kind {0}")]
    UnknownKind(u8),
    #[error("a feature worker thread panicked")]
    Panicked,
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
    orders: [u32; 3],
    gross: [i64; 3],
    returns: [u32; 3],
    returned: [i64; 3],
    sessions: [u32; 3],
    session_secs: [u64; 3],
    page_views: [u64; 3],
    /// Bit d set: an activity on the UTC date d days before T's date, inside the window.
    active: [u128; 3],
    first_event: Option<Micros>,
    last_order: Option<Micros>,
    last_session: Option<Micros>,
    lifetime_orders: u32,
    lifetime_gross: i64,
    orders_prev30: u32,
    gross_prev30: i64,
    sessions_prev30: u32,
    /// The signup date from the latest customer row carrying one, keyed by that row's
    /// (event_time, id) so the choice does not depend on scan order.
    signup: Option<(Micros, [u8; 32], Micros)>,
    /// (UTC day number, amount) of every order, for the RFM summary.
    order_days: Vec<(i64, i64)>,
}

fn day_of(t: Micros) -> i64 {
    t.div_euclid(MICROS_PER_DAY)
}

impl Acc {
    /// Folds one visible event (`event_time <= t`) into the totals.
    pub fn add(
        &mut self,
        t: Micros,
        kind: Kind,
        event_time: Micros,
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
                for wi in (0..WINDOWS.len()).filter(|&wi| in_window(wi)) {
                    self.orders[wi] += 1;
                    self.gross[wi] += m.amount_micros;
                }
                if in_prev30 {
                    self.orders_prev30 += 1;
                    self.gross_prev30 += m.amount_micros;
                }
                self.last_order = Some(self.last_order.map_or(event_time, |l| l.max(event_time)));
                self.lifetime_orders += 1;
                self.lifetime_gross += m.amount_micros;
                self.order_days.push((day_of(event_time), m.amount_micros));
            }
            Kind::Return => {
                for wi in (0..WINDOWS.len()).filter(|&wi| in_window(wi)) {
                    self.returns[wi] += 1;
                    self.returned[wi] += m.amount_micros;
                }
            }
            Kind::Session => {
                for wi in (0..WINDOWS.len()).filter(|&wi| in_window(wi)) {
                    self.sessions[wi] += 1;
                    self.session_secs[wi] += u64::from(m.duration_s);
                    self.page_views[wi] += u64::from(m.page_views);
                }
                if in_prev30 {
                    self.sessions_prev30 += 1;
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
    pub fn finish(mut self, t: Micros) -> Vec<f64> {
        let days = |micros: i64| micros as f64 / MICROS_PER_DAY as f64;
        let money = |micros: i64| micros as f64 / 1e6;
        let start = match (self.first_event, self.signup.map(|s| s.2)) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(t),
        };
        let tenure = days(t - start);
        // RFM over purchase dates: same-day orders are one purchase.
        self.order_days.sort_unstable();
        let mut purchase_days: Vec<(i64, i64)> = Vec::new();
        for &(d, amount) in &self.order_days {
            match purchase_days.last_mut() {
                Some((last, total)) if *last == d => *total += amount,
                _ => purchase_days.push((d, amount)),
            }
        }
        let (frequency, recency, age, monetary) = match (purchase_days.first(), purchase_days.last()) {
            (Some(&(first, _)), Some(&(last, _))) => {
                let repeats = &purchase_days[1..];
                let monetary = if repeats.is_empty() {
                    0.0
                } else {
                    money(repeats.iter().map(|r| r.1).sum::<i64>()) / repeats.len() as f64
                };
                (
                    repeats.len() as f64,
                    (last - first) as f64,
                    days(t - first * MICROS_PER_DAY),
                    monetary,
                )
            }
            _ => (0.0, 0.0, 0.0, 0.0),
        };
        let ratio = |num: f64, den: f64| (num + 1.0) / (den + 1.0);
        definitions()
            .iter()
            .map(|d| match d.calc {
                Calc::Orders(w) => f64::from(self.orders[w]),
                Calc::GrossRevenue(w) => money(self.gross[w]),
                Calc::NetRevenue(w) => money(self.gross[w] - self.returned[w]),
                Calc::AvgOrderValue(w) if self.orders[w] > 0 => money(self.gross[w]) / f64::from(self.orders[w]),
                Calc::ReturnRate(w) if self.orders[w] > 0 => f64::from(self.returns[w]) / f64::from(self.orders[w]),
                Calc::AvgOrderValue(_) | Calc::ReturnRate(_) => 0.0,
                Calc::Returns(w) => f64::from(self.returns[w]),
                Calc::Sessions(w) => f64::from(self.sessions[w]),
                Calc::SessionMinutes(w) => self.session_secs[w] as f64 / 60.0,
                Calc::PageViews(w) => self.page_views[w] as f64,
                Calc::ActiveDays(w) => f64::from(self.active[w].count_ones()),
                Calc::TenureDays => tenure,
                Calc::DaysSinceLastOrder => self.last_order.map_or(tenure, |l| days(t - l)),
                Calc::DaysSinceLastSession => self.last_session.map_or(tenure, |l| days(t - l)),
                Calc::LifetimeOrders => f64::from(self.lifetime_orders),
                Calc::LifetimeRevenue => money(self.lifetime_gross),
                Calc::OrderTrend30 => ratio(f64::from(self.orders[1]), f64::from(self.orders_prev30)),
                Calc::RevenueTrend30 => ratio(money(self.gross[1]), money(self.gross_prev30)),
                Calc::SessionTrend30 => ratio(f64::from(self.sessions[1]), f64::from(self.sessions_prev30)),
                Calc::RfmFrequency => frequency,
                Calc::RfmRecencyDays => recency,
                Calc::RfmAgeDays => age,
                Calc::RfmMonetary => monetary,
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

/// What one thread accumulates over its range of customer buckets.
#[derive(Default)]
struct Partial {
    accs: HashMap<String, Acc>,
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

fn accumulate(store: &Store, at: AsOf, buckets: std::ops::Range<u16>) -> Result<Partial, ComputeError> {
    let mut part = Partial::default();
    let mut failure = None;
    store
        .log()
        .scan_buckets(at.visibility(), buckets, |e| {
            let Some(kind) = Kind::from_u8(e.kind) else {
                failure = Some(ComputeError::UnknownKind(e.kind));
                return Err(StorageError::Corrupt("unknown event kind".into()));
            };
            part.visible_events += 1;
            part.digest = part.digest.wrapping_add(digest_term(e.id));
            let acc = match part.accs.get_mut(e.subject) {
                Some(a) => a,
                None => part.accs.entry(e.subject.to_string()).or_default(),
            };
            acc.add(at.as_of, kind, e.event_time, e.id, e.body).map_err(|err| {
                let msg = err.to_string();
                failure = Some(err);
                StorageError::Corrupt(msg)
            })
        })
        .map_err(|e| failure.take().unwrap_or(ComputeError::Storage(e)))?;
    Ok(part)
}

/// Scans the log once and materialises every feature for every customer with a visible
/// event (of any kind, metadata included) at (T, K). The bucket space is split across the
/// machine's cores; customers never span buckets, so the parts merge without conflict.
pub fn materialise(store: &Store, at: AsOf) -> Result<Matrix, ComputeError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8) as u16;
    let step = BUCKETS.div_ceil(threads);
    let parts: Vec<Result<Partial, ComputeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let range = (i * step).min(BUCKETS)..((i + 1) * step).min(BUCKETS);
                scope.spawn(move || accumulate(store, at, range))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(ComputeError::Panicked)))
            .collect()
    });
    let mut customers: Vec<(String, Acc)> = Vec::new();
    let (mut visible_events, mut digest) = (0u64, 0u128);
    for part in parts {
        let part = part?;
        visible_events += part.visible_events;
        digest = digest.wrapping_add(part.digest);
        customers.extend(part.accs);
    }
    customers.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let t = at.as_of;
    let mut values = Vec::with_capacity(customers.len() * Matrix::width());
    let mut ids = Vec::with_capacity(customers.len());
    for (id, acc) in customers {
        let row = acc.finish(t);
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
/// per-customer range scan of the log. `None` when the customer has no visible event.
pub fn customer_row(store: &Store, customer: &str, at: AsOf) -> Result<Option<Vec<f64>>, ComputeError> {
    let mut acc = Acc::default();
    let mut seen = false;
    for entry in store.log().subject_events(customer, at.visibility())? {
        if let cis_storage::Entry::Live(e) = entry {
            let kind = Kind::from_u8(e.kind).ok_or(ComputeError::UnknownKind(e.kind))?;
            acc.add(at.as_of, kind, e.event_time, &e.id, &e.body)?;
            seen = true;
        }
    }
    Ok(seen.then(|| acc.finish(at.as_of)))
}
