//! Transactions the source streams while they are in progress (`--streaming on`, pgoutput
//! protocol 2), kept on local disk until they end.
//!
//! The source decodes a large transaction and sends it in blocks as it runs, instead of after
//! its commit; other transactions' blocks and whole small transactions arrive in between.
//! Each open transaction's messages are appended to a file of its own, as received. A
//! subtransaction rolled back (Stream Abort with its xid) truncates the file back to where
//! that subtransaction's first message was: subtransactions nest, so everything after that
//! point belongs to it or to subtransactions inside it, which rolled back with it (PostgreSQL's
//! own apply worker keeps its stream files the same way). The whole transaction rolled back
//! closes its file; its commit hands the file back, read in order, to go through the
//! pipeline as if the transaction had been sent whole at its commit — same positions, same
//! batches, so exactly-once and the journal's order are those of every other transaction.
//!
//! Nothing here needs to survive a crash: the source streams a transaction again from its
//! start on the next connection (the slot's restart point stays before a transaction in
//! progress). So each file is unlinked as soon as it is created and lives only as long as its
//! handle: a process that dies, even by `kill -9`, leaves nothing on disk, and replicators
//! sharing a directory (several slots, several sources) never see each other's files.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// A new file in `dir` for transaction `xid`, already unlinked.
fn anonymous_file(dir: &Path, xid: u32) -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{xid}-{n}.stream", std::process::id()));
    let file = fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)?;
    fs::remove_file(&path)?;
    Ok(file)
}

/// One open transaction's file.
struct Spool {
    file: BufWriter<File>,
    /// Bytes written (the next record's offset).
    len: u64,
    /// Subtransactions seen, in order, with the offset of their first message.
    subxacts: Vec<(u32, u64)>,
    messages: u64,
}

impl Spool {
    fn create(dir: &Path, xid: u32) -> io::Result<Self> {
        Ok(Self {
            file: BufWriter::with_capacity(256 << 10, anonymous_file(dir, xid)?),
            len: 0,
            subxacts: Vec::new(),
            messages: 0,
        })
    }

    fn append(&mut self, xid: u32, subxid: u32, message: &[u8]) -> io::Result<()> {
        if subxid != xid && !self.subxacts.iter().any(|(s, _)| *s == subxid) {
            self.subxacts.push((subxid, self.len));
        }
        let len = u32::try_from(message.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
        self.file.write_all(&len.to_le_bytes())?;
        self.file.write_all(message)?;
        self.len += 4 + u64::from(len);
        self.messages += 1;
        Ok(())
    }

    /// Subtransaction `subxid` rolled back: its messages, and everything after them, go.
    fn roll_back(&mut self, subxid: u32) -> io::Result<u64> {
        let Some(at) = self.subxacts.iter().position(|(s, _)| *s == subxid) else {
            return Ok(0);
        };
        let offset = self.subxacts[at].1;
        self.subxacts.truncate(at);
        self.file.flush()?;
        let removed = self.count_from(offset)?;
        let file = self.file.get_mut();
        file.set_len(offset)?;
        file.seek(SeekFrom::Start(offset))?;
        self.len = offset;
        self.messages -= removed;
        Ok(removed)
    }

    /// Records from `offset` to the end (read back: a rollback is rare, counting keeps the
    /// figure exact without an index per message).
    fn count_from(&mut self, offset: u64) -> io::Result<u64> {
        let file = self.file.get_ref();
        let mut n = 0;
        let mut at = offset;
        let mut len = [0u8; 4];
        while at < self.len {
            file.read_exact_at(&mut len, at)?;
            at += 4 + u64::from(u32::from_le_bytes(len));
            n += 1;
        }
        Ok(n)
    }
}

/// What went wrong with the spools.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool directory {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("the source sent more of streamed transaction {0} without its first block")]
    MissedStart(u32),
}

/// The transactions in progress, each in its file under one directory.
pub struct Spools {
    dir: PathBuf,
    open: HashMap<u32, Spool>,
}

impl Spools {
    /// Spools under `dir` (created if missing; a file is made there now, to fail at the
    /// start rather than at the first large transaction).
    pub fn open(dir: PathBuf) -> Result<Self, SpoolError> {
        let io = |source| SpoolError::Io {
            dir: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        anonymous_file(&dir, 0).map_err(io)?;
        Ok(Self {
            dir,
            open: HashMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, source: io::Error) -> SpoolError {
        SpoolError::Io {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// Transactions in progress.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Messages spooled, over every transaction in progress.
    pub fn messages(&self) -> u64 {
        self.open.values().map(|s| s.messages).sum()
    }

    /// A block of `xid` begins; `first`: the transaction's first.
    pub fn start(&mut self, xid: u32, first: bool) -> Result<(), SpoolError> {
        if first {
            let spool = Spool::create(&self.dir, xid).map_err(|e| self.io(e))?;
            self.open.insert(xid, spool);
        } else if !self.open.contains_key(&xid) {
            return Err(SpoolError::MissedStart(xid));
        }
        Ok(())
    }

    /// A message of (sub)transaction `subxid` of `xid`, as received.
    pub fn append(&mut self, xid: u32, subxid: u32, message: &[u8]) -> Result<(), SpoolError> {
        let spool = self
            .open
            .get_mut(&xid)
            .ok_or(SpoolError::MissedStart(xid))?;
        spool
            .append(xid, subxid, message)
            .map_err(|source| SpoolError::Io {
                dir: self.dir.display().to_string(),
                source,
            })
    }

    /// Stream Abort: the whole transaction (`subxid == xid`) or one subtransaction rolled
    /// back; returns the messages dropped.
    pub fn abort(&mut self, xid: u32, subxid: u32) -> Result<u64, SpoolError> {
        if xid == subxid {
            return Ok(self.open.remove(&xid).map_or(0, |s| s.messages));
        }
        let Some(spool) = self.open.get_mut(&xid) else {
            return Ok(0);
        };
        spool.roll_back(subxid).map_err(|source| SpoolError::Io {
            dir: self.dir.display().to_string(),
            source,
        })
    }

    /// Stream Commit: `xid`'s messages, to be read in order (None: nothing of it was sent —
    /// a transaction without a change in the publication).
    pub fn take(&mut self, xid: u32) -> Result<Option<Spooled>, SpoolError> {
        let Some(spool) = self.open.remove(&xid) else {
            return Ok(None);
        };
        let Spool { file, messages, .. } = spool;
        let mut file = file.into_inner().map_err(|e| self.io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        Ok(Some(Spooled {
            reader: BufReader::with_capacity(256 << 10, file),
            dir: self.dir.display().to_string(),
            messages,
        }))
    }

    /// Bytes on disk over every transaction in progress.
    pub fn bytes(&self) -> u64 {
        self.open.values().map(|s| s.len).sum()
    }
}

/// A committed transaction's messages, read back in order; the file goes when this does.
pub struct Spooled {
    reader: BufReader<File>,
    dir: String,
    pub messages: u64,
}

impl Spooled {
    /// The next message as received, or None at the end.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, SpoolError> {
        self.read().map_err(|source| SpoolError::Io {
            dir: self.dir.clone(),
            source,
        })
    }

    fn read(&mut self) -> io::Result<Option<Bytes>> {
        let mut len = [0u8; 4];
        match self.reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        self.reader.read_exact(&mut buf)?;
        Ok(Some(Bytes::from(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("brewlytics-spool-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn files_in(d: &Path) -> usize {
        fs::read_dir(d).unwrap().count()
    }

    fn read_all(mut s: Spooled) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(m) = s.next_message().unwrap() {
            out.push(m.to_vec());
        }
        out
    }

    #[test]
    fn a_committed_transaction_reads_back_in_order() {
        let mut s = Spools::open(dir("commit")).unwrap();
        s.start(10, true).unwrap();
        s.append(10, 10, b"one").unwrap();
        s.start(11, true).unwrap();
        s.append(11, 11, b"other").unwrap();
        s.start(10, false).unwrap();
        s.append(10, 10, b"").unwrap();
        s.append(10, 10, b"three").unwrap();
        assert_eq!(
            (s.len(), s.messages(), s.bytes()),
            (2, 4, 4 * 4 + 3 + 5 + 5)
        );
        let spooled = s.take(10).unwrap().unwrap();
        assert_eq!(spooled.messages, 3);
        assert_eq!(
            read_all(spooled),
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
        assert!(s.take(10).unwrap().is_none());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_rolled_back_subtransaction_drops_itself_and_what_nests_in_it() {
        let mut s = Spools::open(dir("savepoint")).unwrap();
        s.start(1, true).unwrap();
        s.append(1, 1, b"top-a").unwrap();
        s.append(1, 5, b"sub5").unwrap(); // savepoint a (kept: released)
        s.append(1, 6, b"sub6").unwrap(); // savepoint b
        s.append(1, 7, b"sub7").unwrap(); // savepoint c, inside b
        s.append(1, 6, b"sub6-again").unwrap();
        assert_eq!(s.abort(1, 6).unwrap(), 3); // rollback to b: 6 and 7 go
        assert_eq!(s.abort(1, 7).unwrap(), 0); // already gone with 6
        assert_eq!(s.abort(1, 99).unwrap(), 0); // no message of it was sent
        s.append(1, 1, b"top-b").unwrap();
        s.append(1, 8, b"sub8").unwrap();
        assert_eq!(s.messages(), 4);
        assert_eq!(
            read_all(s.take(1).unwrap().unwrap()),
            vec![
                b"top-a".to_vec(),
                b"sub5".to_vec(),
                b"top-b".to_vec(),
                b"sub8".to_vec()
            ]
        );
    }

    #[test]
    fn a_rolled_back_transaction_leaves_nothing() {
        let mut s = Spools::open(dir("abort")).unwrap();
        s.start(3, true).unwrap();
        s.append(3, 3, b"x").unwrap();
        assert_eq!(s.abort(3, 3).unwrap(), 1);
        assert!(s.is_empty());
        assert_eq!(s.abort(3, 3).unwrap(), 0);
    }

    #[test]
    fn more_of_a_transaction_without_its_start_is_refused() {
        let mut s = Spools::open(dir("missed")).unwrap();
        assert!(matches!(s.start(4, false), Err(SpoolError::MissedStart(4))));
        assert!(matches!(
            s.append(4, 4, b"x"),
            Err(SpoolError::MissedStart(4))
        ));
    }

    #[test]
    fn spools_leave_no_file_even_when_their_process_dies() {
        let d = dir("no-files");
        let mut a = Spools::open(d.clone()).unwrap();
        let mut b = Spools::open(d.clone()).unwrap();
        // The same xid in two replicators sharing the directory (two sources).
        for (s, text) in [(&mut a, b"from a"), (&mut b, b"from b")] {
            s.start(9, true).unwrap();
            s.append(9, 9, text).unwrap();
        }
        assert_eq!(files_in(&d), 0);
        assert_eq!(
            read_all(a.take(9).unwrap().unwrap()),
            vec![b"from a".to_vec()]
        );
        assert_eq!(
            read_all(b.take(9).unwrap().unwrap()),
            vec![b"from b".to_vec()]
        );
        b.start(12, true).unwrap();
        b.append(12, 12, b"x").unwrap();
        std::mem::forget(b); // as a kill -9 leaves it
        assert_eq!(files_in(&d), 0);
    }

    #[test]
    fn a_directory_that_cannot_hold_files_is_refused_at_the_start() {
        let d = dir("not-a-dir");
        fs::create_dir_all(d.parent().unwrap()).unwrap();
        fs::write(&d, b"a file").unwrap();
        let e = Spools::open(d.clone()).err().unwrap().to_string();
        assert!(e.contains("spool directory"), "{e}");
        let _ = fs::remove_file(&d);
    }
}
