//! Pins the canonical encoding: if this hash changes, stored event ids change.
//! That needs a new envelope or body schema version and a migration note, never a silent edit.

use cis_core::event::{Event, Money, Order, Payload};
use cis_core::time::{parse_timestamp, Timestamp};
use cis_storage::{envelope, hex};

#[test]
fn golden_event_id() {
    let event = Event {
        customer_id: "c000001".into(),
        event_time: parse_timestamp("2024-03-05T14:07:31Z").expect("time"),
        payload: Payload::Order(Order {
            order_id: "o-1".into(),
            amount: Money {
                minor: 1250,
                currency: "USD".into(),
            },
            quantity: Some(2),
            channel: Some("web".into()),
        }),
    };
    let new = event.into_new_event(Timestamp::EPOCH);
    let env = new.envelope().expect("envelope");
    // The envelope and body layouts, written out by hand (see storage/FORMAT.md).
    let mut expected = vec![1u8, 1]; // envelope version, kind = order
    expected.extend_from_slice(&new.event_time.to_be_bytes());
    expected.extend_from_slice(&7u16.to_be_bytes());
    expected.extend_from_slice(b"c000001");
    expected.push(1); // body schema
    expected.extend_from_slice(&3u32.to_be_bytes());
    expected.extend_from_slice(b"o-1");
    expected.extend_from_slice(&1250i64.to_be_bytes());
    expected.extend_from_slice(b"USD");
    expected.extend_from_slice(&[1, 0, 0, 0, 2]); // Some(quantity = 2)
    expected.push(1); // Some(channel)
    expected.extend_from_slice(&3u32.to_be_bytes());
    expected.extend_from_slice(b"web");
    assert_eq!(env, expected);
    assert_eq!(
        hex(&envelope::event_id(&env)),
        "dee430cc39c9893e72fae6643ff42ccf75bced56fedf91be2801c0ffccd2e90f"
    );
    // recorded_at is not part of identity.
    let later = Event {
        customer_id: "c000001".into(),
        event_time: Timestamp::from_micros(new.event_time),
        payload: cis_core::event::decode_body(cis_core::event::Kind::Order, &new.body).expect("decodes"),
    }
    .into_new_event(Timestamp::from_micros(99));
    assert_eq!(later.envelope().expect("envelope"), env);
}
