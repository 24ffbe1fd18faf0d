//! The agent's bounded on-disk spool: a write-ahead FIFO of encoded
//! events between the sources and Kafka. Every event goes through it, so
//! a Kafka outage (or an agent restart) loses nothing the spool could
//! hold, and events reach Kafka in the order they were made.
//!
//! Overflow policy (explicit and counted):
//! - below half full, everything is spooled;
//! - from half full, low-severity periodic samples (`gpu.thermal`,
//!   `host.sensor`, `node.heartbeat`) are dropped
//!   ([`SpoolStats::dropped_periodic`]) and faults are still spooled;
//! - when full, new events are dropped ([`SpoolStats::dropped_full`]): the
//!   oldest evidence is kept, as it is what the rules have not seen yet.
//!
//! Layout: `dir/spool-<n>.jsonl` segments of one event per line, and
//! `dir/cursor` (`<segment> <offset>`, replaced atomically) marking how far
//! Kafka has acknowledged. Lines are written with `write(2)`, not fsynced:
//! the spool survives the agent dying, not the machine losing power.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use pitcrew_contract::EventKind;

/// Whether an event may be dropped first under pressure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A periodic, low-severity sample: the next one says the same.
    Periodic,
    /// Evidence of a fault (or anything not known to be periodic).
    Fault,
}

impl Priority {
    pub fn of(kind: EventKind) -> Priority {
        match kind {
            EventKind::GpuThermal | EventKind::HostSensor | EventKind::NodeHeartbeat => {
                Priority::Periodic
            }
            _ => Priority::Fault,
        }
    }
}

/// What happened to a pushed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Spooled,
    DroppedPeriodic,
    DroppedFull,
}

/// Counters of the spool, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub spooled: u64,
    pub acknowledged: u64,
    pub dropped_periodic: u64,
    pub dropped_full: u64,
}

/// A spool failure (disk full, permissions): retryable, the agent keeps
/// the event in memory meanwhile.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

fn err(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError {
        path: path.display().to_string(),
        source,
    }
}

/// One entry read from the spool, not yet acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub payload: Vec<u8>,
    segment: u64,
    end: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// (segment number, size in bytes), oldest first; the last is written.
    segments: VecDeque<(u64, u64)>,
    /// Acknowledged bytes of the first segment.
    head_offset: u64,
    writer: Option<File>,
    stats: SpoolStats,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| err(dir, e))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("spool-")?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        let (cursor_segment, cursor_offset) = read_cursor(dir);
        let mut segments = VecDeque::new();
        for n in numbers {
            let path = segment_path(dir, n);
            if n < cursor_segment {
                // Fully acknowledged before a crash: remove it now.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let size = std::fs::metadata(&path).map_err(|e| err(&path, e))?.len();
            segments.push_back((n, size));
        }
        // A torn last line (the agent died mid-write) is cut off.
        if let Some(&(n, size)) = segments.back() {
            let path = segment_path(dir, n);
            let good = complete_prefix(&path).map_err(|e| err(&path, e))?;
            if good < size {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| err(&path, e))?;
                f.set_len(good).map_err(|e| err(&path, e))?;
                if let Some(last) = segments.back_mut() {
                    last.1 = good;
                }
            }
        }
        let head_offset = match segments.front() {
            Some(&(n, size)) if n == cursor_segment => cursor_offset.min(size),
            _ => 0,
        };
        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes: max_bytes.max(1024),
            segment_bytes: (max_bytes / 16).clamp(4096, 8 * 1024 * 1024),
            segments,
            head_offset,
            writer: None,
            stats: SpoolStats::default(),
        })
    }

    /// Bytes waiting for Kafka.
    pub fn pending_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum::<u64>() - self.head_offset
    }

    pub fn is_empty(&self) -> bool {
        self.pending_bytes() == 0
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    /// Appends one encoded event (no newline inside: compact JSON).
    pub fn push(&mut self, payload: &[u8], priority: Priority) -> Result<Pushed, SpoolError> {
        let need = payload.len() as u64 + 1;
        let pending = self.pending_bytes();
        if pending + need > self.max_bytes {
            self.stats.dropped_full += 1;
            return Ok(Pushed::DroppedFull);
        }
        if priority == Priority::Periodic && pending * 2 >= self.max_bytes {
            self.stats.dropped_periodic += 1;
            return Ok(Pushed::DroppedPeriodic);
        }
        let rotate = match self.segments.back() {
            None => true,
            Some(&(_, size)) => size >= self.segment_bytes,
        };
        if rotate || self.writer.is_none() {
            let n = match (rotate, self.segments.back()) {
                (true, Some(&(last, _))) => last + 1,
                (true, None) => 1,
                (false, Some(&(last, _))) => last,
                (false, None) => 1,
            };
            if rotate {
                self.segments.push_back((n, 0));
            }
            let path = segment_path(&self.dir, n);
            self.writer = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| err(&path, e))?,
            );
        }
        let mut line = Vec::with_capacity(payload.len() + 1);
        line.extend_from_slice(payload);
        line.push(b'\n');
        if let Some(w) = self.writer.as_mut() {
            w.write_all(&line).map_err(|e| err(&self.dir, e))?;
        }
        if let Some(last) = self.segments.back_mut() {
            last.1 += need;
        }
        self.stats.spooled += 1;
        Ok(Pushed::Spooled)
    }

    /// Reads up to `max` of the oldest unacknowledged entries.
    pub fn peek(&self, max: usize) -> Result<Vec<Entry>, SpoolError> {
        let mut out = Vec::new();
        let mut offset = self.head_offset;
        for &(n, size) in &self.segments {
            if out.len() >= max {
                break;
            }
            if offset < size {
                let path = segment_path(&self.dir, n);
                let mut f = File::open(&path).map_err(|e| err(&path, e))?;
                f.seek(SeekFrom::Start(offset)).map_err(|e| err(&path, e))?;
                let mut buf = Vec::new();
                f.take(size - offset)
                    .read_to_end(&mut buf)
                    .map_err(|e| err(&path, e))?;
                let mut pos = 0usize;
                while out.len() < max {
                    let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
                        break;
                    };
                    out.push(Entry {
                        payload: buf[pos..pos + nl].to_vec(),
                        segment: n,
                        end: offset + (pos + nl + 1) as u64,
                    });
                    pos += nl + 1;
                }
            }
            offset = 0;
        }
        Ok(out)
    }

    /// Marks everything up to and including `last` acknowledged.
    pub fn ack(&mut self, last: &Entry, count: u64) -> Result<(), SpoolError> {
        while let Some(&(n, size)) = self.segments.front() {
            if n < last.segment
                || (n == last.segment && last.end >= size && self.segments.len() > 1)
            {
                self.segments.pop_front();
                self.head_offset = 0;
                let _ = std::fs::remove_file(segment_path(&self.dir, n));
                continue;
            }
            if n == last.segment {
                self.head_offset = last.end;
            }
            break;
        }
        self.stats.acknowledged += count;
        let (segment, offset) = match self.segments.front() {
            Some(&(n, _)) => (n, self.head_offset),
            None => (0, 0),
        };
        write_cursor(&self.dir, segment, offset)
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("spool-{n:012}.jsonl"))
}

fn read_cursor(dir: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(dir.join("cursor")).unwrap_or_default();
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(s), Some(o)) => (s, o),
        _ => (0, 0),
    }
}

fn write_cursor(dir: &Path, segment: u64, offset: u64) -> Result<(), SpoolError> {
    let tmp = dir.join("cursor.tmp");
    std::fs::write(&tmp, format!("{segment} {offset}\n")).map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, dir.join("cursor")).map_err(|e| err(dir, e))
}

/// Length of the file up to its last newline.
fn complete_prefix(path: &Path) -> std::io::Result<u64> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p as u64 + 1))
}

#[cfg(test)]
mod tests;
