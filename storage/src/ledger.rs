//! Hash-chained, append-only ledgers: the promotion record, the access log, erasure requests.
//!
//! A ledger lives in its own journal tree. Record `n` (from 1) is stored under `be64(n)` as
//! `prev (32) ‖ hash (32) ‖ body`, where `hash = blake3("cis-ledger-v1" ‖ be64(n) ‖ prev ‖ body)`
//! and `prev` is the hash of record `n − 1` ([`GENESIS`] for the first). The body is the
//! caller's bytes (JSON in cis). [`Ledger::verify`] names the first record whose bytes no longer
//! match: an edited body fails its own hash; an edited body with a recomputed hash breaks the
//! next record's `prev`. Rewriting the *last* record together with its hash is only caught
//! against a head published elsewhere, which is why `verify` returns the head.
//!
//! Appends do not flush: the caller decides when a record must be durable ([`Ledger::flush`]).

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use crate::error::{Result, StorageError};
use crate::kv::{self, Kv, TreeName};
use crate::log::{Head, GENESIS};

const DOMAIN: &[u8] = b"cis-ledger-v1";
const HEADER: usize = 64;

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRecord {
    pub seq: u64,
    pub hash: Head,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerReport {
    pub records: u64,
    pub head: Head,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("ledger {ledger}: record {seq} {reason}")]
pub struct LedgerBroken {
    pub ledger: &'static str,
    pub seq: u64,
    pub reason: String,
}

/// A handle on one ledger; appends through one handle are serialised.
pub struct Ledger {
    kv: Arc<dyn Kv>,
    name: &'static str,
    tail: Mutex<(u64, Head)>,
}

pub fn record_hash(seq: u64, prev: &Head, body: &[u8]) -> Head {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(&seq.to_be_bytes());
    h.update(prev);
    h.update(body);
    *h.finalize().as_bytes()
}

fn split(name: &'static str, key: &[u8], value: &[u8]) -> Result<(u64, Head, Head)> {
    let corrupt = || StorageError::Corrupt(format!("ledger {name}: malformed record"));
    let seq = u64::from_be_bytes(key.try_into().map_err(|_| corrupt())?);
    if value.len() < HEADER {
        return Err(corrupt());
    }
    let prev: Head = value[..32].try_into().map_err(|_| corrupt())?;
    let hash: Head = value[32..HEADER].try_into().map_err(|_| corrupt())?;
    Ok((seq, prev, hash))
}

impl Ledger {
    pub(crate) fn open(kv: Arc<dyn Kv>, name: &'static str) -> Result<Ledger> {
        let tail = match kv.last(TreeName::Journal(name))? {
            Some((k, v)) => {
                let (seq, _, hash) = split(name, &k, &v)?;
                (seq, hash)
            }
            None => (0, GENESIS),
        };
        Ok(Ledger {
            kv,
            name,
            tail: Mutex::new(tail),
        })
    }

    fn locked(&self) -> Result<std::sync::MutexGuard<'_, (u64, Head)>> {
        self.tail.lock().map_err(|_| StorageError::Poisoned { what: self.name })
    }

    /// Appends `body`; returns its sequence number and hash. Not durable until [`Ledger::flush`].
    pub fn append(&self, body: &[u8]) -> Result<(u64, Head)> {
        let mut tail = self.locked()?;
        let (seq, prev) = (tail.0 + 1, tail.1);
        let hash = record_hash(seq, &prev, body);
        let mut value = Vec::with_capacity(HEADER + body.len());
        value.extend_from_slice(&prev);
        value.extend_from_slice(&hash);
        value.extend_from_slice(body);
        self.kv
            .insert(TreeName::Journal(self.name), &seq.to_be_bytes(), &value)?;
        *tail = (seq, hash);
        Ok((seq, hash))
    }

    pub fn flush(&self) -> Result<()> {
        self.kv.flush()
    }

    /// The number of records and the hash of the last one.
    pub fn head(&self) -> Result<(u64, Head)> {
        Ok(*self.locked()?)
    }

    /// Visits records from `from_seq` on, in order, without checking the chain. The visit stops
    /// at `f`'s first error, which is returned as it is (of the caller's type `E`).
    pub fn visit<E: From<StorageError>>(
        &self,
        from_seq: u64,
        mut f: impl FnMut(LedgerRecord) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E> {
        let name = self.name;
        kv::visit_typed(
            self.kv.as_ref(),
            TreeName::Journal(name),
            &from_seq.to_be_bytes(),
            None,
            |k, v| {
                let (seq, _, hash) = split(name, k, v)?;
                f(LedgerRecord {
                    seq,
                    hash,
                    body: v[HEADER..].to_vec(),
                })
            },
        )
    }

    /// Recomputes the chain from the first record; `Ok(Err(_))` names the first broken record.
    pub fn verify(&self) -> Result<std::result::Result<LedgerReport, LedgerBroken>> {
        let name = self.name;
        let mut expect = (1u64, GENESIS);
        let mut broken = None;
        self.kv.visit(TreeName::Journal(name), &[], None, &mut |k, v| {
            let (seq, prev, hash) = split(name, k, v)?;
            let fail = |seq: u64, reason: &str| LedgerBroken {
                ledger: name,
                seq,
                reason: reason.to_string(),
            };
            broken = if seq != expect.0 {
                Some(fail(expect.0, "is missing"))
            } else if prev != expect.1 {
                Some(fail(
                    seq - 1,
                    "was altered: the next record chained to a different hash",
                ))
            } else if record_hash(seq, &prev, &v[HEADER..]) != hash {
                Some(fail(seq, "was altered: its content no longer matches its hash"))
            } else {
                None
            };
            expect = (seq + 1, hash);
            Ok(if broken.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        Ok(match broken {
            Some(b) => Err(b),
            None => Ok(LedgerReport {
                records: expect.0 - 1,
                head: expect.1,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;

    fn ledger() -> (Arc<dyn Kv>, Ledger) {
        let kv: Arc<dyn Kv> = Arc::new(MemKv::default());
        let l = Ledger::open(kv.clone(), "test").expect("open");
        (kv, l)
    }

    #[test]
    fn appends_chain_and_reopen_continues() {
        let (kv, l) = ledger();
        for body in [b"a".as_slice(), b"bb", b"ccc"] {
            l.append(body).expect("append");
        }
        let report = l.verify().expect("read").expect("intact");
        assert_eq!(report.records, 3);
        let again = Ledger::open(kv, "test").expect("reopen");
        assert_eq!(again.head().expect("head"), (3, report.head));
        again.append(b"d").expect("append");
        assert_eq!(again.verify().expect("read").expect("intact").records, 4);
        let mut bodies = Vec::new();
        again
            .visit(2, |r| {
                bodies.push(r.body);
                Ok::<_, StorageError>(ControlFlow::Continue(()))
            })
            .expect("visit");
        assert_eq!(bodies, vec![b"bb".to_vec(), b"ccc".to_vec(), b"d".to_vec()]);
    }

    #[test]
    fn verify_names_the_altered_record() {
        let (kv, l) = ledger();
        for body in [b"one".as_slice(), b"two", b"three"] {
            l.append(body).expect("append");
        }
        let tree = TreeName::Journal("test");
        let key = 2u64.to_be_bytes();
        let mut v = kv.get(tree, &key).expect("get").expect("record 2");
        // Edit the body only: record 2 fails its own hash.
        let last = v.len() - 1;
        v[last] ^= 1;
        kv.insert(tree, &key, &v).expect("tamper");
        let err = l.verify().expect("read").expect_err("tampered");
        assert_eq!(err.seq, 2);
        assert!(err.reason.contains("no longer matches"), "{err}");
        // Recompute its hash as well: record 3's link now names record 2.
        let prev: Head = v[..32].try_into().expect("prev");
        let fixed = record_hash(2, &prev, &v[HEADER..]);
        v[32..HEADER].copy_from_slice(&fixed);
        kv.insert(tree, &key, &v).expect("tamper");
        let err = l.verify().expect("read").expect_err("tampered");
        assert_eq!(err.seq, 2);
        assert!(err.reason.contains("chained to a different hash"), "{err}");
        // A deleted record is named too.
        kv.remove(tree, &key).expect("delete");
        assert_eq!(l.verify().expect("read").expect_err("gap").seq, 2);
    }
}
