//! A fake third-party HTTPS API (stands in for api.openai.com and an EHR
//! vendor, unreachable offline): a real TLS server on 127.0.0.1 with a test
//! CA of its own, speaking HTTP/1.1. It records every request and answers
//! like a bearer-token API: 200 when `Authorization: Bearer <expected>`
//! matches one of the keys it knows, else 401.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;

/// What the upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub host: String,
    pub method: String,
    pub path_and_query: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    /// PEM of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Serves `hosts` (certificate SANs) and accepts these bearer tokens.
    pub async fn start(dir: &std::path::Path, hosts: &[&str], valid_tokens: &[&str]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake upstream test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let ca_file = dir.join("upstream-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();

        let server_config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tokens: Arc<Vec<String>> =
            Arc::new(valid_tokens.iter().map(|t| t.to_string()).collect());
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let seen = seen2.clone();
                let tokens = tokens.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        let tokens = tokens.clone();
                        async move {
                            let host = req
                                .headers()
                                .get("host")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let authorization = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let method = req.method().to_string();
                            let path_and_query = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let ok = authorization
                                .as_deref()
                                .is_some_and(|a| tokens.iter().any(|t| a == format!("Bearer {t}")));
                            seen.lock().unwrap().push(Seen {
                                host,
                                method,
                                path_and_query,
                                authorization,
                                body: body.to_vec(),
                            });
                            // `/slow` answers after a minute (a request
                            // still in flight when the server stops).
                            if path_and_query_is_slow(&seen) {
                                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                            }
                            let (status, text) = if ok {
                                (200, r#"{"object":"list","data":[{"id":"gpt-test"}]}"#)
                            } else {
                                (401, r#"{"error":{"message":"Incorrect API key provided"}}"#)
                            };
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from_static(text.as_bytes())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_file,
            seen,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Whether the request just recorded asked for `/slow`.
fn path_and_query_is_slow(seen: &std::sync::Mutex<Vec<Seen>>) -> bool {
    seen.lock()
        .unwrap()
        .last()
        .is_some_and(|s| s.path_and_query.starts_with("/slow"))
}
