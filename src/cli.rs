//! The command line: Docker's verbs and flags.
//!
//! The doc comments here are clap's help texts, written for a terminal (`NAME[:TAG]`), not
//! for rustdoc.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Store directory
    #[arg(long, global = true, env = "STRATA_ROOT", default_value = strata_cache::store::DEFAULT_ROOT)]
    pub root: PathBuf,

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
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Rename a container
    Rename { container: String, new_name: String },
    /// Display the running processes of a container
    Top { container: String },
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
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the image config (ENV, CMD, ENTRYPOINT, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL)
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Tarball path, or - for standard input
    pub file: String,
    /// Name for the image, REPOSITORY[:TAG]
    pub reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Show all images (intermediate ones too)
    #[arg(short, long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Filter output (dangling, label, reference, before, since); repeatable
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: table, json, or a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Only images of this repository[:tag]
    pub repository: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output with a Go template
    #[arg(short, long)]
    pub format: Option<String>,
    /// Only this type (image, container)
    #[arg(long = "type")]
    pub kind: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show sizes and dates in human form
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Format output
    #[arg(long)]
    pub format: Option<String>,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal (untag an image with several tags)
    #[arg(short, long)]
    pub force: bool,
    /// Do not delete untagged parents
    #[arg(long)]
    pub no_prune: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of standard input
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST]
    pub image: String,
    /// Platform to pull from a multi-platform image (os/arch[/variant])
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image reference
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The local image (NAME[:TAG] or ID)
    pub image: String,
    /// Where to push it (default: the image name itself)
    pub destination: Option<String>,
    /// Layer compression for layers without a blob of that kind: gzip, zstd or none
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
    pub compression: String,
    /// Manifest media types: oci or docker (default: the image's own manifest, else oci)
    #[arg(long, value_parser = ["oci", "docker"])]
    pub format: Option<String>,
    /// Print only the manifest digest
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry (default: docker.io)
    pub registry: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile), or - for standard input
    #[arg(short, long)]
    pub file: Option<String>,
    /// Name and optionally a tag (NAME[:TAG]); repeatable
    #[arg(short, long = "tag")]
    pub tags: Vec<String>,
    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Set the target build stage
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the build cache
    #[arg(long)]
    pub no_cache: bool,
    /// Additional build context (NAME=DIR or NAME=docker-image://REF; repeatable)
    #[arg(long = "build-context")]
    pub build_contexts: Vec<String>,
    /// Do not use the build cache for these stages (name or index; repeatable)
    #[arg(long = "no-cache-filter", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Check the Dockerfile and exit without building
    #[arg(long)]
    pub check: bool,
    /// Print the plan (stages, steps, cache keys, CACHED or why not) without building
    #[arg(long)]
    pub dry_run: bool,
    /// Always attempt to pull a newer base image: never (default: use local images), missing
    #[arg(long, default_value = "missing", value_parser = ["never", "missing", "always"])]
    pub pull: String,
    /// Set metadata for the image (KEY=VALUE); repeatable
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Network mode for RUN instructions: host (default) or none
    #[arg(long, value_parser = ["host", "none", "default"])]
    pub network: Option<String>,
    /// Ulimit options for RUN instructions (NAME=SOFT[:HARD])
    #[arg(long = "ulimit")]
    pub ulimits: Vec<String>,
    /// Suppress the build output and print the image ID on success
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the image ID to the file
    #[arg(long)]
    pub iidfile: Option<std::path::PathBuf>,
    /// Type of progress output: auto, tty, plain, quiet
    #[arg(long, default_value = "auto", value_parser = ["auto", "tty", "plain", "quiet"])]
    pub progress: String,
    /// Target platform (only the host's, linux/amd64 here, is supported)
    #[arg(long)]
    pub platform: Option<String>,
    /// Output: type=image (default), type=oci|docker,dest=F.tar[,compression=gzip|zstd],
    /// type=tar,dest=F.tar, type=local,dest=DIR; `-` is a tar on standard output, a bare path
    /// a local directory
    #[arg(short, long)]
    pub output: Option<String>,
    /// A secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR]; repeatable
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// An SSH agent for RUN --mount=type=ssh: default|ID[=SOCKET]; repeatable
    #[arg(long)]
    pub ssh: Vec<String>,
    /// Allow an entitlement: security.insecure (RUN --security=insecure); repeatable
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// Export the build cache: type=registry,ref=REF[,mode=min|max]
    #[arg(long)]
    pub cache_to: Option<String>,
    /// Import a build cache: type=registry,ref=REF (or just REF); repeatable
    #[arg(long)]
    pub cache_from: Vec<String>,
    /// Build context directory, or - to read a Dockerfile from standard input
    #[arg(default_value = ".")]
    pub context: String,
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Show low-level information on containers
    Inspect(InspectArgs),
    /// List containers
    #[command(alias = "list")]
    Ls(PsArgs),
    /// Remove containers
    Rm(RmArgs),
    /// Create a container
    #[command(disable_help_flag = true)]
    Create(CreateArgs),
    /// Start containers
    Start(StartArgs),
    /// Stop containers
    Stop(StopArgs),
    /// Kill containers
    Kill(KillArgs),
    /// Restart containers
    Restart(StopArgs),
    /// Run a container
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Remove all stopped containers
    Prune(PruneArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(CpArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Print help (-h is --hostname, as in Docker)
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Keep STDIN open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Attach to STDIN, STDOUT or STDERR (repeatable; default: STDOUT and STDERR)
    #[arg(short = 'a', long = "attach", value_name = "STREAM")]
    pub attach: Vec<String>,
    /// Logging driver for the container: json-file (default) or none
    #[arg(long = "log-driver")]
    pub log_driver: Option<String>,
    /// Log driver options (max-size=10m, max-file=3)
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opts: Vec<String>,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Bind mount a volume (HOST:CONTAINER[:ro])
    #[arg(short, long = "volume")]
    pub volumes: Vec<String>,
    /// Mount a tmpfs directory (PATH[:OPTIONS])
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,source=…,target=…[,readonly]
    #[arg(long = "mount", value_name = "SPEC")]
    pub mounts: Vec<String>,
    /// Add a custom host-to-IP mapping to /etc/hosts (HOST:IP)
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option")]
    pub dns_options: Vec<String>,
    /// Size of /dev/shm (e.g. 128m)
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Ulimit options (NAME=SOFT[:HARD])
    #[arg(long = "ulimit")]
    pub ulimits: Vec<String>,
    /// Restart policy when the container exits: no, always, unless-stopped, on-failure[:MAX]
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Add additional groups to join (names or gids)
    #[arg(long = "group-add")]
    pub group_add: Vec<String>,
    /// Write the container ID to the file
    #[arg(long)]
    pub cidfile: Option<std::path::PathBuf>,
    /// UTS namespace to use: host, or a private one (default)
    #[arg(long)]
    pub uts: Option<String>,
    /// IPC namespace to use: host, or a private one (default; private and shareable)
    #[arg(long)]
    pub ipc: Option<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    pub read_only: bool,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Network mode: none (loopback only, the default) or host
    #[arg(long, alias = "net", default_value = "none")]
    pub network: String,
    /// Memory limit (e.g. 512m, 1g)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Tune container pids limit
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Add Linux capabilities
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Security options (no-new-privileges[=true|false], seccomp=unconfined, label=...)
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Add a rule to the cgroup allowed devices list ('c|b|a MAJOR:MINOR rwm', * for any)
    #[arg(long = "device-cgroup-rule", value_name = "RULE")]
    pub device_cgroup_rules: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Signal to stop the container
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long)]
    pub stop_timeout: Option<i64>,
    /// Set metadata on a container
    #[arg(short, long = "label")]
    pub labels: Vec<String>,
    /// Pull the image first: missing (when the store lacks it), always, never
    #[arg(long, default_value = "missing", value_parser = ["missing", "always", "never"])]
    pub pull: String,
    /// The image, then the command and its arguments. One list, so that flag parsing stops at
    /// the image as Docker's does: `run IMAGE -u x` runs `-u x`, whatever strata's flags are.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "IMAGE [COMMAND] [ARG...]"
    )]
    pub image_and_command: Vec<String>,
}

impl CreateArgs {
    /// The image (an unknown flag before it is taken for it: see [`check_flag_words`]).
    pub fn image(&self) -> &str {
        &self.image_and_command[0]
    }

    /// The command and its arguments, when given.
    pub fn command(&self) -> &[String] {
        &self.image_and_command[1..]
    }
}

/// The first word where the image or container goes: one starting with `-` is an unknown
/// flag (it reached the word list only because the list takes hyphenated values).
pub fn check_flag_words(first: &str) -> Result<(), String> {
    if first.starts_with('-') && first.len() > 1 {
        return Err(format!("unknown flag: {first}"));
    }
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short, long)]
    pub detach: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short, long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short, long)]
    pub time: Option<i64>,
    /// Signal to send to the container
    #[arg(short, long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Filter output (id, name, label, exited, status, ancestor, before, since); repeatable
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Show the n last created containers (includes all states)
    #[arg(short = 'n', long, default_value_t = -1, allow_negative_numbers = true)]
    pub last: i64,
    /// Show the latest created container (includes all states)
    #[arg(short, long)]
    pub latest: bool,
    /// Display total file sizes
    #[arg(short, long)]
    pub size: bool,
    /// Only display container IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: table, json, or a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Keep STDIN open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Username or UID
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    /// The container, then the command and its arguments (one list: see
    /// [`CreateArgs::image_and_command`])
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CONTAINER COMMAND [ARG...]"
    )]
    pub container_and_command: Vec<String>,
}

impl ExecArgs {
    pub fn container(&self) -> &str {
        &self.container_and_command[0]
    }

    pub fn command(&self) -> &[String] {
        &self.container_and_command[1..]
    }
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show logs since a timestamp (2013-01-02T13:23:37Z) or relative (42m for 42 minutes)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp (2013-01-02T13:23:37Z) or relative (42m for 42 minutes)
    #[arg(long)]
    pub until: Option<String>,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Apply a Dockerfile instruction to the created image
    #[arg(short, long = "change")]
    pub changes: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author
    #[arg(short, long)]
    pub author: Option<String>,
    /// Pause the container during commit (default true)
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pause: bool,
    pub container: String,
    pub reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information); -a=false too
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH; -L=false too
    #[arg(short = 'L', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set)]
    pub follow_link: bool,
    /// Suppress progress output during copy (strata prints none); -q=false too
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set)]
    pub quiet: bool,
    /// CONTAINER:SRC_PATH, or a local SRC_PATH (- reads a tar stream from stdin)
    pub src: String,
    /// CONTAINER:DEST_PATH, or a local DEST_PATH (- writes a tar stream to stdout)
    pub dest: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// The rest of the monitor's command line (`strata_runtime::launch::MonitorLaunch`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
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
