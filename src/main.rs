//! The `switchyard` command: run the proxy, check a config, or run the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard::config::{Config, LogConfig, LogFormat};
use switchyard::proxy::{Proxy, termination_signal};

/// A replication-aware PostgreSQL proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, env = "SWITCHYARD_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and exit (non-zero, naming the bad key, when invalid).
    Check,
    /// Start a local primary + 2 streaming replicas with switchyard in front.
    Demo {
        /// Instead of serving until Ctrl-C, run writers through the proxy,
        /// stop the primary, promote a replica, and print what they saw.
        #[arg(long)]
        failover: bool,
    },
}

/// Logs to stderr with `config`'s format and level (`SWITCHYARD_LOG`
/// overrides the level).
fn init_logging(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Demo { failover }) => {
            init_logging(&LogConfig::default());
            switchyard::demo::run(failover)
        }
        Some(Command::Check) => match load(cli.config) {
            // The TLS files are loaded too, so a bad certificate fails here, not at start.
            Ok(config) => match switchyard::proxy::Settings::new(config) {
                Ok(_) => {
                    println!("configuration is valid");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
        None => match load(cli.config.clone()) {
            Ok(config) => {
                init_logging(&config.log);
                serve(config, cli.config)
            }
            Err(code) => code,
        },
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        eprintln!("error: --config FILE is required (or set SWITCHYARD_CONFIG)");
        return Err(ExitCode::from(2));
    };
    Config::load(&path).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::FAILURE
    })
}

fn serve(config: Config, path: Option<PathBuf>) -> ExitCode {
    let runtime = match switchyard::proxy::control_runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let proxy = match Proxy::bind_file(config, path) {
            Ok(proxy) => proxy,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(addr) = proxy.local_addr() {
            tracing::info!(%addr, "switchyard listening");
        }
        proxy.run(termination_signal()).await;
        ExitCode::SUCCESS
    })
}
