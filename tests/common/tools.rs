//! The one policy for what a test needs from the machine (an external tool such as `openssl`,
//! `sqlite3`, `unshare`, `kill`, root, or a read-only file system it can make): present, the test runs; missing under CI
//! (`CI=true`), the run fails; missing elsewhere, the test says loudly on stderr that it skipped,
//! naming itself and what was missing, and returns early. No test passes silently because something is missing.
//!
//! Use it first thing in the test, before any setup: `if !require_tool("openssl") { return; }`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a test does when something it needs is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Panic: under CI every test must really run.
    Fail,
    /// Print a `SKIPPED` line on stderr and return early.
    Skip,
}

/// The policy itself, given the value of `$CI`: `true` (any case) or `1` means CI, where a
/// missing requirement fails the run; anything else, or unset, means a developer's machine.
pub fn on_missing(ci: Option<&str>) -> Missing {
    match ci.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Missing::Fail,
        _ => Missing::Skip,
    }
}

/// The executable file `tool` in one of the `path` directories (a `$PATH` value), if any.
pub fn find_on_path(tool: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// True when `tool` is on `$PATH`. When it is not: panics under CI, else prints a `SKIPPED`
/// line naming the test and the tool and returns false, so the caller returns early.
pub fn require_tool(tool: &str) -> bool {
    let found = find_on_path(tool, std::env::var_os("PATH").as_deref()).is_some();
    require(&format!("the `{tool}` command on PATH"), found)
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// True when the test runs as root. Otherwise the same policy as [`require_tool`].
pub fn require_root(why: &str) -> bool {
    require(&format!("root ({why})"), is_root())
}

/// `unshare` running `sh` in a new user namespace (mapped to root inside, whoever runs it) and
/// mount namespace, where `dir` is bind-mounted read-only onto itself; the caller appends the
/// command to run there (`.arg(program).args(...)`). Writes under `dir` then fail with EROFS
/// for root too, and nothing changes outside the namespace: no root needed, nothing to undo.
pub fn read_only_mount(dir: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && shift && exec \"$@\"",
        "sh",
    ])
    .arg(dir);
    c
}

/// True when [`read_only_mount`] works here (util-linux's `unshare` and `mount`, and user
/// namespaces allowed): tried on a fresh directory, where creating a file must fail. Otherwise
/// the same policy as [`require_tool`].
pub fn require_read_only_mount() -> bool {
    if !["unshare", "mount", "sh"].iter().all(|t| require_tool(t)) {
        return false;
    }
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    let refused = read_only_mount(dir.path())
        .args(["sh", "-c", "! (: > \"$1\") 2>/dev/null", "sh"])
        .arg(&probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require(
        "a read-only bind mount in a user namespace (`unshare --user --map-root-user --mount`)",
        refused && !probe.exists(),
    )
}

/// Applies the policy to one requirement `need` that is `met` or not.
pub fn require(need: &str, met: bool) -> bool {
    if met {
        return true;
    }
    let thread = std::thread::current();
    // libtest (and nextest, which runs it) names each test's thread after the test.
    let test = thread.name().unwrap_or("this test");
    match on_missing(std::env::var("CI").ok().as_deref()) {
        Missing::Fail => panic!(
            "{test}: needs {need}, which this machine lacks; CI=true, so a missing requirement \
             fails the run instead of skipping the test"
        ),
        Missing::Skip => {
            // Straight to the process's stderr, not `eprintln!`: libtest captures the macro's
            // output of a passing test, and this line must be seen. (nextest keeps a passing
            // test's output too; `--success-output immediate` or `--no-capture` shows it.)
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: needs {need}, which this machine lacks (CI=true fails instead)"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_fails_and_anything_else_skips() {
        for ci in ["true", "TRUE", "True", "1", " true "] {
            assert_eq!(on_missing(Some(ci)), Missing::Fail, "{ci:?}");
        }
        for ci in [None, Some(""), Some("false"), Some("0"), Some("no")] {
            assert_eq!(on_missing(ci), Missing::Skip, "{ci:?}");
        }
    }

    #[test]
    fn tools_are_found_only_as_executable_files_on_the_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("present-tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("not-executable");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::create_dir(dir.path().join("a-directory")).unwrap();
        let path =
            std::env::join_paths([PathBuf::from("/nonexistent"), dir.path().into()]).unwrap();
        assert_eq!(find_on_path("present-tool", Some(&path)), Some(exe));
        for absent in ["not-executable", "a-directory", "missing-tool"] {
            assert_eq!(find_on_path(absent, Some(&path)), None, "{absent}");
        }
        assert_eq!(find_on_path("present-tool", None), None);
    }

    #[test]
    fn a_met_requirement_runs_the_test() {
        assert!(require("nothing at all", true));
    }
}
