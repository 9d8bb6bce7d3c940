//! The command line.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// FluxUp: safe, Git-driven upgrades of Flux Helm releases, with snapshots and rollback.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Serve the dashboard and API and run the controllers (the default).
    Serve(ServeArgs),
    /// Print FluxUp's CustomResourceDefinitions as YAML.
    Crds,
    /// Print the RBAC rules FluxUp's controllers need, as YAML.
    Rbac,
    /// Record the findings of a Renovate run on the ManagedApps, from its JSON log or report (as the
    /// operator does when a Renovate Job finishes). For Renovate run outside the cluster, e.g.
    /// in CI.
    IngestRenovate {
        /// Renovate's JSON log (LOG_FORMAT=json, LOG_LEVEL=debug) or its report file
        /// (reportType=file); `-` for standard input.
        log: PathBuf,
        /// How the apps' status names this run. Default: the file's name.
        #[arg(long)]
        source: Option<String>,
        /// Only the ManagedApps in this namespace. Default: every namespace.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Write every generated file under the config directory (CRDs and RBAC).
    Generate {
        /// The config directory of the repository.
        #[arg(long, default_value = "config")]
        config_dir: PathBuf,
    },
}

impl Cli {
    /// The subcommand to run: `serve` (with its options from the environment) when none is given.
    pub fn command(self) -> Command {
        self.command.unwrap_or_else(|| {
            Cli::parse_from(["fluxup", "serve"])
                .command
                .expect("`serve` parses to a command")
        })
    }
}

/// Options of `fluxup serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on. Default: the Leptos site address (`LEPTOS_SITE_ADDR`, else
    /// 127.0.0.1:3000).
    #[arg(long, env = "FLUXUP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address `/metrics` (Prometheus, OpenMetrics text) is served on, apart from the dashboard
    /// so that it is not exposed with it. Port 0 picks a free one (logged).
    #[arg(long, env = "FLUXUP_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// Run the controllers in this process (default). `false` serves the dashboard only.
    #[arg(long, env = "FLUXUP_CONTROLLERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub controllers: bool,
    /// Serve the dashboard and API (default). `false` runs the controllers with the health
    /// probes only: the way `config/manager` runs them, as their own ServiceAccount.
    #[arg(long, env = "FLUXUP_DASHBOARD", default_value_t = true, action = clap::ArgAction::Set)]
    pub dashboard: bool,
    /// A kubeconfig for the dashboard's own identity (the `fluxup-dashboard` ServiceAccount:
    /// its caches, RBAC reviews, impersonation), apart from the controllers'. Default: the same
    /// identity as the controllers (KUBECONFIG or the pod's ServiceAccount).
    #[arg(long, env = "FLUXUP_DASHBOARD_KUBECONFIG")]
    pub dashboard_kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "FLUXUP_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "FLUXUP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// OIDC issuer people log in through (e.g. Dex). Required unless `--no-auth`.
    #[arg(long, env = "FLUXUP_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// OIDC client ID.
    #[arg(long, env = "FLUXUP_OIDC_CLIENT_ID", default_value = "fluxup")]
    pub oidc_client_id: String,
    /// OIDC client secret (keep it in a Secret and pass it through the environment).
    #[arg(long, env = "FLUXUP_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// Scopes asked for besides `openid`, comma-separated.
    #[arg(
        long,
        env = "FLUXUP_OIDC_SCOPES",
        default_value = "email,profile,groups",
        value_delimiter = ','
    )]
    pub oidc_scopes: Vec<String>,
    /// The ID token claim naming the user, as Kubernetes RBAC knows them.
    #[arg(long, env = "FLUXUP_OIDC_USERNAME_CLAIM", default_value = "email")]
    pub oidc_username_claim: String,
    /// The ID token claim listing the user's groups.
    #[arg(long, env = "FLUXUP_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,
    /// Prefix for user names, as the API server's `--oidc-username-prefix`, so that a login
    /// can never name a cluster's own users. Default: `oidc:`; `-` for none.
    #[arg(long, env = "FLUXUP_OIDC_USERNAME_PREFIX")]
    pub oidc_username_prefix: Option<String>,
    /// Prefix for group names, as the API server's `--oidc-groups-prefix`. Default: `oidc:`;
    /// `-` for none.
    #[arg(long, env = "FLUXUP_OIDC_GROUPS_PREFIX")]
    pub oidc_groups_prefix: Option<String>,
    /// Deprecated: sets both `--oidc-username-prefix` and `--oidc-groups-prefix` (each still
    /// wins when given).
    #[arg(long, env = "FLUXUP_OIDC_PREFIX", hide = true)]
    pub oidc_prefix: Option<String>,
    /// Only people in one of these groups (comma-separated, with the groups prefix, e.g.
    /// `oidc:platform`) may log in. Default: anyone the issuer knows.
    #[arg(long, env = "FLUXUP_OIDC_ALLOWED_GROUPS", value_delimiter = ',')]
    pub oidc_allowed_groups: Vec<String>,
    /// Where people reach FluxUp, e.g. `https://fluxup.example.com`; the OIDC callback is under
    /// it. Default: `http://<listen address>`.
    #[arg(long, env = "FLUXUP_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Serve without logins: everyone acts with FluxUp's own permissions. Only on a loopback
    /// address, outside a cluster, and only for requests naming localhost.
    #[arg(long, env = "FLUXUP_NO_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub no_auth: bool,
}

impl ServeArgs {
    /// The user and groups prefixes: each flag, else the deprecated `--oidc-prefix`, else
    /// `oidc:`; `-` means none.
    pub fn oidc_prefixes(&self) -> (String, String) {
        let pick = |own: &Option<String>| {
            let chosen = own
                .as_deref()
                .or(self.oidc_prefix.as_deref())
                .unwrap_or(DEFAULT_OIDC_PREFIX);
            if chosen == "-" { "" } else { chosen }.to_string()
        };
        (
            pick(&self.oidc_username_prefix),
            pick(&self.oidc_groups_prefix),
        )
    }
}

/// The prefix of user and group names from logins, as in the API server's OIDC examples.
pub const DEFAULT_OIDC_PREFIX: &str = "oidc:";

/// Log output formats.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let mut all = vec!["fluxup", "serve"];
        all.extend_from_slice(args);
        match Cli::parse_from(all).command {
            Some(Command::Serve(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prefixes_default_to_oidc_and_the_old_flag_sets_both() {
        let p = |a: &[&str]| serve(a).oidc_prefixes();
        assert_eq!(p(&[]), ("oidc:".into(), "oidc:".into()));
        assert_eq!(
            p(&["--oidc-prefix", "corp:"]),
            ("corp:".into(), "corp:".into())
        );
        assert_eq!(
            p(&["--oidc-prefix", "corp:", "--oidc-groups-prefix", "g:"]),
            ("corp:".into(), "g:".into())
        );
        assert_eq!(
            p(&["--oidc-username-prefix", "-"]),
            (String::new(), "oidc:".into())
        );
        let args = serve(&["--oidc-allowed-groups", "oidc:ops,oidc:dev"]);
        assert_eq!(args.oidc_allowed_groups, ["oidc:ops", "oidc:dev"]);
        assert_eq!(args.metrics_listen.to_string(), "127.0.0.1:9464");
    }
}
