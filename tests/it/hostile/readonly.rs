//! Read-only ledgers (issue 10, part 11's first bullet): on a read-only file system, or where
//! this user may not write the ledger or its directory, every read command prints what it
//! prints on a writable copy, and every command that writes exits 4 naming the ledger and
//! saying it is read-only. A `-wal` left beside such a ledger is read when its `-shm` is there
//! too, and refused (exit 4, naming it) when it is not, never silently left unread.
//!
//! The read-only file system is a read-only bind mount in a private user and mount namespace
//! (`tools::read_only_mount`), so root cannot write through it either; the permission cases
//! run as an unprivileged user through `setpriv` when the tests run as root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::proc::{BIN, code, run, sql, stderr, stdout, write_config};
use crate::common::tools::{is_root, read_only_mount, require_read_only_mount, require_tool};

/// The read commands compared, each as its arguments without `--ledger`.
const READS: [&[&str]; 17] = [
    &["status"],
    &["status", "--json"],
    &["list"],
    &["list", "--json"],
    &["show", "R-1"],
    &["show", "--json", "R-3"],
    &["explain", "R-1"],
    &["export", "--since", "3650d"],
    &["export", "--since", "3650d", "--format", "jsonl"],
    &["stuck", "--older-than", "1h", "--json"],
    &["failed", "--since", "3650d"],
    &["discrepancies", "--all"],
    &["audit"],
    &["audit", "--json"],
    &["verify-ledger"],
    &["verify-ledger", "--json"],
    &["migrate", "--dry-run"],
];

/// `args` with `--ledger PATH` appended.
fn with_ledger(args: &[&str], ledger: &Path) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    v.extend(["--ledger".to_owned(), ledger.display().to_string()]);
    v
}

/// Runs the binary with `args` (on writable disks).
fn run_owned(dir: &Path, args: &[String]) -> Output {
    run(dir, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs the binary with `args`, with `ro_dir` a read-only file system.
fn on_read_only(ro_dir: &Path, args: &[String]) -> Output {
    read_only_mount(ro_dir)
        .arg(BIN)
        .args(args)
        .current_dir("/")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("unshare runs")
}

/// Runs the binary with `args` as an unprivileged user (nobody when we are root, else us).
fn as_unprivileged(args: &[String]) -> Output {
    let mut c = if is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        std::process::Command::new(BIN)
    };
    c.args(args)
        .current_dir("/")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

/// A ledger at `path` made with the binary: R-1 final by an operator (with its audit row),
/// R-2 pending since January, R-3 failed at once. Closed, so no `-wal` or `-shm` is left.
fn populate(path: &Path) {
    let dir = path.parent().unwrap();
    for line in [
        "add --out-refund-no R-1 --amount 12.50 --currency USD",
        "add --out-refund-no R-2 --amount 3.00 --currency EUR --created-at 2026-01-05T10:00:00Z",
        "add --out-refund-no R-3 --amount 0.99 --currency USD --status REFUND_FAILED",
        "resolve R-1 --status REFUND_SUCCESS --reason ticket-4711 --by alice",
    ] {
        let o = run_owned(dir, &with_ledger(&words(line), path));
        assert_eq!(code(&o), 0, "{line}: {}", stderr(&o));
    }
    assert!(!sidecar(path, "-wal").exists() && !sidecar(path, "-shm").exists());
}

/// `<path><suffix>`, e.g. the ledger's `-wal` file.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

/// Every file in `dir`, with its length and a hash of its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, usize, u64)> {
    use std::hash::{Hash, Hasher};
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            (p, bytes.len(), h.finish())
        })
        .collect();
    files.sort();
    files
}

/// Checks that `o` is exit 4 saying the ledger at `ledger` is read-only.
fn refused_as_read_only(what: &str, o: &Output, ledger: &Path) {
    let err = stderr(o);
    assert_eq!(code(o), 4, "{what}: {err}");
    assert!(
        err.contains(&format!("ledger {} is read-only", ledger.display())),
        "{what}: {err}"
    );
}

/// `line` split at its spaces: command-line arguments written as one string.
fn words(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

/// Every command that writes, as argument lists, against `ledger` (`run` and `query` through
/// `config`, which names it).
fn writes(ledger: &Path, config: &Path, csv: &Path) -> Vec<Vec<String>> {
    let config = config.display().to_string();
    let mut all = vec![
        vec!["run".to_owned(), "--config".to_owned(), config.clone()],
        vec![
            "query".to_owned(),
            "--config".to_owned(),
            config,
            "R-2".to_owned(),
        ],
        with_ledger(&["import", csv.to_str().unwrap()], ledger),
    ];
    for line in [
        "init",
        "migrate",
        "add --out-refund-no R-9 --amount 1.00 --currency USD",
        "retry-now --all-flagged --by alice",
        "resolve R-2 --status REFUND_FAILED --reason x --by alice",
        "resolve-discrepancy 1 --reason x --by alice",
        "prune --finalized-before 0s --no-archive --reason x --by alice",
    ] {
        all.push(with_ledger(&words(line), ledger));
    }
    all
}

#[test]
fn read_commands_on_a_read_only_file_system_print_what_a_writable_copy_prints() {
    if !require_read_only_mount() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // URI syntax in the directory's name: the immutable open must keep it part of the path.
    let ro = d.path().join("ledgers ?mode=rwc#%41");
    std::fs::create_dir(&ro).unwrap();
    let ledger = ro.join("ledger.sqlite");
    populate(&ledger);
    let copy_dir = d.path().join("writable");
    std::fs::create_dir(&copy_dir).unwrap();
    let copy = copy_dir.join("ledger.sqlite");
    std::fs::copy(&ledger, &copy).unwrap();
    let before = snapshot(&ro);

    for args in READS {
        let on_ro = on_read_only(&ro, &with_ledger(args, &ledger));
        let writable = run_owned(d.path(), &with_ledger(args, &copy));
        assert!(
            matches!(code(&writable), 0 | 8),
            "{args:?}: {}",
            stderr(&writable)
        );
        assert_eq!(
            code(&on_ro),
            code(&writable),
            "{args:?}: {}",
            stderr(&on_ro)
        );
        // verify-ledger and migrate name the file; everything else prints the same text.
        let same = stdout(&writable).replace(copy.to_str().unwrap(), ledger.to_str().unwrap());
        assert_eq!(stdout(&on_ro), same, "{args:?}");
        assert!(stdout(&on_ro).len() > 20, "{args:?} printed rows");
    }
    // `backup` reads the ledger too: the copy (on a writable disk) is a whole, checked ledger.
    let backup = d.path().join("backup.sqlite");
    let o = on_read_only(
        &ro,
        &with_ledger(&["backup", backup.to_str().unwrap()], &ledger),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("3 refunds, integrity checked"),
        "{}",
        stdout(&o)
    );
    let o = on_read_only(
        &ro,
        &with_ledger(&["prune", "--finalized-before", "0s", "--dry-run"], &ledger),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("would remove 2 refunds"),
        "{}",
        stdout(&o)
    );

    let config = write_config(d.path(), "http://127.0.0.1:9/aggregate-pay/api/gateway", "");
    let config_text = std::fs::read_to_string(&config).unwrap();
    let here = d.path().join("ledger.sqlite").display().to_string();
    std::fs::write(
        &config,
        config_text.replace(&here, &ledger.display().to_string()),
    )
    .unwrap();
    let csv = d.path().join("refunds.csv");
    std::fs::write(&csv, "out_refund_no,amount,currency\nR-8,1.00,USD\n").unwrap();
    for args in writes(&ledger, &config, &csv) {
        refused_as_read_only(&args[0], &on_read_only(&ro, &args), &ledger);
    }
    assert_eq!(
        snapshot(&ro),
        before,
        "nothing in the read-only directory changed"
    );
}

#[test]
fn a_wal_on_a_read_only_file_system_is_read_with_its_shm_and_refused_without_it() {
    if !require_read_only_mount() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let live = d.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let ledger = live.join("ledger.sqlite");
    populate(&ledger);
    // A connection held open keeps the next writer's close from checkpointing: R-4 stays in
    // the -wal. The three files are then copied as a crash would leave them.
    let keeper = sql(&ledger);
    let n: i64 = keeper
        .query_row("SELECT count(*) FROM refunds", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    let add = words("add --out-refund-no R-4 --amount 4.00 --currency USD");
    let o = run_owned(d.path(), &with_ledger(&add, &ledger));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let snap = d.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        std::fs::copy(
            sidecar(&ledger, suffix),
            sidecar(&snap.join("ledger.sqlite"), suffix),
        )
        .unwrap();
    }
    drop(keeper);
    let ledger = snap.join("ledger.sqlite");
    let wal = sidecar(&ledger, "-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    // The ledger file alone does not have R-4 yet: reading it alone would be stale.
    let alone = rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", ledger.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let n: i64 = alone
        .query_row("SELECT count(*) FROM refunds", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3, "R-4 is only in the -wal");
    drop(alone);

    // With its -shm, the -wal is read: R-4 is listed.
    let list = with_ledger(&["list"], &ledger);
    let o = on_read_only(&snap, &list);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("R-4") && stdout(&o).contains("(4 refunds)"),
        "{}",
        stdout(&o)
    );

    // Without it, SQLite cannot read the -wal here: refused, naming it, for every reader.
    std::fs::remove_file(sidecar(&ledger, "-shm")).unwrap();
    for args in [
        &["list"][..],
        &["status"],
        &["export", "--since", "3650d"],
        &["verify-ledger"],
    ] {
        let o = on_read_only(&snap, &with_ledger(args, &ledger));
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("{} holds changes", wal.display())),
            "{}",
            stderr(&o)
        );
        assert_eq!(stdout(&o), "", "{args:?} printed nothing stale");
    }
    // As the message says: where the copy is writable, it is read whole.
    let o = run_owned(d.path(), &list);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("(4 refunds)"), "{}", stdout(&o));
}

#[test]
fn a_ledger_this_user_may_not_write_is_read_and_writers_exit_4() {
    // Root ignores file modes, so as root the commands run as nobody.
    if is_root() && !require_tool("setpriv") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = d.path().join("ledgers");
    std::fs::create_dir(&dir).unwrap();
    let ledger = dir.join("ledger.sqlite");
    populate(&ledger);
    let mode = |path: &Path, m: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
    };
    let list = with_ledger(&["list", "--json"], &ledger);
    let expected = run_owned(d.path(), &list);
    assert_eq!(code(&expected), 0, "{}", stderr(&expected));
    let add = words("add --out-refund-no R-9 --amount 1.00 --currency USD");
    let add = with_ledger(&add, &ledger);
    // The file is read-only to this user: in a directory it may write (SQLite then opens the
    // file read-only without a word, and a writer must not find out at its first write), and
    // in one it may not. Then only the directory is (no -wal or -shm can be made).
    for (file_mode, dir_mode, case) in [
        (0o444, 0o777, "read-only file"),
        (0o444, 0o555, "read-only file and directory"),
        (0o666, 0o555, "read-only directory"),
    ] {
        mode(&ledger, file_mode);
        mode(&dir, dir_mode);
        let o = as_unprivileged(&list);
        assert_eq!(code(&o), 0, "{case}: {}", stderr(&o));
        assert_eq!(stdout(&o), stdout(&expected), "{case}");
        refused_as_read_only(case, &as_unprivileged(&add), &ledger);
        let o = as_unprivileged(&with_ledger(
            &words("retry-now --all-flagged --by bob"),
            &ledger,
        ));
        refused_as_read_only(case, &o, &ledger);
        mode(&dir, 0o755);
        // A read-only connection leaves the -wal and -shm it made (it cannot checkpoint).
        for suffix in ["-wal", "-shm"] {
            let made = sidecar(&ledger, suffix);
            assert!(
                dir_mode == 0o777 || !made.exists(),
                "{case}: nothing was created"
            );
            let _ = std::fs::remove_file(made);
        }
    }
    mode(&ledger, 0o644);
    let o = run_owned(d.path(), &list);
    assert_eq!(stdout(&o), stdout(&expected), "R-9 was never added");
}
