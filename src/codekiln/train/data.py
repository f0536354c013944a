"""Training data: token shards through memory maps, a per-language mixture over repeated epochs, FIM.

Each (directory, language) pair is a component. Components are drawn in fixed shares by a greedy,
deterministic blend (each next sample goes to the component furthest below its share), and each
component walks its documents in a fresh seeded order every epoch, so small languages repeat while
large ones do not (Muennighoff et al. 2023: up to ~4 epochs of good data is about as good as new data).
Documents are packed back to back, `<|endoftext|>` between them, in 64 interleaved streams per
component, so the rows of a batch come from different documents; a sample is seq_len + 1 tokens and
the stream's next sample starts seq_len tokens later. Every rank walks its own slice of each epoch's
order. The whole position is a small dict (`state_dict`), saved with each checkpoint, so a
resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from codekiln import fim
from codekiln.errors import UserError
from codekiln.token_shards import ShardSet


@dataclass
class Component:
    """The documents of one language in one directory, with its share of samples."""

    name: str
    shards: ShardSet
    docs: np.ndarray  # indices into the train split's index
    share: float
    tokens: int


def mixture(sets: list[ShardSet], data_weights: list[float] | None, language_weights: dict[str, float]) -> list[Component]:
    """Components and shares: directory share x language share; unlisted languages split the rest by size."""
    sizes = [sum(s.languages().values()) for s in sets]
    dw = np.asarray(data_weights if data_weights is not None else sizes, dtype=np.float64)
    if dw.sum() <= 0:
        raise UserError("the training data holds no tokens")
    dw = dw / dw.sum()
    known = set().union(*(s.languages() for s in sets))
    missing = sorted(set(language_weights) - known)
    if missing:
        raise UserError(f"train.language_weights names {', '.join(missing)}, which no data directory holds")
    comps = []
    for k, (s, w) in enumerate(zip(sets, dw)):
        langs = {lang: n for lang, n in s.languages().items() if n > 0}
        listed = {lang: language_weights[lang] for lang in langs if lang in language_weights}
        rest = {lang: n for lang, n in langs.items() if lang not in listed}
        listed_sum = sum(listed.values())
        shares = dict(listed)
        if rest and listed_sum < 1:
            total = sum(rest.values())
            shares.update({lang: (1 - listed_sum) * n / total for lang, n in rest.items()})
        elif listed_sum > 0:
            shares = {lang: v / listed_sum for lang, v in listed.items()}
        for lang in sorted(langs):
            share = float(w) * shares.get(lang, 0.0)
            if share <= 0:
                continue
            docs = np.flatnonzero(s.index["train"]["lang"] == lang)
            name = lang if len(sets) == 1 else f"{k}:{lang}"
            comps.append(Component(name, s, docs, share, langs[lang]))
    if not comps:
        raise UserError("the mixture gives every language a share of zero")
    total = sum(c.share for c in comps)
    for c in comps:
        c.share /= total
    return comps


STREAMS = 64  # interleaved read positions per component and rank (see _Walk)


class _Walk:
    """One component's token streams for one rank: epochs of seeded document orders, with FIM.

    The rank's documents of an epoch are dealt to `streams` interleaved streams, and consecutive
    samples of the component come from consecutive streams. So the rows of a batch come from
    different documents (a single long file would otherwise fill many batches in a row), while each
    stream still reads its documents back to back, wasting nothing.
    """

    def __init__(self, comp: Component, key: int, seed: int, rank: int, world: int, tok, fim_rate: float,
                 spm_rate: float, streams: int = STREAMS):
        self.comp, self.key, self.seed, self.rank, self.world = comp, key, seed, rank, world
        self.tok, self.fim_rate, self.spm_rate = tok, fim_rate, spm_rate
        self._orders: OrderedDict[int, np.ndarray] = OrderedDict()
        self.streams = max(1, min(streams, self.order(0).size))
        self.cursors = [(0, 0, 0) for _ in range(self.streams)]  # per stream: (epoch, position, offset)
        self._docs: list[OrderedDict] = [OrderedDict() for _ in range(self.streams)]
        # fine-tuning shards in the editors' repository layout: FIM goes to each document's last file
        self.repo_level = comp.shards.meta.get("fingerprint", {}).get("layout") == "repo_level_fim"

    def order(self, epoch: int) -> np.ndarray:
        """This rank's documents for an epoch: a seeded permutation, every world-th from rank."""
        if epoch not in self._orders:
            perm = np.random.default_rng([self.seed, self.key, epoch]).permutation(self.comp.docs)
            mine = perm[self.rank::self.world]
            self._orders[epoch] = mine if mine.size else perm
            while len(self._orders) > 2:
                self._orders.popitem(last=False)
        return self._orders[epoch]

    def _length(self, epoch: int, j: int) -> int:
        """Documents stream j reads in an epoch."""
        return len(range(j, self.order(epoch).size, self.streams))

    def doc(self, epoch: int, j: int, pos: int) -> np.ndarray:
        """Document `pos` of stream j in an epoch, FIM applied (keyed by seed, component, epoch, document)."""
        cache = self._docs[j]
        if (epoch, pos) not in cache:
            d = int(self.order(epoch)[j + pos * self.streams])
            ids = self.comp.shards.doc("train", d)
            if self.fim_rate > 0 and self.tok is not None:
                rng = np.random.default_rng([self.seed, self.key, epoch, d, 1])
                body = fim.transform(ids[:-1], self.tok, rng, self.fim_rate, self.spm_rate, self.repo_level)
                ids = np.concatenate([body, ids[-1:]])
            cache[(epoch, pos)] = ids
            while len(cache) > 2:
                cache.popitem(last=False)
        return cache[(epoch, pos)]

    def read(self, j: int, cursor: tuple[int, int, int], n: int) -> tuple[np.ndarray, tuple[int, int, int]]:
        """n tokens of stream j from a cursor (epoch, position, offset), and the cursor after them."""
        epoch, pos, off = cursor
        out, need = [], n
        while need:
            ids = self.doc(epoch, j, pos)
            chunk = ids[off: off + need]
            out.append(chunk)
            need -= chunk.size
            off += chunk.size
            if off >= ids.size:
                epoch, pos, off = (epoch, pos + 1, 0) if pos + 1 < self._length(epoch, j) else (epoch + 1, 0, 0)
        return np.concatenate(out), (epoch, pos, off)

    def sample(self, k: int, seq_len: int) -> np.ndarray:
        """The component's k-th sample: seq_len + 1 tokens of stream k mod streams, which then moves seq_len on."""
        j = k % self.streams
        head, after = self.read(j, self.cursors[j], seq_len)
        tail, _ = self.read(j, after, 1)
        self.cursors[j] = after
        return np.concatenate([head, tail])

    def epochs(self) -> float:
        """Epochs completed, averaged over the streams (fractional)."""
        done = [e + p / max(1, self._length(e, j)) for j, (e, p, _) in enumerate(self.cursors)]
        return sum(done) / len(done)


class TrainStream:
    """Batches of (inputs, targets), [batch, seq_len] int64 each, deterministic given seed, rank and position."""

    def __init__(self, comps: list[Component], seq_len: int, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1, tok=None, fim_rate: float = 0.0, spm_rate: float = 0.5):
        self.comps, self.seq_len, self.batch_size = comps, seq_len, batch_size
        self.walks = [_Walk(c, k, seed, rank, world, tok, fim_rate, spm_rate) for k, c in enumerate(comps)]
        self.shares = np.asarray([c.share for c in comps])
        self.counts = np.zeros(len(comps), dtype=np.int64)

    def _pick(self) -> int:
        n = int(self.counts.sum())
        return int(np.argmax(self.shares * (n + 1) - self.counts))

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The next micro-batch for this rank."""
        rows = []
        for _ in range(self.batch_size):
            c = self._pick()
            rows.append(self.walks[c].sample(int(self.counts[c]), self.seq_len))
            self.counts[c] += 1
        arr = np.stack(rows)
        return arr[:, :-1], arr[:, 1:]

    def epochs(self) -> dict[str, float]:
        """Epochs completed per component (fractional) on this rank."""
        return {w.comp.name: round(w.epochs(), 4) for w in self.walks}

    def state_dict(self) -> dict:
        """The whole data position."""
        return {"counts": self.counts.tolist(), "walks": [[list(c) for c in w.cursors] for w in self.walks],
                "components": [c.name for c in self.comps]}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position from state_dict()."""
        if state["components"] != [c.name for c in self.comps]:
            raise UserError("the checkpoint's data position is for other data (components differ)")
        self.counts = np.asarray(state["counts"], dtype=np.int64)
        for w, cursors in zip(self.walks, state["walks"]):
            if len(cursors) != w.streams:
                raise UserError("the checkpoint's data position is for other data (streams differ)")
            w.cursors = [tuple(c) for c in cursors]


def plan_table(comps: list[Component], total_tokens: int | None) -> list[dict]:
    """Per component: share, unique tokens, and epochs the token budget implies."""
    rows = []
    for c in comps:
        epochs = None if not total_tokens else c.share * total_tokens / max(1, c.tokens)
        rows.append({"component": c.name, "share": c.share, "tokens": c.tokens, "epochs": epochs})
    return rows
