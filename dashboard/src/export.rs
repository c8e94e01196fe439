//! Researcher exports over HTTP: `GET /api/v1/export?format=arrow|parquet&from=&to=&level=`.
//!
//! The cells come from the release store through DataFusion a day at a
//! time and are encoded batch by batch into the response body, so a long
//! range costs no more memory than a day. An export takes a place in its
//! token's admission (shared with Flight SQL and plain Flight reads, at
//! most `sql.max_concurrent_per_token` at once: 429 past it); reading the
//! store may take `sql.query_timeout_ms` of the server's time (the
//! client's download time is not counted), and a client that takes no
//! data for [`STALLED_CLIENT`] is dropped, freeing its place.

use crate::problem::problem;
use crate::query::{CellFilter, CellStream, QueryError};
use crate::sql_limits::{budget_of, within_budget};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use serde::Deserialize;

/// How long an export waits for a client that takes no data.
pub const STALLED_CLIENT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Deserialize)]
pub(crate) struct ExportQuery {
    format: Option<String>,
    from: Option<String>,
    to: Option<String>,
    level: Option<u8>,
    estimates: Option<String>,
}

pub(crate) async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> Response {
    let format = match q.format.as_deref() {
        Some("arrow") | None => ExportFormat::Arrow,
        Some("parquet") => ExportFormat::Parquet,
        Some(_) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_value",
                "format must be arrow or parquet",
            );
        }
    };
    let filter = match CellFilter::parse(q.from.as_deref(), q.to.as_deref(), q.level)
        .and_then(|f| f.with_estimates(q.estimates.as_deref()))
    {
        Ok(f) => f,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_value",
                &e.to_string(),
            );
        }
    };
    // An export is a query by another name: a place in the token's
    // admission, held until the body is sent or dropped, and the deadline.
    let limits = &state.sql_limits;
    let admitted = match crate::session::admit(&state, &headers) {
        Ok(admitted) => admitted,
        Err(busy) => return busy.into_response(),
    };
    let (schema, cells) = match state.cells(filter) {
        Ok(cells) => cells,
        Err(e) => return problem(StatusCode::NOT_FOUND, "not_published", &e.to_string()),
    };
    let cells = within_budget(
        cells,
        budget_of(limits),
        Err(QueryError::Deadline(limits.query_timeout_ms)),
        admitted,
    );
    (
        [
            (header::CONTENT_TYPE, format.mime()),
            (header::CONTENT_DISPOSITION, format.disposition()),
        ],
        Body::from_stream(format.encode(schema, cells)),
    )
        .into_response()
}

#[derive(Clone, Copy)]
enum ExportFormat {
    Arrow,
    Parquet,
}

impl ExportFormat {
    fn mime(self) -> &'static str {
        match self {
            ExportFormat::Arrow => "application/vnd.apache.arrow.stream",
            ExportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    fn disposition(self) -> &'static str {
        match self {
            ExportFormat::Arrow => "attachment; filename=\"hushmap-cells.arrows\"",
            ExportFormat::Parquet => "attachment; filename=\"hushmap-cells.parquet\"",
        }
    }

    /// The body, encoded a batch at a time as DataFusion produces them: a
    /// 30-day export never sits whole in memory. An error after the first
    /// bytes can only cut the body short (the status is sent); it is logged
    /// and the client sees a truncated file, which every Arrow and Parquet
    /// reader refuses.
    fn encode(
        self,
        schema: SchemaRef,
        mut cells: CellStream,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        tokio::spawn(async move {
            let mut writer = match ExportWriter::new(self, schema) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "export failed");
                    let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
                    return;
                }
            };
            loop {
                let step = match cells.next().await {
                    Some(Ok(batch)) => writer.write(&batch),
                    Some(Err(e)) => Err(ExportError::from(e)),
                    None => break,
                };
                let chunk = step.map(|()| writer.take());
                match chunk {
                    Ok(bytes) if bytes.is_empty() => {}
                    Ok(bytes) => {
                        // A client that stops reading (an HTTP/2 window
                        // held at zero on a connection kept busy with
                        // other requests) would hold its place for ever.
                        match tokio::time::timeout(STALLED_CLIENT, tx.send(Ok(bytes))).await {
                            Ok(Ok(())) => {}
                            // The client went away, or took nothing for a
                            // minute: the export ends and frees its place.
                            Ok(Err(_)) | Err(_) => return,
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "export failed");
                        let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
                        return;
                    }
                }
            }
            match writer.finish() {
                Ok(rest) => {
                    let _ = tx.send(Ok(rest)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "export failed");
                    let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
    }
}

/// Why an export stopped (logged; the client sees a truncated body).
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("encoding Arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("encoding Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("querying the cells: {0}")]
    Query(#[from] QueryError),
}

/// An Arrow IPC stream or Parquet writer over a buffer that is drained
/// after every batch.
enum ExportWriter {
    Arrow(datafusion::arrow::ipc::writer::StreamWriter<Vec<u8>>),
    Parquet(parquet::arrow::ArrowWriter<Vec<u8>>),
}

impl ExportWriter {
    fn new(format: ExportFormat, schema: SchemaRef) -> Result<ExportWriter, ExportError> {
        Ok(match format {
            ExportFormat::Arrow => ExportWriter::Arrow(
                datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)?,
            ),
            ExportFormat::Parquet => ExportWriter::Parquet(parquet::arrow::ArrowWriter::try_new(
                Vec::new(),
                schema,
                None,
            )?),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
        match self {
            ExportWriter::Arrow(w) => Ok(w.write(batch)?),
            ExportWriter::Parquet(w) => Ok(w.write(batch)?),
        }
    }

    /// The bytes encoded so far. Draining the buffer under the Parquet
    /// writer is safe: it counts offsets itself and only ever appends.
    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(match self {
            ExportWriter::Arrow(w) => w.get_mut(),
            ExportWriter::Parquet(w) => w.inner_mut(),
        }))
    }

    fn finish(self) -> Result<Bytes, ExportError> {
        Ok(match self {
            ExportWriter::Arrow(w) => Bytes::from(w.into_inner()?),
            ExportWriter::Parquet(w) => Bytes::from(w.into_inner()?),
        })
    }
}
