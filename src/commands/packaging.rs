//! Hidden commands for packaging: shell completions and man pages, generated from the same
//! clap definitions as `--help`.

use clap::CommandFactory;

use checus_reconciler::cli::{Cli, CompletionsArgs, ExitCode, ManpageArgs};

use super::output::print;
use super::{Outcome, manpages};

/// `completions SHELL`: the completion script on stdout.
pub fn completions(args: CompletionsArgs) -> Outcome {
    let mut cmd = Cli::command();
    // Rendered to memory first: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "checus-reconciler", &mut script);
    print(script)?;
    Ok(ExitCode::Ok)
}

/// `manpage [--out-dir DIR]`: every page into DIR (one per command, and
/// `checus-reconciler.toml.5`), or the main page on stdout.
pub fn manpage(args: ManpageArgs) -> Outcome {
    let cmd = Cli::command();
    match args.out_dir {
        None => {
            let mut page = Vec::new();
            manpages::render(&clap_mangen::Man::new(cmd.clone()), &cmd, "", &mut page)?;
            print(page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            manpages::write_all(cmd, &dir)?;
        }
    }
    Ok(ExitCode::Ok)
}
