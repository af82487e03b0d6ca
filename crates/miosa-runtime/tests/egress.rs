//! The sandbox side of egress with real runc: proxy variables, the trust
//! bundle with the proxy's CA, and the agent's bridge to a host socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use common::TestHost;
use futures_util::StreamExt;
use miosa_agent::{
    tokio_tungstenite::tungstenite::Message, AgentClient, ExecOutput, ExecRequest, PtyRequest,
    RunAs,
};
use miosa_runtime::{RuntimeError, SandboxSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The variables a sandbox with egress has, exactly.
const EGRESS_ENV: &[(&str, &str)] = &[
    ("HTTP_PROXY", "http://127.0.0.1:3128"),
    ("HTTPS_PROXY", "http://127.0.0.1:3128"),
    ("http_proxy", "http://127.0.0.1:3128"),
    ("https_proxy", "http://127.0.0.1:3128"),
    ("ALL_PROXY", "http://127.0.0.1:3128"),
    ("all_proxy", "http://127.0.0.1:3128"),
    ("NO_PROXY", "localhost,127.0.0.1"),
    ("no_proxy", "localhost,127.0.0.1"),
    ("SSL_CERT_FILE", SYSTEM_BUNDLE),
    ("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE),
    ("CURL_CA_BUNDLE", SYSTEM_BUNDLE),
    ("NODE_EXTRA_CA_CERTS", "/run/miosa/egress-ca.pem"),
];

/// A fresh CA, as the egress proxy would make one.
fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(params, key))
}

fn ca_pem(name: &str) -> String {
    make_ca(name).0.pem()
}

fn egress_spec(host: &TestHost, pem: &str) -> SandboxSpec {
    let mut spec = host.spec();
    spec.egress_ca_pem = Some(pem.to_string());
    spec
}

/// Runs `script` with `/bin/sh -c` through the agent.
async fn sh(client: &AgentClient, user: RunAs, script: &str) -> ExecOutput {
    let mut req = ExecRequest::new(["/bin/sh", "-c", script]);
    req.user = user;
    req.timeout = Some(Duration::from_secs(30));
    req.max_output_bytes = 4 << 20;
    client.exec(&req).await.unwrap()
}

fn text(out: &ExecOutput) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.exit_code,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `env` output (one `K=V` per line) holds every egress variable.
fn assert_egress_env(env: &str, what: &str) {
    let lines: Vec<&str> = env.lines().map(|l| l.trim_end_matches('\r')).collect();
    for (k, v) in EGRESS_ENV {
        let want = format!("{k}={v}");
        assert!(
            lines.contains(&want.as_str()),
            "{what}: {want} missing in:\n{env}"
        );
    }
}

/// Output of `cmd` run on a terminal, up to the session's end.
async fn pty_output(client: &AgentClient, user: RunAs, cmd: &str) -> String {
    let req = PtyRequest {
        user,
        cmd: Some(cmd.into()),
        ..PtyRequest::default()
    };
    let mut ws = client.pty(&req).await.unwrap();
    let mut output = String::new();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg.unwrap() {
                Message::Binary(b) => output.push_str(&String::from_utf8_lossy(&b)),
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("terminal session did not end");
    output
}

#[tokio::test]
async fn exec_and_terminals_inherit_the_proxy_environment() {
    let host = TestHost::new().await;
    let spec = egress_spec(&host, &ca_pem("env test CA"));
    host.runtime.create(&spec).await.unwrap();
    let client = AgentClient::new(host.runtime.agent_socket(&spec.id));

    for user in [RunAs::Root, RunAs::User] {
        let out = client
            .exec(&{
                let mut r = ExecRequest::new(["env"]);
                r.user = user;
                r
            })
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(0), "{}", text(&out));
        assert_egress_env(
            &String::from_utf8_lossy(&out.stdout),
            &format!("{user:?} exec"),
        );
    }
    let out = sh(&client, RunAs::User, "id -u").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1000\n");

    for user in [RunAs::Root, RunAs::User] {
        let env = pty_output(&client, user, "env").await;
        assert_egress_env(&env, &format!("{user:?} terminal"));
    }

    host.runtime.destroy(&spec.id).await.unwrap();
    host.assert_no_trace(&spec.id);
}

#[tokio::test]
async fn the_trust_bundle_ends_with_the_ca_and_only_root_outside_can_change_it() {
    let host = TestHost::new().await;
    let (ca, issuer) = make_ca("bundle test CA");
    let pem = ca.pem();
    let spec = egress_spec(&host, &pem);
    host.runtime.create(&spec).await.unwrap();
    let client = AgentClient::new(host.runtime.agent_socket(&spec.id));

    // What the sandbox reads: the host's bundle, then the CA; and the CA alone.
    let out = sh(&client, RunAs::User, &format!("cat {SYSTEM_BUNDLE}")).await;
    assert_eq!(out.exit_code, Some(0), "{}", text(&out));
    let host_bundle = std::fs::read(SYSTEM_BUNDLE).unwrap();
    assert!(out.stdout.starts_with(&host_bundle));
    assert!(
        out.stdout.ends_with(pem.as_bytes()),
        "the bundle does not end with the CA"
    );
    let out = sh(&client, RunAs::User, "cat /run/miosa/egress-ca.pem").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), pem);

    // Tools trust a leaf the CA signs, through the default paths.
    let mut leaf = rcgen::CertificateParams::new(vec!["example.test".to_string()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "example.test");
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let out = sh(
        &client,
        RunAs::User,
        &format!(
            "printf '%s' '{}' > /tmp/leaf.pem && openssl verify /tmp/leaf.pem",
            leaf.pem()
        ),
    )
    .await;
    assert_eq!(out.exit_code, Some(0), "{}", text(&out));

    // The user cannot change the bundle, the CA, or what is in /run/miosa.
    for attempt in [
        format!("echo x >> {SYSTEM_BUNDLE}"),
        "echo x >> /run/miosa/egress-ca.pem".into(),
        "echo x >> /run/miosa/ca-bundle.pem".into(),
        "touch /run/miosa/new-file".into(),
        "rm -f /run/miosa/egress-ca.pem".into(),
        "mv /run/miosa/egress-ca.pem /run/miosa/x".into(),
        "chmod 666 /run/miosa/egress-ca.pem".into(),
        "ls /run/miosa".into(),
        "python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('/run/miosa/agent.sock')\"".into(),
    ] {
        let out = sh(&client, RunAs::User, &attempt).await;
        assert_ne!(out.exit_code, Some(0), "{attempt} succeeded: {}", text(&out));
    }
    // Even root inside cannot write through the read-only bind.
    let out = sh(&client, RunAs::Root, &format!("echo x >> {SYSTEM_BUNDLE}")).await;
    assert_ne!(out.exit_code, Some(0), "{}", text(&out));

    // On the host: root-owned, 0644 files in a 0711 directory of the
    // sandbox's root (an unprivileged host id).
    let run = host.sandbox_dir(&spec.id).join("run");
    let mode = |p: PathBuf| {
        let m = std::fs::metadata(&p).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    let (uid, gid) = host.runtime.root_ids(&spec.id).unwrap();
    assert!(uid >= 1 << 28, "{uid}");
    assert_eq!(mode(run.clone()), (0o711, uid, gid));
    assert_eq!(mode(run.join("egress-ca.pem")), (0o644, 0, 0));
    assert_eq!(mode(run.join("ca-bundle.pem")), (0o644, 0, 0));
    // The agent still answers on its socket in that directory.
    client.health().await.unwrap();

    host.runtime.destroy(&spec.id).await.unwrap();
    host.assert_no_trace(&spec.id);
}

/// A fake egress proxy on the sandbox's host socket: answers every
/// connection with `answer` and sends each request head down `heads`.
fn fake_proxy(
    listener: UnixListener,
    answer: &'static str,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, heads) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (heads, task)
}

#[tokio::test]
async fn curl_reaches_the_host_proxy_through_the_bridge_or_gets_a_502() {
    let host = TestHost::new().await;
    let spec = egress_spec(&host, &ca_pem("bridge test CA"));
    host.runtime.create(&spec).await.unwrap();
    let client = AgentClient::new(host.runtime.agent_socket(&spec.id));
    let socket = host.runtime.egress_socket(&spec.id);
    assert_eq!(
        socket,
        host.sandbox_dir(&spec.id).join("run").join("egress.sock")
    );

    // Nobody listens yet: the bridge answers for the proxy.
    let out = sh(
        &client,
        RunAs::User,
        "curl -s -w '\\n%{http_code}' http://example.test/hello",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "miosa egress proxy unavailable\n\n502",
        "{}",
        text(&out)
    );

    const BODY: &str = "hello from the host\n";
    const ANSWER: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nhello from the host\n";
    assert_eq!(BODY.len(), 20);
    // As the real proxy does: a socket only the sandbox's root may use.
    let listener = UnixListener::bind(&socket).unwrap();
    let (uid, gid) = host.runtime.root_ids(&spec.id).unwrap();
    std::os::unix::fs::chown(&socket, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (mut heads, proxy) = fake_proxy(listener, ANSWER);
    for user in [RunAs::User, RunAs::Root] {
        let out = sh(&client, user, "curl -s http://example.test/hello").await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), BODY, "{}", text(&out));
        let head = tokio::time::timeout(Duration::from_secs(5), heads.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            head.starts_with("GET http://example.test/hello HTTP/1.1\r\n"),
            "{head}"
        );
    }

    // Many at once, each on its own connection through the bridge.
    let out = sh(
        &client,
        RunAs::User,
        "for i in $(seq 40); do curl -s http://example.test/hello > /tmp/out.$i & done; wait; cat /tmp/out.*",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        BODY.repeat(40),
        "{}",
        text(&out)
    );
    for _ in 0..40 {
        let head = heads.recv().await.unwrap();
        assert!(head.starts_with("GET http://example.test/hello "), "{head}");
    }

    // HTTPS goes to the proxy as a CONNECT tunnel.
    let out = sh(&client, RunAs::User, "curl -s https://example.test/x").await;
    assert_ne!(out.exit_code, Some(0), "no TLS server: {}", text(&out));
    let head = tokio::time::timeout(Duration::from_secs(5), heads.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        head.starts_with("CONNECT example.test:443 HTTP/1.1\r\n"),
        "{head}"
    );

    // As the real proxy does: let go of the socket (which is on the
    // sandbox's disk) before the sandbox is destroyed.
    proxy.abort();
    let _ = proxy.await;
    host.runtime.destroy(&spec.id).await.unwrap();
    host.assert_no_trace(&spec.id);
}

#[tokio::test]
async fn replacing_the_ca_rewrites_it_in_place() {
    let host = TestHost::new().await;
    let old = ca_pem("old CA");
    let new = ca_pem("new CA");
    let spec = egress_spec(&host, &old);
    host.runtime.create(&spec).await.unwrap();
    let client = AgentClient::new(host.runtime.agent_socket(&spec.id));
    let run = host.sandbox_dir(&spec.id).join("run");
    let inodes = || {
        ["egress-ca.pem", "ca-bundle.pem"].map(|f| std::fs::metadata(run.join(f)).unwrap().ino())
    };
    let before = inodes();

    host.runtime
        .replace_egress_ca(&spec.id, &new)
        .await
        .unwrap();
    assert_eq!(inodes(), before, "the files were replaced, not rewritten");
    let out = sh(&client, RunAs::User, "cat /run/miosa/egress-ca.pem").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), new);
    let out = sh(&client, RunAs::User, &format!("cat {SYSTEM_BUNDLE}")).await;
    let bundle = String::from_utf8_lossy(&out.stdout);
    assert!(
        bundle.ends_with(&new),
        "the sandbox does not see the new CA"
    );
    assert!(!bundle.contains(&old), "the old CA is still trusted");
    assert_eq!(
        bundle.len(),
        std::fs::metadata(SYSTEM_BUNDLE).unwrap().len() as usize + new.len()
    );

    // Root inside may swap the file for a symlink to a host path: the host
    // must refuse rather than write through it.
    let decoy = host.data_dir.join("decoy");
    std::fs::write(&decoy, "untouched").unwrap();
    let out = sh(
        &client,
        RunAs::Root,
        &format!(
            "rm /run/miosa/egress-ca.pem && ln -s {} /run/miosa/egress-ca.pem",
            decoy.display()
        ),
    )
    .await;
    assert_eq!(out.exit_code, Some(0), "{}", text(&out));
    let err = host
        .runtime
        .replace_egress_ca(&spec.id, &old)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Io { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&decoy).unwrap(), "untouched");

    // Bad input and unknown sandboxes.
    assert!(matches!(
        host.runtime.replace_egress_ca(&spec.id, "junk").await,
        Err(RuntimeError::InvalidSpec {
            field: "egress_ca_pem",
            ..
        })
    ));
    assert!(matches!(
        host.runtime.replace_egress_ca("sbx_nothere", &new).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        host.runtime.replace_egress_ca("../x", &new).await,
        Err(RuntimeError::InvalidSpec { field: "id", .. })
    ));

    host.runtime.destroy(&spec.id).await.unwrap();
    host.assert_no_trace(&spec.id);
}

#[tokio::test]
async fn without_a_ca_there_is_no_proxy_environment_and_the_host_bundle() {
    let host = TestHost::new().await;
    let spec = host.spec();
    assert_eq!(spec.egress_ca_pem, None);
    host.runtime.create(&spec).await.unwrap();
    let client = AgentClient::new(host.runtime.agent_socket(&spec.id));

    let out = sh(&client, RunAs::User, "env").await;
    let env = String::from_utf8_lossy(&out.stdout);
    for (k, _) in EGRESS_ENV {
        assert!(
            !env.lines().any(|l| l.starts_with(&format!("{k}="))),
            "{k} set without egress:\n{env}"
        );
    }
    let pty_env = pty_output(&client, RunAs::User, "env").await;
    assert!(
        !pty_env.contains("_proxy=") && !pty_env.contains("_PROXY="),
        "{pty_env}"
    );

    let out = sh(&client, RunAs::User, &format!("cat {SYSTEM_BUNDLE}")).await;
    assert_eq!(out.stdout, std::fs::read(SYSTEM_BUNDLE).unwrap());
    let run = host.sandbox_dir(&spec.id).join("run");
    assert!(!run.join("egress-ca.pem").exists());
    assert!(!run.join("ca-bundle.pem").exists());
    // There is nothing to replace.
    let err = host
        .runtime
        .replace_egress_ca(&spec.id, &ca_pem("late CA"))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Io { .. }), "{err}");
    assert!(
        !run.join("egress-ca.pem").exists(),
        "replace created a file"
    );
}
