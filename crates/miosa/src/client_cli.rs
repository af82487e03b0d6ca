//! `miosa sandbox …`: client commands against a running server
//! (`MIOSA_API_URL`, `MIOSA_API_KEY`). Tables for people, `--json` for scripts.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::Subcommand;
use miosa_client::{Client, Sandbox};
use serde_json::{json, Value};

/// Sandbox commands.
#[derive(Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox and wait until it is ready.
    Create {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        template: Option<String>,
        #[arg(long)]
        workspace_id: Option<String>,
        #[arg(long)]
        external_user_id: Option<String>,
        #[arg(long)]
        external_workspace_id: Option<String>,
        #[arg(long)]
        external_project_id: Option<String>,
        /// KEY=VALUE, repeatable.
        #[arg(long = "metadata", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        /// KEY=VALUE, repeatable.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[arg(long)]
        timeout: Option<i64>,
        #[arg(long)]
        cpu: Option<f64>,
        #[arg(long)]
        memory_mb: Option<i64>,
        /// Disk size in MiB (default: the server's `sandbox_disk_mb`).
        #[arg(long)]
        disk_mb: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// List sandboxes.
    List {
        #[arg(long)]
        external_user_id: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one sandbox (ID or name).
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a command (`sh -c`) and print its output; exits with its code.
    Exec {
        id: String,
        /// The command line, run by /bin/sh -c.
        command: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Destroy sandboxes.
    Rm { ids: Vec<String> },
}

pub(crate) fn client() -> anyhow::Result<Client> {
    let url = std::env::var("MIOSA_API_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("MIOSA_API_KEY")
        .context("set MIOSA_API_KEY to a tenant key (msk_live_… or msk_w_…)")?;
    Ok(Client::new(url, Some(key)))
}

fn pairs(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => bail!("--{flag} takes KEY=VALUE, got {kv:?}"),
        })
        .collect()
}

/// Runs one sandbox command; returns the process exit code.
pub async fn run(cmd: SandboxCommand) -> anyhow::Result<i32> {
    let c = client()?;
    match cmd {
        SandboxCommand::Create {
            name,
            template,
            workspace_id,
            external_user_id,
            external_workspace_id,
            external_project_id,
            metadata,
            env,
            timeout,
            cpu,
            memory_mb,
            disk_mb,
            json,
        } => {
            let mut body = json!({
                "name": name, "template": template, "workspace_id": workspace_id,
                "external_user_id": external_user_id,
                "external_workspace_id": external_workspace_id,
                "external_project_id": external_project_id,
                "metadata": pairs("metadata", &metadata)?, "env": pairs("env", &env)?,
                "timeout_seconds": timeout, "cpu": cpu, "memory_mb": memory_mb,
                "disk_mb": disk_mb,
            });
            drop_nulls(&mut body);
            if !json {
                eprintln!("creating sandbox…");
            }
            let s = c.create_sandbox(&body).await?;
            print_one(&s, json)?;
        }
        SandboxCommand::List {
            external_user_id,
            status,
            json,
        } => {
            let mut q = Vec::new();
            if let Some(u) = external_user_id {
                q.push(format!("external_user_id={}", miosa_client::encode(&u)));
            }
            if let Some(s) = status {
                q.push(format!("status={}", miosa_client::encode(&s)));
            }
            let list = c.list_sandboxes(&q.join("&")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list.data)?);
            } else {
                print_table(&list.data);
            }
        }
        SandboxCommand::Get { id, json } => print_one(&c.get_sandbox(&id).await?, json)?,
        SandboxCommand::Exec {
            id,
            command,
            user,
            timeout,
            json,
        } => {
            let mut body = json!({ "command": command, "user": user, "timeout_seconds": timeout });
            drop_nulls(&mut body);
            let r = c.exec(&id, &body).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.stdout);
                eprint!("{}", r.stderr);
                if r.timed_out {
                    eprintln!("(timed out)");
                }
                if r.truncated {
                    eprintln!("(output truncated)");
                }
            }
            return Ok(r.exit_code.unwrap_or(128));
        }
        SandboxCommand::Rm { ids } => {
            for id in ids {
                c.delete_sandbox(&id).await?;
                println!("removed {id}");
            }
        }
    }
    Ok(0)
}

/// Leaves unset flags out of a request body, so the server's defaults apply.
pub(crate) fn drop_nulls(body: &mut Value) {
    if let Value::Object(m) = body {
        m.retain(|_, v| !v.is_null());
    }
}

fn print_one(s: &Sandbox, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        print_table(std::slice::from_ref(s));
    }
    Ok(())
}

fn print_table(rows: &[Sandbox]) {
    let header = [
        "ID",
        "NAME",
        "STATUS",
        "EXTERNAL USER",
        "CPU",
        "MEM",
        "DISK",
        "EXPIRES",
    ];
    let cells = rows
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.name.clone().unwrap_or_else(|| "-".into()),
                s.status.clone(),
                s.external_user_id.clone().unwrap_or_else(|| "-".into()),
                format!("{}", s.cpu),
                format!("{}M", s.memory_mb),
                s.disk_mb.map_or_else(|| "-".into(), |d| format!("{d}M")),
                s.expires_at.clone(),
            ]
        })
        .collect();
    print_rows(&header, cells);
}

/// Prints aligned columns under a header.
pub(crate) fn print_rows(header: &[&str], cells: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<&str>| {
        cols.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(header.to_vec()));
    for row in &cells {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}
