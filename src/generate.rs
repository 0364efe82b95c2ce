//! `berth generate` (hidden): the manual pages and the shell completions, made from the clap
//! definition of the command line itself, so that they can never drift from it. scripts/install.sh
//! calls it at install time; nothing here runs on a container path.

use clap::{CommandFactory, ValueEnum};
use std::path::Path;

/// What `berth generate` writes.
#[derive(Clone, Copy, ValueEnum)]
pub enum Generated {
    /// Manual pages (section 8, as runc's): berth.8 and berth-<command>.8 into DIR
    Man,
    /// bash completion on stdout
    Bash,
    /// zsh completion (`_berth`) on stdout
    Zsh,
    /// fish completion on stdout
    Fish,
}

/// The CLI as clap describes it, without the hidden subcommands (clap_complete would offer them).
fn command() -> clap::Command {
    let full = crate::Cli::command();
    let mut cmd = clap::Command::new("berth")
        .about(full.get_about().cloned().unwrap_or_default())
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    cmd.build();
    cmd
}

pub fn generate(what: Generated, dir: Option<&Path>) -> Result<(), String> {
    let mut cmd = command();
    let shell = match what {
        Generated::Man => {
            let dir = dir.ok_or("generate man: give the directory for the pages")?;
            return man_pages(cmd, dir);
        }
        Generated::Bash => clap_complete::Shell::Bash,
        Generated::Zsh => clap_complete::Shell::Zsh,
        Generated::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "berth", &mut std::io::stdout());
    Ok(())
}

/// berth.8 for the whole command, berth-<name>.8 for each (visible) subcommand.
fn man_pages(cmd: clap::Command, dir: &Path) -> Result<(), String> {
    let version = env!("CARGO_PKG_VERSION");
    // After build(), a subcommand's display name is `berth-<name>`: the page's title and file name.
    let page = |cmd: clap::Command| -> Result<(), String> {
        let man = clap_mangen::Man::new(cmd)
            .section("8")
            .source(format!("berth {version}"))
            .manual("Berth manual");
        let path = dir.join(man.get_filename());
        let mut out = Vec::new();
        man.render(&mut out).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{}", path.display());
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub.clone())?;
    }
    page(cmd)
}
