//! TLS, the fake upstream and the HTTP/1.1 clients (direct and through a
//! sandbox's egress socket).

use super::*;

// --- TLS and the fake upstream ------------------------------------------------------

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client trusting exactly the certificates in `ca_pem`.
pub(super) fn tls_client(ca_pem: &str) -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("bad CA PEM")?)?;
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// A bearer-token API on 127.0.0.1: 200 with a small JSON body for the real
/// token, 401 for anything else (so a 200 through the proxy proves the
/// placeholder was substituted).
pub(super) struct Upstream {
    pub(super) addr: SocketAddr,
    pub(super) ca_pem: String,
    pub(super) ca_file: PathBuf,
    pub(super) ok: Arc<AtomicU64>,
    pub(super) refused: Arc<AtomicU64>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub(super) async fn start(dir: &Path) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "miosa-bench-egress upstream CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec![UPSTREAM_HOST.to_owned()])?
            .signed_by(&leaf_key, &issuer)?;
        let ca_pem = ca_cert.pem();
        let ca_file = dir.join("upstream-ca.pem");
        std::fs::write(&ca_file, &ca_pem)?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(cfg));

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let expected = HeaderValue::from_str(&format!("Bearer {TOKEN}"))?;
        let (ok2, refused2) = (ok.clone(), refused.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (acceptor, expected) = (acceptor.clone(), expected.clone());
                let (ok, refused) = (ok2.clone(), refused2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let authorized = req.headers().get(AUTHORIZATION) == Some(&expected);
                        let counter = if authorized { &ok } else { &refused };
                        counter.fetch_add(1, Ordering::Relaxed);
                        async move { Ok::<_, Infallible>(answer(authorized)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            ca_pem,
            ca_file,
            ok,
            refused,
            task,
        })
    }
}

pub(super) fn answer(authorized: bool) -> Response<Full<Bytes>> {
    let (status, body) = if authorized {
        (
            StatusCode::OK,
            r#"{"object":"list","data":[{"id":"bench-model"}]}"#,
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"Incorrect API key provided"}}"#,
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

// --- HTTP clients -------------------------------------------------------------------

type Conn = SendRequest<Empty<Bytes>>;

pub(super) async fn http1<T>(io: T) -> anyhow::Result<Conn>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

pub(super) fn server_name() -> anyhow::Result<ServerName<'static>> {
    Ok(ServerName::try_from(UPSTREAM_HOST)?)
}

/// A kept-alive HTTPS connection straight to the upstream.
pub(super) async fn direct_conn(addr: SocketAddr, tls: &TlsConnector) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    http1(tls.connect(server_name()?, tcp).await?).await
}

/// `n` connections through the egress socket, as [`proxied_conn`] makes them.
pub(super) async fn proxied_conns(
    n: usize,
    socket: &Path,
    tls: &TlsConnector,
) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(proxied_conn(socket, tls).await?);
    }
    Ok(conns)
}

/// A kept-alive HTTPS connection through the sandbox's egress socket, made
/// the way the agent's bridge relays one from `127.0.0.1:3128` inside.
pub(super) async fn proxied_conn(socket: &Path, tls: &TlsConnector) -> anyhow::Result<Conn> {
    let mut s = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let authority = format!("{UPSTREAM_HOST}:443");
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    // Byte by byte, so nothing after the head (the TLS) is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(head.len() < 8192, "CONNECT response head too long");
        let mut b = [0u8; 1];
        ensure!(s.read(&mut b).await? == 1, "proxy closed during CONNECT");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    ensure!(
        head.split(' ').nth(1) == Some("200"),
        "CONNECT refused: {head}"
    );
    http1(tls.connect(server_name()?, s).await?).await
}

/// One GET; the status, after the whole body arrived.
pub(super) async fn get(c: &mut Conn, auth: &HeaderValue) -> anyhow::Result<StatusCode> {
    let req = Request::get(UPSTREAM_PATH)
        .header(HOST, UPSTREAM_HOST)
        .header(AUTHORIZATION, auth.clone())
        .body(Empty::new())?;
    c.ready().await?;
    let resp = c.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    Ok(status)
}

/// Every connection sends back to back: its share of `warmup`, then (after
/// all finished warming up) its share of `requests`, timed. Any answer other
/// than `expect` is an error. Returns the measured stats and how many
/// requests were sent.
pub(super) async fn load(
    conns: Vec<Conn>,
    auth: HeaderValue,
    expect: StatusCode,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<(Stats, usize)> {
    let n = conns.len();
    let (warm, per) = (warmup.div_ceil(n), requests.div_ceil(n));
    let start = Arc::new(Barrier::new(n + 1));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (auth, start) = (auth.clone(), start.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                let mut result = Ok(());
                for _ in 0..warm {
                    if let Err(e) = expect_status(&mut c, &auth, expect).await {
                        result = Err(e);
                        break;
                    }
                }
                start.wait().await;
                result?;
                for _ in 0..per {
                    let t = Instant::now();
                    expect_status(&mut c, &auth, expect).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    start.wait().await;
    let t = Instant::now();
    let mut all = Vec::with_capacity(per * n);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((Stats::new(all, t.elapsed()), (warm + per) * n))
}

pub(super) async fn expect_status(
    c: &mut Conn,
    auth: &HeaderValue,
    expect: StatusCode,
) -> anyhow::Result<()> {
    let status = get(c, auth).await?;
    ensure!(status == expect, "upstream answered {status}, not {expect}");
    Ok(())
}
