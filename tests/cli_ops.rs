//! End-to-end tests of the operator features of the `segstore` binary: `check --keys` and
//! `--json`, `--dry-run` for `import` and `apply`, `--quiet`, the warnings for likely
//! mistakes, shell completions and the manual page.
#![cfg(feature = "cli")]

mod cli_support;

use segstore::{context_hash, Options, ReadOnlyStore, Store};
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    fn warnings(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("warning: "))
            .collect()
    }

    fn assert_no_warning(&self) {
        assert!(self.warnings().is_empty(), "stderr: {}", self.stderr);
    }

    fn assert_one_warning(&self, about: &str) {
        let warnings = self.warnings();
        assert_eq!(warnings.len(), 1, "stderr: {}", self.stderr);
        assert!(
            warnings.iter().all(|w| w.contains(about)),
            "expected {about:?} in: {}",
            self.stderr
        );
    }
}

fn exec(mut cmd: Command, dir: Option<&Path>, args: &[&str], stdin: Option<&[u8]>) -> Ran {
    if let Some(dir) = dir {
        cmd.arg("--dir").arg(dir);
    }
    cmd.args(args);
    let output = cli_support::run(cmd, stdin);
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run(dir: &Path, args: &[&str]) -> Ran {
    exec(cli_support::segstore(), Some(dir), args, None)
}

fn run_stdin(dir: &Path, args: &[&str], stdin: &[u8]) -> Ran {
    exec(cli_support::segstore(), Some(dir), args, Some(stdin))
}

fn new_store() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    run(&dir, &["init"]).ok();
    (tmp, dir)
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write input");
    path.display().to_string()
}

/// A store whose segment `beta.g1` holds the context hashes of user-1 and user-2 (included)
/// and user-3 (excluded).
fn hashed_store() -> (TempDir, PathBuf) {
    let (tmp, dir) = new_store();
    let args = ["import", "--segment", "beta.g1", "--hash-keys", "-"];
    run_stdin(&dir, &args, b"user-1\nuser-2\n").ok();
    let args = [
        "import",
        "--segment",
        "beta.g1",
        "--excluded",
        "--hash-keys",
        "-",
    ];
    run_stdin(&dir, &args, b"user-3\n").ok();
    (tmp, dir)
}

/// A store whose segment `raw.g1` holds the raw keys a, b and c (included).
fn raw_store() -> (TempDir, PathBuf) {
    let (tmp, dir) = new_store();
    run_stdin(&dir, &["import", "--segment", "raw.g1", "-"], b"a\nb\nc\n").ok();
    (tmp, dir)
}

fn last_seq(dir: &Path) -> u64 {
    let options = Options {
        poll_interval: None,
        ..Options::default()
    };
    ReadOnlyStore::open(dir, options)
        .expect("open read-only")
        .snapshot()
        .last_seq()
}

fn files_of(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("read store dir")
        .map(|e| {
            let e = e.expect("dir entry");
            let len = e.metadata().expect("metadata").len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    files.sort();
    files
}

// ------------------------------------------------------------------------------------------
// check --keys and --json

const KEYS: &str = "user-1\n\nuser-3\r\nnobody\nuser-2\n";
const ANSWERS: &str = "included\tuser-1\nexcluded\tuser-3\nunknown\tnobody\nincluded\tuser-2\n";

#[test]
fn check_keys_from_a_file_answers_each_line_in_order_and_skips_blank_lines() {
    let (tmp, dir) = hashed_store();
    let file = write_file(tmp.path(), "keys.txt", KEYS);
    let ran = run(&dir, &["check", "beta.g1", "--keys", &file, "--hash-key"]);
    assert_eq!(ran.ok(), ANSWERS);
    ran.assert_no_warning();
}

#[test]
fn check_keys_from_stdin() {
    let (_tmp, dir) = hashed_store();
    let ran = run_stdin(
        &dir,
        &["check", "beta.g1", "--keys", "-", "--hash-key"],
        KEYS.as_bytes(),
    );
    assert_eq!(ran.ok(), ANSWERS);
    ran.assert_no_warning();
}

#[test]
fn check_keys_of_stored_hashes_needs_no_hash_key() {
    let (_tmp, dir) = hashed_store();
    let input = format!("{}\n{}\n", context_hash("user-3"), context_hash("user-9"));
    let ran = run_stdin(&dir, &["check", "beta.g1", "--keys", "-"], input.as_bytes());
    let expected = format!(
        "excluded\t{}\nunknown\t{}\n",
        context_hash("user-3"),
        context_hash("user-9")
    );
    assert_eq!(ran.ok(), expected);
    ran.assert_no_warning();
}

#[test]
fn check_keys_json_is_one_object_per_answer() {
    let (_tmp, dir) = hashed_store();
    let args = ["check", "beta.g1", "--keys", "-", "--hash-key", "--json"];
    let ran = run_stdin(&dir, &args, KEYS.as_bytes());
    let answers: Vec<serde_json::Value> = ran
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    let expected = [
        ("user-1", "included"),
        ("user-3", "excluded"),
        ("nobody", "unknown"),
        ("user-2", "included"),
    ];
    assert_eq!(answers.len(), expected.len());
    for (answer, (key, status)) in answers.iter().zip(expected) {
        assert_eq!(
            answer,
            &serde_json::json!({"segment": "beta.g1", "key": key, "status": status})
        );
    }
}

#[test]
fn check_one_key_json_and_plain() {
    let (_tmp, dir) = hashed_store();
    let ran = run(
        &dir,
        &["check", "beta.g1", "user-3", "--hash-key", "--json"],
    );
    let answer: serde_json::Value = serde_json::from_str(ran.ok().trim_end()).expect("JSON");
    assert_eq!(
        answer,
        serde_json::json!({"segment": "beta.g1", "key": "user-3", "status": "excluded"})
    );
    // The one-key form prints the bare word, as before.
    let ran = run(&dir, &["check", "beta.g1", "user-1", "--hash-key"]);
    assert_eq!(ran.ok(), "included\n");
}

#[test]
fn check_keys_unknown_segment_answers_unknown_with_one_warning() {
    let (_tmp, dir) = hashed_store();
    let ran = run_stdin(
        &dir,
        &["check", "nope.g1", "--keys", "-", "--hash-key"],
        b"user-1\nuser-2\n",
    );
    assert_eq!(ran.ok(), "unknown\tuser-1\nunknown\tuser-2\n");
    ran.assert_one_warning("no segment");
}

#[test]
fn check_keys_stops_at_an_invalid_key_after_the_answers_before_it() {
    let (_tmp, dir) = raw_store();
    let input = format!("a\n{}\nb\n", "x".repeat(5000));
    let ran = run_stdin(&dir, &["check", "raw.g1", "--keys", "-"], input.as_bytes());
    assert_eq!(ran.code, 1, "stderr: {}", ran.stderr);
    assert_eq!(ran.stdout, "included\ta\n");
    assert!(ran.stderr.contains("line 2"), "stderr: {}", ran.stderr);
}

#[test]
fn check_needs_exactly_one_of_key_and_keys() {
    let (_tmp, dir) = raw_store();
    assert_eq!(run(&dir, &["check", "raw.g1"]).code, 2);
    assert_eq!(run(&dir, &["check", "raw.g1", "a", "--keys", "-"]).code, 2);
}

// ------------------------------------------------------------------------------------------
// --dry-run

#[test]
fn import_dry_run_replace_reports_counts_and_writes_nothing() {
    let (tmp, dir) = raw_store();
    let seq = last_seq(&dir);
    let files = files_of(&dir);
    let input = write_file(tmp.path(), "keys.txt", "b\nc\nd\nd\n\n");
    let ran = run(
        &dir,
        &["import", "--segment", "raw.g1", "--dry-run", &input],
    );
    let report = ran.ok();
    for line in [
        "dry run: nothing was written",
        "keys read:     4",
        "distinct keys: 3",
        "would add:     1",
        "would remove:  1",
        "list now has:  3 keys",
        "list after:    3 keys",
        "blank skipped: 1",
    ] {
        assert!(report.contains(line), "{line:?} in:\n{report}");
    }
    assert_eq!(last_seq(&dir), seq);
    assert_eq!(files_of(&dir), files);
    assert_eq!(run(&dir, &["verify"]).ok().trim_end(), "ok");
    assert_eq!(run(&dir, &["export", "raw.g1"]).ok(), "a\nb\nc\n");
}

#[test]
fn import_dry_run_merge_counts_batches_and_a_new_segment() {
    let (_tmp, dir) = raw_store();
    let seq = last_seq(&dir);
    let args = [
        "import",
        "--segment",
        "raw.g1",
        "--mode",
        "merge",
        "--dry-run",
        "-",
    ];
    let report = run_stdin(&dir, &args, b"c\nd\ne\n").ok().to_owned();
    for line in [
        "would add:     2",
        "would remove:  0",
        "list after:    5 keys",
        "writes:        1",
        "segment kind:  user (exists)",
    ] {
        assert!(report.contains(line), "{line:?} in:\n{report}");
    }
    let args = [
        "import",
        "--segment",
        "new.g1",
        "--kind",
        "org",
        "--dry-run",
        "-",
    ];
    let report = run_stdin(&dir, &args, b"x\n").ok().to_owned();
    assert!(
        report.contains("segment kind:  org (would be created)"),
        "{report}"
    );
    assert_eq!(last_seq(&dir), seq);
    let options = Options {
        poll_interval: None,
        ..Options::default()
    };
    let reader = ReadOnlyStore::open(&dir, options).expect("open read-only");
    assert!(reader.snapshot().segment("new.g1").is_none());
}

#[test]
fn import_dry_run_still_validates() {
    let (_tmp, dir) = raw_store();
    let input = format!("a\n{}\n", "x".repeat(5000));
    let args = ["import", "--segment", "raw.g1", "--dry-run", "-"];
    let ran = run_stdin(&dir, &args, input.as_bytes());
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.contains("line 2"), "stderr: {}", ran.stderr);
    let args = [
        "import",
        "--segment",
        "raw.g1",
        "--kind",
        "org",
        "--dry-run",
        "-",
    ];
    assert_eq!(run_stdin(&dir, &args, b"a\n").code, 1);
}

#[test]
fn dry_runs_work_beside_a_running_writer() {
    let (_tmp, dir) = raw_store();
    let writer = Store::open(&dir, Options::default()).expect("hold the writer lock");
    let args = ["import", "--segment", "raw.g1", "--dry-run", "-"];
    run_stdin(&dir, &args, b"z\n").ok();
    let line = br#"{"segment": "raw.g1", "included": {"add": ["z"]}}"#;
    run_stdin(&dir, &["apply", "--dry-run", "-"], line).ok();
    // Without --dry-run the same import is refused: the lock is held.
    let args = ["import", "--segment", "raw.g1", "-"];
    assert_eq!(run_stdin(&dir, &args, b"z\n").code, 1);
    drop(writer);
}

#[test]
fn apply_dry_run_reports_net_changes_per_segment_and_writes_nothing() {
    let (_tmp, dir) = raw_store();
    let seq = last_seq(&dir);
    let files = files_of(&dir);
    let input = concat!(
        r#"{"segment": "raw.g1", "included": {"add": ["x", "a"], "remove": ["b"]}}"#,
        "\n\n",
        r#"{"segment": "new.g1", "excluded": {"add": ["q"]}}"#,
        "\n",
        r#"{"segment": "raw.g1", "included": {"add": ["y"], "remove": ["y"]}}"#,
        "\n",
    );
    let ran = run_stdin(&dir, &["apply", "--dry-run", "-"], input.as_bytes());
    let report = ran.ok();
    for line in [
        "dry run: nothing was written",
        "would apply 3 line(s): 3 batch(es), 6 key operation(s); cursor \"\" (unchanged)",
        "segments created: 1",
        "segment \"new.g1\" (new): included +0 -0, excluded +1 -0",
        "segment \"raw.g1\": included +1 -1, excluded +0 -0",
    ] {
        assert!(report.contains(line), "{line:?} in:\n{report}");
    }
    ran.assert_no_warning();
    assert_eq!(last_seq(&dir), seq);
    assert_eq!(files_of(&dir), files);
    assert_eq!(run(&dir, &["export", "raw.g1"]).ok(), "a\nb\nc\n");
}

fn patch(segment: &str, prev: &str, version: &str, add: &[&str]) -> String {
    let hashed: Vec<String> = add.iter().map(|k| context_hash(k)).collect();
    serde_json::json!({
        "environmentId": "env",
        "segmentId": segment,
        "version": version,
        "previousVersion": prev,
        "changes": {"included": {"add": hashed, "remove": []}, "excluded": {"add": [], "remove": []}}
    })
    .to_string()
}

#[test]
fn apply_dry_run_checks_the_patch_cursor_across_lines() {
    let (_tmp, dir) = new_store();
    let good = format!(
        "{}\n{}\n",
        patch("ld.g1", "", "v1", &["u1"]),
        patch("ld.g1", "v1", "v2", &["u2"])
    );
    let args = ["apply", "--format", "patches", "--dry-run", "-"];
    let report = run_stdin(&dir, &args, good.as_bytes()).ok().to_owned();
    assert!(
        report.contains("2 patch(es); cursor \"\" -> \"v2\""),
        "{report}"
    );
    assert!(
        report.contains("segment \"ld.g1\" (new): included +2 -0"),
        "{report}"
    );
    let broken = format!(
        "{}\n{}\n",
        patch("ld.g1", "", "v1", &["u1"]),
        patch("ld.g1", "v7", "v8", &["u2"])
    );
    let ran = run_stdin(&dir, &args, broken.as_bytes());
    assert_eq!(ran.code, 3, "stderr: {}", ran.stderr);
    assert!(ran.stderr.contains("line 2"), "stderr: {}", ran.stderr);
    assert_eq!(last_seq(&dir), 0);
}

#[test]
fn apply_dry_run_still_validates() {
    let (_tmp, dir) = raw_store();
    let input = "{\"segment\": \"raw.g1\", \"included\": {\"add\": [\"k\"]}}\n{not json\n";
    let ran = run_stdin(&dir, &["apply", "--dry-run", "-"], input.as_bytes());
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.contains("line 2"), "stderr: {}", ran.stderr);
    assert!(ran.stderr.contains("dry run"), "stderr: {}", ran.stderr);
}

// ------------------------------------------------------------------------------------------
// --quiet

#[test]
fn quiet_silences_informational_lines_but_not_answers_or_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let ran = run(&dir, &["--quiet", "init"]);
    assert_eq!((ran.ok(), ran.stderr.as_str()), ("", ""));
    let ran = run_stdin(&dir, &["import", "-q", "--segment", "s.g1", "-"], b"a\nb\n");
    assert_eq!((ran.ok(), ran.stderr.as_str()), ("", ""));
    let line = br#"{"segment": "s.g1", "included": {"add": ["c"]}}"#;
    let ran = run_stdin(&dir, &["--quiet", "apply", "-"], line);
    assert_eq!((ran.ok(), ran.stderr.as_str()), ("", ""));
    assert_eq!(
        run(&dir, &["--quiet", "check", "s.g1", "c"]).ok(),
        "included\n"
    );
    // A dry run's report is its answer: still printed.
    let ran = run_stdin(&dir, &["--quiet", "apply", "--dry-run", "-"], line);
    assert!(ran.ok().starts_with("dry run"), "{}", ran.stdout);
    // Errors still reach stderr.
    let ran = run_stdin(&dir, &["--quiet", "apply", "-"], b"{not json\n");
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.starts_with("error: "), "stderr: {}", ran.stderr);
    // Without --quiet the summaries are there.
    let ran = run_stdin(&dir, &["apply", "-"], line);
    assert!(ran.ok().starts_with("applied 1 line(s)"), "{}", ran.stdout);
}

/// Runs `command` (a shell command line) with its stdout and stderr on a pseudo-terminal,
/// through util-linux `script`, and returns all it printed; `None` when `script` is missing.
fn on_a_terminal(command: &str) -> Option<String> {
    let output = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    assert!(output.status.success(), "{command}: {output:?}");
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn quiet_hides_progress_bars_on_a_terminal() {
    let (tmp, dir) = new_store();
    // Enough keys that the import runs long enough to draw its bar.
    let keys: String = (0..2_000_000).map(|i| format!("{i}\n")).collect();
    let file = write_file(tmp.path(), "keys.txt", &keys);
    let bin = env!("CARGO_BIN_EXE_segstore");
    let import = |flags: &str| {
        format!(
            "{bin} --dir {} {flags} import --segment s.g1 {file}",
            dir.display()
        )
    };
    let Some(quiet) = on_a_terminal(&import("--quiet")) else {
        eprintln!("skipped: no `script` to run the binary on a terminal");
        return;
    };
    assert_eq!(quiet, "", "nothing at all under --quiet");
    let loud = on_a_terminal(&import("")).unwrap_or_default();
    assert!(loud.contains("keys read:     2000000"), "{loud}");
}

// ------------------------------------------------------------------------------------------
// Warnings

#[test]
fn warns_about_a_ref_without_a_generation_suffix() {
    let (_tmp, dir) = new_store();
    let ran = run_stdin(&dir, &["import", "--segment", "beta", "-"], b"a\n");
    ran.ok();
    ran.assert_one_warning("generation suffix");
    let ran = run_stdin(&dir, &["import", "--segment", "beta.g2", "-"], b"a\n");
    ran.ok();
    ran.assert_no_warning();
    let ran = run(&dir, &["check", "beta", "a"]);
    assert_eq!(ran.ok(), "included\n");
    ran.assert_one_warning("generation suffix");
    // Once per ref in apply, however many lines name it.
    let line = "{\"segment\": \"beta\", \"included\": {\"add\": [\"b\"]}}\n";
    let ran = run_stdin(&dir, &["apply", "-"], line.repeat(3).as_bytes());
    ran.ok();
    ran.assert_one_warning("generation suffix");
}

#[test]
fn warns_about_a_ref_with_spaces() {
    let (_tmp, dir) = new_store();
    let ran = run_stdin(&dir, &["import", "--segment", "beta users.g1", "-"], b"a\n");
    ran.ok();
    ran.assert_one_warning("white space");
    let ran = run(&dir, &["check", "beta users.g1", "a"]);
    assert_eq!(ran.ok(), "included\n");
    ran.assert_one_warning("white space");
}

#[test]
fn warns_when_merging_raw_keys_into_a_list_of_hashes() {
    // Each case on a fresh store: a list that already mixes both is past warning about.
    let merge = ["import", "--segment", "beta.g1", "--mode", "merge", "-"];
    let (_tmp, dir) = hashed_store();
    let ran = run_stdin(&dir, &merge, b"user-7\nuser-8\n");
    ran.ok();
    ran.assert_one_warning("--hash-keys");
    let (_tmp, dir) = hashed_store();
    let dry_run = [
        "import",
        "--segment",
        "beta.g1",
        "--mode",
        "merge",
        "--dry-run",
        "-",
    ];
    let ran = run_stdin(&dir, &dry_run, b"user-7\n");
    ran.ok();
    ran.assert_one_warning("--hash-keys");
    let hashed = [
        "import",
        "--segment",
        "beta.g1",
        "--mode",
        "merge",
        "--hash-keys",
        "-",
    ];
    let ran = run_stdin(&dir, &hashed, b"user-9\n");
    ran.ok();
    ran.assert_no_warning();
    // Replacing a list is no mix: its old keys go.
    let replace = ["import", "--segment", "beta.g1", "--excluded", "-"];
    let ran = run_stdin(&dir, &replace, b"user-7\n");
    ran.ok();
    ran.assert_no_warning();

    let line = br#"{"segment": "beta.g1", "included": {"add": ["user-10"]}}"#;
    let (_tmp, dir) = hashed_store();
    let ran = run_stdin(&dir, &["apply", "--hash-keys", "-"], line);
    ran.ok();
    ran.assert_no_warning();
    let ran = run_stdin(&dir, &["apply", "--dry-run", "-"], line);
    ran.ok();
    ran.assert_one_warning("--hash-keys");
    let ran = run_stdin(&dir, &["apply", "-"], line);
    ran.ok();
    ran.assert_one_warning("--hash-keys");
}

#[test]
fn warns_when_merging_hashes_into_a_list_of_raw_keys() {
    let (_tmp, dir) = raw_store();
    let hashed = [
        "import",
        "--segment",
        "raw.g1",
        "--mode",
        "merge",
        "--hash-keys",
        "-",
    ];
    let ran = run_stdin(&dir, &hashed, b"user-1\n");
    ran.ok();
    ran.assert_one_warning("which holds raw keys");
    let (_tmp, dir) = raw_store();
    let raw_line = br#"{"segment": "raw.g1", "included": {"add": ["d"]}}"#;
    let ran = run_stdin(&dir, &["apply", "-"], raw_line);
    ran.ok();
    ran.assert_no_warning();
    let line = format!(
        "{{\"segment\": \"raw.g1\", \"included\": {{\"add\": [\"{}\"]}}}}",
        context_hash("user-2")
    );
    let ran = run_stdin(&dir, &["apply", "-"], line.as_bytes());
    ran.ok();
    ran.assert_one_warning("which holds raw keys");
}

#[test]
fn warns_when_looking_up_a_raw_key_in_a_store_of_hashes() {
    let (_tmp, dir) = hashed_store();
    let ran = run(&dir, &["check", "beta.g1", "user-1"]);
    assert_eq!(ran.ok(), "unknown\n");
    ran.assert_one_warning("--hash-key");
    let ran = run(&dir, &["check", "beta.g1", "user-1", "--hash-key"]);
    assert_eq!(ran.ok(), "included\n");
    ran.assert_no_warning();
    let ran = run(&dir, &["check", "beta.g1", &context_hash("user-1")]);
    assert_eq!(ran.ok(), "included\n");
    ran.assert_no_warning();
    let ran = run_stdin(
        &dir,
        &["check", "beta.g1", "--keys", "-"],
        b"user-1\nuser-2\n",
    );
    assert_eq!(ran.ok(), "unknown\tuser-1\nunknown\tuser-2\n");
    ran.assert_one_warning("--hash-key");
    let ran = run(&dir, &["membership", "user-1"]);
    assert_eq!(ran.ok(), "{}\n");
    ran.assert_one_warning("--hash-key");
    let ran = run(&dir, &["membership", "user-1", "--hash-key"]);
    ran.ok();
    ran.assert_no_warning();
    // A store of raw keys: no warning.
    let (_tmp, raw) = raw_store();
    let ran = run(&raw, &["check", "raw.g1", "a"]);
    assert_eq!(ran.ok(), "included\n");
    ran.assert_no_warning();
}

// ------------------------------------------------------------------------------------------
// Completions and the manual page

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let ran = exec(cli_support::segstore(), None, &["completions", shell], None);
        let script = ran.ok();
        assert!(script.contains("segstore"), "{shell}: {script}");
        assert!(script.contains("dry-run"), "{shell}: lists the flags");
    }
    let ran = exec(
        cli_support::segstore(),
        None,
        &["completions", "tcsh"],
        None,
    );
    assert_eq!(ran.code, 2);
}

#[test]
fn man_page_is_roff() {
    let ran = exec(cli_support::segstore(), None, &["man"], None);
    assert!(ran.ok().starts_with(".TH"), "{}", ran.stdout);
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().display().to_string();
    let ran = exec(
        cli_support::segstore(),
        None,
        &["--quiet", "man", "--out", &out],
        None,
    );
    assert_eq!(ran.ok(), "");
    for page in ["segstore.1", "segstore-check.1", "segstore-import.1"] {
        let text = std::fs::read_to_string(tmp.path().join(page)).expect(page);
        assert!(text.starts_with(".TH"), "{page}");
    }
}
