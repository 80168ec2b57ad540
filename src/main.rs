//! strata: a daemonless, Docker-compatible image builder and container runtime.
//!
//! The binary is thin: it parses the command line (`cli`), opens the store, and calls the
//! library crates through one module per command family (`commands`).

mod changes;
mod cli;
mod commands;
mod output;

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

use cli::{Cli, Command, ImageCommand, SystemCommand};
use commands::{images, open_store, system};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', "; ")
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let root = cli.root.clone();
    let store = || open_store(&root);
    match cli.command {
        Command::Build(a) => commands::build::build(&a),
        Command::Version => {
            system::version();
            Ok(())
        }
        Command::Info | Command::System(SystemCommand::Info) => system::info(&store()?),
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            images::import(&store()?, &a)
        }
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::images(&store()?, &a),
        Command::Inspect(a) | Command::Image(ImageCommand::Inspect(a)) => {
            images::inspect(&store()?, &a)
        }
        Command::History(a) | Command::Image(ImageCommand::History(a)) => {
            images::history(&store()?, &a)
        }
        Command::Tag { source, target } | Command::Image(ImageCommand::Tag { source, target }) => {
            images::tag(&store()?, &source, &target)
        }
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::rmi(&store()?, &a),
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => images::save(&store()?, &a),
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => images::load(&store()?, &a),
        Command::Image(ImageCommand::Prune(a)) => system::prune(&store()?, &a, true),
        Command::System(SystemCommand::Df) => system::df(&store()?),
        Command::System(SystemCommand::Prune(a)) => system::prune(&store()?, &a, false),
        Command::System(SystemCommand::Check { repair }) => system::check(&store()?, repair),
    }
}
