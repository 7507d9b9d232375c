"""The simulator serves Binance's public aggTrades archive, in Binance's formats and with its defects."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import date

import httpx
import pytest

from orderflow_plugin import bundled_tape
from orderflow_plugin.sim import Archive, ArchiveFault, tiled_tape
from orderflow_plugin.sim.archive import archive_path
from orderflow_plugin.tape import Tape

DAY = date(2025, 11, 1)


def _tape(first: date = DAY, days: int = 3, per_day: int = 300, market: str = "spot") -> Tape:
    tape = tiled_tape(bundled_tape(), first, days, per_day)
    return Tape(tape.symbol, market, tape.rows, tape.source)  # type: ignore[arg-type]


def _csv(body: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        (name,) = archive.namelist()
        return archive.read(name).decode().splitlines()


@pytest.fixture
async def site(orderflow_sim_factory):
    """A simulator serving three tiled days as archive, REST and stream; its archive and an HTTP client."""
    async def start(archive: Archive, tape: Tape):
        sim = await orderflow_sim_factory(tapes=[tape], archive=archive)
        return httpx.AsyncClient(base_url=sim.archive_url, timeout=5)
    clients: list[httpx.AsyncClient] = []

    async def make(archive: Archive, tape: Tape) -> httpx.AsyncClient:
        client = await start(archive, tape)
        clients.append(client)
        return client
    yield make
    for client in clients:
        await client.aclose()


def test_tiled_tape_days_and_ids() -> None:
    """A tiled tape has the asked trades on each day, contiguous ids and times inside each day."""
    tape = _tape(days=3, per_day=7000)  # more than the 5,000-row slice: it loops
    ids = [row.id for row in tape.rows]
    assert ids == list(range(ids[0], ids[0] + 21000))
    archive = Archive(tape)
    assert archive.days("BTCUSDT") == [date(2025, 11, 1), date(2025, 11, 2), date(2025, 11, 3)]
    assert [len(archive.rows("BTCUSDT", d)) for d in archive.days("BTCUSDT")] == [7000, 7000, 7000]


async def test_spot_daily_zip_and_checksum(site) -> None:
    """A spot day is 8 columns, no header, microseconds from 2025; its CHECKSUM is Binance's '<sha256>  <name>'."""
    tape = _tape()
    client = await site(Archive(tape), tape)
    path = "/" + archive_path("spot", "BTCUSDT", DAY)
    body = (await client.get(path)).content
    checksum = (await client.get(path + ".CHECKSUM")).text
    assert checksum == f"{hashlib.sha256(body).hexdigest()}  BTCUSDT-aggTrades-2025-11-01.zip\n"
    lines = _csv(body)
    first = tape.rows[0]
    assert lines[0] == f"{first.id},{first.price},{first.qty},{first.first_id},{first.last_id},{first.time * 1000},{first.buyer_maker},True"
    assert len(lines) == 300


async def test_spot_before_2025_in_milliseconds(site) -> None:
    """A spot day before 2025-01-01 keeps millisecond times, as the real archive does."""
    tape = _tape(first=date(2024, 12, 31), days=2)
    client = await site(Archive(tape), tape)
    old = _csv((await client.get("/" + archive_path("spot", "BTCUSDT", date(2024, 12, 31)))).content)
    new = _csv((await client.get("/" + archive_path("spot", "BTCUSDT", date(2025, 1, 1)))).content)
    assert len(old[0].split(",")[5]) == 13 and len(new[0].split(",")[5]) == 16


async def test_usdm_header_and_seven_columns(site) -> None:
    """A USD-M day has a header row and 7 columns, under data/futures/um."""
    tape = _tape(market="usdm")
    client = await site(Archive(tape), tape)
    response = await client.get("/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2025-11-02.zip")
    lines = _csv(response.content)
    assert lines[0] == "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    assert len(lines[1].split(",")) == 7 and lines[1].endswith(("true", "false"))


async def test_monthly_only_when_published(site) -> None:
    """A month is published once the archive's today is past its end, with every day in it."""
    tape = _tape(first=date(2025, 10, 30), days=3)  # 10-30, 10-31, 11-01
    client = await site(Archive(tape, today=date(2025, 11, 2)), tape)
    october = await client.get("/" + archive_path("spot", "BTCUSDT", month=(2025, 10)))
    assert len(_csv(october.content)) == 600
    assert (await client.get("/" + archive_path("spot", "BTCUSDT", month=(2025, 11)))).status_code == 404
    assert (await client.get("/" + archive_path("spot", "BTCUSDT", date(2025, 11, 2)))).status_code == 404


async def test_faults(site) -> None:
    """Missing day, bad checksum, out of order, truncated body, 503 and a replaced archive, each as scripted."""
    d1, d2, d3 = date(2025, 11, 1), date(2025, 11, 2), date(2025, 11, 3)
    faults = [ArchiveFault("missing_day", d1), ArchiveFault("bad_checksum", d2), ArchiveFault("out_of_order", d2),
              ArchiveFault("status", d3, status=503), ArchiveFault("truncated", d3), ArchiveFault("replaced", d3, count=2, size=10)]
    tape = _tape()
    archive = Archive(tape, faults=faults)
    client = await site(archive, tape)
    p1, p2, p3 = ("/" + archive_path("spot", "BTCUSDT", d) for d in (d1, d2, d3))
    assert (await client.get(p1)).status_code == 404
    assert (await client.get(p1 + ".CHECKSUM")).status_code == 404
    body2 = (await client.get(p2)).content
    assert (await client.get(p2 + ".CHECKSUM")).text.split()[0] != hashlib.sha256(body2).hexdigest()
    assert (await client.get(p2 + ".CHECKSUM")).text.split()[0] == hashlib.sha256(body2).hexdigest()  # count=1
    ids = [int(line.split(",")[0]) for line in _csv(body2)]
    assert ids != sorted(ids) and sorted(ids) == [r.id for r in archive.rows("BTCUSDT", d2)]
    assert (await client.get(p3)).status_code == 503
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(p3)  # cut midway: fewer bytes than Content-Length
    first = (await client.get(p3 + ".CHECKSUM")).text
    assert len(_csv((await client.get(p3)).content)) == 290  # the first version (cut, then whole) lacks 10 rows
    replaced = await client.get(p3)
    assert len(_csv(replaced.content)) == 300
    assert (await client.get(p3 + ".CHECKSUM")).text != first


async def test_range_resumes(site) -> None:
    """Range: bytes=N- answers 206 with the rest of the file."""
    tape = _tape()
    client = await site(Archive(tape), tape)
    path = "/" + archive_path("spot", "BTCUSDT", DAY)
    body = (await client.get(path)).content
    rest = await client.get(path, headers={"Range": "bytes=100-"})
    assert rest.status_code == 206 and body[:100] + rest.content == body
    assert rest.headers["Content-Range"] == f"bytes 100-{len(body) - 1}/{len(body)}"


async def test_slow_body(site) -> None:
    """A slow body arrives whole, a few bytes at a time."""
    tape = _tape(days=1, per_day=20)
    archive = Archive(tape, faults=[ArchiveFault("slow_body", DAY, size=200, seconds=0.001)])
    client = await site(archive, tape)
    path = "/" + archive_path("spot", "BTCUSDT", DAY)
    assert len(_csv((await client.get(path)).content)) == 20
