//! Where the scanner reads from: files and directories (text line by line;
//! Parquet and Arrow IPC decoded value by value), Kafka topics from offset 0
//! (keys, payloads and headers, committed or not: what a stolen broker disk
//! holds), and HTTP endpoints (metrics, exports).

use crate::ScanError;
use crate::detect::{Finding, Needles, scan_patterns};
use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::Bytes;
use hushmap_service::consumer::{GiveUp, ReadToEndError, read_to_end};
use hushmap_service::kafka::KafkaSecurity;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::Offset;
use rdkafka::message::{Headers, Message};
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;
use std::time::Duration;

/// Runs every detector and collects findings, with totals of what was read.
#[derive(Debug, Default)]
pub struct Scanner {
    needles: Needles,
    findings: Vec<Finding>,
    /// Bytes looked at, per source (the report shows the scan was real).
    pub scanned: Vec<(String, u64)>,
}

impl Scanner {
    pub fn new(needles: Needles) -> Scanner {
        Scanner {
            needles,
            ..Scanner::default()
        }
    }

    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    pub fn into_findings(self) -> Vec<Finding> {
        self.findings
    }

    /// Scans one chunk; `location` is only built when something is found.
    pub fn scan_bytes(&mut self, bytes: &[u8], location: impl Fn() -> String) {
        let mut hits = Vec::new();
        scan_patterns(bytes, |kind, rule, m| hits.push((kind, rule, hint(m))));
        self.needles
            .scan(bytes, |kind, rule, m| hits.push((kind, rule, hint(m))));
        for (kind, rule, hint) in hits {
            self.findings.push(Finding {
                kind,
                location: location(),
                rule,
                hint,
            });
        }
    }

    fn account(&mut self, source: String, bytes: u64) {
        self.scanned.push((source, bytes));
    }

    /// A file, or every file under a directory.
    pub fn scan_path(&mut self, path: &Path) -> Result<(), ScanError> {
        let io = |e: std::io::Error| ScanError::Io {
            path: path.display().to_string(),
            source: e,
        };
        if path.is_dir() {
            for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
                let entry = entry.map_err(|e| ScanError::Io {
                    path: path.display().to_string(),
                    source: e.into(),
                })?;
                if entry.file_type().is_file() {
                    self.scan_file(entry.path())?;
                }
            }
            Ok(())
        } else {
            std::fs::metadata(path).map_err(io)?;
            self.scan_file(path)
        }
    }

    fn scan_file(&mut self, path: &Path) -> Result<(), ScanError> {
        let name = path.display().to_string();
        let io = |e: std::io::Error| ScanError::Io {
            path: name.clone(),
            source: e,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut magic = [0u8; 6];
        let n = file.read(&mut magic).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        // One open: peek at the magic, then read from the start again.
        file.rewind().map_err(io)?;
        if n >= 4 && &magic[..4] == b"PAR1" || n == 6 && &magic == b"ARROW1" {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(io)?;
            self.scan_columnar(&name, Bytes::from(bytes))?;
        } else {
            self.scan_lines(&name, BufReader::new(file)).map_err(io)?;
        }
        self.account(name, size);
        Ok(())
    }

    /// Text (or any bytes) line by line, locations as `name:line`.
    pub fn scan_lines(&mut self, name: &str, mut reader: impl BufRead) -> std::io::Result<()> {
        let mut line = Vec::new();
        let mut number = 0usize;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            number += 1;
            self.scan_bytes(&line, || format!("{name}:{number}"));
        }
    }

    /// Parquet or Arrow IPC (file or stream): every schema metadata entry
    /// and every value as `column=value`, so a column named `lat` is caught
    /// like a JSON key would be. The raw bytes are scanned too.
    pub fn scan_columnar(&mut self, name: &str, bytes: Bytes) -> Result<(), ScanError> {
        self.scan_bytes(&bytes, || format!("{name} (raw bytes)"));
        let decode = |e: String| ScanError::Decode {
            source_name: name.to_string(),
            reason: e,
        };
        let batches: Vec<RecordBatch> = if bytes.starts_with(b"PAR1") {
            ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .and_then(|b| b.build())
                .map_err(|e| decode(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| decode(e.to_string()))?
        } else if bytes.starts_with(b"ARROW1") {
            arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes.clone()), None)
                .map_err(|e| decode(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| decode(e.to_string()))?
        } else {
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.clone()), None)
                .map_err(|e| decode(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| decode(e.to_string()))?
        };
        self.scan_batches(name, &batches);
        Ok(())
    }

    fn scan_batches(&mut self, name: &str, batches: &[RecordBatch]) {
        let options = FormatOptions::default().with_null("");
        let mut offset = 0usize;
        for (i, batch) in batches.iter().enumerate() {
            let schema = batch.schema();
            if i == 0 {
                for (k, v) in schema.metadata() {
                    let text = format!("{k}={v}");
                    self.scan_bytes(text.as_bytes(), || format!("{name} metadata {k}"));
                }
            }
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                let Ok(formatter) = ArrayFormatter::try_new(column.as_ref(), &options) else {
                    continue;
                };
                for row in 0..batch.num_rows() {
                    let text = format!("{}={}", field.name(), formatter.value(row));
                    self.scan_bytes(text.as_bytes(), || {
                        format!("{name} column {} row {}", field.name(), offset + row)
                    });
                }
            }
            offset += batch.num_rows();
        }
    }

    /// Every record of `topic` from offset 0 to its end, uncommitted ones
    /// included; keys, payloads and header values.
    /// `security` as the services' `kafka.security` (SASL_SSL for a
    /// secured cluster).
    pub fn scan_topic(
        &mut self,
        brokers: &str,
        security: &KafkaSecurity,
        topic: &str,
    ) -> Result<(), ScanError> {
        let kafka = |reason: String| ScanError::Kafka {
            topic: topic.to_string(),
            reason,
        };
        let mut client = security
            .client_config(brokers)
            .map_err(|e| kafka(e.to_string()))?;
        // Uncommitted too: an aborted transaction's records are on disk.
        client
            .set("group.id", "hushmap-leakscan")
            .set("isolation.level", "read_uncommitted");
        let mut bytes = 0u64;
        read_to_end(
            &client,
            topic,
            |_| Offset::Beginning,
            // As before this reader was shared: give up after 30 s without
            // a record, however long the whole topic takes.
            GiveUp::WhenIdleFor(Duration::from_secs(30)),
            |m| {
                let at = || format!("{topic}/{}@{}", m.partition(), m.offset());
                for part in [m.key(), m.payload()].into_iter().flatten() {
                    bytes += part.len() as u64;
                    self.scan_bytes(part, at);
                }
                if let Some(headers) = m.headers() {
                    for h in headers.iter() {
                        self.scan_bytes(h.key.as_bytes(), at);
                        if let Some(v) = h.value {
                            self.scan_bytes(v, at);
                        }
                    }
                }
            },
        )
        .map_err(|e| match e {
            ReadToEndError::NoPartitions(_) => kafka("no such topic".into()),
            other => kafka(other.to_string()),
        })?;
        self.account(format!("kafka:{topic}"), bytes);
        Ok(())
    }

    /// The body of `GET url` (with a bearer token if given): Arrow and
    /// Parquet bodies are decoded, anything else is scanned line by line.
    pub async fn scan_url(&mut self, url: &str, token: Option<&str>) -> Result<(), ScanError> {
        let http = |e: reqwest::Error| ScanError::Http {
            url: url.to_string(),
            reason: e.without_url().to_string(),
        };
        let mut request = reqwest::Client::new().get(url);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.map_err(http)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ScanError::Http {
                url: url.to_string(),
                reason: format!("status {status}"),
            });
        }
        let arrow_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("arrow"));
        let body = response.bytes().await.map_err(http)?;
        let len = body.len() as u64;
        if arrow_type || body.starts_with(b"PAR1") || body.starts_with(b"ARROW1") {
            self.scan_columnar(url, body)?;
        } else {
            self.scan_lines(url, &body[..])
                .expect("reading from memory cannot fail");
        }
        self.account(url.to_string(), len);
        Ok(())
    }
}

fn hint(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let head: String = text.chars().take(2).collect();
    format!("{head}… ({} bytes)", bytes.len())
}
