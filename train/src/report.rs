//! Progress artefacts of a training run: a JSON-lines metrics log and atomic file writes
//! (so a crash never leaves a half-written checkpoint or chart; the chart is `chart.rs`).

use crate::{Error, Result};
use serde_json::Value;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Appends one JSON object per line to `path` (creating it); each call flushes.
///
/// Each record goes to the file in a single unbuffered write, so a crash loses at most
/// the record being written and `tail -f` shows progress live.
pub struct MetricsLog {
    file: File,
}

impl MetricsLog {
    /// Opens `path` for appending (an existing log is continued, not truncated).
    pub fn open(path: &Path) -> io::Result<MetricsLog> {
        Ok(MetricsLog { file: OpenOptions::new().create(true).append(true).open(path)? })
    }

    /// Appends `record` (which must be a JSON object) as one line.
    pub fn write(&mut self, record: &Value) -> io::Result<()> {
        if !record.is_object() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "MetricsLog::write: a record must be a JSON object",
            ));
        }
        // Compact serialisation never contains a newline, so one record is one line.
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }
}

/// Read back the records of a metrics file (skipping blank lines; a malformed line is
/// an error naming the file and line number, as `path:line: reason`).
pub fn read_metrics(path: &Path) -> Result<Vec<Value>> {
    let text = fs::read_to_string(path).map_err(Error::io(path.display()))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(Error::json(format!("{}:{}", path.display(), i + 1)))?;
        records.push(record);
    }
    Ok(records)
}

/// Write `contents` to `path` atomically: write a temp file in the same directory, fsync,
/// rename. Readers see either the old file or the new one, never a partial write; the
/// rename is atomic only within one file system, hence the same directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    // Distinguishes temp files of concurrent writers in this process (the pid covers others).
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        let msg = format!("write_atomic: {} does not name a file", path.display());
        return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?; // the data is on disk before the name points at it
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp); // best effort: do not leave the temp file behind
    }
    result?;
    // Persist the rename itself (the directory entry). Best effort: not every platform
    // lets a directory be opened and synced, and the new file is already in place.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    /// A fresh directory per test (tests run in parallel).
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mamba-train-report-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn metrics_round_trip_and_append() {
        let dir = scratch("metrics");
        let path = dir.join("metrics.jsonl");
        let records = [json!({"step": 1, "loss": 2.5}), json!({"step": 2, "loss": 2.25, "note": "a\nb"})];
        let mut log = MetricsLog::open(&path).unwrap();
        for r in &records {
            log.write(r).unwrap();
        }
        assert!(log.write(&json!([1, 2])).is_err(), "only objects are records");
        drop(log);
        // Reopening continues the file; blank lines are skipped on reading.
        fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"\n  \n").unwrap();
        MetricsLog::open(&path).unwrap().write(&json!({"step": 3})).unwrap();
        let back = read_metrics(&path).unwrap();
        assert_eq!(back, vec![records[0].clone(), records[1].clone(), json!({"step": 3})]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_metrics_name_file_and_line() {
        let dir = scratch("malformed");
        let path = dir.join("m.jsonl");
        fs::write(&path, "{\"step\": 1}\n\n{\"step\": 2,\n").unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.contains("m.jsonl:3:"), "{err}");
        let err = read_metrics(&dir.join("missing.jsonl")).unwrap_err().to_string();
        assert!(err.contains("missing.jsonl"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = scratch("atomic");
        let path = dir.join("model.safetensors");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![OsString::from("model.safetensors")]);
        // No file name, or a directory that does not exist: errors, not panics.
        assert!(write_atomic(Path::new("/"), b"x").is_err());
        assert!(write_atomic(&dir.join("no/such/dir/f"), b"x").is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
