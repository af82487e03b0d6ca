//! Exec through the client against an in-process agent.
#![allow(clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{start_agent, wait_gone};
use futures_util::StreamExt;
use miosa_agent::{AgentError, ExecEvent, ExecRequest, RunAs};

#[allow(clippy::unwrap_used)]
fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trip_separates_streams_and_exit_codes() {
    let agent = start_agent().await;
    let out = agent
        .client
        .exec(&ExecRequest::new(["echo", "hello", "world"]))
        .await
        .unwrap();
    assert_eq!(text(&out.stdout), "hello world\n");
    assert!(out.stderr.is_empty());
    assert_eq!(
        (out.exit_code, out.signal, out.timed_out),
        (Some(0), None, false)
    );
    assert!(out.success());

    let out = agent
        .client
        .exec(&ExecRequest::shell("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.exit_code, Some(3));
    assert!(!out.success());

    let out = agent
        .client
        .exec(&ExecRequest::shell("kill -TERM $$"))
        .await
        .unwrap();
    assert_eq!((out.exit_code, out.signal), (None, Some(15)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_env_and_cwd() {
    let agent = start_agent().await;
    let mut req = ExecRequest::new(["cat"]);
    let input: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    req.stdin = Some(input.clone());
    let out = agent.client.exec(&req).await.unwrap();
    assert_eq!(out.stdout, input, "stdin is passed through byte-exact");

    let mut req = ExecRequest::shell(
        "echo \"$GREETING|$HOME|$USER|$LOGNAME|${MIOSA_AGENT_CHILD:-none}\"; test -n \"$PATH\"",
    );
    req.env.insert("GREETING".into(), "hi there".into());
    let out = agent.client.exec(&req).await.unwrap();
    assert_eq!(text(&out.stdout), "hi there|/home/user|user|user|none\n");
    assert_eq!(out.exit_code, Some(0));

    // Request variables override the base environment, which is inherited.
    std::env::var("PATH").unwrap();
    let mut req = ExecRequest::shell("echo $HOME; echo $PATH");
    req.env.insert("HOME".into(), "/elsewhere".into());
    req.user = RunAs::Root;
    let out = agent.client.exec(&req).await.unwrap();
    let expected = format!("/elsewhere\n{}\n", std::env::var("PATH").unwrap());
    assert_eq!(text(&out.stdout), expected);

    let mut req = ExecRequest::new(["pwd"]);
    req.cwd = Some(common::path_str(agent.dir.path()));
    let out = agent.client.exec(&req).await.unwrap();
    assert_eq!(
        text(&out.stdout).trim_end(),
        common::path_str(agent.dir.path())
    );

    let mut req = ExecRequest::new(["pwd"]);
    req.cwd = Some("/tmp/../usr".into());
    let out = agent.client.exec(&req).await.unwrap();
    assert_eq!(text(&out.stdout), "/usr\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_user_or_root() {
    let agent = start_agent().await;
    let out = agent
        .client
        .exec(&ExecRequest::shell(
            "id -u; id -g; id -G; cat /proc/self/oom_score_adj",
        ))
        .await
        .unwrap();
    assert_eq!(text(&out.stdout), "1000\n1000\n1000\n500\n", "{out:?}");

    let mut req = ExecRequest::shell("id -u; id -g");
    req.user = RunAs::Root;
    let out = agent.client.exec(&req).await.unwrap();
    assert_eq!(text(&out.stdout), "0\n0\n");

    // Commands start with no blocked signals and SIGPIPE at its default
    // (Rust ignores it in the agent).
    let out = agent
        .client
        .exec(&ExecRequest::new([
            "grep",
            "-E",
            "^Sig(Blk|Ign)",
            "/proc/self/status",
        ]))
        .await
        .unwrap();
    let masks: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|l| u64::from_str_radix(l.split('\t').nth(1).unwrap(), 16).unwrap())
        .collect();
    assert_eq!(masks[0], 0, "blocked signals: {}", text(&out.stdout));
    assert_eq!(masks[1] & (1 << (13 - 1)), 0, "SIGPIPE ignored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstartable_commands_are_invalid_before_streaming() {
    let agent = start_agent().await;
    let err = agent
        .client
        .exec(&ExecRequest::new(["/nonexistent/miosa-binary"]))
        .await
        .unwrap_err();
    match err {
        AgentError::Invalid(m) => {
            assert!(m.starts_with("cannot start"), "{m}");
            assert!(m.ends_with("No such file or directory"), "{m}");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    let err = agent
        .client
        .exec(&ExecRequest::new(["no-such-command-miosa"]))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Invalid(_)), "{err:?}");

    let mut req = ExecRequest::new(["true"]);
    req.cwd = Some("/nonexistent-miosa-dir".into());
    let err = agent.client.exec(&req).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Invalid(m) if m.contains("No such file or directory")),
        "{err:?}"
    );

    let err = agent
        .client
        .exec(&ExecRequest::new(Vec::<String>::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Invalid(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group() {
    let agent = start_agent().await;
    let mut req = ExecRequest::shell("sleep 100 & echo $!; sleep 100");
    req.timeout = Some(Duration::from_millis(500));
    let began = Instant::now();
    let out = agent.client.exec(&req).await.unwrap();
    let took = began.elapsed();
    assert!(out.timed_out);
    assert_eq!((out.exit_code, out.signal), (None, Some(9)));
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let grandchild: u32 = text(&out.stdout).trim().parse().unwrap();
    assert!(
        wait_gone(grandchild, Duration::from_secs(2)).await,
        "background child {grandchild} survived the timeout"
    );
    assert!(agent.client.processes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_cap_is_truncated_exactly() {
    let agent = start_agent().await;
    let req = ExecRequest::shell("head -c 5000000 /dev/zero; echo done >&2");
    let out = agent.client.exec(&req).await.unwrap();
    assert_eq!(out.stdout.len(), miosa_agent::DEFAULT_MAX_OUTPUT_BYTES);
    assert!(out.stdout.iter().all(|b| *b == 0));
    assert!(out.stdout_truncated && !out.stderr_truncated);
    assert_eq!(text(&out.stderr), "done\n");
    assert_eq!(out.exit_code, Some(0), "the command ran to the end");

    let mut req = ExecRequest::shell("head -c 5000 /dev/zero");
    req.max_output_bytes = 1000;
    let out = agent.client.exec(&req).await.unwrap();
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout_truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_events_and_disconnect_kills() {
    let agent = start_agent().await;
    let mut events = Box::pin(
        agent
            .client
            .exec_stream(&ExecRequest::shell("echo a; sleep 0.1; echo b >&2; exit 7"))
            .await
            .unwrap(),
    );
    let mut seen = Vec::new();
    while let Some(e) = events.next().await {
        seen.push(e.unwrap());
    }
    assert!(matches!(seen[0], ExecEvent::Start { pid } if pid > 1));
    assert_eq!(seen[1], ExecEvent::Stdout("a\n".into()));
    assert_eq!(seen[2], ExecEvent::Stderr("b\n".into()));
    assert!(matches!(seen[3], ExecEvent::Exit(i) if i.exit_code == Some(7)));
    assert_eq!(seen.len(), 4);

    let mut events = Box::pin(
        agent
            .client
            .exec_stream(&ExecRequest::shell("sleep 30 & echo $!; sleep 30"))
            .await
            .unwrap(),
    );
    let Some(Ok(ExecEvent::Start { pid })) = events.next().await else {
        panic!("no start event");
    };
    let Some(Ok(ExecEvent::Stdout(line))) = events.next().await else {
        panic!("no stdout event");
    };
    let grandchild: u32 = text(&line).trim().parse().unwrap();
    assert!(common::alive(pid) && common::alive(grandchild));
    assert_eq!(agent.client.processes().await.unwrap().len(), 1);
    drop(events);
    assert!(
        wait_gone(pid, Duration::from_secs(3)).await,
        "command survived the disconnect"
    );
    assert!(wait_gone(grandchild, Duration::from_secs(2)).await);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !agent.client.processes().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "process still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_latency() {
    let agent = start_agent().await;
    let req = ExecRequest::new(["echo", "hi"]);
    agent.client.exec(&req).await.unwrap();
    let n = 50;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = agent.client.exec(&req).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(out.stdout, b"hi\n");
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / n as u32;
    println!(
        "echo exec round-trip over {n} runs: mean {mean:?}, p50 {:?}, p90 {:?}, max {:?}",
        times[n / 2],
        times[n * 9 / 10],
        times[n - 1]
    );
    assert!(
        times[n / 2] < Duration::from_millis(100),
        "p50 {:?}",
        times[n / 2]
    );
}
