use clap::Parser;
use fluxup::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command() {
        Command::Serve(args) => {
            fluxup::telemetry::init(args.log_format);
            fluxup::web::serve(args).await
        }
        Command::Crds => {
            print!("{}", fluxup::generate::crds_yaml()?);
            Ok(())
        }
        Command::Rbac => {
            print!("{}", fluxup::generate::rbac_yaml()?);
            Ok(())
        }
        Command::IngestRenovate {
            log,
            source,
            namespace,
        } => {
            fluxup::telemetry::init(fluxup::cli::LogFormat::Text);
            fluxup::ingest::ingest_file(&log, source, namespace).await
        }
        Command::Generate { config_dir } => {
            for path in fluxup::generate::write_all(&config_dir)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}
