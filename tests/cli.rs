//! End-to-end tests of the `segstore` binary: every command, input format and exit code.
#![cfg(feature = "cli")]

mod cli_support;
mod damaged_store;

use segstore::{context_hash, Options, Store};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tempfile::TempDir;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    fn fails(self, code: i32) -> String {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            code == 2 || self.stderr.starts_with("error: "),
            "stderr: {}",
            self.stderr
        );
        if code != 2 {
            assert_eq!(self.stderr.lines().count(), 1, "one line: {}", self.stderr);
        }
        self.stderr
    }
}

fn bin() -> Command {
    cli_support::segstore()
}

fn exec(cmd: Command, stdin: Option<&[u8]>) -> Out {
    let output = cli_support::run(cmd, stdin);
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run(dir: &Path, args: &[&str]) -> Out {
    let mut cmd = bin();
    cmd.arg("--dir").arg(dir).args(args);
    exec(cmd, None)
}

fn run_stdin(dir: &Path, args: &[&str], stdin: &[u8]) -> Out {
    let mut cmd = bin();
    cmd.arg("--dir").arg(dir).args(args);
    exec(cmd, Some(stdin))
}

fn new_store() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    run(&dir, &["init"]).ok();
    (tmp, dir)
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write input");
    path.display().to_string()
}

fn check(dir: &Path, segment: &str, key: &str) -> String {
    run(dir, &["check", segment, key])
        .ok()
        .trim_end()
        .to_owned()
}

fn report_value(report: &str, label: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {report}"))
        .trim()
        .to_owned()
}

// ------------------------------------------------------------------------------------------
// init, global options, usage errors

#[test]
fn init_creates_once() {
    let (_tmp, dir) = new_store();
    assert!(dir.join("MANIFEST").exists());
    let err = run(&dir, &["init"]).fails(1);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), &["frobnicate"]).fails(2);
    run(tmp.path(), &["check", "only-ref"]).fails(2);
    run(
        tmp.path(),
        &["import", "--mode", "sideways", "--segment", "s.g1", "x"],
    )
    .fails(2);
    run(tmp.path(), &["import", "--csv", "--segment", "s.g1", "x"]).fails(2);
    // No --dir and no SEGSTORE_DIR.
    let mut cmd = bin();
    cmd.arg("segments");
    let out = exec(cmd, None);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("SEGSTORE_DIR"), "{}", out.stderr);
    // Help is not an error.
    let mut cmd = bin();
    cmd.arg("--help");
    assert!(exec(cmd, None).ok().contains("Exit codes"));
}

#[test]
fn dir_from_environment() {
    let (_tmp, dir) = new_store();
    let mut cmd = bin();
    cmd.env("SEGSTORE_DIR", &dir).arg("segments");
    assert!(exec(cmd, None).ok().contains("(no segments)"));
}

#[test]
fn missing_store_is_a_runtime_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = run(tmp.path(), &["segments"]).fails(1);
    assert!(err.contains("no store") && err.contains("init"), "{err}");
    let f = write_file(tmp.path(), "k.txt", b"a\n");
    run(tmp.path(), &["import", "--segment", "s.g1", &f]).fails(1);
}

// ------------------------------------------------------------------------------------------
// import and export

#[test]
fn import_replace_and_export_round_trip() {
    let (tmp, dir) = new_store();
    let f = write_file(tmp.path(), "keys.txt", b"b\r\na\n\nc\nb\nwith space \n");
    let report = run(&dir, &["import", "--segment", "beta.g1", &f]).ok();
    assert_eq!(report_value(&report, "keys read:"), "5");
    assert_eq!(report_value(&report, "distinct keys:"), "4");
    assert_eq!(report_value(&report, "blank skipped:"), "1");
    assert_eq!(report_value(&report, "table kind:"), "fst");
    assert!(report.contains("keys/s:"));
    let exported = run(&dir, &["export", "beta.g1"]).ok();
    assert_eq!(exported, "a\nb\nc\nwith space \n");
    assert_eq!(check(&dir, "beta.g1", "with space "), "included");

    // Replace makes the list exactly the new keys.
    let f2 = write_file(tmp.path(), "keys2.txt", b"c\nd");
    run(&dir, &["import", "--segment", "beta.g1", &f2]).ok();
    assert_eq!(run(&dir, &["export", "beta.g1"]).ok(), "c\nd\n");
    assert_eq!(check(&dir, "beta.g1", "a"), "unknown");

    // The excluded list, from stdin.
    run_stdin(
        &dir,
        &["import", "--segment", "beta.g1", "--excluded", "-"],
        b"x\ny\n",
    )
    .ok();
    assert_eq!(
        run(&dir, &["export", "beta.g1", "--excluded"]).ok(),
        "x\ny\n"
    );
    assert_eq!(run(&dir, &["export", "beta.g1"]).ok(), "c\nd\n");
    assert_eq!(check(&dir, "beta.g1", "x"), "excluded");

    // Kind: created as given; a different kind later is refused.
    run_stdin(
        &dir,
        &["import", "--segment", "orgs.g2", "--kind", "org", "-"],
        b"o1\n",
    )
    .ok();
    let err = run_stdin(
        &dir,
        &["import", "--segment", "orgs.g2", "--kind", "user", "-"],
        b"o2\n",
    )
    .fails(1);
    assert!(err.contains("kind"), "{err}");
    let segments = run(&dir, &["segments"]).ok();
    assert!(
        segments
            .lines()
            .any(|l| l.starts_with("orgs.g2") && l.contains(" org ")),
        "{segments}"
    );
    assert!(
        segments
            .lines()
            .any(|l| l.starts_with("beta.g1") && l.contains("2         2")),
        "{segments}"
    );
}

#[test]
fn import_hash_keys_builds_a_hashed_table() {
    let (tmp, dir) = new_store();
    let f = write_file(tmp.path(), "users.txt", b"user-key\nuser1\nuser2\n");
    let report = run(&dir, &["import", "--segment", "ld.g1", "--hash-keys", &f]).ok();
    assert_eq!(report_value(&report, "table kind:"), "hashed");
    assert_eq!(
        run(&dir, &["check", "ld.g1", "user-key", "--hash-key"]).ok(),
        "included\n"
    );
    assert_eq!(
        check(
            &dir,
            "ld.g1",
            "CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0="
        ),
        "included"
    );
    assert_eq!(check(&dir, "ld.g1", "user-key"), "unknown");
    let mut expected = vec![
        context_hash("user-key"),
        context_hash("user1"),
        context_hash("user2"),
    ];
    expected.sort();
    let exported: Vec<String> = run(&dir, &["export", "ld.g1"])
        .ok()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(exported, expected);
    // A raw key that is not UTF-8 has no context hash.
    let bad = write_file(tmp.path(), "bad.txt", b"ok\n\xff\xfe\n");
    let err = run(&dir, &["import", "--segment", "ld.g1", "--hash-keys", &bad]).fails(1);
    assert!(err.contains("line 2") && err.contains("bad.txt"), "{err}");
}

#[test]
fn import_csv_column() {
    let (tmp, dir) = new_store();
    let f = write_file(
        tmp.path(),
        "export.csv",
        b"amplitude_id,user_id,plan\n1,alice,pro\n2,\"bob, jr\",free\n3,,free\n4,carol,pro\n",
    );
    let report = run(
        &dir,
        &[
            "import",
            "--segment",
            "amp.g1",
            "--csv",
            "--column",
            "user_id",
            &f,
        ],
    )
    .ok();
    assert_eq!(report_value(&report, "distinct keys:"), "3");
    assert_eq!(report_value(&report, "blank skipped:"), "1");
    assert_eq!(
        run(&dir, &["export", "amp.g1"]).ok(),
        "alice\nbob, jr\ncarol\n"
    );
    let err = run(
        &dir,
        &[
            "import",
            "--segment",
            "amp.g1",
            "--csv",
            "--column",
            "email",
            &f,
        ],
    )
    .fails(1);
    assert!(err.contains("email") && err.contains("user_id"), "{err}");
    // A ragged row names its line; the list is unchanged.
    let ragged = write_file(tmp.path(), "ragged.csv", b"user_id,plan\ndave,pro\neve\n");
    let err = run(
        &dir,
        &[
            "import",
            "--segment",
            "amp.g1",
            "--csv",
            "--column",
            "user_id",
            &ragged,
        ],
    )
    .fails(1);
    assert!(
        err.contains("ragged.csv") && err.contains("line: 3"),
        "{err}"
    );
    assert_eq!(
        run(&dir, &["export", "amp.g1"]).ok(),
        "alice\nbob, jr\ncarol\n"
    );
}

#[test]
fn import_merge_adds_in_batches() {
    let (tmp, dir) = new_store();
    let f = write_file(tmp.path(), "a.txt", b"k-a\nk-b\n");
    run(&dir, &["import", "--segment", "m.g1", &f]).ok();
    let many: String = (0..25_000).map(|i| format!("m-{i:06}\n")).collect();
    let f2 = write_file(tmp.path(), "many.txt", many.as_bytes());
    let report = run(
        &dir,
        &["import", "--segment", "m.g1", "--mode", "merge", &f2],
    )
    .ok();
    assert_eq!(report_value(&report, "keys read:"), "25000");
    assert_eq!(report_value(&report, "list now has:"), "25002 keys");
    assert_eq!(check(&dir, "m.g1", "k-a"), "included");
    assert_eq!(check(&dir, "m.g1", "m-024999"), "included");
    assert_eq!(run(&dir, &["export", "m.g1"]).ok().lines().count(), 25_002);
}

#[test]
fn import_rejects_overlong_keys_with_line_number_and_changes_nothing() {
    let (tmp, dir) = new_store();
    let f = write_file(tmp.path(), "good.txt", b"keep\n");
    run(&dir, &["import", "--segment", "s.g1", &f]).ok();
    let mut bytes = b"a\nb\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 4097));
    bytes.extend(b"\nc\n");
    let bad = write_file(tmp.path(), "bad.txt", &bytes);
    let err = run(&dir, &["import", "--segment", "s.g1", &bad]).fails(1);
    assert!(
        err.contains("bad.txt") && err.contains("line 3") && err.contains("4097"),
        "{err}"
    );
    assert_eq!(run(&dir, &["export", "s.g1"]).ok(), "keep\n");
    // Exactly 4096 bytes is fine.
    let max = write_file(tmp.path(), "max.txt", &[b'y'; 4096]);
    run(&dir, &["import", "--segment", "s.g1", &max]).ok();
    // A missing file names itself.
    let err = run(
        &dir,
        &["import", "--segment", "s.g1", "/nonexistent/keys.txt"],
    )
    .fails(1);
    assert!(err.contains("/nonexistent/keys.txt"), "{err}");
}

#[test]
fn import_export_round_trip_1m_keys() {
    let (tmp, dir) = new_store();
    // Unsorted, with duplicates: a multiplicative permutation of 0..1M, plus 1,000 repeats.
    let n: u64 = 1_000_000;
    let mut input = String::with_capacity(16 * n as usize);
    for i in 0..n {
        let k = (i * 7_919) % n;
        input.push_str(&format!("user-{k:08}\n"));
    }
    for i in 0..1_000 {
        input.push_str(&format!("user-{i:08}\n"));
    }
    let f = write_file(tmp.path(), "big.txt", input.as_bytes());
    let started = Instant::now();
    let report = run(&dir, &["import", "--segment", "big.g1", &f]).ok();
    assert_eq!(report_value(&report, "keys read:"), "1001000");
    assert_eq!(report_value(&report, "distinct keys:"), "1000000");
    let mut cmd = bin();
    cmd.arg("--dir")
        .arg(&dir)
        .args(["export", "big.g1"])
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut count = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let line = line.unwrap();
        assert_eq!(line, format!("user-{i:08}"));
        count += 1;
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(count, n);
    eprintln!("1M import + export: {:?}", started.elapsed());
}

#[test]
fn export_into_a_closed_pipe_is_quiet() {
    let (tmp, dir) = new_store();
    let keys: String = (0..200_000).map(|i| format!("k{i:07}\n")).collect();
    let f = write_file(tmp.path(), "k.txt", keys.as_bytes());
    run(&dir, &["import", "--segment", "p.g1", &f]).ok();
    let mut cmd = bin();
    cmd.arg("--dir")
        .arg(&dir)
        .args(["export", "p.g1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert_eq!(first, "k0000000\n");
    drop(reader); // like `| head -1`
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn export_unknown_segment_fails() {
    let (_tmp, dir) = new_store();
    let err = run(&dir, &["export", "nope.g1"]).fails(1);
    assert!(err.contains("nope.g1"), "{err}");
}

// ------------------------------------------------------------------------------------------
// apply: updates

#[test]
fn apply_updates_line_by_line() {
    let (tmp, dir) = new_store();
    let input = concat!(
        r#"{"segment": "beta.g1", "name": "Beta", "included": {"add": ["a", "b", "c"]}}"#,
        "\n\n",
        r#"{"segment": "beta.g1", "included": {"remove": ["b"]}, "excluded": {"add": ["z", "a"]}}"#,
        "\n",
        r#"{"segment": "orgs.g1", "kind": "org", "included": {"add": ["o1"]}}"#,
        "\n"
    );
    let f = write_file(tmp.path(), "u.jsonl", input.as_bytes());
    let report = run(&dir, &["apply", &f]).ok();
    assert!(report.contains("applied 3 line(s)"), "{report}");
    assert_eq!(check(&dir, "beta.g1", "a"), "included");
    assert_eq!(check(&dir, "beta.g1", "b"), "unknown");
    assert_eq!(check(&dir, "beta.g1", "z"), "excluded");
    assert_eq!(check(&dir, "orgs.g1", "o1"), "included");
    let json: serde_json::Value =
        serde_json::from_str(&run(&dir, &["segments", "--json"]).ok()).unwrap();
    assert_eq!(json[0]["ref"], "beta.g1");
    assert_eq!(json[0]["name"], "Beta");
    assert_eq!(json[0]["included"], 2);
    assert_eq!(json[0]["excluded"], 2);
    assert_eq!(json[1]["kind"], "org");
    // Updates leave synchronized_on alone.
    let meta: serde_json::Value =
        serde_json::from_str(&run(&dir, &["meta", "--json"]).ok()).unwrap();
    assert!(meta["synchronized_on"].is_null());
}

#[test]
fn apply_updates_hash_keys_from_stdin() {
    let (_tmp, dir) = new_store();
    let line = br#"{"segment": "ld.g1", "included": {"add": ["user1", "user3"]}}"#;
    run_stdin(&dir, &["apply", "--hash-keys", "-"], line).ok();
    assert_eq!(
        check(
            &dir,
            "ld.g1",
            "CgQblGLKpKMbrDVn4Lbm/ZEAeH2yq0M9lvbReMq/zpA="
        ),
        "included"
    );
    assert_eq!(
        check(
            &dir,
            "ld.g1",
            "WGD68CtrxiIrpaylI1YPDjZMzYtnvuSG/ov3wB1JLMs="
        ),
        "included"
    );
    assert_eq!(check(&dir, "ld.g1", "user1"), "unknown");
}

/// Runs `apply` on `lines`, where the third line is bad: it must fail with "line 3", keep
/// lines 1-2 applied and apply nothing of line 3.
fn bad_third_line(bad: &str, expect_in_message: &str) {
    bad_third_line_bytes(bad.as_bytes(), expect_in_message);
}

fn bad_third_line_bytes(bad: &[u8], expect_in_message: &str) {
    let (tmp, dir) = new_store();
    let mut input = Vec::new();
    input.extend_from_slice(br#"{"segment": "s.g1", "included": {"add": ["one"]}}"#);
    input.push(b'\n');
    input.extend_from_slice(br#"{"segment": "s.g1", "included": {"add": ["two"]}}"#);
    input.push(b'\n');
    input.extend_from_slice(bad);
    input.push(b'\n');
    input.extend_from_slice(br#"{"segment": "s.g1", "included": {"add": ["four"]}}"#);
    input.push(b'\n');
    let f = write_file(tmp.path(), "in.jsonl", &input);
    let err = run(&dir, &["apply", &f]).fails(1);
    assert!(err.contains("in.jsonl: line 3"), "{err}");
    assert!(err.contains(expect_in_message), "{err}");
    assert_eq!(check(&dir, "s.g1", "one"), "included");
    assert_eq!(check(&dir, "s.g1", "two"), "included");
    assert_eq!(check(&dir, "s.g1", "three"), "unknown");
    assert_eq!(check(&dir, "s.g1", "four"), "unknown");
}

#[test]
fn apply_rejects_bad_json_with_line_number() {
    bad_third_line(
        r#"{"segment": "s.g1", "included": {"add": ["three"]"#,
        "JSON",
    );
}

#[test]
fn apply_rejects_duplicate_fields_naming_them() {
    bad_third_line(
        r#"{"segment": "s.g1", "included": {"add": ["three"], "add": ["four"]}}"#,
        "/included/add: duplicate field",
    );
}

#[test]
fn apply_reads_a_line_longer_than_its_buffer_as_it_parses_it() {
    let (tmp, dir) = new_store();
    // Line 2 is over 4 MiB, so it is parsed as it is read rather than held whole.
    let many: Vec<String> = (0..250_000)
        .map(|i| format!("\"long-key-{i:08}\""))
        .collect();
    let long = format!(
        r#"{{"segment": "s.g1", "included": {{"add": [{}]}}}}"#,
        many.join(", ")
    );
    assert!(long.len() > 4 << 20);
    let mut input = Vec::new();
    input.extend_from_slice(br#"{"segment": "s.g1", "included": {"add": ["one"]}}"#);
    input.extend_from_slice(b"\n");
    input.extend_from_slice(long.as_bytes());
    input.extend_from_slice(b"\r\n");
    input.extend_from_slice(br#"{"segment": "s.g1", "included": {"add": ["three"]}}"#);
    input.extend_from_slice(b"\n\n");
    input.extend_from_slice(br#"{"segment": "s.g1", "included": {"add": [""]}}"#);
    input.extend_from_slice(b"\n");
    let f = write_file(tmp.path(), "in.jsonl", &input);
    let err = run(&dir, &["apply", &f]).fails(1);
    assert!(err.contains("in.jsonl: line 5: invalid key"), "{err}");
    for key in ["one", "long-key-00000000", "long-key-00249999", "three"] {
        assert_eq!(check(&dir, "s.g1", key), "included", "{key}");
    }
    // A bad key inside a long line names its place.
    let bad = long.replace("\"long-key-00200000\"", "\"\"");
    let f = write_file(tmp.path(), "bad.jsonl", bad.as_bytes());
    let err = run(&dir, &["apply", &f]).fails(1);
    assert!(
        err.contains("line 1: invalid key at /included/add/200000"),
        "{err}"
    );
}

#[test]
fn apply_rejects_wrong_types() {
    bad_third_line(
        r#"{"segment": "s.g1", "included": {"add": ["three", 4]}}"#,
        "/included/add/1",
    );
    bad_third_line(
        r#"{"segment": 7, "included": {"add": ["three"]}}"#,
        "/segment",
    );
    bad_third_line(
        r#"{"segment": "s.g1", "inclued": {"add": ["three"]}}"#,
        "inclued",
    );
}

#[test]
fn apply_rejects_empty_and_overlong_keys() {
    bad_third_line(
        r#"{"segment": "s.g1", "included": {"add": ["three", ""]}}"#,
        "empty key",
    );
    let long = "k".repeat(4097);
    bad_third_line(
        &format!(r#"{{"segment": "s.g1", "included": {{"add": ["three", "{long}"]}}}}"#),
        "4097",
    );
}

#[test]
fn apply_rejects_invalid_utf8_line() {
    bad_third_line_bytes(
        b"{\"segment\": \"s.g1\", \"included\": {\"add\": [\"three\xff\"]}}",
        "UTF-8",
    );
}

#[test]
fn apply_format_errors_are_usage_errors() {
    let (tmp, dir) = new_store();
    let f = write_file(tmp.path(), "x.jsonl", b"{}\n");
    let err = run(&dir, &["apply", "--format", "partner:mixpanel", &f]).fails(2);
    assert!(
        err.contains("mixpanel") && err.contains("amplitude"),
        "{err}"
    );
    run(&dir, &["apply", "--format", "yaml", &f]).fails(2);
    run(&dir, &["apply", "--format", "patches", "--hash-keys", &f]).fails(2);
}

// ------------------------------------------------------------------------------------------
// apply: patches

fn patch(
    segment: &str,
    prev: &str,
    version: &str,
    add: &[&str],
    remove: &[&str],
) -> serde_json::Value {
    let hashed = |keys: &[&str]| keys.iter().map(|k| context_hash(k)).collect::<Vec<_>>();
    serde_json::json!({
        "environmentId": "env",
        "segmentId": segment,
        "version": version,
        "previousVersion": prev,
        "changes": {"included": {"add": hashed(add), "remove": hashed(remove)}, "excluded": {"add": [], "remove": []}}
    })
}

fn hcheck(dir: &Path, segment: &str, raw: &str) -> String {
    run(dir, &["check", segment, raw, "--hash-key"])
        .ok()
        .trim_end()
        .to_owned()
}

#[test]
fn apply_patches_with_array_events_and_cursor() {
    let (tmp, dir) = new_store();
    let lines = [
        serde_json::json!([
            patch("ld.g1", "", "", &["u1", "u2"], &[]),
            patch("ld.g1", "", "v1", &["u3"], &[]),
            patch("other.g1", "v1", "v2", &["u9"], &[]),
        ]),
        patch("ld.g1", "v2", "v3", &[], &["u2"]),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let f = write_file(tmp.path(), "p.jsonl", input.as_bytes());
    let before = segstore_now_ms();
    let report = run(&dir, &["apply", "--format", "patches", &f]).ok();
    assert!(
        report.contains("4 patch(es)") && report.contains("\"v3\""),
        "{report}"
    );
    assert_eq!(hcheck(&dir, "ld.g1", "u1"), "included");
    assert_eq!(hcheck(&dir, "ld.g1", "u2"), "unknown");
    assert_eq!(hcheck(&dir, "ld.g1", "u3"), "included");
    assert_eq!(hcheck(&dir, "other.g1", "u9"), "included");
    let meta: serde_json::Value =
        serde_json::from_str(&run(&dir, &["meta", "--json"]).ok()).unwrap();
    assert_eq!(meta["cursor"], "v3");
    assert!(meta["synchronized_on"].as_u64().unwrap() >= before);
    let text = run(&dir, &["meta"]).ok();
    assert!(
        text.contains("cursor:          \"v3\"") && text.contains("ago"),
        "{text}"
    );
}

fn segstore_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn apply_patches_cursor_mismatch_exits_3_and_keeps_earlier_lines() {
    let (tmp, dir) = new_store();
    let lines = [
        patch("ld.g1", "", "v1", &["a"], &[]),
        patch("ld.g1", "v1", "v2", &["b"], &[]),
        patch("ld.g1", "v7", "v8", &["c"], &[]),
        patch("ld.g1", "v2", "v3", &["d"], &[]),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let f = write_file(tmp.path(), "p.jsonl", input.as_bytes());
    let err = run(&dir, &["apply", "--format", "patches", &f]).fails(3);
    assert!(
        err.contains("line 3") && err.contains("\"v7\"") && err.contains("\"v2\""),
        "{err}"
    );
    // Earlier lines are applied and durable (a new process reads them from disk).
    assert_eq!(hcheck(&dir, "ld.g1", "a"), "included");
    assert_eq!(hcheck(&dir, "ld.g1", "b"), "included");
    assert_eq!(hcheck(&dir, "ld.g1", "c"), "unknown");
    assert_eq!(hcheck(&dir, "ld.g1", "d"), "unknown");
    let meta: serde_json::Value =
        serde_json::from_str(&run(&dir, &["meta", "--json"]).ok()).unwrap();
    assert_eq!(meta["cursor"], "v2");
}

#[test]
fn apply_patches_broken_chain_inside_an_event_applies_nothing_of_it() {
    let (tmp, dir) = new_store();
    let lines = [
        serde_json::json!([patch("ld.g1", "", "v1", &["a"], &[])]),
        serde_json::json!([
            patch("ld.g1", "v1", "v2", &["b"], &[]),
            patch("ld.g1", "v9", "v10", &["c"], &[]),
        ]),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let f = write_file(tmp.path(), "p.jsonl", input.as_bytes());
    let err = run(&dir, &["apply", "--format", "patches", &f]).fails(3);
    assert!(
        err.contains("line 2") && err.contains("\"v9\"") && err.contains("\"v2\""),
        "{err}"
    );
    assert_eq!(hcheck(&dir, "ld.g1", "a"), "included");
    assert_eq!(hcheck(&dir, "ld.g1", "b"), "unknown");
    let meta: serde_json::Value =
        serde_json::from_str(&run(&dir, &["meta", "--json"]).ok()).unwrap();
    assert_eq!(meta["cursor"], "v1");
}

#[test]
fn apply_patches_malformed_line_is_exit_1() {
    let (tmp, dir) = new_store();
    let good = patch("ld.g1", "", "v1", &["a"], &[]);
    let input = format!("{good}\n{{\"segmentId\": \"ld.g1\", \"previousVersion\": \"v1\"}}\n");
    let f = write_file(tmp.path(), "p.jsonl", input.as_bytes());
    let err = run(&dir, &["apply", "--format", "patches", &f]).fails(1);
    assert!(err.contains("line 2") && err.contains("version"), "{err}");
    assert_eq!(hcheck(&dir, "ld.g1", "a"), "included");
}

// ------------------------------------------------------------------------------------------
// apply: partner payloads

fn tool_cli_name(tool: &str) -> String {
    match tool {
        "Twilio Segment" => "segment".to_owned(),
        other => other.to_lowercase(),
    }
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn apply_every_partner_vector() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/partner-sync-examples.json"),
    )
    .unwrap();
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() >= 8);
    let mut tools = std::collections::BTreeSet::new();
    for vector in &vectors {
        let tool = tool_cli_name(vector["tool"].as_str().unwrap());
        tools.insert(tool.clone());
        let format = format!("partner:{tool}");
        let expected = &vector["expected"];
        let segment = expected["ref"].as_str().unwrap();
        let kind = expected["contextKind"].as_str().unwrap();
        let add = strings(&expected["add"]);
        let remove = strings(&expected["remove"]);
        let body = serde_json::to_string(&vector["body"]).unwrap();
        let (tmp, dir) = new_store();
        // Members to remove are there first.
        if !remove.is_empty() {
            let pre =
                serde_json::json!({"segment": segment, "kind": kind, "included": {"add": remove}});
            run_stdin(&dir, &["apply", "-"], pre.to_string().as_bytes()).ok();
        }
        let f = write_file(tmp.path(), "body.json", body.as_bytes());
        run(&dir, &["apply", "--format", &format, &f]).ok();
        for key in &add {
            assert_eq!(check(&dir, segment, key), "included", "{tool}: add {key}");
        }
        for key in &remove {
            assert_eq!(check(&dir, segment, key), "unknown", "{tool}: remove {key}");
        }
        let segments: serde_json::Value =
            serde_json::from_str(&run(&dir, &["segments", "--json"]).ok()).unwrap();
        let info = segments
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["ref"] == segment)
            .unwrap_or_else(|| panic!("{tool}: no segment {segment}"));
        assert_eq!(info["kind"], kind, "{tool}");
        assert_eq!(info["included"], add.len(), "{tool}");

        // The same body with --hash-keys stores the context hashes.
        let (_tmp2, dir2) = new_store();
        run(&dir2, &["apply", "--format", &format, "--hash-keys", &f]).ok();
        for key in &add {
            assert_eq!(
                hcheck(&dir2, segment, key),
                "included",
                "{tool}: hashed add {key}"
            );
        }
    }
    assert_eq!(tools.len(), 8, "{tools:?}");
}

#[test]
fn apply_partner_malformed_body() {
    let (tmp, dir) = new_store();
    let f = write_file(
        tmp.path(),
        "b.json",
        br#"{"environmentId": "e", "batch": 5}"#,
    );
    let err = run(&dir, &["apply", "--format", "partner:amplitude", &f]).fails(1);
    assert!(err.contains("line 1") && err.contains("batch"), "{err}");
}

// ------------------------------------------------------------------------------------------
// check, membership, segment details, meta

#[test]
fn membership_is_sorted_json() {
    let (_tmp, dir) = new_store();
    let input = concat!(
        r#"{"segment": "zeta.g1", "included": {"add": ["k"]}}"#,
        "\n",
        r#"{"segment": "alpha.g1", "excluded": {"add": ["k"]}}"#,
        "\n",
        r#"{"segment": "mid.g1", "included": {"add": ["k"]}, "excluded": {"add": ["k"]}}"#,
        "\n",
        r#"{"segment": "other.g1", "included": {"add": ["j"]}}"#,
        "\n"
    );
    run_stdin(&dir, &["apply", "-"], input.as_bytes()).ok();
    assert_eq!(
        run(&dir, &["membership", "k"]).ok(),
        "{\"alpha.g1\":false,\"mid.g1\":true,\"zeta.g1\":true}\n"
    );
    assert_eq!(run(&dir, &["membership", "nobody"]).ok(), "{}\n");
    assert_eq!(check(&dir, "mid.g1", "k"), "included");
    assert_eq!(check(&dir, "alpha.g1", "k"), "excluded");
    let out = run(&dir, &["check", "missing.g1", "k"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, "unknown\n");
    assert!(out.stderr.contains("no segment"), "{}", out.stderr);
    // Keys out of range are errors, not answers.
    run(&dir, &["check", "mid.g1", ""]).fails(1);
    run(&dir, &["membership", &"x".repeat(4097)]).fails(1);
    // A long raw key is fine once hashed.
    assert_eq!(
        run(&dir, &["membership", &"x".repeat(5000), "--hash-key"]).ok(),
        "{}\n"
    );
}

#[test]
fn segment_details_survive_syncs() {
    let (_tmp, dir) = new_store();
    run_stdin(
        &dir,
        &["apply", "-"],
        br#"{"segment": "s.g1", "name": "From sync", "included": {"add": ["a"]}}"#,
    )
    .ok();
    run(
        &dir,
        &[
            "segment",
            "set",
            "s.g1",
            "--name",
            "Mine",
            "--description",
            "local",
            "--tag",
            "x",
            "--tag",
            "y",
        ],
    )
    .ok();
    run_stdin(
        &dir,
        &["apply", "-"],
        br#"{"segment": "s.g1", "name": "Sync again", "included": {"add": ["b"]}}"#,
    )
    .ok();
    let show = run(&dir, &["segment", "show", "s.g1"]).ok();
    assert!(show.contains("name:        Mine"), "{show}");
    assert!(show.contains("description: local"), "{show}");
    assert!(show.contains("tags:        x, y"), "{show}");
    assert!(show.contains("included:    2"), "{show}");
    let json: serde_json::Value =
        serde_json::from_str(&run(&dir, &["segment", "show", "s.g1", "--json"]).ok()).unwrap();
    assert_eq!(json["tags"], serde_json::json!(["x", "y"]));
    // Partial set keeps the rest; membership untouched.
    run(&dir, &["segment", "set", "s.g1", "--clear-tags"]).ok();
    let json: serde_json::Value =
        serde_json::from_str(&run(&dir, &["segment", "show", "s.g1", "--json"]).ok()).unwrap();
    assert_eq!(json["name"], "Mine");
    assert_eq!(json["tags"], serde_json::json!([]));
    assert_eq!(json["included"], 2);
    let segments = run(&dir, &["segments"]).ok();
    assert!(segments.contains("Mine"), "{segments}");
    // Unknown segments.
    run(&dir, &["segment", "show", "nope.g1"]).fails(1);
    run(&dir, &["segment", "set", "nope.g1", "--name", "n"]).fails(1);
    run(&dir, &["segment", "set", "s.g1"]).fails(2);
    run(
        &dir,
        &[
            "segment", "set", "new.g1", "--name", "Fresh", "--create", "--kind", "org",
        ],
    )
    .ok();
    assert!(run(&dir, &["segment", "show", "new.g1"])
        .ok()
        .contains("kind:        org"));
    // Delete.
    run(&dir, &["segment", "delete", "s.g1"]).ok();
    assert_eq!(check(&dir, "s.g1", "a"), "unknown");
    run(&dir, &["segment", "delete", "s.g1"]).fails(1);
}

#[test]
fn meta_and_mark_synced() {
    let (_tmp, dir) = new_store();
    let text = run(&dir, &["meta"]).ok();
    assert!(text.contains("never"), "{text}");
    run(&dir, &["mark-synced", "--at", "1700000000000"]).ok();
    let text = run(&dir, &["meta"]).ok();
    assert!(
        text.contains("1700000000000 (2023-11-14T22:13:20.000Z)"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(&dir, &["meta", "--json"]).ok()).unwrap();
    assert_eq!(json["synchronized_on"], 1_700_000_000_000u64);
    assert!(json["age_ms"].as_u64().unwrap() > 0);
    assert_eq!(json["cursor"], "");
    let before = segstore_now_ms();
    run(&dir, &["mark-synced"]).ok();
    let json: serde_json::Value =
        serde_json::from_str(&run(&dir, &["meta", "--json"]).ok()).unwrap();
    assert!(json["synchronized_on"].as_u64().unwrap() >= before);
    run(&dir, &["mark-synced", "--at", "soon"]).fails(2);

    // A synchronized_on in the future (another host's clock ahead): a negative age, not 0.
    let ahead = segstore_now_ms() + 3_600_000;
    run(&dir, &["mark-synced", "--at", &ahead.to_string()]).ok();
    let json: serde_json::Value =
        serde_json::from_str(&run(&dir, &["meta", "--json"]).ok()).unwrap();
    let age = json["age_ms"].as_i64().unwrap();
    assert!(
        (-3_600_000..-3_000_000).contains(&age),
        "age_ms {age} for a time an hour ahead"
    );
    let text = run(&dir, &["meta"]).ok();
    assert!(text.contains("in the future"), "{text}");
}

// ------------------------------------------------------------------------------------------
// compact, verify, stats

#[test]
fn compact_verify_stats() {
    let (tmp, dir) = new_store();
    let keys: String = (0..5_000).map(|i| format!("user-{i}\n")).collect();
    let f = write_file(tmp.path(), "k.txt", keys.as_bytes());
    run(&dir, &["import", "--segment", "s.g1", "--hash-keys", &f]).ok();
    run_stdin(
        &dir,
        &["apply", "-"],
        br#"{"segment": "s.g1", "included": {"add": ["extra"]}}"#,
    )
    .ok();
    let stats: serde_json::Value =
        serde_json::from_str(&run(&dir, &["stats", "--json"]).ok()).unwrap();
    assert_eq!(stats["live_keys"], 5_001);
    assert!(stats["store_bytes_per_key"].as_f64().unwrap() > 0.0);
    assert!(stats["log_records"].as_u64().unwrap() >= 1);
    let report = run(&dir, &["compact"]).ok();
    assert!(
        report.contains("before:") && report.contains("after:"),
        "{report}"
    );
    assert_eq!(run(&dir, &["verify"]).ok(), "ok\n");
    let stats: serde_json::Value =
        serde_json::from_str(&run(&dir, &["stats", "--json"]).ok()).unwrap();
    assert_eq!(stats["table_keys"], 5_001);
    assert!(stats["bytes_per_key"].as_f64().unwrap() > 0.0);
    assert!(stats["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["kind"] == "table"));
    let text = run(&dir, &["stats"]).ok();
    assert!(
        text.contains("bytes/key:") && text.contains("log records:"),
        "{text}"
    );
    assert_eq!(check(&dir, "s.g1", "extra"), "included");

    // Damage a table: verify lists the problem and exits 1.
    let table = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sstbl"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&table).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&table, &bytes).unwrap();
    let out = run(&dir, &["verify"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let name = table.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("problem: ") && l.contains(&name)),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.starts_with("error: verify found"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_damaged_last_log_record_is_refused_until_repair() {
    let (_tmp, dir) = new_store();
    for key in ["a", "b"] {
        let line = format!(r#"{{"segment": "s.g1", "included": {{"add": ["{key}"]}}}}"#);
        run_stdin(&dir, &["apply", "-"], line.as_bytes()).ok();
    }
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seglog"))
        .unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    let n = bytes.len();
    bytes[n - 8] ^= 0x04; // inside the last record's payload
    std::fs::write(&log, &bytes).unwrap();
    let name = log.file_name().unwrap().to_string_lossy().into_owned();

    let out = run(&dir, &["verify"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains(&name), "{}", out.stdout);
    let err = run(&dir, &["mark-synced", "--at", "1"]).fails(1);
    assert!(err.contains(&name) && err.contains("--repair"), "{err}");
    assert_eq!(std::fs::read(&log).unwrap(), bytes, "nothing truncated");

    run(&dir, &["mark-synced", "--at", "1", "--repair"]).ok();
    assert_eq!(run(&dir, &["verify"]).ok(), "ok\n");
    assert_eq!(check(&dir, "s.g1", "a"), "included");
    assert_eq!(check(&dir, "s.g1", "b"), "unknown");
    let help = run(&dir, &["compact", "--help"]).ok();
    assert!(help.contains("--repair"), "{help}");
}

#[test]
fn damaged_files_never_panic() {
    let (tmp, dir) = new_store();
    let keys: String = (0..3_000).map(|i| format!("user-{i}\n")).collect();
    let f = write_file(tmp.path(), "k.txt", keys.as_bytes());
    run(&dir, &["import", "--segment", "s.g1", &f]).ok();
    run(&dir, &["import", "--segment", "h.g1", "--hash-keys", &f]).ok();
    run_stdin(
        &dir,
        &["apply", "-"],
        br#"{"segment": "s.g1", "included": {"add": ["x"]}}"#,
    )
    .ok();
    let pristine: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "LOCK")
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let commands: [&[&str]; 8] = [
        &["check", "s.g1", "user-1"],
        &["membership", "user-1"],
        &["export", "s.g1"],
        &["segments"],
        &["meta"],
        &["stats"],
        &["verify"],
        &["compact"],
    ];
    for (path, bytes) in &pristine {
        let damages: Vec<Vec<u8>> = vec![
            Vec::new(),
            bytes[..bytes.len() / 2].to_vec(),
            bytes
                .iter()
                .enumerate()
                .map(|(i, b)| if i % 7 == 3 { b ^ 0xA5 } else { *b })
                .collect(),
        ];
        for damaged in damages {
            // Restore everything, then damage one file.
            for (p, b) in &pristine {
                std::fs::write(p, b).unwrap();
            }
            std::fs::write(path, &damaged).unwrap();
            for args in commands {
                let out = run(&dir, args); // asserts no panic and no signal
                assert!(
                    out.code == 0 || out.code == 1,
                    "{args:?} on {path:?}: {}",
                    out.stderr
                );
                if out.code == 1 {
                    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// the writer lock

#[test]
fn reads_work_beside_a_writer_and_writes_fail_fast() {
    let (tmp, dir) = new_store();
    run_stdin(
        &dir,
        &["apply", "-"],
        br#"{"segment": "s.g1", "included": {"add": ["a"]}}"#,
    )
    .ok();
    let writer = Store::open(&dir, Options::default()).unwrap();
    writer
        .write(segstore::Batch::new().add("s.g1", segstore::List::Included, "b"))
        .unwrap();
    assert_eq!(check(&dir, "s.g1", "a"), "included");
    assert_eq!(check(&dir, "s.g1", "b"), "included");
    assert_eq!(run(&dir, &["export", "s.g1"]).ok(), "a\nb\n");
    run(&dir, &["segments"]).ok();
    run(&dir, &["segment", "show", "s.g1"]).ok();
    run(&dir, &["membership", "a"]).ok();
    run(&dir, &["meta"]).ok();
    run(&dir, &["stats"]).ok();
    assert_eq!(run(&dir, &["verify"]).ok(), "ok\n");

    let f = write_file(tmp.path(), "k.txt", b"z\n");
    let writing: [&[&str]; 7] = [
        &["apply", &f],
        &["import", "--segment", "s.g1", &f],
        &["compact"],
        &["mark-synced"],
        &["segment", "set", "s.g1", "--name", "n"],
        &["segment", "delete", "s.g1"],
        &["init"],
    ];
    for args in writing {
        let started = Instant::now();
        let err = run(&dir, args).fails(1);
        assert!(err.contains("locked"), "{args:?}: {err}");
        assert!(
            started.elapsed().as_secs() < 5,
            "{args:?} did not fail fast"
        );
    }
    drop(writer);
    run(&dir, &["apply", &f]).fails(1); // `z` is not JSON: the lock is free again
    run(&dir, &["mark-synced"]).ok();
}

// ------------------------------------------------------------------------------------------
// demo

#[test]
fn demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo-store");
    let out = run(&dir, &["demo"]).ok();
    assert!(out.contains("\nok\n"), "{out}");
    assert!(out.contains("(exit code 3)"), "{out}");
    assert!(
        out.contains("{\"amplitude-coh-demo.g1\":true,\"beta-users.g1\":true,\"vip.g1\":true}"),
        "{out}"
    );
    // The store is kept when --dir is given.
    assert_eq!(run(&dir, &["verify"]).ok(), "ok\n");
    assert!(run(&dir, &["segments"]).ok().contains("Beta users"));
    // Without --dir it uses a temporary directory (and ignores SEGSTORE_DIR).
    let mut cmd = bin();
    cmd.env("SEGSTORE_DIR", &dir).arg("demo");
    assert!(exec(cmd, None).ok().contains("temporary directory"));
}

/// A damaged table: the default open refuses the store; `--verify-on-read` opens it, answers
/// the keys of intact blocks and fails (exit 1, one line naming the block) for a key whose
/// block is damaged, never answering wrong.
#[test]
fn verify_on_read_opens_a_damaged_store_and_fails_only_what_reads_the_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hashes = damaged_store::create(dir);

    let refused = run(dir, &["check", "big.g1", &hashes[0]]).fails(1);
    assert!(refused.contains("checksum"), "{refused}");
    let (mut answered, mut failed) = (0, 0);
    // Every 40th key: a few per 16 KiB block of codes (about 500 codes a block).
    for h in hashes.iter().step_by(40) {
        let out = run(dir, &["--verify-on-read", "check", "big.g1", h]);
        // Mapped for huge folios (no read ahead of the block), the same key gets the same
        // outcome: the block is still checked before it answers.
        let huge = run(
            dir,
            &["--verify-on-read", "--huge-folios", "check", "big.g1", h],
        );
        assert_eq!(
            (huge.code, huge.stdout.trim()),
            (out.code, out.stdout.trim()),
            "{h}"
        );
        if out.code == 0 {
            assert_eq!(out.stdout.trim(), "included", "{h}");
            answered += 1;
        } else {
            let err = out.fails(1);
            assert!(err.contains("does not match its checksum"), "{err}");
            failed += 1;
        }
    }
    assert!(
        failed > 0 && answered > failed,
        "{answered} answered, {failed} failed"
    );
    // The default open still refuses the damaged store with huge folios.
    let refused = run(dir, &["--huge-folios", "check", "big.g1", &hashes[0]]).fails(1);
    assert!(refused.contains("checksum"), "{refused}");
}
