//! The flags of the image commands (`build`, `import`, `images`, `inspect`, `history`, `rmi`,
//! `save`, `load`, `pull`, `push`, `login`, `image prune`).

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the image config (ENV, CMD, ENTRYPOINT, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL)
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// The platform the archive's programs are for (os/arch[/variant]; default: the host's)
    #[arg(long)]
    pub platform: Option<String>,
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
    /// An image's variant for this platform (os/arch[/variant]) of a multi-platform tag
    #[arg(long)]
    pub platform: Option<String>,
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
    /// The image's variant for this platform (os/arch[/variant])
    #[arg(long)]
    pub platform: Option<String>,
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
    /// Save only this platform's image of a multi-platform tag (all of them by default)
    #[arg(long)]
    pub platform: Option<String>,
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
    /// Load only this platform's image (os/arch[/variant])
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST]
    pub image: String,
    /// Platform to pull from a multi-platform image (os/arch[/variant]); several,
    /// comma-separated, keep each under the tag as a multi-platform image
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    pub platform: Option<String>,
    /// Keep every platform of a multi-platform image under the tag (--platform is ignored)
    #[arg(long)]
    pub all_platforms: bool,
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
    /// How RUN steps run: oci (containers), chroot (no namespaces, for builds inside an
    /// unprivileged container), or default (oci where this process may mount, else chroot)
    #[arg(long, env = "STRATA_ISOLATION")]
    pub isolation: Option<String>,
    /// Suppress the build output and print the image ID on success
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the image ID to the file
    #[arg(long)]
    pub iidfile: Option<std::path::PathBuf>,
    /// Type of progress output: auto, tty, plain, quiet
    #[arg(long, default_value = "auto", value_parser = ["auto", "tty", "plain", "quiet"])]
    pub progress: String,
    /// Target platform (os/arch[/variant]; a foreign one runs its RUN steps through QEMU);
    /// several, comma-separated, build a multi-platform image
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    pub platform: Option<String>,
    /// Output: type=image[,name=N][,push=true] (default), type=registry (pushed),
    /// type=oci|docker,dest=F.tar[,compression=gzip|zstd],
    /// type=tar,dest=F.tar, type=local,dest=DIR; `-` is a tar on standard output, a bare path
    /// a local directory
    #[arg(short, long)]
    pub output: Option<String>,
    /// Push the image (every platform's, as an index) to the registry its -t names, once
    /// built (-o type=registry)
    #[arg(long)]
    pub push: bool,
    /// Keep the image in the store (what a build does by default; BuildKit's flag)
    #[arg(long)]
    pub load: bool,
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
