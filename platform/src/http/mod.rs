//! The HTTP side: device API (provisioning, registration, uploads), admin API (bearer token),
//! the MQTT-over-WebSocket endpoint and the technician console, as one axum router served on
//! plain HTTP and, optionally, HTTPS.

mod admin;
mod device;
mod upload;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;
use tower_http::cors::CorsLayer;

use crate::gateway::transport::WebSocketTransport;
use crate::problem::Problem;
use crate::state::AppState;

/// Shared state as handlers receive it.
pub(crate) type SharedState = Arc<AppState>;

/// A JSON body whose every failure (too large, not JSON, wrong shape) is a problem detail.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Problem> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::too_large(state.max_json_body_bytes)
            } else {
                Problem::bad_request(format!("cannot read the request body: {rejection}"))
            }
        })?;
        let text = if bytes.iter().all(u8::is_ascii_whitespace) {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(text).map(JsonBody).map_err(|e| {
            Problem::bad_request(format!("request body is not the expected json: {e}"))
        })
    }
}

/// The token after `<scheme> ` in the Authorization header.
pub(crate) fn authorization<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(scheme)?
        .strip_prefix(' ')
        .map(str::trim)
}

/// Answer a device call with an armed fault instead of running it.
async fn inject_faults(
    State(state): State<SharedState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    match state.faults.take_http(request.uri().path()) {
        Some(problem) => problem.into_response(),
        None => next.run(request).await,
    }
}

/// Records a device request in the transcript, when recording is on.
async fn record(
    State(state): State<SharedState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if !state.transcript.is_on() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_message_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return Problem::too_large(state.max_message_bytes).into_response(),
    };
    state.transcript.push(crate::transcript::http_entry(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        &bytes,
    ));
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Turn axum's own plain-text rejections (bad path or query, wrong method, ...) into problem
/// details, so every error a client sees has the same shape.
async fn errors_as_problems(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 16 * 1024)
        .await
        .unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).trim().to_owned();
    let title = status.canonical_reason().unwrap_or("Error");
    let detail = if detail.is_empty() {
        title.to_lowercase()
    } else {
        detail
    };
    Problem::new(status, title, detail).into_response()
}

/// The whole router; with `admin_only`, the admin API and the console without anything a
/// device uses (the plain listener of the strict contract).
pub(crate) fn router(state: SharedState, admin_only: bool) -> Router {
    let routes = if admin_only {
        Router::new()
    } else {
        Router::new()
            .merge(
                device::routes(state.clone())
                    .merge(upload::routes(state.clone()))
                    .route_layer(axum::middleware::from_fn_with_state(
                        state.clone(),
                        inject_faults,
                    ))
                    .route_layer(axum::middleware::from_fn_with_state(state.clone(), record)),
            )
            .route("/$iothub/websocket", get(websocket))
    };
    routes
        .merge(admin::routes(state.clone()))
        .route("/console", get(console))
        .route("/", get(|| async { Redirect::temporary("/console") }))
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .layer(axum::middleware::map_response(errors_as_problems))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.max_json_body_bytes,
        ))
        .layer(CorsLayer::permissive())
        .with_state(state)
}

async fn websocket(State(state): State<SharedState>, upgrade: WebSocketUpgrade) -> Response {
    let shutdown = state.shutdown.clone();
    let max = state.max_message_bytes + 1024;
    upgrade
        .protocols(["mqtt"])
        .max_message_size(max)
        .on_upgrade(move |socket| {
            crate::gateway::session::run(
                WebSocketTransport::new(socket),
                state,
                shutdown,
                "websocket".to_owned(),
            )
        })
        .into_response()
}

async fn console() -> Html<&'static str> {
    Html(include_str!("console.html"))
}

/// How long a client may take to send a request's headers (a slow-loris client that trickles
/// them would otherwise hold its connection, and a task, for ever).
pub(crate) const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long to wait after a failed `accept` (out of file descriptors, mostly) before the next:
/// retrying at once would spin a core until descriptors are free again.
pub(crate) const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Serve the router until shutdown, over TLS when `acceptor` is given (axum's own `serve`
/// has no header read timeout and no TLS).
pub(crate) async fn serve_http(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    let connections = crate::state::OpenConnections::new(max_connections);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(%e, "http accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let Some(counted) = connections.admit() else {
            tracing::warn!(%peer, max_connections, "http connection refused: too many open");
            continue;
        };
        // MQTT over WebSocket rides on these connections: with Nagle's algorithm, a PUBACK
        // written while the previous one is unacknowledged waited for the client's delayed ACK
        // (tens of milliseconds), and that wait capped every client's drain.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _counted = counted;
            match acceptor {
                None => serve_connection(stream, service, shutdown, peer).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls)) => serve_connection(tls, service, shutdown, peer).await,
                        Ok(Err(e)) => tracing::info!(%peer, %e, "https handshake failed"),
                        Err(_) => {}
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(
    io: I,
    service: hyper_util::service::TowerToHyperService<Router>,
    shutdown: tokio_util::sync::CancellationToken,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection =
        builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(%peer, %e, "http connection ended with an error");
            }
        }
    }
}
