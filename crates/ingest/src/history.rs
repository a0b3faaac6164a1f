//! Reading the log back as it was known: one customer's events as of (T, K).

use cis_storage::{hex, Entry, StorageError, Store};
use serde::Serialize;

use cis_core::event::{decode_body, Customer, DecodeError, Kind, Payload};
use cis_core::time;
use cis_core::AsOf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("stored event has unknown kind {0}")]
    UnknownKind(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    pub event_id: String,
    pub event_time: String,
    pub recorded_at: String,
    #[serde(flatten)]
    pub payload: Option<Payload>,
    /// Set when the event's payload was erased.
    pub erased: bool,
    /// The erasure request that erased it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure_request: Option<u64>,
}

pub fn customer_events(store: &Store, customer: &str, at: AsOf) -> Result<Vec<EventView>, HistoryError> {
    store
        .log()
        .subject_events(customer, at.visibility())?
        .into_iter()
        .map(|e| match e {
            Entry::Live(ev) => {
                let kind = Kind::from_u8(ev.kind).ok_or(HistoryError::UnknownKind(ev.kind))?;
                Ok(EventView {
                    event_id: hex(&ev.id),
                    event_time: time::format(ev.event_time),
                    recorded_at: time::format(ev.recorded_at),
                    payload: Some(decode_body(kind, &ev.body)?),
                    erased: false,
                    erasure_request: None,
                })
            }
            Entry::Erased {
                id,
                event_time,
                recorded_at,
                request,
                ..
            } => Ok(EventView {
                event_id: hex(&id),
                event_time: time::format(event_time),
                recorded_at: time::format(recorded_at),
                payload: None,
                erased: true,
                erasure_request: Some(request),
            }),
        })
        .collect()
}

/// The customer attributes that held at the read's T: rows apply in event-time order,
/// and a later row updates the fields it carries (an empty field keeps the earlier value).
pub fn attributes(events: &[EventView]) -> Option<Customer> {
    let mut folded: Option<Customer> = None;
    for e in events {
        if let Some(Payload::Customer(c)) = &e.payload {
            let into = folded.get_or_insert_with(|| Customer {
                signup_date: None,
                country: None,
                attributes: Default::default(),
            });
            into.signup_date = c.signup_date.or(into.signup_date);
            into.country = c.country.clone().or(into.country.take());
            into.attributes
                .extend(c.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    folded
}
