//! Hidden commands for packaging: shell completions and man pages, generated from the same
//! clap definitions as `--help`.

use clap::CommandFactory;

use checus_reconciler::cli::{Cli, CompletionsArgs, ExitCode, ManpageArgs};

use super::Outcome;
use super::output::print;

/// `completions SHELL`: the completion script on stdout.
pub fn completions(args: CompletionsArgs) -> Outcome {
    let mut cmd = Cli::command();
    // Rendered to memory first: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "checus-reconciler", &mut script);
    print(script)?;
    Ok(ExitCode::Ok)
}

/// `manpage [--out-dir DIR]`: every page into DIR, or the main page on stdout.
pub fn manpage(args: ManpageArgs) -> Outcome {
    let cmd = Cli::command();
    match args.out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            print(page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(cmd, &dir)?;
        }
    }
    Ok(ExitCode::Ok)
}
