"""Deterministic, deliberately nasty text corpus for tokenizer parity tests and benchmarks.

make_corpus(seed, target_bytes) returns a list of documents mixing: prose in many scripts,
English with contractions in every casing, source code with tabs/CRLF/long indentation,
numbers in several numeral systems, emoji (ZWJ sequences, skin tones, flags, keycaps),
whitespace of every kind and length, unusual Unicode (noncharacters, private use, unassigned code
points, controls, bidi controls, stacked combining marks, decomposed and non-canonically ordered
sequences for NFC), special-token strings of the shared tokenizers embedded in text, and random
code point soup. Everything derives from random.Random(seed).
"""
import random

SPECIAL_STRINGS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|vision_pad|>", "<|startoftext|>", "<|return|>", "<|channel|>", "<|message|>",
    "<|start|>", "<|end|>", "<|call|>", "<|constrain|>", "<|reserved_200000|>", "<|endofprompt|>",
    "<s>", "</s>", "<unk>", "[INST]", "[/INST]",
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜User｜>", "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>",
    "<｜tool▁outputs▁begin｜>", "<｜fim▁hole｜>", "<｜place▁holder▁no▁17｜>", "<think>\n", "<|place▁holder",
    # near misses
    "<|im_start", "|im_end|>", "<|<|im_end|>|>", "<|endoftext|><|endoftext|>", "<｜tool▁sep", "<|endoftext|",
]

ENGLISH = """the of and to in is you that it he was for on are as with his they at be this have from
or one had by word but not what all were we when your can said there use an each which she do how
their if will up other about out many then them these so some her would make like him into time has
look two more write go see number no way could people my than first water been call who oil its now
find long down day did get come made may part over new sound take only little work know place year
live me back give most very after thing our just name good sentence man think say great where help
through much before line right too mean old any same tell boy follow came want show also around form
three small set put end does another well large must big even such because turn here why ask went men
read need land different home us move try kind hand picture again change off play spell air away animal
house point page letter mother answer found study still learn should America world tokenizer merge
byte-level pre-tokenizer normalization""".split()

CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'D",
                "'ſ", "\u2019s", "'", "''", "'x"]

# (start, end) code point ranges of letters of various scripts, for pseudo-words.
SCRIPTS = {
    "latin": [(0x61, 0x7A)], "latin_ext": [(0xC0, 0xFF), (0x100, 0x17F), (0x180, 0x24F)],
    "greek": [(0x3B1, 0x3C9), (0x391, 0x3A9)], "cyrillic": [(0x430, 0x44F), (0x410, 0x42F)],
    "armenian": [(0x561, 0x586)], "hebrew": [(0x5D0, 0x5EA)], "arabic": [(0x627, 0x64A)],
    "devanagari": [(0x905, 0x939), (0x93E, 0x94D)], "bengali": [(0x985, 0x9B9)], "tamil": [(0xB85, 0xBB9)],
    "thai": [(0xE01, 0xE30)], "georgian": [(0x10D0, 0x10F0)], "ethiopic": [(0x1200, 0x1248)],
    "hangul": [(0xAC00, 0xD7A3)], "hiragana": [(0x3041, 0x3096)], "katakana": [(0x30A1, 0x30FA)],
    "cjk": [(0x4E00, 0x9FA5)], "cjk_ext": [(0x9FA6, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF)],
    "tibetan": [(0xF40, 0xF6C)], "cherokee": [(0x13A0, 0x13F5)], "mongolian": [(0x1820, 0x1878)],
    "fullwidth": [(0xFF21, 0xFF3A), (0xFF41, 0xFF5A)], "math_alnum": [(0x1D400, 0x1D4FF)],
    "garay": [(0x10D50, 0x10D65), (0x10D70, 0x10D85)],  # Unicode 16.0 cased script
}

EMOJI = ["😀", "😂", "🥹", "🤖", "🚀", "🎉", "❤️", "👍🏽", "👩🏿‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "1️⃣", "#️⃣", "🧑‍🤝‍🧑",
         "✍🏻", "☺", "♥", "⭐", "🫠", "🪿", "\U0001F9D1\u200D\U0001F680"]

NUMBERS = ["0", "7", "42", "123", "1234", "12345", "3.14159", "1,000,000", "-17", "+8", "1e-9", "0x1F",
           "٠١٢٣٤٥", "०१२३", "１２３４", "²³", "½¾", "ⅫⅣ", "𝟘𝟙𝟚", "2025-06-01", "12:30:45", "৩৪", "๓๔"]

WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r\n\r\n", "\r", " \n", "\n ", " \t \n",
              "\u00a0", "\u3000", "\u2028", "\u2029", "\u000b", "\u000c", "\u0085", "\u2003", "\u202f", "\u1680"]

CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "if __name__ == \"__main__\":\r\n    main()\r\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "<div class=\"x\">&nbsp;<span>Hi</span></div>\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;\n",
    "    \t    mixed_indent = 1\n",
    "#include <vector>\nstd::vector<int> v{1,2,3};\n",
    "x = y if z else w\n\n\n\n",
    "const re = /^[a-z]+$/gi; // regex\n",
    "fn main() { println!(\"{}\", 1u32.wrapping_add(2)); }\n",
    "    " * 12 + "deep = True\n",
    "path/to/file.txt C:\\Users\\name\\file.py https://example.com/a?b=c&d=e#f\n",
]

UNUSUAL = [
    "\ufdd0", "\ufdef", "\ufffe", "\uffff", "\U0001fffe", "\U0010ffff",      # noncharacters
    "\ue000", "\uf8ff", "\U000f0000", "\U00100001",                       # private use
    "\u0378", "\u0530", "\U0002fffd", "\U000e0080", "\U0003134b", "\u08b5",  # unassigned
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad",           # zero-width / format
    "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2069",  # bidi
    "\x00", "\x01", "\x07", "\x1b", "\x7f", "\x80", "\x9f",              # controls
    "\ufffd", "\u2126", "\u212b", "\u0958", "\u0344", "\u0f73", "\u1e9b\u0323",  # NFC singletons/exclusions
    "e\u0301", "a\u0308\u0301", "o\u0323\u0302", "o\u0302\u0323", "\u1100\u1161\u11a8", "\u1100\u1161",
    "\uac00\u11a8", "A\u030a", "\u0b47\u0b3e", "\u0dd9\u0dcf", "\u05d0\u05b8\u05bc", "q\u0307\u0323",
    "\u1e0b\u0323", "\u00e9\u0316", "\u0041\u0327\u030a", "\u0069\u0307", "\u03b1\u0313\u0301\u0345",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034d",
    "\u1ab0\u1dfa\u0300", "\U0001e944\u0301",  # marks newer than Unicode 9 next to old ones
    "ſ", "K", "ß", "ẞ", "ﬆ", "İ", "ı", "ǅ", "ᾼ",  # case-folding oddities
    "\U0001d7ce", "\U0001f1e6\U0001f1ff", "\u20e3", "\ufe0f", "\ufe0e", "\U000e0061",
]


def _pseudo_word(rng, ranges, lo=1, hi=9):
    out = []
    for _ in range(rng.randint(lo, hi)):
        a, b = rng.choice(ranges)
        out.append(chr(rng.randint(a, b)))
    return "".join(out)


def _english(rng, n_words):
    words = []
    for _ in range(n_words):
        w = rng.choice(ENGLISH)
        r = rng.random()
        if r < 0.1:
            w = w.capitalize()
        elif r < 0.13:
            w = w.upper()
        elif r < 0.15:
            w = "".join(c.upper() if rng.random() < 0.5 else c for c in w)
        if rng.random() < 0.08:
            w += rng.choice(CONTRACTIONS)
        if rng.random() < 0.1:
            w += rng.choice([",", ".", "!", "?", ";", ":", "...", ")", "\"", "'", " -", "—", "/"])
        if rng.random() < 0.03:
            w = rng.choice(["(", "\"", "'", "[", "«", "¿", "--"]) + w
        words.append(w)
    sep = lambda: " " if rng.random() < 0.93 else rng.choice(WHITESPACE)
    return "".join(w + sep() for w in words)


def _multiscript(rng, n_words):
    parts = []
    for _ in range(n_words):
        script = rng.choice(list(SCRIPTS))
        parts.append(_pseudo_word(rng, SCRIPTS[script]))
        if rng.random() < 0.15:
            parts.append(rng.choice(["。", "、", "，", "！", "؟", "،", "।", "॥", "«", "»", "„", "“", "”", "…"]))
        parts.append(" " if rng.random() < 0.8 else rng.choice(["", "", "\n", "  ", "\t"]))
    return "".join(parts)


def _code(rng, n):
    return "".join(rng.choice(CODE) for _ in range(n))


def _numbers(rng, n):
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            out.append(str(rng.randint(0, 10 ** rng.randint(1, 15))))
        else:
            out.append(rng.choice(NUMBERS))
        out.append(rng.choice([" ", "", ",", ".", "\n", " + ", "x", "px", "%"]))
    return "".join(out)


def _whitespace(rng, n):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.2:
            out.append(" " * rng.randint(1, 200))
        elif r < 0.3:
            out.append("\t" * rng.randint(1, 12))
        elif r < 0.4:
            out.append("\r\n" * rng.randint(1, 5))
        else:
            out.append("".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 6))))
        out.append(rng.choice(["word", "x", "ab cd", "1", ".", "é", "中", "😀", "", "", "\u0301"]))
    return "".join(out)


def _emoji(rng, n):
    return "".join(rng.choice(EMOJI) + rng.choice(["", "", " ", "\u200d", "\ufe0f", "a", "\n"]) for _ in range(n))


def _unusual(rng, n):
    out = []
    for _ in range(n):
        out.append(rng.choice(UNUSUAL))
        out.append(rng.choice(["", " ", "a", "x ", "\n", "1", "中", rng.choice(UNUSUAL)]))
    return "".join(out)


def _specials(rng, n):
    out = []
    for _ in range(n):
        out.append(rng.choice(SPECIAL_STRINGS))
        out.append(rng.choice(["", " ", "  ", "\n", "Hello", " world", "x", "。", "<", "|", "｜", "<|", "▁"]))
    return "".join(out)


def _soup(rng, n):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            cp = rng.randint(0, 0x2FFFF)
        elif r < 0.6:
            cp = rng.randint(0, 0x10FFFF)
        else:
            cp = rng.randint(0, 0x7FF)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0xFFFD
        out.append(chr(cp))
    return "".join(out)


KINDS = [(_english, 6), (_multiscript, 4), (_code, 2), (_numbers, 2), (_whitespace, 2), (_emoji, 1),
         (_unusual, 2), (_specials, 1), (_soup, 1)]


def make_document(rng):
    pieces = []
    for _ in range(rng.randint(1, 4)):
        gen = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
        pieces.append(gen(rng, rng.randint(3, 120)))
    return "".join(pieces)


def make_corpus(seed=1234, target_bytes=1 << 20):
    rng = random.Random(seed)
    docs, size = [], 0
    while size < target_bytes:
        d = make_document(rng)
        docs.append(d)
        size += len(d.encode("utf-8"))
    return docs
