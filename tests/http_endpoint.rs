//! `segstore serve --http` with a real HTTP client (ureq) on loopback: every partner vector,
//! REST target updates, bulk replace, details, access tokens and their policies, bad input,
//! slow clients, `/status`, `/metrics`, and kill -9 under load. What the server wrote is read
//! back through `ReadOnlyStore` in this process (another process than the server).
#![cfg(feature = "cli")]

mod serve_support;

use segstore::ingest::partner::Tool;
use segstore::{context_hash, Status};
use serde_json::{json, Value};
use serve_support::{reader, Serve};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ENV_ID: &str = "env-under-test";

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

/// A status and its body as JSON (or `Null` when it is not JSON).
struct Answer {
    status: u16,
    body: Value,
}

fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut response = result.unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.post_raw(
            path,
            token,
            "application/json",
            body.to_string().into_bytes(),
        )
    }

    fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", content_type);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        answer(request.send(&body[..]))
    }

    fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        answer(request.call())
    }

    fn get_text(&self, path: &str) -> String {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        response.body_mut().read_to_string().unwrap()
    }

    fn patch(&self, path: &str, token: &str, body: &Value) -> Answer {
        answer(
            self.agent
                .patch(format!("{}{path}", self.base))
                .header("Content-Type", "application/json")
                .header("Authorization", token)
                .send(body.to_string().as_bytes()),
        )
    }

    fn delete(&self, path: &str, token: &str) -> Answer {
        answer(
            self.agent
                .delete(format!("{}{path}", self.base))
                .header("Authorization", token)
                .call(),
        )
    }

    fn put_lines(&self, path: &str, token: &str, body: Vec<u8>) -> Answer {
        answer(
            self.agent
                .put(format!("{}{path}", self.base))
                .header("Content-Type", "text/plain")
                .header("Authorization", token)
                .send(&body[..]),
        )
    }
}

fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_segstore"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run segstore")
}

/// A new token from `segstore token create`.
fn token(dir: &Path, name: &str, role_or_policy: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", name];
    args.extend_from_slice(role_or_policy);
    let out = cli(dir, &args);
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn policy_token(dir: &Path, name: &str, policy: &Value) -> String {
    let file = dir.with_extension(format!("{name}.policy.json"));
    std::fs::write(&file, policy.to_string()).unwrap();
    token(dir, name, &["--policy", file.to_str().unwrap()])
}

/// `serve --http` (and the Redis door, which the helper always opens) on a fresh store.
fn start(dir: &Path, extra: &[&str]) -> (Serve, Http) {
    std::fs::create_dir_all(dir).unwrap();
    let out = cli(dir, &["init"]);
    assert!(out.status.success() || dir.join("MANIFEST").exists());
    let mut args = vec!["--http", "127.0.0.1:0", "--environment-id", ENV_ID];
    args.extend_from_slice(extra);
    let serve = Serve::start(dir, &args);
    let addr = serve.listener("http");
    (
        serve,
        Http {
            base: format!("http://{addr}"),
            agent: agent(),
        },
    )
}

/// An empty store in a new temporary directory (kept while the guard lives), made by the CLI.
fn fresh_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(cli(&dir, &["init"]).status.success());
    (root, dir)
}

fn included(dir: &Path, segment: &str, raw_key: &str) -> bool {
    reader(dir)
        .snapshot()
        .check(segment, context_hash(raw_key).as_bytes())
        .unwrap()
        == Status::Included
}

const SEGMENTS: &str = "/api/v2/segments/default/production";

#[test]
fn every_partner_vector_lands_in_the_store() {
    let root = tempfile::tempdir().unwrap();
    let vectors: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string("tests/data/partner-sync-examples.json").unwrap(),
    )
    .unwrap();
    // One server per client-side ID the vectors name: each body is routed by its own.
    let mut by_env: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for v in vectors {
        let tool = tool_of(&v);
        let id = tool
            .environment_id(&v["body"])
            .expect("the vector names an environment")
            .to_owned();
        by_env.entry(id).or_default().push(v);
    }
    let mut posted = 0;
    for (i, (id, vectors)) in by_env.iter().enumerate() {
        let dir = root.path().join(format!("store{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(cli(&dir, &["init"]).status.success());
        let writer = token(&dir, "partner", &["--role", "writer"]);
        let serve = Serve::start(&dir, &["--http", "127.0.0.1:0", "--environment-id", id]);
        let http = Http {
            base: format!("http://{}", serve.listener("http")),
            agent: agent(),
        };
        let mut created_here = std::collections::BTreeSet::new();
        for v in vectors {
            let tool = tool_of(v);
            let expected = &v["expected"];
            let segment = expected["ref"].as_str().unwrap();
            // Keys a vector removes were members before it.
            let removes: Vec<&str> = expected["remove"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if !removes.is_empty() {
                let seed = json!({"included": {"add": removes}});
                let key = segment.trim_end_matches(".g1");
                let r = http.post(
                    &format!("{SEGMENTS}/{key}/contexts"),
                    Some(&format!("Bearer {writer}")),
                    &seed,
                );
                assert_eq!(r.status, 204, "{:?}", r.body);
            }
            let r = http.post(
                &format!("/api/v2/segment-targets/{}", tool.integration_key()),
                Some(&writer),
                &v["body"],
            );
            assert_eq!(r.status, 204, "{} {:?}", tool.cli_name(), r.body);
            posted += 1;
            for key in expected["add"].as_array().unwrap() {
                assert!(
                    included(&dir, segment, key.as_str().unwrap()),
                    "{segment} lacks {key}"
                );
            }
            for key in &removes {
                assert!(!included(&dir, segment, key), "{segment} still holds {key}");
            }
            let info = reader(&dir).snapshot().segment(segment).unwrap();
            if removes.is_empty() && created_here.insert(segment.to_owned()) {
                // The sync created the segment, with the body's context kind.
                assert_eq!(
                    info.kind,
                    expected["contextKind"].as_str().unwrap(),
                    "{segment}"
                );
            }
        }
        // A body naming another environment changes nothing here.
        let mut other = vectors[0]["body"].clone();
        let tool = tool_of(&vectors[0]);
        set_pointer(
            &mut other,
            tool.environment_id_path(),
            json!("not-this-environment"),
        );
        let before = reader(&dir).snapshot().last_seq();
        let r = http.post(
            &format!("/api/v2/segment-targets/{}", tool.integration_key()),
            Some(&writer),
            &other,
        );
        assert_eq!(r.status, 404, "{:?}", r.body);
        assert_eq!(reader(&dir).snapshot().last_seq(), before);
        let (status, stderr) = serve.stop();
        assert!(status.success(), "{stderr}");
        assert!(!stderr.contains(&writer), "the token was logged");
    }
    assert_eq!(posted, 11);
}

fn tool_of(vector: &Value) -> Tool {
    let key = vector["expected"]["segmentKey"].as_str().unwrap();
    Tool::ALL
        .into_iter()
        .filter(|t| key.starts_with(&format!("{}-", t.integration_key())))
        .max_by_key(|t| t.integration_key().len())
        .unwrap_or_else(|| panic!("no tool for {key}"))
}

fn set_pointer(value: &mut Value, pointer: &str, new: Value) {
    *value.pointer_mut(pointer).expect("pointer") = new;
}

#[test]
fn tokens_and_policies_decide_who_may_do_what() {
    let (_root, dir) = fresh_store();
    let admin = token(&dir, "admin", &["--role", "admin"]);
    let writer = token(&dir, "writer", &["--role", "writer"]);
    let reader_token = token(&dir, "reader", &["--role", "reader"]);
    let no_create = policy_token(
        &dir,
        "no-create",
        &json!([{"effect": "allow", "actions": ["updateIncluded"], "resources": ["proj/*:env/*:segment/*"]}]),
    );
    let staging_only = policy_token(
        &dir,
        "staging",
        &json!([{"effect": "allow", "actions": ["*"], "resources": ["proj/*:env/staging:segment/*"]}]),
    );
    let vip_only = policy_token(
        &dir,
        "vip",
        &json!([{"effect": "allow", "actions": ["updateIncluded"], "resources": ["proj/*:env/*:segment/*;vip"]}]),
    );
    let denied = policy_token(
        &dir,
        "denied",
        &json!([
            {"effect": "allow", "actions": ["*"], "resources": ["proj/*:env/*:segment/*"]},
            {"effect": "deny", "actions": ["updateIncluded"], "resources": ["proj/*:env/*:segment/beta*"]}
        ]),
    );
    let (serve, http) = start(&dir, &[]);
    let add = |key: &str| json!({"included": {"add": [key]}});
    let path = |segment: &str| format!("{SEGMENTS}/{segment}/users");

    assert_eq!(http.post(&path("beta"), None, &add("u1")).status, 401);
    assert_eq!(
        http.post(&path("beta"), Some("sst-not-a-token"), &add("u1"))
            .status,
        401
    );
    let r = http.post(&path("beta"), Some(&reader_token), &add("u1"));
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.body["code"], "forbidden");
    // Without createSegment: 403 on a new segment, 204 on an existing one.
    assert_eq!(
        http.post(&path("fresh"), Some(&no_create), &add("u1"))
            .status,
        403
    );
    assert!(reader(&dir).snapshot().segment("fresh.g1").is_none());
    assert_eq!(
        http.post(&path("fresh"), Some(&writer), &add("u1")).status,
        204
    );
    assert_eq!(
        http.post(&path("fresh"), Some(&no_create), &add("u2"))
            .status,
        204
    );
    assert!(included(&dir, "fresh.g1", "u2"));
    // The writer role is the synced-segments policy: no excluded lists, no deletes.
    let exclude = json!({"excluded": {"add": ["u3"]}});
    assert_eq!(
        http.post(&path("fresh"), Some(&writer), &exclude).status,
        403
    );
    assert_eq!(
        http.delete(&format!("{SEGMENTS}/fresh"), &writer).status,
        403
    );
    // Scoped to another environment.
    assert_eq!(
        http.post(&path("fresh"), Some(&staging_only), &add("u4"))
            .status,
        403
    );
    // Scoped to segments tagged vip.
    assert_eq!(
        http.post(&path("fresh"), Some(&vip_only), &add("u5"))
            .status,
        403
    );
    let r = http.patch(
        &format!("{SEGMENTS}/fresh"),
        &admin,
        &json!({"tags": ["vip"]}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        http.post(&path("fresh"), Some(&vip_only), &add("u5"))
            .status,
        204
    );
    // Deny beats allow.
    assert_eq!(
        http.post(&path("beta-users"), Some(&denied), &add("u6"))
            .status,
        403
    );
    assert_eq!(
        http.post(&path("gamma"), Some(&denied), &add("u6")).status,
        204
    );
    // Reads need viewSegment; the reader has it, the writer does not.
    assert_eq!(
        http.get(&format!("{SEGMENTS}/fresh"), Some(&reader_token))
            .status,
        200
    );
    assert_eq!(
        http.get(&format!("{SEGMENTS}/fresh"), Some(&writer)).status,
        403
    );
    // A revoked token is refused at once, without a restart.
    let out = cli(&dir, &["token", "revoke", "writer"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        http.post(&path("fresh"), Some(&writer), &add("u7")).status,
        401
    );
    assert!(!included(&dir, "fresh.g1", "u7"));
    let (status, stderr) = serve.stop();
    assert!(status.success(), "{stderr}");
    for secret in [&admin, &writer, &reader_token, &no_create] {
        assert!(!stderr.contains(secret.as_str()), "a token was logged");
    }
}

#[test]
fn details_are_set_by_hand_and_survive_later_syncs() {
    let (_root, dir) = fresh_store();
    let admin = token(&dir, "admin", &["--role", "admin"]);
    let writer = token(&dir, "writer", &["--role", "writer"]);
    let (serve, http) = start(&dir, &[]);
    let body = |id: &str, value: bool| {
        json!({"environmentId": ENV_ID, "batch": [
            {"userId": id, "cohortId": "c1", "cohortName": "From the tool", "cohortUrl": "https://x", "value": value}
        ]})
    };
    assert_eq!(
        http.post(
            "/api/v2/segment-targets/amplitude",
            Some(&writer),
            &body("a", true)
        )
        .status,
        204
    );
    let got = http.get(&format!("{SEGMENTS}/amplitude-c1"), Some(&admin));
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body["name"], "From the tool",
        "a sync that creates a segment names it"
    );
    assert_eq!(got.body["ref"], "amplitude-c1.g1");
    let edit =
        json!({"name": "Power users", "description": "edited by hand", "tags": ["vip", "q4"]});
    let r = http.patch(&format!("{SEGMENTS}/amplitude-c1"), &admin, &edit);
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Later syncs change membership only.
    assert_eq!(
        http.post(
            "/api/v2/segment-targets/amplitude",
            Some(&writer),
            &body("b", true)
        )
        .status,
        204
    );
    assert_eq!(
        http.post(
            "/api/v2/segment-targets/amplitude",
            Some(&writer),
            &body("a", false)
        )
        .status,
        204
    );
    let got = http.get(&format!("{SEGMENTS}/amplitude-c1"), Some(&admin));
    assert_eq!(got.body["name"], "Power users");
    assert_eq!(got.body["description"], "edited by hand");
    assert_eq!(got.body["tags"], json!(["vip", "q4"]));
    assert_eq!(got.body["included"], 1);
    // The key never changes.
    let r = http.patch(
        &format!("{SEGMENTS}/amplitude-c1"),
        &admin,
        &json!({"key": "renamed"}),
    );
    assert_eq!((r.status, r.body["pointer"].as_str()), (400, Some("/key")));
    let list = http.get(SEGMENTS, Some(&admin));
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    // The CLI's read commands work beside the daemon, and see the same.
    let segments = cli(&dir, &["segments"]);
    assert!(segments.status.success());
    let text = String::from_utf8_lossy(&segments.stdout);
    assert!(
        text.contains("amplitude-c1.g1") && text.contains("Power users"),
        "{text}"
    );
    // Delete.
    assert_eq!(
        http.delete(&format!("{SEGMENTS}/amplitude-c1"), &admin)
            .status,
        204
    );
    assert_eq!(
        http.get(&format!("{SEGMENTS}/amplitude-c1"), Some(&admin))
            .status,
        404
    );
    assert!(reader(&dir).snapshot().segments().is_empty());
    // An unknown environment: 404, nothing changed.
    let r = http.post(
        "/api/v2/segments/default/staging/x/users",
        Some(&admin),
        &json!({"included": {"add": ["k"]}}),
    );
    assert_eq!(r.status, 404);
    assert!(reader(&dir).snapshot().segments().is_empty());
    let (status, _) = serve.stop();
    assert!(status.success());
}

#[test]
fn bad_input_is_refused_whole() {
    let (_root, dir) = fresh_store();
    let admin = token(&dir, "admin", &["--role", "admin"]);
    let (serve, http) = start(&dir, &["--http-request-timeout", "2"]);
    let path = format!("{SEGMENTS}/beta/users");
    let r = http.post_raw(
        &path,
        Some(&admin),
        "application/json",
        b"{not json".to_vec(),
    );
    assert_eq!(
        (
            r.status,
            r.body["code"].as_str(),
            r.body["pointer"].as_str()
        ),
        (400, Some("invalid_body"), Some(""))
    );
    let r = http.post(&path, Some(&admin), &json!({"included": {"add": "u1"}}));
    assert_eq!(
        (r.status, r.body["pointer"].as_str()),
        (400, Some("/included/add")),
        "{:?}",
        r.body
    );
    let r = http.post(
        &path,
        Some(&admin),
        &json!({"included": {"add": ["ok", 7]}}),
    );
    assert_eq!(
        (r.status, r.body["pointer"].as_str()),
        (400, Some("/included/add/1")),
        "{:?}",
        r.body
    );
    let r = http.post(&path, Some(&admin), &json!({"included": {}, "extra": 1}));
    assert_eq!(
        (r.status, r.body["pointer"].as_str()),
        (400, Some("/extra"))
    );
    let r = http.post_raw(&path, Some(&admin), "text/plain", b"{}".to_vec());
    assert_eq!(r.status, 415);
    assert_eq!(http.get("/nope", None).status, 404);
    assert_eq!(
        http.post("/api/v2/segment-targets/nobody", Some(&admin), &json!({}))
            .status,
        404
    );
    assert!(
        reader(&dir).snapshot().segments().is_empty(),
        "a refused request changed the store"
    );

    // A 100 MiB body: refused at the limit (16 MiB), never buffered whole.
    let big = format!(
        "{{\"included\": {{\"add\": [\"{}\"]}}}}",
        "x".repeat(100 << 20)
    );
    let r = http
        .agent
        .post(format!("{}{path}", http.base))
        .header("Content-Type", "application/json")
        .header("Authorization", &admin)
        .send(big.as_bytes());
    if let Ok(response) = r {
        assert_eq!(response.status().as_u16(), 413);
    }
    // 1M keys in one body (about 11 MiB): accepted whole.
    let keys: Vec<String> = (0..1_000_000).map(|i| format!("k{i}")).collect();
    let r = http.post(&path, Some(&admin), &json!({"included": {"add": keys}}));
    assert_eq!(r.status, 204, "{:?}", r.body);
    let snapshot = reader(&dir).snapshot();
    assert_eq!(
        snapshot.segment("beta.g1").map(|s| s.included),
        Some(1_000_000)
    );
    assert_eq!(
        snapshot
            .check("beta.g1", context_hash("k999999").as_bytes())
            .unwrap(),
        Status::Included
    );

    // A slow client: headers that never finish, and a body that stops.
    let addr = http.base.trim_start_matches("http://").to_owned();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(
        serve_support::closed_within(&mut slow, Duration::from_secs(15)),
        "slow headers held the connection"
    );
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {admin}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"incl").as_bytes())
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut reply = Vec::new();
    let _ = stalled.read_to_end(&mut reply);
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(
        http.get("/status", None).status,
        200,
        "the server is still up"
    );
    let (status, _) = serve.stop();
    assert!(status.success());
}

#[test]
fn bulk_replace_streams_a_list() {
    let (_root, dir) = fresh_store();
    let admin = token(&dir, "admin", &["--role", "admin"]);
    let (serve, http) = start(&dir, &[]);
    let mut body = Vec::new();
    for i in 0..300_000 {
        body.extend_from_slice(format!("user-{i}\r\n").as_bytes());
    }
    body.extend_from_slice(b"user-0\nlast-without-newline");
    let r = http.put_lines(&format!("{SEGMENTS}/bulk/targets/included"), &admin, body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["keys"], 300_001);
    assert_eq!(r.body["keysRead"], 300_002);
    assert!(included(&dir, "bulk.g1", "user-299999"));
    assert!(included(&dir, "bulk.g1", "last-without-newline"));
    // Replace again, smaller: the list is exactly the new body.
    let r = http.put_lines(
        &format!("{SEGMENTS}/bulk/targets/included"),
        &admin,
        b"only\n".to_vec(),
    );
    assert_eq!(r.body["keys"], 1);
    assert!(!included(&dir, "bulk.g1", "user-1"));
    // A bad line fails the whole replace.
    let mut bad = b"fine\n".to_vec();
    bad.extend_from_slice(&[0xff, 0xfe, b'\n']);
    let r = http.put_lines(&format!("{SEGMENTS}/bulk/targets/included"), &admin, bad);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        included(&dir, "bulk.g1", "only"),
        "a failed replace changed the list"
    );
    let r = http.put_lines(
        &format!("{SEGMENTS}/bulk/targets/sideways"),
        &admin,
        b"k\n".to_vec(),
    );
    assert_eq!(r.status, 404);
    let (status, _) = serve.stop();
    assert!(status.success());
    assert_eq!(segstore::verify(&dir).unwrap(), vec![]);
}

#[test]
fn status_and_metrics() {
    let (_root, dir) = fresh_store();
    let admin = token(&dir, "admin", &["--role", "admin"]);
    let (serve, http) = start(&dir, &[]);
    let status = http.get("/status", None);
    assert_eq!(status.body["status"], "degraded", "never synced is stale");
    let env = &status.body["environments"][ENV_ID]["bigSegmentStatus"];
    assert_eq!(
        (
            env["available"].as_bool(),
            env["potentiallyStale"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert!(env["lastSynchronizedOn"].is_null());
    // Mark synced over the Redis door, then the status is healthy.
    let mut redis = serve.conn();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let () = redis::cmd("SET")
        .arg("launchdarkly:big_segments_synchronized_on")
        .arg(now)
        .query(&mut redis)
        .unwrap();
    let status = http.get("/status", None);
    assert_eq!(status.body["status"], "healthy", "{:?}", status.body);
    assert_eq!(
        status.body["environments"][ENV_ID]["bigSegmentStatus"]["lastSynchronizedOn"],
        now
    );
    assert_eq!(
        http.post(
            &format!("{SEGMENTS}/m/users"),
            Some(&admin),
            &json!({"included": {"add": ["a", "b"]}})
        )
        .status,
        204
    );
    let _: Vec<String> = redis::cmd("SMEMBERS")
        .arg("launchdarkly:big_segment_include:x")
        .query(&mut redis)
        .unwrap();
    assert_eq!(
        http.post(&format!("{SEGMENTS}/m/users"), None, &json!({}))
            .status,
        401
    );
    let text = http.get_text("/metrics");
    for line in [
        "segstore_http_requests_total{route=\"POST /api/v2/segments/{project}/{environment}/{segment}/users\",status=\"204\"} 1",
        "segstore_http_requests_total{route=\"POST /api/v2/segments/{project}/{environment}/{segment}/users\",status=\"401\"} 1",
        "segstore_key_ops_applied_total 2",
        "segstore_batch_seconds_count 1",
        "segstore_redis_lookups_total 1",
        "segstore_segments{environment=\"env-under-test\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert!(text.contains("segstore_sync_age_seconds{environment=\"env-under-test\"}"));
    assert!(text.contains("segstore_store_bytes{environment=\"env-under-test\"}"));
    let (status, _) = serve.stop();
    assert!(status.success());
}

/// Kill -9 while writers post: every key of every 2xx request is there after a restart.
#[test]
fn kill_9_under_load_keeps_every_acknowledged_request() {
    let (_root, dir) = fresh_store();
    let admin = token(&dir, "admin", &["--role", "admin"]);
    let mut acknowledged: Vec<(usize, usize)> = Vec::new();
    for round in 0..3 {
        let (serve, http) = start(&dir, &[]);
        let base = http.base.clone();
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let base = base.clone();
                let admin = admin.clone();
                std::thread::spawn(move || {
                    let http = Http {
                        base,
                        agent: agent(),
                    };
                    let mut done = Vec::new();
                    for n in 0.. {
                        let keys: Vec<String> = (0..100)
                            .map(|k| format!("r{round}-w{w}-n{n}-k{k}"))
                            .collect();
                        let result = http
                            .agent
                            .post(format!("{}{SEGMENTS}/load/users", http.base))
                            .header("Content-Type", "application/json")
                            .header("Authorization", &admin)
                            .send(json!({"included": {"add": keys}}).to_string().as_bytes());
                        match result {
                            Ok(r) if r.status().as_u16() == 204 => done.push((w + 10 * round, n)),
                            _ => break,
                        }
                    }
                    done
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 150 * round as u64));
        serve.kill();
        for writer in writers {
            acknowledged.extend(writer.join().unwrap());
        }
    }
    assert!(
        acknowledged.len() > 10,
        "only {} requests were answered",
        acknowledged.len()
    );
    let snapshot = reader(&dir).snapshot();
    for (id, n) in &acknowledged {
        let (round, w) = (id / 10, id % 10);
        for k in [0, 57, 99] {
            let key = format!("r{round}-w{w}-n{n}-k{k}");
            assert_eq!(
                snapshot
                    .check("load.g1", context_hash(&key).as_bytes())
                    .unwrap(),
                Status::Included,
                "an acknowledged key {key} was lost"
            );
        }
    }
    assert_eq!(segstore::verify(&dir).unwrap(), vec![]);
}

/// `serve --config FILE`: two environments, each its own store, one token file, a Redis door
/// on one of them; a request reaches only the environment it names.
#[test]
fn a_config_file_serves_several_environments() {
    let root = tempfile::tempdir().unwrap();
    let (prod, staging) = (root.path().join("prod"), root.path().join("staging"));
    let tokens = root.path().join("tokens");
    let out = Command::new(env!("CARGO_BIN_EXE_segstore"))
        .args([
            "--dir",
            prod.to_str().unwrap(),
            "token",
            "create",
            "--name",
            "ops",
            "--role",
            "admin",
        ])
        .arg("--tokens")
        .arg(&tokens)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let redis_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = root.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[http]
listen = ["127.0.0.1:0"]
tokens = "{tokens}"

[limits]
rate_limit = 1000

[[environment]]
client_side_id = "client-prod"
dir = "{prod}"
redis = ["127.0.0.1:{redis_port}"]
init = true

[[environment]]
client_side_id = "client-staging"
environment_key = "staging"
dir = "{staging}"
keys = "hashed"
init = true
"#,
            tokens = tokens.display(),
            prod = prod.display(),
            staging = staging.display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_segstore"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("SEGSTORE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut http_addr = None;
    for _ in 0..2 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
        if let Some(addr) = line.trim().strip_prefix("serve: http listening on ") {
            http_addr = Some(addr.to_owned());
        }
    }
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    let http = Http {
        base: format!("http://{}", http_addr.expect("an http listener")),
        agent: agent(),
    };
    let hash = context_hash("u1");
    let body = |id: &str| {
        json!({"environmentId": id, "batch": [
            {"userId": "u1", "cohortId": "c9", "cohortName": "n", "cohortUrl": "u", "value": true}
        ]})
    };
    assert_eq!(
        http.post(
            "/api/v2/segment-targets/amplitude",
            Some(&admin),
            &body("client-prod")
        )
        .status,
        204
    );
    // Staging takes hashed keys as they come.
    let r = http.post(
        "/api/v2/segments/default/staging/direct/users",
        Some(&admin),
        &json!({"included": {"add": [hash]}}),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(
        http.post(
            "/api/v2/segment-targets/amplitude",
            Some(&admin),
            &body("client-elsewhere")
        )
        .status,
        404
    );
    let mut redis = serve_support::connect(&format!("redis://127.0.0.1:{redis_port}/"));
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("launchdarkly:big_segment_include:{hash}"))
        .query(&mut redis)
        .unwrap();
    assert_eq!(
        members,
        ["amplitude-c9.g1"],
        "the Redis door serves the prod store only"
    );
    let status = http.get("/status", None);
    let envs = status.body["environments"].as_object().map(|m| m.len());
    assert_eq!(envs, Some(2), "{:?}", status.body);
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(
        reader(&prod)
            .snapshot()
            .check("amplitude-c9.g1", hash.as_bytes())
            .unwrap(),
        Status::Included
    );
    assert!(reader(&prod).snapshot().segment("direct.g1").is_none());
    assert_eq!(
        reader(&staging)
            .snapshot()
            .check("direct.g1", hash.as_bytes())
            .unwrap(),
        Status::Included
    );
    assert!(reader(&staging).snapshot().segments().len() == 1);

    // A bad file is a usage error naming it.
    std::fs::write(
        &config,
        "[[environment]]\nclient_side_id = \"a\"\ndir = \"/x\"\nextra = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_segstore"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("serve.toml"));
}

#[test]
fn a_token_over_its_rate_limit_gets_429_and_others_do_not() {
    let (_root, dir) = fresh_store();
    let first = token(&dir, "first", &["--role", "admin"]);
    let second = token(&dir, "second", &["--role", "admin"]);
    // One request every 100 s (a burst of one): the bucket cannot refill during the test.
    let (serve, http) = start(&dir, &["--http-rate-limit", "0.01"]);
    let add = json!({"included": {"add": ["k"]}});
    let path = format!("{SEGMENTS}/limited/users");
    let statuses: Vec<u16> = (0..3)
        .map(|_| http.post(&path, Some(&first), &add).status)
        .collect();
    assert_eq!(statuses, [204, 429, 429]);
    let limited = http.post(&path, Some(&first), &add);
    assert_eq!(
        (limited.status, limited.body["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(
        http.post(&path, Some(&second), &add).status,
        204,
        "buckets are per token"
    );
    let (status, _) = serve.stop();
    assert!(status.success());
}
