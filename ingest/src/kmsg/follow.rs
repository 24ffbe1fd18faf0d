//! Following `/dev/kmsg`.
//!
//! Each `read(2)` of `/dev/kmsg` returns one record. The follower starts
//! where the log is now (SEEK_END), or, when the agent restarts within the
//! same boot, right after the last sequence number it handled (read from
//! the start of the ring buffer, skipping what it already saw), so a
//! restart re-emits nothing. Records overwritten before they were read
//! (EPIPE) are counted as lost.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// O_NONBLOCK on Linux: reads return WouldBlock instead of waiting, so the
/// agent can poll and stop cleanly.
const O_NONBLOCK: i32 = 0o4000;

/// A `/dev/kmsg` reader.
#[derive(Debug)]
pub struct KmsgFollower {
    file: File,
    resume_after: Option<u64>,
    last_seq: Option<u64>,
    lost: u64,
    buf: Vec<u8>,
}

impl KmsgFollower {
    /// Opens `path` (`/dev/kmsg`); `resume_after` is the last sequence
    /// number handled in this boot, if any.
    pub fn open(path: &Path, resume_after: Option<u64>) -> std::io::Result<KmsgFollower> {
        Self::open_with(path, resume_after, O_NONBLOCK)
    }

    /// Like [`KmsgFollower::open`], but reads wait for the next record
    /// (for a dedicated reader thread: no polling while the log is quiet).
    pub fn open_blocking(path: &Path, resume_after: Option<u64>) -> std::io::Result<KmsgFollower> {
        Self::open_with(path, resume_after, 0)
    }

    fn open_with(
        path: &Path,
        resume_after: Option<u64>,
        flags: i32,
    ) -> std::io::Result<KmsgFollower> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)?;
        if resume_after.is_none() {
            file.seek(SeekFrom::End(0))?;
        }
        Ok(KmsgFollower {
            file,
            resume_after,
            last_seq: resume_after,
            lost: 0,
            buf: vec![0; 16 * 1024],
        })
    }

    /// The next record's message line (`prio,seq,usec,flags;message`), or
    /// None when there is nothing new right now.
    pub fn next_record(&mut self) -> std::io::Result<Option<String>> {
        loop {
            match self.file.read(&mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    // One record per read: the message line, then dictionary
                    // lines (" SUBSYSTEM=pci") that carry no message.
                    let text = String::from_utf8_lossy(&self.buf[..n]);
                    let record = text.split('\n').next().unwrap_or("").to_owned();
                    let seq = record.split(',').nth(1).and_then(|s| s.parse::<u64>().ok());
                    if let (Some(s), Some(after)) = (seq, self.resume_after) {
                        if s <= after {
                            continue;
                        }
                        self.resume_after = None;
                    }
                    if seq.is_some() {
                        self.last_seq = seq;
                    }
                    return Ok(Some(record));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                // EPIPE: the ring buffer overwrote records we had not read.
                Err(e) if e.raw_os_error() == Some(32) => {
                    self.lost += 1;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sequence number of the last record returned.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Times records were overwritten before they were read.
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

/// Where the follower remembers its position: `<dir>/kmsg-seq` holding
/// `<boot id> <seq>`.
#[derive(Clone, Debug)]
pub struct SeqFile(PathBuf);

impl SeqFile {
    pub fn new(state_dir: &Path) -> SeqFile {
        SeqFile(state_dir.join("kmsg-seq"))
    }

    /// The saved sequence number, if it belongs to `boot_id`.
    pub fn load(&self, boot_id: &str) -> Option<u64> {
        let text = std::fs::read_to_string(&self.0).ok()?;
        let (boot, seq) = text.trim().split_once(' ')?;
        (boot == boot_id).then(|| seq.parse().ok()).flatten()
    }

    pub fn save(&self, boot_id: &str, seq: u64) -> std::io::Result<()> {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, format!("{boot_id} {seq}\n"))?;
        std::fs::rename(tmp, &self.0)
    }
}
