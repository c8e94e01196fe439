//! Flight SQL over the release store: researchers send read-only SQL
//! against the table `releases` (the release schema plus its `day`
//! partition column) and get Arrow back, planned and run by DataFusion.
//!
//! Served on the Flight port beside the plain Flight service
//! ([`ReleaseFlightService`](crate::flight::ReleaseFlightService) hands
//! every Flight SQL command to [`ReleaseSqlService`]). Statements only:
//! no prepared statements, no catalog calls, no writes. Each statement is
//! planned and run in a worker process of its own
//! ([`crate::sql_worker`]), never in the dashboard. The data are noisy
//! aggregates, so any query over them is post-processing and costs no
//! privacy budget.

use crate::auth::{Denied, Role};
use crate::sql_limits::deadline_of;
use crate::state::AppState;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    Any, CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures::StreamExt;
use prost::Message;
use tonic::{Request, Response, Status};

/// The status a failed result stream ends with: the limit's own status if
/// a limit stopped it, else a fixed message (encoding errors are ours).
pub(crate) fn status_of(e: FlightError) -> Status {
    match e {
        FlightError::ExternalError(inner) => match inner.downcast::<Status>() {
            Ok(status) => *status,
            Err(other) => {
                tracing::warn!(error = %other, "a Flight result stream failed");
                Status::internal(
                    "the result could not be sent; the dashboard's log has the details",
                )
            }
        },
        FlightError::Tonic(status) => *status,
        other => {
            tracing::warn!(error = %other, "a Flight result stream failed");
            Status::internal("the result could not be sent; the dashboard's log has the details")
        }
    }
}

/// Prefix of every Flight SQL command's `Any` type URL.
const FLIGHT_SQL_TYPE: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// Whether `bytes` (a descriptor command or a ticket) is a Flight SQL
/// message rather than one of the plain service's export queries.
pub fn is_flight_sql(bytes: &[u8]) -> bool {
    Any::decode(bytes).is_ok_and(|any| any.type_url.starts_with(FLIGHT_SQL_TYPE))
}

/// The Flight SQL half of the Flight port.
#[derive(Clone)]
pub struct ReleaseSqlService {
    state: AppState,
}

impl ReleaseSqlService {
    pub fn new(state: AppState) -> ReleaseSqlService {
        ReleaseSqlService { state }
    }

    /// Flight SQL needs the researcher role, as Flight and exports do.
    /// Returns the token (empty under open access): queries are counted
    /// per token.
    pub fn authorize<T>(state: &AppState, request: &Request<T>) -> Result<String, Status> {
        if state.tokens.is_open() {
            return Ok(String::new());
        }
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("send authorization: Bearer <token>"))?;
        // Wrong tokens spend the client's allowance, shared with the page's
        // login and the API (`TokenFailures`); a client out of it is
        // refused before its token is looked at.
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        let client =
            crate::session::client_of(state, peer, &request.metadata().clone().into_headers());
        let verdict = state
            .token_failures
            .judge(client, || {
                state.tokens.check(token.trim(), Role::Researcher)
            })
            .map_err(|wait| {
                Status::resource_exhausted(format!(
                    "too many wrong tokens from this address; retry in {} s",
                    wait.as_secs() + 1
                ))
            })?;
        match verdict {
            Ok(()) => Ok(token.trim().to_string()),
            Err(Denied::Unauthenticated) => Err(Status::unauthenticated("unknown token")),
            Err(Denied::Forbidden) => Err(Status::permission_denied(
                "Flight needs a token with the researcher role",
            )),
        }
    }
}

#[tonic::async_trait]
impl FlightSqlService for ReleaseSqlService {
    type FlightService = ReleaseSqlService;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let token = Self::authorize(&self.state, &request)?;
        let limits = &self.state.sql_limits;
        let admitted = self
            .state
            .sql_admission
            .admit(&token, limits.max_concurrent_per_token)?;
        // Planned in a worker for its schema; the worker has ended (and
        // freed the token's place) when the client hears back.
        let run = self
            .state
            .sql_workers
            .start(&query.query, true, deadline_of(limits), admitted)
            .await?;
        let schema = run.schema();
        run.finish().await?;
        // The ticket carries the SQL itself: no server-side statement state.
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|_| Status::internal("the result's schema could not be encoded"))?
            .with_descriptor(request.into_inner())
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            );
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let token = Self::authorize(&self.state, &request)?;
        let limits = &self.state.sql_limits;
        // Held by the result stream until it ends or the client leaves.
        let admitted = self
            .state
            .sql_admission
            .admit(&token, limits.max_concurrent_per_token)?;
        let deadline = deadline_of(limits);
        let sql = std::str::from_utf8(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("statement handle is not UTF-8"))?;
        let run = self
            .state
            .sql_workers
            .start(sql, false, deadline, admitted)
            .await?;
        let schema = run.schema();
        let batches = run
            .into_stream()
            // The encoder carries a status through as an external error;
            // `status_of` takes it out again.
            .map(|r| r.map_err(|status| FlightError::ExternalError(Box::new(status))));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map(|r| r.map_err(status_of));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flight_sql_messages_are_told_from_export_queries() {
        let sql = CommandStatementQuery {
            query: "SELECT 1".into(),
            transaction_id: None,
        };
        assert!(is_flight_sql(&sql.as_any().encode_to_vec()));
        for plain in [&b""[..], b"from=1&to=2", b"level=5", b"\x0a\x03abc"] {
            assert!(!is_flight_sql(plain), "{plain:?}");
        }
    }
}
