//! `docs/openapi.json` is generated from the code and must not drift.
//! Regenerate with: `cargo run -p miosa -- openapi > docs/openapi.json`
//! (or run this test with `UPDATE_OPENAPI=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestServer};
use reqwest::Method;

fn checked_in_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn checked_in_document_matches_the_code() {
    let generated = miosa_api::openapi::document_json();
    let path = checked_in_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/openapi.json is out of date: run `cargo run -p miosa -- openapi > docs/openapi.json`"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
}

/// Every documented operation is routed (none answers "no such route"),
/// and the served document equals the generated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed() {
    let t = TestServer::start(Backend::Sqlite).await;
    let served = t
        .anon
        .raw(Method::GET, "/openapi.json", None)
        .await
        .unwrap()
        .json();
    let generated: serde_json::Value =
        serde_json::from_str(&miosa_api::openapi::document_json()).unwrap();
    assert_eq!(served, generated);
    let paths = generated["paths"].as_object().unwrap();
    assert!(paths.len() >= 8);
    // Client generators need one unique operationId per operation.
    let mut ids = std::collections::BTreeSet::new();
    for ops in paths.values() {
        for op in ops.as_object().unwrap().values() {
            let id = op["operationId"]
                .as_str()
                .expect("every operation has an id");
            assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        }
    }
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "ws_01jdq3x5m8v2k7f4c9n6r1w0ab");
        for method in ops.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = t.admin.raw(m, &concrete, None).await.unwrap();
            let route_missing = r.status == 405
                || (r.status == 404 && r.json()["error"]["message"] == "route not found");
            assert!(
                !route_missing,
                "{method} {path} is documented but not routed"
            );
        }
    }
}
