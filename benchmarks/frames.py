"""Generated market-channel frames in the real wire format, for the benchmarks and the gate.

A small deterministic market simulator keeps one L2 book per binary market (the YES token's;
the NO token's book is its mirror at 1 - p) and renders events exactly as the server does:
compact JSON, the server's key order, 77-digit token ids, normalised decimal strings, ms
timestamps, best-last level order, mirrored YES/NO ``price_change`` entries with the correct
``best_bid``/``best_ask``. Every corpus starts from ``Corpus.snapshot`` (the initial dump);
replaying ``Corpus.frames`` after it keeps every book consistent, so a dispatcher fed
snapshot-then-frames applies every event and finds no mismatch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from pm_ws._decimal_text import PRICE_DECIMALS, units_text

SEED = 20250915  # the day the current price_change schema went live
N_FRAMES = 1000
N_MARKETS = 8  # 16 tokens
BOOK_LEVELS = 40  # per side of each book: a ~3 KB `book` frame
MIXED_LEVELS = 10  # per side in the "mixed" stream; see corpora()
DEEP_LEVELS = (50, 100)  # per side in the deep-book workloads; see corpora()
TICK = 100  # 0.01 in price units (1e-4)
FINE_TICK = 10  # 0.001: deep books whose bids would run below 0 on the 0.01 grid
ONE = 10_000  # 1.0 in price units
CENT_DECIMALS = 2  # the simulator's sizes are whole hundredths of a share
FIRST_TS_MS = 1_786_728_400_000

# Share of each event type in the real stream, per 100 frames
MIXED = (("price_change", 85), ("book", 10), ("last_trade_price", 4), ("best_bid_ask", 1))


@dataclass(frozen=True)
class Corpus:
    """One benchmark workload: the tokens to subscribe, the snapshot to start from, the frames."""

    name: str
    token_ids: tuple[str, ...]
    snapshot: str  # the initial dump: ONE array frame with a `book` (with tick_size) per token
    frames: tuple[str, ...]
    kinds: tuple[str, ...]  # event type of each frame

    @property
    def mean_bytes(self) -> float:
        """Mean frame length in characters (= bytes: the frames are ASCII)."""
        return sum(len(frame) for frame in self.frames) / len(self.frames)

    @property
    def mean_book_levels(self) -> float:
        """Mean levels (bids + asks) per `book` frame, 0 without any: ns per level = ns per book / this."""
        books = [orjson.loads(frame) for frame, kind in zip(self.frames, self.kinds) if kind == "book"]
        return sum(len(book["bids"]) + len(book["asks"]) for book in books) / len(books) if books else 0.0


def price_text(units: int) -> str:
    """Render price units as the server does: shortest decimal, no trailing zeros ("0.5", "0", "1")."""
    return units_text(units, PRICE_DECIMALS)


def size_text(cents: int) -> str:
    """Render a size in hundredths of a share as the server does ("1130.78", "100", "2200.8")."""
    return units_text(cents, CENT_DECIMALS)


class _Market:
    """One binary market: the YES book as {price units: size in hundredths}; NO is its mirror."""

    def __init__(self, rng: random.Random, levels: int, tick: int) -> None:
        self.levels = levels
        self.condition_id = f"0x{rng.getrandbits(256):064x}"
        self.yes_id = str(rng.randrange(10**76, 10**77))
        self.no_id = str(rng.randrange(10**76, 10**77))
        best_bid = rng.randrange(4000, 5801, TICK)
        best_ask = best_bid + tick * rng.randint(1, 2)
        self.bids = {best_bid - tick * i: _level_size(rng) for i in range(levels)}
        self.asks = {best_ask + tick * i: _level_size(rng) for i in range(levels)}
        self.last_trade: dict[str, int] = {}

    def tokens(self) -> tuple[str, str]:
        return self.yes_id, self.no_id

    def sides(self, token_id: str) -> tuple[dict[int, int], dict[int, int]]:
        """Return ``token_id``'s (bids, asks) as {price: size}; the NO book is mirrored."""
        if token_id == self.yes_id:
            return self.bids, self.asks
        return ({ONE - p: s for p, s in self.asks.items()}, {ONE - p: s for p, s in self.bids.items()})

    def best(self, token_id: str) -> tuple[int, int]:
        """Return ``token_id``'s (best bid, best ask) price; 0 / ONE when a side is empty."""
        bids, asks = self.sides(token_id)
        return max(bids, default=0), min(asks, default=ONE)


def tick_for(levels: int) -> int:
    """Return the grid of a simulated book with ``levels`` per side: 0.01 while its lowest bid stays above 0."""
    return TICK if (levels - 1) * TICK < 4000 else FINE_TICK  # best bids start at 0.40 or above


def _level_size(rng: random.Random) -> int:
    return rng.choice((rng.randint(1, 500) * 100, rng.randint(1, 5_000_000)))


def _hex_hash(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


class MarketSimulator:
    """Deterministic stream of consistent market-channel frames over ``n_markets`` markets.

    Parameters
    ----------
    seed
        Seeds the one ``random.Random`` that drives everything, so a corpus is reproducible.
    n_markets
        Binary markets simulated; each has a YES and a NO token.
    levels
        Levels per side of each book; changes keep every side within 4 levels of it. Books deeper
        than the 0.01 grid holds (``tick_for``) are on the 0.001 grid.
    """

    def __init__(self, seed: int = SEED, n_markets: int = N_MARKETS, levels: int = BOOK_LEVELS) -> None:
        self._rng = random.Random(seed)
        self._tick = tick_for(levels)
        self._markets = [_Market(self._rng, levels, self._tick) for _ in range(n_markets)]
        self._ts = FIRST_TS_MS

    @property
    def token_ids(self) -> tuple[str, ...]:
        return tuple(token for market in self._markets for token in market.tokens())

    def snapshot(self) -> str:
        """Render the initial dump: one array frame, one `book` with tick_size per token."""
        ts = self._next_ts()
        books = [self._book(market, token, ts, initial=True) for market in self._markets for token in market.tokens()]
        return orjson.dumps(books).decode()

    def frame(self, kind: str) -> str:
        """Advance the simulation by one event of type ``kind`` and render its frame."""
        market = self._rng.choice(self._markets)
        token = self._rng.choice(market.tokens())
        if kind == "price_change":
            event = self._price_change(market)
        elif kind == "book":
            event = self._book(market, token, self._next_ts(), initial=False)
        elif kind == "last_trade_price":
            event = self._trade(market, token)
        elif kind == "best_bid_ask":
            event = self._best_bid_ask(market, token)
        else:
            raise ValueError(f"unknown event type {kind!r}")
        return orjson.dumps(event).decode()

    def _next_ts(self) -> str:
        self._ts += self._rng.choice((0, 0, 1, 3, 12, 40))  # bursts share a timestamp
        return str(self._ts)

    def _book(self, market: _Market, token: str, ts: str, *, initial: bool) -> dict:
        bids, asks = market.sides(token)
        event: dict = {
            "market": market.condition_id,
            "asset_id": token,
            "timestamp": ts,
            "hash": _hex_hash(self._rng),
            "bids": [{"price": price_text(p), "size": size_text(bids[p])} for p in sorted(bids)],
            "asks": [{"price": price_text(p), "size": size_text(asks[p])} for p in sorted(asks, reverse=True)],
        }
        if initial:  # the server's post-trade book refreshes carry no tick_size
            event["tick_size"] = price_text(self._tick)
        event["event_type"] = "book"
        last = market.last_trade.get(token)
        event["last_trade_price"] = "" if last is None else price_text(last)
        return event

    def _price_change(self, market: _Market) -> dict:
        rng = self._rng
        is_bid = rng.random() < 0.5
        side, other = (market.bids, market.asks) if is_bid else (market.asks, market.bids)
        price, size = self._change_level(side, other, is_bid, market.levels)
        if size:
            side[price] = size
        else:
            del side[price]
        yes_side, no_side = ("BUY", "SELL") if is_bid else ("SELL", "BUY")
        entries = [
            self._entry(market, market.yes_id, price, size, yes_side),
            self._entry(market, market.no_id, ONE - price, size, no_side),
        ]
        if rng.random() < 0.5:
            entries.reverse()
        return {
            "market": market.condition_id,
            "price_changes": entries,
            "timestamp": self._next_ts(),
            "event_type": "price_change",
        }

    def _change_level(self, side: dict[int, int], other: dict[int, int], is_bid: bool, levels: int) -> tuple[int, int]:
        """Pick a change near the top of ``side``: new size, delete, or insert; never cross."""
        rng = self._rng
        ranked = sorted(side, reverse=is_bid)  # best first
        near = ranked[min(int(rng.expovariate(0.35)), len(ranked) - 1)]
        action = rng.choices(("update", "delete", "insert"), weights=(70, 15, 15))[0]
        if action == "delete" and len(side) > levels - 4:
            return near, 0
        if action == "insert" and len(side) < levels + 4:
            best_other = min(other, default=ONE) if is_bid else max(other, default=0)
            step = self._tick if is_bid else -self._tick
            start = ranked[0] - 15 * step
            free = [p for p in range(start, best_other, step) if p not in side and 0 < p < ONE]
            if free:
                return rng.choice(free), _level_size(rng)
        return near, _level_size(rng)

    def _entry(self, market: _Market, token: str, price: int, size: int, side: str) -> dict:
        best_bid, best_ask = market.best(token)
        return {
            "asset_id": token,
            "price": price_text(price),
            "size": size_text(size),
            "side": side,
            "hash": _hex_hash(self._rng),
            "best_bid": price_text(best_bid),
            "best_ask": price_text(best_ask),
        }

    def _trade(self, market: _Market, token: str) -> dict:
        """A taker trade at the token's best level; the level shrinks but never empties."""
        rng = self._rng
        taker = rng.choice(("BUY", "SELL"))
        best_bid, best_ask = market.best(token)
        price = best_ask if taker == "BUY" else best_bid
        yes_price = price if token == market.yes_id else ONE - price
        # a BUY taker on YES lifts a YES ask; on NO it lifts a NO ask = a YES bid
        yes_level = market.asks if (taker == "BUY") == (token == market.yes_id) else market.bids
        size = max(1, yes_level[yes_price] // rng.randint(2, 20))
        if yes_level[yes_price] > size:
            yes_level[yes_price] -= size
        market.last_trade[token] = price
        return {
            "market": market.condition_id,
            "asset_id": token,
            "price": price_text(price),
            "size": size_text(size),
            "fee_rate_bps": "0",
            "side": taker,
            "timestamp": self._next_ts(),
            "event_type": "last_trade_price",
            "transaction_hash": f"0x{rng.getrandbits(256):064x}",
        }

    def _best_bid_ask(self, market: _Market, token: str) -> dict:
        best_bid, best_ask = market.best(token)
        return {
            "market": market.condition_id,
            "asset_id": token,
            "best_bid": price_text(best_bid),
            "best_ask": price_text(best_ask),
            "spread": price_text(best_ask - best_bid),
            "timestamp": self._next_ts(),
            "event_type": "best_bid_ask",
        }


def make_corpus(name: str, kinds: Sequence[str], *, levels: int = BOOK_LEVELS, seed: int = SEED) -> Corpus:
    """Build a corpus whose frames carry the event types ``kinds``, in that order."""
    sim = MarketSimulator(seed, levels=levels)
    snapshot = sim.snapshot()
    frames = tuple(sim.frame(kind) for kind in kinds)
    return Corpus(name, sim.token_ids, snapshot, frames, tuple(kinds))


def mixed_kinds(n: int = N_FRAMES, seed: int = SEED) -> list[str]:
    """Return ``n`` event types in the exact MIXED proportions, shuffled deterministically."""
    kinds = [kind for kind, share in MIXED for _ in range(n * share // 100)]
    kinds += ["price_change"] * (n - len(kinds))
    random.Random(seed).shuffle(kinds)
    return kinds


def corpora(n: int = N_FRAMES) -> dict[str, Corpus]:
    """Return the benchmark workloads, ``n`` frames each.

    "mixed" has 10+10-level books: the mixed-stream figures the targets were set from (orjson
    alone ~1.05 µs per frame, ``benchmarks.gate``) imply ~1 KB books, and at 40+40 levels the
    10% of `book` frames alone would cost the whole 0.20 µs budget at the 2.0 µs book target.
    "mixed_deep" is the same stream with 40+40-level books, "mixed_deep50" with 50+50 (real
    books run 40-100 levels a side). The others hold one event type each, 40+40 books, and
    "book_50" / "book_100" hold books of 50+50 / 100+100 levels (each side within 4 of it).
    """
    kinds = mixed_kinds(n)
    workloads = {
        "mixed": make_corpus("mixed", kinds, levels=MIXED_LEVELS),
        "mixed_deep": make_corpus("mixed_deep", kinds),
        "mixed_deep50": make_corpus("mixed_deep50", kinds, levels=DEEP_LEVELS[0]),
    }
    for kind, _ in MIXED:
        workloads[kind] = make_corpus(kind, [kind] * n)
    for levels in DEEP_LEVELS:
        workloads[f"book_{levels}"] = make_corpus(f"book_{levels}", ["book"] * n, levels=levels)
    return workloads
