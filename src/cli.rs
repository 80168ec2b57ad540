//! The command line: Docker's verbs and flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Daemonless, Docker-compatible image builder and container runtime",
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Store directory
    #[arg(long, global = true, env = "STRATA_ROOT", default_value = strata_cache::store::DEFAULT_ROOT)]
    pub root: PathBuf,

    /// Log level (error, warn, info, debug, trace)
    #[arg(long, global = true, default_value = "warn", env = "STRATA_LOG")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
    /// Manage strata itself
    #[command(subcommand)]
    System(SystemCommand),
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
    /// Check the Dockerfile and exit without building
    #[arg(long)]
    pub check: bool,
    /// Print the plan (stages, steps, cache keys, CACHED or why not) without building
    #[arg(long)]
    pub dry_run: bool,
    /// Build context directory, or - to read a Dockerfile from standard input
    #[arg(default_value = ".")]
    pub context: String,
}
