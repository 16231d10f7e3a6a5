"""Downloads against a real HTTP server on 127.0.0.1 (tests/httpserver.py) and a local mirror."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from httpserver import serve
from stargrad.sdss import apogee, download, survey

from workflow_jobs import planned_jobs

FAST = dict(retries=3, backoff_s=0.0, timeout_s=5)
STARS = pd.DataFrame({"APOGEE_ID": ["2M00000001+0000001", "2M00000002+0000002",
                                    "2M00000003-0000003"],
                      "TELESCOPE": ["apo25m", "apo25m", "lco25m"],
                      "FIELD": ["FIELDA", "FIELDA", "FIELDB"]})


pytestmark = pytest.mark.usefixtures("no_proxy")


def _sha1(path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def sas(tmp_path):
    """A tiny DR17-shaped SAS tree: three aspcapStar files and real sha1sum lists."""
    root = tmp_path / "sas"
    rng = np.random.default_rng(0)
    for row in STARS.itertuples():
        flux = 1.0 + 0.01 * rng.standard_normal(apogee.N_PIX)
        survey.write_aspcapstar(root / survey.aspcapstar_relpath(row.TELESCOPE, row.FIELD,
                                                                 row.APOGEE_ID),
                                flux, np.full(apogee.N_PIX, 0.01))
    for (tel, field), group in STARS.groupby(["TELESCOPE", "FIELD"]):
        lines = []
        for apogee_id in group["APOGEE_ID"]:
            name = f"aspcapStar-dr17-{apogee_id}.fits"
            lines.append(f"{_sha1(root / tel / field / name)}  {name}\n")
        (root / tel / field / download.checksum_list_name(tel, field)).write_text("".join(lines))
    return root


def _rel(row) -> str:
    return survey.aspcapstar_relpath(row["TELESCOPE"], row["FIELD"], row["APOGEE_ID"])


# --------------------------------------------------------------------------- layout helpers

def test_sas_layout_names():
    base = "https://data.sdss.org/sas/dr17/apogee/spectro/aspcap/dr17/synspec_rev1/"
    assert download.allstar_url(base) == base + "allStar-dr17-synspec_rev1.fits"
    assert (download.aspcapstar_url(base, "apo25m", " M13 ", "2M16413000+3628000 ")
            == base + "apo25m/M13/aspcapStar-dr17-2M16413000+3628000.fits")
    assert (download.checksum_list_url(base, "lco25m", "47TUC")
            == base + "lco25m/47TUC/dr17_synspec_rev1_lco25m_47TUC.sha1sum")
    assert (download.checksum_list_url(base, "apo25m", "M13")
            == base + "apo25m/M13/dr17_synspec_apo25m_M13.sha1sum")
    assert (download.apstar_url("/m/stars", "lco25m", "F", "X")
            == "/m/stars/lco25m/F/asStar-dr17-X.fits")
    assert download.checksum_list_name("apo25m", "M13", "apStar") == "dr17_stars_apo25m_M13.sha1sum"


def test_parse_sha1sum():
    a, b = "a" * 40, "0123456789abcdef0123456789ABCDEF01234567"
    text = f"{a}  aspcapStar-dr17-X.fits\n\n{b} *sub/aspcapStar-dr17-Y.fits\n"
    assert download.parse_sha1sum(text) == {"aspcapStar-dr17-X.fits": a,
                                            "aspcapStar-dr17-Y.fits": b.lower()}
    with pytest.raises(ValueError, match="line 1"):
        download.parse_sha1sum("not-a-digest  file.fits\n")


def test_chunk_of_is_stable_and_balanced():
    ids = [f"2M{i:08d}+{i:07d}" for i in range(2000)]
    chunks = survey.chunk_of(ids, 8)
    # Frozen values (byte 7 of sha1sum(ID) mod 8, checked with coreutils): a salted hash fails.
    assert survey.chunk_of(ids[:6], 8).tolist() == [5, 1, 3, 6, 0, 3]
    assert np.array_equal(chunks, survey.chunk_of([f" {i} " for i in ids], 8))
    counts = np.bincount(chunks, minlength=8)
    assert counts.min() > 180 and counts.max() < 320
    with pytest.raises(ValueError, match="n_chunks"):
        survey.chunk_of(ids, 0)


def test_chunk_targets_union_and_unknown_ids():
    allstar = pd.concat([STARS, STARS.iloc[[0]].assign(FIELD="OTHER")], ignore_index=True)
    ids = list(STARS["APOGEE_ID"])
    parts = [download.chunk_targets(allstar, ids + ids[:1], c, 2) for c in range(2)]
    both = pd.concat(parts).sort_values("APOGEE_ID").reset_index(drop=True)
    pd.testing.assert_frame_equal(both, STARS.astype(str), check_dtype=False)
    with pytest.raises(ValueError, match="not in allStar"):
        download.chunk_targets(allstar, ["2M_NOT_THERE"], 0, 2)


# --------------------------------------------------------------------------- fetch

def test_fetch_ok_with_checksum(sas, tmp_path):
    rel = _rel(STARS.iloc[0])
    with serve(sas) as server:
        res = download.fetch(f"{server.url}/{rel}", tmp_path / "out.fits",
                             sha1=_sha1(sas / rel), log=lambda m: None, **FAST)
        assert len(server.requests) == 1
    assert res.status == "ok" and res.reason == "" and res.sha1 == _sha1(sas / rel)
    assert res.bytes == (sas / rel).stat().st_size
    assert (tmp_path / "out.fits").read_bytes() == (sas / rel).read_bytes()
    assert not (tmp_path / "out.fits.part").exists()


def test_fetch_retries_http_500_and_logs_it(sas, tmp_path):
    rel, logs = _rel(STARS.iloc[0]), []
    with serve(sas) as server:
        server.fail(rel, "500", "500")
        res = download.fetch(f"{server.url}/{rel}", tmp_path / "out.fits",
                             sha1=_sha1(sas / rel), log=logs.append, **FAST)
        assert [status for _, _, status in server.requests] == [500, 500, 200]
    assert res.status == "ok" and res.attempts == 3
    assert sum("HTTP 500" in m and "retry" in m for m in logs) == 2


def test_fetch_gives_up_after_retries(sas, tmp_path):
    rel = _rel(STARS.iloc[0])
    with serve(sas) as server:
        server.fail(rel, *["500"] * 5)
        res = download.fetch(f"{server.url}/{rel}", tmp_path / "out.fits", log=lambda m: None,
                             retries=2, backoff_s=0.0, timeout_s=5)
        assert len(server.requests) == 3
    assert res.status == "failed" and "HTTP 500" in res.reason and res.attempts == 3
    assert not (tmp_path / "out.fits").exists()


def test_truncated_transfer_is_resumed_with_range(sas, tmp_path):
    rel = _rel(STARS.iloc[0])
    size = (sas / rel).stat().st_size
    logs = []
    with serve(sas) as server:
        server.fail(rel, "truncate")
        res = download.fetch(f"{server.url}/{rel}", tmp_path / "out.fits",
                             sha1=_sha1(sas / rel), log=logs.append, **FAST)
        (_, first, _), (_, second, status) = server.requests
    assert "Range" not in first
    assert second["Range"] == f"bytes={size // 2}-" and status == 206
    assert any("truncated transfer" in m for m in logs)
    assert res.status == "ok"
    assert (tmp_path / "out.fits").read_bytes() == (sas / rel).read_bytes()


def test_existing_part_resumes_with_range_or_restarts_without(sas, tmp_path):
    rel = _rel(STARS.iloc[1])
    data = (sas / rel).read_bytes()
    for range_support in (True, False):
        dest = tmp_path / f"out{range_support}.fits"
        Path(str(dest) + ".part").write_bytes(data[:1000])
        with serve(sas) as server:
            server.range_support = range_support
            res = download.fetch(f"{server.url}/{rel}", dest, sha1=_sha1(sas / rel),
                                 log=lambda m: None, **FAST)
            ((_, headers, status),) = server.requests
        assert headers["Range"] == "bytes=1000-"
        assert status == (206 if range_support else 200)
        assert res.status == "ok" and dest.read_bytes() == data


def test_stale_part_fails_verification_then_downloads_fresh(sas, tmp_path):
    rel = _rel(STARS.iloc[1])
    data = (sas / rel).read_bytes()
    dest = tmp_path / "out.fits"
    Path(str(dest) + ".part").write_bytes(b"\0" * 500)  # wrong prefix
    with serve(sas) as server:
        res = download.fetch(f"{server.url}/{rel}", dest, sha1=_sha1(sas / rel),
                             log=lambda m: None, **FAST)
        ranges = [h.get("Range") for _, h, _ in server.requests]
    assert ranges == ["bytes=500-", None]
    assert res.status == "ok" and dest.read_bytes() == data


def test_checksum_mismatch_redownloads_once_then_fails(sas, tmp_path):
    rel = _rel(STARS.iloc[0])
    dest = tmp_path / "out.fits"
    with serve(sas) as server:
        server.fail(rel, "corrupt")
        ok = download.fetch(f"{server.url}/{rel}", dest, sha1=_sha1(sas / rel),
                            log=lambda m: None, **FAST)
        assert ok.status == "ok" and len(server.requests) == 2
        dest.unlink()
        bad = download.fetch(f"{server.url}/{rel}", dest, sha1="0" * 40, log=lambda m: None,
                             **FAST)
        assert len(server.requests) == 4
    assert bad.status == "failed" and "SHA-1 mismatch" in bad.reason
    assert not dest.exists() and not Path(str(dest) + ".part").exists()


def test_404_is_not_retried(sas, tmp_path):
    with serve(sas) as server:
        res = download.fetch(f"{server.url}/apo25m/FIELDA/nope.fits", tmp_path / "x.fits",
                             log=lambda m: None, **FAST)
        assert len(server.requests) == 1
    assert res.status == "failed" and "missing file" in res.reason and "404" in res.reason


def test_timeout_is_retried(sas, tmp_path):
    rel = _rel(STARS.iloc[0])
    with serve(sas) as server:
        server.slow_s = 1.5
        server.fail(rel, "slow")
        res = download.fetch(f"{server.url}/{rel}", tmp_path / "out.fits",
                             sha1=_sha1(sas / rel), log=lambda m: None, retries=2,
                             backoff_s=0.0, timeout_s=0.3)
    assert res.status == "ok" and res.attempts == 2


@pytest.mark.parametrize("scheme", ["dir", "file"])
def test_local_mirror_fetch(sas, tmp_path, scheme):
    rel = _rel(STARS.iloc[2])
    base = str(sas) if scheme == "dir" else (sas).as_uri()
    res = download.fetch(f"{base}/{rel}", tmp_path / "o.fits", sha1=_sha1(sas / rel),
                         log=lambda m: None, **FAST)
    assert res.status == "ok" and (tmp_path / "o.fits").read_bytes() == (sas / rel).read_bytes()
    missing = download.fetch(f"{base}/nope.fits", tmp_path / "n.fits", log=lambda m: None, **FAST)
    assert missing.status == "failed" and "missing file" in missing.reason
    bad = download.fetch(f"{base}/{rel}", tmp_path / "b.fits", sha1="1" * 40,
                         log=lambda m: None, **FAST)
    assert bad.status == "failed" and not (tmp_path / "b.fits").exists()


# --------------------------------------------------------------------------- many files

def test_download_spectra_http_then_rerun_downloads_nothing(sas, tmp_path):
    root, logs = tmp_path / "resources" / "dr17", []
    with serve(sas) as server:
        manifest = download.download_spectra(STARS, root, server.url, allow_http=True,
                                             log=logs.append,
                                             progress_every_s=0.0, **FAST)
        # one checksum list per field, one file per star
        assert len(server.requests) == 2 + 3
        assert sum(p.endswith(".sha1sum") for p, _, _ in server.requests) == 2
        n_before = len(server.requests)
        again = download.download_spectra(STARS, root, server.url, allow_http=True,
                                          log=logs.append, **FAST)
        assert len(server.requests) == n_before
    assert list(manifest.columns) == list(download.MANIFEST_COLUMNS)
    assert (manifest["status"] == "ok").all()
    for row in manifest.itertuples():
        rel = Path(row.path).relative_to(root)
        assert Path(row.path).read_bytes() == (sas / rel).read_bytes()
        assert row.sha1 == _sha1(sas / rel) and row.bytes == (sas / rel).stat().st_size
    pd.testing.assert_frame_equal(manifest.sort_values("APOGEE_ID").reset_index(drop=True),
                                  again.sort_values("APOGEE_ID").reset_index(drop=True))
    assert any("3/3 files" in m and "MB/s" in m for m in logs)


def test_download_spectra_quarantines_bad_files(sas, tmp_path):
    root = tmp_path / "dr17"
    a, b, c = (STARS.iloc[i] for i in range(3))
    (sas / _rel(b)).unlink()  # listed in the sha1sum file, absent on the server: 404
    # c's field: the checksum list misses its entry
    (sas / "lco25m" / "FIELDB" / download.checksum_list_name("lco25m", "FIELDB")).write_text("")
    with serve(sas) as server:
        server.fail(_rel(a), "corrupt", "corrupt")
        manifest = download.download_spectra(STARS, root, server.url, allow_http=True,
                                             log=lambda m: None,
                                             **FAST).set_index("APOGEE_ID")
    assert set(manifest["status"]) == {"quarantined"}
    assert "SHA-1 mismatch" in manifest.loc[a["APOGEE_ID"], "reason"]
    assert "missing file" in manifest.loc[b["APOGEE_ID"], "reason"]
    assert "no checksum entry" in manifest.loc[c["APOGEE_ID"], "reason"]
    for star in (a, b, c):
        assert not (root / _rel(star)).exists()


def test_download_spectra_missing_checksum_list_quarantines_field(sas, tmp_path):
    (sas / "lco25m" / "FIELDB" / download.checksum_list_name("lco25m", "FIELDB")).unlink()
    with serve(sas) as server:
        manifest = download.download_spectra(STARS, tmp_path / "r", server.url, allow_http=True,
                                             log=lambda m: None, **FAST)
    status = dict(zip(manifest["APOGEE_ID"], manifest["status"]))
    assert status[STARS["APOGEE_ID"][2]] == "quarantined"
    assert list(status.values()).count("ok") == 2
    reason = manifest.loc[manifest["status"] != "ok", "reason"].item()
    assert "checksum list" in reason and "404" in reason
    # verify="none" needs no list
    with serve(sas) as server:
        manifest = download.download_spectra(STARS, tmp_path / "r2", server.url, allow_http=True,
                                             verify="none",
                                             log=lambda m: None, **FAST)
        assert not any(p.endswith(".sha1sum") for p, _, _ in server.requests)
    assert (manifest["status"] == "ok").all()


def test_on_bad_file_error_names_the_file(sas, tmp_path):
    rel = _rel(STARS.iloc[1])
    with serve(sas) as server:
        server.fail(rel, "404")
        with pytest.raises(download.DownloadError, match=re.escape(rel)):
            download.download_spectra(STARS, tmp_path / "r", server.url, allow_http=True,
                                      on_bad_file="error",
                                      log=lambda m: None, **FAST)


def test_corrupt_file_on_disk_is_replaced(sas, tmp_path):
    root = tmp_path / "r"
    download.download_spectra(STARS, root, str(sas), log=lambda m: None, **FAST)
    victim = root / _rel(STARS.iloc[0])
    victim.write_bytes(b"garbage")
    manifest = download.download_spectra(STARS, root, str(sas), log=lambda m: None, **FAST)
    assert (manifest["status"] == "ok").all()
    assert victim.read_bytes() == (sas / _rel(STARS.iloc[0])).read_bytes()


@pytest.mark.parametrize("scheme", ["dir", "file"])
def test_download_spectra_local_mirror(sas, tmp_path, scheme):
    base = str(sas) if scheme == "dir" else sas.as_uri()
    manifest = download.download_spectra(STARS, tmp_path / "r", base, log=lambda m: None, **FAST)
    assert (manifest["status"] == "ok").all()
    flux, _ = survey.read_aspcapstar(manifest["path"].iloc[0])
    assert flux.shape == (apogee.N_PIX,)


def test_bad_arguments_are_named(sas, tmp_path):
    with pytest.raises(ValueError, match="verify"):
        download.download_spectra(STARS, tmp_path, str(sas), verify="md5")
    with pytest.raises(ValueError, match="on_bad_file"):
        download.download_spectra(STARS, tmp_path, str(sas), on_bad_file="skip")
    with pytest.raises(ValueError, match="FIELD"):
        download.download_spectra(STARS.drop(columns="FIELD"), tmp_path, str(sas))


# --------------------------------------------------------------------------- workflow

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "workflow", "config", "scripts", "envs", "src", "profiles")


def _workdir(tmp_path) -> Path:
    """A scratch run directory that links the repo's workflow, so nothing lands in the repo."""
    run = tmp_path / "run"
    run.mkdir()
    for name in WORKFLOW_PARTS:
        (run / name).symlink_to(REPO / name)
    return run


def _snakemake(run: Path, *args, timeout=240):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *args], cwd=run,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.workflow
def test_dr17_config_plans_without_network(tmp_path):
    if not (REPO / "Snakefile").exists():
        pytest.skip("no Snakefile yet")
    run = _workdir(tmp_path)
    proc = _snakemake(run, "-n", "--configfile", "config/dr17.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for rule in ("download_allstar", "download_spectra", "select_split", "compile_dataset"):
        assert rule in out
    assert not (run / "resources").exists()


def _tiny_allstar(path) -> pd.DataFrame:
    """12 stars: 6 pass the astronn preset, 6 the rgb_logg box, all in two fields."""
    n = 12
    table = pd.DataFrame({
        "APOGEE_ID": [f"2M{i:08d}+{i:07d}" for i in range(n)],
        "TELESCOPE": ["apo25m"] * 8 + ["lco25m"] * 4,
        "FIELD": ["FA"] * 8 + ["FB"] * 4,
        "STARFLAG": np.zeros(n, dtype=np.int64), "ASPCAPFLAG": np.zeros(n, dtype=np.int64),
        "TEFF": np.where(np.arange(n) % 2 == 0, 4800.0, 5000.0),
        "LOGG": np.where(np.arange(n) % 2 == 0, 4.5, 2.5),
        "M_H": np.zeros(n), "VSCATTER": np.full(n, 0.2),
        "SNR": np.where(np.arange(n) % 2 == 0, 300.0, 100.0),
    })
    survey.write_allstar(path, table)
    return table


@pytest.mark.workflow
def test_download_rules_run_against_loopback_sas(tmp_path):
    """download_allstar -> select_split -> download_spectra, for real, from 127.0.0.1."""
    yaml = pytest.importorskip("yaml")
    if not (REPO / "Snakefile").exists():
        pytest.skip("no Snakefile yet")
    sas = tmp_path / "sas"
    table = _tiny_allstar(sas / download.ALLSTAR_NAME)
    rng = np.random.default_rng(5)
    for row in table.itertuples():
        survey.write_aspcapstar(sas / survey.aspcapstar_relpath(row.TELESCOPE, row.FIELD,
                                                                row.APOGEE_ID),
                                1 + 0.01 * rng.standard_normal(apogee.N_PIX),
                                np.full(apogee.N_PIX, 0.01))
    for (tel, field), group in table.groupby(["TELESCOPE", "FIELD"]):
        names = [f"aspcapStar-dr17-{i}.fits" for i in group["APOGEE_ID"]]
        (sas / tel / field / download.checksum_list_name(tel, field)).write_text(
            "".join(f"{_sha1(sas / tel / field / n)}  {n}\n" for n in names))
    gone = table.iloc[1]  # listed, then removed from the server: must be quarantined
    (sas / survey.aspcapstar_relpath(gone.TELESCOPE, gone.FIELD, gone.APOGEE_ID)).unlink()

    config = yaml.safe_load((REPO / "config" / "dr17.yaml").read_text())
    for spec in config["datasets"].values():
        spec["split"] = {"seed": 3, "counts": {"train": 3, "valid": 2, "test": 1}}  # 6 stars
    datasets = list(config["datasets"])
    config["datasets"][datasets[1]]["selection"] = {"preset": "all"}   # overlaps the first
    run = _workdir(tmp_path)
    with serve(sas) as server:
        config["survey"]["sas"].update(base_url=server.url, allow_http=True,
                                       retries=1, backoff_s=0.0,
                                       timeout_s=10, n_chunks=2,
                                       allstar_sha1=_sha1(sas / download.ALLSTAR_NAME))
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
        targets = [f"resources/dr17/manifests/{d}/chunk{c}.csv" for d in datasets for c in (0, 1)]
        compiled = [f"results/data/{d}/train.fits" for d in datasets]
        proc = _snakemake(run, *targets, *compiled, "--configfile", str(tmp_path / "cfg.yaml"))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        n_requests = len(server.requests)
        # a chunk job rerun on the tree the workflow left verifies, and fetches only the
        # file it could not get
        again = download.download_chunk(
            run / "resources/dr17" / download.ALLSTAR_NAME,
            [run / f"results/data/{d}/split.csv" for d in datasets], 0, 2,
            run / "resources/dr17", server.url, tmp_path / "again.csv", allow_http=True,
            log=lambda m: None,
            **FAST)
        chunk0 = pd.concat([pd.read_csv(run / f"resources/dr17/manifests/{d}/chunk0.csv",
                                        dtype={"APOGEE_ID": str}, keep_default_na=False)
                            for d in datasets])
        fetched = [p for p, _, _ in server.requests[n_requests:]]
        assert fetched == ([f"/apo25m/FA/aspcapStar-dr17-{gone.APOGEE_ID}.fits"]
                           if gone.APOGEE_ID in set(chunk0["APOGEE_ID"]) else [])
        # a star both datasets select is fetched once (the second job finds it verified)
        files = pd.Series([p for p, _, _ in server.requests[:n_requests]
                           if "aspcapStar-dr17-" in p and gone.APOGEE_ID not in p])
        assert files.is_unique, files[files.duplicated()].tolist()
    manifest = pd.concat([pd.read_csv(run / t, dtype={"APOGEE_ID": str},
                                      keep_default_na=False) for t in targets])
    selected = set()
    for name in datasets:
        selected |= set(pd.read_csv(run / f"results/data/{name}/split.csv")["APOGEE_ID"])
    assert set(manifest["APOGEE_ID"]) == selected
    shared = set.intersection(*(set(pd.read_csv(run / f"results/data/{d}/split.csv")["APOGEE_ID"])
                                for d in datasets))
    assert shared, "the two datasets should share stars for this test"
    status = dict(zip(manifest["APOGEE_ID"], manifest["status"]))
    assert status.pop(gone.APOGEE_ID) == "quarantined"
    assert set(status.values()) == {"ok"}
    for row in manifest[manifest["status"] == "ok"].itertuples():
        assert _sha1(run / row.path) == row.sha1
    assert set(again["APOGEE_ID"]) == set(chunk0["APOGEE_ID"])
    assert "verified" in (run / "logs/download/dr17/allstar.log").read_text()
    assert "MB/s" in (run / f"logs/download/dr17/{datasets[0]}/chunk0.log").read_text()

    # Editing one dataset's entry replans that dataset's selection, downloads and compilation,
    # and nothing of the other dataset.
    config["datasets"][datasets[1]]["split"]["seed"] = 4
    (tmp_path / "cfg2.yaml").write_text(yaml.safe_dump(config))
    plan = _snakemake(run, "-n", *targets, *compiled, "--configfile", str(tmp_path / "cfg2.yaml"))
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    jobs = planned_jobs(plan.stdout + plan.stderr)
    assert {rule for rule, _ in jobs} >= {"select_split", "download_spectra", "compile_dataset"}
    assert all(wc.get("dataset") == datasets[1] for rule, wc in jobs
               if rule in ("select_split", "download_spectra", "compile_dataset")), jobs
    assert sorted(wc["dataset"] for rule, wc in jobs if rule == "compile_dataset") == [datasets[1]]
