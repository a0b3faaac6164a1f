//! The value log: the values of the log's bulk trees (`blocks`, `chain`) in
//! append-only files of cis's own, and only a small pointer to each in sled (key-value
//! separation, as in WiscKey).
//!
//! Why: a block is 2–3 KB and a bulk-loaded store holds ~210,000 of them, far more than sled's
//! cache. Kept inline, every insert re-read and split leaves of that tree and every scan decoded
//! its pages, which also held most of a scan's peak memory. Out of line, sled's `blocks` tree is
//! ~35 bytes an entry and stays cached; a block is one append here and one positioned read back.
//! The ids of `chain` (32 bytes an event, written once, read by `verify`) are the same kind of
//! bulk: inline, sled held them at about twice their size; here they are stored once.
//!
//! Files are `blocks/000001.vlog`, `000002.vlog`, …; appends go to the newest, and a new file is
//! started once the newest has passed [`ROLL_AT`], so a later garbage collection can drop whole
//! files. A file is only the values, back to back: the pointers in sled are its only index (a
//! value replaced or removed is garbage left in place).
//!
//! Durability: [`ValueLog::sync`] (fdatasync) runs before sled's flush, so a pointer that reaches
//! the disk with a flush points at durable bytes. sled also writes in the background between
//! flushes, so a pointer that *replaces* another (a compaction's segment, an erasure's rewrite)
//! is written only after its bytes are synced ([`crate::kv::SplitKv`]): otherwise a power loss
//! could keep the new pointer and lose both its bytes and the old value it replaced. A new key's
//! pointer needs no such care: it is a batch's block, which recovery removes unless the batch's
//! commit record (written after the flush) exists. Bytes past the last durable pointer after a
//! crash are garbage: an open appends after them, at the file's end, and never reads them.
//!
//! Reads are `pread`s into the caller's buffer, safe from any number of threads; no mmap, whose
//! pages would count in the process's resident memory.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{io_err, Result, StorageError};

/// First byte of a pointer. No block starts with it (blocks start with their format, 1 to 4:
/// see `block`), so a `blocks` value is told apart as inline (a format-5 store's) or a pointer.
pub(crate) const POINTER: u8 = 0x76;
/// `POINTER ‖ file u32 ‖ offset u64 ‖ len u32 ‖ blake3(value)[0..8]`.
const POINTER_LEN: usize = 1 + 4 + 8 + 4 + 8;
/// A file past this many bytes is not appended to any more. Small enough that garbage
/// collection (`kv::reclaim`) frees space in steps a daily run can afford, large enough that a
/// store of a few GB is a handful of files.
pub(crate) const ROLL_AT: u64 = 256 << 20;
const SUFFIX: &str = ".vlog";

/// Where a value is and what it hashes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pointer {
    file: u32,
    offset: u64,
    len: u32,
    check: [u8; 8],
}

impl Pointer {
    fn encode(&self) -> [u8; POINTER_LEN] {
        let mut out = [0u8; POINTER_LEN];
        out[0] = POINTER;
        out[1..5].copy_from_slice(&self.file.to_be_bytes());
        out[5..13].copy_from_slice(&self.offset.to_be_bytes());
        out[13..17].copy_from_slice(&self.len.to_be_bytes());
        out[17..].copy_from_slice(&self.check);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Pointer> {
        let bad = || StorageError::Corrupt(format!("a value-log pointer of {} bytes", bytes.len()));
        if bytes.len() != POINTER_LEN || bytes[0] != POINTER {
            return Err(bad());
        }
        let field = |at: usize, n: usize| &bytes[at..at + n];
        Ok(Pointer {
            file: u32::from_be_bytes(field(1, 4).try_into().map_err(|_| bad())?),
            offset: u64::from_be_bytes(field(5, 8).try_into().map_err(|_| bad())?),
            len: u32::from_be_bytes(field(13, 4).try_into().map_err(|_| bad())?),
            check: field(17, 8).try_into().map_err(|_| bad())?,
        })
    }
}

/// blake3's first 8 bytes: a pointer's check of its value, and a block's of its parts.
pub(crate) fn check(value: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&blake3::hash(value).as_bytes()[..8]);
    out
}

/// Whether a stored value is a pointer (else it is held inline, as stores before format 6
/// held blocks and before format 7 held `chain` values). Unambiguous by the length too: an
/// inline `chain` value is 32n bytes, and a block starts with its format.
pub(crate) fn is_pointer(value: &[u8]) -> bool {
    value.len() == POINTER_LEN && value[0] == POINTER
}

/// The file a pointer's value is in, and its length: what garbage collection counts.
pub(crate) fn extent(pointer: &[u8]) -> Result<(u32, u64)> {
    let p = Pointer::decode(pointer)?;
    Ok((p.file, u64::from(p.len)))
}

pub(crate) struct ValueLog {
    dir: PathBuf,
    roll_at: u64,
    /// Every file, by number, for reads (the newest is also the writer's).
    files: RwLock<BTreeMap<u32, Arc<File>>>,
    writer: Mutex<Writer>,
}

struct Writer {
    number: u32,
    file: Arc<File>,
    /// Where the next value goes: the file's length.
    end: u64,
    /// Bytes were appended since the last sync.
    unsynced: bool,
}

impl ValueLog {
    /// Opens (creating if needed) the value log in `dir`, starting a new file past `roll_at`
    /// bytes ([`ROLL_AT`]; tests roll small files).
    pub(crate) fn open_rolling_at(dir: &Path, roll_at: u64) -> Result<ValueLog> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            if let Some(parent) = dir.parent() {
                crate::layout::sync_dir(parent)?;
            }
        }
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            let Some(number) = file_number(&path) else { continue };
            let file = OpenOptions::new().read(true).open(&path).map_err(io_err(&path))?;
            files.insert(number, Arc::new(file));
        }
        let writer = match files.last_key_value() {
            Some((&number, _)) => {
                // Reopened for writing: the read-only handle above stays the readers'.
                let path = file_path(dir, number);
                let file = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                let end = file.metadata().map_err(io_err(&path))?.len();
                Writer {
                    number,
                    file: Arc::new(file),
                    end,
                    unsynced: false,
                }
            }
            None => create(dir, 1, &mut files)?,
        };
        Ok(ValueLog {
            dir: dir.to_path_buf(),
            roll_at,
            files: RwLock::new(files),
            writer: Mutex::new(writer),
        })
    }

    /// Appends `value` and returns the pointer to store in its place. Not durable until
    /// [`ValueLog::sync`].
    pub(crate) fn append(&self, value: &[u8]) -> Result<[u8; POINTER_LEN]> {
        let len = u32::try_from(value.len())
            .map_err(|_| StorageError::Corrupt(format!("a block of {} bytes", value.len())))?;
        let check = check(value);
        let mut w = self.writer.lock().map_err(poisoned)?;
        if w.end > 0 && w.end + u64::from(len) > self.roll_at {
            self.roll(&mut w)?;
        }
        let offset = w.end;
        w.file
            .write_all_at(value, offset)
            .map_err(io_err(file_path(&self.dir, w.number)))?;
        w.end += u64::from(len);
        w.unsynced = true;
        Ok(Pointer {
            file: w.number,
            offset,
            len,
            check,
        }
        .encode())
    }

    /// Syncs the newest file, then starts the next one (a file is synced before it stops being
    /// the newest, so [`ValueLog::sync`] need only sync the newest).
    fn roll(&self, w: &mut Writer) -> Result<()> {
        self.sync_writer(w)?;
        let mut files = self.files.write().map_err(poisoned)?;
        *w = create(&self.dir, w.number + 1, &mut files)?;
        Ok(())
    }

    /// Makes every value appended so far durable (fdatasync; nothing when none was appended).
    pub(crate) fn sync(&self) -> Result<()> {
        let mut w = self.writer.lock().map_err(poisoned)?;
        self.sync_writer(&mut w)
    }

    fn sync_writer(&self, w: &mut Writer) -> Result<()> {
        if w.unsynced {
            w.file.sync_data().map_err(io_err(file_path(&self.dir, w.number)))?;
            w.unsynced = false;
        }
        Ok(())
    }

    /// The value `pointer` points at, read into `buf` (resized to it): checked against the
    /// pointer's checksum, so a torn or damaged value is [`StorageError::Corrupt`] naming the
    /// file, never handed on.
    pub(crate) fn read_into(&self, pointer: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        let p = Pointer::decode(pointer)?;
        self.read_at(&p, 0, p.len as usize, buf)?;
        if check(buf) != p.check {
            return Err(StorageError::Corrupt(format!(
                "{}: the value at offset {} ({} bytes) does not match its checksum",
                file_path(&self.dir, p.file).display(),
                p.offset,
                p.len
            )));
        }
        Ok(())
    }

    /// Up to `len` bytes from byte `at` of the value `pointer` points at (fewer past its end),
    /// read into `buf`. Not checked: the pointer's checksum is of the whole value, so a caller
    /// reading a part checks it against a checksum of its own (a block's directory and runs).
    pub(crate) fn read_part(&self, pointer: &[u8], at: usize, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        let p = Pointer::decode(pointer)?;
        let at = at.min(p.len as usize);
        self.read_at(&p, at, len.min(p.len as usize - at), buf)
    }

    /// `len` bytes from byte `at` of `p`'s value into `buf`; a value past its file's end is torn.
    fn read_at(&self, p: &Pointer, at: usize, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        let path = || file_path(&self.dir, p.file);
        let file = self
            .files
            .read()
            .map_err(poisoned)?
            .get(&p.file)
            .cloned()
            .ok_or_else(|| StorageError::Corrupt(format!("value-log file {} is missing", path().display())))?;
        buf.clear();
        buf.resize(len, 0);
        match file.read_exact_at(buf, p.offset + at as u64) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(StorageError::Corrupt(format!(
                "{}: the value at offset {} ({} bytes) ends past the file's end (torn)",
                path().display(),
                p.offset,
                p.len
            ))),
            read => read.map_err(io_err(path())),
        }
    }

    /// Bytes of every file.
    pub(crate) fn size_on_disk(&self) -> Result<u64> {
        Ok(self.file_sizes()?.values().sum())
    }

    /// Each file's number and bytes.
    pub(crate) fn file_sizes(&self) -> Result<BTreeMap<u32, u64>> {
        let files = self.files.read().map_err(poisoned)?;
        let mut sizes = BTreeMap::new();
        for (&number, file) in files.iter() {
            let len = file.metadata().map_err(io_err(file_path(&self.dir, number)))?.len();
            sizes.insert(number, len);
        }
        Ok(sizes)
    }

    /// The file appends go to.
    pub(crate) fn newest(&self) -> Result<u32> {
        Ok(self.writer.lock().map_err(poisoned)?.number)
    }

    /// Starts a new file now (unless the newest is empty), so the one before can be deleted.
    pub(crate) fn roll_now(&self) -> Result<()> {
        let mut w = self.writer.lock().map_err(poisoned)?;
        if w.end > 0 {
            self.roll(&mut w)?;
        }
        Ok(())
    }

    /// Deletes files no pointer names any more (the caller's word for it: see `kv::reclaim`),
    /// durably. Never the newest: appends go there.
    pub(crate) fn delete(&self, numbers: &[u32]) -> Result<()> {
        let newest = self.newest()?;
        let mut files = self.files.write().map_err(poisoned)?;
        for &number in numbers {
            if number == newest {
                return Err(StorageError::Corrupt(format!(
                    "value-log file {number} is the one appends go to and cannot be deleted"
                )));
            }
            files.remove(&number);
            let path = file_path(&self.dir, number);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
                _ => {}
            }
        }
        crate::layout::sync_dir(&self.dir)
    }
}

/// Creates file `number` (durably: its directory entry is synced before any pointer can name
/// it) and registers it for reads.
fn create(dir: &Path, number: u32, files: &mut BTreeMap<u32, Arc<File>>) -> Result<Writer> {
    let path = file_path(dir, number);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err(&path))?;
    crate::layout::sync_dir(dir)?;
    let file = Arc::new(file);
    files.insert(number, file.clone());
    Ok(Writer {
        number,
        file,
        end: 0,
        unsynced: false,
    })
}

fn file_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:06}{SUFFIX}"))
}

fn file_number(path: &Path) -> Option<u32> {
    path.file_name()?.to_str()?.strip_suffix(SUFFIX)?.parse().ok()
}

fn poisoned<T>(_: T) -> StorageError {
    StorageError::Poisoned { what: "value log" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_across_files_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let values: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let vlog = ValueLog::open_rolling_at(dir.path(), 250).expect("open");
        let pointers: Vec<_> = values.iter().map(|v| vlog.append(v).expect("append")).collect();
        vlog.sync().expect("sync");
        let mut buf = Vec::new();
        for (p, v) in pointers.iter().zip(&values) {
            vlog.read_into(p, &mut buf).expect("read");
            assert_eq!(&buf, v);
        }
        assert_eq!(
            vlog.size_on_disk().expect("size"),
            values.iter().map(|v| v.len() as u64).sum()
        );
        drop(vlog);
        let files = std::fs::read_dir(dir.path()).expect("read dir").count();
        assert!(files > 2, "rolled to {files} files");
        let vlog = ValueLog::open_rolling_at(dir.path(), 250).expect("reopen");
        let more = vlog.append(b"after the reopen").expect("append");
        for (p, v) in pointers.iter().zip(&values) {
            vlog.read_into(p, &mut buf).expect("read");
            assert_eq!(&buf, v);
        }
        vlog.read_into(&more, &mut buf).expect("read");
        assert_eq!(buf, b"after the reopen");
    }

    #[test]
    fn no_block_starts_with_the_pointer_tag() {
        assert!(!crate::block::FORMATS.contains(&POINTER));
    }
}
