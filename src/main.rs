#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ecr_token_webhook::commands::cli::{Cli, Command, LogFormat};
use ecr_token_webhook::commands::{certs, serve, status};
use ecr_token_webhook::logging;

fn main() -> ExitCode {
    // kube and the AWS SDK could each bring a crypto provider; pick one before any TLS is set up.
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: cannot install the rustls crypto provider");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log.log_format, cli.log_level()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Certs(args) => certs::certs(&args),
        // Its own exit codes: 0 all fresh, 1 a secret with a problem, 2 cannot tell.
        Command::Status(args) => {
            return match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => ExitCode::from(rt.block_on(status::run(&args))),
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    ExitCode::from(status::EXIT_CANNOT_TELL)
                }
            };
        }
        Command::Serve(args) => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(serve::serve(*args)),
            Err(e) => Err(anyhow::anyhow!("cannot start the runtime: {e}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let directives = logging::filter_directives(level);
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .fmt_fields(logging::span_fields())
            .event_format(logging::JsonLines)
            .init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}
