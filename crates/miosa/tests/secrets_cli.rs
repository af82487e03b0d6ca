//! `miosa secrets …` and `miosa audit …` as an operator runs them: the real
//! binary as the server (debug logs and its banner captured to a file) and
//! as the client. A value goes in on standard input or from a file and never
//! comes out again: not in any command's output, not in the server's log,
//! not in any file under the data dir (the SQLite database and its WAL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::Write,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{contains, files_under, Backend, TestEnv};
use serde_json::Value;

const OPENAI_KEY: &str = "sk-live-cli-5e4d3c2b1a09f8e7";
const ROTATED_KEY: &str = "sk-live-cli-rotated-77aa66bb55";
const EHR_KEY: &str = "ehr-cli-Q1w2E3r4T5y6U7i8";
const REFUSED_KEY: &str = "sk-live-cli-refused-0f1e2d3c";
const DR_SMITH: &str = "dr_smith@clinic1.example";

fn miosa(env: &TestEnv) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_miosa"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env.vars)
        .current_dir(env.dir.path());
    cmd
}

/// A `miosa serve` child process, killed if the test ends without stopping it.
struct Server(Child);

impl Server {
    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        self.0.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `miosa serve` with debug logs; stdout and stderr both go to `log`.
/// Returns the server, its URL and the admin key from its banner.
fn serve(env: &TestEnv, log: &Path) -> (Server, String, String) {
    let file = std::fs::File::create(log).unwrap();
    let server = Server(
        miosa(env)
            .env("MIOSA_LOG", "debug")
            .env("MIOSA_LOG_FORMAT", "json")
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text
            .lines()
            .filter(|l| l.contains("miosa listening"))
            .find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                v["addr"].as_str().map(str::to_owned)
            });
        let key = text.split_whitespace().find(|w| w.starts_with("msk_live_"));
        if let (Some(addr), Some(key)) = (addr, key) {
            return (server, format!("http://{addr}"), key.to_owned());
        }
        assert!(Instant::now() < deadline, "server did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one CLI run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the client CLI against a server, everything it prints kept in `outputs`.
struct Cli<'a> {
    env: &'a TestEnv,
    url: String,
    key: String,
    outputs: Vec<String>,
}

impl Cli<'_> {
    fn run(&mut self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut child = miosa(self.env)
            .env("MIOSA_API_URL", &self.url)
            .env("MIOSA_API_KEY", &self.key)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        };
        self.outputs.push(format!(
            "$ miosa {}\n{}{}",
            args.join(" "),
            run.stdout,
            run.stderr
        ));
        run
    }

    /// A run that must succeed; its stdout.
    fn ok(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let r = self.run(args, stdin);
        assert_eq!(r.code, Some(0), "miosa {args:?}: {}{}", r.stdout, r.stderr);
        r.stdout
    }

    /// A run that must fail; its stderr.
    fn fails(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let r = self.run(args, stdin);
        assert_ne!(r.code, Some(0), "miosa {args:?} should fail: {}", r.stdout);
        r.stderr
    }

    fn json(&mut self, args: &[&str]) -> Vec<Value> {
        let out = self.ok(args, None);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

/// The data lines of a table, after checking its header.
fn table<'a>(out: &'a str, header: &[&str]) -> Vec<&'a str> {
    let mut lines = out.lines();
    let head: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(head, header, "a table:\n{out}");
    lines.collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_audit_from_the_cli_never_show_a_value() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let outside = tempfile::tempdir().unwrap();
    let log = outside.path().join("serve.log");
    let (mut server, url, key) = serve(&env, &log);
    let mut cli = Cli {
        env: &env,
        url,
        key,
        outputs: Vec::new(),
    };

    // Set from standard input (one trailing newline dropped), then a new value.
    let out = cli.ok(
        &[
            "secrets",
            "set",
            "openai",
            "--external-user-id",
            DR_SMITH,
            "--expose-as-env",
            "OPENAI_API_KEY",
            "--allowed-host",
            "api.openai.com",
            "--allowed-host",
            "*.openai.com",
        ],
        Some(&format!("{OPENAI_KEY}\n")),
    );
    let openai = out.split_whitespace().next().unwrap().to_owned();
    assert!(openai.starts_with("sec_"), "{out}");
    assert_eq!(
        out.trim(),
        format!("{openai} openai v1 (external_user {DR_SMITH})")
    );
    let out = cli.ok(
        &[
            "secrets",
            "set",
            "openai",
            "--scope",
            "external_user",
            "--external-user-id",
            DR_SMITH,
            "--expose-as-env",
            "OPENAI_API_KEY",
            "--allowed-host",
            "*.openai.com",
            "--allowed-host",
            "API.openai.com",
            "--json",
        ],
        Some(ROTATED_KEY),
    );
    let v2: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v2["id"].as_str(), v2["version"].as_u64()),
        (Some(openai.as_str()), Some(2))
    );
    // From a file, tenant-wide.
    let value_file = outside.path().join("ehr.txt");
    std::fs::write(&value_file, format!("{EHR_KEY}\r\n")).unwrap();
    let out = cli.ok(
        &[
            "secrets",
            "set",
            "ehr",
            "--scope",
            "tenant",
            "--expose-as-env",
            "EHR_API_KEY",
            "--value-file",
            value_file.to_str().unwrap(),
        ],
        None,
    );
    let ehr = out.split_whitespace().next().unwrap().to_owned();
    assert!(out.contains("ehr v1 (tenant -)"), "{out}");
    // Without hosts, the server's warning is printed on standard error.
    let warned = cli.outputs.last().unwrap().clone();
    assert!(
        warned.contains("warning: allowed_hosts is empty"),
        "{warned}"
    );

    // No value, or only a newline: a clear error, and nothing sent.
    let set_x = [
        "secrets",
        "set",
        "x",
        "--scope",
        "tenant",
        "--expose-as-env",
        "X_KEY",
    ];
    for stdin in [None, Some(""), Some("\n")] {
        let err = cli.fails(&set_x, stdin);
        assert!(
            err.contains("no value given") && err.contains("--value-file"),
            "{stdin:?}: {err}"
        );
    }
    let err = cli.fails(
        &["secrets", "set", "x", "--expose-as-env", "X_KEY"],
        Some(REFUSED_KEY),
    );
    assert!(err.contains("--scope"), "{err}");
    let err = cli.fails(
        &[
            "secrets",
            "set",
            "x",
            "--scope",
            "tenant",
            "--expose-as-env",
            "X_KEY",
            "--value-file",
            outside.path().join("missing").to_str().unwrap(),
        ],
        None,
    );
    assert!(err.contains("cannot read"), "{err}");
    // The server refuses: the error names the field, not the value.
    let err = cli.fails(
        &[
            "secrets",
            "set",
            "bad name",
            "--scope",
            "tenant",
            "--expose-as-env",
            "X_KEY",
        ],
        Some(REFUSED_KEY),
    );
    assert!(err.contains("422") && err.contains("name"), "{err}");
    let err = cli.fails(
        &[
            "secrets",
            "set",
            "x",
            "--scope",
            "tenant",
            "--expose-as-env",
            "HTTPS_PROXY",
        ],
        Some(REFUSED_KEY),
    );
    assert!(err.contains("expose_as_env"), "{err}");

    // List: a table for people, JSON for scripts, filters.
    let out = cli.ok(&["secrets", "list"], None);
    let rows = table(
        &out,
        &[
            "ID",
            "NAME",
            "SCOPE",
            "KEY",
            "WORKSPACE",
            "ENV",
            "VERSION",
            "ENABLED",
            "HOSTS",
            "SUBSTITUTE_IN",
        ],
    );
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].starts_with(&ehr) && rows[0].contains("EHR_API_KEY"),
        "{out}"
    );
    for cell in [
        openai.as_str(),
        "external_user",
        DR_SMITH,
        "OPENAI_API_KEY",
        "v2",
        "yes",
        "*.openai.com,api.openai.com",
    ] {
        assert!(rows[1].contains(cell), "{cell} in {}", rows[1]);
    }
    let listed = cli.json(&["secrets", "list", "--json"]);
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|s| s["substitute_in"] == serde_json::json!(["headers"])));
    assert!(listed.iter().all(|s| s.get("value").is_none()));
    let mine = cli.json(&["secrets", "list", "--external-user-id", DR_SMITH, "--json"]);
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["id"], openai.as_str());
    assert_eq!(
        cli.json(&["secrets", "list", "--scope", "tenant", "--json"])
            .len(),
        1
    );
    assert_eq!(
        cli.json(&["secrets", "list", "--name", "nope", "--json"])
            .len(),
        0
    );

    // Settings: a table, and a change that the next write obeys.
    let out = cli.ok(&["settings", "show"], None);
    let rows = table(&out, &["SETTING", "VALUE"]);
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows
        .iter()
        .any(|r| r.starts_with("require_allowed_hosts") && r.ends_with("false")));
    let v: Value = serde_json::from_str(&cli.ok(
        &[
            "settings",
            "set",
            "--require-allowed-hosts",
            "true",
            "--json",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(v["require_allowed_hosts"], true);
    assert_eq!(v["allow_end_user_credentials"], true, "left as it was");
    let err = cli.fails(&set_x, Some(REFUSED_KEY));
    assert!(
        err.contains("422") && err.contains("allowed_hosts"),
        "{err}"
    );
    cli.ok(
        &["settings", "set", "--require-allowed-hosts", "false"],
        None,
    );
    // Substitution outside headers is an explicit opt-in, with a warning.
    let out = cli.ok(
        &[
            "secrets",
            "set",
            "form",
            "--scope",
            "tenant",
            "--expose-as-env",
            "FORM_KEY",
            "--allowed-host",
            "forms.example",
            "--substitute-in",
            "headers",
            "--substitute-in",
            "body",
            "--json",
        ],
        Some(REFUSED_KEY),
    );
    let form: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        form["substitute_in"],
        serde_json::json!(["headers", "body"])
    );
    let warned = cli.outputs.last().unwrap().clone();
    assert!(warned.contains("trusted with the value"), "{warned}");
    let form_id = form["id"].as_str().unwrap().to_owned();
    cli.ok(&["secrets", "rm", &form_id], None);

    // Disable, enable, disable: the table follows.
    assert_eq!(
        cli.ok(&["secrets", "disable", &openai], None).trim(),
        format!("disabled {openai} (openai)")
    );
    assert_eq!(
        cli.ok(&["secrets", "enable", &openai], None).trim(),
        format!("enabled {openai} (openai)")
    );
    cli.ok(&["secrets", "disable", &openai], None);
    let mine = cli.json(&["secrets", "list", "--external-user-id", DR_SMITH, "--json"]);
    assert_eq!(mine[0]["enabled"], false);
    let err = cli.fails(
        &["secrets", "disable", "sec_01jdq3x5m8v2k7f4c9n6r1w0ab"],
        None,
    );
    assert!(err.contains("404"), "{err}");

    // Her audit feed: what was done to her secret, by which key; the
    // tenant-wide secret is not hers.
    let out = cli.ok(
        &[
            "audit",
            "list",
            "--since",
            "7d",
            "--external-user-id",
            DR_SMITH,
        ],
        None,
    );
    let rows = table(
        &out,
        &[
            "TIME",
            "ACTION",
            "EXTERNAL USER",
            "SANDBOX",
            "REQUEST/TARGET",
            "STATUS",
            "CREDENTIAL",
            "OUTCOME",
        ],
    );
    let actions: Vec<&str> = rows
        .iter()
        .map(|r| r.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "secret.disabled",
            "secret.enabled",
            "secret.disabled",
            "secret.set",
            "secret.set"
        ],
        "{out}"
    );
    for row in &rows {
        for cell in [
            DR_SMITH,
            openai.as_str(),
            "openai (external_user)",
            "success",
        ] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
    }
    let feed = cli.json(&[
        "audit",
        "list",
        "--since",
        "7d",
        "--external-user-id",
        DR_SMITH,
        "--json",
    ]);
    assert_eq!(feed.len(), 5);
    assert!(feed
        .iter()
        .all(|e| e["external_user_id"] == DR_SMITH
            && e["actor"].as_str().unwrap().starts_with("key_")));
    let sets = cli.json(&[
        "audit",
        "list",
        "--action",
        "secret.set",
        "--limit",
        "2",
        "--json",
    ]);
    assert_eq!(sets.len(), 2, "--limit");
    assert_eq!(
        sets[1]["target"],
        ehr.as_str(),
        "newest first, after `form`"
    );
    let err = cli.fails(&["audit", "list", "--since", "7w"], None);
    assert!(err.contains("since"), "{err}");

    assert_eq!(
        cli.ok(&["secrets", "rm", &ehr], None).trim(),
        format!("deleted {ehr}")
    );
    assert_eq!(cli.json(&["secrets", "list", "--json"]).len(), 1);

    // Nothing printed a value; the database holds the secrets (their IDs)
    // but no value, in the main file or the WAL, while the server runs and
    // after it stops.
    let values = [OPENAI_KEY, ROTATED_KEY, EHR_KEY, REFUSED_KEY];
    for out in &cli.outputs {
        for v in values {
            assert!(!out.contains(v), "the CLI printed a value:\n{out}");
        }
    }
    let data_dir = env.data_dir();
    let check_data_dir = |when: &str| {
        let files = files_under(&data_dir);
        assert!(
            files.iter().any(|(_, bytes)| contains(bytes, &openai)),
            "{when}: the scan covers the database"
        );
        for (path, bytes) in &files {
            for v in values {
                assert!(!contains(bytes, v), "{when}: a value in {}", path.display());
            }
        }
    };
    check_data_dir("running");
    assert!(server.stop().success(), "graceful exit on SIGTERM");
    check_data_dir("stopped");
    let logs = std::fs::read(&log).unwrap();
    for needle in ["\"level\":\"DEBUG\"", "secret set", "request finished"] {
        assert!(contains(&logs, needle), "the log has {needle}");
    }
    for v in values {
        assert!(!contains(&logs, v), "a value in the server's log");
    }
}
