#!/usr/bin/env python3
"""Word statistics of a text: counts, vocabulary, the most frequent words and line lengths.

Usage: wordstats.py INPUT CONFIG OUTDIR
CONFIG is JSON: {"top": 5, "min_length": 3, "lowercase": true}.
Writes OUTDIR/summary.json and OUTDIR/top_words.csv and prints a short report.
"""
import collections
import json
import re
import statistics
import sys


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    source, config_path, outdir = argv[1:]
    with open(config_path) as f:
        config = json.load(f)
    top = int(config.get("top", 10))
    min_length = int(config.get("min_length", 1))
    with open(source, encoding="utf-8") as f:
        text = f.read()
    if config.get("lowercase", True):
        text = text.lower()
    lines = text.splitlines()
    words = [w for w in re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)?", text) if len(w) >= min_length]
    if not words:
        sys.exit(f"no words of at least {min_length} letters in {source}")
    counts = collections.Counter(words)
    summary = {
        "lines": len(lines),
        "words": len(words),
        "vocabulary": len(counts),
        "mean_word_length": round(statistics.mean(len(w) for w in words), 3),
        "mean_line_words": round(statistics.mean(len(l.split()) for l in lines if l.strip()), 3),
        "top": counts.most_common(top),
    }
    with open(f"{outdir}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    with open(f"{outdir}/top_words.csv", "w") as f:
        f.write("word,count\n")
        for word, n in counts.most_common(top):
            f.write(f"{word},{n}\n")
    print(f"{summary['words']} words, {summary['vocabulary']} distinct, {summary['lines']} lines")
    for word, n in counts.most_common(top):
        print(f"{word:>12} {n}")


if __name__ == "__main__":
    main(sys.argv)
