//! `miosa`: the server and its operator commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use miosa::{admin, config::Config, logging, server};

/// Miosa: self-hostable, white-label sandboxes.
#[derive(Parser)]
#[command(name = "miosa", version, about)]
struct Cli {
    /// Path to miosa.toml.
    #[arg(long, global = true, env = "MIOSA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server.
    Serve,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Operator commands (talk to the database directly).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Sandboxes on a running server (MIOSA_API_URL, MIOSA_API_KEY).
    Sandbox {
        #[command(subcommand)]
        command: Box<miosa::client_cli::SandboxCommand>,
    },
    /// Secrets on a running server (MIOSA_API_URL, MIOSA_API_KEY).
    Secrets {
        #[command(subcommand)]
        command: Box<miosa::secrets_cli::SecretsCommand>,
    },
    /// The tenant's settings on a running server (MIOSA_API_URL, MIOSA_API_KEY).
    Settings {
        #[command(subcommand)]
        command: miosa::secrets_cli::SettingsCommand,
    },
    /// The audit log of a running server (MIOSA_API_URL, MIOSA_API_KEY).
    Audit {
        #[command(subcommand)]
        command: miosa::secrets_cli::AuditCommand,
    },
    /// Run as the agent inside a sandbox (started by the runtime, not by people).
    #[command(hide = true)]
    Agent(miosa_agent::AgentArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented example miosa.toml.
    Default,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Re-wrap every secret under a new master key.
    ///
    /// With the key file the new key is generated (and an interrupted run is
    /// finished); with MIOSA_MASTER_KEY it comes from MIOSA_NEW_MASTER_KEY.
    RotateMasterKey,
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AdminAuditCommand,
    },
}

#[derive(Subcommand)]
enum AdminAuditCommand {
    /// Check each tenant's hash chain; exit status 1 if any is broken.
    Verify {
        /// Only this tenant (`ten_…`); default: every tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its id and first admin key.
    Create {
        /// Unique tenant name.
        #[arg(long)]
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The agent manages its own process tree (it may be PID 1) and runtime.
    if let Command::Agent(args) = cli.command {
        return miosa_agent::run_with(args);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", miosa::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Agent(_) => anyhow::bail!("the agent is started before the async runtime"),
        Command::Sandbox { command } => {
            let code = miosa::client_cli::run(*command).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Secrets { command } => miosa::secrets_cli::run_secrets(*command).await,
        Command::Settings { command } => miosa::secrets_cli::run_settings(command).await,
        Command::Audit { command } => miosa::secrets_cli::run_audit(command).await,
        Command::Openapi => {
            print!("{}", miosa_api::openapi::document_json());
            Ok(())
        }
        Command::Serve => {
            let config = Config::load(cli.config.as_deref())?;
            logging::init(&config);
            let server = server::start(&config).await?;
            if let Some(report) = &server.bootstrap {
                print!("{}", report.banner());
            }
            server.run_until_signal().await
        }
        Command::Admin {
            command: AdminCommand::RotateMasterKey,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            logging::init(&config);
            admin::rotate_master_key(&config).await
        }
        Command::Admin {
            command:
                AdminCommand::Audit {
                    command: AdminAuditCommand::Verify { tenant },
                },
        } => {
            let config = Config::load(cli.config.as_deref())?;
            logging::init(&config);
            if !admin::audit_verify(&config, tenant.as_deref()).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::Tenant {
                    command: TenantCommand::Create { name, json },
                },
        } => {
            let config = Config::load(cli.config.as_deref())?;
            logging::init(&config);
            let (tenant, key, report) = admin::create_tenant(&config, &name).await?;
            if let Some(report) = report {
                print!("{}", report.banner());
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": tenant.id.as_str(), "name": tenant.name, "api_key": key.reveal()})
                );
            } else {
                println!("tenant {} ({})", tenant.name, tenant.id);
                println!("admin key: {}", key.reveal());
                println!("Store the key now: it is not shown again.");
            }
            Ok(())
        }
    }
}
