"""MinHash signatures and LSH band keys over n-gram shingles of code tokens (StarCoder's recipe).

Tokens are the runs of identifier characters (the text split on `[^A-Za-z_0-9]`); a shingle is
`ngram` consecutive tokens. Each document keeps only its `bands` 64-bit band keys, never its
shingles, so deduplicating a million documents needs a few hundred MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xxhash

# Every byte outside [A-Za-z_0-9] becomes a space, so bytes.split() yields the tokens at C speed
# (the same tokens as re.findall(r"[A-Za-z_0-9]+"), three times faster).
_IDENT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_0123456789"
_TO_SPACE = bytes(c if c in _IDENT else 32 for c in range(256))
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_POLY = np.uint64(0x9E3779B97F4A7C15)
_BLOCK = 512  # shingles per block: a 1 MB (shingles x permutations) scratch matrix stays in cache


def _splitmix(x: np.ndarray) -> np.ndarray:
    """A strong 64-bit finalizer (splitmix64), vectorized; arithmetic wraps modulo 2**64."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def candidate_probability(s: float | np.ndarray, bands: int, rows: int):
    """LSH S-curve: probability that a pair with Jaccard s shares at least one band."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimizing false-positive plus false-negative area.

    The same criterion as datasketch's MinHashLSH: integrate the S-curve below the threshold
    (pairs wrongly proposed) and one minus it above (pairs missed), equal weights.
    """
    lo = np.linspace(0.0, threshold, 201)
    hi = np.linspace(threshold, 1.0, 201)
    best, best_err = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(candidate_probability(lo, bands, rows), lo)
            fn = np.trapezoid(1.0 - candidate_probability(hi, bands, rows), hi)
            if fp + fn < best_err - 1e-12:
                best, best_err = (bands, rows), fp + fn
    return best


@dataclass(frozen=True)
class LSHParams:
    """Everything that fixes a document's band keys."""

    num_perm: int = 256
    ngram: int = 5
    bands: int = 25
    rows: int = 10
    seed: int = 1
    min_tokens: int = 10

    @classmethod
    def from_config(cls, cfg) -> "LSHParams":
        """Params from a DedupConfig, deriving bands and rows from the threshold when not set."""
        if cfg.bands is None:
            bands, rows = optimal_bands(cfg.threshold, cfg.num_perm)
        else:
            bands, rows = cfg.bands, cfg.rows
        return cls(cfg.num_perm, cfg.ngram, bands, rows, cfg.seed, cfg.min_tokens)


class MinHasher:
    """Computes MinHash signatures and band keys; one instance per worker process."""

    def __init__(self, params: LSHParams):
        self.params = params
        rng = np.random.default_rng(params.seed)
        # Multiply-shift hashing: odd 64-bit multipliers, keep the high 32 bits.
        self._a = rng.integers(1, 2**64 - 1, size=params.num_perm, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**64 - 1, size=params.num_perm, dtype=np.uint64)
        self._band_salt = _splitmix(np.arange(1, params.bands + 1, dtype=np.uint64) * _POLY)
        self._token_cache: dict[bytes, int] = {}
        self._scratch = np.empty((_BLOCK, params.num_perm), dtype=np.uint64)

    def _token_hashes(self, text: str) -> np.ndarray:
        cache = self._token_cache
        if len(cache) > 2_000_000:
            cache.clear()
        tokens = text.encode("utf-8", "surrogatepass").translate(_TO_SPACE).split()
        hashes = list(map(cache.get, tokens))
        if None in hashes:
            for i, h in enumerate(hashes):
                if h is None:
                    hashes[i] = cache[tokens[i]] = xxhash.xxh3_64_intdigest(tokens[i])
        return np.array(hashes, dtype=np.uint64)

    def shingles(self, text: str) -> np.ndarray:
        """64-bit hashes of the document's token n-grams (empty when too few tokens)."""
        toks = self._token_hashes(text)
        n = self.params.ngram
        if len(toks) < max(n, self.params.min_tokens):
            return np.empty(0, dtype=np.uint64)
        m = len(toks) - n + 1
        h = toks[:m].copy()
        for k in range(1, n):
            h = h * _POLY + toks[k : k + m]
        return _splitmix(h)  # duplicates do not change a minimum; no need to sort them out

    def signature(self, text: str) -> np.ndarray | None:
        """The num_perm uint32 MinHash signature, or None when the text has too few tokens."""
        sh = self.shingles(text)
        if sh.size == 0:
            return None
        sig = None
        for i in range(0, sh.size, _BLOCK):
            block = sh[i : i + _BLOCK, None]
            scratch = self._scratch[: block.shape[0]]
            np.multiply(block, self._a, out=scratch)
            np.add(scratch, self._b, out=scratch)
            # Taking the high 32 bits is monotonic, so it commutes with min: shift once at the end.
            low = scratch.min(axis=0)
            sig = low if sig is None else np.minimum(sig, low)
        return (sig >> np.uint64(32)).astype(np.uint32)

    def band_keys(self, signature: np.ndarray) -> np.ndarray:
        """One 64-bit key per band; two documents are candidates when any band's keys are equal."""
        p = self.params
        rows = signature[: p.bands * p.rows].reshape(p.bands, p.rows).astype(np.uint64)
        h = self._band_salt.copy()
        for j in range(p.rows):
            h = _splitmix(h ^ rows[:, j])
        return h


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of equal signature slots: an unbiased estimate of the Jaccard similarity."""
    return float(np.mean(sig_a == sig_b))
