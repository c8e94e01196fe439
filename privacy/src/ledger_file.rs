//! [`LedgerFile`]: a ledger kept in a file, for runs that do not publish to
//! the releases topic (batch mode).
//!
//! One JSON [`LedgerEntry`] per line, appended and synced to disk *before*
//! the release it authorises is noised: a crash between the two leaves
//! budget spent and nothing published (safe), never the reverse. The file
//! is locked for the whole run, so two runs cannot both spend the same
//! budget. A line that cannot be read stops the run: a ledger that
//! silently skipped an entry would undercount.

use crate::ledger::LedgerEntry;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LedgerFileError {
    #[error("ledger {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ledger {path} is in use by another run")]
    Locked { path: PathBuf },
    #[error("ledger {path}, line {line}: not a ledger entry ({reason}); refusing to undercount")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// An open, locked ledger file.
#[derive(Debug)]
pub struct LedgerFile {
    path: PathBuf,
    file: File,
}

impl LedgerFile {
    /// Opens (creating if absent) and locks `path`, and reads its entries.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("ledger-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # let path = dir.join("ledger.ndjson");
    /// use hushmap_privacy::LedgerFile;
    /// let (ledger, entries) = LedgerFile::open(&path).unwrap();
    /// assert!(entries.is_empty());
    /// // A second run cannot open it while this one holds it.
    /// assert!(LedgerFile::open(&path).is_err());
    /// drop(ledger);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn open(path: &Path) -> Result<(LedgerFile, Vec<LedgerEntry>), LedgerFileError> {
        let io = |source| LedgerFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerFileError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut entries = Vec::new();
        let mut reader = BufReader::new(&file);
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let entry = serde_json::from_str(&line).map_err(|e| LedgerFileError::Corrupt {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })?;
            entries.push(entry);
        }
        Ok((
            LedgerFile {
                path: path.to_path_buf(),
                file,
            },
            entries,
        ))
    }

    /// Appends `entry` and waits until it is on disk.
    pub fn append(&mut self, entry: &LedgerEntry) -> Result<(), LedgerFileError> {
        let io = |source| LedgerFileError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(entry).expect("a ledger entry always serialises");
        line.push(b'\n');
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::ReleaseCost;
    use hushmap_schema::{Window, WindowLength};
    use std::collections::BTreeSet;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hushmap-ledger-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("ledger.ndjson")
    }

    fn entry(day: i64) -> LedgerEntry {
        let window = Window::from_start(day * 86_400_000, WindowLength::ONE_DAY).unwrap();
        LedgerEntry {
            id: LedgerEntry::id_of(&window),
            window,
            cost: ReleaseCost::pure(0.5, 0.0, Vec::new()),
            parts: BTreeSet::from([0]),
            of: 1,
            final_pending: false,
        }
    }

    #[test]
    fn entries_survive_a_reopen_in_order() {
        let path = temp("reopen");
        {
            let (mut f, entries) = LedgerFile::open(&path).unwrap();
            assert!(entries.is_empty());
            f.append(&entry(1)).unwrap();
            f.append(&entry(2)).unwrap();
        }
        let (_f, entries) = LedgerFile::open(&path).unwrap();
        assert_eq!(entries, vec![entry(1), entry(2)]);
    }

    #[test]
    fn a_damaged_line_stops_the_run() {
        let path = temp("corrupt");
        std::fs::write(
            &path,
            format!(
                "{}\n{{\"id\": \"w\n",
                serde_json::to_string(&entry(1)).unwrap()
            ),
        )
        .unwrap();
        match LedgerFile::open(&path) {
            Err(LedgerFileError::Corrupt { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
