//! Command line: `serve` (default), `keys create|list|revoke`, `migrate`, `copy-db`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::audit::Action;
use crate::auth::Scope;
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "astrgate", version, about = "AstrBot-compatible Open API and Live voice gateway")]
pub struct Cli {
    /// Config file (TOML). Defaults to ./astrgate.toml when it exists.
    #[arg(long, global = true, env = "ASTRGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:6185.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Data directory (database, attachments).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Manage API keys directly in the database.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Copy an installation into another, empty database (e.g. SQLite → PostgreSQL), then
    /// compare the row counts of every table.
    CopyDb {
        /// Source database URL (sqlite://… or postgres://…).
        #[arg(long)]
        from: String,
        /// Destination database URL; it must hold no data yet (migrations are applied).
        #[arg(long)]
        to: String,
        /// A local attachments directory (`<data_dir>/attachments`) whose files move into the
        /// destination database (for `[files] storage = "database"`, PostgreSQL's default).
        #[arg(long)]
        attachments_dir: Option<PathBuf>,
    },
    /// Load and validate the configuration, then print a summary.
    CheckConfig,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; the key itself is printed alone on the last line.
    Create {
        #[arg(long, default_value = "Untitled API Key")]
        name: String,
        /// Comma-separated AstrBot scopes, e.g. chat,file,im (default: AstrBot's default list).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        #[arg(long)]
        expires_in_days: Option<i64>,
        /// Bind the key to one username: it may then act only as that user.
        #[arg(long)]
        username: Option<String>,
        /// Requests per minute (default: `[api_keys] default_limits`, else unlimited).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        requests_per_minute: Option<u32>,
        /// Runs in progress at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        concurrent_runs: Option<u32>,
        /// Prompt + completion tokens per UTC day.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        tokens_per_day: Option<u64>,
    },
    /// List keys (never the secrets).
    List,
    /// Revoke a key by id.
    Revoke { key_id: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = cli.config.clone().or_else(|| {
        let p = PathBuf::from("astrgate.toml");
        p.exists().then_some(p)
    });
    let mut config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("astrgate: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Serve { listen, data_dir }) = &cli.command {
        if let Some(l) = listen {
            config.listen = *l;
        }
        if let Some(d) = data_dir {
            config.data_dir = d.clone();
        }
    }
    crate::telemetry::init(&config.logging);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("astrgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli.command, config, config_path));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("astrgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Option<Command>, config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    match command {
        None | Some(Command::Serve { .. }) => crate::app::run(config).await,
        Some(Command::Migrate) => {
            let url = config.database_url();
            crate::store::connect_with(&url, 1).await?;
            println!("migrations applied to {}", crate::store::redact_url(&url));
            Ok(())
        }
        Some(Command::CopyDb { from, to, attachments_dir }) => copy_db(&from, &to, attachments_dir.as_deref()).await,
        Some(Command::CheckConfig) => {
            println!(
                "config ok ({})",
                config_path.map(|p| p.display().to_string()).unwrap_or_else(|| "defaults + environment".into())
            );
            println!("listen       {}", config.listen);
            println!("data_dir     {}", config.data_dir.display());
            println!("database     {}", crate::store::redact_url(&config.database_url()));
            println!("providers    {}", config.providers.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", "));
            println!("profiles     {}", config.profiles.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", "));
            Ok(())
        }
        Some(Command::Keys { command }) => keys(command, config).await,
    }
}

async fn copy_db(from: &str, to: &str, attachments_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use crate::store::redact_url;
    use anyhow::Context;
    let source = crate::store::connect_with(from, 4).await.with_context(|| format!("opening {}", redact_url(from)))?;
    let dest = crate::store::connect_with(to, 4).await.with_context(|| format!("opening {}", redact_url(to)))?;
    println!("copying {} → {}", redact_url(from), redact_url(to));
    println!("{:<18} {:>10} {:>12}", "table", "source", "destination");
    let result = crate::store::copy::copy_all(source.as_ref(), dest.as_ref(), |c| {
        println!("{:<18} {:>10} {:>12}", c.table.name(), c.source, c.destination);
    })
    .await;
    source.close().await;
    result?;
    println!("row counts match");
    if let Some(dir) = attachments_dir {
        let moved = crate::attachments::Blobs::import_dir(&dest, dir)
            .await
            .with_context(|| format!("moving attachments from {}", dir.display()))?;
        println!("attachment files moved into the database: {moved}");
    }
    dest.close().await;
    Ok(())
}

async fn keys(command: KeysCommand, config: Config) -> anyhow::Result<()> {
    let state = AppState::build(config, CancellationToken::new()).await?;
    match command {
        KeysCommand::Create {
            name,
            scopes,
            expires_in_days,
            username,
            requests_per_minute,
            concurrent_runs,
            tokens_per_day,
        } => {
            let d = state.config.api_keys.default_limits;
            let limits = crate::store::Limits {
                requests_per_minute: requests_per_minute.or(d.requests_per_minute),
                concurrent_runs: concurrent_runs.or(d.concurrent_runs),
                tokens_per_day: tokens_per_day.or(d.tokens_per_day),
            };
            let scopes = match scopes {
                None => Scope::DEFAULT.to_vec(),
                Some(list) => {
                    let v: Vec<serde_json::Value> = list.into_iter().map(serde_json::Value::String).collect();
                    Scope::parse_list(Some(&serde_json::Value::Array(v))).map_err(|e| anyhow::anyhow!(e))?
                }
            };
            if let Some(d) = expires_in_days
                && d <= 0
            {
                anyhow::bail!("expires_in_days must be greater than 0");
            }
            let (rec, raw) =
                state.keys.create(&name, &scopes, expires_in_days, username.as_deref(), limits, "cli").await?;
            let detail = crate::audit::key_detail(&rec);
            state.audit.record_detail("cli", Action::ApiKeyCreate, Some(&rec.key_id), None, detail);
            println!("key_id  {}", rec.key_id);
            println!("name    {}", rec.name);
            println!("scopes  {}", rec.scopes.join(","));
            println!("expires {}", rec.expires_at.map(crate::util::iso_local).unwrap_or_else(|| "never".into()));
            println!("The key is shown only once:");
            println!("{raw}");
        }
        KeysCommand::List => {
            for k in state.keys.list().await? {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else if !k.is_active(crate::store::now_micros()) {
                    "expired"
                } else {
                    "active"
                };
                println!("{}  {}  {:<8} {:<20} {}", k.key_id, k.key_prefix, status, k.scopes.join(","), k.name);
            }
        }
        KeysCommand::Revoke { key_id } => {
            if !state.keys.revoke(&key_id).await? {
                anyhow::bail!("API key not found: {key_id}");
            }
            state.audit.record("cli", Action::ApiKeyRevoke, Some(&key_id), None);
            println!("revoked {key_id}");
        }
    }
    // What was recorded is written before the command ends.
    state.audit.close().await;
    Ok(())
}
