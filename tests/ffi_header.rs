//! `include/segstore.h` says exactly what `src/ffi.rs` exports: the same functions with the
//! same parameter and return types, the same constants, the same struct fields in the same
//! order. Both files are parsed here (the header is hand-written, so it is the one that
//! drifts); a mismatch names the item and shows both sides.

use std::collections::BTreeMap;
use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Collapses runs of whitespace and puts one space before each `*` and none after.
fn normalize_c_type(text: &str) -> String {
    let spaced = text.replace('*', " * ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    words.join(" ").replace("* *", "**").replace(" * ", " *")
}

/// `SegstoreMembershipEntry` → `segstore_membership_entry`.
fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The C spelling of a Rust FFI type.
fn c_type_of(rust: &str) -> String {
    let rust = rust.trim();
    let c = if let Some(rest) = rust.strip_prefix("*const ") {
        format!("const {} *", c_type_of(rest))
    } else if let Some(rest) = rust.strip_prefix("*mut ") {
        format!("{} *", c_type_of(rest))
    } else {
        match rust {
            "c_char" => "char".to_owned(),
            "i32" => "int32_t".to_owned(),
            "u64" => "uint64_t".to_owned(),
            "u32" => "uint32_t".to_owned(),
            "usize" => "size_t".to_owned(),
            "bool" => "bool".to_owned(),
            "" | "()" => "void".to_owned(),
            name if name.starts_with("Segstore") => snake_case(name),
            other => panic!("no C spelling known for the Rust type {other:?}"),
        }
    };
    normalize_c_type(&c)
}

/// A function's signature: return type, then (parameter name, type) pairs, all in C terms.
type Signature = (String, Vec<(String, String)>);

fn strip_c_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        match rest[start..].find("*/") {
            Some(end) => rest = &rest[start + end + 2..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits `const char *dir` into (`dir`, `const char *`).
fn split_c_declarator(decl: &str) -> (String, String) {
    let decl = normalize_c_type(decl);
    let name_start = decl
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let (ty, name) = decl.split_at(name_start);
    (name.to_owned(), normalize_c_type(ty))
}

struct Header {
    functions: BTreeMap<String, Signature>,
    constants: BTreeMap<String, String>,
    structs: BTreeMap<String, Vec<(String, String)>>,
    opaque: Vec<String>,
}

fn parse_header(text: &str) -> Header {
    let mut constants = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["#define", name, value] = words.as_slice() {
            constants.insert((*name).to_owned(), (*value).to_owned());
        }
    }
    let code: String = strip_c_comments(text)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut functions = BTreeMap::new();
    let mut structs = BTreeMap::new();
    let mut opaque = Vec::new();
    let mut rest = code.as_str();
    while let Some(end) = rest.find(';') {
        let mut statement = rest[..end].trim().to_owned();
        rest = &rest[end + 1..];
        if statement.starts_with("extern \"C\" {") || statement.starts_with('}') {
            statement = statement
                .trim_start_matches("extern \"C\" {")
                .trim_start_matches('}')
                .trim()
                .to_owned();
        }
        if statement.is_empty() {
            continue;
        }
        if let Some(body) = statement.strip_prefix("typedef struct") {
            if let Some(open) = body.find('{') {
                // A struct with fields: read up to its closing brace.
                let name = body[..open].trim().to_owned();
                let mut fields_text = body[open + 1..].to_owned();
                let mut fields = Vec::new();
                loop {
                    if let Some(close) = fields_text.find('}') {
                        let before = fields_text[..close].trim().to_owned();
                        if !before.is_empty() {
                            fields.push(split_c_declarator(&before));
                        }
                        break;
                    }
                    fields.push(split_c_declarator(&fields_text));
                    let next = rest.find(';').expect("unterminated struct");
                    fields_text = rest[..next].to_owned();
                    rest = &rest[next + 1..];
                }
                structs.insert(name, fields);
            } else {
                let words: Vec<&str> = body.split_whitespace().collect();
                opaque.push(words.first().copied().unwrap_or_default().to_owned());
            }
            continue;
        }
        let open = statement.find('(').expect("a prototype");
        let close = statement.rfind(')').expect("a prototype");
        let (name, ret) = split_c_declarator(&statement[..open]);
        let params_text = statement[open + 1..close].trim();
        let params = if params_text == "void" {
            Vec::new()
        } else {
            params_text.split(',').map(split_c_declarator).collect()
        };
        functions.insert(name, (ret, params));
    }
    Header {
        functions,
        constants,
        structs,
        opaque,
    }
}

struct Module {
    functions: BTreeMap<String, Signature>,
    constants: BTreeMap<String, String>,
    structs: BTreeMap<String, Vec<(String, String)>>,
    handles: Vec<String>,
}

fn parse_module(text: &str) -> Module {
    let mut functions = BTreeMap::new();
    let mut constants = BTreeMap::new();
    let mut structs = BTreeMap::new();
    let mut handles = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line == "#[no_mangle]" {
            // The signature runs from the next line to the `{` that opens the body.
            let mut signature = String::new();
            i += 1;
            while i < lines.len() && !signature.contains('{') {
                signature.push_str(lines[i].trim());
                signature.push(' ');
                i += 1;
            }
            let signature = &signature[..signature.find('{').unwrap_or(signature.len())];
            let after_fn = &signature[signature.find("fn ").expect("an fn") + 3..];
            let open = after_fn.find('(').unwrap();
            let close = after_fn.rfind(')').unwrap();
            let name = after_fn[..open].trim().to_owned();
            let params = after_fn[open + 1..close]
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (n, t) = p.split_once(':').expect("name: type");
                    (n.trim().to_owned(), c_type_of(t))
                })
                .collect();
            let ret = after_fn[close + 1..]
                .trim()
                .strip_prefix("->")
                .unwrap_or("");
            functions.insert(name, (c_type_of(ret), params));
            continue;
        }
        if let Some(rest) = line.strip_prefix("pub const ") {
            let (name, value) = rest.split_once(':').unwrap();
            let value = value
                .split_once('=')
                .unwrap()
                .1
                .trim()
                .trim_end_matches(';');
            constants.insert(name.trim().to_owned(), value.to_owned());
        }
        if line == "#[repr(C)]" {
            // Skip attributes to the struct line; a private struct is no part of the ABI.
            while i < lines.len() && !lines[i].trim_start().starts_with("pub struct ") {
                if lines[i].trim_start().starts_with("struct ") {
                    break;
                }
                i += 1;
            }
            let Some(head) = lines
                .get(i)
                .and_then(|l| l.trim().strip_prefix("pub struct "))
            else {
                i += 1;
                continue;
            };
            let name = head.trim_end_matches('{').trim();
            let mut fields = Vec::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "}" {
                if let Some(field) = lines[i].trim().strip_prefix("pub ") {
                    let (n, t) = field.split_once(':').unwrap();
                    fields.push((n.trim().to_owned(), c_type_of(t.trim_end_matches(','))));
                }
                i += 1;
            }
            structs.insert(snake_case(name), fields);
        } else if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.trim_end_matches('{').trim();
            handles.push(snake_case(name));
        }
        i += 1;
    }
    Module {
        functions,
        constants,
        structs,
        handles,
    }
}

#[test]
fn the_header_matches_the_exported_functions_constants_and_structs() {
    let header = parse_header(&read("include/segstore.h"));
    let module = parse_module(&read("src/ffi.rs"));

    assert!(
        module.functions.len() >= 7,
        "parsed too few functions from src/ffi.rs: {:?}",
        module.functions.keys()
    );
    assert_eq!(
        header.functions, module.functions,
        "function prototypes differ (left: include/segstore.h, right: src/ffi.rs)"
    );
    assert_eq!(
        header.constants, module.constants,
        "constants differ (left: include/segstore.h, right: src/ffi.rs)"
    );
    assert_eq!(
        header.structs, module.structs,
        "struct layouts differ (left: include/segstore.h, right: src/ffi.rs)"
    );
    assert_eq!(
        header.opaque, module.handles,
        "opaque handle types differ (left: include/segstore.h, right: src/ffi.rs)"
    );
}

#[test]
fn the_parsers_see_a_changed_prototype() {
    let header = read("include/segstore.h");
    let changed = header.replace(
        "int32_t segstore_check(const segstore_reader *reader, const char *segment, const char *key);",
        "int32_t segstore_check(const segstore_reader *reader, const char *key);",
    );
    assert_ne!(header, changed, "the prototype to change was not found");
    let module = parse_module(&read("src/ffi.rs"));
    assert_ne!(parse_header(&changed).functions, module.functions);
}
