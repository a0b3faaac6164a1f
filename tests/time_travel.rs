//! Bitemporal reads against a naive model of the log, on random logs.

use cis_core::event::{Event, Money, Order, Payload, Session};
use cis_core::time::{Timestamp, MICROS_PER_DAY};
use cis_storage::{envelope, Entry, NewEvent, StorageError, Store, Visibility};
use proptest::prelude::*;

use crate::util::visible;

/// (customer, day, half-day, recorded lag in half-days, amount or duration, is_order).
/// A coarse grid, so that ties with the T and K boundaries are common.
type Spec = (u8, i64, i64, i64, u32, bool);

const HALF_DAY: i64 = MICROS_PER_DAY / 2;

fn to_event(&(c, day, hour, lag, n, is_order): &Spec) -> NewEvent {
    let event_time = day * MICROS_PER_DAY + hour * HALF_DAY;
    let payload = if is_order {
        Payload::Order(Order {
            order_id: format!("o{day}-{hour}"),
            amount: Money {
                minor: i64::from(n),
                currency: "USD".into(),
            },
            quantity: None,
            channel: None,
        })
    } else {
        Payload::Session(Session {
            session_id: format!("s{day}-{hour}"),
            duration_s: n,
            page_views: None,
            device: None,
        })
    };
    Event {
        customer_id: format!("c{c}"),
        event_time: Timestamp::from_micros(event_time),
        payload,
    }
    .into_new_event(Timestamp::from_micros(event_time + lag * HALF_DAY))
}

fn specs(max: usize) -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec((0u8..6, 0i64..60, 0i64..2, 0i64..30, 0u32..50, any::<bool>()), 0..max)
}

/// (id, event_time, recorded_at) of everything a scan sees.
fn scan(store: &Store, vis: Visibility) -> Vec<([u8; 32], i64, i64)> {
    let mut out = Vec::new();
    store
        .log()
        .scan(vis, |e| {
            out.push((*e.id, e.event_time, e.recorded_at));
            Ok::<_, StorageError>(())
        })
        .expect("scan");
    out.sort();
    out
}

/// The naive model, as (id, event_time, recorded_at), sorted.
fn naive(events: &[NewEvent], vis: Visibility) -> Vec<([u8; 32], i64, i64)> {
    let mut out: Vec<_> = visible(events, vis.event_time_max, vis.recorded_max)
        .into_iter()
        .map(|e| {
            (
                envelope::event_id(&e.envelope().expect("envelope")),
                e.event_time,
                e.recorded_at,
            )
        })
        .collect();
    out.sort();
    out
}

fn vis(t_day: i64, k_day: i64) -> Visibility {
    Visibility {
        event_time_max: t_day * MICROS_PER_DAY,
        recorded_max: k_day * MICROS_PER_DAY,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn ingesting_twice_or_in_any_split_equals_ingesting_once(s in specs(60), split in 0usize..60) {
        let events: Vec<NewEvent> = s.iter().map(to_event).collect();
        let once = Store::in_memory().expect("store");
        once.log().append(events.clone(), 1, 0).expect("append");
        let twice = Store::in_memory().expect("store");
        let cut = split.min(events.len());
        twice.log().append(events[..cut].to_vec(), 1, 0).expect("append");
        twice.log().append(events[cut..].to_vec(), 1, 0).expect("append");
        twice.log().append(events.clone(), 2, 0).expect("append");
        prop_assert_eq!(once.log().head().expect("head"), twice.log().head().expect("head"));
        prop_assert_eq!(scan(&once, Visibility::ALL), scan(&twice, Visibility::ALL));
        prop_assert_eq!(twice.log().verify().expect("verify").events, once.log().verify().expect("verify").events);
    }

    #[test]
    fn reads_as_of_t_k_are_the_naive_filter(s in specs(80), t in 0i64..62, k in 0i64..80) {
        let events: Vec<NewEvent> = s.iter().map(to_event).collect();
        let store = Store::in_memory().expect("store");
        store.log().append(events.clone(), 1, 0).expect("append");
        let v = vis(t, k);
        prop_assert_eq!(scan(&store, v), naive(&events, v));
        for c in 0..6 {
            let subject = format!("c{c}");
            let mut got: Vec<_> = store.log().subject_events(&subject, v).expect("read").into_iter().map(|e| match e {
                Entry::Live(e) => (e.id, e.event_time, e.recorded_at),
                Entry::Erased { .. } => panic!("nothing was erased"),
            }).collect();
            got.sort();
            let mut want: Vec<_> = naive(&events.iter().filter(|e| e.subject == subject).cloned().collect::<Vec<_>>(), v);
            want.sort();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn later_recordings_never_change_an_as_of_k_read(s in specs(50), later in specs(50), t in 0i64..62, k in 0i64..40) {
        let store = Store::in_memory().expect("store");
        store.log().append(s.iter().map(to_event).collect(), 1, 0).expect("append");
        let v = vis(t, k);
        let before = scan(&store, v);
        let per_customer = |store: &Store| -> Vec<Vec<Entry>> {
            (0..6).map(|c| store.log().subject_events(&format!("c{c}"), v).expect("read")).collect()
        };
        let customers_before = per_customer(&store);
        // Any events at all, as long as the system learns of them after K.
        let late: Vec<NewEvent> = later.iter().map(|spec| {
            let mut e = to_event(spec);
            e.recorded_at = e.recorded_at.max(v.recorded_max + 1);
            e
        }).collect();
        store.log().append(late, 2, 0).expect("append");
        prop_assert_eq!(scan(&store, v), before);
        prop_assert_eq!(per_customer(&store), customers_before);
    }
}
