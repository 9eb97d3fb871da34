//! The Arrow Flight SQL front door (the ADBC Flight SQL driver, JDBC's
//! Flight SQL driver, `glasshouse sql`): statements as `CommandStatementQuery`,
//! results streamed as Arrow record batches, strings as the lake has them
//! (`Utf8View`: the ADBC driver 1.13 with pyarrow reads them as
//! `string_view`, checked by the `sql_clients` test). Every call must carry
//! `authorization: Bearer TOKEN`; anything else is `UNAUTHENTICATED`.
//!
//! The ticket of a statement is its SQL text: `DoGet` plans and runs it
//! (under the same read-only check, timeout and memory limit), so tickets
//! hold no server state and any replica can serve them. Batches are
//! streamed as the query makes them, under HTTP/2 flow control; connections
//! are held to the `[sql]` budget (`connection`): a cap (closed at accept
//! beyond it), handshake and idle timeouts.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{CommandGetSqlInfo, CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::connection::{Budget, ConnectionInfo, Cutoff, Door, Watched};
use crate::engine::{Engine, QueryError};

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Glasshouse");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    // A fixed list of values of the types SqlInfoDataBuilder accepts.
    b.build().expect("static sql info builds")
});

/// The Flight SQL service.
#[derive(Debug, Clone)]
pub struct FlightSql {
    engine: Engine,
    token: Arc<str>,
}

/// Serves Flight SQL on `listener` until `cancel`, at most
/// `budget.max_connections` connections at once: one more is closed as
/// soon as it is accepted. A connection must make an authenticated call
/// within the handshake timeout and is closed after the idle timeout
/// (`connection::Watched`).
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    token: String,
    budget: Budget,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let local = listener.local_addr().ok();
    info!(listen = ?local, max_connections = budget.max_connections, "sql: flight sql serving");
    let service = FlightSql {
        engine,
        token: token.into(),
    };
    let slots = Arc::new(Semaphore::new(budget.max_connections));
    let incoming = futures::stream::unfold(listener, move |listener| {
        let slots = slots.clone();
        async move {
            loop {
                match listener.accept().await {
                    Ok((socket, peer)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let io = Watched::new(socket, Door::Flight, slot, &budget).with_deadlines(&budget);
                            return Some((Ok::<_, std::io::Error>(io), listener));
                        }
                        Err(_) => Cutoff::Refused.emit(Door::Flight, Some(peer)),
                    },
                    Err(e) => {
                        warn!(error = %e, "sql: flight accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }
    });
    let result = tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await;
    info!(listen = ?local, "sql: flight sql stopped");
    result
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn status(e: &QueryError) -> Status {
    let m = e.to_string();
    match e {
        QueryError::Invalid(_) => Status::invalid_argument(m),
        QueryError::ReadOnly(_) => Status::permission_denied(m),
        QueryError::Timeout(_) => Status::deadline_exceeded(m),
        QueryError::Memory { .. } => Status::resource_exhausted(m),
        QueryError::Execution(_) => Status::internal(m),
        QueryError::TooComplex { .. } => Status::invalid_argument(m),
    }
}

impl FlightSql {
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or_else(|| Status::unauthenticated("missing bearer token (authorization: Bearer TOKEN)"))?;
        if constant_time_eq(presented.trim().as_bytes(), self.token.as_bytes()) {
            // The connection has authenticated: from now on it is held to
            // the idle timeout, not the handshake deadline.
            if let Some(c) = req.extensions().get::<ConnectionInfo>() {
                c.authenticated.set();
            }
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        // Bearer tokens only: a handshake succeeds when it carries the token.
        self.check(&request)?;
        let out = futures::stream::iter([Ok(HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        })]);
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let planned = self.engine.plan(&query.query).await.map_err(|e| status(&e))?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.clone().into_bytes().into(),
        };
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(planned.schema.as_ref())
            .map_err(|e| Status::internal(format!("result schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("statement ticket is not UTF-8 SQL"))?;
        let planned = self.engine.plan(&sql).await.map_err(|e| status(&e))?;
        // Streamed with backpressure: HTTP/2 flow control stops the
        // encoder pulling batches when the client stops reading, which
        // stops the query (`Engine::stream`); an error before the first
        // batch is the call's status.
        let mut batches = self.engine.stream(&planned);
        let first = match batches.next().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return Err(status(&e)),
            None => None,
        };
        let batches = futures::stream::iter(first.map(Ok))
            .chain(batches.into_stream())
            .map_err(|e| FlightError::Tonic(Box::new(status(&e))));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(planned.schema.clone())
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream) as DoGetStream))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(query.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(query.into_builder(&SQL_INFO).schema().as_ref())
            .map_err(|e| Status::internal(format!("sql info schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        let builder = query.into_builder(&SQL_INFO);
        let schema = builder.schema();
        let batch = builder.build();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async { batch }))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream) as DoGetStream))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// A Flight SQL client: runs `sql` against `endpoint` (`http://HOST:PORT`)
/// with `token`, calling `progress` with the rows received so far.
pub async fn client_query(
    endpoint: &str,
    token: &str,
    sql: &str,
    mut progress: impl FnMut(usize),
) -> Result<
    (
        datafusion::arrow::datatypes::SchemaRef,
        Vec<datafusion::arrow::array::RecordBatch>,
    ),
    ClientError,
> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| ClientError::Connect(format!("{endpoint}: {e}")))?
        .connect()
        .await
        .map_err(|e| ClientError::Connect(format!("{endpoint}: {e}")))?;
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    client.set_token(token.to_owned());
    let info = client
        .execute(sql.to_owned(), None)
        .await
        .map_err(ClientError::from_arrow)?;
    let schema = Arc::new(
        info.clone()
            .try_decode_schema()
            .map_err(|e| ClientError::Server(format!("result schema: {e}")))?,
    );
    let mut batches = Vec::new();
    let mut rows = 0;
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else { continue };
        let mut stream = client.do_get(ticket).await.map_err(ClientError::from_arrow)?;
        while let Some(b) = stream.next().await {
            let b = b.map_err(|e| ClientError::Server(e.to_string()))?;
            rows += b.num_rows();
            progress(rows);
            batches.push(b);
        }
    }
    Ok((schema, batches))
}

/// Why a client query failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error("{0}")]
    Server(String),
}

impl ClientError {
    fn from_arrow(e: impl std::fmt::Display) -> ClientError {
        // The Flight client wraps the server's status; its message is what
        // the user needs (e.g. the SQL parser's).
        let text = e.to_string();
        let text = match text.split_once("message: \"") {
            Some((_, rest)) => rest
                .split("\", details")
                .next()
                .unwrap_or(rest)
                .replace("\\\"", "\"")
                .replace("\\n", "\n"),
            None => text,
        };
        ClientError::Server(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn a_query_error_keeps_its_kind_as_a_status() {
        assert_eq!(
            status(&QueryError::Invalid("x".into())).code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            status(&QueryError::ReadOnly("x".into())).code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            status(&QueryError::Timeout(std::time::Duration::from_secs(1))).code(),
            tonic::Code::DeadlineExceeded
        );
    }
}
