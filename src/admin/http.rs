//! The HTTP admin server on `server.admin_listen`: `/metrics`,
//! `/healthz`, `/readyz`, `/topology`. Runs on the control runtime, away
//! from the worker threads that serve clients.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::proxy::Shared;

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves admin HTTP requests on `listener` until `stop` fires.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&shared, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "admin HTTP connection ended");
                    }
                }
            }
        });
    }
}

/// The response to one request.
fn respond(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match request.uri().path() {
        "/metrics" => metrics(shared),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if shared.readiness.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if shared.readiness.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/topology" => topology(shared),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics /healthz /readyz /topology\n",
        ),
    }
}

fn metrics(shared: &Shared) -> Response<Full<Bytes>> {
    crate::metrics::scrape::refresh(shared);
    match shared.metrics.encode() {
        Ok(body) => with_type(StatusCode::OK, PROMETHEUS_TEXT, body),
        Err(error) => {
            tracing::warn!(%error, "cannot encode metrics");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
        }
    }
}

fn topology(shared: &Shared) -> Response<Full<Bytes>> {
    let view = shared.topology_view();
    match serde_json::to_string_pretty(&view) {
        Ok(body) => with_type(StatusCode::OK, "application/json", body + "\n"),
        Err(error) => {
            tracing::warn!(%error, "cannot encode the topology");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode topology\n",
            )
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body.to_owned())
}

fn with_type(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}
