//! Point-in-time features: hand-checked values on CDNOW, a naive reference implementation on
//! random logs, the leakage property, late data, labels, and replay.

use cis_core::event::{measures, Customer, Event, Kind, Money, Order, Payload, Return, Session};
use cis_core::time::{Timestamp, MICROS_PER_DAY};
use cis_core::AsOf;
use cis_features::compute::customer_row;
use cis_features::defs::{definitions, Calc, WINDOWS};
use cis_features::labels::{self, churn_labels, training_set, LabelError};
use cis_features::snapshot::{self, Replay};
use cis_ingest::source::Format;
use cis_ingest::validate::{MAX_AMOUNT, MAX_DURATION_S, MAX_PAGE_VIEWS, MAX_QUANTITY};
use cis_ingest::RecordedAt;
use cis_storage::{envelope, NewEvent, Store};
use proptest::prelude::*;

use crate::util::{cdnow_store, ingest, t, visible, write};

/// Values worked out by hand from fixtures/CDNOW_sample.txt (see the rows in each comment).
#[test]
fn cdnow_golden_values() {
    let store = cdnow_store();
    let snap = snapshot::compute(&store, AsOf::new(Some(t("1997-10-01")), None)).expect("snapshot");
    assert_eq!(
        snap.matrix.customers.len(),
        2357,
        "every CDNOW customer bought in Q1 1997"
    );
    let v = |c: &str, f: &str| snap.value(c, f).unwrap_or_else(|| panic!("{c} {f}"));
    // 0001: 1997-01-01 29.33, 01-18 29.73, 08-02 14.96 (12-12 is after T).
    assert_eq!(v("0001", "lifetime_orders"), 3.0);
    assert_eq!(v("0001", "lifetime_revenue"), 74.02);
    assert_eq!(v("0001", "days_since_last_order"), 60.0);
    assert_eq!(v("0001", "tenure_days"), 273.0);
    assert_eq!(v("0001", "orders_90d"), 1.0);
    assert_eq!(v("0001", "rfm_monetary"), 22.345);
    // 0046: 14 orders by 09-01 on 13 dates (two on 08-28); 09-01 00:00 is exactly 30 days
    // before T, so it is outside the half-open 30-day window and inside the previous 30 days.
    assert_eq!(v("0046", "lifetime_orders"), 14.0);
    assert_eq!(v("0046", "rfm_frequency"), 12.0);
    assert_eq!(v("0046", "rfm_recency_days"), 241.0);
    assert_eq!(v("0046", "rfm_age_days"), 271.0);
    assert!((v("0046", "rfm_monetary") - 29.54).abs() < 1e-9);
    assert!((v("0046", "lifetime_revenue") - 395.18).abs() < 1e-9);
    assert_eq!(v("0046", "orders_30d"), 0.0);
    assert_eq!(v("0046", "orders_90d"), 7.0);
    assert!((v("0046", "gross_revenue_90d") - 174.25).abs() < 1e-9);
    assert_eq!(v("0046", "active_days_90d"), 6.0);
    assert_eq!(v("0046", "days_since_last_order"), 30.0);
    assert_eq!(v("0046", "order_trend_30d"), 0.25);

    let early = snapshot::compute(&store, AsOf::new(Some(t("1997-03-01")), None)).expect("snapshot");
    let e = |f: &str| early.value("0061", f).unwrap_or_else(|| panic!("0061 {f}"));
    // 0061: 01-04 56.27; 01-20 62.90 + 15.36; 02-24 63.95 + 24.99.
    assert_eq!(e("lifetime_orders"), 5.0);
    assert_eq!(e("rfm_frequency"), 2.0);
    assert!((e("rfm_monetary") - 83.60).abs() < 1e-9);
    assert_eq!((e("rfm_recency_days"), e("rfm_age_days")), (51.0, 56.0));
    assert_eq!((e("orders_7d"), e("orders_30d"), e("active_days_7d")), (2.0, 2.0, 1.0));
    assert!((e("avg_order_value_7d") - 44.47).abs() < 1e-9);
    assert_eq!(early.value("0100", "lifetime_orders"), Some(1.0));
}

/// (customer, kind 0..4, day, half-day, recorded lag in half-days, n)
pub(crate) type Spec = (u8, u8, i64, i64, i64, u32);

const HALF_DAY: i64 = MICROS_PER_DAY / 2;

/// The point (T, K) of two instants in microseconds, as the naive reference keeps them.
fn at(t: i64, k: i64) -> AsOf {
    AsOf {
        as_of: Timestamp::from_micros(t),
        known_at: Timestamp::from_micros(k),
    }
}

pub(crate) fn to_event(&(c, k, day, half, lag, n): &Spec) -> NewEvent {
    let event_time = day * MICROS_PER_DAY + half * HALF_DAY;
    let money = Money {
        minor: i64::from(n) * 7,
        currency: if n % 5 == 0 { "JPY".into() } else { "USD".into() },
    };
    let payload = match k {
        0 => Payload::Order(Order {
            order_id: format!("o{day}-{half}-{n}"),
            amount: money,
            quantity: None,
            channel: None,
        }),
        1 => Payload::Session(Session {
            session_id: format!("s{day}-{half}"),
            duration_s: n * 13,
            page_views: (n % 3 != 0).then_some(n % 7),
            device: None,
        }),
        2 => Payload::Return(Return {
            return_id: format!("r{day}"),
            order_id: "o".into(),
            amount: money,
            reason: None,
        }),
        _ => Payload::Customer(Customer {
            signup_date: (n % 2 == 0).then_some(Timestamp::from_day(i64::from(n % 50))),
            country: None,
            attributes: Default::default(),
        }),
    };
    Event {
        customer_id: format!("c{c}"),
        event_time: Timestamp::from_micros(event_time),
        payload,
    }
    .into_new_event(Timestamp::from_micros(event_time + lag * HALF_DAY))
}

pub(crate) fn specs(max: usize) -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec((0u8..5, 0u8..4, 0i64..150, 0i64..2, 0i64..40, 0u32..60), 0..max)
}

/// The reference: for each customer, filter the visible events and compute every feature
/// straight from its definition, with no shared accumulator code.
fn reference(events: &[NewEvent], t: i64, k: i64) -> Vec<(String, Vec<f64>)> {
    let visible = visible(events, t, k);
    let mut customers: Vec<String> = visible.iter().map(|e| e.subject.clone()).collect();
    customers.sort();
    customers.dedup();
    let day = MICROS_PER_DAY as f64;
    customers
        .into_iter()
        .map(|c| {
            let mine: Vec<&&NewEvent> = visible.iter().filter(|e| e.subject == c).collect();
            let of = |kind: Kind| mine.iter().filter(move |e| e.kind == kind as u8);
            let amount = |e: &NewEvent| {
                measures(Kind::from_u8(e.kind).expect("kind"), &e.body)
                    .expect("m")
                    .amount_micros
            };
            let m = |e: &NewEvent| measures(Kind::from_u8(e.kind).expect("kind"), &e.body).expect("m");
            let within = |e: &NewEvent, lo: i64, hi: i64| {
                t - e.event_time >= lo * MICROS_PER_DAY && t - e.event_time < hi * MICROS_PER_DAY
            };
            let count = |kind: Kind, lo: i64, hi: i64| of(kind).filter(|e| within(e, lo, hi)).count() as f64;
            let sum =
                |kind: Kind, lo: i64, hi: i64| of(kind).filter(|e| within(e, lo, hi)).map(|e| amount(e)).sum::<i128>();
            let signup = of(Kind::Customer)
                .filter_map(|e| {
                    m(e).signup_date
                        .map(|s| ((e.event_time, envelope::event_id(&e.envelope().expect("env"))), s))
                })
                .max()
                .map(|(_, s)| s);
            let first = mine
                .iter()
                .map(|e| e.event_time)
                .chain(signup.map(Timestamp::micros))
                .min()
                .expect("an event");
            let tenure = (t - first) as f64 / day;
            let last = |kind: Kind| of(kind).map(|e| e.event_time).max();
            let mut dates: Vec<i64> = of(Kind::Order)
                .map(|e| e.event_time.div_euclid(MICROS_PER_DAY))
                .collect();
            dates.sort();
            dates.dedup();
            let repeat_totals: Vec<i128> = dates
                .iter()
                .skip(1)
                .map(|d| {
                    of(Kind::Order)
                        .filter(|e| e.event_time.div_euclid(MICROS_PER_DAY) == *d)
                        .map(|e| amount(e))
                        .sum()
                })
                .collect();
            let row = definitions()
                .iter()
                .map(|d| {
                    let w = |wi: usize| i64::from(WINDOWS[wi]);
                    match d.calc {
                        Calc::Orders(wi) => count(Kind::Order, 0, w(wi)),
                        Calc::GrossRevenue(wi) => sum(Kind::Order, 0, w(wi)) as f64 / 1e6,
                        Calc::NetRevenue(wi) => (sum(Kind::Order, 0, w(wi)) - sum(Kind::Return, 0, w(wi))) as f64 / 1e6,
                        Calc::AvgOrderValue(wi) => {
                            let n = count(Kind::Order, 0, w(wi));
                            if n == 0.0 {
                                0.0
                            } else {
                                sum(Kind::Order, 0, w(wi)) as f64 / 1e6 / n
                            }
                        }
                        Calc::Returns(wi) => count(Kind::Return, 0, w(wi)),
                        Calc::ReturnRate(wi) => {
                            let n = count(Kind::Order, 0, w(wi));
                            if n == 0.0 {
                                0.0
                            } else {
                                count(Kind::Return, 0, w(wi)) / n
                            }
                        }
                        Calc::Sessions(wi) => count(Kind::Session, 0, w(wi)),
                        Calc::SessionMinutes(wi) => {
                            of(Kind::Session)
                                .filter(|e| within(e, 0, w(wi)))
                                .map(|e| u64::from(m(e).duration_s))
                                .sum::<u64>() as f64
                                / 60.0
                        }
                        Calc::PageViews(wi) => of(Kind::Session)
                            .filter(|e| within(e, 0, w(wi)))
                            .map(|e| u64::from(m(e).page_views))
                            .sum::<u64>() as f64,
                        Calc::ActiveDays(wi) => {
                            let mut days: Vec<i64> = mine
                                .iter()
                                .filter(|e| e.kind != Kind::Customer as u8 && within(e, 0, w(wi)))
                                .map(|e| e.event_time.div_euclid(MICROS_PER_DAY))
                                .collect();
                            days.sort();
                            days.dedup();
                            days.len() as f64
                        }
                        Calc::TenureDays => tenure,
                        Calc::DaysSinceLastOrder => last(Kind::Order).map_or(tenure, |l| (t - l) as f64 / day),
                        Calc::DaysSinceLastSession => last(Kind::Session).map_or(tenure, |l| (t - l) as f64 / day),
                        Calc::LifetimeOrders => of(Kind::Order).count() as f64,
                        Calc::LifetimeRevenue => of(Kind::Order).map(|e| amount(e)).sum::<i128>() as f64 / 1e6,
                        Calc::OrderTrend30 => (count(Kind::Order, 0, 30) + 1.0) / (count(Kind::Order, 30, 60) + 1.0),
                        Calc::RevenueTrend30 => {
                            (sum(Kind::Order, 0, 30) as f64 / 1e6 + 1.0) / (sum(Kind::Order, 30, 60) as f64 / 1e6 + 1.0)
                        }
                        Calc::SessionTrend30 => {
                            (count(Kind::Session, 0, 30) + 1.0) / (count(Kind::Session, 30, 60) + 1.0)
                        }
                        Calc::RfmFrequency => repeat_totals.len() as f64,
                        Calc::RfmRecencyDays => dates.first().zip(dates.last()).map_or(0.0, |(f, l)| (l - f) as f64),
                        Calc::RfmAgeDays => dates.first().map_or(0.0, |f| (t - f * MICROS_PER_DAY) as f64 / day),
                        Calc::RfmMonetary if repeat_totals.is_empty() => 0.0,
                        Calc::RfmMonetary => {
                            repeat_totals.iter().sum::<i128>() as f64 / 1e6 / repeat_totals.len() as f64
                        }
                    }
                })
                .collect();
            (c, row)
        })
        .collect()
}

fn store_with(events: &[NewEvent]) -> Store {
    let store = Store::in_memory().expect("store");
    store.log().append(events.to_vec(), 1, 0).expect("append");
    store
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn snapshot_equals_the_naive_reference(s in specs(120), t_day in 0i64..160, t_half in 0i64..2, k_lag in 0i64..30) {
        let events: Vec<NewEvent> = s.iter().map(to_event).collect();
        let store = store_with(&events);
        let t = t_day * MICROS_PER_DAY + t_half * HALF_DAY;
        let k = t + k_lag * HALF_DAY;
        let snap = snapshot::compute(&store, at(t, k)).expect("snapshot");
        let want = reference(&events, t, k);
        // The per-customer path (the API's) agrees with the snapshot, row for row.
        for (i, c) in snap.matrix.customers.iter().enumerate() {
            let row = customer_row(&store, c, at(t, k), u64::MAX).expect("row").expect("visible");
            prop_assert!(row.iter().zip(snap.matrix.row(i)).all(|(a, b)| a.to_bits() == b.to_bits()), "{c}");
        }
        prop_assert_eq!(customer_row(&store, "nobody", at(t, k), u64::MAX).expect("row"), None);
        prop_assert_eq!(snap.matrix.customers.len(), want.len());
        for (i, (c, row)) in want.iter().enumerate() {
            prop_assert_eq!(&snap.matrix.customers[i], c);
            for (j, d) in definitions().iter().enumerate() {
                let got = snap.matrix.row(i)[j];
                prop_assert!(got.to_bits() == row[j].to_bits(), "{} of {}: {} != reference {}", d.name, c, got, row[j]);
            }
        }
    }

    #[test]
    fn later_events_never_change_the_snapshot_hash(s in specs(80), later in specs(60), t_day in 0i64..160, k_lag in 0i64..20) {
        let store = store_with(&s.iter().map(to_event).collect::<Vec<_>>());
        let t = t_day * MICROS_PER_DAY;
        let at = at(t, t + k_lag * HALF_DAY);
        let (before, ..) = snapshot::create(&store, at).expect("snapshot");
        // Arbitrary events, each either after T or recorded after K (or both).
        let late: Vec<NewEvent> = later.iter().enumerate().map(|(i, spec)| {
            let mut e = to_event(spec);
            if i % 2 == 0 {
                e.event_time = at.as_of.micros() + 1 + e.event_time.rem_euclid(10 * MICROS_PER_DAY);
                e.recorded_at = e.recorded_at.max(e.event_time);
            } else {
                e.recorded_at = e.recorded_at.max(at.known_at.micros() + 1);
            }
            e
        }).collect();
        store.log().append(late, 2, 0).expect("append");
        let (after, new, _) = snapshot::create(&store, at).expect("snapshot");
        prop_assert_eq!(after, before);
        prop_assert!(!new, "the same snapshot must not be stored twice");
    }
}

#[test]
fn late_data_is_excluded_until_known() {
    let order = |id: &str, day: i64, recorded_day: i64| {
        Event {
            customer_id: "c1".into(),
            event_time: Timestamp::from_day(day),
            payload: Payload::Order(Order {
                order_id: id.into(),
                amount: Money {
                    minor: 1000,
                    currency: "USD".into(),
                },
                quantity: None,
                channel: None,
            }),
        }
        .into_new_event(Timestamp::from_day(recorded_day))
    };
    // o2 happened on day 5 but reached the system on day 12.
    let store = store_with(&[order("o1", 1, 1), order("o2", 5, 12)]);
    let orders = |k: i64| {
        let s = snapshot::compute(
            &store,
            AsOf {
                as_of: Timestamp::from_day(10),
                known_at: Timestamp::from_day(k),
            },
        )
        .expect("s");
        s.value("c1", "lifetime_orders").expect("c1")
    };
    assert_eq!(orders(10), 1.0, "at K = T the late order is not yet known");
    assert_eq!(orders(11), 1.0);
    assert_eq!(orders(12), 2.0, "once K reaches its recorded_at it is included");
}

#[test]
fn labels_refuse_to_exist_before_they_mature() {
    let store = cdnow_store();
    let customers = vec!["0001".to_string(), "0046".to_string(), "0100".to_string()];
    let cutoff = t("1997-10-01");
    let err = churn_labels(&store, &customers, cutoff, 90, t("1997-12-29")).expect_err("not matured");
    assert!(matches!(err, LabelError::NotMatured { .. }));
    assert!(err.to_string().contains("do not exist yet"), "{err}");
    // Matured at 1997-12-30: 0001 bought on 12-12 and 0046 on 10-13; 0100 bought nothing.
    let labels = churn_labels(&store, &customers, cutoff, 90, t("1997-12-30")).expect("labels");
    assert_eq!(labels, [false, false, true]);
}

#[test]
fn times_to_the_next_order_are_censored_at_the_knowledge_time_and_agree_with_the_labels() {
    let store = cdnow_store();
    let customers = vec!["0001".to_string(), "0046".to_string(), "0100".to_string()];
    let cutoff = t("1997-10-01");
    assert!(matches!(
        labels::labels(&store, &customers, cutoff, 90, t("1997-12-29")),
        Err(LabelError::NotMatured { .. })
    ));
    let known = labels::labels(&store, &customers, cutoff, 90, t("1997-12-30")).expect("labels");
    assert_eq!(
        known.churned,
        churn_labels(&store, &customers, cutoff, 90, t("1997-12-30")).expect("labels")
    );
    // 0001 bought on 12-12 (72 days on) and 0046 on 10-13 (12 days); 0100 is censored at K.
    assert_eq!(known.durations, [72.0, 12.0, 90.0]);
    assert_eq!(known.observed, [true, true, false]);
    // A horizon of 30 days: 0001's order comes after it, so 0001 churned, its time unchanged.
    let short = labels::labels(&store, &customers, cutoff, 30, t("1997-12-30")).expect("labels");
    assert_eq!(short.churned, [true, false, true]);
    assert_eq!(short.durations, known.durations);
    // Known 30 days after the cutoff, 0001's order is not known yet: censored at 30 days.
    let early = labels::labels(&store, &customers, cutoff, 30, t("1997-10-31")).expect("labels");
    assert_eq!(early.durations, [30.0, 12.0, 30.0]);
    assert_eq!(early.observed, [false, true, false]);
}

#[test]
fn training_sets_come_from_snapshots_at_their_cutoffs() {
    let store = cdnow_store();
    let (a, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-06-01")), None)).expect("snapshot");
    let (b, ..) = snapshot::create(&store, AsOf::new(Some(t("1997-10-01")), None)).expect("snapshot");
    let set = training_set(&store, &[a, b], 90, t("1998-07-01")).expect("training set");
    assert_eq!(set.customers.len(), set.churned.len());
    assert_eq!(set.durations.len(), set.churned.len());
    assert_eq!(set.observed.len(), set.churned.len());
    // Every label matured by K, so a row that did not churn saw its order within the horizon.
    for ((d, o), c) in set.durations.iter().zip(&set.observed).zip(&set.churned) {
        assert!(*c || (*o && *d > 0.0 && *d <= 90.0), "{d} {o} {c}");
    }
    assert_eq!(set.values.len(), set.customers.len() * set.features.len());
    assert!(set.cutoffs.contains(&t("1997-06-01")) && set.cutoffs.contains(&t("1997-10-01")));
    let late = training_set(&store, &[b], 90, t("1997-12-01"));
    assert!(matches!(late, Err(LabelError::NotMatured { .. })), "{late:?}");
}

#[test]
fn replay_is_identical_and_names_a_tampered_value() {
    let store = cdnow_store();
    let (hash, new, _) = snapshot::create(&store, AsOf::new(Some(t("1997-10-01")), None)).expect("snapshot");
    assert!(new);
    let (_, again, _) = snapshot::create(&store, AsOf::new(Some(t("1997-10-01")), None)).expect("snapshot");
    assert!(!again, "creating the same snapshot again stores nothing");
    assert_eq!(snapshot::replay(&store, &hash).expect("replay"), Replay::Identical);

    let (mut stored, mut snap) = snapshot::load(&store, &hash).expect("load");
    let j = snap
        .features
        .iter()
        .position(|f| f == "lifetime_orders")
        .expect("feature");
    let i = snap
        .matrix
        .customers
        .iter()
        .position(|c| c == "0046")
        .expect("customer");
    snap.matrix.values[i * snap.features.len() + j] += 1.0;
    stored.body = snap.encode();
    store.artifacts().overwrite(&stored).expect("tamper");
    match snapshot::replay(&store, &hash).expect("replay") {
        Replay::Differs {
            customer,
            feature,
            stored,
            recomputed,
        } => {
            assert_eq!((customer.as_str(), feature.as_str()), ("0046", "lifetime_orders"));
            assert_eq!((stored, recomputed), (Some(15.0), Some(14.0)));
        }
        other => panic!("tampering not detected: {other:?}"),
    }
}

/// One customer with thousands of orders and returns at the largest amount ingest accepts,
/// in currencies of every exponent, and sessions at the longest duration and most page views:
/// the snapshot is created and every sum is exact, though the money totals are far past i64.
#[test]
fn extreme_allowed_values_snapshot_exactly() {
    const ORDERS: usize = 6_000;
    const RETURNS: usize = 2_000;
    const SESSIONS: usize = 4_000;
    // Each order falls on one of five dates, all inside the 7-day window before T.
    let day = |i: usize| i % 5;
    let time = |i: usize| {
        format!(
            "2024-01-{:02}T{:02}:{:02}:{:02}Z",
            26 + day(i),
            i / 3600,
            i / 60 % 60,
            i % 60
        )
    };
    let amount = |i: usize| match i % 3 {
        0 => (format!("{MAX_AMOUNT}.00"), "USD"),
        1 => (format!("{MAX_AMOUNT}"), "JPY"),
        _ => (format!("{MAX_AMOUNT}.000"), "KWD"),
    };
    let mut orders = String::from("order_id,customer_id,event_time,amount,currency,quantity\n");
    let mut returns = String::from("return_id,order_id,customer_id,event_time,amount,currency\n");
    let mut sessions = String::from("session_id,customer_id,event_time,duration_s,page_views\n");
    for i in 0..ORDERS {
        let (a, cur) = amount(i);
        orders.push_str(&format!("o{i},whale,{},{a},{cur},{MAX_QUANTITY}\n", time(i)));
    }
    for i in 0..RETURNS {
        let (a, cur) = amount(i);
        returns.push_str(&format!("r{i},o{i},whale,{},{a},{cur}\n", time(i)));
    }
    for i in 0..SESSIONS {
        sessions.push_str(&format!("s{i},whale,{},{MAX_DURATION_S},{MAX_PAGE_VIEWS}\n", time(i)));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::in_memory().expect("store");
    for (kind, text, n) in [
        (Kind::Order, orders, ORDERS),
        (Kind::Return, returns, RETURNS),
        (Kind::Session, sessions, SESSIONS),
    ] {
        let path = write(dir.path(), "input.csv", &text);
        let run = ingest(&store, kind, Format::Csv, &path, RecordedAt::EventTime);
        assert_eq!((run.accepted, run.quarantined), (n as u64, 0), "{kind:?} at the bounds");
    }

    let (_, stored, snap) = snapshot::create(&store, AsOf::new(Some(t("2024-02-01")), None)).expect("snapshot");
    assert!(stored);
    // The expected sums, formed independently in i128 micro-units (10^6 per major unit).
    let max_micros = i128::from(MAX_AMOUNT) * 1_000_000;
    let gross = ORDERS as i128 * max_micros;
    assert!(gross > 100 * i128::from(i64::MAX), "the test must go far past i64");
    let net = gross - RETURNS as i128 * max_micros;
    let mut per_day = std::collections::BTreeMap::<usize, i128>::new();
    for i in 0..ORDERS {
        *per_day.entry(day(i)).or_default() += max_micros;
    }
    let repeats: Vec<i128> = per_day.values().skip(1).copied().collect();
    let money = |micros: i128| micros as f64 / 1e6;
    let v = |f: &str| snap.value("whale", f).unwrap_or_else(|| panic!("whale {f}"));
    for w in WINDOWS {
        assert_eq!(v(&format!("orders_{w}d")), ORDERS as f64);
        assert_eq!(v(&format!("gross_revenue_{w}d")), money(gross));
        assert_eq!(v(&format!("net_revenue_{w}d")), money(net));
        assert_eq!(v(&format!("avg_order_value_{w}d")), money(gross) / ORDERS as f64);
        assert_eq!(v(&format!("returns_{w}d")), RETURNS as f64);
        assert_eq!(v(&format!("sessions_{w}d")), SESSIONS as f64);
        let secs = SESSIONS as u64 * u64::from(MAX_DURATION_S);
        assert_eq!(v(&format!("session_minutes_{w}d")), secs as f64 / 60.0);
        let views = SESSIONS as u64 * u64::from(MAX_PAGE_VIEWS);
        assert_eq!(v(&format!("page_views_{w}d")), views as f64);
    }
    assert_eq!(v("lifetime_orders"), ORDERS as f64);
    assert_eq!(v("lifetime_revenue"), money(gross));
    assert_eq!(v("rfm_frequency"), repeats.len() as f64);
    assert_eq!(
        v("rfm_monetary"),
        money(repeats.iter().sum::<i128>()) / repeats.len() as f64
    );
    assert!(snap.matrix.values.iter().all(|x| x.is_finite()));
}

/// Orders stored before ingest had bounds (here appended to the log directly) can no longer
/// poison a snapshot: one of 10^13 USD used to fail every snapshot with "amount overflows",
/// and two of 5·10^12 USD wrapped to a negative lifetime revenue.
#[test]
fn amounts_stored_before_the_bounds_snapshot_exactly() {
    let order = |customer: &str, id: &str, major: i64| {
        Event {
            customer_id: customer.into(),
            event_time: t("2024-01-05"),
            payload: Payload::Order(Order {
                order_id: id.into(),
                amount: Money {
                    minor: major * 100,
                    currency: "USD".into(),
                },
                quantity: None,
                channel: None,
            }),
        }
        .into_new_event(t("2024-01-05"))
    };
    let store = store_with(&[
        order("c1", "o1", 10_000_000_000_000),
        order("c2", "o2", 5_000_000_000_000),
        order("c2", "o3", 5_000_000_000_000),
    ]);
    let (_, _, snap) = snapshot::create(&store, AsOf::new(Some(t("2024-02-01")), None)).expect("snapshot");
    for c in ["c1", "c2"] {
        assert_eq!(snap.value(c, "lifetime_revenue"), Some(1e13), "{c}");
    }
}
