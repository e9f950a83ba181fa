//! The file sink: one structured CloudEvent (JSON) a line, for a log
//! shipper beside a standalone container. Written by a thread of its own
//! (file writes never run on the serving runtime), buffered, flushed at
//! least every 100 ms, rotated by size: `PATH` -> `PATH.1` -> ... ->
//! `PATH.<keep>`, the oldest removed.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::event::Event;
use super::queue::counts;
use super::queue::{Sink, Taker};
use super::settings::FileSettings;

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const BUFFER: usize = 256 << 10;

pub async fn run(mut taker: Taker, mut out: Rotating) {
    let mut events = Vec::new();
    let mut pending: Vec<Event> = Vec::new();
    let mut last_flush = Instant::now();
    let mut tick = Taker::ticks();
    while let Some(now) = taker.pass(&mut tick).await {
        while let Some(record) = taker.take() {
            super::event::events(&record, now, &mut events);
            write(&mut out, &mut events, &mut pending, &taker.sink);
            if out.buffered() >= BUFFER / 2 {
                flush(&mut out, &mut pending, &taker.sink);
                last_flush = Instant::now();
            }
        }
        if !pending.is_empty() && last_flush.elapsed() >= FLUSH_EVERY {
            flush(&mut out, &mut pending, &taker.sink);
            last_flush = Instant::now();
        }
    }
    // Stopping: what is queued is written and flushed before the thread ends.
    while let Some(record) = taker.take() {
        super::event::events(&record, std::time::SystemTime::now(), &mut events);
        write(&mut out, &mut events, &mut pending, &taker.sink);
    }
    flush(&mut out, &mut pending, &taker.sink);
    taker.finish();
}

/// Writes `events` as lines (buffered), keeping them in `pending` until the
/// flush that counts them.
fn write(out: &mut Rotating, events: &mut Vec<Event>, pending: &mut Vec<Event>, sink: &Sink) {
    for event in events.drain(..) {
        match out.line(|buffer| {
            let body = event.write_structured(buffer);
            super::queue::note(&event, &body);
        }) {
            Ok(()) => pending.push(event),
            Err(e) => {
                tracing::warn!(error = %e, path = %out.path.display(), "payload log file: cannot write");
                counts(&[event], super::queue::FAILED, &sink.label);
            }
        }
    }
}

/// Counts what was written since the last flush as sent, or as failed.
fn flush(out: &mut Rotating, pending: &mut Vec<Event>, sink: &Sink) {
    let label = sink.label.as_str();
    match out.flush() {
        Ok(()) => counts(pending, super::queue::SENT, label),
        Err(e) => {
            tracing::warn!(error = %e, path = %out.path.display(), "payload log file: cannot write");
            counts(pending, super::queue::FAILED, label);
        }
    }
    // Events hold their record (and its tensors) until here.
    sink.bury(pending.drain(..));
}

/// A file that rotates when the next line would take it over its size.
/// Lines are encoded straight into its buffer (not into a line of their
/// own and then copied).
pub struct Rotating {
    path: PathBuf,
    file: File,
    buffer: Vec<u8>,
    /// The file's size with what is buffered.
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl Rotating {
    pub fn open(settings: FileSettings) -> std::io::Result<Rotating> {
        if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = append(&settings.path)?;
        let size = file.metadata()?.len();
        Ok(Rotating {
            path: settings.path,
            file,
            buffer: Vec::with_capacity(BUFFER),
            size,
            max_bytes: settings.max_bytes,
            keep: settings.keep,
        })
    }

    fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Appends the line `write` writes (and a newline), first rotating the
    /// file if the line would take it over its size. On an error the line
    /// is not kept.
    pub fn line(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
        let start = self.buffer.len();
        write(&mut self.buffer);
        self.buffer.push(b'\n');
        let len = (self.buffer.len() - start) as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            // The lines before this one finish the current file.
            let done = self.file.write_all(&self.buffer[..start]).and_then(|()| self.rotate());
            if let Err(e) = done {
                self.buffer.truncate(start);
                return Err(e);
            }
            self.buffer.drain(..start);
        }
        self.size += len;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        let written = self.file.write_all(&self.buffer);
        // Written or not, the buffer's lines are counted by the caller.
        self.buffer.clear();
        written
    }

    /// Moves the file aside; the lines written after go to a new one.
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |i: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for i in (1..self.keep).rev() {
                let from = numbered(i);
                if from.exists() {
                    std::fs::rename(&from, numbered(i + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_count() {
        let dir = std::env::temp_dir().join(format!("quiver-paylog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("events.jsonl");
        let mut r = Rotating::open(FileSettings {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
        })
        .unwrap();
        for _ in 0..12 {
            r.line(|b| b.extend_from_slice(&[b'x'; 38])).unwrap();
        }
        r.flush().unwrap();
        let len = |p: &str| std::fs::metadata(dir.join(p)).map(|m| m.len()).ok();
        // Two lines a file: 12 lines made six files, of which three are kept.
        assert_eq!(len("events.jsonl"), Some(78));
        assert_eq!(len("events.jsonl.1"), Some(78));
        assert_eq!(len("events.jsonl.2"), Some(78));
        assert_eq!(len("events.jsonl.3"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
