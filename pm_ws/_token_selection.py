"""The tokens ``pm-ws watch`` and ``record`` subscribe: TOKEN_IDs plus the tokens of --market and --slug,
or with --all every active market (its filters checked here, the markets listed by ``pm_ws.exchange``)."""

from __future__ import annotations

import argparse
import asyncio

from ._exit import CliError, ExitCode
from ._watch_view import terminal_text
from .gamma import GammaError, MarketFilter, MarketNotFoundError, markets_by_condition_id, markets_by_slug
from .row import TOKEN_ID, TOKEN_ID_EXPECTED


async def select_tokens(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """Token ids from the command line plus those of --market/--slug, with display labels."""
    for token in args.tokens:
        if not TOKEN_ID.fullmatch(token):
            raise CliError(f"invalid token id {token!r} ({TOKEN_ID_EXPECTED})", ExitCode.USAGE)
    if not (args.tokens or args.market or args.slug):
        raise CliError("name at least one TOKEN_ID, --market CONDITION_ID or --slug SLUG, or --all", ExitCode.USAGE)
    labels: dict[str, str] = {}
    # The HTTP client's timeout holds per attempt; --gamma-timeout bounds the lot, retries included
    deadline = args.gamma_timeout
    lookups = [markets_by_condition_id(c, args.gamma_url) for c in args.market]
    lookups += [markets_by_slug(s, args.gamma_url) for s in args.slug]
    try:
        async with asyncio.timeout(deadline):
            found = await asyncio.gather(*lookups)
    except MarketNotFoundError as exc:
        raise CliError(str(exc), ExitCode.NOT_FOUND) from None
    except GammaError as exc:
        raise CliError(str(exc), ExitCode.UNREACHABLE) from None
    except TimeoutError:
        message = f"the Gamma API at {args.gamma_url} did not answer within {deadline:g} s (--gamma-timeout)"
        raise CliError(message, ExitCode.UNREACHABLE) from None
    tokens = list(args.tokens)
    for markets in found:
        for market in markets:
            for index, token in enumerate(market.token_ids):
                if not TOKEN_ID.fullmatch(token):  # the store would refuse it: the API answers nonsense
                    message = f"the Gamma API at {args.gamma_url} answered an invalid token id {token!r}"
                    raise CliError(f"{message} ({TOKEN_ID_EXPECTED})", ExitCode.UNREACHABLE)
                outcome = market.outcomes[index] if index < len(market.outcomes) else f"#{index}"
                labels[token] = terminal_text(f"{outcome} {market.question}").strip()  # from the network
                tokens.append(token)
    return list(dict.fromkeys(tokens)), labels


def exchange_filter(args: argparse.Namespace) -> MarketFilter | None:
    """The markets ``--all`` follows (None without --all); --tag and the minimums need --all, which takes no ids."""
    filters = {"--tag": args.tag, "--min-volume": args.min_volume, "--min-liquidity": args.min_liquidity}
    if not args.all:
        given = [name for name, value in filters.items() if value is not None]
        if given:
            raise CliError(f"{', '.join(given)} only filter --all", ExitCode.USAGE)
        return None
    if args.tokens or args.market or args.slug:
        raise CliError("--all follows every market: no TOKEN_ID, --market or --slug with it", ExitCode.USAGE)
    return MarketFilter(tag_id=args.tag, volume_min=args.min_volume, liquidity_min=args.min_liquidity)
