//! The naming rules of an analysis: its name (which is its S3 bucket) and its groups' names.
//!
//! Each rule answers with the first part of it that a name breaks, phrased to follow `it` or the
//! quoted name in a message, or `None` when the name is fine. `init`, `check` and the data
//! commands apply the same rules, so what `init` writes `check` accepts and S3 takes.

use crate::error::shown;

/// Whether `name` can name a new blueprint (see [`blueprint_name_problem`]).
pub fn is_valid_name(name: &str) -> bool {
    blueprint_name_problem(name).is_none()
}

/// Which part of the rule for blueprint names `name` breaks (the first one), as the next step
/// to take: `^[a-z0-9-]+$`, 3 to 63 characters, no dash at either end, and none of the prefixes
/// and suffixes S3 reserves.
pub fn blueprint_name_problem(name: &str) -> Option<String> {
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Some("use only lowercase letters, digits and dashes (`^[a-z0-9-]+$`)".to_string());
    }
    let n = name.len();
    if !(3..=63).contains(&n) {
        return Some(format!(
            "it has {n} character{}, and a name has 3 to 63 lowercase letters, digits and dashes (it \
             becomes an S3 bucket name)",
            if n == 1 { "" } else { "s" }
        ));
    }
    let dash_at = if name.starts_with('-') {
        Some("starts")
    } else if name.ends_with('-') {
        Some("ends")
    } else {
        None
    };
    if let Some(end) = dash_at {
        return Some(format!(
            "it {end} with a dash; a name starts and ends with a letter or a digit, with lowercase \
             letters, digits and dashes between"
        ));
    }
    // The rest of S3's rules (reserved prefixes and suffixes), as `check` applies them.
    bucket_name_problem(name).map(|problem| format!("it {problem}, and the name becomes the S3 bucket name"))
}

/// Why `name` cannot be a NeuroCAAS analysis bucket: S3's bucket naming rules plus the build
/// scripts' `^[a-z0-9-]+$`. `None` when it is fine.
pub fn bucket_name_problem(name: &str) -> Option<String> {
    bucket_problem(name, true)
}

/// Why S3 would refuse `name` as a bucket name (its naming rules only: dots are allowed). `None`
/// when S3 accepts it. The data commands check this before any call, so that a bad
/// `PipelineName` is named as such rather than answered by an HTTP 400.
pub fn s3_bucket_problem(name: &str) -> Option<String> {
    bucket_problem(name, false)
}

fn bucket_problem(name: &str, neurocaas: bool) -> Option<String> {
    let len = name.chars().count();
    if let Some(c) = name.chars().find(|c| c.is_ascii_uppercase()) {
        return Some(format!("has the uppercase letter `{c}`; bucket names are lowercase"));
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.')) {
        let c = if c == ' ' { "space".to_string() } else { format!("character {}", shown(&c.to_string())) };
        return Some(format!("has a {c}; bucket names use only lowercase letters, digits and dashes"));
    }
    if !(3..=63).contains(&len) {
        return Some(format!("has {len} characters; bucket names have 3 to 63"));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Some("must start and end with a lowercase letter or a digit".to_string());
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
        return Some("is shaped like an IP address, which S3 refuses as a bucket name".to_string());
    }
    if name.contains("..") {
        return Some("has two dots in a row, which S3 refuses in bucket names".to_string());
    }
    if neurocaas && name.contains('.') {
        return Some(
            "has a dot; S3 allows it, but the NeuroCAAS build scripts accept only lowercase letters, \
             digits and dashes (`^[a-z0-9-]+$`)"
                .to_string(),
        );
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Some(format!("starts with `{prefix}`, a prefix S3 reserves"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Some(format!("ends with `{suffix}`, a suffix S3 reserves"));
        }
    }
    None
}

/// Why `name` cannot be an affiliate (group) name, which becomes an S3 prefix and IAM group name.
pub fn affiliate_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_string());
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-')) {
        return Some(format!("has the character {}", shown(&c.to_string())));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("starts or ends with a dash".to_string());
    }
    if name.len() > 63 {
        return Some(format!("has {} characters, more than 63", name.len()));
    }
    None
}

/// A valid name close to `name` (lowercase, other characters turned into dashes), for fixes.
pub fn suggest_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    let mut out: String = out.trim_end_matches('-').chars().take(63).collect();
    out = out.trim_end_matches('-').to_string();
    if let Some(rest) = out.strip_prefix("sthree-") {
        out = rest.to_string();
    }
    if let Some(rest) = out.strip_suffix("-s3alias") {
        out = rest.to_string();
    }
    if out.len() < 3 { "my-analysis".to_string() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_helpers() {
        assert_eq!(suggest_name("DLC_Web Stack!"), "dlc-web-stack");
        assert_eq!(suggest_name("__"), "my-analysis");
        assert_eq!(suggest_name("xn--abc"), "xn-abc");
        assert_eq!(suggest_name("dlc-s3alias"), "dlc");
        assert_eq!(bucket_name_problem("dlc-ncap-web"), None);
    }
}
