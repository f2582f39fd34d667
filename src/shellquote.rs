//! Single quotes for POSIX shells, which devami's shell form reads the same way: `always` for a
//! value that goes into a command a shell runs, `when_needed` for a word shown to a person or typed
//! back into devami (`my file` becomes `'my file'`, `notes.txt` stays as it is).

/// `s` in single quotes, `'` written as `'\''`: one word to any POSIX shell, whatever it holds.
pub fn always(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` as it is when it is one plain word (letters, digits and `_-./:@%+=,~^`, not starting with
/// `~`), else [`always`] quoted.
pub fn when_needed(s: &str) -> String {
    let plain = |c: char| c.is_alphanumeric() || "_-./:@%+=,~^".contains(c);
    if !s.is_empty() && s.chars().all(plain) && !s.starts_with('~') { s.to_string() } else { always(s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_always_quoted() {
        assert_eq!(always("a"), "'a'");
        assert_eq!(always(""), "''");
        assert_eq!(always("it's"), r"'it'\''s'");
    }

    #[test]
    fn words_are_quoted_when_needed() {
        assert_eq!(when_needed("test_resources/submit.json"), "test_resources/submit.json");
        assert_eq!(when_needed("my file"), "'my file'");
        assert_eq!(when_needed("it's"), r"'it'\''s'");
        assert_eq!(when_needed(""), "''");
        assert_eq!(when_needed("~x"), "'~x'");
    }
}
