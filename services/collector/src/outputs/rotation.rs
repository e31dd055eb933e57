//! gnmic's file `rotation`: the file output's destination, cut into files of at most
//! `max-size`, with old files pruned by count and age and optionally gzipped.
//!
//! gnmic delegates this to lumberjack; gnomon keeps its file names and rules so tooling that
//! collects `out-2026-11-29T10-00-00.000.json` files keeps working: the current file is
//! renamed to `<stem>-<UTC time, ms><ext>` and a fresh one opened. Two differences, both to
//! lose nothing: rotation happens only between writes of whole responses (a JSON line is never
//! split across files), and a single write larger than `max-size` goes into a file of its own
//! instead of failing. Pruning and compression run on a separate thread (the "mill"), so a
//! 100 MB gzip never stalls the writer; the writer only renames.

use gnomon_config::FileRotation;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Buffer between the writer and the file: large writes, few syscalls.
const BUFFER: usize = 64 * 1024;

/// A file the output appends whole chunks to, rotated as configured.
pub(super) struct RotatingFile {
    path: PathBuf,
    rotation: FileRotation,
    out: BufWriter<File>,
    /// Bytes in the current file, including what the buffer still holds.
    size: u64,
    mill: Option<Mill>,
    rotations: metrics::Counter,
}

impl RotatingFile {
    /// Opens (appending to) `path` and starts the mill, which prunes right away.
    pub(super) fn open(output: &str, path: &Path, rotation: FileRotation) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        let mill = Mill::start(output, path.to_path_buf(), rotation.clone())?;
        Ok(Self {
            path: path.to_path_buf(),
            rotation,
            out: BufWriter::with_capacity(BUFFER, file),
            size,
            mill: Some(mill),
            rotations: metrics::counter!("gnomon_output_file_rotations_total", "output" => output.to_string()),
        })
    }

    /// Appends `chunk` whole, rotating first when it would take the file past `max-size`.
    pub(super) fn write_chunk(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let len = chunk.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.rotation.max_size {
            self.rotate()?;
        }
        self.out.write_all(chunk)?;
        self.size += len;
        Ok(())
    }

    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Renames the current file to its backup name and opens a fresh one.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let backup = unused_backup_name(&self.path, SystemTime::now());
        std::fs::rename(&self.path, &backup)?;
        let file = open_append(&self.path)?;
        // The old file's handle is closed here, after the rename: no write is lost.
        self.out = BufWriter::with_capacity(BUFFER, file);
        self.size = 0;
        self.rotations.increment(1);
        if let Some(mill) = &self.mill {
            mill.wake();
        }
        Ok(())
    }

    /// Flushes and waits for the mill to finish what it started (a gzip is never cut short).
    pub(super) fn close(mut self) -> std::io::Result<()> {
        let flushed = self.out.flush();
        if let Some(mill) = self.mill.take() {
            mill.stop();
        }
        flushed
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// `dir/out.json` → (`out`, `.json`): backups are `out-<time>.json[.gz]`.
fn stem_and_ext(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (stem, ext)
}

/// lumberjack's time layout: `2006-01-02T15-04-05.000`, in UTC.
fn format_time(at: SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_millis(at).to_string();
    rfc3339.trim_end_matches('Z').replace(':', "-")
}

fn parse_time(text: &str) -> Option<SystemTime> {
    // `2026-11-29T10-00-00.000`: the date keeps its dashes, the time's become colons again.
    let (date, time) = text.split_once('T')?;
    if date.len() != 10 || time.len() != 12 {
        return None;
    }
    humantime::parse_rfc3339(&format!("{date}T{}Z", time.replacen('-', ":", 2))).ok()
}

fn backup_name(path: &Path, at: SystemTime) -> PathBuf {
    let (stem, ext) = stem_and_ext(path);
    path.with_file_name(format!("{stem}-{}{ext}", format_time(at)))
}

/// Two rotations within one millisecond (or a backup restored by hand) never overwrite one
/// another: the time moves on by a millisecond until the name is free.
fn unused_backup_name(path: &Path, now: SystemTime) -> PathBuf {
    let mut at = now;
    loop {
        let candidate = backup_name(path, at);
        let gz = gz_name(&candidate);
        if !candidate.exists() && !gz.exists() {
            return candidate;
        }
        at += Duration::from_millis(1);
    }
}

fn gz_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".gz");
    PathBuf::from(name)
}

/// One rotated file found next to the current one.
#[derive(Debug)]
struct Backup {
    path: PathBuf,
    at: SystemTime,
    compressed: bool,
}

/// The rotated files of `path`, newest first.
fn backups(path: &Path) -> std::io::Result<Vec<Backup>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (stem, ext) = stem_and_ext(path);
    let prefix = format!("{stem}-");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (name_plain, compressed) = match name.strip_suffix(".gz") {
            Some(plain) => (plain, true),
            None => (name.as_str(), false),
        };
        let Some(time) = name_plain
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(ext.as_str()))
        else {
            continue;
        };
        if let Some(at) = parse_time(time) {
            found.push(Backup {
                path: entry.path(),
                at,
                compressed,
            });
        }
    }
    found.sort_by_key(|b| std::cmp::Reverse(b.at));
    Ok(found)
}

/// Removes what `max-backups` and `max-age` exclude, then gzips the rest when asked.
fn prune_and_compress(path: &Path, rotation: &FileRotation, now: SystemTime) -> Vec<String> {
    let mut problems = Vec::new();
    let found = match backups(path) {
        Ok(found) => found,
        Err(error) => {
            return vec![format!(
                "cannot list the rotated files of {path:?}: {error}"
            )]
        }
    };
    let cutoff = rotation.max_age.and_then(|age| now.checked_sub(age));
    let mut kept = Vec::new();
    for (index, backup) in found.into_iter().enumerate() {
        let too_many = rotation.max_backups > 0 && index >= rotation.max_backups;
        let too_old = cutoff.is_some_and(|cutoff| backup.at < cutoff);
        if too_many || too_old {
            if let Err(error) = std::fs::remove_file(&backup.path) {
                problems.push(format!("cannot remove {:?}: {error}", backup.path));
            }
        } else {
            kept.push(backup);
        }
    }
    if rotation.compress {
        for backup in kept.iter().filter(|b| !b.compressed) {
            if let Err(error) = compress(&backup.path) {
                problems.push(format!("cannot compress {:?}: {error}", backup.path));
            }
        }
    }
    problems
}

/// `file` → `file.gz`, then `file` is removed; a failed attempt leaves `file` as it was.
fn compress(file: &Path) -> std::io::Result<()> {
    let target = gz_name(file);
    let result = (|| {
        let mut source = File::open(file)?;
        let sink = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)?;
        let mut encoder = flate2::write::GzEncoder::new(sink, flate2::Compression::default());
        std::io::copy(&mut source, &mut encoder)?;
        encoder.finish()?.sync_all()
    })();
    match result {
        Ok(()) => std::fs::remove_file(file),
        Err(error) => {
            // Keep the uncompressed file; a half-written .gz must not be taken for a backup.
            let _ = std::fs::remove_file(&target);
            Err(error)
        }
    }
}

/// The thread that prunes and compresses after each rotation.
struct Mill {
    wake: SyncSender<()>,
    thread: JoinHandle<()>,
}

impl Mill {
    fn start(output: &str, path: PathBuf, rotation: FileRotation) -> std::io::Result<Self> {
        // One pending wake-up is enough: a run sees every file rotated before it starts.
        let (wake, woken) = sync_channel::<()>(1);
        let output = output.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("file-mill-{output}"))
            .spawn(move || {
                let run = || {
                    for problem in prune_and_compress(&path, &rotation, SystemTime::now()) {
                        tracing::warn!(output = %gnomon_common::log::escape(&output), %problem, "file output rotation");
                    }
                };
                run();
                while woken.recv().is_ok() {
                    run();
                }
            })?;
        Ok(Self { wake, thread })
    }

    fn wake(&self) {
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }

    fn stop(self) {
        drop(self.wake);
        if self.thread.join().is_err() {
            tracing::warn!("the file output's rotation thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn rotation(max_size: u64, max_backups: usize, compress: bool) -> FileRotation {
        FileRotation {
            max_size,
            max_age: None,
            max_backups,
            compress,
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn backup_names_follow_lumberjack_and_parse_back() {
        let at = humantime::parse_rfc3339("2026-11-29T10:04:05.123Z").unwrap();
        let name = backup_name(Path::new("/var/log/out.json"), at);
        assert_eq!(name, Path::new("/var/log/out-2026-11-29T10-04-05.123.json"));
        assert_eq!(parse_time("2026-11-29T10-04-05.123"), Some(at));
        assert_eq!(parse_time("2026-11-29"), None);
        assert_eq!(parse_time("notatime-at-all.000"), None);
    }

    #[test]
    fn rotates_between_whole_chunks_and_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut file = RotatingFile::open("t", &path, rotation(100, 0, false)).unwrap();
        for i in 0..10 {
            // 40-byte lines: two fit in 100 bytes, the third rotates.
            file.write_chunk(
                format!("{{\"line\":{i:03},\"pad\":\"xxxxxxxxxxxxxxxx\"}}\n").as_bytes(),
            )
            .unwrap();
        }
        file.close().unwrap();
        let names = files(dir.path());
        assert_eq!(names.len(), 5, "{names:?}");
        let mut lines = Vec::new();
        for name in &names {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.len() <= 100, "{name} has {} bytes", text.len());
            assert!(text.ends_with('\n'), "{name} ends mid-line");
            lines.extend(text.lines().map(str::to_string));
        }
        lines.sort();
        assert_eq!(lines.len(), 10);
        assert!(lines[0].contains("\"line\":000") && lines[9].contains("\"line\":009"));
    }

    #[test]
    fn an_oversized_chunk_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut file = RotatingFile::open("t", &path, rotation(10, 0, false)).unwrap();
        file.write_chunk(b"small\n").unwrap();
        file.write_chunk(b"a line longer than ten bytes\n").unwrap();
        file.close().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "a line longer than ten bytes\n"
        );
        assert_eq!(files(dir.path()).len(), 2);
    }

    #[test]
    fn an_existing_file_counts_towards_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        std::fs::write(&path, vec![b'x'; 90]).unwrap();
        let mut file = RotatingFile::open("t", &path, rotation(100, 0, false)).unwrap();
        file.write_chunk(&[b'y'; 20]).unwrap();
        file.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'y'; 20]);
    }

    #[test]
    fn prunes_to_max_backups_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let base = humantime::parse_rfc3339("2026-11-29T10:00:00Z").unwrap();
        for minutes in 0..5 {
            let at = base + Duration::from_secs(60 * minutes);
            std::fs::write(backup_name(&path, at), "x\n").unwrap();
        }
        std::fs::write(dir.path().join("unrelated.json"), "keep\n").unwrap();
        std::fs::write(dir.path().join("out-notatime.json"), "keep\n").unwrap();
        let problems = prune_and_compress(&path, &rotation(100, 2, false), SystemTime::now());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            files(dir.path()),
            [
                "out-2026-11-29T10-03-00.000.json",
                "out-2026-11-29T10-04-00.000.json",
                "out-notatime.json",
                "unrelated.json"
            ]
        );
    }

    #[test]
    fn prunes_by_age_and_compresses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let now = humantime::parse_rfc3339("2026-11-29T10:00:00Z").unwrap();
        let day = Duration::from_secs(24 * 3600);
        std::fs::write(backup_name(&path, now - day * 3), "old\n").unwrap();
        std::fs::write(backup_name(&path, now - day / 2), "recent\n").unwrap();
        let mut settings = rotation(100, 0, true);
        settings.max_age = Some(day);
        let problems = prune_and_compress(&path, &settings, now);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(files(dir.path()), ["out-2026-11-28T22-00-00.000.json.gz"]);
        let mut text = String::new();
        flate2::read::GzDecoder::new(
            File::open(dir.path().join("out-2026-11-28T22-00-00.000.json.gz")).unwrap(),
        )
        .read_to_string(&mut text)
        .unwrap();
        assert_eq!(text, "recent\n");
        // A compressed backup counts as a backup: a second run changes nothing.
        assert!(prune_and_compress(&path, &settings, now).is_empty());
        assert_eq!(files(dir.path()).len(), 1);
    }

    #[test]
    fn the_mill_compresses_after_a_rotation_and_close_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let mut file = RotatingFile::open("t", &path, rotation(8, 1, true)).unwrap();
        for line in ["first\n", "second\n", "third\n"] {
            file.write_chunk(line.as_bytes()).unwrap();
        }
        file.close().unwrap();
        let names = files(dir.path());
        // Current file plus one compressed backup (max-backups 1); nothing uncompressed left.
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().any(|n| n == "out.log"));
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("out-") && n.ends_with(".log.gz")),
            "{names:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "third\n");
    }

    #[test]
    fn backup_names_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let at = humantime::parse_rfc3339("2026-11-29T10:00:00Z").unwrap();
        std::fs::write(backup_name(&path, at), "taken\n").unwrap();
        std::fs::write(
            gz_name(&backup_name(&path, at + Duration::from_millis(1))),
            "taken\n",
        )
        .unwrap();
        assert_eq!(
            unused_backup_name(&path, at),
            dir.path().join("out-2026-11-29T10-00-00.002.json")
        );
    }
}
