//! gnmic's `file` output: events as JSON lines, to a file (appended) or stdout / stderr.
//! Writing is blocking I/O, so the worker is a plain thread.

use super::{dropped_counter, Collected, OutputError, OutputItem, OutputSender};
use gnomon_config::{FileDestination, FileOutputConfig};
use gnomon_gnmi::event::response_to_events;
use gnomon_processors::{Chain, Record};
use std::io::{BufWriter, Write};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A file output waits this long for queue space before dropping.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

fn open(destination: &FileDestination) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match destination {
        FileDestination::Stdout => Box::new(std::io::stdout()),
        FileDestination::Stderr => Box::new(std::io::stderr()),
        FileDestination::Path(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        }
    })
}

/// Opens the destination (failing now if it cannot) and starts the writer thread.
pub fn start(
    name: &str,
    config: &FileOutputConfig,
    chain: Chain,
    stop: CancellationToken,
) -> Result<(OutputSender, JoinHandle<()>), OutputError> {
    let sink = open(&config.destination).map_err(|e| OutputError {
        output: name.to_string(),
        reason: format!("cannot open {:?}: {e}", config.destination),
    })?;
    let (sender, receiver) = mpsc::channel(config.buffer_size.max(1));
    let writer = FileWriter {
        output: name.to_string(),
        split_events: config.split_events,
        chain: (!chain.is_empty()).then_some(chain),
        sink: BufWriter::with_capacity(64 * 1024, sink),
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
    /// The output's event processors (the writer thread owns them).
    chain: Option<Chain>,
    sink: BufWriter<Box<dyn Write + Send>>,
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
        self.flush();
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
                chain.apply_records(&mut records);
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
        if self.split_events {
            events.iter().try_for_each(|event| {
                serde_json::to_writer(&mut self.sink, event).map_err(std::io::Error::other)?;
                self.sink.write_all(b"\n")
            })
        } else {
            serde_json::to_writer(&mut self.sink, &events)
                .map_err(std::io::Error::other)
                .and_then(|()| self.sink.write_all(b"\n"))
        }
    }
}
