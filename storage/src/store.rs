//! A store directory: the event log plus small append-only journals and counters.
//!
//! Layout of a store directory: `db/` (sled) and `keys.bin` (see [`crate::vault`]).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::artifacts::Artifacts;
use crate::error::{io_err, Result, StorageError};
use crate::kv::{Kv, MemKv, SledKv, TreeName};
use crate::ledger::Ledger;
use crate::log::EventLog;
use crate::vault::Vault;

pub struct Store {
    kv: Arc<dyn Kv>,
    log: EventLog,
    dir: Option<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Fails clearly if another process
    /// holds it open.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let kv: Arc<dyn Kv> = Arc::new(SledKv::open(&dir.join("db"))?);
        let vault = Vault::open(&dir.join("keys.bin"))?;
        let log = EventLog::open(kv.clone(), vault)?;
        Ok(Store {
            kv,
            log,
            dir: Some(dir.to_path_buf()),
        })
    }

    /// A store that lives only in memory: for tests and dry runs.
    pub fn in_memory() -> Result<Self> {
        let kv: Arc<dyn Kv> = Arc::new(MemKv::default());
        let log = EventLog::open(kv.clone(), Vault::in_memory())?;
        Ok(Store { kv, log, dir: None })
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    pub fn artifacts(&self) -> Artifacts<'_> {
        Artifacts { kv: self.kv.as_ref() }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn size_on_disk(&self) -> Result<u64> {
        self.kv.size_on_disk()
    }

    /// Increments and returns a named counter (starting at 1), durably.
    pub fn next_id(&self, counter: &str) -> Result<u64> {
        let key = format!("counter/{counter}");
        let current = match self.kv.get(TreeName::Meta, key.as_bytes())? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt(key.clone()))?,
            ),
            None => 0,
        };
        let next = current + 1;
        self.kv.insert(TreeName::Meta, key.as_bytes(), &next.to_be_bytes())?;
        self.kv.flush()?;
        Ok(next)
    }

    /// Writes a record into a journal (an append-only tree the caller keys), durably.
    pub fn journal_put(&self, journal: &'static str, key: &[u8], value: &[u8]) -> Result<()> {
        self.kv.insert(TreeName::Journal(journal), key, value)
    }

    /// Removes a journal record (erasure removes a customer's quarantined rows).
    pub fn journal_remove(&self, journal: &'static str, key: &[u8]) -> Result<()> {
        self.kv.remove(TreeName::Journal(journal), key)
    }

    /// Visits a journal's records whose key starts with `prefix`, in key order.
    pub fn journal_visit(
        &self,
        journal: &'static str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let end = prefix_end(prefix);
        self.kv
            .visit(TreeName::Journal(journal), prefix, end.as_deref(), &mut f)
    }

    /// A hash-chained ledger (see [`crate::ledger`]). Keep one handle per ledger per process:
    /// appends through one handle are serialised, two handles would fork the chain.
    pub fn ledger(&self, name: &'static str) -> Result<Ledger> {
        Ledger::open(self.kv.clone(), name)
    }

    pub fn flush(&self) -> Result<()> {
        self.kv.flush()
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: unbounded).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_end(&[255, 255]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
