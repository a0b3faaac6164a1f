//! The four event kinds and their canonical body encoding (schema version 1).
//!
//! The body is what `cis-storage` treats as opaque; together with the envelope (kind,
//! customer id, event_time) it is what an event's id is the hash of. Encoding rules,
//! all integers big-endian: the first byte is the body schema version; `str` is a u32
//! length then UTF-8 bytes; `opt<T>` is a 0 byte, or a 1 byte then `T`; money is the
//! i64 amount in minor units then the 3-byte currency code. Fields come in the order
//! the structs below list them; customer attributes are sorted by name. No floats.

use std::collections::BTreeMap;

use cis_storage::{EventBatch, NewEvent, StorageError};
use serde::Serialize;

use crate::money;
use crate::time::{self, Timestamp};

pub const BODY_SCHEMA: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Order = 1,
    Session = 2,
    Return = 3,
    Customer = 4,
}

/// Chosen by the plural, as in `cis ingest orders FILE`.
impl crate::Choice for Kind {
    const CHOICES: &'static [Kind] = &[Kind::Order, Kind::Session, Kind::Return, Kind::Customer];

    fn choice_name(self) -> &'static str {
        match self {
            Kind::Order => "orders",
            Kind::Session => "sessions",
            Kind::Return => "returns",
            Kind::Customer => "customers",
        }
    }
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Order),
            2 => Some(Kind::Session),
            3 => Some(Kind::Return),
            4 => Some(Kind::Customer),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Order => "order",
            Kind::Session => "session",
            Kind::Return => "return",
            Kind::Customer => "customer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Money {
    pub minor: i64,
    pub currency: String,
}

impl Money {
    pub fn display(&self) -> String {
        format!("{} {}", money::format_amount(self.minor, &self.currency), self.currency)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub order_id: String,
    pub amount: Money,
    pub quantity: Option<u32>,
    pub channel: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub session_id: String,
    pub duration_s: u32,
    pub page_views: Option<u32>,
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Return {
    pub return_id: String,
    pub order_id: String,
    pub amount: Money,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer {
    pub signup_date: Option<Timestamp>,
    pub country: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Payload {
    Order(Order),
    Session(Session),
    Return(Return),
    Customer(Customer),
}

impl Payload {
    pub fn kind(&self) -> Kind {
        match self {
            Payload::Order(_) => Kind::Order,
            Payload::Session(_) => Kind::Session,
            Payload::Return(_) => Kind::Return,
            Payload::Customer(_) => Kind::Customer,
        }
    }
}

/// A validated event, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub customer_id: String,
    #[serde(serialize_with = "time::rfc3339::serialize")]
    pub event_time: Timestamp,
    pub payload: Payload,
}

impl Event {
    /// Adds the event to `batch`, recorded at `recorded_at`: [`Event::into_new_event`] without
    /// an allocation of its own.
    pub fn push_to(&self, recorded_at: Timestamp, batch: &mut EventBatch) -> Result<(), StorageError> {
        batch.push(
            self.payload.kind() as u8,
            &self.customer_id,
            self.event_time.micros(),
            recorded_at.micros(),
            |out| encode_body_into(&self.payload, out),
        )
    }

    pub fn into_new_event(self, recorded_at: Timestamp) -> NewEvent {
        NewEvent {
            kind: self.payload.kind() as u8,
            body: encode_body(&self.payload),
            subject: self.customer_id,
            event_time: self.event_time.micros(),
            recorded_at: recorded_at.micros(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode a {kind} body: {reason}")]
pub struct DecodeError {
    kind: &'static str,
    reason: String,
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn str(&mut self, s: &str) {
        // Validation caps every string far below u32::MAX bytes.
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn money(&mut self, m: &Money) {
        self.i64(m.minor);
        self.0.extend_from_slice(m.currency.as_bytes());
    }
    fn opt<T>(&mut self, v: &Option<T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.0.push(0),
            Some(x) => {
                self.0.push(1);
                f(self, x);
            }
        }
    }
}

pub fn encode_body(p: &Payload) -> Vec<u8> {
    let mut out = Vec::new();
    encode_body_into(p, &mut out);
    out
}

/// [`encode_body`] appended to `out`: how an ingest writes bodies straight into its batch.
pub fn encode_body_into(p: &Payload, out: &mut Vec<u8>) {
    out.push(BODY_SCHEMA);
    let mut w = Writer(out);
    match p {
        Payload::Order(o) => {
            w.str(&o.order_id);
            w.money(&o.amount);
            w.opt(&o.quantity, |w, q| w.u32(*q));
            w.opt(&o.channel, |w, c| w.str(c));
        }
        Payload::Session(s) => {
            w.str(&s.session_id);
            w.u32(s.duration_s);
            w.opt(&s.page_views, |w, v| w.u32(*v));
            w.opt(&s.device, |w, d| w.str(d));
        }
        Payload::Return(r) => {
            w.str(&r.return_id);
            w.str(&r.order_id);
            w.money(&r.amount);
            w.opt(&r.reason, |w, s| w.str(s));
        }
        Payload::Customer(c) => {
            w.opt(&c.signup_date, |w, d| w.i64(d.micros()));
            w.opt(&c.country, |w, s| w.str(s));
            w.u32(c.attributes.len() as u32);
            for (k, v) in &c.attributes {
                w.str(k);
                w.str(v);
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self.bytes.get(self.pos..self.pos + n).ok_or("body ends early")?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "u32")?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().map_err(|_| "i64")?))
    }

    fn timestamp(&mut self) -> Result<Timestamp, String> {
        self.i64().map(Timestamp::from_micros)
    }
    fn skip_str(&mut self) -> Result<(), String> {
        let n = self.u32()? as usize;
        self.take(n).map(|_| ())
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "string is not UTF-8".into())
    }
    fn money(&mut self) -> Result<Money, String> {
        let minor = self.i64()?;
        let currency = String::from_utf8(self.take(3)?.to_vec()).map_err(|_| "currency is not UTF-8")?;
        Ok(Money { minor, currency })
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<Option<T>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            t => Err(format!("bad option tag {t}")),
        }
    }
}

/// The numbers features are made of, read from a body without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measures {
    /// Order or return amount in micro-units of its currency (minor units scaled to 6
    /// decimals), so sums stay exact integers whatever the currency's exponent. i128, so
    /// that reading any stored amount succeeds (see [`money::to_micros`]).
    pub amount_micros: i128,
    pub duration_s: u32,
    pub page_views: u32,
    pub signup_date: Option<Timestamp>,
}

pub fn measures(kind: Kind, bytes: &[u8]) -> Result<Measures, DecodeError> {
    let err = |reason: String| DecodeError {
        kind: kind.name(),
        reason,
    };
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u8().map_err(err)?;
    if version != BODY_SCHEMA {
        return Err(err(format!("unknown body schema {version}")));
    }
    let micros = |minor: i64, cur: &[u8]| -> Result<i128, String> {
        let cur = std::str::from_utf8(cur).map_err(|_| "currency is not UTF-8")?;
        Ok(money::to_micros(minor, cur))
    };
    (|| -> Result<Measures, String> {
        let mut m = Measures::default();
        match kind {
            Kind::Order => {
                r.skip_str()?;
                let minor = r.i64()?;
                m.amount_micros = micros(minor, r.take(3)?)?;
            }
            Kind::Session => {
                r.skip_str()?;
                m.duration_s = r.u32()?;
                m.page_views = r.opt(|r| r.u32())?.unwrap_or(0);
            }
            Kind::Return => {
                r.skip_str()?;
                r.skip_str()?;
                let minor = r.i64()?;
                m.amount_micros = micros(minor, r.take(3)?)?;
            }
            Kind::Customer => m.signup_date = r.opt(|r| r.timestamp())?,
        }
        Ok(m)
    })()
    .map_err(err)
}

pub fn decode_body(kind: Kind, bytes: &[u8]) -> Result<Payload, DecodeError> {
    let err = |reason: String| DecodeError {
        kind: kind.name(),
        reason,
    };
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u8().map_err(err)?;
    if version != BODY_SCHEMA {
        return Err(err(format!("unknown body schema {version}")));
    }
    let p = (|| -> Result<Payload, String> {
        Ok(match kind {
            Kind::Order => Payload::Order(Order {
                order_id: r.str()?,
                amount: r.money()?,
                quantity: r.opt(|r| r.u32())?,
                channel: r.opt(|r| r.str())?,
            }),
            Kind::Session => Payload::Session(Session {
                session_id: r.str()?,
                duration_s: r.u32()?,
                page_views: r.opt(|r| r.u32())?,
                device: r.opt(|r| r.str())?,
            }),
            Kind::Return => Payload::Return(Return {
                return_id: r.str()?,
                order_id: r.str()?,
                amount: r.money()?,
                reason: r.opt(|r| r.str())?,
            }),
            Kind::Customer => {
                let signup_date = r.opt(|r| r.timestamp())?;
                let country = r.opt(|r| r.str())?;
                let n = r.u32()?;
                let mut attributes = BTreeMap::new();
                for _ in 0..n {
                    let k = r.str()?;
                    attributes.insert(k, r.str()?);
                }
                Payload::Customer(Customer {
                    signup_date,
                    country,
                    attributes,
                })
            }
        })
    })()
    .map_err(err)?;
    if r.pos != bytes.len() {
        return Err(err("trailing bytes".into()));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Payload> {
        vec![
            Payload::Order(Order {
                order_id: "o1".into(),
                amount: Money {
                    minor: 1250,
                    currency: "USD".into(),
                },
                quantity: Some(2),
                channel: None,
            }),
            Payload::Session(Session {
                session_id: "s1".into(),
                duration_s: 60,
                page_views: None,
                device: Some("mobile".into()),
            }),
            Payload::Return(Return {
                return_id: "r1".into(),
                order_id: "o1".into(),
                amount: Money {
                    minor: 500,
                    currency: "EUR".into(),
                },
                reason: Some("damaged".into()),
            }),
            Payload::Customer(Customer {
                signup_date: Some(Timestamp::EPOCH),
                country: Some("DE".into()),
                attributes: [("plan".to_string(), "pro".to_string())].into_iter().collect(),
            }),
        ]
    }

    #[test]
    fn an_event_pushed_to_a_batch_is_its_new_event() {
        let events: Vec<Event> = samples()
            .into_iter()
            .map(|payload| Event {
                customer_id: "c-é".into(),
                event_time: Timestamp::from_micros(-7),
                payload,
            })
            .collect();
        let mut batch = EventBatch::default();
        for e in &events {
            e.push_to(Timestamp::from_micros(5), &mut batch).expect("pushes");
        }
        let owned: Vec<NewEvent> = events
            .into_iter()
            .map(|e| e.into_new_event(Timestamp::from_micros(5)))
            .collect();
        assert_eq!(batch, EventBatch::from_events(&owned).expect("packs"));
    }

    #[test]
    fn bodies_round_trip() {
        for p in samples() {
            let bytes = encode_body(&p);
            assert_eq!(decode_body(p.kind(), &bytes).expect("decodes"), p);
        }
    }

    #[test]
    fn measures_agree_with_the_full_decode() {
        let m: Vec<Measures> = samples()
            .iter()
            .map(|p| measures(p.kind(), &encode_body(p)).expect("reads"))
            .collect();
        assert_eq!(m[0].amount_micros, 12_500_000);
        assert_eq!((m[1].duration_s, m[1].page_views), (60, 0));
        assert_eq!(m[2].amount_micros, 5_000_000);
        assert_eq!(m[3].signup_date, Some(Timestamp::EPOCH));
        let yen = Payload::Order(Order {
            order_id: "o".into(),
            amount: Money {
                minor: 1500,
                currency: "JPY".into(),
            },
            quantity: None,
            channel: None,
        });
        assert_eq!(
            measures(Kind::Order, &encode_body(&yen)).expect("reads").amount_micros,
            1_500_000_000
        );
    }

    /// Before ingest bounded amounts, a stored order of 10^13 USD failed every snapshot
    /// with "amount overflows": its micro-units do not fit an i64. Any i64 must read.
    #[test]
    fn every_stored_amount_reads() {
        let max = i128::from(i64::MAX);
        for (minor, currency, micros) in [
            (1_000_000_000_000_000, "USD", 10_000_000_000_000_000_000),
            (i64::MAX, "JPY", max * 1_000_000),
            (i64::MAX, "KWD", max * 1_000),
        ] {
            let order = Payload::Order(Order {
                order_id: "o".into(),
                amount: Money {
                    minor,
                    currency: currency.into(),
                },
                quantity: Some(u32::MAX),
                channel: None,
            });
            let m = measures(Kind::Order, &encode_body(&order)).expect("reads");
            assert_eq!(m.amount_micros, micros, "{minor} {currency}");
        }
    }

    #[test]
    fn truncated_or_padded_bodies_are_errors() {
        for p in samples() {
            let bytes = encode_body(&p);
            for cut in 0..bytes.len() {
                assert!(decode_body(p.kind(), &bytes[..cut]).is_err());
            }
            let mut padded = bytes.clone();
            padded.push(0);
            assert!(decode_body(p.kind(), &padded).is_err());
        }
    }
}
