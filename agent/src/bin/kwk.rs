//! `kwk`: the admin CLI. `kwk init` makes this machine a single-node control plane (PKI,
//! kubeconfigs, static pod manifests, kwk-node's configuration); `systemctl enable --now
//! kwk-node` then boots it.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kwk_agent::init::{self, FileOutcome, InitOptions, Layout};

#[derive(Debug, Parser)]
#[command(name = "kwk", version, about = "kwk admin CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write what a single-node control plane needs: PKI, kubeconfigs, static pod manifests,
    /// kwk-node's kubelet.yaml and flags. Existing files are kept (safe to run again).
    Init {
        /// Configuration directory (pki/, manifests/, kubeconfigs, kubelet.yaml).
        #[arg(long, default_value = "/etc/kwk")]
        config_dir: PathBuf,
        /// State directory (the apiserver's embedded store in db/).
        #[arg(long, default_value = "/var/lib/kwk")]
        data_dir: PathBuf,
        /// The node's name (default: the host name).
        #[arg(long)]
        node_name: Option<String>,
        /// The address the apiserver advertises and the node registers with (default: the
        /// source address of the default route).
        #[arg(long)]
        advertise_address: Option<IpAddr>,
        /// The apiserver's HTTPS port.
        #[arg(long, default_value_t = 6443)]
        apiserver_port: u16,
        /// The server URL in admin.kubeconfig (default: https://<advertise-address>:<port>).
        #[arg(long)]
        admin_server: Option<String>,
        /// The control plane image.
        #[arg(long, default_value = init::DEFAULT_IMAGE)]
        image: String,
        /// Service cluster IP range.
        #[arg(long, default_value = "10.96.0.0/12")]
        service_cidr: String,
        /// Pod network: each node gets a pod CIDR from it.
        #[arg(long, default_value = "10.244.0.0/16")]
        pod_network_cidr: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Init {
            config_dir,
            data_dir,
            node_name,
            advertise_address,
            apiserver_port,
            admin_server,
            image,
            service_cidr,
            pod_network_cidr,
        } => {
            let node_name = match node_name {
                Some(name) => name,
                None => nix::unistd::gethostname()
                    .context("reading the host name (or pass --node-name)")?
                    .to_string_lossy()
                    .to_lowercase(),
            };
            let advertise_address = match advertise_address {
                Some(address) => address,
                None => kwk_agent::node_status::machine::default_route_address()
                    .context("finding this machine's address (pass --advertise-address)")?,
            };
            let admin_server = admin_server.unwrap_or_else(|| match advertise_address {
                IpAddr::V4(v4) => format!("https://{v4}:{apiserver_port}"),
                IpAddr::V6(v6) => format!("https://[{v6}]:{apiserver_port}"),
            });
            let options = InitOptions {
                layout: Layout::new(config_dir, data_dir),
                node_name,
                advertise_address,
                apiserver_port,
                admin_server,
                image,
                service_cidr,
                cluster_cidr: pod_network_cidr,
            };
            let report = init::init(&options)?;
            for (path, outcome) in &report.files {
                let verb = match outcome {
                    FileOutcome::Written => "wrote",
                    FileOutcome::Kept => "kept ",
                };
                println!("{verb} {}", path.display());
            }
            if report.all_kept() {
                println!("already initialised: nothing changed");
            }
            let layout = &options.layout;
            println!(
                "\nstart the node:  systemctl enable --now kwk-node   (flags in {})",
                layout.node_env().display()
            );
            println!(
                "then:            kubectl --kubeconfig {} get nodes",
                layout.kubeconfig("admin").display()
            );
            Ok(())
        }
    }
}
