//! strata: a daemonless, Docker-compatible image builder and container runtime.
//!
//! The binary is thin: it parses the command line (`cli`), opens the store, and calls the
//! library crates through one module per command family (`commands`).

mod alloc;
mod changes;
mod cli;
mod commands;
mod filters;
mod gotemplate;
mod output;

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: alloc::Strata = alloc::Strata;

use cli::{BuilderCommand, Cli, Command, ContainerCommand, ImageCommand, SystemCommand};
use commands::containers::{self, ExitError};
use commands::{container_info, images, manifests, open_store, registry, system, volumes};
use strata_runtime::launch::{self, MonitorLaunch};

fn main() -> ExitCode {
    if strata_runtime::rootexe::reentered_from_a_container() {
        eprintln!(
            "strata: this is the container runtime's binary; it does not run inside a container"
        );
        return ExitCode::from(126);
    }
    if let Some(code) = reexec_fast_path() {
        std::process::exit(code);
    }
    let cli = Cli::from_args();
    if !starts_a_container(&cli.command) {
        alloc::use_mimalloc();
    }
    init_logging(&cli.globals.log_level);
    // Docker's rule: a failure of strata itself while running a container exits 125.
    let runs_container = matches!(
        cli.command,
        Command::Run(_)
            | Command::Create(_)
            | Command::Exec(_)
            | Command::Container(ContainerCommand::Run(_))
    );
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", one_line(&e));
            let code = match e.downcast_ref::<ExitError>() {
                Some(ExitError(code, _)) => *code,
                None if runs_container => 125,
                None => 1,
            };
            ExitCode::from(code as u8)
        }
    }
}

/// The re-execs strata makes of itself (`strata --root ROOT __monitor ...`, see
/// [`MonitorLaunch`], and `strata --root ROOT __exec --spec-fd N`):
/// they are on every container start's and exec's path, so they skip building the whole
/// command line parser and the log setup (~0.4 ms). Any other shape, or a store that does not
/// open, goes the usual way.
fn reexec_fast_path() -> Option<i32> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let [_, flag, root, cmd, rest @ ..] = args.as_slice() else {
        return None;
    };
    if flag != "--root" {
        return None;
    }
    let open = || open_store(&std::path::absolute(root).ok()?).ok();
    match (cmd.to_str()?, rest) {
        (launch::MONITOR, _) => {
            let words: Vec<&str> = args[3..]
                .iter()
                .map(|a| a.to_str())
                .collect::<Option<_>>()?;
            let launch = MonitorLaunch::parse(&words)?;
            Some(strata_runtime::monitor::run(&open()?, &launch))
        }
        (strata_runtime::health::HEALTH_COMMAND, [id]) => {
            Some(strata_runtime::health::checker_main(&open()?, id.to_str()?))
        }
        (strata_network::dns::DNS_COMMAND, [net]) => Some(strata_network::dns::server_main(
            strata_network::Networks::new(&open()?),
            net.to_str()?,
        )),
        // Needs no store: the step's tree is named in the spec.
        (strata_runtime::chroot::CHROOT, [f, n]) if f == "--spec-fd" => Some(
            strata_runtime::chroot::helper_main(n.to_str()?.parse().ok()?),
        ),
        (launch::EXEC, [f, n]) if f == "--spec-fd" => {
            Some(containers::exec_helper(&open()?, n.to_str()?.parse().ok()?))
        }
        _ => None,
    }
}

/// Commands on a container start's path, which stay on glibc's malloc (see `alloc`).
fn starts_a_container(c: &Command) -> bool {
    matches!(
        c,
        Command::Run(_)
            | Command::Create(_)
            | Command::Start(_)
            | Command::Exec(_)
            | Command::Monitor(_)
            | Command::ExecHelper { .. }
            | Command::Container(
                ContainerCommand::Run(_) | ContainerCommand::Create(_) | ContainerCommand::Start(_)
            )
    )
}

/// What rootless strata cannot do yet, refused in one line before anything is touched:
/// containers on user networks (bridges of the host's, which need its root).
fn rootless_supports(c: &Command) -> anyhow::Result<()> {
    let network = match c {
        Command::Run(a) | Command::Container(ContainerCommand::Run(a)) => &a.create.network,
        Command::Create(a) | Command::Container(ContainerCommand::Create(a)) => &a.network,
        _ => return Ok(()),
    };
    let rootless_kinds = ["none", "host", "bridge", "default"];
    if !(rootless_kinds.contains(&network.as_str()) || network.starts_with("container:")) {
        anyhow::bail!(
            "rootless: --network {network} needs root (user networks are bridges of the \
             host's); use the default (user-mode) network, none or host"
        );
    }
    Ok(())
}

/// The error and its causes on one line.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
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

/// The store when neither `--root` nor `STRATA_ROOT` says: the system's for root, else (a
/// rootless command, about to enter its namespace) the user's data directory, as podman's.
fn default_root() -> std::path::PathBuf {
    if nix::unistd::Uid::effective().is_root() {
        return strata_cache::store::DEFAULT_ROOT.into();
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    data.join("strata")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Absolute, because containers and mounts use store paths from other working directories.
    let root = cli.globals.root.clone().unwrap_or_else(default_root);
    let root = std::path::absolute(&root)
        .map_err(|e| anyhow::anyhow!("--root {}: {e}", root.display()))?;
    // Rootless: every command runs as root of the user's namespace (made before any mount),
    // where the image's owners map to the user's subordinate ids.
    if !nix::unistd::Uid::effective().is_root() {
        rootless_supports(&cli.command)?;
        strata_runtime::rootless::enter()?;
    }
    let store = || open_store(&root);
    let insecure = cli.globals.insecure_registries.clone();
    let registries = registry::RegistryConfig {
        insecure: insecure.clone(),
    };
    match cli.command {
        Command::Build(a) => {
            if a.check {
                commands::build::check(&a)
            } else {
                commands::build::build(&store()?, &a, &registries)
            }
        }
        Command::Builder(BuilderCommand::Prune {
            all, keep_storage, ..
        }) => system::builder_prune(&store()?, all, keep_storage.as_deref()),
        Command::Builder(BuilderCommand::Du) => system::builder_du(&store()?),
        Command::Volume(c) => volumes::run(&store()?, c),
        Command::Manifest(c) => manifests::run(&store()?, &registries, c),
        Command::Network(c) => commands::networks::run(&store()?, c),
        Command::Stats(a) => commands::stats::stats(&store()?, &a),
        Command::Attach(a) => commands::attach::attach(&store()?, &a),
        Command::Update(a) => containers::update(&store()?, &a),
        Command::Events(a) | Command::System(SystemCommand::Events(a)) => {
            commands::events::events(&store()?, &a)
        }
        Command::Port {
            container,
            private_port,
        } => commands::networks::port(&store()?, &container, private_port.as_deref()),
        Command::Builder(BuilderCommand::Cache(c)) => system::builder_cache(&store()?, &c),
        Command::Run(a) | Command::Container(ContainerCommand::Run(a)) => {
            containers::run(&store()?, &root, &insecure, &a)
        }
        Command::Create(a) | Command::Container(ContainerCommand::Create(a)) => {
            containers::create(&store()?, &root, &insecure, &a)
        }
        Command::Start(a) | Command::Container(ContainerCommand::Start(a)) => {
            containers::start(&store()?, &root, &a)
        }
        Command::Stop(a) | Command::Container(ContainerCommand::Stop(a)) => {
            containers::stop(&store()?, &a)
        }
        Command::Restart(a) | Command::Container(ContainerCommand::Restart(a)) => {
            containers::restart(&store()?, &root, &a)
        }
        Command::Kill(a) | Command::Container(ContainerCommand::Kill(a)) => {
            containers::kill(&store()?, &a)
        }
        Command::Pause { containers: c } => containers::pause(&store()?, &c),
        Command::Unpause { containers: c } => containers::unpause(&store()?, &c),
        Command::Rm(a) | Command::Container(ContainerCommand::Rm(a)) => {
            containers::rm(&store()?, &a)
        }
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => {
            container_info::ps(&store()?, &a)
        }
        Command::Exec(a) => containers::exec(&root, &a),
        Command::Logs(a) => container_info::logs(&store()?, &a),
        Command::Wait {
            condition,
            containers: c,
        } => containers::wait(&store()?, &condition, &c),
        Command::Rename {
            container,
            new_name,
        } => containers::rename(&store()?, &container, &new_name),
        Command::Top { container } => container_info::top(&store()?, &container),
        Command::Commit(a) => containers::commit(&store()?, &a),
        Command::Export(a) => containers::export(&store()?, &a),
        Command::Cp(a) | Command::Container(ContainerCommand::Cp(a)) => {
            containers::cp(&store()?, &a)
        }
        Command::Diff { container } => container_info::diff(&store()?, &container),
        Command::Container(ContainerCommand::Inspect(a)) => {
            container_info::inspect(&store()?, &a.names, a.format.as_deref(), Some("container"))
        }
        Command::Container(ContainerCommand::Prune(_)) => {
            for id in containers::prune_stopped(&store()?)? {
                println!("{id}");
            }
            Ok(())
        }
        Command::Monitor(a) => {
            let words: Vec<&str> = std::iter::once(launch::MONITOR)
                .chain(a.words.iter().map(String::as_str))
                .collect();
            let Some(launch) = MonitorLaunch::parse(&words) else {
                anyhow::bail!("bad monitor command line: {}", a.words.join(" "));
            };
            std::process::exit(strata_runtime::monitor::run(&store()?, &launch));
        }
        Command::ExecHelper { spec_fd } => {
            std::process::exit(containers::exec_helper(&store()?, spec_fd))
        }
        Command::Version => {
            system::version();
            Ok(())
        }
        Command::Info | Command::System(SystemCommand::Info) => system::info(&store()?),
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            images::import(&store()?, &a)
        }
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::images(&store()?, &a),
        Command::Inspect(a) => {
            container_info::inspect(&store()?, &a.names, a.format.as_deref(), a.kind.as_deref())
        }
        Command::Image(ImageCommand::Inspect(a)) => images::inspect(&store()?, &a),
        Command::History(a) | Command::Image(ImageCommand::History(a)) => {
            images::history(&store()?, &a)
        }
        Command::Tag { source, target } | Command::Image(ImageCommand::Tag { source, target }) => {
            images::tag(&store()?, &source, &target)
        }
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::rmi(&store()?, &a),
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => images::save(&store()?, &a),
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => images::load(&store()?, &a),
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => {
            registry::pull_cmd(&store()?, &registries, &a)
        }
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => {
            registry::push_cmd(&store()?, &registries, &a)
        }
        Command::Login(a) => registry::login(&registries, &a),
        Command::Logout { registry: r } => registry::logout(r.as_deref()),
        Command::Image(ImageCommand::Prune(a)) => system::prune(&store()?, &a, true),
        Command::System(SystemCommand::Df) => system::df(&store()?),
        Command::System(SystemCommand::Reset { force: _ }) => system::reset(&store()?),
        Command::System(SystemCommand::Prune(a)) => system::prune(&store()?, &a, false),
        Command::System(SystemCommand::Check { repair }) => system::check(&store()?, repair),
    }
}
