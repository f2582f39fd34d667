//! Markdown prose rendered readably in a terminal, for the tutorial player: headings stand out,
//! paragraphs re-flow to the width, lists keep a hanging indent, code and tables stay verbatim,
//! inline markup loses its markers (ANSI styles on a terminal) and HTML comments disappear.
//!
//! Fenced code blocks are found as transcripts find them (pulldown-cmark); the rest is a small,
//! forgiving, line-based subset of CommonMark. Any input renders with bounded nesting, and control
//! characters are dropped, so a page cannot send escapes to the terminal.

use std::collections::HashMap;

use crate::transcript::markdown::{FencedBlock, fenced_blocks};

/// The width used by [`render`].
pub const DEFAULT_WIDTH: usize = 80;

/// The narrowest width text is wrapped to, however deep the nesting.
const MIN_WIDTH: usize = 20;

/// Deeper quotes and lists are shown as plain paragraphs.
const MAX_DEPTH: usize = 12;

/// The longest link destination looked for, in characters.
const MAX_URL: usize = 2048;

const BOLD: u8 = 1;
const ITALIC: u8 = 2;
const CODE: u8 = 4;
const LINK: u8 = 8;
const UNDERLINE: u8 = 16;

/// Renders markdown at [`DEFAULT_WIDTH`] columns; `styled` adds ANSI bold, italic and colour.
pub fn render(md: &str, styled: bool) -> String {
    render_width(md, styled, DEFAULT_WIDTH)
}

/// Renders markdown re-flowed to `width` columns; the result ends with a newline unless empty.
pub fn render_width(md: &str, styled: bool, width: usize) -> String {
    let md = md.strip_prefix('\u{feff}').unwrap_or(md);
    let cleaned: Vec<String> = md.lines().map(clean).collect();
    let (lines, fences) = prepare(&cleaned);
    let lines: Vec<(usize, &str)> = lines.iter().map(|(k, l)| (*k, l.as_str())).collect();
    let out = Renderer { styled, fences }.blocks(&lines, width.max(MIN_WIDTH), 0);
    let mut text = out.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// Drops HTML comments outside fenced code blocks from cleaned lines. Returns the lines kept,
/// each with its index, and the fenced code blocks by the index of their opening line (those that
/// open inside a comment are no blocks).
fn prepare(cleaned: &[String]) -> (Vec<(usize, String)>, HashMap<usize, FencedBlock>) {
    let refs: Vec<&str> = cleaned.iter().map(String::as_str).collect();
    let mut found: HashMap<usize, FencedBlock> =
        fenced_blocks(&refs).into_iter().map(|b| (b.opening, b)).collect();
    let mut fences = HashMap::new();
    let mut lines = Vec::new();
    // The last line of the fenced code block being read.
    let mut code_until: Option<usize> = None;
    let mut in_comment = false;
    for (k, line) in cleaned.iter().enumerate() {
        if code_until.is_some_and(|last| k <= last) {
            lines.push((k, line.clone()));
            continue;
        }
        if !in_comment && let Some(block) = found.remove(&k) {
            code_until = Some(block.last);
            fences.insert(k, block);
            lines.push((k, line.clone()));
            continue;
        }
        let mut kept = String::new();
        let mut rest = line.as_str();
        let mut had_comment = in_comment;
        loop {
            if in_comment {
                match rest.find("-->") {
                    Some(at) => {
                        rest = rest.get(at + 3..).unwrap_or("");
                        in_comment = false;
                    }
                    None => break,
                }
            } else {
                match rest.find("<!--") {
                    Some(at) => {
                        kept.push_str(rest.get(..at).unwrap_or(""));
                        rest = rest.get(at + 4..).unwrap_or("");
                        in_comment = true;
                        had_comment = true;
                    }
                    None => {
                        kept.push_str(rest);
                        break;
                    }
                }
            }
        }
        if !(had_comment && kept.trim().is_empty()) {
            lines.push((k, kept));
        }
    }
    (lines, fences)
}

/// Drops control characters and expands tabs to 4-column stops.
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut col = 0;
    for c in line.chars() {
        if c == '\t' {
            let n = 4 - col % 4;
            out.extend(std::iter::repeat_n(' ', n));
            col += n;
        } else if !c.is_control() {
            out.push(c);
            col += 1;
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.bytes().take_while(|&b| b == b' ').count()
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// Removes up to `indent` leading spaces.
fn dedent(line: &str, indent: usize) -> &str {
    let spaces = line.bytes().take(indent).take_while(|&b| b == b' ').count();
    line.get(spaces..).unwrap_or(line)
}

/// Block-level lines are numbered by their line in the page, which is how [`FencedBlock`]s are
/// found again inside lists and quotes.
type Lines<'a> = [(usize, &'a str)];

/// What renders blocks: the style, and the fenced code blocks of the page.
struct Renderer {
    styled: bool,
    /// By the line of their opening fence.
    fences: HashMap<usize, FencedBlock>,
}

impl Renderer {
    /// Renders a sequence of block-level lines.
    fn blocks(&self, lines: &Lines, width: usize, depth: usize) -> Vec<String> {
        let styled = self.styled;
        let width = width.max(MIN_WIDTH);
        let mut out: Vec<String> = Vec::new();
        let mut blank = false;
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].1;
            if is_blank(line) {
                blank = true;
                i += 1;
                continue;
            }
            if blank && !out.is_empty() {
                out.push(String::new());
            }
            blank = false;
            if depth >= MAX_DEPTH {
                let end = lines[i..].iter().position(|l| is_blank(l.1)).map_or(lines.len(), |k| i + k);
                out.extend(paragraph(&lines[i..end], width, styled));
                i = end;
                continue;
            }
            if let Some(block) = self.fence_at(lines[i]) {
                i += 1;
                while let Some(&(k, _)) = lines.get(i).filter(|l| l.0 <= block.last) {
                    if let Some(content) = k.checked_sub(block.opening + 1).and_then(|n| block.content.get(n))
                    {
                        out.push(verbatim(content));
                    }
                    i += 1;
                }
                continue;
            }
            if let Some((level, text)) = atx_heading(line) {
                out.push(heading(text, level, styled));
                i += 1;
                continue;
            }
            if is_rule(line) {
                out.push("-".repeat(width.min(40)));
                i += 1;
                continue;
            }
            if indent(line) >= 4 {
                while i < lines.len() {
                    if indent(lines[i].1) >= 4 {
                        out.push(verbatim(dedent(lines[i].1, 4)));
                        i += 1;
                    } else if is_blank(lines[i].1) {
                        match lines[i..].iter().position(|l| !is_blank(l.1)).map(|k| i + k) {
                            Some(k) if indent(lines[k].1) >= 4 => {
                                out.extend((i..k).map(|_| String::new()));
                                i = k;
                            }
                            _ => break,
                        }
                    } else {
                        break;
                    }
                }
                continue;
            }
            if quote(line).is_some() {
                let mut inner = Vec::new();
                while let Some(rest) = lines.get(i).and_then(|l| quote(l.1).map(|q| (l.0, q))) {
                    inner.push(rest);
                    i += 1;
                }
                for l in self.blocks(&inner, width.saturating_sub(2), depth + 1) {
                    out.push(if l.is_empty() { ">".to_string() } else { format!("> {l}") });
                }
                continue;
            }
            if let Some(item) = list_item(line) {
                i = self.list_item_block(lines, i, item, width, depth, &mut out);
                continue;
            }
            if line.trim_start().starts_with('|') {
                while i < lines.len() && lines[i].1.trim_start().starts_with('|') {
                    out.push(lines[i].1.trim_end().to_string());
                    i += 1;
                }
                continue;
            }
            // A paragraph, or a setext heading.
            let start = i;
            i += 1;
            let mut level = None;
            while i < lines.len() {
                let l = lines[i];
                if is_blank(l.1) {
                    break;
                }
                if let Some(lv) = setext(l.1) {
                    level = Some(lv);
                    break;
                }
                if self.starts_block(l) {
                    break;
                }
                i += 1;
            }
            match level {
                Some(lv) => {
                    let text: Vec<&str> = lines[start..i].iter().map(|l| l.1.trim()).collect();
                    out.push(heading(&text.join(" "), lv, styled));
                    i += 1;
                }
                None => out.extend(paragraph(&lines[start..i], width, styled)),
            }
        }
        while out.last().is_some_and(|l| l.is_empty()) {
            out.pop();
        }
        out
    }

    /// The fenced code block that `line` opens: one that opens on that line of the page, with its
    /// fence first on the line as this block level sees it (not after a list marker or `>`).
    fn fence_at(&self, (at, line): (usize, &str)) -> Option<&FencedBlock> {
        self.fences.get(&at).filter(|block| line.trim_start_matches(' ').starts_with(&block.fence))
    }

    /// Whether a line interrupts a paragraph.
    fn starts_block(&self, (at, line): (usize, &str)) -> bool {
        self.fence_at((at, line)).is_some()
            || atx_heading(line).is_some()
            || is_rule(line)
            || quote(line).is_some()
            || list_item(line).is_some_and(|item| item.interrupts)
    }

    /// Renders one list item starting at `lines[i]`; returns the index after it.
    fn list_item_block(
        &self,
        lines: &Lines,
        mut i: usize,
        item: Item,
        width: usize,
        depth: usize,
        out: &mut Vec<String>,
    ) -> usize {
        let mut content = vec![(lines[i].0, item.first)];
        i += 1;
        while i < lines.len() {
            let (at, l) = lines[i];
            if is_blank(l) {
                let next = lines[i..].iter().position(|l| !is_blank(l.1)).map(|k| i + k);
                match next {
                    Some(k) if indent(lines[k].1) >= item.offset => {
                        content.extend(lines[i..k].iter().map(|l| (l.0, "")));
                        i = k;
                        continue;
                    }
                    _ => break,
                }
            }
            if indent(l) >= item.offset {
                content.push((at, dedent(l, item.offset)));
            } else if content.last().is_some_and(|c| !is_blank(c.1))
                && !self.starts_block(lines[i])
                && list_item(l).is_none()
            {
                // A lazy continuation line of the item's paragraph.
                content.push((at, l.trim_start()));
            } else {
                break;
            }
            i += 1;
        }
        let marker = if self.styled && item.marker == "- " { "• ".to_string() } else { item.marker };
        let hang = marker.chars().count();
        let inner = self.blocks(&content, width.saturating_sub(hang), depth + 1);
        if inner.is_empty() {
            out.push(marker.trim_end().to_string());
        }
        for (n, l) in inner.into_iter().enumerate() {
            out.push(match (n, l.is_empty()) {
                (0, _) => format!("{marker}{l}").trim_end().to_string(),
                (_, true) => l,
                _ => format!("{}{l}", " ".repeat(hang)),
            });
        }
        i
    }
}

/// A code line, indented by four spaces.
fn verbatim(line: &str) -> String {
    let line = line.trim_end();
    if line.is_empty() { String::new() } else { format!("    {line}") }
}

/// `# Title` (level and text), with up to three spaces before and optional closing `#`s.
fn atx_heading(line: &str) -> Option<(usize, &str)> {
    if indent(line) > 3 {
        return None;
    }
    let rest = line.trim_start();
    let level = rest.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let text = rest.get(level..)?;
    if !text.is_empty() && !text.starts_with(' ') {
        return None;
    }
    let text = text.trim();
    let closed = text.trim_end_matches('#');
    let text = if closed.is_empty() || closed.ends_with(' ') { closed.trim_end() } else { text };
    Some((level, text))
}

/// A setext underline: `===` (level 1) or `---` (level 2).
fn setext(line: &str) -> Option<usize> {
    if indent(line) > 3 {
        return None;
    }
    let t = line.trim();
    if !t.is_empty() && t.bytes().all(|b| b == b'=') {
        Some(1)
    } else if t.len() >= 2 && t.bytes().all(|b| b == b'-') {
        Some(2)
    } else {
        None
    }
}

/// `---`, `***` or `___`, spaces allowed between.
fn is_rule(line: &str) -> bool {
    if indent(line) > 3 {
        return false;
    }
    let chars: Vec<u8> = line.bytes().filter(|b| *b != b' ').collect();
    chars.len() >= 3 && matches!(chars[0], b'-' | b'*' | b'_') && chars.iter().all(|&b| b == chars[0])
}

/// The text of a `>` line.
fn quote(line: &str) -> Option<&str> {
    if indent(line) > 3 {
        return None;
    }
    let rest = line.trim_start().strip_prefix('>')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// A list item's first line.
struct Item<'a> {
    /// The marker to show, with its trailing space (`- `, `3. `).
    marker: String,
    /// Column where the item's content starts in the source.
    offset: usize,
    first: &'a str,
    /// Whether it may interrupt a paragraph (bullets, and numbered items starting at 1).
    interrupts: bool,
}

fn list_item(line: &str) -> Option<Item<'_>> {
    let ind = indent(line);
    if ind > 3 {
        return None;
    }
    let rest = line.get(ind..)?;
    let bytes = rest.as_bytes();
    let (marker, len, interrupts) = match bytes.first()? {
        b'-' | b'*' | b'+' => ("-".to_string(), 1, true),
        b'0'..=b'9' => {
            let n = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            if n > 9 || !matches!(bytes.get(n), Some(b'.' | b')')) {
                return None;
            }
            let number = rest.get(..n)?;
            let sep = if bytes.get(n) == Some(&b')') { ")" } else { "." };
            (format!("{number}{sep}"), n + 1, number.trim_start_matches('0') == "1")
        }
        _ => return None,
    };
    let after = rest.get(len..)?;
    if !after.is_empty() && !after.starts_with(' ') {
        return None;
    }
    let spaces = indent(after);
    let (spaces, first) = if after.trim().is_empty() {
        (1, "")
    } else if spaces > 4 {
        (1, after.get(1..).unwrap_or(""))
    } else {
        (spaces, after.get(spaces..).unwrap_or(""))
    };
    Some(Item {
        marker: format!("{marker} "),
        offset: ind + len + spaces,
        first,
        interrupts: interrupts && !first.is_empty(),
    })
}

fn heading(text: &str, level: usize, styled: bool) -> String {
    let mut chars = inline(text);
    if styled {
        chars.iter_mut().for_each(|c| c.flags |= BOLD | UNDERLINE);
        return emit(&chars, true);
    }
    let text = emit(&chars, false);
    let bar = if level <= 2 { "==" } else { "--" };
    format!("{bar} {text} {bar}")
}

/// A paragraph: inline markup, hard breaks, re-flowed to `width`.
fn paragraph(lines: &Lines, width: usize, styled: bool) -> Vec<String> {
    let mut text = String::new();
    for (n, &(_, l)) in lines.iter().enumerate() {
        let last = n + 1 == lines.len();
        let mut t = l.trim();
        let hard = !last && (l.ends_with("  ") || t.ends_with('\\'));
        if hard && t.ends_with('\\') {
            t = t.get(..t.len() - 1).unwrap_or(t).trim_end();
        }
        text.push_str(t);
        if !last {
            text.push(if hard { '\n' } else { ' ' });
        }
    }
    wrap(&inline(&text), width).iter().map(|line| emit(line, styled)).collect()
}

/// A visible character and its style.
#[derive(Debug, Clone, Copy)]
struct SChar {
    ch: char,
    flags: u8,
}

/// An emphasis delimiter run (`*`, `**`, `_`...).
struct Delim {
    underscore: bool,
    /// Unused characters are `out[start..end]`; openers use them from the end, closers from the start.
    start: usize,
    end: usize,
    can_open: bool,
    can_close: bool,
}

/// A link being rendered: at `close` (its `]`), show `url` and continue after `after`.
struct OpenLink {
    close: usize,
    after: usize,
    url: Vec<char>,
}

/// Inline markup to styled characters: code spans, links, emphasis and escapes.
fn inline(text: &str) -> Vec<SChar> {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();

    // Escapes and backtick runs.
    let mut skip = vec![false; n];
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < n {
        if chars[i] == '\\' && chars.get(i + 1).is_some_and(|c| c.is_ascii_punctuation()) {
            skip[i] = true;
            skip[i + 1] = true;
            i += 2;
        } else if chars[i] == '`' {
            let len = chars[i..].iter().take_while(|&&c| c == '`').count();
            runs.push((i, len));
            i += len;
        } else {
            i += 1;
        }
    }
    // Code spans: each run pairs with the next run of the same length.
    let mut next_same = vec![None; runs.len()];
    let mut last_of_len: HashMap<usize, usize> = HashMap::new();
    for (r, &(_, len)) in runs.iter().enumerate().rev() {
        next_same[r] = last_of_len.insert(len, r);
    }
    let mut code: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut r = 0;
    while r < runs.len() {
        match next_same[r] {
            Some(r2) => {
                let (start, len) = runs[r];
                let (close, close_len) = runs[r2];
                code.insert(start, (start + len, close));
                skip[start..close + close_len].iter_mut().for_each(|s| *s = true);
                r = r2 + 1;
            }
            None => r += 1,
        }
    }
    // Brackets and parentheses.
    let mut pair = vec![usize::MAX; n];
    let (mut brackets, mut parens) = (Vec::new(), Vec::new());
    for (k, &c) in chars.iter().enumerate() {
        if skip[k] {
            continue;
        }
        let (stack, closing) = match c {
            '[' | ']' => (&mut brackets, c == ']'),
            '(' | ')' => (&mut parens, c == ')'),
            _ => continue,
        };
        if !closing {
            stack.push(k);
        } else if let Some(open) = stack.pop() {
            pair[open] = k;
        }
    }

    let mut out: Vec<SChar> = Vec::with_capacity(n);
    let mut removed: Vec<bool> = Vec::with_capacity(n);
    let mut delims: Vec<Delim> = Vec::new();
    let mut links: Vec<OpenLink> = Vec::new();
    let push = |out: &mut Vec<SChar>, removed: &mut Vec<bool>, ch: char, flags: u8| {
        out.push(SChar { ch, flags });
        removed.push(false);
    };
    let mut i = 0;
    while i < n {
        while links.last().is_some_and(|l| l.close < i) {
            links.pop();
        }
        if links.last().is_some_and(|l| l.close == i)
            && let Some(link) = links.pop()
        {
            push(&mut out, &mut removed, ' ', 0);
            push(&mut out, &mut removed, '<', 0);
            link.url.iter().for_each(|&c| push(&mut out, &mut removed, c, LINK));
            push(&mut out, &mut removed, '>', 0);
            i = link.after;
            continue;
        }
        let c = chars[i];
        if c == '\\' && skip[i] && chars.get(i + 1).is_some_and(|c| c.is_ascii_punctuation()) {
            push(&mut out, &mut removed, chars[i + 1], 0);
            i += 2;
            continue;
        }
        if c == '`' {
            if let Some(&(start, close)) = code.get(&i) {
                let mut content: Vec<char> =
                    chars[start..close].iter().map(|&c| if c == '\n' { ' ' } else { c }).collect();
                if content.len() >= 2
                    && content.first() == Some(&' ')
                    && content.last() == Some(&' ')
                    && content.iter().any(|&c| c != ' ')
                {
                    content.pop();
                    content.remove(0);
                }
                content.into_iter().for_each(|c| push(&mut out, &mut removed, c, CODE));
                let len = start - i;
                i = close + len;
                continue;
            }
            let len = chars[i..].iter().take_while(|&&c| c == '`').count();
            (0..len).for_each(|_| push(&mut out, &mut removed, '`', 0));
            i += len;
            continue;
        }
        let open = if c == '[' && !skip[i] {
            Some(i)
        } else if c == '!' && chars.get(i + 1) == Some(&'[') && !skip[i + 1] {
            Some(i + 1)
        } else {
            None
        };
        if let Some(open) = open
            && let Some((close, after, url)) = link_at(&chars, &pair, open)
        {
            if chars[open + 1..close] == url[..] {
                push(&mut out, &mut removed, '<', 0);
                url.iter().for_each(|&c| push(&mut out, &mut removed, c, LINK));
                push(&mut out, &mut removed, '>', 0);
                i = after;
            } else {
                links.push(OpenLink { close, after, url });
                i = open + 1;
            }
            continue;
        }
        if (c == '*' || c == '_') && !skip[i] {
            let len = chars[i..].iter().take_while(|&&x| x == c).count();
            let before = if i == 0 { ' ' } else { chars[i - 1] };
            let after = chars.get(i + len).copied().unwrap_or(' ');
            let punct = |c: char| c.is_ascii_punctuation();
            let left = !after.is_whitespace() && (!punct(after) || before.is_whitespace() || punct(before));
            let right = !before.is_whitespace() && (!punct(before) || after.is_whitespace() || punct(after));
            let (can_open, can_close) = if c == '*' {
                (left, right)
            } else {
                (left && (!right || punct(before)), right && (!left || punct(after)))
            };
            let start = out.len();
            (0..len).for_each(|_| push(&mut out, &mut removed, c, 0));
            delims.push(Delim { underscore: c == '_', start, end: start + len, can_open, can_close });
            i += len;
            continue;
        }
        push(&mut out, &mut removed, c, 0);
        i += 1;
    }

    // Pair emphasis delimiters; style the text between them.
    let mut bold = vec![0i32; out.len() + 1];
    let mut italic = vec![0i32; out.len() + 1];
    let mut openers: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for d in 0..delims.len() {
        let kind = usize::from(delims[d].underscore);
        if delims[d].can_close {
            while delims[d].end > delims[d].start {
                let Some(&o) = openers[kind].last() else { break };
                let used = if delims[o].end - delims[o].start >= 2 && delims[d].end - delims[d].start >= 2 {
                    2
                } else {
                    1
                };
                let (from, to) = (delims[o].end, delims[d].start);
                removed[from - used..from].iter_mut().for_each(|r| *r = true);
                removed[to..to + used].iter_mut().for_each(|r| *r = true);
                let marks = if used == 2 { &mut bold } else { &mut italic };
                marks[from] += 1;
                marks[to] -= 1;
                delims[o].end -= used;
                delims[d].start += used;
                if delims[o].end == delims[o].start {
                    openers[kind].pop();
                }
            }
        }
        if delims[d].can_open && delims[d].end > delims[d].start {
            openers[kind].push(d);
        }
    }
    let (mut b, mut it) = (0, 0);
    let mut result = Vec::with_capacity(out.len());
    for (k, sc) in out.into_iter().enumerate() {
        b += bold[k];
        it += italic[k];
        if !removed[k] {
            let flags = sc.flags | if b > 0 { BOLD } else { 0 } | if it > 0 { ITALIC } else { 0 };
            result.push(SChar { ch: sc.ch, flags });
        }
    }
    result
}

/// A link `[text](url)` opening at `open`: the `]`, the index after `)` and the destination.
fn link_at(chars: &[char], pair: &[usize], open: usize) -> Option<(usize, usize, Vec<char>)> {
    let close = *pair.get(open)?;
    if close == usize::MAX || chars.get(close + 1) != Some(&'(') {
        return None;
    }
    let end = *pair.get(close + 1)?;
    if end == usize::MAX || end - close > MAX_URL {
        return None;
    }
    let dest = chars.get(close + 2..end)?;
    if dest.contains(&'\n') {
        return None;
    }
    let dest: String = dest.iter().collect();
    let dest = dest.trim();
    let url = match dest.strip_prefix('<').and_then(|d| d.find('>').and_then(|e| d.get(..e))) {
        Some(url) => url,
        None => dest.split_whitespace().next().unwrap_or(""),
    };
    Some((close, end + 1, url.chars().collect()))
}

/// Greedy word wrap; `\n` forces a break. Words longer than the width stay whole.
fn wrap(chars: &[SChar], width: usize) -> Vec<Vec<SChar>> {
    let mut lines = Vec::new();
    for hard in chars.split(|c| c.ch == '\n') {
        let mut line: Vec<SChar> = Vec::new();
        let mut len = 0;
        let mut space: Option<SChar> = None;
        let mut k = 0;
        while k < hard.len() {
            if hard[k].ch == ' ' {
                space.get_or_insert(hard[k]);
                k += 1;
                continue;
            }
            let end = hard[k..].iter().position(|c| c.ch == ' ').map_or(hard.len(), |e| k + e);
            let word = &hard[k..end];
            if len > 0 && len + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
                len = 0;
            }
            if len > 0 {
                line.push(space.unwrap_or(SChar { ch: ' ', flags: 0 }));
                len += 1;
            }
            line.extend_from_slice(word);
            len += word.len();
            space = None;
            k = end;
        }
        lines.push(line);
    }
    lines
}

/// Characters to text, with ANSI escapes when `styled`.
fn emit(chars: &[SChar], styled: bool) -> String {
    let mut s = String::with_capacity(chars.len());
    let mut current = 0u8;
    for c in chars {
        if styled && c.flags != current {
            if current != 0 {
                s.push_str("\x1b[0m");
            }
            if c.flags != 0 {
                s.push_str(&sgr(c.flags));
            }
            current = c.flags;
        }
        s.push(c.ch);
    }
    if current != 0 {
        s.push_str("\x1b[0m");
    }
    s
}

fn sgr(flags: u8) -> String {
    let mut codes = Vec::new();
    if flags & (BOLD | CODE) != 0 {
        codes.push("1");
    }
    if flags & ITALIC != 0 {
        codes.push("3");
    }
    if flags & (UNDERLINE | LINK) != 0 {
        codes.push("4");
    }
    if flags & CODE != 0 {
        codes.push("36");
    }
    format!("\x1b[{}m", codes.join(";"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(md: &str) -> String {
        render(md, false)
    }

    #[test]
    fn headings_plain_and_styled() {
        assert_eq!(plain("# First image\n\nText."), "== First image ==\n\nText.\n");
        assert_eq!(plain("### Deeper ###\ntext"), "-- Deeper --\ntext\n");
        assert_eq!(plain("Setext\n======\n\nSub\n---\n"), "== Setext ==\n\n== Sub ==\n");
        assert_eq!(plain("#nothashtag"), "#nothashtag\n");
        assert_eq!(render("# Title `x`", true), "\x1b[1;4mTitle \x1b[0m\x1b[1;4;36mx\x1b[0m\n");
    }

    #[test]
    fn paragraphs_are_reflowed() {
        let md = "The quick brown fox\njumps over the lazy dog and keeps running far away.\n\nSecond.";
        assert_eq!(
            render_width(md, false, 24),
            "The quick brown fox\njumps over the lazy dog\nand keeps running far\naway.\n\nSecond.\n"
        );
        let long = "word ".repeat(100);
        for line in render_width(&long, false, 30).lines() {
            assert!(line.chars().count() <= 30, "{line:?}");
        }
        assert_eq!(
            render_width("a https://very.long/url/that/does/not/fit b", false, 20),
            "a\nhttps://very.long/url/that/does/not/fit\nb\n"
        );
    }

    #[test]
    fn hard_breaks_are_kept() {
        assert_eq!(plain("one  \ntwo\\\nthree\nfour"), "one\ntwo\nthree four\n");
    }

    #[test]
    fn code_blocks_are_verbatim_and_indented() {
        let md = "Run:\n\n```sh\nls  -l   *.json\n\n  indented **not bold**\n```\nAfter.";
        assert_eq!(plain(md), "Run:\n\n    ls  -l   *.json\n\n      indented **not bold**\nAfter.\n");
        let md = "Text:\n\n    code   here\n\tand tab\n\n    more\n\nend";
        assert_eq!(plain(md), "Text:\n\n    code   here\n    and tab\n\n    more\n\nend\n");
        // Unterminated fences run to the end.
        assert_eq!(plain("~~~\nx *y*"), "    x *y*\n");
    }

    #[test]
    fn lists_keep_a_hanging_indent() {
        let md = "- one two three four five six\n- second\n  continued\n\n1. first item here\n10. tenth";
        assert_eq!(
            render_width(md, false, 20),
            "- one two three four\n  five six\n- second continued\n\n1. first item here\n10. tenth\n"
        );
        let nested = "* top\n  * inner *it*\n    more\n* next\nlazy";
        assert_eq!(plain(nested), "- top\n  - inner it more\n- next lazy\n");
        let loose = "1. a\n\n   para\n\n2) b";
        assert_eq!(plain(loose), "1. a\n\n   para\n\n2) b\n");
        assert_eq!(plain("Text\n- item"), "Text\n- item\n");
        assert_eq!(plain("In\n2014. nothing"), "In 2014. nothing\n");
        assert_eq!(render("- a", true), "• a\n");
    }

    #[test]
    fn inline_code_and_emphasis() {
        assert_eq!(plain("Run `devami run x` now"), "Run devami run x now\n");
        assert_eq!(plain("``a ` b`` and ` `` `"), "a ` b and ``\n");
        assert_eq!(
            plain("**bold** and *it* and _it_ and __b__ and ***both***"),
            "bold and it and it and b and both\n"
        );
        assert_eq!(
            plain("snake_case_name and 2 * 3 * 4 and a ** b"),
            "snake_case_name and 2 * 3 * 4 and a ** b\n"
        );
        assert_eq!(plain("\\*not italic\\* and \\`x\\`"), "*not italic* and `x`\n");
        assert_eq!(plain("`**not bold**`"), "**not bold**\n");
        assert_eq!(render("**b** *i* `c`", true), "\x1b[1mb\x1b[0m \x1b[3mi\x1b[0m \x1b[1;36mc\x1b[0m\n");
    }

    #[test]
    fn links_show_their_url() {
        assert_eq!(
            plain("See [the *docs*](https://x.y/z \"Title\") and ![logo](img.png)."),
            "See the docs <https://x.y/z> and logo <img.png>.\n"
        );
        assert_eq!(plain("[https://a.b](https://a.b)"), "<https://a.b>\n");
        assert_eq!(plain("[not a link] (x) and [a](b(c))"), "[not a link] (x) and a <b(c)>\n");
        assert_eq!(plain("`[x](y)`"), "[x](y)\n");
    }

    #[test]
    fn html_comments_are_dropped() {
        assert_eq!(plain("a <!-- hidden --> b\n<!-- whole line -->\nc"), "a b c\n");
        assert_eq!(plain("x\n<!--\nmany\nlines\n-->\ny"), "x y\n");
        assert_eq!(plain("```\n<!-- kept in code -->\n```"), "    <!-- kept in code -->\n");
        assert_eq!(plain("before <!-- never closed\nafter"), "before\n");
    }

    #[test]
    fn quotes_rules_and_tables() {
        assert_eq!(plain("> quoted *text*\n> more\n>\n> - item"), "> quoted text more\n>\n> - item\n");
        assert_eq!(plain("a\n\n---\n\nb"), format!("a\n\n{}\n\nb\n", "-".repeat(40)));
        assert_eq!(plain("| a | b |\n|---|---|\n| **1** | 2 |"), "| a | b |\n|---|---|\n| **1** | 2 |\n");
    }

    #[test]
    fn control_characters_are_dropped() {
        assert_eq!(plain("a\x1b[31mred\x07"), "a[31mred\n");
        assert_eq!(plain(""), "");
        assert_eq!(plain("\n\n  \n"), "");
    }

    #[test]
    fn malformed_markdown_never_panics() {
        let samples = [
            "**unclosed bold and *italic and `code and [link](",
            "[[[[]]]](((((",
            "![",
            "`",
            "``` `",
            "<!--",
            "-->",
            "\\",
            "*",
            "_a_b_c_ **a*b**c* ***",
            "# ",
            "#",
            "1.",
            "-",
            "> ",
            "[a](<b)",
            "[a](b\\",
            "é*ü*漢_字_",
            "    ",
            "- a\n\n\n      code\n",
        ];
        for md in samples {
            let _ = render(md, true);
            let _ = render_width(md, false, 0);
        }
        let deep = ">".repeat(100_000);
        let _ = render(&deep, false);
        let nested: String = (0..1_000).map(|i| format!("{}- x\n", "  ".repeat(i))).collect();
        let _ = render(&nested, false);
        let quotes: String = (0..1_000).map(|i| format!("{}x\n", "> ".repeat(i))).collect();
        let _ = render(&quotes, false);
    }

    #[test]
    fn megabyte_of_markup_is_fast() {
        let started = std::time::Instant::now();
        for unit in ["*a ", "[a", "`a ``", "**a_ ", "[a](", "<!-- a ", "a\n", "- a\n  "] {
            let md = unit.repeat((1 << 20) / unit.len());
            let out = render(&md, false);
            assert!(!out.is_empty() || unit.starts_with("<!--"));
        }
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }
}
