//! Tests for `updates`, `patches`, format names, and no-panic properties of every format.

use super::*;
use crate::change::ListChange;
use crate::keys::Keys;
use proptest::prelude::*;

const USER_KEY_HASH: &str = "CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0=";

fn keys(list: &[&str]) -> Keys {
    list.iter().collect()
}

fn update(line: &str, hash: bool) -> Result<SegmentChange, ParseError> {
    match parse_line(&Format::Updates, line, hash)? {
        Parsed::Changes(mut changes) => {
            assert_eq!(changes.len(), 1);
            Ok(changes.remove(0))
        }
        Parsed::Patches(_) => panic!("updates returned patches"),
    }
}

fn patches(line: &str, hash: bool) -> Result<Vec<Patch>, ParseError> {
    match parse_line(&Format::Patches, line, hash)? {
        Parsed::Patches(patches) => Ok(patches),
        Parsed::Changes(_) => panic!("patches returned changes"),
    }
}

/// The pointer a Field or Key error names.
fn err_path(err: &ParseError) -> &str {
    match err {
        ParseError::Field { path, .. } | ParseError::Key { path, .. } => path,
        other => panic!("expected a located error, got {other:?}"),
    }
}

// ---- format names ---------------------------------------------------------------------------

#[test]
fn format_names_round_trip() {
    let mut n = 0;
    for format in Format::all() {
        assert_eq!(format.to_string().parse::<Format>().unwrap(), format);
        n += 1;
    }
    assert_eq!(n, 10);
    assert_eq!(
        "partner:census".parse::<Format>().unwrap(),
        Format::Partner(partner::Tool::Census)
    );
}

#[test]
fn unknown_formats_and_tools_list_the_valid_ones() {
    let err = "partner:mixpanel".parse::<Format>().unwrap_err();
    assert_eq!(err, ParseError::UnknownTool("mixpanel".into()));
    let message = err.to_string();
    for tool in partner::Tool::ALL {
        assert!(message.contains(tool.cli_name()), "{message}");
    }
    let err = "csv".parse::<Format>().unwrap_err();
    assert_eq!(err, ParseError::UnknownFormat("csv".into()));
    let message = err.to_string();
    assert!(
        message.contains("updates, patches, partner:amplitude"),
        "{message}"
    );
    assert!(message.contains("partner:zeotap"), "{message}");
    assert!("partner:".parse::<Format>().is_err());
    assert!("Updates".parse::<Format>().is_err());
}

// ---- updates --------------------------------------------------------------------------------

#[test]
fn updates_happy_path() {
    let got = update(
        r#"{"segment":"beta.g1","kind":"org","name":"Beta","included":{"add":["a","b"],"remove":["c"]},"excluded":{"add":["d"],"remove":["e","f"]}}"#,
        false,
    )
    .unwrap();
    assert_eq!(
        got,
        SegmentChange {
            segment: "beta.g1".into(),
            kind: Some("org".into()),
            name: Some("Beta".into()),
            included: ListChange {
                add: keys(&["a", "b"]),
                remove: keys(&["c"])
            },
            excluded: ListChange {
                add: keys(&["d"]),
                remove: keys(&["e", "f"])
            },
        }
    );
}

#[test]
fn updates_absent_and_null_fields_are_empty() {
    let minimal = update(r#"{"segment":"s"}"#, false).unwrap();
    assert_eq!(minimal, SegmentChange::new("s"));
    let nulls = update(
        r#"{"segment":"s","kind":null,"name":null,"included":null,"excluded":{"add":null}}"#,
        false,
    )
    .unwrap();
    assert_eq!(nulls, SegmentChange::new("s"));
    let partial = update(r#" {"segment":"s","excluded":{"remove":["x"]}} "#, false).unwrap();
    assert_eq!(partial.excluded.remove, keys(&["x"]));
    assert!(partial.included.is_empty());
}

#[test]
fn updates_hash_keys() {
    let got = update(
        r#"{"segment":"s","included":{"add":["user-key"]},"excluded":{"remove":["user1"]}}"#,
        true,
    )
    .unwrap();
    assert_eq!(got.included.add, keys(&[USER_KEY_HASH]));
    assert_eq!(
        got.excluded.remove,
        keys(&["CgQblGLKpKMbrDVn4Lbm/ZEAeH2yq0M9lvbReMq/zpA="])
    );
    // Without hashing the raw key is kept.
    let got = update(r#"{"segment":"s","included":{"add":["user-key"]}}"#, false).unwrap();
    assert_eq!(got.included.add, keys(&["user-key"]));
}

#[test]
fn updates_key_length_limits() {
    let max = "k".repeat(MAX_KEY_LEN);
    let line = format!(r#"{{"segment":"s","included":{{"add":["{max}"]}}}}"#);
    assert_eq!(
        update(&line, false)
            .unwrap()
            .included
            .add
            .iter()
            .next()
            .unwrap()
            .len(),
        4096
    );

    let long = "k".repeat(MAX_KEY_LEN + 1);
    let line = format!(r#"{{"segment":"s","included":{{"add":["a","{long}"]}}}}"#);
    let err = update(&line, false).unwrap_err();
    assert!(
        matches!(&err, ParseError::Key { path, index: 1, .. } if path == "/included/add/1"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("4097 bytes"), "{message}");
    assert!(message.len() < 200, "the key is truncated: {message}");
    // Hashed, a long raw key is fine: only the 44-byte hash is stored.
    assert_eq!(
        update(&line, true)
            .unwrap()
            .included
            .add
            .iter()
            .nth(1)
            .unwrap()
            .len(),
        44
    );

    for hash in [false, true] {
        let err = update(r#"{"segment":"s","excluded":{"remove":[""]}}"#, hash).unwrap_err();
        assert!(
            matches!(&err, ParseError::Key { path, index: 0, .. } if path == "/excluded/remove/0"),
            "{err:?}"
        );
        assert!(err.to_string().contains("empty key"), "{err}");
    }
}

#[test]
fn updates_malformed() {
    let cases: &[(&str, &str)] = &[
        (r#"{"included":{"add":["a"]}}"#, "/segment"),
        (r#"{"segment":null}"#, "/segment"),
        (r#"{"segment":7}"#, "/segment"),
        (r#"{"segment":""}"#, "/segment"),
        (r#"{"segment":"a\u0000b"}"#, "/segment"),
        (r#"{"segment":"s","kind":""}"#, "/kind"),
        (r#"{"segment":"s","kind":["user"]}"#, "/kind"),
        (r#"{"segment":"s","name":1}"#, "/name"),
        (r#"{"segment":"s","included":[]}"#, "/included"),
        (r#"{"segment":"s","included":{"add":"a"}}"#, "/included/add"),
        (
            r#"{"segment":"s","included":{"add":["a",3]}}"#,
            "/included/add/1",
        ),
        (
            r#"{"segment":"s","excluded":{"remove":[null]}}"#,
            "/excluded/remove/0",
        ),
        (r#"{"segment":"s","inclued":{"add":["a"]}}"#, "/inclued"),
        (r#"{"segment":"s","included":{"ad":["a"]}}"#, "/included/ad"),
        (r#"{"segment":"s","a/b~c":1}"#, "/a~1b~0c"),
        (r#"["s"]"#, ""),
        (r#""s""#, ""),
        ("null", ""),
    ];
    for (line, want) in cases {
        let err = update(line, false).unwrap_err();
        assert_eq!(err_path(&err), *want, "{line}: {err}");
    }
    let err = update(r#"{"segment":"s","inclued":{}}"#, false).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("unknown field"), "{message}");
    assert!(message.contains("/inclued"), "{message}");
}

#[test]
fn bad_json_is_a_json_error_with_a_column() {
    for format in Format::all() {
        for line in ["", "{", r#"{"segment":"s",}"#, "{} {}", "[1,2", "nul"] {
            let err = parse_line(&format, line, false).unwrap_err();
            match &err {
                ParseError::Json(message) => {
                    assert!(message.contains("column"), "{format} {line:?}: {message}")
                }
                other => panic!("{format} {line:?}: {other:?}"),
            }
        }
    }
}

// ---- patches --------------------------------------------------------------------------------

#[test]
fn patches_happy_path() {
    let line = format!(
        r#"{{"environmentId":"env","segmentId":"big.g2","version":"v2","previousVersion":"v1","changes":{{"included":{{"add":["{USER_KEY_HASH}"],"remove":["r"]}},"excluded":{{"add":["x"],"remove":[]}}}}}}"#
    );
    let got = patches(&line, false).unwrap();
    assert_eq!(
        got,
        vec![Patch {
            change: SegmentChange {
                segment: "big.g2".into(),
                kind: None,
                name: None,
                included: ListChange {
                    add: keys(&[USER_KEY_HASH]),
                    remove: keys(&["r"])
                },
                excluded: ListChange {
                    add: keys(&["x"]),
                    remove: Keys::new()
                },
            },
            version: "v2".into(),
            previous_version: "v1".into(),
        }]
    );
    // hash_keys does nothing for patches: their keys are hashes already.
    assert_eq!(patches(&line, true).unwrap(), got);
}

#[test]
fn patches_absent_and_null_fields() {
    let got = patches(r#"{"segmentId":"s","version":""}"#, false).unwrap();
    assert_eq!(
        got,
        vec![Patch {
            change: SegmentChange::new("s"),
            version: String::new(),
            previous_version: String::new(),
        }]
    );
    let got = patches(
        r#"{"segmentId":"s","version":"1","previousVersion":null,"changes":{"included":null,"excluded":{"add":null,"remove":["k"]}}}"#,
        false,
    )
    .unwrap();
    assert_eq!(got[0].previous_version, "");
    assert!(got[0].change.included.is_empty());
    assert_eq!(got[0].change.excluded.remove, keys(&["k"]));
    let got = patches(r#"{"segmentId":"s","version":"1","changes":null}"#, false).unwrap();
    assert!(got[0].change.included.is_empty() && got[0].change.excluded.is_empty());
}

#[test]
fn patches_ignore_unknown_fields() {
    let got = patches(
        r#"{"segmentId":"s","version":"1","newField":{"x":1},"changes":{"included":{"add":["k"],"extra":true},"other":[]}}"#,
        false,
    )
    .unwrap();
    assert_eq!(got[0].change.included.add, keys(&["k"]));
}

#[test]
fn patches_arrays() {
    assert!(patches("[]", false).unwrap().is_empty());
    let got = patches(
        r#"[{"segmentId":"a.g1","version":"","changes":{"included":{"add":["1"]}}},{"segmentId":"b.g1","version":"","previousVersion":""},{"segmentId":"a.g1","version":"7","previousVersion":""}]"#,
        false,
    )
    .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].change.segment, "a.g1");
    assert_eq!(got[0].change.included.add, keys(&["1"]));
    assert_eq!(got[1].change.segment, "b.g1");
    assert_eq!(got[2].version, "7");
}

#[test]
fn patches_malformed() {
    let long_version = "v".repeat(MAX_NAME_LEN + 1);
    let long_key = "k".repeat(MAX_KEY_LEN + 1);
    let cases: Vec<(String, &str)> = vec![
        (r#"{"version":"1"}"#.into(), "/segmentId"),
        (r#"{"segmentId":null,"version":"1"}"#.into(), "/segmentId"),
        (r#"{"segmentId":"","version":"1"}"#.into(), "/segmentId"),
        (r#"{"segmentId":5,"version":"1"}"#.into(), "/segmentId"),
        (r#"{"segmentId":"s"}"#.into(), "/version"),
        (r#"{"segmentId":"s","version":null}"#.into(), "/version"),
        (r#"{"segmentId":"s","version":3}"#.into(), "/version"),
        (
            format!(r#"{{"segmentId":"s","version":"{long_version}"}}"#),
            "/version",
        ),
        (
            r#"{"segmentId":"s","version":"1","previousVersion":0}"#.into(),
            "/previousVersion",
        ),
        (
            r#"{"segmentId":"s","version":"1","changes":[]}"#.into(),
            "/changes",
        ),
        (
            r#"{"segmentId":"s","version":"1","changes":{"included":"k"}}"#.into(),
            "/changes/included",
        ),
        (
            r#"{"segmentId":"s","version":"1","changes":{"excluded":{"add":{}}}}"#.into(),
            "/changes/excluded/add",
        ),
        (
            r#"{"segmentId":"s","version":"1","changes":{"included":{"remove":["a",""]}}}"#.into(),
            "/changes/included/remove/1",
        ),
        (
            format!(
                r#"{{"segmentId":"s","version":"1","changes":{{"included":{{"add":["{long_key}"]}}}}}}"#
            ),
            "/changes/included/add/0",
        ),
        (
            r#"[{"segmentId":"s","version":"1"},{"segmentId":"t"}]"#.into(),
            "/1/version",
        ),
        (r#"[{"segmentId":"s","version":"1"},7]"#.into(), "/1"),
        ("true".into(), ""),
        (r#""patch""#.into(), ""),
    ];
    for (line, want) in &cases {
        let err = patches(line, false).unwrap_err();
        assert_eq!(err_path(&err), *want, "{line:.80}: {err}");
        assert!(err.to_string().len() < 300, "{err}");
    }
}

#[test]
fn messages_say_what_and_where() {
    let err = update(r#"{"segment":"s","included":{"add":[1]}}"#, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid key at /included/add/0 (item 0 of its list): expected a string, found a number"
    );
    let err = update(r#"{"segment":4}"#, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "at /segment: expected a string, found a number"
    );
    let err = update("[]", false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "at the top level: expected an object, found an array"
    );
    assert_eq!(preview("short"), "\"short\"");
    let long: String = "é".repeat(100);
    let p = preview(&long);
    assert!(p.starts_with('"') && p.ends_with("… (200 bytes)"), "{p}");
    assert_eq!(p.chars().filter(|c| *c == 'é').count(), 60);
}

// ---- never panics ---------------------------------------------------------------------------

/// Field names and string values the parsers look for, so that generated documents reach deep.
const VOCAB: &[&str] = &[
    "segment",
    "kind",
    "name",
    "included",
    "excluded",
    "add",
    "remove",
    "environmentId",
    "segmentId",
    "version",
    "previousVersion",
    "changes",
    "batch",
    "userId",
    "user_id",
    "value",
    "cohortId",
    "cohort_id",
    "cohortName",
    "cohort_name",
    "contextKind",
    "context_kind",
    "parameters",
    "heap",
    "data",
    "id",
    "listData",
    "action",
    "members",
    "integration_distinct_id",
    "member_id",
    "tealium_cohort_id",
    "tealium_cohort_name",
    "integration_cohort_id",
    "integration_cohort_name",
    "add_member",
    "remove_member",
    "add_members",
    "remove_members",
    "",
];

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(VOCAB).prop_map(str::to_string),
        2 => "\\PC{0,12}",
        1 => "[\\x00-\\x1f]{1,3}",
        1 => Just("x".repeat(MAX_KEY_LEN + 1)),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_string(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn every_format() -> Vec<Format> {
    Format::all().collect()
}

fn check_output(parsed: &Parsed) {
    let changes: Vec<&SegmentChange> = match parsed {
        Parsed::Changes(changes) => changes.iter().collect(),
        Parsed::Patches(patches) => patches.iter().map(|p| &p.change).collect(),
    };
    for change in changes {
        assert!(validate_ref(&change.segment).is_ok());
        if let Some(kind) = &change.kind {
            assert!(validate_kind(kind).is_ok());
        }
        for list in [&change.included, &change.excluded] {
            for key in list.add.iter().chain(&list.remove) {
                assert!(validate_key(key).is_ok());
            }
        }
    }
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_strings(line in "\\PC{0,64}", hash in any::<bool>()) {
        for format in every_format() {
            if let Ok(parsed) = parse_line(&format, &line, hash) {
                check_output(&parsed);
            }
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes_as_text(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let line = String::from_utf8_lossy(&bytes);
        for format in every_format() {
            let _ = parse_line(&format, &line, false);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_json(value in arb_json(), hash in any::<bool>()) {
        let line = serde_json::to_string(&value).unwrap();
        for format in every_format() {
            if let Ok(parsed) = parse_line(&format, &line, hash) {
                check_output(&parsed);
            }
        }
    }

    #[test]
    fn never_panics_on_mutated_partner_examples(
        vector in 0usize..11,
        pointer_pick in any::<prop::sample::Index>(),
        replacement in arb_json(),
        hash in any::<bool>(),
    ) {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/partner-sync-examples.json"
        ))
        .unwrap();
        let vectors: Value = serde_json::from_str(&text).unwrap();
        let mut body = vectors[vector]["body"].clone();
        let mut pointers = Vec::new();
        collect_pointers(&body, String::new(), &mut pointers);
        let pointer = pointer_pick.get(&pointers).clone();
        if let Some(slot) = body.pointer_mut(&pointer) {
            *slot = replacement;
        }
        let line = serde_json::to_string(&body).unwrap();
        for format in every_format() {
            if let Ok(parsed) = parse_line(&format, &line, hash) {
                check_output(&parsed);
            }
        }
    }
}

fn collect_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj {
                collect_pointers(v, format!("{at}/{}", escape_token(k)), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for format in every_format() {
        // Refused as the wrong shape, or at the parser's depth limit.
        assert!(parse_line(&format, &deep, false).is_err());
        // Where any value may stand, only the depth limit stops it.
        let line = format!(r#"{{"segment": {deep}}}"#);
        assert!(
            matches!(parse_line(&format, &line, false), Err(ParseError::Json(_))),
            "{format}"
        );
    }
}

#[test]
fn duplicate_fields_are_rejected_naming_the_field() {
    let updates: Format = "updates".parse().unwrap();
    let patches: Format = "patches".parse().unwrap();
    let cases = [
        (
            &updates,
            r#"{"segment": "a.g1", "segment": "b.g1"}"#,
            "/segment",
        ),
        (
            &updates,
            r#"{"segment": "a.g1", "included": {"add": ["k"], "add": []}}"#,
            "/included/add",
        ),
        (
            &patches,
            r#"[{"segmentId": "a.g1", "version": "1"}, {"segmentId": "a.g1", "version": "2", "version": "3"}]"#,
            "/1/version",
        ),
        (
            &patches,
            r#"{"segmentId": "a.g1", "version": "1", "changes": {"included": {"add": ["x"]}, "included": {}}}"#,
            "/changes/included",
        ),
        (
            &patches,
            r#"{"segmentId": "a.g1", "version": "1", "we/ird~": 1, "we/ird~": 2}"#,
            "/we~1ird~0",
        ),
    ];
    for (format, line, pointer) in cases {
        match parse_line(format, line, false) {
            Err(ParseError::Field { path, detail }) => {
                assert_eq!(path, pointer, "{line}");
                assert!(detail.contains("duplicate field"), "{detail}");
            }
            other => panic!("{line}: {other:?}"),
        }
    }
    let partner: Format = "partner:segment".parse().unwrap();
    let err = parse_line(&partner, r#"{"type": "identify", "type": "track"}"#, false).unwrap_err();
    assert!(err.to_string().contains("duplicate field"), "{err}");
    // The same field name in different objects is fine.
    let line = r#"{"segment": "a.g1", "included": {"add": ["k"]}, "excluded": {"add": ["j"]}}"#;
    assert!(parse_line(&updates, line, false).is_ok());
}

/// An endless `updates` line: the keys never end.
struct EndlessKeys {
    head: std::io::Cursor<&'static [u8]>,
    next: u64,
    pending: Vec<u8>,
    read: u64,
}

impl std::io::Read for EndlessKeys {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.head.read(out)?;
        if n > 0 {
            self.read += n as u64;
            return Ok(n);
        }
        if self.pending.is_empty() {
            // 1,000-byte keys: few of them, so the parse stays quick.
            self.pending = format!("\"{:0>998}\",", self.next).into_bytes();
            self.next += 1;
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        self.read += n as u64;
        Ok(n)
    }
}

#[test]
fn one_batch_parsing_stops_once_the_keys_cannot_fit_one_write() {
    for (format, head) in [
        (
            "updates",
            &br#"{"segment": "s.g1", "included": {"add": ["#[..],
        ),
        (
            "patches",
            &br#"[{"segmentId": "s.g1", "version": "1", "changes": {"included": {"add": ["#[..],
        ),
    ] {
        let format: Format = format.parse().unwrap();
        let mut endless = EndlessKeys {
            head: std::io::Cursor::new(head),
            next: 0,
            pending: Vec::new(),
            read: 0,
        };
        let err = parse_one_batch_from(&format, std::io::BufReader::new(&mut endless), false)
            .unwrap_err();
        assert!(
            matches!(err, ParseError::TooLarge { limit } if limit == 64 << 20),
            "{format}: {err:?}"
        );
        // It stopped once the keys read passed the limit (each 1,001 input bytes encodes to
        // 1,002), however much input there was.
        let read = endless.read;
        assert!(
            read > 63 << 20 && read < 65 << 20,
            "{format}: read {read} bytes"
        );
    }
    // Without the one-batch limit the same keys parse (here a finite line of them).
    let line = format!(
        r#"{{"segment": "s.g1", "included": {{"add": [{}]}}}}"#,
        (0..3)
            .map(|i| format!("\"k{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(parse_line(&"updates".parse().unwrap(), &line, false).is_ok());
}
