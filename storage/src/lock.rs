//! One process per store: an advisory lock on `lock` in the store directory.
//!
//! sled refuses a second opener too, but only with an `io::Error` whose text is all a user
//! sees. Taking our own lock first lets a refusal say which store is busy and who holds it:
//! the holder writes its pid and a description of itself into the locked file, and a refused
//! opener reads them back. The lock, not the file's content, is what excludes: a stale file
//! left by a killed process is simply overwritten by the next holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::{io_err, Result, StorageError};

const FILE: &str = "lock";

/// Held for as long as a [`crate::Store`] is open; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the lock of the store in `dir`, recording this process as `holder`, or fails
    /// with [`StorageError::Busy`] naming the process that has it.
    pub(crate) fn acquire(dir: &Path, holder: &str) -> Result<StoreLock> {
        let path = dir.join(FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // What the holder wrote is only a hint: unreadable means "unknown".
                let holder = file.read_to_string(&mut text).ok().and_then(|_| parse(&text));
                return Err(StorageError::Busy {
                    dir: dir.to_path_buf(),
                    pid: holder.as_ref().map(|h| h.0),
                    holder: holder.map(|h| h.1),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        file.set_len(0).map_err(io_err(&path))?;
        file.rewind().map_err(io_err(&path))?;
        writeln!(file, "{}\n{}", std::process::id(), holder.replace('\n', " ")).map_err(io_err(&path))?;
        file.flush().map_err(io_err(&path))?;
        Ok(StoreLock { _file: file })
    }
}

/// `pid \n holder \n` as [`StoreLock::acquire`] writes it.
fn parse(text: &str) -> Option<(u32, String)> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    Some((pid, lines.next().unwrap_or("").trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_opener_is_told_who_holds_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = StoreLock::acquire(dir.path(), "the test server").expect("first");
        match StoreLock::acquire(dir.path(), "a second opener") {
            Err(StorageError::Busy { dir: d, pid, holder }) => {
                assert_eq!(d, dir.path());
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(holder.as_deref(), Some("the test server"));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(held);
        // Released on drop; the stale content does not stop the next holder.
        StoreLock::acquire(dir.path(), "after").expect("free again");
    }

    #[test]
    fn a_garbled_lock_file_is_an_unknown_holder() {
        assert_eq!(parse("not a pid\nx"), None);
        assert_eq!(parse("42\n"), Some((42, String::new())));
        assert_eq!(parse("42\ncis serve\n"), Some((42, "cis serve".into())));
    }
}
