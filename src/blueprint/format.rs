//! Python's `str.format` template syntax, the language of a blueprint's `COMMAND`.
//!
//! The NeuroCAAS job manager runs `COMMAND.format(bucket, dataset, result_dir, config)`, so a
//! COMMAND means what CPython makes of it. [`pieces`] is the one reader of that syntax: it walks a
//! template as CPython's `MarkupIterator` and `get_field_object` do
//! (`Objects/stringlib/unicode_format.h`), left to right, failing at the first problem Python
//! would raise, with Python's message. `lint` reads COMMAND through [`placeholders`]; `submit`
//! fills it through [`pieces`].

/// Which argument a replacement field takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `{}` (or `{:spec}`, `{!r}`): the next positional argument.
    Auto,
    /// `{0}`: an explicit positional argument.
    Index(usize),
    /// `{name}`: a keyword argument (the job manager passes none).
    Named(String),
}

/// What `str.format` rejects in a template, displayed as Python's `ValueError` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("Single '{{' encountered in format string")]
    SingleOpenBrace,
    #[error("Single '}}' encountered in format string")]
    SingleCloseBrace,
    #[error("expected '}}' before end of string")]
    UnclosedField,
    #[error("unexpected '{{' in field name")]
    BraceInFieldName,
    #[error("end of string while looking for conversion specifier")]
    MissingConversion,
    #[error("expected ':' after conversion specifier")]
    ColonAfterConversion,
    #[error("unmatched '{{' in format spec")]
    UnmatchedSpecBrace,
    /// Python shows a printable ASCII specifier as it is, any other as `\x` and its hex code.
    #[error("Unknown conversion specifier {}", shown_specifier(*.0))]
    UnknownConversion(char),
    #[error("Empty attribute in format string")]
    EmptyAttribute,
    #[error("Missing ']' in format string")]
    MissingBracket,
    #[error("Only '.' or '[' may follow ']' in format field specifier")]
    TextAfterBracket,
    #[error("Too many decimal digits in format string")]
    TooManyDigits,
    #[error("cannot switch from manual field specification to automatic field numbering")]
    ManualThenAuto,
    #[error("cannot switch from automatic field numbering to manual field specification")]
    AutoThenManual,
    /// A field in the format spec of a field in a format spec (`{:{:{}}}`).
    #[error("Max string recursion exceeded")]
    TooDeep,
}

fn shown_specifier(c: char) -> String {
    if matches!(c, '!'..='~') { c.to_string() } else { format!("\\x{:x}", u32::from(c)) }
}

/// One piece of a template, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text that `format` copies as it is. A `{{` or `}}` ends a piece, with one brace.
    Literal(&'a str),
    /// A replacement field.
    Field(Field<'a>),
}

/// A replacement field, checked as Python checks it before formatting the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// What is between the braces, as written (`0!r:>10`).
    pub text: &'a str,
    /// The argument it takes.
    pub arg: Placeholder,
    /// The positional argument it takes (`{}` numbered as Python numbers it); `None` when named.
    pub position: Option<usize>,
}

impl Field<'_> {
    /// Whether the field is the argument alone (`{}`, `{0}`): no attribute, index, conversion or
    /// format spec.
    pub fn is_plain(&self) -> bool {
        self.text.bytes().all(|b| b.is_ascii_digit())
    }
}

/// The pieces of `template`, each checked as Python's `format` checks it when it gets there; after
/// an error, none. The fields of a format spec (`{:{}}`) follow their field (the spec's text does
/// not: it belongs to the field). What Python checks against the values (a missing argument, the
/// format spec for the value's type) is left to the caller.
pub fn pieces(template: &str) -> Pieces<'_> {
    // CPython allows two levels: the template and one level of format specs.
    Pieces { stack: vec![(template, 2)], numbering: Numbering::Unknown, next_auto: 0 }
}

/// The replacement fields of a template in order (fields nested in a format spec, as in `{:{}}`,
/// count too), or what Python's `str.format` would reject in it.
///
/// `{{` and `}}` are literal braces; `{}` is [`Placeholder::Auto`], `{0}` [`Placeholder::Index`],
/// `{name}` (anything whose first part is not all ASCII digits) [`Placeholder::Named`]; a field may
/// have attribute or index suffixes (`{0.x}`, `{[1]}`), a conversion (`!r`, `!s`, `!a`) and a
/// format spec (`:>10`). Mixing `{}` with `{0}` is an error, as in Python.
pub fn placeholders(template: &str) -> Result<Vec<Placeholder>, FormatError> {
    pieces(template)
        .filter_map(|piece| match piece {
            Ok(Piece::Literal(_)) => None,
            Ok(Piece::Field(field)) => Some(Ok(field.arg)),
            Err(e) => Some(Err(e)),
        })
        .collect()
}

/// How many positional arguments `.format` needs for these fields (0 when there are none).
pub fn positional_count(fields: &[Placeholder]) -> usize {
    let auto = fields.iter().filter(|f| **f == Placeholder::Auto).count();
    let manual = fields.iter().filter_map(|f| if let Placeholder::Index(i) = f { Some(i + 1) } else { None });
    manual.max().unwrap_or(0).max(auto)
}

/// The iterator of [`pieces`].
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    /// What is left to read, with the nesting levels still allowed: the template first, then the
    /// format spec being read.
    stack: Vec<(&'a str, u32)>,
    numbering: Numbering,
    next_auto: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numbering {
    Unknown,
    Auto,
    Manual,
}

/// A replacement field as written, before its name is looked at.
struct Markup<'a> {
    text: &'a str,
    name: &'a str,
    conversion: Option<char>,
    spec: Option<&'a str>,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Result<Piece<'a>, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.stack.clear();
        }
        item
    }
}

impl<'a> Pieces<'a> {
    fn step(&mut self) -> Option<Result<Piece<'a>, FormatError>> {
        loop {
            let nested = self.stack.len() > 1;
            let (rest, depth) = self.stack.last_mut()?;
            if rest.is_empty() {
                self.stack.pop();
                continue;
            }
            if *depth == 0 {
                return Some(Err(FormatError::TooDeep));
            }
            let depth = *depth;
            let markup = match next_markup(rest) {
                // A format spec's own text belongs to its field.
                Ok(Ok(_)) if nested => continue,
                Ok(Ok(literal)) => return Some(Ok(Piece::Literal(literal))),
                Ok(Err(markup)) => markup,
                Err(e) => return Some(Err(e)),
            };
            let field = match self.resolve(&markup) {
                Ok(field) => field,
                Err(e) => return Some(Err(e)),
            };
            if let Some(spec) = markup.spec.filter(|s| s.contains('{')) {
                self.stack.push((spec, depth - 1));
            }
            return Some(Ok(Piece::Field(field)));
        }
    }

    /// Looks at a field's name and conversion as `get_field_object` and `do_conversion` do.
    fn resolve(&mut self, markup: &Markup<'a>) -> Result<Field<'a>, FormatError> {
        let (first, rest) = markup.name.split_at(markup.name.find(['.', '[']).unwrap_or(markup.name.len()));
        let number = get_integer(first)?;
        let (arg, position) = if first.is_empty() {
            if self.numbering == Numbering::Manual {
                return Err(FormatError::ManualThenAuto);
            }
            self.numbering = Numbering::Auto;
            self.next_auto += 1;
            (Placeholder::Auto, Some(self.next_auto - 1))
        } else if let Some(index) = number {
            if self.numbering == Numbering::Auto {
                return Err(FormatError::AutoThenManual);
            }
            self.numbering = Numbering::Manual;
            (Placeholder::Index(index), Some(index))
        } else {
            (Placeholder::Named(first.to_string()), None)
        };
        check_field_rest(rest)?;
        if let Some(c) = markup.conversion.filter(|c| !matches!(c, 's' | 'r' | 'a')) {
            return Err(FormatError::UnknownConversion(c));
        }
        Ok(Field { text: markup.text, arg, position })
    }
}

/// Reads the next literal or field from `rest` and advances it, as CPython's
/// `MarkupIterator_next`: `Ok(literal)` or `Err(field)`.
fn next_markup<'a>(rest: &mut &'a str) -> Result<Result<&'a str, Markup<'a>>, FormatError> {
    let s = *rest;
    let bytes = s.as_bytes();
    // Every delimiter is ASCII, so byte positions next to one are character boundaries.
    let Some(i) = bytes.iter().position(|&b| b == b'{' || b == b'}') else {
        *rest = "";
        return Ok(Ok(s));
    };
    let doubled = bytes.get(i + 1) == Some(&bytes[i]);
    if bytes[i] == b'}' && !doubled {
        return Err(FormatError::SingleCloseBrace);
    }
    if i + 1 == bytes.len() {
        return Err(FormatError::SingleOpenBrace);
    }
    if doubled {
        *rest = &s[i + 2..];
        return Ok(Ok(&s[..=i]));
    }
    if i > 0 {
        *rest = &s[i..];
        return Ok(Ok(&s[..i]));
    }
    let (markup, after) = parse_field(&s[1..])?;
    *rest = after;
    Ok(Err(markup))
}

/// Parses the field that starts just after its `{`, as CPython's `parse_field`; returns it and
/// what follows its `}`.
fn parse_field(s: &str) -> Result<(Markup<'_>, &str), FormatError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut end = None;
    while i < bytes.len() {
        let c = bytes[i];
        i += 1;
        match c {
            b'{' => return Err(FormatError::BraceInFieldName),
            b'[' => {
                while i < bytes.len() && bytes[i] != b']' {
                    i += 1;
                }
            }
            b'}' | b':' | b'!' => {
                end = Some(c);
                break;
            }
            _ => {}
        }
    }
    let Some(end) = end else { return Err(FormatError::UnclosedField) };
    let name = &s[..i - 1];
    if end == b'}' {
        return Ok((Markup { text: name, name, conversion: None, spec: None }, &s[i..]));
    }
    let mut conversion = None;
    if end == b'!' {
        let Some(c) = s[i..].chars().next() else { return Err(FormatError::MissingConversion) };
        i += c.len_utf8();
        conversion = Some(c);
        if i < bytes.len() {
            let next = bytes[i];
            i += 1;
            if next == b'}' {
                return Ok((Markup { text: &s[..i - 1], name, conversion, spec: None }, &s[i..]));
            }
            if next != b':' {
                return Err(FormatError::ColonAfterConversion);
            }
        }
    }
    let spec_start = i;
    let mut open = 1;
    while i < bytes.len() {
        let c = bytes[i];
        i += 1;
        match c {
            b'{' => open += 1,
            b'}' => {
                open -= 1;
                if open == 0 {
                    let spec = Some(&s[spec_start..i - 1]);
                    return Ok((Markup { text: &s[..i - 1], name, conversion, spec }, &s[i..]));
                }
            }
            _ => {}
        }
    }
    Err(FormatError::UnmatchedSpecBrace)
}

/// Checks the attribute and index part of a field name (`.attr`, `[key]`) as Python's
/// `FieldNameIterator` does.
fn check_field_rest(mut rest: &str) -> Result<(), FormatError> {
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        let part = match c {
            '.' => {
                let (part, tail) = rest.split_at(rest.find(['.', '[']).unwrap_or(rest.len()));
                rest = tail;
                part
            }
            '[' => {
                let Some(close) = rest.find(']') else { return Err(FormatError::MissingBracket) };
                let (part, tail) = (&rest[..close], &rest[close + 1..]);
                rest = tail;
                get_integer(part)?;
                part
            }
            _ => return Err(FormatError::TextAfterBracket),
        };
        if part.is_empty() {
            return Err(FormatError::EmptyAttribute);
        }
    }
    Ok(())
}

/// The number a field name or index is, `None` when it is not all ASCII digits (or empty), as
/// CPython's `get_integer` reads it: left to right, so that digits past `Py_ssize_t` are an error
/// even when a non-digit follows them. (CPython also takes non-ASCII decimal digits; this does not.)
fn get_integer(s: &str) -> Result<Option<usize>, FormatError> {
    if s.is_empty() {
        return Ok(None);
    }
    let mut n: usize = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return Ok(None);
        }
        let digit = usize::from(b - b'0');
        if n > (isize::MAX.unsigned_abs() - digit) / 10 {
            return Err(FormatError::TooManyDigits);
        }
        n = n * 10 + digit;
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_python_str_format() {
        use Placeholder::*;
        let named = |s: &str| Named(s.to_string());
        let ok: Vec<(&str, Vec<Placeholder>)> = vec![
            ("", vec![]),
            ("ls; echo {{}} }}{{", vec![]),
            ("{}", vec![Auto]),
            ("{0}", vec![Index(0)]),
            ("{name}", vec![named("name")]),
            ("{{{}}}", vec![Auto]),
            ("{0!r}", vec![Index(0)]),
            ("{:>10}", vec![Auto]),
            ("{!r:>10}", vec![Auto]),
            ("{0.x}", vec![Index(0)]),
            ("{[1]}", vec![Auto]),
            ("{:{}}", vec![Auto, Auto]),
            ("{0:{1}}", vec![Index(0), Index(1)]),
            ("{ }", vec![named(" ")]),
            ("{a}{}", vec![named("a"), Auto]),
            ("{write analysis_script_here}", vec![named("write analysis_script_here")]),
            (r#"cd /home/ubuntu; bash run.sh "{}" "{}" "{}" "{}""#, vec![Auto, Auto, Auto, Auto]),
            ("{1} {0} {1}", vec![Index(1), Index(0), Index(1)]),
        ];
        for (template, expected) in ok {
            assert_eq!(placeholders(template), Ok(expected), "{template:?}");
        }
        let errors = [
            ("{}}", "Single '}' encountered in format string"),
            ("}", "Single '}' encountered in format string"),
            ("{", "Single '{' encountered in format string"),
            ("echo {0", "expected '}' before end of string"),
            ("{0:", "unmatched '{' in format spec"),
            ("{0!r", "unmatched '{' in format spec"),
            ("{0!}", "unmatched '{' in format spec"),
            ("{0!x}", "Unknown conversion specifier x"),
            ("{0!rx}", "expected ':' after conversion specifier"),
            ("{} {0}", "cannot switch from automatic field numbering to manual field specification"),
            ("{0} {}", "cannot switch from manual field specification to automatic field numbering"),
            ("{:{0}}", "cannot switch from automatic field numbering to manual field specification"),
            ("{a{}", "unexpected '{' in field name"),
            ("{0.}", "Empty attribute in format string"),
            ("{0[]}", "Empty attribute in format string"),
            ("{0..x}", "Empty attribute in format string"),
            ("{99999999999999999999999}", "Too many decimal digits in format string"),
            ("{:{:{}}}", "Max string recursion exceeded"),
        ];
        for (template, message) in errors {
            assert_eq!(
                placeholders(template).map_err(|e| e.to_string()),
                Err(message.to_string()),
                "{template:?}"
            );
        }
    }

    /// Cases where Python's order of checks or limits decide the message (each checked against
    /// CPython 3.11).
    #[test]
    fn checks_come_in_pythons_order() {
        let errors = [
            // The conversion is checked when a format spec follows it too.
            ("{0!x:>3}", "Unknown conversion specifier x"),
            ("{0!\u{1b}}", "Unknown conversion specifier \\x1b"),
            ("{0!é}", "Unknown conversion specifier \\xe9"),
            ("{0!}}", "Unknown conversion specifier }"),
            // The index is read before the numbering is checked, which comes before the attributes.
            ("{} {99999999999999999999999}", "Too many decimal digits in format string"),
            ("{9223372036854775808}", "Too many decimal digits in format string"),
            ("{} {0.}", "cannot switch from automatic field numbering to manual field specification"),
            // The first problem from the left wins.
            ("{0.}{", "Empty attribute in format string"),
            ("{}{:{:{}}}}", "Max string recursion exceeded"),
            ("{x[a]b}", "Only '.' or '[' may follow ']' in format field specifier"),
            ("{0!", "end of string while looking for conversion specifier"),
            // An empty part is found before what follows it.
            ("{0[]x}", "Empty attribute in format string"),
            ("{0[a]x}", "Only '.' or '[' may follow ']' in format field specifier"),
            ("{0[99999999999999999999]}", "Too many decimal digits in format string"),
            ("{99999999999999999999x}", "Too many decimal digits in format string"),
        ];
        for (template, message) in errors {
            assert_eq!(
                placeholders(template).map_err(|e| e.to_string()),
                Err(message.to_string()),
                "{template:?}"
            );
        }
        assert_eq!(placeholders("{9223372036854775807}"), Ok(vec![Placeholder::Index(isize::MAX as usize)]));
        assert_eq!(positional_count(&placeholders("{9223372036854775807}").unwrap()), 1 << 63);
        assert_eq!(placeholders("{+1}"), Ok(vec![Placeholder::Named("+1".to_string())]));
    }

    #[test]
    fn pieces_halve_braces_and_number_fields() {
        let field = |text, arg, position| Piece::Field(Field { text, arg, position });
        let got: Vec<Piece> = pieces("a{{b}}c{}{!r}{x}").collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            [
                Piece::Literal("a{"),
                Piece::Literal("b}"),
                Piece::Literal("c"),
                field("", Placeholder::Auto, Some(0)),
                field("!r", Placeholder::Auto, Some(1)),
                field("x", Placeholder::Named("x".into()), None),
            ]
        );
        let nested: Vec<Piece> = pieces("x{0:a{1}b}y").collect::<Result<_, _>>().unwrap();
        assert_eq!(
            nested,
            [
                Piece::Literal("x"),
                field("0:a{1}b", Placeholder::Index(0), Some(0)),
                field("1", Placeholder::Index(1), Some(1)),
                Piece::Literal("y"),
            ]
        );
        let mut after_error = pieces("a}b{}");
        assert_eq!(after_error.next(), Some(Err(FormatError::SingleCloseBrace)));
        assert_eq!(after_error.next(), None);
        let plain = |t: &str| match pieces(t).next() {
            Some(Ok(Piece::Field(f))) => f.is_plain(),
            other => panic!("{other:?}"),
        };
        assert!(plain("{}") && plain("{12}"));
        assert!(!plain("{0:}") && !plain("{!s}") && !plain("{0.x}") && !plain("{a}") && !plain("{[0]}"));
    }

    #[test]
    fn positional_count_is_what_format_needs() {
        use Placeholder::*;
        assert_eq!(positional_count(&[]), 0);
        assert_eq!(positional_count(&[Auto, Auto, Auto]), 3);
        assert_eq!(positional_count(&[Index(4)]), 5);
        assert_eq!(positional_count(&[Named("a".into()), Auto]), 1);
    }
}
