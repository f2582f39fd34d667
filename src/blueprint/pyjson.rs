//! JSON written the way Python's `json.dumps` writes it, the style of NeuroCAAS's own files.
//!
//! Strings are ASCII-only (`\uXXXX` escapes, as [`spans::quote`] writes them) and separators are
//! Python's, so a file devami creates reads like one a NeuroCAAS tool wrote.

use serde_json::Value;

use crate::blueprint::spans;

/// Serializes `value` as Python's `json.dumps(value, indent=indent)` does: `", "`/`": "`
/// separators without indentation, one member per line with it, and ASCII-only strings.
pub fn to_python_json(value: &Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    write_python_json(&mut out, value, indent, 0);
    out
}

fn write_python_json(out: &mut String, value: &Value, indent: Option<usize>, level: usize) {
    let newline = |out: &mut String, level: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * level));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    match value {
        Value::String(s) => out.push_str(&spans::quote(s)),
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, level + 1);
                write_python_json(out, item, indent, level + 1);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, level + 1);
                out.push_str(&spans::quote(key));
                out.push_str(": ");
                write_python_json(out, item, indent, level + 1);
            }
            newline(out, level);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_matches_json_dumps() {
        let v: Value =
            serde_json::from_str(r#"{"a": [1, {"b": []}, {}], "é": "ü", "t": true, "n": null, "f": 1.5}"#)
                .unwrap();
        // json.dumps(v, indent=4) and json.dumps(v)
        assert_eq!(
            to_python_json(&v, Some(4)),
            "{\n    \"a\": [\n        1,\n        {\n            \"b\": []\n        },\n        \
             {}\n    ],\n    \
             \"\\u00e9\": \"\\u00fc\",\n    \"t\": true,\n    \"n\": null,\n    \"f\": 1.5\n}"
        );
        assert_eq!(
            to_python_json(&v, None),
            r#"{"a": [1, {"b": []}, {}], "\u00e9": "\u00fc", "t": true, "n": null, "f": 1.5}"#
        );
    }
}
