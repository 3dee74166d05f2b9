//! `streams-bridge`: run the bridge, or manage the users registered with it.
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use streams_bridge::turn::{DEFAULT_CREDENTIAL_TTL, TurnRelays};
use streams_bridge::{Bridge, BridgeConfig, SqliteStore, Store, TlsSource};
use streams_proto::{ContextId, TurnUrl, UserId};

/// The bevy_streams bridge: keeps Stream Rooms, authenticates users, enforces room policies and relays
/// events. It stores only what it may see: private metadata and room secrets stay encrypted.
///
/// With no arguments it serves on 127.0.0.1:7800 with its SQLite store in the default data directory.
#[derive(Parser)]
#[command(name = "streams-bridge", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7800", global = true)]
    listen: SocketAddr,
    /// UDP address for media: media worker `i` listens on this port + `i` (each worker's port is
    /// shared by the sessions of the rooms it forwards).
    /// `0.0.0.0:PORT` (or `[::]:PORT`, IPv4 and IPv6) listens on every interface.
    #[arg(long, default_value = "127.0.0.1:7801", global = true)]
    media_listen: SocketAddr,
    /// Also carry media over TCP (ICE-TCP), for players whose network blocks UDP: media worker `i`
    /// listens on this port + `i`, announced beside UDP and ranked below it, so clients use it
    /// only when UDP does not get through (e.g. `0.0.0.0:7881`, or 443 where only HTTPS passes).
    #[arg(long, value_name = "ADDR", global = true)]
    media_tcp_listen: Option<SocketAddr>,
    /// An address clients reach the media port at, announced to them instead of the bound one:
    /// the public IP of a bridge behind a 1:1 NAT (a cloud VM). Repeat it for IPv4 and IPv6.
    /// Without it the bound address is announced, or for 0.0.0.0 / [::] every interface's.
    #[arg(long = "media-public-ip", value_name = "IP", global = true)]
    media_public_ips: Vec<IpAddr>,
    /// Media forwarding workers (one thread and UDP port each; a room lives on one). Default: one
    /// per core.
    #[arg(long, global = true)]
    media_workers: Option<usize>,
    /// Directory for the store (created owner-only if missing). Default: $XDG_DATA_HOME/streams-bridge
    /// or ~/.local/share/streams-bridge.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// SQLite database file (default: DATA_DIR/bridge.db); `:memory:` keeps nothing across restarts.
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// Development mode: accept any key without registration.
    #[arg(long, global = true)]
    open: bool,
    /// Directory for room recordings (ciphertext; created if missing). Default: DATA_DIR/recordings.
    #[arg(long, global = true)]
    recordings: Option<PathBuf>,
    /// Serve `wss://` with this PEM certificate chain (the bridge's certificate first); needs
    /// --tls-key.
    #[arg(
        long,
        global = true,
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve `wss://` with a self-signed development certificate, made on the first start and
    /// kept in DATA_DIR (so a client's pin of the fingerprint printed at start survives restarts).
    /// Clients pin it with `streams --bridge-cert-sha256 FINGERPRINT`.
    #[arg(long, global = true)]
    tls_self_signed: bool,
    /// A TURN server (coturn) clients may relay media through when nothing reaches the media
    /// ports directly, e.g. `turn:turn.example.com:3478?transport=tcp` (TCP gets out of networks
    /// that block UDP), `turns:turn.example.com:443` (TLS, where nothing else does) or
    /// `turn:turn.example.com`. Repeat it for several; needs --turn-secret.
    #[arg(
        long = "turn-url",
        value_name = "URL",
        global = true,
        requires = "turn_secret"
    )]
    turn_urls: Vec<TurnUrl>,
    /// The secret shared with the TURN servers (coturn `use-auth-secret` with
    /// `static-auth-secret=SECRET`): the bridge hands each member credentials made from it.
    #[arg(
        long,
        env = "STREAMS_TURN_SECRET",
        hide_env_values = true,
        global = true
    )]
    turn_secret: Option<String>,
    /// How long the TURN credentials handed out are good for, in seconds (1 minute to 7 days).
    #[arg(
        long,
        default_value_t = DEFAULT_CREDENTIAL_TTL.as_secs(),
        value_parser = clap::value_parser!(u64).range(60..=7 * 24 * 3600),
        global = true
    )]
    turn_ttl_secs: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve clients (the default).
    Serve,
    /// Manage the users allowed to connect (like the users of a PrivMX Context).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
}

#[derive(Subcommand)]
enum UsersAction {
    /// Register a user id (printed by `streams keygen`).
    Add {
        /// The user id.
        id: String,
    },
    /// Unregister a user id.
    Remove {
        /// The user id.
        id: String,
    },
    /// List registered user ids.
    List,
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("streams-bridge");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/streams-bridge");
    }
    PathBuf::from("streams-bridge-data")
}

fn prepare_data_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))
}

fn db_path(cli: &Cli) -> Result<PathBuf, String> {
    if let Some(db) = &cli.db {
        if db.as_os_str() != ":memory:"
            && let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty())
        {
            prepare_data_dir(parent)?;
        }
        return Ok(db.clone());
    }
    let dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    prepare_data_dir(&dir)?;
    Ok(dir.join("bridge.db"))
}

fn recordings_dir(cli: &Cli) -> Result<PathBuf, String> {
    let dir = match &cli.recordings {
        Some(dir) => dir.clone(),
        None => cli
            .data_dir
            .clone()
            .unwrap_or_else(default_data_dir)
            .join("recordings"),
    };
    prepare_data_dir(&dir)?;
    Ok(dir)
}

fn users(db: &Path, action: &UsersAction) -> Result<(), String> {
    let mut store = SqliteStore::open(db).map_err(|e| e.to_string())?;
    let parse = |id: &str| UserId::parse(id).map_err(|e| e.to_string());
    match action {
        UsersAction::Add { id } => {
            let user = parse(id)?;
            let added = store
                .add_user(
                    &user,
                    &ContextId::default(),
                    streams_bridge::requests::now_ms(),
                )
                .map_err(|e| e.to_string())?;
            println!("{}", if added { "added" } else { "already registered" });
        }
        UsersAction::Remove { id } => {
            let removed = store.remove_user(&parse(id)?).map_err(|e| e.to_string())?;
            println!("{}", if removed { "removed" } else { "not registered" });
        }
        UsersAction::List => {
            for user in store.users().map_err(|e| e.to_string())? {
                println!("{user}");
            }
        }
    }
    Ok(())
}

/// The TLS certificate the flags ask for, if any.
fn tls_source(cli: &Cli) -> Result<Option<TlsSource>, String> {
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        return Ok(Some(TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        }));
    }
    if !cli.tls_self_signed {
        return Ok(None);
    }
    let dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    prepare_data_dir(&dir)?;
    let mut names = vec!["localhost".to_owned()];
    if !cli.listen.ip().is_unspecified() {
        names.push(cli.listen.ip().to_string());
    }
    Ok(Some(TlsSource::SelfSigned { dir, names }))
}

fn turn_relays(cli: &Cli) -> Option<TurnRelays> {
    let secret = cli.turn_secret.clone()?;
    (!cli.turn_urls.is_empty()).then(|| TurnRelays {
        urls: cli.turn_urls.clone(),
        secret,
        ttl: Duration::from_secs(cli.turn_ttl_secs),
    })
}

fn serve(cli: &Cli, db: PathBuf) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let config = BridgeConfig {
            listen: cli.listen,
            media_listen: cli.media_listen,
            media_tcp_listen: cli.media_tcp_listen,
            media_public_ips: cli.media_public_ips.clone(),
            media_workers: cli.media_workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            db: db.clone(),
            open: cli.open,
            recordings: Some(recordings_dir(cli)?),
            tls: tls_source(cli)?,
            turn: turn_relays(cli),
        };
        let bridge = Bridge::bind(&config).await.map_err(|e| e.to_string())?;
        tracing::info!(
            addr = %bridge.local_addr(),
            db = %db.display(),
            open = cli.open,
            "streams-bridge listening on {}",
            bridge.url()
        );
        for url in &cli.turn_urls {
            tracing::info!("clients may relay media through TURN server {url}");
        }
        if let Some(fingerprint) = bridge.cert_fingerprint() {
            tracing::info!("TLS certificate SHA-256 fingerprint: {fingerprint}");
        }
        tokio::select! {
            _ = bridge.run() => {}
            _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
        }
        Ok(())
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = db_path(&cli).and_then(|db| match &cli.command {
        None | Some(Command::Serve) => serve(&cli, db),
        Some(Command::Users { action }) => users(&db, action),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streams-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
