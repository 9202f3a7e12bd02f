//! The man pages: one per command (clap_mangen's sections, then EXIT STATUS, ENVIRONMENT,
//! FILES, EXAMPLES and SEE ALSO, which clap has no place for), and `checus-reconciler.toml(5)`
//! for the config file, generated from `examples/config.toml`: its comments are the page's
//! text, so the example, the package's default config and the page cannot disagree.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_mangen::Man;
use roff::{Roff, bold, italic, roman};

/// The example config, the source of `checus-reconciler.toml(5)`.
const EXAMPLE_CONFIG: &str = include_str!("../../examples/config.toml");

/// The exit codes, as README's "Exit codes" table and `cli::ExitCode` state them.
const EXIT_STATUS: [(&str, &str); 9] = [
    ("0", "Success (status: nothing needs a human)."),
    (
        "1",
        "Runtime failure (I/O, or the ledger failed mid-operation).",
    ),
    (
        "2",
        "Bad command-line usage, including a missing --by or --reason for an audited command.",
    ),
    (
        "3",
        "The configuration or a key is invalid (the message names the file, key or variable).",
    ),
    (
        "4",
        "The ledger was refused (missing, not a ledger, newer or older schema, guarantees \
         missing), its migration failed, or another daemon holds it.",
    ),
    (
        "5",
        "Input rejected, nothing written: bad add/import data, resolve or retry-now on a final \
         refund, an output file that exists, resume with nothing to resume.",
    ),
    ("6", "The named refund or discrepancy is not in the ledger."),
    ("7", "demo: the ledger disagrees with the sandbox's truth."),
    (
        "8",
        "Something needs a human: status's warnings; resume still halted after the probe.",
    ),
];

/// The environment the binary reads (only at start-up).
const ENVIRONMENT: [(&str, &str); 7] = [
    (
        "CHECUS_RECONCILER_CONFIG",
        "The config file, for commands given neither --config nor --ledger.",
    ),
    (
        "CHECUS_RECONCILER__SECTION__KEY",
        "Overrides the config key section.key, e.g. CHECUS_RECONCILER__WORKER__CONCURRENCY=4. \
         An error about such a value names the variable.",
    ),
    (
        "CHECUS_RECONCILER_OPERATOR",
        "The default of --by: who is acting, for the audit log.",
    ),
    (
        "SUDO_USER, USER, LOGNAME",
        "Who is acting when neither --by nor CHECUS_RECONCILER_OPERATOR says, in this order.",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "Where credential:NAME keys are read (systemd LoadCredential=). Unset, query reads \
         /run/credentials/checus-reconciler.service when it can.",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC",
        "run: systemd's notification socket (READY=1, STATUS=, WATCHDOG=1) and watchdog.",
    ),
    (
        "JOURNAL_STREAM",
        "run: stderr is the journal, so logs go to journald with their fields.",
    ),
];

/// The files the service uses, as the package installs them.
const FILES: [(&str, &str); 6] = [
    (
        "/etc/checus-reconciler/config.toml",
        "The configuration, see checus-reconciler.toml(5).",
    ),
    (
        "/etc/checus-reconciler/keys/",
        "The keys (0700 root); systemd hands them to the service as credentials.",
    ),
    (
        "/var/lib/checus-reconciler/ledger.sqlite",
        "The ledger, shared with the merchant's app; with its -wal and -shm files in WAL mode.",
    ),
    (
        "/var/lib/checus-reconciler/ledger.sqlite.lock",
        "The single-daemon lock: held by the running daemon (retry-now and resume test it).",
    ),
    (
        "/usr/lib/systemd/system/checus-reconciler.service",
        "The hardened systemd unit.",
    ),
    (
        "/run/credentials/checus-reconciler.service/",
        "The keys as the running service sees them.",
    ),
];

/// Examples per command (the main page's under ""), as README's operator guide uses them.
fn examples(name: &str) -> Vec<(&'static str, &'static str)> {
    match name {
        "" => vec![
            (
                "Is anything wrong? (exit 8: something needs a human)",
                "checus-reconciler status",
            ),
            (
                "Run the daemon",
                "checus-reconciler run --config /etc/checus-reconciler/config.toml",
            ),
            (
                "The whole product against the simulated gateway",
                "checus-reconciler demo",
            ),
        ],
        "status" => vec![
            (
                "A monitoring check",
                "checus-reconciler status --stale-after 5m",
            ),
            ("For scripts", "checus-reconciler status --json"),
        ],
        "resume" => vec![(
            "End a halt once the key is fixed (and the daemon reloaded)",
            "checus-reconciler resume --reason \"rotated the merchant key\" --by alice",
        )],
        "retry-now" => vec![
            ("One refund", "checus-reconciler retry-now R123 --by alice"),
            (
                "Every flagged refund",
                "checus-reconciler retry-now --all-flagged --by alice",
            ),
        ],
        "query" => vec![(
            "Ask Checus about one refund now, as the service user",
            "sudo -u checus-reconciler checus-reconciler query R123 --config /etc/checus-reconciler/config.toml",
        )],
        "resolve" => vec![(
            "Record an outcome confirmed with Checus",
            "checus-reconciler resolve R123 --status REFUND_FAILED --reason \"Checus ticket 4711\" --by alice",
        )],
        "explain" => vec![("One refund's history", "checus-reconciler explain R123")],
        "sandbox" => vec![(
            "Serve scripted refunds on a fixed port",
            "checus-reconciler sandbox --scripts scripts.jsonl --listen 127.0.0.1:8765",
        )],
        "backup" => vec![(
            "An online copy",
            "checus-reconciler backup /var/backups/checus/ledger-$(date +%F).sqlite",
        )],
        "check-config" => vec![(
            "Check the config and the keys as systemd will hand them over",
            "sudo CREDENTIALS_DIRECTORY=/etc/checus-reconciler/keys checus-reconciler check-config --config /etc/checus-reconciler/config.toml",
        )],
        _ => Vec::new(),
    }
}

/// Writes every page into `dir`: `checus-reconciler.1`, one `checus-reconciler-NAME.1` per
/// visible command, and `checus-reconciler.toml.5`. Returns the files written.
pub fn write_all(cmd: Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    let subcommands: Vec<Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    for sub in subcommands {
        let name = sub.get_name().to_owned();
        written.push(write_page(sub, &name, dir)?);
    }
    written.push(write_page(cmd, "", dir)?);
    let toml = dir.join("checus-reconciler.toml.5");
    std::fs::write(&toml, config_page())?;
    written.push(toml);
    Ok(written)
}

fn write_page(cmd: Command, name: &str, dir: &Path) -> std::io::Result<PathBuf> {
    let man = Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut file = std::fs::File::create(&path)?;
    render(&man, &cmd, name, &mut file)?;
    file.flush()?;
    Ok(path)
}

/// One command's page: clap_mangen's sections in its order, with ours before VERSION.
pub fn render(man: &Man, cmd: &Command, name: &str, w: &mut dyn Write) -> std::io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w)?;
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        man.render_extra_section(w)?;
    }
    w.write_all(our_sections(name).as_bytes())?;
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES and SEE ALSO for the page of command `name`
/// (`""`: the main page).
fn our_sections(name: &str) -> String {
    let mut r = Roff::new();
    tagged(&mut r, "EXIT STATUS", &EXIT_STATUS);
    tagged(&mut r, "ENVIRONMENT", &ENVIRONMENT);
    tagged(&mut r, "FILES", &FILES);
    r.control("SH", ["EXAMPLES"]);
    let mut list: Vec<(String, String)> = examples(name)
        .into_iter()
        .map(|(what, command)| (what.to_owned(), command.to_owned()))
        .collect();
    if list.is_empty() {
        list.push((
            "Its options, with the ledger named by the config file".to_owned(),
            format!("checus-reconciler {name} --config /etc/checus-reconciler/config.toml"),
        ));
    }
    for (what, command) in list {
        r.control("PP", []);
        r.text([roman(what)]);
        r.control("PP", []);
        r.control("RS", ["4"]);
        r.text([bold(command)]);
        r.control("RE", []);
    }
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("checus-reconciler"),
        roman("(1), "),
        bold("checus-reconciler.toml"),
        roman("(5), "),
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1)"),
    ]);
    r.render()
}

/// A section of `.TP` entries: a bold tag, then its text.
fn tagged(r: &mut Roff, title: &str, entries: &[(&str, &str)]) {
    r.control("SH", [title]);
    for (tag, text) in entries {
        r.control("TP", []);
        r.text([bold(*tag)]);
        r.text([roman(*text)]);
    }
}

/// One key of the example config: its name, its value as written (the default), and the
/// comments above and beside it.
#[derive(Debug, PartialEq, Eq)]
struct Key {
    name: String,
    value: String,
    text: Vec<String>,
}

/// One `[section]` of the example config with the comments before its first key.
#[derive(Debug, PartialEq, Eq)]
struct Section {
    name: String,
    text: Vec<String>,
    keys: Vec<Key>,
}

/// Reads the example config into the file's opening comment and its sections. A line
/// `key = value  # comment` is a key with its default; comment lines above a key belong to it;
/// comment lines right after a `[section]` header, before any key, describe the section.
fn read_example(text: &str) -> (Vec<String>, Vec<Section>) {
    let mut intro = Vec::new();
    let mut sections: Vec<Section> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(comment) = line.strip_prefix('#') {
            pending.push(comment.trim().to_owned());
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if sections.is_empty() {
                intro.append(&mut pending);
            }
            sections.push(Section {
                name: name.to_owned(),
                text: Vec::new(),
                keys: Vec::new(),
            });
        } else if let Some((name, rest)) = line.split_once('=') {
            let (value, note) = split_comment(rest);
            let mut text = std::mem::take(&mut pending);
            text.extend(note);
            if let Some(section) = sections.last_mut() {
                section.keys.push(Key {
                    name: name.trim().to_owned(),
                    value,
                    text,
                });
            }
        } else if line.is_empty() {
            if let Some(section) = sections.last_mut()
                && section.keys.is_empty()
            {
                section.text.append(&mut pending);
            } else if sections.is_empty() {
                intro.append(&mut pending);
            }
        }
    }
    (intro, sections)
}

/// `value  # note` -> (value, note); a `#` inside a quoted string is part of the value.
fn split_comment(rest: &str) -> (String, Option<String>) {
    let mut quoted = false;
    for (i, ch) in rest.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '#' if !quoted => {
                return (
                    rest[..i].trim().to_owned(),
                    Some(rest[i + 1..].trim().to_owned()),
                );
            }
            _ => {}
        }
    }
    (rest.trim().to_owned(), None)
}

/// `checus-reconciler.toml(5)`, from the example config.
pub fn config_page() -> String {
    let (intro, sections) = read_example(EXAMPLE_CONFIG);
    let mut r = Roff::new();
    r.control(
        "TH",
        [
            "checus-reconciler.toml",
            "5",
            "",
            "checus-reconciler",
            "File Formats",
        ],
    );
    r.control("SH", ["NAME"]);
    r.text([roman(
        "checus-reconciler.toml - the configuration file of checus-reconciler",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([bold("/etc/checus-reconciler/config.toml")]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(intro.join(" "))]);
    r.control("PP", []);
    r.text([roman(
        "The file is TOML. It is read and validated once at start-up and on SIGHUP \
         (systemctl reload); an unknown key, a value of the wrong type or outside its range is \
         refused, naming the key (exit 3). Durations are written 500ms, 30s, 10m, 1h30m or \
         2d. Each key below shows the value the example config ships, which is the default \
         for every key of [schedule], [worker] and [log].",
    )]);
    for section in &sections {
        r.control("SH", [format!("[{}]", section.name).as_str()]);
        if !section.text.is_empty() {
            r.text([roman(section.text.join(" "))]);
        }
        for key in &section.keys {
            r.control("TP", []);
            r.text([
                bold(key.name.as_str()),
                roman(" = "),
                italic(key.value.as_str()),
            ]);
            if !key.text.is_empty() {
                r.text([roman(key.text.join(" "))]);
            }
        }
    }
    tagged(&mut r, "ENVIRONMENT", &ENVIRONMENT[..2]);
    tagged(&mut r, "FILES", &FILES[..3]);
    r.control("SH", ["EXAMPLES"]);
    r.text([roman(
        "Check a config and its keys without starting anything:",
    )]);
    r.control("PP", []);
    r.control("RS", ["4"]);
    r.text([bold(
        "sudo CREDENTIALS_DIRECTORY=/etc/checus-reconciler/keys checus-reconciler check-config --config /etc/checus-reconciler/config.toml",
    )]);
    r.control("RE", []);
    r.control("PP", []);
    r.text([roman("Override one key for one run:")]);
    r.control("PP", []);
    r.control("RS", ["4"]);
    r.text([bold(
        "CHECUS_RECONCILER__WORKER__CONCURRENCY=4 checus-reconciler run --config /etc/checus-reconciler/config.toml",
    )]);
    r.control("RE", []);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("checus-reconciler"),
        roman("(1), "),
        bold("checus-reconciler-check-config"),
        roman("(1), "),
        bold("systemd.exec"),
        roman("(5) (LoadCredential=)"),
    ]);
    r.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_page_has_every_key_of_the_example_with_its_comments() {
        let (intro, sections) = read_example(EXAMPLE_CONFIG);
        assert!(intro.join(" ").contains("CHECUS_RECONCILER__"), "{intro:?}");
        let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
        for want in ["ledger", "gateway", "keys", "schedule", "worker", "log"] {
            assert!(names.contains(&want), "{names:?}");
        }
        let page = config_page();
        // Every key line of the example is a .TP entry with its value.
        let keys = EXAMPLE_CONFIG
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, _)| k.trim());
        for key in keys {
            assert!(
                page.contains(&format!(".TP\n\\fB{key}\\fR")),
                "{key}:\n{page}"
            );
        }
        let grace = &sections[3].keys[0];
        assert_eq!(
            (grace.name.as_str(), grace.value.as_str()),
            ("grace", "\"10m\"")
        );
        assert_eq!(grace.text, ["from 0ms to 7d"]);
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
        ] {
            assert!(page.contains(&format!(".SH {section}\n")), "{section}");
        }
    }

    #[test]
    fn a_hash_inside_a_quoted_value_is_not_a_comment() {
        assert_eq!(
            split_comment(" \"a#b\"   # note"),
            ("\"a#b\"".to_owned(), Some("note".to_owned()))
        );
        assert_eq!(split_comment(" 5"), ("5".to_owned(), None));
    }
}
