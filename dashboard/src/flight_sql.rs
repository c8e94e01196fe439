//! Flight SQL over the release store: researchers send read-only SQL
//! against the table `releases` (the release schema plus its `day`
//! partition column) and get Arrow back, planned and run by DataFusion.
//!
//! Served on the Flight port beside the plain Flight service
//! ([`ReleaseFlightService`](crate::flight::ReleaseFlightService) hands
//! every Flight SQL command to [`ReleaseSqlService`]). Statements only:
//! no prepared statements, no catalog calls, no writes. The data are noisy
//! aggregates, so any query over them is post-processing and costs no
//! privacy budget.

use crate::api::AppState;
use crate::auth::{Denied, Role};
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
    pub fn authorize<T>(state: &AppState, request: &Request<T>) -> Result<(), Status> {
        if state.tokens.is_open() {
            return Ok(());
        }
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("send authorization: Bearer <token>"))?;
        match state.tokens.check(token.trim(), Role::Researcher) {
            Ok(()) => Ok(()),
            Err(Denied::Unauthenticated) => Err(Status::unauthenticated("unknown token")),
            Err(Denied::Forbidden) => Err(Status::permission_denied(
                "Flight needs a token with the researcher role",
            )),
        }
    }

    async fn plan(&self, sql: &str) -> Result<datafusion::dataframe::DataFrame, Status> {
        self.state
            .query
            .sql(sql)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))
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
        Self::authorize(&self.state, &request)?;
        let df = self.plan(&query.query).await?;
        // The ticket carries the SQL itself: no server-side statement state.
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(df.schema().as_arrow())
            .map_err(|e| Status::internal(e.to_string()))?
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
        Self::authorize(&self.state, &request)?;
        let sql = std::str::from_utf8(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("statement handle is not UTF-8"))?;
        let df = self.plan(sql).await?;
        let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
        let batches = df
            .execute_stream()
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .map(|r| r.map_err(|e| FlightError::ExternalError(Box::new(e))));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map(|r| r.map_err(|e| Status::internal(e.to_string())));
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
