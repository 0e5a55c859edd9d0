#!/usr/bin/env python3
"""Writes reference_bytelevel.json and reference_sentencepiece.json: a BPE
tokenizer.json with merges learned from a small synthetic corpus plus test
strings and the ids an independent implementation gives them. The reference
encoder is the original GPT-2 algorithm (python `regex` pre-tokenizer, merge
the lowest-ranked pair everywhere until none applies), written separately
from fedge's C++ heap-based encoder. Run from this directory:
    python3 make_reference.py
"""
import json
import random
from collections import Counter, OrderedDict

import regex

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
META = "\u2581"


def byte_map():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def corpus(seed, n_words):
    rng = random.Random(seed)
    words = ("the of and to in is that for it as was with be by on not he this are or his from at which but "
             "have an they you were their one all we can her has there been if more when will would who so no "
             "federated learning model edge node training inference privacy aggregation adapter gradient "
             "tokenizer sequence attention transformer network latency bandwidth coordinator secure update "
             "don't it's we'll they've Hello World The However running jumped quickly understanding "
             "naïve café Привет мир 你好 世界 日本語").split()
    extras = [", ", ". ", "\n", "\n\n", "  ", "\t", " (", ") ", " 2024", " 3.14", " x += 1;", " 😀", "!!"]
    out = []
    for _ in range(n_words):
        out.append(rng.choice(words))
        out.append(rng.choice(extras) if rng.random() < 0.2 else " ")
    return "".join(out)


def learn(words, n):
    """words: Counter of tuple(symbols) -> count. Returns ranked merges."""
    words = dict(words)
    merges = []
    for _ in range(n):
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        words = new
    return merges


def bpe(symbols, ranks):
    """The GPT-2 reference loop: merge the lowest-ranked pair everywhere."""
    word = list(symbols)
    while len(word) > 1:
        pairs = {(a, b) for a, b in zip(word, word[1:])}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        out, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                out.append(word[i] + word[i + 1])
                i += 2
            else:
                out.append(word[i])
                i += 1
        word = out
    return word


TESTS = [
    "Hello World, the federated learning model is running quickly.",
    "they've said it's naïve; we'll see!!  \t\n\n  x += 1;",
    "Привет мир 你好 世界 日本語 😀 👨\u200d👩\u200d👧 🇺🇳",
    "int main() {\n\treturn 2024 + 3.14159;\n}\n",
    "   leading and trailing spaces   ",
    "ALLCAPS DON'T IT'S mixedCase123abc 1234567890",
    "a" * 40 + " " + "the" * 30,
]


def byte_level(train, n_merges):
    m = byte_map()
    words = Counter(tuple(m[b] for b in w.encode()) for w in regex.findall(GPT2, train))
    merges = learn(words, n_merges)
    vocab = OrderedDict((m[b], b) for b in range(256))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    ranks = {p: i for i, p in enumerate(merges)}
    bl = OrderedDict(type="ByteLevel", add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok = OrderedDict(version="1.0", added_tokens=[], normalizer=None, pre_tokenizer=bl, post_processor=None,
                      decoder=bl, model=OrderedDict(type="BPE", unk_token=None, vocab=vocab,
                                                   merges=[a + " " + b for a, b in merges]))
    cases = []
    for s in TESTS + [corpus(7, 300)]:
        ids = []
        for w in regex.findall(GPT2, s):
            ids += [vocab[t] for t in bpe([m[b] for b in w.encode()], ranks)]
        cases.append(OrderedDict(text=s, ids=ids))
    return OrderedDict(tokenizer=tok, cases=cases)


def sentencepiece(train, n_merges):
    words = Counter(tuple(META + w) for w in train.replace("\n", " ").split(" ") if w)
    merges = learn(words, n_merges)
    vocab = OrderedDict([("<unk>", 0), ("<s>", 1), ("</s>", 2)])
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    chars = Counter(c for w in words for c in w)
    for c, n in sorted(chars.items()):
        if n >= 20:
            vocab.setdefault(c, len(vocab))
    kept = [(a, b) for a, b in merges if a in vocab and b in vocab]
    merges = []
    for a, b in kept:
        if a in vocab and b in vocab:
            vocab.setdefault(a + b, len(vocab))
            merges.append((a, b))
    ranks = {p: i for i, p in enumerate(merges)}
    tok = OrderedDict(
        version="1.0", added_tokens=[OrderedDict(id=i, content=c, special=True) for i, c in
                                     [(0, "<unk>"), (1, "<s>"), (2, "</s>")]],
        normalizer=OrderedDict(type="Sequence", normalizers=[
            OrderedDict(type="Prepend", prepend=META),
            OrderedDict(type="Replace", pattern=OrderedDict(String=" "), content=META)]),
        pre_tokenizer=None, post_processor=None,
        decoder=OrderedDict(type="Sequence", decoders=[
            OrderedDict(type="Replace", pattern=OrderedDict(String=META), content=" "),
            OrderedDict(type="ByteFallback"), OrderedDict(type="Fuse"),
            OrderedDict(type="Strip", content=" ", start=1, stop=0)]),
        model=OrderedDict(type="BPE", unk_token="<unk>", fuse_unk=True, byte_fallback=True, vocab=vocab,
                          merges=[[a, b] for a, b in merges]))
    cases = []
    for s in TESTS + [corpus(7, 300)]:
        text = META + s.replace(" ", META)
        syms = []
        for c in text:
            if c in vocab:
                syms.append(c)
            else:
                syms += ["<0x%02X>" % b for b in c.encode()]
        # Byte tokens never merge here (no merges involve them), so the
        # reference can treat them as symbols.
        cases.append(OrderedDict(text=s, ids=[vocab[t] for t in bpe(syms, ranks)]))
    return OrderedDict(tokenizer=tok, cases=cases)


if __name__ == "__main__":
    train = corpus(1, 4000)
    with open("reference_bytelevel.json", "w") as f:
        json.dump(byte_level(train, 400), f, ensure_ascii=False, indent=None)
        f.write("\n")
    with open("reference_sentencepiece.json", "w") as f:
        json.dump(sentencepiece(train, 400), f, ensure_ascii=False, indent=None)
        f.write("\n")
