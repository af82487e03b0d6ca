//! `miosa secrets …`, `miosa settings …` and `miosa audit …`: client
//! commands against a running server (`MIOSA_API_URL`, `MIOSA_API_KEY`; an
//! admin key, or a workspace key for its workspace's secrets).
//!
//! A secret's value is read from standard input or a file, never from an
//! argument: arguments are visible to every user of the host in `ps`.

use std::io::Read;

use anyhow::{bail, Context};
use clap::Subcommand;
use miosa_client::{encode, AuditEvent, Secret};
use serde_json::{json, Map, Value};

use crate::client_cli::{client, print_rows};

/// The scope and its key, as flags.
#[derive(clap::Args)]
pub struct ScopeArgs {
    /// `sandbox`, `user`, `external_user`, `external_workspace`, `workspace`
    /// or `tenant`; implied by a single scope-key flag.
    #[arg(long)]
    scope: Option<String>,
    #[arg(long)]
    sandbox_id: Option<String>,
    #[arg(long)]
    owner_user_id: Option<String>,
    #[arg(long)]
    external_user_id: Option<String>,
    #[arg(long)]
    external_workspace_id: Option<String>,
    /// The workspace of scope `workspace`; with an end-user scope, the
    /// workspace the secret is bound to.
    #[arg(long)]
    workspace_id: Option<String>,
}

impl ScopeArgs {
    /// The scope named, or implied by the one scope-key flag given (with
    /// `--workspace-id` beside an end-user key, that key's scope).
    fn scope_name(&self) -> anyhow::Result<String> {
        if let Some(s) = &self.scope {
            return Ok(s.clone());
        }
        let keys = self.keys();
        let others: Vec<_> = keys.iter().filter(|(s, ..)| *s != "workspace").collect();
        match (keys.as_slice(), others.as_slice()) {
            ([(s, _, _)], _) | (_, [(s, _, _)]) => Ok((*s).to_owned()),
            ([], _) => bail!("give --scope (e.g. --scope tenant) or one scope-key flag"),
            _ => bail!("give at most one scope-key flag"),
        }
    }

    fn keys(&self) -> Vec<(&'static str, &'static str, &String)> {
        [
            ("sandbox", "sandbox_id", &self.sandbox_id),
            ("user", "owner_user_id", &self.owner_user_id),
            ("external_user", "external_user_id", &self.external_user_id),
            (
                "external_workspace",
                "external_workspace_id",
                &self.external_workspace_id,
            ),
            ("workspace", "workspace_id", &self.workspace_id),
        ]
        .into_iter()
        .filter_map(|(s, f, v)| v.as_ref().map(|v| (s, f, v)))
        .collect()
    }
}

/// Secret commands.
#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Set a secret (a new version if it exists). The value is read from
    /// standard input (one trailing newline dropped) or `--value-file`.
    Set {
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// The variable that holds the placeholder in sandboxes.
        #[arg(long)]
        expose_as_env: String,
        /// A host the value may go to (`api.openai.com`, `*.github.com`,
        /// `api.example.com:8443`); repeatable.
        #[arg(long = "allowed-host", value_name = "HOST")]
        allowed_hosts: Vec<String>,
        /// Where the value may be substituted: `headers` (the default),
        /// `query`, `body`; repeatable. `query` and `body` trust the allowed
        /// hosts with the value.
        #[arg(long = "substitute-in", value_name = "WHERE")]
        substitute_in: Vec<String>,
        /// Read the value from this file instead of standard input.
        #[arg(long)]
        value_file: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List secrets (metadata only).
    List {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Disable a secret: its placeholder stops being replaced at once.
    Disable { id: String },
    /// Enable a disabled secret.
    Enable { id: String },
    /// Delete a secret and all its versions.
    Rm { id: String },
}

/// Tenant settings commands (admin key).
#[derive(Subcommand)]
pub enum SettingsCommand {
    /// Show the tenant's settings.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Change settings; flags left out stay as they are.
    Set {
        /// Allow `external_user` secrets.
        #[arg(long)]
        allow_end_user_credentials: Option<bool>,
        /// Refuse secrets without `allowed_hosts`.
        #[arg(long)]
        require_allowed_hosts: Option<bool>,
        /// Let sandboxes created by workspace keys use unbound end-user secrets.
        #[arg(long)]
        workspace_keys_use_unbound_secrets: Option<bool>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run_settings(cmd: SettingsCommand) -> anyhow::Result<()> {
    let c = client()?;
    let (s, json) = match cmd {
        SettingsCommand::Show { json } => (c.settings().await?, json),
        SettingsCommand::Set {
            allow_end_user_credentials,
            require_allowed_hosts,
            workspace_keys_use_unbound_secrets,
            json,
        } => {
            let mut body = json!({
                "allow_end_user_credentials": allow_end_user_credentials,
                "require_allowed_hosts": require_allowed_hosts,
                "workspace_keys_use_unbound_secrets": workspace_keys_use_unbound_secrets,
            });
            crate::client_cli::drop_nulls(&mut body);
            (c.update_settings(&body).await?, json)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_rows(
            &["SETTING", "VALUE"],
            vec![
                vec![
                    "allow_end_user_credentials".into(),
                    s.allow_end_user_credentials.to_string(),
                ],
                vec![
                    "require_allowed_hosts".into(),
                    s.require_allowed_hosts.to_string(),
                ],
                vec![
                    "workspace_keys_use_unbound_secrets".into(),
                    s.workspace_keys_use_unbound_secrets.to_string(),
                ],
            ],
        );
    }
    Ok(())
}

/// Audit commands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// List audit rows, newest first.
    List {
        /// `7d`, `24h`, `30m`, or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        external_user_id: Option<String>,
        #[arg(long)]
        external_workspace_id: Option<String>,
        #[arg(long)]
        external_project_id: Option<String>,
        #[arg(long)]
        sandbox_id: Option<String>,
        #[arg(long)]
        action: Option<String>,
        /// Most rows to show (1–500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after a previous page (printed when there is more).
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The signed checkpoints of the tenant's chain, newest first (to
    /// archive outside Miosa; each verifies with its Ed25519 public key).
    Checkpoints {
        /// Most to show (1–500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn read_value(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let mut value = match file {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the value from standard input")?;
            s
        }
    };
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        bail!("no value given: pipe it on standard input or use --value-file");
    }
    Ok(value)
}

pub async fn run_secrets(cmd: SecretsCommand) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        SecretsCommand::Set {
            name,
            scope,
            expose_as_env,
            allowed_hosts,
            substitute_in,
            value_file,
            json,
        } => {
            let keys = scope.keys();
            let scope_name = scope.scope_name()?;
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert("scope".into(), json!(scope_name));
            body.insert("expose_as_env".into(), json!(expose_as_env));
            if !allowed_hosts.is_empty() {
                body.insert("allowed_hosts".into(), json!(allowed_hosts));
            }
            if !substitute_in.is_empty() {
                body.insert("substitute_in".into(), json!(substitute_in));
            }
            for (_, field, v) in keys {
                body.insert(field.into(), json!(v));
            }
            body.insert("value".into(), json!(read_value(value_file.as_deref())?));
            let s = c.set_secret(&Value::Object(body)).await?;
            for w in &s.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "{} {} v{} ({} {})",
                    s.id,
                    s.name,
                    s.version,
                    s.scope,
                    s.scope_key().unwrap_or("-")
                );
            }
        }
        SecretsCommand::List { scope, name, json } => {
            let mut q = Vec::new();
            if let Some(s) = &scope.scope {
                q.push(format!("scope={}", encode(s)));
            }
            for (_, field, v) in scope.keys() {
                q.push(format!("{field}={}", encode(v)));
            }
            if let Some(n) = &name {
                q.push(format!("name={}", encode(n)));
            }
            q.push("limit=500".into());
            let list = c.list_secrets(&q.join("&")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list.data)?);
            } else {
                print_secrets(&list.data);
            }
        }
        SecretsCommand::Disable { id } => {
            let s = c.secret_action(&id, "disable").await?;
            println!("disabled {} ({})", s.id, s.name);
        }
        SecretsCommand::Enable { id } => {
            let s = c.secret_action(&id, "enable").await?;
            println!("enabled {} ({})", s.id, s.name);
        }
        SecretsCommand::Rm { id } => {
            c.delete_secret(&id).await?;
            println!("deleted {id}");
        }
    }
    Ok(())
}

fn print_secrets(rows: &[Secret]) {
    let cells = rows
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.name.clone(),
                s.scope.clone(),
                s.scope_key().unwrap_or("-").to_owned(),
                s.workspace_id.clone().unwrap_or_else(|| "-".to_owned()),
                s.expose_as_env.clone(),
                format!("v{}", s.version),
                if s.enabled { "yes" } else { "no" }.to_owned(),
                if s.allowed_hosts.is_empty() {
                    "*".to_owned()
                } else {
                    s.allowed_hosts.join(",")
                },
                s.substitute_in.join(","),
            ]
        })
        .collect();
    print_rows(
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
        cells,
    );
}

pub async fn run_audit(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List {
            since,
            until,
            external_user_id,
            external_workspace_id,
            external_project_id,
            sandbox_id,
            action,
            limit,
            cursor,
            json,
        } => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [
                ("since", since),
                ("until", until),
                ("external_user_id", external_user_id),
                ("external_workspace_id", external_workspace_id),
                ("external_project_id", external_project_id),
                ("sandbox_id", sandbox_id),
                ("action", action),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", encode(&v)));
                }
            }
            let list = client()?.list_audit(&q.join("&")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list.data)?);
            } else {
                print_audit(&list.data);
            }
            if let Some(next) = &list.next_cursor {
                eprintln!("more rows: add --cursor {next}");
            }
        }
        AuditCommand::Checkpoints {
            limit,
            cursor,
            json,
        } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(cur) = cursor {
                q.push(format!("cursor={}", encode(&cur)));
            }
            let list = client()?.list_audit_checkpoints(&q.join("&")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list.data)?);
            } else {
                let cells = list
                    .data
                    .iter()
                    .map(|cp| {
                        vec![
                            cp.seq.to_string(),
                            cp.time.clone(),
                            cp.hash.clone(),
                            cp.kek_id.clone(),
                        ]
                    })
                    .collect();
                print_rows(&["SEQ", "TIME", "HASH", "KEY"], cells);
            }
            if let Some(next) = &list.next_cursor {
                eprintln!("more checkpoints: add --cursor {next}");
            }
        }
    }
    Ok(())
}

fn print_audit(rows: &[AuditEvent]) {
    let cells = rows
        .iter()
        .map(|e| {
            let (what, status) = match &e.request {
                Some(r) => (
                    format!("{} {}{}", r.method, r.host, r.path),
                    r.status.map_or("-".into(), |s| s.to_string()),
                ),
                None => (e.target.clone().unwrap_or_else(|| "-".into()), "-".into()),
            };
            vec![
                e.time.clone(),
                e.action.clone(),
                e.external_user_id.clone().unwrap_or_else(|| "-".into()),
                e.sandbox_id.clone().unwrap_or_else(|| "-".into()),
                what,
                status,
                e.credential
                    .as_ref()
                    .map_or("-".into(), |c| format!("{} ({})", c.name, c.scope)),
                e.outcome.clone(),
            ]
        })
        .collect();
    print_rows(
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
        cells,
    );
}
