"""A researcher's real client against a running dashboard.

Runs every ```python snippet of docs/RESEARCHERS.md in order (one shared
namespace, as a reader pasting them into one session would), then checks
what they fetched: the release schema, its metadata, that no column could
hold an individual record, and that Arrow, Parquet and Flight agree.
Prints one JSON line of figures for the Rust test to compare with the
dashboard's own JSON API.

Environment: HUSHMAP_URL, HUSHMAP_FLIGHT, HUSHMAP_TOKEN (researcher),
HUSHMAP_ANALYST_TOKEN (analyst only: Flight must refuse it), HUSHMAP_DOCS.
"""

import json
import os
import re
import sys
import tempfile

import pyarrow as pa
import pyarrow.flight as flight

RELEASE_COLUMNS = [
    "window_start", "window_end", "level", "region", "age_band",
    "n_low", "n_moderate", "n_high", "n_total",
    "high_share", "high_share_ci_low", "high_share_ci_high", "noise_scale", "suppressed",
    "sym_fever", "sym_dry_cough", "sym_sore_throat", "sym_breathlessness",
    "sym_loss_of_taste_or_smell", "sym_fatigue", "sym_body_ache", "sym_diarrhoea",
    "sym_headache", "sym_runny_nose",
]
METADATA = ["hushmap.mechanism", "hushmap.rho", "hushmap.epsilon", "hushmap.delta",
            "hushmap.ledger_entry", "hushmap.schema_version", "hushmap.releases"]


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def snippets(path):
    text = open(path, encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def check_table(name, table):
    if table.schema.names != RELEASE_COLUMNS:
        fail(f"{name}: columns {table.schema.names}")
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    missing = [k for k in METADATA if k not in meta]
    if missing:
        fail(f"{name}: metadata lacks {missing}")
    if table.schema.field("n_total").type != pa.int64() or table.schema.field("region").type != pa.string():
        fail(f"{name}: column types changed")
    # No column could hold a person's record: every row is a cell (region ×
    # band × window × level), unique, and no identifying column exists.
    keys = set(zip(*(table.column(c).to_pylist() for c in ["window_start", "level", "region", "age_band"])))
    if len(keys) != table.num_rows:
        fail(f"{name}: rows are not one per cell")
    for forbidden in ["lat", "lon", "age", "profile", "ip", "user_agent", "observed_at", "contributor"]:
        if forbidden in table.schema.names:
            fail(f"{name}: column {forbidden}")
    return meta


def main():
    docs = os.environ["HUSHMAP_DOCS"]
    blocks = snippets(docs)
    if len(blocks) < 6:
        fail(f"expected the six snippets of {docs}, found {len(blocks)}")
    ns = {}
    workdir = tempfile.mkdtemp(prefix="hushmap-researcher-")
    os.chdir(workdir)
    fetched = []
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"RESEARCHERS.md snippet {i + 1}", "exec"), ns)
        except Exception as e:  # noqa: BLE001 - report which snippet broke
            fail(f"snippet {i + 1} raised {type(e).__name__}: {e}")
        fetched.append(ns.get("cells"))
    # Snippet 1 leaves a pandas DataFrame in `cells`, snippet 2 a polars one.
    pandas_cells, polars_cells, by_band = fetched[0], fetched[1], ns["by_band"]

    import io
    import urllib.request

    import polars as pl
    import pyarrow.parquet as pq
    auth_header = {"Authorization": "Bearer " + os.environ["HUSHMAP_TOKEN"]}
    url = os.environ["HUSHMAP_URL"] + "/api/v1/export?format="
    arrow_table = pa.ipc.open_stream(urllib.request.urlopen(urllib.request.Request(url + "arrow", headers=auth_header)).read()).read_all()
    parquet_table = pq.read_table(io.BytesIO(urllib.request.urlopen(urllib.request.Request(url + "parquet", headers=auth_header)).read()))
    meta = check_table("arrow export", arrow_table)
    check_table("parquet export", parquet_table)
    check_table("parquet file (duckdb snippet)", pq.read_table("hushmap-cells.parquet"))
    if not isinstance(polars_cells, pl.DataFrame) or not hasattr(pandas_cells, "iloc"):
        fail("snippets 1 and 2 should leave pandas and polars frames in `cells`")
    # The pipeline goes on releasing windows (10 s each, every public cell
    # in each) while this client reads, one way after another: compare
    # what every reader saw, the windows up to the latest one the first
    # reader had. (A window released between two reads once made them
    # disagree, {354, 708} rows: one window against two.)
    import pyarrow.compute as pc
    tables = {
        "pandas": pa.Table.from_pandas(pandas_cells, preserve_index=False),
        "polars": polars_cells.to_arrow(),
        "parquet": parquet_table,
        "arrow": arrow_table,
    }

    def starts(t):
        return t.column("window_start").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())

    seen = pc.max(starts(tables["pandas"])).as_py()
    for name, t in tables.items():
        if seen not in set(starts(t).to_pylist()):
            fail(f"{name} lacks window {seen}, which the pandas snippet read")
    tables = {name: t.filter(pc.less_equal(starts(t), seen)) for name, t in tables.items()}
    sizes = {t.num_rows for t in tables.values()}
    if len(sizes) != 1:
        fail(f"pandas, polars, parquet and arrow disagree on rows: {sizes}")
    arrow_table = tables["arrow"]
    if sum(tables["pandas"].column("n_total").to_pylist()) != sum(arrow_table.column("n_total").to_pylist()):
        fail("pandas and arrow disagree on n_total")

    # Flight: every window, and the same rows as the export in total.
    client, auth = ns["client"], ns["auth"]
    flight_rows, flight_total = 0, 0
    flights = [info for info in ns["flights"] if int(info.descriptor.path[-1]) <= seen]
    for info in flights:
        t = client.do_get(info.endpoints[0].ticket, options=auth).read_all()
        check_table("flight " + "/".join(p.decode() if isinstance(p, bytes) else p for p in info.descriptor.path), t)
        if info.total_records != t.num_rows:
            fail("flight info total_records differs from the rows sent")
        flight_rows += t.num_rows
        flight_total += sum(t.column("n_total").to_pylist())
    if flight_rows != arrow_table.num_rows:
        fail(f"flight rows {flight_rows} vs export rows {arrow_table.num_rows}")

    # Flight refuses a missing token and an analyst-only one.
    try:
        list(client.list_flights())
        fail("flight answered without a token")
    except flight.FlightUnauthenticatedError:
        pass
    analyst = flight.FlightCallOptions(headers=[(b"authorization", ("Bearer " + os.environ["HUSHMAP_ANALYST_TOKEN"]).encode())])
    try:
        list(client.list_flights(options=analyst))
        fail("flight answered an analyst token")
    except flight.FlightUnauthorizedError:
        pass

    finest = max(arrow_table.column("level").to_pylist()) if arrow_table.num_rows else None
    finest_total = sum(n for n, l in zip(arrow_table.column("n_total").to_pylist(), arrow_table.column("level").to_pylist()) if l == finest)

    # Flight SQL (ADBC): the same totals per level as the export.
    by_level = {row["level"]: row["n"] for row in ns["by_level"].to_pylist()}
    for level in set(arrow_table.column("level").to_pylist()):
        exported = sum(n for n, l in zip(arrow_table.column("n_total").to_pylist(), arrow_table.column("level").to_pylist()) if l == level)
        if by_level.get(level) != exported:
            fail(f"Flight SQL total at level {level}: {by_level.get(level)} vs export {exported}")
    print(json.dumps({
        "rows": arrow_table.num_rows,
        "windows": len(set(arrow_table.column("window_start").to_pylist())),
        "finest_level": finest,
        "finest_n_total": finest_total,
        "flight_windows": len(flights),
        "flight_n_total": flight_total,
        "duckdb_bands": len(by_band),
        "sql_levels": len(by_level),
        "mechanism": meta["hushmap.mechanism"],
    }))


if __name__ == "__main__":
    main()
