"""The fake exchange's simulated binary markets: exact integer books, their random activity and its frames.

No sockets here: :class:`SimulatedMarkets` changes the books and renders the frames the market channel
would send about it (``book``, ``price_change``, ``last_trade_price``, ``tick_size_change``,
``new_market``, ``market_resolved``), as strings. :class:`~pm_ws.testing.FakeMarketServer` serves them.

Each market's YES book is exact integers (prices in 1e-4, sizes in 1e-6); the NO book is its mirror (a
YES bid at p is a NO ask at 1-p with the same size) and is never stored. Every number on the wire is a
normalised decimal string; book levels go worst to best (best LAST).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import orjson

from ._decimal_text import PRICE_DECIMALS, SIZE_DECIMALS, units_text
from .row import PRICE_SCALE, SIZE_SCALE

__all__ = ["FakeMarket", "MarketBook", "SimulatedMarkets", "TICK_SIZES", "check_tick", "now_ms"]

# Every tick size Polymarket uses, in price units (1e-4)
TICK_SIZES = {"0.1": 1000, "0.01": 100, "0.005": 50, "0.0025": 25, "0.001": 10, "0.0001": 1}

_PRICE_TEXT = tuple(units_text(units, PRICE_DECIMALS) for units in range(PRICE_SCALE + 1))

Levels = tuple[list[tuple[int, int]], list[tuple[int, int]]]  # (bids, asks) as (price units, size units)


def now_ms() -> int:
    """The wall clock in milliseconds, as the frames' ``timestamp`` says it."""
    return time.time_ns() // 1_000_000


def _hash40(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


def check_tick(tick: str) -> None:
    """Raise ValueError unless ``tick`` is one of :data:`TICK_SIZES`."""
    if tick not in TICK_SIZES:
        raise ValueError(f"unknown tick size {tick!r}, expected one of {sorted(TICK_SIZES)}")


class FakeMarket(NamedTuple):
    """One binary market: its condition id and its two token ids."""

    condition_id: str
    yes_id: str
    no_id: str


class MarketBook:
    """A market's YES book as exact integers; the NO book is its mirror and is never stored."""

    __slots__ = ("market", "tick", "tick_text", "bids", "asks", "best_bid", "best_ask")

    def __init__(self, market: FakeMarket, tick_text: str) -> None:
        self.market = market
        self.tick_text = tick_text
        self.tick = TICK_SIZES[tick_text]
        self.bids: dict[int, int] = {}  # price units -> size units
        self.asks: dict[int, int] = {}
        self.best_bid = 0  # the wire's sentinels for an empty side
        self.best_ask = PRICE_SCALE

    def set_level(self, is_bid: bool, price: int, size: int) -> None:
        side = self.bids if is_bid else self.asks
        if size:
            side[price] = size
        else:
            side.pop(price, None)
        self.refresh_best()

    def refresh_best(self) -> None:
        self.best_bid = max(self.bids, default=0)
        self.best_ask = min(self.asks, default=PRICE_SCALE)

    def levels(self, token_id: str) -> Levels:
        # (bids, asks) of either token in wire order: worst to best, best LAST
        if token_id == self.market.yes_id:
            return sorted(self.bids.items()), sorted(self.asks.items(), reverse=True)
        bids = [(PRICE_SCALE - price, size) for price, size in sorted(self.asks.items(), reverse=True)]
        asks = [(PRICE_SCALE - price, size) for price, size in sorted(self.bids.items())]
        return bids, asks


class SimulatedMarkets:
    """Binary markets with random orders, cancels and trades, rendered as market-channel frames.

    Parameters are those of :class:`~pm_ws.testing.FakeMarketServer` that shape the markets:
    ``markets``, ``seed``, ``tick``, ``levels``, ``trade_every`` and ``token_ids``.
    """

    def __init__(
        self,
        *,
        markets: int,
        seed: int,
        tick: str | Sequence[str],
        levels: int,
        trade_every: int,
        token_ids: Sequence[str] | None,
    ) -> None:
        ticks = [tick] if isinstance(tick, str) else list(tick)
        for text in ticks:
            check_tick(text)
        if levels < 1:
            raise ValueError(f"levels must be positive, was {levels}")
        self._levels = levels
        self._trade_every = trade_every
        self._rng = random.Random(seed)

        ids = self._make_token_ids(markets, token_ids)
        self._markets = [
            FakeMarket(f"0x{self._rng.getrandbits(256):064x}", ids[i], ids[i + 1]) for i in range(0, len(ids), 2)
        ]
        self._books = [self._initial_book(market, ticks[i % len(ticks)]) for i, market in enumerate(self._markets)]
        self._book_of = {token: book for book in self._books for token in book.market[1:]}
        self._last_trade: dict[str, int] = {}
        for i, book in enumerate(self._books):
            if i % 3 != 2 and book.bids:  # some markets have not traded yet: last_trade_price ""
                self._last_trade[book.market.yes_id] = book.best_bid
                self._last_trade[book.market.no_id] = PRICE_SCALE - book.best_bid
        self._resolved: dict[str, str | None] = {}  # condition id -> winning token id (None: unknown)

    # ------------------------------------------------------------------ inspection

    @property
    def token_ids(self) -> list[str]:
        """Every token the server serves, as YES/NO pairs in market order."""
        return [token for market in self._markets for token in market[1:]]

    @property
    def markets(self) -> list[FakeMarket]:
        """The simulated markets."""
        return list(self._markets)

    @property
    def resolved(self) -> dict[str, str | None]:
        """Markets resolved by :meth:`resolve_market`: condition id -> winning token id."""
        return dict(self._resolved)

    def truth(self, token_id: str) -> Levels:
        """Return the server's current book of a token, best first.

        Parameters
        ----------
        token_id : str
            A token this server serves.

        Returns
        -------
        tuple of (list of (int, int), list of (int, int))
            ``(bids, asks)`` as ``(price units, size units)``: the shape of
            ``BookStore.book(token_id, depth=None)``.

        Raises
        ------
        KeyError
            If the token is not one of :attr:`token_ids`.
        """
        bids, asks = self._book_of[token_id].levels(token_id)
        return bids[::-1], asks[::-1]

    def condition_id(self, token_id: str) -> str:
        """Return the condition id of a token's market (``KeyError`` if unknown)."""
        return self._book_of[token_id].market.condition_id

    def tick(self, token_id: str) -> int:
        """Return the current tick size of a token in price units (``KeyError`` if unknown)."""
        return self._book_of[token_id].tick

    # ------------------------------------------------------------------ frames without a socket

    def initial_dump(self, token_ids: Iterable[str] | None = None) -> str:
        """Return the array frame a new subscriber of ``token_ids`` (default: all) gets first.

        Unknown ids are skipped (``"[]"`` when none is known). Nothing is sent; meant for benchmarks
        and socket-free tests.
        """
        wanted = self.token_ids if token_ids is None else token_ids
        return self._books_frame(token for token in wanted if token in self._book_of) or "[]"

    def frames(self, n: int, *, trades: bool = False) -> list[str]:
        """Advance the books by ``n`` changes and return their frames instead of sending them.

        Parameters
        ----------
        n : int
            Number of book changes, one ``price_change`` frame each.
        trades : bool
            Also print a trade every ``trade_every`` changes (``last_trade_price`` plus two ``book``
            frames), giving the mixed stream of a busy market (~87% price_change, 9% book, 4% trade).

        Returns
        -------
        list of str
            The frames in order. Fed after :meth:`initial_dump` into a Dispatcher subscribed to every
            token, they leave it equal to :meth:`truth`. Subscribers of a running server are NOT sent
            these changes (their books fall behind), so use this on a server nobody is connected to.
        """
        out: list[str] = []
        for count in range(1, n + 1):
            out.append(self._random_change()[1])
            traded = self._trade(None) if trades and self._trade_every and count % self._trade_every == 0 else None
            if traded is not None:
                _, frame, market = traded
                out.append(frame)
                out.extend(self._book_event(token, with_tick=False) for token in market[1:])
        return out

    # ------------------------------------------------------------------ the simulated market

    def _make_token_ids(self, markets: int, token_ids: Sequence[str] | None) -> list[str]:
        if token_ids is not None:
            ids = [str(token) for token in token_ids]
            if not ids or len(ids) % 2 or len(set(ids)) != len(ids):
                raise ValueError("token_ids must be a non-empty list of distinct YES, NO pairs")
            return ids
        if markets < 1:
            raise ValueError(f"markets must be positive, was {markets}")
        # uint256 decimal strings of 77-78 digits, like the real CLOB token ids
        return [str(self._rng.randrange(10**76, 2**256)) for _ in range(2 * markets)]

    def _level_size(self) -> int:
        if self._rng.random() < 0.3:
            return self._rng.randint(1, 2000) * SIZE_SCALE  # whole shares
        return self._rng.randint(100, 500_000) * (SIZE_SCALE // 100)  # 1.00 to 5000.00, 2 decimals

    def _initial_book(self, market: FakeMarket, tick_text: str) -> MarketBook:
        book = MarketBook(market, tick_text)
        rng, tick = self._rng, book.tick
        top = PRICE_SCALE // tick - 1  # highest valid price, in ticks
        bid = rng.randint(max(1, top // 10), max(1, top * 85 // 100))
        ask = min(top, bid + rng.randint(1, 3))
        while len(book.bids) < self._levels and bid >= 1:
            book.bids[bid * tick] = self._level_size()
            bid -= rng.randint(1, 2)
        while len(book.asks) < self._levels and ask <= top:
            book.asks[ask * tick] = self._level_size()
            ask += rng.randint(1, 2)
        book.refresh_best()
        return book

    def _random_change(self) -> tuple[MarketBook, str]:
        rng = self._rng
        book = rng.choice(self._books)
        is_bid = rng.random() < 0.5
        side = book.bids if is_bid else book.asks
        count = len(side)
        cancel_odds = 0.1 if count < self._levels else (0.55 if count >= 2 * self._levels else 0.3)
        roll = rng.random()
        price: int | None
        if count > 1 and roll < cancel_odds:
            price, size = rng.choice(list(side)), 0
        else:
            price = rng.choice(list(side)) if count and roll < cancel_odds + 0.35 else self._free_price(book, is_bid)
            if price is None:  # no room on this side (one-tick spread against its edge): resize the other
                is_bid = not is_bid
                price = rng.choice(list(book.bids if is_bid else book.asks))
            size = self._level_size()
        book.set_level(is_bid, price, size)
        return book, self._price_change_event(book, is_bid, price, size)

    def _free_price(self, book: MarketBook, is_bid: bool) -> int | None:
        # a random grid price on this side that does not cross the book, near the top
        tick, reach = book.tick, self._levels * book.tick
        if is_bid:
            high = book.best_ask - tick
            low = max(tick, (book.best_bid if book.bids else high) - reach)
        else:
            low = book.best_bid + tick
            high = min(PRICE_SCALE - tick, (book.best_ask if book.asks else low) + reach)
        if high < low:
            return None
        return low + tick * self._rng.randrange((high - low) // tick + 1)

    def _trade(self, token_id: str | None) -> tuple[str, str, FakeMarket] | None:
        # take liquidity from the best level; return (token, last_trade_price frame, market)
        rng = self._rng
        book = self._book_of[token_id] if token_id is not None else rng.choice(self._books)
        token = token_id if token_id is not None else rng.choice(book.market[1:])
        is_yes = token == book.market.yes_id
        taker_buys = rng.random() < 0.5
        # a YES buy lifts YES asks; a NO buy lifts NO asks, which are the YES bids mirrored
        hits_bids = taker_buys != is_yes
        if not (book.bids if hits_bids else book.asks):
            taker_buys, hits_bids = not taker_buys, not hits_bids
        side = book.bids if hits_bids else book.asks
        if not side:
            return None
        yes_price = book.best_bid if hits_bids else book.best_ask
        resting = side[yes_price]
        if resting == 1 or rng.random() < 0.3:
            size = resting  # the whole level goes; the last one leaves the side empty for a while
        else:
            size = rng.randint(1, resting - 1)
            if rng.random() < 0.5 and size > SIZE_SCALE // 100:
                size -= size % (SIZE_SCALE // 100)
        book.set_level(hits_bids, yes_price, resting - size)
        price = yes_price if is_yes else PRICE_SCALE - yes_price
        self._last_trade[token] = price
        market = book.market
        trade = (
            f'{{"market":"{market.condition_id}","asset_id":"{token}","price":"{_PRICE_TEXT[price]}",'
            f'"size":"{units_text(size, SIZE_DECIMALS)}","fee_rate_bps":"0","side":"{"BUY" if taker_buys else "SELL"}",'
            f'"timestamp":"{now_ms()}","event_type":"last_trade_price",'
            f'"transaction_hash":"0x{rng.getrandbits(256):064x}"}}'
        )
        return token, trade, market

    def _regrid(self, book: MarketBook, tick_text: str) -> None:
        tick = TICK_SIZES[tick_text]
        top = PRICE_SCALE - tick
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        for price, size in book.bids.items():
            snapped = price - price % tick  # bids round down, asks up: the book cannot cross
            if snapped >= tick:
                bids[snapped] = bids.get(snapped, 0) + size
        for price, size in book.asks.items():
            snapped = price + (-price) % tick
            if snapped <= top:
                asks[snapped] = asks.get(snapped, 0) + size
        book.bids, book.asks, book.tick, book.tick_text = bids, asks, tick, tick_text
        book.refresh_best()

    def _add_market(self, tick: str) -> FakeMarket:
        # a new market whose book starts changing at once
        yes_id, no_id = (str(self._rng.randrange(10**76, 2**256)) for _ in range(2))
        market = FakeMarket(f"0x{self._rng.getrandbits(256):064x}", yes_id, no_id)
        book = self._initial_book(market, tick)
        self._markets.append(market)
        self._books.append(book)
        self._book_of[yes_id] = self._book_of[no_id] = book
        return market

    def _settle(self, condition_id: str, winner: str | None) -> tuple[FakeMarket, str]:
        # an open market stops changing (its book still answers truth()); return it and its winning token
        book = next((book for book in self._books if book.market.condition_id == condition_id), None)
        if book is None:
            raise KeyError(f"no open market with condition id {condition_id!r}")
        market = book.market
        winner = market.yes_id if winner is None else winner
        self._books.remove(book)
        self._resolved[condition_id] = winner
        return market, winner

    # ------------------------------------------------------------------ rendering

    def _price_change_event(self, book: MarketBook, is_bid: bool, price: int, size: int) -> str:
        prices, rng, market = _PRICE_TEXT, self._rng, book.market
        size_text = units_text(size, SIZE_DECIMALS)
        best_bid, best_ask = book.best_bid, book.best_ask
        yes_entry = (
            f'{{"asset_id":"{market.yes_id}","price":"{prices[price]}","size":"{size_text}",'
            f'"side":"{"BUY" if is_bid else "SELL"}","hash":"{_hash40(rng)}",'
            f'"best_bid":"{prices[best_bid]}","best_ask":"{prices[best_ask]}"}}'
        )
        no_entry = (
            f'{{"asset_id":"{market.no_id}","price":"{prices[PRICE_SCALE - price]}","size":"{size_text}",'
            f'"side":"{"SELL" if is_bid else "BUY"}","hash":"{_hash40(rng)}",'
            f'"best_bid":"{prices[PRICE_SCALE - best_ask]}","best_ask":"{prices[PRICE_SCALE - best_bid]}"}}'
        )
        first, second = (yes_entry, no_entry) if is_bid else (no_entry, yes_entry)  # BUY entry first, as captured
        return (
            f'{{"market":"{market.condition_id}","price_changes":[{first},{second}],'
            f'"timestamp":"{now_ms()}","event_type":"price_change"}}'
        )

    def _book_event(self, token_id: str, *, with_tick: bool) -> str:
        book = self._book_of[token_id]
        bids, asks = book.levels(token_id)
        prices = _PRICE_TEXT
        bid_text = ",".join(f'{{"price":"{prices[p]}","size":"{units_text(s, SIZE_DECIMALS)}"}}' for p, s in bids)
        ask_text = ",".join(f'{{"price":"{prices[p]}","size":"{units_text(s, SIZE_DECIMALS)}"}}' for p, s in asks)
        last = self._last_trade.get(token_id)
        last_text = "" if last is None else units_text(last, PRICE_DECIMALS, 3)  # real books say "0.550"
        tick_part = f'"tick_size":"{book.tick_text}",' if with_tick else ""
        return (
            f'{{"market":"{book.market.condition_id}","asset_id":"{token_id}","timestamp":"{now_ms()}",'
            f'"hash":"{_hash40(self._rng)}","bids":[{bid_text}],"asks":[{ask_text}],{tick_part}'
            f'"event_type":"book","last_trade_price":"{last_text}"}}'
        )

    def _books_frame(self, token_ids: Iterable[str]) -> str:
        # the initial dump / resubscribe reply: ONE array frame, one `book` per token
        events = [self._book_event(token, with_tick=True) for token in token_ids]
        return f"[{','.join(events)}]" if events else ""

    @staticmethod
    def _tick_size_change_event(token_id: str, market: FakeMarket, new: str, old: str, timestamp: int) -> str:
        return (
            f'{{"asset_id":"{token_id}","event_type":"tick_size_change","market":"{market.condition_id}",'
            f'"new_tick_size":"{new}","old_tick_size":"{old}","timestamp":"{timestamp}"}}'
        )

    def _new_market_event(self, market: FakeMarket, tick: str) -> str:
        number = self._markets.index(market) + 1  # Gamma's id of the market
        ids = orjson.dumps([market.yes_id, market.no_id]).decode()
        return (
            f'{{"event_type":"new_market","id":"{number}","question":"Market {number}?",'
            f'"market":"{market.condition_id}","slug":"market-{number}","assets_ids":{ids},'
            f'"outcomes":["Yes","No"],"timestamp":"{now_ms()}","tags":[],"condition_id":"{market.condition_id}",'
            f'"active":true,"clob_token_ids":{ids},"order_price_min_tick_size":"{tick}"}}'
        )

    def _market_resolved_event(self, market: FakeMarket, winner: str) -> str:
        outcome = "Yes" if winner == market.yes_id else "No"
        return (
            f'{{"event_type":"market_resolved","id":"{self._markets.index(market) + 1}",'
            f'"market":"{market.condition_id}","assets_ids":["{market.yes_id}","{market.no_id}"],'
            f'"winning_asset_id":"{winner}","winning_outcome":"{outcome}","timestamp":"{now_ms()}","tags":[]}}'
        )
