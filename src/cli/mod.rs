//! The command line: Docker's verbs and flags.
//!
//! The doc comments here are clap's help texts, written for a terminal (`NAME[:TAG]`), not
//! for rustdoc.
#![allow(rustdoc::broken_intra_doc_links)]

mod containers;
mod images;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use containers::*;
pub use images::*;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Daemonless, Docker-compatible image builder and container runtime",
    propagate_version = true,
    disable_help_subcommand = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Args, Debug)]
pub struct Globals {
    /// Store directory [default: /var/lib/strata for root, else $XDG_DATA_HOME/strata or
    /// ~/.local/share/strata]
    #[arg(long, global = true, env = "STRATA_ROOT")]
    pub root: Option<PathBuf>,

    /// Log level (error, warn, info, debug, trace)
    #[arg(long, global = true, default_value = "warn", env = "STRATA_LOG")]
    pub log_level: String,

    /// Registry (host[:port]) to reach over plain HTTP; repeatable. Loopback registries always are.
    #[arg(
        long = "insecure-registry",
        global = true,
        env = "STRATA_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
}

/// The command line with only `run` and `exec`: what a container start or an exec parses.
/// Building every command's arguments costs ~0.5 ms, a tenth of a start; a command line this
/// does not accept is parsed again in full (`Cli`), which gives the usual help and errors.
#[derive(Parser, Debug)]
#[command(
    name = "strata",
    disable_help_subcommand = true,
    args_override_self = true
)]
pub struct RunOnly {
    #[command(flatten)]
    pub globals: Globals,

    #[command(subcommand)]
    pub command: RunOnlyCommand,
}

// Parsed once and moved straight into `Command`; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum RunOnlyCommand {
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    Exec(ExecArgs),
}

impl Cli {
    /// Parses the process's arguments (see [`RunOnly`]).
    pub fn from_args() -> Cli {
        if std::env::args_os().any(|a| a == "run" || a == "exec") {
            if let Ok(RunOnly { globals, command }) = RunOnly::try_parse() {
                let command = match command {
                    RunOnlyCommand::Run(a) => Command::Run(a),
                    RunOnlyCommand::Exec(a) => Command::Exec(a),
                };
                return Cli { globals, command };
            }
        }
        Cli::parse()
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create(CreateArgs),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Pause all processes within one or more containers
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Unpause all processes within one or more containers
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove one or more containers
    Rm(RmArgs),
    /// List containers
    Ps(PsArgs),
    /// Execute a command in a running container
    Exec(ExecArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait {
        /// Condition to wait for: not-running (default), removed, running, paused, healthy,
        /// unhealthy
        #[arg(long, default_value = "not-running")]
        condition: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Rename a container
    Rename { container: String, new_name: String },
    /// Display the running processes of a container
    Top { container: String },
    /// Attach local standard input, output, and error streams to a running container
    Attach(AttachArgs),
    /// Display a live stream of containers' resource usage
    Stats(StatsArgs),
    /// Update configuration of one or more containers
    Update(UpdateArgs),
    /// Create a new image from a container's changes
    Commit(CommitArgs),
    /// Export a container's filesystem as a tar archive
    Export(ExportArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff { container: String },
    /// Copy files/folders between a container and the local filesystem
    Cp(CpArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCommand),
    #[command(name = "__monitor", hide = true)]
    Monitor(MonitorArgs),
    #[command(name = "__exec", hide = true)]
    ExecHelper {
        #[arg(long)]
        spec_fd: i32,
    },
    /// Build an image from a Dockerfile
    Build(BuildArgs),
    /// Create an image from a root filesystem tarball
    Import(ImportArgs),
    /// List images
    Images(ImagesArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Show low-level information on images (and containers)
    Inspect(InspectArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Create a tag TARGET that refers to SOURCE
    Tag { source: String, target: String },
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Save images to a tar archive (OCI layout + docker save format)
    Save(SaveArgs),
    /// Load images from a tar archive
    Load(LoadArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Log in to a registry (credentials go to ~/.docker/config.json)
    Login(LoginArgs),
    /// Log out from a registry
    Logout {
        /// Registry (default: docker.io)
        registry: Option<String>,
    },
    /// Manage strata itself
    #[command(subcommand)]
    System(SystemCommand),
    /// Manage the build cache
    #[command(subcommand)]
    Builder(BuilderCommand),
    /// Manage volumes
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Manage multi-platform tags (local image indexes)
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCommand),
    /// List port mappings or a specific mapping for the container
    /// Get real time events: container, image, volume and network (streams until --until)
    Events(EventsArgs),
    Port {
        container: String,
        /// PRIVATE_PORT[/PROTO]
        private_port: Option<String>,
    },
    /// Show the version
    Version,
    /// Show store and system information
    Info,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Show low-level information on images
    Inspect(InspectArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove images
    Rm(RmiArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Create a tag
    Tag { source: String, target: String },
    /// Import a root filesystem tarball
    Import(ImportArgs),
    /// Save images
    Save(SaveArgs),
    /// Load images
    Load(LoadArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Remove unused images
    Prune(PruneArgs),
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Show disk usage
    Df,
    /// Remove unused data
    Prune(PruneArgs),
    /// Verify every store invariant and digest
    Check {
        /// Sweep leftovers, unmount orphan mounts, move corrupt records aside
        #[arg(long)]
        repair: bool,
    },
    /// Show store and system information
    Info,
    /// Get real time events (as `events`)
    Events(EventsArgs),
    /// Remove every container, network, image, volume and cache entry: an empty store, and
    /// nothing of it left on the host (bridges, firewall table)
    Reset {
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 512m; 0 lifts it)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight)
    #[arg(short, long)]
    pub cpu_shares: Option<i64>,
    /// Tune container pids limit (-1 for unlimited)
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// Override the key sequence for detaching a container (default ctrl-p,ctrl-q)
    #[arg(long, value_name = "KEYS")]
    pub detach_keys: Option<String>,
    /// Do not attach STDIN
    #[arg(long)]
    pub no_stdin: bool,
    /// Proxy all received signals to the process (without a TTY); --sig-proxy=false too
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output with a Go template, table TEMPLATE, or json
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Show events created since a timestamp (2013-01-02T13:23:37Z), Unix seconds or a
    /// duration ago (10m); default: from now on
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp (or duration ago); without it, stream until interrupted
    #[arg(long)]
    pub until: Option<String>,
    /// Filter events (type, event, container, image, label, network, volume); repeatable
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Format output with a Go template, or json
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network (prints its id)
    Create {
        /// Driver to manage the network (only bridge)
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR format (default: a free /24 of 10.89.128.0/17)
        #[arg(long)]
        subnet: Option<String>,
        /// IPv4 gateway for the subnet (default: its first address)
        #[arg(long)]
        gateway: Option<String>,
        /// Restrict external access to the network
        #[arg(long)]
        internal: bool,
        /// Set metadata on a network (KEY=VALUE); repeatable
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Set driver options: com.docker.network.driver.mtu=N (or mtu=N); repeatable
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// Only display network IDs
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate the output
        #[arg(long)]
        no_trunc: bool,
        /// Filter output (name, id, driver, label, type); repeatable
        #[arg(short, long = "filter", value_name = "KEY=VALUE")]
        filter: Vec<String>,
        /// Format output: table, json, or a Go template
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on networks
    Inspect {
        /// Format output with a Go template
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (never one with running containers)
    #[command(alias = "remove")]
    Rm {
        /// Do not fail for networks that do not exist
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove all networks no container is attached to
    Prune {
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a container to a network
    Connect {
        /// Add a network-scoped alias for the container
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// IPv4 address
        #[arg(long)]
        ip: Option<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network
    Disconnect {
        /// Force the container to disconnect from a network
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Make a multi-platform tag of single-platform images (one per platform)
    Create {
        /// Replace the tag if it exists
        #[arg(short, long)]
        amend: bool,
        /// The multi-platform tag
        list: String,
        /// The images, one per platform
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Add an image to a multi-platform tag (replacing its platform's)
    Add { list: String, image: String },
    /// Set the platform an image of a multi-platform tag is listed for
    Annotate {
        list: String,
        /// The member image (NAME[:TAG] or ID)
        image: String,
        /// Operating system
        #[arg(long)]
        os: Option<String>,
        /// Architecture
        #[arg(long)]
        arch: Option<String>,
        /// Architecture variant (v7, v8)
        #[arg(long)]
        variant: Option<String>,
    },
    /// Show a multi-platform tag's platforms and images
    Inspect { list: String },
    /// Push a multi-platform tag to a registry as an image index
    Push {
        /// Remove the local multi-platform tag after the push
        #[arg(short, long)]
        purge: bool,
        #[command(flatten)]
        push: PushArgs,
    },
    /// Remove multi-platform tags (their images stay)
    Rm {
        #[arg(required = true)]
        lists: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume (prints its name)
    Create {
        /// Set metadata for a volume (KEY=VALUE); repeatable
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Volume driver (only local)
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Driver options: type=tmpfs (device, o=size=…), or type=none,o=bind,device=DIR
        #[arg(short, long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
        /// A name (default: a random one)
        name: Option<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// Only display volume names
        #[arg(short, long)]
        quiet: bool,
        /// Filter output (dangling, name, label); repeatable
        #[arg(short, long = "filter", value_name = "KEY=VALUE")]
        filter: Vec<String>,
        /// Format output: table, json, or a Go template
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on volumes
    Inspect {
        /// Format output with a Go template
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (never one a container uses)
    #[command(alias = "remove")]
    Rm {
        /// Do not fail for volumes that do not exist
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused volumes with -a)
    Prune {
        /// Remove all unused volumes, not just anonymous ones
        #[arg(short, long)]
        all: bool,
        /// Provide filter values (label=KEY[=VALUE], label!=KEY[=VALUE], all=true)
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filter: Vec<String>,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BuilderCommand {
    /// Remove build cache
    Prune {
        /// Remove all build cache (default: everything not used by a tagged image's history)
        #[arg(short, long)]
        all: bool,
        /// Keep this much cache (e.g. 1g), dropping the least recently used first
        #[arg(long)]
        keep_storage: Option<String>,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
    /// Show build cache disk usage
    Du,
    /// Carry RUN --mount=type=cache directories between machines
    #[command(subcommand)]
    Cache(BuilderCacheCommand),
}

#[derive(Subcommand, Debug)]
pub enum BuilderCacheCommand {
    /// Write every cache mount into DIR (one zstd tar each, plus index.json)
    Export { dir: PathBuf },
    /// Load the cache mounts exported in DIR, replacing those with the same id
    Import { dir: PathBuf },
}
