//! Node's built-in `fetch` and `https.get` work unchanged inside a sandbox:
//! the runtime preloads `/run/miosa/node-egress.js` (through `NODE_OPTIONS`),
//! which sends them through the egress proxy, where placeholders become the
//! real secret. Real runc sandboxes, the real proxy, the host's `node`, and
//! the fake HTTPS "OpenAI" of `common/upstream.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{upstream::Upstream, Backend, TestEnv, TestServer};
use miosa_client::{Client, ExecResult};
use serde_json::json;

const OPENAI_KEY: &str = "sk-live-NodeFetch-4c1d8e2f9a7b3065";
const PRELOAD: &str = "/run/miosa/node-egress.js";

/// Runs `node -e script` as the sandbox's user with extra `env`.
async fn node_with(c: &Client, sandbox: &str, script: &str, env: serde_json::Value) -> ExecResult {
    c.exec(
        sandbox,
        &json!({"argv": ["node", "-e", script], "env": env, "timeout_seconds": 60}),
    )
    .await
    .unwrap()
}

/// Runs `node -e script` and returns its trimmed stdout; it must succeed.
async fn node(c: &Client, sandbox: &str, script: &str) -> String {
    let r = node_with(c, sandbox, script, json!({})).await;
    assert_eq!(r.exit_code, Some(0), "{script}\n{}{}", r.stdout, r.stderr);
    r.stdout.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fetch_and_https_go_through_the_egress_proxy() {
    let updir = tempfile::tempdir().unwrap();
    let up = Upstream::start(updir.path(), &["api.openai.com"], &[OPENAI_KEY]).await;
    let mut env = TestEnv::new(Backend::Sqlite).await;
    env.route_to(&up, &["api.openai.com"]);
    let t = TestServer::start_in(env).await;
    let c = &t.admin;
    c.set_secret(&json!({
        "name": "openai", "value": OPENAI_KEY, "scope": "tenant",
        "expose_as_env": "OPENAI_API_KEY", "allowed_hosts": ["api.openai.com"]
    }))
    .await
    .unwrap();
    let sbx = c.create_sandbox(&json!({})).await.unwrap();
    let id = sbx.id.as_str();

    let version = node(c, id, "console.log(process.version)").await;
    assert!(version.starts_with('v'), "{version}");
    eprintln!("node in the sandbox: {version}");
    let placeholder = node(c, id, "console.log(process.env.OPENAI_API_KEY)").await;
    assert!(placeholder.starts_with("miosa_ph_"), "{placeholder}");
    assert_eq!(
        node(c, id, "console.log(process.env.NODE_OPTIONS)").await,
        format!("--require {PRELOAD}")
    );
    // The host's file (host root is `nobody` in the sandbox's user
    // namespace), readable and writable by no one inside, root included.
    for user in ["user", "root"] {
        let r = c
            .exec(
                id,
                &json!({"user": user, "command": format!(
                    "stat -c '%u %a' {PRELOAD}; test -w {PRELOAD} || echo ro"
                )}),
            )
            .await
            .unwrap();
        assert_eq!(r.stdout, "65534 644\nro\n", "{user}: {}", r.stderr);
    }

    // The one-liner from the docs: 200, and the upstream got the real key.
    let get = "fetch('https://api.openai.com/v1/models',{headers:{Authorization:'Bearer '+process.env.OPENAI_API_KEY}}).then(r=>console.log(r.status))";
    assert_eq!(node(c, id, get).await, "200");
    let seen = up.seen().last().cloned().unwrap();
    assert_eq!(
        (seen.host.as_str(), seen.method.as_str()),
        ("api.openai.com", "GET")
    );
    assert_eq!(
        seen.authorization.as_deref(),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );

    // A JSON body holding the placeholder stays as it is by default (the
    // value goes in headers only); the response body streams back.
    let post = "const key=process.env.OPENAI_API_KEY;\
        fetch('https://api.openai.com/v1/chat/completions',{method:'POST',\
          headers:{Authorization:'Bearer '+key,'Content-Type':'application/json'},\
          body:JSON.stringify({model:'gpt-test',note:'key='+key})})\
        .then(async r=>console.log(r.status,(await r.json()).data[0].id))";
    assert_eq!(node(c, id, post).await, "200 gpt-test");
    let seen = up.seen().last().cloned().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path_and_query.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(
        String::from_utf8(seen.body).unwrap(),
        format!(r#"{{"model":"gpt-test","note":"key={placeholder}"}}"#)
    );
    // A secret that opts in to the body has it substituted there too.
    c.set_secret(&json!({
        "name": "openai", "value": OPENAI_KEY, "scope": "tenant",
        "expose_as_env": "OPENAI_API_KEY", "substitute_in": ["headers", "body"]
    }))
    .await
    .unwrap();
    assert_eq!(node(c, id, post).await, "200 gpt-test");
    let seen = up.seen().last().cloned().unwrap();
    assert_eq!(
        String::from_utf8(seen.body).unwrap(),
        format!(r#"{{"model":"gpt-test","note":"key={OPENAI_KEY}"}}"#)
    );

    // `https.get` with the default agent.
    let https_get = "require('https').get('https://api.openai.com/v1/models',\
          {headers:{Authorization:'Bearer '+process.env.OPENAI_API_KEY}},\
          r=>{let b='';r.on('data',c=>b+=c);r.on('end',()=>console.log(r.statusCode,JSON.parse(b).object))})\
        .on('error',e=>{console.error(e.message);process.exit(1)})";
    assert_eq!(node(c, id, https_get).await, "200 list");
    assert_eq!(up.seen().last().unwrap().path_and_query, "/v1/models");

    // Cloud metadata: refused by the proxy, and fetch sees its 403.
    let metadata =
        "fetch('http://169.254.169.254/latest/meta-data/').then(r=>console.log(r.status))";
    assert_eq!(node(c, id, metadata).await, "403");

    // NO_PROXY: the sandbox's own loopback is reached directly; a large
    // body streams through the dispatcher intact.
    let local = "const http=require('http');const block=Buffer.alloc(65536,120);\
        const s=http.createServer((q,res)=>{let n=0;const pump=()=>{while(n<64){n++;if(!res.write(block))return res.once('drain',pump)}res.end()};pump()})\
        .listen(0,'127.0.0.1',async()=>{const r=await fetch('http://127.0.0.1:'+s.address().port+'/');\
          let bytes=0;for await(const c of r.body)bytes+=c.length;console.log(r.status,bytes);s.close()})";
    assert_eq!(node(c, id, local).await, "200 4194304");

    // A caller's NODE_OPTIONS is added to ours, so fetch keeps going
    // through the proxy; naming the preload itself does not load it twice,
    // and an empty value changes nothing.
    let title = "console.log(process.title, process.env.NODE_OPTIONS)";
    let script = format!("{get};{title}");
    for (own, want) in [
        (
            "--title=miosa-node-test".to_owned(),
            format!("miosa-node-test --require {PRELOAD} --title=miosa-node-test"),
        ),
        (
            format!("--require {PRELOAD} --title=miosa-node-test"),
            format!("miosa-node-test --require {PRELOAD} --title=miosa-node-test"),
        ),
    ] {
        let r = node_with(c, id, &script, json!({ "NODE_OPTIONS": own })).await;
        assert_eq!(r.exit_code, Some(0), "{}", r.stderr);
        let mut lines: Vec<&str> = r.stdout.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["200", want.as_str()]);
    }
    let r = node_with(c, id, get, json!({"NODE_OPTIONS": ""})).await;
    assert_eq!(r.stdout.trim(), "200", "{}", r.stderr);

    // The same at create: the sandbox's own NODE_OPTIONS keeps the preload.
    let own = c
        .create_sandbox(&json!({"env": {"NODE_OPTIONS": "--title=miosa-created"}}))
        .await
        .unwrap();
    let r = node_with(c, own.id.as_str(), &script, json!({})).await;
    let mut lines: Vec<&str> = r.stdout.lines().collect();
    lines.sort_unstable();
    let want = format!("miosa-created --require {PRELOAD} --title=miosa-created");
    assert_eq!(lines, ["200", want.as_str()], "{}", r.stderr);
    c.delete_sandbox(own.id.as_str()).await.unwrap();
}
