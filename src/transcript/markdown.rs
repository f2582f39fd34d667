//! Markdown pages as transcripts: each fenced code block whose info string is `devami` is a
//! transcript (`devami ignore`: shown by the tutorial player, not run).
//!
//! Code blocks are found by pulldown-cmark, so a fence inside a list item or a quote is one and
//! indented code that looks like a fence is not, as on any CommonMark page. A page is read in
//! the format's lines (ending at LF only) and every block maps back to them, so steps keep the
//! line numbers of the file. The prose before a block is attached to its first step, and the
//! prose after the last block is the page's epilogue.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

use super::{Block, ParseError, Step, Transcript, parse_block};

/// How a fenced code block ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockEnd {
    /// At its closing fence.
    Fence,
    /// With the list item or quote that holds it.
    Container,
    /// At the end of the page, unclosed.
    Page,
}

/// A fenced code block of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FencedBlock {
    /// 0-based index of the line of its opening fence.
    pub opening: usize,
    /// The fence characters that open it (```` ``` ````, `~~~~`...).
    pub fence: String,
    /// The info string after the fence, trimmed.
    pub info: String,
    /// Its lines without the list, quote and fence indentation before them; line `k` is line
    /// `opening + 1 + k` of the page.
    pub content: Vec<String>,
    /// 0-based index of its last line (the closing fence, if any).
    pub last: usize,
    pub end: BlockEnd,
}

/// The fenced code blocks of a page given as lines (without their line ends), in order.
pub(crate) fn fenced_blocks(lines: &[&str]) -> Vec<FencedBlock> {
    scan(lines).0
}

/// The fenced code blocks of a page, and the 0-based line of an HTML comment that is never closed
/// and holds a devami fence (CommonMark hides the rest of its container in such a comment).
fn scan(lines: &[&str]) -> (Vec<FencedBlock>, Option<usize>) {
    // Every fenced block opens with a line holding a fence: without one, spare the parse.
    if !lines.iter().any(|l| l.contains("```") || l.contains("~~~")) {
        return (Vec::new(), None);
    }
    let source = lines.join("\n");
    // pulldown-cmark also ends a line at a lone CR, which the format keeps inside the line: hide
    // CRs from it behind a byte that is no markup. Offsets stay offsets into `source`.
    let hidden = source.replace('\r', "\u{1}");
    let starts: Vec<usize> =
        std::iter::once(0).chain(source.match_indices('\n').map(|(at, _)| at + 1)).collect();
    let line_of = |offset: usize| starts.partition_point(|&s| s <= offset).saturating_sub(1);
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    let mut hiding_comment = None;
    for (event, range) in Parser::new_ext(&hidden, Options::empty()).into_offset_iter() {
        match event {
            Event::Start(Tag::HtmlBlock) if hiding_comment.is_none() => {
                let html = source.get(range.clone()).unwrap_or("");
                if comment_left_open_over_fence(html) {
                    hiding_comment = Some(line_of(range.start));
                }
            }
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(_))) => {
                open = Some((range.start, String::new()))
            }
            Event::Text(text) => {
                if let Some((_, content)) = open.as_mut() {
                    // Text taken from the page is taken from `source`, CRs included; spaces that
                    // stand for a tab partly taken by the indentation are new text.
                    match source.get(range.clone()) {
                        Some(original) if range.len() == text.len() => content.push_str(original),
                        _ => content.push_str(&text),
                    }
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((start, content)) = open.take() {
                    let opening = line_of(start);
                    let opener = source.get(start..).unwrap_or("");
                    let opener = opener.split('\n').next().unwrap_or("");
                    let ch = opener.chars().next().filter(|c| matches!(c, '`' | '~')).unwrap_or('`');
                    let len = opener.chars().take_while(|&c| c == ch).count();
                    let content: Vec<String> = content.split_terminator('\n').map(String::from).collect();
                    let last = line_of(range.end.saturating_sub(1).max(start));
                    let end = if last > opening + content.len() {
                        BlockEnd::Fence
                    } else if range.end >= hidden.len() {
                        BlockEnd::Page
                    } else {
                        BlockEnd::Container
                    };
                    blocks.push(FencedBlock {
                        opening,
                        fence: ch.to_string().repeat(len.max(3)),
                        info: opener.get(len..).unwrap_or("").trim().to_string(),
                        content,
                        last,
                        end,
                    });
                }
            }
            _ => {}
        }
    }
    (blocks, hiding_comment)
}

/// Whether an HTML block is a comment that its author left open over a devami fence: no line
/// closes it, or the line that does opens a comment of its own (the closer was meant for that
/// one). A comment closed on purpose around a devami block is left alone.
fn comment_left_open_over_fence(html: &str) -> bool {
    if !html.trim_start().starts_with("<!--") {
        return false;
    }
    let lines: Vec<&str> = html.lines().collect();
    let closing = lines.iter().position(|l| l.contains("-->"));
    let left_open = closing.is_none_or(|i| i > 0 && lines[i].contains("<!--"));
    let fence = lines.iter().take(closing.unwrap_or(lines.len())).any(|l| {
        let t = l.trim_start();
        (t.starts_with("```") || t.starts_with("~~~"))
            && t.trim_start_matches(['`', '~']).trim_start().starts_with("devami")
    });
    left_open && fence
}

/// Parses a page given as lines (without their line ends).
pub(super) fn parse(lines: &[&str]) -> Result<Transcript, ParseError> {
    let (blocks, hiding_comment) = scan(lines);
    if let Some(line) = hiding_comment {
        return Err(ParseError::UnclosedComment { line: line + 1 });
    }
    let mut steps: Vec<Step> = Vec::new();
    // The first line of the prose before the next block.
    let mut prose_from = 0;
    for block in blocks {
        let unclosed = || ParseError::UnclosedFence { line: block.opening + 1, fence: block.fence.clone() };
        let Some(run) = devami_block(&block.info, block.opening + 1)? else {
            if block.end == BlockEnd::Page {
                return Err(unclosed());
            }
            continue;
        };
        if block.end != BlockEnd::Fence {
            return Err(unclosed());
        }
        let content: Vec<(usize, &str)> = block
            .content
            .iter()
            .enumerate()
            .map(|(k, line)| (block.opening + 2 + k, line.as_str()))
            .collect();
        let prose = join_trimmed(lines.get(prose_from..block.opening).unwrap_or(&[]));
        parse_block(&content, &mut steps, Block { opened_at: Some(block.opening + 1), run, prose })?;
        prose_from = block.last + 1;
    }
    Ok(Transcript { steps, epilogue: join_trimmed(lines.get(prose_from..).unwrap_or(&[])) })
}

/// For a fence's info string: `None` when it is not a devami block, else whether it runs.
fn devami_block(info: &str, line: usize) -> Result<Option<bool>, ParseError> {
    let mut words = info.split_whitespace();
    if words.next() != Some("devami") {
        return Ok(None);
    }
    let mut run = true;
    for word in words {
        match word {
            "ignore" => run = false,
            other => {
                return Err(ParseError::UnknownAttribute { line, attribute: other.to_string() });
            }
        }
    }
    Ok(Some(run))
}

/// Joins lines, dropping blank lines at both ends.
fn join_trimmed(lines: &[&str]) -> String {
    let start = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(lines.len());
    let end = lines.iter().rposition(|l| !l.trim().is_empty()).map_or(start, |e| e + 1);
    lines.get(start..end).unwrap_or(&[]).join("\n")
}

#[cfg(test)]
mod tests {
    use crate::transcript::testing::{err, steps};
    use crate::transcript::{Kind, parse};

    const PAGE: &str = "# First image

Open the blueprint with `devami`. Use ``code with ` inside``:

```devami
devami> status
no instance
```

Then launch:

~~~devami
# a comment before the first input
devami> launch_devinstance
launched [ID]

devami> ssh
~~~

```sh
devami> this is not a step
```

```devami ignore
devami> terminate_devinstance --force
```

That's all.
";

    #[test]
    fn markdown_blocks_prose_and_epilogue() {
        let t = parse(PAGE, Kind::Markdown).unwrap();
        assert_eq!(
            steps(&t),
            vec![
                ("status", Some(vec!["no instance"])),
                ("launch_devinstance", Some(vec!["launched [ID]"])),
                ("ssh", Some(vec![])),
                ("terminate_devinstance --force", Some(vec![])),
            ]
        );
        let s = &t.steps;
        assert_eq!(
            s[0].prose,
            "# First image\n\nOpen the blueprint with `devami`. Use ``code with ` inside``:"
        );
        assert_eq!(s[1].prose, "Then launch:");
        assert_eq!(s[2].prose, "");
        assert_eq!(s[3].prose, "```sh\ndevami> this is not a step\n```");
        assert_eq!(t.epilogue, "That's all.");
        assert_eq!(s.iter().map(|s| s.line).collect::<Vec<_>>(), vec![6, 14, 17, 25]);
        assert_eq!(s.iter().map(|s| s.run).collect::<Vec<_>>(), vec![true, true, true, false]);
        assert_eq!(s.iter().map(|s| s.number).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn markdown_without_blocks_is_all_epilogue() {
        let t = parse("\n# Title\n\ntext\n\n", Kind::Markdown).unwrap();
        assert!(t.steps.is_empty());
        assert_eq!(t.epilogue, "# Title\n\ntext");
    }

    #[test]
    fn markdown_longer_fences_and_indented_blocks() {
        let text = "````markdown\n```devami\nnot a block\n```\n````\n\n1. Step:\n\n   ```devami\n   devami> a\n     out\n   ```\n";
        let t = parse(text, Kind::Markdown).unwrap();
        assert_eq!(steps(&t), vec![("a", Some(vec!["  out"]))]);
        assert!(t.steps[0].prose.starts_with("````markdown"), "{:?}", t.steps[0].prose);
    }

    #[test]
    fn markdown_unterminated_fence_is_an_error_with_line() {
        let e = err("text\n\n```devami\ndevami> a\n", Kind::Markdown);
        assert!(e.contains("line 3") && e.contains("never closed") && e.contains("```"), "{e}");
        let e = err("text\n~~~~sh\nls\n", Kind::Markdown);
        assert!(e.contains("line 2") && e.contains("~~~~"), "{e}");
    }

    #[test]
    fn markdown_block_without_prompt_is_an_error() {
        let e = err("a\n\n```devami\nstatus\n```\n", Kind::Markdown);
        assert!(e.contains("line 4") && e.contains("devami block at line 3"), "{e}");
        let e = err("a\n\n```devami\n# only a comment\n```\n", Kind::Markdown);
        assert_eq!(e, "devami block at line 3 has no `devami> ` input line");
    }

    #[test]
    fn markdown_unknown_attribute_is_an_error() {
        let e = err("```devami ignroe\ndevami> a\n```\n", Kind::Markdown);
        assert!(e.contains("line 1") && e.contains("`ignroe`"), "{e}");
    }

    #[test]
    fn markdown_nested_backticks_in_prose() {
        let text = "Use ```` `` ```` inline, and\n``` `a` ``` too.\n\n```devami\ndevami> x\n```\n";
        let t = parse(text, Kind::Markdown).unwrap();
        assert_eq!(steps(&t), vec![("x", Some(vec![]))]);
        assert_eq!(t.steps[0].prose, "Use ```` `` ```` inline, and\n``` `a` ``` too.");
    }

    #[test]
    fn a_comment_left_open_over_devami_blocks_is_an_error() {
        let page = "intro\n\n<!-- draft\n\n```devami\ndevami> status\n```\n";
        let e = super::parse(&page.lines().collect::<Vec<_>>()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the HTML comment opened at line 3 is never closed and hides the devami blocks after it; add `-->` where it ends"
        );
        let closed = "<!-- draft -->\n\n```devami\ndevami> status\n```\n";
        assert_eq!(super::parse(&closed.lines().collect::<Vec<_>>()).unwrap().steps.len(), 1);
        // A later comment that closes does not close the first one.
        let later = "<!-- a\n\n```devami\ndevami> status\n```\n\n<!-- b -->\n";
        assert!(super::parse(&later.lines().collect::<Vec<_>>()).is_err());
        // A devami block commented out on purpose is hidden, as the author meant.
        let meant = "<!--\n```devami\ndevami> status\n```\n-->\n\n```devami\ndevami> help\n```\n";
        assert_eq!(super::parse(&meant.lines().collect::<Vec<_>>()).unwrap().steps.len(), 1);
        // `<!--` in a code span or in another code block is no comment.
        let span =
            "Write `<!--` to start a comment.\n\n```html\n<!--\n```\n\n```devami\ndevami> status\n```\n";
        assert_eq!(super::parse(&span.lines().collect::<Vec<_>>()).unwrap().steps.len(), 1);
    }
}
