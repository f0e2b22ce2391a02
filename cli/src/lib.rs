//! The `fluxgate` command line.
//!
//! - `fluxgate validate [PATH...]`: the merge-request check of a platform
//!   config repository. Exit 0 when clean, 1 when a rule is violated, 2 on
//!   usage or parse errors.
//! - `fluxgate render [PATH...]`: the effective configuration of each
//!   FluxConfig, with the source of each value.
//! - `fluxgate crds`: the CRDs, for `kubectl apply -f -`.

pub mod load;
pub mod output;
pub mod validate;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use fluxgate_platform_defaults::PlatformSettings;

/// Exit code: no violations.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: at least one rule is violated.
pub const EXIT_VIOLATIONS: u8 = 1;
/// Exit code: usage error, unreadable file or invalid YAML.
pub const EXIT_ERROR: u8 = 2;

/// fluxgate: GitOps per team namespace, within the platform's rules.
#[derive(Debug, Parser)]
#[command(name = "fluxgate", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a platform config repository against its PlatformDefaults.
    Validate(ValidateArgs),
    /// Show the effective configuration of each FluxConfig and where each
    /// value comes from.
    Render(RenderArgs),
    /// Print the fluxgate CRDs as YAML.
    Crds,
}

/// Platform settings that come from the installation, not from objects.
#[derive(Debug, Clone, clap::Args)]
pub struct PlatformArgs {
    /// The namespace fluxgate runs in (never a target).
    #[arg(
        long,
        env = "FLUXGATE_PLATFORM_NAMESPACE",
        default_value = "fluxgate-system"
    )]
    pub platform_namespace: String,
    /// Reconciler image when no PlatformDefaults sets one.
    #[arg(long, env = "FLUXGATE_DEFAULT_RECONCILER_IMAGE")]
    pub default_reconciler_image: Option<String>,
    /// ClusterRole bound for reconcilers when no PlatformDefaults sets one.
    #[arg(long, env = "FLUXGATE_DEFAULT_CLUSTER_ROLE")]
    pub default_cluster_role: Option<String>,
    /// Namespace pattern no team may target, as installed
    /// (`--protected-namespace` of the operator and webhook; repeatable).
    #[arg(
        long = "protected-namespace",
        env = "FLUXGATE_PROTECTED_NAMESPACES",
        value_delimiter = ','
    )]
    pub protected_namespaces: Vec<String>,
}

impl PlatformArgs {
    fn settings(&self) -> PlatformSettings {
        let builtin = PlatformSettings::default();
        PlatformSettings {
            platform_namespace: self.platform_namespace.clone(),
            default_reconciler_image: self
                .default_reconciler_image
                .clone()
                .unwrap_or(builtin.default_reconciler_image),
            default_cluster_role: self
                .default_cluster_role
                .clone()
                .unwrap_or(builtin.default_cluster_role),
            protected_namespaces: self.protected_namespaces.clone(),
        }
    }
}

/// Output formats of `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `file:line: message`, one line per violation.
    Text,
    /// A JSON array of findings.
    Json,
    /// GitHub Actions workflow annotations.
    Github,
    /// A GitLab Code Quality report (artifacts:reports:codequality).
    Gitlab,
}

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Files or directories (walked recursively for *.yaml and *.yml).
    #[arg(default_value = ".")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Installation settings.
    #[command(flatten)]
    pub platform: PlatformArgs,
}

/// Arguments of `render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Files or directories (walked recursively for *.yaml and *.yml).
    #[arg(default_value = ".")]
    pub paths: Vec<PathBuf>,
    /// Installation settings.
    #[command(flatten)]
    pub platform: PlatformArgs,
}

/// Runs a command, writing results to `out` and diagnostics to `err`;
/// returns the exit code.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match cli.command {
        Command::Validate(args) => validate_command(&args, out, err),
        Command::Render(args) => render_command(&args, out, err),
        Command::Crds => crds_command(out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Writing to stdout/stderr failed (e.g. a closed pipe): nothing
            // more can be reported.
            let _ = writeln!(err, "error: {e}");
            EXIT_ERROR
        }
    }
}

/// Loads and checks `paths`, reporting load errors on `err`; `None` when
/// the platform flags themselves are invalid (reported on `err`).
fn check(
    paths: &[PathBuf],
    platform: &PlatformArgs,
    err: &mut dyn Write,
) -> std::io::Result<Option<(validate::Report, Vec<load::LoadError>)>> {
    let settings = platform.settings();
    if let Err(e) = settings.check() {
        writeln!(err, "error: {e}")?;
        return Ok(None);
    }
    let (docs, load_errors) = load::load(paths);
    for e in &load_errors {
        writeln!(err, "error: {e}")?;
    }
    Ok(Some((validate::validate(&docs, settings), load_errors)))
}

/// The exit code for a check's outcome.
fn exit_code(report: &validate::Report, load_errors: &[load::LoadError]) -> u8 {
    if !load_errors.is_empty() {
        EXIT_ERROR
    } else if !report.findings.is_empty() {
        EXIT_VIOLATIONS
    } else {
        EXIT_CLEAN
    }
}

fn validate_command(
    args: &ValidateArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let Some((report, load_errors)) = check(&args.paths, &args.platform, err)? else {
        return Ok(EXIT_ERROR);
    };
    for w in &report.warnings {
        writeln!(err, "warning: {w}")?;
    }
    output::write_findings(out, args.format, &report.findings, &load_errors)?;
    Ok(exit_code(&report, &load_errors))
}

fn render_command(
    args: &RenderArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let Some((report, load_errors)) = check(&args.paths, &args.platform, err)? else {
        return Ok(EXIT_ERROR);
    };
    for f in &report.findings {
        writeln!(err, "{}:{}: {}", f.file.display(), f.line, f.message)?;
    }
    output::write_rendered(out, &report.accepted)?;
    Ok(exit_code(&report, &load_errors))
}

fn crds_command(out: &mut dyn Write) -> std::io::Result<u8> {
    match fluxgate_crds::crds_yaml() {
        Ok(yaml) => {
            out.write_all(yaml.as_bytes())?;
            Ok(EXIT_CLEAN)
        }
        Err(e) => Err(std::io::Error::other(e)),
    }
}
