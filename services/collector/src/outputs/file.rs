//! gnmic's `file` output: events as JSON lines, to a file (appended) or stdout / stderr.
//! Writing is blocking I/O, so the worker is a plain thread. gnmic's `rotation` is in
//! [`super::rotation`].

use super::rotation::RotatingFile;
use super::{dropped_counter, Collected, OutputError, OutputItem, OutputSender};
use gnomon_config::{FileDestination, FileOutputConfig};
use gnomon_gnmi::event::response_to_events;
use gnomon_processors::{LiveChain, Record};
use std::io::{BufWriter, Write};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A file output waits this long for queue space before dropping.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the lines go: a stream (stdout, stderr, a file appended forever) or a rotated file.
enum Sink {
    Stream(BufWriter<Box<dyn Write + Send>>),
    File(RotatingFile),
}

impl Sink {
    fn open(output: &str, config: &FileOutputConfig) -> std::io::Result<Self> {
        let stream = |s: Box<dyn Write + Send>| Sink::Stream(BufWriter::with_capacity(BUFFER, s));
        Ok(match &config.destination {
            FileDestination::Stdout => stream(Box::new(std::io::stdout())),
            FileDestination::Stderr => stream(Box::new(std::io::stderr())),
            FileDestination::Path(path) => match &config.rotation {
                Some(rotation) => Sink::File(RotatingFile::open(output, path, rotation.clone())?),
                None => {
                    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                        std::fs::create_dir_all(parent)?;
                    }
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?;
                    stream(Box::new(file))
                }
            },
        })
    }

    /// Writes the lines of one response; a rotated file is cut only between such chunks.
    fn write_chunk(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stream(out) => out.write_all(chunk),
            Sink::File(file) => file.write_chunk(chunk),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stream(out) => out.flush(),
            Sink::File(file) => file.flush(),
        }
    }

    fn close(self) -> std::io::Result<()> {
        match self {
            Sink::Stream(mut out) => out.flush(),
            Sink::File(file) => file.close(),
        }
    }
}

/// Write buffer per destination: large writes, few syscalls.
const BUFFER: usize = 64 * 1024;

/// Opens the destination (failing now if it cannot) and starts the writer thread.
pub fn start(
    name: &str,
    config: &FileOutputConfig,
    chain: Option<LiveChain>,
    stop: CancellationToken,
) -> Result<(OutputSender, JoinHandle<()>), OutputError> {
    let sink = Sink::open(name, config).map_err(|e| OutputError {
        output: name.to_string(),
        reason: format!("cannot open {:?}: {e}", config.destination),
    })?;
    let (sender, receiver) = mpsc::channel(config.buffer_size.max(1));
    let writer = FileWriter {
        output: name.to_string(),
        split_events: config.split_events,
        chain,
        sink,
        line: Vec::with_capacity(4096),
        write_errors: dropped_counter(name, "write_error"),
        written: metrics::counter!("gnomon_output_messages_total", "output" => name.to_string()),
    };
    let handle = tokio::task::spawn_blocking(move || writer.run(receiver, stop));
    Ok((
        OutputSender::new(name, vec![sender], false, WRITE_TIMEOUT),
        handle,
    ))
}

struct FileWriter {
    output: String,
    split_events: bool,
    /// The output's event processors (only the writer thread runs them; the mutex lets a
    /// SIGHUP swap them).
    chain: Option<LiveChain>,
    sink: Sink,
    /// The lines of the response being written, reused.
    line: Vec<u8>,
    write_errors: metrics::Counter,
    written: metrics::Counter,
}

impl FileWriter {
    fn run(mut self, mut receiver: mpsc::Receiver<OutputItem>, stop: CancellationToken) {
        loop {
            let item = match receiver.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    self.flush();
                    if stop.is_cancelled() {
                        None
                    } else {
                        // Wake up now and then to notice a stop while senders are still alive.
                        match tokio::runtime::Handle::current().block_on(async {
                            tokio::time::timeout(Duration::from_millis(200), receiver.recv()).await
                        }) {
                            Ok(Some(item)) => Some(item),
                            Ok(None) => None,
                            Err(_) => continue,
                        }
                    }
                }
            };
            match item {
                None => break,
                Some(OutputItem::Response(collected)) => self.write(&collected),
                // Never queued here: the file output does not carry target status.
                Some(OutputItem::TargetUp(_)) => {}
            }
        }
        if let Err(error) = self.sink.close() {
            tracing::warn!(output = %self.output, %error, "file output close failed");
        }
    }

    fn flush(&mut self) {
        if let Err(error) = self.sink.flush() {
            tracing::warn!(output = %self.output, %error, "file output flush failed");
        }
    }

    fn write(&mut self, item: &Collected) {
        let Some(response) = item.response.decoded() else {
            return;
        };
        let events = response_to_events(response, &item.stream.meta);
        if events.is_empty() {
            return;
        }
        let result = match &mut self.chain {
            None => self.write_events(&events),
            Some(chain) => {
                let mut records: Vec<Record> = events.into_iter().map(Record::from).collect();
                chain
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply_records(&mut records);
                if records.is_empty() {
                    return;
                }
                self.write_events(&records)
            }
        };
        match result {
            Ok(()) => self.written.increment(1),
            Err(error) => {
                self.write_errors.increment(1);
                tracing::warn!(output = %self.output, %error, "file output write failed");
            }
        }
    }

    /// Writes gnmic events or records: one JSON line each, or one array line.
    fn write_events<T: serde::Serialize>(&mut self, events: &[T]) -> std::io::Result<()> {
        self.line.clear();
        if self.split_events {
            for event in events {
                serde_json::to_writer(&mut self.line, event).map_err(std::io::Error::other)?;
                self.line.push(b'\n');
            }
        } else {
            serde_json::to_writer(&mut self.line, &events).map_err(std::io::Error::other)?;
            self.line.push(b'\n');
        }
        self.sink.write_chunk(&self.line)
    }
}
