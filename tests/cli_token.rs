//! End-to-end tests of `segstore token create|list|revoke`, through the real binary.
#![cfg(feature = "cli")]

mod cli_support;

use segstore::serve::access::{default_path, Role, TokenStore};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use tempfile::TempDir;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn segstore(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut cmd = cli_support::segstore();
    cmd.arg("--dir").arg(dir).args(args);
    let Output {
        status,
        stdout,
        stderr,
    } = cli_support::run(cmd, stdin);
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    fn fails(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
        if code == 1 {
            assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
            assert_eq!(self.stderr.lines().count(), 1, "{}", self.stderr);
        }
        self
    }
}

/// A temporary directory holding an initialized store at `store`.
fn store() -> (TempDir, std::path::PathBuf) {
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path().join("store");
    segstore(&dir, &["init"], None).ok();
    (tmp, dir)
}

fn is_token(text: &str) -> bool {
    text.strip_prefix("sst-").is_some_and(|body| {
        body.len() == 43
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[test]
fn create_prints_the_token_alone_on_one_line() {
    let (_tmp, dir) = store();
    let run = segstore(
        &dir,
        &["token", "create", "--name", "census", "--role", "writer"],
        None,
    )
    .ok();
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(run.stdout.ends_with('\n'));
    let token = run.stdout.trim_end();
    assert!(is_token(token), "{token}");

    let path = default_path(&dir);
    assert_eq!(path, dir.with_file_name("store.tokens"));
    let mode = std::fs::metadata(&path)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!std::fs::read_to_string(&path)
        .expect("read")
        .contains(token));
    // Nothing was put inside the store directory.
    assert!(!dir.join("store.tokens").exists());

    let tokens = TokenStore::load(&path).expect("load");
    let info = tokens
        .authenticate_header(&format!("Bearer {token}"))
        .expect("known token");
    assert_eq!(info.name, "census");
    assert_eq!(info.policy.as_role(), Some(Role::Writer));
}

#[test]
fn list_shows_names_never_tokens() {
    let (_tmp, dir) = store();
    let empty = segstore(&dir, &["token", "list"], None).ok();
    assert!(empty.stdout.contains("(no tokens"), "{}", empty.stdout);
    let writer = segstore(
        &dir,
        &["token", "create", "--name", "hightouch", "--role", "writer"],
        None,
    )
    .ok();
    let reader = segstore(
        &dir,
        &[
            "token",
            "create",
            "--name",
            "dashboards",
            "--role",
            "reader",
        ],
        None,
    )
    .ok();
    let hashes = std::fs::read_to_string(default_path(&dir)).expect("read");

    let list = segstore(&dir, &["token", "list"], None).ok();
    assert!(list.stdout.starts_with("NAME"), "{}", list.stdout);
    assert!(list.stdout.contains("hightouch"));
    assert!(list.stdout.contains("dashboards"));
    assert!(
        list.stdout.contains("createSegment,updateIncluded"),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("role reader"), "{}", list.stdout);
    let json = segstore(&dir, &["token", "list", "--json"], None).ok();
    for shown in [&list.stdout, &json.stdout] {
        for token in [&writer.stdout, &reader.stdout] {
            let token = token.trim_end();
            assert!(!shown.contains(token));
            assert!(!shown.contains(token.trim_start_matches("sst-")));
        }
        assert!(!shown.contains("sha256"));
        for hash in hashes.split('"').filter(|s| s.len() == 64) {
            assert!(!shown.contains(hash));
        }
    }
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let entries = value.as_array().expect("array");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["name"], "hightouch");
    assert_eq!(entries[0]["role"], "writer");
    assert_eq!(entries[1]["role"], "reader");
    assert!(entries[0]["created_ms"].as_u64().is_some());
    assert_eq!(entries[0]["policy"][0]["effect"], "allow");
}

#[test]
fn revoke_removes_the_token() {
    let (_tmp, dir) = store();
    let token = segstore(
        &dir,
        &["token", "create", "--name", "a", "--role", "admin"],
        None,
    )
    .ok()
    .stdout;
    segstore(
        &dir,
        &["token", "create", "--name", "b", "--role", "reader"],
        None,
    )
    .ok();
    let tokens = TokenStore::load(&default_path(&dir)).expect("load");
    assert!(tokens.authenticate(token.trim_end()).is_some());

    let run = segstore(&dir, &["token", "revoke", "a"], None).ok();
    assert!(run.stdout.contains("revoked token a"), "{}", run.stdout);
    assert!(tokens.changed_since(&default_path(&dir)));
    let reloaded = TokenStore::load(&default_path(&dir)).expect("load");
    assert!(reloaded.authenticate(token.trim_end()).is_none());
    let list = segstore(&dir, &["token", "list"], None).ok();
    assert!(
        !list.stdout.lines().any(|l| l.starts_with("a ")),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("\nb "), "{}", list.stdout);

    let again = segstore(&dir, &["token", "revoke", "a"], None).fails(1);
    assert!(
        again.stderr.contains("no token named \"a\""),
        "{}",
        again.stderr
    );
}

#[test]
fn a_bad_policy_file_is_a_usage_error_naming_the_pointer() {
    let (tmp, dir) = store();
    let policy = tmp.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"[{"effect": "allow", "actions": ["createSegment"], "resources": ["proj/*:env/*:segment/*"]},
            {"effect": "deny", "actions": ["updateIncluded", "delete"], "resources": ["proj/*:env/*:segment/*"]}]"#,
    )
    .expect("write");
    let run = segstore(
        &dir,
        &[
            "token",
            "create",
            "--name",
            "x",
            "--policy",
            policy.to_str().expect("utf-8"),
        ],
        None,
    )
    .fails(2);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("/1/actions/1"), "{}", run.stderr);
    assert!(run.stderr.contains("unknown action"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        !default_path(&dir).exists(),
        "a refused create writes nothing"
    );

    std::fs::write(
        &policy,
        "[{\"effect\": \"allow\", \"actions\": [\"*\"], \"resource\": []}]",
    )
    .expect("write");
    let run = segstore(
        &dir,
        &[
            "token",
            "create",
            "--name",
            "x",
            "--policy",
            policy.to_str().expect("utf-8"),
        ],
        None,
    )
    .fails(2);
    assert!(run.stderr.contains("/0/resource"), "{}", run.stderr);

    std::fs::write(&policy, "not json").expect("write");
    let run = segstore(
        &dir,
        &[
            "token",
            "create",
            "--name",
            "x",
            "--policy",
            policy.to_str().expect("utf-8"),
        ],
        None,
    )
    .fails(2);
    assert!(run.stderr.contains("invalid JSON"), "{}", run.stderr);
}

#[test]
fn a_policy_from_stdin_and_an_explicit_token_file() {
    let (tmp, dir) = store();
    let file = tmp.path().join("elsewhere.tokens");
    let file_arg = file.to_str().expect("utf-8");
    let policy = br#"[{"effect": "allow", "actions": ["viewSegment"], "resources": ["proj/*:env/production:segment/beta-*;synced"]}]"#;
    let run = segstore(
        &dir,
        &[
            "token", "create", "--name", "scoped", "--policy", "-", "--tokens", file_arg,
        ],
        Some(policy),
    )
    .ok();
    assert!(is_token(run.stdout.trim_end()));
    assert!(file.exists());
    assert!(!default_path(&dir).exists());
    let list = segstore(&dir, &["token", "list", "--tokens", file_arg], None).ok();
    assert!(
        list.stdout
            .contains("allow viewSegment on proj/*:env/production:segment/beta-*;synced"),
        "{}",
        list.stdout
    );
}

#[test]
fn usage_and_runtime_errors() {
    let (_tmp, dir) = store();
    // Neither or both of --role and --policy.
    segstore(&dir, &["token", "create", "--name", "x"], None).fails(2);
    segstore(
        &dir,
        &[
            "token", "create", "--name", "x", "--role", "writer", "--policy", "p.json",
        ],
        None,
    )
    .fails(2);
    segstore(
        &dir,
        &["token", "create", "--name", "x", "--role", "owner"],
        None,
    )
    .fails(2);
    // A bad name.
    let run = segstore(
        &dir,
        &["token", "create", "--name", "a b", "--role", "writer"],
        None,
    )
    .fails(2);
    assert!(run.stderr.contains("invalid token name"), "{}", run.stderr);
    // A duplicate name.
    segstore(
        &dir,
        &["token", "create", "--name", "x", "--role", "writer"],
        None,
    )
    .ok();
    let run = segstore(
        &dir,
        &["token", "create", "--name", "x", "--role", "reader"],
        None,
    )
    .fails(1);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    // A file others can read is refused, by every command.
    std::fs::set_permissions(default_path(&dir), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let run = segstore(&dir, &["token", "list"], None).fails(1);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    segstore(
        &dir,
        &["token", "create", "--name", "y", "--role", "reader"],
        None,
    )
    .fails(1);
    segstore(&dir, &["token", "revoke", "x"], None).fails(1);
    // A corrupt file is an error, not a panic.
    std::fs::write(default_path(&dir), "{\"version\": 1, \"tokens\": [").expect("write");
    std::fs::set_permissions(default_path(&dir), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let run = segstore(&dir, &["token", "list"], None).fails(1);
    assert!(run.stderr.contains("corrupt"), "{}", run.stderr);
}

#[test]
fn create_without_a_store_warns_on_stderr_only() {
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path().join("not-yet");
    let run = segstore(
        &dir,
        &["token", "create", "--name", "early", "--role", "writer"],
        None,
    )
    .ok();
    assert!(is_token(run.stdout.trim_end()), "{}", run.stdout);
    assert!(run.stderr.starts_with("warning: "), "{}", run.stderr);
    assert!(tmp.path().join("not-yet.tokens").exists());
}
