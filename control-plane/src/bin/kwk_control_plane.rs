//! `kwk-control-plane`: one binary, one subcommand per component.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kwk_control_plane::apiserver::{self, ApiServerOptions};
use kwk_control_plane::storage::Store;

#[derive(Parser, Debug)]
#[command(name = "kwk-control-plane", version, about = "The kwk control plane")]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StorageBackend {
    /// In memory: nothing survives a restart (development only).
    Memory,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The Kubernetes API server.
    Apiserver {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind_address: std::net::IpAddr,
        /// HTTPS port.
        #[arg(long, default_value_t = 6443)]
        secure_port: u16,
        /// Directory with ca.crt, apiserver.crt/key (and admin.kubeconfig when generated).
        #[arg(long, default_value = "/etc/kwk/pki")]
        pki_dir: PathBuf,
        /// Generate missing certificates and the admin kubeconfig in --pki-dir.
        #[arg(long)]
        generate_pki: bool,
        /// Extra DNS names / IPs for the serving certificate (repeatable).
        #[arg(long = "tls-san")]
        tls_san: Vec<String>,
        /// Static token file: `token,user,uid[,"group1,group2"]` per line.
        #[arg(long)]
        token_auth_file: Option<PathBuf>,
        /// Where objects are stored.
        #[arg(long, value_enum, default_value_t = StorageBackend::Memory)]
        storage_backend: StorageBackend,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    match cli.command {
        Command::Apiserver {
            bind_address,
            secure_port,
            pki_dir,
            generate_pki,
            tls_san,
            token_auth_file,
            storage_backend,
        } => {
            let store: Arc<dyn Store> = match storage_backend {
                StorageBackend::Memory => {
                    tracing::warn!("storage backend is memory: nothing survives a restart");
                    Arc::new(kwk_control_plane::storage::memory::MemoryStore::new())
                }
            };
            let server = apiserver::start(ApiServerOptions {
                bind: SocketAddr::new(bind_address, secure_port),
                pki_dir,
                generate_pki,
                serving_hosts: tls_san,
                token_file: token_auth_file,
                store,
            })
            .await
            .context("starting the apiserver")?;
            println!("listening on https://{}", server.addr);
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            server.shutdown().await;
            Ok(())
        }
    }
}
