//! A minimal plain-HTTP `GET /cluster` client with a hard time limit.
//!
//! Patroni's REST API is plain HTTP unless `restapi.certfile` is set; the
//! proxy needs nothing but one GET, so this uses hyper's client directly
//! rather than a general-purpose HTTP library (and no TLS stack).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::error::PatroniError;

/// Largest `/cluster` answer accepted. A 100-member cluster is ~30 KiB.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One member's `GET /cluster` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEndpoint {
    /// The URL as configured (for logs and errors).
    pub base: String,
    /// `base` + `/cluster`.
    uri: Uri,
}

impl ClusterEndpoint {
    /// Checks a configured base URL (`http://host:port`, optionally with a
    /// path prefix) and derives its `/cluster` URL.
    pub fn parse(base: &str) -> Result<Self, PatroniError> {
        let bad = |reason: &str| PatroniError::BadUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = format!("{}/cluster", base.trim_end_matches('/'))
            .parse()
            .map_err(|_| bad("not a URL (expected http://host:port)"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported in this version; use Patroni's plain http REST API",
                ));
            }
            _ => return Err(bad("must start with http://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        Ok(ClusterEndpoint {
            base: base.to_owned(),
            uri,
        })
    }

    /// The full `/cluster` URL.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// A reusable HTTP/1 client (keeps idle connections to the members).
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client whose every request (connect, send, read the whole body)
    /// must finish within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            // A member that died leaves dead pooled connections behind;
            // keep idle ones only briefly.
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        HttpClient { client, timeout }
    }

    /// `GET` the endpoint; the body of a 200 answer.
    pub async fn get(&self, endpoint: &ClusterEndpoint) -> Result<Bytes, PatroniError> {
        let url = endpoint.uri.to_string();
        match tokio::time::timeout(self.timeout, self.get_inner(endpoint, &url)).await {
            Ok(result) => result,
            Err(_) => Err(PatroniError::Timeout {
                url,
                timeout: self.timeout,
            }),
        }
    }

    async fn get_inner(
        &self,
        endpoint: &ClusterEndpoint,
        url: &str,
    ) -> Result<Bytes, PatroniError> {
        let response = self
            .client
            .get(endpoint.uri.clone())
            .await
            .map_err(|source| PatroniError::Request {
                url: url.to_owned(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(PatroniError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| PatroniError::Body {
                url: url.to_owned(),
                reason: format!("{e} (limit {MAX_BODY_BYTES} bytes)"),
            })?;
        Ok(body.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_get_cluster_appended() {
        let e = ClusterEndpoint::parse("http://127.0.0.1:8008").unwrap();
        assert_eq!(e.uri().to_string(), "http://127.0.0.1:8008/cluster");
        let e = ClusterEndpoint::parse("http://pg-1:8008/").unwrap();
        assert_eq!(e.uri().to_string(), "http://pg-1:8008/cluster");
    }

    #[test]
    fn unusable_urls_are_refused_with_the_reason() {
        for (url, why) in [
            ("https://pg-1:8008", "https"),
            ("pg-1:8008", "http://"),
            ("http://", "URL"),
            ("ftp://pg-1", "http://"),
        ] {
            let err = ClusterEndpoint::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts the connection and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let client = HttpClient::new(Duration::from_millis(200));
        let endpoint = ClusterEndpoint::parse(&format!("http://{addr}")).unwrap();
        let started = std::time::Instant::now();
        let err = client.get(&endpoint).await.unwrap_err();
        assert!(matches!(err, PatroniError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        hold.abort();
    }
}
