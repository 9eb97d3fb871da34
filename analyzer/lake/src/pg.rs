//! The PostgreSQL wire protocol front door (`psql`, psycopg, any libpq or
//! JDBC client), on pgwire: simple and extended query protocols, MD5
//! password authentication, results typed (integers, floats, booleans,
//! text, `timestamptz`; unsigned 64-bit integers as `numeric`; lists as
//! JSON text; Arrow's strings of every layout, the lake's `Utf8View`
//! included, as `text`). Errors carry a SQLSTATE and the engine's message; the
//! connection and the server keep serving. Rows are streamed batch by batch
//! with backpressure; the connection is held to the `[sql]` budget
//! (`connection`): a cap (FATAL 53300 beyond it), handshake, idle (FATAL
//! 57P05) and write timeouts. What clients ask about the server and its
//! catalog before they query (Grafana, DBeaver) is answered by the engine
//! (`engine::postgres`); a statement of nothing but comments (pgx's `--
//! ping`, Grafana's health check) is an empty query, as in PostgreSQL. The
//! two `SET`s every JDBC connection opens with (`extra_float_digits`,
//! `application_name`; DBeaver) are acknowledged and change nothing
//! ([`acknowledged_set`]); every other `SET` is refused as a write.
//!
//! No TLS: listen on loopback or a private network, or put a TLS proxy in
//! front (MD5 keeps the password off the wire, not the data).

use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, SchemaRef, TimeUnit, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::{SinkExt, StreamExt, TryStreamExt};
use pgwire::api::auth::md5pass::{Md5PasswordAuthStartupHandler, hash_md5_password};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldFormat, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::api::{DefaultClient, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{PgWireMessageServerCodec, process_error, process_message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::connection::{Budget, Cutoff, Door, Watched};
use crate::engine::postgres::{self, wire_type};
use crate::engine::{Engine, Planned, QueryError};

/// Credentials of the front door.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Serves the PostgreSQL wire protocol on `listener` until `cancel`, at
/// most `budget.max_connections` at once.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    credentials: Credentials,
    budget: Budget,
    cancel: CancellationToken,
) {
    let local = listener.local_addr().ok();
    info!(listen = ?local, user = %credentials.user, max_connections = budget.max_connections, "sql: postgresql wire protocol serving");
    engine.set_user(&credentials.user);
    let backend = Arc::new(Backend {
        engine: engine.clone(),
        parser: Arc::new(Parser { engine }),
    });
    let handlers = Arc::new(Handlers {
        backend,
        credentials: Arc::new(credentials),
    });
    let slots = Arc::new(Semaphore::new(budget.max_connections));
    // Connections over the cap are told so (PostgreSQL's way), a few at a
    // time: one refusal takes a descriptor for up to a second, and past
    // these the socket is simply closed.
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = cancel.cancelled() => break,
        };
        match accepted {
            Ok((socket, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    Cutoff::Refused.emit(Door::Pg, Some(peer));
                    if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                        tokio::spawn(async move {
                            refuse(socket, budget.max_connections).await;
                            drop(refusal);
                        });
                    }
                    continue;
                };
                let h = handlers.clone();
                tokio::spawn(async move {
                    let io = Watched::new(socket, Door::Pg, slot, &budget);
                    if let Err(e) = connection(io, peer, h, budget).await {
                        debug!(%peer, error = %e, "sql: postgresql connection ended");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "sql: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    info!(listen = ?local, "sql: postgresql wire protocol stopped");
}

/// Refusals of connections over the cap in progress at once.
const REFUSALS_AT_ONCE: usize = 16;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// Answers "no" to requests for TLS or GSSAPI encryption (libpq asks for
/// TLS first under its default `sslmode=prefer`) and returns the first 8
/// bytes of the next message, the startup message (or a cancel request).
async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut S) -> std::io::Result<[u8; 8]> {
    // A client asks at most once for each kind.
    for _ in 0..3 {
        let mut head = [0u8; 8];
        socket.read_exact(&mut head).await?;
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if length == 8 && (code == SSL_REQUEST || code == GSSENC_REQUEST) {
            socket.write_all(b"N").await?;
            socket.flush().await?;
            continue;
        }
        return Ok(head);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "encryption requested three times",
    ))
}

fn fatal(code: &str, message: String) -> PgWireBackendMessage {
    PgWireBackendMessage::ErrorResponse(ErrorInfo::new("FATAL".into(), code.into(), message).into())
}

/// A connection over the cap: reads its startup message and answers FATAL
/// 53300 "too many connections", as PostgreSQL does, all within a second.
async fn refuse(mut socket: TcpStream, max: usize) {
    let work = async {
        let head = negotiate(&mut socket).await?;
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        // The rest of the startup message (user, database, options), bounded.
        let mut rest = vec![0u8; length.saturating_sub(8).min(8192)];
        socket.read_exact(&mut rest).await?;
        let mut out = bytes::BytesMut::new();
        fatal(
            "53300",
            format!("too many connections: this server serves at most {max} at once (sql.max_connections)"),
        )
        .encode(&mut out)
        .map_err(std::io::Error::other)?;
        socket.write_all(&out).await?;
        socket.shutdown().await
    };
    // Ignored: a client that does not finish in time is closed all the same.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), work).await;
}

/// One connection: pgwire's message loop (`pgwire::tokio::process_socket`)
/// with our budget: start-up and authentication within the handshake
/// timeout, then an idle timeout between messages (FATAL 57P05, as
/// PostgreSQL's `idle_session_timeout`), writes under the write timeout
/// (`Watched`).
async fn connection(
    mut io: Watched,
    peer: SocketAddr,
    handlers: Arc<Handlers>,
    budget: Budget,
) -> Result<(), PgWireError> {
    io.nodelay()?;
    let handshake_deadline = tokio::time::Instant::now() + budget.handshake_timeout;
    let head = match tokio::time::timeout_at(handshake_deadline, negotiate(&mut io)).await {
        Ok(head) => head?,
        Err(_) => {
            Cutoff::Handshake.emit(Door::Pg, Some(peer));
            return Ok(());
        }
    };
    let mut parts =
        FramedParts::new::<PgWireBackendMessage>(io, PgWireMessageServerCodec::new(DefaultClient::new(peer, false)));
    parts.read_buf = bytes::BytesMut::from(&head[..]);
    let mut socket: Framed<Watched, PgWireMessageServerCodec<Arc<Statement>>> = Framed::from_parts(parts);
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    let startup = handlers.startup_handler();
    let simple = handlers.backend.clone();
    let extended = handlers.backend.clone();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    loop {
        let in_handshake = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        let msg = if in_handshake {
            match tokio::time::timeout_at(handshake_deadline, socket.next()).await {
                Ok(msg) => msg,
                Err(_) => {
                    Cutoff::Handshake.emit(Door::Pg, Some(peer));
                    return Ok(());
                }
            }
        } else {
            match tokio::time::timeout(budget.idle_timeout, socket.next()).await {
                Ok(msg) => msg,
                Err(_) => {
                    Cutoff::Idle.emit(Door::Pg, Some(peer));
                    let message = format!(
                        "terminating connection due to idle-session timeout ({} s, sql.idle_timeout_secs)",
                        budget.idle_timeout.as_secs()
                    );
                    socket.send(fatal("57P05", message)).await?;
                    return Ok(());
                }
            }
        };
        let Some(msg) = msg else { return Ok(()) };
        let msg = msg?;
        // The client is leaving: close (asyncpg waits for the server to).
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let is_extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        let is_cancel_request = matches!(msg, PgWireFrontendMessage::CancelRequest(_));
        let result = process_message(
            msg,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await;
        match result {
            Ok(()) => {}
            // The socket failed (or a write timed out): nothing more can be said on it.
            Err(PgWireError::IoError(e)) => return Err(PgWireError::IoError(e)),
            Err(e) => {
                let is_fatal = e.is_fatal();
                process_error(&mut socket, e, is_extended_query).await?;
                if is_fatal {
                    return Ok(());
                }
            }
        }
        if is_cancel_request {
            return Ok(());
        }
    }
}

/// Binds `addr` and serves on it.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[derive(Debug)]
struct Handlers {
    backend: Arc<Backend>,
    credentials: Arc<Credentials>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.backend.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.backend.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let mut parameters = DefaultServerParameterProvider::default();
        // As `current_setting` and `SHOW` answer them.
        parameters.server_version = postgres::server_version();
        parameters.search_path = postgres::SEARCH_PATH.to_owned();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        Arc::new(Md5PasswordAuthStartupHandler::new(
            Arc::new(Auth {
                credentials: self.credentials.clone(),
            }),
            Arc::new(parameters),
        ))
    }
}

#[derive(Debug)]
struct Auth {
    credentials: Arc<Credentials>,
}

#[async_trait]
#[expect(
    elided_lifetimes_in_paths,
    reason = "the signature must match pgwire's async_trait declaration"
)]
impl AuthSource for Auth {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let salt = random_salt();
        let user = login.user().unwrap_or_default();
        // Another user gets a password nobody knows: refused like a wrong password.
        let password = if user == self.credentials.user {
            self.credentials.password.clone()
        } else {
            format!("{:x}{:x}", random_u64(), random_u64())
        };
        let hashed = hash_md5_password(user, &password, &salt);
        Ok(Password::new(Some(salt.to_vec()), hashed.into_bytes()))
    }
}

fn random_u64() -> u64 {
    // std's RandomState is seeded from the OS per instance.
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

fn random_salt() -> [u8; 4] {
    let r = random_u64().to_le_bytes();
    [r[0], r[1], r[2], r[3]]
}

#[derive(Debug)]
struct Backend {
    engine: Engine,
    parser: Arc<Parser>,
}

/// Parses (plans) statements of the extended protocol.
#[derive(Debug)]
struct Parser {
    engine: Engine,
}

fn user_error(e: &QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        e.sqlstate().into(),
        e.to_string(),
    )))
}

/// A statement of the extended protocol.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "always behind an Arc, never moved")]
enum Statement {
    Query(Planned),
    /// A `SET` acknowledged without effect ([`acknowledged_set`]).
    Set,
}

/// The command tag of an acknowledged `SET`.
fn set_done() -> Response {
    Response::Execution(Tag::new("SET"))
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Arc<Statement>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Arc<Statement>>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        // Comments only: pgwire's empty statement (`Ok(None)`).
        if only_comments(sql) {
            return Ok(None);
        }
        if acknowledged_set(sql) {
            return Ok(Some(Arc::new(Statement::Set)));
        }
        let planned = self.engine.plan(sql).await.map_err(|e| user_error(&e))?;
        Ok(Some(Arc::new(Statement::Query(planned))))
    }

    fn get_parameter_types(&self, _stmt: &Arc<Statement>) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(&self, stmt: &Arc<Statement>, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match stmt.as_ref() {
            Statement::Query(planned) => fields(&planned.schema, format),
            Statement::Set => Vec::new(),
        })
    }
}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if only_comments(query) {
            return Ok(vec![Response::EmptyQuery]);
        }
        if acknowledged_set(query) {
            return Ok(vec![set_done()]);
        }
        let planned = self.engine.plan(query).await.map_err(|e| user_error(&e))?;
        Ok(vec![response(&self.engine, &planned, None).await?])
    }
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = Arc<Statement>;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// As pgwire's, but a `SET` describes as no data, as PostgreSQL's does.
    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Arc<Statement>>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + pgwire::api::ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Arc<Statement>>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        // No parameters: a statement that has some is refused at execution.
        let parameters = target
            .parameter_types
            .iter()
            .map(|t| t.clone().unwrap_or(Type::UNKNOWN))
            .collect();
        Ok(match target.statement.as_ref() {
            Statement::Query(planned) => DescribeStatementResponse::new(parameters, fields(&planned.schema, None)),
            Statement::Set => {
                let mut described = DescribeStatementResponse::no_data();
                described.parameters = parameters;
                described
            }
        })
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Arc<Statement>>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + pgwire::api::ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Arc<Statement>>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        Ok(match target.statement.statement.as_ref() {
            Statement::Query(planned) => {
                DescribePortalResponse::new(fields(&planned.schema, Some(&target.result_column_format)))
            }
            Statement::Set => DescribePortalResponse::no_data(),
        })
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Arc<Statement>>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + pgwire::api::ClientPortalStore + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Arc<Statement>>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        if portal.parameter_len() > 0 {
            return Err(user_error(&QueryError::Invalid(
                "query parameters are not supported".into(),
            )));
        }
        match portal.statement.statement.as_ref() {
            Statement::Query(planned) => response(&self.engine, planned, Some(&portal.result_column_format)).await,
            Statement::Set => Ok(set_done()),
        }
    }
}

/// The settings a client may `SET`, acknowledged without effect: the JDBC
/// driver (DBeaver) opens every connection with `SET extra_float_digits =
/// 3` and `SET application_name = '…'` and fails to connect if they fail.
/// Neither changes what the server does: floats are always sent in their
/// shortest exact form (what `extra_float_digits` 1 and more ask for), and
/// the application's name is only a label.
const ACKNOWLEDGED_SETTINGS: &[&str] = &["extra_float_digits", "application_name"];

/// Whether `sql` is exactly one `SET [SESSION | LOCAL] name {= | TO}
/// value` of an [`ACKNOWLEDGED_SETTINGS`] (a trailing `;` allowed).
/// Anything else, another setting, a second statement, goes to the engine,
/// which refuses a `SET` as a write. Only short statements are tokenized
/// (on the I/O runtime: a few hundred bytes at most).
fn acknowledged_set(sql: &str) -> bool {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if sql.len() > 512 {
        return false;
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return false;
    };
    let mut tokens = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
        .peekable();
    let keyword = |t: Option<&Token>, k: Keyword| matches!(t, Some(Token::Word(w)) if w.keyword == k);
    if !keyword(tokens.next().as_ref(), Keyword::SET) {
        return false;
    }
    if keyword(tokens.peek(), Keyword::SESSION) || keyword(tokens.peek(), Keyword::LOCAL) {
        tokens.next();
    }
    let Some(Token::Word(name)) = tokens.next() else {
        return false;
    };
    if !ACKNOWLEDGED_SETTINGS.iter().any(|s| name.value.eq_ignore_ascii_case(s)) {
        return false;
    }
    match tokens.next() {
        Some(Token::Eq) => {}
        Some(Token::Word(w)) if w.keyword == Keyword::TO => {}
        _ => return false,
    }
    if matches!(tokens.peek(), Some(Token::Minus)) {
        tokens.next();
    }
    if !matches!(
        tokens.next(),
        Some(Token::Number(..) | Token::SingleQuotedString(_) | Token::Word(_))
    ) {
        return false;
    }
    if matches!(tokens.peek(), Some(Token::SemiColon)) {
        tokens.next();
    }
    tokens.next().is_none()
}

/// Whether `sql` is nothing but whitespace, semicolons and comments (`--`
/// to the end of the line, `/* … */` nested as PostgreSQL nests them): an
/// empty query. Stops at the first other character, so a real statement
/// costs a byte or two.
fn only_comments(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_whitespace() || c == b';' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                loop {
                    match (b.get(i), b.get(i + 1)) {
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => i += 1,
                        // Unterminated: the parser's to report.
                        (None, _) => return false,
                    }
                }
            }
            _ => return false,
        }
    }
    true
}

fn fields(schema: &SchemaRef, format: Option<&Format>) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (t, text_only) = wire_type(f.data_type());
            let fmt = match format {
                Some(fmt) if !text_only => fmt.format_for(i),
                _ => FieldFormat::Text,
            };
            FieldInfo::new(f.name().clone(), None, None, t, fmt)
        })
        .collect()
}

/// Runs `planned` and streams its rows: each record batch is encoded to
/// data rows as pgwire asks for it, and pgwire writes them with
/// backpressure (a full socket buffer stops the reading of batches, which
/// stops the query: `Engine::stream`). An error before the first batch is
/// the statement's error; a later one ends the result with it.
async fn response(engine: &Engine, planned: &Planned, format: Option<&Format>) -> PgWireResult<Response> {
    let fields = Arc::new(fields(&planned.schema, format));
    let mut batches = engine.stream(planned);
    let first = match batches.next().await {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => return Err(user_error(&e)),
        None => None,
    };
    let encoder_fields = fields.clone();
    let rows = futures::stream::iter(first.map(Ok))
        .chain(batches.into_stream())
        .map_err(|e| user_error(&e))
        .and_then(move |batch| {
            let rows = rows_of(&batch, &encoder_fields);
            async move { rows }
        })
        .map_ok(|rows| futures::stream::iter(rows.into_iter().map(Ok::<DataRow, PgWireError>)))
        .try_flatten();
    Ok(Response::Query(QueryResponse::new(fields, rows)))
}

/// A batch's rows, encoded.
fn rows_of(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut encoder = DataRowEncoder::new(fields.clone());
    let options = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    for row in 0..batch.num_rows() {
        for (c, column) in batch.columns().iter().enumerate() {
            encode(&mut encoder, column.as_ref(), row, &formatters[c])?;
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

fn encode(encoder: &mut DataRowEncoder, a: &dyn Array, row: usize, text: &ArrayFormatter<'_>) -> PgWireResult<()> {
    if a.is_null(row) {
        return encoder.encode_field(&None::<i64>);
    }
    match a.data_type() {
        DataType::Boolean => encoder.encode_field(&a.as_boolean().value(row)),
        DataType::Int8 => encoder.encode_field(&i16::from(a.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => encoder.encode_field(&a.as_primitive::<Int16Type>().value(row)),
        DataType::UInt8 => encoder.encode_field(&i16::from(a.as_primitive::<UInt8Type>().value(row))),
        DataType::Int32 => encoder.encode_field(&a.as_primitive::<Int32Type>().value(row)),
        DataType::UInt16 => encoder.encode_field(&i32::from(a.as_primitive::<UInt16Type>().value(row))),
        DataType::Int64 => encoder.encode_field(&a.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => encoder.encode_field(&i64::from(a.as_primitive::<UInt32Type>().value(row))),
        DataType::UInt64 => encoder.encode_field(&a.as_primitive::<UInt64Type>().value(row).to_string()),
        DataType::Float32 => encoder.encode_field(&a.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => encoder.encode_field(&a.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(unit, tz) => {
            let v = match unit {
                TimeUnit::Second => {
                    a.as_primitive::<datafusion::arrow::datatypes::TimestampSecondType>()
                        .value(row)
                        * 1_000_000_000
                }
                TimeUnit::Millisecond => {
                    a.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>()
                        .value(row)
                        * 1_000_000
                }
                TimeUnit::Microsecond => {
                    a.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                        .value(row)
                        * 1_000
                }
                TimeUnit::Nanosecond => a
                    .as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>()
                    .value(row),
            };
            let t = chrono::DateTime::from_timestamp_nanos(v);
            if tz.is_some() {
                encoder.encode_field(&t)
            } else {
                encoder.encode_field(&t.naive_utc())
            }
        }
        DataType::Utf8 => encoder.encode_field(&a.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => encoder.encode_field(&a.as_string::<i64>().value(row)),
        DataType::Utf8View => encoder.encode_field(&a.as_string_view().value(row)),
        DataType::List(_) | DataType::LargeList(_) => {
            // Lists (argv) as a JSON array of their items' text.
            let list = datafusion::arrow::array::cast::as_generic_list_array::<i32>;
            let items: Vec<String> = match a.data_type() {
                DataType::List(_) => {
                    let l = list(a).value(row);
                    let opts = FormatOptions::default();
                    let f =
                        ArrayFormatter::try_new(l.as_ref(), &opts).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                    (0..l.len()).map(|i| f.value(i).to_string()).collect()
                }
                _ => vec![text.value(row).to_string()],
            };
            let json = serde_json::to_string(&items).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            encoder.encode_field(&json)
        }
        _ => encoder.encode_field(&text.value(row).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_only_is_an_empty_query() {
        for empty in [
            "",
            ";",
            "-- ping",
            "-- ping\n;",
            "/* a /* nested */ comment */",
            " /**/ -- x",
        ] {
            assert!(only_comments(empty), "{empty:?}");
        }
        for query in [
            "SELECT 1",
            "-- x\nSELECT 1",
            "/* unterminated",
            "/* a */ SELECT 1",
            "- 1",
        ] {
            assert!(!only_comments(query), "{query:?}");
        }
    }

    #[test]
    fn only_the_jdbc_sets_are_acknowledged() {
        for set in [
            "SET extra_float_digits = 3",
            "SET application_name = 'DBeaver 24.3.0 - Main <glasshouse>'",
            "set session extra_float_digits to -15;",
            "SET application_name TO psql",
        ] {
            assert!(acknowledged_set(set), "{set:?}");
        }
        for other in [
            "SET search_path = pg_catalog",
            "SET extra_float_digits = 3; DROP VIEW containers",
            "SET extra_float_digits = 3, 4",
            "SET application_name",
            "SELECT 1",
            "SET TIME ZONE 'UTC'",
        ] {
            assert!(!acknowledged_set(other), "{other:?}");
        }
    }
}
