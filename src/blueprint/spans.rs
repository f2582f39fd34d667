//! Byte spans inside a JSON document, for surgical edits of the blueprint.
//!
//! A blueprint is reviewed as a git diff, so devami never re-serializes it: this scanner finds the
//! bytes of the value at a key path ([`PathSeg`]) so that a new value can be spliced in, leaving
//! every other byte as the author wrote it. Keys compare decoded, the last of repeated keys wins
//! (as for serde_json and Python's `json`), and text that is not valid JSON gives `None`, never a
//! panic.

use std::ops::Range;

/// One step of a path into a JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathSeg<'a> {
    /// A member of an object, by its decoded key.
    Key(&'a str),
    /// An element of an array, from 0.
    Index(usize),
}

/// Parses a dotted path with `[n]` indexes (`UXData.Affiliates[0].AffiliateName`) into segments.
///
/// The empty string is the document itself. Returns `None` for an empty key (`a..b`), an
/// unterminated or non-numeric index, or text after an index that is not `.` or `[`.
pub fn parse_path(path: &str) -> Option<Vec<PathSeg<'_>>> {
    let mut segs = Vec::new();
    if path.is_empty() {
        return Some(segs);
    }
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() && (rest.is_empty() || !segs.is_empty()) {
            return None;
        }
        if !key.is_empty() {
            segs.push(PathSeg::Key(key));
        }
        while !rest.is_empty() {
            let close = rest.find(']')?;
            let digits = rest.get(1..close)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            segs.push(PathSeg::Index(digits.parse().ok()?));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return None;
            }
        }
    }
    Some(segs)
}

/// The byte range of the value at `path`, or `None` when the path does not lead to a value.
pub fn value_span(text: &str, path: &[PathSeg]) -> Option<Range<usize>> {
    let b = text.as_bytes();
    let mut start = skip_ws(b, 0);
    for seg in path {
        start = match *seg {
            PathSeg::Key(key) => {
                let (members, _) = object_members(text, start)?;
                members.into_iter().rev().find(|m| key_matches(text, &m.key, key))?.value.start
            }
            PathSeg::Index(n) => array_elements(b, start)?.get(n)?.start,
        };
    }
    let end = value_end(b, start)?;
    Some(start..end)
}

/// The text with the value at `path` replaced by `new_json` (already serialized JSON).
pub fn replace_value(text: &str, path: &[PathSeg], new_json: &str) -> Option<String> {
    let span = value_span(text, path)?;
    let mut out = String::with_capacity(text.len() + new_json.len());
    out.push_str(&text[..span.start]);
    out.push_str(new_json);
    out.push_str(&text[span.end..]);
    Some(out)
}

/// The text with `"key": new_json` appended as the last member of the object at `object_path`.
///
/// The new member copies the layout of the existing last member: the same whitespace before the key
/// (so the same indentation and line ending) and the same separator around the colon, with a comma
/// after the previous member. In an empty object it goes on its own line one indentation level
/// deeper than the object's line (the document's indentation unit, 4 spaces when there is none to
/// copy), or stays on one line in a document without line breaks. The key is written with
/// [`quote`]. Returns `None` when there is no object at `object_path` or it already has the key.
pub fn insert_key(text: &str, object_path: &[PathSeg], key: &str, new_json: &str) -> Option<String> {
    let span = value_span(text, object_path)?;
    let (members, close) = object_members(text, span.start)?;
    if members.iter().any(|m| key_matches(text, &m.key, key)) {
        return None;
    }
    let key_json = quote(key);
    let (at, insertion) = match members.last() {
        Some(last) => {
            let mut colon = &text[last.key.end..last.value.start];
            if colon.contains(['\n', '\r']) {
                colon = ": ";
            }
            let ws_start = text[..last.key.start].trim_end_matches(is_ws_char).len();
            let mut before = &text[ws_start..last.key.start];
            if before.is_empty() && members.len() == 1 && colon.ends_with(' ') {
                before = " ";
            }
            (last.value.end, format!(",{before}{key_json}{colon}{new_json}"))
        }
        None => {
            let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
            let body = if text.contains('\n') {
                let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
                let line = &text[line_start..span.start];
                let indent = &line[..line.len() - line.trim_start_matches([' ', '\t']).len()];
                let unit = indent_unit(text);
                format!("{{{newline}{indent}{unit}{key_json}: {new_json}{newline}{indent}}}")
            } else {
                let colon = if text.contains("\": ") { ": " } else { ":" };
                format!("{{{key_json}{colon}{new_json}}}")
            };
            let mut out = String::with_capacity(text.len() + body.len());
            out.push_str(&text[..span.start]);
            out.push_str(&body);
            out.push_str(&text[close + 1..]);
            return Some(out);
        }
    };
    let mut out = String::with_capacity(text.len() + insertion.len());
    out.push_str(&text[..at]);
    out.push_str(&insertion);
    out.push_str(&text[at..]);
    Some(out)
}

/// The dotted paths (as [`parse_path`] reads them) of keys that appear more than once in their
/// object, in document order. serde_json and Python's `json` silently keep the last one.
pub fn duplicate_keys(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    collect_duplicates(text, skip_ws(text.as_bytes(), 0), String::new(), &mut out, 0);
    out
}

fn collect_duplicates(text: &str, at: usize, path: String, out: &mut Vec<String>, depth: usize) {
    if depth > 512 {
        return;
    }
    match text.as_bytes().get(at) {
        Some(b'{') => {
            let Some((members, _)) = object_members(text, at) else { return };
            let mut seen = std::collections::HashSet::new();
            for m in &members {
                let key = decode_key(text, &m.key);
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if !seen.insert(key) && !out.contains(&child) {
                    out.push(child.clone());
                }
                collect_duplicates(text, m.value.start, child, out, depth + 1);
            }
        }
        Some(b'[') => {
            let Some(elements) = array_elements(text.as_bytes(), at) else { return };
            for (i, e) in elements.iter().enumerate() {
                collect_duplicates(text, e.start, format!("{path}[{i}]"), out, depth + 1);
            }
        }
        _ => {}
    }
}

/// A JSON string literal for `s` as Python's `json.dumps` writes it (`ensure_ascii=True`).
///
/// `"` and `\` are escaped, `\n \r \t \b \f` use their short escapes, other control characters and
/// everything outside printable ASCII become `\uXXXX` with lowercase hex digits (characters beyond
/// the Basic Multilingual Plane as a surrogate pair), so the files devami writes match those
/// NeuroCAAS tools write.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// One member of an object: the byte ranges of its key literal (with quotes) and of its value.
#[derive(Debug)]
struct Member {
    key: Range<usize>,
    value: Range<usize>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_ws_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string literal that starts with the `"` at `i`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The end (exclusive) of the value that starts at `i`. Iterative, so nesting depth costs no stack.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        b',' | b':' | b'}' | b']' => None,
        _ => {
            let mut j = i;
            while j < b.len() && !is_ws(b[j]) && !matches!(b[j], b',' | b'}' | b']') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The members of the object whose `{` is at `open`, and the index of its closing `}`.
fn object_members(text: &str, open: usize) -> Option<(Vec<Member>, usize)> {
    let b = text.as_bytes();
    if b.get(open) != Some(&b'{') {
        return None;
    }
    let mut members = Vec::new();
    let mut i = skip_ws(b, open + 1);
    if b.get(i) == Some(&b'}') {
        return Some((members, i));
    }
    loop {
        let key_end = string_end(b, i)?;
        let colon = skip_ws(b, key_end);
        if b.get(colon) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(b, colon + 1);
        let end = value_end(b, value_start)?;
        members.push(Member { key: i..key_end, value: value_start..end });
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return Some((members, i)),
            _ => return None,
        }
    }
}

/// The spans of the elements of the array whose `[` is at `open`.
fn array_elements(b: &[u8], open: usize) -> Option<Vec<Range<usize>>> {
    if b.get(open) != Some(&b'[') {
        return None;
    }
    let mut elements = Vec::new();
    let mut i = skip_ws(b, open + 1);
    if b.get(i) == Some(&b']') {
        return Some(elements);
    }
    loop {
        let end = value_end(b, i)?;
        elements.push(i..end);
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b']' => return Some(elements),
            _ => return None,
        }
    }
}

/// Whether the key literal at `span` decodes to `key`.
fn key_matches(text: &str, span: &Range<usize>, key: &str) -> bool {
    let literal = &text[span.clone()];
    let inner = &literal[1..literal.len() - 1];
    if !inner.contains('\\') {
        return inner == key;
    }
    decode_key(text, span) == key
}

/// The decoded key literal at `span` (the raw text between the quotes if it cannot be decoded).
fn decode_key(text: &str, span: &Range<usize>) -> String {
    let literal = &text[span.clone()];
    serde_json::from_str::<String>(literal).unwrap_or_else(|_| literal[1..literal.len() - 1].to_string())
}

/// The document's indentation unit: the leading whitespace of its first indented line.
fn indent_unit(text: &str) -> &str {
    for line in text.split('\n').skip(1) {
        let trimmed = line.trim_start_matches([' ', '\t']);
        let indent = &line[..line.len() - trimmed.len()];
        if !indent.is_empty() && !trimmed.trim().is_empty() {
            return indent;
        }
    }
    "    "
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathSeg::{Index, Key};

    const DOC: &str = r#"{
    "PipelineName": "demo",
    "Lambda": {
        "LambdaConfig": {
            "AMI": "ami-0123456789abcdef0",
            "COMMAND": "bash run.sh \"{}\" \"{}\" {\"x\": [1, 2]}",
            "SSM_TIMEOUT": 172000
        },
        "Empty": {}
    },
    "UXData": {"Affiliates": [{"AffiliateName": "debuggers", "UserNames": ["a", "b\\c"]}, 7]},
    "caf\u00e9": "x"
}"#;

    #[track_caller]
    fn span_text<'a>(text: &'a str, path: &[PathSeg]) -> &'a str {
        let span = value_span(text, path).expect("path should exist");
        &text[span]
    }

    #[test]
    fn finds_values_along_key_and_index_paths() {
        assert_eq!(span_text(DOC, &[Key("PipelineName")]), "\"demo\"");
        assert_eq!(span_text(DOC, &[Key("Lambda"), Key("LambdaConfig"), Key("SSM_TIMEOUT")]), "172000");
        assert_eq!(
            span_text(DOC, &[Key("Lambda"), Key("LambdaConfig"), Key("COMMAND")]),
            r#""bash run.sh \"{}\" \"{}\" {\"x\": [1, 2]}""#
        );
        assert_eq!(
            span_text(DOC, &[Key("UXData"), Key("Affiliates"), Index(0), Key("UserNames"), Index(1)]),
            r#""b\\c""#
        );
        assert_eq!(span_text(DOC, &[Key("UXData"), Key("Affiliates"), Index(1)]), "7");
        assert_eq!(span_text(DOC, &[Key("Lambda"), Key("Empty")]), "{}");
        assert_eq!(span_text(DOC, &[]), DOC);
    }

    #[test]
    fn missing_paths_give_none() {
        assert_eq!(value_span(DOC, &[Key("Nope")]), None);
        assert_eq!(value_span(DOC, &[Key("UXData"), Key("Affiliates"), Index(2)]), None);
        assert_eq!(value_span(DOC, &[Key("PipelineName"), Key("x")]), None);
        assert_eq!(value_span(DOC, &[Key("UXData"), Index(0)]), None);
    }

    #[test]
    fn keys_are_compared_decoded() {
        assert_eq!(span_text(DOC, &[Key("café")]), "\"x\"");
        let text = r#"{"a\"b": 1, "\u0041MI": 2}"#;
        assert_eq!(span_text(text, &[Key("a\"b")]), "1");
        assert_eq!(span_text(text, &[Key("AMI")]), "2");
    }

    #[test]
    fn a_repeated_key_resolves_to_the_last_one_like_serde_json() {
        let text = r#"{"AMI": "first", "AMI": "second"}"#;
        assert_eq!(span_text(text, &[Key("AMI")]), "\"second\"");
        let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(parsed["AMI"], "second");
    }

    #[test]
    fn duplicate_keys_are_listed_with_their_paths() {
        assert_eq!(duplicate_keys(DOC), Vec::<String>::new());
        let text = r#"{"a": 1, "b": {"x": [{"k": 1, "\u006b": 2}], "x": 3}, "a": 2, "a": 3}"#;
        assert_eq!(duplicate_keys(text), vec!["b.x[0].k", "b.x", "a"]);
    }

    #[test]
    fn whitespace_anywhere_is_skipped() {
        let text = " \r\n{ \"a\" \t:\n [ 1 ,\n\t{ \"b\" : null } ] } ";
        assert_eq!(span_text(text, &[Key("a"), Index(1), Key("b")]), "null");
        assert_eq!(span_text(text, &[Key("a"), Index(0)]), "1");
    }

    #[test]
    fn replace_changes_only_the_value_bytes() {
        let path = [Key("Lambda"), Key("LambdaConfig"), Key("AMI")];
        let out = replace_value(DOC, &path, "\"ami-11111111\"").unwrap();
        let span = value_span(DOC, &path).unwrap();
        assert_eq!(&out[..span.start], &DOC[..span.start]);
        assert_eq!(&out[out.len() - (DOC.len() - span.end)..], &DOC[span.end..]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Lambda"]["LambdaConfig"]["AMI"], "ami-11111111");
    }

    #[test]
    fn insert_copies_indentation_of_existing_members() {
        let out = insert_key(DOC, &[Key("Lambda"), Key("LambdaConfig")], "KEY_NAME", "\"k\"").unwrap();
        assert!(
            out.contains("\"SSM_TIMEOUT\": 172000,\n            \"KEY_NAME\": \"k\"\n        },"),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Lambda"]["LambdaConfig"]["KEY_NAME"], "k");
        let keys: Vec<_> = v["Lambda"]["LambdaConfig"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.last().map(String::as_str), Some("KEY_NAME"));
    }

    #[test]
    fn insert_into_an_empty_object_goes_one_level_deeper() {
        let out = insert_key(DOC, &[Key("Lambda"), Key("Empty")], "A", "1").unwrap();
        assert!(out.contains("\"Empty\": {\n            \"A\": 1\n        }\n"), "{out}");
        let two = "{\n  \"a\": {}\n}";
        assert_eq!(insert_key(two, &[Key("a")], "b", "2").unwrap(), "{\n  \"a\": {\n    \"b\": 2\n  }\n}");
        assert_eq!(insert_key("{}", &[], "k", "true").unwrap(), "{\"k\":true}");
    }

    #[test]
    fn insert_keeps_minified_inline_and_crlf_styles() {
        assert_eq!(insert_key(r#"{"a":1}"#, &[], "b", "2").unwrap(), r#"{"a":1,"b":2}"#);
        assert_eq!(insert_key(r#"{"a": 1}"#, &[], "b", "2").unwrap(), r#"{"a": 1, "b": 2}"#);
        assert_eq!(insert_key(r#"{"a": 1, "c": 3}"#, &[], "b", "2").unwrap(), r#"{"a": 1, "c": 3, "b": 2}"#);
        let crlf = "{\r\n    \"a\": 1\r\n}\r\n";
        assert_eq!(insert_key(crlf, &[], "b", "2").unwrap(), "{\r\n    \"a\": 1,\r\n    \"b\": 2\r\n}\r\n");
        let empty_crlf = "{\r\n    \"a\": {}\r\n}";
        assert_eq!(
            insert_key(empty_crlf, &[Key("a")], "b", "2").unwrap(),
            "{\r\n    \"a\": {\r\n        \"b\": 2\r\n    }\r\n}"
        );
    }

    #[test]
    fn insert_refuses_existing_keys_and_non_objects() {
        assert_eq!(insert_key(DOC, &[], "PipelineName", "1"), None);
        assert_eq!(insert_key(DOC, &[Key("PipelineName")], "x", "1"), None);
        assert_eq!(insert_key(DOC, &[Key("nope")], "x", "1"), None);
    }

    #[test]
    fn quote_matches_python_ensure_ascii() {
        // json.dumps('a"b\\c\n\t\x01é€😀\x7f')
        assert_eq!(
            quote("a\"b\\c\n\t\u{1}é€😀\u{7f}/"),
            r#""a\"b\\c\n\t\u0001\u00e9\u20ac\ud83d\ude00\u007f/""#
        );
        let back: String = serde_json::from_str(&quote("x\u{8}\u{c}ü😀")).unwrap();
        assert_eq!(back, "x\u{8}\u{c}ü😀");
    }

    #[test]
    fn parses_dotted_paths() {
        assert_eq!(
            parse_path("UXData.Affiliates[0].AffiliateName").unwrap(),
            vec![Key("UXData"), Key("Affiliates"), Index(0), Key("AffiliateName")]
        );
        assert_eq!(parse_path("a[1][2]").unwrap(), vec![Key("a"), Index(1), Index(2)]);
        assert_eq!(parse_path("[3].b").unwrap(), vec![Index(3), Key("b")]);
        assert_eq!(parse_path("").unwrap(), vec![]);
        for bad in ["a..b", "a.", "a[x]", "a[1", "a[]", "a[1]b", "a.[1]"] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn invalid_text_gives_none_not_a_panic() {
        for text in ["", "{", "{\"a\"", "{\"a\": ", "{\"a\": [1, ", "\"abc", "]", "{\"a\" 1}", "{\"a\": 1 2}"]
        {
            let _ = value_span(text, &[Key("a")]);
            let _ = value_span(text, &[Key("a"), Index(0)]);
            let _ = insert_key(text, &[], "b", "1");
        }
        assert_eq!(value_span("{\"a\": [1, ", &[Key("a"), Index(0)]), None);
    }
}
