"""CLIP's byte-level BPE tokenizer, our own implementation, without ftfy, regex or torch.

Text -> clean (HTML unescape, a subset of ftfy's fixes, NFC, whitespace collapsed, lowercase) -> words (CLIP's
pattern) -> UTF-8 bytes as printable characters (bytes_to_unicode) -> BPE merges -> ids, wrapped in
<start_of_text> ... <end_of_text> and zero-padded (or truncated, the last id then <end_of_text>) to 77 ids.

The merges come from the BPE vocabulary file that OpenAI's CLIP and the open_clip_torch package ship,
bpe_simple_vocab_16e6.txt.gz: found in the installed open_clip package (its location only: nothing is imported,
no torch), or at the path given. Nothing is downloaded.

Sources (mlfoundations/open_clip v3.3.0 @ 30573618fc375b12f094ef64cb3a1391cf611c45, src/open_clip/tokenizer.py,
"copied from https://github.com/openai/CLIP" :1-4): context length 77 :23; the vocabulary file beside the module
:26-28; bytes_to_unicode :31-51; basic_clean = ftfy.fix_text, html.unescape twice, strip :66-69; whitespace_clean
:72-75; the default clean 'lower' = lowercase after both :83-85, :139; merges = lines 1 .. 49152-256-2 of the file
:144-146; vocab = 256 byte symbols, the same with '</w>', the merges joined, then '<start_of_text>',
'<end_of_text>' (49408 ids) :147-155; the word pattern (specials | 's|'t|'re|'ve|'m|'ll|'d | [\\p{L}]+ | [\\p{N}] |
[^\\s\\p{L}\\p{N}]+, ignoring case) :159-163; BPE merging the lowest-ranked pair, '</w>' on the last symbol :172-211;
encode :213-219; decode :221-224; [sot] + ids + [eot], truncated to the context with eot last, zero padding
:256-263.

Cleaning differs from ftfy 6.3.1's fix_text (the PyPI release open_clip installs; ftfy/__init__.py:212-226 its
defaults, :380-420 its loop) in what it leaves out: we apply its HTML unescaping (only when the text has no '<',
as its 'auto' mode), Latin ligatures (ftfy/chardata.py:207-230), full/half-width forms (:233-247), curly quotes
(:28-29), control characters (:97-119) and NFC, repeated until the text is stable; we do not repair mojibake
(fix_encoding), C1 controls or terminal escapes. The word pattern is matched by a scanner over Python's Unicode
categories (L* letters, N* numbers) instead of the `regex` module; both agree except on characters newer than
Python's Unicode database. tests/test_vit.py compares the ids with open_clip's on prompts with punctuation,
accents, CJK, emoji, entities, ligatures, full-width forms, curly quotes and an over-long text.
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import os
import unicodedata
from collections.abc import Sequence

import numpy as np

from ltr_jax.errors import ConfigError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2  # 48894 merges: lines 1..48894 of the file (line 0 is a version header)
SOT, EOT = "<start_of_text>", "<end_of_text>"
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")  # in the pattern's order

# ftfy 6.3.1's tables (see the module docstring), rebuilt here.
_LIGATURES = {
    ord(k): v for k, v in {
        "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž", "Ǉ": "LJ",
        "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj", "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl",
        "ﬅ": "ſt", "ﬆ": "st"
    }.items()
}
_WIDTH = {
    0x3000: " ", **{
        i: unicodedata.normalize("NFKC", chr(i)) for i in range(0xFF01, 0xFFF0) if unicodedata.normalize("NFKC", chr(i)) != chr(i)
    }
}
_QUOTES = {**{i: "'" for i in (0x02BC, 0x2018, 0x2019, 0x201A, 0x201B)}, **{i: '"' for i in range(0x201C, 0x2020)}}
_CONTROL = {
    i: None for r in (range(0x00, 0x09), [0x0B], range(0x0E, 0x20), [0x7F], range(0x206A, 0x2070), [0xFEFF],
                      range(0xFFF9, 0xFFFD)) for i in r
}


def default_vocab_path() -> str | None:
  """The BPE vocabulary file of the installed open_clip package, or None (the package is located, not imported)."""
  spec = importlib.util.find_spec("open_clip")
  for directory in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(directory, VOCAB_FILE)
    if os.path.isfile(path):
      return path
  return None


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
  """Each byte -> a printable character: printable Latin-1 bytes map to themselves, the other 68 to 256, 257, ...

  The order of the entries (printable bytes first) is the order of the first 512 vocabulary ids."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  codes = dict(zip(printable, printable))
  for b in range(256):
    if b not in codes:
      codes[b] = 256 + len(codes) - len(printable)
  return {b: chr(c) for b, c in codes.items()}


def basic_clean(text: str) -> str:
  """HTML entities decoded and the ftfy fixes we keep (see the module docstring), then html.unescape twice."""
  unescape = "<" not in text
  while True:
    before = text
    if unescape:
      text = html.unescape(text)
    text = text.translate(_LIGATURES).translate(_WIDTH).translate(_QUOTES).translate(_CONTROL)
    text = unicodedata.normalize("NFC", text)
    if text == before:
      break
  return html.unescape(html.unescape(text)).strip()


def whitespace_clean(text: str) -> str:
  """Runs of whitespace -> one space, ends stripped."""
  return " ".join(text.split())


def clean(text: str) -> str:
  """CLIP's default cleaning ('lower'): basic_clean, whitespace_clean, lowercase."""
  return whitespace_clean(basic_clean(text)).lower()


def _is_letter(c: str) -> bool:
  return unicodedata.category(c)[0] == "L"


def _is_number(c: str) -> bool:
  return unicodedata.category(c)[0] == "N"


def split_words(text: str, specials: Sequence[str] = (SOT, EOT)) -> list[str]:
  """The matches of CLIP's word pattern, left to right: a special token, a contraction, a run of letters, one
  number character, or a run of other non-space characters (whitespace between matches is dropped)."""
  words, i, n = [], 0, len(text)
  lowered = text.lower()
  while i < n:
    c = text[i]
    special = next((s for s in specials if lowered.startswith(s.lower(), i)), None)
    contraction = next((s for s in _CONTRACTIONS if lowered.startswith(s, i)), None) if c == "'" else None
    if special or contraction:
      j = i + len(special or contraction)
    elif _is_letter(c):
      j = i + 1
      while j < n and _is_letter(text[j]):
        j += 1
    elif _is_number(c):
      j = i + 1
    elif c.isspace():
      i += 1
      continue
    else:
      j = i + 1
      while j < n and not (text[j].isspace() or _is_letter(text[j]) or _is_number(text[j])):
        j += 1
    words.append(text[i:j])
    i = j
  return words


class ClipTokenizer:
  """CLIP's tokenizer: `tokenizer(texts)` -> int32 ids [len(texts), context_length]."""

  def __init__(self, bpe_path: str | None = None, context_length: int = CONTEXT_LENGTH):
    path = bpe_path or default_vocab_path()
    if path is None or not os.path.isfile(path):
      where = f"{bpe_path}: no such file" if bpe_path else f"CLIP's BPE vocabulary {VOCAB_FILE} not found"
      raise ConfigError(f"{where}; pip install open_clip_torch==3.3.0 (it ships the file) or pass bpe_path= the "
                        f"{VOCAB_FILE} of github.com/openai/CLIP (clip/) or of open_clip (src/open_clip/)")
    try:
      with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
      raise ConfigError(f"{path}: not a gzipped BPE vocabulary ({type(e).__name__}: {e})") from e
    merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
      raise ConfigError(f"{path}: expected {NUM_MERGES} merge lines of two symbols after the header, as in "
                        f"{VOCAB_FILE}")
    self.byte_encoder = bytes_to_unicode()
    self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
    symbols = list(self.byte_encoder.values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    self.encoder = {token: i for i, token in enumerate(vocab)}
    self.decoder = dict(enumerate(vocab))
    self.ranks = {m: i for i, m in enumerate(merges)}
    self.sot_token_id, self.eot_token_id = self.encoder[SOT], self.encoder[EOT]
    self.vocab_size = len(vocab)
    self.context_length = context_length
    self.path = path
    self._cache: dict[str, tuple[str, ...]] = {SOT: (SOT,), EOT: (EOT,)}

  def bpe(self, word: str) -> tuple[str, ...]:
    """The BPE symbols of one byte-encoded word: merge the lowest-ranked adjacent pair until none is ranked."""
    if word in self._cache:
      return self._cache[word]
    symbols = (*word[:-1], word[-1] + "</w>")
    while len(symbols) > 1:
      pairs = set(zip(symbols, symbols[1:]))
      best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
      if best not in self.ranks:
        break
      merged, i = [], 0
      while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
          merged.append(symbols[i] + symbols[i + 1])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = tuple(merged)
    self._cache[word] = symbols
    return symbols

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without <start_of_text> / <end_of_text>."""
    ids = []
    for word in split_words(clean(text)):
      encoded = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
      ids.extend(self.encoder[s] for s in self.bpe(encoded))
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    """Text of token ids ('</w>' -> a space; invalid UTF-8 replaced)."""
    text = "".join(self.decoder[int(i)] for i in ids)
    return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")

  def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
    """int32 ids [len(texts), context]: <start_of_text> ids <end_of_text>, zero-padded; a longer text is cut to the
    context with <end_of_text> as its last id."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    context = context_length or self.context_length
    out = np.zeros((len(texts), context), np.int32)
    for row, text in enumerate(texts):
      ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
      if len(ids) > context:
        ids = ids[:context]
        ids[-1] = self.eot_token_id
      out[row, :len(ids)] = ids
    return out
