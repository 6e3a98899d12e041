#!/usr/bin/env python3
"""Generates src/text/unicode_tables.cpp: the Unicode data the tokenizer's regex engine and NFC
normalizer need, as compact ranges.

Two Unicode versions are in play, because the reference (HF `tokenizers`) uses two libraries:
  * Regex classes (\\p{..}, \\s, \\w, case folding) follow the Oniguruma bundled in the Rust `onig`
    crate, which is Unicode 16.0.0. Data: the `unicodedataplus` package 16.0.0 (general category,
    age, decomposition) plus the `regex` package for the Alphabetic property (restricted to code
    points assigned in 16.0).
  * NFC follows the `unicode-normalization-alignments` 0.1.12 crate, which is Unicode 9.0.0:
    characters assigned after 9.0 have combining class 0 and no decomposition there. Canonical
    decompositions and combining classes never change once assigned, so the 9.0 tables are the
    16.0 ones restricted to code points whose age is <= 9.0.

    pip install unicodedataplus==16.0.0.post1     (into /opt/esft/venv)
    /opt/esft/venv/bin/python scripts/gen_unicode_tables.py [--verify]

--verify checks every table against the HF `tokenizers` package on all code points (a minute):
each regex class through a Split pre-tokenizer, NFC through normalizers.NFC.
"""
import argparse
import os
import sys

import regex
import unicodedataplus as ud

ONIG_UNICODE = "16.0.0"
NFC_UNICODE_MAX_AGE = (9, 0)
assert ud.unidata_version == ONIG_UNICODE, f"need unicodedataplus {ONIG_UNICODE}, got {ud.unidata_version}"

# Order matters: the C++ enum GeneralCategory mirrors it.
CATEGORIES = ["Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd",
              "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf",
              "Cs", "Co"]
# White_Space (PropList.txt); unchanged since Unicode 6.3. Verified against Oniguruma's \s.
WHITE_SPACE = [(0x9, 0xD), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
               (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
               (0x3000, 0x3000)]

ALL_CPS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def assigned(cp):
    return ud.category(chr(cp)) != "Cn"


def age_tuple(cp):
    a = ud.age(chr(cp))
    if a == "Unassigned":
        return None
    major, minor = a.split(".")[:2]
    return int(major), int(minor)


def to_ranges(cps_with_value):
    """[(cp, value)] sorted -> [(start, end, value)] merging runs of consecutive cps."""
    out = []
    for cp, v in cps_with_value:
        if out and out[-1][1] == cp - 1 and out[-1][2] == v:
            out[-1][1] = cp
        else:
            out.append([cp, cp, v])
    return out


def category_ranges():
    return to_ranges([(cp, CATEGORIES.index(ud.category(chr(cp)))) for cp in ALL_CPS
                      if assigned(cp)] + [])


def alphabetic_ranges():
    alpha = regex.compile(r"\p{Alphabetic}")
    return to_ranges([(cp, 1) for cp in ALL_CPS if assigned(cp) and alpha.match(chr(cp))])


def simple_fold(cp):
    """Simple case folding approximated from Python's (full) casefold: single-char results only."""
    ch = chr(cp)
    f = ch.casefold()
    if len(f) == 1:
        return ord(f)
    low = ch.lower()
    if len(low) == 1:
        return ord(low)
    return cp


def fold_pairs():
    return [(cp, simple_fold(cp)) for cp in ALL_CPS if simple_fold(cp) != cp]


def multi_folds():
    return [(cp, chr(cp).casefold()) for cp in ALL_CPS if len(chr(cp).casefold()) > 1]


def nfc_data():
    """Canonical combining classes, decompositions and composition exclusions of Unicode 9.0."""
    ccc, decomp, excluded = [], [], []
    for cp in ALL_CPS:
        age = age_tuple(cp)
        if age is None or age > NFC_UNICODE_MAX_AGE:
            continue
        ch = chr(cp)
        c = ud.combining(ch)
        if c:
            ccc.append((cp, c))
        d = ud.decomposition(ch)
        if d and not d.startswith("<"):
            parts = [int(x, 16) for x in d.split()]
            assert 1 <= len(parts) <= 2, (hex(cp), d)
            decomp.append((cp, parts))
    ccc_of = dict(ccc)
    for cp, parts in decomp:
        # Full_Composition_Exclusion: singletons, non-starter decompositions, and the explicit
        # CompositionExclusions.txt list (which NFC itself reveals: the char does not survive).
        if (len(parts) == 1 or ccc_of.get(cp, 0) or ccc_of.get(parts[0], 0)
                or ud.normalize("NFC", chr(cp)) != chr(cp)):
            excluded.append(cp)
    return to_ranges(ccc), decomp, excluded


def fmt_ranges(name, ranges, with_value):
    lines = [f"const {'ValueRange' if with_value else 'Range'} {name}[] = {{"]
    row = []
    for s, e, v in ranges:
        row.append(f"{{0x{s:X},0x{e:X},{v}}}" if with_value else f"{{0x{s:X},0x{e:X}}}")
        if len(row) == 6:
            lines.append("  " + ",".join(row) + ",")
            row = []
    if row:
        lines.append("  " + ",".join(row) + ",")
    lines.append("};")
    lines.append(f"const size_t {name}Size = sizeof({name}) / sizeof({name}[0]);")
    return "\n".join(lines)


def generate(path):
    cats = category_ranges()
    alpha = alphabetic_ranges()
    folds = fold_pairs()
    mfolds = multi_folds()
    ccc, decomp, excluded = nfc_data()
    out = [
        "// Generated by scripts/gen_unicode_tables.py - do not edit.",
        f"// Regex data: Unicode {ONIG_UNICODE} (the Oniguruma of the Rust onig crate used by HF tokenizers).",
        "// NFC data: Unicode 9.0.0 (the unicode-normalization-alignments crate used by HF tokenizers).",
        '#include "unicode_tables.h"',
        "",
        "namespace esft::text::tables {",
        "",
        "// General category of every assigned code point (value = index in GeneralCategory).",
        fmt_ranges("kCategory", cats, True),
        "",
        fmt_ranges("kWhiteSpace", [(s, e, 1) for s, e in WHITE_SPACE], False),
        "",
        fmt_ranges("kAlphabetic", alpha, False),
        "",
        "// Simple case folding: code point -> folded code point, where they differ.",
        "const FoldPair kSimpleFold[] = {",
    ]
    for i in range(0, len(folds), 8):
        out.append("  " + ",".join(f"{{0x{a:X},0x{b:X}}}" for a, b in folds[i:i + 8]) + ",")
    out += ["};", "const size_t kSimpleFoldSize = sizeof(kSimpleFold) / sizeof(kSimpleFold[0]);", "",
            "// Code points whose full case folding is several characters (not matched by the regex engine).",
            "const MultiFold kMultiFold[] = {"]
    for i in range(0, len(mfolds), 4):
        out.append("  " + ",".join(
            "{0x%X,{%s}}" % (cp, ",".join(f"0x{ord(c):X}" for c in f)) for cp, f in mfolds[i:i + 4]) + ",")
    out += ["};", "const size_t kMultiFoldSize = sizeof(kMultiFold) / sizeof(kMultiFold[0]);", "",
            "// ---- NFC, Unicode 9.0.0 ----",
            "// Canonical combining class (non-zero only).",
            fmt_ranges("kCombiningClass", ccc, True), "",
            "// Canonical decompositions (one level; second = 0 for singletons).",
            "const Decomposition kDecomposition[] = {"]
    for i in range(0, len(decomp), 6):
        out.append("  " + ",".join(
            f"{{0x{cp:X},0x{p[0]:X},0x{(p[1] if len(p) > 1 else 0):X}}}" for cp, p in decomp[i:i + 6]) + ",")
    out += ["};", "const size_t kDecompositionSize = sizeof(kDecomposition) / sizeof(kDecomposition[0]);", "",
            "// Decomposable code points that never recompose (Full_Composition_Exclusion).",
            "const uint32_t kCompositionExclusion[] = {"]
    for i in range(0, len(excluded), 10):
        out.append("  " + ",".join(f"0x{cp:X}" for cp in excluded[i:i + 10]) + ",")
    out += ["};", "const size_t kCompositionExclusionSize = sizeof(kCompositionExclusion) / sizeof(kCompositionExclusion[0]);",
            "", "}  // namespace esft::text::tables", ""]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out))
    os.replace(tmp, path)
    print(f"wrote {path}: {len(cats)} category ranges, {len(alpha)} alphabetic ranges, {len(folds)} folds, "
          f"{len(ccc)} ccc ranges, {len(decomp)} decompositions, {len(excluded)} exclusions")


# ---- verification against HF tokenizers ---------------------------------------------------------

def hf_matched(pattern, text):
    from tokenizers import Regex, pre_tokenizers
    pieces = pre_tokenizers.Split(Regex(pattern), "removed").pre_tokenize_str(text)
    m = bytearray([1]) * len(text)
    for _, (a, b) in pieces:
        m[a:b] = bytes(b - a)
    return m


def verify_regex_classes():
    text = "".join(map(chr, ALL_CPS))
    cat = [ud.category(chr(cp)) for cp in ALL_CPS]
    alpha = set()
    for s, e, _ in alphabetic_ranges():
        alpha.update(range(s, e + 1))
    ws = set()
    for s, e in WHITE_SPACE:
        ws.update(range(s, e + 1))
    onig_latin1_word = {0xB2, 0xB3, 0xB9, 0xBC, 0xBD, 0xBE}  # Oniguruma's ISO-8859-1 ctype quirk
    checks = {r"\s": lambda i: ALL_CPS[i] in ws,
              r"\d": lambda i: cat[i] == "Nd",
              r"\w": lambda i: (ALL_CPS[i] in alpha or cat[i][0] == "M" or cat[i] in ("Nd", "Pc")
                                or ALL_CPS[i] in onig_latin1_word)}
    for major in "LMNPSZC":
        checks[rf"\p{{{major}}}"] = lambda i, m=major: cat[i][0] == m
    for c in CATEGORIES:
        checks[rf"\p{{{c}}}"] = lambda i, c=c: cat[i] == c
    for letter in "abcdefghijklmnopqrstuvwxyz":
        orbit = {cp for cp, f in fold_pairs() if f == ord(letter)} | {ord(letter)}
        checks[f"(?i:{letter})"] = lambda i, o=orbit: ALL_CPS[i] in o
    bad = 0
    for pattern, pred in checks.items():
        m = hf_matched(pattern, text)
        wrong = [ALL_CPS[i] for i in range(len(ALL_CPS)) if bool(m[i]) != pred(i)]
        if wrong:
            bad += 1
            print(f"MISMATCH {pattern}: {len(wrong)} code points, first {[hex(w) for w in wrong[:8]]}")
    print(f"regex classes: {len(checks)} checked, {bad} mismatching")
    return bad == 0


def py_nfc(s, ccc, decomp, compose):
    """Reference NFC over the generated tables (mirrors what the C++ side implements)."""
    SB, LB, VB, TB, NL, NV, NT = 0xAC00, 0x1100, 0x1161, 0x11A7, 19, 21, 28
    out = []

    def dec(cp):
        if SB <= cp < SB + NL * NV * NT:
            i = cp - SB
            out.append(LB + i // (NV * NT))
            out.append(VB + (i % (NV * NT)) // NT)
            if i % NT:
                out.append(TB + i % NT)
        elif cp in decomp:
            for p in decomp[cp]:
                dec(p)
        else:
            out.append(cp)
    for ch in s:
        dec(ord(ch))
    i = 0
    while i < len(out):  # canonical ordering: stable sort runs of non-starters
        if ccc.get(out[i], 0):
            j = i
            while j < len(out) and ccc.get(out[j], 0):
                j += 1
            out[i:j] = sorted(out[i:j], key=lambda c: ccc[c])
            i = j
        else:
            i += 1
    res = []
    starter = None
    last_ccc = -1
    for cp in out:
        c = ccc.get(cp, 0)
        if starter is not None and (last_ccc < c or (last_ccc == -1)):
            s0 = res[starter]
            comp = None
            if LB <= s0 < LB + NL and VB <= cp < VB + NV:
                comp = SB + ((s0 - LB) * NV + (cp - VB)) * NT
            elif SB <= s0 < SB + NL * NV * NT and (s0 - SB) % NT == 0 and TB < cp < TB + NT:
                comp = s0 + cp - TB
            else:
                comp = compose.get((s0, cp))
            if comp is not None:
                res[starter] = comp
                continue
        if c == 0:
            starter = len(res)
            last_ccc = -1
        else:
            last_ccc = c
        res.append(cp)
    return "".join(map(chr, res))


def verify_nfc():
    import random
    from tokenizers import normalizers
    ccc_ranges, decomp_list, excluded = nfc_data()
    ccc = {}
    for s, e, v in ccc_ranges:
        for cp in range(s, e + 1):
            ccc[cp] = v
    decomp = dict((cp, p) for cp, p in decomp_list)
    compose = {tuple(p): cp for cp, p in decomp_list if len(p) == 2 and cp not in set(excluded)}
    nfc = normalizers.NFC()
    bad = 0
    singles = [chr(cp) for cp in ALL_CPS]
    marks = [chr(cp) for cp in ALL_CPS if ud.category(chr(cp))[0] == "M" or ud.combining(chr(cp))]
    starters = [chr(cp) for cp in list(range(0x41, 0x7B)) + [0x3B1, 0x436, 0x1100, 0x1161, 0x11A8, 0xAC00,
                                                            0x0B47, 0x0B3E, 0x0DD9, 0x0DCF, 0x05D0]]
    starters += [chr(cp) for cp, _ in decomp_list]
    rng = random.Random(7)
    samples = singles + ["".join(rng.choice(starters) + "".join(rng.choice(marks) for _ in range(rng.randint(1, 4))))
                         for _ in range(100000)]
    samples += ["".join(rng.choice(starters + marks) for _ in range(6)) for _ in range(50000)]
    for s in samples:
        want = nfc.normalize_str(s)
        got = py_nfc(s, ccc, decomp, compose)
        if want != got:
            bad += 1
            if bad <= 8:
                print("NFC MISMATCH", [hex(ord(c)) for c in s], [hex(ord(c)) for c in want],
                      [hex(ord(c)) for c in got])
    print(f"NFC: {len(samples)} strings checked, {bad} mismatching")
    return bad == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "src", "text", "unicode_tables.cpp"))
    ap.add_argument("--verify", action="store_true", help="check the tables against HF tokenizers")
    args = ap.parse_args()
    generate(os.path.normpath(args.out))
    if args.verify:
        ok = verify_regex_classes() & verify_nfc()
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
