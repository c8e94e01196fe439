//! Arrow Flight for researchers (default port 8815): the same noisy cells
//! as the exports, in the release schema with its privacy metadata.
//!
//! * `list_flights`: one flight per stored window, descriptor path
//!   `["window", "<window start ms>"]`.
//! * `get_flight_info`: for such a path, or for a command holding an export
//!   query (`from=…&to=…&level=…`, as `GET /api/v1/export` takes).
//! * `do_get`: the ticket is such a query; the answer streams the cells.
//!
//! Flight SQL commands and tickets go to [`ReleaseSqlService`] (read-only
//! SQL over the store through DataFusion).
//!
//! Every call needs `authorization: Bearer <token>` with the researcher
//! role (when tokens are configured; without them the service binds
//! loopback only).

use crate::flight_sql::{ReleaseSqlService, is_flight_sql, status_of};
use crate::query::{CellFilter, export_metadata};
use crate::state::AppState;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
    flight_descriptor::DescriptorType,
};
use datafusion::arrow::datatypes::Schema;
use futures::stream::{self, BoxStream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// The Flight service over the release store.
#[derive(Clone)]
pub struct ReleaseFlightService {
    state: AppState,
    sql: ReleaseSqlService,
}

impl ReleaseFlightService {
    pub fn new(state: AppState) -> ReleaseFlightService {
        ReleaseFlightService {
            sql: ReleaseSqlService::new(state.clone()),
            state,
        }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        ReleaseSqlService::authorize(&self.state, request).map(|_| ())
    }

    /// The FlightInfo of the cells `filter` selects.
    fn info(&self, filter: CellFilter, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
        let (store, _) = self
            .state
            .source(filter)
            .map_err(|e| Status::not_found(e.to_string()))?;
        let store = store.read().map_err(|_| Status::internal("store"))?;
        let windows: Vec<_> = store
            .windows()
            .filter(|w| filter.contains_window(w.meta.window_start))
            .collect();
        let rows = windows
            .iter()
            .flat_map(|w| &w.cells_by_level)
            .filter(|(level, _)| filter.level.is_none_or(|l| **level == l))
            .map(|(_, cells)| cells)
            .sum::<usize>();
        let metas: Vec<_> = windows.iter().map(|w| &w.meta).collect();
        let schema = Schema::new_with_metadata(
            hushmap_schema::release::release_fields(),
            export_metadata(&metas),
        );
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|_| Status::internal("the schema could not be encoded"))
            .map(|info| {
                info.with_descriptor(descriptor)
                    .with_endpoint(
                        FlightEndpoint::new().with_ticket(Ticket::new(ticket_of(&filter))),
                    )
                    .with_total_records(rows as i64)
                    .with_ordered(true)
            })
    }
}

/// The ticket (an export query string) for `filter`.
fn ticket_of(f: &CellFilter) -> String {
    let mut parts = Vec::new();
    if let Some(v) = f.from {
        parts.push(format!("from={v}"));
    }
    if let Some(v) = f.to {
        parts.push(format!("to={v}"));
    }
    if let Some(v) = f.level {
        parts.push(format!("level={v}"));
    }
    if f.measured {
        parts.push("estimates=measured".into());
    }
    parts.join("&")
}

/// Parses an export query string (`from=…&to=…&level=…&estimates=…`).
fn filter_of(query: &[u8]) -> Result<CellFilter, Status> {
    let text = std::str::from_utf8(query).map_err(|_| Status::invalid_argument("not UTF-8"))?;
    let (mut from, mut to, mut level, mut estimates) = (None, None, None, None);
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("from", v)) => from = Some(v),
            Some(("to", v)) => to = Some(v),
            Some(("estimates", v)) => estimates = Some(v),
            Some(("level", v)) => {
                level = Some(
                    v.parse::<u8>()
                        .map_err(|_| Status::invalid_argument("level must be 0 to 15"))?,
                )
            }
            _ => {
                return Err(Status::invalid_argument(
                    "expected from=…&to=…&level=…&estimates=… (each optional)",
                ));
            }
        }
    }
    CellFilter::parse(from, to, level)
        .and_then(|f| f.with_estimates(estimates))
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn window_filter(path: &[String]) -> Result<CellFilter, Status> {
    match path {
        [kind, start] if kind == "window" || kind == "measured" => {
            let start: i64 = start
                .parse()
                .map_err(|_| Status::invalid_argument("window start must be ms since the epoch"))?;
            let to = start
                .checked_add(1)
                .ok_or_else(|| Status::invalid_argument("window start out of range"))?;
            Ok(CellFilter {
                from: Some(start),
                to: Some(to),
                level: None,
                measured: kind == "measured",
            })
        }
        _ => Err(Status::invalid_argument(
            "descriptor path must be [\"window\", \"<window start ms>\"]",
        )),
    }
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for ReleaseFlightService {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;
    type DoExchangeStream = Stream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "no handshake: send authorization: Bearer <token> with each call",
        ))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.authorize(&request)?;
        let starts: Vec<i64> = {
            let store = self
                .state
                .store
                .read()
                .map_err(|_| Status::internal("store"))?;
            store.windows().map(|w| w.meta.window_start).collect()
        };
        let infos = starts
            .into_iter()
            .map(|s| {
                let path = vec!["window".to_string(), s.to_string()];
                let filter = window_filter(&path)?;
                self.info(filter, FlightDescriptor::new_path(path))
            })
            .collect::<Vec<_>>();
        Ok(Response::new(stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        if is_flight_sql(&request.get_ref().cmd) {
            return FlightService::get_flight_info(&self.sql, request).await;
        }
        self.authorize(&request)?;
        let descriptor = request.into_inner();
        let filter = match descriptor.r#type() {
            DescriptorType::Path => window_filter(&descriptor.path)?,
            DescriptorType::Cmd => filter_of(&descriptor.cmd)?,
            DescriptorType::Unknown => {
                return Err(Status::invalid_argument("descriptor needs a path or a cmd"));
            }
        };
        Ok(Response::new(self.info(filter, descriptor)?))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("use get_flight_info"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("use get_flight_info"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        if is_flight_sql(&request.get_ref().ticket) {
            return FlightService::do_get(&self.sql, request).await;
        }
        let token = ReleaseSqlService::authorize(&self.state, &request)?;
        let filter = filter_of(&request.into_inner().ticket)?;
        // A ticket is a query by another name: a place in the token's
        // admission (shared with Flight SQL and exports), held until the
        // stream ends or is dropped, and the query deadline.
        let limits = &self.state.sql_limits;
        let admitted = self
            .state
            .sql_admission
            .admit(&token, limits.max_concurrent_per_token)?;
        let (schema, cells) = self
            .state
            .cells(filter)
            .map_err(|e| Status::not_found(e.to_string()))?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(cells.map(|r| r.map_err(|e| FlightError::ExternalError(Box::new(e)))))
            .map(|r| r.map_err(status_of));
        Ok(Response::new(crate::sql_limits::within_budget(
            stream.boxed(),
            crate::sql_limits::budget_of(limits),
            Err(crate::sql_limits::deadline_status(limits)),
            admitted,
        )))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("the release store is read-only"))
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("no actions"))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(stream::empty().boxed()))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("the release store is read-only"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_bad_ones_are_refused() {
        let f = CellFilter {
            from: Some(10),
            to: Some(20),
            level: Some(4),
            measured: false,
        };
        assert_eq!(filter_of(ticket_of(&f).as_bytes()).unwrap(), f);
        let m = CellFilter {
            measured: true,
            ..f
        };
        assert_eq!(filter_of(ticket_of(&m).as_bytes()).unwrap(), m);
        assert!(filter_of(b"estimates=raw").is_err());
        assert_eq!(filter_of(b"").unwrap(), CellFilter::default());
        assert!(filter_of(b"drop=table").is_err());
        assert!(filter_of(b"level=x").is_err());
        assert!(window_filter(&["day".into(), "1".into()]).is_err());
    }
}
