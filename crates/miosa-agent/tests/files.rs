//! The file API through the client.
#![allow(clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;

use bytes::Bytes;
use common::{path_str, start_agent};
use futures_util::StreamExt;
use miosa_agent::{AgentError, FileBody, FileType, RunAs};

/// Deterministic pseudo-random bytes (xorshift), incompressible enough.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_list_and_owners() {
    let agent = start_agent().await;
    let work = tempfile::tempdir().unwrap();
    let root = path_str(work.path());
    let data = noise(3 * 1024 * 1024 + 17);
    let target = format!("{root}/a/b/c/blob.bin");

    let entry = agent
        .client
        .write_file(&target, data.clone(), RunAs::User)
        .await
        .unwrap();
    assert_eq!(
        (entry.file_type, entry.size),
        (FileType::File, data.len() as u64)
    );
    assert_eq!(entry.mode, "0644");
    for p in ["a", "a/b", "a/b/c", "a/b/c/blob.bin"] {
        let meta = std::fs::metadata(work.path().join(p)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000), "{p}");
    }
    assert_eq!(
        std::fs::metadata(work.path()).unwrap().uid(),
        0,
        "existing parents keep their owner"
    );
    assert_eq!(agent.client.read_file_bytes(&target).await.unwrap(), data);

    // Streamed upload and streamed download, written as root.
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(100_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let streamed = format!("{root}/streamed.bin");
    agent
        .client
        .write_file(
            &streamed,
            FileBody::from_stream(futures_util::stream::iter(chunks)),
            RunAs::Root,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&streamed).unwrap().uid(), 0);
    let mut stream = Box::pin(agent.client.read_file(&streamed).await.unwrap());
    let mut back = Vec::new();
    while let Some(c) = stream.next().await {
        back.extend_from_slice(&c.unwrap());
    }
    assert_eq!(back, data);

    // Overwrite keeps the mode; no temporary files are left behind.
    std::fs::set_permissions(
        &streamed,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let e = agent
        .client
        .write_file(&streamed, &b"#!/bin/sh\n"[..], RunAs::Root)
        .await
        .unwrap();
    assert_eq!((e.mode.as_str(), e.size), ("0755", 10));
    std::os::unix::fs::symlink("streamed.bin", work.path().join("link")).unwrap();
    std::fs::write(work.path().join(".hidden"), b"").unwrap();

    let list = agent.client.list_dir(&root).await.unwrap();
    let names: Vec<_> = list.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, [".hidden", "a", "link", "streamed.bin"]);
    let a = &list[1];
    assert_eq!(
        (a.file_type, a.path.as_str()),
        (FileType::Dir, format!("{root}/a").as_str())
    );
    assert_eq!(a.mode, "0755");
    assert_eq!(list[2].file_type, FileType::Symlink);
    assert_eq!(list[3].mode, "0755");
    assert!((time::OffsetDateTime::now_utc() - list[3].modified_at).whole_seconds() < 60);

    // Reading through a symlink follows it; listing a file is invalid.
    assert_eq!(
        agent
            .client
            .read_file_bytes(&format!("{root}/link"))
            .await
            .unwrap(),
        b"#!/bin/sh\n"
    );
    let err = agent.client.list_dir(&streamed).await.unwrap_err();
    assert!(matches!(err, AgentError::Invalid(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkdir_remove_and_errors() {
    let agent = start_agent().await;
    let work = tempfile::tempdir().unwrap();
    let root = path_str(work.path());

    let e = agent
        .client
        .mkdir(&format!("{root}/x/y/z"), RunAs::User)
        .await
        .unwrap();
    assert_eq!((e.file_type, e.name.as_str()), (FileType::Dir, "z"));
    assert_eq!(
        std::fs::metadata(work.path().join("x/y/z")).unwrap().uid(),
        1000
    );
    // Idempotent for directories, a conflict for anything else.
    agent
        .client
        .mkdir(&format!("{root}/x/y/z"), RunAs::User)
        .await
        .unwrap();
    agent
        .client
        .write_file(&format!("{root}/x/file"), b"f".to_vec(), RunAs::User)
        .await
        .unwrap();
    let err = agent
        .client
        .mkdir(&format!("{root}/x/file"), RunAs::User)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Conflict(_)), "{err:?}");
    let err = agent
        .client
        .mkdir(&format!("{root}/x/file/sub"), RunAs::User)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Conflict(_)), "{err:?}");

    // Directory as a file.
    let err = agent
        .client
        .read_file_bytes(&format!("{root}/x"))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Invalid(_)), "{err:?}");
    let err = agent
        .client
        .write_file(&format!("{root}/x"), b"no".to_vec(), RunAs::User)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Invalid(_)), "{err:?}");

    // Missing things.
    let missing = format!("{root}/missing");
    for err in [
        agent.client.read_file_bytes(&missing).await.unwrap_err(),
        agent.client.list_dir(&missing).await.unwrap_err(),
        agent.client.remove(&missing).await.unwrap_err(),
    ] {
        assert!(matches!(err, AgentError::NotFound(_)), "{err:?}");
    }

    // Recursive removal; symlinks are removed, not followed.
    let keep = tempfile::tempdir().unwrap();
    std::fs::write(keep.path().join("precious"), b"p").unwrap();
    std::os::unix::fs::symlink(keep.path(), work.path().join("x/y/link")).unwrap();
    agent.client.remove(&format!("{root}/x")).await.unwrap();
    assert!(!work.path().join("x").exists());
    assert!(keep.path().join("precious").exists());

    // Bad paths.
    for bad in ["", "a\0b"] {
        let err = agent.client.list_dir(bad).await.unwrap_err();
        assert!(matches!(err, AgentError::Invalid(_)), "{bad:?}: {err:?}");
    }
    let err = agent.client.remove("/").await.unwrap_err();
    assert!(matches!(err, AgentError::Forbidden(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_directory_is_off_limits() {
    let agent = start_agent().await;
    let socket_dir = path_str(agent.dir.path());
    let sock = format!("{socket_dir}/agent.sock");
    for err in [
        agent.client.list_dir("/run/miosa").await.unwrap_err(),
        agent
            .client
            .list_dir("/run/./miosa/../miosa")
            .await
            .unwrap_err(),
        agent
            .client
            .read_file_bytes("/run/miosa/agent.sock")
            .await
            .unwrap_err(),
        agent
            .client
            .write_file("/run/miosa/x", b"x".to_vec(), RunAs::Root)
            .await
            .unwrap_err(),
        agent
            .client
            .mkdir("/run/miosa/d", RunAs::Root)
            .await
            .unwrap_err(),
        agent.client.remove("/run/miosa").await.unwrap_err(),
        agent.client.remove(&sock).await.unwrap_err(),
        agent.client.list_dir(&socket_dir).await.unwrap_err(),
    ] {
        assert!(matches!(err, AgentError::Forbidden(_)), "{err:?}");
    }
    // Removing an ancestor would remove it too.
    let parent = path_str(agent.dir.path().parent().unwrap());
    let err = agent.client.remove(&parent).await.unwrap_err();
    assert!(matches!(err, AgentError::Forbidden(_)), "{err:?}");
    // Nor through a symlink.
    let work = tempfile::tempdir().unwrap();
    let link = work.path().join("sneaky");
    std::os::unix::fs::symlink(agent.dir.path(), &link).unwrap();
    let err = agent
        .client
        .remove(&format!("{}/agent.sock", path_str(&link)))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Forbidden(_)), "{err:?}");
    assert!(std::path::Path::new(&sock).exists());
    agent.client.health().await.unwrap();
}
