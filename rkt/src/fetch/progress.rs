//! A one-line download progress display, shown only when stderr is a
//! terminal (quiet in scripts and tests).

use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use crate::commands::format::human_size;

const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// Wraps a download stream, redrawing `label: done / total` as it is read.
pub struct ProgressReader<R> {
    inner: R,
    label: String,
    total: Option<u64>,
    done: u64,
    last_drawn: Option<Instant>,
    enabled: bool,
}

impl<R: Read> ProgressReader<R> {
    pub fn new(inner: R, label: &str, total: Option<u64>) -> Self {
        ProgressReader {
            inner,
            label: label.to_string(),
            total,
            done: 0,
            last_drawn: None,
            enabled: io::stderr().is_terminal(),
        }
    }

    fn draw(&mut self, finished: bool) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if !finished && self.last_drawn.is_some_and(|t| now - t < REDRAW_EVERY) {
            return;
        }
        self.last_drawn = Some(now);
        let amount = match self.total {
            Some(total) => format!("{} / {}", human_size(self.done), human_size(total)),
            None => human_size(self.done),
        };
        let mut stderr = io::stderr();
        let _ = write!(stderr, "\r\x1b[KDownloading {}: {amount}", self.label);
        if finished {
            let _ = writeln!(stderr);
        }
        let _ = stderr.flush();
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.draw(n == 0);
        Ok(n)
    }
}
