use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use feishu_kafka_bridge::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

// Why mimalloc, and its settings: src/allocator.rs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    feishu_kafka_bridge::allocator::tune();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("feishu-kafka-bridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match &cli.command {
        Some(Command::Demo(args)) => {
            init_logging(LogFormat::Text, &cli.settings.log.filter);
            match runtime.block_on(feishu_kafka_bridge::demo::run(args.clone())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("feishu-kafka-bridge demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Snapshot(args)) => {
            let config = match validated(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match runtime.block_on(feishu_kafka_bridge::snapshot::command::run(
                config,
                args.chats.clone(),
            )) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("feishu-kafka-bridge snapshot: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        None | Some(Command::Serve) => {
            let config = match validated(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // An address that cannot be bound is a bad setting (exit 2, like
            // any other, docs/configuration.md), not a runtime failure.
            let bound = runtime.block_on(feishu_kafka_bridge::server::Listeners::bind(&config));
            let listeners = match bound {
                Ok(listeners) => listeners,
                Err(e) => {
                    eprintln!("feishu-kafka-bridge: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let result = runtime.block_on(feishu_kafka_bridge::run(
                config,
                listeners,
                feishu_kafka_bridge::shutdown_signal(),
            ));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "fatal");
                    eprintln!("feishu-kafka-bridge: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The settings, validated, with logging set up as they say; a bad
/// setting is one line and exit code 2.
fn validated(cli: &Cli) -> Result<feishu_kafka_bridge::config::Config, ExitCode> {
    match cli.settings.validate() {
        Ok(config) => {
            init_logging(cli.settings.log.format, &cli.settings.log.filter);
            Ok(config)
        }
        Err(e) => {
            eprintln!("feishu-kafka-bridge: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("feishu-kafka-bridge: invalid setting BRIDGE_LOG ({e}); using info");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// Prints a flag or environment parsing error as one line naming the
/// setting (the environment name when the flag has one), so that a bad
/// Kubernetes ConfigMap is obvious from the pod's last log line.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.split_whitespace().next().unwrap_or_default().to_owned(),
        _ => String::new(),
    };
    let env = Cli::command()
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|l| flag == format!("--{l}")))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned());
    let message = e.to_string();
    let first = message
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned();
    match env {
        Some(env) => eprintln!("feishu-kafka-bridge: invalid setting {env} ({flag}): {first}"),
        None => eprintln!("feishu-kafka-bridge: {first} (see --help)"),
    }
    ExitCode::from(2)
}
